// Placeholder main demo until the engine lands: softmax of a small row.
#include <cospec/cospec.hpp>

#include <array>
#include <cstdio>

int main() {
  const std::array<float, 4> logits{1.0f, 2.0f, 3.0f, 4.0f};
  std::array<float, 4> probabilities{};
  cospec::kernels::softmax(logits, probabilities);
  for (float p : probabilities) std::printf("%.4f ", p);
  std::printf("\n");
}
