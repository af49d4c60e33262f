// Choosing the variant of the row kernels at run time (docs/kernels.md, "Run-time dispatch").
#include <catch2/catch.hpp>

#include <cstdlib>  // setenv, unsetenv (POSIX)
#include <string>   // std::string

#include "cospec/errors.hpp"
#include "cospec/kernels.hpp"
#include "cospec/kernels/detail/variants.hpp"

namespace {

namespace kernels = cospec::kernels;
using kernels::instruction_set;

/// Restores the default selection whatever a test did.
struct selection_guard {
  ~selection_guard() {
    unsetenv("COSPEC_INSTRUCTION_SET");
    kernels::reset_instruction_set();
  }
};

}  // namespace

TEST_CASE("the detected variant is the widest the CPU supports and runs by default", "[kernels][dispatch]") {
  const selection_guard guard;
  unsetenv("COSPEC_INSTRUCTION_SET");
  kernels::reset_instruction_set();
  const instruction_set detected = kernels::detected_instruction_set();
  CHECK(kernels::detail::cpu_supports(detected));
  if (detected != instruction_set::avx512) CHECK_FALSE(kernels::detail::cpu_supports(instruction_set::avx512));
  if (detected == instruction_set::portable) CHECK_FALSE(kernels::detail::cpu_supports(instruction_set::avx2));
  CHECK(kernels::active_instruction_set() == detected);
  CHECK(kernels::detail::cpu_supports(instruction_set::portable));
}

TEST_CASE("force_instruction_set selects every supported variant and refuses the others", "[kernels][dispatch]") {
  const selection_guard guard;
  unsetenv("COSPEC_INSTRUCTION_SET");
  for (instruction_set set : {instruction_set::portable, instruction_set::avx2, instruction_set::avx512}) {
    INFO(std::string(kernels::to_string(set)));
    if (kernels::detail::cpu_supports(set)) {
      kernels::force_instruction_set(set);
      CHECK(kernels::active_instruction_set() == set);
    } else {
      CHECK_THROWS_AS(kernels::force_instruction_set(set), cospec::invalid_configuration);
    }
  }
  kernels::reset_instruction_set();
  CHECK(kernels::active_instruction_set() == kernels::detected_instruction_set());
}

TEST_CASE("COSPEC_INSTRUCTION_SET picks a supported variant and is ignored when unknown", "[kernels][dispatch]") {
  const selection_guard guard;
  setenv("COSPEC_INSTRUCTION_SET", "portable", 1);
  kernels::reset_instruction_set();  // the next kernel call reads the environment again
  CHECK(kernels::active_instruction_set() == instruction_set::portable);
  setenv("COSPEC_INSTRUCTION_SET", "avx1024", 1);
  kernels::reset_instruction_set();
  CHECK(kernels::active_instruction_set() == kernels::detected_instruction_set());
}

TEST_CASE("variant names round-trip", "[kernels][dispatch]") {
  for (instruction_set set : {instruction_set::portable, instruction_set::avx2, instruction_set::avx512}) {
    instruction_set parsed{};
    REQUIRE(kernels::detail::parse_instruction_set(kernels::to_string(set), parsed));
    CHECK(parsed == set);
  }
  instruction_set parsed{};
  CHECK_FALSE(kernels::detail::parse_instruction_set("AVX2", parsed));
  CHECK_FALSE(kernels::detail::parse_instruction_set("", parsed));
}
