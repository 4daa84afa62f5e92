#include "actors/gateway/openai_request.h"

#include <cmath>
#include <algorithm>
#include <limits>
#include <sstream>

namespace troupe {

namespace {

using json = nlohmann::json;

std::string default_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

api_error bad(const std::string& param, const std::string& what) {
  return api_error(400, param + " " + what, param);
}

/// The field `key`, or nullptr when it is absent or null (null means "not given").
const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

/// A JSON number as double; 400 naming `name` otherwise.
double number(const json& v, const std::string& name) {
  if (!v.is_number()) throw bad(name, "must be a number, got " + std::string(v.type_name()));
  const double d = v.get<double>();
  if (!std::isfinite(d)) throw bad(name, "must be finite");
  return d;
}

/// A JSON integer in [lo, hi]; 400 naming `name` otherwise.
int64_t integer(const json& v, const std::string& name, int64_t lo, int64_t hi) {
  int64_t i = 0;
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw bad(name, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    i = static_cast<int64_t>(u);
  } else if (v.is_number_integer()) {
    i = v.get<int64_t>();
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.0e15)
      throw bad(name, "must be an integer, got " + v.dump());
    i = static_cast<int64_t>(d);
  } else {
    throw bad(name, "must be an integer, got " + std::string(v.type_name()));
  }
  if (i < lo || i > hi)
    throw bad(name, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                        std::to_string(i));
  return i;
}

float ranged(const json& body, const char* key, float fallback, double lo, double hi) {
  const json* v = field(body, key);
  if (!v) return fallback;
  const double d = number(*v, key);
  if (d < lo || d > hi) {
    std::ostringstream os;
    os << "must be in [" << lo << ", " << hi << "], got " << d;
    throw bad(key, os.str());
  }
  return static_cast<float>(d);
}

bool boolean(const json& body, const char* key, bool fallback) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_boolean()) throw bad(key, "must be a boolean, got " + std::string(v->type_name()));
  return v->get<bool>();
}

std::string string_field(const json& body, const char* key) {
  const json* v = field(body, key);
  if (!v) return "";
  if (!v->is_string()) throw bad(key, "must be a string, got " + std::string(v->type_name()));
  return v->get<std::string>();
}

void parse_stop(const json& body, sampling_params& p) {
  const json* v = field(body, "stop");
  if (!v) return;
  if (v->is_string()) {
    if (!v->get<std::string>().empty()) p.stop.push_back(v->get<std::string>());
    return;
  }
  if (!v->is_array()) throw bad("stop", "must be a string or a list of strings");
  if (v->size() > max_stop_strings)
    throw bad("stop", "may hold at most " + std::to_string(max_stop_strings) + " strings, got " +
                          std::to_string(v->size()));
  for (size_t i = 0; i < v->size(); ++i) {
    const auto& s = (*v)[i];
    const auto name = "stop[" + std::to_string(i) + "]";
    if (!s.is_string()) throw bad(name, "must be a string");
    if (s.get<std::string>().empty()) throw bad(name, "must not be empty");
    p.stop.push_back(s.get<std::string>());
  }
}

