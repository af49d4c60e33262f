// The session core (include/cospec/decoder/session.hpp) driven by hand, as an engine with its
// own scheduler drives it (docs/engine.md, "Driving a session"): the tokens of
// decoder::generate, a usage_error for every call out of order, failed passes, cancellation,
// moves, two sessions from one loop. Then enumeration exactness (as in
// tests/test_decoder_exactness.cpp) for what no driver of the library does: sessions driven in
// an interleaved order with passes reported late, cancelled mid-run and restarted on their
// committed text; a randomised user-written speculator; sampling settings switched between the
// calls of one decoder. Each exactness test has a broken variant that must fail.
#include <catch2/catch.hpp>

#include <cospec/cospec.hpp>

#include <algorithm>    // std::equal, std::min, std::mismatch, std::swap_ranges, std::max_element, std::sort
#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint64_t
#include <map>          // std::map
#include <memory>       // std::make_unique
#include <optional>     // std::nullopt
#include <random>       // std::mt19937_64
#include <span>         // std::span
#include <string>       // std::string
#include <type_traits>  // std::is_nothrow_move_constructible_v, std::is_copy_constructible_v
#include <utility>      // std::move
#include <vector>       // std::vector

#include "models/synthetic_model.hpp"
#include "support/checking_adapter.hpp"
#include "support/random_speculator.hpp"
#include "support/reference_decoding.hpp"
#include "support/model_sets.hpp"

namespace {

using cospec::testing::models_of;
using cospec::testing::pointers;
using cospec::testing::vocabulary_sizes;

using Catch::Matchers::Contains;
using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;
using cospec::testing::checking_adapter;
using cospec::testing::random_speculator;
using cospec::testing::reference_combination;
using cospec::testing::reference_sampling;

using sequence_counts = std::map<std::vector<token_id>, std::size_t>;

// ---- concepts: the optional confidence requirement, with its archetypes -------------------

static_assert(cospec::speculator<random_speculator>);
static_assert(cospec::confidence_speculator<random_speculator>);
static_assert(cospec::confidence_speculator<cospec::alternating>);
static_assert(cospec::confidence_speculator<cospec::adaptive>);
static_assert(!cospec::confidence_speculator<cospec::standard>);
static_assert(!cospec::confidence_speculator<cospec::fixed_proposer>);
struct confidence_without_wants {
  bool continue_proposing(const cospec::proposal_confidence&) { return true; }
};
struct wants_without_confidence {
  bool wants_confidence() const { return true; }
};
struct confidence_with_wrong_result {
  bool wants_confidence() const { return true; }
  int continue_proposing(const cospec::proposal_confidence&) { return 1; }
};
static_assert(!cospec::confidence_speculator<confidence_without_wants>);
static_assert(!cospec::confidence_speculator<wants_without_confidence>);
static_assert(!cospec::confidence_speculator<confidence_with_wrong_result>);

using plain_session = cospec::session<cospec::weighted_ensemble, cospec::alternating>;
static_assert(std::is_nothrow_move_constructible_v<plain_session>);
static_assert(std::is_nothrow_move_assignable_v<plain_session>);
static_assert(!std::is_copy_constructible_v<plain_session>);
static_assert(!std::is_copy_assignable_v<plain_session>);

// ---- models and the caller's side of a pass -----------------------------------------------

/// What the caller's engine does with a pass (model_pass, steps 1 and 2).
template <class Model>
void carry_out(Model& model, const cospec::model_pass& pass) {
  if (model.context_length() > pass.keep) model.truncate(pass.keep);
  model.feed(pass.tokens, pass.rows);
}

/// Runs a request to its end, every pass carried out at once; `observe` sees each pass first.
template <class Session, class Model, class Observer>
cospec::generation_result drive(Session& session, std::vector<Model>& models, Observer observe) {
  while (const cospec::model_pass* pass = session.next_pass()) {
    observe(*pass);
    carry_out(models[pass->model], *pass);
    session.pass_done();
  }
  return session.take_result();
}
template <class Session, class Model>
cospec::generation_result drive(Session& session, std::vector<Model>& models) {
  return drive(session, models, [](const cospec::model_pass&) {});
}

std::vector<token_id> joined(std::vector<token_id> prefix, const std::vector<token_id>& tail) {
  prefix.insert(prefix.end(), tail.begin(), tail.end());
  return prefix;
}

bool starts_with(const std::vector<token_id>& text, std::span<const token_id> prefix) {
  return prefix.size() <= text.size() && std::equal(prefix.begin(), prefix.end(), text.begin());
}

/// The model set of the exactness tests: vocabulary 5, one shared seed, own seeds 100 + k, and
/// logits that depend on the last 3 tokens, nearly all of the 2 + 3 tokens of text a test
/// generates, so that a model holding a wrong token almost anywhere predicts something else.
std::vector<synthetic_model_config> small_models(std::size_t n, std::uint64_t shared_seed = 11) {
  std::vector<synthetic_model_config> configs;
  for (std::size_t k = 0; k < n; ++k)
    configs.push_back({.vocabulary_size = 5, .window = 3, .shared_seed = shared_seed, .own_seed = 100 + k,
                       .agreement = 0.6, .sharpness = 1.5});
  return configs;
}

reference_combination ensemble(std::size_t n) {
  return {reference_combination::kind::weighted_ensemble, std::vector<double>(n, 1.0), std::nullopt};
}
reference_combination contrastive(double mu) {
  return {reference_combination::kind::logit_arithmetic, {1.0, -mu}, std::nullopt};
}

cospec::sampling_settings to_settings(const reference_sampling& sampling) {
  cospec::sampling_settings settings;
  settings.temperature = static_cast<float>(sampling.temperature);
  settings.top_k = sampling.top_k;
  if (sampling.top_p) settings.top_p = static_cast<float>(*sampling.top_p);
  return settings;
}

/// The greedy path of the double-precision reference: the argmax of the temperature-1 target
/// at each position, as far as no near tie (which float and double may break differently)
/// makes it ambiguous. Returns how many tokens of `tokens` it confirmed, failing a CHECK at the
/// first that differs.
std::size_t confirm_greedy_path(const std::vector<synthetic_model_config>& configs,
                                const reference_combination& combination, const std::vector<token_id>& prompt,
                                const std::vector<token_id>& tokens) {
  std::vector<token_id> context = prompt;
  std::size_t confirmed = 0;
  for (token_id token : tokens) {
    const auto target = cospec::testing::reference_target(configs, combination, {1.0, std::nullopt, std::nullopt}, context);
    std::vector<double> sorted = target;
    std::sort(sorted.rbegin(), sorted.rend());
    if (sorted[0] - sorted[1] < 1e-4) break;
    const auto best = static_cast<token_id>(std::max_element(target.begin(), target.end()) - target.begin());
    CHECK(token == best);
    if (token != best) break;
    context.push_back(token);
    ++confirmed;
  }
  return confirmed;
}

// ---- the enumeration test -----------------------------------------------------------------

constexpr std::size_t length = 3;          // 125 continuations over vocabulary 5
constexpr std::size_t trials = 20000;      // mean expected count per cell 160
constexpr double significance_z = 4.753;   // standard-normal quantile of 1 - 1e-6

struct verdict {
  cospec::testing::chi_square_result test;
  double critical = 0.0;
  [[nodiscard]] bool consistent() const { return test.unexpected == 0 && test.statistic < critical; }
};

verdict judge(const std::map<std::vector<token_id>, double>& expected, const sequence_counts& observed,
              std::size_t count) {
  verdict v;
  v.test = cospec::testing::chi_square(expected, observed, count);
  v.critical = cospec::testing::chi_square_critical(v.test.degrees_of_freedom, significance_z);
  return v;
}

/// The frequencies match the expected distribution at significance 1e-6 (Pearson's chi-square,
/// cells of expected count below 5 pooled, Wilson-Hilferty critical value).
void check_consistent(const std::string& name, const std::map<std::vector<token_id>, double>& expected,
                      const sequence_counts& observed, std::size_t count = trials) {
  const verdict v = judge(expected, observed, count);
  INFO(name << ": chi-square " << v.test.statistic << " on " << v.test.degrees_of_freedom << " df, critical value "
            << v.critical << " at significance 1e-6, " << v.test.unexpected << " impossible sequences");
  CHECK(v.test.unexpected == 0);
  CHECK(v.test.degrees_of_freedom >= 5);  // enough cells for the test to mean something
  CHECK(v.test.statistic < v.critical);
}

/// A broken variant: the same test must reject its frequencies.
void check_rejected(const std::string& name, const std::map<std::vector<token_id>, double>& expected,
                    const sequence_counts& observed, std::size_t count = trials) {
  const verdict v = judge(expected, observed, count);
  INFO(name << " (broken): chi-square " << v.test.statistic << " on " << v.test.degrees_of_freedom
            << " df, critical value " << v.critical << ", " << v.test.unexpected << " impossible sequences");
  CHECK_FALSE(v.consistent());
}

// ---- requests driven by hand, one step of the caller's work at a time ---------------------

/// Mistakes a driver could make, for the broken variants.
enum class driver_bug {
  none,
  no_rollback,  ///< never truncates: ignores `keep`, and held(k) after a cancel
  /// on a cancel, keeps the proposals of the outstanding pass as if they were committed (what a
  /// session whose cancel() committed its pending chain would give)
  keeps_pending_proposals,
};

/// One sequence with its own models and session, driven one step at a time: ask for a pass,
/// carry it out, report it, each a separate step, so that a scheduler can interleave the
/// steps of several requests in any order.
template <class Combiner, class Speculator, class Model = synthetic_model>
struct hand_request {
  hand_request(const std::vector<synthetic_model_config>& configs, Combiner combiner, Speculator speculator)
      : models(models_of<Model>(configs)),
        session(std::move(combiner), std::move(speculator), vocabulary_sizes(models)) {}

