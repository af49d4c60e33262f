// Proposals from the context and the automatic policy (docs/algorithm.md, "Proposals from the
// context"; docs/engine.md, "automatic"): the lookup itself, exactness by enumeration alone, in
// CoS chains and with mixture sampling, the mistakes a point-mass verifier could make, greedy
// identity over random model sets, and the automatic choice against every fixed method on the
// cost clock.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>  // std::min, std::max
#include <cmath>      // std::exp
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <limits>     // std::numeric_limits
#include <map>        // std::map
#include <optional>   // std::optional
#include <random>     // std::mt19937_64
#include <string>     // std::string
#include <vector>     // std::vector

#include "models/synthetic_model.hpp"
#include "support/model_sets.hpp"
#include "support/random_speculator.hpp"
#include "support/reference_decoding.hpp"

namespace {

using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;
using cospec::testing::reference_combination;
using cospec::testing::reference_sampling;
using sequence_counts = std::map<std::vector<token_id>, std::size_t>;

static_assert(cospec::speculator<cospec::automatic>);
static_assert(cospec::mixture_speculator<cospec::automatic>);
static_assert(cospec::context_observing_speculator<cospec::automatic>);
static_assert(cospec::advisable_speculator<cospec::automatic>);
static_assert(cospec::context_matching_speculator<cospec::automatic>);
static_assert(cospec::context_matching_speculator<cospec::any_speculator>);
static_assert(cospec::speculator<cospec::with_context_proposals<cospec::standard>>);
static_assert(cospec::mixture_speculator<cospec::with_context_proposals<cospec::mixture_sampling>>);
static_assert(!cospec::mixture_speculator<cospec::with_context_proposals<cospec::alternating>>);

constexpr std::size_t vocabulary = 5;
constexpr std::size_t length = 3;
constexpr std::size_t trials = 20000;
constexpr double significance_z = 4.753;  // standard-normal quantile of 1 - 1e-6
// The prompt repeats itself ("1 3" followed by 2 once), and the models copy their context.
const std::vector<token_id> prompt{1, 3, 2, 4, 1, 3};

std::vector<synthetic_model_config> model_set(std::size_t n, double copy = 1.2) {
  std::vector<synthetic_model_config> configs;
  for (std::size_t i = 0; i < n; ++i)
    configs.push_back({.vocabulary_size = vocabulary, .window = 2, .shared_seed = 11, .own_seed = 100 + i,
                       .agreement = 0.6, .sharpness = 1.5, .copy = copy});
  return configs;
}

bool consistent(const std::string& name, const std::map<std::vector<token_id>, double>& expected,
                const sequence_counts& observed) {
  const auto test = cospec::testing::chi_square(expected, observed, trials);
  const double critical = cospec::testing::chi_square_critical(test.degrees_of_freedom, significance_z);
  INFO(name << ": chi-square " << test.statistic << " on " << test.degrees_of_freedom << " df, critical value "
            << critical << ", " << test.unexpected << " impossible outputs");
  CHECK(test.degrees_of_freedom >= 5);
  return test.unexpected == 0 && test.statistic < critical;
}

struct context_totals {
  sequence_counts counts;
  std::size_t proposed = 0;
  std::size_t accepted = 0;
};

template <class Combiner, class Speculator>
context_totals decode(const std::vector<synthetic_model_config>& configs, Combiner combiner, Speculator speculator,
                      const cospec::sampling_settings& settings) {
  auto models = cospec::testing::models_of(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), std::move(combiner), std::move(speculator), settings);
  context_totals totals;
  cospec::generation_limits limits;
  limits.max_new_tokens = length;
  for (std::size_t trial = 0; trial < trials; ++trial) {
    limits.seed = 1000003 * trial + 17;
    const auto result = decoder.generate(prompt, limits);
    ++totals.counts[result.tokens];
    totals.proposed += result.statistics.context.proposed;
    totals.accepted += result.statistics.context.accepted;
  }
  return totals;
}

reference_combination ensemble(std::size_t n) {
  return {reference_combination::kind::weighted_ensemble, std::vector<double>(n, 1.0), std::nullopt};
}

