// The product every layer of a forward pass is made of: m token activations times a weight
// matrix, out[t][r] = dot(weights.row(r), in[t]), written so that each weight row is read
// from memory once for all m tokens.
//
// Why not Eigen's product: for m = 1 Eigen's matrix-vector product streams the weights at
// memory speed, but its general product for m = 2..8 re-packs and re-reads the weights and
// costs 3-5x the single-token pass (docs/benchmarks.md, "Transformer"), which is the whole
// gain of verifying m proposals in one pass. Here a block of rows (a few KB) is loaded once and
// multiplied with every token while it sits in L1, with R rows × T tokens accumulators in
// registers, and the rows are split between the members of a thread_team.
//
// Batch invariance: out[t][r] is computed by the same sequence of operations (lane-wise fused
// multiply-adds over the columns in order, one horizontal sum, then the tail) whatever m and
// whichever tile it falls in, so a token's result does not depend on the tokens it is batched
// with. A forward pass of m tokens therefore gives bit-identical rows to m single-token passes,
// which is what makes greedy outputs identical across speculation methods on this backend.
#pragma once

#include <cmath>    // std::fma
#include <cstddef>  // std::size_t

#include <xsimd/xsimd.hpp>

#include "transformer/thread_team.hpp"

namespace cospec::examples::llama {

/// A row-major view of m rows of `columns` floats, rows `stride` floats apart.
struct const_rows_view {
  const float* data = nullptr;
  std::size_t rows = 0;
  std::size_t columns = 0;
  std::size_t stride = 0;
  [[nodiscard]] const float* row(std::size_t r) const noexcept { return data + r * stride; }
};
struct rows_view {
  float* data = nullptr;
  std::size_t rows = 0;
  std::size_t columns = 0;
  std::size_t stride = 0;
  [[nodiscard]] float* row(std::size_t r) const noexcept { return data + r * stride; }
  operator const_rows_view() const noexcept { return {data, rows, columns, stride}; }  // NOLINT: a view is a view
};

namespace detail {

using float_batch = xsimd::batch<float>;
inline constexpr std::size_t lanes = float_batch::size;

// Blocking. Weight rows go in blocks of `block_rows`; the columns in chunks of `chunk_columns`
// (one chunk of a block and of up to `group_tokens` tokens fit in L1 together, so the tokens'
// activations are not re-read from L2 for every block); tokens in groups of `group_tokens`
// (a long prompt streams the weights once per group). Running sums live in registers within a
// tile and in `partial` between chunks.
inline constexpr std::size_t block_rows = 8;
inline constexpr std::size_t chunk_columns = 256;
inline constexpr std::size_t group_tokens = 16;
// The first tile over a block asks for the rows this many blocks further on: the hardware
// prefetcher alone lets the stream stall whenever the core is busy multiplying many tokens.
inline constexpr std::size_t prefetch_blocks = 2;

using partial_sums = float_batch[block_rows][group_tokens];

// R weight rows × T tokens over columns [k_begin, k_end) (whole batches): R*T accumulators, T
// token batches and one weight batch in registers (at most 16 on AVX2). Every (row, token)
// pair follows the same operation order whatever the tile: one accumulator, fused
// multiply-adds over the columns in order.
template <std::size_t R, std::size_t T>
inline void multiply_tile(const float* const* rows, const float* const* tokens, std::size_t k_begin, std::size_t k_end,
                          bool first_chunk, std::size_t prefetch_ahead, float_batch (*partial)[group_tokens],
                          std::size_t first_token) noexcept {
  float_batch accumulators[R][T];
#pragma GCC unroll 8
  for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (std::size_t t = 0; t < T; ++t) accumulators[r][t] = first_chunk ? float_batch(0.0f) : partial[r][first_token + t];
  auto step = [&](std::size_t k) {
    float_batch x[T];
#pragma GCC unroll 8
    for (std::size_t t = 0; t < T; ++t) x[t] = float_batch::load_unaligned(tokens[t] + k);
#pragma GCC unroll 8
    for (std::size_t r = 0; r < R; ++r) {
      const float_batch w = float_batch::load_unaligned(rows[r] + k);
#pragma GCC unroll 8
      for (std::size_t t = 0; t < T; ++t) accumulators[r][t] = xsimd::fma(w, x[t], accumulators[r][t]);
    }
  };
  constexpr std::size_t line = 64 / sizeof(float);  // a cache line per row and iteration
  std::size_t k = k_begin;
  if (prefetch_ahead != 0) {
    for (; k + line <= k_end; k += line) {
#pragma GCC unroll 8
      for (std::size_t r = 0; r < R; ++r) __builtin_prefetch(rows[r] + k + prefetch_ahead);
#pragma GCC unroll 4
      for (std::size_t j = 0; j < line; j += lanes) step(k + j);
    }
  }
  for (; k < k_end; k += lanes) step(k);
#pragma GCC unroll 8
  for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (std::size_t t = 0; t < T; ++t) partial[r][first_token + t] = accumulators[r][t];
}

// One block of `count` rows (count == block_rows, or fewer at the end of a range, then one
// row per tile) times one group of tokens.
inline void multiply_block(const_rows_view weights, std::size_t first_row, std::size_t count, const_rows_view in,
                           std::size_t first_token, std::size_t tokens, rows_view out, bool prefetch) noexcept {
  const std::size_t columns = weights.columns;
  const std::size_t body = columns - columns % lanes;
  const float* rows[block_rows];
  const float* token_rows[group_tokens];
  for (std::size_t r = 0; r < count; ++r) rows[r] = weights.row(first_row + r);
  for (std::size_t t = 0; t < tokens; ++t) token_rows[t] = in.row(first_token + t);
  alignas(64) partial_sums partial;
  const bool full = count == block_rows;
  for (std::size_t k_begin = 0; k_begin < body; k_begin += chunk_columns) {
    const std::size_t k_end = k_begin + chunk_columns < body ? k_begin + chunk_columns : body;
    const bool first_chunk = k_begin == 0;
    std::size_t ahead = prefetch && full ? prefetch_blocks * block_rows * weights.stride : 0;
    auto tiles = [&]<std::size_t R, std::size_t T>(std::size_t t) {
      const std::size_t step = full ? R : 1;
      for (std::size_t r = 0; r < count; r += step) {
        if (full)
          multiply_tile<R, T>(rows + r, token_rows + t, k_begin, k_end, first_chunk, ahead, &partial[r], t);
        else
          multiply_tile<1, T>(rows + r, token_rows + t, k_begin, k_end, first_chunk, 0, &partial[r], t);
      }
      ahead = 0;  // the other tiles find the block in cache
    };
    // Tiles of 4 tokens, ending in 3 + 2 rather than 4 + 1 (a lone token is a whole extra pass
    // over the block for little arithmetic).
    std::size_t t = 0;
    while (t < tokens) {
      const std::size_t left = tokens - t;
      const std::size_t tile = left == 5 ? 3 : (left < 4 ? left : 4);
      switch (tile) {
        case 4: tiles.template operator()<2, 4>(t); break;
        case 3: tiles.template operator()<2, 3>(t); break;
        case 2: tiles.template operator()<4, 2>(t); break;
        default: tiles.template operator()<8, 1>(t); break;
      }
      t += tile;
    }
  }
  for (std::size_t r = 0; r < count; ++r)
    for (std::size_t t = 0; t < tokens; ++t) {
      float sum = body == 0 ? 0.0f : xsimd::hadd(partial[r][t]);
      for (std::size_t c = body; c < columns; ++c) sum = std::fma(rows[r][c], token_rows[t][c], sum);
      out.row(first_token + t)[first_row + r] = sum;
    }
}

// Rows [row_begin, row_end) for every token, each weight block streamed from memory once per
// group of tokens.
inline void multiply_rows(const_rows_view weights, std::size_t row_begin, std::size_t row_end, const_rows_view in,
                          rows_view out) noexcept {
  for (std::size_t token = 0; token < in.rows; token += group_tokens) {
    const std::size_t tokens = in.rows - token < group_tokens ? in.rows - token : group_tokens;
    // A single token is a plain stream: software prefetch only competes with the hardware's.
    const bool prefetch = tokens > 1;
    for (std::size_t row = row_begin; row < row_end; row += block_rows) {
      const std::size_t count = row_end - row < block_rows ? row_end - row : block_rows;
      multiply_block(weights, row, count, in, token, tokens, out, prefetch);
    }
  }
}

}  // namespace detail

/// out.row(t)[r] = dot(weights.row(r), in.row(t)) for every token t < in.rows and every
/// weight row r < weights.rows, the rows split across `team`.
/// Preconditions: in.columns == weights.columns, out.rows == in.rows, out.columns ==
/// weights.rows; `out` does not overlap `in` or `weights`.
inline void batched_matmul(const_rows_view weights, const_rows_view in, rows_view out, thread_team& team) {
  if (in.rows == 0 || weights.rows == 0) return;
  // Small products are not worth waking the team for.
  if (team.size() == 1 || weights.rows * weights.columns < (std::size_t{1} << 14)) {
    detail::multiply_rows(weights, 0, weights.rows, in, out);
    return;
  }
  team.run([&](std::size_t member, std::size_t members) noexcept {
    const work_range range = split_work(weights.rows, member, members, 8);
    detail::multiply_rows(weights, range.begin, range.end, in, out);
  });
}

}  // namespace cospec::examples::llama