  std::vector<Model> models;
  cospec::session<Combiner, Speculator> session;
  const cospec::model_pass* pass = nullptr;  // asked for and not yet reported
  bool carried_out = false;
  driver_bug bug = driver_bug::none;
  std::vector<std::size_t> cached;

  /// Starts a request on `prompt`: each model keeps what it holds of it (held(k) of the last
  /// request's committed text, as far as that text agrees with the prompt).
  void start(const std::vector<token_id>& prompt, const cospec::sampling_settings& settings,
             const cospec::generation_limits& limits) {
    const std::span<const token_id> before = session.committed_text();
    const std::size_t limit = std::min(before.size(), prompt.size());
    const auto agree =
        static_cast<std::size_t>(std::mismatch(before.begin(), before.begin() + static_cast<std::ptrdiff_t>(limit),
                                               prompt.begin()).first -
                                 before.begin());
    cached.resize(models.size());
    for (std::size_t k = 0; k < models.size(); ++k) cached[k] = std::min(session.held(k), agree);
    session.start(prompt, settings, limits, cached);
  }

  /// One step; false once the request has finished (its result is then to be taken).
  bool step() {
    if (pass == nullptr) {
      pass = session.next_pass();
      return pass != nullptr;
    }
    if (!carried_out) {
      Model& model = models[pass->model];
      if (bug != driver_bug::no_rollback && model.context_length() > pass->keep) model.truncate(pass->keep);
      model.feed(pass->tokens, pass->rows);
      carried_out = true;
      return true;
    }
    session.pass_done();
    pass = nullptr;
    carried_out = false;
    return true;
  }