/// Enumeration exactness; with `counted`, also that context proposals were made, accepted and
/// rejected (at least a tenth of the trials each way).
template <class Combiner, class Speculator>
void check_exact(const std::string& name, std::size_t n, const reference_combination& reference, Combiner combiner,
                 Speculator speculator, const reference_sampling& sampling, bool counted = true) {
  const auto configs = model_set(n);
  cospec::sampling_settings settings;
  settings.temperature = static_cast<float>(sampling.temperature);
  settings.top_k = sampling.top_k;
  const auto expected = cospec::testing::sequence_probabilities(configs, reference, sampling, prompt, length);
  const context_totals totals = decode(configs, std::move(combiner), std::move(speculator), settings);
  INFO(name << ": " << totals.proposed << " context proposals, " << totals.accepted << " accepted");
  CHECK(consistent(name, expected, totals.counts));
  if (!counted) return;
  CHECK(totals.proposed > trials / 10);                    // the lookups found matches
  CHECK(totals.accepted > trials / 20);                    // some accepted
  CHECK(totals.proposed - totals.accepted > trials / 40);  // and some rejected
}

}  // namespace

TEST_CASE("the context lookup proposes what followed the most recent earlier occurrence, longest match first",
          "[context][lookup]") {
  cospec::context_lookup lookup({.max_ngram = 3, .min_ngram = 1, .table_bits = 8});
  std::vector<token_id> text{7, 1, 2, 3, 9, 1, 2, 4, 5, 8, 1, 2};
  lookup.clear();
  lookup.index(text, text.size());
  std::vector<token_id> out(3);
  // "1 2" occurred twice before; the most recent is followed by "4 5 8".
  REQUIRE(lookup.propose(text, out) == 3);
  CHECK(out == std::vector<token_id>{4, 5, 8});
  // A longer match wins over a more recent shorter one: "9 1 2" is followed by 4.
  text = {9, 1, 2, 4, 1, 2, 6, 9, 1, 2};
  lookup.clear();
  lookup.index(text, text.size());
  REQUIRE(lookup.propose(text, out) >= 1);
  CHECK(out[0] == 4);
  // No earlier occurrence of any suffix: nothing.
  text = {1, 2, 3, 4, 5};
  lookup.clear();
  lookup.index(text, text.size());
  CHECK(lookup.propose(text, out) == 0);
  // Only the indexed part is copied from, and pending tokens extend the query.
  text = {5, 6, 7, 8, 5, 6};
  lookup.clear();
  lookup.index(text, 4);  // "5 6" at the end is pending
  REQUIRE(lookup.propose(text, out) == 2);
  CHECK(out[0] == 7);
  CHECK(out[1] == 8);
  // clear() forgets the previous request.
  lookup.clear();
  lookup.index(std::vector<token_id>{3, 3}, 2);
  CHECK(lookup.propose(std::vector<token_id>{5, 6}, out) == 0);
  CHECK_THROWS_AS(cospec::context_lookup({.max_ngram = 1, .min_ngram = 2}), cospec::invalid_configuration);
}

TEST_CASE("the context lookup keeps a fixed size over a long text and still finds recent repeats",
          "[context][lookup][memory]") {
  cospec::context_lookup lookup({.max_ngram = 4, .min_ngram = 2, .table_bits = 10});
  std::vector<token_id> text;
  std::mt19937_64 random(3);
  for (std::size_t i = 0; i < 200000; ++i) text.push_back(static_cast<token_id>(random() % 50000));
  const std::vector<token_id> phrase{11, 22, 33, 44, 55, 66};
  text.insert(text.end(), phrase.begin(), phrase.end());
  text.push_back(77);
  text.insert(text.end(), phrase.begin(), phrase.begin() + 3);
  lookup.clear();
  lookup.index(text, text.size());
  std::vector<token_id> out(4);
  REQUIRE(lookup.propose(text, out) == 4);
  CHECK(out == std::vector<token_id>{44, 55, 66, 77});
}

