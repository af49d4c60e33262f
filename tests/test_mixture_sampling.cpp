// Mixture sampling and its speculative form (docs/algorithm.md, "Mixture sampling"): every
// emitted sequence has exactly the weighted ensemble's distribution, computed by enumeration;
// every model is fed each committed token once; requests whose target is not a mixture take
// the documented path (collaborative decoding); and the tests catch the mistakes such an
// implementation could make (broken variants).
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>  // std::min, std::max, std::equal
#include <cmath>      // std::sqrt, std::abs
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <map>        // std::map
#include <optional>   // std::optional
#include <span>       // std::span
#include <string>     // std::string
#include <vector>     // std::vector

#include "models/synthetic_model.hpp"
#include "support/checking_batch_adapter.hpp"
#include "support/model_sets.hpp"
#include "support/reference_decoding.hpp"

namespace {

using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;
using cospec::testing::reference_combination;
using cospec::testing::reference_sampling;
using sequence_counts = std::map<std::vector<token_id>, std::size_t>;

static_assert(cospec::speculator<cospec::mixture_sampling>);
static_assert(cospec::mixture_speculator<cospec::mixture_sampling>);
static_assert(cospec::mixture_observing_speculator<cospec::mixture_sampling>);
static_assert(cospec::advisable_speculator<cospec::mixture_sampling>);
static_assert(cospec::timing_speculator<cospec::mixture_sampling>);
static_assert(!cospec::mixture_speculator<cospec::alternating>);
static_assert(!cospec::mixture_speculator<cospec::adaptive>);
static_assert(cospec::combiner_with_mixture_weights<cospec::weighted_ensemble>);
static_assert(!cospec::combiner_with_mixture_weights<cospec::logit_arithmetic>);

constexpr std::size_t vocabulary = 5;
constexpr std::size_t length = 3;         // 125 possible continuations
constexpr std::size_t trials = 20000;     // mean expected count per cell 160
constexpr double significance_z = 4.753;  // standard-normal quantile of 1 - 1e-6
const std::vector<token_id> prompt{1, 3};

std::vector<synthetic_model_config> model_set(std::size_t n) {
  std::vector<synthetic_model_config> configs;
  for (std::size_t i = 0; i < n; ++i)
    configs.push_back({.vocabulary_size = vocabulary, .window = 2, .shared_seed = 11, .own_seed = 100 + i,
                       .agreement = 0.6, .sharpness = 1.5});
  return configs;
}

reference_combination ensemble_of(const std::vector<double>& weights) {
  return {reference_combination::kind::weighted_ensemble, weights, std::nullopt};
}

std::vector<float> as_floats(const std::vector<double>& weights) { return {weights.begin(), weights.end()}; }

/// Whether the counts are consistent with `expected` at significance 1e-6 (chi-square, cells of
/// expected count below 5 pooled), with no impossible output.
bool consistent(const std::string& name, const std::map<std::vector<token_id>, double>& expected,
                const sequence_counts& observed, std::size_t total = trials) {
  const auto test = cospec::testing::chi_square(expected, observed, total);
  const double critical = cospec::testing::chi_square_critical(test.degrees_of_freedom, significance_z);
  INFO(name << ": chi-square " << test.statistic << " on " << test.degrees_of_freedom << " df, critical value "
            << critical << " at significance 1e-6, " << test.unexpected << " impossible outputs");
  CHECK(test.degrees_of_freedom >= 5);  // enough cells for the test to mean something
  return test.unexpected == 0 && test.statistic < critical;
}

/// What the runs of one configuration did, summed over the trials.
struct run_totals {
  sequence_counts counts;
  std::size_t mixture_requests = 0;
  std::size_t tested = 0;           // proposals verified against another model's distribution
  std::size_t rejections = 0;
  std::size_t proposals = 0;
  std::vector<std::size_t> draws;   // per model
  std::vector<std::size_t> passes;  // per model
};

void add(run_totals& totals, const cospec::generation_result& result) {
  ++totals.counts[result.tokens];
  const auto& stats = result.statistics;
  totals.mixture_requests += stats.mixture ? 1 : 0;
  totals.rejections += stats.rejections;
  totals.draws.resize(stats.models.size());
  totals.passes.resize(stats.models.size());
  for (std::size_t k = 0; k < stats.models.size(); ++k) {
    totals.draws[k] += stats.models[k].draws;
    totals.passes[k] += stats.models[k].forward_passes;
    totals.proposals += stats.proposers[k].proposed;
  }
}

/// `trials` seeded generations of `length` tokens through cospec::decoder.
template <class Model = synthetic_model>
run_totals decode(const std::vector<synthetic_model_config>& configs, const std::vector<double>& weights,
                  cospec::mixture_sampling policy, const cospec::sampling_settings& settings = {},
                  std::size_t count = trials) {
  auto models = cospec::testing::models_of<Model>(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble(as_floats(weights)),
                          std::move(policy), settings);
  run_totals totals;
  cospec::generation_limits limits;
  limits.max_new_tokens = length;
  for (std::size_t trial = 0; trial < count; ++trial) {
    limits.seed = 1000003 * trial + 17;
    add(totals, decoder.generate(prompt, limits));
  }
  return totals;
}

cospec::mixture_sampling plain(std::size_t n) { return cospec::mixture_sampling(n); }

/// Speculative mixture sampling with model 0 a cheap drafter (pass costs 1 : 8 : 8 ...).
cospec::mixture_sampling speculative(std::size_t n, std::size_t max_gamma = 4) {
  cospec::mixture_options options;
  options.max_gamma = max_gamma;
  options.fallback.pass_costs.assign(n, 8.0);
  options.fallback.pass_costs[0] = 1.0;
  return cospec::mixture_sampling(n, options);
}

std::map<std::vector<token_id>, double> expected_for(const std::vector<synthetic_model_config>& configs,
                                                     const std::vector<double>& weights,
                                                     const reference_sampling& sampling = {1.0, std::nullopt, std::nullopt}) {
  return cospec::testing::sequence_probabilities(configs, ensemble_of(weights), sampling, prompt, length);
}

}  // namespace

