// Library overhead of full CoS rounds (docs/benchmarks.md, "Library overhead").
//
// The decoder drives n models whose forward pass costs a memcpy: replay_model writes, for
// each position, one of a few precomputed logit rows chosen by a hash of the position. What
// generate() spends outside the adapters (generation_statistics::seconds_in_cospec) is then
// cospec's own work per committed token: proposal distributions, targets, verification,
// bookkeeping. The machine is shared and noisy, so every yardstick is timed inside the same
// iteration, right after the work it is compared with:
//   floor:   one streaming exp pass over the n rows of each committed position
//            (kernels::log_sum_exp on each row). Any exact method must exponentiate every
//            logit of every model once; the target is 1.5x the floor.
//   kernels: cospec's own kernels for each committed position called directly on the same
//            rows (pass_replay), which splits the time into proposal, target and verification
//            and shows what the decoder adds to them.
//   scalar:  the same round written plainly with the scalar reference kernels
//            (kernels::reference) and plain loops, in its own benchmark with its own floor.
//
// Cases: V in {32000, 128256, 152064}; n = 2 (weighted ensemble, contrastive decoding mu 0.1)
// and n = 3 (weighted ensemble, proxy-tuning logit arithmetic 1, 1, -1); sampling (T = 1) and
// greedy; chain length 1 (alternating gammas all 1) and 5 (the cheapest model proposes 5).
// Mixture sampling of the weighted ensemble (combiner MIX, sampling only): chain 1 is plain
// mixture sampling, chain 5 its speculative form (max_gamma 5, model 0 priced 1 and the others
// 8, so model 0 proposes runs). Its floor is one exp pass per committed token: the drawn
// model's row is the only one a position must exponentiate.
// The models' rows are near-identical (shared peaked rows plus a little per-model noise), so
// chains are accepted; the tokens per invocation and the acceptance are reported.
//
// Heap allocations during generate() are counted by the global operator new of this file.
// With COSPEC_BENCH_TRACE_ALLOCATIONS=1 in the environment, every counted allocation also
// prints a backtrace to stderr (map the addresses with addr2line on a -g build).
#include <benchmark/benchmark.h>

#include <execinfo.h>  // backtrace, backtrace_symbols_fd (glibc)

#include <algorithm>  // std::fill
#include <atomic>    // std::atomic
#include <chrono>    // std::chrono::steady_clock
#include <cmath>     // std::sqrt, std::log, std::cos
#include <cstddef>   // std::size_t
#include <cstdint>   // std::uint64_t, std::int64_t
#include <cstdio>    // std::printf, std::fwrite
#include <cstdlib>   // std::malloc, std::free, std::aligned_alloc, std::getenv
#include <cstring>   // std::memcpy
#include <limits>    // std::numeric_limits
#include <map>       // std::map
#include <memory>    // std::shared_ptr, std::make_shared
#include <new>       // std::bad_alloc, std::align_val_t
#include <numbers>   // std::numbers::pi
#include <optional>  // std::optional
#include <span>      // std::span
#include <string>    // std::string, std::to_string
#include <utility>   // std::pair, std::move
#include <vector>    // std::vector

#include <cospec/cospec.hpp>
#include <cospec/kernels/reference.hpp>

// ---- counting allocator -----------------------------------------------------------------