  /// Cancels wherever the request is (a pass asked for, carried out or not), and rolls every
  /// model back to what it may keep. Returns the tokens committed.
  std::vector<token_id> cancel() {
    std::vector<token_id> proposals;  // what the outstanding pass feeds past the committed text
    if (bug == driver_bug::keeps_pending_proposals && pass != nullptr)
      for (std::size_t i = 0; i < pass->tokens.size(); ++i)
        if (pass->keep + i >= session.committed_text().size()) proposals.push_back(pass->tokens[i]);
    session.cancel();
    pass = nullptr;
    carried_out = false;
    for (std::size_t k = 0; k < models.size(); ++k)
      if (bug != driver_bug::no_rollback && models[k].context_length() > session.held(k))
        models[k].truncate(session.held(k));
    return joined(session.take_result().tokens, proposals);
  }
};

/// The test's side of one sampled request to be repeated: prompt, settings and a seed per trial.
struct request_spec {
  std::vector<token_id> prompt;
  cospec::sampling_settings settings;
  std::uint64_t seed_base;
};

cospec::generation_limits limits_for(std::size_t tokens, std::uint64_t seed) {
  cospec::generation_limits limits;
  limits.max_new_tokens = tokens;
  limits.seed = seed;
  return limits;
}

/// `trials` pairs of requests, A and B, interleaved by a random scheduler one step at a time:
/// either may ask for its next pass while the other's is outstanding, carry it out, and report
/// it after the other has reported its own. With `cancel_a`, A is cancelled at random steps
/// (with a pass asked for, carried out or neither) and restarted on its committed text for
/// the tokens still missing, keeping what its models hold; its output is the concatenation.
template <class RequestA, class RequestB>
void interleave(RequestA& a, const request_spec& spec_a, RequestB& b, const request_spec& spec_b, bool cancel_a,
                std::uint64_t order_seed, sequence_counts& counts_a, sequence_counts& counts_b,
                std::size_t* cancels = nullptr) {
  std::mt19937_64 order(order_seed);
  for (std::size_t trial = 0; trial < trials; ++trial) {
    a.start(spec_a.prompt, spec_a.settings, limits_for(length, spec_a.seed_base + 1000003 * trial));
    b.start(spec_b.prompt, spec_b.settings, limits_for(length, spec_b.seed_base + 1000003 * trial));
    std::vector<token_id> out_a;
    std::vector<token_id> out_b;
    bool a_live = true, b_live = true;
    std::uint64_t restarts = 0;
    while (a_live || b_live) {
      const bool pick_a = a_live && (!b_live || order() % 2 == 0);
      if (pick_a) {
        if (cancel_a && order() % 12 == 0) {
          const auto committed = a.cancel();
          out_a.insert(out_a.end(), committed.begin(), committed.end());
          out_a.resize(std::min(out_a.size(), length));
          if (cancels) ++*cancels;
          if (out_a.size() == length) {
            a_live = false;
            continue;
          }
          ++restarts;
          a.start(joined(spec_a.prompt, out_a), spec_a.settings,
                  limits_for(length - out_a.size(), spec_a.seed_base + 1000003 * trial + 7919 * restarts));
        } else if (!a.step()) {
          const auto tokens = a.session.take_result().tokens;
          out_a.insert(out_a.end(), tokens.begin(), tokens.end());
          a_live = false;
        }
      } else if (!b.step()) {
        out_b = b.session.take_result().tokens;
        b_live = false;
      }
    }
    ++counts_a[out_a];
    ++counts_b[out_b];
  }
}

/// An adapter with a classic bug: it writes the rows of a batch newest first. One-row passes
/// are right, so standard decoding never sees it; only a pass that scores several proposals
/// at once does.
class rows_newest_first {
 public:
  explicit rows_newest_first(synthetic_model_config config) : model_(config) {}
  [[nodiscard]] std::size_t vocabulary_size() const { return model_.vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const { return model_.context_length(); }
  void truncate(std::size_t length) { model_.truncate(length); }
  void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
    model_.feed(tokens, rows);
    for (std::size_t i = 0; i < rows.size() / 2; ++i)
      std::swap_ranges(rows[i].begin(), rows[i].end(), rows[rows.size() - 1 - i].begin());
  }

 private:
  synthetic_model model_;
};

/// Frequencies of `trials` seeded generations of one decoder.
template <class Model = synthetic_model, class Combiner, class Speculator>
sequence_counts decoder_frequencies(const std::vector<synthetic_model_config>& configs, Combiner combiner,
                                    Speculator speculator, const cospec::sampling_settings& settings,
                                    const std::vector<token_id>& prompt, std::size_t count = trials) {
  auto models = models_of<Model>(configs);
  cospec::decoder decoder(pointers(models), std::move(combiner), std::move(speculator), settings);
  sequence_counts counts;
  for (std::size_t trial = 0; trial < count; ++trial)
    ++counts[decoder.generate(prompt, limits_for(length, 1000003 * trial + 17)).tokens];
  return counts;
}

}  // namespace

// ===== driving by hand =====================================================================

namespace {

/// A session driven by hand and decoder::generate, each on fresh models, give the same result.
template <class Combiner, class Speculator>
void check_hand_equals_decoder(const std::string& name, const std::vector<synthetic_model_config>& configs,
                               const Combiner& combiner, const Speculator& speculator,
                               const cospec::sampling_settings& settings, const std::vector<token_id>& prompt) {
  const auto limits = limits_for(60, 4242);
  auto decoder_models = models_of(configs);
  cospec::decoder decoder(pointers(decoder_models), combiner, speculator, settings);
  const auto expected = decoder.generate(prompt, limits);
  auto models = models_of(configs);
  cospec::session session(combiner, speculator, vocabulary_sizes(models));
  session.start(prompt, settings, limits);
  const auto result = drive(session, models);
  INFO(name << (settings.greedy() ? ", greedy" : ", sampled"));
  REQUIRE(expected.tokens.size() == 60);
  CHECK(result.tokens == expected.tokens);
  CHECK(result.reason == expected.reason);
  const auto& s = result.statistics;
  const auto& e = expected.statistics;
  CHECK(s.tokens == e.tokens);
  CHECK(s.invocations == e.invocations);
  CHECK(s.rejections == e.rejections);
  CHECK(s.direct_samples == e.direct_samples);
  for (std::size_t k = 0; k < configs.size(); ++k) {
    CHECK(s.models[k].forward_passes == e.models[k].forward_passes);
    CHECK(s.models[k].tokens_fed == e.models[k].tokens_fed);
    CHECK(s.models[k].logit_rows == e.models[k].logit_rows);
    CHECK(s.proposers[k].proposed_at == e.proposers[k].proposed_at);
    CHECK(s.proposers[k].accepted_at == e.proposers[k].accepted_at);
  }
}

}  // namespace

