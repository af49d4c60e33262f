// What generate() takes (limits, stop conditions, streaming) and what it returns (tokens and
// statistics).
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>     // std::size_t
#include <cstdint>     // std::uint64_t
#include <functional>  // std::function
#include <optional>    // std::optional
#include <span>        // std::span
#include <string>      // std::string
#include <string_view> // std::string_view
#include <vector>      // std::vector

#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// A token's text, for stop strings and streaming (docs/engine.md, "Text, stop strings and
/// streaming"): the bytes the token adds to the text (a piece of a UTF-8 character possibly).
/// The view must stay valid until the next call. A decoder builds one from its first model
/// when the adapter gives token texts (adapter_with_token_text); a session takes it in
/// session_options::token_text.
using token_text_source = std::function<std::string_view(token_id)>;

/// One alternative of a log-probability report: a token and its log-probability.
struct token_logprob {
  token_id token = 0;
  float logprob = 0.0f;
};

/// Which distribution a log-probability is taken under.
enum class logprob_basis {
  /// The combined target at temperature 1 before any transform (bias, penalties, processor,
  /// truncation, the request's temperature): what OpenAI's API and evaluation harnesses call
  /// the model's log-probability. The same whatever the sampling settings and the policy.
  model,
  /// The distribution the token was drawn from: the target with every transform at the
  /// request's temperature (under greedy decoding: at temperature 1 with penalties, processor
  /// and bias, the truncation filters left out since they never change an argmax).
  sampled,
};

/// What a request reports of each committed token's log-probability (opt-in: nothing is
/// computed when `enabled` is false). Requesting them costs, per committed token, one
/// evaluation of the whole target row (a pass over every model's row) and a selection of the
/// `top` largest entries; mixture sampling, whose point is not to compute the other models'
/// rows, does not serve such requests (they run as collaborative decoding).
struct logprob_options {
  bool enabled = false;
  /// The `top` most likely tokens at each position, with their log-probabilities (at most 20,
  /// as OpenAI allows; ties by lower token id).
  std::size_t top = 0;
  logprob_basis basis = logprob_basis::model;
};

/// What an on_token callback sees of a committed token. It converts to the token id, so a
/// callback written for a token id (`[](cospec::token_id t) { ... }`) still works.
struct token_event {
  std::size_t index = 0;     ///< in the output: 0 for the first generated token
  std::size_t position = 0;  ///< in the text: the prompt's length plus `index`
  token_id token = 0;
  /// The text this token releases to a stream, where the session knows token texts: its
  /// piece, or less while the text may begin a stop string or ends inside a UTF-8 character
  /// (held back, and released with a later token), or more when held text is released; empty
  /// without token texts. The concatenation over a request is generation_result::text.
  std::string_view text;
  /// Under logprob_options: the token's log-probability and the top alternatives.
  std::optional<float> logprob;
  std::span<const token_logprob> top_logprobs;

  operator token_id() const noexcept { return token; }
};

/// When generation stops, and who hears about each token.
struct generation_limits {
  std::size_t max_new_tokens = 128;
  /// Generation ends after emitting any of these (ids in the vocabulary). The stop token is
  /// part of the output (tokens and text) unless include_stop_token is false.
  std::vector<token_id> stop_tokens;
  bool include_stop_token = true;
  /// Generation ends once the output ends with any of these sequences (included in the output).
  std::vector<std::vector<token_id>> stop_sequences;
  /// Generation ends once the output's text contains any of these strings, matched across
  /// token boundaries; the text from the match on is not part of generation_result::text nor
  /// of the stream (OpenAI's `stop`). Needs token texts (session_options::token_text, or an
  /// adapter with token_text()): without them a non-empty list is an invalid_configuration.
  std::vector<std::string> stop_strings;
  /// Stop tokens cannot be sampled, and stop sequences and strings do not end generation,
  /// before this many tokens were generated (vLLM's min_tokens): the target bans the stop
  /// tokens at those positions.
  std::size_t min_tokens = 0;
  /// Log-probabilities of the committed tokens (logprob_options).
  logprob_options logprobs;
  /// Called with every token as it is committed, in order; return false to stop after it.
  std::function<bool(const token_event&)> on_token;
  /// Overrides sampling_settings::seed for this call.
  std::optional<std::uint64_t> seed;
};

/// What a scoring request (session::start_scoring, decoder::score, batch_decoder::submit_scoring)
/// reports besides each continuation token's log-probability under the model-basis target and
/// whether it is that target's greedy choice.
struct scoring_options {
  /// The `top` most likely tokens at each position (at most 20).
  std::size_t top = 0;
  /// Called with every scored token, in order (text and log-probability filled as for
  /// generation); return false to stop there.
  std::function<bool(const token_event&)> on_token;
};

/// Why generate() returned (or a session's request ended).
enum class finish_reason {
  max_new_tokens,
  stop_token,
  stop_sequence,
  stopped_by_callback,
  cancelled,  ///< session::cancel()
  stop_string,    ///< a stop string matched (generation_limits::stop_strings)
  context_limit,  ///< the next token would not fit in a model's context: the text so far is kept
  scored,         ///< a scoring request (session::start_scoring) scored its continuation
};

/// The reason's name, as the enumerator is spelt ("max_new_tokens", ...).
[[nodiscard]] inline const char* to_string(finish_reason reason) noexcept {
  switch (reason) {
    case finish_reason::max_new_tokens: return "max_new_tokens";
    case finish_reason::stop_token: return "stop_token";
    case finish_reason::stop_sequence: return "stop_sequence";
    case finish_reason::stopped_by_callback: return "stopped_by_callback";
    case finish_reason::cancelled: return "cancelled";
    case finish_reason::stop_string: return "stop_string";
    case finish_reason::context_limit: return "context_limit";
    case finish_reason::scored: return "scored";
  }
  return "unknown";
}

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
  /// Proposals from the context (invocation::context_proposals), by their place among the
  /// context proposals of one invocation.
  proposer_statistics context;
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
  /// The output: every committed token, except a terminating stop token under
  /// include_stop_token = false. (A scoring request: the continuation scored.)
  std::vector<token_id> tokens;
  finish_reason reason = finish_reason::max_new_tokens;
  generation_statistics statistics;
  /// The output's text where the session knows token texts (else empty): the pieces of
  /// `tokens`, cut before a matched stop string.
  std::string text;
  /// Under logprob_options (or a scoring request): per token of `tokens`, its log-probability,
  /// whether it is the argmax of the model-basis target (the greedy choice at temperature 1,
  /// before transforms), and `top_count` alternatives from top_logprobs(i).
  std::vector<float> logprobs;
  std::vector<unsigned char> greedy;
  std::vector<token_logprob> top;
  std::size_t top_count = 0;

  /// The top alternatives of output token i (i < logprobs.size()), most likely first.
  [[nodiscard]] std::span<const token_logprob> top_logprobs(std::size_t i) const noexcept {
    return std::span<const token_logprob>(top).subspan(i * top_count, top_count);
  }
};

/// The paper's cost model for one model: a forward pass over m tokens costs
/// `per_pass + per_token * m` virtual seconds (docs/algorithm.md, "Cost model").
struct pass_cost {
  double per_pass = 1.0;
  double per_token = 0.0;
};

}  // namespace cospec
