// A type-erased combiner: one session, decoder or batch decoder type for requests that combine
// their models differently (docs/combiners.md, "Many recipes in one scheduler").
#pragma once

#include "cospec/abi.hpp"

#include <concepts>     // std::same_as
#include <cstddef>      // std::size_t
#include <memory>       // std::unique_ptr, std::make_unique
#include <optional>     // std::optional
#include <span>         // std::span
#include <type_traits>  // std::remove_cvref_t
#include <utility>      // std::move

#include "cospec/combine/combiner.hpp"
#include "cospec/combine/logit_rows.hpp"
#include "cospec/errors.hpp"
#include "cospec/token.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Holds any combiner (a copy of it) behind one type, and forwards every call to it, optional
/// requirements included: target_probability, greedy_token and mixture_weights answer
/// nullopt or empty where the held combiner lacks them (the caller then takes the general
/// path), and capabilities() says at run time whether its target is softmax of target logits
/// and whether it evaluates at one token. So a batch decoder of any_combiner serves
/// weighted-ensemble, contrastive and logit-arithmetic requests side by side, each with its own
/// parameters (batch_decoder::submit with a combiner), and each gets exactly what the held
/// combiner alone would give it. One virtual call per combiner call, a few per token; the
/// statically typed path keeps none of it.
class any_combiner {
 public:
  /// Holds a copy of `combiner`. Requires a copyable combiner (requests copy it).
  template <class C>
    requires(!std::same_as<std::remove_cvref_t<C>, any_combiner> && combiner<std::remove_cvref_t<C>> &&
             std::copy_constructible<std::remove_cvref_t<C>>)
  any_combiner(C combiner)  // NOLINT(google-explicit-constructor): a recipe converts where a combiner is asked for
      : held_(std::make_unique<holder<std::remove_cvref_t<C>>>(std::move(combiner))) {}

  any_combiner(const any_combiner& other) : held_(other.held_->clone()) {}
  any_combiner& operator=(const any_combiner& other) {
    if (this != &other) held_ = other.held_->clone();
    return *this;
  }
  any_combiner(any_combiner&&) noexcept = default;
  any_combiner& operator=(any_combiner&&) noexcept = default;

  [[nodiscard]] std::size_t model_count() const { return held_->model_count(); }
  float target_weights(logit_rows logits, float temperature, std::span<float> out) {
    return held_->target_weights(logits, temperature, out);
  }
  score_domain greedy_scores(logit_rows logits, std::span<float> out) { return held_->greedy_scores(logits, out); }
  void proposal_distribution(std::size_t model, std::span<const float> logits, float temperature,
                             std::span<float> out) const {
    held_->proposal_distribution(model, logits, temperature, out);
  }

  /// Forwarded where the held combiner has target logits (capabilities().target_logits), a
  /// usage_error otherwise (the target evaluator asks only where it has).
  void target_logits(logit_rows logits, std::span<float> out) { held_->target_logits(logits, out); }
  std::optional<double> target_probability(logit_rows logits, float temperature, token_id x,
                                           std::span<const double> known) {
    return held_->target_probability(logits, temperature, x, known);
  }
  std::optional<token_id> greedy_token(logit_rows logits, std::span<const float> known_maxima = {}) {
    return held_->greedy_token(logits, known_maxima);
  }
  [[nodiscard]] std::span<const float> mixture_weights() const { return held_->mixture_weights(); }
  [[nodiscard]] combiner_capabilities capabilities() const noexcept { return held_->capabilities(); }

  /// The held combiner, if it is a C (nullptr otherwise).
  template <class C>
  [[nodiscard]] const C* target() const noexcept {
    const auto* typed = dynamic_cast<const holder<C>*>(held_.get());
    return typed == nullptr ? nullptr : &typed->combiner;
  }

 private:
  struct base {
    virtual ~base() = default;
    [[nodiscard]] virtual std::unique_ptr<base> clone() const = 0;
    [[nodiscard]] virtual std::size_t model_count() const = 0;
    virtual float target_weights(logit_rows, float, std::span<float>) = 0;
    virtual score_domain greedy_scores(logit_rows, std::span<float>) = 0;
    virtual void proposal_distribution(std::size_t, std::span<const float>, float, std::span<float>) const = 0;
    virtual void target_logits(logit_rows, std::span<float>) = 0;
    virtual std::optional<double> target_probability(logit_rows, float, token_id, std::span<const double>) = 0;
    virtual std::optional<token_id> greedy_token(logit_rows, std::span<const float>) = 0;
    [[nodiscard]] virtual std::span<const float> mixture_weights() const = 0;
    [[nodiscard]] virtual combiner_capabilities capabilities() const noexcept = 0;
  };

  template <class C>
  struct holder final : base {
    explicit holder(C c) : combiner(std::move(c)) {}
    [[nodiscard]] std::unique_ptr<base> clone() const override { return std::make_unique<holder>(combiner); }
    [[nodiscard]] std::size_t model_count() const override { return combiner.model_count(); }
    float target_weights(logit_rows logits, float temperature, std::span<float> out) override {
      return combiner.target_weights(logits, temperature, out);
    }
    score_domain greedy_scores(logit_rows logits, std::span<float> out) override {
      return combiner.greedy_scores(logits, out);
    }
    void proposal_distribution(std::size_t model, std::span<const float> logits, float temperature,
                               std::span<float> out) const override {
      combiner.proposal_distribution(model, logits, temperature, out);
    }
    void target_logits(logit_rows logits, std::span<float> out) override {
      if constexpr (combiner_with_target_logits<C>) combiner.target_logits(logits, out);
      else throw usage_error("any_combiner: target_logits() of a combiner that has none");
    }
    std::optional<double> target_probability(logit_rows logits, float temperature, token_id x,
                                             std::span<const double> known) override {
      if constexpr (combiner_with_point_target<C>) return combiner.target_probability(logits, temperature, x, known);
      else return std::nullopt;
    }
    std::optional<token_id> greedy_token(logit_rows logits, std::span<const float> known_maxima) override {
      if constexpr (combiner_with_greedy_token<C>) return combiner.greedy_token(logits, known_maxima);
      else return std::nullopt;
    }
    [[nodiscard]] std::span<const float> mixture_weights() const override {
      if constexpr (combiner_with_mixture_weights<C>) return combiner.mixture_weights();
      else return {};
    }
    [[nodiscard]] combiner_capabilities capabilities() const noexcept override {
      return {has_target_logits(combiner), has_point_target(combiner)};
    }
    C combiner;
  };

  std::unique_ptr<base> held_;
};

}  // namespace cospec
