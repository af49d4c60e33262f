// The transformer example (examples/transformer) is a model adapter that keeps its promises:
// its products and forward pass match plain reference implementations, batching and rollback
// never change a logit, bad input is refused without touching the context, and the decoder's
// methods give token-identical greedy output on it.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>  // std::max, std::min, std::equal
#include <atomic>     // std::atomic
#include <cmath>      // std::abs, std::exp, std::sqrt, std::cos, std::sin, std::pow
#include <cstddef>    // std::size_t, std::ptrdiff_t
#include <cstdint>    // std::uint64_t
#include <memory>     // std::shared_ptr, std::make_shared
#include <random>     // std::mt19937_64, std::uniform_int_distribution
#include <span>       // std::span
#include <stdexcept>  // std::invalid_argument, std::length_error, std::out_of_range
#include <utility>    // std::move
#include <vector>     // std::vector

#include "support/temporary_file.hpp"
#include "transformer/batched_matmul.hpp"
#include "transformer/checkpoint.hpp"
#include "transformer/seeded_weights.hpp"
#include "transformer/thread_team.hpp"
#include "transformer/transformer.hpp"

namespace {

using cospec::token_id;
using namespace cospec::examples::llama;

transformer_config tiny_config(bool shared_classifier = false) {
  transformer_config config;
  // Every width leaves a tail after whole 4- and 8-lane batches (head size 18, dim 54, hidden
  // 102), and 3 query heads share 1 key/value head.
  config.dim = 54;
  config.hidden_dim = 102;
  config.n_layers = 3;
  config.n_heads = 3;
  config.n_kv_heads = 1;
  config.vocab_size = 67;
  config.seq_len = 40;
  config.shared_classifier = shared_classifier;
  return config;
}

std::shared_ptr<const transformer_weights> tiny_weights(bool shared_classifier = false, std::uint64_t seed = 7) {
  seeded_weights_options options;
  options.seed = seed;
  options.block_scale = 0.6f;
  return std::make_shared<const transformer_weights>(seeded_weights(tiny_config(shared_classifier), options));
}

using logit_table = std::vector<std::vector<float>>;

/// Feeds `tokens` in one call and returns the logits of every position.
logit_table feed_all(transformer& model, const std::vector<token_id>& tokens) {
  logit_table rows(tokens.size(), std::vector<float>(model.vocabulary_size()));
  std::vector<std::span<float>> spans(rows.begin(), rows.end());
  model.feed(tokens, spans);
  return rows;
}

/// Feeds `tokens` one call each.
logit_table feed_one_by_one(transformer& model, const std::vector<token_id>& tokens) {
  logit_table rows;
  for (const token_id token : tokens) {
    auto one = feed_all(model, {token});
    rows.push_back(std::move(one[0]));
  }
  return rows;
}

std::vector<token_id> random_tokens(std::size_t count, std::size_t vocabulary, std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<token_id> pick(0, static_cast<token_id>(vocabulary) - 1);
  std::vector<token_id> tokens(count);
  for (token_id& token : tokens) token = pick(random);
  return tokens;
}

// ---- an independent reference forward pass -------------------------------------------------
// Plain loops in double precision, straight from the architecture's definition (llama2.c's
// run.c order), recomputing everything from the whole context: no cache, no batching, none of
// the example's kernels.
std::vector<double> reference_logits(const transformer_weights& w, std::size_t layers, const std::vector<token_id>& context) {
  const transformer_config& c = w.config;
  const std::size_t n = context.size();
  const std::size_t hs = c.head_size();
  const std::size_t kv = c.kv_dim();
  using matrix = std::vector<std::vector<double>>;
  matrix x(n, std::vector<double>(c.dim));
  for (std::size_t p = 0; p < n; ++p)
    for (std::size_t j = 0; j < c.dim; ++j) x[p][j] = w.embedding(context[p], static_cast<Eigen::Index>(j));
  auto norm = [&](const std::vector<double>& v, const Eigen::VectorXf& weight) {
    double ss = 0.0;
    for (double e : v) ss += e * e;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(v.size()) + c.norm_epsilon);
    std::vector<double> out(v.size());
    for (std::size_t j = 0; j < v.size(); ++j) out[j] = weight(static_cast<Eigen::Index>(j)) * scale * v[j];
    return out;
  };
  auto product = [](const row_matrix& m, std::size_t first_row, std::size_t rows, const std::vector<double>& v) {
    std::vector<double> out(rows, 0.0);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < v.size(); ++j)
        out[r] += m(static_cast<Eigen::Index>(first_row + r), static_cast<Eigen::Index>(j)) * v[j];
    return out;
  };
  auto rotate = [&](std::vector<double>& v, std::size_t position) {
    for (std::size_t i = 0; i < v.size(); i += 2) {
      const double frequency = 1.0 / std::pow(static_cast<double>(c.rope_theta), static_cast<double>(i % hs) / static_cast<double>(hs));
      const double angle = static_cast<double>(position) * frequency;
      const double a = v[i], b = v[i + 1];
      v[i] = a * std::cos(angle) - b * std::sin(angle);
      v[i + 1] = a * std::sin(angle) + b * std::cos(angle);
    }
  };
  for (std::size_t l = 0; l < layers; ++l) {
    const layer_weights& layer = w.layers[l];
    matrix q(n), k(n), v(n);
    for (std::size_t p = 0; p < n; ++p) {
      const auto h = norm(x[p], layer.attention_norm);
      q[p] = product(layer.qkv, 0, c.dim, h);
      k[p] = product(layer.qkv, c.dim, kv, h);
      v[p] = product(layer.qkv, c.dim + kv, kv, h);
      rotate(q[p], p);
      rotate(k[p], p);
    }
    for (std::size_t p = 0; p < n; ++p) {
      std::vector<double> attended(c.dim, 0.0);
      for (std::size_t head = 0; head < c.n_heads; ++head) {
        const std::size_t kv_head = head / (c.n_heads / c.n_kv_heads);
        std::vector<double> scores(p + 1);
        double maximum = -1e300;
        for (std::size_t s = 0; s <= p; ++s) {
          double dot = 0.0;
          for (std::size_t i = 0; i < hs; ++i) dot += q[p][head * hs + i] * k[s][kv_head * hs + i];
          scores[s] = dot / std::sqrt(static_cast<double>(hs));
          maximum = std::max(maximum, scores[s]);
        }
        double sum = 0.0;
        for (double& score : scores) sum += (score = std::exp(score - maximum));
        for (std::size_t s = 0; s <= p; ++s)
          for (std::size_t i = 0; i < hs; ++i) attended[head * hs + i] += scores[s] / sum * v[s][kv_head * hs + i];
      }
      const auto projected = product(layer.attention_output, 0, c.dim, attended);
      for (std::size_t j = 0; j < c.dim; ++j) x[p][j] += projected[j];
    }
    for (std::size_t p = 0; p < n; ++p) {
      const auto h = norm(x[p], layer.ffn_norm);
      const auto gate = product(layer.gate_up, 0, c.hidden_dim, h);
      const auto up = product(layer.gate_up, c.hidden_dim, c.hidden_dim, h);
      std::vector<double> activated(c.hidden_dim);
      for (std::size_t j = 0; j < c.hidden_dim; ++j) activated[j] = gate[j] / (1.0 + std::exp(-gate[j])) * up[j];
      const auto down = product(layer.down, 0, c.dim, activated);
      for (std::size_t j = 0; j < c.dim; ++j) x[p][j] += down[j];
    }
  }
  return product(w.output_classifier(), 0, c.vocab_size, norm(x[n - 1], w.final_norm));
}

