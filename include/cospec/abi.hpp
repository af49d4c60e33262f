// The instruction-set level of the including unit, and the inline namespace named after it
// (docs/kernels.md, "Mixing units built with different flags").
//
// Every declaration of cospec lives in cospec::COSPEC_ABI_NAMESPACE, an inline namespace, so
// user code writes cospec::decoder as before. The name depends on the level the unit is
// compiled for (x86-64, x86-64-v3 or x86-64-v4, read from the compiler's predefined macros),
// so units built with different -march flags hold different functions, never one inline
// function compiled twice for different features and merged by the linker (which could run
// AVX-512 code on an AVX2 machine). Passing a cospec object between such units is then a link
// error instead of a silent violation of the one-definition rule.
#pragma once

// Run-time dispatch of the row kernels relies on target attributes, which GCC and clang offer
// on x86; elsewhere (and for other compilers) only the portable variant exists.
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define COSPEC_KERNELS_X86_VARIANTS 1
#else
#define COSPEC_KERNELS_X86_VARIANTS 0
#endif

// The unit's own baseline: 2 when the unit is compiled for AVX-512 (F, BW, DQ, VL), 1 for
// AVX2 with FMA, 0 otherwise. The kernels compile every variant at or above it
// (kernels/instruction_set.hpp).
#if COSPEC_KERNELS_X86_VARIANTS && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__) && defined(__AVX2__) && defined(__FMA__)
#define COSPEC_KERNELS_BASELINE 2
#define COSPEC_ABI_NAMESPACE level_x86_64_v4
#elif COSPEC_KERNELS_X86_VARIANTS && defined(__AVX2__) && defined(__FMA__)
#define COSPEC_KERNELS_BASELINE 1
#define COSPEC_ABI_NAMESPACE level_x86_64_v3
#else
#define COSPEC_KERNELS_BASELINE 0
#define COSPEC_ABI_NAMESPACE level_baseline
#endif