TEST_CASE("context proposals alone, in CoS chains and with mixture sampling sample exactly the target",
          "[context][exactness]") {
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  check_exact("standard + context", 2, ensemble(2), cospec::weighted_ensemble::uniform(2),
              cospec::with_context_proposals(cospec::standard{}, 3), plain);
  // In a CoS chain the context's proposals follow the model's own (one here, so that three
  // tokens leave room for them).
  check_exact("CoS (1, 1) + context", 2, ensemble(2), cospec::weighted_ensemble::uniform(2),
              cospec::with_context_proposals(cospec::alternating({1, 1}), 3), plain);
  // top-k 3 masks tokens the context may propose: they are always rejected.
  check_exact("CoS (1, 1) + context, top-k 3", 2, ensemble(2), cospec::weighted_ensemble::uniform(2),
              cospec::with_context_proposals(cospec::alternating({1, 1}), 3), reference_sampling{0.8, 3, std::nullopt});
  const reference_combination contrastive{reference_combination::kind::logit_arithmetic, {1.0, -0.1}, std::nullopt};
  check_exact("CD, CoS (1, 1) + context", 2, contrastive, cospec::contrastive_decoding(0.1f),
              cospec::with_context_proposals(cospec::alternating({1, 1}), 3), plain);
  check_exact("plain mixture + context", 2, ensemble(2), cospec::weighted_ensemble::uniform(2),
              cospec::with_context_proposals(cospec::mixture_sampling(2), 3), plain);
  cospec::mixture_options speculative;
  speculative.max_gamma = 3;
  speculative.fallback.pass_costs = {1.0, 8.0, 8.0};
  check_exact("speculative mixture + context, 3 models", 3, ensemble(3), cospec::weighted_ensemble::uniform(3),
              cospec::with_context_proposals(cospec::mixture_sampling(3, speculative), 3), plain);
}

/// A random schedule (random_speculator) whose invocations also ask, at random, for up to three
/// proposals from the context, before the model's pass (invocation::context_first) or after
/// its own proposals: whatever is pending, the law must not move.
class random_context_speculator {
 public:
  explicit random_context_speculator(std::uint64_t seed) : inner_(seed), random_(seed + 1) {}
  void check(std::size_t model_count) const { inner_.check(model_count); }
  cospec::invocation next(const cospec::schedule_view& view) {
    cospec::invocation chosen = inner_.next(view);
    chosen.context_proposals = random_() % 4;
    chosen.context_first = random_() % 2 == 0;
    return chosen;
  }

 private:
  cospec::testing::random_speculator inner_;
  std::mt19937_64 random_;
};

/// Records what the session shows of the context's match, and takes it first, whole, wherever
/// nothing is pending (standard decoding otherwise). With two models, the next decision comes
/// after one model's pass, before any verification: the whole match must be pending then.
class match_recorder {
 public:
  explicit match_recorder(bool wants) : wants_(wants) {}
  void check(std::size_t) const {}
  [[nodiscard]] bool wants_context_match() const noexcept { return wants_; }
  cospec::invocation next(const cospec::schedule_view& view) {
    if (last_taken_ > 0 && view.pending_count() != last_taken_) ++mismatches;
    last_taken_ = 0;
    cospec::invocation chosen = cospec::standard{}.next(view);
    shown += view.context_match();
    if (view.pending_count() == 0 && view.context_match() > 0) {
      CHECK(view.context_match() <= view.room());
      ++taken;
      last_taken_ = view.context_match();
      chosen.context_proposals = 64;
      chosen.context_first = true;
    }
    return chosen;
  }
  std::size_t shown = 0;
  std::size_t taken = 0;       ///< matches taken
  std::size_t mismatches = 0;  ///< a match taken that did not become exactly that many pending proposals

 private:
  bool wants_;
  std::size_t last_taken_ = 0;
};

TEST_CASE("context proposals taken first, with proposals pending or not, sample exactly the target",
          "[context][exactness]") {
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  check_exact("random schedules, context first or after, WE", 2, ensemble(2), cospec::weighted_ensemble::uniform(2),
              random_context_speculator(5), plain);
  const reference_combination contrastive{reference_combination::kind::logit_arithmetic, {1.0, -0.1}, std::nullopt};
  check_exact("random schedules, context first or after, CD", 2, contrastive, cospec::contrastive_decoding(0.1f),
              random_context_speculator(6), plain);
}

