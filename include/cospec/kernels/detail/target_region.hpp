// Opening and closing a region of functions compiled for one instruction set, whatever flags
// the including unit uses (docs/kernels.md, "Run-time dispatch").
//
// GCC takes `#pragma GCC target`; clang ignores it and takes an attribute applied to every
// function declared in the region instead. Both add the named features to the unit's own, so
// intrinsics of those features can be used there and nowhere else. The feature lists are the
// x86-64-v3 and x86-64-v4 levels, so a unit compiled with -march=x86-64-v3 (or -v4) builds the
// same variant natively with the same features. Kernel bodies must not use lambdas, which
// clang's region attribute does not reach.
#pragma once

#define COSPEC_DETAIL_PRAGMA(text) _Pragma(#text)

#define COSPEC_FEATURES_X86_64_V3 "avx2,fma,bmi,bmi2,lzcnt,movbe,f16c,popcnt,sse4.2"
#define COSPEC_FEATURES_X86_64_V4 COSPEC_FEATURES_X86_64_V3 ",avx512f,avx512bw,avx512dq,avx512vl,avx512cd"

#if defined(__clang__)
#define COSPEC_TARGET_REGION_BEGIN(features) \
  COSPEC_DETAIL_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define COSPEC_TARGET_REGION_END COSPEC_DETAIL_PRAGMA(clang attribute pop)
#else
#define COSPEC_TARGET_REGION_BEGIN(features) \
  COSPEC_DETAIL_PRAGMA(GCC push_options) COSPEC_DETAIL_PRAGMA(GCC target(features))
#define COSPEC_TARGET_REGION_END COSPEC_DETAIL_PRAGMA(GCC pop_options)
#endif
