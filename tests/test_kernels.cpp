// The row kernels (include/cospec/kernels/) against their scalar references
// (include/cospec/kernels/reference.hpp), on seeded random rows, extreme rows and invalid rows.
// docs/kernels.md states the numerical contract; every tolerance below says what it allows and
// where that bound comes from. Exact answers are compared exactly.
#include <algorithm>  // std::max, std::min, std::count_if, std::reverse
#include <cmath>      // std::abs, std::exp, std::log, std::sqrt, std::nextafter, std::isnan, ...
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <iomanip>    // std::setprecision
#include <limits>     // std::numeric_limits
#include <numbers>    // std::numbers::pi
#include <random>     // std::mt19937_64
#include <span>       // std::span
#include <sstream>    // std::ostringstream
#include <string>     // std::string
#include <vector>     // std::vector

#include <catch2/catch.hpp>

#include "cospec/kernels.hpp"
#include "cospec/kernels/reference.hpp"

namespace {

namespace kernels = cospec::kernels;
namespace reference = cospec::kernels::reference;
// The width of the variant these tests run (the widest the CPU has, or COSPEC_INSTRUCTION_SET):
// tail positions and rounding bounds depend on it.
const std::size_t lanes = kernels::detail::active_lane_count();

constexpr float minus_infinity = -std::numeric_limits<float>::infinity();
constexpr float plus_infinity = std::numeric_limits<float>::infinity();
constexpr float not_a_number = std::numeric_limits<float>::quiet_NaN();
constexpr float largest_float = std::numeric_limits<float>::max();
constexpr float smallest_normal_float = std::numeric_limits<float>::min();

/// Unit roundoff of float32 (half an ulp of 1): every correctly rounded float operation has a
/// relative error of at most this.
constexpr double unit_roundoff = 0x1p-24;

/// Row lengths: a single partial SIMD block, both sides of 32 (a multiple of every lane count),
/// and real vocabularies (Llama 2: 32000; Qwen2: 151936 and 152064).
constexpr std::size_t row_lengths[] = {1, 2, 7, 31, 33, 1000, 32000, 151936, 152064};

// ---------------------------------------------------------------------------------------------
// Seeded rows
// ---------------------------------------------------------------------------------------------

/// A seeded source of random rows. std::mt19937_64 is specified bit for bit and the transforms
/// are written out here (std::normal_distribution is not portable), so every standard library
/// produces the same rows, up to the last bit of std::log and std::cos.
class row_source {
 public:
  explicit row_source(std::uint64_t seed) : engine_(seed) {}

  /// Uniform on [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1p-53; }

  /// Standard normal by the Box-Muller transform.
  double normal() {
    const double radius = std::sqrt(-2.0 * std::log(1.0 - uniform()));
    return radius * std::cos(2.0 * std::numbers::pi * uniform());
  }

  /// Uniform integer in [0, count).
  std::size_t below(std::size_t count) { return static_cast<std::size_t>(uniform() * static_cast<double>(count)); }

  std::vector<float> normal_row(std::size_t size, double mean, double sigma) {
    std::vector<float> row(size);
    for (float& x : row) x = static_cast<float>(mean + sigma * normal());
    return row;
  }

  /// softmax of normal logits (computed by the reference): the rows the filters and the
  /// sampler see in decoding.
  std::vector<float> distribution(std::size_t size, double sigma) {
    const std::vector<float> logits = normal_row(size, 0.0, sigma);
    std::vector<float> probabilities(size);
    reference::softmax(logits, probabilities);
    return probabilities;
  }

  /// Integers 0..largest as floats: exact sums, and many ties.
  std::vector<float> small_integer_row(std::size_t size, std::size_t largest) {
    std::vector<float> row(size);
    for (float& x : row) x = static_cast<float>(below(largest + 1));
    return row;
  }

 private:
  std::mt19937_64 engine_;
};

// ---------------------------------------------------------------------------------------------
// Tolerances and comparisons
// ---------------------------------------------------------------------------------------------

/// Terms each SIMD lane adds sequentially in a row of `size` entries.
std::size_t terms_per_lane(std::size_t size) { return (size + lanes - 1) / lanes; }

/// Relative error allowed for a float32 sum of non-negative terms accumulated in SIMD lanes
/// (each lane adds n = ceil(V / lanes) terms, then log2(lanes) additions join the lanes).
/// The worst-case bound is (n - 1) u (Higham, Accuracy and Stability of Numerical Algorithms,
/// section 4.2): 1.1e-3 for V = 152064 on 8 lanes, too loose to catch anything. Rounding errors
/// of round-to-nearest behave as independent zero-mean variables, and then the error is below
/// lambda sqrt(n) u with probability about 1 - 2n exp(-lambda^2 / 2) or more (Higham and Mary,
/// SIAM J. Sci. Comput. 41(5), 2019); lambda = 8 makes that 1 - 5e-10 at n = 19008. The extra
/// 8 u covers the lane join and one exp or division per term. Measured: about 2 sqrt(n) u.
double lane_sum_relative_tolerance(std::size_t size) {
  return (8.0 * std::sqrt(static_cast<double>(terms_per_lane(size))) + 8.0) * unit_roundoff;
}

/// Largest finite |scale * x| of a row (0 if none is finite).
double largest_finite_magnitude(std::span<const float> row, double scale = 1.0) {
  double largest = 0.0;
  for (float x : row)
    if (std::isfinite(x)) largest = std::max(largest, std::abs(scale * x));
  return largest;
}

/// Relative error allowed for the one-pass log-sum-exp sum on evenly spaced ramps, where the
/// probabilistic model of lane_sum_relative_tolerance does not apply. On an ascending ramp the
/// maximum rises at every entry of a lane, and every rise rescales the running sum by a float32
/// exp(-(x - m)) and rounds a fused multiply-add: up to u for the rounding and 2 u for exp.
/// x - m is the same at every step, so these errors do not cancel but add up; on a flat ramp
/// the terms are nearly equal and the additions' roundings are correlated too. The bound is
/// therefore the worst case, 3 n u with n = ceil(V / lanes). Measured: up to 0.14 n u on
/// ascending ramps (1.5e-4 at V = 152064 on 8 lanes, where a two-pass sum stays near 1.5e-5).
double ramp_relative_tolerance(std::size_t size) {
  return 3.0 * static_cast<double>(terms_per_lane(size)) * unit_roundoff;
}

/// Absolute tolerance of a log-sum-exp against the double reference `expected`:
/// - the log turns the relative error of the float32 sum of exponentials into an absolute one
///   (lane_sum_relative_tolerance);
/// - each exponent scale * x - m is a float32 product and subtraction, off by at most
///   u |scale * x| + u |scale * x - m| <= 3 u max|scale * x|, which shifts the result by as much;
/// - the result is rounded to float32: u |lse|.
double log_sum_exp_tolerance(std::span<const float> row, double expected, double scale = 1.0) {
  return lane_sum_relative_tolerance(row.size()) +
         unit_roundoff * (3.0 * largest_finite_magnitude(row, scale) + std::abs(expected));
}

/// Compares rows entry by entry. Returns "" when every entry is within tolerance(j) of the
/// expected one (an infinite or NaN expectation must be met exactly), otherwise a description
/// of the first entry that is not, which Catch prints (a whole 152064-entry row would not help).
template <class Tolerance>
std::string first_difference(std::span<const float> got, std::span<const float> expected, Tolerance tolerance) {
  if (got.size() != expected.size()) return "sizes differ";
  for (std::size_t j = 0; j < got.size(); ++j) {
    const double g = got[j];
    const double e = expected[j];
    bool same = false;
    if (std::isnan(e)) same = std::isnan(g);
    else if (std::isinf(e)) same = g == e;
    else same = std::isfinite(g) && std::abs(g - e) <= tolerance(j);
    if (!same) {
      std::ostringstream text;
      text << std::setprecision(10) << "entry " << j << " of " << got.size() << ": got " << g << ", expected " << e
           << ", tolerance " << tolerance(j);
      return text.str();
    }
  }
  return "";
}

/// Bit-exact comparison (except that +0 and -0 compare equal).
std::string first_difference(std::span<const float> got, std::span<const float> expected) {
  return first_difference(got, expected, [](std::size_t) { return 0.0; });
}

/// The kept sum a filter should return: the entries left in the row summed in double in index
/// order, as the filters do, and rounded to float.
float remaining_sum(std::span<const float> row) {
  double sum = 0.0;
  for (float w : row) sum += w;
  return static_cast<float>(sum);
}

std::size_t count_positive(std::span<const float> row) {
  return static_cast<std::size_t>(std::count_if(row.begin(), row.end(), [](float w) { return w > 0.0f; }));
}

/// Indices at which to plant a special value in a row: every index of a short row, and for a
/// long one the first and last lane of the first block, the last full block, the tail and a
/// few seeded places.
std::vector<std::size_t> probe_positions(std::size_t size, row_source& source) {
  std::vector<std::size_t> positions;
  if (size <= 2 * lanes + 1) {
    for (std::size_t j = 0; j < size; ++j) positions.push_back(j);
    return positions;
  }
  const std::size_t body = size - size % lanes;
  positions = {0, 1, lanes - 1, lanes, body - 1, size - 1};
  if (body < size) positions.push_back(body);
  for (int i = 0; i < 4; ++i) positions.push_back(source.below(size));
  return positions;
}

}  // namespace

