#pragma once
/// Who may call the HTTP API: bearer keys compared in constant time, an admin key apart from
/// the inference keys for /admin/*, and the warning for an API open to the network.
#include <string>
#include <string_view>
#include <vector>

#include "cluster-config/cluster_config.h"

namespace troupe::http {

/// Whether `presented` equals one of `keys`, in time that depends only on the keys' and the
/// presented key's lengths (every key is compared over every byte; no early exit).
bool key_matches(const std::vector<std::string>& keys, std::string_view presented);

/// The key of an "Authorization: Bearer <key>" header value (scheme case-insensitive), or ""
/// when the header is not a bearer token.
std::string bearer_key(std::string_view authorization);

/// The verdict on a request.
enum class access { allowed, missing_key, wrong_key, not_loopback };

/// Inference endpoints: any key of server.api_keys (all requests when there are none).
access inference_access(const server_section& s, std::string_view authorization);

/// /admin/*: with server.admin_keys, one of them (never an inference key), from anywhere;
/// without, only clients on the loopback interface, and the inference keys' rule on top.
access admin_access(const server_section& s, std::string_view authorization, bool client_is_loopback);

/// The warning to log at start, or "" when none: the API listens on an address other hosts
/// can reach (not loopback) and has no API key.
std::string exposure_warning(const server_section& s);

}  // namespace troupe::http