namespace {

/// Allocations are counted only while `armed` (around the generate() calls measured).
std::atomic<bool> allocations_armed{false};
std::atomic<std::size_t> allocations_counted{0};
bool trace_allocations = false;
thread_local bool inside_trace = false;

void note_allocation() noexcept {
  if (!allocations_armed.load(std::memory_order_relaxed)) return;
  allocations_counted.fetch_add(1, std::memory_order_relaxed);
  if (trace_allocations && !inside_trace) {
    inside_trace = true;  // backtrace() itself must not recurse into this
    void* frames[32];
    const int depth = backtrace(frames, 32);
    static const char separator[] = "---- allocation during generate():\n";
    std::fwrite(separator, 1, sizeof separator - 1, stderr);
    backtrace_symbols_fd(frames, depth, 2);
    inside_trace = false;
  }
}

void* allocate(std::size_t size) {
  note_allocation();
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

void* allocate_aligned(std::size_t size, std::align_val_t alignment) {
  note_allocation();
  const auto align = static_cast<std::size_t>(alignment);
  const std::size_t rounded = (size + align - 1) / align * align;
  if (void* p = std::aligned_alloc(align, rounded == 0 ? align : rounded)) return p;
  throw std::bad_alloc();
}

}  // namespace

// The replaceable global allocation functions (the nothrow and array forms of libstdc++ call
// these). Deallocation is not counted: an allocation-free steady state frees nothing either.
void* operator new(std::size_t size) { return allocate(size); }
void* operator new[](std::size_t size) { return allocate(size); }
void* operator new(std::size_t size, std::align_val_t alignment) { return allocate_aligned(size, alignment); }
void* operator new[](std::size_t size, std::align_val_t alignment) { return allocate_aligned(size, alignment); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

/// One case of the table.
struct case_info {
  std::string combiner;
  std::size_t models;
  std::size_t size;
  bool sampling;
  std::size_t chain;
  bool scalar;  // the plain scalar round rather than cospec
};

constexpr std::size_t vocabulary_sizes[] = {32000, 128256, 152064};  // Llama 2, Llama 3, Qwen2.5
constexpr std::size_t model_counts[] = {2, 3};
constexpr std::size_t chain_lengths[] = {1, 5};
constexpr std::size_t rows_per_model = 8;        // the "handful" of rows an adapter replays
constexpr std::size_t tokens_per_generate = 64;  // committed tokens per measured generate()
constexpr std::size_t scalar_tokens = 8;         // tokens per iteration of the scalar round
constexpr int repetitions = 3;

/// Fixed iteration counts (Google Benchmark would otherwise rerun each case's set-up while it
/// searches for one), about the same work per repetition at every V: cospec 10, 3 and 2
/// generate() calls at V = 32000, 128256 and 152064, the scalar round 5, 2 and 1 iterations.
std::int64_t iterations(const case_info& info) {
  const std::size_t per_repetition = info.scalar ? 1 : 2;
  return static_cast<std::int64_t>((per_repetition * 152064 + info.size - 1) / info.size);
}

const std::vector<cospec::token_id> prompt{11, 12, 13, 14, 15, 16, 17, 18};

std::uint64_t mix(std::uint64_t z) noexcept {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// The logit rows of n related models: per row a shared N(0, 1) background with four
/// candidate tokens at 18, 17, 16 and 15 (at hashed places), plus N(0, 0.1^2) noise per
/// model. Candidates make the distributions peaked like a language model's (most of the mass
/// on a few tokens) and keep them so under contrastive decoding's 0.9 l; the small noise
/// makes the models near-identical, so proposals are accepted almost always.
class row_bank {
 public:
  row_bank(std::size_t models, std::size_t size) : size_(size), rows_(models * rows_per_model * size) {
    cospec::random_source random(size * 31 + models);
    auto normal = [&random] {
      const double radius = std::sqrt(-2.0 * std::log(1.0 - random.uniform()));
      return radius * std::cos(2.0 * std::numbers::pi * random.uniform());
    };
    std::vector<float> shared(size);
    for (std::size_t r = 0; r < rows_per_model; ++r) {
      for (float& x : shared) x = static_cast<float>(normal());
      for (std::size_t c = 0; c < 4; ++c) shared[mix(r * 4 + c + size) % size] = 18.0f - static_cast<float>(c);
      for (std::size_t k = 0; k < models; ++k) {
        float* row = rows_.data() + (k * rows_per_model + r) * size;
        for (std::size_t j = 0; j < size; ++j) row[j] = shared[j] + static_cast<float>(0.1 * normal());
      }
    }
  }

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return size_; }
  /// Model k's logits after a context of `position` tokens.
  [[nodiscard]] std::span<const float> row(std::size_t model, std::size_t position) const noexcept {
    const std::size_t r = mix(position) % rows_per_model;
    return {rows_.data() + (model * rows_per_model + r) * size_, size_};
  }

 private:
  std::size_t size_;
  std::vector<float> rows_;
};

/// Banks are large (up to 14.6 MB); built once per (n, V).
const row_bank& bank_for(std::size_t models, std::size_t size) {
  static std::map<std::pair<std::size_t, std::size_t>, std::shared_ptr<const row_bank>> banks;
  auto& bank = banks[{models, size}];
  if (!bank) bank = std::make_shared<const row_bank>(models, size);
  return *bank;
}

/// A ModelAdapter whose forward pass is a memcpy of a replayed row per requested position.
/// The logits depend on the position only, not on the tokens, so it need not store them.
class replay_model {
 public:
  replay_model(const row_bank& bank, std::size_t model) : bank_(&bank), model_(model) {}

  [[nodiscard]] std::size_t vocabulary_size() const noexcept { return bank_->vocabulary_size(); }
  [[nodiscard]] std::size_t context_length() const noexcept { return length_; }

  void feed(std::span<const cospec::token_id> tokens, cospec::logit_outputs rows) {
    const std::size_t first_row = tokens.size() - rows.size();
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const std::span<const float> source = bank_->row(model_, length_ + first_row + i + 1);
      std::memcpy(rows[i].data(), source.data(), source.size_bytes());
    }
    length_ += tokens.size();
  }

  void truncate(std::size_t length) { length_ = length; }

 private:
  const row_bank* bank_;
  std::size_t model_;
  std::size_t length_ = 0;
};

std::vector<std::pair<std::string, case_info>>& registry() {
  static std::vector<std::pair<std::string, case_info>> cases;
  return cases;
}

bool is_mixture(const std::string& combiner) { return combiner == "MIX"; }
bool is_ensemble(const std::string& combiner) { return combiner == "WE" || is_mixture(combiner); }

/// Rows a committed position must exponentiate at least: every model's, or the drawn one's.
std::size_t floor_rows(const case_info& info) { return is_mixture(info.combiner) ? 1 : info.models; }

/// Gammas and cost order (cheapest first): the cheapest model proposes `chain` tokens.
/// Weighted ensemble: model 0 is the cheap one. Contrastive decoding: model 0 is the expert,
/// model 1 the (cheap) amateur. Proxy-tuning 1, 1, -1: model 0 is the large base, models 1
/// and 2 the small tuned and small base models.
std::pair<std::vector<std::size_t>, std::vector<std::size_t>> schedule(const case_info& info) {
  std::vector<std::size_t> gammas(info.models, 1);
  std::vector<std::size_t> order;
  if (is_ensemble(info.combiner)) order = info.models == 2 ? std::vector<std::size_t>{0, 1} : std::vector<std::size_t>{0, 1, 2};
  else order = info.models == 2 ? std::vector<std::size_t>{1, 0} : std::vector<std::size_t>{1, 2, 0};
  gammas[order.front()] = info.chain;
  return {gammas, order};
}

/// The floor of one committed position: log_sum_exp of each model's row there.
void floor_pass(const row_bank& bank, std::size_t models, std::size_t position) {
  for (std::size_t k = 0; k < models; ++k) benchmark::DoNotOptimize(cospec::kernels::log_sum_exp(bank.row(k, position)));
}

double seconds_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string case_name(const case_info& info) {
  return std::string(info.scalar ? "scalar/" : "cospec/") + info.combiner + "/" +
         (info.sampling ? "sampling" : "greedy") + "/n:" + std::to_string(info.models) +
         "/V:" + std::to_string(info.size) + "/chain:" + std::to_string(info.chain);
}

/// cospec's own kernels for one committed position, called directly on the bank's rows
/// without the decoder, in the session's data flow (docs/engine.md, "What a token costs"): the
/// proposer's distribution and draw, the target (at the proposed token alone where the
/// combiner allows it), the verification (with the target row on a rejection).
/// Their sum against cospec's time shows what the decoder adds (bookkeeping, ring buffers);
/// each against the floor shows which pass costs what.
template <class Combiner>
class pass_replay {
 public:
  pass_replay(Combiner combiner, bool sampling, std::size_t proposer, std::size_t models, std::size_t size,
              bool mixture = false)
      : combiner_(std::move(combiner)), settings_(make_settings(sampling)), evaluator_(combiner_, settings_),
        proposer_(proposer), rows_(models), known_(models), proposal_(size), target_(size), random_(5),
        mixture_(mixture) {}