// =============================================================================================
// max_argmax
// =============================================================================================

TEST_CASE("max_argmax equals the reference on random rows of every length", "[kernels][reduce]") {
  for (std::size_t size : row_lengths) {
    row_source source(100 + size);
    for (double sigma : {1.0, 1e3}) {
      const std::vector<float> row = source.normal_row(size, 0.0, sigma);
      const auto got = kernels::max_argmax(row);
      const auto expected = reference::max_argmax(row);
      INFO("size " << size << ", sigma " << sigma);
      CHECK(got.value == expected.value);  // a maximum involves no arithmetic: exact
      CHECK(got.index == expected.index);
    }
  }
}

TEST_CASE("max_argmax breaks ties by the first index, within and across lanes", "[kernels][reduce]") {
  SECTION("every pair of maxima in a 33-entry row") {
    for (std::size_t first = 0; first < 33; ++first)
      for (std::size_t second = first + 1; second < 33; ++second) {
        std::vector<float> row(33, -1.0f);
        row[first] = 2.0f;
        row[second] = 2.0f;
        INFO("maxima at " << first << " and " << second);
        REQUIRE(kernels::max_argmax(row).index == first);
      }
  }
  SECTION("random rows of small integers, full of ties") {
    for (std::size_t size : row_lengths) {
      row_source source(200 + size);
      const std::vector<float> row = source.small_integer_row(size, 3);
      INFO("size " << size);
      CHECK(kernels::max_argmax(row).index == reference::max_argmax(row).index);
    }
  }
  SECTION("the tie test tells a last-occurrence argmax from the right one") {
    // A deliberately broken argmax that uses >= keeps the last of equal maxima; the rows
    // above must catch it, or they would not be testing the tie order at all.
    auto last_occurrence = [](std::span<const float> row) {
      std::size_t best = 0;
      for (std::size_t j = 1; j < row.size(); ++j)
        if (row[j] >= row[best]) best = j;
      return best;
    };
    row_source source(201);
    const std::vector<float> row = source.small_integer_row(1000, 3);
    CHECK(last_occurrence(row) != reference::max_argmax(row).index);
    CHECK(kernels::max_argmax(row).index == reference::max_argmax(row).index);
  }
}

TEST_CASE("max_argmax handles rows near the float maximum, infinities and masks", "[kernels][reduce][extreme]") {
  for (std::size_t size : row_lengths) {
    row_source source(300 + size);
    INFO("size " << size);
    {
      INFO("values near 3e38 with the float maximum tied");
      std::vector<float> row(size);
      for (float& x : row) x = static_cast<float>(3.0e38 + 3.0e37 * source.uniform());
      row[source.below(size)] = largest_float;
      row[source.below(size)] = largest_float;
      const auto got = kernels::max_argmax(row);
      CHECK(got.value == largest_float);
      CHECK(got.index == reference::max_argmax(row).index);
    }
    {
      INFO("values near -3e38");
      std::vector<float> row(size);
      for (float& x : row) x = static_cast<float>(-3.0e38 - 3.0e37 * source.uniform());
      const auto got = kernels::max_argmax(row);
      const auto expected = reference::max_argmax(row);
      CHECK(got.value == expected.value);
      CHECK(got.index == expected.index);
    }
    {
      INFO("a single finite entry among -inf");
      for (std::size_t position : probe_positions(size, source)) {
        std::vector<float> row(size, minus_infinity);
        row[position] = -12345.0f;
        const auto got = kernels::max_argmax(row);
        CHECK(got.value == -12345.0f);
        CHECK(got.index == position);
      }
    }
    {
      INFO("+inf is a value like any other: the first +inf wins");
      for (std::size_t position : probe_positions(size, source)) {
        std::vector<float> row = source.normal_row(size, 0.0, 1.0);
        row[position] = plus_infinity;
        if (position + 1 < size) row[size - 1] = plus_infinity;
        const auto got = kernels::max_argmax(row);
        CHECK(got.value == plus_infinity);
        CHECK(got.index == position);
      }
    }
  }
}

TEST_CASE("max_argmax reports NaN for a NaN anywhere and -inf for an all -inf row", "[kernels][reduce][invalid]") {
  for (std::size_t size : row_lengths) {
    row_source source(400 + size);
    INFO("size " << size);
    std::string missed;  // the positions at which a NaN went unreported
    for (std::size_t position : probe_positions(size, source)) {
      std::vector<float> row = source.normal_row(size, 0.0, 1.0);
      row[position] = not_a_number;
      if (!std::isnan(kernels::max_argmax(row).value)) (missed += ' ') += std::to_string(position);
    }
    CHECK(missed == "");
    const std::vector<float> masked(size, minus_infinity);
    const auto got = kernels::max_argmax(masked);
    CHECK(got.value == minus_infinity);
    CHECK(got.index == 0);
  }
  const auto empty = kernels::max_argmax(std::span<const float>{});
  CHECK(empty.value == minus_infinity);
  CHECK(empty.index == 0);
}

// =============================================================================================
// log_sum_exp
// =============================================================================================

TEST_CASE("log_sum_exp equals the reference on random rows of every length and scale", "[kernels][reduce]") {
  for (std::size_t size : row_lengths) {
    row_source source(500 + size);
    for (double sigma : {1.0, 3.0, 10.0}) {
      const std::vector<float> row = source.normal_row(size, 0.0, sigma);
      for (float scale : {1.0f, 0.5f, 1.7f}) {
        const double expected = reference::log_sum_exp(row, scale);
        INFO("size " << size << ", sigma " << sigma << ", scale " << scale);
        // log_sum_exp_tolerance: float32 lane sums, float32 exponents, float32 result.
        CHECK(std::abs(kernels::log_sum_exp(row, scale) - expected) <= log_sum_exp_tolerance(row, expected, scale));
      }
    }
  }
}