TEST_CASE("a session driven by hand gives the tokens and statistics of decoder::generate for the same seed",
          "[session]") {
  const std::vector<synthetic_model_config> two{{20, 2, 1, 2, 0.7, 2.0}, {20, 2, 1, 3, 0.7, 2.0}};
  const std::vector<synthetic_model_config> three{
      {16, 2, 4, 5, 0.6, 2.0}, {16, 2, 4, 6, 0.6, 2.0}, {16, 2, 4, 7, 0.6, 2.0}};
  cospec::sampling_settings sampled;
  sampled.temperature = 0.8f;
  sampled.top_k = 12;
  sampled.seed = 42;
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  cospec::adaptive_options costs;
  costs.pass_costs = {1.0, 4.0};
  for (const auto& settings : {sampled, greedy}) {
    check_hand_equals_decoder("WE alternating (3,1)", two, cospec::weighted_ensemble::uniform(2),
                              cospec::alternating({3, 1}), settings, {1, 2, 3});
    check_hand_equals_decoder("CD adaptive", two, cospec::contrastive_decoding(0.1f), cospec::adaptive(2, costs), settings,
                              {4, 5});
    check_hand_equals_decoder("CD alternating (4,1) p_min 0.4", two, cospec::contrastive_decoding(0.1f),
                              cospec::alternating({4, 1}, {}, 0.4f), settings, {4, 5});
    check_hand_equals_decoder("WE n=3 randomised speculator", three, cospec::weighted_ensemble::uniform(3),
                              random_speculator(99), settings, {7});
  }
}

TEST_CASE("a greedy session driven by hand follows the argmax of the double-precision reference", "[session][greedy]") {
  const std::vector<synthetic_model_config> two{{20, 2, 1, 2, 0.7, 2.0}, {20, 2, 1, 3, 0.7, 2.0}};
  cospec::sampling_settings greedy;
  greedy.temperature = 0.0f;
  const std::vector<token_id> prompt{1, 2, 3};
  auto models = models_of(two);
  cospec::session session(cospec::weighted_ensemble::uniform(2), random_speculator(3), vocabulary_sizes(models));
  session.start(prompt, greedy, limits_for(40, 0));
  const auto result = drive(session, models);
  CHECK(confirm_greedy_path(two, ensemble(2), prompt, result.tokens) >= 20);
  CHECK(session.speculator_policy().below_maximum == 0);  // greedy proposers propose their argmax
  CHECK(session.speculator_policy().impossible_confidences == 0);
  CHECK(session.speculator_policy().confidences > 0);
}

TEST_CASE("every call out of order is a usage_error that changes nothing: the running request goes on to the same "
          "tokens",
          "[session][usage]") {
  const std::vector<synthetic_model_config> configs{{12, 5, 1, 2, 0.7, 2.0}, {12, 5, 1, 3, 0.7, 2.0}};
  cospec::sampling_settings settings;
  settings.temperature = 0.9f;
  const std::vector<token_id> prompt{1, 2, 3};
  const auto limits = limits_for(30, 7);
  auto clean_models = models_of(configs);
  plain_session clean(cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), vocabulary_sizes(clean_models));
  clean.start(prompt, settings, limits);
  const auto expected = drive(clean, clean_models).tokens;
  REQUIRE(expected.size() == 30);

  auto models = models_of(configs);
  plain_session session(cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), vocabulary_sizes(models));
  // Before any request.
  CHECK_FALSE(session.running());
  CHECK_THROWS_WITH(session.next_pass(), Contains("before start()"));
  CHECK_THROWS_WITH(session.take_result(), Contains("before any request"));
  CHECK_THROWS_AS(session.pass_done(), cospec::usage_error);
  CHECK_THROWS_AS(session.pass_failed(), cospec::usage_error);
  CHECK_NOTHROW(session.cancel());  // nothing to cancel
  CHECK_THROWS_WITH(session.start(prompt, settings, limits, std::vector<std::size_t>{1}), Contains("cached lengths"));
  CHECK_FALSE(session.running());

  session.start(prompt, settings, limits);
  CHECK(session.running());
  CHECK_THROWS_WITH(session.pass_done(), Contains("without a pass"));
  CHECK_THROWS_AS(session.pass_failed(), cospec::usage_error);
  CHECK_THROWS_WITH(session.take_result(), Contains("running"));
  std::size_t passes = 0;
  while (const cospec::model_pass* pass = session.next_pass()) {
    ++passes;
    CHECK_THROWS_WITH(session.next_pass(), Contains("before the last pass was reported"));
    CHECK_THROWS_WITH(session.start(prompt, settings, limits), Contains("while a request is running"));
    CHECK_THROWS_AS(session.take_result(), cospec::usage_error);
    CHECK(session.running());
    carry_out(models[pass->model], *pass);
    session.pass_done();
    CHECK_THROWS_AS(session.pass_done(), cospec::usage_error);  // the same pass reported twice
    CHECK_THROWS_AS(session.pass_failed(), cospec::usage_error);
  }
  CHECK(passes > 10);
  CHECK_FALSE(session.running());
  CHECK(session.next_pass() == nullptr);
  CHECK_THROWS_AS(session.pass_done(), cospec::usage_error);
  CHECK_NOTHROW(session.cancel());  // a finished request stays finished
  const auto result = session.take_result();
  CHECK(result.tokens == expected);
  CHECK(result.reason == cospec::finish_reason::max_new_tokens);
  CHECK_THROWS_WITH(session.take_result(), Contains("twice"));

  // The next request, on the committed text, is what a fresh session gives.
  const auto follow_up = joined(joined(prompt, expected), {5, 6});
  std::vector<std::size_t> held{session.held(0), session.held(1)};
  session.start(follow_up, settings, limits, held);
  const auto second = drive(session, models);
  auto fresh_models = models_of(configs);
  plain_session fresh(cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), vocabulary_sizes(fresh_models));
  fresh.start(follow_up, settings, limits);
  CHECK(second.tokens == drive(fresh, fresh_models).tokens);
}

