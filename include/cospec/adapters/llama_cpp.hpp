// cospec's adapters over llama.cpp (docs/adapters.md, "llama.cpp"): a single-sequence
// model_adapter and a multi-sequence batched_model_adapter over one llama_context, and
// configure_context_params, which sets the context parameters they need. This is the one place
// where llama.cpp's return codes become exceptions. Not part of <cospec/cospec.hpp>: include it
// where llama.h is on the include path (CMake: link cospec::llama_cpp).
//
// Targets the llama.cpp C API from January 2025 on (llama_vocab_n_tokens, llama_model_get_vocab,
// llama_batch_init, llama_decode, llama_get_logits_ith). What changed since is found at compile
// time, so one header serves every version:
//  - the call that removes a sequence's cells, newest first: llama_memory_seq_rm(
//    llama_get_memory(ctx), ...) (mid 2025 on), llama_kv_self_seq_rm (March 2025),
//    llama_kv_cache_seq_rm (before);
//  - a sequence's cells: llama_n_ctx_seq where it exists (late 2025 on: without kv_unified each
//    of n_seq_max sequences gets n_ctx / n_seq_max), else llama_n_ctx (one cache shared by all);
//  - the context parameters configure_context_params sets: kv_unified and flash_attn_type
//    where they exist, flash_attn (a bool) before.
// Tested on ggerganov/llama.cpp c392e50 (2025-02-20) and unslothai/llama.cpp d32676d (2026-08).
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>  // std::min, std::copy_n, std::find
#include <cstddef>    // std::size_t
#include <cstdint>    // std::int32_t, std::uint32_t
#include <limits>     // std::numeric_limits
#include <span>       // std::span
#include <string>     // std::string, std::to_string
#include <string_view>  // std::string_view
#include <vector>     // std::vector

#include <llama.h>

#include "cospec/adapters/batched_model_adapter.hpp"
#include "cospec/adapters/model_adapter.hpp"
#include "cospec/errors.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {
namespace llama_cpp {

namespace detail {

// Removes the cells of sequence `sequence` at positions >= `from`. The calls are found by
// argument-dependent lookup when instantiated, so a llama.h without one of them only removes
// that overload; the int/long/... parameter ranks the newest API first.
template <class Context>
auto remove_cells(Context* context, llama_seq_id sequence, llama_pos from, int)
    -> decltype(llama_memory_seq_rm(llama_get_memory(context), sequence, from, -1)) {
  return llama_memory_seq_rm(llama_get_memory(context), sequence, from, -1);
}
template <class Context>
auto remove_cells(Context* context, llama_seq_id sequence, llama_pos from, long)
    -> decltype(llama_kv_self_seq_rm(context, sequence, from, -1)) {
  return llama_kv_self_seq_rm(context, sequence, from, -1);
}
template <class Context>
auto remove_cells(Context* context, llama_seq_id sequence, llama_pos from, ...)
    -> decltype(llama_kv_cache_seq_rm(context, sequence, from, -1)) {
  return llama_kv_cache_seq_rm(context, sequence, from, -1);
}

// The cells one sequence of the context may hold. llama_n_ctx_seq (late 2025 on) says it; before
// it, every sequence could use the whole cache, llama_n_ctx. Found when instantiated, as above.
template <class Context>
auto cells_per_sequence(const Context* context, int) -> decltype(llama_n_ctx_seq(context)) {
  return llama_n_ctx_seq(context);
}
template <class Context>
std::uint32_t cells_per_sequence(const Context* context, long) {
  return llama_n_ctx(context);
}

/// One sequence's part of a batch: where its tokens start in the text, and its rows.
struct entry_plan {
  llama_seq_id sequence;
  std::size_t position;  // of its first token
  std::span<const token_id> tokens;
  logit_outputs rows;
};

/// The state and the feeding shared by both adapters: chunking by n_batch, all-or-nothing
/// feeds, llama.cpp's return codes.
class context_driver {
 public:
  explicit context_driver(llama_context* context) : context_(context) {
    if (context_ == nullptr) throw invalid_configuration("llama_cpp: the llama_context is null");
    const llama_model* model = llama_get_model(context_);
    vocabulary_ = static_cast<std::size_t>(llama_vocab_n_tokens(llama_model_get_vocab(model)));
    batch_capacity_ = static_cast<std::size_t>(llama_n_batch(context_));
    cells_ = llama_n_ctx(context_);
    sequence_cells_ = cells_per_sequence(context_, 0);
    if (batch_capacity_ == 0) throw invalid_configuration("llama_cpp: the context's n_batch is 0");
    batch_ = llama_batch_init(static_cast<std::int32_t>(batch_capacity_), 0, 1);
  }
  ~context_driver() { llama_batch_free(batch_); }
  context_driver(const context_driver&) = delete;
  context_driver& operator=(const context_driver&) = delete;

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return vocabulary_; }

