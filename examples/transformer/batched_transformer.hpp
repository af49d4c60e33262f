// The transformer example as a cospec::batched_model_adapter: one instance holds a bounded
// pool of sequences, each with its own KV cache, and feed() runs the tokens of every sequence
// in the batch through a single forward pass (docs/adapters.md, "Batched adapters").
//
// Batching across sequences is what makes serving several requests cheaper than serving them
// one after another: the pass is memory-bound, and every weight product streams its weights
// once for the tokens of all sequences together (batched_matmul.hpp). A sequence's logits are
// nevertheless bit for bit those of feeding it alone, here or through transformer.hpp in the
// same chunks: the products are batch-invariant, and RoPE, the cache writes and attention are
// per token, over that token's own sequence (forward_pass in transformer.hpp, shared by both).
#pragma once

#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <memory>     // std::shared_ptr
#include <span>       // std::span
#include <stdexcept>  // std::invalid_argument, std::length_error, std::out_of_range
#include <string>     // std::to_string
#include <utility>    // std::move
#include <vector>     // std::vector

#include <cospec/adapters/batched_model_adapter.hpp>
#include <cospec/errors.hpp>

#include "transformer/kv_cache.hpp"
#include "transformer/thread_team.hpp"
#include "transformer/transformer.hpp"
#include "transformer/weights.hpp"

namespace cospec::examples::llama {

/// How one batched instance runs over a set of weights.
struct batched_transformer_options {
  /// Layers to run, 0 for all: fewer makes an early-exit draft (transformer_options::layers).
  std::size_t layers = 0;
  /// The largest context of each sequence, 0 for the config's seq_len.
  std::size_t context_limit = 0;
  /// The most sequences alive at once (llama.cpp's n_seq_max), at least 1. Each one's KV cache
  /// is allocated when the pool first needs it and kept for reuse after a release, so memory
  /// is bounded by this many caches.
  std::size_t max_sequences = 1;
};

/// A pool of sequences over shared immutable weights, fed together in one forward pass.
/// Not thread-safe: one instance per decoding thread (a team may be shared, as for transformer).
class batched_transformer {
 public:
  /// `team` runs the products, as for transformer (nullptr for a team of one).
  /// Throws std::invalid_argument for null weights, weights whose shapes do not match their
  /// config, or options the weights cannot meet (max_sequences 0 among them).
  batched_transformer(std::shared_ptr<const transformer_weights> weights, std::shared_ptr<thread_team> team,
                      batched_transformer_options options = {})
      : pass_(std::move(weights), std::move(team), {.layers = options.layers, .context_limit = options.context_limit},
              "llama batched transformer"),
        max_sequences_(options.max_sequences) {
    if (max_sequences_ == 0) throw std::invalid_argument("llama batched transformer: max_sequences must be at least 1");
    // Reserved up front, the bound being known: the pool never reallocates as it grows, and a
    // feed's list of segments (at most one per living sequence) never needs to.
    pool_.reserve(max_sequences_);
    segments_.reserve(max_sequences_);
  }

  // ---- cospec::batched_model_adapter ----
  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return pass_.vocabulary_size(); }
  [[nodiscard]] std::size_t max_sequences() const noexcept { return max_sequences_; }

  /// The lowest free id, its context empty. Throws cospec::capacity_exceeded when max_sequences()
  /// sequences are alive (and std::bad_alloc if its cache cannot be allocated; the pool is
  /// then unchanged).
  [[nodiscard]] sequence_id create_sequence() {
    for (std::size_t id = 0; id < pool_.size(); ++id)
      if (!pool_[id].alive) {
        pool_[id].cache.set_length(0);  // a released sequence's context goes with it
        pool_[id].alive = true;
        return id;
      }
    if (pool_.size() == max_sequences_)
      throw cospec::capacity_exceeded("llama batched transformer: all " + std::to_string(max_sequences_) +
                                      " sequences are in use (max_sequences); release one first");
    pool_.push_back(pooled_sequence{pass_.make_cache()});
    pool_.back().alive = true;
    return pool_.size() - 1;
  }

