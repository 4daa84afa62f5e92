// The response cache's pure half: which requests are cacheable, their keys (SHA-256 over
// a canonical byte string of everything that decides the answer), and the stored value
// (CBOR of the answer and its events).
#include <array>
#include <cstring>

#include "actors/gateway/response_cache.h"

namespace troupe {

namespace {

// -- SHA-256 (FIPS 180-4) ------------------------------------------------------------------

constexpr std::array<uint32_t, 64> sha_k = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void sha_block(std::array<uint32_t, 8>& h, const unsigned char* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) | (uint32_t(p[4 * i + 2]) << 8) |
           uint32_t(p[4 * i + 3]);
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

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
  std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string msg = data;
  const uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
  msg += static_cast<char>(0x80);
  while (msg.size() % 64 != 56) msg += '\0';
  for (int i = 7; i >= 0; --i) msg += static_cast<char>((bits >> (8 * i)) & 0xff);
  for (size_t off = 0; off < msg.size(); off += 64)
    sha_block(h, reinterpret_cast<const unsigned char*>(msg.data()) + off);
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (uint32_t v : h)
    for (int i = 7; i >= 0; --i) hex += digits[(v >> (4 * i)) & 15];
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
