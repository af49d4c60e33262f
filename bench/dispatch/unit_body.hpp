// The workloads of bench_dispatch.cpp, compiled in each unit that includes this file.
//
// No include guard, on purpose: a unit defines DISPATCH_BENCH_UNIT (the exported function:
// baseline_unit or native_unit) and DISPATCH_BENCH_NAMESPACE, then includes this file once. The
// functions go into that namespace, and cospec's own code into the inline namespace of the unit's level
// (include/cospec/abi.hpp), so the linker never merges one unit's code into the other and each
// really runs what its own flags produced.
#include <cstddef>  // std::size_t
#include <cstring>  // std::memcpy
#include <span>     // std::span
#include <vector>   // std::vector

#include <cospec/cospec.hpp>

#include "workloads.hpp"

namespace dispatch_bench::DISPATCH_BENCH_NAMESPACE {

float log_sum_exp(std::span<const float> row) { return cospec::kernels::log_sum_exp(row); }

bool verify_position(const workload_data& data, std::size_t which) {
  static const cospec::sampling_settings settings;
  static cospec::weighted_ensemble ensemble({0.5f, 0.5f});
  static cospec::target_evaluator evaluator(ensemble, settings);
  static cospec::speculative_verifier verifier;
  static cospec::random_source random(7);
  static std::vector<float> target(data.size);
  const std::span<const float> rows[] = {data.logits[0], data.logits[1]};
  evaluator.distribution(cospec::logit_rows(rows), {}, target);
  return verifier.verify(data.proposed[which % data.proposed.size()], data.proposal, target, random).accepted;
}

/// A model whose forward pass copies its one row for every position asked.
class replay_model {
 public:
  explicit replay_model(std::span<const float> row) : row_(row) {}
  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return row_.size(); }
  [[nodiscard]] std::size_t context_length() const noexcept { return length_; }
  void feed(std::span<const cospec::token_id> tokens, cospec::logit_outputs rows) {
    for (std::size_t i = 0; i < rows.size(); ++i) std::memcpy(rows[i].data(), row_.data(), row_.size_bytes());
    length_ += tokens.size();
  }
  void truncate(std::size_t length) { length_ = length; }

 private:
  std::span<const float> row_;
  std::size_t length_ = 0;
};

double decoder_seconds_per_token(const workload_data& data, std::size_t tokens) {
  replay_model small(data.logits[0]);
  replay_model large(data.logits[1]);
  std::vector<replay_model*> models{&small, &large};
  cospec::sampling_settings sampling;
  sampling.seed = 11;
  cospec::decoder decoder(models, cospec::weighted_ensemble({0.5f, 0.5f}), cospec::alternating({1, 1}), sampling);
  cospec::generation_limits limits;
  limits.max_new_tokens = tokens;
  const cospec::generation_result result = decoder.generate(std::vector<cospec::token_id>{1}, limits);
  return result.statistics.seconds_in_cospec() / static_cast<double>(result.statistics.tokens);
}

}  // namespace dispatch_bench::DISPATCH_BENCH_NAMESPACE

dispatch_bench::unit_functions dispatch_bench::DISPATCH_BENCH_UNIT() {
  return {DISPATCH_BENCH_NAMESPACE::log_sum_exp, DISPATCH_BENCH_NAMESPACE::verify_position,
          DISPATCH_BENCH_NAMESPACE::decoder_seconds_per_token, COSPEC_KERNELS_BASELINE};
}