TEST_CASE("the session shows the context's match to a policy that asks, and proposes exactly it",
          "[context]") {
  auto configs = model_set(2, 2.0);
  for (auto& c : configs) c.vocabulary_size = 40;
  const std::vector<token_id> looping{5, 9, 2, 7, 5, 9, 2, 7, 5, 9};
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  cospec::generation_limits limits;
  limits.max_new_tokens = 60;
  const auto run = [&](bool wants) {
    auto models = cospec::testing::models_of(configs);
    cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble::uniform(2),
                            match_recorder(wants), greedy);
    const auto result = decoder.generate(looping, limits);
    return std::make_pair(result, decoder.speculator_policy());
  };
  const auto [shown_result, shown] = run(true);
  INFO("shown " << shown.shown << ", taken " << shown.taken);
  CHECK(shown.taken >= 2);
  CHECK(shown.mismatches == 0);  // every match taken whole became exactly that many proposals
  CHECK(shown_result.statistics.context.proposed > 0);
  const auto [hidden_result, hidden] = run(false);
  CHECK(hidden.shown == 0);
  CHECK(hidden_result.statistics.context.proposed == 0);
  CHECK(hidden_result.tokens == shown_result.tokens);
}

TEST_CASE("the automatic policy samples exactly, learning and switching across and within requests",
          "[context][automatic][exactness]") {
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  cospec::automatic_options costs;
  costs.pass_costs = {1.0, 6.0};
  check_exact("automatic, WE (mixture family)", 2, ensemble(2), cospec::weighted_ensemble::uniform(2),
              cospec::automatic(2, costs), plain);
  const reference_combination contrastive{reference_combination::kind::logit_arithmetic, {1.0, -0.1}, std::nullopt};
  check_exact("automatic, CD (CoS family)", 2, contrastive, cospec::contrastive_decoding(0.1f), cospec::automatic(2, costs),
              plain, false);
  check_exact("automatic, WE with top-k (CoS family)", 2, ensemble(2), cospec::weighted_ensemble::uniform(2),
              cospec::automatic(2, costs), reference_sampling{1.0, 3, std::nullopt}, false);
}

TEST_CASE("the same seed gives the same tokens under the automatic policy", "[context][automatic][seed]") {
  auto configs = model_set(3, 1.0);
  for (auto& c : configs) c.vocabulary_size = 60;
  const auto run = [&](std::uint64_t seed) {
    auto models = cospec::testing::models_of(configs);
    cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble::uniform(3), cospec::automatic(3));
    cospec::generation_limits limits;
    limits.max_new_tokens = 80;
    limits.seed = seed;
    std::vector<token_id> tokens;
    for (const auto& p : {prompt, std::vector<token_id>{4, 4, 1}}) {
      const auto result = decoder.generate(p, limits);
      tokens.insert(tokens.end(), result.tokens.begin(), result.tokens.end());
    }
    return tokens;
  };
  CHECK(run(5) == run(5));
  CHECK(run(5) != run(6));
}

// ===== broken variants ======================================================================

namespace {

enum class point_mistake {
  residual_keeps_proposal,  ///< a rejected proposal is replaced by a draw from r, x included
  accepted_always,          ///< a context proposal is accepted without a test
};

/// Standard decoding with context proposals, written plainly over the reference models, with
/// one deliberate mistake in verifying a point mass.
sequence_counts broken_frequencies(const std::vector<synthetic_model_config>& configs, point_mistake mistake) {
  cospec::random_source random(77);
  cospec::context_lookup lookup({.max_ngram = 3, .min_ngram = 2, .table_bits = 8});
  sequence_counts counts;
  const auto sample = [&](const std::vector<double>& p) {
    double u = random.uniform();
    for (std::size_t t = 0; t + 1 < p.size(); ++t) {
      if (u < p[t]) return static_cast<token_id>(t);
      u -= p[t];
    }
    return static_cast<token_id>(p.size() - 1);
  };
  const reference_combination we = ensemble(configs.size());
  for (std::size_t trial = 0; trial < trials; ++trial) {
    std::vector<token_id> text = prompt;
    while (text.size() < prompt.size() + length) {
      const auto r = cospec::testing::reference_target(configs, we, {1.0, std::nullopt, std::nullopt}, text);
      lookup.clear();
      lookup.index(text, text.size());
      std::vector<token_id> proposal(1);
      token_id token;
      if (lookup.propose(text, proposal) == 1) {
        const auto x = static_cast<std::size_t>(proposal[0]);
        if (mistake == point_mistake::accepted_always || random.uniform() < r[x]) {
          token = proposal[0];
        } else {
          std::vector<double> residual = r;
          if (mistake != point_mistake::residual_keeps_proposal) residual[x] = 0.0;
          double total = 0.0;
          for (double w : residual) total += w;
          for (double& w : residual) w /= total;
          token = sample(residual);
        }
      } else {
        token = sample(r);
      }
      text.push_back(token);
    }
    ++counts[std::vector<token_id>(text.begin() + static_cast<std::ptrdiff_t>(prompt.size()), text.end())];
  }
  return counts;
}

}  // namespace

