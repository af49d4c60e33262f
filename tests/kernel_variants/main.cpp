// The kernel tests at one forced instruction set (docs/kernels.md, "Run-time dispatch").
//
// ctest runs this binary once per variant with COSPEC_INSTRUCTION_SET set. A variant the CPU
// cannot run is skipped with exit code 77 (ctest's SKIP_RETURN_CODE) and a message, instead of
// silently testing another variant; otherwise the variant is forced before any test runs and
// checked to be the one that runs.

#include <cstdio>   // std::printf, std::fprintf
#include <cstdlib>  // std::getenv
#include <string>   // std::string

#include "catch_run.hpp"
#include "cospec/kernels/detail/variants.hpp"

int main(int argc, char* argv[]) {
  namespace kernels = cospec::kernels;
  const char* name = std::getenv("COSPEC_INSTRUCTION_SET");
  kernels::instruction_set wanted{};
  if (name == nullptr || !kernels::detail::parse_instruction_set(name, wanted)) {
    std::fprintf(stderr, "set COSPEC_INSTRUCTION_SET to portable, avx2 or avx512\n");
    return 2;
  }
  if (!kernels::detail::cpu_supports(wanted)) {
    std::printf("skipped: this CPU cannot run the %s kernels\n", name);
    return 77;
  }
  kernels::force_instruction_set(wanted);
  if (kernels::active_instruction_set() != wanted) return 3;
  std::printf("kernel tests on the %s variant (%zu lanes)\n", name, kernels::detail::active_lane_count());
  return cospec::testing::run_catch(argc, argv);
}
