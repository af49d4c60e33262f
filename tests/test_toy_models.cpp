// The toy models of examples/models are complete ModelAdapters that keep their promises: the
// character n-gram models write normalised log-probabilities, both models write the same rows
// however the tokens are batched or rolled back, and the decoder drives them by the protocol.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>    // std::equal, std::max
#include <cmath>        // std::exp, std::isfinite, std::abs, std::log, std::nan
#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint64_t
#include <memory>       // std::shared_ptr, std::make_shared
#include <random>       // std::mt19937_64, std::uniform_int_distribution
#include <set>          // std::set
#include <span>         // std::span
#include <stdexcept>    // std::invalid_argument, std::logic_error
#include <string>       // std::string, std::to_string
#include <string_view>  // std::string_view
#include <thread>       // std::thread
#include <utility>      // std::move
#include <vector>       // std::vector

#include "models/ngram_model.hpp"
#include "models/synthetic_model.hpp"

namespace {

using cospec::token_id;
using cospec::examples::character_vocabulary;
using cospec::examples::ngram_model;
using cospec::examples::ngram_statistics;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;

static_assert(cospec::model_adapter<synthetic_model>);
static_assert(cospec::model_adapter<ngram_model>);

// Training text written for this test (no '#', '@' or '~': those serve as unknown characters).
constexpr std::string_view training_text = R"(Collaborative decoding lets several language models write one text together.
At every position each model proposes a distribution over the next token, and a combiner
turns those distributions into a single target: an average, a difference, or any other
arithmetic on the logits. The price is a forward pass of every model for every token.

Speculation lowers that price. A small model guesses a few tokens ahead, and a large model
checks all of them in one pass. When the guess is good, the large model accepts it and many
tokens are paid for with one expensive pass; when the guess is bad, the large model rejects
it and replaces the first wrong token with a token drawn from the right distribution. The
text that comes out is exactly the text the slow method would have written.

The models take turns. The one that verified the last guess has already computed the
distribution after it, so it proposes the next token for free, and the other model checks
it. Neither model ever waits for the other to finish a long chain of work.

A character model is a fine toy for all of this. It reads the text one letter at a time,
counts which letters follow which, and smooths the counts so that it never says that a
letter is impossible. A model of higher order remembers longer histories; it agrees with a
model of lower order on easy letters, such as the rest of a common word, and disagrees on
hard ones, such as the first letter of the next word. That is how a small and a large model
behave as well, only on a much smaller scale.)";

constexpr std::size_t max_order = 6;

struct trained_text {
  character_vocabulary vocabulary{training_text};
  std::vector<token_id> tokens = vocabulary.encode(training_text);
  std::shared_ptr<const ngram_statistics> statistics =
      std::make_shared<const ngram_statistics>(tokens, vocabulary.size(), max_order);
};

const trained_text& trained() {
  static const trained_text text;
  return text;
}

/// Feeds `tokens` to `model` in one call and returns the rows of its last `rows` positions.
template <class Model>
std::vector<std::vector<float>> feed_rows(Model& model, std::span<const token_id> tokens, std::size_t rows) {
  std::vector<std::vector<float>> storage(rows, std::vector<float>(model.vocabulary_size()));
  std::vector<std::span<float>> views(storage.begin(), storage.end());
  model.feed(tokens, views);
  return storage;
}

/// Feeds `tokens` one at a time, one row each, and returns every row.
template <class Model>
std::vector<std::vector<float>> feed_one_at_a_time(Model& model, std::span<const token_id> tokens) {
  std::vector<std::vector<float>> rows;
  for (std::size_t i = 0; i < tokens.size(); ++i) rows.push_back(feed_rows(model, tokens.subspan(i, 1), 1)[0]);
  return rows;
}

/// How far the probabilities exp(row) are from summing to 1, and whether all are positive.
struct normalisation {
  double worst_error = 0.0;
  std::size_t non_positive = 0;
  void add(const std::vector<float>& row) {
    double sum = 0.0;  // accumulated in double: the float rows are what is being tested
    for (float logit : row) {
      const double p = std::exp(static_cast<double>(logit));
      if (!(p > 0.0) || !std::isfinite(logit)) ++non_positive;
      sum += p;
    }
    worst_error = std::max(worst_error, std::abs(sum - 1.0));
  }
};

