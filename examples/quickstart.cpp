// The README's quick example: two models, a weighted ensemble, CoS speculation.
#include <cospec/cospec.hpp>

#include <cstdio>
#include <vector>

#include "models/synthetic_model.hpp"  // any type satisfying cospec::model_adapter works

int main() {
  using cospec::examples::synthetic_model;
  synthetic_model small({.vocabulary_size = 100, .own_seed = 1, .agreement = 0.8});
  synthetic_model large({.vocabulary_size = 100, .own_seed = 2, .agreement = 0.8});
  std::vector<synthetic_model*> models{&small, &large};

  cospec::sampling_settings sampling;
  sampling.temperature = 1.0f;
  sampling.seed = 42;
  cospec::decoder decoder(models, cospec::weighted_ensemble({0.5f, 0.5f}),
                          cospec::alternating({/*small*/ 3, /*large*/ 1}), sampling);

  cospec::generation_limits limits;
  limits.max_new_tokens = 32;
  const cospec::generation_result result = decoder.generate(std::vector<cospec::token_id>{1, 2, 3}, limits);

  for (cospec::token_id token : result.tokens) std::printf("%d ", token);
  const auto& stats = result.statistics;
  std::printf("\n%zu tokens, %zu forward passes (standard decoding: %zu), small model's acceptance %.2f\n",
              stats.tokens, stats.forward_passes(), 2 * stats.tokens, stats.proposers[0].acceptance_rate());
}
