// cospec-server's requests: the OpenAI-style JSON bodies of /v1/completions and
// /v1/chat/completions turned into typed requests, or into the error a client gets (docs/server.md,
// "Requests" and "Errors"). Pure functions from bytes to a value: no socket, no model, no clock,
// so that a fuzzer can drive them (tests/fuzz/fuzz_server_request.cpp).
#pragma once

#include <cmath>      // std::isfinite
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t, std::int64_t
#include <limits>     // std::numeric_limits
#include <optional>   // std::optional
#include <string>     // std::string
#include <utility>    // std::move, std::pair
#include <variant>    // std::variant, std::get_if
#include <vector>     // std::vector

#include <nlohmann/json.hpp>

#include <cospec/token.hpp>

namespace cospec::server {

using json = nlohmann::json;

/// What a client gets for a request that cannot be served: an HTTP status and OpenAI's error
/// body, {"error": {"message", "type", "param", "code"}}.
struct api_error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  ///< the field at fault, or empty
  std::string code;   ///< a short machine-readable code, or empty

  [[nodiscard]] json body() const {
    json error{{"message", message}, {"type", type}};
    error["param"] = param.empty() ? json(nullptr) : json(param);
    error["code"] = code.empty() ? json(nullptr) : json(code);
    return json{{"error", error}};
  }
};