TEST_CASE("mixture sampling samples exactly the weighted ensemble with 2, 3 and 4 models and uneven weights",
          "[mixture][exactness]") {
  const std::vector<std::vector<double>> weight_sets{{0.5, 0.5}, {0.3, 0.7}, {0.9, 0.05, 0.05}, {0.1, 0.2, 0.3, 0.4}};
  for (const auto& weights : weight_sets) {
    const auto configs = model_set(weights.size());
    const std::string name = "plain mixture, " + std::to_string(weights.size()) + " models, first weight " +
                             std::to_string(weights[0]);
    const run_totals totals = decode(configs, weights, plain(weights.size()));
    CHECK(consistent(name, expected_for(configs, weights), totals.counts));
    CHECK(totals.mixture_requests == trials);
    CHECK(totals.proposals == 0);  // plain: the drawn model's distribution alone, no proposal
    // Each model is drawn in proportion to its weight (3 positions per trial); 5 standard
    // deviations of a binomial count.
    for (std::size_t k = 0; k < weights.size(); ++k) {
      const double mean = 3.0 * trials * weights[k];
      const double deviation = std::sqrt(mean * (1.0 - weights[k]));
      INFO(name << ", model " << k << " drawn " << totals.draws[k] << " times, expected " << mean);
      CHECK(std::abs(static_cast<double>(totals.draws[k]) - mean) < 5.0 * deviation + 1.0);
    }
  }
}

TEST_CASE("speculative mixture sampling with a cheap drafter samples exactly the weighted ensemble",
          "[mixture][exactness]") {
  // Runs of the drafter cross positions drawn for every model: the drafter's own are accepted
  // untested, the others are verified (and rejected) against the drawn model's distribution.
  for (const auto& weights : std::vector<std::vector<double>>{{0.5, 0.5}, {0.2, 0.8}, {0.2, 0.4, 0.4}, {0.05, 0.05, 0.9}}) {
    const auto configs = model_set(weights.size());
    const std::string name = "speculative mixture, " + std::to_string(weights.size()) + " models, first weight " +
                             std::to_string(weights[0]);
    const run_totals totals = decode(configs, weights, speculative(weights.size()));
    CHECK(consistent(name, expected_for(configs, weights), totals.counts));
    CHECK(totals.mixture_requests == trials);
    INFO(name << ": " << totals.proposals << " proposals, " << totals.rejections << " rejections");
    CHECK(totals.proposals > trials);        // the drafter did propose runs
    CHECK(totals.rejections > trials / 50);  // and some were rejected
  }
}

