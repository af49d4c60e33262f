// Catch2's implementation, compiled once for every test binary (cospec-tests,
// cospec-server-tests, cospec-kernel-variant-tests, cospec-llama-cpp-tests): it is the dearest
// unit of the suite to compile. Each binary brings its own main (tests/main.cpp, or
// tests/kernel_variants/main.cpp, which forces an instruction set first) and calls run_catch.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "catch_run.hpp"

int cospec::testing::run_catch(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
