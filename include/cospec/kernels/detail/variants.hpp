// Every compiled variant of the row kernels, and the dispatcher that runs the selected one
// (docs/kernels.md, "Run-time dispatch").
//
// kernel_bodies.hpp is included once per variant, inside the variant's namespace and target
// region, after its lane operations. Which variants a unit compiles depends on its baseline
// (instruction_set.hpp): every variant at or above it, so that each variant is compiled for
// the same features in every unit that has it.
#pragma once

#include "cospec/abi.hpp"

#include <cmath>    // std::exp, std::log, std::isfinite, std::isnan
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint32_t
#include <limits>   // std::numeric_limits
#include <span>     // std::span

#include "cospec/kernels/instruction_set.hpp"
#include "cospec/kernels/row_results.hpp"
#include "cospec/kernels/detail/target_region.hpp"

#if COSPEC_KERNELS_X86_VARIANTS
#include <immintrin.h>
#endif

#if COSPEC_KERNELS_BASELINE == 0
#include "cospec/kernels/detail/lanes_portable.hpp"
namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels::detail::portable {
#include "cospec/kernels/detail/kernel_bodies.hpp"
}  // namespace cospec::kernels::detail::portable
#endif

#if COSPEC_KERNELS_X86_VARIANTS && COSPEC_KERNELS_BASELINE <= 1
COSPEC_TARGET_REGION_BEGIN(COSPEC_FEATURES_X86_64_V3)
#include "cospec/kernels/detail/lanes_avx2.hpp"
namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels::detail::avx2 {
#include "cospec/kernels/detail/kernel_bodies.hpp"
}  // namespace cospec::kernels::detail::avx2
COSPEC_TARGET_REGION_END
#endif

#if COSPEC_KERNELS_X86_VARIANTS
COSPEC_TARGET_REGION_BEGIN(COSPEC_FEATURES_X86_64_V4)
#include "cospec/kernels/detail/lanes_avx512.hpp"
namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels::detail::avx512 {
#include "cospec/kernels/detail/kernel_bodies.hpp"
}  // namespace cospec::kernels::detail::avx512
COSPEC_TARGET_REGION_END
#endif

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels::detail {

/// Calls `kernel(tag)` with the tag of the selected variant, or of the nearest variant this
/// unit has (a variant below the unit's baseline is not compiled here). `kernel` is a generic
/// lambda that names the kernel unqualified, so that the tag finds it by argument-dependent
/// lookup. Costs one relaxed atomic load and a call that is not inlined.
template <class Kernel>
decltype(auto) dispatch(Kernel&& kernel) {
  [[maybe_unused]] const instruction_set set = active_instruction_set();
#if COSPEC_KERNELS_X86_VARIANTS
  if (set == instruction_set::avx512) return kernel(avx512::isa{});
#endif
#if COSPEC_KERNELS_BASELINE == 0
#if COSPEC_KERNELS_X86_VARIANTS
  if (set == instruction_set::avx2) return kernel(avx2::isa{});
#endif
  return kernel(portable::isa{});
#elif COSPEC_KERNELS_BASELINE == 1
  return kernel(avx2::isa{});
#else
  return kernel(avx512::isa{});
#endif
}

/// The number of floats in one vector of the variant kernel calls run now (16, 8, or the
/// portable batch's width); tests derive tail positions and rounding bounds from it.
inline std::size_t active_lane_count() noexcept {
  return dispatch([](auto isa) { return lane_count(isa); });
}

}  // namespace cospec::kernels::detail
