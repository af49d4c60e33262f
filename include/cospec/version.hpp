// The library version; keep in step with project(VERSION) in CMakeLists.txt.
#pragma once

#include "cospec/abi.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {
inline constexpr int version_major = 0;
inline constexpr int version_minor = 1;
inline constexpr int version_patch = 0;
inline constexpr const char* version_string = "0.1.0";
}  // namespace cospec