/// max_j |a_j - b_j| / max_j |b_j|: the error relative to the row's scale.
double relative_error(std::span<const float> a, const std::vector<double>& b) {
  double worst = 0.0, scale = 0.0;
  for (std::size_t j = 0; j < b.size(); ++j) {
    worst = std::max(worst, std::abs(static_cast<double>(a[j]) - b[j]));
    scale = std::max(scale, std::abs(b[j]));
  }
  return worst / scale;
}

}  // namespace

// ---- thread team and batched products -----------------------------------------------------

TEST_CASE("a thread team runs every member exactly once per run, many runs in a row", "[llama][threads]") {
  for (std::size_t members : {1, 2, 3}) {
    thread_team team(members);
    REQUIRE(team.size() == members);
    std::vector<std::atomic<int>> calls(members);
    for (int run = 0; run < 500; ++run)
      team.run([&](std::size_t member, std::size_t size) noexcept {
        if (size == members) calls[member].fetch_add(1, std::memory_order_relaxed);
      });
    for (std::size_t member = 0; member < members; ++member) CHECK(calls[member].load() == 500);
  }
}

TEST_CASE("split_work covers the range once, in granules", "[llama]") {
  for (std::size_t count : {0, 1, 7, 8, 9, 100}) {
    for (std::size_t members : {1, 2, 3}) {
      std::size_t next = 0;
      for (std::size_t member = 0; member < members; ++member) {
        const work_range range = split_work(count, member, members, 8);
        CHECK(range.begin == next);
        CHECK(range.end >= range.begin);
        if (range.end < count) CHECK(range.end % 8 == 0);
        next = range.end;
      }
      CHECK(next == count);
    }
  }
}

