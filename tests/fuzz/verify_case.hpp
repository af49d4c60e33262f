// One fuzz case for the combiners and the verifier: arbitrary bytes become a combiner (kind and
// weights), sampling settings (temperature, top-k/p, min-p, logit bias), a logits processor,
// and a chain of positions with n logit rows each, including NaN, +-inf, huge and subnormal
// values. The case runs the library as the decoder does (target_evaluator, the proposer's
// softmax, speculative_verifier) plus the raw row kernels, and checks what every result must
// satisfy.
//
// Shared by the libFuzzer target (tests/fuzz/fuzz_verify.cpp) and the regression tests
// (tests/test_fuzz_regressions.cpp), so that every input the fuzzer ever found is replayed by
// the normal test suite. The contract of run_verify_case:
//  - it may throw cospec::error: the library rejected the input, as documented;
//  - it throws invariant_violation if a result breaks a documented guarantee (a target that is
//    not a distribution, a token outside the vocabulary or outside the target's support);
//  - anything else escaping it, a crash, a hang or a sanitizer report is a bug.
#pragma once

#include <algorithm>  // std::min, std::max
#include <bit>        // std::bit_cast
#include <cmath>      // std::isfinite, std::isnan, std::abs, std::log
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint8_t, std::uint32_t, std::uint64_t
#include <cstring>    // std::memcpy
#include <limits>     // std::numeric_limits
#include <optional>   // std::optional
#include <span>       // std::span
#include <stdexcept>  // std::logic_error
#include <string>     // std::string, std::to_string
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

namespace cospec::fuzzing {

/// A result broke a guarantee of the library: always a bug.
class invariant_violation : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// Reads the input as a sequence of small decisions. Past the end every read returns 0, so any
/// prefix of an input is an input too (which keeps the fuzzer's mutations meaningful).
class byte_reader {
 public:
  explicit byte_reader(std::span<const std::uint8_t> bytes) noexcept : bytes_(bytes) {}

  std::uint8_t byte() noexcept { return next_ < bytes_.size() ? bytes_[next_++] : std::uint8_t{0}; }
  [[nodiscard]] bool exhausted() const noexcept { return next_ >= bytes_.size(); }

  /// A value in [0, count); count >= 1.
  std::size_t below(std::size_t count) noexcept {
    const std::size_t value = static_cast<std::size_t>(byte()) | static_cast<std::size_t>(byte()) << 8;
    return value % count;
  }

  /// Any float bit pattern: NaNs with payloads, subnormals, infinities.
  float raw_float() noexcept {
    std::uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= static_cast<std::uint32_t>(byte()) << (8 * i);
    return std::bit_cast<float>(bits);
  }

  /// A float where edge cases are as likely as ordinary values.
  float special_or(float ordinary) noexcept {
    static constexpr float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                                         std::numeric_limits<float>::infinity(),
                                         -std::numeric_limits<float>::infinity(),
                                         0.0f,
                                         -0.0f,
                                         std::numeric_limits<float>::max(),
                                         std::numeric_limits<float>::lowest(),
                                         3e38f,
                                         -3e38f,
                                         std::numeric_limits<float>::denorm_min(),
                                         std::numeric_limits<float>::min(),
                                         88.72f,
                                         -87.34f,
                                         1e30f,
                                         -1e30f,
                                         1e-30f};
    const std::uint8_t tag = byte();
    if (tag < 176) return ordinary;
    if (tag < 192) return raw_float();
    return specials[tag % std::size(specials)];
  }

  /// A logit: mostly in [-16, 16), sometimes an edge case.
  float logit() noexcept {
    const float ordinary = static_cast<float>(static_cast<std::int8_t>(byte())) / 8.0f;
    return special_or(ordinary);
  }

  /// A combiner weight: mostly in [-2, 2), sometimes an edge case.
  float weight() noexcept {
    const float ordinary = static_cast<float>(static_cast<std::int8_t>(byte())) / 64.0f;
    return special_or(ordinary);
  }

  /// A probability-like setting: mostly in [0, 1.25], sometimes an edge case.
  float fraction() noexcept {
    const float ordinary = static_cast<float>(byte()) / 204.0f;
    return special_or(ordinary);
  }

 private:
  std::span<const std::uint8_t> bytes_;
  std::size_t next_ = 0;
};

/// The combination a case uses.
enum class combiner_kind : std::uint8_t { weighted_ensemble, logit_arithmetic, contrastive, callable };

