# The libraries of cospec-server (docs/server.md): Debian 12's libcpp-httplib-dev (through
# pkg-config: it is a compiled library with OpenSSL, zlib and brotli) and nlohmann-json3-dev.
# Examples only, never the library; optional like llama.cpp. Sets COSPEC_HAVE_SERVER_LIBRARIES
# and, when found, the targets nlohmann_json::nlohmann_json and PkgConfig::COSPEC_HTTPLIB.
find_package(nlohmann_json 3 CONFIG QUIET)
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(COSPEC_HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
endif()
find_package(Threads REQUIRED)
if(nlohmann_json_FOUND AND COSPEC_HTTPLIB_FOUND)
  set(COSPEC_HAVE_SERVER_LIBRARIES ON)
  message(STATUS "cospec: cpp-httplib and nlohmann_json found: building cospec-server and its tests")
else()
  set(COSPEC_HAVE_SERVER_LIBRARIES OFF)
  message(STATUS "cospec: cospec-server and its tests skipped: they need cpp-httplib (pkg-config cpp-httplib) and "
                 "nlohmann_json (Debian 12: apt-get install libcpp-httplib-dev nlohmann-json3-dev)")
endif()