// Why 1e-5: the model normalises in double; rounding log p to float errs by at most
// |log p| * 2^-24, so the sum of exp(float(log p)) is off by at most sum p |log p| * 2^-24,
// the entropy (<= log V, about 4 nats here) times 6e-8: a few 1e-7. 1e-5 leaves a margin
// of 40 and still catches any smoothing mass lost or counted twice.
constexpr double sum_tolerance = 1e-5;

}  // namespace

TEST_CASE("the toy models satisfy the ModelAdapter concept", "[toy_models]") {
  STATIC_REQUIRE(cospec::model_adapter<synthetic_model>);
  STATIC_REQUIRE(cospec::model_adapter<ngram_model>);
}

TEST_CASE("a character vocabulary round-trips its text and skips unknown characters", "[toy_models][vocabulary]") {
  const character_vocabulary vocabulary(training_text);
  const std::vector<token_id> tokens = vocabulary.encode(training_text);
  CHECK(tokens.size() == training_text.size());
  CHECK(vocabulary.decode(tokens) == training_text);
  CHECK(vocabulary.size() == std::set<char>(training_text.begin(), training_text.end()).size());
  CHECK(tokens[0] == 0);  // numbered in order of first appearance
  CHECK(vocabulary.encode("#a@b~") == vocabulary.encode("ab"));
  CHECK(vocabulary.encode("#@~").empty());
  CHECK(vocabulary.decode(vocabulary.encode("the model")) == "the model");
}

TEST_CASE("n-gram statistics reject an empty text, order 0 and tokens outside the vocabulary",
          "[toy_models][ngram]") {
  const std::vector<token_id> text{0, 1, 2, 1, 0};
  CHECK_NOTHROW(ngram_statistics(text, 3, 2));
  CHECK_THROWS_AS(ngram_statistics(std::vector<token_id>{}, 3, 2), std::invalid_argument);
  CHECK_THROWS_AS(ngram_statistics(text, 3, 0), std::invalid_argument);
  CHECK_THROWS_AS(ngram_statistics(text, 0, 2), std::invalid_argument);
  CHECK_THROWS_AS(ngram_statistics(text, 2, 2), std::invalid_argument);  // token 2 == vocabulary size
  CHECK_THROWS_AS(ngram_statistics(std::vector<token_id>{0, -1}, 3, 2), std::invalid_argument);
  const auto statistics = std::make_shared<const ngram_statistics>(text, 3, 2);
  CHECK_THROWS_AS(ngram_model(statistics, 0), std::invalid_argument);
  CHECK_THROWS_AS(ngram_model(statistics, 3), std::invalid_argument);
  CHECK_NOTHROW(ngram_model(statistics, 2));
}

// Above 1, a count c < d frees only c, not the d that the back-off weight d * N1+ / total
// hands down, so rows would sum to more than 1; below 0 the back-off weight is negative.
TEST_CASE("n-gram statistics reject a discount that cannot give a distribution", "[toy_models][ngram]") {
  const auto& text = trained();
  CHECK_NOTHROW(ngram_statistics(text.tokens, text.vocabulary.size(), 3, 1.0));
  CHECK_THROWS_AS(ngram_statistics(text.tokens, text.vocabulary.size(), 3, 1.5), std::invalid_argument);
  CHECK_THROWS_AS(ngram_statistics(text.tokens, text.vocabulary.size(), 3, -0.5), std::invalid_argument);
  CHECK_THROWS_AS(ngram_statistics(text.tokens, text.vocabulary.size(), 3, 0.0), std::invalid_argument);
  CHECK_THROWS_AS(ngram_statistics(text.tokens, text.vocabulary.size(), 3, std::nan("")), std::invalid_argument);
}

