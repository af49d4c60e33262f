// The batched forward pass of the transformer example (docs/benchmarks.md, "Transformer").
//
// Speculation pays on a memory-bound model only if scoring m tokens in one pass costs about
// as much as scoring one. This measures, on a llama-shaped fp32 stack of 168M parameters read
// per token (12 layers, dim 1024, hidden 2816, 16 heads, 4 KV heads, vocabulary 32000: far
// larger than any cache), for m in {1, 2, 4, 8}:
//   products/m: the weight products of one pass through the stack with batched_matmul on both
//               cores, timed in the same iteration as the m = 1 pass: `vs_m1` is their ratio
//               (targets: m = 4 within 1.25x, m = 8 within 1.6x);
//   products_in_cache/m: the multiply-adds of products/m with the weights held in cache,
//               against products/m and products/1 in the same iteration: how much of the
//               arithmetic the m-token pass hides under the weight stream;
//   eigen/m:    the same products with Eigen's matrix-vector (m = 1) and general (m > 1)
//               products, the naive batched path, with its own m = 1 ratio;
//   forward/m:  a whole forward pass of the transformer (norms, rotary embeddings, attention
//               over a 128-token context, SwiGLU, classifier) feeding m tokens, against the
//               single-token forward pass in the same iteration;
//   batched_forward/S/m: one pass of the batched transformer over S sequences of m tokens
//               each (each after its own 128-token context), against one sequence of one
//               token in the same iteration.
// Report medians over repetitions (--benchmark_repetitions=5 --benchmark_report_aggregates_only=true).
#include <benchmark/benchmark.h>

#include <chrono>   // std::chrono::steady_clock
#include <cstddef>  // std::size_t
#include <memory>   // std::shared_ptr, std::make_shared
#include <span>     // std::span
#include <vector>   // std::vector

#include "transformer/eigen_core.hpp"

#include "transformer/batched_matmul.hpp"
#include "transformer/batched_transformer.hpp"
#include "transformer/seeded_weights.hpp"
#include "transformer/thread_team.hpp"
#include "transformer/transformer.hpp"

