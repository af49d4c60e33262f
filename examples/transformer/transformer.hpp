// A llama-architecture transformer over shared weights, with its own KV cache, written as a
// cospec::model_adapter: feed() is one batched forward pass, truncate() is the KV-cache
// rollback. The reference adapter for wiring cospec into a real engine (docs/adapters.md,
// "The transformer example").
//
// The forward pass of m tokens at positions p .. p+m-1, per layer (llama2.c's run.c order):
//   h = RMSNorm(x); [q k v] = h Wqkv; rotate q and k (RoPE); append k, v to the cache;
//   x += Attention(q, cache[0 .. position]) Wo;  h = RMSNorm(x); x += (silu(h W1) * h W3) W2;
// then the classifier reads RMSNorm(x) of the positions whose logits were asked for. Every
// product streams its weights once for all m tokens (batched_matmul.hpp), and every result is
// independent of how tokens are batched, so m tokens in one call give the same logits, bit for
// bit, as m calls of one token.
//
// The pass itself is forward_pass, which takes the tokens of several sequences at once, each
// with its own cache: transformer runs it on one sequence, batched_transformer.hpp on many.
#pragma once

#include <algorithm>  // std::fill, std::max
#include <cmath>      // std::cos, std::sin, std::pow, std::sqrt, std::fma
#include <cstddef>    // std::size_t
#include <cstring>    // std::memcpy
#include <memory>     // std::shared_ptr, std::make_shared
#include <optional>   // std::optional, std::nullopt
#include <span>       // std::span
#include <stdexcept>  // std::invalid_argument, std::length_error, std::out_of_range
#include <string>     // std::string, std::to_string
#include <utility>    // std::move
#include <vector>     // std::vector

#include "transformer/eigen_core.hpp"

#include <cospec/adapters/model_adapter.hpp>
#include <cospec/token.hpp>

#include "transformer/batched_matmul.hpp"
#include "transformer/kv_cache.hpp"
#include "transformer/row_ops.hpp"
#include "transformer/thread_team.hpp"
#include "transformer/weights.hpp"

namespace cospec::examples::llama {

/// How one model instance runs over a set of weights.
struct transformer_options {
  /// Layers to run, 0 for all. Fewer makes an early-exit draft of the same network: the first
  /// `layers` blocks, then the final norm and classifier (self-speculative decoding's draft).
  std::size_t layers = 0;
  /// The largest context, 0 for the config's seq_len (the KV cache is allocated for it).
  std::size_t context_limit = 0;
};

/// One sequence's share of a forward pass: `tokens` go to positions cache->length() onwards
/// of `cache`, and the logits after the last rows.size() of them to `rows`, oldest first.
struct forward_segment {
  kv_cache* cache = nullptr;
  std::span<const token_id> tokens;
  logit_outputs rows;
};

/// The forward pass both adapters run: shared weights, the team, the rotary table and the
/// scratch, but no cache of its own (its callers own one per sequence). One run() takes the
/// tokens of any number of segments through every product together, while each token rotates
/// by its own position and attends over its own segment's cache only; so a segment's logits
/// are bit for bit those of running it alone (every step is per token, or batch-invariant).
class forward_pass {
 public:
  /// Throws std::invalid_argument, its message starting with `name`, for null weights, weights
  /// whose shapes do not match their config, or a layer count or context limit they cannot meet.
  forward_pass(std::shared_ptr<const transformer_weights> weights, std::shared_ptr<thread_team> team,
               transformer_options options, std::string name)
      : weights_(std::move(weights)), team_(std::move(team)), name_(std::move(name)) {
    if (!weights_) throw std::invalid_argument(name_ + ": no weights");
    if (!team_) team_ = std::make_shared<thread_team>(1);
    weights_->validate();
    const transformer_config& c = weights_->config;
    layers_ = options.layers == 0 ? c.n_layers : options.layers;
    if (layers_ > c.n_layers)
      throw std::invalid_argument(name_ + ": " + std::to_string(layers_) + " layers asked of a " +
                                  std::to_string(c.n_layers) + "-layer network");
    limit_ = options.context_limit == 0 ? c.seq_len : options.context_limit;
    if (limit_ > c.seq_len)
      throw std::invalid_argument(name_ + ": context limit " + std::to_string(limit_) +
                                  " exceeds the model's seq_len " + std::to_string(c.seq_len));
    build_rotary_table();
    scores_ = row_matrix(static_cast<Eigen::Index>(team_->size()), static_cast<Eigen::Index>(limit_));
  }

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return weights_->config.vocab_size; }
  [[nodiscard]] std::size_t layers() const noexcept { return layers_; }
  [[nodiscard]] std::size_t context_limit() const noexcept { return limit_; }
  [[nodiscard]] const transformer_weights& weights() const noexcept { return *weights_; }
  [[nodiscard]] const std::shared_ptr<thread_team>& team() const noexcept { return team_; }