TEST_CASE("mixture sampling driven by hand through the session is exact", "[mixture][exactness][session]") {
  const std::vector<double> weights{0.3, 0.7};
  const auto configs = model_set(2);
  auto models = cospec::testing::models_of(configs);
  cospec::session session(cospec::weighted_ensemble(as_floats(weights)), speculative(2, 3),
                          cospec::testing::vocabulary_sizes(models));
  sequence_counts counts;
  std::vector<std::size_t> held(2, 0);
  std::size_t catch_ups = 0;
  for (std::size_t trial = 0; trial < trials; ++trial) {
    cospec::generation_limits limits;
    limits.max_new_tokens = length;
    limits.seed = 7919 * trial + 3;
    cospec::sampling_settings settings;
    settings.temperature = 0.8f;
    session.start(prompt, settings, limits);
    while (const cospec::model_pass* pass = session.next_pass()) {
      synthetic_model& model = models[pass->model];
      if (model.context_length() > pass->keep) model.truncate(pass->keep);
      if (pass->tokens.size() > pass->rows.size() && pass->keep >= prompt.size()) ++catch_ups;
      model.feed(pass->tokens, pass->rows);
      session.pass_done();
    }
    const cospec::generation_result result = session.take_result();
    REQUIRE(result.statistics.mixture);
    ++counts[result.tokens];
    for (std::size_t k = 0; k < 2; ++k) models[k].truncate(0);  // a fresh prompt each time
  }
  CHECK(consistent("session by hand, T = 0.8", expected_for(configs, weights, {0.8, std::nullopt, std::nullopt}),
                   counts));
  CHECK(catch_ups > 0);  // models fed the tokens they missed
}

TEST_CASE("a batch decoder serves mixture and collaborative requests side by side, each exactly",
          "[mixture][exactness][batch]") {
  std::vector<synthetic_model_config> configs;
  for (std::size_t k = 0; k < 2; ++k)
    configs.push_back({.vocabulary_size = 5, .window = 3, .shared_seed = 11, .own_seed = 100 + k, .agreement = 0.6,
                       .sharpness = 1.5});
  const std::vector<double> weights{0.4, 0.6};
  struct kind {
    std::vector<token_id> prompt;
    reference_sampling sampling;
    bool mixture;  // top-k makes the target not a mixture: collaborative decoding
  };
  const std::vector<kind> kinds{
      {{1, 3}, {1.0, std::nullopt, std::nullopt}, true},
      {{4}, {0.8, 4, std::nullopt}, false},
      {{2, 2, 0}, {1.25, std::nullopt, std::nullopt}, true},
  };
  std::vector<std::map<std::vector<token_id>, double>> expected;
  for (const kind& k : kinds)
    expected.push_back(cospec::testing::sequence_probabilities(configs, ensemble_of(weights), k.sampling, k.prompt, length));

  std::vector<cospec::testing::checking_batch_adapter> models;
  for (const auto& config : configs) models.emplace_back(config, 3);
  cospec::batch_decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble(as_floats(weights)),
                                speculative(2, 3));
  std::vector<sequence_counts> counts(kinds.size());
  std::map<cospec::request_id, std::size_t> kind_of;
  std::size_t submitted = 0;
  std::size_t wrong_path = 0;
  const auto submit = [&] {
    const std::size_t which = submitted % kinds.size();
    const kind& k = kinds[which];
    cospec::sampling_settings settings;
    settings.temperature = static_cast<float>(k.sampling.temperature);
    settings.top_k = k.sampling.top_k;
    cospec::generation_limits limits;
    limits.max_new_tokens = length;
    limits.seed = 1000003 * submitted + 17;
    kind_of[decoder.submit(k.prompt, settings, limits)] = which;
    ++submitted;
  };
  const auto collect = [&] {
    for (auto& done : decoder.take_finished()) {
      REQUIRE_FALSE(done.failed());
      const std::size_t which = kind_of.at(done.id);
      ++counts[which][done.result.tokens];
      if (done.result.statistics.mixture != kinds[which].mixture) ++wrong_path;
      if (submitted < trials * kinds.size()) submit();
    }
  };
  for (std::size_t i = 0; i < 4; ++i) submit();
  while (decoder.step()) collect();
  collect();
  CHECK(wrong_path == 0);
  CHECK(models[0].largest_batch >= 2);
  for (std::size_t which = 0; which < kinds.size(); ++which)
    CHECK(consistent("batch request kind " + std::to_string(which), expected[which], counts[which]));
  for (const auto& model : models) CHECK(model.violations.empty());
}

