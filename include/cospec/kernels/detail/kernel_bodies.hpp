// The row kernels, written once against the lane vocabulary of lanes_portable.hpp and compiled
// once per instruction set (docs/kernels.md, "Run-time dispatch").
//
// No include guard, on purpose: variants.hpp includes this file inside each variant's
// namespace (portable, avx2, avx512), after that variant's lane operations and inside its
// target region, so the same source becomes one set of functions per instruction set. Each
// function takes the variant's tag `isa` first, so that the dispatcher finds it by
// argument-dependent lookup. No lambdas here: clang's region attribute does not reach them.
//
// The contracts are those of the public functions in reduce.hpp, transform.hpp and sample.hpp,
// which dispatch here.

/// The number of floats in one vector of this variant.
inline constexpr std::size_t lane_count(isa) noexcept { return lanes; }

/// Loads the last `count < lanes` elements of a row into a full vector, padding the unused
/// lanes with `fill`. Kernels pad with their operation's neutral element (-inf for max and
/// log-sum-exp, 0 for sums), so the tail runs through exactly the same arithmetic as the body
/// and no row length needs special scalar code.
inline vec load_tail(const float* data, std::size_t count, float fill) noexcept {
  alignas(64) float buffer[lanes];
  for (std::size_t lane = 0; lane < lanes; ++lane) buffer[lane] = lane < count ? data[lane] : fill;
  return load(buffer);
}

/// Stores the first `count < lanes` lanes of a vector.
inline void store_tail(float* data, std::size_t count, vec values) noexcept {
  alignas(64) float buffer[lanes];
  store_lanes(buffer, values);
  for (std::size_t lane = 0; lane < count; ++lane) data[lane] = buffer[lane];
}

/// Loads `count <= lanes` elements, padding with `fill`; folds to a plain load in the body
/// loops, where `count == lanes` is known after inlining.
[[gnu::always_inline]] inline vec load_some(const float* data, std::size_t count, float fill) noexcept {
  return count == lanes ? load(data) : load_tail(data, count, fill);
}

inline float max_lanes(vec values) noexcept {
  alignas(64) float buffer[lanes];
  store_lanes(buffer, values);
  float result = buffer[0];
  for (std::size_t lane = 1; lane < lanes; ++lane) result = buffer[lane] > result ? buffer[lane] : result;
  return result;
}

/// exp(x) per lane for x <= 0 or NaN, within about 2 ulp (docs/kernels.md, "exp"): every
/// caller passes a row shifted by its maximum (times a positive scale) or -|x - m|, so there
/// is no upper clamp and no overflow test. x = n ln 2 + r with n the nearest integer to
/// x / ln 2 and |r| <= ln(2) / 2 (ln 2 split in two parts so that n ln 2 is exact); e^r by a
/// degree-7 polynomial (the minimax coefficients of Cephes' expf); 2^n from exponent bits.
/// exp(-inf) and every result below FLT_MIN are exact zeros (no subnormals), NaN stays NaN.
inline vec exp_lanes(vec x) noexcept {
  constexpr float lowest_argument = -87.33654475f;  // ln(FLT_MIN): 2^n stays a normal float
  const vec clamped = max(splat(lowest_argument), x);  // NaN stays second
  const vec n = round_nearest(mul(clamped, splat(1.44269504088896341f)));
  vec r = fma(n, splat(-0.693359375f), clamped);
  r = fma(n, splat(2.12194440e-4f), r);
  vec p = splat(1.9875691500e-4f);
  p = fma(p, r, splat(1.3981999507e-3f));
  p = fma(p, r, splat(8.3334519073e-3f));
  p = fma(p, r, splat(4.1665795894e-2f));
  p = fma(p, r, splat(1.6666665459e-1f));
  p = fma(p, r, splat(5.0000001201e-1f));
  const vec e_r = add(fma(p, mul(r, r), r), splat(1.0f));
  const vec result = mul(e_r, exp2_integral(n));
  return select(less(x, splat(lowest_argument)), splat(0.0f), result);
}

