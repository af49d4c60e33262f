// libFuzzer target for cospec-server's request handling: each input is an HTTP body, run by
// tests/fuzz/server_request_case.hpp (what counts as a finding is listed there). Nothing is
// caught here: a server_request_violation or any other exception is a finding.
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint8_t
#include <span>     // std::span

#include "fuzz/server_request_case.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  cospec::fuzzing::run_server_request_case(std::span<const std::uint8_t>(data, size));
  return 0;
}