namespace {

/// A synthetic model that keeps its own copy of what it holds, and counts how often each
/// position was fed in total (rolled-back feeds included).
class recording_model : public synthetic_model {
 public:
  using synthetic_model::synthetic_model;
  void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
    for (token_id t : tokens) {
      if (times_fed.size() <= text.size()) times_fed.resize(text.size() + 1, 0);
      ++times_fed[text.size()];
      text.push_back(t);
    }
    synthetic_model::feed(tokens, rows);
  }
  void truncate(std::size_t length) {
    text.resize(length);
    synthetic_model::truncate(length);
  }
  std::vector<token_id> text;
  std::vector<std::size_t> times_fed;
};

}  // namespace

TEST_CASE("every model is fed each committed token exactly once, and a model of weight 0 never runs",
          "[mixture][feeds]") {
  // Four models, the last of weight 0; 600 tokens. Plain mixture sampling never proposes, so
  // nothing is ever rolled back: each position a model holds was fed to it once, and what it
  // holds is the committed text.
  std::vector<synthetic_model_config> configs = model_set(4);
  for (auto& config : configs) config.vocabulary_size = 40;
  auto models = cospec::testing::models_of<recording_model>(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble({0.5f, 0.3f, 0.2f, 0.0f}),
                          plain(4));
  cospec::generation_limits limits;
  limits.max_new_tokens = 600;
  limits.seed = 5;
  const cospec::generation_result result = decoder.generate(prompt, limits);
  REQUIRE(result.tokens.size() == 600);
  std::vector<token_id> committed = prompt;
  committed.insert(committed.end(), result.tokens.begin(), result.tokens.end());
  const auto& stats = result.statistics;
  CHECK(stats.mixture);
  std::size_t draws = 0;
  for (std::size_t k = 0; k < 4; ++k) {
    INFO("model " << k);
    const recording_model& model = models[k];
    draws += stats.models[k].draws;
    CHECK(stats.models[k].forward_passes == stats.models[k].draws);  // one pass per position drawn for it
    CHECK(stats.models[k].tokens_fed == model.text.size());
    REQUIRE(model.text.size() <= committed.size());
    CHECK(std::equal(model.text.begin(), model.text.end(), committed.begin()));
    for (std::size_t position = 0; position < model.text.size(); ++position) {
      INFO("position " << position);
      CHECK(model.times_fed[position] == 1);
    }
  }
  CHECK(draws == 600);
  CHECK(stats.models[3].forward_passes == 0);
  CHECK(stats.models[3].tokens_fed == 0);
  // Every model that was drawn holds the text up to its last draw: at least 550 of 602 tokens
  // for weights of 0.2 and more.
  for (std::size_t k = 0; k < 3; ++k) CHECK(models[k].text.size() > 550);
}

