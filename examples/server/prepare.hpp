// A parsed request prepared against the served model (docs/server.md, "Requests"): its prompts
// as tokens, checked against the vocabulary and the context, and what the decoder is asked
// (sampling, limits, the request's own combination and method). Pure, so that the fuzz target
// tests/fuzz/fuzz_server_request.cpp runs it on any body.
#pragma once

#include <algorithm>  // std::max
#include <chrono>     // std::chrono
#include <cstddef>    // std::size_t
#include <optional>   // std::optional
#include <random>     // std::random_device
#include <string>     // std::string
#include <utility>    // std::move
#include <variant>    // std::variant, std::get_if
#include <vector>     // std::vector

#include <cospec/cospec.hpp>

#include "server/api_request.hpp"
#include "server/codec.hpp"
#include "server/engine.hpp"
#include "server/recipe.hpp"

namespace cospec::server {

/// Settings of the HTTP side.
struct http_settings {
  std::string api_key;                       // empty: no authentication
  std::size_t max_body = std::size_t{1} << 20;  // bytes
  std::chrono::milliseconds timeout{600000};    // per request, queueing included
  std::string default_method = "auto";
  std::vector<double> costs;                 // relative pass costs; empty: measured
  combination_spec combination;
  request_limits limits;
};

/// A request prepared against the model: every prompt's tokens and what to ask the decoder.
struct prepared_request {
  completion_request request;
  std::vector<std::vector<token_id>> prompt_tokens;  // one per prompt (chat: the template's one)
  std::vector<std::string> prompt_texts;
  job_spec spec;                                     // without the prompt
  bool logprobs = false;
  std::size_t top = 0;
  std::size_t max_tokens = 0;
};

/// The JSON text of `value`, with bytes that are not UTF-8 replaced (a token may hold half a
/// character; JSON may not).
inline std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

inline std::string finish_reason_name(const generation_result& result, bool timed_out) {
  if (timed_out) return "length";
  switch (result.reason) {
    case finish_reason::stop_token:
    case finish_reason::stop_sequence:
    case finish_reason::stop_string:
      return "stop";
    default:
      return "length";
  }
}

/// Checks what needs the model and fills the decoder's side of the request. Pure: no engine call.
inline std::variant<prepared_request, api_error> prepare(completion_request request, const engine_info& info,
                                                         const codec& vocabulary, const http_settings& settings) {
  prepared_request out;
  const std::size_t v = vocabulary.size();
  if (!request.model.empty() && request.model != info.model_id)
    return api_error{400, "unknown model \"" + request.model + "\": this server serves \"" + info.model_id + "\"",
                     "invalid_request_error", "model", "model_not_found"};
  if (request.chat) {
    const std::string text = vocabulary.chat(request.messages);
    out.prompt_tokens.push_back(vocabulary.encode(text, true));
    out.prompt_texts.push_back(text);
  } else {
    for (const prompt_input& p : request.prompts) {
      if (p.text) {
        out.prompt_tokens.push_back(vocabulary.encode(*p.text, true));
        out.prompt_texts.push_back(*p.text);
      } else {
        for (std::size_t i = 0; i < p.tokens.size(); ++i)
          if (static_cast<std::size_t>(p.tokens[i]) >= v)
            return invalid("prompt", "prompt token " + std::to_string(i) + " is " + std::to_string(p.tokens[i]) +
                                         ", outside the vocabulary of " + std::to_string(v), "invalid_token");
        out.prompt_tokens.push_back(p.tokens);
        out.prompt_texts.push_back(vocabulary.decode(p.tokens));
      }
    }
  }
  for (const auto& tokens : out.prompt_tokens) {
    if (tokens.empty()) return invalid(request.chat ? "messages" : "prompt", "the prompt encodes to no token");
    const std::size_t needed = tokens.size() + (request.max_tokens.value_or(1) > 0 ? 1 : 0);
    if (needed > info.context + 1 || tokens.size() > info.context)
      return invalid(request.chat ? "messages" : "prompt",
                     "the prompt holds " + std::to_string(tokens.size()) + " tokens, more than the context of " +
                         std::to_string(info.context) + " allows",
                     "context_length_exceeded");
  }
  // What the decoder is asked.
  sampling_settings& sampling = out.spec.settings;
  sampling.temperature = request.temperature;
  sampling.top_p = request.top_p;
  sampling.top_k = request.top_k;
  sampling.min_p = request.min_p;
  sampling.seed = request.seed ? *request.seed : std::random_device{}();
  sampling.penalties.frequency = request.frequency_penalty;
  sampling.penalties.presence = request.presence_penalty;
  sampling.penalties.repeat = request.repeat_penalty;
  sampling.logit_bias = request.logit_bias;
  if (request.top_k && *request.top_k > v)
    return invalid("top_k", "top_k is " + std::to_string(*request.top_k) + ", more than the vocabulary of " + std::to_string(v));
  for (const auto& [token, bias] : request.logit_bias)
    if (static_cast<std::size_t>(token) >= v)
      return invalid("logit_bias", "logit_bias names token " + std::to_string(token) + ", outside the vocabulary of " +
                                       std::to_string(v), "invalid_token");
  try {
    validate(sampling, v);
  } catch (const invalid_configuration& e) {
    return invalid("", e.what());
  }
  generation_limits& limits = out.spec.limits;
  const std::size_t longest_prompt = [&] {
    std::size_t longest = 0;
    for (const auto& t : out.prompt_tokens) longest = std::max(longest, t.size());
    return longest;
  }();
  out.max_tokens = request.max_tokens ? *request.max_tokens
                                      : (request.chat ? info.context + 1 - longest_prompt : std::size_t{16});
  limits.max_new_tokens = out.max_tokens;
  limits.stop_tokens = vocabulary.end_tokens();
  limits.include_stop_token = false;
  limits.stop_strings = request.stop;
  limits.min_tokens = request.min_tokens;
  out.logprobs = request.chat ? request.chat_logprobs : request.logprobs.has_value();
  out.top = request.chat ? request.top_logprobs : request.logprobs.value_or(0);
  if (out.logprobs) limits.logprobs = {true, out.top, logprob_basis::model};
  // The recipe: the request's own combination parameters and method, where given.
  if (request.weights || request.mu || request.alpha) {
    if (request.weights && settings.combination.type == combination_spec::kind::contrastive)
      return invalid("weights", "weights do not apply to contrastive decoding (give mu and alpha)");
    if ((request.mu || request.alpha) && settings.combination.type != combination_spec::kind::contrastive)
      return invalid(request.mu ? "mu" : "alpha", "mu and alpha apply to contrastive decoding only");
    if (request.weights && request.weights->size() != info.model_names.size())
      return invalid("weights", std::to_string(request.weights->size()) + " weights for " +
                                    std::to_string(info.model_names.size()) + " models");
    try {
      out.spec.combiner = settings.combination.combiner(request.weights, request.mu, request.alpha);
    } catch (const invalid_configuration& e) {
      return invalid(request.weights ? "weights" : (request.alpha && !request.mu) ? "alpha" : "mu", e.what());
    }
  }
  auto policy = method_policy(request.method.value_or(settings.default_method), info.model_names.size(), settings.costs);
  if (auto* error = std::get_if<api_error>(&policy)) return *error;
  out.spec.speculator = std::move(std::get<any_speculator>(policy));
  out.spec.deadline = clock::now() + settings.timeout;
  out.request = std::move(request);
  return out;
}

}  // namespace cospec::server
