// Loading and saving llama2.c checkpoints: the legacy format of karpathy's run.c (export.py
// --version 0). A header of seven little-endian int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is stored
// separately), then float32 arrays in this order (down the left column, then the right),
// each per-layer array holding that matrix of every layer before the next array begins:
//
//   token_embedding  vocab × dim              w1         n_layers × hidden × dim
//   rms_att          n_layers × dim           w2         n_layers × dim × hidden
//   wq               n_layers × dim × dim     w3         n_layers × hidden × dim
//   wk, then wv      n_layers × kv_dim × dim  rms_final  dim
//   wo               n_layers × dim × dim     (unused)   2 × seq_len × head_size / 2
//   rms_ffn          n_layers × dim           wcls       vocab × dim, when not shared
//
// The two unused blocks are the RoPE tables older exporters wrote; run.c skips them and
// computes the rotations itself, as this example does.
#pragma once

#include <algorithm>     // std::min
#include <array>         // std::array
#include <bit>           // std::endian
#include <cstddef>       // std::size_t
#include <cstdint>       // std::int32_t, std::uint64_t, std::uintmax_t
#include <filesystem>    // std::filesystem::path, std::filesystem::file_size
#include <fstream>       // std::ifstream, std::ofstream
#include <ios>           // std::ios, std::streamsize, std::streamoff
#include <limits>        // std::numeric_limits
#include <stdexcept>     // std::runtime_error, std::invalid_argument
#include <string>        // std::string, std::to_string
#include <system_error>  // std::error_code

#include "transformer/config.hpp"
#include "transformer/weights.hpp"

namespace cospec::examples::llama {

// The arrays are read and written with one istream::read per array, straight into the Eigen
// matrices, which is only correct when the host's floats are the file's floats.
static_assert(std::endian::native == std::endian::little,
              "llama2.c checkpoints are little-endian and are read without byte swapping");
static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4,
              "llama2.c checkpoints store IEEE 754 binary32 floats");

/// A checkpoint that cannot be read or written. The message names the file and what is wrong
/// with it: cannot open, header truncated, invalid config, size mismatch, I/O failure.
struct checkpoint_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

inline constexpr std::size_t checkpoint_header_fields = 7;
inline constexpr std::uint64_t checkpoint_header_bytes = checkpoint_header_fields * sizeof(std::int32_t);

/// Calls `array(data, count)` for every float array of a checkpoint in file order, pointing
/// into `weights` (const for saving, mutable for loading), and `unused(count)` for each of the
/// two blocks nobody reads. The one description of the layout that loading and saving share,
/// so the two cannot disagree. Precondition: the matrices have the shapes of weights.config.
template <class Weights, class OnArray, class OnUnused>
void for_each_checkpoint_array(Weights& weights, OnArray&& array, OnUnused&& unused) {
  const transformer_config& config = weights.config;
  const std::size_t dim = config.dim;
  const std::size_t hidden = config.hidden_dim;
  const std::size_t kv_dim = config.kv_dim();
  const auto whole = [&](auto& matrix) { array(matrix.data(), static_cast<std::size_t>(matrix.size())); };
  // qkv and gate_up are row-major, so each stacked block of rows is one contiguous range.
  whole(weights.embedding);
  for (auto& layer : weights.layers) whole(layer.attention_norm);
  for (auto& layer : weights.layers) array(layer.qkv.data(), dim * dim);                            // wq
  for (auto& layer : weights.layers) array(layer.qkv.data() + dim * dim, kv_dim * dim);             // wk
  for (auto& layer : weights.layers) array(layer.qkv.data() + (dim + kv_dim) * dim, kv_dim * dim);  // wv
  for (auto& layer : weights.layers) whole(layer.attention_output);                                 // wo
  for (auto& layer : weights.layers) whole(layer.ffn_norm);
  for (auto& layer : weights.layers) array(layer.gate_up.data(), hidden * dim);                 // w1
  for (auto& layer : weights.layers) whole(layer.down);                                         // w2
  for (auto& layer : weights.layers) array(layer.gate_up.data() + hidden * dim, hidden * dim);  // w3
  whole(weights.final_norm);
  const std::size_t rope_table = config.seq_len * config.head_size() / 2;
  unused(rope_table);  // freq_cis_real
  unused(rope_table);  // freq_cis_imag
  if (!config.shared_classifier) whole(weights.classifier);
}

