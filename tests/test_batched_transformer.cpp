// The transformer example's batched adapter (examples/transformer/batched_transformer.hpp)
// keeps the promise that makes batching across sequences safe: a sequence's logits from a
// pass shared with other sequences are bit for bit those of feeding it alone, through the
// single-sequence transformer or through the batched one; and its pool, rollback and input
// checks behave as the batched_model_adapter concept asks, a refused batch touching nothing.
#include <catch2/catch.hpp>

#include <cospec/adapters/batched_model_adapter.hpp>

#include <algorithm>  // std::sort
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <memory>     // std::shared_ptr, std::make_shared
#include <random>     // std::mt19937_64, std::uniform_int_distribution
#include <span>       // std::span
#include <stdexcept>  // std::invalid_argument, std::length_error, std::out_of_range
#include <vector>     // std::vector

#include "transformer/batched_transformer.hpp"
#include "transformer/seeded_weights.hpp"
#include "transformer/thread_team.hpp"
#include "transformer/transformer.hpp"

namespace {

using cospec::sequence_feed;
using cospec::sequence_id;
using cospec::token_id;
using namespace cospec::examples::llama;

// Wide enough that batched_matmul splits the feed-forward and classifier products across a
// team of two (it keeps products of fewer than 2^14 weights on one thread), with a tail after
// whole 4- and 8-lane batches in every width (dim 60, head size 10, hidden 282, vocabulary 277)
// and 3 query heads sharing each of 2 key/value heads.
transformer_config wide_config() {
  transformer_config config;
  config.dim = 60;
  config.hidden_dim = 282;
  config.n_layers = 3;
  config.n_heads = 6;
  config.n_kv_heads = 2;
  config.vocab_size = 277;
  config.seq_len = 48;
  config.shared_classifier = false;
  return config;
}

std::shared_ptr<const transformer_weights> wide_weights(std::uint64_t seed = 5) {
  seeded_weights_options options;
  options.seed = seed;
  options.block_scale = 0.6f;
  return std::make_shared<const transformer_weights>(seeded_weights(wide_config(), options));
}

constexpr std::size_t vocabulary = 277;

std::vector<token_id> some_tokens(std::size_t count, std::uint64_t seed) {
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<token_id> pick(0, static_cast<token_id>(vocabulary) - 1);
  std::vector<token_id> tokens(count);
  for (token_id& token : tokens) token = pick(random);
  return tokens;
}

using logit_table = std::vector<std::vector<float>>;

/// What one sequence is fed in one pass: its tokens (none: it sits the pass out) and how many
/// of its last positions' logits it asks for.
struct chunk {
  std::vector<token_id> tokens;
  std::size_t rows = 0;
};
/// plan[pass][sequence].
using feed_plan = std::vector<std::vector<chunk>>;

/// A prompt of 1 to 9 tokens each, then passes of 1 or 3 tokens (the decode step and a
/// verification of two proposals), rows from none to all, some sequences sitting a pass out.
feed_plan ragged_plan(std::size_t sequences, std::size_t passes, std::uint64_t seed) {
  feed_plan plan(passes, std::vector<chunk>(sequences));
  for (std::size_t pass = 0; pass < passes; ++pass)
    for (std::size_t s = 0; s < sequences; ++s) {
      const std::size_t count = pass == 0 ? 1 + (s * 4) % 9 : ((s + pass) % 2 == 0 ? 3 : 1);
      if (pass > 0 && (s + 2 * pass) % 5 == 4) continue;
      plan[pass][s].tokens = some_tokens(count, seed + 1000 * pass + s);
      plan[pass][s].rows = (s + pass) % (count + 1);
    }
  return plan;
}

/// Room for the rows one feed asks for, and the spans a feed writes them through.
struct row_storage {
  logit_table rows;
  std::vector<std::span<float>> spans;
  explicit row_storage(std::size_t count) : rows(count, std::vector<float>(vocabulary)) {
    spans.assign(rows.begin(), rows.end());
  }
};

void append(logit_table& to, const logit_table& rows) { to.insert(to.end(), rows.begin(), rows.end()); }

/// Each sequence of the plan fed alone, in its chunks, through a fresh transformer: the rows
/// of every sequence, oldest first.
std::vector<logit_table> fed_alone(const std::shared_ptr<const transformer_weights>& weights, transformer_options options,
                                   const feed_plan& plan) {
  std::vector<logit_table> rows(plan.front().size());
  for (std::size_t s = 0; s < rows.size(); ++s) {
    transformer model(weights, std::make_shared<thread_team>(1), options);
    for (const auto& pass : plan) {
      if (pass[s].tokens.empty()) continue;
      row_storage storage(pass[s].rows);
      model.feed(pass[s].tokens, storage.spans);
      append(rows[s], storage.rows);
    }
  }
  return rows;
}

/// The plan fed to `model`'s sequences `ids`, each pass as one batch (entries in an order
/// that changes from pass to pass), or, `one_by_one`, as a batch per sequence.
std::vector<logit_table> fed_batched(batched_transformer& model, const std::vector<sequence_id>& ids,
                                     const feed_plan& plan, bool one_by_one = false) {
  std::vector<logit_table> rows(ids.size());
  for (std::size_t pass = 0; pass < plan.size(); ++pass) {
    std::vector<row_storage> storage;
    std::vector<std::size_t> fed;  // which sequence each entry is
    storage.reserve(ids.size());
    std::vector<sequence_feed> batch;
    for (std::size_t k = 0; k < ids.size(); ++k) {
      const std::size_t s = (k + pass * 3) % ids.size();
      const chunk& c = plan[pass][s];
      if (c.tokens.empty()) continue;
      storage.emplace_back(c.rows);
      fed.push_back(s);
      batch.push_back({.sequence = ids[s], .tokens = c.tokens, .rows = storage.back().spans});
    }
    if (one_by_one)
      for (const sequence_feed& entry : batch) model.feed({&entry, 1});
    else
      model.feed(batch);
    for (std::size_t e = 0; e < fed.size(); ++e) append(rows[fed[e]], storage[e].rows);
  }
  return rows;
}

std::vector<sequence_id> create(batched_transformer& model, std::size_t count) {
  std::vector<sequence_id> ids;
  for (std::size_t i = 0; i < count; ++i) ids.push_back(model.create_sequence());
  return ids;
}

std::size_t tokens_of(const feed_plan& plan, std::size_t s) {
  std::size_t count = 0;
  for (const auto& pass : plan) count += pass[s].tokens.size();
  return count;
}

/// `tokens` fed to one sequence alone, every row asked for.
logit_table feed_one(batched_transformer& model, sequence_id sequence, const std::vector<token_id>& tokens) {
  row_storage storage(tokens.size());
  const sequence_feed entry{.sequence = sequence, .tokens = tokens, .rows = storage.spans};
  model.feed({&entry, 1});
  return storage.rows;
}

logit_table feed_one(transformer& model, const std::vector<token_id>& tokens) {
  row_storage storage(tokens.size());
  model.feed(tokens, storage.spans);
  return storage.rows;
}

}  // namespace

