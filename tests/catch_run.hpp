// Runs Catch2's session: the one entry point of tests/catch_implementation.cpp, Catch2's
// implementation compiled once for every test binary (its Session is visible only there).
#pragma once

namespace cospec::testing {

/// Catch::Session().run(argc, argv).
int run_catch(int argc, char* argv[]);

}  // namespace cospec::testing