  void run(const row_bank& bank, std::size_t position) {
    using clock = std::chrono::steady_clock;
    for (std::size_t k = 0; k < rows_.size(); ++k) rows_[k] = bank.row(k, position);
    const auto start = clock::now();
    if (mixture_) {
      // A plain mixture position: the drawn model's softmax, written, and a draw from it.
      const float sum = cospec::kernels::unnormalized_softmax(rows_[0], target_, 1.0f / settings_.temperature).sum;
      benchmark::DoNotOptimize(cospec::kernels::sample_inverse_cdf(target_, random_.uniform(), sum));
      target_seconds += seconds_between(start, clock::now());
      return;
    }
    cospec::token_id x;
    if (settings_.greedy()) {
      x = static_cast<cospec::token_id>(cospec::kernels::max_argmax(rows_[proposer_]).index);
    } else if constexpr (cospec::combiner_with_point_target<Combiner>) {
      proposal_sum_ = cospec::kernels::unnormalized_softmax(rows_[proposer_], proposal_, 1.0f / settings_.temperature).sum;
      x = static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(proposal_, random_.uniform(), proposal_sum_));
    } else {
      combiner_.proposal_distribution(proposer_, rows_[proposer_], settings_.temperature, proposal_);
      x = static_cast<cospec::token_id>(cospec::kernels::sample_inverse_cdf(proposal_, random_.uniform(), 1.0));
    }
    const auto proposed = clock::now();
    cospec::verdict outcome{};
    if (settings_.greedy()) {
      const cospec::token_id best = evaluator_.greedy_token(rows_, {}, target_);
      const auto targeted = clock::now();
      outcome = cospec::verify_greedy(x, best);
      target_seconds += seconds_between(proposed, targeted);
      verify_seconds += seconds_between(targeted, clock::now());
    } else if (evaluator_.point_target()) {
      const double q_x = cospec::proposal_probability(x, proposal_, proposal_sum_);
      std::fill(known_.begin(), known_.end(), std::numeric_limits<double>::quiet_NaN());
      known_[proposer_] = q_x;
      const std::optional<double> r_x = evaluator_.probability_at(rows_, x, known_);
      const auto targeted = clock::now();
      outcome = verifier_.verify_at(
          x, r_x.value(), q_x, proposal_, proposal_sum_,
          [&]() -> std::span<const float> {
            evaluator_.distribution(rows_, {}, target_);
            return target_;
          },
          random_);
      target_seconds += seconds_between(proposed, targeted);
      verify_seconds += seconds_between(targeted, clock::now());
    } else {
      evaluator_.distribution(rows_, {}, target_);
      const auto targeted = clock::now();
      outcome = verifier_.verify(x, proposal_, target_, random_);
      target_seconds += seconds_between(proposed, targeted);
      verify_seconds += seconds_between(targeted, clock::now());
    }
    benchmark::DoNotOptimize(outcome);
    proposal_seconds += seconds_between(start, proposed);
  }

