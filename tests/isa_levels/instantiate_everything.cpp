// One unit that instantiates every kernel, every combiner, every speculation policy, the
// decoder and the batch decoder, for .ci/run to compile with g++ and clang++ at -march=x86-64, x86-64-v3 and
// x86-64-v4 under -Wall -Wextra -Wpedantic -Werror (docs/kernels.md, "Warnings"). Compiling is
// the check: a machine without AVX-512 can compile the -v4 unit though it cannot run it. The
// unit also links and runs where the machine can, and then exits 0 only if decoding agreed.
#include <cospec/cospec.hpp>

#include <cstdio>   // std::printf
#include <span>     // std::span
#include <vector>   // std::vector

#include "models/synthetic_model.hpp"

namespace {

using cospec::examples::synthetic_model;

int kernels_once() {
  namespace kernels = cospec::kernels;
  std::vector<float> a(777, 0.5f), b(777, 0.25f), out(777);
  a[3] = 4.0f;
  const std::span<const float> rows[] = {a, b};
  const float weights[] = {0.5f, 0.5f};
  kernels::filter_workspace workspace;
  (void)kernels::log_sum_exp(a, 0.5f);
  (void)kernels::max_argmax(a);
  (void)kernels::softmax(a, out, 1.0f);
  (void)kernels::unnormalized_softmax(a, out, 1.0f);
  kernels::scale_row(out, 2.0f);
  kernels::linear_combination(rows, weights, out, 1.0f);
  kernels::mask_below(a, 0.0f, out);
  kernels::mixture(rows, weights, out);
  (void)kernels::residual(a, b, out, 1.0f);
  (void)kernels::sample_inverse_cdf(b, 0.5, 0.25 * 777);
  (void)kernels::top_k_filter(out, 5, workspace);
  (void)kernels::top_p_filter(out, 0.9f, workspace);
  (void)kernels::min_p_filter(out, 0.1f);
  return kernels::max_argmax(a).index == 3 ? 0 : 1;
}

template <class Combiner, class Policy>
std::vector<cospec::token_id> decode(Combiner combiner, Policy policy, float temperature) {
  synthetic_model small({.vocabulary_size = 50, .own_seed = 1, .agreement = 0.8});
  synthetic_model large({.vocabulary_size = 50, .own_seed = 2, .agreement = 0.8});
  std::vector<synthetic_model*> models{&small, &large};
  cospec::sampling_settings sampling;
  sampling.temperature = temperature;
  sampling.top_k = 40;
  sampling.seed = 3;
  cospec::decoder decoder(models, std::move(combiner), std::move(policy), sampling);
  cospec::generation_limits limits;
  limits.max_new_tokens = 12;
  return decoder.generate(std::vector<cospec::token_id>{1, 2}, limits).tokens;
}

/// The same through the batch decoder, two requests over batch_of_one models (one at a time).
template <class Combiner, class Policy>
std::vector<cospec::token_id> decode_in_batch(Combiner combiner, Policy policy, float temperature) {
  synthetic_model small({.vocabulary_size = 50, .own_seed = 1, .agreement = 0.8});
  synthetic_model large({.vocabulary_size = 50, .own_seed = 2, .agreement = 0.8});
  cospec::batch_of_one<synthetic_model> small_batch(small), large_batch(large);
  cospec::sampling_settings sampling;
  sampling.temperature = temperature;
  sampling.top_k = 40;
  sampling.seed = 3;
  cospec::batch_decoder decoder(std::vector<cospec::batch_of_one<synthetic_model>*>{&small_batch, &large_batch},
                                std::move(combiner), std::move(policy), sampling);
  cospec::generation_limits limits;
  limits.max_new_tokens = 12;
  decoder.submit(std::vector<cospec::token_id>{1, 2}, limits);
  decoder.submit(std::vector<cospec::token_id>{1, 2}, limits);
  const auto done = decoder.run();
  return done.size() == 2 && done[0].result.tokens == done[1].result.tokens ? done[0].result.tokens
                                                                          : std::vector<cospec::token_id>{};
}

template <class Combiner>
int every_policy(const Combiner& combiner) {
  int failures = 0;
  for (float temperature : {1.0f, 0.0f}) {
    const auto reference = decode(combiner, cospec::standard{}, temperature);
    (void)decode(combiner, cospec::alternating({2, 1}), temperature);
    (void)decode(combiner, cospec::fixed_proposer(0, 3), temperature);
    (void)decode(combiner, cospec::adaptive(2), temperature);
    (void)decode(combiner, cospec::mixture_sampling(2), temperature);
    (void)decode(cospec::any_combiner(combiner), cospec::alternating({2, 1}), temperature);
    failures += decode_in_batch(combiner, cospec::standard{}, temperature) != reference;
    failures += decode_in_batch(combiner, cospec::adaptive(2), temperature) != decode(combiner, cospec::adaptive(2), temperature);
    if (temperature == 0.0f) {
      failures += decode(combiner, cospec::alternating({2, 1}), temperature) != reference;
      failures += decode(combiner, cospec::fixed_proposer(0, 3), temperature) != reference;
    }
  }
  return failures;
}

}  // namespace

int main() {
  int failures = kernels_once();
  failures += every_policy(cospec::weighted_ensemble({0.5f, 0.5f}));
  failures += every_policy(cospec::logit_arithmetic({1.0f, 0.5f}));
  failures += every_policy(cospec::contrastive_decoding(0.1f));
  failures += every_policy(cospec::callable_combiner(2, [](cospec::logit_rows rows, std::span<float> target) {
    for (std::size_t j = 0; j < target.size(); ++j) target[j] = 0.5f * (rows[0][j] + rows[1][j]);
  }));
  std::printf("%s: %d failures\n", failures == 0 ? "ok" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
