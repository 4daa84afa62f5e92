// The response cache alone: which requests are cacheable, what changes a key, the stored
// value, the in-process LRU, and the Redis backend against a real redis-server (stores,
// eviction policy, TTL, a killed and a slow server).
#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "actors/gateway/response_cache.h"
#include "redis_server.h"
#include "skip.h"

using namespace troupe;
using clock_type = std::chrono::steady_clock;

namespace {

openai_request seeded_request() {
  openai_request r;
  r.endpoint = api_endpoint::chat_completions;
  r.params.temperature = 0.7f;
  r.params.seed = 42;
  r.has_seed = true;
  r.params.max_tokens = 16;
  return r;
}

const std::vector<std::vector<int32_t>> prompt = {{1, 2, 3}};

cached_answer sample_answer() {
  cached_answer a;
  a.id = "chatcmpl-abc";
  a.created = 1700000000;
  choice_output c;
  c.text = "Paris\xe2\x82";  // ends inside a UTF-8 character, as token bytes may
  c.finish_reason = "stop";
  c.tokens.push_back({5, -0.25f, {{5, -0.25f}, {9, -1.5f}}});
  c.tokens.push_back({6, -0.125f, {}});
  a.choices.push_back(c);
  a.events = {{0, "Par", 0, false}, {0, "is\xe2\x82", 1, false}, {0, "", -1, true}};
  a.usage = {3, 2};
  return a;
}

cache_section config(const std::string& backend, std::chrono::milliseconds ttl, int64_t max_bytes,
                     const std::string& url = "") {
  cache_section c;
  c.backend = backend;
  c.ttl = ttl;
  c.max_bytes = max_bytes;
  if (!url.empty()) c.url = url;
  return c;
}

double metric(metrics::registry& r, const std::string& name) {
  const auto text = r.render();
  const auto at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + name.size() + 2));
}

}  // namespace

TEST_CASE("sha256 matches the FIPS 180 test vectors", "[cache]") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("only greedy or seeded requests are cacheable", "[cache]") {
  auto r = seeded_request();
  CHECK(cacheable(r));
  r.has_seed = false;
  CHECK_FALSE(cacheable(r));
  r.params.temperature = 0.0f;
  CHECK(cacheable(r));
}

TEST_CASE("every sampling and stop parameter, the prompt, model and endpoint change the cache key", "[cache]") {
  const auto base = seeded_request();
  const auto key = cache_key("m", base, prompt);
  CHECK(key.rfind("troupe:rc:v1:", 0) == 0);
  CHECK(key.size() == 13 + 64);
  CHECK(cache_key("m", base, prompt) == key);
  auto variant = [&](auto change) {
    auto r = base;
    change(r);
    return cache_key("m", r, prompt);
  };
  CHECK(variant([](openai_request& r) { r.params.seed = 43; }) != key);
  CHECK(variant([](openai_request& r) { r.params.temperature = 0.8f; }) != key);
  CHECK(variant([](openai_request& r) { r.params.stop = {"\n"}; }) != key);
  CHECK(variant([](openai_request& r) { r.params.stop_token_ids = {2}; }) != key);
  CHECK(variant([](openai_request& r) { r.params.top_p = 0.9f; }) != key);
  CHECK(variant([](openai_request& r) { r.params.top_k = 40; }) != key);
  CHECK(variant([](openai_request& r) { r.params.min_p = 0.1f; }) != key);
  CHECK(variant([](openai_request& r) { r.params.repetition_penalty = 1.1f; }) != key);
  CHECK(variant([](openai_request& r) { r.params.frequency_penalty = 0.5f; }) != key);
  CHECK(variant([](openai_request& r) { r.params.presence_penalty = 0.5f; }) != key);
  CHECK(variant([](openai_request& r) { r.params.max_tokens = 17; }) != key);
  CHECK(variant([](openai_request& r) { r.params.ignore_eos = true; }) != key);
  CHECK(variant([](openai_request& r) { r.logprobs = 2; }) != key);
  CHECK(variant([](openai_request& r) { r.n = 2; }) != key);
  CHECK(variant([](openai_request& r) { r.endpoint = api_endpoint::completions; }) != key);
  CHECK(cache_key("other", base, prompt) != key);
  CHECK(cache_key("m", base, {{1, 2, 4}}) != key);
  CHECK(cache_key("m", base, {{1, 2}, {3}}) != key);
  // What does not change the answer does not change the key.
  CHECK(variant([](openai_request& r) { r.stream = true; }) == key);
  CHECK(variant([](openai_request& r) { r.user = "someone"; }) == key);
  // Greedy without a seed: the random seed the gateway draws is not part of the key.
  auto greedy = base;
  greedy.has_seed = false;
  greedy.params.temperature = 0.0f;
  greedy.params.seed = 1;
  auto greedy2 = greedy;
  greedy2.params.seed = 2;
  CHECK(cache_key("m", greedy, prompt) == cache_key("m", greedy2, prompt));
}

