// llama2.c checkpoints (examples/transformer/checkpoint.hpp): a save/load round trip is exact,
// a saved file has exactly the size run.c's layout implies, a file written by hand value by
// value lands in the matrices where run.c would use each value, and malformed files are
// rejected with a message that names the cause.
#include <catch2/catch.hpp>

#include <algorithm>     // std::shuffle
#include <array>         // std::array
#include <cstddef>       // std::size_t
#include <cstdint>       // std::int32_t, std::uint64_t
#include <filesystem>    // std::filesystem::path, std::filesystem::file_size, std::filesystem::resize_file
#include <fstream>       // std::ifstream, std::ofstream
#include <ios>           // std::ios, std::streamsize
#include <limits>        // std::numeric_limits
#include <random>        // std::mt19937_64, std::random_device
#include <set>           // std::set
#include <stdexcept>     // std::invalid_argument
#include <string>        // std::string, std::to_string
#include <vector>        // std::vector

#include "support/temporary_file.hpp"
#include "transformer/checkpoint.hpp"

namespace {

using cospec::testing::temporary_file;

using Catch::Matchers::Contains;
using cospec::examples::llama::checkpoint_error;
using cospec::examples::llama::load_checkpoint;
using cospec::examples::llama::save_checkpoint;
using cospec::examples::llama::transformer_config;
using cospec::examples::llama::transformer_weights;

/// Grouped-query attention (2 kv heads for 4 query heads) so that kv_dim differs from dim and
/// a wk/wv block read with the wrong size shifts everything after it.
transformer_config small_config(bool shared_classifier) {
  transformer_config config;
  config.dim = 8;
  config.hidden_dim = 12;
  config.n_layers = 2;
  config.n_heads = 4;
  config.n_kv_heads = 2;
  config.vocab_size = 11;
  config.seq_len = 6;
  config.shared_classifier = shared_classifier;
  return config;
}

/// Calls visit(matrix, name) for every matrix of `weights` (vectors included).
template <class Weights, class Visit>
void for_each_matrix(Weights& weights, Visit visit) {
  visit(weights.embedding, std::string("embedding"));
  for (std::size_t l = 0; l < weights.layers.size(); ++l) {
    auto& layer = weights.layers[l];
    const std::string prefix = "layer " + std::to_string(l) + " ";
    visit(layer.attention_norm, prefix + "attention_norm");
    visit(layer.qkv, prefix + "qkv");
    visit(layer.attention_output, prefix + "attention_output");
    visit(layer.ffn_norm, prefix + "ffn_norm");
    visit(layer.gate_up, prefix + "gate_up");
    visit(layer.down, prefix + "down");
  }
  visit(weights.final_norm, std::string("final_norm"));
  visit(weights.classifier, std::string("classifier"));
}

/// Weights whose every value is distinct, in a seeded random order, so that any value
/// written to or read from the wrong place shows. Distinct by construction: ±(i + 1) / 4096,
/// exact in float, shuffled.
transformer_weights random_weights(const transformer_config& config, std::uint64_t seed) {
  transformer_weights weights = transformer_weights::zeros(config);
  std::size_t count = 0;
  for_each_matrix(weights,
                  [&](const auto& matrix, const std::string&) { count += static_cast<std::size_t>(matrix.size()); });
  std::vector<float> values(count);
  for (std::size_t i = 0; i < count; ++i)
    values[i] = (i % 2 == 0 ? 1.0f : -1.0f) * static_cast<float>(i + 1) / 4096.0f;
  std::mt19937_64 generator(seed);
  std::shuffle(values.begin(), values.end(), generator);
  std::size_t next = 0;
  for_each_matrix(weights, [&](auto& matrix, const std::string&) {
    for (Eigen::Index i = 0; i < matrix.size(); ++i) matrix.data()[i] = values[next++];
  });
  REQUIRE(std::set<float>(values.begin(), values.end()).size() == count);
  return weights;
}

void require_identical(const transformer_weights& expected, const transformer_weights& actual) {
  REQUIRE(actual.layers.size() == expected.layers.size());
  std::vector<const float*> expected_data;
  std::vector<Eigen::Index> expected_rows, expected_columns;
  for_each_matrix(expected, [&](const auto& matrix, const std::string&) {
    expected_data.push_back(matrix.data());
    expected_rows.push_back(matrix.rows());
    expected_columns.push_back(matrix.cols());
  });
  std::size_t next = 0;
  for_each_matrix(actual, [&](const auto& matrix, const std::string& name) {
    INFO(name);
    REQUIRE(matrix.rows() == expected_rows[next]);
    REQUIRE(matrix.cols() == expected_columns[next]);
    for (Eigen::Index i = 0; i < matrix.size(); ++i) REQUIRE(matrix.data()[i] == expected_data[next][i]);
    ++next;
  });
}

/// The number of floats after the header, from run.c's memory_map_weights, block by block.
std::uint64_t run_c_float_count(std::uint64_t dim, std::uint64_t hidden_dim, std::uint64_t n_layers,
                                std::uint64_t n_heads, std::uint64_t n_kv_heads, std::uint64_t vocab_size,
                                std::uint64_t seq_len, bool shared_weights) {
  const std::uint64_t head_size = dim / n_heads;
  std::uint64_t count = vocab_size * dim;              // token_embedding_table
  count += n_layers * dim;                             // rms_att_weight
  count += n_layers * dim * (n_heads * head_size);     // wq
  count += n_layers * dim * (n_kv_heads * head_size);  // wk
  count += n_layers * dim * (n_kv_heads * head_size);  // wv
  count += n_layers * (n_heads * head_size) * dim;     // wo
  count += n_layers * dim;                             // rms_ffn_weight
  count += n_layers * dim * hidden_dim;                // w1
  count += n_layers * hidden_dim * dim;                // w2
  count += n_layers * dim * hidden_dim;                // w3
  count += dim;                                        // rms_final_weight
  count += seq_len * head_size / 2;                    // freq_cis_real (skipped)
  count += seq_len * head_size / 2;                    // freq_cis_imag (skipped)
  if (!shared_weights) count += vocab_size * dim;      // wcls
  return count;
}

void write_int32(std::ofstream& out, std::int32_t value) {
  out.write(reinterpret_cast<const char*>(&value), sizeof value);
}
void write_float(std::ofstream& out, float value) { out.write(reinterpret_cast<const char*>(&value), sizeof value); }

/// A header followed by `floats` zeros, written by hand.
void write_header_file(const std::filesystem::path& path, const std::array<std::int32_t, 7>& header,
                       std::size_t floats) {
  std::ofstream out(path, std::ios::binary);
  for (const std::int32_t value : header) write_int32(out, value);
  for (std::size_t i = 0; i < floats; ++i) write_float(out, 0.0f);
  REQUIRE(out.good());
}

}  // namespace