/// What the case's logits processor does to the target, said in weights (run_with applies it
/// to the logits): multiply one token's weight by processor_factor, keep only one token, mask
/// every token, multiply every weight by processor_factor.
enum class processor_kind : std::uint8_t { none, scale_token, keep_only_token, zero_all, scale_all };

/// A decoded case: everything run_verify_case needs, independent of the bytes.
struct verify_case {
  combiner_kind combination = combiner_kind::weighted_ensemble;
  std::size_t models = 1;
  std::size_t vocabulary = 1;
  std::vector<float> weights;
  float mu = 0.1f;
  std::optional<float> alpha;
  std::uint8_t callable_mode = 0;
  sampling_settings settings;
  processor_kind processor = processor_kind::none;
  std::size_t processor_token = 0;
  float processor_factor = 1.0f;
  /// positions x models x vocabulary logits.
  std::vector<std::vector<std::vector<float>>> logits;
  std::vector<std::size_t> proposers;           ///< per position, the proposing model
  std::vector<std::int64_t> arbitrary_tokens;   ///< per position, a token verified as is (may be invalid)
  std::uint64_t seed = 0;
};

/// Turns bytes into a case. Never fails: every byte string is a case.
inline verify_case decode_verify_case(std::span<const std::uint8_t> bytes) {
  static constexpr std::size_t vocabulary_sizes[] = {1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257};
  byte_reader in(bytes);
  verify_case c;
  c.combination = static_cast<combiner_kind>(in.byte() % 4);
  c.models = c.combination == combiner_kind::contrastive ? 2 : 1 + in.below(4);
  const std::uint8_t size_choice = in.byte();
  c.vocabulary = size_choice < 200 ? vocabulary_sizes[size_choice % std::size(vocabulary_sizes)]
                                   : 1 + static_cast<std::size_t>(size_choice - 200) * 9;
  for (std::size_t i = 0; i < c.models; ++i) c.weights.push_back(in.weight());
  c.mu = in.weight();
  if (in.byte() % 2 == 1) c.alpha = in.fraction();
  c.callable_mode = in.byte();

  sampling_settings& s = c.settings;
  const std::uint8_t temperature = in.byte();
  if (temperature < 64) s.temperature = 0.0f;  // greedy
  else s.temperature = in.special_or(static_cast<float>(temperature - 63) / 64.0f);
  const std::uint8_t filters = in.byte();
  if (filters & 1) s.top_k = in.below(c.vocabulary + 3);
  if (filters & 2) s.top_p = in.fraction();
  if (filters & 4) s.min_p = in.fraction();
  const std::size_t biases = (filters >> 3) % 4;
  for (std::size_t i = 0; i < biases; ++i) {
    const auto token = static_cast<token_id>(static_cast<std::int64_t>(in.below(c.vocabulary + 2)) - 1);
    s.logit_bias.emplace_back(token, in.special_or(static_cast<float>(static_cast<std::int8_t>(in.byte()))));
  }
  s.seed = in.byte();
  c.seed = s.seed;

  c.processor = static_cast<processor_kind>(in.byte() % 5);
  c.processor_token = in.below(c.vocabulary);
  c.processor_factor = in.special_or(static_cast<float>(in.byte()) / 32.0f);

  const std::size_t positions = 1 + in.below(6);
  for (std::size_t p = 0; p < positions; ++p) {
    std::vector<std::vector<float>> rows(c.models, std::vector<float>(c.vocabulary));
    for (auto& row : rows) {
      // Row shapes a fuzzer would take long to build from independent logits.
      const std::uint8_t shape = in.byte() % 8;
      if (shape == 0) {  // constant
        const float value = in.logit();
        for (float& x : row) x = value;
      } else if (shape == 1) {  // everything masked but a few entries
        for (float& x : row) x = -std::numeric_limits<float>::infinity();
        for (int k = 0; k < 2; ++k) row[in.below(row.size())] = in.logit();
      } else if (shape == 2) {  // one spike over small noise
        for (float& x : row) x = static_cast<float>(static_cast<std::int8_t>(in.byte())) / 1024.0f;
        row[in.below(row.size())] = in.logit() + 40.0f;
      } else {  // independent logits
        for (float& x : row) x = in.logit();
      }
    }
    c.logits.push_back(std::move(rows));
    c.proposers.push_back(in.below(c.models));
    c.arbitrary_tokens.push_back(static_cast<std::int64_t>(in.below(c.vocabulary + 2)) - 1);
  }
  return c;
}

