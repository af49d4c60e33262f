# llama.cpp is optional (docs/adapters.md, "llama.cpp"; README, "llama.cpp"): it is not a Debian
# 12 package, so cospec finds one that is already there and never fetches it. Either an
# installed llama.cpp (find_package(llama): give -DCMAKE_PREFIX_PATH=<its prefix>) or a
# source tree with a build in <root>/build (-DCOSPEC_LLAMA_CPP_ROOT=<root>). Defines
# cospec::llama_cpp (cospec plus llama.cpp) and COSPEC_HAVE_LLAMA_CPP, COSPEC_LLAMA_CPP_TOOLS,
# the folder of llama.cpp's programs (for the tests' GGUF conversion), and
# COSPEC_LLAMA_CPP_LIBRARY_DIR, where its shared libraries are (for the run path of the
# programs built against it), when found.
option(COSPEC_LLAMA_CPP "Build the llama.cpp backend's tests and demo when llama.cpp is found" ${COSPEC_IS_TOP_LEVEL})
set(COSPEC_LLAMA_CPP_ROOT "" CACHE PATH "A llama.cpp source tree built in <root>/build (instead of an installed llama.cpp)")
set(COSPEC_HAVE_LLAMA_CPP OFF)
set(COSPEC_LLAMA_CPP_TOOLS "")
set(COSPEC_LLAMA_CPP_LIBRARY_DIR "")

if(COSPEC_LLAMA_CPP)
  if(COSPEC_LLAMA_CPP_ROOT)
    # find_library keeps what it found in the cache and never looks again; a build folder
    # configured again with another root would link the old tree's library against the new
    # tree's llama.h. So the library found belongs to the root it was found for.
    if(DEFINED COSPEC_LLAMA_LIBRARY_ROOT AND NOT COSPEC_LLAMA_CPP_ROOT STREQUAL "${COSPEC_LLAMA_LIBRARY_ROOT}")
      unset(COSPEC_LLAMA_LIBRARY CACHE)
    endif()
    find_library(COSPEC_LLAMA_LIBRARY llama PATHS "${COSPEC_LLAMA_CPP_ROOT}/build/bin" "${COSPEC_LLAMA_CPP_ROOT}/build/src"
                 NO_DEFAULT_PATH)
    set(COSPEC_LLAMA_LIBRARY_ROOT "${COSPEC_LLAMA_CPP_ROOT}" CACHE INTERNAL "The COSPEC_LLAMA_CPP_ROOT that COSPEC_LLAMA_LIBRARY was found in")
    if(COSPEC_LLAMA_LIBRARY AND EXISTS "${COSPEC_LLAMA_CPP_ROOT}/include/llama.h")
      add_library(cospec_llama_engine UNKNOWN IMPORTED)
      set_target_properties(cospec_llama_engine PROPERTIES
        IMPORTED_LOCATION "${COSPEC_LLAMA_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${COSPEC_LLAMA_CPP_ROOT}/include;${COSPEC_LLAMA_CPP_ROOT}/ggml/include")
      set(COSPEC_HAVE_LLAMA_CPP ON)
      set(COSPEC_LLAMA_CPP_TOOLS "${COSPEC_LLAMA_CPP_ROOT}/build/bin")
      get_filename_component(COSPEC_LLAMA_CPP_LIBRARY_DIR "${COSPEC_LLAMA_LIBRARY}" DIRECTORY)
      set(cospec_llama_where "the build tree ${COSPEC_LLAMA_CPP_ROOT}")
    else()
      message(WARNING "cospec: COSPEC_LLAMA_CPP_ROOT=${COSPEC_LLAMA_CPP_ROOT} has no include/llama.h and build/bin/libllama")
    endif()
  else()
    find_package(llama CONFIG QUIET)
    if(llama_FOUND AND TARGET llama)
      add_library(cospec_llama_engine INTERFACE)
      target_link_libraries(cospec_llama_engine INTERFACE llama)
      set(COSPEC_HAVE_LLAMA_CPP ON)
      if(DEFINED LLAMA_BIN_DIR)
        set(COSPEC_LLAMA_CPP_TOOLS "${LLAMA_BIN_DIR}")
      endif()
      if(DEFINED LLAMA_LIB_DIR)
        set(COSPEC_LLAMA_CPP_LIBRARY_DIR "${LLAMA_LIB_DIR}")
      endif()
      set(cospec_llama_where "the installed llama.cpp in ${llama_DIR}")
    endif()
  endif()
endif()

if(COSPEC_HAVE_LLAMA_CPP)
  add_library(cospec_llama_cpp INTERFACE)
  add_library(cospec::llama_cpp ALIAS cospec_llama_cpp)
  target_link_libraries(cospec_llama_cpp INTERFACE cospec cospec_llama_engine)
  message(STATUS "cospec: llama.cpp found (${cospec_llama_where}): building the llama.cpp backend's tests and demo")
elseif(COSPEC_LLAMA_CPP)
  message(STATUS "cospec: llama.cpp not found: the llama.cpp backend's tests and demo are skipped (to enable them, "
                 "-DCMAKE_PREFIX_PATH=<llama.cpp install prefix> or -DCOSPEC_LLAMA_CPP_ROOT=<llama.cpp source tree "
                 "built in build/>; README, \"llama.cpp\")")
endif()

# Links a program of cospec's own against llama.cpp. libllama finds its ggml libraries only
# through the program's run path, and only an old-style RPATH (not RUNPATH) serves the
# libraries a library needs.
function(cospec_link_llama_cpp target)
  target_link_libraries(${target} PRIVATE cospec::llama_cpp)
  set_target_properties(${target} PROPERTIES BUILD_RPATH "${COSPEC_LLAMA_CPP_LIBRARY_DIR}")
  if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
    target_link_options(${target} PRIVATE -Wl,--disable-new-dtags)
  endif()
endfunction()
