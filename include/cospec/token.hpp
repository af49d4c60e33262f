// The token type shared by every part of cospec.
#pragma once

#include "cospec/abi.hpp"

#include <cstdint>  // std::int32_t

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// A token id in [0, vocabulary size). Signed 32-bit, as llama.cpp's llama_token, so adapter
/// code can pass ids through without conversion.
using token_id = std::int32_t;

}  // namespace cospec
