// A speculator as a user might write one against the concepts of
// include/cospec/speculate/speculator.hpp, deciding everything at random: which model runs,
// how many tokens it proposes, and whether its run ends early. Whatever a speculator chooses,
// the output distribution must be the target's (docs/algorithm.md, "Exactness"), so the
// session and the decoder are tested with the most erratic legal schedule there is.
#pragma once

#include <algorithm>  // std::min
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <random>     // std::mt19937_64
#include <vector>     // std::vector

#include <cospec/errors.hpp>
#include <cospec/speculate/speculator.hpp>

namespace cospec::testing {

/// At every decision: a model chosen uniformly among those that have something to do, and a
/// proposal length uniform in [0, max_length] (in [1, max_length] for a model that has
/// already scored the frontier, whose only possible work is to propose); after every
/// proposal the run ends with probability `stop_probability`. The chain of pending proposals
/// is kept at most `chain_cap` long, well inside session_options::max_pending. Its random
/// stream is its own (std::mt19937_64), independent of the tokens, and it is never reset, so
/// one decoder sees a different schedule at every call.
///
/// It also checks what the session tells it: every proposal_confidence must have
/// 0 < probability <= max_probability <= 1, and under greedy decoding the two are equal (the
/// proposer proposes its argmax). Violations are counted, for the tests to assert.
class random_speculator {
 public:
  explicit random_speculator(std::uint64_t seed, std::size_t max_length = 4, double stop_probability = 0.25,
                             std::size_t chain_cap = 12)
      : random_(seed), max_length_(max_length), stop_probability_(stop_probability), chain_cap_(chain_cap) {}

  void check(std::size_t model_count) const {
    if (model_count == 0) throw invalid_configuration("random_speculator: needs at least one model");
  }

  invocation next(const schedule_view& view) {
    const std::size_t frontier = view.pending_count();
    const std::size_t room = frontier < chain_cap_ ? std::min(max_length_, chain_cap_ - frontier) : 0;
    // A model that has not scored the frontier has tokens to feed (schedule_view: it does not
    // know its distribution there); one that has can only propose, which needs room.
    candidates_.clear();
    for (std::size_t k = 0; k < view.model_count(); ++k)
      if (!view.scored(k, frontier) || room > 0) candidates_.push_back(k);
    const std::size_t model = candidates_[below(candidates_.size())];
    const std::size_t shortest = view.scored(model, frontier) ? 1 : 0;
    const std::size_t proposals = shortest + below(room + 1 - shortest);
    ++decisions;
    return {model, proposals};
  }

  [[nodiscard]] bool wants_confidence() const noexcept { return true; }

  bool continue_proposing(const proposal_confidence& confidence) {
    ++confidences;
    if (!(confidence.probability > 0.0f && confidence.probability <= confidence.max_probability &&
          confidence.max_probability <= 1.0f))
      ++impossible_confidences;
    if (confidence.probability != confidence.max_probability) ++below_maximum;
    const bool stop = uniform() < stop_probability_;
    if (stop) ++early_stops;
    return !stop;
  }

  std::size_t decisions = 0;
  std::size_t confidences = 0;
  std::size_t impossible_confidences = 0;  ///< outside 0 < p <= max <= 1
  std::size_t below_maximum = 0;           ///< p < max: impossible under greedy decoding
  std::size_t early_stops = 0;

 private:
  /// Uniform in [0, n), n >= 1 (modulo bias is irrelevant for n <= 13).
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(random_() % n); }
  double uniform() { return static_cast<double>(random_() >> 11) * 0x1.0p-53; }

  std::mt19937_64 random_;
  std::size_t max_length_;
  double stop_probability_;
  std::size_t chain_cap_;
  std::vector<std::size_t> candidates_;
};

}  // namespace cospec::testing
