// Gives a cheap model the forward-pass latency of an expensive one, so that wall-clock time
// on a CPU shows what the paper's cost model predicts for accelerators: a pass costs about
// the same whether it feeds one token or a handful.
#pragma once

#include <chrono>   // std::chrono::steady_clock, std::chrono::nanoseconds
#include <cstddef>  // std::size_t
#include <span>     // std::span
#include <utility>  // std::move

#include <cospec/adapters/model_adapter.hpp>
#include <cospec/token.hpp>

namespace cospec::examples {

/// Wraps an adapter; every feed takes at least `pass_latency` of wall time (busy-waiting, for
/// precision at microsecond scale). Truncation is free, as dropping KV-cache cells is.
template <model_adapter Model>
class simulated_latency {
 public:
  simulated_latency(Model model, std::chrono::nanoseconds pass_latency)
      : model_(std::move(model)), pass_latency_(pass_latency) {}

  [[nodiscard]] std::size_t vocabulary_size() const { return model_.vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const { return model_.context_length(); }

  void feed(std::span<const token_id> tokens, logit_outputs rows) {
    const auto deadline = std::chrono::steady_clock::now() + pass_latency_;
    model_.feed(tokens, rows);
    while (std::chrono::steady_clock::now() < deadline) {
    }
  }

  void truncate(std::size_t length) { model_.truncate(length); }

 private:
  Model model_;
  std::chrono::nanoseconds pass_latency_;
};

}  // namespace cospec::examples