TEST_CASE("the batched transformer is a batched model adapter with a context limit", "[transformer][batched]") {
  STATIC_REQUIRE(cospec::batched_model_adapter<batched_transformer>);
  STATIC_REQUIRE(cospec::batched_adapter_with_context_limit<batched_transformer>);
}

TEST_CASE("a sequence's rows from a shared pass are bit-identical to feeding it alone", "[transformer][batched][threads]") {
  const auto weights = wide_weights();
  for (std::size_t members : {2, 1}) {
    const auto team = std::make_shared<thread_team>(members);
    for (std::size_t sequences : {1, 4, 16}) {
      INFO(members << " team members, " << sequences << " sequences");
      const feed_plan plan = ragged_plan(sequences, 6, 40 + sequences);
      const auto expected = fed_alone(weights, {}, plan);

      batched_transformer together(weights, team, {.layers = 0, .context_limit = 0, .max_sequences = sequences});
      const auto ids = create(together, sequences);
      const auto got = fed_batched(together, ids, plan);
      CHECK(got == expected);  // every float equal, not merely close

      batched_transformer apart(weights, team, {.layers = 0, .context_limit = 0, .max_sequences = sequences});
      CHECK(fed_batched(apart, create(apart, sequences), plan, true) == expected);

      std::size_t compared = 0;
      for (std::size_t s = 0; s < sequences; ++s) {
        CHECK(together.context_length(ids[s]) == tokens_of(plan, s));
        compared += expected[s].size();
      }
      CHECK(compared >= 2 * sequences);  // the comparison was not of empty tables
    }
  }
}