inline float row_max(isa, std::span<const float> row) noexcept {
  constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
  const std::size_t body = row.size() - row.size() % lanes;
  vec best = splat(minus_infinity);
  for (std::size_t i = 0; i < body; i += lanes) best = max(best, load(row.data() + i));
  if (body < row.size()) best = max(best, load_tail(row.data() + body, row.size() - body, minus_infinity));
  return max_lanes(best);
}

/// Appends to `out` the indices start + lane of the first `width` lanes of `e` that are at
/// least `smallest` (the rare path of exp_sum_collecting); counts past out.size() stop at
/// out.size() + 1.
inline void collect_lanes(vec e, std::size_t start, std::size_t width, float smallest, std::span<std::uint32_t> out,
                          std::size_t& count) noexcept {
  alignas(64) float values[lanes];
  store_lanes(values, e);
  for (std::size_t lane = 0; lane < width && count <= out.size(); ++lane) {
    if (!(values[lane] >= smallest)) continue;
    if (count < out.size()) out[count] = static_cast<std::uint32_t>(start + lane);
    ++count;
  }
}

/// What exp_sum_collecting gathers on the way; unused by the other two.
struct collection {
  float smallest = 0.0f;
  std::span<std::uint32_t> out;
  std::size_t count = 0;
};

/// The exp pass of unnormalized_softmax (Write: also writing the row), exp_sum and
/// exp_sum_collecting (Collect: also gathering the indices whose exp reaches
/// `found.smallest`): one body, so that all three give bit-identical statistics for one row.
/// `shift` is the row's maximum, or NaN to find it first.
template <bool Write, bool Collect>
inline exp_row_stats shifted_exp_sum(isa tag, std::span<const float> row, std::span<float> out, float scale, float shift,
                                     collection& found) noexcept {
  if (std::isnan(shift)) shift = row_max(tag, row);
  if (!std::isfinite(shift)) return {shift, scale, 0.0f};
  const std::size_t size = row.size();
  const vec factor = splat(scale);
  const vec offset = splat(shift);
  const vec limit = splat(found.smallest);
  const std::size_t body = size - size % lanes;
  vec sum = splat(0.0f);
  for (std::size_t i = 0; i < body; i += lanes) {
    const vec e = exp_lanes(mul(sub(load(row.data() + i), offset), factor));
    if constexpr (Write) store(out.data() + i, e);
    sum = add(sum, e);
    if constexpr (Collect)
      if (any(at_least(e, limit))) collect_lanes(e, i, lanes, found.smallest, found.out, found.count);
  }
  if (body < size) {
    const vec x = load_tail(row.data() + body, size - body, -std::numeric_limits<float>::infinity());
    const vec e = exp_lanes(mul(sub(x, offset), factor));
    if constexpr (Write) store_tail(out.data() + body, size - body, e);
    sum = add(sum, e);
    if constexpr (Collect)
      if (any(at_least(e, limit))) collect_lanes(e, body, size - body, found.smallest, found.out, found.count);
  }
  return {shift, scale, reduce_add(sum)};
}

inline exp_row_stats unnormalized_softmax(isa tag, std::span<const float> row, std::span<float> out,
                                          float scale) noexcept {
  collection none;
  return shifted_exp_sum<true, false>(tag, row, out, scale, std::numeric_limits<float>::quiet_NaN(), none);
}

/// The statistics `unnormalized_softmax` returns, without writing the row.
inline exp_row_stats exp_sum(isa tag, std::span<const float> row, float scale) noexcept {
  collection none;
  return shifted_exp_sum<false, false>(tag, row, {}, scale, std::numeric_limits<float>::quiet_NaN(), none);
}

/// `exp_sum`, and on the way the indices j, ascending, whose shifted exp is at least
/// `smallest`: at most out.size() of them, `count` set to their number or to out.size() + 1
/// once there are more (the sum is still completed). The compare rides on the exp pass, which
/// is bound by arithmetic. A `known_max` that is not NaN is the row's maximum, which saves the
/// max pass.
inline exp_row_stats exp_sum_collecting(isa tag, std::span<const float> row, float scale, float smallest,
                                        std::span<std::uint32_t> out, std::size_t& count, float known_max) noexcept {
  collection found{smallest, out, 0};
  const exp_row_stats stats = shifted_exp_sum<false, true>(tag, row, {}, scale, known_max, found);
  count = found.count;
  return stats;
}