TEST_CASE("speculative mixture sampling feeds every model the committed text, without gaps", "[mixture][feeds]") {
  std::vector<synthetic_model_config> configs = model_set(3);
  for (auto& config : configs) config.vocabulary_size = 40;
  auto models = cospec::testing::models_of<recording_model>(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble({0.2f, 0.4f, 0.4f}),
                          speculative(3, 5));
  cospec::generation_limits limits;
  limits.max_new_tokens = 400;
  limits.seed = 8;
  const cospec::generation_result result = decoder.generate(prompt, limits);
  std::vector<token_id> committed = prompt;
  committed.insert(committed.end(), result.tokens.begin(), result.tokens.end());
  std::size_t proposed = 0;
  for (const auto& p : result.statistics.proposers) proposed += p.proposed;
  CHECK(proposed > 100);
  CHECK(result.statistics.rejections > 5);
  for (std::size_t k = 0; k < 3; ++k) {
    INFO("model " << k);
    REQUIRE(models[k].text.size() <= committed.size());
    CHECK(std::equal(models[k].text.begin(), models[k].text.end(), committed.begin()));
    // A committed position is fed again only after a rejection rolled it back, never by a
    // catch-up: the feeds beyond what it holds are at most the proposals of the run.
    CHECK(result.statistics.models[k].tokens_fed - models[k].text.size() <= proposed);
  }
}

TEST_CASE("a model drawn once in thousands of positions catches up in one pass with a bounded set of rows",
          "[mixture][feeds][memory]") {
  std::vector<synthetic_model_config> configs = model_set(2);
  for (auto& config : configs) config.vocabulary_size = 40;
  auto models = cospec::testing::models_of(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble({0.9995f, 0.0005f}), plain(2));
  cospec::generation_limits limits;
  limits.max_new_tokens = 6000;
  limits.seed = 11;
  const cospec::generation_result result = decoder.generate(prompt, limits);
  REQUIRE(result.tokens.size() == 6000);
  const auto& rare = result.statistics.models[1];
  INFO("the rare model ran " << rare.forward_passes << " passes over " << rare.tokens_fed << " tokens");
  CHECK(rare.forward_passes == rare.draws);
  CHECK(rare.forward_passes <= 12);
  CHECK(rare.logit_rows == rare.forward_passes);  // one row per pass, however long the catch-up
  if (rare.forward_passes > 0) CHECK(rare.tokens_fed > 1000);
}

TEST_CASE("requests whose target is not a mixture run as collaborative decoding, as documented",
          "[mixture][fallback]") {
  const auto configs = model_set(2);
  const std::vector<double> weights{0.5, 0.5};
  // Greedy: token for token standard decoding's output.
  {
    auto models = cospec::testing::models_of(configs);
    auto reference = cospec::testing::models_of(configs);
    cospec::sampling_settings greedy;
    greedy.temperature = 0.0f;
    cospec::decoder mixture(cospec::testing::pointers(models), cospec::weighted_ensemble::uniform(2), speculative(2), greedy);
    cospec::decoder standard(cospec::testing::pointers(reference), cospec::weighted_ensemble::uniform(2),
                             cospec::standard{}, greedy);
    cospec::generation_limits limits;
    limits.max_new_tokens = 40;
    const auto a = mixture.generate(prompt, limits);
    const auto b = standard.generate(prompt, limits);
    CHECK_FALSE(a.statistics.mixture);
    CHECK(a.tokens == b.tokens);
    for (const auto& m : a.statistics.models) CHECK(m.draws == 0);
  }
  // Every transform, one at a time.
  struct transform {
    std::string name;
    cospec::sampling_settings settings;
  };
  std::vector<transform> transforms(6);
  transforms[0].name = "top-k";
  transforms[0].settings.top_k = 3;
  transforms[1].name = "top-p";
  transforms[1].settings.top_p = 0.9f;
  transforms[2].name = "min-p";
  transforms[2].settings.min_p = 0.05f;
  transforms[3].name = "logit bias";
  transforms[3].settings.logit_bias = {{2, -1.0f}};
  transforms[4].name = "penalties";
  transforms[4].settings.penalties.frequency = 0.5f;
  transforms[5].name = "a logits processor";
  transforms[5].settings.processor = [](const cospec::processor_context&, std::span<float>) {};
  for (const transform& t : transforms) {
    INFO(t.name);
    auto models = cospec::testing::models_of(configs);
    cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble::uniform(2), plain(2), t.settings);
    cospec::generation_limits limits;
    limits.max_new_tokens = 20;
    const auto result = decoder.generate(prompt, limits);
    CHECK_FALSE(result.statistics.mixture);
    CHECK(result.tokens.size() == 20);
  }
  // Exact under the fallback: top-k 3 by enumeration.
  cospec::sampling_settings top_k;
  top_k.top_k = 3;
  const run_totals totals = decode(configs, weights, speculative(2), top_k);
  CHECK(totals.mixture_requests == 0);
  CHECK(consistent("fallback under top-k 3", expected_for(configs, weights, {1.0, 3, std::nullopt}), totals.counts));
  // A combiner that is not a mixture (contrastive decoding): never mixture sampled.
  {
    auto models = cospec::testing::models_of(configs);
    cospec::decoder decoder(cospec::testing::pointers(models), cospec::contrastive_decoding(0.1f), plain(2));
    cospec::generation_limits limits;
    limits.max_new_tokens = 20;
    CHECK_FALSE(decoder.generate(prompt, limits).statistics.mixture);
  }
}

