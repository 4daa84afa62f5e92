// The response cache on a gateway connection: the lookup before a request is admitted,
// the replay of a hit (JSON, or the first answer's SSE events in their order), and the
// recording and store of a finished answer. response_cache.h has the backends.
#include "actors/actor_system_config.h"
#include "actors/gateway/http_session.h"
#include "runtime/model/model.h"

namespace troupe::http {

namespace {

/// `"cache": false` in the body, or Cache-Control no-cache / no-store, skips the cache.
bool bypassed(const bhttp::request<bhttp::string_body>& req, const nlohmann::json& body) {
  const auto control = std::string(req[bhttp::field::cache_control]);
  if (control.find("no-cache") != std::string::npos || control.find("no-store") != std::string::npos) return true;
  return body.contains("cache") && !body["cache"].get<bool>();
}

}  // namespace

bool session::serve_cached(const bhttp::request<bhttp::string_body>& req, const nlohmann::json& body,
                           const openai_request& r, const std::vector<std::vector<int32_t>>& prompts,
                           std::string& key) {
  key.clear();
  if (body.contains("cache") && !body["cache"].is_boolean())
    throw api_error(400, "field 'cache' must be true or false", "cache");
  auto& cache = core_->cache;
  if (!cache) return false;
  if (!cacheable(r) || bypassed(req, body)) {
    cache_header_ = "bypass";
    return false;
  }
  const auto k = cache_key(core_->limits.model_name, r, prompts);
  auto found = cache->get(k);
  if (found.result == cache_lookup::status::error) {
    cache_header_ = "unavailable";
    return false;
  }
  key = k;
  cache_header_ = "miss";
  if (found.result == cache_lookup::status::miss) return false;
  auto answer = decode_answer(found.value);
  if (!answer || answer->choices.size() != prompts.size() * static_cast<size_t>(r.n)) {
    logger()->warn("http: the cached answer under {} is not one this gateway wrote: generating it again", k);
    return false;
  }
  cache_header_ = "hit";
  key.clear();
  replay(r, std::move(*answer));
  return true;
}

void session::replay(const openai_request& r, cached_answer a) {
  auto call = std::make_unique<api_call>();
  call->start = std::chrono::steady_clock::now();
  call->meta.id = a.id;
  call->meta.created = a.created;
  call->meta.model = core_->limits.model_name;
  call->meta.endpoint = r.endpoint;
  call->meta.logprobs = r.logprobs;
  call->meta.include_usage = r.stream && r.include_usage;
  if (r.stream) {
    call->request = r;
    call_ = std::move(call);
    return replay_stream(r, a);
  }
  auto body = dump_json(response_body(call->meta, a.choices, a.usage, core_->opts.served->tokenizer()));
  respond(bhttp::status::ok, std::move(body), "application/json");
}

void session::replay_stream(const openai_request& r, const cached_answer& a) {
  // The same chunks stream_event sent for the first answer, from its recorded events.
  start_stream();
  const auto& tok = core_->opts.served->tokenizer();
  const auto& meta = call_->meta;
  const bool chat = meta.endpoint == api_endpoint::chat_completions;
  std::vector<bool> started(a.choices.size(), false);
  std::vector<size_t> streamed(a.choices.size(), 0);
  for (const auto& e : a.events) {
    const auto k = static_cast<size_t>(e.choice);
    if (chat && !started[k]) push(sse_event(chunk_body(meta, e.choice, "", {}, 0, "", true, tok)));
    started[k] = true;
    std::vector<token_record> records;
    if (r.logprobs >= 0 && e.token >= 0) records.push_back(a.choices[k].tokens[static_cast<size_t>(e.token)]);
    if (!e.text.empty() || !records.empty()) {
      push(sse_event(chunk_body(meta, e.choice, e.text, records, streamed[k], "", false, tok)));
      streamed[k] += e.text.size();
    }
    if (e.finished)
      push(sse_event(chunk_body(meta, e.choice, "", {}, streamed[k], a.choices[k].finish_reason, false, tok)));
  }
  if (meta.include_usage) push(sse_event(usage_chunk(meta, a.usage)));
  count_request(200);
  end_stream();
}

void session::record_event(int choice, const token_msg& m) {
  auto& out = call_->recording.choices[static_cast<size_t>(choice)];
  cached_event e;
  e.choice = choice;
  e.text = m.text;
  e.finished = m.finished;
  if (m.token >= 0) {
    token_record t;
    t.token = m.token;
    if (call_->request.logprobs >= 0) {
      t.logprob = m.logprob;
      t.top = m.top;
    }
    out.tokens.push_back(std::move(t));
    e.token = static_cast<int>(out.tokens.size()) - 1;
  }
  out.text += m.text;
  if (m.finished) out.finish_reason = m.finish_reason;
  call_->recording.events.push_back(std::move(e));
}

void session::store_answer() {
  if (!core_->cache || call_->cache_key.empty()) return;
  auto& a = call_->recording;
  a.id = call_->meta.id;
  a.created = call_->meta.created;
  a.usage = {};
  for (const auto& c : call_->choices) a.usage.completion_tokens += c.generated;
  for (const auto& p : call_->prompts) a.usage.prompt_tokens += static_cast<int64_t>(p.size());
  core_->cache->put(call_->cache_key, encode_answer(a));
  call_->cache_key.clear();
}

}  // namespace troupe::http
