// The keys and values a transformer keeps for the tokens of its context, one pair of
// matrices per layer, and the rollback speculation needs: truncate() after a rejection.
#pragma once

#include <cstddef>    // std::size_t
#include <stdexcept>  // std::out_of_range
#include <string>     // std::to_string
#include <vector>     // std::vector

#include "transformer/weights.hpp"

namespace cospec::examples::llama {

/// Row p of keys(l) and values(l) holds the rotated key and the value of the token at
/// position p for layer l (kv_dim floats: n_kv_heads heads side by side). Rows at or past
/// length() are scratch: a forward pass writes them before it commits them.
class kv_cache {
 public:
  /// Room for `capacity` tokens in each of `layers` layers of width `kv_dim`.
  kv_cache(std::size_t layers, std::size_t capacity, std::size_t kv_dim) : capacity_(capacity) {
    keys_.reserve(layers);
    values_.reserve(layers);
    for (std::size_t l = 0; l < layers; ++l) {
      keys_.emplace_back(static_cast<Eigen::Index>(capacity), static_cast<Eigen::Index>(kv_dim));
      values_.emplace_back(static_cast<Eigen::Index>(capacity), static_cast<Eigen::Index>(kv_dim));
    }
  }

  [[nodiscard]] std::size_t length() const noexcept { return length_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] row_matrix& keys(std::size_t layer) noexcept { return keys_[layer]; }
  [[nodiscard]] row_matrix& values(std::size_t layer) noexcept { return values_[layer]; }

  /// Makes the first `length` rows the context. Growing is how a forward pass commits the
  /// rows it wrote; shrinking is the rollback. Throws std::out_of_range past capacity().
  void set_length(std::size_t length) {
    if (length > capacity_)
      throw std::out_of_range("kv_cache: length " + std::to_string(length) + " exceeds the capacity of " +
                              std::to_string(capacity_) + " tokens");
    length_ = length;
  }

 private:
  std::vector<row_matrix> keys_;
  std::vector<row_matrix> values_;
  std::size_t capacity_ = 0;
  std::size_t length_ = 0;
};

}  // namespace cospec::examples::llama