namespace {

using namespace cospec::examples::llama;

transformer_config bench_config() {
  transformer_config config;
  config.dim = 1024;
  config.hidden_dim = 2816;
  config.n_layers = 12;
  config.n_heads = 16;
  config.n_kv_heads = 4;
  config.vocab_size = 32000;
  config.seq_len = 1024;
  config.shared_classifier = false;
  return config;
}

const std::shared_ptr<const transformer_weights>& bench_weights() {
  static const auto weights = std::make_shared<const transformer_weights>(seeded_weights(bench_config(), {}));
  return weights;
}

thread_team& bench_team() {
  static thread_team team(2);
  return team;
}

/// The matrices of one pass, in order.
std::vector<const row_matrix*> pass_matrices(const transformer_weights& w) {
  std::vector<const row_matrix*> matrices;
  for (const layer_weights& layer : w.layers) {
    matrices.push_back(&layer.qkv);
    matrices.push_back(&layer.attention_output);
    matrices.push_back(&layer.gate_up);
    matrices.push_back(&layer.down);
  }
  matrices.push_back(&w.output_classifier());
  return matrices;
}

struct activations {
  row_matrix in;
  row_matrix out;
  activations(std::size_t m, std::size_t width)
      : in(row_matrix::Constant(static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(width), 0.01f)),
        out(static_cast<Eigen::Index>(m), static_cast<Eigen::Index>(width)) {}
};

double batched_products(const std::vector<const row_matrix*>& matrices, activations& a, std::size_t m) {
  const auto start = std::chrono::steady_clock::now();
  for (const row_matrix* w : matrices) {
    const auto rows = static_cast<std::size_t>(w->rows());
    const auto columns = static_cast<std::size_t>(w->cols());
    batched_matmul({w->data(), rows, columns, columns}, {a.in.data(), m, columns, static_cast<std::size_t>(a.in.cols())},
                   {a.out.data(), m, rows, static_cast<std::size_t>(a.out.cols())}, bench_team());
  }
  benchmark::DoNotOptimize(a.out.data());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double eigen_products(const std::vector<const row_matrix*>& matrices, activations& a, std::size_t m) {
  const auto start = std::chrono::steady_clock::now();
  for (const row_matrix* w : matrices) {
    const auto m_rows = static_cast<Eigen::Index>(m);
    if (m == 1) {
      a.out.row(0).head(w->rows()).noalias() = (*w * a.in.row(0).head(w->cols()).transpose()).transpose();
    } else {
      a.out.topLeftCorner(m_rows, w->rows()).noalias() = a.in.topLeftCorner(m_rows, w->cols()) * w->transpose();
    }
  }
  benchmark::DoNotOptimize(a.out.data());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

constexpr std::size_t widest = 32000;  // the classifier's output

void products(benchmark::State& state, bool eigen) {
  const auto m = static_cast<std::size_t>(state.range(0));
  const auto matrices = pass_matrices(*bench_weights());
  activations batch(m, widest);
  activations single(1, widest);
  double batch_seconds = 0.0;
  double single_seconds = 0.0;
  for (auto _ : state) {
    single_seconds += eigen ? eigen_products(matrices, single, 1) : batched_products(matrices, single, 1);
    batch_seconds += eigen ? eigen_products(matrices, batch, m) : batched_products(matrices, batch, m);
  }
  const auto iterations = static_cast<double>(state.iterations());
  state.counters["ms_m1"] = 1e3 * single_seconds / iterations;
  state.counters["ms_m"] = 1e3 * batch_seconds / iterations;
  state.counters["vs_m1"] = batch_seconds / single_seconds;
  state.counters["GBps_m1"] =
      4.0 * static_cast<double>(bench_config().parameters_read(12) - bench_config().dim) / (single_seconds / iterations) / 1e9;
}

// The multiply-adds of products/m with the weights in cache: each thread multiplies its own
// 64-row block (256 KB, within every L2 here) over and over, as many weights as a pass reads,
// in one task of the team (no fork-join per product). In the same iteration: the real products
// of m tokens, weights streamed from memory, and of 1 token (the stream alone, nearly). If
// streaming and arithmetic overlapped fully, products/m would cost max(stream, arithmetic);
// `hidden` is the share of the arithmetic that the m-token pass hides under the stream.
void BM_products_in_cache(benchmark::State& state) {
  const auto m = static_cast<std::size_t>(state.range(0));
  const auto matrices = pass_matrices(*bench_weights());
  std::size_t weights_read = 0;
  for (const row_matrix* w : matrices) weights_read += static_cast<std::size_t>(w->size());
  constexpr std::size_t block_rows = 64;
  constexpr std::size_t columns = 1024;
  thread_team& team = bench_team();
  const std::size_t members = team.size();
  const row_matrix blocks = row_matrix::Constant(static_cast<Eigen::Index>(block_rows * members), columns, 0.001f);
  const std::size_t repeats = weights_read / (block_rows * columns * members);
  activations cached(m, columns);
  activations batch(m, widest);
  activations single(1, widest);
  double cache_seconds = 0.0;
  double memory_seconds = 0.0;
  double stream_seconds = 0.0;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    team.run([&](std::size_t member, std::size_t) noexcept {
      const const_rows_view block{blocks.data() + member * block_rows * columns, block_rows, columns, columns};
      const const_rows_view in{cached.in.data(), m, columns, columns};
      // Each member writes its own columns of the output, member * block_rows on.
      const rows_view out{cached.out.data() + member * block_rows, m, block_rows, columns};
      for (std::size_t r = 0; r < repeats; ++r) detail::multiply_rows(block, 0, block_rows, in, out);
    });
    cache_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    memory_seconds += batched_products(matrices, batch, m);
    stream_seconds += batched_products(matrices, single, 1);
    benchmark::DoNotOptimize(cached.out.data());
  }
  const auto iterations = static_cast<double>(state.iterations());
  state.counters["ms_cache"] = 1e3 * cache_seconds / iterations;
  state.counters["ms_memory"] = 1e3 * memory_seconds / iterations;
  state.counters["ms_stream"] = 1e3 * stream_seconds / iterations;
  state.counters["hidden"] = (stream_seconds + cache_seconds - memory_seconds) / cache_seconds;
}

// A forward pass of m tokens after a 128-token context, against the single-token pass in the
// same iteration; both roll back afterwards so every iteration sees the same context.
void BM_forward(benchmark::State& state) {
  const auto m = static_cast<std::size_t>(state.range(0));
  static const auto team = std::shared_ptr<thread_team>(&bench_team(), [](thread_team*) {});
  transformer model(bench_weights(), team);
  const std::size_t vocabulary = bench_config().vocab_size;
  std::vector<cospec::token_id> context(128);
  for (std::size_t i = 0; i < context.size(); ++i) context[i] = static_cast<cospec::token_id>((i * 7919) % vocabulary);
  model.feed(context, {});
  std::vector<std::vector<float>> storage(m, std::vector<float>(vocabulary));
  std::vector<std::span<float>> rows(storage.begin(), storage.end());
  std::vector<cospec::token_id> tokens(m, 42);
  double batch_seconds = 0.0;
  double single_seconds = 0.0;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    model.feed(std::span(tokens).first(1), std::span(rows).first(1));
    single_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    model.truncate(context.size());
    start = std::chrono::steady_clock::now();
    model.feed(tokens, rows);
    batch_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    model.truncate(context.size());
    benchmark::DoNotOptimize(storage.back().data());
  }
  const auto iterations = static_cast<double>(state.iterations());
  state.counters["ms_m1"] = 1e3 * single_seconds / iterations;
  state.counters["ms_m"] = 1e3 * batch_seconds / iterations;
  state.counters["vs_m1"] = batch_seconds / single_seconds;
}

// One batched pass of S sequences of m tokens each (every token's logits wanted, as when
// verifying), each sequence after its own 128-token context, against one sequence of one
// token in the same iteration (docs/benchmarks.md, "Serving many requests").
void BM_batched_forward(benchmark::State& state) {
  const auto sequences = static_cast<std::size_t>(state.range(0));
  const auto m = static_cast<std::size_t>(state.range(1));
  static const auto team = std::shared_ptr<thread_team>(&bench_team(), [](thread_team*) {});
  batched_transformer model(bench_weights(), team, {.layers = 0, .context_limit = 256, .max_sequences = sequences});
  const std::size_t vocabulary = bench_config().vocab_size;
  std::vector<cospec::token_id> context(128);
  for (std::size_t i = 0; i < context.size(); ++i) context[i] = static_cast<cospec::token_id>((i * 7919) % vocabulary);
  std::vector<cospec::sequence_id> ids;
  for (std::size_t s = 0; s < sequences; ++s) {
    ids.push_back(model.create_sequence());
    const cospec::sequence_feed prompt{ids.back(), context, {}};
    model.feed(std::span(&prompt, 1));
  }
  std::vector<std::vector<float>> storage(sequences * m, std::vector<float>(vocabulary));
  std::vector<std::span<float>> rows(storage.begin(), storage.end());
  const std::vector<cospec::token_id> tokens(m, 42);
  std::vector<cospec::sequence_feed> batch;
  for (std::size_t s = 0; s < sequences; ++s)
    batch.push_back({ids[s], tokens, cospec::logit_outputs(rows.data() + s * m, m)});
  const cospec::sequence_feed single{ids[0], std::span(tokens).first(1), cospec::logit_outputs(rows.data(), 1)};
  double batch_seconds = 0.0;
  double single_seconds = 0.0;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    model.feed(std::span(&single, 1));
    single_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    model.truncate(ids[0], context.size());
    start = std::chrono::steady_clock::now();
    model.feed(batch);
    batch_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (const cospec::sequence_id id : ids) model.truncate(id, context.size());
    benchmark::DoNotOptimize(storage.back().data());
  }
  const auto iterations = static_cast<double>(state.iterations());
  state.counters["ms_1x1"] = 1e3 * single_seconds / iterations;
  state.counters["ms_pass"] = 1e3 * batch_seconds / iterations;
  state.counters["vs_1x1"] = batch_seconds / single_seconds;
  state.counters["per_token"] = batch_seconds / single_seconds / static_cast<double>(sequences * m);
}

void BM_products(benchmark::State& state) { products(state, false); }
void BM_eigen(benchmark::State& state) { products(state, true); }
BENCHMARK(BM_products)->Name("products")->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Arg(16)->Arg(32)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_products_in_cache)->Name("products_in_cache")->Arg(1)->Arg(4)->Arg(8)->Arg(16)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_eigen)->Name("eigen")->Arg(1)->Arg(2)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward)->Name("forward")->Arg(1)->Arg(2)->Arg(4)->Arg(5)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_batched_forward)
    ->Name("batched_forward")
    ->ArgNames({"S", "m"})
    ->ArgsProduct({{1, 4, 16}, {1, 3}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
