// The HTTP gateway in process, over real sockets, in front of a scripted router: every
// endpoint, the status codes, streaming, admission control and client disconnects.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <functional>
#include <thread>

#include "actors/actor_system_config.h"
#include "actors/cluster/supervisor.h"
#include "actors/gateway/http_gateway.h"
#include "runtime/model/model.h"
#include "test_support.h"

using namespace troupe;
using json = nlohmann::json;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

/// What the scripted router saw.
struct router_log {
  std::atomic<bool> ready{true};
  std::atomic<int> requests{0};
  std::atomic<int> cancels{0};
  std::mutex mutex;
  std::vector<generate_request> seen;
};

/// Prompt token 7 first: the request fails before any token. max_tokens >= 1000: one token,
/// then nothing until cancelled. Otherwise max_tokens tokens "w0 ", "w1 ", ... then "length".
router_actor::behavior_type scripted_router(router_actor::pointer self, std::shared_ptr<router_log> log) {
  return {
      [=](generate_atom, uint64_t id, generate_request& req, const caf::actor& client) {
        log->requests++;
        {
          std::lock_guard<std::mutex> lock(log->mutex);
          log->seen.push_back(req);
        }
        auto event = [&](int i, bool last) {
          token_msg m;
          m.request = id;
          m.token = 100 + i;
          m.text = "w" + std::to_string(i) + " ";
          m.logprob = -0.5f;
          for (int k = 0; k < req.params.logprobs; ++k) m.top.push_back({100 + i + k, -0.5f - k});
          m.finished = last;
          m.finish_reason = last ? "length" : "";
          caf::anon_send(client, token_atom::value, std::move(m));
        };
        if (!req.prompt.empty() && req.prompt[0] == 7) {
          token_msg m;
          m.request = id;
          m.finished = true;
          m.finish_reason = "error";
          m.error = "replica lost";
          caf::anon_send(client, token_atom::value, std::move(m));
          return;
        }
        if (req.params.max_tokens >= 1000) return event(0, false);
        for (int i = 0; i < req.params.max_tokens; ++i) event(i, i + 1 == req.params.max_tokens);
      },
      [=](cancel_atom, uint64_t id, const caf::actor& client) {
        log->cancels++;
        token_msg m;
        m.request = id;
        m.finished = true;
        m.finish_reason = "cancelled";
        caf::anon_send(client, token_atom::value, std::move(m));
      },
      [=](status_atom) {
        router_status s;
        s.replicas = 1;
        s.ready = log->ready ? 1 : 0;
        return s;
      },
      [=](token_atom, token_msg&) {}, [=](prefixes_atom, const prefix_summary&) {},
      [=](ready_atom, int32_t, bool) {}, [=](hold_atom, int32_t) {}, [=](sweep_atom) {},
      [=](drain_atom, const std::vector<int32_t>&, caf::timespan) { return int32_t{0}; }};
}

std::shared_ptr<const model> meta() {
  static auto m = model::load_metadata(test::default_model());
  return m;
}

/// A reply as the client saw it.
struct reply {
  int status = 0;
  std::string body;
  bhttp::fields headers;
  json j() const { return json::parse(body); }
};

reply call(uint16_t port, bhttp::verb method, const std::string& target, const std::string& body = "",
           const std::string& key = "") {
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  s.expires_after(std::chrono::seconds(30));
  bhttp::request<bhttp::string_body> req{method, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  if (!key.empty()) req.set(bhttp::field::authorization, "Bearer " + key);
  if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  bhttp::write(s, req);
  beast::flat_buffer buf;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 << 20);
  bhttp::read(s, buf, parser);
  auto res = parser.release();
  reply r;
  r.status = static_cast<int>(res.result_int());
  r.body = res.body();
  r.headers = res.base();
  return r;
}

reply post(uint16_t port, const std::string& target, const json& body, const std::string& key = "") {
  return call(port, bhttp::verb::post, target, body.dump(), key);
}

/// Sends `bytes` and reads until the server closes (or 10 s pass).
std::string raw_exchange(uint16_t port, const std::string& bytes) {
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  s.expires_after(std::chrono::seconds(10));
  net::write(s, net::buffer(bytes));
  std::string out;
  beast::error_code ec;
  char buf[4096];
  for (;;) {
    const size_t n = s.read_some(net::buffer(buf), ec);
    out.append(buf, n);
    if (ec) break;
  }
  CHECK(ec != beast::error::timeout);
  return out;
}