TEST_CASE("mixture sampling gives the same tokens for the same seed, and its draws do not depend on the policy",
          "[mixture][seed]") {
  const auto configs = model_set(3);
  const std::vector<double> weights{0.2, 0.3, 0.5};
  const auto run = [&](cospec::mixture_sampling policy, std::uint64_t seed) {
    auto models = cospec::testing::models_of(configs);
    cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble(as_floats(weights)),
                            std::move(policy));
    cospec::generation_limits limits;
    limits.max_new_tokens = 64;
    limits.seed = seed;
    return decoder.generate(prompt, limits);
  };
  const auto a = run(speculative(3), 99);
  const auto b = run(speculative(3), 99);
  CHECK(a.tokens == b.tokens);
  const auto c = run(speculative(3), 100);
  CHECK(a.tokens != c.tokens);
  // Plain mixture sampling: the draws are a stream of their own, so each model is drawn at
  // the same positions whatever the policy does with the tokens' randomness.
  const auto p = run(plain(3), 99);
  const auto q = run(plain(3), 99);
  CHECK(p.tokens == q.tokens);
  for (std::size_t k = 0; k < 3; ++k) CHECK(p.statistics.models[k].draws == q.statistics.models[k].draws);
}

// ===== broken variants: the enumeration catches each mistake ============================

namespace {

/// A plain implementation of one position of speculative mixture sampling over the reference
/// models, model 0 drafting, with one deliberate mistake.
enum class mixture_mistake {
  draw_after_proposal,  ///< the model is drawn after looking at the proposal (j depends on x)
  unverified_draft,     ///< a draft is accepted without a test where another model was drawn
};

sequence_counts broken_frequencies(const std::vector<synthetic_model_config>& configs,
                                   const std::vector<double>& weights, mixture_mistake mistake) {
  cospec::random_source random(2024);
  sequence_counts counts;
  const auto draw = [&] {
    double u = random.uniform();
    for (std::size_t k = 0; k + 1 < weights.size(); ++k) {
      if (u < weights[k]) return k;
      u -= weights[k];
    }
    return weights.size() - 1;
  };
  const auto sample = [&](const std::vector<double>& p) {
    double u = random.uniform();
    for (std::size_t t = 0; t + 1 < p.size(); ++t) {
      if (u < p[t]) return t;
      u -= p[t];
    }
    return p.size() - 1;
  };
  for (std::size_t trial = 0; trial < trials; ++trial) {
    std::vector<token_id> context = prompt;
    std::vector<token_id> output;
    while (output.size() < length) {
      std::vector<std::vector<double>> p;
      for (const auto& config : configs) p.push_back(cospec::testing::softmax(cospec::testing::model_logits(config, context), 1.0));
      const std::size_t x = sample(p[0]);
      std::size_t j = 0;
      if (mistake == mixture_mistake::draw_after_proposal) {
        j = p[0][x] >= p[1][x] ? 0 : draw();  // the draft's own model wherever it likes the draft
      } else {
        j = draw();
      }
      std::size_t token = x;
      if (j != 0 && mistake != mixture_mistake::unverified_draft) {
        if (!(random.uniform() < std::min(1.0, p[j][x] / p[0][x]))) {
          std::vector<double> residual(p[j].size());
          double mass = 0.0;
          for (std::size_t t = 0; t < residual.size(); ++t) mass += residual[t] = std::max(0.0, p[j][t] - p[0][t]);
          for (double& r : residual) r /= mass;
          token = sample(residual);
        }
      }
      output.push_back(static_cast<token_id>(token));
      context.push_back(static_cast<token_id>(token));
    }
    ++counts[output];
  }
  return counts;
}

/// A model whose catch-up drops the first token it missed: in a feed of two or more tokens
/// after the prompt, the first is replaced by the second (the lengths still agree, so only
/// the distribution can tell).
class skipping_model : public synthetic_model {
 public:
  using synthetic_model::synthetic_model;
  void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
    if (tokens.size() >= 2 && context_length() >= prompt.size()) {
      std::vector<token_id> skipped(tokens.begin(), tokens.end());
      skipped[0] = skipped[1];
      synthetic_model::feed(skipped, rows);
      return;
    }
    synthetic_model::feed(tokens, rows);
  }
};

}  // namespace

