// What bench_dispatch.cpp compares (docs/benchmarks.md, "Run-time dispatch"): the same three
// workloads (unit_body.hpp) compiled in a unit built without -march (dispatch/baseline_unit.cpp)
// and in a unit built with -march=native (bench_dispatch.cpp itself).
#pragma once

#include <cmath>    // std::sqrt, std::log, std::cos
#include <cstddef>  // std::size_t
#include <cstring>  // std::memcpy
#include <numbers>  // std::numbers::pi
#include <span>     // std::span
#include <vector>   // std::vector

#include <cospec/cospec.hpp>

namespace dispatch_bench {

/// Logit rows of two models that mostly agree, a proposal and proposed tokens (as in
/// bench_verify.cpp), built identically in both units from a fixed seed.
struct workload_data {
  std::size_t size;
  std::vector<std::vector<float>> logits;  // [model][token]
  std::vector<float> proposal;
  std::vector<cospec::token_id> proposed;
};

/// What each unit exports: a log-sum-exp over a row, one verified position (the target of a
/// two-model weighted ensemble and the verifier), and a CoS decode over replayed rows that
/// returns the decoder's own seconds per token (generation_statistics::seconds_in_cospec).
struct unit_functions {
  float (*log_sum_exp)(std::span<const float> row);
  bool (*verify_position)(const workload_data& data, std::size_t which);
  double (*decoder_seconds_per_token)(const workload_data& data, std::size_t tokens);
  int level;  // COSPEC_KERNELS_BASELINE of the unit
};

unit_functions baseline_unit();
unit_functions native_unit();

}  // namespace dispatch_bench
