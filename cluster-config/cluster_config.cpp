// The cluster file: reading each section, loading, the defaults and YAML output.
// Validation is in cluster_config_validate.cpp, --set overrides in
// cluster_config_overrides.cpp. docs/configuration.md is the reference for the schema.
#include "cluster-config/cluster_config.h"

#include "cluster-config/config_reader.h"
#include "runtime/model/model.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace troupe {

namespace config_detail {

namespace {

void read_generation_defaults(section s, generation_defaults& g) {
  for_each_field(g, [&s](const char* key, auto& v) { s.get(key, v); });
  s.finish();
}

void read_model(section s, model_section& m) {
  s.get("path", m.path);
  s.get("dtype", m.dtype);
  s.get("load_format", m.load_format);
  read_generation_defaults(section(s.rd(), s.child("generation_defaults"), s.path("generation_defaults")),
                           m.generation_defaults);
  s.finish();
}

void read_parallel(section s, parallel_section& p) {
  s.get("tensor", p.tensor);
  s.get("pipeline", p.pipeline);
  s.get("replicas", p.replicas);
  s.get("layers_per_stage", p.layers_per_stage);
  s.get("allow_uneven_heads", p.allow_uneven_heads);
  s.finish();
}

void read_head(section s, head_section& h, bool in_list = false) {
  s.get("host", h.host);
  s.get_port("port", h.port);
  if (in_list) s.get_port("voter_port", h.voter_port, true);
  if (in_list) s.get_port("state_port", h.state_port, true);
  s.finish();
}

/// `heads:` — a list of head sections; the first also becomes `head`. Empty (`[]`, the
/// writer's form for a single head, which --set heads[0]... appends to): the single head.
/// `head:` may stay beside it only as heads[0] (the same host and port).
void read_heads(const reader& r, const YAML::Node& list, cluster_config& c, bool head_given) {
  c.heads.clear();
  if (list.IsNull() || (list.IsSequence() && list.size() == 0)) return;  // no list: the single head
  if (!list.IsSequence())
    r.fail(list, "heads", "expected a list of heads (host, port, voter_port, state_port), got " + describe(list));
  for (std::size_t i = 0; i < list.size(); ++i) {
    head_section h;
    read_head(section(r, list[i], indexed("heads", i)), h, true);
    c.heads.push_back(h);
  }
  const auto& first = c.heads.front();
  if (head_given && (c.head.host != first.host || c.head.port != first.port))
    r.fail(list, "heads",
           "head: (" + c.head.host + ":" + std::to_string(c.head.port) + ") and heads[0] (" + first.host + ":" +
               std::to_string(first.port) + ") differ: give heads: alone, or head: equal to heads[0]");
  c.head = first;
}

node_section read_node(section s) {
  node_section n;
  n.devices = {"cpu"};
  s.get("name", n.name);
  s.get("host", n.host);
  s.get_port("port", n.port, true);
  YAML::Node devices = s.child("devices");
  if (devices.IsDefined()) {
    s.rd().read(devices, s.path("devices"), n.devices);
    for (std::size_t i = 0; i < n.devices.size(); ++i)
      if (auto problem = device_problem(n.devices[i]); !problem.empty())
        s.rd().fail(devices[i], indexed(s.path("devices"), i), problem);
  }
  s.get("threads", n.threads);
  s.get("launch", n.launch);
  s.get("certificate", n.certificate);
  s.get("key", n.key);
  s.get_port("voter_port", n.voter_port, true);
  s.finish();
  return n;
}

void read_nodes(const reader& r, const YAML::Node& list, std::vector<node_section>& nodes) {
  nodes.clear();
  if (list.IsNull()) return;
  if (!list.IsSequence()) r.fail(list, "nodes", "expected a list of nodes, got " + describe(list));
  for (std::size_t i = 0; i < list.size(); ++i) nodes.push_back(read_node(section(r, list[i], indexed("nodes", i))));
}

void read_server(section s, server_section& v) {
  s.get("host", v.host);
  s.get_port("port", v.port, true);
  s.get("model_name", v.model_name);
  s.get("api_keys", v.api_keys);
  s.get("admin_keys", v.admin_keys);
  s.get("max_queue_requests", v.max_queue_requests);
  s.get("max_queue_tokens", v.max_queue_tokens);
  s.get("max_body_bytes", v.max_body_bytes);
  s.get("max_n", v.max_n);
  s.get("max_tokens_default", v.max_tokens_default);
  s.get("tls", v.tls);
  s.finish();
}

void read_scheduler(section s, scheduler_section& v) {
  s.get("max_batch_tokens", v.max_batch_tokens);
  s.get("max_prefill_tokens", v.max_prefill_tokens);
  s.get("prefill_per_decode", v.prefill_per_decode);
  s.get("max_seqs", v.max_seqs);
  s.get("kv_tokens", v.kv_tokens);
  s.get("kv_fraction", v.kv_fraction);
  s.get("block_size", v.block_size);
  s.get("max_context", v.max_context);
  s.get("prefix_caching", v.prefix_caching);
  s.get("micro_batches", v.micro_batches);
  s.get("batch_invariant", v.batch_invariant);
  s.get("graph_warmup_context", v.graph_warmup_context);
  s.get("overlap", v.overlap);
  s.finish();
}

void read_fault_tolerance(section s, fault_tolerance_section& v) {
  s.get("heartbeat_interval", v.heartbeat_interval);
  s.get("heartbeat_timeout", v.heartbeat_timeout);
  s.get("collective_timeout", v.collective_timeout);
  s.get("step_timeout", v.step_timeout);
  s.get("stall_timeout", v.stall_timeout);
  s.get("release_wait", v.release_wait);
  s.get("connection_timeout", v.connection_timeout);
  s.get("request_wait", v.request_wait);
  s.get("max_restarts", v.max_restarts);
  s.get("request_retries", v.request_retries);
  s.get("drain_timeout", v.drain_timeout);
  s.get("stage_recovery", v.stage_recovery);
  s.get("stage_recovery_timeout", v.stage_recovery_timeout);
  s.get("head_grace", v.head_grace);
  s.get("compute_nice", v.compute_nice);
  s.finish();
}

void read_autoscale(section s, autoscale_section& v) {
  s.get("enabled", v.enabled);
  s.get("min_replicas", v.min_replicas);
  s.get("max_replicas", v.max_replicas);
  s.get("interval", v.interval);
  s.get("scale_up_queue", v.scale_up_queue);
  s.get("scale_up_kv", v.scale_up_kv);
  s.get("scale_down_load", v.scale_down_load);
  s.get("scale_down_after", v.scale_down_after);
  s.get("cooldown", v.cooldown);
  s.finish();
}

void read_cache(section s, cache_section& v) {
  s.get("backend", v.backend);
  s.get("url", v.url);
  s.get("ttl", v.ttl);
  s.get("max_bytes", v.max_bytes);
  s.finish();
}

void read_router(section s, router_section& v) {
  s.get("policy", v.policy);
  s.get("balance_abs_threshold", v.balance_abs_threshold);
  s.get("balance_rel_threshold", v.balance_rel_threshold);
  s.get("index_capacity", v.index_capacity);
  s.finish();
}

void read_security(section s, security_section& v) {
  s.get("tls", v.tls);
  s.get("ca", v.ca);
  s.get("certificate", v.certificate);
  s.get("key", v.key);
  s.finish();
}

void read_leadership(section s, leadership_section& v) {
  s.get("lease_duration", v.lease_duration);
  s.get("drift_margin", v.drift_margin);
  s.get("state_dir", v.state_dir);
  s.get("single_head_state", v.single_head_state);
  s.finish();
}

}  // namespace

cluster_config read_tree(const YAML::Node& root, const reader& r) {
  cluster_config c = default_cluster_config();
  section top(r, root, "");
  read_model(section(r, top.child("model"), "model"), c.model);
  read_parallel(section(r, top.child("parallel"), "parallel"), c.parallel);
  read_head(section(r, top.child("head"), "head"), c.head);
  if (YAML::Node heads = top.child("heads"); heads.IsDefined()) read_heads(r, heads, c, top.child("head").IsDefined());
  if (YAML::Node nodes = top.child("nodes"); nodes.IsDefined()) read_nodes(r, nodes, c.nodes);
  if (YAML::Node gateways = top.child("gateways"); gateways.IsDefined()) read_gateways(r, gateways, c.gateways);
  read_server(section(r, top.child("server"), "server"), c.server);
  read_scheduler(section(r, top.child("scheduler"), "scheduler"), c.scheduler);
  read_fault_tolerance(section(r, top.child("fault_tolerance"), "fault_tolerance"), c.fault_tolerance);
  read_autoscale(section(r, top.child("autoscale"), "autoscale"), c.autoscale);
  read_cache(section(r, top.child("cache"), "cache"), c.cache);
  read_router(section(r, top.child("router"), "router"), c.router);
  read_security(section(r, top.child("security"), "security"), c.security);
  read_leadership(section(r, top.child("leadership"), "leadership"), c.leadership);
  top.finish();
  return c;
}

}  // namespace config_detail