  /// An empty cache this pass can fill: its layers, context_limit() tokens.
  [[nodiscard]] kv_cache make_cache() const { return kv_cache(layers_, limit_, weights_->config.kv_dim()); }

  /// Throws, before a segment of `tokens` and `rows` is run on a cache holding `length`
  /// tokens: std::out_of_range for a token outside the vocabulary, std::length_error past
  /// context_limit(), std::invalid_argument for more rows than tokens or a row whose length is
  /// not the vocabulary size. A message names `sequence` when there is one.
  void check_segment(std::size_t length, std::span<const token_id> tokens, logit_outputs rows,
                     std::optional<std::size_t> sequence = std::nullopt) const {
    // Built only on failure: a feed that passes formats nothing.
    auto prefix = [&] {
      return name_ + ": " + (sequence ? "sequence " + std::to_string(*sequence) + ": " : std::string());
    };
    const std::size_t vocabulary = vocabulary_size();
    for (const token_id token : tokens)
      if (token < 0 || static_cast<std::size_t>(token) >= vocabulary)
        throw std::out_of_range(prefix() + "token " + std::to_string(token) + " is outside the vocabulary of " +
                                std::to_string(vocabulary));
    if (tokens.size() > limit_ - length)
      throw std::length_error(prefix() + "feeding " + std::to_string(tokens.size()) + " tokens to a context of " +
                              std::to_string(length) + " exceeds the context limit of " + std::to_string(limit_));
    if (rows.size() > tokens.size())
      throw std::invalid_argument(prefix() + std::to_string(rows.size()) + " logit rows asked for " +
                                  std::to_string(tokens.size()) + " tokens");
    for (const std::span<float> row : rows)
      if (row.size() != vocabulary)
        throw std::invalid_argument(prefix() + "a logit row of " + std::to_string(row.size()) +
                                    " entries for a vocabulary of " + std::to_string(vocabulary));
  }

