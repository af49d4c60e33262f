# The three ways to consume cospec, each built as a tiny project by ctest:
#  - find_package(cospec) against a copy installed by `cmake --install`;
#  - add_subdirectory(cospec) from a parent project;
#  - a plain include path, no CMake package at all.
set(COSPEC_CONSUMER_SOURCE "${CMAKE_CURRENT_SOURCE_DIR}/consumers")
set(COSPEC_CONSUMER_BINARY "${CMAKE_CURRENT_BINARY_DIR}/consumers")
set(COSPEC_CONSUMER_PREFIX "${COSPEC_CONSUMER_BINARY}/prefix")
set(COSPEC_CONSUMER_OPTIONS
  "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}"
  "-DCMAKE_BUILD_TYPE=Release")

add_test(NAME consumer.install
  COMMAND "${CMAKE_COMMAND}" --install "${PROJECT_BINARY_DIR}" --prefix "${COSPEC_CONSUMER_PREFIX}")
set_tests_properties(consumer.install PROPERTIES FIXTURES_SETUP cospec_installed)

add_test(NAME consumer.find_package
  COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test
          "${COSPEC_CONSUMER_SOURCE}/find_package" "${COSPEC_CONSUMER_BINARY}/find_package"
          --build-generator "${CMAKE_GENERATOR}"
          --build-options ${COSPEC_CONSUMER_OPTIONS} "-DCMAKE_PREFIX_PATH=${COSPEC_CONSUMER_PREFIX}"
          --test-command consumer)
set_tests_properties(consumer.find_package PROPERTIES FIXTURES_REQUIRED cospec_installed)

add_test(NAME consumer.add_subdirectory
  COMMAND "${CMAKE_CTEST_COMMAND}" --build-and-test
          "${COSPEC_CONSUMER_SOURCE}/add_subdirectory" "${COSPEC_CONSUMER_BINARY}/add_subdirectory"
          --build-generator "${CMAKE_GENERATOR}"
          --build-options ${COSPEC_CONSUMER_OPTIONS} "-DCOSPEC_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
          --test-command consumer)

add_test(NAME consumer.include_path.build
  COMMAND "${CMAKE_CXX_COMPILER}" -std=c++20 -Wall -Wextra -Wpedantic -Werror
          "-I${PROJECT_SOURCE_DIR}/include" "${COSPEC_CONSUMER_SOURCE}/consumer.cpp"
          -o "${COSPEC_CONSUMER_BINARY}/include_path_consumer")
set_tests_properties(consumer.include_path.build PROPERTIES FIXTURES_SETUP cospec_include_path_built)
add_test(NAME consumer.include_path.run COMMAND "${COSPEC_CONSUMER_BINARY}/include_path_consumer")
set_tests_properties(consumer.include_path.run PROPERTIES FIXTURES_REQUIRED cospec_include_path_built)
