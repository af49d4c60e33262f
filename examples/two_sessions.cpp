// Two CoS sessions driven by hand from one loop (docs/engine.md, "Driving a session"): the
// caller owns the models and the loop, the sessions only say what must be computed next.
#include <cospec/cospec.hpp>

#include <cstdio>
#include <span>
#include <vector>

#include "models/synthetic_model.hpp"

using cospec::examples::synthetic_model;

namespace {

/// One request: its own two models (a draft and a target), its session and its prompt.
struct request {
  std::vector<synthetic_model> models;
  cospec::session<cospec::weighted_ensemble, cospec::alternating> session;
  std::vector<cospec::token_id> prompt;
};

request make_request(std::uint64_t own_seed, std::vector<cospec::token_id> prompt) {
  std::vector<synthetic_model> models{synthetic_model({32, 2, 1, own_seed, 0.8, 2.0}),
                                      synthetic_model({32, 2, 1, own_seed + 1, 0.8, 2.0})};
  cospec::session session(cospec::weighted_ensemble({0.5f, 0.5f}), cospec::alternating({4, 1}),
                          {models[0].vocabulary_size(), models[1].vocabulary_size()});
  return {std::move(models), std::move(session), std::move(prompt)};
}

/// What the caller's engine does with one pass: roll back, then one forward pass.
void run(synthetic_model& model, const cospec::model_pass& pass) {
  if (model.context_length() > pass.keep) model.truncate(pass.keep);
  model.feed(pass.tokens, pass.rows);
}

}  // namespace

int main() {
  std::vector<request> requests;
  requests.push_back(make_request(2, {1, 2, 3}));
  requests.push_back(make_request(5, {7, 8}));

  cospec::sampling_settings settings;
  settings.temperature = 0.8f;
  settings.seed = 42;
  cospec::generation_limits limits;
  limits.max_new_tokens = 24;
  for (request& r : requests) r.session.start(r.prompt, settings, limits);

  // The caller's scheduler: one pass of each running session per round, in turn.
  bool any_running = true;
  while (any_running) {
    any_running = false;
    for (request& r : requests) {
      const cospec::model_pass* pass = r.session.next_pass();
      if (pass == nullptr) continue;
      any_running = true;
      try {
        run(r.models[pass->model], *pass);
      } catch (...) {
        r.session.pass_failed();  // the request ends; its models keep only committed text
        throw;
      }
      r.session.pass_done();
    }
  }

  // Each request's tokens are those the decoder gives for it alone, with the same seed.
  int mismatches = 0;
  for (std::size_t i = 0; i < requests.size(); ++i) {
    request& r = requests[i];
    const cospec::generation_result result = r.session.take_result();
    // A finished request may leave proposals in a model's context: drop them before the
    // model serves this text again.
    for (std::size_t k = 0; k < r.models.size(); ++k)
      if (r.models[k].context_length() > r.session.held(k)) r.models[k].truncate(r.session.held(k));
    std::printf("request %zu: %zu tokens, %zu forward passes:", i, result.tokens.size(),
                result.statistics.forward_passes());
    for (cospec::token_id t : result.tokens) std::printf(" %d", t);
    std::printf("\n");

    std::vector<synthetic_model> fresh{synthetic_model(r.models[0].config()), synthetic_model(r.models[1].config())};
    cospec::decoder alone(std::vector<synthetic_model*>{&fresh[0], &fresh[1]}, cospec::weighted_ensemble({0.5f, 0.5f}),
                          cospec::alternating({4, 1}), settings);
    if (alone.generate(r.prompt, limits).tokens != result.tokens) {
      std::printf("request %zu: differs from decoding it alone\n", i);
      ++mismatches;
    }
  }
  return mismatches == 0 ? 0 : 1;
}