inline api_error invalid(std::string param, std::string message, std::string code = "invalid_value") {
  return {400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

/// One message of a chat.
struct chat_message {
  std::string role;
  std::string content;
};

/// A prompt as the client gave it: text, or token ids.
struct prompt_input {
  std::optional<std::string> text;
  std::vector<token_id> tokens;
};

/// A completion or chat completion request, validated for everything that does not need the
/// model (ranges, types, combinations). Token ids and the context are checked against the
/// model afterwards (prepare.hpp).
struct completion_request {
  bool chat = false;
  std::string model;
  std::vector<prompt_input> prompts;     // completions: one or more
  std::vector<chat_message> messages;    // chat
  std::optional<std::size_t> max_tokens;  // none: until the context is full (chat) or 16 (completions)
  float temperature = 1.0f;
  std::optional<float> top_p;
  std::optional<std::size_t> top_k;
  std::optional<float> min_p;
  std::optional<std::uint64_t> seed;
  std::vector<std::string> stop;
  std::optional<std::size_t> logprobs;   // completions: the top alternatives (0-5); chat: see top_logprobs
  bool chat_logprobs = false;            // chat: "logprobs": true
  std::size_t top_logprobs = 0;          // chat: 0-20
  bool echo = false;
  bool tokens_as_ids = false;            // return_tokens_as_token_ids (vLLM): "token_id:N" in logprobs
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  float repeat_penalty = 1.0f;
  std::vector<std::pair<token_id, float>> logit_bias;
  std::size_t min_tokens = 0;
  bool stream = false;
  bool include_usage = false;
  // cospec's own fields (docs/server.md, "What cospec adds").
  std::optional<std::string> method;
  std::optional<std::vector<float>> weights;
  std::optional<float> mu;
  std::optional<float> alpha;
};

/// Limits of what a request may ask, set by the server's options.
struct request_limits {
  std::size_t max_prompts = 16;
  std::size_t max_stop = 4;
  std::size_t max_stop_length = 256;
};

namespace detail {

inline bool is_integer(const json& value) { return value.is_number_integer() || value.is_number_unsigned(); }

/// A finite number in [low, high], or an error naming `name`.
inline std::variant<float, api_error> number_in(const json& value, const char* name, double low, double high) {
  if (!value.is_number()) return invalid(name, std::string(name) + " must be a number");
  const double x = value.get<double>();
  if (!std::isfinite(x)) return invalid(name, std::string(name) + " must be a finite number");
  if (x < low || x > high)
    return invalid(name, std::string(name) + " must be between " + json(low).dump() + " and " + json(high).dump() +
                             ", got " + json(x).dump());
  return static_cast<float>(x);
}

/// A non-negative integer no larger than `high`.
inline std::variant<std::size_t, api_error> count_at_most(const json& value, const char* name, std::size_t high) {
  if (!is_integer(value)) return invalid(name, std::string(name) + " must be an integer");
  if (value.is_number_integer() && value.get<std::int64_t>() < 0)
    return invalid(name, std::string(name) + " must be >= 0, got " + value.dump());
  const auto x = value.get<std::uint64_t>();
  if (x > high)
    return invalid(name, std::string(name) + " must be <= " + std::to_string(high) + ", got " + value.dump());
  return static_cast<std::size_t>(x);
}

/// Token ids of a JSON array (each a non-negative integer that fits a token_id), or an error.
inline std::variant<std::vector<token_id>, api_error> token_array(const json& value, const char* name) {
  std::vector<token_id> tokens;
  tokens.reserve(value.size());
  for (const json& t : value) {
    if (!is_integer(t) || (t.is_number_integer() && t.get<std::int64_t>() < 0) ||
        t.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<token_id>::max()))
      return invalid(name, std::string(name) + " must hold token ids (integers >= 0), got " + t.dump());
    tokens.push_back(static_cast<token_id>(t.get<std::uint64_t>()));
  }
  return tokens;
}

inline std::variant<std::vector<prompt_input>, api_error> prompts_of(const json& value, const request_limits& limits) {
  std::vector<prompt_input> prompts;
  if (value.is_string()) {
    prompts.push_back({value.get<std::string>(), {}});
    return prompts;
  }
  if (!value.is_array()) return invalid("prompt", "prompt must be a string, an array of token ids, or an array of those");
  if (value.empty()) return invalid("prompt", "prompt is empty");
  if (is_integer(value.front())) {
    auto tokens = token_array(value, "prompt");
    if (auto* error = std::get_if<api_error>(&tokens)) return *error;
    prompts.push_back({std::nullopt, std::move(std::get<std::vector<token_id>>(tokens))});
    return prompts;
  }
  if (value.size() > limits.max_prompts)
    return invalid("prompt", "at most " + std::to_string(limits.max_prompts) + " prompts per request, got " +
                                 std::to_string(value.size()));
  for (const json& item : value) {
    if (item.is_string()) {
      prompts.push_back({item.get<std::string>(), {}});
    } else if (item.is_array() && !item.empty()) {
      auto tokens = token_array(item, "prompt");
      if (auto* error = std::get_if<api_error>(&tokens)) return *error;
      prompts.push_back({std::nullopt, std::move(std::get<std::vector<token_id>>(tokens))});
    } else {
      return invalid("prompt", "each prompt of an array must be a string or a non-empty array of token ids");
    }
  }
  return prompts;
}

inline std::variant<std::vector<chat_message>, api_error> messages_of(const json& value) {
  if (!value.is_array() || value.empty()) return invalid("messages", "messages must be a non-empty array");
  std::vector<chat_message> messages;
  for (const json& m : value) {
    if (!m.is_object()) return invalid("messages", "each message must be an object with role and content");
    const auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return invalid("messages", "each message needs a string role");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "developer")
      return invalid("messages", "role must be system, developer, user or assistant, got \"" + r + "\"");
    const auto content = m.find("content");
    std::string text;
    if (content == m.end() || content->is_null()) {
      text.clear();
    } else if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {
      // OpenAI's content parts: only text parts can be served.
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          return invalid("messages", "only text content parts are supported");
        text += part["text"].get<std::string>();
      }
    } else {
      return invalid("messages", "content must be a string or an array of text parts");
    }
    messages.push_back({r, std::move(text)});
  }
  return messages;
}

}  // namespace detail

