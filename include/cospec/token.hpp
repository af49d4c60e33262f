// The token type shared by every part of cospec.
#pragma once

#include <cstdint>  // std::int32_t

namespace cospec {

/// A token id in [0, vocabulary size). Signed 32-bit, as llama.cpp's llama_token, so adapter
/// code can pass ids through without conversion.
using token_id = std::int32_t;

}  // namespace cospec