TEST_CASE("batched_matmul matches Eigen's product and is the same for a token alone or in a batch",
          "[llama][threads]") {
  std::mt19937_64 random(11);
  thread_team team(2);
  for (std::size_t rows : {1, 5, 8, 37, 300}) {
    for (std::size_t columns : {1, 7, 8, 16, 70, 130}) {
      const row_matrix w = row_matrix::Random(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(columns));
      const row_matrix x = row_matrix::Random(13, static_cast<Eigen::Index>(columns));
      const row_matrix expected = x * w.transpose();
      // Every tile shape of both register budgets: up to 6 tokens a tile, 7 = 4 + 3, 13 = 5 + 4 + 4
      // with 32 registers; 4 a tile, 5 = 3 + 2 with 16.
      for (std::size_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13}) {
        row_matrix out(static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(rows));
        batched_matmul({w.data(), rows, columns, columns}, {x.data(), m, columns, columns}, {out.data(), m, rows, rows},
                       team);
        for (std::size_t t = 0; t < m; ++t) {
          // |sum of `columns` products of [-1, 1] entries| rounding: a few float ulps per term.
          const auto row_t = static_cast<Eigen::Index>(t);
          CHECK((out.row(row_t) - expected.row(row_t)).cwiseAbs().maxCoeff() <= 1e-5f * static_cast<float>(columns));
          row_matrix alone(1, static_cast<Eigen::Index>(rows));
          batched_matmul({w.data(), rows, columns, columns}, {x.row(row_t).data(), 1, columns, columns},
                         {alone.data(), 1, rows, rows}, team);
          CHECK((alone.row(0).array() == out.row(row_t).array()).all());
        }
      }
    }
  }
}

// ---- the forward pass ------------------------------------------------------------------------

TEST_CASE("the forward pass matches a plain double-precision reference to a relative 1e-4", "[llama]") {
  for (bool shared : {false, true}) {
    const auto weights = tiny_weights(shared);
    for (std::size_t layers : {1, 3}) {
      transformer model(weights, std::make_shared<thread_team>(2), {.layers = layers, .context_limit = 0});
      const auto tokens = random_tokens(9, weights->config.vocab_size, 3 + layers);
      const auto logits = feed_all(model, tokens);
      for (std::size_t p = 0; p < tokens.size(); ++p) {
        const std::vector<token_id> context(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(p + 1));
        CHECK(relative_error(logits[p], reference_logits(*weights, layers, context)) < 1e-4);
      }
    }
  }
}