  /// Token t's text (llama_token_to_piece, special tokens rendered, no leading space
  /// stripped), valid until the next call.
  [[nodiscard]] std::string_view token_text(token_id t) {
    const llama_vocab* vocab = llama_model_get_vocab(llama_get_model(context_));
    if (piece_.size() < 64) piece_.resize(64);
    std::int32_t written =
        llama_token_to_piece(vocab, t, piece_.data(), static_cast<std::int32_t>(piece_.size()), 0, true);
    if (written < 0) {  // the buffer was too small: -written is the size it needs
      piece_.resize(static_cast<std::size_t>(-written));
      written = llama_token_to_piece(vocab, t, piece_.data(), static_cast<std::int32_t>(piece_.size()), 0, true);
    }
    return std::string_view(piece_.data(), written > 0 ? static_cast<std::size_t>(written) : 0);
  }

  /// The cells any one sequence may hold (llama_n_ctx_seq, or llama_n_ctx before it existed).
  [[nodiscard]] std::size_t sequence_capacity() const noexcept { return sequence_cells_; }
  [[nodiscard]] llama_context* context() const noexcept { return context_; }

  /// Removes sequence `sequence`'s cells from `from` on. Throws backend_failure if llama.cpp
  /// refuses (recurrent models cannot remove part of a sequence).
  void remove(llama_seq_id sequence, std::size_t from) const {
    if (!remove_cells(context_, sequence, static_cast<llama_pos>(from), 0))
      throw backend_failure("llama_cpp: llama.cpp refused to remove the cells of sequence " + std::to_string(sequence) +
                            " from position " + std::to_string(from) +
                            " (a recurrent model cannot roll back part of a sequence)");
  }

  /// Decodes every entry's tokens, in chunks of at most n_batch tokens (llama_decode aborts the
  /// process on a longer batch), copying each entry's rows as the chunk that holds them ends.
  /// All or nothing: an entry that would end past its sequence's cells is a context_overflow
  /// before anything is decoded; if any chunk fails, every entry's cells from its first position
  /// on are removed again, and the error is thrown (context_overflow for a full KV cache).
  void decode(std::span<const entry_plan> entries) {
    // Checked here because llama.cpp would take the earlier chunks before refusing one, and a
    // sequence's own limit is below n_ctx when the cache is split per sequence.
    for (const entry_plan& entry : entries)
      if (entry.position + entry.tokens.size() > sequence_cells_)
        throw context_overflow("llama_cpp: sequence " + std::to_string(entry.sequence) + " would hold " +
                               std::to_string(entry.position + entry.tokens.size()) + " tokens, more than the " +
                               std::to_string(sequence_cells_) + " cells a sequence of this context has");
    try {
      std::size_t filled = 0;
      for (std::size_t e = 0; e < entries.size(); ++e) {
        const entry_plan& entry = entries[e];
        const std::size_t first_row = entry.tokens.size() - entry.rows.size();
        for (std::size_t i = 0; i < entry.tokens.size(); ++i) {
          if (filled == batch_capacity_) {
            run(filled);
            copy_rows(entries, filled);
            filled = 0;
          }
          batch_.token[filled] = static_cast<llama_token>(entry.tokens[i]);
          batch_.pos[filled] = static_cast<llama_pos>(entry.position + i);
          batch_.n_seq_id[filled] = 1;
          batch_.seq_id[filled][0] = entry.sequence;
          batch_.logits[filled] = i >= first_row ? 1 : 0;
          pending_.push_back({e, i >= first_row ? i - first_row : npos});
          ++filled;
        }
      }
      if (filled > 0) {
        run(filled);
        copy_rows(entries, filled);
      }
    } catch (...) {
      pending_.clear();
      for (const entry_plan& entry : entries) {
        try {
          remove(entry.sequence, entry.position);
        } catch (...) {
          // The original failure is the one to report; the caller's counters still say
          // where the sequence ends, and its next truncate removes the rest.
        }
      }
      throw;
    }
  }

