#pragma once
/// Faults a shard's worker injects when the environment asks (tests only; internal to
/// shard.cpp): a worker that hangs, and a tensor rank that samples another token.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>

namespace troupe::shard_faults {

/// The hang fault (tests): TROUPE_FAULT_HANG="<shard>:<step>:<ms>" (e.g. "s1r0:2:4000")
/// makes that shard's worker sleep <ms> in its <step>-th step, once per process, without a
/// progress beat and deaf to abort: a worker stuck for real.
struct hang_fault {
  std::string text;   // the variable's value: the fault fires once per process and value
  std::string shard;  // "s1r0"
  uint64_t step = 0;  // 1-based count of this runner's steps
  std::chrono::milliseconds sleep{0};
};

/// Reads TROUPE_FAULT_HANG; nullopt when unset. Throws naming the variable when malformed.
inline std::optional<hang_fault> read_hang_fault() {
  const char* v = std::getenv("TROUPE_FAULT_HANG");
  if (!v || !*v) return std::nullopt;
  const std::string text = v;
  const auto a = text.find(':'), b = text.find(':', a == std::string::npos ? a : a + 1);
  hang_fault f;
  try {
    if (a == std::string::npos || b == std::string::npos || a == 0) throw std::invalid_argument("fields");
    size_t used = 0;
    const std::string step = text.substr(a + 1, b - a - 1), ms = text.substr(b + 1);
    f.step = std::stoull(step, &used);
    if (used != step.size() || f.step == 0) throw std::invalid_argument("step");
    f.sleep = std::chrono::milliseconds(std::stoll(ms, &used));
    if (used != ms.size() || f.sleep.count() <= 0) throw std::invalid_argument("ms");
  } catch (const std::exception&) {
    throw std::runtime_error("TROUPE_FAULT_HANG: expected <shard>:<step>:<ms> with step >= 1 and ms > 0 "
                             "(e.g. s1r0:2:4000), got '" + text + "'");
  }
  f.text = text;
  f.shard = text.substr(0, a);
  return f;
}

/// True the first time in this process that the fault `text` fires.
inline bool claim_fault(const std::string& text) {
  static auto* mx = new std::mutex();  // never destroyed, like device_releases
  static auto* fired = new std::set<std::string>();
  std::lock_guard<std::mutex> lock(*mx);
  return fired->insert(text).second;
}

/// The token fault (tests): TROUPE_FAULT_TOKEN="<shard>:<step>" (e.g. "s0r1:3") makes that
/// shard answer its <step>-th step with its first sampled token changed, once per process:
/// a tensor rank whose tokens differ from rank 0's (overlapped steps must notice).
struct token_fault {
  std::string text;   // the variable's value
  std::string shard;  // "s0r1"
  uint64_t step = 0;  // 1-based count of this runner's steps
};

/// Reads TROUPE_FAULT_TOKEN; nullopt when unset. Throws naming the variable when malformed.
inline std::optional<token_fault> read_token_fault() {
  const char* v = std::getenv("TROUPE_FAULT_TOKEN");
  if (!v || !*v) return std::nullopt;
  const std::string text = v;
  const auto a = text.find(':');
  token_fault f;
  try {
    if (a == std::string::npos || a == 0) throw std::invalid_argument("fields");
    size_t used = 0;
    const std::string step = text.substr(a + 1);
    f.step = std::stoull(step, &used);
    if (used != step.size() || f.step == 0) throw std::invalid_argument("step");
  } catch (const std::exception&) {
    throw std::runtime_error("TROUPE_FAULT_TOKEN: expected <shard>:<step> with step >= 1 (e.g. s0r1:3), got '" +
                             text + "'");
  }
  f.text = text;
  f.shard = text.substr(0, a);
  return f;
}

}  // namespace troupe::shard_faults
