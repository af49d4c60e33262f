// The BatchedModelAdapter concept: a backend that runs one forward pass over several
// sequences at once, each with its own KV cache (docs/adapters.md, "Batched adapters", maps it
// onto llama.cpp's llama_batch with seq_id and onto an HF-style padded forward).
#pragma once

#include "cospec/abi.hpp"

#include <concepts>  // std::convertible_to, std::same_as
#include <cstddef>   // std::size_t
#include <span>      // std::span

#include "cospec/adapters/model_adapter.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Names one sequence of a batched adapter (llama.cpp: a llama_seq_id; HF: a row of the
/// batch's cache). Only the adapter gives them out, from create_sequence().
using sequence_id = std::size_t;

/// One sequence's share of a batched forward pass: append `tokens` (never empty) to sequence
/// `sequence` and write the logits after each of its last rows.size() tokens into `rows`,
/// oldest first (rows.size() <= tokens.size(), possibly 0).
struct sequence_feed {
  sequence_id sequence = 0;
  std::span<const token_id> tokens;
  logit_outputs rows;
};

/// Requirement 2: how many sequences may exist at once (llama.cpp: n_seq_max). Constant.
template <class M>
concept batched_adapter_with_sequence_pool = requires(M& m, const M& c, sequence_id s) {
  { c.max_sequences() } -> std::convertible_to<std::size_t>;
  { m.create_sequence() } -> std::convertible_to<sequence_id>;
  { m.release_sequence(s) } -> std::same_as<void>;
};

/// Requirement 4: how many tokens one sequence's context holds.
template <class M>
concept batched_adapter_with_context_length = requires(const M& m, sequence_id s) {
  { m.context_length(s) } -> std::convertible_to<std::size_t>;
};

/// Requirement 5: one forward pass over several sequences.
template <class M>
concept batched_adapter_with_feed = requires(M& m, std::span<const sequence_feed> batch) {
  { m.feed(batch) } -> std::same_as<void>;
};

/// Requirement 6: per-sequence rollback.
template <class M>
concept batched_adapter_with_truncate = requires(M& m, sequence_id s, std::size_t length) {
  { m.truncate(s, length) } -> std::same_as<void>;
};

/// A BatchedModelAdapter. A type M is one if
///  1. `m.vocabulary_size()` is its vocabulary size V, constant over its lifetime;
///  2. `m.max_sequences()` is the most sequences that may exist at once (constant), and
///  3. `m.create_sequence()` returns the id of a new sequence with an empty context, distinct
///     from every other living sequence; when none is free now (a pool shared with other
///     users) it throws cospec::capacity_exceeded, which a batch decoder answers by queueing
///     the request until one is (any other exception fails the request), and
///     `m.release_sequence(s)` ends sequence s, dropping its context; its id may be handed
///     out again. It must not throw (a batch decoder counts a sequence whose release threw as
///     still in use, so the pool holds one fewer from then on);
///  4. `m.context_length(s)` is the number of tokens in sequence s's context;
///  5. `m.feed(batch)` runs one forward pass over every entry of `batch` (at most one entry
///     per sequence, each with non-empty tokens): it appends each entry's tokens to its
///     sequence and writes that entry's rows exactly as model_adapter's feed would for that
///     sequence alone. The logits of one sequence must not depend on the others in the pass
///     (cospec's exactness needs no more; greedy identity with decoding alone needs them bit
///     for bit the same). If it throws, every sequence in the batch may hold any number of the
///     tokens it was given; the batch decoder ends those requests and releases their sequences;
///  6. `m.truncate(s, length)` keeps only the first `length` tokens of sequence s
///     (length <= context_length(s)).
/// Optional: `m.context_limit(s)` returning the largest context sequence s can hold; a feed
/// past it is reported as cospec::context_overflow before the adapter is called.
template <class M>
concept batched_model_adapter = adapter_with_vocabulary<M> && batched_adapter_with_sequence_pool<M> &&
                                batched_adapter_with_context_length<M> && batched_adapter_with_feed<M> &&
                                batched_adapter_with_truncate<M>;

/// Batched adapters that say how many tokens each sequence can hold.
template <class M>
concept batched_adapter_with_context_limit = requires(const M& m, sequence_id s) {
  { m.context_limit(s) } -> std::convertible_to<std::size_t>;
};

}  // namespace cospec
