// Eigen/Core for the transformer example, with one false warning of GCC 12 silenced.
//
// Eigen's AVX-512 packet code calls intrinsics such as _mm512_max_ps, which GCC 12 implements
// with _mm512_undefined_ps() as a merge source and then reports as -Wmaybe-uninitialized once
// inlined (GCC bug 105593): every unit built with -march=native on an AVX-512 machine warned.
// The pragma covers Eigen's own definitions only; include this header before anything else
// that includes Eigen, or it has no effect (Eigen is read once per unit).
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