TEST_CASE("truncating one sequence and re-feeding gives the rows of never having fed the dropped tokens",
          "[transformer][batched]") {
  const auto weights = wide_weights();
  const auto team = std::make_shared<thread_team>(2);
  const auto prefix = some_tokens(10, 1);
  const auto dropped = some_tokens(6, 2);
  const auto continuation = some_tokens(3, 3);
  const auto other = some_tokens(7, 4);

  transformer clean(weights, team);
  feed_one(clean, prefix);
  const logit_table expected = feed_one(clean, continuation);
  transformer neighbour(weights, team);
  const logit_table neighbour_expected = feed_one(neighbour, other);

  batched_transformer model(weights, team, {.layers = 0, .context_limit = 0, .max_sequences = 2});
  const sequence_id rolled = model.create_sequence();
  const sequence_id kept = model.create_sequence();
  {
    row_storage none(0);
    row_storage last(1);
    const std::vector<token_id> first_other(other.begin(), other.begin() + 4);
    const std::vector<sequence_feed> batch{{.sequence = rolled, .tokens = prefix, .rows = none.spans},
                                           {.sequence = kept, .tokens = first_other, .rows = last.spans}};
    model.feed(batch);
    CHECK(last.rows[0] == neighbour_expected[3]);
  }
  feed_one(model, rolled, dropped);
  model.truncate(rolled, prefix.size());
  CHECK(model.context_length(rolled) == prefix.size());
  CHECK(model.context_length(kept) == 4);
  CHECK_THROWS_AS(model.truncate(rolled, prefix.size() + 1), std::out_of_range);

  row_storage rolled_rows(continuation.size());
  row_storage kept_rows(3);
  const std::vector<token_id> rest_other(other.begin() + 4, other.end());
  const std::vector<sequence_feed> batch{{.sequence = kept, .tokens = rest_other, .rows = kept_rows.spans},
                                         {.sequence = rolled, .tokens = continuation, .rows = rolled_rows.spans}};
  model.feed(batch);
  CHECK(rolled_rows.rows == expected);
  CHECK(kept_rows.rows == logit_table(neighbour_expected.begin() + 4, neighbour_expected.end()));

  // Rolling back into the prefix too, then re-feeding its tail.
  model.truncate(rolled, 4);
  const std::vector<token_id> tail(prefix.begin() + 4, prefix.end());
  feed_one(model, rolled, tail);
  CHECK(feed_one(model, rolled, {continuation[0]})[0] == expected[0]);
  CHECK(model.context_length(kept) == other.size());
}