TEST_CASE("log_sum_exp is accurate where a naive float exp overflows or underflows", "[kernels][reduce][extreme]") {
  for (std::size_t size : row_lengths) {
    row_source source(600 + size);
    INFO("size " << size);
    auto check = [&](const std::vector<float>& row, const char* what, bool ramp = false) {
      const double expected = reference::log_sum_exp(row);
      INFO(what);
      // log_sum_exp_tolerance: float32 lane sums, float32 exponents, float32 result; on ramps
      // the worst-case bound of correlated roundings, ramp_relative_tolerance, on top.
      const double tolerance =
          log_sum_exp_tolerance(row, expected) + (ramp ? ramp_relative_tolerance(size) : 0.0);
      CHECK(std::abs(kernels::log_sum_exp(row) - expected) <= tolerance);
    };
    check(source.normal_row(size, 80.0, 1.0), "rows near 80 (exp(80) * V overflows float)");
    check(source.normal_row(size, 100.0, 5.0), "rows near 100 (exp overflows)");
    check(source.normal_row(size, -1e4, 1.0), "rows near -1e4 (exp underflows to 0)");
    check(source.normal_row(size, -1e4, 100.0), "rows near -1e4 spread over hundreds");
    check(source.normal_row(size, 3e38, 4e36), "rows near 3e38 (differences overflow)");
    std::vector<float> wide(size);
    for (float& x : wide) x = static_cast<float>(-1e30 * source.uniform());
    check(wide, "a large negative range [-1e30, 0]");
    std::vector<float> ascending(size);
    for (std::size_t j = 0; j < size; ++j) ascending[j] = static_cast<float>(-1e4 + 1e4 * static_cast<double>(j) / static_cast<double>(size));
    check(ascending, "an ascending ramp over [-1e4, 0]: the running maximum rises at every entry", true);
    std::vector<float> gentle(size);
    for (std::size_t j = 0; j < size; ++j) gentle[j] = static_cast<float>(static_cast<double>(j) / static_cast<double>(size));
    check(gentle, "an ascending ramp over [0, 1]: many tiny rescalings of the running sum", true);
    std::vector<float> flat(size);
    for (std::size_t j = 0; j < size; ++j) flat[j] = static_cast<float>(0.01 * static_cast<double>(j) / static_cast<double>(size));
    check(flat, "an ascending ramp over [0, 0.01]: nearly equal terms, each one a new maximum", true);
    std::reverse(flat.begin(), flat.end());
    check(flat, "the same ramp descending: no rescaling, but nearly equal terms (correlated roundings)", true);
    std::vector<float> extremes(size, std::numeric_limits<float>::lowest());
    extremes[size / 2] = largest_float;
    check(extremes, "the float minimum and maximum together");
  }
}

TEST_CASE("log_sum_exp ignores -inf masks and returns the lone finite entry exactly", "[kernels][reduce][extreme]") {
  for (std::size_t size : row_lengths) {
    row_source source(700 + size);
    INFO("size " << size);
    for (double masked_fraction : {0.5, 0.99}) {
      std::vector<float> row = source.normal_row(size, 0.0, 2.0);
      for (float& x : row)
        if (source.uniform() < masked_fraction) x = minus_infinity;
      row[source.below(size)] = 1.0f;  // at least one finite entry
      const double expected = reference::log_sum_exp(row);
      INFO("masked fraction " << masked_fraction);
      // log_sum_exp_tolerance: float32 lane sums, float32 exponents, float32 result.
      CHECK(std::abs(kernels::log_sum_exp(row) - expected) <= log_sum_exp_tolerance(row, expected));
    }
    for (std::size_t position : probe_positions(size, source)) {
      std::vector<float> row(size, minus_infinity);
      row[position] = -7.25f;
      INFO("finite entry at " << position);
      CHECK(kernels::log_sum_exp(row) == -7.25f);  // m + log(1): exact
    }
  }
}

TEST_CASE("log_sum_exp is non-finite for NaN and +inf rows and -inf for all -inf rows", "[kernels][reduce][invalid]") {
  for (std::size_t size : row_lengths) {
    row_source source(800 + size);
    INFO("size " << size);
    for (std::size_t position : probe_positions(size, source)) {
      std::vector<float> row = source.normal_row(size, 0.0, 1.0);
      INFO("special value at " << position);
      row[position] = not_a_number;
      CHECK_FALSE(std::isfinite(kernels::log_sum_exp(row)));
      row[position] = plus_infinity;
      CHECK_FALSE(std::isfinite(kernels::log_sum_exp(row)));
      std::vector<float> masked(size, minus_infinity);
      masked[position] = not_a_number;
      CHECK_FALSE(std::isfinite(kernels::log_sum_exp(masked)));
      masked[position] = plus_infinity;
      CHECK_FALSE(std::isfinite(kernels::log_sum_exp(masked)));
    }
    const std::vector<float> masked(size, minus_infinity);
    CHECK(kernels::log_sum_exp(masked) == minus_infinity);
  }
  CHECK(kernels::log_sum_exp(std::span<const float>{}) == minus_infinity);
}

// =============================================================================================
// unnormalized_softmax, softmax, scale_row
// =============================================================================================

TEST_CASE("unnormalized_softmax writes exp(scale (x - max)) and returns max, scale and sum", "[kernels][transform]") {
  for (std::size_t size : row_lengths) {
    row_source source(900 + size);
    for (double sigma : {1.0, 10.0}) {
      const std::vector<float> row = source.normal_row(size, 0.0, sigma);
      for (float scale : {1.0f, 0.5f, 1.7f}) {
        std::vector<float> out(size);
        const auto stats = kernels::unnormalized_softmax(row, out, scale);
        INFO("size " << size << ", sigma " << sigma << ", scale " << scale);
        REQUIRE(stats.valid());
        CHECK(stats.max == reference::max_argmax(row).value);  // the unscaled row maximum: exact
        CHECK(stats.scale == scale);
        std::vector<float> expected(size);
        double expected_sum = 0.0;
        for (std::size_t j = 0; j < size; ++j) {
          const double e = std::exp(static_cast<double>(scale) * (static_cast<double>(row[j]) - stats.max));
          expected[j] = static_cast<float>(e);
          expected_sum += e;
        }
        // Relative: the exponent d = scale (x - m) is a float32 subtraction and product, off by
        // at most 2 u |d|, which exp turns into the same relative error; 4 u more for exp
        // itself. Absolute FLT_MIN: xsimd's exp returns 0 below about exp(-87.7) = 1e-38.
        CHECK(first_difference(out, expected, [&](std::size_t j) {
                const double d = std::abs(static_cast<double>(scale) * (static_cast<double>(row[j]) - stats.max));
                return (2.0 * d + 4.0) * unit_roundoff * expected[j] + smallest_normal_float;
              }) == "");
        // lane_sum_relative_tolerance: float32 sum over V terms in SIMD lanes.
        CHECK(std::abs(stats.sum - expected_sum) <= lane_sum_relative_tolerance(size) * expected_sum);
        const double expected_lse = reference::log_sum_exp(row, scale);
        // log_sum_exp_tolerance: float32 lane sums, float32 exponents, float32 result.
        CHECK(std::abs(stats.log_sum_exp() - expected_lse) <= log_sum_exp_tolerance(row, expected_lse, scale));
      }
    }
  }
}

TEST_CASE("unnormalized_softmax works in place", "[kernels][transform]") {
  for (std::size_t size : row_lengths) {
    row_source source(950 + size);
    std::vector<float> row = source.normal_row(size, 0.0, 3.0);
    std::vector<float> separate(size);
    const auto expected = kernels::unnormalized_softmax(row, separate, 0.8f);
    const auto got = kernels::unnormalized_softmax(row, row, 0.8f);
    INFO("size " << size);
    CHECK(got.max == expected.max);
    CHECK(got.sum == expected.sum);  // the same operations in the same order: bit-identical
    CHECK(first_difference(row, separate) == "");
  }
}

TEST_CASE("softmax equals the reference on random rows of every length and scale", "[kernels][transform]") {
  for (std::size_t size : row_lengths) {
    row_source source(1000 + size);
    for (double sigma : {1.0, 3.0, 10.0}) {
      const std::vector<float> row = source.normal_row(size, 0.0, sigma);
      for (float scale : {1.0f, 0.5f, 1.7f}) {
        std::vector<float> out(size);
        std::vector<float> expected(size);
        const auto stats = kernels::softmax(row, out, scale);
        REQUIRE(stats.valid());
        const float lse = stats.log_sum_exp();
        reference::softmax(row, expected, scale);
        INFO("size " << size << ", sigma " << sigma << ", scale " << scale);
        const double expected_lse = reference::log_sum_exp(row, scale);
        double largest = 0.0;
        for (float x : row) largest = std::max(largest, static_cast<double>(scale) * x);
        // Relative: float32 sum over V terms in lanes (lane_sum_relative_tolerance), the rounded
        // exponent d = scale * x - scale * max (a float32 subtraction and product: 2 u |d|; a
        // rounded product and a subtraction: u |d| + u |scale * x|) and 4 u for exp, the
        // reciprocal and the final product.
        // Absolute FLT_MIN: xsimd's exp returns 0 below about exp(-87.7) = 1e-38.
        CHECK(first_difference(out, expected, [&](std::size_t j) {
                const double product = std::abs(static_cast<double>(scale) * row[j]);
                const double d = largest - static_cast<double>(scale) * row[j];
                return (lane_sum_relative_tolerance(size) + (2.0 * d + product + 4.0) * unit_roundoff) * expected[j] +
                       smallest_normal_float;
              }) == "");
        // log_sum_exp_tolerance: float32 lane sums, float32 exponents, float32 result.
        CHECK(std::abs(lse - expected_lse) <= log_sum_exp_tolerance(row, expected_lse, scale));
      }
    }
  }
}