  /// Runs every segment in one pass and commits its tokens to its cache.
  /// Preconditions: every segment passed check_segment, and no two share a cache. Nothing
  /// here throws but allocation, and a throw commits nothing (rows written past a cache's
  /// length are scratch until the end).
  void run(std::span<const forward_segment> segments) {
    const transformer_config& c = weights_->config;
    const transformer_weights& w = *weights_;
    std::size_t m = 0;
    std::size_t wanted = 0;
    for (const forward_segment& segment : segments) {
      m += segment.tokens.size();
      wanted += segment.rows.size();
    }
    if (m == 0) return;
    const auto rows_m = static_cast<Eigen::Index>(m);
    const auto dim = static_cast<Eigen::Index>(c.dim);
    const auto kv_dim = static_cast<Eigen::Index>(c.kv_dim());

    reserve_rows(residual_, m, c.dim);
    reserve_rows(normed_, m, c.dim);
    reserve_rows(qkv_, m, c.dim + 2 * c.kv_dim());
    reserve_rows(attended_, m, c.dim);
    reserve_rows(projected_, m, c.dim);
    reserve_rows(gate_up_, m, 2 * c.hidden_dim);
    slots_.resize(m);
    std::size_t t = 0;
    for (const forward_segment& segment : segments) {
      const std::size_t first_position = segment.cache->length();
      for (std::size_t i = 0; i < segment.tokens.size(); ++i, ++t) {
        slots_[t] = {segment.cache, first_position + i};
        residual_.row(static_cast<Eigen::Index>(t)) = w.embedding.row(segment.tokens[i]);
      }
    }

    for (std::size_t l = 0; l < layers_; ++l) {
      const layer_weights& layer = w.layers[l];
      for (Eigen::Index r = 0; r < rows_m; ++r)
        row_ops::rms_norm(residual_.row(r).data(), layer.attention_norm.data(), c.norm_epsilon, normed_.row(r).data(),
                          c.dim);
      batched_matmul(view(layer.qkv), view(normed_, m), view(qkv_, m), *team_);
      for (std::size_t r = 0; r < m; ++r) {
        const auto row = static_cast<Eigen::Index>(r);
        const token_slot& slot = slots_[r];
        const auto position = static_cast<Eigen::Index>(slot.position);
        rotate(qkv_.row(row).data(), c.n_heads, slot.position);
        rotate(qkv_.row(row).data() + c.dim, c.n_kv_heads, slot.position);
        slot.cache->keys(l).row(position) = qkv_.row(row).segment(dim, kv_dim);
        slot.cache->values(l).row(position) = qkv_.row(row).segment(dim + kv_dim, kv_dim);
      }
      attend(l, m);
      batched_matmul(view(layer.attention_output), view(attended_, m), view(projected_, m), *team_);
      residual_.topRows(rows_m) += projected_.topRows(rows_m);

      for (Eigen::Index r = 0; r < rows_m; ++r)
        row_ops::rms_norm(residual_.row(r).data(), layer.ffn_norm.data(), c.norm_epsilon, normed_.row(r).data(), c.dim);
      batched_matmul(view(layer.gate_up), view(normed_, m), view(gate_up_, m), *team_);
      // SwiGLU in place over the gate half; the down product reads it with the row stride.
      for (Eigen::Index r = 0; r < rows_m; ++r)
        row_ops::swiglu(gate_up_.row(r).data(), gate_up_.row(r).data() + c.hidden_dim, c.hidden_dim);
      batched_matmul(view(layer.down), const_rows_view{gate_up_.data(), m, c.hidden_dim, 2 * c.hidden_dim},
                     view(projected_, m), *team_);
      residual_.topRows(rows_m) += projected_.topRows(rows_m);
    }

    // Only the asked-for positions reach the classifier (a prompt prefix asks for none): each
    // segment's last rows.size() tokens, gathered so that one product serves every segment.
    if (wanted > 0) {
      reserve_rows(final_, wanted, c.dim);
      std::size_t gathered = 0;
      std::size_t end = 0;  // one past the segment's last token in the pass
      for (const forward_segment& segment : segments) {
        end += segment.tokens.size();
        for (std::size_t i = end - segment.rows.size(); i < end; ++i, ++gathered)
          row_ops::rms_norm(residual_.row(static_cast<Eigen::Index>(i)).data(), w.final_norm.data(), c.norm_epsilon,
                            final_.row(static_cast<Eigen::Index>(gathered)).data(), c.dim);
      }
      reserve_rows(logits_, wanted, c.vocab_size);
      batched_matmul(view(w.output_classifier()), view(final_, wanted), view(logits_, wanted), *team_);
      gathered = 0;
      for (const forward_segment& segment : segments)
        for (const std::span<float> row : segment.rows)
          std::memcpy(row.data(), logits_.row(static_cast<Eigen::Index>(gathered++)).data(),
                      c.vocab_size * sizeof(float));
    }
    for (const forward_segment& segment : segments)
      segment.cache->set_length(segment.cache->length() + segment.tokens.size());
  }

 private:
  /// Where a token of the pass belongs: its sequence's cache and its position there.
  struct token_slot {
    kv_cache* cache = nullptr;
    std::size_t position = 0;
  };