TEST_CASE("a saved checkpoint loads back exactly, with a shared or a separate classifier", "[llama][checkpoint]") {
  const bool shared = GENERATE(true, false);
  INFO("shared classifier: " << shared);
  const transformer_config config = small_config(shared);
  const transformer_weights original = random_weights(config, shared ? 1 : 2);
  temporary_file file("checkpoint_round_trip");
  save_checkpoint(original, file.path());
  const transformer_weights loaded = load_checkpoint(file.path());

  CHECK(loaded.config.dim == config.dim);
  CHECK(loaded.config.hidden_dim == config.hidden_dim);
  CHECK(loaded.config.n_layers == config.n_layers);
  CHECK(loaded.config.n_heads == config.n_heads);
  CHECK(loaded.config.n_kv_heads == config.n_kv_heads);
  CHECK(loaded.config.vocab_size == config.vocab_size);
  CHECK(loaded.config.seq_len == config.seq_len);
  CHECK(loaded.config.shared_classifier == shared);
  CHECK(loaded.classifier.size() == (shared ? 0 : original.classifier.size()));
  require_identical(original, loaded);
}

TEST_CASE("a saved checkpoint has run.c's size, header and zeroed RoPE blocks", "[llama][checkpoint]") {
  const bool shared = GENERATE(true, false);
  INFO("shared classifier: " << shared);
  const transformer_config config = small_config(shared);
  temporary_file file("checkpoint_size");
  save_checkpoint(random_weights(config, 3), file.path());

  const std::uint64_t floats = run_c_float_count(8, 12, 2, 4, 2, 11, 6, shared);
  REQUIRE(std::filesystem::file_size(file.path()) == 28 + 4 * floats);

  std::ifstream in(file.path(), std::ios::binary);
  std::array<std::int32_t, 7> header{};
  in.read(reinterpret_cast<char*>(header.data()), sizeof header);
  CHECK(header == std::array<std::int32_t, 7>{8, 12, 2, 4, 2, shared ? 11 : -11, 6});
  // The RoPE blocks (2 × seq_len × head_size / 2 = 12 floats) sit just before the classifier,
  // or at the very end when it is shared.
  const std::uint64_t classifier_floats = shared ? 0 : 11 * 8;
  const std::uint64_t rope_floats = 2 * (6 * 2 / 2);
  in.seekg(static_cast<std::streamoff>(28 + 4 * (floats - classifier_floats - rope_floats)));
  std::vector<float> rope(rope_floats, -1.0f);
  in.read(reinterpret_cast<char*>(rope.data()), static_cast<std::streamsize>(rope.size() * sizeof(float)));
  REQUIRE(in.good());
  for (const float value : rope) CHECK(value == 0.0f);
}

