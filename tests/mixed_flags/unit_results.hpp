// What each of two units compiled with different -march flags computes, so that one test can
// compare them (tests/test_mixed_flags.cpp; docs/kernels.md, "Mixing units built with
// different flags").
#pragma once

#include <cstddef>  // std::size_t
#include <vector>   // std::vector

#include "cospec/token.hpp"

namespace cospec::testing {

struct unit_results {
  int baseline = -1;                  // COSPEC_KERNELS_BASELINE of the unit
  std::vector<float> floats;          // every kernel's outputs on fixed rows, in a fixed order
  std::vector<std::size_t> indices;   // argmax and inverse-CDF draws
  std::vector<token_id> tokens;       // a sampled CoS decode and a greedy one
};

/// Computed by tests/mixed_flags/baseline_unit.cpp, compiled with -march=x86-64.
unit_results baseline_unit_results();
/// Computed by tests/test_mixed_flags.cpp, compiled with -march=native.
unit_results native_unit_results();

}  // namespace cospec::testing