TEST_CASE("softmax keeps -inf masks as exact zeros and is one-hot on a lone finite entry", "[kernels][transform][extreme]") {
  for (std::size_t size : row_lengths) {
    row_source source(1100 + size);
    INFO("size " << size);
    for (double masked_fraction : {0.1, 0.5, 0.999}) {
      std::vector<float> row = source.normal_row(size, 0.0, 3.0);
      for (float& x : row)
        if (source.uniform() < masked_fraction) x = minus_infinity;
      row[source.below(size)] = 0.5f;
      std::vector<float> out(size, 1.0f);
      std::vector<float> expected(size);
      kernels::softmax(row, out);
      reference::softmax(row, expected);
      INFO("masked fraction " << masked_fraction);
      bool masks_are_zero = true;
      for (std::size_t j = 0; j < size; ++j)
        if (row[j] == minus_infinity && out[j] != 0.0f) masks_are_zero = false;
      CHECK(masks_are_zero);
      double largest = 0.0;
      for (float x : row) largest = std::max(largest, static_cast<double>(x));
      // As for random rows: lane sums, the rounded exponent and exp; FLT_MIN for flushed results.
      // Masked entries expect an exact zero.
      CHECK(first_difference(out, expected, [&](std::size_t j) {
              if (row[j] == minus_infinity) return 0.0;
              const double d = largest - row[j];
              return (lane_sum_relative_tolerance(size) + (2.0 * d + std::abs(row[j]) + 4.0) * unit_roundoff) * expected[j] +
                     smallest_normal_float;
            }) == "");
    }
    for (std::size_t position : probe_positions(size, source)) {
      std::vector<float> row(size, minus_infinity);
      row[position] = 3.0e38f;
      std::vector<float> out(size, 0.5f);
      std::vector<float> expected(size, 0.0f);
      expected[position] = 1.0f;
      INFO("finite entry at " << position);
      CHECK(kernels::softmax(row, out).log_sum_exp() == 3.0e38f);  // m + log(1): exact
      CHECK(first_difference(out, expected) == "");  // exp(0) / 1 and exp(-inf): exact
    }
  }
}

TEST_CASE("softmax and unnormalized_softmax report invalid rows", "[kernels][transform][invalid]") {
  for (std::size_t size : row_lengths) {
    row_source source(1200 + size);
    std::vector<float> out(size);
    INFO("size " << size);
    for (std::size_t position : probe_positions(size, source)) {
      std::vector<float> row = source.normal_row(size, 0.0, 1.0);
      INFO("special value at " << position);
      row[position] = not_a_number;
      CHECK_FALSE(kernels::unnormalized_softmax(row, out).valid());
      CHECK_FALSE(kernels::softmax(row, out).valid());
      row[position] = plus_infinity;
      CHECK_FALSE(kernels::unnormalized_softmax(row, out).valid());
      CHECK_FALSE(kernels::softmax(row, out).valid());
      std::vector<float> masked(size, minus_infinity);  // the special value among masks
      masked[position] = not_a_number;
      CHECK_FALSE(kernels::softmax(masked, out).valid());
      masked[position] = plus_infinity;
      CHECK_FALSE(kernels::softmax(masked, out).valid());
    }
    const std::vector<float> masked(size, minus_infinity);
    CHECK_FALSE(kernels::unnormalized_softmax(masked, out).valid());
    CHECK_FALSE(kernels::softmax(masked, out).valid());
    CHECK(kernels::softmax(masked, out).log_sum_exp() == minus_infinity);
  }
}

/// Bit equality of two exp_row_stats (NaN equal to NaN), for the kernels that promise
/// unnormalized_softmax's statistics without writing the row.
bool same_stats(const kernels::exp_row_stats& a, const kernels::exp_row_stats& b) {
  const auto same = [](float x, float y) { return x == y || (std::isnan(x) && std::isnan(y)); };
  return same(a.max, b.max) && same(a.scale, b.scale) && (same(a.sum, b.sum) || (!a.valid() && !b.valid()));
}

TEST_CASE("exp_sum and exp_sum_collecting return unnormalized_softmax's statistics bit for bit", "[kernels][reduce]") {
  for (std::size_t size : row_lengths) {
    row_source source(1250 + size);
    for (double sigma : {1.0, 10.0}) {
      std::vector<float> row = source.normal_row(size, 0.0, sigma);
      if (size > 2)
        for (std::size_t j = 0; j < size; j += 3) row[j] = minus_infinity;  // masks do not count
      row[size / 2] = static_cast<float>(4.0 * sigma);                       // some finite entry
      for (float scale : {1.0f, 0.5f, 1.7f}) {
        std::vector<float> out(size);
        const kernels::exp_row_stats expected = kernels::unnormalized_softmax(row, out, scale);
        INFO("size " << size << ", sigma " << sigma << ", scale " << scale);
        CHECK(same_stats(kernels::exp_sum(row, scale), expected));
        std::vector<std::uint32_t> found(size);
        std::size_t count = 0;
        CHECK(same_stats(kernels::exp_sum_collecting(row, scale, 0.01f, found, count), expected));
        // The row's maximum given (from an earlier pass) changes nothing.
        std::vector<std::uint32_t> found_again(size);
        std::size_t count_again = 0;
        CHECK(same_stats(kernels::exp_sum_collecting(row, scale, 0.01f, found_again, count_again,
                                                     kernels::max_argmax(row).value),
                         expected));
        CHECK(count_again == count);
        CHECK(found_again == found);
        // The collected entries are exactly those whose written exp reaches the floor.
        std::vector<std::uint32_t> reaching;
        for (std::size_t j = 0; j < size; ++j)
          if (out[j] >= 0.01f) reaching.push_back(static_cast<std::uint32_t>(j));
        REQUIRE(count == reaching.size());
        CHECK(std::equal(reaching.begin(), reaching.end(), found.begin()));
      }
    }
  }
}

TEST_CASE("exp_sum_collecting says when more entries qualify than it may write", "[kernels][reduce]") {
  for (std::size_t size : {std::size_t{33}, std::size_t{1000}, std::size_t{152064}}) {
    const std::vector<float> row(size, 2.0f);  // every exp is exactly 1
    std::vector<std::uint32_t> found(8, 77);
    std::size_t count = 0;
    const kernels::exp_row_stats stats = kernels::exp_sum_collecting(row, 1.0f, 0.5f, found, count);
    INFO("size " << size);
    CHECK(count == found.size() + 1);
    for (std::size_t k = 0; k < found.size(); ++k) CHECK(found[k] == k);  // the first ones, in order
    CHECK(stats.sum == static_cast<float>(size));                          // the sum is still complete
    std::vector<std::uint32_t> none;
    CHECK(kernels::exp_sum_collecting(row, 1.0f, 0.5f, none, count).valid());
    CHECK(count == 1);
  }
}

TEST_CASE("exp_sum and exp_sum_collecting report invalid rows as unnormalized_softmax does", "[kernels][reduce][invalid]") {
  for (std::size_t size : row_lengths) {
    row_source source(1275 + size);
    std::vector<std::uint32_t> found(4);
    std::size_t count = 0;
    for (std::size_t position : probe_positions(size, source)) {
      std::vector<float> row = source.normal_row(size, 0.0, 1.0);
      INFO("size " << size << ", special value at " << position);
      for (float special : {not_a_number, plus_infinity}) {
        row[position] = special;
        CHECK_FALSE(kernels::exp_sum(row).valid());
        CHECK_FALSE(kernels::exp_sum_collecting(row, 1.0f, 0.1f, found, count).valid());  // count: unspecified
      }
    }
    const std::vector<float> masked(size, minus_infinity);
    CHECK_FALSE(kernels::exp_sum(masked).valid());
    CHECK(kernels::exp_sum(masked).max == minus_infinity);
  }
}