  double proposal_seconds = 0.0, target_seconds = 0.0, verify_seconds = 0.0;

 private:
  static cospec::sampling_settings make_settings(bool sampling) {
    cospec::sampling_settings settings;
    settings.temperature = sampling ? 1.0f : 0.0f;
    return settings;
  }

  Combiner combiner_;
  cospec::sampling_settings settings_;
  cospec::target_evaluator<Combiner> evaluator_;
  cospec::speculative_verifier verifier_;
  std::size_t proposer_;
  std::vector<std::span<const float>> rows_;
  std::vector<double> known_;
  std::vector<float> proposal_, target_;
  float proposal_sum_ = 1.0f;
  cospec::random_source random_;
  bool mixture_;
};

template <class Combiner, class Decoder>
void measure(benchmark::State& state, const case_info& info, const row_bank& bank, pass_replay<Combiner>& passes,
             Decoder decoder);

template <class Combiner>
void run_cospec(benchmark::State& state, const case_info& info, Combiner combiner) {
  const row_bank& bank = bank_for(info.models, info.size);
  std::vector<replay_model> models;
  for (std::size_t k = 0; k < info.models; ++k) models.emplace_back(bank, k);
  std::vector<replay_model*> pointers;
  for (auto& m : models) pointers.push_back(&m);
  cospec::sampling_settings settings;
  settings.temperature = info.sampling ? 1.0f : 0.0f;
  auto [gammas, order] = schedule(info);
  pass_replay<Combiner> passes(combiner, info.sampling, order.front(), info.models, info.size, is_mixture(info.combiner));
  if (is_mixture(info.combiner)) {
    cospec::mixture_options options;
    if (info.chain > 1) {
      options.max_gamma = info.chain;
      options.fallback.pass_costs.assign(info.models, 8.0);
      options.fallback.pass_costs[0] = 1.0;
    }
    measure(state, info, bank, passes,
            cospec::decoder(pointers, std::move(combiner), cospec::mixture_sampling(info.models, options), settings));
  } else {
    measure(state, info, bank, passes, cospec::decoder(pointers, std::move(combiner), cospec::alternating(gammas, order), settings));
  }
}

