// The README's quick example: two models, a weighted ensemble, the automatic choice of method.
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
  // The small model's pass costs a quarter of the large one's: the policy plans with that.
  cospec::automatic_options costs;
  costs.pass_costs = {1.0, 4.0};
  cospec::decoder decoder(models, cospec::weighted_ensemble({0.5f, 0.5f}), cospec::automatic(2, costs), sampling);

  cospec::generation_limits limits;
  limits.max_new_tokens = 32;
  const cospec::generation_result result = decoder.generate(std::vector<cospec::token_id>{1, 2, 3}, limits);

  for (cospec::token_id token : result.tokens) std::printf("%d ", token);
  const auto& stats = result.statistics;
  std::printf("\n%zu tokens, %zu forward passes of the large model (standard decoding: %zu), mixture sampling: %s\n",
              stats.tokens, stats.models[1].forward_passes, stats.tokens, stats.mixture ? "yes" : "no");
}
