// Type erasure for model adapters: a runtime list of heterogeneous backends in one decoder.
// An any_model owns an adapter it was given as an rvalue, or refers to one owned elsewhere
// through cospec::ref (docs/adapters.md, "Many adapter types in one decoder").
#pragma once

#include "cospec/abi.hpp"

#include <concepts>     // std::same_as
#include <cstddef>      // std::size_t
#include <limits>       // std::numeric_limits
#include <memory>       // std::unique_ptr, std::make_unique
#include <span>         // std::span
#include <type_traits>  // std::remove_cvref_t, std::is_lvalue_reference_v, std::is_const_v, std::remove_reference_t
#include <utility>      // std::forward

#include "cospec/adapters/model_adapter.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Forwards every call to an adapter owned elsewhere; lets any_model refer instead of own.
/// Holds only a pointer: copies refer to the same adapter, which must outlive them all.
template <model_adapter Model>
class model_ref {
 public:
  explicit model_ref(Model& model) noexcept : model_(&model) {}
  [[nodiscard]] std::size_t vocabulary_size() const { return model_->vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const { return model_->context_length(); }
  void feed(std::span<const token_id> tokens, logit_outputs rows) { model_->feed(tokens, rows); }
  void truncate(std::size_t length) { model_->truncate(length); }
  [[nodiscard]] std::size_t context_limit() const {
    if constexpr (adapter_with_context_limit<Model>) return model_->context_limit();
    else return std::numeric_limits<std::size_t>::max();
  }

 private:
  Model* model_;
};

/// A model_ref to `model`, for `cospec::any_model m(cospec::ref(model));`, which refers to
/// `model` instead of owning a copy. `model` must outlive every any_model built from it.
/// Only lvalues bind: a reference to a temporary would dangle (move the temporary in instead).
template <model_adapter Model>
[[nodiscard]] model_ref<Model> ref(Model& model) noexcept {
  return model_ref<Model>(model);
}

class any_model;

namespace detail {
template <class T>
inline constexpr bool is_model_ref = false;
template <class Model>
inline constexpr bool is_model_ref<model_ref<Model>> = true;

/// What any_model's constructor takes: a model_ref of any value category (copying one copies
/// a pointer, no adapter), or any other adapter as a non-const rvalue, moved in and owned.
/// An adapter lvalue is refused: taking it by value would silently copy it, and a copied
/// engine adapter is a second KV cache (or a second handle on the same one) that the caller's
/// object never sees, so the caller must say which they mean, std::move or cospec::ref. A
/// const rvalue is refused for the same reason: it cannot be moved from, only copied. An
/// any_model is moved by its move constructor, never wrapped in a second indirection.
template <class Argument>
concept any_model_argument =
    !std::same_as<std::remove_cvref_t<Argument>, any_model> && model_adapter<std::remove_cvref_t<Argument>> &&
    (is_model_ref<std::remove_cvref_t<Argument>> ||
     (!std::is_lvalue_reference_v<Argument> && !std::is_const_v<std::remove_reference_t<Argument>>));
}  // namespace detail

/// A model adapter of any type, behind one virtual call per adapter call (nothing next to a
/// forward pass). Built from an adapter moved in or a temporary, it owns that adapter; built
/// from cospec::ref(adapter), it refers to an adapter owned elsewhere. Movable, not copyable;
/// a moved-from any_model may only be assigned to or destroyed.
class any_model {
 public:
  /// Owns `model` (`std::move(adapter)` or a temporary), or refers through a model_ref.
  /// `any_model m(adapter)` with an adapter lvalue does not compile (detail::any_model_argument
  /// says why): write `any_model m(std::move(adapter))` or `any_model m(cospec::ref(adapter))`.
  template <detail::any_model_argument Model>
  explicit any_model(Model&& model)
      : self_(std::make_unique<holder<std::remove_cvref_t<Model>>>(std::forward<Model>(model))) {}

  any_model(any_model&&) noexcept = default;
  any_model& operator=(any_model&&) noexcept = default;
  // Copying would copy the owned adapter, which is what the constructor above refuses to do.
  any_model(const any_model&) = delete;
  any_model& operator=(const any_model&) = delete;
  ~any_model() = default;

  [[nodiscard]] std::size_t vocabulary_size() const { return self_->vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const { return self_->context_length(); }
  void feed(std::span<const token_id> tokens, logit_outputs rows) { self_->feed(tokens, rows); }
  void truncate(std::size_t length) { self_->truncate(length); }
  /// The wrapped adapter's context_limit(), or the largest size_t if it has none.
  [[nodiscard]] std::size_t context_limit() const { return self_->context_limit(); }

 private:
  struct interface {
    virtual ~interface() = default;
    virtual std::size_t vocabulary_size() const = 0;
    virtual std::size_t context_length() const = 0;
    virtual void feed(std::span<const token_id> tokens, logit_outputs rows) = 0;
    virtual void truncate(std::size_t length) = 0;
    virtual std::size_t context_limit() const = 0;
  };
  template <class Model>
  struct holder final : interface {
    template <class Argument>
    explicit holder(Argument&& argument) : model(std::forward<Argument>(argument)) {}
    std::size_t vocabulary_size() const override { return model.vocabulary_size(); }
    std::size_t context_length() const override { return model.context_length(); }
    void feed(std::span<const token_id> tokens, logit_outputs rows) override { model.feed(tokens, rows); }
    void truncate(std::size_t length) override { model.truncate(length); }
    std::size_t context_limit() const override {
      if constexpr (adapter_with_context_limit<Model>) return model.context_limit();
      else return std::numeric_limits<std::size_t>::max();
    }
    Model model;
  };
  std::unique_ptr<interface> self_;
};

}  // namespace cospec