TEST_CASE("an answer survives encoding with its events, logprobs and split UTF-8, and other bytes decode to nothing",
          "[cache]") {
  const auto a = sample_answer();
  const auto back = decode_answer(encode_answer(a));
  REQUIRE(back);
  CHECK(back->id == a.id);
  CHECK(back->created == a.created);
  REQUIRE(back->choices.size() == 1);
  CHECK(back->choices[0].text == a.choices[0].text);
  CHECK(back->choices[0].finish_reason == "stop");
  REQUIRE(back->choices[0].tokens.size() == 2);
  CHECK(back->choices[0].tokens[0].logprob == -0.25f);
  REQUIRE(back->choices[0].tokens[0].top.size() == 2);
  CHECK(back->choices[0].tokens[0].top[1].token == 9);
  CHECK(back->choices[0].tokens[0].top[1].logprob == -1.5f);
  REQUIRE(back->events.size() == 3);
  CHECK(back->events[1].text == "is\xe2\x82");
  CHECK(back->events[1].token == 1);
  CHECK(back->events[2].finished);
  CHECK(back->usage.prompt_tokens == 3);
  CHECK(back->usage.completion_tokens == 2);
  CHECK_FALSE(decode_answer(""));
  CHECK_FALSE(decode_answer("not cbor at all"));
  auto bad = a;
  bad.events[0].token = 7;  // points past the choice's tokens
  CHECK_FALSE(decode_answer(encode_answer(bad)));
}

TEST_CASE("the memory cache evicts the least recently used answer past max_bytes and expires after the TTL",
          "[cache]") {
  metrics::registry reg;
  auto cache = make_response_cache(config("memory", std::chrono::milliseconds(400), 250), reg);
  REQUIRE(cache);
  CHECK(cache->backend() == "memory");
  CHECK(make_response_cache(config("off", std::chrono::seconds(1), 1), reg) == nullptr);
  const std::string v(90, 'x');
  cache->put("a", v);
  cache->put("b", v);
  CHECK(cache->get("a").result == cache_lookup::status::hit);  // a is now the most recent
  cache->put("c", v);                                          // 273 bytes > 250: b goes
  CHECK(cache->get("b").result == cache_lookup::status::miss);
  CHECK(cache->get("a").value == v);
  CHECK(cache->get("c").result == cache_lookup::status::hit);
  cache->put("huge", std::string(300, 'y'));  // larger than max_bytes: not stored
  CHECK(cache->get("huge").result == cache_lookup::status::miss);
  CHECK(metric(reg, "troupe_response_cache_hits_total") == 3);
  CHECK(metric(reg, "troupe_response_cache_misses_total") == 2);
  CHECK(metric(reg, "troupe_response_cache_bytes") == 182);
  std::this_thread::sleep_for(std::chrono::milliseconds(450));
  CHECK(cache->get("a").result == cache_lookup::status::miss);
  CHECK(metric(reg, "troupe_response_cache_bytes") == 91);
}