namespace {

using config_detail::read_tree;
using config_detail::reader;
using config_detail::yaml_load_error;

std::string message_of(const std::string& source, const std::string& path, const std::string& what) {
  return path.empty() ? source + ": " + what : source + ": " + path + ": " + what;
}

void emit_string_list(YAML::Emitter& out, const std::vector<std::string>& v) {
  out << YAML::Flow << YAML::BeginSeq;
  for (const auto& s : v) out << YAML::DoubleQuoted << s;
  out << YAML::EndSeq;
}

/// The fields of `g` that are set, as a block map ({} when none).
void emit_generation_defaults(YAML::Emitter& out, const generation_defaults& g) {
  out << YAML::BeginMap;
  auto field = [&out](const char* key, const auto& v) {
    if (v) out << YAML::Key << key << YAML::Value << *v;
  };
  for_each_field(g, field);
  out << YAML::EndMap;
}

/// "250ms", "2s" or "5m" for a positive duration; a plain integer otherwise (reads back the same).
std::string ms(std::chrono::milliseconds v) {
  const int64_t n = v.count();
  if (n <= 0) return std::to_string(n);
  if (n % 60000 == 0) return std::to_string(n / 60000) + "m";
  if (n % 1000 == 0) return std::to_string(n / 1000) + "s";
  return std::to_string(n) + "ms";
}

}  // namespace

