// cospec-method-grid: every fixed method and the automatic choice on the 48 regimes of the grid
// (examples/method_grid.hpp), on the cost clock: the table of docs/benchmarks.md, "The automatic
// choice", its CSV (--csv) and the data of docs/plots/method_grid.gp.
#include <algorithm>  // std::max
#include <cstdio>     // std::printf, std::fopen, std::fprintf
#include <cstdlib>    // std::stoul
#include <string>     // std::string
#include <vector>     // std::vector

#include "method_grid.hpp"

int main(int argc, char** argv) {
  using namespace cospec::examples::grid;
  std::size_t seeds = 16, tokens = 300;
  std::string csv;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--seeds") seeds = std::stoul(argv[i + 1]);
    else if (flag == "--tokens") tokens = std::stoul(argv[i + 1]);
    else if (flag == "--csv") csv = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: cospec-method-grid [--seeds N] [--tokens N] [--csv FILE]\n");
      return 2;
    }
  }
  std::FILE* out = csv.empty() ? nullptr : std::fopen(csv.c_str(), "w");
  if (out != nullptr) {
    std::fprintf(out, "regime,combiner,mode,ratio,text");
    for (const auto& name : method_names()) std::fprintf(out, ",%s", name.c_str());
    std::fprintf(out, ",best,auto_over_best\n");
  }
  std::printf("| regime | standard | best fixed method | its cost | automatic | automatic / best |\n|---|---|---|---|---|---|\n");
  double worst = 0.0;
  for (const regime& r : every_regime()) {
    const std::vector<measurement> costs = run_regime(r, seeds, tokens);
    std::size_t best = 0;
    for (std::size_t m = 0; m + 1 < costs.size(); ++m)
      if (costs[m].cost_per_token() < costs[best].cost_per_token()) best = m;
    const double ratio = costs.back().cost_per_token() / costs[best].cost_per_token();
    worst = std::max(worst, ratio);
    std::printf("| %s | %.2f | %s | %.2f | %.2f | %.3f |\n", r.name().c_str(), costs[0].cost_per_token(),
                method_names()[best].c_str(), costs[best].cost_per_token(), costs.back().cost_per_token(), ratio);
    if (out != nullptr) {
      std::fprintf(out, "%s,%s,%s,%g,%s", r.name().c_str(), r.combiner.c_str(), r.greedy ? "greedy" : "T=1", r.ratio,
                   r.repeats ? "repeats" : "fresh");
      for (const measurement& m : costs) std::fprintf(out, ",%.4f", m.cost_per_token());
      std::fprintf(out, ",%s,%.4f\n", method_names()[best].c_str(), ratio);
    }
  }
  std::printf("\nworst automatic / best fixed: %.3f (%zu prompts x %zu tokens per regime, cost clock)\n", worst, seeds,
              tokens);
  if (out != nullptr) std::fclose(out);
  return 0;
}
