# Finds xsimd 8.1 and gives it what Debian 12's package config lacks.
# Debian's xsimdTargets.cmake lists a link dependency on a target "xtl" but never defines it,
# so anything linking xsimd fails with "cannot find -lxtl". xsimd only needs xtl for optional
# xtl::xcomplex support, which cospec does not use: where no xtl package provides the target,
# an empty interface target stands in for it.
find_package(xsimd 8.1 REQUIRED)
if(NOT TARGET xtl)
  find_package(xtl QUIET)
  if(NOT TARGET xtl)
    add_library(xtl INTERFACE IMPORTED)
  endif()
endif()