/// A gateway on a free port in front of the scripted router.
struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{init(cfg)};
  std::shared_ptr<router_log> log = std::make_shared<router_log>();
  std::shared_ptr<metrics::registry> registry = std::make_shared<metrics::registry>();
  std::unique_ptr<http_gateway> gw;
  router_actor router;

  explicit fixture(bool with_router = true, std::vector<std::string> keys = {},
                   const std::function<void(gateway_options&)>& tweak = {}) {
    gateway_options o;
    o.server.host = "127.0.0.1";
    o.server.port = 0;
    o.server.api_keys = std::move(keys);
    o.server.max_queue_requests = 4;
    o.server.max_body_bytes = 16384;
    o.server.max_n = 4;
    o.model_name = "test-model";
    o.max_context = 2048;
    o.served = meta();
    o.registry = registry;
    o.status_interval = std::chrono::milliseconds(20);
    if (tweak) tweak(o);
    gw = std::make_unique<http_gateway>(sys, o);
    gw->start();
    router = sys.spawn(scripted_router, log);
    if (with_router) connect();
  }
  ~fixture() {
    gw->stop();
    caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
  }
  static caf::actor_system_config& init(caf::actor_system_config& c) {
    add_message_types(c);
    return c;
  }
  void connect() {
    gw->set_router(router);
    REQUIRE(wait_until([&] { return call(port(), bhttp::verb::get, "/ready").status == 200; }));
  }
  uint16_t port() const { return gw->port(); }
  template <class F>
  static bool wait_until(F&& f) {
    for (int i = 0; i < 250; ++i) {
      if (f()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
};

json completion_body(json prompt, int max_tokens) {
  return {{"model", "test-model"}, {"prompt", std::move(prompt)}, {"max_tokens", max_tokens}};
}

}  // namespace

TEST_CASE("the gateway answers health at once and ready only once the router has a ready replica", "[http][slow]") {
  fixture f(false);
  CHECK(call(f.port(), bhttp::verb::get, "/health").status == 200);
  CHECK(call(f.port(), bhttp::verb::get, "/ready").status == 503);
  auto early = post(f.port(), "/v1/completions", completion_body({1, 2}, 2));
  CHECK(early.status == 503);
  CHECK(early.j().at("error").at("type") == "service_unavailable_error");
  f.connect();
  CHECK(call(f.port(), bhttp::verb::get, "/ready").status == 200);
  f.log->ready = false;
  CHECK(fixture::wait_until([&] { return call(f.port(), bhttp::verb::get, "/ready").status == 503; }));
}

TEST_CASE("a completion carries the router's tokens, usage and finish reason", "[http][slow]") {
  fixture f;
  auto r = post(f.port(), "/v1/completions", completion_body({1, 2, 3}, 3));
  REQUIRE(r.status == 200);
  auto j = r.j();
  CHECK(j.at("object") == "text_completion");
  CHECK(j.at("model") == "test-model");
  CHECK(j.at("choices")[0].at("text") == "w0 w1 w2 ");
  CHECK(j.at("choices")[0].at("finish_reason") == "length");
  CHECK(j.at("usage").at("prompt_tokens") == 3);
  CHECK(j.at("usage").at("completion_tokens") == 3);
  CHECK(f.log->seen.at(0).prompt == std::vector<int32_t>{1, 2, 3});
  CHECK(f.gw->queued_requests() == 0);
  auto models = call(f.port(), bhttp::verb::get, "/v1/models");
  CHECK(models.j().at("data")[0].at("id") == "test-model");
  CHECK(call(f.port(), bhttp::verb::get, "/v1/models/test-model").status == 200);
  CHECK(call(f.port(), bhttp::verb::get, "/v1/models/other").status == 404);
}

TEST_CASE("n choices with a seed become n router requests with consecutive seeds", "[http][slow]") {
  fixture f;
  auto body = completion_body({1}, 2);
  body["n"] = 3;
  body["seed"] = 10;
  body["logprobs"] = 2;
  auto r = post(f.port(), "/v1/completions", body);
  REQUIRE(r.status == 200);
  auto j = r.j();
  REQUIRE(j.at("choices").size() == 3);
  CHECK(j.at("choices")[2].at("index") == 2);
  CHECK(j.at("choices")[0].at("logprobs").at("token_logprobs").size() == 2);
  CHECK(j.at("choices")[0].at("logprobs").at("top_logprobs")[0].size() == 2);
  std::vector<uint64_t> seeds;
  for (const auto& g : f.log->seen) seeds.push_back(g.params.seed);
  std::sort(seeds.begin(), seeds.end());
  CHECK(seeds == std::vector<uint64_t>{10, 11, 12});
}

TEST_CASE("a streamed chat starts with the role and ends with the finish reason, usage and DONE", "[http][slow]") {
  fixture f;
  json body = {{"model", "test-model"},
               {"messages", {{{"role", "user"}, {"content", "Hi"}}}},
               {"max_tokens", 2},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  auto r = post(f.port(), "/v1/chat/completions", body);
  REQUIRE(r.status == 200);
  CHECK(r.headers[bhttp::field::content_type] == "text/event-stream");
  std::vector<json> events;
  size_t pos = 0;
  while ((pos = r.body.find("data: ", pos)) != std::string::npos) {
    const auto end = r.body.find("\n\n", pos);
    REQUIRE(end != std::string::npos);
    const auto data = r.body.substr(pos + 6, end - pos - 6);
    events.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
    pos = end;
  }
  REQUIRE(events.size() == 6);  // role, 2 tokens, finish, usage, [DONE]
  CHECK(events[0].at("choices")[0].at("delta").at("role") == "assistant");
  CHECK(events[1].at("choices")[0].at("delta").at("content") == "w0 ");
  CHECK(events[3].at("choices")[0].at("finish_reason") == "length");
  CHECK(events[4].at("choices").empty());
  CHECK(events[4].at("usage").at("completion_tokens") == 2);
  CHECK(events[5] == "[DONE]");
}

TEST_CASE("bad requests get OpenAI errors with the right status", "[http][slow]") {
  fixture f;
  auto bad_json = call(f.port(), bhttp::verb::post, "/v1/completions", "{nope");
  CHECK(bad_json.status == 400);
  auto bad_field = post(f.port(), "/v1/completions", {{"model", "test-model"}, {"prompt", "x"}, {"top_p", 5}});
  CHECK(bad_field.status == 400);
  CHECK(bad_field.j().at("error").at("param") == "top_p");
  auto unknown_model = post(f.port(), "/v1/completions", {{"model", "gpt-4"}, {"prompt", "x"}});
  CHECK(unknown_model.status == 404);
  CHECK(unknown_model.j().at("error").at("code") == "model_not_found");
  CHECK(call(f.port(), bhttp::verb::get, "/v1/nothing").status == 404);
  auto wrong_method = call(f.port(), bhttp::verb::get, "/v1/completions");
  CHECK(wrong_method.status == 405);
  CHECK(wrong_method.headers[bhttp::field::allow] == "POST");
  auto big = call(f.port(), bhttp::verb::post, "/v1/completions", std::string(20000, ' '));
  CHECK(big.status == 413);
  auto long_prompt = post(f.port(), "/v1/completions", completion_body(std::vector<int>(2048, 1), 1));
  CHECK(long_prompt.status == 400);
  CHECK(long_prompt.j().at("error").at("param") == "prompt");
  auto too_many = completion_body({1}, 1);
  too_many["prompt"] = {{1}, {2}};
  too_many["n"] = 3;  // 6 choices > max_queue_requests 4
  auto busy = post(f.port(), "/v1/completions", too_many);
  CHECK(busy.status == 429);
  CHECK(busy.headers[bhttp::field::retry_after] == "1");
  CHECK(busy.j().at("error").at("type") == "rate_limit_error");
  auto failed = post(f.port(), "/v1/completions", completion_body({7}, 2));
  CHECK(failed.status == 503);
  CHECK(failed.j().at("error").at("message").get<std::string>().find("replica lost") != std::string::npos);
  CHECK(f.gw->queued_requests() == 0);
}

TEST_CASE("with API keys every v1 endpoint needs a bearer key but the probes do not", "[http][slow]") {
  fixture f(true, {"k1", "k2"});
  CHECK(post(f.port(), "/v1/completions", completion_body({1}, 1)).status == 401);
  auto wrong = post(f.port(), "/v1/completions", completion_body({1}, 1), "k3");
  CHECK(wrong.status == 401);
  CHECK(wrong.j().at("error").at("code") == "invalid_api_key");
  CHECK(post(f.port(), "/v1/completions", completion_body({1}, 1), "k2").status == 200);
  CHECK(call(f.port(), bhttp::verb::get, "/v1/models").status == 401);
  CHECK(call(f.port(), bhttp::verb::get, "/health").status == 200);
  CHECK(call(f.port(), bhttp::verb::get, "/metrics").status == 200);
}

TEST_CASE("with admin keys /admin/* takes only an admin key and the inference API only an API key",
          "[http][slow]") {
  fixture f(true, {"k1"}, [](gateway_options& o) { o.server.admin_keys = {"adm"}; });
  const auto drain = json{{"node", "n0"}};
  CHECK(post(f.port(), "/admin/drain", drain).status == 401);
  const auto inference_key = post(f.port(), "/admin/drain", drain, "k1");
  CHECK(inference_key.status == 401);
  CHECK(inference_key.j().at("error").at("message").get<std::string>().find("server.admin_keys") != std::string::npos);
  // The admin key passes authorization; this gateway has no supervisor, hence 503.
  CHECK(post(f.port(), "/admin/drain", drain, "adm").status == 503);
  CHECK(post(f.port(), "/v1/completions", completion_body({1}, 1), "adm").status == 401);
  CHECK(post(f.port(), "/v1/completions", completion_body({1}, 1), "k1").status == 200);
}

TEST_CASE("GET /admin/nodes lists the nodes, every head of the cluster file (the leader with its term) and the "
          "gateways, with when the head last heard from each",
          "[http][slow]") {
  fixture f;
  supervisor_options so;  // the head's supervisor in the gateway's process, as troupe serve runs it
  so.config = default_cluster_config();
  so.config.nodes.front().name = "n0";
  so.config.heads = {{"127.0.0.1", 7100, 7101}, {"10.0.0.2", 7200, 7201}, {"10.0.0.3", 7300, 7301}};
  so.config.head = so.config.heads.front();
  so.config.gateways = {{"127.0.0.1", 8001}, {"0.0.0.0", 8002}};
  so.launch_local_nodes = false;
  so.term = 5;
  so.head_index = 1;  // heads[1] leads term 5
  auto sup = spawn_supervisor(f.sys, so);
  caf::anon_send(sup, gateway_atom::value, int32_t{0});  // gateway 0 serves through this head
  caf::anon_send(sup, gateway_atom::value, int32_t{7});  // no such gateway: ignored
  caf::anon_send(sup, gateway_atom::value, int32_t{-1});
  reply r;
  REQUIRE(fixture::wait_until([&] { return (r = call(f.port(), bhttp::verb::get, "/admin/nodes")).status == 200; }));
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  INFO(r.body);
  const auto j = r.j();
  REQUIRE(j.at("nodes").size() == 1);
  CHECK(j["nodes"][0].at("name") == "n0");
  CHECK(j["nodes"][0].at("state") == "starting");
  REQUIRE(j.at("heads").size() == 3);
  CHECK(j["heads"][0] == json{{"host", "127.0.0.1"}, {"port", 7100}, {"leader", false}, {"term", nullptr}});
  CHECK(j["heads"][1] == json{{"host", "10.0.0.2"}, {"port", 7200}, {"leader", true}, {"term", 5}});
  CHECK(j["heads"][2] == json{{"host", "10.0.0.3"}, {"port", 7300}, {"leader", false}, {"term", nullptr}});
  REQUIRE(j.at("gateways").size() == 2);
  const auto& g0 = j["gateways"][0];
  CHECK(g0.at("host") == "127.0.0.1");
  CHECK(g0.at("port") == 8001);
  REQUIRE(g0.at("last_seen_ms").is_number_integer());
  CHECK(g0["last_seen_ms"].get<int64_t>() >= 0);
  CHECK(g0["last_seen_ms"].get<int64_t>() < 3000);  // heard just before the request
  CHECK(g0.at("reachable") == true);
  CHECK(j["gateways"][1] ==
        json{{"host", "0.0.0.0"}, {"port", 8002}, {"last_seen_ms", nullptr}, {"reachable", false}});
}

TEST_CASE("malformed HTTP gets a 400 and the connection closed", "[http][slow]") {
  fixture f;
  const auto out = raw_exchange(f.port(), "GARBAGE\x01\x02 / HTTP/1.1\r\n\r\n");
  CHECK(out.rfind("HTTP/1.1 400", 0) == 0);
  const auto bad_length = raw_exchange(f.port(), "POST /v1/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n");
  CHECK(bad_length.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(call(f.port(), bhttp::verb::get, "/health").status == 200);
}

TEST_CASE("a client that drops its stream cancels the request at the router and is counted", "[http][slow]") {
  fixture f;
  net::io_context ioc;
  tcp::socket s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), f.port()));
  const auto body = json{{"model", "test-model"}, {"prompt", {1}}, {"max_tokens", 1000}, {"stream", true}}.dump();
  const auto req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body;
  net::write(s, net::buffer(req));
  std::string got;
  char buf[4096];
  while (got.find("w0") == std::string::npos) got.append(buf, s.read_some(net::buffer(buf)));
  CHECK(f.gw->queued_requests() == 1);
  s.close();
  CHECK(fixture::wait_until([&] { return f.log->cancels.load() == 1; }));
  CHECK(fixture::wait_until([&] { return f.gw->queued_requests() == 0; }));
  const auto text = call(f.port(), bhttp::verb::get, "/metrics").body;
  CHECK(text.find("troupe_client_disconnects_total 1") != std::string::npos);
}

