// The response cache's backends: an in-process LRU and Redis (hiredis, synchronous with
// 50 ms timeouts and a 1 s back-off after a failure; response_cache.h says why).
#include "actors/gateway/response_cache.h"

#include <hiredis/hiredis.h>

#include <list>
#include <mutex>
#include <unordered_map>

#include "actors/actor_system_config.h"

namespace troupe {

namespace {

using clock_type = std::chrono::steady_clock;

/// Bound of one Redis connect and of one command.
constexpr auto redis_timeout = std::chrono::milliseconds(50);
/// How long the Redis backend stays off after a failure before it reconnects.
constexpr auto redis_backoff = std::chrono::seconds(1);

// -- memory: an LRU with per-entry expiry -----------------------------------------------

class memory_cache final : public response_cache {
 public:
  memory_cache(const cache_section& c, std::shared_ptr<response_cache_metrics> m)
      : ttl_(c.ttl), max_bytes_(c.max_bytes), metrics_(std::move(m)) {}

  cache_lookup get(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(key);
    if (it != index_.end() && it->second->expires <= clock_type::now()) {
      erase(it->second);
      it = index_.end();
    }
    if (it == index_.end()) {
      metrics_->misses.inc();
      return {};
    }
    lru_.splice(lru_.begin(), lru_, it->second);  // most recently used first
    metrics_->hits.inc();
    return {cache_lookup::status::hit, it->second->value};
  }

  void put(const std::string& key, const std::string& value) override {
    const auto size = static_cast<int64_t>(key.size() + value.size());
    if (size > max_bytes_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (auto it = index_.find(key); it != index_.end()) erase(it->second);
    lru_.push_front({key, value, clock_type::now() + ttl_});
    index_[key] = lru_.begin();
    held_ += size;
    while (held_ > max_bytes_ && !lru_.empty()) erase(std::prev(lru_.end()));
    metrics_->stored_bytes.inc(static_cast<double>(value.size()));
    metrics_->bytes.set(static_cast<double>(held_));
  }

  std::string backend() const override { return "memory"; }

 private:
  struct entry {
    std::string key;
    std::string value;
    clock_type::time_point expires;
  };
  using iter = std::list<entry>::iterator;

  void erase(iter it) {
    held_ -= static_cast<int64_t>(it->key.size() + it->value.size());
    index_.erase(it->key);
    lru_.erase(it);
    metrics_->bytes.set(static_cast<double>(held_));
  }

  std::chrono::milliseconds ttl_;
  int64_t max_bytes_;
  std::shared_ptr<response_cache_metrics> metrics_;
  std::mutex mutex_;
  std::list<entry> lru_;
  std::unordered_map<std::string, iter> index_;
  int64_t held_ = 0;
};

// -- redis ------------------------------------------------------------------------------

struct reply_deleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

class redis_cache final : public response_cache {
 public:
  redis_cache(const cache_section& c, std::shared_ptr<response_cache_metrics> m)
      : address_(parse_redis_url(c.url)), url_(c.url), ttl_(c.ttl), max_bytes_(c.max_bytes), metrics_(std::move(m)) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (connected()) logger()->info("cache: redis at {} (ttl {} ms)", url_, ttl_.count());
  }
  ~redis_cache() override {
    if (ctx_) redisFree(ctx_);
  }

  cache_lookup get(const std::string& key) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!connected()) return error();
    reply_ptr r(static_cast<redisReply*>(redisCommand(ctx_, "GET %b", key.data(), key.size())));
    if (!r || r->type == REDIS_REPLY_ERROR) return fail(r.get(), "GET"), error();
    if (r->type == REDIS_REPLY_NIL) {
      metrics_->misses.inc();
      return {};
    }
    if (r->type != REDIS_REPLY_STRING) return fail(r.get(), "GET"), error();
    metrics_->hits.inc();
    metrics_->bytes.set(static_cast<double>(r->len));
    return {cache_lookup::status::hit, std::string(r->str, r->len)};
  }

  void put(const std::string& key, const std::string& value) override {
    if (static_cast<int64_t>(key.size() + value.size()) > max_bytes_ && max_bytes_ > 0) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (!connected()) return void(metrics_->errors.inc());
    reply_ptr r(static_cast<redisReply*>(redisCommand(ctx_, "SET %b %b PX %lld", key.data(), key.size(), value.data(),
                                                      value.size(), static_cast<long long>(ttl_.count()))));
    if (!r || r->type == REDIS_REPLY_ERROR) return fail(r.get(), "SET"), metrics_->errors.inc();
    metrics_->stored_bytes.inc(static_cast<double>(value.size()));
    metrics_->bytes.set(static_cast<double>(value.size()));
  }

  std::string backend() const override { return "redis"; }

 private:
  cache_lookup error() {
    metrics_->errors.inc();
    return {cache_lookup::status::error, {}};
  }