/// Parses a request body. `chat` selects /v1/chat/completions. Every field OpenAI defines that
/// cospec-server serves is read and range-checked; fields it cannot serve (n > 1, best_of > 1,
/// suffix, tools, response_format) are a 400 naming them; unknown fields are ignored, as
/// OpenAI's own API does for forward compatibility.
inline std::variant<completion_request, api_error> parse_request(const std::string& body, bool chat,
                                                                 const request_limits& limits = {}) {
  json root;
  try {
    root = json::parse(body);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number beyond double's range (found by the fuzzer).
    return api_error{400, std::string("the body is not valid JSON: ") + e.what(), "invalid_request_error", "",
                     "invalid_json"};
  }
  if (!root.is_object()) return api_error{400, "the body must be a JSON object", "invalid_request_error", "", "invalid_json"};
  completion_request request;
  request.chat = chat;
  try {
    const auto field = [&](const char* name) -> const json* {
      const auto found = root.find(name);
      return found == root.end() || found->is_null() ? nullptr : &*found;
    };
#define COSPEC_SERVER_TAKE(variable, expression)                     \
  do {                                                               \
    auto taken = (expression);                                       \
    if (auto* error = std::get_if<api_error>(&taken)) return *error; \
    variable = std::move(std::get<0>(taken));                        \
  } while (false)
    if (const json* v = field("model")) {
      if (!v->is_string()) return invalid("model", "model must be a string");
      request.model = v->get<std::string>();
    }
    if (chat) {
      const json* v = field("messages");
      if (v == nullptr) return invalid("messages", "messages is required", "missing_field");
      COSPEC_SERVER_TAKE(request.messages, detail::messages_of(*v));
    } else {
      const json* v = field("prompt");
      if (v == nullptr) return invalid("prompt", "prompt is required", "missing_field");
      COSPEC_SERVER_TAKE(request.prompts, detail::prompts_of(*v, limits));
    }
    const char* max_name = chat && field("max_completion_tokens") != nullptr ? "max_completion_tokens" : "max_tokens";
    if (const json* v = field(max_name)) {
      std::size_t max = 0;
      COSPEC_SERVER_TAKE(max, detail::count_at_most(*v, max_name, std::size_t{1} << 30));
      request.max_tokens = max;
    }
    if (const json* v = field("temperature")) COSPEC_SERVER_TAKE(request.temperature, detail::number_in(*v, "temperature", 0.0, 2.0));
    if (const json* v = field("top_p")) {
      float p = 1.0f;
      COSPEC_SERVER_TAKE(p, detail::number_in(*v, "top_p", 0.0, 1.0));
      if (p == 0.0f) return invalid("top_p", "top_p must be > 0 (use temperature 0 for greedy decoding)");
      if (p < 1.0f) request.top_p = p;  // 1 keeps every token: the mixture stays a mixture
    }
    if (const json* v = field("top_k")) {
      std::size_t k = 0;
      COSPEC_SERVER_TAKE(k, detail::count_at_most(*v, "top_k", std::size_t{1} << 30));
      if (k > 0) request.top_k = k;  // llama.cpp's convention: 0 disables it
    }
    if (const json* v = field("min_p")) {
      float p = 0.0f;
      COSPEC_SERVER_TAKE(p, detail::number_in(*v, "min_p", 0.0, 1.0));
      if (p > 0.0f) request.min_p = p;
    }
    if (const json* v = field("seed")) {
      if (!detail::is_integer(*v)) return invalid("seed", "seed must be an integer");
      request.seed = v->is_number_integer() ? static_cast<std::uint64_t>(v->get<std::int64_t>()) : v->get<std::uint64_t>();
    }
    if (const json* v = field("stop")) {
      if (v->is_string()) {
        request.stop.push_back(v->get<std::string>());
      } else if (v->is_array()) {
        for (const json& s : *v) {
          if (!s.is_string()) return invalid("stop", "stop must be a string or an array of strings");
          request.stop.push_back(s.get<std::string>());
        }
      } else {
        return invalid("stop", "stop must be a string or an array of strings");
      }
      if (request.stop.size() > limits.max_stop)
        return invalid("stop", "at most " + std::to_string(limits.max_stop) + " stop strings");
      for (const std::string& s : request.stop) {
        if (s.empty()) return invalid("stop", "a stop string is empty");
        if (s.size() > limits.max_stop_length)
          return invalid("stop", "a stop string is longer than " + std::to_string(limits.max_stop_length) + " bytes");
      }
    }
    if (chat) {
      if (const json* v = field("logprobs")) {
        if (!v->is_boolean()) return invalid("logprobs", "logprobs must be true or false");
        request.chat_logprobs = v->get<bool>();
      }
      if (const json* v = field("top_logprobs")) {
        COSPEC_SERVER_TAKE(request.top_logprobs, detail::count_at_most(*v, "top_logprobs", 20));
        if (!request.chat_logprobs) return invalid("top_logprobs", "top_logprobs needs logprobs: true");
      }
    } else {
      if (const json* v = field("logprobs")) {
        std::size_t n = 0;
        COSPEC_SERVER_TAKE(n, detail::count_at_most(*v, "logprobs", 5));
        request.logprobs = n;
      }
      if (const json* v = field("echo")) {
        if (!v->is_boolean()) return invalid("echo", "echo must be true or false");
        request.echo = v->get<bool>();
      }
    }
    if (const json* v = field("return_tokens_as_token_ids")) {
      if (!v->is_boolean()) return invalid("return_tokens_as_token_ids", "return_tokens_as_token_ids must be true or false");
      request.tokens_as_ids = v->get<bool>();
    }
    if (const json* v = field("frequency_penalty"))
      COSPEC_SERVER_TAKE(request.frequency_penalty, detail::number_in(*v, "frequency_penalty", -2.0, 2.0));
    if (const json* v = field("presence_penalty"))
      COSPEC_SERVER_TAKE(request.presence_penalty, detail::number_in(*v, "presence_penalty", -2.0, 2.0));
    if (const json* v = field("repeat_penalty"))
      COSPEC_SERVER_TAKE(request.repeat_penalty, detail::number_in(*v, "repeat_penalty", 0.01, 10.0));
    if (const json* v = field("logit_bias")) {
      if (!v->is_object()) return invalid("logit_bias", "logit_bias must be an object of token id: bias");
      for (const auto& [key, bias] : v->items()) {
        std::size_t consumed = 0;
        long long id = -1;
        try {
          id = std::stoll(key, &consumed);
        } catch (const std::exception&) {
          consumed = 0;
        }
        if (consumed != key.size() || key.empty() || id < 0 || id > std::numeric_limits<token_id>::max())
          return invalid("logit_bias", "logit_bias keys must be token ids, got \"" + key + "\"");
        float b = 0.0f;
        COSPEC_SERVER_TAKE(b, detail::number_in(bias, "logit_bias", -100.0, 100.0));
        // OpenAI's -100 is a ban.
        request.logit_bias.emplace_back(static_cast<token_id>(id), b <= -100.0f ? -std::numeric_limits<float>::infinity() : b);
      }
    }
    if (const json* v = field("min_tokens")) COSPEC_SERVER_TAKE(request.min_tokens, detail::count_at_most(*v, "min_tokens", std::size_t{1} << 30));
    if (const json* v = field("stream")) {
      if (!v->is_boolean()) return invalid("stream", "stream must be true or false");
      request.stream = v->get<bool>();
    }
    if (const json* v = field("stream_options")) {
      if (!v->is_object()) return invalid("stream_options", "stream_options must be an object");
      if (v->contains("include_usage")) {
        if (!(*v)["include_usage"].is_boolean()) return invalid("stream_options", "include_usage must be true or false");
        request.include_usage = (*v)["include_usage"].get<bool>();
      }
    }
    if (const json* v = field("n")) {
      if (!detail::is_integer(*v) || v->get<std::int64_t>() != 1)
        return invalid("n", "only n = 1 is supported (one completion per prompt)", "unsupported_value");
    }
    if (const json* v = field("best_of")) {
      if (!detail::is_integer(*v) || v->get<std::int64_t>() != 1)
        return invalid("best_of", "only best_of = 1 is supported", "unsupported_value");
    }
    for (const char* unsupported : {"suffix", "tools", "functions", "response_format", "tool_choice"})
      if (field(unsupported) != nullptr)
        return invalid(unsupported, std::string(unsupported) + " is not supported by cospec-server", "unsupported_parameter");
    // cospec's own fields.
    if (const json* v = field("method")) {
      if (!v->is_string()) return invalid("method", "method must be a string");
      request.method = v->get<std::string>();
    }
    if (const json* v = field("weights")) {
      if (!v->is_array() || v->empty()) return invalid("weights", "weights must be a non-empty array of numbers");
      std::vector<float> weights;
      for (const json& w : *v) {
        float x = 0.0f;
        COSPEC_SERVER_TAKE(x, detail::number_in(w, "weights", -1e6, 1e6));
        weights.push_back(x);
      }
      request.weights = std::move(weights);
    }
    if (const json* v = field("mu")) {
      float mu = 0.0f;
      COSPEC_SERVER_TAKE(mu, detail::number_in(*v, "mu", 0.0, 1e6));
      request.mu = mu;
    }
    if (const json* v = field("alpha")) {
      float alpha = 0.0f;
      COSPEC_SERVER_TAKE(alpha, detail::number_in(*v, "alpha", 0.0, 1.0));
      request.alpha = alpha;
    }
#undef COSPEC_SERVER_TAKE
  } catch (const json::exception& e) {
    // A value of a type the accessors did not expect (they check, but keep the promise).
    return invalid("", std::string("a field has an unexpected type: ") + e.what(), "invalid_type");
  }
  return request;
}

}  // namespace cospec::server
