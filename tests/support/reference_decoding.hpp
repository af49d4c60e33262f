// Standard collaborative decoding computed independently of cospec, in double precision:
// the oracle of the engine's exactness tests (docs/algorithm.md, "Exactness").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <utility>
#include <vector>

#include <cospec/token.hpp>

#include "models/synthetic_model.hpp"

namespace cospec::testing {

/// How the reference combines the models: a weighted ensemble of softmaxes, or logit
/// arithmetic with an optional plausibility constraint on model 0.
struct reference_combination {
  enum class kind { weighted_ensemble, logit_arithmetic } type = kind::weighted_ensemble;
  std::vector<double> weights;
  std::optional<double> plausibility_alpha;  // on model 0, logit arithmetic only
};

struct reference_sampling {
  double temperature = 1.0;
  std::optional<std::size_t> top_k;
  std::optional<double> top_p;
  /// Added to the target's log-probabilities (a factor exp(bias); -inf bans), before the
  /// truncation filters, as sampling_settings::logit_bias is.
  std::vector<std::pair<token_id, double>> bias = {};
};

inline std::vector<double> softmax(const std::vector<double>& logits, double temperature) {
  double max = -std::numeric_limits<double>::infinity();
  for (double x : logits) max = std::max(max, x / temperature);
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (std::size_t j = 0; j < p.size(); ++j) sum += p[j] = std::exp(logits[j] / temperature - max);
  for (double& x : p) x /= sum;
  return p;
}

/// The logits of a synthetic model after `context`, from a fresh copy of it.
inline std::vector<double> model_logits(const examples::synthetic_model_config& config,
                                        const std::vector<token_id>& context) {
  examples::synthetic_model model(config);
  model.feed(context, {});
  std::vector<float> row(config.vocabulary_size);
  model.logits_for_context(row);
  return {row.begin(), row.end()};
}

/// Keeps the top-k, then the top-p nucleus (descending probability, ties by lower index),
/// renormalised.
inline void truncate(std::vector<double>& p, const reference_sampling& sampling) {
  std::vector<std::size_t> order(p.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return p[a] > p[b]; });
  if (sampling.top_k)
    for (std::size_t rank = *sampling.top_k; rank < order.size(); ++rank) p[order[rank]] = 0.0;
  if (sampling.top_p) {
    const double total = std::accumulate(p.begin(), p.end(), 0.0);
    double cumulative = 0.0;
    bool reached = false;
    for (std::size_t index : order) {
      if (reached) p[index] = 0.0;
      cumulative += p[index];
      if (cumulative >= *sampling.top_p * total) reached = true;
    }
  }
  const double total = std::accumulate(p.begin(), p.end(), 0.0);
  for (double& x : p) x /= total;
}

/// The target distribution at the position after `context`.
inline std::vector<double> reference_target(const std::vector<examples::synthetic_model_config>& models,
                                            const reference_combination& combination,
                                            const reference_sampling& sampling, const std::vector<token_id>& context) {
  const std::size_t vocabulary = models[0].vocabulary_size;
  std::vector<double> target(vocabulary, 0.0);
  if (combination.type == reference_combination::kind::weighted_ensemble) {
    const double total = std::accumulate(combination.weights.begin(), combination.weights.end(), 0.0);
    for (std::size_t i = 0; i < models.size(); ++i) {
      const auto p = softmax(model_logits(models[i], context), sampling.temperature);
      for (std::size_t j = 0; j < vocabulary; ++j) target[j] += combination.weights[i] / total * p[j];
    }
  } else {
    std::vector<double> combined(vocabulary, 0.0);
    std::vector<std::vector<double>> logits;
    for (std::size_t i = 0; i < models.size(); ++i) {
      logits.push_back(model_logits(models[i], context));
      for (std::size_t j = 0; j < vocabulary; ++j) combined[j] += combination.weights[i] * logits[i][j];
    }
    if (combination.plausibility_alpha) {
      const double max = *std::max_element(logits[0].begin(), logits[0].end());
      for (std::size_t j = 0; j < vocabulary; ++j)
        if (logits[0][j] < max + std::log(*combination.plausibility_alpha))
          combined[j] = -std::numeric_limits<double>::infinity();
    }
    target = softmax(combined, sampling.temperature);
  }
  if (!sampling.bias.empty()) {
    for (const auto& [token, bias] : sampling.bias) target[static_cast<std::size_t>(token)] *= std::exp(bias);
    const double total = std::accumulate(target.begin(), target.end(), 0.0);
    for (double& x : target) x /= total;
  }
  truncate(target, sampling);
  return target;
}