TEST_CASE("a non-streaming client that goes away while waiting cancels its request", "[http][slow]") {
  fixture f;
  {
    net::io_context ioc;
    tcp::socket s(ioc);
    s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), f.port()));
    const auto body = completion_body({1}, 1000).dump();
    const auto req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\n\r\n" + body;
    net::write(s, net::buffer(req));
    REQUIRE(fixture::wait_until([&] { return f.log->requests.load() == 1; }));
  }
  CHECK(fixture::wait_until([&] { return f.log->cancels.load() == 1; }));
  CHECK(fixture::wait_until([&] { return f.gw->queued_requests() == 0; }));
}

TEST_CASE("metrics count requests by endpoint and status in the Prometheus text format", "[http][slow]") {
  fixture f;
  REQUIRE(post(f.port(), "/v1/completions", completion_body({1}, 2)).status == 200);
  REQUIRE(post(f.port(), "/v1/completions", {{"model", "x"}}).status == 404);
  auto r = call(f.port(), bhttp::verb::get, "/metrics");
  REQUIRE(r.status == 200);
  CHECK(r.headers[bhttp::field::content_type] == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(r.body.find("troupe_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 1") != std::string::npos);
  CHECK(r.body.find("troupe_requests_total{endpoint=\"/v1/completions\",status=\"404\"} 1") != std::string::npos);
  CHECK(r.body.find("troupe_generation_tokens_total 2") != std::string::npos);
  CHECK(r.body.find("troupe_time_to_first_token_seconds_count 1") != std::string::npos);
  CHECK(r.body.find("troupe_queue_requests 0") != std::string::npos);
}

TEST_CASE("keep-alive connections serve several requests in a row", "[http][slow]") {
  fixture f;
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  s.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), f.port()));
  s.expires_after(std::chrono::seconds(30));
  beast::flat_buffer buf;
  for (int i = 0; i < 3; ++i) {
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/v1/completions", 11};
    req.body() = completion_body({1}, 1).dump();
    req.prepare_payload();
    bhttp::write(s, req);
    bhttp::response<bhttp::string_body> res;
    bhttp::read(s, buf, res);
    CHECK(res.result_int() == 200);
    CHECK(res.keep_alive());
  }
}