TEST_CASE("scale_row multiplies every entry exactly as a scalar float product", "[kernels][transform]") {
  // reference.hpp has no scale_row: the oracle is the single float multiplication itself,
  // which SIMD rounds identically, so the rows must match bit for bit.
  for (std::size_t size : row_lengths) {
    row_source source(1300 + size);
    std::vector<float> row = source.normal_row(size, 0.0, 100.0);
    row[source.below(size)] = minus_infinity;
    std::vector<float> expected = row;
    for (float& x : expected) x *= 0.37f;
    kernels::scale_row(row, 0.37f);
    INFO("size " << size);
    CHECK(first_difference(row, expected) == "");
  }
}

// =============================================================================================
// linear_combination, mixture, residual
// =============================================================================================

namespace {
std::vector<std::span<const float>> spans_of(const std::vector<std::vector<float>>& rows) {
  return {rows.begin(), rows.end()};
}

/// Absolute tolerance for out[j] = scale * sum_i w_i x_ij accumulated with float32 fused
/// multiply-adds: each of the r multiply-adds rounds the running sum (two roundings without
/// FMA hardware), w_i * scale is rounded once, and the reference rounds its result once, so
/// the error is at most (2 r + 2) u |scale| sum_i |w_i x_ij|. Relative to the terms, not to the
/// result: l_expert - mu l_amateur can cancel.
double combination_tolerance(const std::vector<std::vector<float>>& rows, std::span<const float> weights, double scale,
                             std::size_t j) {
  double magnitude = 0.0;
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (weights[i] != 0.0f) magnitude += std::abs(static_cast<double>(weights[i]) * rows[i][j]);
  return (2.0 * static_cast<double>(rows.size()) + 2.0) * unit_roundoff * std::abs(scale) * magnitude;
}
}  // namespace

TEST_CASE("linear_combination equals the reference on random logit rows", "[kernels][transform]") {
  for (std::size_t size : row_lengths) {
    row_source source(1400 + size);
    std::vector<std::vector<float>> rows;
    for (int i = 0; i < 3; ++i) rows.push_back(source.normal_row(size, 0.0, 5.0));
    const std::vector<float> weights{1.0f, -0.4f, 0.25f};
    for (float scale : {1.0f, 1.0f / 0.7f}) {
      std::vector<float> out(size);
      std::vector<float> expected(size);
      kernels::linear_combination(spans_of(rows), weights, out, scale);
      reference::linear_combination(spans_of(rows), weights, expected, scale);
      INFO("size " << size << ", scale " << scale);
      // combination_tolerance: (2 r + 2) u |scale| sum |w x|, fused multiply-adds in float32.
      CHECK(first_difference(out, expected,
                             [&](std::size_t j) { return combination_tolerance(rows, weights, scale, j); }) == "");
    }
  }
}

TEST_CASE("linear_combination keeps -inf masks masked even under negative weights", "[kernels][transform][extreme]") {
  for (std::size_t size : row_lengths) {
    row_source source(1500 + size);
    std::vector<std::vector<float>> rows{source.normal_row(size, 0.0, 5.0), source.normal_row(size, 0.0, 5.0)};
    for (auto& row : rows)
      for (float& x : row)
        if (source.uniform() < 0.2) x = minus_infinity;
    // Contrastive decoding: expert - 0.5 amateur. A naive sum would turn an amateur mask into +inf.
    const std::vector<float> weights{1.0f, -0.5f};
    std::vector<float> out(size);
    std::vector<float> expected(size);
    kernels::linear_combination(spans_of(rows), weights, out, 2.0f);
    reference::linear_combination(spans_of(rows), weights, expected, 2.0);
    bool masks_propagate = true;
    for (std::size_t j = 0; j < size; ++j) {
      const bool masked = rows[0][j] == minus_infinity || rows[1][j] == minus_infinity;
      if (masked != (out[j] == minus_infinity) || out[j] == plus_infinity || std::isnan(out[j])) masks_propagate = false;
    }
    INFO("size " << size);
    CHECK(masks_propagate);
    // combination_tolerance: (2 r + 2) u |scale| sum |w x|, fused multiply-adds in float32.
    CHECK(first_difference(out, expected,
                           [&](std::size_t j) { return combination_tolerance(rows, weights, 2.0, j); }) == "");
  }
}

TEST_CASE("linear_combination and mixture do not read rows of weight zero", "[kernels][transform]") {
  for (std::size_t size : row_lengths) {
    row_source source(1600 + size);
    const std::vector<std::vector<float>> rows{source.normal_row(size, 0.0, 1.0), std::vector<float>(size, not_a_number),
                                               std::vector<float>(size, minus_infinity)};
    const std::vector<float> weights{0.5f, 0.0f, 0.0f};
    std::vector<float> expected = rows[0];
    for (float& x : expected) x *= 0.5f;  // one product, exact to the same rounding
    std::vector<float> out(size);
    INFO("size " << size);
    kernels::linear_combination(spans_of(rows), weights, out);
    CHECK(first_difference(out, expected) == "");
    kernels::mixture(spans_of(rows), weights, out);
    CHECK(first_difference(out, expected) == "");
  }
}

TEST_CASE("linear_combination turns a +inf logit into NaN so that validity checks see it", "[kernels][transform][invalid]") {
  for (std::size_t size : row_lengths) {
    row_source source(1650 + size);
    for (std::size_t position : probe_positions(size, source)) {
      std::vector<std::vector<float>> rows{source.normal_row(size, 0.0, 1.0), source.normal_row(size, 0.0, 1.0)};
      rows[1][position] = plus_infinity;
      for (float amateur_weight : {0.5f, -0.5f}) {
        const std::vector<float> weights{1.0f, amateur_weight};
        std::vector<float> out(size);
        kernels::linear_combination(spans_of(rows), weights, out);
        INFO("size " << size << ", +inf at " << position << ", weight " << amateur_weight);
        CHECK(std::isnan(out[position]));
        CHECK_FALSE(std::isfinite(kernels::log_sum_exp(out)));
      }
    }
  }
}

TEST_CASE("combination_log_sum_exp is log_sum_exp of linear_combination bit for bit", "[kernels][reduce]") {
  // 1 to 6 rows: each row count up to four has its own loop, more take the general one; rows
  // of weight 0 (NaN-filled here) are not read; masks and the +inf rule as in linear_combination.
  for (std::size_t size : row_lengths) {
    row_source source(1660 + size);
    for (std::size_t n = 1; n <= 6; ++n) {
      for (bool with_masks : {false, true}) {
        std::vector<std::vector<float>> rows;
        std::vector<float> weights;
        for (std::size_t i = 0; i < n; ++i) {
          rows.push_back(source.normal_row(size, 0.0, 4.0));
          weights.push_back(static_cast<float>(source.uniform() * 2.0 - 0.7));
        }
        rows.push_back(std::vector<float>(size, not_a_number));
        weights.push_back(0.0f);
        if (with_masks)
          for (std::size_t j = 0; j < size; ++j)
            if (source.uniform() < 0.1) rows[source.below(n)][j] = minus_infinity;
        rows[0][size / 2] = 30.0f;  // keep a finite entry whatever the masks
        for (std::size_t i = 1; i < n; ++i) rows[i][size / 2] = 1.0f;
        for (float scale : {1.0f, 1.0f / 0.7f}) {
          std::vector<float> combined(size);
          kernels::linear_combination(spans_of(rows), weights, combined, scale);
          const float expected = kernels::log_sum_exp(combined);
          INFO("size " << size << ", " << n << " rows, masks " << with_masks << ", scale " << scale);
          REQUIRE(std::isfinite(expected));
          CHECK(kernels::combination_log_sum_exp(spans_of(rows), weights, scale) == expected);
        }
      }
    }
  }
}