TEST_CASE("a failed pass ends the request, and held(k) is what each model may keep", "[session][failure]") {
  const std::vector<synthetic_model_config> configs{{12, 5, 1, 2, 0.7, 2.0}, {12, 5, 1, 3, 0.7, 2.0},
                                                    {12, 5, 1, 4, 0.7, 2.0}};
  cospec::sampling_settings settings;
  settings.seed = 5;
  const std::vector<token_id> prompt{3, 1, 4};
  const auto limits = limits_for(40, 5);
  using session_type = cospec::session<cospec::weighted_ensemble, cospec::alternating>;
  const auto make = [](std::vector<checking_adapter>& models) {
    return session_type(cospec::weighted_ensemble::uniform(3), cospec::alternating({3, 2, 1}), vocabulary_sizes(models));
  };
  auto clean_models = models_of<checking_adapter>(configs);
  auto clean = make(clean_models);
  clean.start(prompt, settings, limits);
  const auto full_run = drive(clean, clean_models).tokens;
  std::size_t failures = 0;
  for (std::size_t fail_at = 1; fail_at <= 40; ++fail_at) {
    INFO("pass " << fail_at << " fails");
    auto models = models_of<checking_adapter>(configs);
    auto session = make(models);
    session.start(prompt, settings, limits);
    std::size_t passes = 0;
    bool failed = false;
    while (const cospec::model_pass* pass = session.next_pass()) {
      if (++passes == fail_at) {
        // The backend dies mid-batch: half the tokens are in its cache, no row was written.
        checking_adapter& model = models[pass->model];
        if (model.context_length() > pass->keep) model.truncate(pass->keep);
        if (pass->tokens.size() > 1) model.feed(pass->tokens.first(pass->tokens.size() / 2), {});
        session.pass_failed();
        failed = true;
        break;
      }
      carry_out(models[pass->model], *pass);
      session.pass_done();
    }
    if (!failed) break;  // the request ended before that pass
    ++failures;
    CHECK_FALSE(session.running());
    CHECK(session.next_pass() == nullptr);
    CHECK_THROWS_AS(session.pass_done(), cospec::usage_error);
    const std::vector<token_id> committed(session.committed_text().begin(), session.committed_text().end());
    CHECK(committed == joined(prompt, session.result().tokens));
    CHECK(starts_with(full_run, session.result().tokens));  // what was committed stands
    std::vector<std::size_t> held;
    for (std::size_t k = 0; k < models.size(); ++k) {
      held.push_back(session.held(k));
      CHECK(held[k] <= committed.size());
      REQUIRE(models[k].context_length() >= held[k]);
      CHECK(std::equal(models[k].context().begin(), models[k].context().begin() + static_cast<std::ptrdiff_t>(held[k]),
                       committed.begin()));
      models[k].truncate(held[k]);
    }
    const auto take = session.take_result();  // allowed once the request has ended
    CHECK(take.tokens.size() + prompt.size() == committed.size());
    // The next request keeps what each model holds, and is exact.
    const auto follow_up = joined(committed, {2});
    std::vector<std::size_t> first_keep(models.size(), 1000);
    session.start(follow_up, settings, limits, held);
    const auto again = drive(session, models, [&](const cospec::model_pass& pass) {
      if (first_keep[pass.model] == 1000) first_keep[pass.model] = pass.keep;
    });
    CHECK(first_keep == held);
    auto fresh_models = models_of<checking_adapter>(configs);
    auto fresh = make(fresh_models);
    fresh.start(follow_up, settings, limits);
    CHECK(again.tokens == drive(fresh, fresh_models).tokens);
    for (auto& model : models) CHECK(model.violations.empty());
  }
  CHECK(failures > 15);
}

TEST_CASE("cancel() ends the request with finish_reason::cancelled and keeps what was committed",
          "[session][cancel]") {
  const std::vector<synthetic_model_config> configs{{12, 5, 1, 2, 0.7, 2.0}, {12, 5, 1, 3, 0.7, 2.0}};
  cospec::sampling_settings settings;
  settings.temperature = 1.1f;
  const std::vector<token_id> prompt{3, 1, 4};
  const auto limits = limits_for(40, 11);
  const auto make = [](std::vector<checking_adapter>& models) {
    return plain_session(cospec::weighted_ensemble::uniform(2), cospec::alternating({4, 1}), vocabulary_sizes(models));
  };
  auto clean_models = models_of<checking_adapter>(configs);
  auto clean = make(clean_models);
  clean.start(prompt, settings, limits);
  const auto full_run = drive(clean, clean_models).tokens;

  enum class moment { between_passes, pass_asked, pass_carried_out };
  std::size_t cancelled = 0;
  for (moment when : {moment::between_passes, moment::pass_asked, moment::pass_carried_out}) {
    for (std::size_t cancel_at = 0; cancel_at <= 40; ++cancel_at) {
      INFO("cancelled at pass " << cancel_at << ", moment " << static_cast<int>(when));
      auto models = models_of<checking_adapter>(configs);
      auto session = make(models);
      session.start(prompt, settings, limits);
      std::size_t passes = 0;
      bool finished = false;
      if (cancel_at == 0) {
        session.cancel();
      } else {
        while (true) {
          const cospec::model_pass* pass = session.next_pass();
          if (pass == nullptr) {
            finished = true;
            break;
          }
          const bool now = ++passes == cancel_at;
          if (now && when == moment::pass_asked) {
            session.cancel();
            break;
          }
          carry_out(models[pass->model], *pass);
          if (now && when == moment::pass_carried_out) {
            session.cancel();
            break;
          }
          session.pass_done();
          if (now) {
            session.cancel();
            break;
          }
        }
      }
      if (finished) break;
      ++cancelled;
      CHECK_FALSE(session.running());
      CHECK(session.next_pass() == nullptr);
      CHECK_THROWS_AS(session.pass_done(), cospec::usage_error);
      CHECK_NOTHROW(session.cancel());
      const auto result = session.take_result();
      CHECK(result.reason == cospec::finish_reason::cancelled);
      CHECK(starts_with(full_run, result.tokens));
      if (cancel_at == 0) CHECK(result.tokens.empty());
      const std::vector<token_id> committed(session.committed_text().begin(), session.committed_text().end());
      CHECK(committed == joined(prompt, result.tokens));
      std::vector<std::size_t> held;
      for (std::size_t k = 0; k < models.size(); ++k) {
        held.push_back(session.held(k));
        REQUIRE(models[k].context_length() >= held[k]);
        CHECK(std::equal(models[k].context().begin(),
                         models[k].context().begin() + static_cast<std::ptrdiff_t>(held[k]), committed.begin()));
      }
      // Restarted on the committed text for the tokens still missing: the models keep what they
      // hold, and the request is what a fresh session gives for that prompt.
      const auto rest = limits_for(40 - result.tokens.size(), 12);
      session.start(committed, settings, rest, held);
      const auto continued = drive(session, models);
      auto fresh_models = models_of<checking_adapter>(configs);
      auto fresh = make(fresh_models);
      fresh.start(committed, settings, rest);
      CHECK(continued.tokens == drive(fresh, fresh_models).tokens);
      CHECK(continued.reason == cospec::finish_reason::max_new_tokens);
      for (auto& model : models) CHECK(model.violations.empty());
    }
  }
  CHECK(cancelled > 45);
}

