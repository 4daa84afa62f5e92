// The response cache in the HTTP gateway, over real sockets, in front of a scripted
// router that counts what reaches it: with a real redis-server, a repeated seeded or
// greedy request is answered from the cache with the first answer's bytes (JSON and
// SSE), other parameters miss, entries expire, and a killed Redis fails nothing.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/gateway/http_gateway.h"
#include "redis_server.h"
#include "runtime/model/model.h"
#include "skip.h"
#include "test_support.h"

using namespace troupe;
using json = nlohmann::json;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

/// max_tokens tokens "w0 ", "w1 ", ... (logprobs and top alternatives when asked), then
/// "length"; counts the requests that reach it.
router_actor::behavior_type counting_router(router_actor::pointer self, std::shared_ptr<std::atomic<int>> seen) {
  return {
      [=](generate_atom, uint64_t id, generate_request& req, const caf::actor& client) {
        (*seen)++;
        for (int i = 0; i < req.params.max_tokens; ++i) {
          token_msg m;
          m.request = id;
          m.token = 100 + i;
          m.text = "w" + std::to_string(i) + " ";
          m.logprob = -0.5f;
          for (int k = 0; k < req.params.logprobs; ++k) m.top.push_back({100 + i + k, -0.5f - k});
          m.finished = i + 1 == req.params.max_tokens;
          m.finish_reason = m.finished ? "length" : "";
          caf::anon_send(client, token_atom::value, std::move(m));
        }
      },
      [=](cancel_atom, uint64_t, const caf::actor&) {},
      [=](status_atom) {
        router_status s;
        s.replicas = 1;
        s.ready = 1;
        return s;
      },
      [=](token_atom, token_msg&) {}, [=](prefixes_atom, const prefix_summary&) {},
      [=](ready_atom, int32_t, bool) {}, [=](hold_atom, int32_t) {}, [=](sweep_atom) {},
      [=](drain_atom, const std::vector<int32_t>&, caf::timespan) { return int32_t{0}; }};
}

struct reply {
  int status = 0;
  std::string body;
  std::string cache;  ///< the X-Troupe-Cache header
};

reply post(uint16_t port, const std::string& target, const json& body, const std::string& cache_control = "") {
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  s.expires_after(std::chrono::seconds(30));
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.set(bhttp::field::content_type, "application/json");
  if (!cache_control.empty()) req.set(bhttp::field::cache_control, cache_control);
  req.body() = body.dump();
  req.prepare_payload();
  bhttp::write(s, req);
  beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(s, buf, res);
  return {static_cast<int>(res.result_int()), res.body(), std::string(res["X-Troupe-Cache"])};
}