TEST_CASE("a refused batch leaves every sequence's context as it was", "[transformer][batched][errors]") {
  const auto weights = wide_weights();
  const auto team = std::make_shared<thread_team>(1);
  const batched_transformer_options options{.layers = 0, .context_limit = 12, .max_sequences = 4};
  const auto prompts = std::vector<std::vector<token_id>>{some_tokens(5, 11), some_tokens(10, 12), some_tokens(2, 13)};
  auto start = [&](batched_transformer& model) {
    const auto ids = create(model, 3);
    std::vector<sequence_feed> batch;
    for (std::size_t s = 0; s < 3; ++s) batch.push_back({.sequence = ids[s], .tokens = prompts[s], .rows = {}});
    model.feed(batch);
    return ids;
  };
  batched_transformer model(weights, team, options);
  const auto ids = start(model);
  const sequence_id released = model.create_sequence();
  model.release_sequence(released);
  auto lengths = [&] {
    return std::vector<std::size_t>{model.context_length(ids[0]), model.context_length(ids[1]),
                                    model.context_length(ids[2])};
  };
  const std::vector<std::size_t> before{5, 10, 2};
  REQUIRE(lengths() == before);

  // Each bad batch starts with a good entry, which a checker that ran entries as it went
  // would already have fed.
  const std::vector<token_id> one{1};
  const std::vector<token_id> three{1, 2, 3};
  const std::vector<token_id> none;
  row_storage row(1);
  row_storage two_rows(2);
  std::vector<float> short_row(5);
  const std::vector<std::span<float>> short_rows{short_row};
  auto refused = [&](sequence_feed bad) { return std::vector<sequence_feed>{{ids[0], one, row.spans}, bad}; };
  CHECK_THROWS_AS(model.feed(refused({.sequence = 7, .tokens = one, .rows = {}})), std::out_of_range);
  CHECK_THROWS_AS(model.feed(refused({.sequence = released, .tokens = one, .rows = {}})), std::out_of_range);
  CHECK_THROWS_AS(model.feed(refused({.sequence = ids[0], .tokens = one, .rows = {}})), std::invalid_argument);
  CHECK_THROWS_AS(model.feed(refused({.sequence = ids[2], .tokens = none, .rows = {}})), std::invalid_argument);
  CHECK_THROWS_AS(model.feed(refused({.sequence = ids[2], .tokens = one, .rows = two_rows.spans})),
                  std::invalid_argument);
  CHECK_THROWS_AS(model.feed(refused({.sequence = ids[2], .tokens = one, .rows = short_rows})), std::invalid_argument);
  const std::vector<token_id> outside{277};
  const std::vector<token_id> negative{-1};
  CHECK_THROWS_AS(model.feed(refused({.sequence = ids[2], .tokens = outside, .rows = {}})), std::out_of_range);
  CHECK_THROWS_AS(model.feed(refused({.sequence = ids[2], .tokens = negative, .rows = {}})), std::out_of_range);
  CHECK_THROWS_AS(model.feed(refused({.sequence = ids[1], .tokens = three, .rows = {}})), std::length_error);
  CHECK_THROWS_WITH(model.feed(refused({.sequence = ids[1], .tokens = three, .rows = {}})),
                    Catch::Contains("sequence 1") && Catch::Contains("context limit of 12"));
  CHECK_THROWS_AS(model.truncate(ids[0], 6), std::out_of_range);
  CHECK_THROWS_AS(model.truncate(released, 0), std::out_of_range);
  CHECK_THROWS_AS(model.context_length(released), std::out_of_range);
  CHECK_THROWS_AS(model.context_limit(9), std::out_of_range);
  CHECK(lengths() == before);

  // A later good batch gives what it gives on an instance that never saw the bad ones.
  batched_transformer fresh(weights, team, options);
  const auto fresh_ids = start(fresh);
  auto good = [&](batched_transformer& m, const std::vector<sequence_id>& s, std::vector<row_storage>& storage) {
    storage.emplace_back(2);
    storage.emplace_back(1);
    storage.emplace_back(1);
    const std::vector<token_id> a{3, 4};
    const std::vector<token_id> b{5, 6};
    const std::vector<token_id> c{7};
    const std::vector<sequence_feed> batch{{s[1], b, storage[1].spans}, {s[0], a, storage[0].spans},
                                           {s[2], c, storage[2].spans}};
    m.feed(batch);
  };
  std::vector<row_storage> got, expected;
  got.reserve(3);
  expected.reserve(3);
  good(model, ids, got);
  good(fresh, fresh_ids, expected);
  for (std::size_t s = 0; s < 3; ++s) CHECK(got[s].rows == expected[s].rows);
  CHECK(lengths() == std::vector<std::size_t>{7, 12, 3});
  CHECK(model.context_limit(ids[1]) == 12);
  CHECK_THROWS_AS(feed_one(model, ids[1], one), std::length_error);
  CHECK_NOTHROW(model.feed({}));
  CHECK(lengths() == std::vector<std::size_t>{7, 12, 3});
}

