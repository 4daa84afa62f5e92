// Validation of the cluster file: values and their consistency (ports, unique names,
// shards against devices, ...). Every error names the key path and the reason.
#include "cluster-config/config_reader.h"

#include <algorithm>
#include <map>
#include <set>

namespace troupe {

namespace {

using config_detail::device_problem;
using config_detail::indexed;
using config_detail::join;

// ---- validation -------------------------------------------------------------------

/// Throws config_error for the config's source.
struct checker {
  std::string source;
  void require(bool ok, const std::string& path, const std::string& what) const {
    if (!ok) throw config_error(source, path, what);
  }
  void at_least(int64_t v, int64_t lo, const std::string& path) const {
    require(v >= lo, path, "must be >= " + std::to_string(lo) + ", got " + std::to_string(v));
  }
  void positive_ms(std::chrono::milliseconds v, const std::string& path) const {
    require(v.count() > 0, path, "must be a positive duration, got " + std::to_string(v.count()) + "ms");
  }
};

/// "localhost" and "127.0.0.1" are the same host for port clashes.
std::string host_key(const std::string& host) { return host == "localhost" ? "127.0.0.1" : host; }

void check_parallel(const checker& k, const parallel_section& p) {
  k.at_least(p.tensor, 1, "parallel.tensor");
  k.at_least(p.pipeline, 1, "parallel.pipeline");
  k.at_least(p.replicas, 1, "parallel.replicas");
  if (p.layers_per_stage.empty()) return;
  k.require(p.layers_per_stage.size() == static_cast<std::size_t>(p.pipeline), "parallel.layers_per_stage",
            "needs one entry per pipeline stage (" + std::to_string(p.pipeline) + "), got " +
                std::to_string(p.layers_per_stage.size()));
  for (std::size_t i = 0; i < p.layers_per_stage.size(); ++i)
    k.at_least(p.layers_per_stage[i], 1, indexed("parallel.layers_per_stage", i));
}

void check_node_devices(const checker& k, const node_section& n, const std::string& path) {
  k.require(!n.devices.empty(), join(path, "devices"), "a node needs at least one device");
  std::set<std::string> seen;
  for (std::size_t d = 0; d < n.devices.size(); ++d) {
    const std::string dp = indexed(join(path, "devices"), d);
    const std::string problem = device_problem(n.devices[d]);
    k.require(problem.empty(), dp, problem);
    k.require(n.devices[d] == "cpu" || seen.insert(n.devices[d]).second, dp,
              n.devices[d] + " is listed twice on this node");
  }
}

void check_nodes(const checker& k, const cluster_config& c) {
  k.require(!c.nodes.empty(), "nodes", "the cluster needs at least one node");
  std::map<std::string, std::size_t> names;
  std::map<std::pair<std::string, uint16_t>, std::size_t> endpoints;
  const auto head = std::make_pair(host_key(c.head.host), c.head.port);
  const auto server = std::make_pair(host_key(c.server.host), c.server.port);
  std::size_t devices = 0;
  for (std::size_t i = 0; i < c.nodes.size(); ++i) {
    const node_section& n = c.nodes[i];
    const std::string path = indexed("nodes", i);
    k.require(!n.name.empty(), join(path, "name"), "a node needs a non-empty name");
    auto [it, fresh] = names.emplace(n.name, i);
    k.require(fresh, join(path, "name"),
              "\"" + n.name + "\" is already the name of " + indexed("nodes", it->second));
    k.require(!n.host.empty(), join(path, "host"), "a node needs a host");
    k.at_least(n.threads, 0, join(path, "threads"));
    check_node_devices(k, n, path);
    devices += n.devices.size();
    if (n.port == 0) continue;
    const auto ep = std::make_pair(host_key(n.host), n.port);
    const std::string where = n.host + ":" + std::to_string(n.port);
    k.require(ep != head, join(path, "port"), where + " is the head's port (head.port)");
    k.require(ep != server, join(path, "port"), where + " is the HTTP server's port (server.port)");
    auto [e, unique] = endpoints.emplace(ep, i);
    k.require(unique, join(path, "port"), where + " is already used by " + indexed("nodes", e->second));
  }
  const auto& p = c.parallel;
  const int64_t shards = int64_t{p.tensor} * p.pipeline * p.replicas;
  k.require(shards <= static_cast<int64_t>(devices), "nodes",
            "the cluster needs " + std::to_string(shards) + " shards (tensor " + std::to_string(p.tensor) +
                " x pipeline " + std::to_string(p.pipeline) + " x replicas " + std::to_string(p.replicas) +
                ") but its nodes list " + std::to_string(devices) + " device" + (devices == 1 ? "" : "s"));
}

void check_server(const checker& k, const cluster_config& c) {
  const server_section& s = c.server;
  k.require(!c.head.host.empty(), "head.host", "must not be empty");
  k.at_least(c.head.port, 1, "head.port");
  k.require(!s.host.empty(), "server.host", "must not be empty");
  k.require(!(host_key(s.host) == host_key(c.head.host) && s.port == c.head.port), "server.port",
            std::to_string(s.port) + " is also the head's port (head.port)");
  for (std::size_t i = 0; i < s.api_keys.size(); ++i)
    k.require(!s.api_keys[i].empty(), indexed("server.api_keys", i), "an API key must not be empty");
  for (std::size_t i = 0; i < s.admin_keys.size(); ++i) {
    k.require(!s.admin_keys[i].empty(), indexed("server.admin_keys", i), "an admin key must not be empty");
    k.require(std::find(s.api_keys.begin(), s.api_keys.end(), s.admin_keys[i]) == s.api_keys.end(),
              indexed("server.admin_keys", i), "an admin key must differ from every key in server.api_keys");
  }
  k.at_least(s.max_queue_requests, 1, "server.max_queue_requests");
  k.at_least(s.max_queue_tokens, 1, "server.max_queue_tokens");
  k.at_least(s.max_body_bytes, 1, "server.max_body_bytes");
  k.at_least(s.max_n, 1, "server.max_n");
  k.at_least(s.max_tokens_default, 1, "server.max_tokens_default");
}

void check_scheduler(const checker& k, const scheduler_section& s) {
  k.at_least(s.max_batch_tokens, 1, "scheduler.max_batch_tokens");
  k.at_least(s.max_prefill_tokens, 0, "scheduler.max_prefill_tokens");
  k.at_least(s.prefill_per_decode, 0, "scheduler.prefill_per_decode");
  k.at_least(s.graph_warmup_context, 0, "scheduler.graph_warmup_context");
  k.at_least(s.max_seqs, 1, "scheduler.max_seqs");
  k.at_least(s.block_size, 1, "scheduler.block_size");
  k.require((s.block_size & (s.block_size - 1)) == 0 && s.block_size <= 256, "scheduler.block_size",
            "must be a power of two <= 256, got " + std::to_string(s.block_size));
  k.at_least(s.kv_tokens, 1, "scheduler.kv_tokens");
  k.require(s.kv_tokens >= s.block_size, "scheduler.kv_tokens",
            "must hold at least one block (block_size " + std::to_string(s.block_size) + "), got " +
                std::to_string(s.kv_tokens));
  k.require(s.kv_fraction > 0 && s.kv_fraction <= 1, "scheduler.kv_fraction",
            "must be in (0, 1], got " + std::to_string(s.kv_fraction));
  k.at_least(s.max_context, 0, "scheduler.max_context");
  k.at_least(s.micro_batches, 1, "scheduler.micro_batches");
}

void check_fault_tolerance(const checker& k, const fault_tolerance_section& f) {
  k.positive_ms(f.heartbeat_interval, "fault_tolerance.heartbeat_interval");
  k.positive_ms(f.heartbeat_timeout, "fault_tolerance.heartbeat_timeout");
  k.positive_ms(f.collective_timeout, "fault_tolerance.collective_timeout");
  k.require(f.step_timeout >= f.collective_timeout, "fault_tolerance.step_timeout",
            "must be at least collective_timeout (" + std::to_string(f.step_timeout.count()) + "ms < " +
                std::to_string(f.collective_timeout.count()) + "ms)");
  k.positive_ms(f.request_wait, "fault_tolerance.request_wait");
  k.require(f.stall_timeout.count() == 0 || (f.stall_timeout.count() >= 100 && f.stall_timeout < f.step_timeout),
            "fault_tolerance.stall_timeout",
            "must be 0 (off) or from 100ms up to below step_timeout (" + std::to_string(f.step_timeout.count()) +
                "ms), got " + std::to_string(f.stall_timeout.count()) + "ms");
  k.positive_ms(f.release_wait, "fault_tolerance.release_wait");
  k.require(f.connection_timeout > f.heartbeat_timeout, "fault_tolerance.connection_timeout",
            "must be longer than heartbeat_timeout (" + std::to_string(f.connection_timeout.count()) + "ms <= " +
                std::to_string(f.heartbeat_timeout.count()) + "ms)");
  k.require(f.heartbeat_interval < f.heartbeat_timeout, "fault_tolerance.heartbeat_interval",
            "must be shorter than heartbeat_timeout (" + std::to_string(f.heartbeat_interval.count()) +
                "ms >= " + std::to_string(f.heartbeat_timeout.count()) + "ms)");
  k.at_least(f.max_restarts, 0, "fault_tolerance.max_restarts");
  k.at_least(f.request_retries, 0, "fault_tolerance.request_retries");
  k.positive_ms(f.drain_timeout, "fault_tolerance.drain_timeout");
  k.positive_ms(f.stage_recovery_timeout, "fault_tolerance.stage_recovery_timeout");
  k.require(f.head_grace.count() >= 0, "fault_tolerance.head_grace",
            "must be 0 (stop a lost head's shards at once) or positive, got " + std::to_string(f.head_grace.count()) +
                "ms");
  k.require(f.compute_nice >= 0 && f.compute_nice <= 19, "fault_tolerance.compute_nice",
            "must be a nice value from 0 (as started) to 19 (lowest priority), got " +
                std::to_string(f.compute_nice));
}

void check_autoscale(const checker& k, const autoscale_section& a, const parallel_section& p) {
  const std::string replicas = "parallel.replicas (" + std::to_string(p.replicas) + ")";
  k.at_least(a.min_replicas, 1, "autoscale.min_replicas");
  k.require(a.min_replicas <= p.replicas, "autoscale.min_replicas",
            "must be at most " + replicas + ", got " + std::to_string(a.min_replicas));
  k.at_least(a.max_replicas, 0, "autoscale.max_replicas");
  k.require(a.max_replicas <= p.replicas, "autoscale.max_replicas",
            "must be at most " + replicas + ": the devices in the file bound it, got " +
                std::to_string(a.max_replicas));
  k.require(a.max_replicas == 0 || a.max_replicas >= a.min_replicas, "autoscale.max_replicas",
            "must be 0 (parallel.replicas) or at least min_replicas (" + std::to_string(a.min_replicas) +
                "), got " + std::to_string(a.max_replicas));
  k.positive_ms(a.interval, "autoscale.interval");
  k.require(a.scale_up_queue > 0, "autoscale.scale_up_queue",
            "must be > 0, got " + std::to_string(a.scale_up_queue));
  k.require(a.scale_up_kv > 0 && a.scale_up_kv <= 1, "autoscale.scale_up_kv",
            "must be in (0, 1], got " + std::to_string(a.scale_up_kv));
  k.require(a.scale_down_load >= 0 && a.scale_down_load < a.scale_up_queue, "autoscale.scale_down_load",
            "must be >= 0 and below scale_up_queue (" + std::to_string(a.scale_up_queue) + "), got " +
                std::to_string(a.scale_down_load));
  k.require(a.scale_down_after.count() >= 0, "autoscale.scale_down_after",
            "must not be negative, got " + std::to_string(a.scale_down_after.count()) + "ms");
  k.require(a.cooldown.count() >= 0, "autoscale.cooldown",
            "must not be negative, got " + std::to_string(a.cooldown.count()) + "ms");
}

int parse_url_number(const std::string& text, const std::string& what, const std::string& url, int lo, int hi) {
  size_t used = 0;
  int v = 0;
  try {
    v = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || v < lo || v > hi)
    throw std::invalid_argument("bad " + what + " \"" + text + "\" in \"" + url + "\"");
  return v;
}

void check_cache(const checker& k, const cache_section& c) {
  k.require(c.backend == "off" || c.backend == "memory" || c.backend == "redis", "cache.backend",
            "must be off, memory or redis, got \"" + c.backend + "\"");
  k.positive_ms(c.ttl, "cache.ttl");
  k.at_least(c.max_bytes, 0, "cache.max_bytes");
  k.require(c.backend != "memory" || c.max_bytes > 0, "cache.max_bytes",
            "must be > 0 with the memory backend (it bounds the LRU), got 0");
  if (c.backend != "redis") return;
  try {
    parse_redis_url(c.url);
  } catch (const std::invalid_argument& e) {
    k.require(false, "cache.url", e.what());
  }
}

void check_router(const checker& k, const router_section& r) {
  k.require(r.policy == "cache_aware" || r.policy == "least_loaded", "router.policy",
            "must be cache_aware or least_loaded, got \"" + r.policy + "\"");
  k.at_least(r.balance_abs_threshold, 0, "router.balance_abs_threshold");
  k.require(r.balance_rel_threshold >= 1.0, "router.balance_rel_threshold",
            "must be >= 1 (a multiple of the least loaded replica's requests), got " +
                std::to_string(r.balance_rel_threshold));
  k.at_least(r.index_capacity, 1, "router.index_capacity");
}

/// security: tls is off or required; required needs the CA and the section's certificate
/// and key (the head's, and every node's that has no pair of its own).
void check_security(const checker& k, const cluster_config& c) {
  const auto& s = c.security;
  k.require(s.tls == "off" || s.tls == "required", "security.tls",
            "must be off or required, got \"" + s.tls + "\"");
  k.require(s.certificate.empty() == s.key.empty(), s.key.empty() ? "security.key" : "security.certificate",
            "security.certificate and security.key go together (set both or neither)");
  for (std::size_t i = 0; i < c.nodes.size(); ++i) {
    const auto& n = c.nodes[i];
    const auto path = indexed("nodes", i);
    k.require(n.certificate.empty() == n.key.empty(), join(path, n.key.empty() ? "key" : "certificate"),
              "a node's certificate and key go together (set both or neither)");
  }
  if (s.tls != "required") return;
  k.require(!s.ca.empty(), "security.ca",
            "security.tls is required: name the cluster CA's certificate (tools/make_certs.sh makes one)");
  k.require(!s.certificate.empty(), "security.certificate",
            "security.tls is required: name the head's certificate and key (tools/make_certs.sh makes them)");
}

/// server.tls: cluster, server or off; server needs the head's certificate and key in security.*.
void check_http_tls(const checker& k, const cluster_config& c) {
  const auto& t = c.server.tls;
  k.require(t == "cluster" || t == "server" || t == "off", "server.tls",
            "must be cluster (as security.tls), server (HTTPS, no client certificate) or off (plain HTTP), got \"" +
                t + "\"");
  if (t != "server") return;
  k.require(!c.security.certificate.empty(), "security.certificate",
            "server.tls is server (HTTPS): name the head's certificate and key (tools/make_certs.sh makes them)");
}

/// leadership: a positive lease, a drift margin below a third of it (the leader's view of a
/// grant, lease_duration - drift_margin, must outlast one renewal round and its timeout),
/// and a state directory.
void check_leadership(const checker& k, const leadership_section& l) {
  k.require(l.lease_duration.count() >= 30, "leadership.lease_duration",
            "must be at least 30ms (the leader renews every lease_duration / 3), got " +
                std::to_string(l.lease_duration.count()) + "ms");
  k.require(l.drift_margin.count() >= 0, "leadership.drift_margin",
            "must not be negative, got " + std::to_string(l.drift_margin.count()) + "ms");
  k.require(l.drift_margin * 3 < l.lease_duration, "leadership.drift_margin",
            "must be below lease_duration / 3 (" + std::to_string(l.lease_duration.count()) +
                "ms / 3): the leader's view of a grant must outlast a renewal round, got " +
                std::to_string(l.drift_margin.count()) + "ms");
  k.require(!l.state_dir.empty(), "leadership.state_dir",
            "must name a directory (default troupe-state, under the working directory)");
  k.require(l.state_dir.find('\0') == std::string::npos, "leadership.state_dir", "must not contain a NUL byte");
}

}  // namespace

redis_address parse_redis_url(const std::string& url) {
  const std::string scheme = "redis://";
  if (url.rfind(scheme, 0) != 0)
    throw std::invalid_argument("\"" + url + "\" is not a redis:// url (redis://[:password@]host[:port][/db])");
  std::string rest = url.substr(scheme.size());
  redis_address a;
  if (const auto at = rest.rfind('@'); at != std::string::npos) {
    auto auth = rest.substr(0, at);
    a.password = auth.substr(auth.find(':') == std::string::npos ? 0 : auth.find(':') + 1);
    rest = rest.substr(at + 1);
  }
  if (const auto slash = rest.find('/'); slash != std::string::npos) {
    if (slash + 1 < rest.size()) a.db = parse_url_number(rest.substr(slash + 1), "database", url, 0, 1 << 20);
    rest = rest.substr(0, slash);
  }
  if (const auto colon = rest.rfind(':'); colon != std::string::npos) {
    a.port = parse_url_number(rest.substr(colon + 1), "port", url, 1, 65535);
    rest = rest.substr(0, colon);
  }
  if (rest.empty()) throw std::invalid_argument("no host in \"" + url + "\"");
  a.host = rest == "localhost" ? "127.0.0.1" : rest;
  return a;
}

/// heads: each a host, a port and (with more than one head) a voter_port; no port twice on a
/// host among the heads, the nodes and the HTTP server; at least three voters, so that a
/// majority survives the loss of any one head. nodes[].voter_port only with several heads.
void check_heads(const checker& k, const cluster_config& c) {
  const bool several = c.heads.size() > 1;
  std::map<std::pair<std::string, uint16_t>, std::string> used;
  for (std::size_t i = 0; i < c.nodes.size(); ++i) {
    const auto& n = c.nodes[i];
    if (n.port != 0) used[{host_key(n.host), n.port}] = join(indexed("nodes", i), "port");
  }
  used[{host_key(c.server.host), c.server.port}] = "server.port";
  auto claim = [&](const std::string& host, uint16_t port, const std::string& path) {
    const auto [it, fresh] = used.emplace(std::make_pair(host_key(host), port), path);
    k.require(fresh || it->second == path, path,
              host + ":" + std::to_string(port) + " is already used by " + it->second);
  };
  std::size_t voters = c.heads.size();
  for (std::size_t i = 0; i < c.nodes.size(); ++i) {
    const auto& n = c.nodes[i];
    if (n.voter_port == 0) continue;
    const std::string path = join(indexed("nodes", i), "voter_port");
    k.require(several, path, "a node votes only in the election of several heads (heads:), and this file has one head");
    claim(n.host, n.voter_port, path);
    ++voters;
  }
  for (std::size_t i = 0; i < c.heads.size(); ++i) {
    const auto& h = c.heads[i];
    const std::string path = indexed("heads", i);
    k.require(!h.host.empty(), join(path, "host"), "must not be empty");
    k.at_least(h.port, 1, join(path, "port"));
    claim(h.host, h.port, join(path, "port"));
    k.require(several || h.state_port == 0, join(path, "state_port"),
              "a head takes the leader's state only among several heads (heads:), and this file has one head");
    if (!several) continue;
    k.require(h.voter_port != 0, join(path, "voter_port"),
              "is required with more than one head: the port of this head's lease voter");
    claim(h.host, h.voter_port, join(path, "voter_port"));
    if (h.state_port != 0) claim(h.host, h.state_port, join(path, "state_port"));
  }
  if (several)
    k.require(voters >= 3, "heads",
              std::to_string(c.heads.size()) + " heads and " + std::to_string(voters - c.heads.size()) +
                  " voting node(s) make " + std::to_string(voters) +
                  " voters: a majority needs all of them, so losing one head would stop the cluster; give a node a "
                  "voter_port (nodes[].voter_port) or add a head");
}

void validate(const cluster_config& c) {
  const checker k{c.source.empty() ? "<config>" : c.source};
  k.require(!c.model.path.empty(), "model.path", "must not be empty (use \"default\" for the default model)");
  k.require(c.model.dtype == "bf16" || c.model.dtype == "f16", "model.dtype",
            "must be bf16 or f16 (the GPU compute type), got \"" + c.model.dtype + "\"");
  k.require(c.model.load_format == "auto" || c.model.load_format == "random", "model.load_format",
            "must be auto or random, got \"" + c.model.load_format + "\"");
  const auto [field, why] = first_problem(c.model.generation_defaults);
  k.require(field.empty(), "model.generation_defaults." + field, why);
  check_parallel(k, c.parallel);
  check_server(k, c);
  check_nodes(k, c);
  config_detail::check_gateways(k.source, c);
  check_heads(k, c);
  check_scheduler(k, c.scheduler);
  k.require(!c.scheduler.overlap || c.parallel.pipeline == 1, "scheduler.overlap",
            "needs a replica of one stage (parallel.pipeline 1), got pipeline " +
                std::to_string(c.parallel.pipeline) +
                ": the next step's tokens are sampled by the last stage and needed by the first");
  check_fault_tolerance(k, c.fault_tolerance);
  check_autoscale(k, c.autoscale, c.parallel);
  check_cache(k, c.cache);
  check_router(k, c.router);
  check_security(k, c);
  check_http_tls(k, c);
  check_leadership(k, c.leadership);
}

}  // namespace troupe
