// The main of the test binaries; Catch2 itself is in tests/catch_implementation.cpp.
#include "catch_run.hpp"

int main(int argc, char* argv[]) { return cospec::testing::run_catch(argc, argv); }