std::string get(uint16_t port, const std::string& target) {
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  bhttp::request<bhttp::string_body> req{bhttp::verb::get, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  bhttp::write(s, req);
  beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(s, buf, res);
  return res.body();
}

/// The value of an unlabelled metric on /metrics (-1 = absent).
double metric(uint16_t port, const std::string& name) {
  const auto text = get(port, "/metrics");
  const auto at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

/// A gateway with the cache `cache` on a free port in front of the counting router.
struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{init(cfg)};
  std::shared_ptr<std::atomic<int>> seen = std::make_shared<std::atomic<int>>(0);
  std::unique_ptr<http_gateway> gw;
  router_actor router;

  explicit fixture(const cache_section& cache) {
    gateway_options o;
    o.server.host = "127.0.0.1";
    o.server.port = 0;
    o.model_name = "test-model";
    o.max_context = 2048;
    o.served = model::load_metadata(test::default_model());
    o.status_interval = std::chrono::milliseconds(20);
    o.cache = cache;
    gw = std::make_unique<http_gateway>(sys, o);
    gw->start();
    router = sys.spawn(counting_router, seen);
    gw->set_router(router);
    for (int i = 0; i < 250 && !ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(ready());
  }
  ~fixture() {
    gw->stop();
    caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
  }
  static caf::actor_system_config& init(caf::actor_system_config& c) {
    add_message_types(c);
    return c;
  }
  bool ready() { return get(port(), "/ready").find("\"ready\":true") != std::string::npos; }
  uint16_t port() const { return gw->port(); }
};

cache_section redis_cache(const test::redis_server& redis, std::chrono::milliseconds ttl = std::chrono::seconds(300)) {
  cache_section c;
  c.backend = "redis";
  c.url = redis.url();
  c.ttl = ttl;
  return c;
}

json chat(uint64_t seed, bool stream = false) {
  json j = {{"model", "test-model"},
            {"messages", {{{"role", "user"}, {"content", "What is the capital of France?"}}}},
            {"max_tokens", 3},
            {"temperature", 0.8},
            {"seed", seed},
            {"logprobs", true},
            {"top_logprobs", 2}};
  if (stream) {
    j["stream"] = true;
    j["stream_options"] = {{"include_usage", true}};
  }
  return j;
}

}  // namespace

TEST_CASE("with redis a repeated seeded request is answered from the cache with the first answer's bytes",
          "[cache][redis][http][slow]") {
  if (test::redis_server::binary().empty()) return test::skip_case("no redis-server on PATH (Debian: redis-server)");
  test::redis_server redis;
  REQUIRE(redis.ping());
  fixture f(redis_cache(redis));
  const auto first = post(f.port(), "/v1/chat/completions", chat(7));
  REQUIRE(first.status == 200);
  CHECK(first.cache == "miss");
  const auto second = post(f.port(), "/v1/chat/completions", chat(7));
  REQUIRE(second.status == 200);
  CHECK(second.cache == "hit");
  CHECK(second.body == first.body);
  CHECK(json::parse(second.body).at("choices")[0].at("logprobs").at("content").size() == 3);
  CHECK(*f.seen == 1);
  // Streamed: the same events, chunk for chunk; a stream may also replay a JSON answer's entry.
  const auto s1 = post(f.port(), "/v1/chat/completions", chat(8, true));
  const auto s2 = post(f.port(), "/v1/chat/completions", chat(8, true));
  const auto s3 = post(f.port(), "/v1/chat/completions", chat(7, true));
  REQUIRE(s1.status == 200);
  CHECK(s1.cache == "miss");
  CHECK(s2.cache == "hit");
  CHECK(s3.cache == "hit");
  CHECK(s2.body == s1.body);
  CHECK(s1.body.find("\"role\":\"assistant\"") != std::string::npos);
  CHECK(s1.body.find("data: [DONE]") != std::string::npos);
  CHECK(s3.body.find(json::parse(first.body).at("id").get<std::string>()) != std::string::npos);
  CHECK(*f.seen == 2);
  // Completions too, greedy without a seed.
  const json greedy = {{"model", "test-model"}, {"prompt", "Hello"}, {"max_tokens", 2}, {"temperature", 0}};
  const auto g1 = post(f.port(), "/v1/completions", greedy);
  const auto g2 = post(f.port(), "/v1/completions", greedy);
  CHECK(g1.cache == "miss");
  CHECK(g2.cache == "hit");
  CHECK(g2.body == g1.body);
  CHECK(*f.seen == 3);
  CHECK(metric(f.port(), "troupe_response_cache_hits_total") == 4);
  CHECK(metric(f.port(), "troupe_response_cache_misses_total") == 3);
  CHECK(metric(f.port(), "troupe_response_cache_stored_bytes_total") > 0);
  CHECK(metric(f.port(), "troupe_response_cache_errors_total") == 0);
}

TEST_CASE("a different seed, temperature or stop string misses, and unseeded sampling is not cached",
          "[cache][redis][http][slow]") {
  if (test::redis_server::binary().empty()) return test::skip_case("no redis-server on PATH (Debian: redis-server)");
  test::redis_server redis;
  REQUIRE(redis.ping());
  fixture f(redis_cache(redis));
  REQUIRE(post(f.port(), "/v1/chat/completions", chat(7)).cache == "miss");
  auto seed = chat(9);
  auto temperature = chat(7);
  temperature["temperature"] = 0.9;
  auto stop = chat(7);
  stop["stop"] = {"\n"};
  CHECK(post(f.port(), "/v1/chat/completions", seed).cache == "miss");
  CHECK(post(f.port(), "/v1/chat/completions", temperature).cache == "miss");
  CHECK(post(f.port(), "/v1/chat/completions", stop).cache == "miss");
  auto unseeded = chat(7);
  unseeded.erase("seed");
  CHECK(post(f.port(), "/v1/chat/completions", unseeded).cache == "bypass");
  CHECK(post(f.port(), "/v1/chat/completions", unseeded).cache == "bypass");
  CHECK(*f.seen == 6);
  CHECK(post(f.port(), "/v1/chat/completions", stop).cache == "hit");
  CHECK(*f.seen == 6);
}

TEST_CASE("cached answers expire after the TTL", "[cache][redis][http][slow]") {
  if (test::redis_server::binary().empty()) return test::skip_case("no redis-server on PATH (Debian: redis-server)");
  test::redis_server redis;
  REQUIRE(redis.ping());
  fixture f(redis_cache(redis, std::chrono::milliseconds(800)));
  CHECK(post(f.port(), "/v1/chat/completions", chat(7)).cache == "miss");
  CHECK(post(f.port(), "/v1/chat/completions", chat(7)).cache == "hit");
  std::this_thread::sleep_for(std::chrono::milliseconds(900));
  CHECK(post(f.port(), "/v1/chat/completions", chat(7)).cache == "miss");
  CHECK(*f.seen == 2);
}

TEST_CASE("with redis killed mid-test every request still succeeds, and errors are counted",
          "[cache][redis][http][slow]") {
  if (test::redis_server::binary().empty()) return test::skip_case("no redis-server on PATH (Debian: redis-server)");
  test::redis_server redis;
  REQUIRE(redis.ping());
  fixture f(redis_cache(redis));
  const auto first = post(f.port(), "/v1/chat/completions", chat(7));
  CHECK(post(f.port(), "/v1/chat/completions", chat(7)).cache == "hit");
  redis.kill();
  for (int i = 0; i < 5; ++i) {
    const auto r = post(f.port(), "/v1/chat/completions", chat(7, i % 2 == 1));
    REQUIRE(r.status == 200);
    CHECK(r.cache == "unavailable");
    CHECK(r.body.find("w2 ") != std::string::npos);
  }
  CHECK(*f.seen == 6);
  CHECK(metric(f.port(), "troupe_response_cache_errors_total") >= 5);
  REQUIRE(redis.start());
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // the back-off ends
  CHECK(post(f.port(), "/v1/chat/completions", chat(7)).cache == "miss");  // a fresh, empty Redis
  CHECK(post(f.port(), "/v1/chat/completions", chat(7)).cache == "hit");
}

TEST_CASE("a request with cache false or Cache-Control no-cache bypasses the in-process cache", "[cache][http][slow]") {
  cache_section c;
  c.backend = "memory";
  fixture f(c);
  CHECK(post(f.port(), "/v1/chat/completions", chat(7)).cache == "miss");
  auto off = chat(7);
  off["cache"] = false;
  CHECK(post(f.port(), "/v1/chat/completions", off).cache == "bypass");
  CHECK(post(f.port(), "/v1/chat/completions", chat(7), "no-cache").cache == "bypass");
  CHECK(*f.seen == 3);
  CHECK(post(f.port(), "/v1/chat/completions", chat(7)).cache == "hit");
  auto bad = chat(7);
  bad["cache"] = "no";
  const auto r = post(f.port(), "/v1/chat/completions", bad);
  CHECK(r.status == 400);
  CHECK(json::parse(r.body).at("error").at("param") == "cache");
  CHECK(*f.seen == 3);
}