TEST_CASE("a moved session keeps working, and the pass it handed out stays valid across the move", "[session][move]") {
  const std::vector<synthetic_model_config> configs{{12, 5, 1, 2, 0.7, 2.0}, {12, 5, 1, 3, 0.7, 2.0}};
  cospec::sampling_settings settings;
  settings.temperature = 0.9f;
  const std::vector<token_id> prompt{1, 2};
  const auto limits = limits_for(30, 3);
  auto clean_models = models_of(configs);
  plain_session clean(cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}), vocabulary_sizes(clean_models));
  clean.start(prompt, settings, limits);
  const auto expected = drive(clean, clean_models).tokens;

  auto models = models_of(configs);
  auto first = std::make_unique<plain_session>(cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}),
                                               vocabulary_sizes(models));
  first->start(prompt, settings, limits);
  for (int i = 0; i < 3; ++i) {
    const cospec::model_pass* pass = first->next_pass();
    REQUIRE(pass != nullptr);
    carry_out(models[pass->model], *pass);
    first->pass_done();
  }
  const cospec::model_pass* pass = first->next_pass();
  REQUIRE(pass != nullptr);
  plain_session second(std::move(*first));
  first.reset();  // the moved-from session is gone: the pass must not point into it
  carry_out(models[pass->model], *pass);
  second.pass_done();
  for (int i = 0; i < 3; ++i) {
    pass = second.next_pass();
    REQUIRE(pass != nullptr);
    carry_out(models[pass->model], *pass);
    second.pass_done();
  }
  // Move-assigned over a session of other settings, with a pass outstanding.
  auto other_models = models_of(configs);
  plain_session third(cospec::weighted_ensemble({0.2f, 0.8f}), cospec::alternating({1, 1}), vocabulary_sizes(other_models));
  pass = second.next_pass();
  REQUIRE(pass != nullptr);
  third = std::move(second);
  carry_out(models[pass->model], *pass);
  third.pass_done();
  CHECK(drive(third, models).tokens == expected);
}

TEST_CASE("two sessions driven from one loop, in any interleaving, give each the tokens it gives alone",
          "[session][interleaving]") {
  const std::vector<synthetic_model_config> configs_a{{20, 5, 1, 2, 0.8, 2.0}, {20, 5, 1, 3, 0.8, 2.0}};
  const std::vector<synthetic_model_config> configs_b{{24, 3, 7, 8, 0.5, 2.5}, {24, 3, 7, 9, 0.5, 2.5}};
  const request_spec a_spec{{1, 2, 3}, to_settings({0.8, std::nullopt, std::nullopt}), 42};
  request_spec b_spec{{7, 8}, to_settings({1.2, std::nullopt, 0.9}), 9};
  using request_a = hand_request<cospec::weighted_ensemble, cospec::alternating>;
  using request_b = hand_request<cospec::logit_arithmetic, cospec::adaptive>;
  const auto alone = [](auto& request, const request_spec& spec) {
    request.start(spec.prompt, spec.settings, limits_for(40, spec.seed_base));
    while (request.step()) {
    }
    return request.session.take_result().tokens;
  };
  request_a lone_a(configs_a, cospec::weighted_ensemble::uniform(2), cospec::alternating({4, 1}));
  request_b lone_b(configs_b, cospec::contrastive_decoding(0.2f), cospec::adaptive(2));
  const auto expected_a = alone(lone_a, a_spec);
  const auto expected_b = alone(lone_b, b_spec);
  for (std::uint64_t order_seed = 0; order_seed < 40; ++order_seed) {
    INFO("scheduler seed " << order_seed);
    request_a a(configs_a, cospec::weighted_ensemble::uniform(2), cospec::alternating({4, 1}));
    request_b b(configs_b, cospec::contrastive_decoding(0.2f), cospec::adaptive(2));
    a.start(a_spec.prompt, a_spec.settings, limits_for(40, a_spec.seed_base));
    b.start(b_spec.prompt, b_spec.settings, limits_for(40, b_spec.seed_base));
    std::mt19937_64 order(order_seed);
    bool a_live = true, b_live = true;
    std::size_t both_outstanding = 0;
    while (a_live || b_live) {
      if (a.pass != nullptr && b.pass != nullptr) ++both_outstanding;
      if (a_live && (!b_live || order() % 2 == 0)) a_live = a.step();
      else b_live = b.step();
    }
    CHECK(both_outstanding > 10);  // the interleaving did overlap the two sessions' passes
    CHECK(a.session.take_result().tokens == expected_a);
    CHECK(b.session.take_result().tokens == expected_b);
  }
}

// ===== enumeration exactness ===============================================================