namespace detail {

[[noreturn]] inline void violated(const std::string& what) { throw invariant_violation(what); }

/// A row the library produced as a distribution: finite, non-negative, summing to 1.
inline void check_distribution(std::span<const float> row, const char* what) {
  double total = 0.0;
  for (std::size_t j = 0; j < row.size(); ++j) {
    if (!std::isfinite(row[j]) || !(row[j] >= 0.0f))
      violated(std::string(what) + ": entry " + std::to_string(j) + " is " + std::to_string(row[j]));
    total += row[j];
  }
  if (!(std::abs(total - 1.0) <= 1e-3)) violated(std::string(what) + ": sums to " + std::to_string(total));
}

inline void check_token(std::int64_t token, std::size_t vocabulary, const char* what) {
  if (token < 0 || static_cast<std::size_t>(token) >= vocabulary)
    violated(std::string(what) + ": token " + std::to_string(token) + " outside the vocabulary of " +
             std::to_string(vocabulary));
}

/// The raw kernels on an arbitrary row: no crash, and max_argmax keeps its contract.
inline void check_kernels(std::span<const float> row, float scale, std::span<float> scratch) {
  bool any_nan = false;
  float largest = -std::numeric_limits<float>::infinity();
  for (float x : row) {
    any_nan = any_nan || std::isnan(x);
    if (x > largest) largest = x;
  }
  const kernels::max_location best = kernels::max_argmax(row);
  if (any_nan != std::isnan(best.value)) violated("max_argmax: NaN reported " + std::to_string(!any_nan));
  if (!any_nan) {
    if (best.value != largest) violated("max_argmax: wrong maximum");
    if (largest > -std::numeric_limits<float>::infinity() && (best.index >= row.size() || row[best.index] != largest))
      violated("max_argmax: wrong index");
  }
  const float lse = kernels::log_sum_exp(row, scale);
  if (any_nan && !std::isnan(lse) && lse != std::numeric_limits<float>::infinity())
    violated("log_sum_exp: a NaN row gave " + std::to_string(lse));
  const kernels::exp_row_stats stats = kernels::softmax(row, scratch, scale);
  if (stats.valid()) check_distribution(scratch, "kernels::softmax");
  else if (!any_nan && largest != std::numeric_limits<float>::infinity() &&
           largest > -std::numeric_limits<float>::infinity() && std::isfinite(scale * largest))
    violated("kernels::softmax: a valid row reported invalid");
}

template <class Combiner>
void run_with(Combiner combiner, const verify_case& c) {
  const std::size_t size = c.vocabulary;
  const sampling_settings& settings = c.settings;
  // The processor works on the target's logits: a factor f on a token's weight is log(f)
  // added to its logit (f = 0: -inf; a negative, NaN or infinite factor writes NaN or +inf,
  // which the library reports as invalid_logits), a weight of 0 is -inf.
  const float log_factor = c.processor_factor == 0.0f ? -std::numeric_limits<float>::infinity()
                                                      : std::log(c.processor_factor);
  logits_processor processor;
  switch (c.processor) {
    case processor_kind::none: break;
    case processor_kind::scale_token:
      processor = [&c, log_factor](const processor_context&, std::span<float> logits) {
        logits[c.processor_token] += log_factor;
      };
      break;
    case processor_kind::keep_only_token:
      processor = [&c](const processor_context&, std::span<float> logits) {
        for (std::size_t j = 0; j < logits.size(); ++j)
          if (j != c.processor_token) logits[j] = -std::numeric_limits<float>::infinity();
      };
      break;
    case processor_kind::zero_all:
      processor = [](const processor_context&, std::span<float> logits) {
        for (float& x : logits) x = -std::numeric_limits<float>::infinity();
      };
      break;
    case processor_kind::scale_all:
      processor = [log_factor](const processor_context&, std::span<float> logits) {
        for (float& x : logits) x += log_factor;
      };
      break;
  }
  target_evaluator<Combiner> evaluator(combiner, settings, processor);
  speculative_verifier verifier;
  random_source random(c.seed);
  std::vector<token_id> prefix{0};

  const std::size_t positions = c.logits.size();
  std::vector<std::vector<float>> targets(positions, std::vector<float>(size));
  std::vector<std::vector<float>> proposals(positions, std::vector<float>(size));
  std::vector<token_id> proposed(positions);
  std::vector<float> scratch(size);
  std::size_t reached = 0;  // positions whose target and proposal are known

  for (std::size_t p = 0; p < positions; ++p) {
    std::vector<std::span<const float>> rows(c.logits[p].begin(), c.logits[p].end());
    const logit_rows view(rows);
    const std::size_t k = c.proposers[p];
    if (settings.greedy()) {
      const token_id target = evaluator.greedy_token(view, prefix, scratch);
      check_token(target, size, "greedy_token");
      const kernels::max_location own = kernels::max_argmax(rows[k]);
      if (std::isfinite(own.value)) {
        const verdict v = verify_greedy(static_cast<token_id>(own.index), target);
        if (v.token != target) violated("verify_greedy: emitted a token other than the target's");
      }
      prefix.push_back(target);
      continue;
    }
    evaluator.distribution(view, prefix, targets[p]);
    check_distribution(targets[p], "target_evaluator::distribution");
    combiner.proposal_distribution(k, rows[k], settings.temperature, proposals[p]);
    check_distribution(proposals[p], "proposal_distribution");
    const std::size_t x = kernels::sample_inverse_cdf(proposals[p], random.uniform(), 1.0);
    check_token(static_cast<std::int64_t>(x), size, "sample_inverse_cdf");
    if (!(proposals[p][x] > 0.0f)) violated("sample_inverse_cdf drew a token of probability 0");
    proposed[p] = static_cast<token_id>(x);
    const verdict v = verifier.verify(proposed[p], proposals[p], targets[p], random);
    check_token(v.token, size, "verify");
    if (v.accepted && v.token != proposed[p]) violated("verify: accepted a token other than the proposal");
    if (!(targets[p][static_cast<std::size_t>(v.token)] > 0.0f)) violated("verify: emitted a token the target excludes");
    try {
      const verdict any = verifier.verify(static_cast<token_id>(c.arbitrary_tokens[p]), proposals[p], targets[p], random);
      check_token(any.token, size, "verify (arbitrary token)");
      if (!(targets[p][static_cast<std::size_t>(any.token)] > 0.0f))
        violated("verify (arbitrary token): emitted a token the target excludes");
    } catch (const usage_error&) {
      // A token outside the vocabulary or of proposal probability 0: documented.
    }
    prefix.push_back(v.token);
    reached = p + 1;
  }

  if (reached > 0) {
    const chain_verdict chain = verifier.verify_chain(
        reached, [&](std::size_t i) { return proposed[i]; },
        [&](std::size_t i) { return std::span<const float>(proposals[i]); },
        [&](std::size_t i) { return std::span<const float>(targets[i]); }, random);
    if (chain.accepted > reached) violated("verify_chain: accepted more than the chain");
    if (chain.replacement) {
      check_token(*chain.replacement, size, "verify_chain");
      if (!(targets[chain.accepted][static_cast<std::size_t>(*chain.replacement)] > 0.0f))
        violated("verify_chain: the replacement is outside the target's support");
    }
  }
}

}  // namespace detail

