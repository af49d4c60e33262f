// bench_dispatch.cpp's workloads in a unit built without -march (bench/CMakeLists.txt sets
// -march=x86-64 on this file): what a user who ships one binary for many machines compiles.
#define DISPATCH_BENCH_UNIT baseline_unit
#define DISPATCH_BENCH_NAMESPACE baseline_code
#include "unit_body.hpp"