 private:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  struct slot {
    std::size_t entry;
    std::size_t row;  // npos: no logits wanted
  };

  void run(std::size_t filled) {
    batch_.n_tokens = static_cast<std::int32_t>(filled);
    const std::int32_t status = llama_decode(context_, batch_);
    if (status == 0) return;
    pending_.clear();
    if (status == 1)
      throw context_overflow("llama_cpp: llama_decode found no KV-cache slot for " + std::to_string(filled) +
                             " tokens (status 1): the KV cache (" + std::to_string(cells_) + " cells, " +
                             std::to_string(sequence_cells_) + " for any one sequence) is full");
    if (status == 2) throw backend_failure("llama_cpp: llama_decode was aborted (status 2, the abort callback)");
    throw backend_failure("llama_cpp: llama_decode failed with status " + std::to_string(status));
  }

  void copy_rows(std::span<const entry_plan> entries, std::size_t filled) {
    for (std::size_t b = 0; b < filled; ++b) {
      const slot s = pending_[b];
      if (s.row == npos) continue;
      const float* logits = llama_get_logits_ith(context_, static_cast<std::int32_t>(b));
      if (logits == nullptr)
        throw backend_failure("llama_cpp: llama_get_logits_ith returned no logits for batch entry " +
                              std::to_string(b));
      const std::span<float> row = entries[s.entry].rows[s.row];
      std::copy_n(logits, std::min(row.size(), vocabulary_), row.begin());
    }
    pending_.clear();
  }

  llama_context* context_;
  std::size_t vocabulary_ = 0;
  std::size_t batch_capacity_ = 0;
  std::size_t cells_ = 0;           // llama_n_ctx
  std::size_t sequence_cells_ = 0;  // cells_per_sequence
  llama_batch batch_{};
  std::vector<slot> pending_;  // what each token of the current chunk is
  std::vector<char> piece_;    // token_text's buffer
};

/// configure_context_params for the llama_context_params of the llama.h at hand: the fields are
/// looked up when instantiated, so a version without one of them skips it.
template <class Params>
void apply_context_settings(Params& params, std::size_t sequences, bool fp32_attention) {
  params.n_seq_max = static_cast<std::uint32_t>(sequences);
  if constexpr (requires { params.kv_unified; }) params.kv_unified = true;
  if (!fp32_attention) return;
  params.type_k = GGML_TYPE_F32;
  params.type_v = GGML_TYPE_F32;
  if constexpr (requires { params.flash_attn_type; })
    params.flash_attn_type = static_cast<decltype(params.flash_attn_type)>(0);  // LLAMA_FLASH_ATTN_TYPE_DISABLED,
                                                                               // unknown to older headers
  else if constexpr (requires { params.flash_attn; })
    params.flash_attn = false;
}

}  // namespace detail

/// What configure_context_params sets.
struct context_settings {
  /// n_seq_max: 1 for a sequence_adapter, the `sequences` given to a batched_adapter.
  std::size_t sequences = 1;
  /// Attention as an fp32 reference computes it: an F32 KV cache (type_k, type_v) and flash
  /// attention off. llama.cpp's default F16 cache, and its CPU flash attention (on by default
  /// from late 2025, "auto"), each move logits by about 1e-3 against fp32. cospec's exactness
  /// does not need this; agreement with another engine's logits does.
  bool fp32_attention = false;
};