/// Probability of every continuation of `prompt` of exactly `length` tokens under standard
/// collaborative decoding, keyed by the continuation; with a `stop` token, continuations end
/// early at it (as generation_limits::stop_tokens makes them).
inline std::map<std::vector<token_id>, double> sequence_probabilities(
    const std::vector<examples::synthetic_model_config>& models, const reference_combination& combination,
    const reference_sampling& sampling, const std::vector<token_id>& prompt, std::size_t length,
    std::optional<token_id> stop = std::nullopt) {
  std::map<std::vector<token_id>, double> result;
  std::function<void(std::vector<token_id>&, double)> walk = [&](std::vector<token_id>& continuation, double p) {
    if (continuation.size() == length || (stop && !continuation.empty() && continuation.back() == *stop)) {
      result[continuation] = p;
      return;
    }
    std::vector<token_id> context = prompt;
    context.insert(context.end(), continuation.begin(), continuation.end());
    const auto target = reference_target(models, combination, sampling, context);
    for (std::size_t t = 0; t < target.size(); ++t) {
      if (target[t] == 0.0) continue;
      continuation.push_back(static_cast<token_id>(t));
      walk(continuation, p * target[t]);
      continuation.pop_back();
    }
  };
  std::vector<token_id> continuation;
  walk(continuation, 1.0);
  return result;
}

/// Pearson's chi-square statistic of observed counts against expected probabilities, with
/// cells of expected count below 5 pooled into one, and its degrees of freedom.
struct chi_square_result {
  double statistic = 0.0;
  std::size_t degrees_of_freedom = 0;
  std::size_t unexpected = 0;  // observations of zero-probability outcomes
};

inline chi_square_result chi_square(const std::map<std::vector<token_id>, double>& expected,
                                    const std::map<std::vector<token_id>, std::size_t>& observed, std::size_t trials) {
  chi_square_result result;
  double pooled_expected = 0.0;
  double pooled_observed = 0.0;
  std::size_t cells = 0;
  for (const auto& [sequence, probability] : expected) {
    const auto found = observed.find(sequence);
    const double count = found == observed.end() ? 0.0 : static_cast<double>(found->second);
    const double e = probability * static_cast<double>(trials);
    if (e < 5.0) {
      pooled_expected += e;
      pooled_observed += count;
      continue;
    }
    result.statistic += (count - e) * (count - e) / e;
    ++cells;
  }
  if (pooled_expected > 0.0) {
    result.statistic += (pooled_observed - pooled_expected) * (pooled_observed - pooled_expected) / pooled_expected;
    ++cells;
  }
  for (const auto& [sequence, count] : observed)
    if (!expected.contains(sequence)) result.unexpected += count;
  result.degrees_of_freedom = cells > 0 ? cells - 1 : 0;
  return result;
}

/// Upper quantile of the chi-square distribution by the Wilson-Hilferty approximation, for a
/// standard-normal quantile z (z = 4.753 for significance 1e-6). Accurate to about 1% of the
/// value for the degrees of freedom used here (tens to hundreds).
inline double chi_square_critical(std::size_t degrees_of_freedom, double z) {
  const double k = static_cast<double>(degrees_of_freedom);
  const double a = 2.0 / (9.0 * k);
  return k * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}

}  // namespace cospec::testing