TEST_CASE("the redis cache stores answers with the TTL and sets Redis's LRU eviction at start", "[cache][redis]") {
  if (test::redis_server::binary().empty()) return test::skip_case("no redis-server on PATH (Debian: redis-server)");
  test::redis_server redis;
  REQUIRE(redis.ping());
  metrics::registry reg;
  auto cache = make_response_cache(config("redis", std::chrono::milliseconds(600), 64 << 20, redis.url()), reg);
  REQUIRE(cache);
  CHECK(cache->backend() == "redis");
  CHECK(redis.command("CONFIG GET maxmemory-policy") == "allkeys-lru");
  CHECK(redis.command("CONFIG GET maxmemory") == std::to_string(64 << 20));
  const auto value = encode_answer(sample_answer());
  CHECK(cache->get("k").result == cache_lookup::status::miss);
  cache->put("k", value);
  const auto found = cache->get("k");
  CHECK(found.result == cache_lookup::status::hit);
  CHECK(found.value == value);
  const auto pttl = std::stoi(redis.command("PTTL k"));
  CHECK(pttl > 0);
  CHECK(pttl <= 600);
  std::this_thread::sleep_for(std::chrono::milliseconds(650));
  CHECK(cache->get("k").result == cache_lookup::status::miss);
  CHECK(metric(reg, "troupe_response_cache_hits_total") == 1);
  CHECK(metric(reg, "troupe_response_cache_misses_total") == 2);
  CHECK(metric(reg, "troupe_response_cache_stored_bytes_total") == static_cast<double>(value.size()));
  CHECK(metric(reg, "troupe_response_cache_errors_total") == 0);
}

TEST_CASE("a killed redis makes lookups fail fast and count errors, and the cache comes back with it",
          "[cache][redis]") {
  if (test::redis_server::binary().empty()) return test::skip_case("no redis-server on PATH (Debian: redis-server)");
  test::redis_server redis;
  REQUIRE(redis.ping());
  metrics::registry reg;
  auto cache = make_response_cache(config("redis", std::chrono::seconds(60), 1 << 20, redis.url()), reg);
  cache->put("k", "v");
  CHECK(cache->get("k").result == cache_lookup::status::hit);
  redis.kill();
  const auto t0 = clock_type::now();
  CHECK(cache->get("k").result == cache_lookup::status::error);
  cache->put("k2", "v");
  for (int i = 0; i < 100; ++i) CHECK(cache->get("k").result == cache_lookup::status::error);
  const auto spent = clock_type::now() - t0;
  CHECK(spent < std::chrono::milliseconds(500));  // one failed call, then the back-off: no network
  CHECK(metric(reg, "troupe_response_cache_errors_total") == 102);
  REQUIRE(redis.start());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past the 1 s back-off
  CHECK(cache->get("k").result == cache_lookup::status::miss);   // a fresh server: empty
  CHECK(redis.command("CONFIG GET maxmemory-policy") == "allkeys-lru");  // set again on reconnect
}

TEST_CASE("a hung redis costs one lookup about the 50 ms timeout", "[cache][redis]") {
  if (test::redis_server::binary().empty()) return test::skip_case("no redis-server on PATH (Debian: redis-server)");
  test::redis_server redis;
  REQUIRE(redis.ping());
  metrics::registry reg;
  auto cache = make_response_cache(config("redis", std::chrono::seconds(60), 1 << 20, redis.url()), reg);
  CHECK(cache->get("k").result == cache_lookup::status::miss);
  redis.pause();  // hung: the connection stays open, no reply comes
  const auto t0 = clock_type::now();
  const auto r = cache->get("k");
  const auto spent = clock_type::now() - t0;
  redis.resume();
  CHECK(r.result == cache_lookup::status::error);
  CHECK(spent >= std::chrono::milliseconds(40));  // it waited for the timeout ...
  CHECK(spent < std::chrono::milliseconds(500));  // ... and not much longer (a loaded machine)
  CHECK(metric(reg, "troupe_response_cache_errors_total") == 1);
}
