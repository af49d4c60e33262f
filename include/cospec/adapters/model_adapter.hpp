// The ModelAdapter concept: what a backend implements so that cospec can drive it
// (docs/adapters.md maps each call onto llama.cpp and onto a PyTorch/HF-style forward).
#pragma once

#include "cospec/abi.hpp"

#include <concepts>  // std::convertible_to, std::same_as
#include <cstddef>   // std::size_t
#include <span>      // std::span
#include <string_view>  // std::string_view

#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// The rows an adapter writes logits into: row i receives the logits after the
/// (size() - i)-th last fed token; each row has vocabulary_size() entries. Non-owning.
using logit_outputs = std::span<const std::span<float>>;

/// Requirement 1: the vocabulary size V (the length of every logit row it writes).
template <class M>
concept adapter_with_vocabulary = requires(const M& m) {
  { m.vocabulary_size() } -> std::convertible_to<std::size_t>;
};

/// Requirement 2: how many tokens its context (KV cache) holds now.
template <class M>
concept adapter_with_context_length = requires(const M& m) {
  { m.context_length() } -> std::convertible_to<std::size_t>;
};

/// Requirement 3: append tokens to the context in one forward pass and write the logits of
/// the last rows.size() fed positions (rows.size() <= tokens.size(), possibly 0).
template <class M>
concept adapter_with_feed = requires(M& m, std::span<const token_id> tokens, logit_outputs rows) {
  { m.feed(tokens, rows) } -> std::same_as<void>;
};

/// Requirement 4: drop every token past the first `length` (KV-cache rollback);
/// length <= context_length().
template <class M>
concept adapter_with_truncate = requires(M& m, std::size_t length) {
  { m.truncate(length) } -> std::same_as<void>;
};

/// A ModelAdapter. A type M is a model adapter if
///  1. `m.vocabulary_size()` is its vocabulary size V, constant over its lifetime;
///  2. `m.context_length()` is the number of tokens in its context;
///  3. `m.feed(tokens, rows)` appends `tokens` (non-empty) to the context and writes, into
///     each of `rows` (each of length V), the logits predicting the token after each of the
///     last rows.size() fed tokens, oldest first. rows may be empty (nothing to write, as for
///     a prompt prefix) and never has more entries than tokens;
///  4. `m.truncate(length)` keeps only the first `length` tokens of the context.
/// It may throw from feed or truncate; cospec then rolls back (docs/reliability.md).
/// Optional: `m.context_limit()` returning the largest context it can hold; feeding past it
/// is reported as cospec::context_overflow before the adapter is called.
template <class M>
concept model_adapter =
    adapter_with_vocabulary<M> && adapter_with_context_length<M> && adapter_with_feed<M> && adapter_with_truncate<M>;

/// Adapters that say how many tokens their context can hold.
template <class M>
concept adapter_with_context_limit = requires(const M& m) {
  { m.context_limit() } -> std::convertible_to<std::size_t>;
};

/// Adapters (single-sequence or batched) that give a token's text: `m.token_text(t)` is the
/// bytes token t adds to a text (llama.cpp: llama_token_to_piece; a tokenizer's decoding of
/// one token), valid until the next call on the adapter. It gives stop strings, streamed text
/// and generation_result::text, and lets a decoder check that its models' vocabularies agree
/// token by token (docs/adapters.md, "Token texts").
template <class M>
concept adapter_with_token_text = requires(M& m, token_id t) {
  { m.token_text(t) } -> std::convertible_to<std::string_view>;
};

}  // namespace cospec
