// The exceptions cospec throws (docs/errors.md). Every one derives from cospec::error, so a
// server can catch the library's failures in one place and tell them from its own.
#pragma once

#include "cospec/abi.hpp"

#include <cstdio>     // std::snprintf
#include <stdexcept>  // std::runtime_error
#include <string>     // std::string

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Base of every exception cospec throws.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A setting that can never work: weights, temperatures, top-k/top-p/min-p, gammas, model
/// counts or vocabulary sizes that do not fit together. Thrown at construction or at the
/// start of `generate`, before any model is called.
class invalid_configuration : public error {
 public:
  using error::error;
};

/// Logits that cannot define a distribution: a NaN, a `+inf`, or a row in which every token
/// is masked (`-inf`) so that nothing can be sampled. The message names the model and the
/// position. Thrown during decoding; the decoder rolls every model back to the committed text.
class invalid_logits : public error {
 public:
  using error::error;
};

/// A model adapter threw or broke its contract (wrong row count, context length it cannot
/// explain). The original exception is nested (std::throw_with_nested) where there was one.
class backend_failure : public error {
 public:
  using error::error;
};

/// A caller broke a documented precondition of a lower-level API (for example, asked the
/// verifier to check a token its own proposal distribution gives probability zero). Never
/// thrown by a correctly used decoder; it signals a bug in the calling code.
class usage_error : public error {
 public:
  using error::error;
};

/// The text would grow past a model's context limit.
class context_overflow : public error {
 public:
  using error::error;
};

/// A batch decoder cannot take another request now: its queue of requests waiting for a free
/// sequence is full (batch_options::max_waiting). Nothing was submitted; the caller may retry
/// once requests have finished, or turn the request away.
class capacity_exceeded : public error {
 public:
  using error::error;
};

namespace detail {
/// A number as printf's %g writes it, for messages: tiny and huge values stay readable
/// (std::to_string writes 1e-45 as 0.000000).
inline std::string number_text(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}
}  // namespace detail

}  // namespace cospec
