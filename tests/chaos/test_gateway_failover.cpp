// HTTP gateways apart from the head (`troupe gateway`, issue 15): the head killed under a
// gateway's open requests, and a gateway killed under its own. Real processes (`troupe
// serve`, `troupe node`, `troupe gateway`), real sockets, the default model; every answer
// is checked against the single engine's text for the same seed.
#include <signal.h>

#include <future>

#include "chaos/cluster_run.h"
#include "chaos/gateway_client.h"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::test::chaos;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;

constexpr int max_tokens = 48;
constexpr uint64_t seed = 11;

/// What one HTTP completion request got back.
struct completion_result {
  int status = 0;
  std::string text;           ///< the choice's text (streamed: every event's text, in order)
  std::string finish_reason;
  bool done_marker = false;   ///< streamed: ended with "data: [DONE]"
  std::string error;          ///< a connection error, or an error the gateway reported
};

/// The body of a seeded completion request for `prompt`.
std::string completion_body(const std::string& prompt, bool stream) {
  const nlohmann::json j = {{"model", "smol"},        {"prompt", prompt},  {"max_tokens", max_tokens},
                            {"temperature", 0.8},     {"top_p", 0.9},      {"top_k", 0},
                            {"min_p", 0.0},           {"seed", seed},      {"repetition_penalty", 1.0},
                            {"presence_penalty", 0.0}, {"frequency_penalty", 0.0}, {"ignore_eos", true},
                            {"stream", stream}};
  return j.dump();
}

/// Adds the SSE events of `body` from `from` on to `r`; returns how many were read.
size_t read_events(const std::string& body, size_t& from, completion_result& r) {
  size_t n = 0;
  for (size_t end; (end = body.find("\n\n", from)) != std::string::npos; from = end + 2) {
    const auto event = body.substr(from, end - from);
    if (event.rfind("data: ", 0) != 0) continue;
    ++n;
    if (event == "data: [DONE]") {
      r.done_marker = true;
      continue;
    }
    const auto j = nlohmann::json::parse(event.substr(6));
    if (j.contains("error")) r.error = j["error"].dump();
    if (!j.contains("choices") || j["choices"].empty()) continue;
    const auto& c = j["choices"][0];
    r.text += c.value("text", "");
    if (c.contains("finish_reason") && c["finish_reason"].is_string()) r.finish_reason = c["finish_reason"];
  }
  return n;
}

/// POSTs a completion request for `prompt` to 127.0.0.1:`port`; a streamed answer is read
/// event by event (`events` counts them as they arrive).
completion_result complete(uint16_t port, const std::string& prompt, bool stream, std::atomic<int>& events) {
  completion_result r;
  try {
    net::io_context ioc;
    beast::tcp_stream s(ioc);
    s.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/v1/completions", 11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::content_type, "application/json");
    req.body() = completion_body(prompt, stream);
    req.prepare_payload();
    s.expires_after(seconds(120));
    bhttp::write(s, req);
    beast::flat_buffer buf;
    bhttp::response_parser<bhttp::string_body> p;
    p.body_limit(std::uint64_t{1} << 26);  // not boost::none: Boost 1.74 then refuses every Content-Length
    bhttp::read_header(s, buf, p);
    r.status = static_cast<int>(p.get().result_int());
    size_t from = 0;
    while (!p.is_done()) {
      bhttp::read_some(s, buf, p);
      if (stream) events += static_cast<int>(read_events(p.get().body(), from, r));
    }
    if (stream) return r;
    const auto j = nlohmann::json::parse(p.get().body());
    if (j.contains("error")) r.error = j["error"].dump();
    if (j.contains("choices") && !j["choices"].empty()) {
      r.text = j["choices"][0].value("text", "");
      r.finish_reason = j["choices"][0].value("finish_reason", "");
    }
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

/// One request running on its own thread.
struct in_flight {
  bool stream = false;
  std::atomic<int> events{0};
  std::future<completion_result> answer;
};

/// Starts `prompt` against `port` in the background.
void launch_request(in_flight& f, uint16_t port, const std::string& prompt, bool stream) {
  f.stream = stream;
  f.answer = std::async(std::launch::async, [&f, port, prompt, stream] { return complete(port, prompt, stream, f.events); });
}

/// Waits until every streamed request in `fs` has had at least one event.
bool wait_streaming(const std::vector<in_flight*>& fs, milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool all = true;
    for (auto* f : fs) all = all && (!f->stream || f->events > 0);
    if (all) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(10));
  }
}

