// libFuzzer target for the decoder's failure handling (docs/reliability.md, "Fuzzing"). Each
// input is decoded into a conversation with misbehaving adapters and callbacks by
// tests/fuzz/decoder_case.hpp and run; the case checks the promises of docs/reliability.md
// after every call and throws invariant_violation when one is broken. A cospec::error escaping
// the case (a decoder that could not be built) is not a finding; anything else is.
#include <cstddef>  // std::size_t
#include <cstdint>  // std::uint8_t
#include <span>     // std::span

#include <cospec/errors.hpp>

#include "fuzz/decoder_case.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    cospec::fuzzing::run_decoder_case(std::span<const std::uint8_t>(data, size));
  } catch (const cospec::error&) {
    // Rejected as documented.
  }
  return 0;
}
