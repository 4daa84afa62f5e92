#include "actors/gateway/openai_response.h"

#include <random>

namespace troupe {

namespace {

using json = nlohmann::json;

bool is_chat(const response_meta& m) { return m.endpoint == api_endpoint::chat_completions; }

json null_if_empty(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

/// A token's text as logprobs show it (its raw bytes; invalid UTF-8 is replaced on dump).
std::string token_string(const tokenizer& tok, int32_t id) {
  try {
    return tok.token_bytes(id);
  } catch (const std::exception&) {
    return "";
  }
}

json byte_list(const std::string& s) {
  json out = json::array();
  for (unsigned char c : s) out.push_back(static_cast<int>(c));
  return out;
}

/// Completions' logprobs object over `tokens`, offsets starting at `offset`.
json completion_logprobs(const std::vector<token_record>& tokens, size_t offset, int top_n,
                         const tokenizer& tok) {
  json strings = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const auto& t : tokens) {
    const auto s = token_string(tok, t.token);
    strings.push_back(s);
    lps.push_back(t.logprob);
    json top = json::object();
    if (top_n == 0) top[s] = t.logprob;
    for (size_t k = 0; k < t.top.size() && static_cast<int>(k) < top_n; ++k)
      top[token_string(tok, t.top[k].token)] = t.top[k].logprob;
    tops.push_back(std::move(top));
    offsets.push_back(offset);
    offset += s.size();
  }
  return {{"tokens", strings}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

/// Chat's logprobs object: {"content": [{token, logprob, bytes, top_logprobs}]}.
json chat_logprobs(const std::vector<token_record>& tokens, int top_n, const tokenizer& tok) {
  json content = json::array();
  for (const auto& t : tokens) {
    const auto s = token_string(tok, t.token);
    json top = json::array();
    for (size_t k = 0; k < t.top.size() && static_cast<int>(k) < top_n; ++k) {
      const auto ts = token_string(tok, t.top[k].token);
      top.push_back({{"token", ts}, {"logprob", t.top[k].logprob}, {"bytes", byte_list(ts)}});
    }
    content.push_back({{"token", s}, {"logprob", t.logprob}, {"bytes", byte_list(s)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

json logprobs_of(const response_meta& meta, const std::vector<token_record>& tokens, size_t offset,
                 const tokenizer& tok) {
  if (meta.logprobs < 0) return nullptr;
  return is_chat(meta) ? chat_logprobs(tokens, meta.logprobs, tok)
                       : completion_logprobs(tokens, offset, meta.logprobs, tok);
}

json envelope(const response_meta& meta, const char* object) {
  json j = {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}};
  if (is_chat(meta)) j["system_fingerprint"] = nullptr;
  return j;
}

}  // namespace

std::string make_response_id(api_endpoint e) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string id = e == api_endpoint::chat_completions ? "chatcmpl-" : "cmpl-";
  for (int i = 0; i < 24; ++i) id += hex[rng() & 15];
  return id;
}

nlohmann::json error_body(const api_error& e) {
  return {{"error",
           {{"message", e.what()}, {"type", e.type}, {"param", null_if_empty(e.param)},
            {"code", null_if_empty(e.code)}}}};
}

nlohmann::json model_body(const std::string& name, int64_t created) {
  return {{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "troupe"}};
}

nlohmann::json models_body(const std::string& name, int64_t created) {
  return {{"object", "list"}, {"data", json::array({model_body(name, created)})}};
}

nlohmann::json usage_body(const usage_counts& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

nlohmann::json response_body(const response_meta& meta, const std::vector<choice_output>& choices,
                             const usage_counts& usage, const tokenizer& tok) {
  json j = envelope(meta, is_chat(meta) ? "chat.completion" : "text_completion");
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const auto& c = choices[i];
    json choice = {{"index", i}, {"logprobs", logprobs_of(meta, c.tokens, 0, tok)},
                   {"finish_reason", null_if_empty(c.finish_reason)}};
    if (is_chat(meta))
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    else
      choice["text"] = c.text;
    list.push_back(std::move(choice));
  }
  j["choices"] = std::move(list);
  j["usage"] = usage_body(usage);
  return j;
}

nlohmann::json chunk_body(const response_meta& meta, int index, const std::string& text,
                          const std::vector<token_record>& tokens, size_t text_offset,
                          const std::string& finish_reason, bool role, const tokenizer& tok) {
  json j = envelope(meta, is_chat(meta) ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", index},
                 {"logprobs", tokens.empty() ? json(nullptr) : logprobs_of(meta, tokens, text_offset, tok)},
                 {"finish_reason", null_if_empty(finish_reason)}};
  if (is_chat(meta)) {
    json delta = json::object();
    if (role) delta["role"] = "assistant";
    if (role || !text.empty() || !tokens.empty()) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({std::move(choice)});
  if (meta.include_usage) j["usage"] = nullptr;
  return j;
}

nlohmann::json usage_chunk(const response_meta& meta, const usage_counts& usage) {
  json j = envelope(meta, is_chat(meta) ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_body(usage);
  return j;
}

std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sse_event(const nlohmann::json& j) { return "data: " + dump_json(j) + "\n\n"; }

}  // namespace troupe
