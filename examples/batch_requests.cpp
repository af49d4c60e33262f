// Many requests served by one batch decoder (docs/engine.md, "Serving many requests"): each
// with its own prompt, settings and limits, some joining while others run, every output the
// one decoding that request alone gives.
#include <cospec/cospec.hpp>

#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <cstdio>     // std::printf
#include <map>        // std::map
#include <optional>   // std::optional
#include <span>       // std::span
#include <stdexcept>  // std::runtime_error
#include <utility>    // std::move
#include <vector>     // std::vector

#include "models/synthetic_model.hpp"

using cospec::examples::synthetic_model;
using cospec::examples::synthetic_model_config;

// A batched adapter over a pool of single-sequence models. A real engine runs the entries of
// `batch` in one forward pass; this one runs them one after another, which is the same output.
class synthetic_batch {
 public:
  synthetic_batch(synthetic_model_config config, std::size_t sequences) : config_(config), pool_(sequences) {}
  std::size_t vocabulary_size() const { return config_.vocabulary_size; }
  std::size_t max_sequences() const { return pool_.size(); }
  cospec::sequence_id create_sequence() {
    for (std::size_t s = 0; s < pool_.size(); ++s)
      if (!pool_[s]) {
        pool_[s].emplace(config_);
        return s;
      }
    throw std::runtime_error("synthetic_batch: no free sequence");
  }
  void release_sequence(cospec::sequence_id s) noexcept { pool_[s].reset(); }
  std::size_t context_length(cospec::sequence_id s) const { return pool_[s]->context_length(); }
  void truncate(cospec::sequence_id s, std::size_t length) { pool_[s]->truncate(length); }
  void feed(std::span<const cospec::sequence_feed> batch) {
    for (const cospec::sequence_feed& entry : batch) pool_[entry.sequence]->feed(entry.tokens, entry.rows);
  }

 private:
  synthetic_model_config config_;
  std::vector<std::optional<synthetic_model>> pool_;
};

int main() {
  const synthetic_model_config target{.vocabulary_size = 50, .window = 2, .own_seed = 3, .agreement = 0.8};
  const synthetic_model_config draft{.vocabulary_size = 50, .window = 2, .own_seed = 4, .agreement = 0.8};
  synthetic_batch target_model(target, 4), draft_model(draft, 4);  // 4 sequences each
  const auto combination = cospec::weighted_ensemble({0.5f, 0.5f});
  const auto policy = cospec::alternating({1, 3});  // the target scores, the draft proposes 3
  cospec::batch_decoder decoder(std::vector<synthetic_batch*>{&target_model, &draft_model}, combination, policy);

  // Six requests, each with its own settings; two more join once the batch is running.
  struct request {
    std::vector<cospec::token_id> prompt;
    cospec::sampling_settings settings;
    cospec::generation_limits limits;
  };
  std::vector<request> requests;
  for (int r = 0; r < 8; ++r) {
    request q{{r, r + 1, r + 2}, {}, {}};
    q.settings.temperature = r % 2 == 0 ? 0.0f : 0.7f + 0.1f * static_cast<float>(r);  // greedy or sampled
    q.limits.max_new_tokens = 16 + 4 * static_cast<std::size_t>(r);
    q.limits.seed = 100 + static_cast<std::uint64_t>(r);
    requests.push_back(q);
  }
  std::map<cospec::request_id, int> index;
  for (int r = 0; r < 6; ++r) index[decoder.submit(requests[r].prompt, requests[r].settings, requests[r].limits)] = r;
  int steps = 0;
  std::vector<cospec::finished_request> finished;
  while (decoder.step()) {
    if (++steps == 5)
      for (int r = 6; r < 8; ++r)
        index[decoder.submit(requests[r].prompt, requests[r].settings, requests[r].limits)] = r;
    for (auto& done : decoder.take_finished()) finished.push_back(std::move(done));
  }

  // Each request decoded alone, on single-sequence models, must give the same tokens.
  int mismatches = 0;
  for (const auto& done : finished) {
    const request& q = requests[index[done.id]];
    synthetic_model alone_target(target), alone_draft(draft);
    cospec::decoder alone(std::vector<synthetic_model*>{&alone_target, &alone_draft}, combination, policy);
    const auto expected = alone.generate(q.prompt, q.settings, q.limits);
    const bool same = !done.failed() && done.result.tokens == expected.tokens;
    mismatches += same ? 0 : 1;
    std::printf("request %d: %zu tokens, %zu passes of its own, %s\n", index[done.id], done.result.tokens.size(),
                done.result.statistics.forward_passes(), same ? "same as alone" : "DIFFERS from alone");
  }
  const auto& stats = decoder.statistics();
  for (std::size_t k = 0; k < 2; ++k)
    std::printf("model %zu: %zu batched passes serving %zu sequences\n", k, stats.models[k].passes,
                stats.models[k].sequences);
  return mismatches == 0 && finished.size() == requests.size() ? 0 : 1;
}