TEST_CASE("n-gram probabilities are positive and sum to one after every context of the text and after unseen ones",
          "[toy_models][ngram]") {
  const auto& text = trained();
  const std::size_t vocabulary = text.vocabulary.size();
  for (std::size_t order = 1; order <= max_order; ++order) {
    INFO("order " << order);
    ngram_model model(text.statistics, order);
    // One row after every prefix of the text: that covers every distinct history of length
    // order - 1 the text contains (and the shorter ones at its start), and the one after its
    // end, which is never followed by anything.
    normalisation seen;
    for (const auto& row : feed_rows(model, text.tokens, text.tokens.size())) seen.add(row);
    CHECK(seen.non_positive == 0);
    CHECK(seen.worst_error < sum_tolerance);

    // Random contexts: for order >= 3 nearly all end in a history the text never contains.
    const auto history_length = static_cast<std::ptrdiff_t>(order - 1);
    std::set<std::vector<token_id>> histories;
    for (auto it = text.tokens.begin(); text.tokens.end() - it >= history_length; ++it)
      histories.emplace(it, it + history_length);
    std::mt19937_64 random(order);
    std::uniform_int_distribution<token_id> token(0, static_cast<token_id>(vocabulary - 1));
    normalisation unseen;
    std::size_t unseen_histories = 0;
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<token_id> context(12);
      for (auto& t : context) t = token(random);
      if (!histories.contains(std::vector<token_id>(context.end() - history_length, context.end()))) ++unseen_histories;
      model.truncate(0);
      unseen.add(feed_rows(model, context, 1)[0]);
    }
    if (order >= 3) CHECK(unseen_histories > 100);
    CHECK(unseen.non_positive == 0);
    CHECK(unseen.worst_error < sum_tolerance);
  }
}

TEST_CASE("a higher-order n-gram model gives its training text a higher likelihood", "[toy_models][ngram]") {
  const auto& text = trained();
  std::vector<double> average_log_likelihood;
  for (std::size_t order = 1; order <= max_order; ++order) {
    ngram_model model(text.statistics, order);
    const auto rows = feed_rows(model, text.tokens, text.tokens.size());
    double total = 0.0;
    for (std::size_t i = 0; i + 1 < text.tokens.size(); ++i)
      total += rows[i][static_cast<std::size_t>(text.tokens[i + 1])];  // row i predicts token i + 1
    average_log_likelihood.push_back(total / static_cast<double>(text.tokens.size() - 1));
  }
  // A uniform guess scores -log V; every order must beat it, each by more than the last,
  // since a longer history memorises more of the text it was trained on.
  CHECK(average_log_likelihood[0] > -std::log(static_cast<double>(text.vocabulary.size())));
  for (std::size_t k = 1; k < max_order; ++k) {
    INFO("order " << k + 1 << ": " << average_log_likelihood[k] << " nats/char, order " << k << ": "
                  << average_log_likelihood[k - 1]);
    CHECK(average_log_likelihood[k] > average_log_likelihood[k - 1]);
  }
}

TEST_CASE("n-gram rows do not depend on batching, and truncating then re-feeding repeats them",
          "[toy_models][ngram]") {
  const auto& text = trained();
  const std::span<const token_id> tokens = std::span<const token_id>(text.tokens).first(160);
  for (std::size_t order = 1; order <= max_order; ++order) {
    INFO("order " << order);
    ngram_model single(text.statistics, order);
    const auto expected = feed_one_at_a_time(single, tokens);
    CHECK(single.context_length() == tokens.size());

    // One batch with rows for the last m positions gives exactly the last m single rows.
    for (std::size_t m : {std::size_t{0}, std::size_t{1}, std::size_t{7}, tokens.size()}) {
      ngram_model batch(text.statistics, order);
      const auto rows = feed_rows(batch, tokens, m);
      CHECK(batch.context_length() == tokens.size());
      for (std::size_t i = 0; i < m; ++i) CHECK(rows[i] == expected[tokens.size() - m + i]);
    }

    // Roll back to 100 tokens, then re-feed the rest: the same rows as the first time.
    ngram_model rolled(text.statistics, order);
    feed_rows(rolled, tokens, 0);
    rolled.truncate(100);
    CHECK(rolled.context_length() == 100);
    const auto refed = feed_rows(rolled, tokens.subspan(100), 60);
    for (std::size_t i = 0; i < 60; ++i) CHECK(refed[i] == expected[100 + i]);
    rolled.truncate(0);
    CHECK(feed_rows(rolled, tokens.first(5), 5) == std::vector<std::vector<float>>(expected.begin(), expected.begin() + 5));
  }
}