/// The config a header describes. Every field is checked while still an int32, so that a
/// negative value never becomes a huge size_t, then the whole config is validated.
inline transformer_config checkpoint_config(const std::array<std::int32_t, checkpoint_header_fields>& header,
                                            const std::string& where) {
  static constexpr std::array<const char*, checkpoint_header_fields> names = {
      "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  constexpr std::size_t vocab_field = 5;
  for (std::size_t i = 0; i < checkpoint_header_fields; ++i) {
    const std::int32_t value = header[i];
    // vocab_size carries the sharing flag in its sign; its magnitude must still be positive
    // and representable (the negation of INT32_MIN overflows).
    const bool valid = i == vocab_field ? value != 0 && value != std::numeric_limits<std::int32_t>::min() : value > 0;
    if (!valid)
      throw checkpoint_error(where + "invalid header: " + names[i] + " is " + std::to_string(value) +
                             (i == vocab_field ? ", its magnitude must be in [1, 2^31 - 1]" : ", it must be positive"));
  }
  transformer_config config;
  config.dim = static_cast<std::size_t>(header[0]);
  config.hidden_dim = static_cast<std::size_t>(header[1]);
  config.n_layers = static_cast<std::size_t>(header[2]);
  config.n_heads = static_cast<std::size_t>(header[3]);
  config.n_kv_heads = static_cast<std::size_t>(header[4]);
  config.shared_classifier = header[vocab_field] > 0;
  config.vocab_size = static_cast<std::size_t>(header[vocab_field] > 0 ? header[vocab_field] : -header[vocab_field]);
  config.seq_len = static_cast<std::size_t>(header[6]);
  try {
    config.validate();
  } catch (const std::invalid_argument& e) {
    throw checkpoint_error(where + "invalid config in the header (" + e.what() + ")");
  }
  return config;
}

/// The exact size in bytes of the checkpoint of `config`, header included, computed in 64
/// bits with every product checked: int32 header fields multiply to far beyond 2^64.
/// Throws checkpoint_error when the size does not fit in 64 bits.
inline std::uint64_t checkpoint_bytes(const transformer_config& config, const std::string& where) {
  constexpr std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
  bool overflow = false;
  const auto times = [&](std::uint64_t a, std::uint64_t b) -> std::uint64_t {
    if (a != 0 && b > max / a) overflow = true;
    return overflow ? 0 : a * b;
  };
  const auto plus = [&](std::uint64_t a, std::uint64_t b) -> std::uint64_t {
    if (b > max - a) overflow = true;
    return overflow ? 0 : a + b;
  };
  const std::uint64_t dim = config.dim;
  const std::uint64_t hidden = config.hidden_dim;
  const std::uint64_t layers = config.n_layers;
  const std::uint64_t vocab = config.vocab_size;
  const std::uint64_t kv_dim = config.kv_dim();  // <= dim: validate() checked n_kv_heads <= n_heads
  const std::uint64_t embedding = times(vocab, dim);
  std::uint64_t per_layer = dim;                              // rms_att
  per_layer = plus(per_layer, times(dim, dim));               // wq
  per_layer = plus(per_layer, times(2, times(kv_dim, dim)));  // wk, wv
  per_layer = plus(per_layer, times(dim, dim));               // wo
  per_layer = plus(per_layer, dim);                           // rms_ffn
  per_layer = plus(per_layer, times(3, times(hidden, dim)));  // w1, w2, w3
  std::uint64_t floats = plus(embedding, times(layers, per_layer));
  floats = plus(floats, dim);  // rms_final
  floats = plus(floats, times(2, times(config.seq_len, config.head_size()) / 2));
  if (!config.shared_classifier) floats = plus(floats, embedding);
  const std::uint64_t bytes = plus(checkpoint_header_bytes, times(sizeof(float), floats));
  if (overflow)
    throw checkpoint_error(where + "invalid header: the model it describes would take more than 2^64 bytes");
  return bytes;
}

}  // namespace detail