/// Sets in `params` what cospec's adapters need of a llama_context, and leaves the rest (n_ctx,
/// n_batch, n_ubatch, threads) to the caller (docs/adapters.md, "llama.cpp"):
///  1. n_seq_max = settings.sequences;
///  2. kv_unified = true where llama.cpp has it (mid 2025 on; before, the cache was always
///     unified): one pool of n_ctx cells that every sequence may use, which keeps a pass whose
///     sequences feed different token counts (a verification beside single tokens) in one
///     micro-batch. Without it llama.cpp gives each sequence n_ctx / n_seq_max cells and
///     splits such a pass into equal-length parts, one compute each. So give n_ctx room for all
///     sequences at once;
///  3. with settings.fp32_attention, type_k = type_v = GGML_TYPE_F32 and flash attention off
///     (flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED, or flash_attn = false before it).
/// Throws invalid_configuration for 0 sequences or more than n_seq_max can say.
inline void configure_context_params(llama_context_params& params, const context_settings& settings) {
  if (settings.sequences == 0 || settings.sequences > std::numeric_limits<std::uint32_t>::max())
    throw invalid_configuration("llama_cpp: a context of " + std::to_string(settings.sequences) + " sequences");
  detail::apply_context_settings(params, settings.sequences, settings.fp32_attention);
}

/// One sequence (id `sequence`, 0 by default) of a llama_context as a cospec::model_adapter.
/// The context (and its model) stay the caller's and must outlive the adapter; give each
/// model of a decoder its own context. The adapter counts the tokens it fed (llama.cpp has no
/// cheap exact count of a sequence) and keeps the count true after any failure: a feed is all
/// or nothing. It starts by emptying its sequence. Set the context's threads yourself
/// (llama_set_n_threads, both counts: the defaults oversubscribe small machines).
class sequence_adapter {
 public:
  explicit sequence_adapter(llama_context* context, llama_seq_id sequence = 0)
      : driver_(context), sequence_(sequence) {
    driver_.remove(sequence_, 0);
  }

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return driver_.vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const noexcept { return length_; }
  /// Token t's text (adapter_with_token_text): llama_token_to_piece, valid until the next call.
  [[nodiscard]] std::string_view token_text(token_id t) { return driver_.token_text(t); }
  /// The cells its sequence may hold: llama_n_ctx_seq where llama.cpp has it (n_ctx / n_seq_max
  /// for a context without kv_unified), else llama_n_ctx. Feeding past it is a
  /// context_overflow before anything is decoded.
  [[nodiscard]] std::size_t context_limit() const noexcept { return driver_.sequence_capacity(); }

  void feed(std::span<const token_id> tokens, logit_outputs rows) {
    check_rows(rows, tokens.size(), driver_.vocabulary_size());
    const detail::entry_plan plan{sequence_, length_, tokens, rows};
    driver_.decode(std::span(&plan, 1));
    length_ += tokens.size();
  }

  void truncate(std::size_t length) {
    if (length > length_)
      throw usage_error("llama_cpp: truncate to " + std::to_string(length) + " tokens of a context of " +
                        std::to_string(length_));
    driver_.remove(sequence_, length);
    length_ = length;
  }

  [[nodiscard]] llama_context* context() const noexcept { return driver_.context(); }

  static void check_rows(logit_outputs rows, std::size_t tokens, std::size_t vocabulary) {
    if (rows.size() > tokens)
      throw usage_error("llama_cpp: " + std::to_string(rows.size()) + " logit rows for " + std::to_string(tokens) +
                        " tokens");
    for (const std::span<float> row : rows)
      if (row.size() != vocabulary)
        throw usage_error("llama_cpp: a logit row of " + std::to_string(row.size()) + " entries for a vocabulary of " +
                          std::to_string(vocabulary));
  }

 private:
  detail::context_driver driver_;
  llama_seq_id sequence_;
  std::size_t length_ = 0;
};

