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
#pragma once

#include <algorithm>  // std::fill, std::max
#include <cmath>      // std::cos, std::sin, std::pow, std::sqrt, std::fma
#include <cstddef>    // std::size_t
#include <cstring>    // std::memcpy
#include <memory>     // std::shared_ptr, std::make_shared
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
      : weights_(std::move(weights)), team_(std::move(team)) {
    if (!weights_) throw std::invalid_argument("llama transformer: no weights");
    if (!team_) team_ = std::make_shared<thread_team>(1);
    weights_->validate();
    const transformer_config& c = weights_->config;
    layers_ = options.layers == 0 ? c.n_layers : options.layers;
    if (layers_ > c.n_layers)
      throw std::invalid_argument("llama transformer: " + std::to_string(layers_) + " layers asked of a " +
                                  std::to_string(c.n_layers) + "-layer network");
    limit_ = options.context_limit == 0 ? c.seq_len : options.context_limit;
    if (limit_ > c.seq_len)
      throw std::invalid_argument("llama transformer: context limit " + std::to_string(limit_) +
                                  " exceeds the model's seq_len " + std::to_string(c.seq_len));
    cache_ = kv_cache(layers_, limit_, c.kv_dim());
    build_rotary_table();
    scores_ = row_matrix(static_cast<Eigen::Index>(team_->size()), static_cast<Eigen::Index>(limit_));
  }

  // ---- cospec::model_adapter ----
  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return weights_->config.vocab_size; }
  [[nodiscard]] std::size_t context_length() const noexcept { return cache_.length(); }
  [[nodiscard]] std::size_t context_limit() const noexcept { return limit_; }

  /// Appends `tokens` to the context in one forward pass and writes the logits after each of
  /// the last rows.size() of them into `rows`. Throws, leaving the context unchanged:
  /// std::out_of_range for a token outside the vocabulary, std::length_error past
  /// context_limit(), std::invalid_argument for more rows than tokens or a row whose length
  /// is not the vocabulary size.
  void feed(std::span<const token_id> tokens, logit_outputs rows) {
    check_feed(tokens, rows);
    if (tokens.empty()) return;
    forward(tokens, rows);
  }

  /// Keeps the first `length` tokens of the context. Throws std::out_of_range past context_length().
  void truncate(std::size_t length) {
    if (length > cache_.length())
      throw std::out_of_range("llama transformer: cannot truncate a context of " + std::to_string(cache_.length()) +
                              " tokens to " + std::to_string(length));
    cache_.set_length(length);
  }

  // ---- introspection ----
  [[nodiscard]] std::size_t layers() const noexcept { return layers_; }
  [[nodiscard]] const transformer_weights& weights() const noexcept { return *weights_; }
  [[nodiscard]] const std::shared_ptr<thread_team>& team() const noexcept { return team_; }

 private:
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

  void check_feed(std::span<const token_id> tokens, logit_outputs rows) const {
    const std::size_t vocabulary = vocabulary_size();
    for (const token_id token : tokens)
      if (token < 0 || static_cast<std::size_t>(token) >= vocabulary)
        throw std::out_of_range("llama transformer: token " + std::to_string(token) + " is outside the vocabulary of " +
                                std::to_string(vocabulary));
    if (tokens.size() > limit_ - cache_.length())
      throw std::length_error("llama transformer: feeding " + std::to_string(tokens.size()) + " tokens to a context of " +
                              std::to_string(cache_.length()) + " exceeds the context limit of " +
                              std::to_string(limit_));
    if (rows.size() > tokens.size())
      throw std::invalid_argument("llama transformer: " + std::to_string(rows.size()) + " logit rows asked for " +
                                  std::to_string(tokens.size()) + " tokens");
    for (const std::span<float> row : rows)
      if (row.size() != vocabulary)
        throw std::invalid_argument("llama transformer: a logit row of " + std::to_string(row.size()) +
                                    " entries for a vocabulary of " + std::to_string(vocabulary));
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

  // Causal grouped-query attention of the m new tokens (queries in qkv_) over the cache,
  // (token, head) pairs split across the team; the result goes to attended_.
  void attend(std::size_t layer, std::size_t first_position, std::size_t m) {
    const transformer_config& c = weights_->config;
    const std::size_t head_size = c.head_size();
    const std::size_t group = c.n_heads / c.n_kv_heads;
    const float inverse_sqrt = 1.0f / std::sqrt(static_cast<float>(head_size));
    const row_matrix& keys = cache_.keys(layer);
    const row_matrix& values = cache_.values(layer);
    const std::size_t items = m * c.n_heads;
    team_->run([&](std::size_t member, std::size_t members) noexcept {
      float* scores = scores_.row(static_cast<Eigen::Index>(member)).data();
      const work_range range = split_work(items, member, members);
      for (std::size_t item = range.begin; item < range.end; ++item) {
        const std::size_t t = item / c.n_heads;
        const std::size_t h = item % c.n_heads;
        const std::size_t kv_offset = (h / group) * head_size;
        const std::size_t visible = first_position + t + 1;
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

  void forward(std::span<const token_id> tokens, logit_outputs rows) {
    const transformer_config& c = weights_->config;
    const transformer_weights& w = *weights_;
    const std::size_t m = tokens.size();
    const auto rows_m = static_cast<Eigen::Index>(m);
    const auto dim = static_cast<Eigen::Index>(c.dim);
    const auto kv_dim = static_cast<Eigen::Index>(c.kv_dim());
    const std::size_t first_position = cache_.length();

    reserve_rows(residual_, m, c.dim);
    reserve_rows(normed_, m, c.dim);
    reserve_rows(qkv_, m, c.dim + 2 * c.kv_dim());
    reserve_rows(attended_, m, c.dim);
    reserve_rows(projected_, m, c.dim);
    reserve_rows(gate_up_, m, 2 * c.hidden_dim);
    for (std::size_t t = 0; t < m; ++t) residual_.row(static_cast<Eigen::Index>(t)) = w.embedding.row(tokens[t]);

    for (std::size_t l = 0; l < layers_; ++l) {
      const layer_weights& layer = w.layers[l];
      for (Eigen::Index t = 0; t < rows_m; ++t)
        row_ops::rms_norm(residual_.row(t).data(), layer.attention_norm.data(), c.norm_epsilon, normed_.row(t).data(),
                          c.dim);
      batched_matmul(view(layer.qkv), view(normed_, m), view(qkv_, m), *team_);
      for (std::size_t t = 0; t < m; ++t) {
        const auto row = static_cast<Eigen::Index>(t);
        const auto position = static_cast<Eigen::Index>(first_position + t);
        rotate(qkv_.row(row).data(), c.n_heads, first_position + t);
        rotate(qkv_.row(row).data() + c.dim, c.n_kv_heads, first_position + t);
        cache_.keys(l).row(position) = qkv_.row(row).segment(dim, kv_dim);
        cache_.values(l).row(position) = qkv_.row(row).segment(dim + kv_dim, kv_dim);
      }
      attend(l, first_position, m);
      batched_matmul(view(layer.attention_output), view(attended_, m), view(projected_, m), *team_);
      residual_.topRows(rows_m) += projected_.topRows(rows_m);

      for (Eigen::Index t = 0; t < rows_m; ++t)
        row_ops::rms_norm(residual_.row(t).data(), layer.ffn_norm.data(), c.norm_epsilon, normed_.row(t).data(), c.dim);
      batched_matmul(view(layer.gate_up), view(normed_, m), view(gate_up_, m), *team_);
      // SwiGLU in place over the gate half; the down product reads it with the row stride.
      for (Eigen::Index t = 0; t < rows_m; ++t)
        row_ops::swiglu(gate_up_.row(t).data(), gate_up_.row(t).data() + c.hidden_dim, c.hidden_dim);
      batched_matmul(view(layer.down), const_rows_view{gate_up_.data(), m, c.hidden_dim, 2 * c.hidden_dim},
                     view(projected_, m), *team_);
      residual_.topRows(rows_m) += projected_.topRows(rows_m);
    }

    // Only the asked-for positions reach the classifier (a prompt prefix asks for none).
    const std::size_t wanted = rows.size();
    if (wanted > 0) {
      const auto wanted_rows = static_cast<Eigen::Index>(wanted);
      reserve_rows(final_, wanted, c.dim);
      for (Eigen::Index i = 0; i < wanted_rows; ++i)
        row_ops::rms_norm(residual_.row(rows_m - wanted_rows + i).data(), w.final_norm.data(), c.norm_epsilon,
                          final_.row(i).data(), c.dim);
      reserve_rows(logits_, wanted, c.vocab_size);
      batched_matmul(view(w.output_classifier()), view(final_, wanted), view(logits_, wanted), *team_);
      for (std::size_t i = 0; i < wanted; ++i)
        std::memcpy(rows[i].data(), logits_.row(static_cast<Eigen::Index>(i)).data(), c.vocab_size * sizeof(float));
    }
    cache_.set_length(first_position + m);
  }

  std::shared_ptr<const transformer_weights> weights_;
  std::shared_ptr<thread_team> team_;
  std::size_t layers_ = 0;
  std::size_t limit_ = 0;
  kv_cache cache_{0, 0, 0};
  row_matrix rotary_cos_, rotary_sin_;
  // Scratch, m rows each (attention scores: one row per team member).
  row_matrix residual_, normed_, qkv_, attended_, projected_, gate_up_, final_, logits_, scores_;
};

static_assert(cospec::model_adapter<transformer>);
static_assert(cospec::adapter_with_context_limit<transformer>);

}  // namespace cospec::examples::llama
