// The logit bias of the sampling settings: merged into one total per token, and applied to a
// target in either score domain without overflow (docs/combiners.md, "Sampling settings").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::sort, std::max, std::clamp, std::lower_bound
#include <cmath>      // std::exp, std::log, std::abs, std::isfinite, std::isnan
#include <cstddef>    // std::size_t
#include <limits>     // std::numeric_limits
#include <span>       // std::span
#include <utility>    // std::pair
#include <vector>     // std::vector

#include "cospec/kernels/reduce.hpp"
#include "cospec/kernels/transform.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// `sampling_settings::logit_bias` as one total per token: the sum of the token's entries, or
/// -inf if any of them is -inf (a ban wins over any boost). The entries are summed in a
/// canonical order (by value) into two doubles, the sum and what its rounding lost (Neumaier),
/// so neither their order nor a sum beyond float's range changes the total (-1e30 + 1 keeps its
/// 1), and the totals are applied in double: exp(100) overflows float, and `w * exp(100) *
/// exp(-100)` entry by entry would be inf, or NaN against a ban, although the distribution
/// asked for is well defined.
class merged_logit_bias {
 public:
  merged_logit_bias() = default;

  /// Precondition: every token id is >= 0 and inside the rows the bias is applied to
  /// (`validate(settings, V)` checks both). Allocates; the apply functions do not.
  explicit merged_logit_bias(std::span<const std::pair<token_id, float>> entries) {
    std::vector<std::pair<token_id, float>> sorted(entries.begin(), entries.end());
    // By token, then by value; NaN (which validate() rejects, possibly after this constructor
    // ran) sorts last, so that the order stays a strict weak ordering.
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
      if (a.first != b.first) return a.first < b.first;
      return !std::isnan(a.second) && (std::isnan(b.second) || a.second < b.second);
    });
    for (std::size_t i = 0; i < sorted.size();) {
      const token_id token = sorted[i].first;
      double sum = 0.0;
      double compensation = 0.0;  // what the rounding of `sum` lost: 1e30 + 1 - 1e30 is 1, not 0
      bool banned = false;
      for (; i < sorted.size() && sorted[i].first == token; ++i) {
        const double bias = sorted[i].second;
        if (bias == ban) {
          banned = true;
          continue;
        }
        const double total = sum + bias;
        compensation += std::abs(sum) >= std::abs(bias) ? (sum - total) + bias : (bias - total) + sum;
        sum = total;
      }
      biases_.push_back(banned ? token_bias{static_cast<std::size_t>(token), ban, 0.0}
                               : token_bias{static_cast<std::size_t>(token), sum, compensation});
    }
    log_weights_.resize(biases_.size());
  }

  [[nodiscard]] bool empty() const noexcept { return biases_.empty(); }

  /// Weights domain: multiplies each biased token's weight w by exp(total). A token with w = 0
  /// (masked) stays masked whatever its bias; NaN, infinite and negative weights are left for
  /// the caller's checks to report. Usually each biased weight is written directly: the work
  /// is over the biased tokens only. If one would pass e^64, every weight is first scaled so that
  /// the largest biased one is e^64, and if every weight would fall below e^-64 (a bias of
  /// -200 on every token), so that the largest is 1: the distribution is unchanged, and only
  /// weights negligible next to the largest underflow. One extra pass over the row then.
  void apply_to_weights(std::span<float> weights) {
    std::size_t best = biases_.size();  // the biased token with the largest new weight
    for (std::size_t i = 0; i < biases_.size(); ++i) {
      const float w = weights[biases_[i].token];
      const bool usable = w > 0.0f && std::isfinite(w) && biases_[i].high != ban;
      log_weights_[i] = usable ? std::log(static_cast<double>(w)) : keep;
      if (usable && (best == biases_.size() || log_ratio(i, best) > 0.0)) best = i;
    }
    // New weights are exp(log w + total - shift). Where a shift applies and the largest new
    // weight is a biased token's, they are computed relative to that one (log_ratio + level),
    // so that a total of 1e30 on several tokens does not swallow their log-weights.
    double shift = 0.0;
    double level = 0.0;
    bool relative = false;
    if (best != biases_.size()) {
      const double highest = log_weights_[best] + biases_[best].total();
      if (highest > largest_direct_log_weight) {
        relative = true;
        level = largest_direct_log_weight;
        shift = highest - largest_direct_log_weight;
        kernels::scale_row(weights, static_cast<float>(std::exp(-shift)));
      } else if (highest < -largest_direct_log_weight) {
        const double unbiased = std::log(static_cast<double>(largest_unbiased_weight(weights)));
        const double top = std::max(highest, unbiased);
        if (top < -largest_direct_log_weight) {
          relative = highest >= unbiased;
          shift = top;
          // Only if some unbiased weight is positive: then top >= log(smallest float) and
          // exp(-top) is finite. It may pass float's range; unbiased weights are <= e^top, so
          // their products do not (biased ones, overwritten below, are clamped rather than
          // converted out of range).
          if (unbiased != ban) {
            const double factor = std::exp(-top);
            for (float& w : weights)
              if (std::isfinite(w))
                w = static_cast<float>(std::clamp(static_cast<double>(w) * factor, -largest_float, largest_float));
          }
        }
      }
    }
    for (std::size_t i = 0; i < biases_.size(); ++i) {
      float& w = weights[biases_[i].token];
      if (biases_[i].high == ban) {
        if (std::isfinite(w) && w > 0.0f) w = 0.0f;
      } else if (!std::isnan(log_weights_[i])) {
        const double log_weight =
            relative ? log_ratio(i, best) + level : log_weights_[i] + biases_[i].total() - shift;
        w = static_cast<float>(std::exp(log_weight));
      }
    }
  }

  /// Log domain: adds each biased token's total to its score; -inf bans the token. Masked, NaN
  /// and +inf scores are left as they are (a mask stays a mask, the others are the caller's to
  /// report). Usually each biased score is written directly, rounded once to float. If a biased
  /// score would be large (beyond +-128, where float's rounding of it passes about 1e-5) or
  /// leave float's range, every finite score is shifted instead, in double, so that the
  /// largest is 0 (the same softmax and the same argmax), each computed relative to the
  /// largest: a bias of -1e30 on every token changes nothing. Scores more than float's range
  /// below the largest become -inf, their probability in float anyway. One extra scalar pass
  /// over the row then.
  void add_to_log_weights(std::span<float> scores) const {
    bool direct = true;
    for (const token_bias& b : biases_) {
      const float s = scores[b.token];
      if (std::isfinite(s) && b.high != ban && !(std::abs(s + b.total()) <= largest_direct_score)) direct = false;
    }
    if (direct) {
      for (const token_bias& b : biases_)
        if (float& s = scores[b.token]; std::isfinite(s))
          s = b.high == ban ? -infinity : static_cast<float>(static_cast<double>(s) + b.total());
      return;
    }
    // Visits every finite score with its total (0 for an unbiased token), in token order.
    constexpr token_bias unbiased{0, 0.0, 0.0};
    auto for_each_score = [&](auto&& visit) {
      std::size_t next = 0;
      for (std::size_t j = 0; j < scores.size(); ++j) {
        const bool biased = next < biases_.size() && biases_[next].token == j;
        const token_bias& b = biased ? biases_[next++] : unbiased;
        if (std::isfinite(scores[j])) visit(scores[j], b);
      }
    };
    // The largest s + total, compared by differences so that huge totals do not swallow s.
    float best_score = 0.0f;
    const token_bias* best = nullptr;
    for_each_score([&](float& s, const token_bias& b) {
      if (b.high != ban && (best == nullptr || difference(b, *best) + (static_cast<double>(s) - best_score) > 0.0)) {
        best_score = s;
        best = &b;
      }
    });
    for_each_score([&](float& s, const token_bias& b) {
      const double shifted = b.high == ban ? ban : difference(b, *best) + (static_cast<double>(s) - best_score);
      s = shifted < -largest_float ? -infinity : static_cast<float>(shifted);
    });
  }

 private:
  static constexpr double ban = -std::numeric_limits<double>::infinity();
  static constexpr float infinity = std::numeric_limits<float>::infinity();
  static constexpr double largest_float = std::numeric_limits<float>::max();
  static constexpr double keep = std::numeric_limits<double>::quiet_NaN();  // log_weights_: leave as it is
  /// Biased weights up to e^64 are written directly: exp overflows float above about 88.7, and
  /// the margin leaves room for the unbiased weights (<= 1 from the provided combiners).
  static constexpr double largest_direct_log_weight = 64.0;
  /// Biased scores up to this magnitude are rounded to float directly (error <= 7.6e-6).
  static constexpr double largest_direct_score = 128.0;

  /// One token's total, high + low (low: what rounding the sum to a double lost).
  struct token_bias {
    std::size_t token;
    double high;
    double low;
    [[nodiscard]] constexpr double total() const noexcept { return high + low; }
  };

  /// a's total minus b's (both finite), parts first: exact for equal totals however large.
  [[nodiscard]] static double difference(const token_bias& a, const token_bias& b) noexcept {
    return (a.high - b.high) + (a.low - b.low);
  }

  /// log(new weight of biased token i / new weight of biased token j), both usable.
  [[nodiscard]] double log_ratio(std::size_t i, std::size_t j) const noexcept {
    return difference(biases_[i], biases_[j]) + (log_weights_[i] - log_weights_[j]);
  }

  /// The largest finite weight of a token without a bias, or 0. One max pass; a scan that
  /// skips the biased tokens only if the largest weight is one of theirs.
  [[nodiscard]] float largest_unbiased_weight(std::span<const float> weights) const {
    const kernels::max_location best = kernels::max_argmax(weights);
    const auto biased = std::lower_bound(biases_.begin(), biases_.end(), best.index,
                                         [](const token_bias& b, std::size_t token) { return b.token < token; });
    if (std::isfinite(best.value) && (biased == biases_.end() || biased->token != best.index))
      return std::max(best.value, 0.0f);
    float largest = 0.0f;
    std::size_t next = 0;
    for (std::size_t j = 0; j < weights.size(); ++j) {
      if (next < biases_.size() && biases_[next].token == j) {
        ++next;
        continue;
      }
      if (std::isfinite(weights[j])) largest = std::max(largest, weights[j]);
    }
    return largest;
  }

  std::vector<token_bias> biases_;   // sorted by token, one per token
  std::vector<double> log_weights_;  // apply_to_weights: log of each usable biased token's weight
};

}  // namespace cospec