// Models that share one statistics object (the intended use) must not share scratch memory:
// separate decoders on separate threads are allowed (docs/engine.md).
TEST_CASE("n-gram models that share statistics can run on two threads", "[toy_models][ngram][threads]") {
  const auto& text = trained();
  auto all_rows = [&](std::size_t order, std::vector<std::vector<float>>& out) {
    ngram_model model(text.statistics, order);
    out = feed_rows(model, text.tokens, text.tokens.size());
  };
  std::vector<std::vector<float>> expected_small, expected_large;
  all_rows(2, expected_small);
  all_rows(6, expected_large);
  int wrong = 0;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<std::vector<float>> small, large;
    std::thread first([&] { all_rows(2, small); }), second([&] { all_rows(6, large); });
    first.join();
    second.join();
    if (small != expected_small || large != expected_large) ++wrong;
  }
  CHECK(wrong == 0);
}

namespace {

/// An n-gram model that checks the decoder's side of the adapter contract on every call (as
/// tests/support/checking_adapter.hpp does for the synthetic model) and keeps every context
/// it held right after a truncate.
class checked_ngram {
 public:
  checked_ngram(std::shared_ptr<const ngram_statistics> statistics, std::size_t order)
      : model_(std::move(statistics), order) {}

  [[nodiscard]] std::size_t vocabulary_size() const { return model_.vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const { return context_.size(); }

  void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
    if (tokens.empty()) violation("feed with no tokens");
    if (rows.size() > tokens.size())
      violation("feed of " + std::to_string(tokens.size()) + " tokens asks for " + std::to_string(rows.size()) + " rows");
    for (const auto& row : rows)
      if (row.size() != vocabulary_size()) violation("logit row of the wrong length");
    model_.feed(tokens, rows);
    context_.insert(context_.end(), tokens.begin(), tokens.end());
  }

  void truncate(std::size_t length) {
    if (length > context_.size())
      violation("truncate to " + std::to_string(length) + " past the context of " + std::to_string(context_.size()));
    model_.truncate(length);
    context_.resize(length);
    after_truncate.push_back(context_);
  }

  [[nodiscard]] bool context_is_prefix_of(const std::vector<token_id>& text) const {
    return context_.size() <= text.size() && std::equal(context_.begin(), context_.end(), text.begin());
  }

  std::vector<std::string> violations;
  std::vector<std::vector<token_id>> after_truncate;

 private:
  // Recorded, then thrown so that the wrapped model never sees the bad call.
  [[noreturn]] void violation(std::string what) {
    violations.push_back(what);
    throw std::logic_error(std::move(what));
  }

  ngram_model model_;
  std::vector<token_id> context_;
};
static_assert(cospec::model_adapter<checked_ngram>);

/// Decodes 150 tokens with fresh models of the two orders (model 0 of `first_order`), checks
/// the protocol and returns the result.
template <class Combiner, class Speculator>
cospec::generation_result decode_checked(Combiner combiner, Speculator speculator, cospec::sampling_settings settings,
                                         std::size_t first_order, std::size_t second_order) {
  const auto& text = trained();
  std::vector<checked_ngram> adapters{checked_ngram(text.statistics, first_order),
                                      checked_ngram(text.statistics, second_order)};
  std::vector<checked_ngram*> models{&adapters[0], &adapters[1]};
  cospec::decoder decoder(models, std::move(combiner), std::move(speculator), settings);
  const std::vector<token_id> prompt = text.vocabulary.encode("The models ");
  cospec::generation_limits limits;
  limits.max_new_tokens = 150;
  auto result = decoder.generate(prompt, limits);
  CHECK(result.tokens.size() == 150);
  std::vector<token_id> full = prompt;
  full.insert(full.end(), result.tokens.begin(), result.tokens.end());
  for (const auto& adapter : adapters) {
    CHECK(adapter.violations.empty());
    CHECK(adapter.context_is_prefix_of(full));
    for (const auto& context : adapter.after_truncate)
      CHECK(std::equal(context.begin(), context.end(), full.begin()));  // never keeps a rejected token
  }
  return result;
}

}  // namespace