  /// True with a usable connection: the one open, or a new one once the back-off is over.
  bool connected() {
    if (ctx_) return true;
    if (clock_type::now() < down_until_) return false;
    ctx_ = redisConnectWithTimeout(address_.host.c_str(), address_.port, to_timeval(redis_timeout));
    if (!ctx_ || ctx_->err) return fail(nullptr, "connect"), false;
    redisSetTimeout(ctx_, to_timeval(redis_timeout));
    if (!address_.password.empty() && !simple("AUTH %s", address_.password.c_str())) return false;
    if (address_.db != 0 && !simple("SELECT %d", address_.db)) return false;
    configure();
    if (!ctx_) return false;
    if (down_) logger()->info("cache: redis at {} is back", url_);
    down_ = false;
    return true;
  }

  /// A command that must succeed; false (connection dropped) otherwise.
  template <class... Ts>
  bool simple(const char* format, Ts... args) {
    reply_ptr r(static_cast<redisReply*>(redisCommand(ctx_, format, args...)));
    if (r && r->type != REDIS_REPLY_ERROR) return true;
    fail(r.get(), std::string(format).substr(0, std::string(format).find(' ')));
    return false;
  }

  /// Eviction is Redis's LRU: sets allkeys-lru (and maxmemory), or checks it where CONFIG
  /// is refused (managed Redis) and warns when it is another policy.
  void configure() {
    reply_ptr set(static_cast<redisReply*>(redisCommand(ctx_, "CONFIG SET maxmemory-policy allkeys-lru")));
    if (!set) return fail(nullptr, "CONFIG SET");
    if (set->type == REDIS_REPLY_ERROR) {
      reply_ptr got(static_cast<redisReply*>(redisCommand(ctx_, "CONFIG GET maxmemory-policy")));
      if (!got) return fail(nullptr, "CONFIG GET");
      const bool lru = got->type == REDIS_REPLY_ARRAY && got->elements == 2 &&
                       std::string(got->element[1]->str, got->element[1]->len) == "allkeys-lru";
      if (!lru)
        logger()->warn("cache: redis at {} refused CONFIG SET ({}) and its maxmemory-policy is not allkeys-lru: "
                       "entries expire after the TTL but may not be evicted by LRU",
                       url_, std::string(set->str, set->len));
      return;
    }
    if (max_bytes_ > 0 && !simple("CONFIG SET maxmemory %lld", static_cast<long long>(max_bytes_))) return;
  }

  /// Drops the connection after a failure; logs once per outage.
  void fail(const redisReply* r, const std::string& what) {
    std::string why = r && r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len)
                      : ctx_ && ctx_->err               ? std::string(ctx_->errstr)
                                                        : "no reply";
    if (ctx_) redisFree(ctx_);
    ctx_ = nullptr;
    down_until_ = clock_type::now() + redis_backoff;
    if (!down_)
      logger()->warn("cache: redis at {} failed ({}: {}): requests are served without the cache until it answers",
                     url_, what, why);
    down_ = true;
  }

  redis_address address_;
  std::string url_;
  std::chrono::milliseconds ttl_;
  int64_t max_bytes_;
  std::shared_ptr<response_cache_metrics> metrics_;
  std::mutex mutex_;
  redisContext* ctx_ = nullptr;
  clock_type::time_point down_until_{};
  bool down_ = false;
};

}  // namespace

response_cache_metrics::response_cache_metrics(metrics::registry& r)
    : hits(r.counter_family("troupe_response_cache_hits_total",
                            "Generation requests answered from the response cache.")
               .with()),
      misses(r.counter_family("troupe_response_cache_misses_total",
                              "Cacheable requests the response cache had no answer for.")
                 .with()),
      errors(r.counter_family("troupe_response_cache_errors_total",
                              "Response cache lookups and stores that failed or were skipped because "
                              "the backend was down (those requests were served without the cache).")
                 .with()),
      stored_bytes(r.counter_family("troupe_response_cache_stored_bytes_total",
                                    "Bytes of the answers written to the response cache.")
                       .with()),
      bytes(r.gauge_family("troupe_response_cache_bytes",
                           "memory backend: bytes the response cache holds; redis: size of the last "
                           "answer stored or served.")
                .with()) {}

std::shared_ptr<response_cache> make_response_cache(const cache_section& config, metrics::registry& registry) {
  if (config.backend == "off") return nullptr;
  auto m = std::make_shared<response_cache_metrics>(registry);
  if (config.backend == "memory") return std::make_shared<memory_cache>(config, std::move(m));
  if (config.backend == "redis") return std::make_shared<redis_cache>(config, std::move(m));
  throw std::invalid_argument("cache.backend must be off, memory or redis, got \"" + config.backend + "\"");
}

}  // namespace troupe
