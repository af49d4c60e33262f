// tests/test_kernels.cpp once more, in a unit compiled without -march (CMake sets
// -march=x86-64 on this file), so that every variant of the kernels is compiled here and the
// forced one (kernel_variants/main.cpp) is the one tested.
#include "../test_kernels.cpp"