TEST_CASE("a batched forward pass gives bit-identical logits to single-token passes", "[llama][threads]") {
  const auto weights = tiny_weights();
  const auto team = std::make_shared<thread_team>(2);
  const auto tokens = random_tokens(30, weights->config.vocab_size, 5);
  transformer one_by_one(weights, team);
  const logit_table expected = feed_one_by_one(one_by_one, tokens);
  for (std::size_t chunk : {2, 3, 4, 5, 8, 30}) {
    transformer batched(weights, team);
    logit_table got;
    for (std::size_t start = 0; start < tokens.size(); start += chunk) {
      const std::size_t end = std::min(tokens.size(), start + chunk);
      const auto rows = feed_all(batched, std::vector<token_id>(tokens.begin() + static_cast<std::ptrdiff_t>(start),
                                                                 tokens.begin() + static_cast<std::ptrdiff_t>(end)));
      got.insert(got.end(), rows.begin(), rows.end());
    }
    INFO("chunk " << chunk);
    CHECK(got == expected);  // relative error bound: 0
    CHECK(batched.context_length() == tokens.size());
  }
}

TEST_CASE("truncate then re-feed gives the logits of never having fed the dropped tokens", "[llama]") {
  const auto weights = tiny_weights();
  const auto team = std::make_shared<thread_team>(2);
  const auto prefix = random_tokens(10, weights->config.vocab_size, 8);
  const auto dropped = random_tokens(6, weights->config.vocab_size, 9);
  const auto continuation = random_tokens(5, weights->config.vocab_size, 10);

  transformer clean(weights, team);
  feed_all(clean, prefix);
  const logit_table expected = feed_all(clean, continuation);

  transformer rolled_back(weights, team);
  feed_all(rolled_back, prefix);
  feed_all(rolled_back, dropped);
  rolled_back.truncate(prefix.size());
  CHECK(rolled_back.context_length() == prefix.size());
  CHECK(feed_all(rolled_back, continuation) == expected);

  // Rolling back into the prefix too, then re-feeding its tail.
  rolled_back.truncate(4);
  feed_all(rolled_back, std::vector<token_id>(prefix.begin() + 4, prefix.end()));
  CHECK(feed_all(rolled_back, {continuation[0]})[0] == expected[0]);
}

TEST_CASE("a llama2.c checkpoint written and read back reproduces the model's logits exactly", "[llama][checkpoint]") {
  for (bool shared : {false, true}) {
    const auto weights = tiny_weights(shared);
    cospec::testing::temporary_file file("transformer_roundtrip");
    save_checkpoint(*weights, file.path());
    const auto loaded = std::make_shared<const transformer_weights>(load_checkpoint(file.path()));
    const auto tokens = random_tokens(12, weights->config.vocab_size, 21);
    transformer original(weights, nullptr);
    transformer reloaded(loaded, nullptr);
    CHECK(feed_all(reloaded, tokens) == feed_all(original, tokens));
  }
}

TEST_CASE("an early-exit draft computes what the network cut to its first layers computes", "[llama]") {
  const auto weights = tiny_weights();
  auto cut = std::make_shared<transformer_weights>(*weights);
  cut->layers.resize(1);
  cut->config.n_layers = 1;
  const auto team = std::make_shared<thread_team>(1);
  transformer draft(weights, team, {.layers = 1, .context_limit = 0});
  transformer small(cut, team);
  const auto tokens = random_tokens(7, weights->config.vocab_size, 12);
  CHECK(feed_all(draft, tokens) == feed_all(small, tokens));
  CHECK(draft.layers() == 1);
}