TEST_CASE("the decoder drives n-gram models by the protocol, and greedy speculation gives standard's text",
          "[toy_models][ngram][protocol]") {
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  const auto ensemble = cospec::weighted_ensemble::uniform(2);

  SECTION("weighted ensemble of orders 2 and 5, greedy") {
    const auto expected = decode_checked(ensemble, cospec::standard{}, greedy, 2, 5);
    const auto alternating = decode_checked(ensemble, cospec::alternating({3, 1}), greedy, 2, 5);
    const auto fixed = decode_checked(ensemble, cospec::fixed_proposer(0, 3), greedy, 2, 5);
    INFO("standard: " << trained().vocabulary.decode(expected.tokens));
    CHECK(alternating.tokens == expected.tokens);
    CHECK(fixed.tokens == expected.tokens);
    // Speculation did happen: the order-2 model's proposals were accepted, saving passes.
    CHECK(alternating.statistics.proposers[0].accepted > 0);
    CHECK(alternating.statistics.forward_passes() < expected.statistics.forward_passes());
  }
  SECTION("contrastive decoding, expert order 5 and amateur order 2, greedy") {
    const auto contrastive = cospec::contrastive_decoding(0.1f);
    const auto expected = decode_checked(contrastive, cospec::standard{}, greedy, 5, 2);
    CHECK(decode_checked(contrastive, cospec::alternating({1, 3}), greedy, 5, 2).tokens == expected.tokens);
    CHECK(decode_checked(contrastive, cospec::fixed_proposer(1, 3), greedy, 5, 2).tokens == expected.tokens);
  }
  SECTION("weighted ensemble of orders 2 and 5, sampling") {
    for (std::uint64_t seed = 0; seed < 5; ++seed) {
      INFO("seed " << seed);
      cospec::sampling_settings sampling;
      sampling.seed = seed;
      decode_checked(ensemble, cospec::alternating({3, 1}), sampling, 2, 5);
      decode_checked(ensemble, cospec::fixed_proposer(0, 3), sampling, 2, 5);
    }
  }
}

TEST_CASE("synthetic models that agree more accept more proposals", "[toy_models][synthetic]") {
  auto acceptance = [](double agreement) {
    std::vector<synthetic_model> models{synthetic_model({50, 2, 1, 2, agreement, 2.0}),
                                        synthetic_model({50, 2, 1, 3, agreement, 2.0})};
    std::vector<synthetic_model*> pointers{&models[0], &models[1]};
    cospec::sampling_settings settings;
    settings.seed = 2025;
    cospec::decoder decoder(pointers, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), settings);
    cospec::generation_limits limits;
    limits.max_new_tokens = 500;
    const auto result = decoder.generate(std::vector<token_id>{1}, limits);
    std::size_t proposed = 0, accepted = 0;
    for (const auto& p : result.statistics.proposers) {
      proposed += p.proposed;
      accepted += p.accepted;
    }
    return static_cast<double>(accepted) / static_cast<double>(proposed);
  };
  const double low = acceptance(0.1), middle = acceptance(0.5), high = acceptance(0.9);
  INFO("acceptance at agreement 0.1: " << low << ", 0.5: " << middle << ", 0.9: " << high);
  CHECK(low < middle);
  CHECK(middle < high);
}

TEST_CASE("synthetic model rows do not depend on batching", "[toy_models][synthetic]") {
  const synthetic_model_config config{17, 3, 1, 2, 0.5, 2.0};
  std::vector<token_id> tokens;
  for (token_id i = 0; i < 40; ++i) tokens.push_back((i * 7 + 3) % 17);
  synthetic_model single(config);
  const auto expected = feed_one_at_a_time(single, std::span<const token_id>(tokens));
  for (std::size_t m : {std::size_t{0}, std::size_t{1}, std::size_t{5}, tokens.size()}) {
    synthetic_model batch(config);
    const auto rows = feed_rows(batch, std::span<const token_id>(tokens), m);
    CHECK(batch.context_length() == tokens.size());
    for (std::size_t i = 0; i < m; ++i) CHECK(rows[i] == expected[tokens.size() - m + i]);
  }
  synthetic_model rolled(config);
  feed_rows(rolled, std::span<const token_id>(tokens), 0);
  rolled.truncate(25);
  const auto refed = feed_rows(rolled, std::span<const token_id>(tokens).subspan(25), 15);
  for (std::size_t i = 0; i < 15; ++i) CHECK(refed[i] == expected[25 + i]);
}
