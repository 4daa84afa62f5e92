#pragma once
/// A lease voter's answer (actors/leadership/lease.h), on its own so that the message
/// types (actors/messages.h) do not depend on the lease's logic.
#include <cstdint>
#include <string>

namespace troupe::leadership {

/// Why a voter answered as it did.
enum class lease_verdict : uint8_t {
  granted,     ///< the lease of `term` is the candidate's until the voter's expiry
  stale_term,  ///< the voter has seen a higher term (`term` in the reply)
  term_taken,  ///< the voter already granted this term to another candidate (`holder`)
  held,        ///< the lease of a lower term is still held by `holder` for `remaining`
  restarting,  ///< the voter started less than one lease_duration ago (`remaining` left)
  vacant,      ///< (a status answer) nobody holds a lease: a higher term would be granted
};

/// "granted", "stale_term", ...
const char* to_string(lease_verdict v);

/// A voter's answer to one request.
struct lease_reply {
  lease_verdict verdict = lease_verdict::restarting;
  uint64_t term = 0;       ///< the highest term the voter has seen (after this request)
  std::string holder;      ///< who holds that term's lease ("" = nobody)
  /// The holder's lease time left (0 when it expired); restarting: the quiet time left.
  int64_t remaining_ms = 0;
  std::string reason;      ///< one line for logs ("" when granted)
};

}  // namespace troupe::leadership
