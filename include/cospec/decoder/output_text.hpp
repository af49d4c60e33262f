// The text of a request's output as a stream: stop strings matched across token boundaries,
// and text held back while it may still turn out to be part of one (docs/engine.md, "Text,
// stop strings and streaming").
#pragma once

#include "cospec/abi.hpp"

#include <algorithm>    // std::min, std::max
#include <cstddef>      // std::size_t
#include <string>       // std::string
#include <string_view>  // std::string_view
#include <vector>       // std::vector

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Accumulates a request's output text piece by piece. What it releases to a stream is never
/// withdrawn: it holds back the longest end of the text that is a proper prefix of a stop
/// string (the next piece may complete the match, and OpenAI, vLLM and llama.cpp's server all
/// leave the matched text out), and an incomplete UTF-8 character at the end (a token may end
/// inside one: a stream of JSON strings must not carry half a character).
class output_text {
 public:
  /// Starts a request. `stops` must outlive the request; empty strings never match.
  void start(const std::vector<std::string>* stops) {
    text_.clear();
    released_ = 0;
    stops_ = stops;
  }

  /// Appends a token's piece. With `check_stops`, looks for a stop string in the text the
  /// piece may have completed; on a match the text is cut where the earliest match begins and
  /// true is returned. Allocates only when the text outgrows its capacity.
  bool append(std::string_view piece, bool check_stops) {
    const std::size_t before = text_.size();
    text_.append(piece);
    if (!check_stops || stops_ == nullptr) return false;
    std::size_t cut = std::string::npos;
    for (const std::string& stop : *stops_) {
      if (stop.empty()) continue;
      // A match that ends in the new piece starts at most stop.size() - 1 bytes before it.
      const std::size_t from = before >= stop.size() - 1 ? before - (stop.size() - 1) : 0;
      const std::size_t found = text_.find(stop, from);
      if (found != std::string::npos) cut = std::min(cut, found);
    }
    if (cut == std::string::npos) return false;
    text_.resize(std::max(cut, released_));  // released text is never withdrawn (see the class comment)
    return true;
  }

  /// The text that may be streamed now and was not yet: everything when `final`, else up to
  /// what a stop string or an incomplete character holds back. Valid until the next call.
  std::string_view release(bool final) {
    std::size_t end = text_.size();
    if (!final) end = std::min(end - held_by_stops(), end - incomplete_character(end));
    end = std::max(end, released_);
    const std::string_view fresh(text_.data() + released_, end - released_);
    released_ = end;
    return fresh;
  }

  [[nodiscard]] const std::string& text() const noexcept { return text_; }
  [[nodiscard]] std::size_t released() const noexcept { return released_; }

 private:
  /// The longest end of the text that is a proper prefix of some stop string.
  [[nodiscard]] std::size_t held_by_stops() const {
    if (stops_ == nullptr) return 0;
    std::size_t held = 0;
    const std::string_view text(text_);
    for (const std::string& stop : *stops_) {
      for (std::size_t length = std::min(stop.size() - (stop.empty() ? 0 : 1), text.size()); length > held; --length)
        if (text.substr(text.size() - length) == std::string_view(stop).substr(0, length)) {
          held = length;
          break;
        }
    }
    return held;
  }

  /// Bytes at the end of text_[0, end) that begin a UTF-8 character not yet complete (0 when
  /// the last character is complete, or the bytes are not UTF-8 at all).
  [[nodiscard]] std::size_t incomplete_character(std::size_t end) const noexcept {
    for (std::size_t back = 1; back <= std::min<std::size_t>(3, end); ++back) {
      const auto byte = static_cast<unsigned char>(text_[end - back]);
      if ((byte & 0xC0) == 0x80) continue;  // a continuation byte: look further back
      const std::size_t length = (byte & 0xE0) == 0xC0 ? 2 : (byte & 0xF0) == 0xE0 ? 3 : (byte & 0xF8) == 0xF0 ? 4 : 1;
      return length > back ? back : 0;
    }
    return 0;
  }

  std::string text_;
  std::size_t released_ = 0;
  const std::vector<std::string>* stops_ = nullptr;
};

}  // namespace cospec
