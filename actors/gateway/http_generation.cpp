// The generation half of a gateway connection: /v1/completions and
// /v1/chat/completions from admission to the last byte, streaming or not.
#include <random>

#include "actors/actor_system_config.h"
#include "actors/gateway/http_session.h"
#include "runtime/model/model.h"

namespace troupe::http {

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

uint64_t random_seed() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

std::string hex(size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  do {
    s.insert(s.begin(), digits[n & 15]);
    n >>= 4;
  } while (n);
  return s;
}

}  // namespace

void session::start_generation(const bhttp::request<bhttp::string_body>& req) {
  if (core_->draining) throw api_error(503, "the server is shutting down");
  const auto body = parse_json_body(req.body());
  auto r = endpoint_ == "/v1/chat/completions" ? parse_chat_request(body, core_->limits)
                                               : parse_completion_request(body, core_->limits);
  if (!core_->have_router || core_->ready_replicas.load() < 1)
    throw api_error(503, "no replica is ready to serve (the model is loading, or every replica failed): retry later");
  auto prompts = tokenize_request(r, core_->opts.served->tokenizer());
  fit_context(r, prompts, core_->opts.max_context);
  std::string key;
  if (serve_cached(req, body, r, prompts, key)) return;
  launch(std::move(r), std::move(prompts), std::move(key));
}

void session::launch(openai_request r, std::vector<std::vector<int32_t>> prompts, std::string cache_key) {
  const int64_t n_choices = static_cast<int64_t>(prompts.size()) * r.n;
  int64_t tokens = 0;
  for (const auto& p : prompts) tokens += (static_cast<int64_t>(p.size()) + r.params.max_tokens) * r.n;
  if (!core_->admit(n_choices, tokens))
    throw api_error(429,
                    "the server is at capacity (server.max_queue_requests " +
                        std::to_string(core_->opts.server.max_queue_requests) + ", server.max_queue_tokens " +
                        std::to_string(core_->opts.server.max_queue_tokens) + "): retry later",
                    "", "rate_limit_exceeded");
  auto call = std::make_unique<api_call>();
  call->start = clock_type::now();
  call->meta.id = make_response_id(r.endpoint);
  call->meta.created = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
  call->meta.model = core_->limits.model_name;
  call->meta.endpoint = r.endpoint;
  call->meta.logprobs = r.logprobs;
  call->meta.include_usage = r.stream && r.include_usage;
  for (size_t p = 0; p < prompts.size(); ++p)
    for (int i = 0; i < r.n; ++i) {
      choice_state c;
      c.id = core_->next_id++;
      c.prompt = static_cast<int>(p);
      c.admitted_tokens = static_cast<int64_t>(prompts[p].size()) + r.params.max_tokens;
      call->choices.push_back(std::move(c));
    }
  call->remaining = static_cast<int>(call->choices.size());
  call->cache_key = std::move(cache_key);
  if (!call->cache_key.empty()) call->recording.choices.resize(call->choices.size());
  call->request = std::move(r);
  call->prompts = std::move(prompts);
  call_ = std::move(call);
  const auto& req = call_->request;
  for (size_t k = 0; k < call_->choices.size(); ++k) {
    auto& c = call_->choices[k];
    auto params = req.params;
    params.seed = req.has_seed ? req.params.seed + static_cast<uint64_t>(k % static_cast<size_t>(req.n))
                               : random_seed();
    core_->hub.add(c.id, {weak_from_this(), static_cast<int>(k)});
    core_->submit(c.id, generate_request{call_->prompts[static_cast<size_t>(c.prompt)], std::move(params)});
  }
  watch();
}

void session::record_token(choice_state& c, const token_msg& m) {
  const auto now = clock_type::now();
  auto& metrics = core_->metrics();
  if (c.generated == 0)
    metrics.time_to_first_token.observe(seconds_between(call_->start, now));
  else
    metrics.inter_token_latency.observe(seconds_between(c.last_token, now));
  c.last_token = now;
  c.generated++;
  token_record t;
  t.token = m.token;
  if (call_->request.logprobs >= 0) {
    t.logprob = m.logprob;
    t.top = m.top;
  }
  c.out.tokens.push_back(std::move(t));
}

void session::finish_choice(choice_state& c, const std::string& reason) {
  c.done = true;
  c.out.finish_reason = reason;
  call_->remaining--;
  if (!c.released) {
    c.released = true;
    core_->release(1, c.admitted_tokens);
  }
  if (reason != "stop" && reason != "length") return;
  auto& metrics = core_->metrics();
  const auto prompt_len = static_cast<double>(call_->prompts[static_cast<size_t>(c.prompt)].size());
  metrics.e2e_latency.observe(seconds_between(call_->start, clock_type::now()));
  metrics.prompt_tokens.observe(prompt_len);
  metrics.generation_tokens.observe(c.generated);
  metrics.prompt_tokens_total.inc(prompt_len);
  metrics.generation_tokens_total.inc(c.generated);
}