  static const_rows_view view(const row_matrix& m) noexcept {
    const auto columns = static_cast<std::size_t>(m.cols());
    return {m.data(), static_cast<std::size_t>(m.rows()), columns, columns};
  }
  /// The first `rows` rows of a scratch matrix (which may hold more).
  static rows_view view(row_matrix& m, std::size_t rows) noexcept {
    const auto columns = static_cast<std::size_t>(m.cols());
    return {m.data(), rows, columns, columns};
  }
  /// Grow-only scratch: decoding alternates one-token and (g + 1)-token passes, and resizing
  /// to each would allocate on every pass.
  static void reserve_rows(row_matrix& m, std::size_t rows, std::size_t columns) {
    if (static_cast<std::size_t>(m.rows()) < rows || static_cast<std::size_t>(m.cols()) != columns)
      m.resize(static_cast<Eigen::Index>(std::max(rows, static_cast<std::size_t>(m.rows()))),
               static_cast<Eigen::Index>(columns));
  }

  // cos and sin of position * theta^(-2i / head_size) for every position and pair i, in
  // float as llama2.c computes them.
  void build_rotary_table() {
    const transformer_config& c = weights_->config;
    const std::size_t pairs = c.head_size() / 2;
    rotary_cos_ = row_matrix(static_cast<Eigen::Index>(limit_), static_cast<Eigen::Index>(pairs));
    rotary_sin_ = row_matrix(static_cast<Eigen::Index>(limit_), static_cast<Eigen::Index>(pairs));
    for (std::size_t position = 0; position < limit_; ++position)
      for (std::size_t i = 0; i < pairs; ++i) {
        const float frequency =
            1.0f / std::pow(c.rope_theta, static_cast<float>(2 * i) / static_cast<float>(c.head_size()));
        const float angle = static_cast<float>(position) * frequency;
        rotary_cos_(static_cast<Eigen::Index>(position), static_cast<Eigen::Index>(i)) = std::cos(angle);
        rotary_sin_(static_cast<Eigen::Index>(position), static_cast<Eigen::Index>(i)) = std::sin(angle);
      }
  }

  // Rotates each head of `vector` (heads × head_size floats) by the angles of `position`.
  void rotate(float* vector, std::size_t heads, std::size_t position) const noexcept {
    const std::size_t head_size = weights_->config.head_size();
    const float* cosines = rotary_cos_.row(static_cast<Eigen::Index>(position)).data();
    const float* sines = rotary_sin_.row(static_cast<Eigen::Index>(position)).data();
    for (std::size_t h = 0; h < heads; ++h) {
      float* head = vector + h * head_size;
      for (std::size_t i = 0; i < head_size / 2; ++i) {
        const float a = head[2 * i];
        const float b = head[2 * i + 1];
        // Explicit fused multiply-adds: the result must not depend on whether the compiler
        // contracts a * c - b * s (it may, under GCC's default -ffp-contract=fast).
        head[2 * i] = std::fma(a, cosines[i], -(b * sines[i]));
        head[2 * i + 1] = std::fma(a, sines[i], b * cosines[i]);
      }
    }
  }

