# Install rules and package config: find_package(cospec) then gives cospec::cospec,
# the same name as the add_subdirectory route.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(COSPEC_CONFIG_DIR "${CMAKE_INSTALL_DATADIR}/cmake/cospec")

install(TARGETS cospec EXPORT cospecTargets)
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/cospec"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(EXPORT cospecTargets NAMESPACE cospec:: DESTINATION "${COSPEC_CONFIG_DIR}")
export(EXPORT cospecTargets NAMESPACE cospec::
       FILE "${PROJECT_BINARY_DIR}/cospecTargets.cmake")

# The build tree is a usable package too (export above), so it needs the helper beside it.
configure_file("${PROJECT_SOURCE_DIR}/cmake/cospecFindXsimd.cmake"
               "${PROJECT_BINARY_DIR}/cospecFindXsimd.cmake" COPYONLY)
configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/cospecConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/cospecConfig.cmake"
  INSTALL_DESTINATION "${COSPEC_CONFIG_DIR}")
# Header-only: the version file must not pin the consumer's pointer size.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/cospecConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion
  ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/cospecConfig.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/cospecFindXsimd.cmake"
              "${PROJECT_BINARY_DIR}/cospecConfigVersion.cmake"
        DESTINATION "${COSPEC_CONFIG_DIR}")