TEST_CASE("combination_log_sum_exp is not finite for a +inf or NaN input or an overflow, -inf for a full mask",
          "[kernels][reduce][invalid]") {
  for (std::size_t size : row_lengths) {
    row_source source(1690 + size);
    for (std::size_t position : probe_positions(size, source)) {
      for (float special : {plus_infinity, not_a_number}) {
        std::vector<std::vector<float>> rows{source.normal_row(size, 0.0, 1.0), source.normal_row(size, 0.0, 1.0)};
        rows[1][position] = special;
        INFO("size " << size << ", " << special << " at " << position);
        CHECK_FALSE(std::isfinite(kernels::combination_log_sum_exp(spans_of(rows), std::vector<float>{1.0f, -0.5f})));
      }
      std::vector<std::vector<float>> large{source.normal_row(size, 0.0, 1.0), source.normal_row(size, 0.0, 1.0)};
      large[0][position] = largest_float;
      large[1][position] = largest_float;
      INFO("float max in both rows at " << position);
      CHECK_FALSE(std::isfinite(kernels::combination_log_sum_exp(spans_of(large), std::vector<float>{1.0f, 1.0f})));
    }
    const std::vector<std::vector<float>> masked{std::vector<float>(size, minus_infinity), std::vector<float>(size, 1.0f)};
    CHECK(kernels::combination_log_sum_exp(spans_of(masked), std::vector<float>{1.0f, -0.1f}) == minus_infinity);
  }
}

TEST_CASE("mask_below masks entries whose reference is below the threshold and keeps NaN", "[kernels][transform]") {
  // reference.hpp has no mask_below: the oracle is the scalar rule of its contract.
  for (std::size_t size : row_lengths) {
    row_source source(1660 + size);
    const std::vector<float> expert = source.normal_row(size, 0.0, 2.0);
    std::vector<float> out = source.normal_row(size, 0.0, 2.0);
    out[source.below(size)] = not_a_number;
    out[source.below(size)] = minus_infinity;
    std::vector<float> expected = out;
    const float threshold = 0.5f;
    for (std::size_t j = 0; j < size; ++j)
      if (expert[j] < threshold && !std::isnan(expected[j])) expected[j] = minus_infinity;
    kernels::mask_below(expert, threshold, out);
    INFO("size " << size);
    CHECK(first_difference(out, expected) == "");  // comparisons and selects: exact
  }
}

TEST_CASE("mixture equals the reference on random distributions", "[kernels][transform]") {
  for (std::size_t size : row_lengths) {
    row_source source(1700 + size);
    std::vector<std::vector<float>> rows;
    for (int i = 0; i < 3; ++i) rows.push_back(source.distribution(size, 2.0));
    const std::vector<float> weights{0.2f, 0.0f, 0.8f};
    std::vector<float> out(size);
    std::vector<float> expected(size);
    kernels::mixture(spans_of(rows), weights, out);
    reference::mixture(spans_of(rows), weights, expected);
    INFO("size " << size);
    // combination_tolerance with scale 1: (2 r + 2) u sum |w x| for float32 multiply-adds.
    CHECK(first_difference(out, expected,
                           [&](std::size_t j) { return combination_tolerance(rows, weights, 1.0, j); }) == "");
  }
}

TEST_CASE("residual equals the reference entries and sum", "[kernels][transform]") {
  for (std::size_t size : row_lengths) {
    row_source source(1800 + size);
    const std::vector<float> proposal = source.distribution(size, 2.0);
    const std::vector<float> logits = source.normal_row(size, 0.0, 2.0);
    std::vector<float> target(size);
    const auto stats = kernels::unnormalized_softmax(logits, target);
    for (float target_scale : {1.0f, 1.0f / stats.sum}) {
      std::vector<float> out(size);
      std::vector<float> expected(size);
      const float sum = kernels::residual(target, proposal, out, target_scale);
      const double expected_sum = reference::residual(target, proposal, expected, target_scale);
      INFO("size " << size << ", target scale " << target_scale);
      // Per entry: s t - p rounded once with FMA (twice without), the reference rounds its double
      // result once: at most 3 u max(s t, p).
      auto entry_tolerance = [&](std::size_t j) {
        return 3.0 * unit_roundoff * std::max(static_cast<double>(target_scale) * target[j], static_cast<double>(proposal[j]));
      };
      CHECK(first_difference(out, expected, entry_tolerance) == "");
      double entry_errors = 0.0;
      for (std::size_t j = 0; j < size; ++j) entry_errors += entry_tolerance(j);
      // The sum: float32 lane sums (lane_sum_relative_tolerance) plus the entries' own errors.
      CHECK(std::abs(sum - expected_sum) <= lane_sum_relative_tolerance(size) * expected_sum + entry_errors);
    }
  }
}

// =============================================================================================
// sample_inverse_cdf
// =============================================================================================

namespace {

/// The doubles u around one bucket edge C: `below` is the largest u with u * total < C, `at`
/// the smallest with u * total >= C and `above` the smallest with u * total > C. Found by
/// stepping with std::nextafter from the quotient C / total: the product of neighbouring
/// doubles with total can round onto the edge, for one u or several.
struct edge_straddle {
  double below;
  double at;
  double above;
};

edge_straddle straddle(double edge, double total) {
  auto up = [](double u) { return std::nextafter(u, 2.0); };  // past 1 for the last edge, C = total
  double u = edge / total;
  while (u * total >= edge) u = std::nextafter(u, 0.0);
  while (up(u) * total < edge) u = up(u);
  const double at = up(u);
  double above = at;
  while (above * total <= edge) above = up(above);
  return {u, at, above};
}

/// A deliberately broken inverse CDF: `>=` instead of `>` closes each bucket at its upper
/// edge, so u * total == C(i) lands in bucket i instead of the next one.
std::size_t inverse_cdf_with_closed_edges(std::span<const float> weights, double u, double total) {
  double cumulative = 0.0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    cumulative += weights[i];
    if (weights[i] > 0.0f && cumulative >= u * total) return i;
  }
  return weights.size();
}

/// Small-integer weights 0..5, about one in six zero, with at least one positive entry:
/// every partial sum is an exact integer in float and in double.
std::vector<float> integer_weights(std::size_t size, std::uint64_t seed) {
  row_source source(seed);
  std::vector<float> weights = source.small_integer_row(size, 5);
  if (count_positive(weights) == 0) weights[size / 2] = 3.0f;
  return weights;
}

struct edge_report {
  std::size_t edges = 0;               // edges tested
  std::size_t draws_on_edge = 0;       // draws with u * total == C(i) exactly
  std::string kernel_failure;          // first disagreement of the kernel, "" if none
  std::size_t reference_failures = 0;  // disagreements of reference::sample_inverse_cdf
  std::size_t broken_failures = 0;     // disagreements of inverse_cdf_with_closed_edges
};

/// Draws at u just below, on or just past C(i) / total for the edge C(i) of every positive
/// index i, and compares with the answer derived from the weights alone: i below the edge,
/// the next positive index from the edge on. With `stride` > 1 (long rows, where the O(V)
/// reference makes every edge too slow) only every stride-th edge is drawn, plus the edges
/// next to block boundaries in every 16th block of 4 * lanes entries.
edge_report check_every_edge(std::span<const float> weights, std::size_t stride) {
  const std::size_t block = 4 * lanes;  // the kernel's unit of SIMD partial sums
  edge_report report;
  double total = 0.0;
  for (float w : weights) total += w;
  std::vector<std::size_t> positive;
  for (std::size_t i = 0; i < weights.size(); ++i)
    if (weights[i] > 0.0f) positive.push_back(i);
  auto check = [&](const char* side, std::size_t edge_index, double u, std::size_t expected) {
    const std::size_t got = kernels::sample_inverse_cdf(weights, u, total);
    if (got != expected && report.kernel_failure.empty()) {
      std::ostringstream text;
      text << std::setprecision(17) << side << " the edge C(" << edge_index << ") at u = " << u << ": got " << got
           << ", expected " << expected;
      report.kernel_failure = text.str();
    }
    if (reference::sample_inverse_cdf(weights, u, total) != expected) ++report.reference_failures;
    if (inverse_cdf_with_closed_edges(weights, u, total) != expected) ++report.broken_failures;
  };
  double cumulative = 0.0;
  std::size_t rank = 0;  // how many positive indices up to and including i
  for (std::size_t i = 0; i < weights.size(); ++i) {
    cumulative += weights[i];
    if (weights[i] == 0.0f) continue;
    ++rank;
    const bool near_block_boundary = (i % block < 2 || i % block >= block - 2) && (i / block) % 16 == 0;
    if (stride > 1 && rank % stride != 0 && !near_block_boundary) continue;
    ++report.edges;
    const edge_straddle u = straddle(cumulative, total);
    check("below", i, u.below, i);
    if (rank == positive.size()) continue;  // the last edge is C = total, reached only by u = 1
    const std::size_t next = positive[rank];
    if (u.at * total == cumulative) ++report.draws_on_edge;
    check("on", i, u.at, next);
    check("above", i, u.above, next);
  }
  return report;
}

}  // namespace

