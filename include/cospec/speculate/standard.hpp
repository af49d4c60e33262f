// Standard collaborative decoding: every model, every token. The reference for exactness and
// cost (docs/algorithm.md, "Collaborative decoding").
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>  // std::size_t

#include "cospec/errors.hpp"
#include "cospec/speculate/speculator.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Each model in turn computes its distribution at the frontier; when all have, the decoder
/// samples the target there directly. n forward passes per token, no proposals.
class standard {
 public:
  void check(std::size_t model_count) const {
    if (model_count == 0) throw invalid_configuration("standard: needs at least one model");
  }

  invocation next(const schedule_view& view) const noexcept {
    const std::size_t frontier = view.pending_count();
    for (std::size_t model = 0; model < view.model_count(); ++model)
      if (!view.scored(model, frontier)) return {model, 0};
    return {0, 0};  // unreachable: the decoder settles a frontier every model has scored
  }
};

}  // namespace cospec