/// Runs a decoded case; see the file comment for what it may throw.
inline void run_verify_case(const verify_case& c) {
  // The raw kernels first: they take any row and never throw.
  // Their precondition: a finite scale > 0 (an inverse temperature).
  const float inverse = 1.0f / c.settings.temperature;
  const float scale = std::isfinite(inverse) && inverse > 0.0f ? inverse : 1.0f;
  std::vector<float> scratch(c.vocabulary);
  for (const auto& position : c.logits)
    for (const auto& row : position) detail::check_kernels(row, scale, scratch);

  validate(c.settings, c.vocabulary);
  switch (c.combination) {
    case combiner_kind::weighted_ensemble: detail::run_with(weighted_ensemble(c.weights), c); break;
    case combiner_kind::logit_arithmetic: {
      std::optional<plausibility_constraint> constraint;
      if (c.alpha) constraint = plausibility_constraint{c.callable_mode % c.models, *c.alpha};
      detail::run_with(logit_arithmetic(c.weights, constraint), c);
      break;
    }
    case combiner_kind::contrastive: detail::run_with(contrastive_decoding(c.mu, c.alpha), c); break;
    case combiner_kind::callable: {
      // f writes target logits from the rows: their maximum, or a scaled first row.
      const std::uint8_t mode = c.callable_mode;
      const float factor = c.mu;
      auto function = [mode, factor](logit_rows rows, std::span<float> out) {
        for (std::size_t j = 0; j < out.size(); ++j) {
          float value = rows[0][j];
          if (mode % 2 == 0)
            for (const auto& row : rows) value = std::max(value, row[j]);
          else value *= factor;
          out[j] = value;
        }
      };
      detail::run_with(callable_combiner(c.models, function), c);
      break;
    }
  }
}

/// Decodes and runs one input.
inline void run_verify_case(std::span<const std::uint8_t> bytes) { run_verify_case(decode_verify_case(bytes)); }

}  // namespace cospec::fuzzing