TEST_CASE("sample_inverse_cdf is exact on both sides of every bucket edge of integer weights", "[kernels][sample]") {
  // Lengths that are and are not multiples of the 4 * lanes block the kernel sums at once.
  for (std::size_t size : {1, 2, 7, 31, 33, 63, 64, 65, 1000, 4099}) {
    const std::vector<float> weights = integer_weights(size, 1900 + size);
    const edge_report report = check_every_edge(weights, 1);
    INFO("size " << size << ", " << report.edges << " edges");
    CHECK(report.kernel_failure == "");
    CHECK(report.reference_failures == 0);
  }
  for (std::size_t size : {32000, 151936, 152064}) {
    const std::vector<float> weights = integer_weights(size, 1900 + size);
    // Every 997th edge and edges next to block boundaries (the reference is O(V) per draw).
    const edge_report report = check_every_edge(weights, 997);
    INFO("size " << size << ", " << report.edges << " edges");
    CHECK(report.kernel_failure == "");
    CHECK(report.reference_failures == 0);
  }
}

TEST_CASE("the edge test tells a closed-edge inverse CDF from the right one", "[kernels][sample]") {
  // The broken variant differs exactly where u * total lands on an edge; the test must have
  // such points, and must count every one of them as a failure of the broken variant.
  const std::vector<float> weights = integer_weights(1000, 2900);
  const edge_report report = check_every_edge(weights, 1);
  INFO(report.edges << " edges, " << report.draws_on_edge << " draws with u * total on the edge");
  CHECK(report.draws_on_edge > 0);
  CHECK(report.broken_failures == report.draws_on_edge);
  CHECK(report.kernel_failure == "");
}

TEST_CASE("sample_inverse_cdf never returns a zero-weight index", "[kernels][sample]") {
  SECTION("leading, trailing and block-sized runs of zeros") {
    for (std::size_t size : {7, 33, 1000, 4099}) {
      std::vector<float> weights = integer_weights(size, 3000 + size);
      for (std::size_t j = 0; j < std::min<std::size_t>(size / 3, 4 * lanes + 1); ++j) weights[j] = 0.0f;
      for (std::size_t j = size - std::min<std::size_t>(size / 3, 4 * lanes + 3); j < size; ++j) weights[j] = 0.0f;
      if (count_positive(weights) == 0) weights[size / 2] = 1.0f;
      double total = 0.0;
      for (float w : weights) total += w;
      std::size_t first = 0;
      while (weights[first] == 0.0f) ++first;
      std::size_t last = size - 1;
      while (weights[last] == 0.0f) --last;
      INFO("size " << size);
      CHECK(kernels::sample_inverse_cdf(weights, 0.0, total) == first);
      CHECK(kernels::sample_inverse_cdf(weights, std::nextafter(1.0, 0.0), total) == last);
      // A caller's total a little above the true mass (a float sum rounded up): u * total can
      // pass the accumulated mass, and the last positive index must still come out.
      CHECK(kernels::sample_inverse_cdf(weights, std::nextafter(1.0, 0.0), total * (1.0 + 1e-6)) == last);
      const edge_report report = check_every_edge(weights, 1);
      CHECK(report.kernel_failure == "");
    }
  }
  SECTION("random distributions with masked tokens") {
    for (std::size_t size : row_lengths) {
      row_source source(3100 + size);
      std::vector<float> logits = source.normal_row(size, 0.0, 2.0);
      for (float& x : logits)
        if (source.uniform() < 0.3) x = minus_infinity;
      logits[source.below(size)] = 0.0f;
      std::vector<float> weights(size);
      reference::softmax(logits, weights);
      double total = 0.0;
      for (float w : weights) total += w;
      std::vector<double> cumulative(size);
      double running = 0.0;
      for (std::size_t j = 0; j < size; ++j) cumulative[j] = running += weights[j];
      // Float softmax weights make the block sums inexact: the kernel may pick a neighbour of the
      // reference index only when u * total is within the rounding of the block partial sums,
      // (2 + log2(lanes)) u of the mass summed (two batch additions and the horizontal sum);
      // +1 u for the double accumulation.
      const double edge_tolerance = (3.0 + std::log2(static_cast<double>(lanes))) * unit_roundoff * total;
      std::string failure;
      for (int draw = 0; draw < 300 && failure.empty(); ++draw) {
        const double u = source.uniform();
        const std::size_t got = kernels::sample_inverse_cdf(weights, u, total);
        const std::size_t expected = reference::sample_inverse_cdf(weights, u, total);
        std::ostringstream text;
        text << std::setprecision(17);
        if (got >= size || weights[got] == 0.0f)
          text << "zero-weight index " << got << " at u = " << u;
        else if (got != expected && std::abs(cumulative[std::min(got, expected)] - u * total) > edge_tolerance)
          text << "index " << got << " instead of " << expected << " at u = " << u;
        failure = text.str();
      }
      INFO("size " << size);
      CHECK(failure == "");
    }
  }
}

// =============================================================================================
// top_k_filter, top_p_filter, min_p_filter
// =============================================================================================

TEST_CASE("top_k_filter keeps the reference set on random distributions", "[kernels][filter]") {
  kernels::filter_workspace workspace;
  for (std::size_t size : row_lengths) {
    row_source source(4000 + size);
    for (double sigma : {1.0, 4.0}) {
      const std::vector<float> row = source.distribution(size, sigma);
      for (std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{7}, std::size_t{50}, size / 2, size - 1, size, size + 3}) {
        if (k == 0) continue;
        std::vector<float> got = row;
        std::vector<float> expected = row;
        const float kept = kernels::top_k_filter(got, k, workspace);
        reference::top_k_filter(expected, k);
        INFO("size " << size << ", sigma " << sigma << ", k " << k);
        CHECK(first_difference(got, expected) == "");  // comparisons only: exact
        CHECK(kept == remaining_sum(got));
        CHECK(count_positive(got) == std::min(k, size));
      }
    }
  }
}