TEST_CASE("a hand-written checkpoint puts every value where run.c reads it", "[llama][checkpoint]") {
  // dim 4, hidden 6, 2 layers, 2 heads, 1 kv head (kv_dim 2), vocab 5 (negative: separate
  // classifier), seq_len 3. Value i of the file is the float i, so each value names its place.
  constexpr std::int32_t dim = 4, hidden = 6, layers = 2, kv_dim = 2, vocab = 5, seq_len = 3, head_size = 2;
  std::int32_t next = 0;
  const auto block = [&next](std::int32_t size) {
    const std::int32_t start = next;
    next += size;
    return start;
  };
  const std::int32_t embedding = block(vocab * dim);
  const std::int32_t rms_att = block(layers * dim);
  const std::int32_t wq = block(layers * dim * dim);
  const std::int32_t wk = block(layers * kv_dim * dim);
  const std::int32_t wv = block(layers * kv_dim * dim);
  const std::int32_t wo = block(layers * dim * dim);
  const std::int32_t rms_ffn = block(layers * dim);
  const std::int32_t w1 = block(layers * hidden * dim);
  const std::int32_t w2 = block(layers * dim * hidden);
  const std::int32_t w3 = block(layers * hidden * dim);
  const std::int32_t rms_final = block(dim);
  block(2 * (seq_len * head_size / 2));
  const std::int32_t wcls = block(vocab * dim);
  REQUIRE(static_cast<std::uint64_t>(next) == run_c_float_count(4, 6, 2, 2, 1, 5, 3, false));

  temporary_file file("checkpoint_by_hand");
  {
    std::ofstream out(file.path(), std::ios::binary);
    for (const std::int32_t value : {dim, hidden, layers, 2, 1, -vocab, seq_len}) write_int32(out, value);
    for (std::int32_t i = 0; i < next; ++i) write_float(out, static_cast<float>(i));
    REQUIRE(out.good());
  }
  const transformer_weights w = load_checkpoint(file.path());
  REQUIRE_FALSE(w.config.shared_classifier);
  REQUIRE(w.config.vocab_size == 5);
  REQUIRE(w.config.kv_dim() == 2);

  const auto at = [](std::int32_t position) { return static_cast<float>(position); };
  // The cases the layout gets wrong most easily, spelled out first.
  CHECK(w.layers[1].qkv(dim, 0) == at(wk + 1 * kv_dim * dim));  // wk, layer 1, row 0
  CHECK(w.layers[1].gate_up(hidden, 0) == at(w3 + 1 * hidden * dim));  // w3 row 0 is gate_up row hidden
  CHECK(w.classifier(0, 0) == at(wcls));  // after the two skipped RoPE blocks

  for (std::int32_t v = 0; v < vocab; ++v)
    for (std::int32_t c = 0; c < dim; ++c) {
      CHECK(w.embedding(v, c) == at(embedding + v * dim + c));
      CHECK(w.classifier(v, c) == at(wcls + v * dim + c));
    }
  for (std::int32_t l = 0; l < layers; ++l) {
    INFO("layer " << l);
    const auto& layer = w.layers[static_cast<std::size_t>(l)];
    for (std::int32_t c = 0; c < dim; ++c) {
      CHECK(layer.attention_norm(c) == at(rms_att + l * dim + c));
      CHECK(layer.ffn_norm(c) == at(rms_ffn + l * dim + c));
      for (std::int32_t r = 0; r < dim; ++r) {
        CHECK(layer.qkv(r, c) == at(wq + l * dim * dim + r * dim + c));
        CHECK(layer.attention_output(r, c) == at(wo + l * dim * dim + r * dim + c));
      }
      for (std::int32_t r = 0; r < kv_dim; ++r) {
        CHECK(layer.qkv(dim + r, c) == at(wk + l * kv_dim * dim + r * dim + c));
        CHECK(layer.qkv(dim + kv_dim + r, c) == at(wv + l * kv_dim * dim + r * dim + c));
      }
      for (std::int32_t r = 0; r < hidden; ++r) {
        CHECK(layer.gate_up(r, c) == at(w1 + l * hidden * dim + r * dim + c));
        CHECK(layer.gate_up(hidden + r, c) == at(w3 + l * hidden * dim + r * dim + c));
      }
    }
    for (std::int32_t r = 0; r < dim; ++r)
      for (std::int32_t c = 0; c < hidden; ++c) CHECK(layer.down(r, c) == at(w2 + l * dim * hidden + r * hidden + c));
  }
  for (std::int32_t c = 0; c < dim; ++c) CHECK(w.final_norm(c) == at(rms_final + c));
}