/// The sequences 0 .. sequences - 1 of one llama_context as a cospec::batched_model_adapter:
/// one llama_batch with a seq_id per request for each pass (chunked by n_batch),
/// llama_kv_cache_seq_rm (or its successors) for rollback and release. `sequences` is the
/// n_seq_max the context was created with (llama_n_seq_max cannot tell it: before mid 2025 it
/// returns the KV cache's size); the constructor refuses more than llama_n_seq_max. Same
/// ownership, counting and failure rules as sequence_adapter. context_limit(s) is the cells
/// one sequence may hold (llama_n_ctx_seq, else llama_n_ctx); in a unified KV cache the
/// sequences share them, and a pass that finds the cache full is a context_overflow for the
/// requests in it. Create the context with configure_context_params(params, {.sequences = S}):
/// without kv_unified, llama.cpp (late 2025 on) splits a pass whose sequences feed different
/// token counts into several, and speculation loses its gain.
class batched_adapter {
 public:
  batched_adapter(llama_context* context, std::size_t sequences)
      : driver_(context), lengths_(sequences), alive_(sequences, false) {
    if (sequences == 0 || sequences > llama_n_seq_max(context))
      throw invalid_configuration("llama_cpp: " + std::to_string(sequences) + " sequences asked of a context with " +
                                  "llama_n_seq_max " + std::to_string(llama_n_seq_max(context)));
    for (std::size_t s = 0; s < alive_.size(); ++s) driver_.remove(static_cast<llama_seq_id>(s), 0);
  }

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return driver_.vocabulary_size(); }
  [[nodiscard]] std::size_t max_sequences() const noexcept { return alive_.size(); }
  /// Token t's text (adapter_with_token_text): llama_token_to_piece, valid until the next call.
  [[nodiscard]] std::string_view token_text(token_id t) { return driver_.token_text(t); }

  sequence_id create_sequence() {
    const auto free = std::find(alive_.begin(), alive_.end(), false);
    if (free == alive_.end())
      throw capacity_exceeded("llama_cpp: all " + std::to_string(alive_.size()) + " sequences (n_seq_max) are in use");
    const auto s = static_cast<std::size_t>(free - alive_.begin());
    driver_.remove(static_cast<llama_seq_id>(s), 0);
    *free = true;
    lengths_[s] = 0;
    return s;
  }

  void release_sequence(sequence_id s) noexcept {
    if (s >= alive_.size() || !alive_[s]) return;
    alive_[s] = false;
    try {
      driver_.remove(static_cast<llama_seq_id>(s), 0);  // a whole sequence: never refused
    } catch (...) {
      // create_sequence removes it again before the id is used.
    }
  }

  [[nodiscard]] std::size_t context_length(sequence_id s) const { return lengths_.at(check(s)); }
  [[nodiscard]] std::size_t context_limit(sequence_id s) const {
    check(s);
    return driver_.sequence_capacity();
  }

  void truncate(sequence_id s, std::size_t length) {
    check(s);
    if (length > lengths_[s])
      throw usage_error("llama_cpp: truncate of sequence " + std::to_string(s) + " to " + std::to_string(length) +
                        " tokens past its " + std::to_string(lengths_[s]));
    driver_.remove(static_cast<llama_seq_id>(s), length);
    lengths_[s] = length;
  }

  void feed(std::span<const sequence_feed> batch) {
    plans_.clear();
    for (const sequence_feed& entry : batch) {
      check(entry.sequence);
      sequence_adapter::check_rows(entry.rows, entry.tokens.size(), driver_.vocabulary_size());
      plans_.push_back({static_cast<llama_seq_id>(entry.sequence), lengths_[entry.sequence], entry.tokens, entry.rows});
    }
    driver_.decode(plans_);
    for (const sequence_feed& entry : batch) lengths_[entry.sequence] += entry.tokens.size();
  }

  [[nodiscard]] llama_context* context() const noexcept { return driver_.context(); }

 private:
  std::size_t check(sequence_id s) const {
    if (s >= alive_.size() || !alive_[s])
      throw usage_error("llama_cpp: sequence " + std::to_string(s) + " does not exist");
    return s;
  }

  detail::context_driver driver_;
  std::vector<std::size_t> lengths_;
  std::vector<bool> alive_;
  std::vector<detail::entry_plan> plans_;
};

static_assert(model_adapter<sequence_adapter>);
static_assert(adapter_with_context_limit<sequence_adapter>);
static_assert(batched_model_adapter<batched_adapter>);
static_assert(batched_adapter_with_context_limit<batched_adapter>);

}  // namespace llama_cpp
}  // namespace cospec
