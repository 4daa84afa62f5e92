#pragma once
/// Seeded completion requests through an HTTP gateway, as the process-level chaos tests
/// send them: one request per thread, a streamed answer read event by event, and the
/// single engine's text for the same prompt and sampling to compare it with.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <atomic>
#include <functional>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "chaos/cluster_run.h"
#include "chaos/gateway_client.h"

namespace troupe::test::chaos {

/// What one HTTP completion request got back.
struct completion_result {
  int status = 0;
  std::string text;           ///< the choice's text (streamed: every event's text, in order)
  std::string finish_reason;
  bool done_marker = false;   ///< streamed: ended with "data: [DONE]"
  std::string error;          ///< a connection error, or an error the gateway reported
};

/// The body of a completion request for `prompt` with the sampling of `p` (as
/// fault_sampling builds it; model "smol", which the tests set as server.model_name).
inline std::string completion_body(const std::string& prompt, bool stream, const sampling_params& p) {
  const nlohmann::json j = {{"model", "smol"},        {"prompt", prompt},  {"max_tokens", p.max_tokens},
                            {"temperature", p.temperature}, {"top_p", p.top_p}, {"top_k", 0},
                            {"min_p", 0.0},           {"seed", p.seed},    {"repetition_penalty", 1.0},
                            {"presence_penalty", 0.0}, {"frequency_penalty", 0.0}, {"ignore_eos", true},
                            {"stream", stream}};
  return j.dump();
}

/// Adds the SSE events of `body` from `from` on to `r`; returns how many were read.
inline size_t read_events(const std::string& body, size_t& from, completion_result& r) {
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
inline completion_result complete(uint16_t port, const std::string& prompt, bool stream, const sampling_params& p,
                                  std::atomic<int>& events) {
  namespace beast = boost::beast;
  namespace bhttp = boost::beast::http;
  namespace net = boost::asio;
  completion_result r;
  try {
    net::io_context ioc;
    beast::tcp_stream s(ioc);
    s.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/v1/completions", 11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::content_type, "application/json");
    req.body() = completion_body(prompt, stream, p);
    req.prepare_payload();
    s.expires_after(std::chrono::seconds(300));
    bhttp::write(s, req);
    beast::flat_buffer buf;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(std::uint64_t{1} << 26);  // not boost::none: Boost 1.74 then refuses every Content-Length
    bhttp::read_header(s, buf, parser);
    r.status = static_cast<int>(parser.get().result_int());
    size_t from = 0;
    while (!parser.is_done()) {
      bhttp::read_some(s, buf, parser);
      if (stream) events += static_cast<int>(read_events(parser.get().body(), from, r));
    }
    if (stream) return r;
    const auto j = nlohmann::json::parse(parser.get().body());
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
inline void launch_request(in_flight& f, uint16_t port, const std::string& prompt, bool stream,
                           const sampling_params& p) {
  f.stream = stream;
  f.answer = std::async(std::launch::async,
                        [&f, port, prompt, stream, p] { return complete(port, prompt, stream, p, f.events); });
}

/// Waits until every streamed request in `fs` has had at least one event.
inline bool wait_streaming(const std::vector<in_flight*>& fs, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool all = true;
    for (auto* f : fs) all = all && (!f->stream || f->events > 0);
    if (all) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

/// Events that the streamed requests of `fs` have received so far, together.
inline int total_events(const std::vector<in_flight*>& fs) {
  int n = 0;
  for (auto* f : fs) n += f->events;
  return n;
}

/// Waits until the requests of `fs` have received more than `total` events together;
/// returns when (nullopt after `timeout`).
inline std::optional<std::chrono::steady_clock::time_point> wait_events_beyond(const std::vector<in_flight*>& fs, int total,
                                                                               std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (total_events(fs) > total) return std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return std::nullopt;
}

/// The single engine's text for each prompt with the sampling of `p` (the fault-free run).
inline std::vector<std::string> fault_free_texts(const std::vector<std::string>& prompts, const sampling_params& p) {
  std::vector<std::string> out;
  for (auto& r : fault_free_results(prompts, p)) out.push_back(r.text);
  return out;
}

/// Checks a finished request against the fault-free text: status 200, no error, run to
/// max_tokens, the same text (no gap, duplicate or changed token).
inline void check_complete(const completion_result& r, const std::string& expected) {
  INFO("error: " << r.error);
  CHECK(r.status == 200);
  CHECK(r.error.empty());
  CHECK(r.finish_reason == "length");
  CHECK(r.text == expected);
}

/// Streamed requests over one or more gateways, all started at once: prompt i goes to
/// ports[i % ports.size()] with the same sampling.
class stream_wave {
 public:
  stream_wave(const std::vector<std::string>& prompts, const sampling_params& p, const std::vector<uint16_t>& ports)
      : ports_(ports), requests_(prompts.size()) {
    for (size_t i = 0; i < prompts.size(); ++i) launch_request(requests_[i], port_of(i), prompts[i], true, p);
  }
  /// The gateway port of request i.
  uint16_t port_of(size_t i) const { return ports_[i % ports_.size()]; }
  /// Every request, for wait_streaming and the event counts.
  std::vector<in_flight*> all() {
    std::vector<in_flight*> out;
    for (auto& r : requests_) out.push_back(&r);
    return out;
  }
  /// Request i's answer, once it ended (REQUIREs that it did within `timeout`).
  completion_result answer(size_t i, std::chrono::seconds timeout) {
    REQUIRE(requests_[i].answer.wait_for(timeout) == std::future_status::ready);
    return requests_[i].answer.get();
  }
  size_t size() const { return requests_.size(); }

 private:
  std::vector<uint16_t> ports_;
  std::vector<in_flight> requests_;
};

/// Waits for every answer of `w` and checks each against `expected` (check_complete, and
/// a stream ended with data: [DONE]); `context()` (the logs) goes with a failure.
inline void check_wave(stream_wave& w, const std::vector<std::string>& expected,
                       const std::function<std::string()>& context) {
  for (size_t i = 0; i < w.size(); ++i) {
    const auto r = w.answer(i, std::chrono::seconds(180));
    INFO("stream " << i << " through port " << w.port_of(i) << "\n" << (r.error.empty() ? "" : context()));
    check_complete(r, expected[i]);
    CHECK(r.done_marker);
  }
}

/// Four seeded streams (temperature 0.8, `seed`, 64 tokens) open through the gateway at
/// `port`, with their fault-free texts: REQUIREs that every one streams within 60 s.
struct open_streams {
  open_streams(uint16_t port, uint64_t seed)
      : prompts(fault_prompts(4)),
        sampling(fault_sampling(0.8f, seed, 64)),
        expected(fault_free_texts(prompts, sampling)),
        wave(prompts, sampling, {port}),
        all(wave.all()) {
    REQUIRE(wait_streaming(all, std::chrono::seconds(60)));
  }
  std::vector<std::string> prompts;
  sampling_params sampling;
  std::vector<std::string> expected;  ///< the single engine's text of each
  stream_wave wave;
  std::vector<in_flight*> all;
};

/// Kills `pids` (those still running) when the test ends.
struct reaper {
  std::vector<pid_t> pids;
  ~reaper() {
    for (pid_t p : pids)
      if (p > 0) kill(p, SIGKILL), wait_exit(p, std::chrono::seconds(5));
  }
};

/// The gateway's HTTP port once it serves through the head's router (0 when it did not).
inline uint16_t gateway_serving(const std::filesystem::path& log, pid_t pid) {
  if (!wait_for_log(log, "serving through the head's router", pid, std::chrono::seconds(60))) return 0;
  return gateway_port(read_text(log));
}

}  // namespace troupe::test::chaos