TEST_CASE("a checkpoint shorter or longer than its header implies is rejected", "[llama][checkpoint]") {
  temporary_file file("checkpoint_size_mismatch");
  save_checkpoint(random_weights(small_config(false), 4), file.path());
  const std::uintmax_t size = std::filesystem::file_size(file.path());

  SECTION("one float missing") {
    std::filesystem::resize_file(file.path(), size - 4);
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()),
                        Contains("file too short") && Contains("expected " + std::to_string(size) + " bytes") &&
                            Contains("found " + std::to_string(size - 4)));
  }
  SECTION("one float too many") {
    {
      std::ofstream out(file.path(), std::ios::binary | std::ios::app);
      write_float(out, 1.0f);
    }
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()), Contains("trailing bytes"));
  }
  SECTION("the header cut short") {
    std::filesystem::resize_file(file.path(), 10);
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()), Contains("header truncated") && Contains("found 10"));
  }
  SECTION("every failure is a checkpoint_error naming the file") {
    std::filesystem::resize_file(file.path(), size - 1);
    REQUIRE_THROWS_AS(load_checkpoint(file.path()), checkpoint_error);
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()), Contains(file.path().string()));
  }
}

TEST_CASE("a checkpoint header describing an invalid model is rejected before anything is allocated",
          "[llama][checkpoint]") {
  temporary_file file("checkpoint_bad_header");

  SECTION("dim not a multiple of n_heads") {
    write_header_file(file.path(), {10, 12, 2, 4, 2, 11, 6}, 100);
    REQUIRE_THROWS_AS(load_checkpoint(file.path()), checkpoint_error);
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()),
                        Contains("invalid config") && Contains("not a multiple of n_heads"));
  }
  SECTION("zero layers") {
    write_header_file(file.path(), {8, 12, 0, 4, 2, 11, 6}, 100);
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()), Contains("n_layers is 0"));
  }
  SECTION("a negative dim") {
    write_header_file(file.path(), {-8, 12, 2, 4, 2, 11, 6}, 100);
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()), Contains("dim is -8"));
  }
  SECTION("the smallest int32 as vocab_size, whose negation overflows") {
    write_header_file(file.path(), {8, 12, 2, 4, 2, std::numeric_limits<std::int32_t>::min(), 6}, 100);
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()), Contains("vocab_size is -2147483648"));
  }
  SECTION("a 7B model's header in a file of 28 bytes") {
    // Allocating first would ask for 27 GB; the size check must come before.
    write_header_file(file.path(), {4096, 11008, 32, 32, 32, 32000, 2048}, 0);
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()), Contains("file too short") && Contains("found 28"));
  }
  SECTION("sizes whose product overflows 64 bits") {
    constexpr std::int32_t big = std::numeric_limits<std::int32_t>::max();
    write_header_file(file.path(), {1 << 30, big, big, 1 << 29, 1 << 29, big, big}, 0);
    REQUIRE_THROWS_WITH(load_checkpoint(file.path()), Contains("more than 2^64 bytes"));
  }
}

TEST_CASE("a missing checkpoint or an unwritable path is reported as such", "[llama][checkpoint]") {
  const std::filesystem::path nowhere =
      std::filesystem::temp_directory_path() / "cospec_no_such_directory_for_checkpoints" / "model.bin";
  REQUIRE_THROWS_AS(load_checkpoint(nowhere), checkpoint_error);
  REQUIRE_THROWS_WITH(load_checkpoint(nowhere), Contains("cannot open") && Contains(nowhere.string()));
  REQUIRE_THROWS_WITH(save_checkpoint(random_weights(small_config(true), 5), nowhere), Contains("cannot open"));
}

TEST_CASE("saving weights whose shapes disagree with their config throws before writing", "[llama][checkpoint]") {
  transformer_weights weights = random_weights(small_config(true), 6);
  weights.layers[1].gate_up.resize(3, 8);
  temporary_file file("checkpoint_bad_shapes");
  REQUIRE_THROWS_AS(save_checkpoint(weights, file.path()), std::invalid_argument);
  REQUIRE_THROWS_WITH(save_checkpoint(weights, file.path()), Contains("layer 1 gate_up"));
  CHECK_FALSE(std::filesystem::exists(file.path()));
}