inline void scale_row(isa, std::span<float> row, float factor) noexcept {
  const std::size_t body = row.size() - row.size() % lanes;
  const vec f = splat(factor);
  for (std::size_t i = 0; i < body; i += lanes) store(row.data() + i, mul(load(row.data() + i), f));
  for (std::size_t i = body; i < row.size(); ++i) row[i] *= factor;
}

/// One vector of `linear_combination` at `offset` (`count` lanes), with the rules for
/// infinite inputs: a `-inf` anywhere masks, a `+inf` gives NaN.
inline vec linear_combination_with_infinities(std::span<const std::span<const float>> rows, std::span<const float> weights,
                                              float scale, std::size_t offset, std::size_t count) noexcept {
  const vec masked = splat(-std::numeric_limits<float>::infinity());
  const vec positive_infinity = splat(std::numeric_limits<float>::infinity());
  vec accumulator = splat(0.0f);
  mask is_masked = no_lanes();
  mask overflow = no_lanes();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (weights[i] == 0.0f) continue;
    const vec x = load_some(rows[i].data() + offset, count, 0.0f);
    is_masked = either(is_masked, equal(x, masked));
    overflow = either(overflow, equal(x, positive_infinity));
    accumulator = fma(splat(weights[i] * scale), x, accumulator);
  }
  const vec combined = select(is_masked, masked, accumulator);
  return select(overflow, splat(std::numeric_limits<float>::quiet_NaN()), combined);
}

/// One vector of `linear_combination`. The sum of products alone is the answer unless an input
/// is infinite, which leaves the sum infinite or NaN: only then are the rules applied, so that
/// finite rows pay one check per vector instead of two compares per row.
[[gnu::always_inline]] inline vec linear_combination_at(std::span<const std::span<const float>> rows, std::span<const float> weights,
                                 float scale, std::size_t offset, std::size_t count) noexcept {
  vec accumulator = splat(0.0f);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (weights[i] == 0.0f) continue;
    accumulator = fma(splat(weights[i] * scale), load_some(rows[i].data() + offset, count, 0.0f), accumulator);
  }
  // x - x is 0 for a finite x and NaN for an infinite or NaN one. A finite sum can still come
  // from finite inputs only (infinite products never cancel to a finite value), so it is the
  // rules' result too; an overflowed sum of finite inputs goes to the same path, which returns it.
  if (!any(is_nan(sub(accumulator, accumulator)))) return accumulator;
  return linear_combination_with_infinities(rows, weights, scale, offset, count);
}

inline void linear_combination(isa, std::span<const std::span<const float>> rows, std::span<const float> weights,
                               std::span<float> out, float scale) noexcept {
  // Full vectors with the constant `lanes` (the loads fold to plain loads after inlining),
  // then one padded tail.
  const std::size_t size = out.size();
  const std::size_t body = size - size % lanes;
  for (std::size_t j = 0; j < body; j += lanes) store(out.data() + j, linear_combination_at(rows, weights, scale, j, lanes));
  if (body < size) store_tail(out.data() + body, size - body, linear_combination_at(rows, weights, scale, body, size - body));
}

inline void mask_below(isa, std::span<const float> reference, float threshold, std::span<float> out) noexcept {
  const std::size_t size = out.size();
  const std::size_t body = size - size % lanes;
  const vec limit = splat(threshold);
  const vec masked = splat(-std::numeric_limits<float>::infinity());
  for (std::size_t j = 0; j < body; j += lanes) {
    const vec value = load(out.data() + j);
    const mask drop = and_not(less(load(reference.data() + j), limit), is_nan(value));
    store(out.data() + j, select(drop, masked, value));
  }
  for (std::size_t j = body; j < size; ++j)
    if (reference[j] < threshold && !std::isnan(out[j])) out[j] = -std::numeric_limits<float>::infinity();
}