TEST_CASE("the gateway fills what a request leaves out from its generation defaults and max_tokens cap",
          "[http][generation]") {
  fixture f(true, {}, [](gateway_options& o) {
    o.generation.temperature = 0.2f;
    o.generation.top_p = 0.9f;
    o.server.max_tokens_default = 3;
  });
  const json chat = {{"model", "test-model"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
  auto r = post(f.port(), "/v1/chat/completions", chat);
  REQUIRE(r.status == 200);
  CHECK(r.j().at("usage").at("completion_tokens") == 3);
  json own = chat;
  own["temperature"] = 1.0;
  own["max_tokens"] = 2;
  REQUIRE(post(f.port(), "/v1/chat/completions", own).status == 200);
  std::lock_guard<std::mutex> lock(f.log->mutex);
  REQUIRE(f.log->seen.size() == 2);
  CHECK(f.log->seen[0].params.temperature == Approx(0.2));
  CHECK(f.log->seen[0].params.top_p == Approx(0.9));
  CHECK(f.log->seen[0].params.max_tokens == 3);
  CHECK(f.log->seen[1].params.temperature == Approx(1.0));
  CHECK(f.log->seen[1].params.top_p == Approx(0.9));
  CHECK(f.log->seen[1].params.max_tokens == 2);
}
