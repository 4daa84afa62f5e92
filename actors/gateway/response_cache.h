#pragma once
/// The gateway's response cache: an exact-match store of finished answers for requests
/// whose output is a pure function of their input (temperature 0, or a given seed: the
/// sampler's randomness is a function of seed and token index). A hit replays the first
/// answer byte for byte (its id and `created` included), as JSON or as the same SSE
/// events, without reaching the router. Config: the cluster file's `cache:` section
/// (docs/configuration.md); metrics troupe_response_cache_* (docs/metrics.md).
///
/// Backends: `memory` (an in-process LRU bounded by max_bytes, entries expire after the
/// TTL) and `redis` (hiredis; SET with PX = TTL; eviction is Redis's own LRU:
/// `maxmemory-policy allkeys-lru` is set at start, or checked and warned about where
/// CONFIG is refused; `maxmemory` = max_bytes when > 0).
///
/// Blocking: Redis calls are synchronous and made on the gateway's Asio io threads, never
/// on a CAF scheduler thread. Each connect and each command is bounded by a 50 ms
/// timeout; a failure (refused, timeout, error reply) closes the connection, counts an
/// error, logs one line when the cache goes down, and the backend stays off for 1 s
/// (lookups and stores during that second count as errors without touching the network),
/// then one reconnect is tried. So a dead or slow Redis costs at most one 50 ms stall per
/// io thread and second, and every request is served as if there were no cache.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/gateway/openai_response.h"
#include "actors/metrics.h"
#include "cluster-config/cluster_config.h"

namespace troupe {

/// Counters and gauges every backend updates (troupe_response_cache_*).
struct response_cache_metrics {
  /// Registers the families on `r` (which must outlive this object).
  explicit response_cache_metrics(metrics::registry& r);
  metrics::counter& hits;          ///< lookups that found an answer
  metrics::counter& misses;        ///< lookups that found none
  metrics::counter& errors;        ///< lookups and stores that failed or were skipped (backend down)
  metrics::counter& stored_bytes;  ///< bytes of the answers written
  metrics::gauge& bytes;           ///< memory: bytes held now; redis: bytes of the last answer stored or served
};

/// What one lookup found.
struct cache_lookup {
  enum class status { hit, miss, error };
  status result = status::miss;  ///< error = the backend failed or is down (served as a miss)
  std::string value;             ///< the stored bytes (hit)
};

/// A key-value store of encoded answers. Thread-safe; never throws on backend failures.
class response_cache {
 public:
  virtual ~response_cache() = default;
  /// The value under `key` (counts a hit, miss or error).
  virtual cache_lookup get(const std::string& key) = 0;
  /// Stores `value` under `key` for the TTL; larger than max_bytes = not stored.
  virtual void put(const std::string& key, const std::string& value) = 0;
  /// "memory" or "redis".
  virtual std::string backend() const = 0;
};

/// The backend `config` names, its metrics on `registry`; null when backend is "off".
/// Redis: connects (and sets the eviction policy) now; a Redis that is down is not an
/// error here, the cache just starts down. Throws std::invalid_argument for a bad url.
std::shared_ptr<response_cache> make_response_cache(const cache_section& config, metrics::registry& registry);

// -- keys and values (pure functions) ---------------------------------------------------

/// Whether `r`'s answer is a pure function of its input: greedy (temperature 0) or seeded.
bool cacheable(const openai_request& r);

/// "troupe:rc:v1:<sha256>" over the served model, the endpoint, the prompt token ids (after
/// the chat template), n, logprobs, and every sampling and stop parameter (the seed only
/// when given). `r` must be past fit_context (its max_tokens is final).
std::string cache_key(const std::string& model, const openai_request& r,
                      const std::vector<std::vector<int32_t>>& prompts);

/// One router event of an answer as it arrived (streams replay them in order).
struct cached_event {
  int choice = 0;       ///< which choice
  std::string text;     ///< the text it carried
  int token = -1;       ///< index into that choice's tokens; -1 = it carried none
  bool finished = false;  ///< the choice's last event
};

/// A finished answer: everything a client needs to get it again, streamed or not.
struct cached_answer {
  std::string id;                      ///< the first answer's id
  int64_t created = 0;                 ///< and its `created`
  std::vector<choice_output> choices;  ///< text, finish reason, tokens (logprobs when asked)
  std::vector<cached_event> events;    ///< arrival order
  usage_counts usage;                  ///< token counts
};

/// The bytes stored for `a` (CBOR).
std::string encode_answer(const cached_answer& a);

/// `a` back from encode_answer's bytes; nullopt when they are not one (a foreign or
/// corrupt value is a miss, never a crash).
std::optional<cached_answer> decode_answer(const std::string& bytes);

/// SHA-256 of `data`, as 64 lowercase hex digits.
std::string sha256_hex(const std::string& data);

}  // namespace troupe