TEST_CASE("an exhausted pool refuses a new sequence, and a released id comes back empty", "[transformer][batched]") {
  const auto weights = wide_weights();
  const auto team = std::make_shared<thread_team>(2);
  batched_transformer model(weights, team, {.layers = 0, .context_limit = 0, .max_sequences = 3});
  CHECK(model.max_sequences() == 3);
  auto ids = create(model, 3);
  std::sort(ids.begin(), ids.end());
  CHECK(ids == std::vector<sequence_id>{0, 1, 2});
  CHECK_THROWS_AS(model.create_sequence(), cospec::capacity_exceeded);
  CHECK_THROWS_WITH(model.create_sequence(), Catch::Contains("all 3 sequences are in use"));

  const auto history = some_tokens(9, 21);
  for (const sequence_id id : ids) feed_one(model, id, history);
  model.release_sequence(1);
  model.release_sequence(1);   // twice: ignored
  model.release_sequence(42);  // never handed out: ignored
  CHECK_THROWS_AS(model.context_length(1), std::out_of_range);
  CHECK(model.context_length(0) == history.size());

  const sequence_id again = model.create_sequence();
  CHECK(again == 1);
  CHECK(model.context_length(again) == 0);
  CHECK_THROWS_AS(model.create_sequence(), cospec::capacity_exceeded);

  // Its cache still holds the released context's rows; none of them may leak in.
  const auto tokens = some_tokens(4, 22);
  batched_transformer fresh(weights, team, {.layers = 0, .context_limit = 0, .max_sequences = 1});
  const sequence_id only = fresh.create_sequence();
  CHECK(feed_one(model, again, tokens) == feed_one(fresh, only, tokens));
  CHECK(model.context_length(2) == history.size());
}

TEST_CASE("an early-exit batched instance matches the transformer cut to the same layers", "[transformer][batched]") {
  const auto weights = wide_weights(9);
  const auto team = std::make_shared<thread_team>(2);
  const feed_plan plan = ragged_plan(5, 4, 70);
  batched_transformer draft(weights, team, {.layers = 1, .context_limit = 0, .max_sequences = 5});
  CHECK(draft.layers() == 1);
  const auto got = fed_batched(draft, create(draft, 5), plan);
  CHECK(got == fed_alone(weights, {.layers = 1, .context_limit = 0}, plan));
  CHECK(got != fed_alone(weights, {}, plan));  // the option did cut the network
}

TEST_CASE("the batched transformer refuses options its weights cannot meet", "[transformer][batched][errors]") {
  const auto weights = wide_weights();
  CHECK_THROWS_AS(batched_transformer(weights, nullptr, {.layers = 0, .context_limit = 0, .max_sequences = 0}),
                  std::invalid_argument);
  CHECK_THROWS_AS(batched_transformer(weights, nullptr, {.layers = 4, .context_limit = 0, .max_sequences = 1}),
                  std::invalid_argument);
  CHECK_THROWS_AS(batched_transformer(weights, nullptr, {.layers = 0, .context_limit = 49, .max_sequences = 1}),
                  std::invalid_argument);
  CHECK_THROWS_AS(batched_transformer(nullptr, nullptr), std::invalid_argument);
  batched_transformer model(weights, nullptr, {.layers = 0, .context_limit = 20, .max_sequences = 2});
  CHECK(model.vocabulary_size() == vocabulary);
  CHECK(model.context_limit(model.create_sequence()) == 20);
  CHECK(model.team()->size() == 1);
}