void session::on_event(int choice, token_msg& m) {
  if (closed_ || !call_ || choice < 0 || static_cast<size_t>(choice) >= call_->choices.size()) return;
  auto& c = call_->choices[static_cast<size_t>(choice)];
  if (c.done || c.id != m.request) return;  // a late event of an earlier request on this connection
  if (m.token >= 0) record_token(c, m);
  if (m.finished && m.finish_reason != "stop" && m.finish_reason != "length") {
    c.done = true;
    call_->remaining--;
    if (!c.released) {
      c.released = true;
      core_->release(1, c.admitted_tokens);
    }
    return fail_call(m.finish_reason == "error" ? m.error : "the request was " + m.finish_reason);
  }
  if (!call_->cache_key.empty()) record_event(choice, m);
  if (call_->request.stream) return stream_event(choice, m);
  c.out.text += m.text;
  if (!m.finished) return;
  finish_choice(c, m.finish_reason);
  if (call_->remaining == 0) complete();
}

void session::complete() {
  usage_counts usage;
  std::vector<choice_output> outs;
  for (auto& c : call_->choices) {
    usage.completion_tokens += c.generated;
    outs.push_back(std::move(c.out));
  }
  for (const auto& p : call_->prompts) usage.prompt_tokens += static_cast<int64_t>(p.size());
  auto body = dump_json(response_body(call_->meta, outs, usage, core_->opts.served->tokenizer()));
  store_answer();
  call_.reset();
  respond(bhttp::status::ok, std::move(body), "application/json");
}

void session::fail_call(const std::string& why) {
  logger()->warn("http: request {} failed: {}", call_->meta.id, why);
  cancel_unfinished();
  const api_error e(503, "generation failed: " + why);
  if (call_->request.stream && call_->headers_sent) {
    push(sse_event(error_body(e)));
    count_request(200);
    end_stream();
    return;
  }
  call_.reset();
  respond_error(e);
}

void session::start_stream() {
  call_->headers_sent = true;
  chunked_ = version_ >= 11;
  if (!chunked_) keep_alive_ = false;
  std::string head = version_ >= 11 ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.0 200 OK\r\n";
  head += "Server: troupe\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n";
  if (!cache_header_.empty()) head += "X-Troupe-Cache: " + cache_header_ + "\r\n";
  head += chunked_ ? "Transfer-Encoding: chunked\r\n" : "";
  head += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  push(head, true);
}

void session::stream_event(int choice, const token_msg& m) {
  if (!call_->headers_sent) start_stream();
  auto& c = call_->choices[static_cast<size_t>(choice)];
  const auto& tok = core_->opts.served->tokenizer();
  const bool chat = call_->meta.endpoint == api_endpoint::chat_completions;
  if (chat && !c.started) push(sse_event(chunk_body(call_->meta, choice, "", {}, 0, "", true, tok)));
  c.started = true;
  std::vector<token_record> records;
  if (call_->request.logprobs >= 0 && m.token >= 0) records.push_back(c.out.tokens.back());
  if (!m.text.empty() || !records.empty()) {
    push(sse_event(chunk_body(call_->meta, choice, m.text, records, c.streamed_chars, "", false, tok)));
    c.streamed_chars += m.text.size();
  }
  c.out.tokens.clear();  // streamed: no need to keep them
  if (!m.finished) return;
  finish_choice(c, m.finish_reason);
  push(sse_event(chunk_body(call_->meta, choice, "", {}, c.streamed_chars, m.finish_reason, false, tok)));
  if (call_->remaining > 0) return;
  if (call_->meta.include_usage) {
    usage_counts usage;
    for (const auto& ch : call_->choices) usage.completion_tokens += ch.generated;
    for (const auto& p : call_->prompts) usage.prompt_tokens += static_cast<int64_t>(p.size());
    push(sse_event(usage_chunk(call_->meta, usage)));
  }
  store_answer();
  count_request(200);
  end_stream();
}

void session::end_stream() {
  push("data: [DONE]\n\n");
  if (chunked_) push("0\r\n\r\n", true);
  call_->ended = true;
  flush();
}

void session::push(const std::string& data, bool raw) {
  if (closed_) return;
  if (raw || !chunked_)
    out_.push_back(data);
  else
    out_.push_back(hex(data.size()) + "\r\n" + data + "\r\n");
  flush();
}

void session::flush() {
  if (writing_ || out_.empty() || closed_) return;
  write_buf_.clear();
  for (auto& s : out_) write_buf_ += s;
  out_.clear();
  writing_ = true;
  net::async_write(stream_, net::buffer(write_buf_),
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->on_flushed(ec); });
}

void session::on_flushed(beast::error_code ec) {
  writing_ = false;
  if (ec) {
    if (call_) return client_gone();
    return close();
  }
  if (!out_.empty()) return flush();
  if (call_ && call_->ended) {
    call_.reset();
    chunked_ = false;
    if (!keep_alive_) return close();
    next_request();
  }
}

void session::cancel_unfinished() {
  if (!call_) return;
  for (auto& c : call_->choices) {
    if (!c.done) {
      c.done = true;
      call_->remaining--;
      core_->cancel(c.id);
    }
    if (!c.released) {
      c.released = true;
      core_->release(1, c.admitted_tokens);
    }
  }
}

void session::client_gone() {
  if (call_ && !call_->ended) {
    cancel_unfinished();
    core_->metrics().client_disconnects.inc();
    count_request(499);
  }
  call_.reset();
  close();
}

}  // namespace troupe::http