template <class Combiner, class Decoder>
void measure(benchmark::State& state, const case_info& info, const row_bank& bank, pass_replay<Combiner>& passes,
             Decoder decoder) {

  cospec::generation_limits limits;
  limits.max_new_tokens = tokens_per_generate;
  limits.seed = 1;
  (void)decoder.generate(prompt, limits);  // warm-up: grows every buffer

  // Allocations, once per case (the decoder is rebuilt for every repetition): per generate()
  // of N and of 2N tokens after a warm-up of 2N (so that even the text's capacity suffices);
  // the difference is the steady state's, per token.
  static std::map<std::string, std::pair<double, double>> allocation_counts;
  const std::string name = case_name(info);
  if (!allocation_counts.count(name)) {
    limits.max_new_tokens = 2 * tokens_per_generate;
    (void)decoder.generate(prompt, limits);
    auto count_allocations = [&](std::size_t tokens) {
      limits.max_new_tokens = tokens;
      allocations_counted = 0;
      allocations_armed = true;
      const cospec::generation_result result = decoder.generate(prompt, limits);
      allocations_armed = false;
      return std::pair<double, double>(static_cast<double>(allocations_counted.load()),
                                       static_cast<double>(result.tokens.size()));
    };
    const auto [short_allocations, short_tokens] = count_allocations(tokens_per_generate);
    const auto [long_allocations, long_tokens] = count_allocations(2 * tokens_per_generate);
    allocation_counts[name] = {short_allocations,
                               (long_allocations - short_allocations) / (long_tokens - short_tokens)};
  }
  const auto [allocations_per_generate, allocations_per_token] = allocation_counts[name];

  limits.max_new_tokens = tokens_per_generate;
  double tokens = 0.0, cospec_seconds = 0.0, adapter_seconds = 0.0, floor_seconds = 0.0;
  double invocations = 0.0, proposed = 0.0, accepted = 0.0;
  std::uint64_t seed = 100;
  for (auto _ : state) {
    limits.seed = seed++;
    const cospec::generation_result result = decoder.generate(prompt, limits);
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t t = 0; t < result.tokens.size(); ++t) floor_pass(bank, floor_rows(info), prompt.size() + t);
    const auto end = std::chrono::steady_clock::now();
    for (std::size_t t = 0; t < result.tokens.size(); ++t) passes.run(bank, prompt.size() + t);
    const auto& stats = result.statistics;
    state.SetIterationTime(stats.seconds_in_cospec());
    tokens += static_cast<double>(stats.tokens);
    cospec_seconds += stats.seconds_in_cospec();
    adapter_seconds += stats.seconds_in_adapters;
    floor_seconds += seconds_between(start, end);
    invocations += static_cast<double>(stats.invocations);
    for (const auto& p : stats.proposers) {
      proposed += static_cast<double>(p.proposed);
      accepted += static_cast<double>(p.accepted);
    }
  }
  state.counters["cospec_us"] = cospec_seconds / tokens * 1e6;
  state.counters["adapter_us"] = adapter_seconds / tokens * 1e6;
  state.counters["floor_us"] = floor_seconds / tokens * 1e6;
  state.counters["ratio"] = cospec_seconds / floor_seconds;
  state.counters["proposal_us"] = passes.proposal_seconds / tokens * 1e6;
  state.counters["target_us"] = passes.target_seconds / tokens * 1e6;
  state.counters["verify_us"] = passes.verify_seconds / tokens * 1e6;
  state.counters["tokens_per_invocation"] = tokens / invocations;
  state.counters["acceptance"] = proposed == 0.0 ? 0.0 : accepted / proposed;
  state.counters["allocs_per_generate"] = allocations_per_generate;
  state.counters["allocs_per_token"] = allocations_per_token;
}

