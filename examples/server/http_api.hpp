// cospec-server's HTTP API: OpenAI's completions and chat completions (streamed as server-sent
// events or not), models, health, Prometheus metrics, tokenize and detokenize (docs/server.md).
// Requests are parsed by api_request.hpp, prepared against the model by prepare.hpp, and run by
// an engine.
#pragma once

#include <atomic>     // std::atomic
#include <chrono>     // std::chrono
#include <cstddef>    // std::size_t
#include <cstdint>    // std::uint64_t
#include <ctime>      // std::time
#include <exception>  // std::exception, std::rethrow_exception
#include <memory>     // std::shared_ptr
#include <optional>   // std::optional
#include <string>     // std::string
#include <utility>    // std::move, std::pair
#include <variant>    // std::variant, std::get_if
#include <vector>     // std::vector

#include <httplib.h>

#include <cospec/cospec.hpp>

#include "server/api_request.hpp"
#include "server/engine.hpp"
#include "server/prepare.hpp"

namespace cospec::server {

/// The routes of the API over one engine.
class http_api {
 public:
  http_api(engine& serving, http_settings settings) : engine_(serving), settings_(std::move(settings)) {}

  void install(httplib::Server& server) {
    server.set_payload_max_length(settings_.max_body);
    server.set_pre_routing_handler([this](const httplib::Request& request, httplib::Response& response) {
      return screen(request, response);
    });
    server.set_exception_handler([](const httplib::Request&, httplib::Response& response, std::exception_ptr error) {
      std::string what = "an internal error";
      try {
        std::rethrow_exception(error);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(response, api_error{500, what, "server_error", "", "internal_error"});
    });
    server.set_error_handler([](const httplib::Request& request, httplib::Response& response) {
      if (!response.body.empty()) return;
      if (response.status == 404)
        send_error(response, api_error{404, "no route " + request.method + " " + request.path, "invalid_request_error", "", "not_found"});
      else if (response.status == 413)
        send_error(response, api_error{413, "the body is larger than the server accepts", "invalid_request_error", "", "body_too_large"});
    });
    server.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& r) { completions(q, r, false); });
    server.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& r) { completions(q, r, true); });
    server.Get("/v1/models", [this](const httplib::Request&, httplib::Response& r) { models(r); });
    server.Get("/health", [this](const httplib::Request&, httplib::Response& r) {
      const bool ok = !engine_.draining();
      r.status = ok ? 200 : 503;
      r.set_content(dump(json{{"status", ok ? "ok" : "shutting down"}}), "application/json");
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& r) {
      r.set_content(engine_.metrics(), "text/plain; version=0.0.4");
    });
    server.Post("/tokenize", [this](const httplib::Request& q, httplib::Response& r) { tokenize(q, r); });
    server.Post("/detokenize", [this](const httplib::Request& q, httplib::Response& r) { detokenize(q, r); });
  }

 private:
  static void send_error(httplib::Response& response, const api_error& error) {
    response.status = error.status;
    if (error.status == 429) response.set_header("Retry-After", "1");
    response.set_content(dump(error.body()), "application/json");
  }

  /// Before routing: authentication and the body's size (from its Content-Length, so that an
  /// oversized body gets an OpenAI-style answer rather than the connection's end).
  httplib::Server::HandlerResponse screen(const httplib::Request& request, httplib::Response& response) {
    if (!settings_.api_key.empty() && request.path != "/health") {
      const std::string expected = "Bearer " + settings_.api_key;
      if (request.get_header_value("Authorization") != expected) {
        send_error(response, api_error{401, "missing or wrong API key (Authorization: Bearer <key>)",
                                       "authentication_error", "", "invalid_api_key"});
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (request.has_header("Content-Length")) {
      const std::string length = request.get_header_value("Content-Length");
      const bool digits = !length.empty() && length.find_first_not_of("0123456789") == std::string::npos;
      if (!digits || length.size() > 18 || std::stoull(length) > settings_.max_body) {
        send_error(response, api_error{413, "the body is larger than the " + std::to_string(settings_.max_body) +
                                                " bytes the server accepts", "invalid_request_error", "", "body_too_large"});
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  }

  void models(httplib::Response& response) {
    const engine_info& info = engine_.info();
    json model{{"id", info.model_id}, {"object", "model"}, {"created", started_}, {"owned_by", "cospec"}};
    model["cospec"] = {{"models", info.model_names}, {"combination", info.combination},
                       {"default_method", info.default_method}, {"methods", method_names()},
                       {"context", info.context}, {"parallel", info.parallel}};
    response.set_content(dump(json{{"object", "list"}, {"data", json::array({model})}}), "application/json");
  }

  /// A body that must be a JSON object; the error otherwise (any JSON exception is invalid JSON).
  static std::optional<api_error> parse_object(const std::string& text, json& body) {
    try {
      body = json::parse(text);
    } catch (const json::exception& e) {
      return api_error{400, std::string("the body is not valid JSON: ") + e.what(), "invalid_request_error", "", "invalid_json"};
    }
    if (!body.is_object()) return api_error{400, "the body must be a JSON object", "invalid_request_error", "", "invalid_json"};
    return std::nullopt;
  }

  void tokenize(const httplib::Request& request, httplib::Response& response) {
    json body;
    if (auto error = parse_object(request.body, body)) return send_error(response, *error);
    if (!body.contains("content") || !body["content"].is_string())
      return send_error(response, invalid("content", "content must be a string"));
    bool special = false, pieces = false;
    for (auto [name, flag] : {std::pair{"add_special", &special}, std::pair{"with_pieces", &pieces}}) {
      if (!body.contains(name)) continue;
      if (!body[name].is_boolean()) return send_error(response, invalid(name, std::string(name) + " must be true or false"));
      *flag = body[name].get<bool>();
    }
    const codec& vocabulary = engine_.vocabulary();
    const std::vector<token_id> tokens = vocabulary.encode(body["content"].get<std::string>(), special);
    json out = json::array();
    for (token_id t : tokens) {
      if (pieces) out.push_back({{"id", t}, {"piece", std::string(vocabulary.piece(t))}});
      else out.push_back(t);
    }
    response.set_content(dump(json{{"tokens", out}}), "application/json");
  }

  void detokenize(const httplib::Request& request, httplib::Response& response) {
    json body;
    if (auto error = parse_object(request.body, body)) return send_error(response, *error);
    if (!body.contains("tokens") || !body["tokens"].is_array())
      return send_error(response, invalid("tokens", "tokens must be an array of token ids"));
    auto tokens = detail::token_array(body["tokens"], "tokens");
    if (auto* error = std::get_if<api_error>(&tokens)) return send_error(response, *error);
    const codec& vocabulary = engine_.vocabulary();
    for (token_id t : std::get<std::vector<token_id>>(tokens))
      if (static_cast<std::size_t>(t) >= vocabulary.size())
        return send_error(response, invalid("tokens", "token " + std::to_string(t) + " is outside the vocabulary of " +
                                                          std::to_string(vocabulary.size()), "invalid_token"));
    response.set_content(dump(json{{"content", vocabulary.decode(std::get<std::vector<token_id>>(tokens))}}),
                         "application/json");
  }

  /// One completion's outcome for building a response.
  struct outcome {
    std::shared_ptr<job> scored;     // echo: the prompt's scores (null when the prompt is one token)
    std::shared_ptr<job> generated;  // null when max_tokens is 0
  };

  void completions(const httplib::Request& http, httplib::Response& response, bool chat) {
    auto parsed = parse_request(http.body, chat, settings_.limits);
    if (auto* error = std::get_if<api_error>(&parsed)) return send_error(response, *error);
    auto prepared = prepare(std::move(std::get<completion_request>(parsed)), engine_.info(), engine_.vocabulary(), settings_);
    if (auto* error = std::get_if<api_error>(&prepared)) return send_error(response, *error);
    auto request = std::make_shared<prepared_request>(std::move(std::get<prepared_request>(prepared)));
    const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id_++);
    const std::int64_t created = static_cast<std::int64_t>(std::time(nullptr));
    // Every prompt's jobs are queued before anything is awaited, so that they share passes.
    auto outcomes = std::make_shared<std::vector<outcome>>();
    for (std::size_t p = 0; p < request->prompt_tokens.size(); ++p) {
      outcome o;
      const auto& tokens = request->prompt_tokens[p];
      if (request->request.echo && tokens.size() > 1) {
        job_spec scoring;
        scoring.prompt.assign(tokens.begin(), tokens.begin() + 1);
        scoring.continuation.assign(tokens.begin() + 1, tokens.end());
        scoring.top_logprobs = request->top;
        scoring.combiner = request->spec.combiner;
        scoring.deadline = request->spec.deadline;
        auto queued = engine_.submit(std::move(scoring));
        if (auto* error = std::get_if<api_error>(&queued)) return reject(*outcomes, response, *error);
        o.scored = std::get<std::shared_ptr<job>>(queued);
      }
      if (request->max_tokens > 0) {
        job_spec spec = request->spec;
        spec.prompt = tokens;
        spec.stream_events = request->request.stream;
        auto queued = engine_.submit(std::move(spec));
        if (auto* error = std::get_if<api_error>(&queued)) {
          if (o.scored) o.scored->cancel();
          return reject(*outcomes, response, *error);
        }
        o.generated = std::get<std::shared_ptr<job>>(queued);
      }
      outcomes->push_back(std::move(o));
    }
    if (request->request.stream) return stream(response, request, outcomes, id, created);
    json choices = json::array();
    std::size_t prompt_tokens = 0, completion_tokens = 0;
    for (std::size_t p = 0; p < outcomes->size(); ++p) {
      outcome& o = (*outcomes)[p];
      if (o.scored) o.scored->wait();
      if (o.generated) o.generated->wait();
      for (const auto* j : {o.scored.get(), o.generated.get()})
        if (j != nullptr && j->error()) return send_error(response, failure(j->error()));
      prompt_tokens += request->prompt_tokens[p].size();
      if (o.generated) completion_tokens += o.generated->result().statistics.tokens;
      choices.push_back(choice(*request, p, o));
    }
    json body{{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created},
              {"model", engine_.info().model_id}, {"choices", choices},
              {"usage", usage(prompt_tokens, completion_tokens)}};
    response.set_content(dump(body), "application/json");
  }

  void reject(std::vector<outcome>& queued, httplib::Response& response, const api_error& error) {
    for (outcome& o : queued)
      for (const auto& j : {o.scored, o.generated})
        if (j) j->cancel();
    send_error(response, error);
  }

  static json usage(std::size_t prompt, std::size_t completion) {
    return json{{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
  }

  /// A job's failure as the client sees it: 400 for what the request did, 500 otherwise.
  static api_error failure(const std::exception_ptr& error) {
    try {
      std::rethrow_exception(error);
    } catch (const invalid_configuration& e) {
      return invalid("", e.what());
    } catch (const context_overflow& e) {
      return invalid("", e.what(), "context_length_exceeded");
    } catch (const std::exception& e) {
      return api_error{500, e.what(), "server_error", "", "decoding_failed"};
    } catch (...) {
      return api_error{500, "decoding failed", "server_error", "", "decoding_failed"};
    }
  }

  /// How a token is named in log-probabilities: its text, or "token_id:N" when the request
  /// asked for return_tokens_as_token_ids (vLLM's field: texts can be ambiguous or partial).
  std::string token_name(token_id token, bool as_ids) const {
    return as_ids ? "token_id:" + std::to_string(token) : std::string(engine_.vocabulary().piece(token));
  }

  /// A token's log-probability entry in the chat format.
  json chat_logprob(token_id token, float logprob, std::span<const token_logprob> top, bool as_ids) const {
    const std::string piece = token_name(token, as_ids);
    json alternatives = json::array();
    for (const token_logprob& alternative : top) {
      if (alternative.token < 0) continue;
      const std::string text = token_name(alternative.token, as_ids);
      alternatives.push_back({{"token", text}, {"logprob", alternative.logprob}, {"bytes", bytes_of(text)}});
    }
    return json{{"token", piece}, {"logprob", logprob}, {"bytes", bytes_of(piece)}, {"top_logprobs", alternatives}};
  }

  static json bytes_of(const std::string& text) {
    json bytes = json::array();
    for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
    return bytes;
  }

  json top_object(std::span<const token_logprob> top, bool as_ids) const {
    json object = json::object();
    for (const token_logprob& alternative : top)
      if (alternative.token >= 0) object[token_name(alternative.token, as_ids)] = alternative.logprob;
    return object;
  }

  /// The non-streamed choice of prompt p.
  json choice(const prepared_request& request, std::size_t p, const outcome& o) const {
    const bool chat = request.request.chat;
    const bool as_ids = request.request.tokens_as_ids;
    const generation_result* generated = o.generated ? &o.generated->result() : nullptr;
    std::string text = generated ? generated->text : std::string{};
    const std::string reason = generated ? finish_reason_name(*generated, o.generated->timed_out()) : "length";
    json logprobs = nullptr;
    if (request.logprobs && chat) {
      json content = json::array();
      for (std::size_t i = 0; generated && i < generated->logprobs.size(); ++i)
        content.push_back(chat_logprob(generated->tokens[i], generated->logprobs[i], generated->top_logprobs(i), as_ids));
      logprobs = json{{"content", content}};
    } else if (request.logprobs) {
      json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
      std::size_t offset = 0;
      const auto add = [&](token_id t, std::optional<float> lp, std::optional<json> alternatives) {
        tokens.push_back(token_name(t, as_ids));
        token_logprobs.push_back(lp ? json(*lp) : json(nullptr));
        top.push_back(alternatives ? *alternatives : json(nullptr));
        offsets.push_back(offset);
        offset += engine_.vocabulary().piece(t).size();  // offsets into the text, whatever the names
      };
      if (request.request.echo) {
        const auto& prompt = request.prompt_tokens[p];
        add(prompt[0], std::nullopt, std::nullopt);
        const generation_result* scores = o.scored ? &o.scored->result() : nullptr;
        for (std::size_t i = 1; i < prompt.size(); ++i)
          add(prompt[i], scores ? std::optional<float>(scores->logprobs[i - 1]) : std::nullopt,
              scores ? std::optional<json>(top_object(scores->top_logprobs(i - 1), as_ids)) : std::nullopt);
      }
      for (std::size_t i = 0; generated && i < generated->logprobs.size(); ++i)
        add(generated->tokens[i], generated->logprobs[i], top_object(generated->top_logprobs(i), as_ids));
      logprobs = json{{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
    }
    if (request.request.echo) text = request.prompt_texts[p] + text;
    json c{{"index", p}, {"logprobs", logprobs}, {"finish_reason", reason}};
    if (chat) c["message"] = {{"role", "assistant"}, {"content", text}};
    else c["text"] = text;
    return c;
  }

  /// Server-sent events: a chunk per released piece of text, a last chunk with the finish
  /// reason, a usage chunk when asked, then [DONE]. A client that goes away cancels its jobs.
  void stream(httplib::Response& response, std::shared_ptr<prepared_request> request,
              std::shared_ptr<std::vector<outcome>> outcomes, std::string id, std::int64_t created) {
    response.set_header("Cache-Control", "no-cache");
    response.set_chunked_content_provider(
        "text/event-stream",
        [this, request, outcomes, id, created](std::size_t, httplib::DataSink& sink) {
          const bool chat = request->request.chat;
          const bool as_ids = request->request.tokens_as_ids;
          const auto send = [&](const json& chunk) {
            const std::string event = "data: " + dump(chunk) + "\n\n";
            return sink.write(event.data(), event.size());
          };
          const auto cancel_all = [&] {
            for (outcome& o : *outcomes)
              for (const auto& j : {o.scored, o.generated})
                if (j) j->cancel();
          };
          const auto chunk_of = [&](std::size_t index, json delta_or_text, json logprobs, json reason) {
            json c{{"index", index}, {"logprobs", logprobs}, {"finish_reason", reason}};
            if (chat) c["delta"] = std::move(delta_or_text);
            else c["text"] = std::move(delta_or_text);
            return json{{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                        {"model", engine_.info().model_id}, {"choices", json::array({c})}};
          };
          std::size_t prompt_tokens = 0, completion_tokens = 0;
          for (std::size_t p = 0; p < outcomes->size(); ++p) {
            outcome& o = (*outcomes)[p];
            prompt_tokens += request->prompt_tokens[p].size();
            if (chat && !send(chunk_of(p, json{{"role", "assistant"}, {"content", ""}}, nullptr, nullptr))) {
              cancel_all();
              return false;
            }
            if (request->request.echo) {
              if (o.scored) o.scored->wait();
              if (!send(chunk_of(p, request->prompt_texts[p], nullptr, nullptr))) {
                cancel_all();
                return false;
              }
            }
            if (!o.generated) {
              if (!send(chunk_of(p, chat ? json::object() : json(""), nullptr, "length"))) return false;
              continue;
            }
            token_update update;
            while (o.generated->next_update(update)) {
              json logprobs = nullptr;
              if (request->logprobs && update.logprob) {
                if (chat)
                  logprobs = json{{"content", json::array({chat_logprob(update.token, *update.logprob, update.top, as_ids)})}};
                else
                  logprobs = json{{"tokens", json::array({token_name(update.token, as_ids)})},
                                  {"token_logprobs", json::array({*update.logprob})},
                                  {"top_logprobs", json::array({top_object(update.top, as_ids)})}};
              }
              if (update.text.empty() && logprobs.is_null()) continue;  // held back: nothing to send yet
              const json piece = chat ? json{{"content", update.text}} : json(update.text);
              if (!send(chunk_of(p, piece, logprobs, nullptr))) {
                cancel_all();
                return false;
              }
            }
            o.generated->wait();
            if (o.generated->error()) {
              const api_error error = failure(o.generated->error());
              send(error.body());
              break;
            }
            completion_tokens += o.generated->result().statistics.tokens;
            const std::string reason = finish_reason_name(o.generated->result(), o.generated->timed_out());
            if (!send(chunk_of(p, chat ? json::object() : json(""), nullptr, reason))) return false;
          }
          if (request->request.include_usage) {
            json last{{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created},
                      {"model", engine_.info().model_id}, {"choices", json::array()},
                      {"usage", usage(prompt_tokens, completion_tokens)}};
            send(last);
          }
          const std::string done = "data: [DONE]\n\n";
          sink.write(done.data(), done.size());
          sink.done();
          return true;
        },
        [outcomes](bool success) {
          if (success) return;
          for (outcome& o : *outcomes)
            for (const auto& j : {o.scored, o.generated})
              if (j) j->cancel();
        });
  }

  engine& engine_;
  http_settings settings_;
  std::atomic<std::uint64_t> next_id_{1};
  std::int64_t started_ = static_cast<std::int64_t>(std::time(nullptr));
};

}  // namespace cospec::server