  /// Ends sequence `sequence`; its id may be handed out again. An id that is not alive is ignored.
  void release_sequence(sequence_id sequence) noexcept {
    if (sequence < pool_.size()) pool_[sequence].alive = false;
  }

  /// Throws std::out_of_range for a sequence that is not alive.
  [[nodiscard]] std::size_t context_length(sequence_id sequence) const {
    require_alive(sequence);
    return pool_[sequence].cache.length();
  }

  /// The same for every sequence. Throws std::out_of_range for a sequence that is not alive.
  [[nodiscard]] std::size_t context_limit(sequence_id sequence) const {
    require_alive(sequence);
    return pass_.context_limit();
  }

  /// Keeps the first `length` tokens of sequence `sequence`. Throws std::out_of_range for a
  /// sequence that is not alive or a length past its context_length().
  void truncate(sequence_id sequence, std::size_t length) {
    require_alive(sequence);
    kv_cache& cache = pool_[sequence].cache;
    if (length > cache.length())
      throw std::out_of_range("llama batched transformer: cannot truncate sequence " + std::to_string(sequence) +
                              " of " + std::to_string(cache.length()) + " tokens to " + std::to_string(length));
    cache.set_length(length);
  }

  /// Appends each entry's tokens to its sequence in one forward pass and writes the logits
  /// after each of its last rows.size() tokens into its rows. The whole batch is checked
  /// before anything runs, so a throw leaves every context unchanged: std::out_of_range for a
  /// sequence that is not alive or a token outside the vocabulary, std::length_error for an
  /// entry past its sequence's context_limit(), std::invalid_argument for a sequence twice in
  /// the batch, an entry without tokens, more rows than tokens or a row whose length is not
  /// the vocabulary size. An empty batch does nothing.
  void feed(std::span<const cospec::sequence_feed> batch) {
    check_batch(batch);
    segments_.clear();
    for (const cospec::sequence_feed& entry : batch)
      segments_.push_back({&pool_[entry.sequence].cache, entry.tokens, entry.rows});
    pass_.run(segments_);
  }

  // ---- introspection ----
  [[nodiscard]] std::size_t layers() const noexcept { return pass_.layers(); }
  [[nodiscard]] const transformer_weights& weights() const noexcept { return pass_.weights(); }
  [[nodiscard]] const std::shared_ptr<thread_team>& team() const noexcept { return pass_.team(); }

 private:
  struct pooled_sequence {
    kv_cache cache;
    bool alive = false;
    std::uint64_t batch_mark = 0;  ///< the number of the last batch that named it
  };

  void require_alive(sequence_id sequence) const {
    if (sequence >= pool_.size() || !pool_[sequence].alive)
      throw std::out_of_range("llama batched transformer: sequence " + std::to_string(sequence) + " does not exist");
  }

  void check_batch(std::span<const cospec::sequence_feed> batch) {
    // Each batch gets a fresh number, so a sequence seen twice is found without clearing
    // marks (a check that throws half-way leaves nothing to undo).
    ++batch_number_;
    for (const cospec::sequence_feed& entry : batch) {
      require_alive(entry.sequence);
      pooled_sequence& sequence = pool_[entry.sequence];
      if (sequence.batch_mark == batch_number_)
        throw std::invalid_argument("llama batched transformer: sequence " + std::to_string(entry.sequence) +
                                    " appears twice in one batch");
      sequence.batch_mark = batch_number_;
      if (entry.tokens.empty())
        throw std::invalid_argument("llama batched transformer: sequence " + std::to_string(entry.sequence) +
                                    ": an entry without tokens");
      pass_.check_segment(sequence.cache.length(), entry.tokens, entry.rows, entry.sequence);
    }
  }

  forward_pass pass_;
  std::size_t max_sequences_ = 0;
  std::vector<pooled_sequence> pool_;  ///< grows to max_sequences_, never beyond or shrinking
  std::vector<forward_segment> segments_;
  std::uint64_t batch_number_ = 0;
};

static_assert(cospec::batched_model_adapter<batched_transformer>);
static_assert(cospec::batched_adapter_with_context_limit<batched_transformer>);

}  // namespace cospec::examples::llama