/// One vector of `mixture` at `offset` (`count` lanes). Always inlined, so that the body loop's
/// constant `count == lanes` folds its loads to plain ones: called, it measured 1.2x slower.
[[gnu::always_inline]] inline vec mixture_at(std::span<const std::span<const float>> rows, std::span<const float> weights,
                      std::size_t offset, std::size_t count) noexcept {
  vec accumulator = splat(0.0f);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (weights[i] == 0.0f) continue;
    accumulator = fma(splat(weights[i]), load_some(rows[i].data() + offset, count, 0.0f), accumulator);
  }
  return accumulator;
}

inline void mixture(isa, std::span<const std::span<const float>> rows, std::span<const float> weights,
                    std::span<float> out) noexcept {
  const std::size_t size = out.size();
  const std::size_t body = size - size % lanes;
  for (std::size_t j = 0; j < body; j += lanes) store(out.data() + j, mixture_at(rows, weights, j, lanes));
  if (body < size) store_tail(out.data() + body, size - body, mixture_at(rows, weights, body, size - body));
}

inline float residual(isa, std::span<const float> target, std::span<const float> proposal, std::span<float> out,
                      float target_scale) noexcept {
  const std::size_t size = out.size();
  const vec zero = splat(0.0f);
  const vec factor = splat(target_scale);
  const std::size_t body = size - size % lanes;
  vec sum = zero;
  for (std::size_t j = 0; j < body; j += lanes) {
    const vec d = max(zero, fms(load(target.data() + j), factor, load(proposal.data() + j)));
    store(out.data() + j, d);
    sum = add(sum, d);
  }
  if (body < size) {
    const vec d = max(zero, fms(load_tail(target.data() + body, size - body, 0.0f), factor,
                                load_tail(proposal.data() + body, size - body, 0.0f)));
    store_tail(out.data() + body, size - body, d);
    sum = add(sum, d);
  }
  return reduce_add(sum);
}

/// One step of `max_argmax`: each lane keeps its maximum and the block where it first saw it.
inline void argmax_visit(vec x, vec& best, vec& best_block, vec& block, mask& nan_seen) noexcept {
  nan_seen = either(nan_seen, is_nan(x));
  const mask greater_than_best = greater(x, best);  // strict: each lane keeps its first occurrence
  best = select(greater_than_best, x, best);
  best_block = select(greater_than_best, block, best_block);
  block = add(block, splat(1.0f));
}

inline max_location max_argmax(isa, std::span<const float> row) noexcept {
  constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
  const std::size_t body = row.size() - row.size() % lanes;
  vec best = splat(minus_infinity);
  vec best_block = splat(0.0f);  // the block in which each lane saw its maximum
  vec block = splat(0.0f);
  mask nan_seen = no_lanes();
  for (std::size_t i = 0; i < body; i += lanes) argmax_visit(load(row.data() + i), best, best_block, block, nan_seen);
  if (body < row.size())
    argmax_visit(load_tail(row.data() + body, row.size() - body, minus_infinity), best, best_block, block, nan_seen);
  if (any(nan_seen)) return {std::numeric_limits<float>::quiet_NaN(), 0};

  alignas(64) float values[lanes];
  alignas(64) float blocks[lanes];
  store_lanes(values, best);
  store_lanes(blocks, best_block);
  max_location result{minus_infinity, 0};
  bool found = false;
  for (std::size_t lane = 0; lane < lanes; ++lane) {
    if (!(values[lane] > minus_infinity)) continue;
    const std::size_t index = static_cast<std::size_t>(blocks[lane]) * lanes + lane;
    if (!found || values[lane] > result.value || (values[lane] == result.value && index < result.index)) {
      result = {values[lane], index};
      found = true;
    }
  }
  return result;
}

/// One step of `log_sum_exp` on an already scaled x: e = exp(-|x - m|) rescales whichever of
/// the running sum and the new term is the smaller one, so the online rescaling costs no second exp.
inline void log_sum_exp_step(vec x, vec& running_max, vec& running_sum) noexcept {
  const vec difference = sub(x, running_max);
  const vec e = exp_lanes(sub(splat(0.0f), abs(difference)));
  const mask raises = greater(difference, splat(0.0f));
  running_sum = select(raises, fma(running_sum, e, splat(1.0f)), add(running_sum, e));
  running_max = select(raises, x, running_max);
}