config_error::config_error(const std::string& source, const std::string& path, const std::string& what)
    : std::runtime_error(message_of(source, path, what)), path(path) {}

cluster_config parse_cluster_config(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw config_error(source, "", yaml_load_error(e));
  }
  cluster_config c;
  try {
    c = read_tree(root, reader(source, true));
  } catch (const YAML::Exception& e) {
    throw config_error(source, "", yaml_load_error(e));
  }
  c.source = source;
  validate(c);
  return c;
}

cluster_config load_cluster_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw config_error(path, "", std::string("cannot open the cluster file: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw config_error(path, "", "cannot read the cluster file");
  return parse_cluster_config(text.str(), path);
}

cluster_config default_cluster_config() {
  cluster_config c;
  node_section local;
  local.name = "local";
  local.host = "127.0.0.1";
  local.devices = {"cpu"};
  c.nodes.push_back(local);
  return c;
}

std::vector<head_section> head_list(const cluster_config& c) {
  return c.heads.empty() ? std::vector<head_section>{c.head} : c.heads;
}

std::vector<std::string> election_voters(const cluster_config& c) {
  std::vector<std::string> voters;
  if (c.heads.size() < 2) return voters;
  auto address = [](const std::string& host, uint16_t port) {
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  };
  for (const auto& h : c.heads) voters.push_back(address(h.host, h.voter_port));
  for (const auto& n : c.nodes)
    if (n.voter_port != 0) voters.push_back(address(n.host, n.voter_port));
  return voters;
}

std::string to_yaml(const cluster_config& c) {
  YAML::Emitter out;
  const auto& p = c.parallel;
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << YAML::DoubleQuoted << c.model.path << YAML::Key << "dtype"
      << YAML::Value << c.model.dtype << YAML::Key << "load_format" << YAML::Value << c.model.load_format
      << YAML::Key << "generation_defaults" << YAML::Value;
  emit_generation_defaults(out, c.model.generation_defaults);
  out << YAML::EndMap;
  out << YAML::Key << "parallel" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "tensor" << YAML::Value << p.tensor << YAML::Key << "pipeline" << YAML::Value << p.pipeline
      << YAML::Key << "replicas" << YAML::Value << p.replicas << YAML::Key << "layers_per_stage" << YAML::Value
      << YAML::Flow << p.layers_per_stage << YAML::Key << "allow_uneven_heads" << YAML::Value
      << p.allow_uneven_heads << YAML::EndMap;
  if (c.heads.empty()) {
    out << YAML::Key << "head" << YAML::Value << YAML::BeginMap << YAML::Key << "host" << YAML::Value
        << YAML::DoubleQuoted << c.head.host << YAML::Key << "port" << YAML::Value << c.head.port << YAML::EndMap;
    out << YAML::Key << "heads" << YAML::Value << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
  } else {
    out << YAML::Key << "heads" << YAML::Value << YAML::BeginSeq;
    for (const auto& h : c.heads)
      out << YAML::BeginMap << YAML::Key << "host" << YAML::Value << YAML::DoubleQuoted << h.host << YAML::Key
          << "port" << YAML::Value << h.port << YAML::Key << "voter_port" << YAML::Value << h.voter_port
          << YAML::Key << "state_port" << YAML::Value << h.state_port << YAML::EndMap;
    out << YAML::EndSeq;
  }
  out << YAML::Key << "nodes" << YAML::Value << YAML::BeginSeq;
  for (const auto& n : c.nodes) {
    out << YAML::BeginMap << YAML::Key << "name" << YAML::Value << YAML::DoubleQuoted << n.name << YAML::Key
        << "host" << YAML::Value << YAML::DoubleQuoted << n.host << YAML::Key << "port" << YAML::Value << n.port
        << YAML::Key << "devices" << YAML::Value;
    emit_string_list(out, n.devices);
    out << YAML::Key << "threads" << YAML::Value << n.threads << YAML::Key << "launch" << YAML::Value << n.launch
        << YAML::Key << "certificate" << YAML::Value
        << YAML::DoubleQuoted << n.certificate << YAML::Key << "key" << YAML::Value << YAML::DoubleQuoted << n.key
        << YAML::Key << "voter_port" << YAML::Value << n.voter_port << YAML::EndMap;
  }
  out << YAML::EndSeq;
  config_detail::emit_gateways(out, c.gateways);
  const auto& s = c.server;
  out << YAML::Key << "server" << YAML::Value << YAML::BeginMap << YAML::Key << "host" << YAML::Value
      << YAML::DoubleQuoted << s.host << YAML::Key << "port" << YAML::Value << s.port << YAML::Key << "model_name"
      << YAML::Value << YAML::DoubleQuoted << s.model_name << YAML::Key << "api_keys"
      << YAML::Value;
  emit_string_list(out, s.api_keys);
  out << YAML::Key << "admin_keys" << YAML::Value;
  emit_string_list(out, s.admin_keys);
  out << YAML::Key << "max_queue_requests" << YAML::Value << s.max_queue_requests << YAML::Key
      << "max_queue_tokens" << YAML::Value << s.max_queue_tokens << YAML::Key << "max_body_bytes" << YAML::Value
      << s.max_body_bytes << YAML::Key << "max_n" << YAML::Value << s.max_n << YAML::Key << "max_tokens_default"
      << YAML::Value << s.max_tokens_default << YAML::Key << "tls" << YAML::Value << s.tls << YAML::EndMap;
  const auto& q = c.scheduler;
  out << YAML::Key << "scheduler" << YAML::Value << YAML::BeginMap << YAML::Key << "max_batch_tokens"
      << YAML::Value << q.max_batch_tokens << YAML::Key << "max_prefill_tokens" << YAML::Value
      << q.max_prefill_tokens << YAML::Key << "prefill_per_decode" << YAML::Value << q.prefill_per_decode
      << YAML::Key << "max_seqs" << YAML::Value << q.max_seqs << YAML::Key
      << "kv_tokens" << YAML::Value << q.kv_tokens << YAML::Key << "kv_fraction" << YAML::Value << q.kv_fraction
      << YAML::Key << "block_size" << YAML::Value << q.block_size
      << YAML::Key << "max_context" << YAML::Value << q.max_context << YAML::Key << "prefix_caching"
      << YAML::Value << q.prefix_caching << YAML::Key << "micro_batches" << YAML::Value << q.micro_batches
      << YAML::Key << "batch_invariant" << YAML::Value << q.batch_invariant << YAML::Key << "graph_warmup_context"
      << YAML::Value << q.graph_warmup_context << YAML::Key << "overlap" << YAML::Value << q.overlap << YAML::EndMap;
  const auto& f = c.fault_tolerance;
  out << YAML::Key << "fault_tolerance" << YAML::Value << YAML::BeginMap << YAML::Key << "heartbeat_interval"
      << YAML::Value << ms(f.heartbeat_interval) << YAML::Key << "heartbeat_timeout" << YAML::Value
      << ms(f.heartbeat_timeout) << YAML::Key << "collective_timeout" << YAML::Value << ms(f.collective_timeout)
      << YAML::Key << "step_timeout" << YAML::Value << ms(f.step_timeout)
      << YAML::Key << "stall_timeout" << YAML::Value << ms(f.stall_timeout) << YAML::Key << "release_wait"
      << YAML::Value << ms(f.release_wait) << YAML::Key << "connection_timeout" << YAML::Value
      << ms(f.connection_timeout) << YAML::Key << "request_wait" << YAML::Value << ms(f.request_wait) << YAML::Key << "max_restarts"
      << YAML::Value << f.max_restarts << YAML::Key << "request_retries" << YAML::Value << f.request_retries
      << YAML::Key << "drain_timeout" << YAML::Value << ms(f.drain_timeout) << YAML::Key << "stage_recovery"
      << YAML::Value << f.stage_recovery << YAML::Key << "stage_recovery_timeout" << YAML::Value
      << ms(f.stage_recovery_timeout) << YAML::Key << "head_grace" << YAML::Value << ms(f.head_grace)
      << YAML::Key << "compute_nice" << YAML::Value << f.compute_nice << YAML::EndMap;
  const auto& a = c.autoscale;
  out << YAML::Key << "autoscale" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value
      << a.enabled << YAML::Key << "min_replicas" << YAML::Value << a.min_replicas << YAML::Key << "max_replicas"
      << YAML::Value << a.max_replicas << YAML::Key << "interval" << YAML::Value << ms(a.interval) << YAML::Key
      << "scale_up_queue" << YAML::Value << a.scale_up_queue << YAML::Key << "scale_up_kv" << YAML::Value
      << a.scale_up_kv << YAML::Key << "scale_down_load" << YAML::Value << a.scale_down_load << YAML::Key
      << "scale_down_after" << YAML::Value << ms(a.scale_down_after) << YAML::Key << "cooldown" << YAML::Value
      << ms(a.cooldown) << YAML::EndMap;
  const auto& cc = c.cache;
  out << YAML::Key << "cache" << YAML::Value << YAML::BeginMap << YAML::Key << "backend" << YAML::Value
      << cc.backend << YAML::Key << "url" << YAML::Value << YAML::DoubleQuoted << cc.url << YAML::Key << "ttl"
      << YAML::Value << ms(cc.ttl) << YAML::Key << "max_bytes" << YAML::Value << cc.max_bytes << YAML::EndMap;
  const auto& ro = c.router;
  out << YAML::Key << "router" << YAML::Value << YAML::BeginMap << YAML::Key << "policy" << YAML::Value
      << ro.policy << YAML::Key << "balance_abs_threshold" << YAML::Value << ro.balance_abs_threshold
      << YAML::Key << "balance_rel_threshold" << YAML::Value << ro.balance_rel_threshold << YAML::Key
      << "index_capacity" << YAML::Value << ro.index_capacity << YAML::EndMap;
  const auto& se = c.security;
  out << YAML::Key << "security" << YAML::Value << YAML::BeginMap << YAML::Key << "tls" << YAML::Value << se.tls
      << YAML::Key << "ca" << YAML::Value << YAML::DoubleQuoted << se.ca << YAML::Key << "certificate"
      << YAML::Value << YAML::DoubleQuoted << se.certificate << YAML::Key << "key" << YAML::Value
      << YAML::DoubleQuoted << se.key << YAML::EndMap;
  const auto& le = c.leadership;
  out << YAML::Key << "leadership" << YAML::Value << YAML::BeginMap << YAML::Key << "lease_duration" << YAML::Value
      << ms(le.lease_duration) << YAML::Key << "drift_margin" << YAML::Value << ms(le.drift_margin) << YAML::Key
      << "state_dir" << YAML::Value << YAML::DoubleQuoted << le.state_dir << YAML::Key << "single_head_state"
      << YAML::Value << le.single_head_state << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

bool is_loopback_host(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::string served_model_name(const cluster_config& c) {
  if (!c.server.model_name.empty()) return c.server.model_name;
  std::string path = c.model.path;
  try {
    path = resolve_model_path(path);
  } catch (const std::exception&) {
    // The default model is not fetched: name it by its key ("default").
  }
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const auto slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string ext = ".gguf";
  if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0)
    name.resize(name.size() - ext.size());
  return name;
}

}  // namespace troupe