TEST_CASE("bad input is refused with a clear error and leaves the context as it was", "[llama][errors]") {
  const auto weights = tiny_weights();
  transformer model(weights, nullptr, {.layers = 0, .context_limit = 12});
  feed_all(model, random_tokens(10, weights->config.vocab_size, 13));
  std::vector<float> row(weights->config.vocab_size);
  std::vector<std::span<float>> one_row{row};

  CHECK_THROWS_AS(model.feed(std::vector<token_id>{1, 2, 3}, {}), std::length_error);
  CHECK_THROWS_AS(model.feed(std::vector<token_id>{67}, one_row), std::out_of_range);
  CHECK_THROWS_AS(model.feed(std::vector<token_id>{-1}, one_row), std::out_of_range);
  std::vector<float> short_row(5);
  std::vector<std::span<float>> short_rows{short_row};
  CHECK_THROWS_AS(model.feed(std::vector<token_id>{1}, short_rows), std::invalid_argument);
  CHECK_THROWS_AS(model.feed(std::vector<token_id>{1}, std::vector<std::span<float>>{row, row}), std::invalid_argument);
  CHECK_THROWS_AS(model.truncate(11), std::out_of_range);
  CHECK(model.context_length() == 10);
  CHECK_NOTHROW(model.feed(std::vector<token_id>{1, 2}, one_row));
  CHECK(model.context_length() == 12);

  CHECK_THROWS_AS(transformer(weights, nullptr, {.layers = 4, .context_limit = 0}), std::invalid_argument);
  CHECK_THROWS_AS(transformer(weights, nullptr, {.layers = 0, .context_limit = 41}), std::invalid_argument);
  CHECK_THROWS_AS(transformer(nullptr, nullptr), std::invalid_argument);
  transformer_config bad = tiny_config();
  bad.n_kv_heads = 2;
  CHECK_THROWS_AS(bad.validate(), std::invalid_argument);
}

TEST_CASE("the decoder ends a request at the transformer's context limit keeping its tokens, and refuses a prompt "
          "that does not fit",
          "[llama][errors]") {
  const auto weights = tiny_weights();
  const auto team = std::make_shared<thread_team>(1);
  transformer large(weights, team, {.layers = 0, .context_limit = 20});
  transformer draft(weights, team, {.layers = 1, .context_limit = 20});
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  cospec::decoder decoder(std::vector<transformer*>{&draft, &large}, cospec::weighted_ensemble({0.5f, 0.5f}),
                          cospec::alternating({3, 1}), greedy);
  cospec::generation_limits limits;
  limits.max_new_tokens = 30;
  // 5 prompt tokens and a context of 20: the models can be fed 20 tokens, which gives the
  // 21st, so 16 tokens are generated, the same as without a limit.
  const auto result = decoder.generate(random_tokens(5, 67, 14), limits);
  CHECK(result.reason == cospec::finish_reason::context_limit);
  CHECK(result.tokens.size() == 16);
  CHECK(large.context_length() <= 20);
  transformer free_large(weights, team, {.layers = 0, .context_limit = 0});
  transformer free_draft(weights, team, {.layers = 1, .context_limit = 0});
  cospec::decoder unlimited(std::vector<transformer*>{&free_draft, &free_large}, cospec::weighted_ensemble({0.5f, 0.5f}),
                            cospec::alternating({3, 1}), greedy);
  const auto reference = unlimited.generate(random_tokens(5, 67, 14), limits);
  CHECK(std::equal(result.tokens.begin(), result.tokens.end(), reference.tokens.begin()));
  CHECK_THROWS_AS(decoder.generate(random_tokens(21, 67, 14), limits), cospec::context_overflow);
}

// ---- the adapter under the decoder ---------------------------------------------------------

