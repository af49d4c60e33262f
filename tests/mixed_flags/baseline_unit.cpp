// The unit of the mixed-flags test compiled with -march=x86-64 (tests/CMakeLists.txt sets it on
// this file): it compiles every variant of the kernels, where the native unit compiles only
// those at or above its own baseline.
#include "mixed_flags/compute_results.hpp"

cospec::testing::unit_results cospec::testing::baseline_unit_results() { return compute_unit_results(); }
