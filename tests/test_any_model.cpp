// any_model owns an adapter only when it is moved in, and refers to one owned elsewhere only
// through cospec::ref: an adapter lvalue, which used to be copied silently, does not compile.
#include <catch2/catch.hpp>

#include <cospec/adapters/any_model.hpp>

#include <concepts>     // std::same_as
#include <cstddef>      // std::size_t
#include <limits>       // std::numeric_limits
#include <span>         // std::span
#include <type_traits>  // std::is_constructible_v, std::is_convertible_v, std::is_copy_*_v, std::is_nothrow_move_*_v
#include <utility>      // std::declval, std::move, std::forward
#include <vector>       // std::vector

#include "models/synthetic_model.hpp"

namespace {

using cospec::token_id;
using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;

/// Counts the calls it receives and says how long a context it holds, so a test can tell
/// which object a call reached and whether context_limit is forwarded.
class counting_adapter {
 public:
  explicit counting_adapter(std::size_t limit) : limit_(limit) {}
  [[nodiscard]] std::size_t vocabulary_size() const { return 3; }
  [[nodiscard]] std::size_t context_length() const { return context_.size(); }
  [[nodiscard]] std::size_t context_limit() const { return limit_; }
  void feed(std::span<const token_id> tokens, cospec::logit_outputs rows) {
    ++feeds;
    context_.insert(context_.end(), tokens.begin(), tokens.end());
    for (std::span<float> row : rows)
      for (float& logit : row) logit = static_cast<float>(context_.size());
  }
  void truncate(std::size_t length) {
    ++truncations;
    context_.resize(length);
  }
  int feeds = 0;
  int truncations = 0;

 private:
  std::size_t limit_;
  std::vector<token_id> context_;
};

static_assert(cospec::model_adapter<counting_adapter>);
static_assert(cospec::model_adapter<cospec::any_model>);
static_assert(cospec::model_adapter<cospec::model_ref<synthetic_model>>);

// Owning: only a non-const rvalue is taken, so an adapter is never copied behind the caller's back.
static_assert(std::is_constructible_v<cospec::any_model, synthetic_model&&>);
static_assert(std::is_constructible_v<cospec::any_model, synthetic_model>);
static_assert(!std::is_constructible_v<cospec::any_model, synthetic_model&>);
static_assert(!std::is_constructible_v<cospec::any_model, const synthetic_model&>);
static_assert(!std::is_constructible_v<cospec::any_model, const synthetic_model&&>);
// Explicit: an adapter does not turn into an any_model unasked.
static_assert(!std::is_convertible_v<synthetic_model, cospec::any_model>);

// Referring: cospec::ref takes an lvalue only (a reference to a temporary would dangle) and
// gives a model_ref; a model_ref is a pointer, so any value category of it is accepted.
template <class T>
concept can_refer_to = requires(T&& model) { cospec::ref(std::forward<T>(model)); };
static_assert(can_refer_to<synthetic_model&>);
static_assert(!can_refer_to<synthetic_model>);
static_assert(!can_refer_to<const synthetic_model&>);
using reference_to_synthetic_model = decltype(cospec::ref(std::declval<synthetic_model&>()));
static_assert(std::same_as<reference_to_synthetic_model, cospec::model_ref<synthetic_model>>);
static_assert(std::is_constructible_v<cospec::any_model, reference_to_synthetic_model>);
static_assert(std::is_constructible_v<cospec::any_model, cospec::model_ref<synthetic_model>&>);
static_assert(std::is_constructible_v<cospec::any_model, const cospec::model_ref<synthetic_model>&>);

// Movable, not copyable; moving never wraps one any_model in another.
static_assert(!std::is_copy_constructible_v<cospec::any_model>);
static_assert(!std::is_copy_assignable_v<cospec::any_model>);
static_assert(std::is_nothrow_move_constructible_v<cospec::any_model>);
static_assert(std::is_nothrow_move_assignable_v<cospec::any_model>);
static_assert(!std::is_constructible_v<cospec::any_model, const cospec::any_model&&>);

TEST_CASE("an any_model built with cospec::ref forwards every call to the adapter itself", "[adapters]") {
  synthetic_model x(synthetic_model_config{7, 2, 1, 2, 0.5, 2.0});
  cospec::any_model m(cospec::ref(x));  // a declaration of an object, not of a function

  std::vector<float> row(7), expected(7);
  const std::vector<std::span<float>> rows{row};
  m.feed(std::vector<token_id>{1, 2, 3}, rows);
  CHECK(x.context_length() == 3);
  CHECK(m.context_length() == 3);
  x.logits_for_context(expected);
  CHECK(row == expected);

  m.truncate(1);
  CHECK(x.context_length() == 1);
  x.feed(std::vector<token_id>{4}, {});  // and the other way: x's own calls show through m
  CHECK(m.context_length() == 2);
  CHECK(m.vocabulary_size() == 7);
  CHECK(m.context_limit() == std::numeric_limits<std::size_t>::max());

  // Moving the any_model moves the reference, not the adapter.
  cospec::any_model moved(std::move(m));
  moved.truncate(0);
  CHECK(x.context_length() == 0);
}

TEST_CASE("a model_ref lvalue may be passed to any_model and still refers to the one adapter", "[adapters]") {
  counting_adapter adapter(5);
  const cospec::model_ref<counting_adapter> reference(adapter);
  std::vector<cospec::any_model> models;
  models.emplace_back(reference);
  models.emplace_back(reference);
  models[0].feed(std::vector<token_id>{0, 1}, {});
  models[1].truncate(1);
  CHECK(adapter.feeds == 1);
  CHECK(adapter.truncations == 1);
  CHECK(adapter.context_length() == 1);
  CHECK(models[0].context_length() == 1);
  CHECK(models[1].context_limit() == 5);
}

TEST_CASE("an adapter moved into an any_model is owned: the moved-from object is not touched", "[adapters]") {
  counting_adapter original(9);
  original.feed(std::vector<token_id>{2, 2}, {});
  cospec::any_model m(std::move(original));
  CHECK(m.context_length() == 2);  // the state moved along with the adapter
  CHECK(m.context_limit() == 9);

  const int feeds_before = original.feeds;
  const int truncations_before = original.truncations;
  const std::size_t length_before = original.context_length();
  std::vector<float> row(3);
  const std::vector<std::span<float>> rows{row};
  m.feed(std::vector<token_id>{0, 1, 2}, rows);
  m.truncate(4);
  CHECK(m.context_length() == 4);
  CHECK(row == std::vector<float>(3, 5.0f));
  CHECK(original.feeds == feeds_before);
  CHECK(original.truncations == truncations_before);
  CHECK(original.context_length() == length_before);
}

TEST_CASE("a temporary adapter is owned by the any_model built from it", "[adapters]") {
  cospec::any_model m(synthetic_model(synthetic_model_config{5, 1, 3, 4, 0.5, 2.0}));
  std::vector<float> row(5), expected(5);
  const std::vector<std::span<float>> rows{row};
  m.feed(std::vector<token_id>{4, 0}, rows);
  synthetic_model same(synthetic_model_config{5, 1, 3, 4, 0.5, 2.0});
  same.feed(std::vector<token_id>{4, 0}, {});
  same.logits_for_context(expected);
  CHECK(m.context_length() == 2);
  CHECK(row == expected);
}

}  // namespace