/// The single engine's text for each prompt, same sampling as completion_body.
std::vector<std::string> fault_free_texts(const std::vector<std::string>& prompts) {
  engine_config cfg;
  cfg.n_threads = 2;
  cfg.kv_tokens = 8192;
  engine eng(shared_default_model(), cfg);
  std::vector<std::vector<int32_t>> encoded;
  for (const auto& t : prompts) encoded.push_back(shared_default_model()->tokenizer().encode(t, true, true));
  std::vector<std::string> out;
  for (auto& r : eng.generate(encoded, fault_sampling(0.8f, seed, max_tokens))) out.push_back(r.text);
  return out;
}

/// Checks a finished request against the fault-free text.
void check_complete(const completion_result& r, const std::string& expected) {
  INFO("error: " << r.error);
  CHECK(r.status == 200);
  CHECK(r.error.empty());
  CHECK(r.finish_reason == "length");
  CHECK(r.text == expected);
}

/// Kills `pids` (those still running) when the test ends.
struct reaper {
  std::vector<pid_t> pids;
  ~reaper() {
    for (pid_t p : pids)
      if (p > 0) kill(p, SIGKILL), wait_exit(p, seconds(5));
  }
};

/// The gateway's HTTP port once it serves through the head's router (0 when it did not).
uint16_t gateway_serving(const std::filesystem::path& log, pid_t pid) {
  if (!wait_for_log(log, "serving through the head's router", pid, seconds(60))) return 0;
  return gateway_port(read_text(log));
}

}  // namespace

TEST_CASE("kill -9 of the head under a gateway's open requests, then a new head: the gateway keeps every HTTP "
          "connection, resumes each request on the new head, and every answer equals the fault-free text",
          "[chaos][gateway][slow]") {
  const auto dir = scratch_dir("gateway-head-restart");
  const int base = reserve_ports(3);
  const std::string sets = " --config " + (source_dir() / "cluster-config/examples/single.yaml").string() +
                           " --set head.port=" + std::to_string(base) + " --set server.port=0" +
                           " --set server.model_name=smol --set fault_tolerance.head_grace=60s" +
                           " --set nodes[0].port=" + std::to_string(base + 1) + " --set nodes[0].launch=false" +
                           " --set gateways[0].port=" + std::to_string(base + 2);
  reaper reap;
  const pid_t node = spawn_troupe("node --name local" + sets, dir / "node.out", dir / "node.log");
  reap.pids.push_back(node);
  const pid_t head1 = spawn_troupe("serve" + sets, dir / "serve1.out", dir / "serve1.log");
  reap.pids.push_back(head1);
  const auto gateway_log = dir / "gateway.log";
  const pid_t gateway = spawn_troupe("gateway --index 0" + sets, dir / "gateway.out", gateway_log);
  reap.pids.push_back(gateway);
  INFO(read_text(dir / "serve1.log") << read_text(gateway_log));
  REQUIRE(wait_for_count(dir / "serve1.log", ": ready (", 1, seconds(120)));
  const uint16_t port = gateway_serving(gateway_log, gateway);
  REQUIRE(port == base + 2);

  // Two streamed and two whole answers, in flight through the gateway when the head dies.
  const auto prompts = fault_prompts(4);
  const auto expected = fault_free_texts(prompts);
  std::vector<in_flight> requests(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) launch_request(requests[i], port, prompts[i], i < 2);
  std::vector<in_flight*> all;
  for (auto& r : requests) all.push_back(&r);
  REQUIRE(wait_streaming(all, seconds(60)));
  const int events_at_kill = requests[0].events;
  REQUIRE(kill(head1, SIGKILL) == 0);
  REQUIRE(wait_exit(head1, seconds(10)));
  REQUIRE(wait_for_count(dir / "node.log", "keeping 1 loaded shard(s)", 1, seconds(10)));

  const pid_t head2 = spawn_troupe("serve" + sets, dir / "serve2.out", dir / "serve2.log");
  reap.pids.push_back(head2);
  for (size_t i = 0; i < requests.size(); ++i) {
    INFO("request " << i << (requests[i].stream ? " (streamed)" : " (whole)") << "\n"
                    << read_text(gateway_log) << read_text(dir / "serve2.log"));
    REQUIRE(requests[i].answer.wait_for(seconds(120)) == std::future_status::ready);
    const auto r = requests[i].answer.get();
    check_complete(r, expected[i]);
    if (requests[i].stream) CHECK(r.done_marker);
  }
  CHECK(requests[0].events > events_at_kill);  // the stream went on after the kill
  const auto log = read_text(gateway_log);
  INFO(log);
  // Every request was unfinished at the kill and resumed once, on the new head's router.
  CHECK(count_of(log, "following the head: 4 request(s) resumed on its router") == 1);
  CHECK(count_of(read_text(dir / "node.log"), ": loading") == 1);  // the weights, once
  CHECK(count_of(read_text(dir / "node.log"), "adopted by the new head, weights kept") == 1);
  kill(gateway, SIGTERM);
  CHECK(wait_exit(gateway, seconds(30)));
  kill(head2, SIGTERM);
  CHECK(wait_exit(head2, seconds(30)));
}

