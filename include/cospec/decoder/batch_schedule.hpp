// How a batch decoder chooses the model of its next forward pass (docs/engine.md, "Serving
// many requests"): the step policy and its default.
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>     // std::size_t
#include <functional>  // std::function
#include <span>        // std::span

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// The requests whose next pass is on one model, as a step policy sees them.
struct waiting_pass_group {
  std::size_t requests = 0;      ///< requests waiting on this model
  std::size_t tokens = 0;        ///< tokens their passes would feed together
  std::size_t longest_wait = 0;  ///< steps the longest-waiting of them has waited
};

/// Chooses the model of the next pass from one group per model; must return a model whose
/// group has requests > 0 (anything else is a usage_error of the batch decoder).
using step_policy = std::function<std::size_t(std::span<const waiting_pass_group>)>;

/// The default step policy: the model most requests wait on (ties to the lower index), so
/// that each pass serves as many requests as it can; but once a request has waited `patience`
/// steps, the model of the longest wait, so that no request starves. Each request's passes are
/// the ones it would make alone whatever the order, so a pass serving r requests does the work
/// of r passes for one pass's fixed cost: on the cost clock the fullest pass saves the most.
struct fullest_pass {
  std::size_t patience = 8;

  [[nodiscard]] std::size_t operator()(std::span<const waiting_pass_group> groups) const noexcept {
    std::size_t fullest = groups.size();
    std::size_t starved = groups.size();
    for (std::size_t k = 0; k < groups.size(); ++k) {
      const waiting_pass_group& g = groups[k];
      if (g.requests == 0) continue;
      if (fullest == groups.size() || g.requests > groups[fullest].requests) fullest = k;
      if (g.longest_wait >= patience && (starved == groups.size() || g.longest_wait > groups[starved].longest_wait))
        starved = k;
    }
    return starved != groups.size() ? starved : fullest;
  }
};

}  // namespace cospec
