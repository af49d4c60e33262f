// A model's own proposal distribution: softmax of its logits at the sampling temperature.
#pragma once

#include "cospec/abi.hpp"

#include <cmath>    // std::isfinite
#include <cstddef>  // std::size_t
#include <span>     // std::span

#include "cospec/combine/logit_rows.hpp"
#include "cospec/kernels/transform.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// out = softmax(logits / temperature), normalised. Throws invalid_logits naming `model`
/// for a NaN, +inf or fully masked row. Precondition: temperature > 0.
inline void softmax_proposal(std::size_t model, std::span<const float> logits, float temperature,
                             std::span<float> out) {
  if (!kernels::softmax(logits, out, 1.0f / temperature).valid()) throw_invalid_row(model, logits);
}

}  // namespace cospec