TEST_CASE("sessions driven in an interleaved order, passes reported after the other's, sample exactly the target",
          "[session][exactness]") {
  using request_a = hand_request<cospec::weighted_ensemble, cospec::alternating>;
  using request_b = hand_request<cospec::logit_arithmetic, cospec::adaptive>;
  const auto configs_a = small_models(2, 11);
  const auto configs_b = small_models(3, 23);
  const request_spec spec_a{{1, 3}, to_settings({1.0, std::nullopt, std::nullopt}), 17};
  const request_spec spec_b{{4}, to_settings({0.8, 4, std::nullopt}), 29};
  const reference_combination experts{reference_combination::kind::logit_arithmetic, {0.5, 0.3, 0.2}, std::nullopt};
  const auto expected_a =
      cospec::testing::sequence_probabilities(configs_a, ensemble(2), {1.0, std::nullopt, std::nullopt}, spec_a.prompt, length);
  const auto expected_b = cospec::testing::sequence_probabilities(configs_b, experts, {0.8, 4, std::nullopt}, spec_b.prompt, length);
  cospec::adaptive_options costs;
  costs.pass_costs = {1.0, 2.0, 4.0};
  costs.p_min = 0.3f;  // B's runs also end where its proposer is unsure

  for (bool broken : {false, true}) {
    request_a a(configs_a, cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}));
    request_b b(configs_b, cospec::logit_arithmetic({0.5f, 0.3f, 0.2f}), cospec::adaptive(3, costs));
    // A driver that ignores `keep` leaves rejected proposals in the models' caches.
    a.bug = b.bug = broken ? driver_bug::no_rollback : driver_bug::none;
    sequence_counts counts_a, counts_b;
    interleave(a, spec_a, b, spec_b, false, 2024, counts_a, counts_b);
    if (!broken) {
      check_consistent("session A, WE n=2 alternating (3,1), interleaved", expected_a, counts_a);
      check_consistent("session B, experts n=3 adaptive p_min 0.3 T=0.8 top-k 4, interleaved", expected_b, counts_b);
    } else {
      check_rejected("session A, driver without rollback", expected_a, counts_a);
      check_rejected("session B, driver without rollback", expected_b, counts_b);
    }
  }
}

TEST_CASE("a session cancelled at random moments and restarted on its committed text samples exactly the target",
          "[session][exactness][cancel]") {
  // Each cancel commits a prefix whose length depends only on the verification outcomes so
  // far (the schedule of alternating and of adaptive without p_min reads nothing else), and
  // given those outcomes and the prefix, the rest of a speculative run is distributed as the
  // target's continuation (docs/algorithm.md, "Exactness"): the concatenation of the pieces
  // must be an exact sample of the whole.
  using request_a = hand_request<cospec::logit_arithmetic, cospec::alternating>;
  using request_b = hand_request<cospec::weighted_ensemble, cospec::adaptive>;
  const auto configs_a = small_models(2, 11);
  const auto configs_b = small_models(2, 31);
  const request_spec spec_a{{1, 3}, to_settings({1.0, std::nullopt, std::nullopt}), 101};
  const request_spec spec_b{{2, 2}, to_settings({1.0, std::nullopt, 0.8}), 202};
  const auto expected_a =
      cospec::testing::sequence_probabilities(configs_a, contrastive(0.1), {1.0, std::nullopt, std::nullopt}, spec_a.prompt, length);
  const auto expected_b =
      cospec::testing::sequence_probabilities(configs_b, ensemble(2), {1.0, std::nullopt, 0.8}, spec_b.prompt, length);
  for (bool broken : {false, true}) {
    request_a a(configs_a, cospec::contrastive_decoding(0.1f), cospec::alternating({4, 1}));
    request_b b(configs_b, cospec::weighted_ensemble::uniform(2), cospec::adaptive(2));
    // Broken: a cancel that keeps the outstanding pass's proposals, unverified, as committed.
    a.bug = broken ? driver_bug::keeps_pending_proposals : driver_bug::none;
    sequence_counts counts_a, counts_b;
    std::size_t cancels = 0;
    interleave(a, spec_a, b, spec_b, true, 77, counts_a, counts_b, &cancels);
    if (!broken) {
      CHECK(cancels > trials);  // about one cancel per trial, at every kind of moment
      check_consistent("session A, CD alternating (4,1), cancelled and restarted", expected_a, counts_a);
      check_consistent("session B, WE adaptive top-p 0.8, beside it", expected_b, counts_b);
    } else {
      check_rejected("session A, cancel keeping the pending proposals", expected_a, counts_a);
    }
  }
}

TEST_CASE("a randomised user-written speculator, with random early stops, samples exactly the target",
          "[session][exactness][speculator]") {
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  const std::vector<token_id> prompt{1, 3};
  {
    const auto configs = small_models(2);
    const auto expected = cospec::testing::sequence_probabilities(configs, ensemble(2), plain, prompt, length);
    auto models = models_of(configs);
    cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), random_speculator(1),
                            to_settings(plain));
    sequence_counts counts;
    for (std::size_t trial = 0; trial < trials; ++trial)
      ++counts[decoder.generate(prompt, limits_for(length, 1000003 * trial + 17)).tokens];
    check_consistent("WE n=2 randomised speculator", expected, counts);
    const auto& policy = decoder.speculator_policy();
    CHECK(policy.early_stops > trials / 4);  // runs were stopped early, often
    CHECK(policy.impossible_confidences == 0);
    CHECK(policy.below_maximum > 0);  // sampled proposals are not always the argmax
  }
  check_consistent("CD mu=0.1 randomised speculator T=0.7 top-k 4",
                   cospec::testing::sequence_probabilities(small_models(2), contrastive(0.1), {0.7, 4, std::nullopt},
                                                           prompt, length),
                   decoder_frequencies(small_models(2), cospec::contrastive_decoding(0.1f), random_speculator(2),
                                       to_settings({0.7, 4, std::nullopt}), prompt));
  check_consistent("WE n=3 randomised speculator top-p 0.8",
                   cospec::testing::sequence_probabilities(small_models(3), ensemble(3), {1.0, std::nullopt, 0.8},
                                                           prompt, length),
                   decoder_frequencies(small_models(3), cospec::weighted_ensemble::uniform(3), random_speculator(3),
                                       to_settings({1.0, std::nullopt, 0.8}), prompt));
  const reference_combination experts{reference_combination::kind::logit_arithmetic, {0.5, 0.3, 0.2}, std::nullopt};
  check_consistent("experts n=3 randomised speculator, longer runs",
                   cospec::testing::sequence_probabilities(small_models(3), experts, plain, prompt, length),
                   decoder_frequencies(small_models(3), cospec::logit_arithmetic({0.5f, 0.3f, 0.2f}),
                                       random_speculator(4, 6, 0.1), to_settings(plain), prompt));
  // Broken: an adapter that writes a batch's rows newest first. Only passes that score
  // several proposals see it, and the randomised schedule makes many.
  check_rejected("WE n=2 randomised speculator over an adapter writing rows newest first",
                 cospec::testing::sequence_probabilities(small_models(2), ensemble(2), plain, prompt, length),
                 decoder_frequencies<rows_newest_first>(small_models(2), cospec::weighted_ensemble::uniform(2),
                                                        random_speculator(1), to_settings(plain), prompt));
}

