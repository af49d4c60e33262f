// The product every layer of a forward pass is made of: m token activations times a weight
// matrix, out[t][r] = dot(weights.row(r), in[t]), written so that each weight row is read
// from memory once for all m tokens.
//
// Why not Eigen's product: for m = 1 Eigen's matrix-vector product streams the weights near
// memory speed, but its general product for m = 2..8 re-packs and re-reads the weights and
// costs 5-6x the single-token pass (docs/benchmarks.md, "Transformer"), which is more than
// the whole gain of verifying m proposals in one pass. Here a block of 8 weight rows is loaded
// once and multiplied with every token while it sits in L1/L2, with R rows × T tokens
// accumulators in registers, and the rows are split between the members of a thread_team.
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
// AVX-512 has 32 vector registers, AVX2 and SSE 16: the tile shapes below are chosen to fit.
inline constexpr std::size_t vector_registers = lanes >= 16 ? 32 : 16;

// R weight rows × T tokens: R*T accumulators, T token batches and one weight batch in
// registers (at most 16 on AVX2, 32 on AVX-512). Every (row, token) pair follows the same operation order
// whatever the tile: one accumulator, fused multiply-adds over the columns in order, one
// horizontal sum, then the scalar tail.
template <std::size_t R, std::size_t T>
inline void multiply_tile(const_rows_view weights, std::size_t first_row, const_rows_view in, std::size_t first_token,
                          rows_view out, std::size_t prefetch_ahead) noexcept {
  const std::size_t columns = weights.columns;
  const std::size_t body = columns - columns % lanes;
  float_batch accumulators[R][T];
  const float* row_pointers[R];
  const float* token_pointers[T];
#pragma GCC unroll 8
  for (std::size_t r = 0; r < R; ++r) {
    row_pointers[r] = weights.row(first_row + r);
#pragma GCC unroll 8
    for (std::size_t t = 0; t < T; ++t) accumulators[r][t] = float_batch(0.0f);
  }
#pragma GCC unroll 8
  for (std::size_t t = 0; t < T; ++t) token_pointers[t] = in.row(first_token + t);
  auto step = [&](std::size_t k) {
    float_batch x[T];
#pragma GCC unroll 8
    for (std::size_t t = 0; t < T; ++t) x[t] = float_batch::load_unaligned(token_pointers[t] + k);
#pragma GCC unroll 8
    for (std::size_t r = 0; r < R; ++r) {
      const float_batch w = float_batch::load_unaligned(row_pointers[r] + k);
#pragma GCC unroll 8
      for (std::size_t t = 0; t < T; ++t) accumulators[r][t] = xsimd::fma(w, x[t], accumulators[r][t]);
    }
  };
  // A cache line (16 floats) per row and iteration. The first tile over a block also asks for
  // the rows `prefetch_ahead` floats further on, into L2: the hardware prefetcher alone lets
  // the stream stall whenever the core is busy multiplying many tokens.
  constexpr std::size_t line = 64 / sizeof(float);
  std::size_t k = 0;
  if (prefetch_ahead != 0) {
    for (; k + line <= body; k += line) {
#pragma GCC unroll 8
      for (std::size_t r = 0; r < R; ++r) __builtin_prefetch(row_pointers[r] + k + prefetch_ahead, 0, 2);
#pragma GCC unroll 4
      for (std::size_t j = 0; j < line; j += lanes) step(k + j);
    }
  }
  for (; k < body; k += lanes) step(k);
#pragma GCC unroll 8
  for (std::size_t r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (std::size_t t = 0; t < T; ++t) {
      float sum = xsimd::hadd(accumulators[r][t]);
      for (std::size_t c = body; c < columns; ++c) sum = std::fma(row_pointers[r][c], token_pointers[t][c], sum);
      out.row(first_token + t)[first_row + r] = sum;
    }
}

// Rows [row_begin, row_end) for every token: blocks of `block_rows` weight rows (32 KB at
// 1024 columns) stay in L1/L2 while every token tile passes over them, so the weights stream
// from memory once. (Splitting the columns into L1-sized chunks as well, so that the tokens'
// activations stay in L1 too, measured 5-15 % slower here: the extra loads and stores of the
// running sums cost more than the L2 reads they save.)
inline void multiply_rows(const_rows_view weights, std::size_t row_begin, std::size_t row_end, const_rows_view in,
                          rows_view out) noexcept {
  constexpr std::size_t block_rows = 8;
  constexpr std::size_t prefetch_blocks = 4;
  const std::size_t tokens = in.rows;
  std::size_t row = row_begin;
  for (; row + block_rows <= row_end; row += block_rows) {
    // Only the first tile over a block prefetches; the others find the block in cache. The
    // distance is 4 blocks (128 KB at 1024 columns), into L2: the block being multiplied keeps
    // L1, and the stream has enough lines in flight to overlap the multiplications (measured on
    // the AVX-512 Xeon: 2 blocks into L1 left m = 4 at 1.4x the single-token pass, this gives
    // 1.2x; a single token gains about 5 % over the hardware prefetcher alone).
    // Near the end of the matrix the distance is 0: a pointer past the end is undefined even
    // for a prefetch.
    const bool room = row + (prefetch_blocks + 1) * block_rows <= weights.rows;
    std::size_t ahead = !room ? 0 : prefetch_blocks * block_rows * weights.stride;
    auto tiles = [&]<std::size_t R, std::size_t T>(std::size_t token) {
      for (std::size_t r = 0; r < block_rows; r += R) multiply_tile<R, T>(weights, row + r, in, token, out, ahead);
      ahead = 0;
    };
    std::size_t token = 0;
    if constexpr (vector_registers >= 32) {
      // 4 rows x up to 6 tokens: 24 accumulators, 10 loads per 24 multiply-adds, enough
      // independent chains to hide a load from L2. The tokens are split into the fewest tiles
      // of at most 6, as even as can be (8 = 4 + 4, 13 = 5 + 4 + 4); one token alone is a plain
      // stream over 8 rows.
      while (token < tokens) {
        const std::size_t left = tokens - token;
        const std::size_t count = (left + 5) / 6;
        const std::size_t tile = (left + count - 1) / count;
        switch (tile) {
          case 6: tiles.template operator()<4, 6>(token); break;
          case 5: tiles.template operator()<4, 5>(token); break;
          case 4: tiles.template operator()<4, 4>(token); break;
          case 3: tiles.template operator()<4, 3>(token); break;
          case 2: tiles.template operator()<4, 2>(token); break;
          default: tiles.template operator()<8, 1>(token); break;
        }
        token += tile;
      }
    } else {
      // Tiles of 4 tokens, ending in 3 + 2 rather than 4 + 1 (a lone token is a whole extra
      // pass over the block for little arithmetic).
      while (token < tokens) {
        const std::size_t left = tokens - token;
        const std::size_t tile = left == 5 ? 3 : (left < 4 ? left : 4);
        switch (tile) {
          case 4: tiles.template operator()<2, 4>(token); break;
          case 3: tiles.template operator()<2, 3>(token); break;
          case 2: tiles.template operator()<4, 2>(token); break;
          default: tiles.template operator()<8, 1>(token); break;
        }
        token += tile;
      }
    }
  }
  for (; row < row_end; ++row) {
    std::size_t token = 0;
    for (; token + 4 <= tokens; token += 4) multiply_tile<1, 4>(weights, row, in, token, out, 0);
    for (; token < tokens; ++token) multiply_tile<1, 1>(weights, row, in, token, out, 0);
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