/// One step of `log_sum_exp`: the entries times the scale, then log_sum_exp_step.
inline void log_sum_exp_visit(vec raw, vec factor, vec& running_max, vec& running_sum) noexcept {
  log_sum_exp_step(mul(raw, factor), running_max, running_sum);
}

/// log_sum_exp's result from its per-lane running maxima and sums.
inline float log_sum_exp_of_lanes(vec running_max, vec running_sum) noexcept {
  constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
  alignas(64) float maxima[lanes];
  alignas(64) float sums[lanes];
  store_lanes(maxima, running_max);
  store_lanes(sums, running_sum);
  float overall_max = maxima[0];
  for (std::size_t lane = 1; lane < lanes; ++lane) overall_max = maxima[lane] > overall_max ? maxima[lane] : overall_max;
  double total = 0.0;
  for (std::size_t lane = 0; lane < lanes; ++lane) {
    if (sums[lane] == 0.0f) continue;  // a lane that saw only masks
    total += static_cast<double>(sums[lane]) * std::exp(static_cast<double>(maxima[lane]) - overall_max);
  }
  if (std::isnan(total)) return std::numeric_limits<float>::quiet_NaN();
  if (total == 0.0) return minus_infinity;
  return static_cast<float>(static_cast<double>(overall_max) + std::log(total));
}

inline float log_sum_exp(isa, std::span<const float> row, float scale) noexcept {
  constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
  const std::size_t body = row.size() - row.size() % lanes;
  // Starting from the lowest finite value rather than -inf keeps x - m defined for masked x.
  vec running_max = splat(std::numeric_limits<float>::lowest());
  vec running_sum = splat(0.0f);
  const vec factor = splat(scale);
  for (std::size_t i = 0; i < body; i += lanes) log_sum_exp_visit(load(row.data() + i), factor, running_max, running_sum);
  if (body < row.size())
    log_sum_exp_visit(load_tail(row.data() + body, row.size() - body, minus_infinity), factor, running_max, running_sum);
  return log_sum_exp_of_lanes(running_max, running_sum);
}

/// At most four rows with non-zero weights (weight times scale), gathered once per call, so that
/// combination_log_sum_exp's loop runs over a row count known at compile time: the general loop
/// over a span of rows, testing each weight per vector, measured about 1.5x slower.
struct weighted_rows {
  static constexpr std::size_t capacity = 4;
  const float* data[capacity];
  float weight[capacity];
  std::size_t count;
};

/// One vector of the combination of `rows` at `offset` (`count` lanes), the rules for infinite
/// inputs applied only where the plain sum is not finite (as linear_combination_at).
template <std::size_t N>
[[gnu::always_inline]] inline vec fixed_combination_at(const weighted_rows& fixed, std::span<const std::span<const float>> rows,
                                                       std::span<const float> weights, float scale, std::size_t offset,
                                                       std::size_t count) noexcept {
  if constexpr (N == 0) {  // more rows than weighted_rows holds
    return linear_combination_at(rows, weights, scale, offset, count);
  } else {
    vec accumulator = splat(0.0f);
    for (std::size_t k = 0; k < N; ++k)
      accumulator = fma(splat(fixed.weight[k]), load_some(fixed.data[k] + offset, count, 0.0f), accumulator);
    if (!any(is_nan(sub(accumulator, accumulator)))) return accumulator;
    return linear_combination_with_infinities(rows, weights, scale, offset, count);
  }
}

/// The last `count < lanes` entries of the combination, with the unused lanes at -inf (the
/// neutral element of log_sum_exp).
template <std::size_t N>
inline vec fixed_combination_tail(const weighted_rows& fixed, std::span<const std::span<const float>> rows,
                                  std::span<const float> weights, float scale, std::size_t offset,
                                  std::size_t count) noexcept {
  alignas(64) float buffer[lanes];
  for (std::size_t lane = 0; lane < lanes; ++lane) buffer[lane] = -std::numeric_limits<float>::infinity();
  store_tail(buffer, count, fixed_combination_at<N>(fixed, rows, weights, scale, offset, count));
  return load(buffer);
}