TEST_CASE("the enumeration rejects a point mass whose residual keeps it, or one accepted without a test",
          "[context][exactness][teeth]") {
  const auto configs = model_set(2);
  const auto expected =
      cospec::testing::sequence_probabilities(configs, ensemble(2), {1.0, std::nullopt, std::nullopt}, prompt, length);
  CHECK_FALSE(consistent("residual keeps the proposal (broken)", expected,
                         broken_frequencies(configs, point_mistake::residual_keeps_proposal)));
  CHECK_FALSE(consistent("accepted without a test (broken)", expected,
                         broken_frequencies(configs, point_mistake::accepted_always)));
}

// ===== greedy identity =======================================================================

TEST_CASE("context proposals and the automatic policy are greedy-identical to standard decoding over random model sets",
          "[context][automatic][greedy]") {
  std::mt19937_64 random(2024);
  std::size_t context_accepted = 0;
  for (std::size_t set = 0; set < 200; ++set) {
    const std::size_t n = 2 + random() % 2;
    const std::size_t v = 8 + random() % 60;
    std::vector<synthetic_model_config> configs;
    for (std::size_t k = 0; k < n; ++k)
      configs.push_back({.vocabulary_size = v, .window = 1 + random() % 3, .shared_seed = random(), .own_seed = random(),
                         .agreement = 0.3 + 0.7 * static_cast<double>(random() % 100) / 100.0,
                         .sharpness = 1.0 + static_cast<double>(random() % 30) / 10.0,
                         .copy = static_cast<double>(random() % 3)});
    std::vector<token_id> text;
    for (std::size_t i = 0; i < 12; ++i) text.push_back(static_cast<token_id>(random() % v));
    text.insert(text.end(), text.begin(), text.begin() + 6);  // a prompt that repeats itself
    cospec::sampling_settings greedy;
    greedy.temperature = 0.0f;
    cospec::generation_limits limits;
    limits.max_new_tokens = 40;
    const auto run = [&](auto combiner, auto speculator) {
      auto models = cospec::testing::models_of(configs);
      cospec::decoder decoder(cospec::testing::pointers(models), combiner, std::move(speculator), greedy);
      return decoder.generate(text, limits);
    };
    const auto check_combiner = [&](auto combiner) {
      const auto reference = run(combiner, cospec::standard{});
      std::vector<std::size_t> gammas(n, 1);
      gammas[0] = 3;
      const auto chained = run(combiner, cospec::with_context_proposals(cospec::alternating(gammas), 6));
      const auto alone = run(combiner, cospec::with_context_proposals(cospec::standard{}, 6));
      cospec::automatic_options options;
      options.pass_costs.assign(n, 4.0);
      options.pass_costs[0] = 1.0;
      const auto chosen = run(combiner, cospec::automatic(n, options));
      const auto shuffled = run(combiner, random_context_speculator(set));
      INFO("set " << set << ", " << n << " models, V = " << v);
      CHECK(chained.tokens == reference.tokens);
      CHECK(alone.tokens == reference.tokens);
      CHECK(chosen.tokens == reference.tokens);
      CHECK(shuffled.tokens == reference.tokens);
      CHECK_FALSE(chosen.statistics.mixture);  // greedy: never mixture sampling
      context_accepted += chained.statistics.context.accepted + alone.statistics.context.accepted;
    };
    if (set % 3 == 0) check_combiner(cospec::weighted_ensemble::uniform(n));
    else if (set % 3 == 1 && n == 2) check_combiner(cospec::contrastive_decoding(0.2f, 0.1f));
    else check_combiner(cospec::logit_arithmetic(std::vector<float>(n, 1.0f / static_cast<float>(n))));
  }
  CHECK(context_accepted > 1000);
}