/// The same round written plainly, as a first implementation would: positions one at a
/// time, the proposer's softmax to draw the proposal, every model's softmax and the
/// combination for the target, the acceptance test, and on rejection the residual and a
/// draw from it. All numerics are the double-precision loops of kernels::reference. The
/// proposers follow CoS's order in steady state: the cheapest model `chain` times, then every
/// other model once (its bonus token), from the start again after a rejection.
class scalar_round {
 public:
  scalar_round(const row_bank& bank, const case_info& info)
      : bank_(&bank), info_(info), softmaxes_(info.models, std::vector<float>(info.size)), proposal_(info.size),
        target_(info.size), residual_(info.size), rows_(info.models), random_(9) {
    const std::vector<std::size_t> order = schedule(info).second;
    for (std::size_t i = 0; i < info.chain; ++i) pattern_.push_back(order.front());
    for (std::size_t i = 1; i < order.size(); ++i) pattern_.push_back(order[i]);
    if (is_ensemble(info.combiner)) weights_.assign(info.models, 1.0f / static_cast<float>(info.models));
    else if (info.models == 2) weights_ = {1.0f, -0.1f};
    else weights_ = {1.0f, 1.0f, -1.0f};
    for (const auto& s : softmaxes_) softmax_views_.emplace_back(s);
  }

