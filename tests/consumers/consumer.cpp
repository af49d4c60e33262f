// A consumer of the installed or embedded package: includes the umbrella header and checks
// one result, so a broken include path, target or header shows up as a failed test.
#include <cospec/cospec.hpp>

#include <array>
#include <cmath>
#include <cstdio>

int main() {
  const std::array<float, 3> logits{0.0f, std::log(3.0f), -INFINITY};
  std::array<float, 3> probabilities{};
  cospec::kernels::softmax(logits, probabilities);
  const bool ok = std::abs(probabilities[0] - 0.25f) < 1e-6f && std::abs(probabilities[1] - 0.75f) < 1e-6f &&
                  probabilities[2] == 0.0f;
  std::printf("cospec %s consumer: %s\n", cospec::version_string, ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