/// Reads a llama2.c checkpoint. The config gets llama2.c's rope_theta and norm_epsilon, which
/// the format does not store.
///
/// The exact size the header implies is compared with the file size before anything is
/// allocated, so a hostile or corrupt header cannot make the loader allocate more than the
/// file holds. The arrays are then read straight into the matrices (one zero-filled
/// allocation by transformer_weights::zeros, no intermediate buffer).
///
/// Throws checkpoint_error when the file cannot be opened or sized, the header is truncated,
/// a header field is not positive, the config fails transformer_config::validate, the implied
/// size overflows 64 bits, the file is shorter or longer than the header implies, or a read
/// fails.
inline transformer_weights load_checkpoint(const std::filesystem::path& path) {
  const std::string where = "llama2.c checkpoint " + path.string() + ": ";
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) throw checkpoint_error(where + "cannot open the file for reading");
  std::error_code size_error;
  const std::uintmax_t file_bytes = std::filesystem::file_size(path, size_error);
  if (size_error) throw checkpoint_error(where + "cannot determine the file size (" + size_error.message() + ")");

  std::array<std::int32_t, detail::checkpoint_header_fields> header{};
  in.read(reinterpret_cast<char*>(header.data()), static_cast<std::streamsize>(detail::checkpoint_header_bytes));
  if (static_cast<std::uint64_t>(in.gcount()) != detail::checkpoint_header_bytes)
    throw checkpoint_error(where + "header truncated: expected " + std::to_string(detail::checkpoint_header_bytes) +
                           " bytes, found " + std::to_string(in.gcount()));
  const transformer_config config = detail::checkpoint_config(header, where);

  const std::uint64_t expected_bytes = detail::checkpoint_bytes(config, where);
  if (file_bytes < expected_bytes)
    throw checkpoint_error(where + "file too short: expected " + std::to_string(expected_bytes) + " bytes, found " +
                           std::to_string(file_bytes));
  if (file_bytes > expected_bytes)
    throw checkpoint_error(where + "trailing bytes: expected " + std::to_string(expected_bytes) + " bytes, found " +
                           std::to_string(file_bytes));
  // Only reachable on hosts whose size_t is narrower than 64 bits.
  if (expected_bytes > std::numeric_limits<std::size_t>::max())
    throw checkpoint_error(where + "the model does not fit in this host's address space");

  transformer_weights weights = transformer_weights::zeros(config);
  std::uint64_t offset = detail::checkpoint_header_bytes;
  const auto read_failed = [&] {
    return checkpoint_error(where + "read failed at byte " + std::to_string(offset) + " (was the file changed?)");
  };
  detail::for_each_checkpoint_array(
      weights,
      [&](float* data, std::size_t count) {
        const auto bytes = static_cast<std::streamsize>(count * sizeof(float));
        if (!in.read(reinterpret_cast<char*>(data), bytes)) throw read_failed();
        offset += static_cast<std::uint64_t>(bytes);
      },
      [&](std::size_t count) {
        const auto bytes = static_cast<std::streamoff>(count * sizeof(float));
        if (!in.seekg(bytes, std::ios::cur)) throw read_failed();
        offset += static_cast<std::uint64_t>(bytes);
      });
  // checkpoint_bytes and for_each_checkpoint_array describe the layout twice (once to size
  // the file before allocating, once to fill the matrices); this catches them disagreeing.
  if (offset != expected_bytes)
    throw checkpoint_error(where + "internal error: read " + std::to_string(offset) + " bytes, expected " +
                           std::to_string(expected_bytes));
  return weights;
}

/// Writes `weights` as a llama2.c checkpoint at `path` (replacing any file there), with zeros
/// in the two unused blocks. rope_theta and norm_epsilon are not stored: the format has no
/// field for them, and load_checkpoint gives back llama2.c's defaults.
///
/// Throws std::invalid_argument when weights.config fails validate(), a size does not fit in
/// the int32 header, or a matrix does not have the shape the config gives it (nothing is
/// written then); checkpoint_error when the file cannot be opened or a write fails (the file
/// may then be left incomplete).
inline void save_checkpoint(const transformer_weights& weights, const std::filesystem::path& path) {
  const transformer_config& config = weights.config;
  config.validate();
  weights.validate("save_checkpoint");
  const std::array<std::size_t, detail::checkpoint_header_fields> sizes = {
      config.dim, config.hidden_dim, config.n_layers, config.n_heads, config.n_kv_heads, config.vocab_size,
      config.seq_len};
  std::array<std::int32_t, detail::checkpoint_header_fields> header{};
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
      throw std::invalid_argument("save_checkpoint: " + std::to_string(sizes[i]) +
                                  " does not fit in a llama2.c header (int32)");
    header[i] = static_cast<std::int32_t>(sizes[i]);
  }
  if (!config.shared_classifier) header[5] = -header[5];

  const std::string where = "llama2.c checkpoint " + path.string() + ": ";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out.is_open()) throw checkpoint_error(where + "cannot open the file for writing");
  out.write(reinterpret_cast<const char*>(header.data()),
            static_cast<std::streamsize>(detail::checkpoint_header_bytes));
  static constexpr std::array<float, 1024> zeros{};
  detail::for_each_checkpoint_array(
      weights,
      [&](const float* data, std::size_t count) {
        out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(float)));
      },
      [&](std::size_t count) {
        for (std::size_t written = 0; written < count && out;) {
          const std::size_t chunk = std::min(count - written, zeros.size());
          out.write(reinterpret_cast<const char*>(zeros.data()), static_cast<std::streamsize>(chunk * sizeof(float)));
          written += chunk;
        }
      });
  // A failed write sets badbit and makes every later write a no-op, and close() flushes, so
  // one check after close() sees any failure.
  out.close();
  if (!out) throw checkpoint_error(where + "write failed (disk full or I/O error)");
}

}  // namespace cospec::examples::llama