TEST_CASE("kill -9 of a gateway: its client gets a connection error, the head cancels that request and keeps "
          "serving its own port's clients, and a retry with the same seed gets the same text",
          "[chaos][gateway][slow]") {
  serve_cluster cluster("cluster-config/examples/single.yaml", {"local"}, "gateway-kill",
                        " --set server.model_name=smol");
  const auto head_flag = cluster.head_flag();
  const auto head_port = head_flag.substr(head_flag.rfind(':') + 1);
  const auto gateway_log = cluster.dir() / "gateway.log";
  reaper reap;
  const pid_t gateway = spawn_troupe("gateway --config " +
                                         (source_dir() / "cluster-config/examples/single.yaml").string() +
                                         " --set head.port=" + head_port +
                                         " --set server.model_name=smol --set gateways[0].port=0",
                                     cluster.dir() / "gateway.out", gateway_log);
  reap.pids.push_back(gateway);
  INFO(read_text(cluster.log()) << read_text(gateway_log));
  const uint16_t port = gateway_serving(gateway_log, gateway);
  REQUIRE(port != 0);
  const uint16_t own_port = gateway_port(read_text(cluster.log()));
  REQUIRE(own_port != 0);

  const auto prompts = fault_prompts(2);
  const auto expected = fault_free_texts(prompts);
  in_flight lost, kept;
  launch_request(lost, port, prompts[0], true);      // through the gateway that dies
  launch_request(kept, own_port, prompts[1], true);  // through the head's own port
  REQUIRE(wait_streaming({&lost, &kept}, seconds(60)));
  REQUIRE(kill(gateway, SIGKILL) == 0);
  REQUIRE(wait_exit(gateway, seconds(10)));

  REQUIRE(lost.answer.wait_for(seconds(30)) == std::future_status::ready);
  const auto dropped = lost.answer.get();
  CHECK_FALSE(dropped.error.empty());  // the connection ended before the answer did
  CHECK_FALSE(dropped.done_marker);
  REQUIRE(kept.answer.wait_for(seconds(120)) == std::future_status::ready);
  check_complete(kept.answer.get(), expected[1]);
  CHECK(wait_for_count(cluster.log(), "router: a client went away", 1, seconds(10)));
  std::atomic<int> ignored{0};
  check_complete(complete(own_port, prompts[0], false, ignored), expected[0]);  // the retry, same seed
}
