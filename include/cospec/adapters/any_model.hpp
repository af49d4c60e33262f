// Type erasure for model adapters: a runtime list of heterogeneous backends in one decoder.
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>      // std::size_t
#include <limits>       // std::numeric_limits
#include <memory>       // std::unique_ptr, std::make_unique
#include <span>         // std::span
#include <type_traits>  // std::remove_cvref_t
#include <utility>      // std::move

#include "cospec/adapters/model_adapter.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Forwards every call to an adapter owned elsewhere; lets any_model refer instead of own.
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

/// A model adapter of any type, owned by value (move in an adapter, or a model_ref to refer
/// to one). One virtual call per adapter call: nothing next to a forward pass.
class any_model {
 public:
  template <model_adapter Model>
  explicit any_model(Model model) : self_(std::make_unique<holder<Model>>(std::move(model))) {}

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
    explicit holder(Model m) : model(std::move(m)) {}
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
