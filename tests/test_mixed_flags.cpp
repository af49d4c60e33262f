// Two units compiled with different -march flags in one binary (docs/kernels.md, "Mixing units
// built with different flags"): this one with -march=native, tests/mixed_flags/baseline_unit.cpp
// with -march=x86-64. They link (no clash between the kernel variants each compiles), both run
// the variant the CPU selects, and give bit-identical kernel outputs and tokens.
#include <catch2/catch.hpp>

#include <cstdlib>  // unsetenv (POSIX)
#include <cstring>  // std::memcmp

#include "mixed_flags/compute_results.hpp"

cospec::testing::unit_results cospec::testing::native_unit_results() { return compute_unit_results(); }

TEST_CASE("units compiled with -march=x86-64 and -march=native give identical results", "[kernels][dispatch]") {
  using namespace cospec::testing;
  // The CPU's own choice, whatever COSPEC_INSTRUCTION_SET says: a variant below the native
  // unit's level would run in the baseline unit only.
  unsetenv("COSPEC_INSTRUCTION_SET");
  cospec::kernels::reset_instruction_set();
  const unit_results baseline = baseline_unit_results();
  const unit_results native = native_unit_results();
  CHECK(baseline.baseline == 0);
  // On an x86-64 CPU with AVX2 the native unit's baseline is higher, so the two really were
  // compiled differently; the portable variant is then compiled in the baseline unit only.
  if (cospec::kernels::detected_instruction_set() != cospec::kernels::instruction_set::portable)
    CHECK(native.baseline > 0);
  REQUIRE(baseline.floats.size() == native.floats.size());
  CHECK(std::memcmp(baseline.floats.data(), native.floats.data(), baseline.floats.size() * sizeof(float)) == 0);
  CHECK(baseline.indices == native.indices);
  CHECK(baseline.tokens == native.tokens);
  CHECK(baseline.tokens.size() == 96);
}

TEST_CASE("forcing the portable variant changes the baseline unit's results but not their validity",
          "[kernels][dispatch]") {
  // A check that the comparison above can fail: the baseline unit forced to another variant
  // computes different floats (another lane count, another exp), while the native unit, which
  // has no portable variant when its baseline is higher, keeps its own.
  using namespace cospec::testing;
  using cospec::kernels::instruction_set;
  if (cospec::kernels::detected_instruction_set() == instruction_set::portable) return;
  cospec::kernels::force_instruction_set(instruction_set::portable);
  const unit_results baseline = baseline_unit_results();
  cospec::kernels::reset_instruction_set();
  const unit_results native = native_unit_results();
  REQUIRE(baseline.floats.size() == native.floats.size());
  CHECK(std::memcmp(baseline.floats.data(), native.floats.data(), baseline.floats.size() * sizeof(float)) != 0);
  CHECK(baseline.tokens.size() == native.tokens.size());
}
