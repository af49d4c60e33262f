// A single-sequence model adapter seen as a batched adapter with one sequence, so that a
// model with no batching of its own can serve in a batch decoder (docs/adapters.md,
// "Batched adapters").
#pragma once

#include "cospec/abi.hpp"

#include <cstddef>  // std::size_t
#include <span>     // std::span
#include <string>   // std::to_string
#include <utility>  // std::exchange

#include "cospec/adapters/batched_model_adapter.hpp"
#include "cospec/adapters/model_adapter.hpp"
#include "cospec/errors.hpp"

namespace cospec::inline COSPEC_ABI_NAMESPACE {

/// Refers to a model_adapter owned elsewhere (it must outlive the wrapper) and offers it as a
/// batched_model_adapter with max_sequences() == 1: sequence 0 is the model's context. A batch
/// decoder over such models serves one request at a time, which is what the model can do.
template <model_adapter Model>
class batch_of_one {
 public:
  explicit batch_of_one(Model& model) noexcept : model_(&model) {}

  // Not copyable: two wrappers would each hand out sequence 0 on the one context. A move
  // takes the sequence along.
  batch_of_one(const batch_of_one&) = delete;
  batch_of_one& operator=(const batch_of_one&) = delete;
  batch_of_one(batch_of_one&& other) noexcept
      : model_(other.model_), alive_(std::exchange(other.alive_, false)) {}
  batch_of_one& operator=(batch_of_one&& other) noexcept {
    model_ = other.model_;
    alive_ = std::exchange(other.alive_, false);
    return *this;
  }

  [[nodiscard]] std::size_t vocabulary_size() const { return model_->vocabulary_size(); }
  [[nodiscard]] static constexpr std::size_t max_sequences() noexcept { return 1; }

  /// Sequence 0, truncating the model to an empty context. usage_error while it exists.
  sequence_id create_sequence() {
    if (alive_) throw usage_error("batch_of_one: its one sequence already exists");
    if (model_->context_length() != 0) model_->truncate(0);
    alive_ = true;
    return 0;
  }

  /// Ends sequence 0. The model keeps its context until the next create_sequence(), which
  /// empties it (a release must not throw, and truncate may).
  void release_sequence(sequence_id sequence) noexcept {
    if (sequence == 0) alive_ = false;
  }

  [[nodiscard]] std::size_t context_length(sequence_id sequence) const {
    check(sequence);
    return model_->context_length();
  }

  void truncate(sequence_id sequence, std::size_t length) {
    check(sequence);
    model_->truncate(length);
  }

  /// A batch of at most one entry, for sequence 0: the model's feed.
  void feed(std::span<const sequence_feed> batch) {
    if (batch.size() > 1)
      throw usage_error("batch_of_one: a batch of " + std::to_string(batch.size()) +
                        " sequences for an adapter that holds one");
    if (batch.empty()) return;
    check(batch[0].sequence);
    model_->feed(batch[0].tokens, batch[0].rows);
  }

  [[nodiscard]] std::size_t context_limit(sequence_id sequence) const
    requires adapter_with_context_limit<Model>
  {
    check(sequence);
    return model_->context_limit();
  }

  [[nodiscard]] Model& model() const noexcept { return *model_; }

 private:
  void check(sequence_id sequence) const {
    if (sequence != 0 || !alive_)
      throw usage_error("batch_of_one: sequence " + std::to_string(sequence) + " does not exist");
  }

  Model* model_;
  bool alive_ = false;
};

}  // namespace cospec