  /// Commits `count` tokens from `position` on; returns how many proposals were accepted.
  std::size_t run(std::size_t position, std::size_t count) {
    std::size_t accepted = 0;
    for (std::size_t t = 0; t < count; ++t, ++position) {
      auto& rows = rows_;
      for (std::size_t k = 0; k < info_.models; ++k) rows[k] = bank_->row(k, position);
      const std::size_t proposer = pattern_[step_];
      bool accept;
      if (info_.sampling) {
        cospec::kernels::reference::softmax(rows[proposer], proposal_);
        const auto x = cospec::kernels::reference::sample_inverse_cdf(proposal_, random_.uniform(), 1.0);
        sampling_target(rows);
        accept = random_.uniform() * proposal_[x] < target_[x];
        if (!accept) {
          const double mass = cospec::kernels::reference::residual(target_, proposal_, residual_);
          benchmark::DoNotOptimize(cospec::kernels::reference::sample_inverse_cdf(residual_, random_.uniform(), mass));
        }
      } else {
        const std::size_t x = cospec::kernels::reference::max_argmax(rows[proposer]).index;
        greedy_scores(rows);
        accept = cospec::kernels::reference::max_argmax(target_).index == x;
      }
      accepted += accept ? 1 : 0;
      step_ = accept ? (step_ + 1) % pattern_.size() : 0;
    }
    return accepted;
  }

 private:
  void sampling_target(const std::vector<std::span<const float>>& rows) {
    if (is_ensemble(info_.combiner)) {
      for (std::size_t k = 0; k < info_.models; ++k) cospec::kernels::reference::softmax(rows[k], softmaxes_[k]);
      cospec::kernels::reference::mixture(softmax_views_, weights_, target_);
    } else {
      cospec::kernels::reference::linear_combination(rows, weights_, target_);
      cospec::kernels::reference::softmax(target_, target_);
    }
  }

  void greedy_scores(const std::vector<std::span<const float>>& rows) {
    if (is_ensemble(info_.combiner)) sampling_target(rows);  // the greedy target of a mixture is the mixture
    else cospec::kernels::reference::linear_combination(rows, weights_, target_);
  }

  const row_bank* bank_;
  case_info info_;
  std::vector<std::size_t> pattern_;
  std::size_t step_ = 0;
  std::vector<float> weights_;
  std::vector<std::vector<float>> softmaxes_;
  std::vector<std::span<const float>> softmax_views_;
  std::vector<float> proposal_, target_, residual_;
  std::vector<std::span<const float>> rows_;
  cospec::random_source random_;
};

void run_scalar(benchmark::State& state, const case_info& info) {
  const row_bank& bank = bank_for(info.models, info.size);
  scalar_round round(bank, info);
  double tokens = 0.0, scalar_seconds = 0.0, floor_seconds = 0.0, accepted = 0.0;
  std::size_t position = prompt.size();
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    accepted += static_cast<double>(round.run(position, scalar_tokens));
    const auto middle = std::chrono::steady_clock::now();
    for (std::size_t t = 0; t < scalar_tokens; ++t) floor_pass(bank, info.models, position + t);
    const auto end = std::chrono::steady_clock::now();
    position += scalar_tokens;
    state.SetIterationTime(seconds_between(start, middle));
    tokens += static_cast<double>(scalar_tokens);
    scalar_seconds += seconds_between(start, middle);
    floor_seconds += seconds_between(middle, end);
  }
  state.counters["scalar_us"] = scalar_seconds / tokens * 1e6;
  state.counters["floor_us"] = floor_seconds / tokens * 1e6;
  state.counters["ratio"] = scalar_seconds / floor_seconds;
  state.counters["acceptance"] = accepted / tokens;
}

void add(const case_info& info) {
  const std::string name = case_name(info);
  registry().emplace_back(name, info);
  auto* benchmark = benchmark::RegisterBenchmark(name.c_str(), [info](benchmark::State& state) {
    if (info.scalar) run_scalar(state, info);
    else if (is_ensemble(info.combiner)) run_cospec(state, info, cospec::weighted_ensemble::uniform(info.models));
    else if (info.models == 2) run_cospec(state, info, cospec::contrastive_decoding(0.1f));
    else run_cospec(state, info, cospec::logit_arithmetic({1.0f, 1.0f, -1.0f}));
  });
  benchmark->Iterations(iterations(info))->Unit(benchmark::kMicrosecond)->Repetitions(repetitions);
  benchmark->ReportAggregatesOnly(true)->UseManualTime();
}

