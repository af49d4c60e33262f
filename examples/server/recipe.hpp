// What cospec-server combines and how: the ensemble's combiner from --combine, a request's own
// parameters, and the method a request asks for (docs/server.md, "What cospec adds").
#pragma once

#include <cmath>      // std::isfinite
#include <cstddef>    // std::size_t
#include <optional>   // std::optional
#include <sstream>    // std::stringstream
#include <stdexcept>  // std::invalid_argument
#include <string>     // std::string
#include <utility>    // std::move
#include <variant>    // std::variant
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

#include "server/api_request.hpp"

namespace cospec::server {

/// The combination set at start: "we:0.5,0.5" (weighted ensemble), "cd:0.1" or "cd:0.1,0.1"
/// (contrastive decoding, mu and the optional plausibility alpha; model 0 the amateur, model 1
/// the expert: the server orders models from the cheapest, and the amateur is the small one),
/// "la:1,1,-1" (logit arithmetic).
struct combination_spec {
  enum class kind { weighted_ensemble, contrastive, logit_arithmetic } type = kind::weighted_ensemble;
  std::vector<float> values;

  /// Parses --combine; throws std::invalid_argument with what is wrong.
  static combination_spec parse(const std::string& text, std::size_t models) {
    combination_spec spec;
    const std::size_t colon = text.find(':');
    const std::string name = text.substr(0, colon);
    if (name == "we") spec.type = kind::weighted_ensemble;
    else if (name == "cd") spec.type = kind::contrastive;
    else if (name == "la") spec.type = kind::logit_arithmetic;
    else throw std::invalid_argument("--combine: unknown combination \"" + name + "\" (we, cd or la)");
    if (colon != std::string::npos) {
      std::stringstream values(text.substr(colon + 1));
      std::string item;
      while (std::getline(values, item, ',')) {
        try {
          spec.values.push_back(std::stof(item));
        } catch (const std::exception&) {
          throw std::invalid_argument("--combine: \"" + item + "\" is not a number");
        }
      }
    }
    if (spec.type == kind::contrastive && (models != 2 || spec.values.empty() || spec.values.size() > 2))
      throw std::invalid_argument("--combine cd:MU[,ALPHA] needs exactly two models (the amateur, then the expert)");
    if (spec.type != kind::contrastive && spec.values.empty()) spec.values.assign(models, 1.0f);
    if (spec.type != kind::contrastive && spec.values.size() != models)
      throw std::invalid_argument("--combine: " + std::to_string(spec.values.size()) + " weights for " +
                                  std::to_string(models) + " models");
    (void)spec.combiner(std::nullopt, std::nullopt, std::nullopt);  // invalid_configuration for bad values
    return spec;
  }

  /// The combiner, with a request's own weights, mu or alpha where given. Throws
  /// invalid_configuration for values that can never work.
  [[nodiscard]] any_combiner combiner(const std::optional<std::vector<float>>& weights, std::optional<float> mu,
                                      std::optional<float> alpha) const {
    switch (type) {
      case kind::weighted_ensemble: return weighted_ensemble(weights ? *weights : values);
      case kind::logit_arithmetic: return logit_arithmetic(weights ? *weights : values);
      case kind::contrastive: {
        // contrastive_decoding's own order is {expert, amateur}; the server's is the reverse.
        const float m = mu ? *mu : values[0];
        if (!std::isfinite(m) || m < 0.0f) throw invalid_configuration("mu must be finite and >= 0");
        std::optional<float> a = alpha;
        if (!a && values.size() > 1) a = values[1];
        std::optional<plausibility_constraint> constraint;
        if (a) constraint = plausibility_constraint{1, *a};
        return logit_arithmetic({-m, 1.0f}, constraint);
      }
    }
    throw invalid_configuration("unknown combination");
  }

  [[nodiscard]] std::string describe() const {
    std::string text = type == kind::weighted_ensemble ? "weighted ensemble" : type == kind::contrastive ? "contrastive decoding" : "logit arithmetic";
    text += " (";
    for (std::size_t i = 0; i < values.size(); ++i) text += (i > 0 ? ", " : "") + json(values[i]).dump();
    return text + ")";
  }
};

/// The methods a request may ask for (the "method" field; --method sets the default).
inline const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names{"auto", "standard", "sd", "cos", "adaptive", "mixture", "mixture+spec"};
  return names;
}

/// The policy of `method` for `models` models: model 0 is taken as the cheapest (the draft);
/// `costs` are relative per-pass costs, or empty to measure them from the passes.
inline std::variant<any_speculator, api_error> method_policy(const std::string& method, std::size_t models,
                                                              const std::vector<double>& costs) {
  adaptive_options adaptive_costs;
  if (costs.empty()) adaptive_costs.measure_pass_costs = true;
  else adaptive_costs.pass_costs = costs;
  if (method == "auto") {
    automatic_options options;
    options.pass_costs = costs;
    options.measure_pass_costs = costs.empty();
    return any_speculator(automatic(models, options));
  }
  if (method == "standard") return any_speculator(standard{});
  if (method == "sd") return any_speculator(fixed_proposer(0, 3));
  if (method == "cos") {
    std::vector<std::size_t> gammas(models, 1);
    gammas[0] = 2;
    return any_speculator(alternating(gammas));
  }
  if (method == "adaptive") return any_speculator(adaptive(models, adaptive_costs));
  if (method == "mixture") return any_speculator(mixture_sampling(models));
  if (method == "mixture+spec") {
    mixture_options options;
    options.max_gamma = 6;
    options.fallback = adaptive_costs;
    return any_speculator(mixture_sampling(models, options));
  }
  std::string known;
  for (const std::string& name : method_names()) known += (known.empty() ? "" : ", ") + name;
  return invalid("method", "unknown method \"" + method + "\" (" + known + ")", "unknown_method");
}

}  // namespace cospec::server
