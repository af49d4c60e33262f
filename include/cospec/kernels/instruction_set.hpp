// Which compiled variant of the row kernels runs: chosen once from the CPU, or forced.
//
// The row kernels are compiled several times inside the including translation unit, each time
// for one instruction set through the compiler's target attributes, whatever `-march` the unit
// itself uses (docs/kernels.md, "Run-time dispatch"). Every kernel call then runs the variant
// selected here: by default the widest one the CPU and the operating system support; the
// environment variable COSPEC_INSTRUCTION_SET (portable, avx2 or avx512), read at the first
// kernel call, or `force_instruction_set` overrides that for tests and benchmarks.
#pragma once

#include <atomic>       // std::atomic
#include <cstdlib>      // std::getenv
#include <string>       // std::string
#include <string_view>  // std::string_view

#include "cospec/abi.hpp"
#include "cospec/errors.hpp"

// COSPEC_KERNELS_BASELINE (abi.hpp) is the unit's own level. A variant below it is not
// compiled in the unit: GCC adds a function's target attribute to the unit's flags rather than
// replacing them, so an "AVX2" function in an AVX-512 unit could hold AVX-512 instructions.

// The selection is one object for the whole program (an inline variable outside the
// per-level namespace of abi.hpp), so forcing a level holds in units of every level.
namespace cospec::kernel_selection {
/// The variant kernel calls run, or -1 before the first call has chosen one.
inline std::atomic<int> selected_instruction_set{-1};
}  // namespace cospec::kernel_selection

namespace cospec::inline COSPEC_ABI_NAMESPACE::kernels {

/// The compiled variants of the row kernels, narrowest first.
enum class instruction_set : int {
  portable = 0,  ///< xsimd at the unit's own flags (SSE2 on a default x86-64 build; NEON on ARM)
  avx2 = 1,      ///< AVX2 + FMA (x86-64-v3), 8 lanes
  avx512 = 2,    ///< AVX-512 F/BW/DQ/VL (x86-64-v4), 16 lanes
};

/// "portable", "avx2" or "avx512".
[[nodiscard]] inline std::string_view to_string(instruction_set set) noexcept {
  switch (set) {
    case instruction_set::avx512: return "avx512";
    case instruction_set::avx2: return "avx2";
    case instruction_set::portable: break;
  }
  return "portable";
}

namespace detail {

[[nodiscard]] inline bool cpu_supports(instruction_set set) noexcept {
#if COSPEC_KERNELS_X86_VARIANTS
  // __builtin_cpu_supports also checks that the operating system saves the vector state
  // (XGETBV), so a CPU with AVX-512 under a kernel that disabled it reports false.
  __builtin_cpu_init();
  switch (set) {
    case instruction_set::avx512:
      if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")))
        return false;
      [[fallthrough]];
    case instruction_set::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
    case instruction_set::portable: return true;
  }
  return false;
#else
  return set == instruction_set::portable;
#endif
}

[[nodiscard]] inline bool parse_instruction_set(std::string_view name, instruction_set& set) noexcept {
  for (instruction_set candidate : {instruction_set::portable, instruction_set::avx2, instruction_set::avx512})
    if (name == to_string(candidate)) {
      set = candidate;
      return true;
    }
  return false;
}

}  // namespace detail

/// The widest variant this CPU supports.
[[nodiscard]] inline instruction_set detected_instruction_set() noexcept {
  if (detail::cpu_supports(instruction_set::avx512)) return instruction_set::avx512;
  if (detail::cpu_supports(instruction_set::avx2)) return instruction_set::avx2;
  return instruction_set::portable;
}

/// Makes every later kernel call run `set`. Throws `invalid_configuration` if the CPU cannot
/// run it. A unit compiled for a higher level than `set` runs its own level instead (the
/// narrower variants are not compiled there; see COSPEC_KERNELS_BASELINE above). Meant for
/// tests and benchmarks: not synchronised with kernel calls running on other threads, which
/// may finish on the previous variant.
inline void force_instruction_set(instruction_set set) {
  if (!detail::cpu_supports(set))
    throw invalid_configuration("cospec: this CPU cannot run the " + std::string(to_string(set)) + " kernels");
  kernel_selection::selected_instruction_set.store(static_cast<int>(set), std::memory_order_relaxed);
}

/// The variant kernel calls run now. The first call chooses it: COSPEC_INSTRUCTION_SET if it
/// names a variant the CPU supports (an unknown or unsupported name is ignored, since a kernel
/// call must not throw), else `detected_instruction_set()`.
[[nodiscard]] inline instruction_set active_instruction_set() noexcept {
  int selected = kernel_selection::selected_instruction_set.load(std::memory_order_relaxed);
  if (selected < 0) {
    instruction_set choice = detected_instruction_set();
    instruction_set requested{};
    if (const char* name = std::getenv("COSPEC_INSTRUCTION_SET");
        name != nullptr && detail::parse_instruction_set(name, requested) && detail::cpu_supports(requested))
      choice = requested;
    selected = static_cast<int>(choice);
    kernel_selection::selected_instruction_set.store(selected, std::memory_order_relaxed);
  }
  return static_cast<instruction_set>(selected);
}

/// Forgets a forced level: the next kernel call chooses again as on the first call.
inline void reset_instruction_set() noexcept {
  kernel_selection::selected_instruction_set.store(-1, std::memory_order_relaxed);
}

}  // namespace cospec::kernels