void register_benchmarks() {
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts)
      for (const char* combiner : {"WE", "CD"})
        for (bool sampling : {true, false})
          for (std::size_t chain : chain_lengths)
            for (bool scalar : {false, true}) add({combiner, models, size, sampling, chain, scalar});
  for (std::size_t size : vocabulary_sizes)
    for (std::size_t models : model_counts)
      for (std::size_t chain : chain_lengths) add({"MIX", models, size, true, chain, false});
}

std::string combiner_label(const case_info& info) {
  if (is_mixture(info.combiner)) return info.chain > 1 ? "WE mixture+spec" : "WE mixture";
  if (is_ensemble(info.combiner)) return "WE";
  return info.models == 2 ? "CD mu 0.1" : "proxy 1, 1, -1";
}

/// The console output, then the summary table of docs/benchmarks.md (medians over the
/// repetitions).
class summary_reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type != Run::RT_Aggregate || run.aggregate_name != "median") continue;
      auto& counters = medians_[run.run_name.function_name];
      for (const auto& [name, counter] : run.counters) counters[name] = counter.value;
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf(
        "\n| combiner | n | V | mode | chain | tokens/invocation | acceptance | cospec per token | adapters per token "
        "| floor | cospec / floor | scalar per token | scalar / floor | scalar / cospec | allocations per generate "
        "| allocations per token |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& [name, info] : registry()) {
      if (info.scalar) continue;
      case_info scalar_info = info;
      scalar_info.scalar = true;
      const auto found = medians_.find(name);
      const auto scalar = medians_.find(case_name(scalar_info));
      if (found == medians_.end()) continue;
      const auto& m = found->second;
      std::printf("| %s | %zu | %zu | %s | %zu | %.2f | %.3f | %.1f us | %.1f us | %.1f us | %.2f |",
                  combiner_label(info).c_str(), info.models, info.size, info.sampling ? "sampling" : "greedy",
                  info.chain, m.at("tokens_per_invocation"), m.at("acceptance"), m.at("cospec_us"), m.at("adapter_us"),
                  m.at("floor_us"), m.at("ratio"));
      if (scalar != medians_.end())
        std::printf(" %.1f us | %.1f | %.1f |", scalar->second.at("scalar_us"), scalar->second.at("ratio"),
                    scalar->second.at("scalar_us") / m.at("cospec_us"));
      else
        std::printf(" | | |");
      std::printf(" %.0f | %.3f |\n", m.at("allocs_per_generate"), m.at("allocs_per_token"));
    }
    std::printf(
        "\n| combiner | n | V | mode | chain | proposal | target | verify | kernels alone | cospec | cospec - kernels "
        "| floor | kernels / floor |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& [name, info] : registry()) {
      if (info.scalar) continue;
      const auto found = medians_.find(name);
      if (found == medians_.end()) continue;
      const auto& m = found->second;
      const double kernels = m.at("proposal_us") + m.at("target_us") + m.at("verify_us");
      std::printf("| %s | %zu | %zu | %s | %zu | %.1f us | %.1f us | %.1f us | %.1f us | %.1f us | %.1f us | %.1f us | %.2f |\n",
                  combiner_label(info).c_str(), info.models, info.size, info.sampling ? "sampling" : "greedy",
                  info.chain, m.at("proposal_us"), m.at("target_us"), m.at("verify_us"), kernels, m.at("cospec_us"),
                  m.at("cospec_us") - kernels, m.at("floor_us"), kernels / m.at("floor_us"));
    }
  }

 private:
  std::map<std::string, std::map<std::string, double>> medians_;
};

}  // namespace

int main(int argc, char** argv) {
  if (const char* trace = std::getenv("COSPEC_BENCH_TRACE_ALLOCATIONS"); trace != nullptr && *trace == '1') {
    trace_allocations = true;
    void* frames[4];
    (void)backtrace(frames, 4);  // loads the unwinder now, not inside a counted allocation
  }
  register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  summary_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