  // Causal grouped-query attention of the m tokens of the pass (queries in qkv_), each over
  // its own sequence's cache up to its own position, (token, head) pairs split across the
  // team; the result goes to attended_. An item's arithmetic depends only on its query and its
  // cache (the member's score row is scratch it overwrites first), so neither the split nor
  // the other sequences of the pass change a bit of it.
  void attend(std::size_t layer, std::size_t m) {
    const transformer_config& c = weights_->config;
    const std::size_t head_size = c.head_size();
    const std::size_t group = c.n_heads / c.n_kv_heads;
    const float inverse_sqrt = 1.0f / std::sqrt(static_cast<float>(head_size));
    const std::size_t items = m * c.n_heads;
    team_->run([&](std::size_t member, std::size_t members) noexcept {
      float* scores = scores_.row(static_cast<Eigen::Index>(member)).data();
      const work_range range = split_work(items, member, members);
      for (std::size_t item = range.begin; item < range.end; ++item) {
        const std::size_t t = item / c.n_heads;
        const std::size_t h = item % c.n_heads;
        const std::size_t kv_offset = (h / group) * head_size;
        const token_slot& slot = slots_[t];
        const row_matrix& keys = slot.cache->keys(layer);
        const row_matrix& values = slot.cache->values(layer);
        const std::size_t visible = slot.position + 1;
        const float* query = qkv_.row(static_cast<Eigen::Index>(t)).data() + h * head_size;
        for (std::size_t s = 0; s < visible; ++s)
          scores[s] = row_ops::dot(query, keys.row(static_cast<Eigen::Index>(s)).data() + kv_offset, head_size) *
                      inverse_sqrt;
        row_ops::softmax(scores, visible);
        float* out = attended_.row(static_cast<Eigen::Index>(t)).data() + h * head_size;
        std::fill(out, out + head_size, 0.0f);
        for (std::size_t s = 0; s < visible; ++s)
          row_ops::axpy(scores[s], values.row(static_cast<Eigen::Index>(s)).data() + kv_offset, out, head_size);
      }
    });
  }

  std::shared_ptr<const transformer_weights> weights_;
  std::shared_ptr<thread_team> team_;
  std::string name_;
  std::size_t layers_ = 0;
  std::size_t limit_ = 0;
  row_matrix rotary_cos_, rotary_sin_;
  // Scratch, m rows each (attention scores: one row per team member; slots: one per token).
  row_matrix residual_, normed_, qkv_, attended_, projected_, gate_up_, final_, logits_, scores_;
  std::vector<token_slot> slots_;
};

/// One model instance: shared immutable weights, its own KV cache and scratch.
/// Not thread-safe: one instance per decoding thread. Instances may share weights freely, and
/// a team (thread_team::run serialises its callers, so sharing one across decoding threads is
/// safe but runs their products one at a time).
class transformer {
 public:
  /// `team` runs the products of this and any other instance sharing it (give every model
  /// of one process the same team, so they do not compete for cores).
  /// Throws std::invalid_argument for null weights, weights whose shapes do not match their
  /// config, or options the weights cannot meet.
  transformer(std::shared_ptr<const transformer_weights> weights, std::shared_ptr<thread_team> team,
              transformer_options options = {})
      : pass_(std::move(weights), std::move(team), options, "llama transformer"), cache_(pass_.make_cache()) {}

  // ---- cospec::model_adapter ----
  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return pass_.vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const noexcept { return cache_.length(); }
  [[nodiscard]] std::size_t context_limit() const noexcept { return pass_.context_limit(); }

  /// Appends `tokens` to the context in one forward pass and writes the logits after each of
  /// the last rows.size() of them into `rows`. Throws, leaving the context unchanged:
  /// std::out_of_range for a token outside the vocabulary, std::length_error past
  /// context_limit(), std::invalid_argument for more rows than tokens or a row whose length
  /// is not the vocabulary size.
  void feed(std::span<const token_id> tokens, logit_outputs rows) {
    pass_.check_segment(cache_.length(), tokens, rows);
    if (tokens.empty()) return;
    const forward_segment segment{&cache_, tokens, rows};
    pass_.run({&segment, 1});
  }

  /// Keeps the first `length` tokens of the context. Throws std::out_of_range past context_length().
  void truncate(std::size_t length) {
    if (length > cache_.length())
      throw std::out_of_range("llama transformer: cannot truncate a context of " + std::to_string(cache_.length()) +
                              " tokens to " + std::to_string(length));
    cache_.set_length(length);
  }

  // ---- introspection ----
  [[nodiscard]] std::size_t layers() const noexcept { return pass_.layers(); }
  [[nodiscard]] const transformer_weights& weights() const noexcept { return pass_.weights(); }
  [[nodiscard]] const std::shared_ptr<thread_team>& team() const noexcept { return pass_.team(); }

 private:
  forward_pass pass_;
  kv_cache cache_;
};

static_assert(cospec::model_adapter<transformer>);
static_assert(cospec::adapter_with_context_limit<transformer>);

}  // namespace cospec::examples::llama