template <std::size_t N>
inline float fixed_combination_log_sum_exp(const weighted_rows& fixed, std::span<const std::span<const float>> rows,
                                           std::span<const float> weights, float scale) noexcept {
  const std::size_t size = rows[0].size();
  const std::size_t body = size - size % lanes;
  vec running_max = splat(std::numeric_limits<float>::lowest());
  vec running_sum = splat(0.0f);
  if constexpr (N > 0) {
    // First the plain sums of products, with no test per vector: `poison` turns NaN once any
    // sum is not finite (z - z is 0 for a finite z), and only then is the row done again with
    // the rules for infinite inputs. Finite rows, the common case, pay two operations per vector.
    vec poison = splat(0.0f);
    for (std::size_t j = 0; j < body; j += lanes) {
      vec z = splat(0.0f);
      for (std::size_t k = 0; k < N; ++k) z = fma(splat(fixed.weight[k]), load(fixed.data[k] + j), z);
      poison = add(poison, sub(z, z));
      log_sum_exp_step(z, running_max, running_sum);
    }
    if (!any(is_nan(poison))) {
      if (body < size)
        log_sum_exp_step(fixed_combination_tail<N>(fixed, rows, weights, scale, body, size - body), running_max,
                         running_sum);
      return log_sum_exp_of_lanes(running_max, running_sum);
    }
    running_max = splat(std::numeric_limits<float>::lowest());
    running_sum = splat(0.0f);
  }
  for (std::size_t j = 0; j < body; j += lanes)
    log_sum_exp_step(fixed_combination_at<N>(fixed, rows, weights, scale, j, lanes), running_max, running_sum);
  if (body < size)
    log_sum_exp_step(fixed_combination_tail<N>(fixed, rows, weights, scale, body, size - body), running_max, running_sum);
  return log_sum_exp_of_lanes(running_max, running_sum);
}

/// log_sum_exp of the combination z = linear_combination(rows, weights, scale), without writing
/// z: one pass that forms z and keeps log_sum_exp's running maximum and sum, so the result is
/// bit for bit log_sum_exp(z). Not finite when z has a NaN (an invalid input), overflowed to
/// +inf, or is fully masked (-inf).
inline float combination_log_sum_exp(isa, std::span<const std::span<const float>> rows, std::span<const float> weights,
                                     float scale) noexcept {
  weighted_rows fixed{};
  std::size_t weighted = 0;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (weights[i] == 0.0f) continue;
    if (weighted < weighted_rows::capacity) {
      fixed.data[weighted] = rows[i].data();
      fixed.weight[weighted] = weights[i] * scale;
    }
    ++weighted;
  }
  fixed.count = weighted;
  switch (weighted) {
    case 1: return fixed_combination_log_sum_exp<1>(fixed, rows, weights, scale);
    case 2: return fixed_combination_log_sum_exp<2>(fixed, rows, weights, scale);
    case 3: return fixed_combination_log_sum_exp<3>(fixed, rows, weights, scale);
    case 4: return fixed_combination_log_sum_exp<4>(fixed, rows, weights, scale);
    default: return fixed_combination_log_sum_exp<0>(fixed, rows, weights, scale);
  }
}

inline std::size_t sample_inverse_cdf(isa, std::span<const float> weights, double u, double total) noexcept {
  constexpr std::size_t block = 4 * lanes;
  const double target = u * total;
  const std::size_t size = weights.size();
  const std::size_t body = size - size % block;
  double cumulative = 0.0;
  std::size_t start = 0;
  for (; start < body; start += block) {
    const float* p = weights.data() + start;
    const vec partial = add(add(load(p), load(p + lanes)), add(load(p + 2 * lanes), load(p + 3 * lanes)));
    const double block_mass = static_cast<double>(reduce_add(partial));
    if (cumulative + block_mass > target) break;
    cumulative += block_mass;
  }
  // Sequential from the chosen block on; it normally returns inside that block, and running on
  // covers a float partial sum that rounded up past the target.
  for (std::size_t i = start; i < size; ++i) {
    cumulative += static_cast<double>(weights[i]);
    if (weights[i] > 0.0f && cumulative > target) return i;
  }
  // Only rounding gets here: fall back to the last positive entry.
  for (std::size_t i = size; i-- > 0;)
    if (weights[i] > 0.0f) return i;
  return size;
}