TEST_CASE("the enumeration rejects mixture sampling with the draw made after the proposal, an unverified draft or a "
          "catch-up that skips a token",
          "[mixture][exactness][teeth]") {
  const std::vector<double> weights{0.5, 0.5};
  const auto configs = model_set(2);
  const auto expected = expected_for(configs, weights);
  // The reference implementation without its mistake passes (so the failures below are the
  // mistakes', not the implementation's).
  CHECK_FALSE(consistent("draw after proposal (broken)", expected,
                         broken_frequencies(configs, weights, mixture_mistake::draw_after_proposal)));
  CHECK_FALSE(consistent("unverified draft (broken)", expected,
                         broken_frequencies(configs, weights, mixture_mistake::unverified_draft)));
  const run_totals skipping = decode<skipping_model>(configs, weights, plain(2));
  CHECK_FALSE(consistent("catch-up that skips a token (broken)", expected, skipping.counts));
  const run_totals right = decode(configs, weights, plain(2));
  CHECK(consistent("the same run with a model that skips nothing", expected, right.counts));
}

// ===== switching within a request ============================================================

namespace {

/// Settles mixture positions by mixture sampling for two tokens, then by collaborative decoding
/// for two, and so on (mixture_switching_speculator), deciding from the count of tokens so far.
class switching_policy {
 public:
  [[nodiscard]] bool wants_mixture() const noexcept { return true; }
  bool mixture_now(const cospec::schedule_view& view) { return view.generated() % 4 < 2; }
  void check(std::size_t n) const { inner_.check(n); }
  cospec::invocation next(const cospec::schedule_view& view) const { return inner_.next(view); }

 private:
  cospec::mixture_sampling inner_{2};
};
static_assert(cospec::mixture_switching_speculator<switching_policy>);

}  // namespace

TEST_CASE("switching between mixture sampling and collaborative decoding within a request stays exact",
          "[mixture][exactness][switching]") {
  const std::vector<double> weights{0.3, 0.7};
  const auto configs = model_set(2);
  auto models = cospec::testing::models_of(configs);
  cospec::decoder decoder(cospec::testing::pointers(models), cospec::weighted_ensemble(as_floats(weights)),
                          switching_policy{});
  sequence_counts counts;
  std::size_t drawn = 0;
  cospec::generation_limits limits;
  limits.max_new_tokens = length;
  for (std::size_t trial = 0; trial < trials; ++trial) {
    limits.seed = 31 * trial + 1;
    const auto result = decoder.generate(prompt, limits);
    ++counts[result.tokens];
    for (const auto& m : result.statistics.models) drawn += m.draws;
  }
  CHECK(consistent("switching every two tokens", expected_for(configs, weights), counts));
  // Two of every three positions (0, 1 of each four, and the third token's position 2 is not)
  // were decided by a draw.
  CHECK(drawn == 2 * trials);
}