TEST_CASE("early stops and scorer-only models of the provided policies keep speculation exact",
          "[session][exactness][speculator]") {
  const reference_sampling plain{1.0, std::nullopt, std::nullopt};
  const std::vector<token_id> prompt{1, 3};
  check_consistent("WE n=2 alternating (4,1) p_min 0.5",
                   cospec::testing::sequence_probabilities(small_models(2), ensemble(2), plain, prompt, length),
                   decoder_frequencies(small_models(2), cospec::weighted_ensemble::uniform(2),
                                       cospec::alternating({4, 1}, {}, 0.5f), to_settings(plain), prompt));
  cospec::adaptive_options unsure;
  unsure.p_min = 0.5f;
  unsure.pass_costs = {1.0, 8.0};
  check_consistent("CD adaptive p_min 0.5 T=0.7",
                   cospec::testing::sequence_probabilities(small_models(2), contrastive(0.1), {0.7, std::nullopt, std::nullopt},
                                                           prompt, length),
                   decoder_frequencies(small_models(2), cospec::contrastive_decoding(0.1f), cospec::adaptive(2, unsure),
                                       to_settings({0.7, std::nullopt, std::nullopt}), prompt));
  check_consistent("WE n=3 alternating (3,0,1): model 1 scores only",
                   cospec::testing::sequence_probabilities(small_models(3), ensemble(3), plain, prompt, length),
                   decoder_frequencies(small_models(3), cospec::weighted_ensemble::uniform(3),
                                       cospec::alternating({3, 0, 1}), to_settings(plain), prompt));
}

TEST_CASE("sampling settings switched between the calls of one decoder: each call samples its own settings' target",
          "[session][exactness][settings]") {
  // One decoder serves four kinds of call in turn, with prompts that share prefixes, so the
  // models keep text across calls whose settings differ; half the calls bring their settings,
  // half go through set_settings. The greedy kind has a single right answer.
  const auto configs = small_models(2);
  struct call_kind {
    std::vector<token_id> prompt;
    reference_sampling sampling;
    bool greedy = false;
  };
  const std::vector<call_kind> kinds{{{1, 3}, {1.0, std::nullopt, std::nullopt}},
                                     {{1, 3, 2}, {0.6, 3, std::nullopt}},
                                     {{1, 3}, {1.5, std::nullopt, 0.85}},
                                     {{1, 3, 2, 4}, {1.0, std::nullopt, std::nullopt}, true}};
  std::vector<std::map<std::vector<token_id>, double>> expected;
  for (const auto& kind : kinds)
    expected.push_back(cospec::testing::sequence_probabilities(configs, ensemble(2), kind.sampling, kind.prompt, length));
  // The greedy kind's one sequence: the reference's argmax path, with clear margins.
  std::vector<token_id> greedy_path;
  {
    std::vector<token_id> context = kinds[3].prompt;
    for (std::size_t i = 0; i < length; ++i) {
      const auto target = cospec::testing::reference_target(configs, ensemble(2), kinds[3].sampling, context);
      std::vector<double> sorted = target;
      std::sort(sorted.rbegin(), sorted.rend());
      REQUIRE(sorted[0] - sorted[1] > 1e-3);
      greedy_path.push_back(static_cast<token_id>(std::max_element(target.begin(), target.end()) - target.begin()));
      context.push_back(greedy_path.back());
    }
  }
  const auto settings_of = [](const call_kind& kind) {
    cospec::sampling_settings settings = to_settings(kind.sampling);
    if (kind.greedy) settings.temperature = 0.0f;
    return settings;
  };

  for (bool broken : {false, true}) {
    auto models = models_of(configs);
    cospec::decoder decoder(pointers(models), cospec::weighted_ensemble::uniform(2), cospec::alternating({3, 1}),
                            settings_of(kinds[0]));
    std::vector<sequence_counts> counts(kinds.size());
    for (std::size_t trial = 0; trial < kinds.size() * trials; ++trial) {
      const std::size_t k = trial % kinds.size();
      const auto limits = limits_for(length, 1000003 * trial + 17);
      if (broken) {
        // Broken: a decoder that keeps its construction-time settings whatever the call says.
        ++counts[k][decoder.generate(kinds[k].prompt, limits).tokens];
      } else if ((trial / kinds.size()) % 2 == 0) {
        ++counts[k][decoder.generate(kinds[k].prompt, settings_of(kinds[k]), limits).tokens];
      } else {
        decoder.set_settings(settings_of(kinds[k]));
        ++counts[k][decoder.generate(kinds[k].prompt, limits).tokens];
      }
    }
    if (!broken) {
      check_consistent("T=1 after the other kinds", expected[0], counts[0]);
      check_consistent("T=0.6 top-k 3", expected[1], counts[1]);
      check_consistent("T=1.5 top-p 0.85", expected[2], counts[2]);
      CHECK(counts[3].size() == 1);
      CHECK(counts[3][greedy_path] == trials);
    } else {
      check_rejected("T=0.6 top-k 3 decoded at the construction-time T=1", expected[1], counts[1]);
      check_rejected("T=1.5 top-p 0.85 decoded at the construction-time T=1", expected[2], counts[2]);
    }
  }
}
