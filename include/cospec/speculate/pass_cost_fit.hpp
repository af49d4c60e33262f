// The cost of a forward pass as a function of its tokens, a + b * tokens, fitted by decayed
// least squares to measured passes: what adaptive plans with when it measures pass costs, and
// how a batch decoder splits a shared pass's time between its requests.
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::clamp, std::max
#include <cmath>      // std::isfinite
#include <cstddef>    // std::size_t

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Decayed sums of measured passes of one model and the fitted `a + b * tokens`. Each new
/// pass weighs 1 and older ones decay by `decay` per pass.
class pass_cost_fit {
 public:
  explicit pass_cost_fit(double decay = 0.95) noexcept : decay_(decay) {}

  /// A pass over `tokens` tokens took `seconds`; ignored unless both are positive and finite.
  void observe(std::size_t tokens, double seconds) noexcept {
    if (!(seconds > 0.0) || !std::isfinite(seconds) || tokens == 0) return;
    const double m = static_cast<double>(tokens);
    weight_ = decay_ * weight_ + 1.0;
    tokens_ = decay_ * tokens_ + m;
    tokens_squared_ = decay_ * tokens_squared_ + m * m;
    seconds_ = decay_ * seconds_ + seconds;
    tokens_seconds_ = decay_ * tokens_seconds_ + m * seconds;
    const double mean_tokens = tokens_ / weight_;
    const double mean_seconds = seconds_ / weight_;
    const double variance = tokens_squared_ / weight_ - mean_tokens * mean_tokens;
    // The slope is refitted only while pass sizes vary enough to tell it (a policy settled on
    // one proposal length stops varying them); otherwise the last fit stands. It is kept in
    // [0, mean cost per token]: a pass never gets cheaper with more tokens, nor costs more
    // than that many one-token passes.
    if (variance > 0.25)
      slope_ = std::clamp((tokens_seconds_ / weight_ - mean_tokens * mean_seconds) / variance, 0.0,
                          mean_seconds / mean_tokens);
  }

  /// Whether any pass was observed.
  [[nodiscard]] bool measured() const noexcept { return weight_ > 0.0; }

  /// The fitted cost of a pass over `tokens` tokens (0 before any measurement); never below a
  /// thousandth of the mean measured pass.
  [[nodiscard]] double cost(std::size_t tokens) const noexcept {
    if (!measured()) return 0.0;
    const double mean_tokens = tokens_ / weight_;
    const double mean_seconds = seconds_ / weight_;
    const double fitted = mean_seconds + slope_ * (static_cast<double>(tokens) - mean_tokens);
    return std::max(fitted, 1e-3 * mean_seconds);
  }

  /// b: the fitted cost of each token.
  [[nodiscard]] double per_token() const noexcept { return slope_; }
  /// a: the fitted cost of a pass apart from its tokens (0 before any measurement).
  [[nodiscard]] double per_pass() const noexcept {
    return measured() ? std::max(0.0, (seconds_ - slope_ * tokens_) / weight_) : 0.0;
  }

 private:
  double decay_;
  double weight_ = 0.0, tokens_ = 0.0, tokens_squared_ = 0.0, seconds_ = 0.0, tokens_seconds_ = 0.0;
  double slope_ = 0.0;
};

}  // namespace cospec