/// Fields both endpoints share.
void parse_common(const json& body, const request_limits& limits, openai_request& r) {
  if (!body.is_object()) throw api_error(400, "the request body must be a JSON object");
  const json* model = field(body, "model");
  if (!model) throw bad("model", "is required");
  if (!model->is_string()) throw bad("model", "must be a string");
  r.model = model->get<std::string>();
  if (!limits.model_name.empty() && r.model != limits.model_name)
    throw api_error(404, "The model '" + r.model + "' does not exist; this server serves '" +
                             limits.model_name + "'",
                    "model", "model_not_found");
  // What the request leaves out: the server's defaults (cluster file, then model file),
  // then OpenAI's.
  const generation_defaults& d = limits.defaults;
  auto& p = r.params;
  p.temperature = ranged(body, "temperature", d.temperature.value_or(1.0f), 0.0, 2.0);
  p.top_p = ranged(body, "top_p", d.top_p.value_or(1.0f), 0.0, 1.0);
  if (p.top_p <= 0.0f) throw bad("top_p", "must be in (0, 1], got 0");
  p.min_p = ranged(body, "min_p", d.min_p.value_or(0.0f), 0.0, 1.0);
  p.presence_penalty = ranged(body, "presence_penalty", d.presence_penalty.value_or(0.0f), -2.0, 2.0);
  p.frequency_penalty = ranged(body, "frequency_penalty", d.frequency_penalty.value_or(0.0f), -2.0, 2.0);
  p.repetition_penalty = ranged(body, "repetition_penalty", d.repetition_penalty.value_or(1.0f), 0.0, 100.0);
  if (p.repetition_penalty <= 0.0f) throw bad("repetition_penalty", "must be > 0, got 0");
  p.top_k = d.top_k.value_or(0);
  if (const json* v = field(body, "top_k"))
    p.top_k = static_cast<int>(integer(*v, "top_k", -1, std::numeric_limits<int32_t>::max()));
  if (const json* v = field(body, "seed")) {
    p.seed = static_cast<uint64_t>(
        integer(*v, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
    r.has_seed = true;
  }
  if (const json* v = field(body, "n")) r.n = static_cast<int>(integer(*v, "n", 1, limits.max_n));
  p.ignore_eos = boolean(body, "ignore_eos", false);
  r.stream = boolean(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) throw bad("stream_options", "must be an object");
    if (const json* u = field(*so, "include_usage")) {
      if (!u->is_boolean()) throw bad("stream_options.include_usage", "must be a boolean");
      r.include_usage = u->get<bool>();
    }
  }
  r.user = string_field(body, "user");
  parse_stop(body, p);
  const char* max_keys[] = {"max_completion_tokens", "max_tokens"};
  for (const char* key : max_keys) {
    if (r.has_max_tokens) break;
    if (const json* v = field(body, key)) {
      p.max_tokens = static_cast<int>(integer(*v, key, 1, std::numeric_limits<int32_t>::max()));
      r.has_max_tokens = true;
    }
  }
  if (!r.has_max_tokens) {
    // The defaults' max_tokens, else OpenAI's (completions 16; chat: the rest of the
    // context), capped by server.max_tokens_default; fit_context bounds it by the context.
    const bool chat = r.endpoint == api_endpoint::chat_completions;
    const int openai = chat ? std::numeric_limits<int>::max() : 16;
    p.max_tokens = std::min(d.max_tokens.value_or(openai), std::max(1, limits.max_tokens_default));
  }
}

/// Runs sampler validation as a backstop; its message starts with the field's name.
void check_params(const sampling_params& p) {
  try {
    validate(p);
  } catch (const std::invalid_argument& e) {
    std::string msg = e.what();
    throw api_error(400, msg, msg.substr(0, msg.find(' ')));
  }
}

std::vector<int32_t> token_list(const json& v, const std::string& name) {
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    ids.push_back(static_cast<int32_t>(
        integer(v[i], name + "[" + std::to_string(i) + "]", 0, std::numeric_limits<int32_t>::max())));
  return ids;
}

void parse_prompt(const json& body, const request_limits& limits, openai_request& r) {
  const json* v = field(body, "prompt");
  if (!v) throw bad("prompt", "is required");
  if (v->is_string()) {
    r.prompts.push_back({v->get<std::string>(), {}, false});
    return;
  }
  if (!v->is_array()) throw bad("prompt", "must be a string, a list of strings or token ids");
  if (v->empty()) throw bad("prompt", "must not be an empty list");
  if ((*v)[0].is_number()) {
    r.prompts.push_back({"", token_list(*v, "prompt"), true});
    return;
  }
  if (v->size() > limits.max_prompts)
    throw bad("prompt", "may hold at most " + std::to_string(limits.max_prompts) + " prompts");
  for (size_t i = 0; i < v->size(); ++i) {
    const auto& e = (*v)[i];
    const auto name = "prompt[" + std::to_string(i) + "]";
    if (e.is_string())
      r.prompts.push_back({e.get<std::string>(), {}, false});
    else if (e.is_array())
      r.prompts.push_back({"", token_list(e, name), true});
    else
      throw bad(name, "must be a string or a list of token ids");
  }
}

std::string message_content(const json& m, const std::string& name) {
  auto it = m.find("content");
  if (it == m.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (!it->is_array()) throw bad(name + ".content", "must be a string or a list of content parts");
  std::string text;
  for (size_t j = 0; j < it->size(); ++j) {
    const auto& part = (*it)[j];
    const auto pname = name + ".content[" + std::to_string(j) + "]";
    if (!part.is_object()) throw bad(pname, "must be an object");
    auto type = part.find("type");
    if (type == part.end() || !type->is_string() || type->get<std::string>() != "text")
      throw bad(pname + ".type", "must be \"text\" (only text parts are supported)");
    auto t = part.find("text");
    if (t == part.end() || !t->is_string()) throw bad(pname + ".text", "must be a string");
    text += t->get<std::string>();
  }
  return text;
}

void parse_messages(const json& body, openai_request& r) {
  const json* v = field(body, "messages");
  if (!v) throw bad("messages", "is required");
  if (!v->is_array()) throw bad("messages", "must be a list of messages");
  if (v->empty()) throw bad("messages", "must not be empty");
  for (size_t i = 0; i < v->size(); ++i) {
    const auto& m = (*v)[i];
    const auto name = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad(name, "must be an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) throw bad(name + ".role", "is required (a string)");
    auto rs = role->get<std::string>();
    if (rs == "developer") rs = "system";
    if (rs != "system" && rs != "user" && rs != "assistant")
      throw bad(name + ".role", "must be system, user or assistant, got '" + rs + "'");
    r.messages.push_back({rs, message_content(m, name)});
  }
}

}  // namespace

api_error::api_error(int status_, const std::string& message, std::string param_, std::string code_,
                     std::string type_)
    : std::runtime_error(message),
      status(status_),
      param(std::move(param_)),
      code(std::move(code_)),
      type(type_.empty() ? default_type(status_) : std::move(type_)) {}

nlohmann::json parse_json_body(std::string_view body) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::exception& e) {
    throw api_error(400, "the request body is not valid JSON: " + std::string(e.what()));
  }
  if (!j.is_object()) throw api_error(400, "the request body must be a JSON object");
  return j;
}