TEST_CASE("top_k_filter breaks ties by the lower index", "[kernels][filter]") {
  kernels::filter_workspace workspace;
  SECTION("a small row") {
    const std::vector<float> row{1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
    const std::vector<std::vector<float>> expected{{0, 3, 0, 0, 0}, {0, 3, 3, 0, 0}, {0, 3, 3, 0, 3}, {0, 3, 3, 2, 3}};
    for (std::size_t k = 1; k <= 4; ++k) {
      std::vector<float> got = row;
      INFO("k " << k);
      CHECK(kernels::top_k_filter(got, k, workspace) == remaining_sum(expected[k - 1]));
      CHECK(first_difference(got, expected[k - 1]) == "");
    }
  }
  SECTION("rows of small integers and rows inside one histogram bucket") {
    for (std::size_t size : row_lengths) {
      row_source source(4100 + size);
      std::vector<float> integers = source.small_integer_row(size, 3);
      // 1, 1 + 1/16, 1 + 2/16, 1 + 3/16 share their 11 leading bits: one bucket, many ties.
      std::vector<float> one_bucket(size);
      for (float& w : one_bucket) w = 1.0f + static_cast<float>(source.below(4)) / 16.0f;
      for (const auto* row : {&integers, &one_bucket})
        for (std::size_t k : {std::size_t{1}, std::size_t{3}, size / 3 + 1, size / 2 + 1, size - 1}) {
          if (k == 0) continue;
          std::vector<float> got = *row;
          std::vector<float> expected = *row;
          const float kept = kernels::top_k_filter(got, k, workspace);
          reference::top_k_filter(expected, k);
          INFO("size " << size << ", k " << k << (row == &integers ? ", integers" : ", one bucket"));
          CHECK(first_difference(got, expected) == "");
          CHECK(kept == remaining_sum(got));
        }
    }
  }
  SECTION("k = 1 keeps the first maximum, k >= size keeps everything, k = 0 changes nothing") {
    std::vector<float> row{0.5f, 2.0f, 0.0f, 2.0f, 1.0f};
    std::vector<float> got = row;
    CHECK(kernels::top_k_filter(got, 1, workspace) == 2.0f);
    CHECK(first_difference(got, std::vector<float>{0, 2, 0, 0, 0}) == "");
    got = row;
    CHECK(kernels::top_k_filter(got, 5, workspace) == 5.5f);
    CHECK(first_difference(got, row) == "");
    CHECK(kernels::top_k_filter(got, 9, workspace) == 5.5f);
    CHECK(first_difference(got, row) == "");
    CHECK(kernels::top_k_filter(got, 0, workspace) == 0.0f);  // documented caller error
    CHECK(first_difference(got, row) == "");
  }
}

TEST_CASE("the filters rank a negative zero as a zero", "[kernels][filter]") {
  // -0.0f meets the filters' precondition (-0.0f >= 0.0f) and equals 0 in keep order, but its
  // sign bit is set: a histogram over raw representation bits must not rank it above every
  // positive weight. (A product such as -1e-30f * 0.0f, or a caller's negated zero, makes one.)
  kernels::filter_workspace workspace;
  SECTION("a small row") {
    std::vector<float> row{-0.0f, 1.0f, 2.0f, 0.5f};
    std::vector<float> got = row;
    CHECK(kernels::top_k_filter(got, 1, workspace) == 2.0f);
    CHECK(first_difference(got, std::vector<float>{0.0f, 0.0f, 2.0f, 0.0f}) == "");
    got = row;
    CHECK(kernels::top_p_filter(got, 0.5f, workspace) == 2.0f);
    CHECK(first_difference(got, std::vector<float>{0.0f, 0.0f, 2.0f, 0.0f}) == "");
    got = row;
    CHECK(kernels::min_p_filter(got, 0.5f) == 3.0f);
    CHECK(first_difference(got, std::vector<float>{0.0f, 1.0f, 2.0f, 0.0f}) == "");
  }
  SECTION("random distributions with negative zeros") {
    for (std::size_t size : {33, 1000, 32000}) {
      row_source source(4150 + size);
      std::vector<float> row = source.distribution(size, 2.0);
      for (float& w : row)
        if (source.uniform() < 0.1) w = -0.0f;
      for (std::size_t k : {std::size_t{1}, std::size_t{7}, size / 2}) {
        std::vector<float> got = row;
        std::vector<float> expected = row;
        const float kept = kernels::top_k_filter(got, k, workspace);
        reference::top_k_filter(expected, k);
        INFO("size " << size << ", k " << k);
        CHECK(first_difference(got, expected) == "");
        CHECK(kept == remaining_sum(got));
      }
    }
  }
}

TEST_CASE("top_p_filter keeps the reference set on random distributions", "[kernels][filter]") {
  kernels::filter_workspace workspace;
  for (std::size_t size : row_lengths) {
    row_source source(4200 + size);
    for (double sigma : {1.0, 4.0}) {
      const std::vector<float> row = source.distribution(size, sigma);
      for (float p : {1e-6f, 0.05f, 0.5f, 0.9f, 0.95f, 0.999f, 1.0f, 1.5f}) {
        std::vector<float> got = row;
        std::vector<float> expected = row;
        const float kept = kernels::top_p_filter(got, p, workspace);
        reference::top_p_filter(expected, p);
        INFO("size " << size << ", sigma " << sigma << ", p " << p);
        // Exact: both add the same weights in double, in different orders; a difference needs p
        // times the total within 1e-16 of a partial sum, which these seeded rows do not have.
        CHECK(first_difference(got, expected) == "");
        CHECK(kept == remaining_sum(got));
        if (p >= 1.0f) CHECK(count_positive(got) == count_positive(row));
      }
    }
  }
}

TEST_CASE("top_p_filter keeps the argmax alone for small p, everything for p = 1, and closes on equality",
          "[kernels][filter]") {
  kernels::filter_workspace workspace;
  SECTION("p small keeps the first maximum only") {
    for (std::size_t size : row_lengths) {
      row_source source(4300 + size);
      std::vector<float> row = source.distribution(size, 2.0);
      const auto top = reference::max_argmax(row);
      if (size > 1) row[size - 1] = top.value;  // a tie at the end, which must lose
      std::vector<float> expected(size, 0.0f);
      expected[top.index] = top.value;
      INFO("size " << size);
      CHECK(kernels::top_p_filter(row, 1e-7f, workspace) == top.value);
      CHECK(first_difference(row, expected) == "");
    }
  }
  SECTION("p = 1 keeps everything and returns the total") {
    row_source source(4400);
    std::vector<float> row = source.distribution(1000, 2.0);
    const std::vector<float> original = row;
    CHECK(kernels::top_p_filter(row, 1.0f, workspace) == remaining_sum(original));
    CHECK(first_difference(row, original) == "");
  }
  SECTION("the kept mass reaching p * total exactly stops the run") {
    std::vector<float> row{4.0f, 3.0f, 2.0f, 4.0f, 3.0f};  // total 16, p = 0.5: 4 + 4 reaches 8
    CHECK(kernels::top_p_filter(row, 0.5f, workspace) == 8.0f);
    CHECK(first_difference(row, std::vector<float>{4, 0, 0, 4, 0}) == "");
  }
  SECTION("integer rows and one-bucket rows with exact sums") {
    for (std::size_t size : row_lengths) {
      row_source source(4500 + size);
      std::vector<float> integers = source.small_integer_row(size, 5);
      if (count_positive(integers) == 0) integers[0] = 1.0f;
      std::vector<float> one_bucket(size);
      for (float& w : one_bucket) w = 1.0f + static_cast<float>(source.below(4)) / 16.0f;
      for (const auto* row : {&integers, &one_bucket})
        for (float p : {0.125f, 0.25f, 0.5f, 0.75f, 0.3f, 0.99f}) {
          std::vector<float> got = *row;
          std::vector<float> expected = *row;
          const float kept = kernels::top_p_filter(got, p, workspace);
          reference::top_p_filter(expected, p);
          INFO("size " << size << ", p " << p << (row == &integers ? ", integers" : ", one bucket"));
          CHECK(first_difference(got, expected) == "");
          CHECK(kept == remaining_sum(got));
        }
    }
  }
}

TEST_CASE("min_p_filter keeps the reference set and entries equal to the threshold", "[kernels][filter]") {
  for (std::size_t size : row_lengths) {
    row_source source(4600 + size);
    for (double sigma : {1.0, 4.0}) {
      const std::vector<float> row = source.distribution(size, sigma);
      for (float min_p : {0.0f, 1e-3f, 0.05f, 0.5f, 1.0f}) {
        std::vector<float> got = row;
        std::vector<float> expected = row;
        const float kept = kernels::min_p_filter(got, min_p);
        reference::min_p_filter(expected, min_p);
        INFO("size " << size << ", sigma " << sigma << ", min_p " << min_p);
        CHECK(first_difference(got, expected) == "");  // one product and comparisons: exact
        CHECK(kept == remaining_sum(got));
      }
    }
  }
  std::vector<float> row{1.0f, 0.5f, 0.25f, 0.5f};
  CHECK(kernels::min_p_filter(row, 0.5f) == 2.0f);
  CHECK(first_difference(row, std::vector<float>{1.0f, 0.5f, 0.0f, 0.5f}) == "");
}
