// What generate() takes (limits, stop conditions, streaming) and what it returns (tokens and
// statistics).
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint64_t
#include <functional>  // std::function
#include <optional>    // std::optional
#include <vector>      // std::vector

#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// When generation stops, and who hears about each token.
struct generation_limits {
  std::size_t max_new_tokens = 128;
  /// Generation ends after emitting any of these (the stop token is part of the output).
  std::vector<token_id> stop_tokens;
  /// Generation ends once the output ends with any of these sequences (included in the output).
  std::vector<std::vector<token_id>> stop_sequences;
  /// Called with every token as it is committed, in order; return false to stop after it.
  std::function<bool(token_id)> on_token;
  /// Overrides sampling_settings::seed for this call.
  std::optional<std::uint64_t> seed;
};

/// Why generate() returned (or a session's request ended).
enum class finish_reason {
  max_new_tokens,
  stop_token,
  stop_sequence,
  stopped_by_callback,
  cancelled,  ///< session::cancel()
};

/// Per-model work.
struct model_statistics {
  std::size_t invocations = 0;     ///< times the speculator chose this model
  std::size_t forward_passes = 0;  ///< feed calls
  std::size_t tokens_fed = 0;      ///< tokens in those calls (prompt included)
  std::size_t logit_rows = 0;      ///< logit rows the adapter produced
  double adapter_seconds = 0.0;    ///< wall time inside this adapter's feed and truncate
  double virtual_time = 0.0;       ///< under decoder_options::pass_costs, else 0
  /// Under mixture sampling: positions whose token this model's distribution decided (it was
  /// drawn for them). 0 otherwise.
  std::size_t draws = 0;
  /// 1 if the decoder found this model's context changed behind its back at the start of the
  /// call (its length was not what the decoder left there) and fed it the text again from
  /// scratch (docs/engine.md, "Models shared with other code").
  std::size_t resynchronisations = 0;
};

/// Verification outcomes of one proposer's tokens.
struct proposer_statistics {
  std::size_t proposed = 0;  ///< proposals that reached verification
  std::size_t accepted = 0;
  /// By position in the proposer's run within one invocation (0 is its bonus token).
  std::vector<std::size_t> proposed_at;
  std::vector<std::size_t> accepted_at;
  [[nodiscard]] double acceptance_rate() const noexcept {
    return proposed == 0 ? 0.0 : static_cast<double>(accepted) / static_cast<double>(proposed);
  }
};

/// Everything one generate() call did.
struct generation_statistics {
  std::size_t tokens = 0;          ///< tokens emitted
  std::size_t invocations = 0;     ///< speculator decisions carried out
  /// Tokens drawn from the target where every model had scored (under mixture sampling: from
  /// the drawn model's distribution where it had scored, nothing pending).
  std::size_t direct_samples = 0;
  std::size_t rejections = 0;      ///< tokens emitted as replacements
  /// Whether the request ran as mixture sampling (docs/algorithm.md, "Mixture sampling"). A
  /// request of a speculator that asks for it (mixture_speculator) runs as collaborative
  /// decoding instead where its target is not exactly a mixture (greedy decoding, logit
  /// arithmetic, a truncation filter, bias, penalties or a logits processor): false then.
  bool mixture = false;
  std::vector<model_statistics> models;
  std::vector<proposer_statistics> proposers;
  double seconds_total = 0.0;
  double seconds_in_adapters = 0.0;
  double virtual_time = 0.0;  ///< sum over models, under decoder_options::pass_costs

  [[nodiscard]] double seconds_in_cospec() const noexcept { return seconds_total - seconds_in_adapters; }
  [[nodiscard]] double tokens_per_invocation() const noexcept {
    return invocations == 0 ? 0.0 : static_cast<double>(tokens) / static_cast<double>(invocations);
  }
  [[nodiscard]] std::size_t forward_passes() const noexcept {
    std::size_t total = 0;
    for (const auto& m : models) total += m.forward_passes;
    return total;
  }
};

/// The tokens generated (prompt excluded) and how.
struct generation_result {
  std::vector<token_id> tokens;
  finish_reason reason = finish_reason::max_new_tokens;
  generation_statistics statistics;
};

/// The paper's cost model for one model: a forward pass over m tokens costs
/// `per_pass + per_token * m` virtual seconds (docs/algorithm.md, "Cost model").
struct pass_cost {
  double per_pass = 1.0;
  double per_token = 0.0;
};

}  // namespace cospec