openai_request parse_completion_request(const nlohmann::json& body, const request_limits& limits) {
  openai_request r;
  r.endpoint = api_endpoint::completions;
  parse_common(body, limits, r);
  parse_prompt(body, limits, r);
  if (const json* v = field(body, "logprobs")) {
    if (v->is_boolean())
      r.logprobs = v->get<bool>() ? 0 : -1;
    else
      r.logprobs = static_cast<int>(integer(*v, "logprobs", 0, max_logprobs));
  }
  r.params.logprobs = r.logprobs < 0 ? 0 : std::max(1, r.logprobs);
  check_params(r.params);
  return r;
}

openai_request parse_chat_request(const nlohmann::json& body, const request_limits& limits) {
  openai_request r;
  r.endpoint = api_endpoint::chat_completions;
  parse_common(body, limits, r);
  parse_messages(body, r);
  const bool want = boolean(body, "logprobs", false);
  int top = 0;
  if (const json* v = field(body, "top_logprobs")) {
    top = static_cast<int>(integer(*v, "top_logprobs", 0, max_logprobs));
    if (!want && top > 0) throw bad("top_logprobs", "needs logprobs set to true");
  }
  r.logprobs = want ? top : -1;
  r.params.logprobs = r.logprobs < 0 ? 0 : std::max(1, r.logprobs);
  check_params(r.params);
  return r;
}

std::vector<std::vector<int32_t>> tokenize_request(const openai_request& r, const tokenizer& tok) {
  std::vector<std::vector<int32_t>> out;
  if (r.endpoint == api_endpoint::chat_completions) {
    std::string text;
    try {
      text = apply_chat_template(tok.data(), r.messages, true);
    } catch (const std::exception& e) {
      throw api_error(400, std::string("messages cannot be rendered by the chat template: ") + e.what(),
                      "messages");
    }
    out.push_back(tok.encode(text, true, true));
    return out;
  }
  const int vocab = tok.vocab_size();
  for (size_t i = 0; i < r.prompts.size(); ++i) {
    const auto& p = r.prompts[i];
    const auto name = r.prompts.size() == 1 ? std::string("prompt") : "prompt[" + std::to_string(i) + "]";
    if (!p.is_tokens) {
      out.push_back(tok.encode(p.text, true, true));
      continue;
    }
    for (size_t k = 0; k < p.tokens.size(); ++k)
      if (p.tokens[k] >= vocab)
        throw api_error(400, name + " token " + std::to_string(k) + " has id " +
                                 std::to_string(p.tokens[k]) + ", outside the vocabulary [0, " +
                                 std::to_string(vocab) + ")",
                        "prompt");
    out.push_back(p.tokens);
  }
  return out;
}

void fit_context(openai_request& r, const std::vector<std::vector<int32_t>>& prompts, int context) {
  const bool chat = r.endpoint == api_endpoint::chat_completions;
  const char* what = chat ? "messages" : "prompt";
  size_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw api_error(400, std::string(what) + " is empty: at least one token is needed", what);
    longest = std::max(longest, p.size());
  }
  if (longest >= static_cast<size_t>(context))
    throw api_error(400, "This model's maximum context length is " + std::to_string(context) +
                             " tokens, but the " + what + " has " + std::to_string(longest) +
                             " tokens (at least one must be left for the completion)",
                    what, "context_length_exceeded");
  const int room = context - static_cast<int>(longest);
  if (!r.has_max_tokens) {
    r.params.max_tokens = std::min(r.params.max_tokens, room);
    return;
  }
  if (r.params.max_tokens > room)
    throw api_error(400, "This model's maximum context length is " + std::to_string(context) +
                             " tokens; the " + what + " has " + std::to_string(longest) +
                             " tokens, so max_tokens may be at most " + std::to_string(room) +
                             ", got " + std::to_string(r.params.max_tokens),
                    "max_tokens", "context_length_exceeded");
}

}  // namespace troupe
