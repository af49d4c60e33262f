// libFuzzer target for the combiners and the verifier (docs/reliability.md, "Fuzzing"). Each
// input is decoded into a case by tests/fuzz/verify_case.hpp and run. The library may reject
// an input with a cospec::error; anything else that escapes (an invariant_violation, any other
// exception), a crash, a hang or a sanitizer report is a finding. Every finding becomes a
// regression test in tests/test_fuzz_regressions.cpp.
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint8_t
#include <span>     // std::span

#include <cospec/errors.hpp>

#include "fuzz/verify_case.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    cospec::fuzzing::run_verify_case(std::span<const std::uint8_t>(data, size));
  } catch (const cospec::error&) {
    // Rejected as documented.
  }
  return 0;
}
