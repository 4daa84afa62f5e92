// The response cache's pure half: which requests are cacheable, their keys (SHA-256 over
// a canonical byte string of everything that decides the answer), and the stored value
// (CBOR of the answer and its events).
#include <openssl/sha.h>

#include <cstring>

#include "actors/gateway/response_cache.h"

namespace troupe {

namespace {

// -- canonical key bytes -------------------------------------------------------------------

/// Appends fixed-width and length-prefixed fields, so no two inputs give the same bytes.
struct key_writer {
  std::string out;
  template <class T>
  void raw(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    out.append(b, sizeof(T));
  }
  void str(const std::string& s) {
    raw<uint64_t>(s.size());
    out += s;
  }
  void tokens(const std::vector<int32_t>& t) {
    raw<uint64_t>(t.size());
    out.append(reinterpret_cast<const char*>(t.data()), t.size() * sizeof(int32_t));
  }
};

nlohmann::json token_json(const token_record& t) {
  auto top = nlohmann::json::array();
  for (const auto& a : t.top) top.push_back({a.token, a.logprob});
  return {t.token, t.logprob, std::move(top)};
}

token_record token_from(const nlohmann::json& j) {
  token_record t;
  t.token = j.at(0).get<int32_t>();
  t.logprob = j.at(1).get<float>();
  for (const auto& a : j.at(2)) t.top.push_back({a.at(0).get<int32_t>(), a.at(1).get<float>()});
  return t;
}

}  // namespace

std::string sha256_hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (unsigned char b : digest) {
    hex += digits[b >> 4];
    hex += digits[b & 15];
  }
  return hex;
}

bool cacheable(const openai_request& r) { return r.has_seed || r.params.temperature < greedy_temperature; }

std::string cache_key(const std::string& model, const openai_request& r,
                      const std::vector<std::vector<int32_t>>& prompts) {
  const auto& p = r.params;
  key_writer k;
  k.str("troupe response cache v1");
  k.str(model);
  k.raw<int32_t>(static_cast<int32_t>(r.endpoint));
  k.raw<int32_t>(r.n);
  k.raw<int32_t>(r.logprobs);
  k.raw<uint8_t>(r.has_seed);
  k.raw<uint64_t>(r.has_seed ? p.seed : 0);
  k.raw<float>(p.temperature < greedy_temperature ? 0.0f : p.temperature);
  k.raw<float>(p.top_p);
  k.raw<int32_t>(p.top_k);
  k.raw<float>(p.min_p);
  k.raw<float>(p.repetition_penalty);
  k.raw<float>(p.frequency_penalty);
  k.raw<float>(p.presence_penalty);
  k.raw<int32_t>(p.logprobs);
  k.raw<int32_t>(p.max_tokens);
  k.raw<uint8_t>(p.ignore_eos);
  k.raw<uint64_t>(p.stop.size());
  for (const auto& s : p.stop) k.str(s);
  k.tokens(p.stop_token_ids);
  k.raw<uint64_t>(prompts.size());
  for (const auto& t : prompts) k.tokens(t);
  return "troupe:rc:v1:" + sha256_hex(k.out);
}

std::string encode_answer(const cached_answer& a) {
  auto choices = nlohmann::json::array();
  for (const auto& c : a.choices) {
    auto tokens = nlohmann::json::array();
    for (const auto& t : c.tokens) tokens.push_back(token_json(t));
    choices.push_back({{"text", c.text}, {"finish", c.finish_reason}, {"tokens", std::move(tokens)}});
  }
  auto events = nlohmann::json::array();
  for (const auto& e : a.events) events.push_back({e.choice, e.text, e.token, e.finished});
  const nlohmann::json j = {{"v", 1},
                            {"id", a.id},
                            {"created", a.created},
                            {"choices", std::move(choices)},
                            {"events", std::move(events)},
                            {"usage", {a.usage.prompt_tokens, a.usage.completion_tokens}}};
  const auto bytes = nlohmann::json::to_cbor(j);
  return std::string(bytes.begin(), bytes.end());
}

std::optional<cached_answer> decode_answer(const std::string& bytes) {
  try {
    const auto j = nlohmann::json::from_cbor(bytes);
    if (!j.is_object() || j.value("v", 0) != 1) return std::nullopt;
    cached_answer a;
    a.id = j.at("id").get<std::string>();
    a.created = j.at("created").get<int64_t>();
    for (const auto& c : j.at("choices")) {
      choice_output o;
      o.text = c.at("text").get<std::string>();
      o.finish_reason = c.at("finish").get<std::string>();
      for (const auto& t : c.at("tokens")) o.tokens.push_back(token_from(t));
      a.choices.push_back(std::move(o));
    }
    for (const auto& e : j.at("events")) {
      cached_event ev{e.at(0).get<int>(), e.at(1).get<std::string>(), e.at(2).get<int>(), e.at(3).get<bool>()};
      if (ev.choice < 0 || static_cast<size_t>(ev.choice) >= a.choices.size()) return std::nullopt;
      if (ev.token >= static_cast<int>(a.choices[static_cast<size_t>(ev.choice)].tokens.size())) return std::nullopt;
      a.events.push_back(std::move(ev));
    }
    a.usage.prompt_tokens = j.at("usage").at(0).get<int64_t>();
    a.usage.completion_tokens = j.at("usage").at(1).get<int64_t>();
    return a;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace troupe