namespace {

/// Wraps a transformer and checks, on every feed, the adapter contract from the model's side
/// and that the rows it returns are those of a fresh model fed the whole context in one pass:
/// whatever the decoder fed, batched and rolled back, the logits are the from-scratch ones.
class audited_transformer {
 public:
  audited_transformer(std::shared_ptr<const transformer_weights> weights, std::shared_ptr<thread_team> team,
                      transformer_options options)
      : model_(weights, team, options), weights_(std::move(weights)), team_(std::move(team)), options_(options) {}

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return model_.vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const noexcept { return model_.context_length(); }
  [[nodiscard]] std::size_t context_limit() const noexcept { return model_.context_limit(); }

  void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
    if (tokens.empty() || rows.size() > tokens.size()) ++violations;
    model_.feed(tokens, rows);
    context_.insert(context_.end(), tokens.begin(), tokens.end());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const std::size_t length = context_.size() - rows.size() + i + 1;
      transformer fresh(weights_, team_, options_);
      const auto all = feed_all(fresh, std::vector<token_id>(context_.begin(), context_.begin() + static_cast<std::ptrdiff_t>(length)));
      if (!std::equal(rows[i].begin(), rows[i].end(), all.back().begin())) ++mismatches;
    }
    ++feeds;
  }

  void truncate(std::size_t length) {
    if (length > context_.size()) ++violations;
    model_.truncate(length);
    context_.resize(length);
  }

  std::size_t violations = 0;
  std::size_t mismatches = 0;
  std::size_t feeds = 0;

 private:
  transformer model_;
  std::shared_ptr<const transformer_weights> weights_;
  std::shared_ptr<thread_team> team_;
  transformer_options options_;
  std::vector<token_id> context_;
};

template <class Speculator>
cospec::generation_result decode(std::vector<audited_transformer>& models, Speculator speculator,
                                 const cospec::sampling_settings& sampling, const std::vector<token_id>& prompt) {
  std::vector<audited_transformer*> pointers;
  for (auto& m : models) pointers.push_back(&m);
  cospec::decoder decoder(pointers, cospec::weighted_ensemble({0.5f, 0.5f}), std::move(speculator), sampling);
  cospec::generation_limits limits;
  limits.max_new_tokens = 24;
  return decoder.generate(prompt, limits);
}

}  // namespace

TEST_CASE("on the transformer, greedy output is token-identical across methods and every row is the from-scratch one",
          "[llama][greedy][threads]") {
  const auto weights = tiny_weights();
  const auto team = std::make_shared<thread_team>(2);
  auto make = [&] {
    return std::vector<audited_transformer>{audited_transformer(weights, team, {.layers = 1, .context_limit = 0}),
                                            audited_transformer(weights, team, {.layers = 0, .context_limit = 0})};
  };
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  for (std::uint64_t seed : {1, 2, 3}) {
    const auto prompt = random_tokens(4, weights->config.vocab_size, 100 + seed);
    auto reference_models = make();
    const auto expected = decode(reference_models, cospec::standard{}, greedy, prompt);
    REQUIRE(expected.tokens.size() == 24);

    auto sd_models = make();
    auto alternating_models = make();
    auto adaptive_models = make();
    const auto sd = decode(sd_models, cospec::fixed_proposer(0, 4), greedy, prompt);
    const auto cos = decode(alternating_models, cospec::alternating({3, 1}), greedy, prompt);
    const auto adaptive = decode(adaptive_models, cospec::adaptive(2), greedy, prompt);
    CHECK(sd.tokens == expected.tokens);
    CHECK(cos.tokens == expected.tokens);
    CHECK(adaptive.tokens == expected.tokens);
    for (auto* models : {&reference_models, &sd_models, &alternating_models, &adaptive_models})
      for (const auto& m : *models) {
        CHECK(m.violations == 0);
        CHECK(m.mismatches == 0);
        CHECK(m.feeds > 0);
      }
    // Speculation did batch and roll back here: the checks above were exercised.
    CHECK(cos.statistics.proposers[0].proposed > cos.statistics.proposers[0].accepted);
  }
}
