// The cluster file: defaults, the example files, key paths in every error, overrides.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "cluster-config/cluster_config.h"
#include "config_test_util.h"
#include "test_support.h"

using namespace troupe;
using Catch::Contains;

namespace {

/// A valid two-node cluster; the tests append or replace a line to break one thing.
const std::string two_nodes = R"(
parallel:
  tensor: 2
nodes:
  - name: a
    port: 7101
    devices: [cpu]
  - name: b
    port: 7102
    devices: [cpu]
)";

/// Applies overrides to `c` expecting a config_error; returns it.
config_error override_error(cluster_config c, const std::vector<std::string>& overrides) {
  try {
    apply_overrides(c, overrides);
  } catch (const config_error& e) {
    return e;
  }
  FAIL("no config_error for the overrides");
  throw std::logic_error("unreachable");
}

std::string example(const std::string& name) {
  return (test::source_dir() / "cluster-config" / "examples" / name).string();
}

}  // namespace

TEST_CASE("the default config is one local CPU node with the documented defaults", "[config]") {
  cluster_config c = default_cluster_config();
  REQUIRE(c.nodes.size() == 1);
  CHECK(c.nodes[0].name == "local");
  CHECK(c.nodes[0].host == "127.0.0.1");
  CHECK(c.nodes[0].devices == std::vector<std::string>{"cpu"});
  CHECK(c.model.path == "default");
  CHECK(c.parallel.tensor == 1);
  CHECK(c.parallel.pipeline == 1);
  CHECK(c.parallel.replicas == 1);
  CHECK(c.head.port == 7100);
  CHECK(c.server.port == 8000);
  CHECK(c.scheduler.block_size == 16);
  CHECK(c.fault_tolerance.heartbeat_timeout == std::chrono::milliseconds(1000));
  CHECK(c.source.empty());
  CHECK_NOTHROW(validate(c));
}

TEST_CASE("an empty file gives the default config", "[config]") {
  cluster_config c = parse_cluster_config("", "empty.yaml");
  CHECK(c.source == "empty.yaml");
  REQUIRE(c.nodes.size() == 1);
  CHECK(c.nodes[0].name == "local");
  CHECK(c.scheduler.max_seqs == default_cluster_config().scheduler.max_seqs);
}

TEST_CASE("every example cluster file loads and validates", "[config]") {
  struct expected {
    const char* file;
    int tensor, pipeline, replicas;
    std::size_t nodes;
  };
  const std::vector<expected> examples = {{"single.yaml", 1, 1, 1, 1},
                                          {"pipeline2.yaml", 1, 2, 1, 2},
                                          {"tensor2.yaml", 2, 1, 1, 2},
                                          {"tensor2_pipeline2.yaml", 2, 2, 1, 4},
                                          {"replicas2.yaml", 1, 1, 2, 2},
                                          {"gpu-tensor2.yaml", 2, 1, 1, 2},
                                          {"gpu-pipeline2.yaml", 1, 2, 1, 2}};
  for (const auto& e : examples) {
    INFO(e.file);
    cluster_config c = load_cluster_config(example(e.file));
    CHECK(c.source == example(e.file));
    CHECK(c.parallel.tensor == e.tensor);
    CHECK(c.parallel.pipeline == e.pipeline);
    CHECK(c.parallel.replicas == e.replicas);
    CHECK(c.nodes.size() == e.nodes);
    CHECK(c.head.port == 7100);
    for (std::size_t i = 0; i < c.nodes.size(); ++i) CHECK(c.nodes[i].port == 7101 + i);
    CHECK_NOTHROW(validate(c));
  }
  CHECK(load_cluster_config(example("tensor2.yaml")).parallel.allow_uneven_heads);
  const cluster_config gpu = load_cluster_config(example("gpu-tensor2.yaml"));
  CHECK(gpu.model.load_format == "random");
  CHECK(gpu.model.dtype == "bf16");
  CHECK(gpu.scheduler.kv_fraction == 0.85);
  CHECK(gpu.nodes[1].devices == std::vector<std::string>{"cuda:1"});
  CHECK(load_cluster_config(example("pipeline2.yaml")).parallel.layers_per_stage == std::vector<int>{15, 15});
}

TEST_CASE("every key of the file is read, with durations in several spellings", "[config]") {
  cluster_config c = parse_cluster_config(R"(
model: {path: /models/x.gguf}
parallel: {tensor: 1, pipeline: 2, replicas: 1, layers_per_stage: [10, 20], allow_uneven_heads: yes}
head: {host: 10.0.0.1, port: 7200}
nodes:
  - {name: n0, host: 10.0.0.2, port: 7201, devices: ["cuda:0", "cuda:1"], threads: 4}
server: {host: 0.0.0.0, port: 9000, api_keys: [k1, k2], max_queue_requests: 10,
         max_queue_tokens: 1000, max_body_bytes: 2048}
scheduler: {max_batch_tokens: 256, max_seqs: 8, kv_tokens: 4096, block_size: 32,
            max_context: 2048, prefix_caching: false, micro_batches: 3, batch_invariant: true}
fault_tolerance: {heartbeat_interval: 250ms, heartbeat_timeout: 2s, collective_timeout: 1.5s,
                  request_wait: 2m, max_restarts: 0, request_retries: 1}
)");
  CHECK(c.model.path == "/models/x.gguf");
  CHECK(c.parallel.layers_per_stage == std::vector<int>{10, 20});
  CHECK(c.parallel.allow_uneven_heads);
  CHECK(c.head.host == "10.0.0.1");
  CHECK(c.head.port == 7200);
  REQUIRE(c.nodes.size() == 1);
  CHECK(c.nodes[0].devices == std::vector<std::string>{"cuda:0", "cuda:1"});
  CHECK(c.nodes[0].threads == 4);
  CHECK(c.server.api_keys == std::vector<std::string>{"k1", "k2"});
  CHECK(c.server.max_queue_tokens == 1000);
  CHECK(c.server.max_body_bytes == 2048);
  CHECK(c.scheduler.block_size == 32);
  CHECK_FALSE(c.scheduler.prefix_caching);
  CHECK(c.scheduler.micro_batches == 3);
  CHECK(c.scheduler.batch_invariant);
  CHECK(c.fault_tolerance.heartbeat_interval == std::chrono::milliseconds(250));
  CHECK(c.fault_tolerance.heartbeat_timeout == std::chrono::milliseconds(2000));
  CHECK(c.fault_tolerance.collective_timeout == std::chrono::milliseconds(1500));
  CHECK(c.fault_tolerance.request_wait == std::chrono::milliseconds(120000));
  CHECK(c.fault_tolerance.max_restarts == 0);
}

TEST_CASE("a duration may be a plain number of milliseconds", "[config]") {
  cluster_config c = parse_cluster_config("fault_tolerance: {heartbeat_interval: 50, heartbeat_timeout: 400}");
  CHECK(c.fault_tolerance.heartbeat_interval == std::chrono::milliseconds(50));
  CHECK(c.fault_tolerance.heartbeat_timeout == std::chrono::milliseconds(400));
}

TEST_CASE("a node without devices gets one CPU device", "[config]") {
  cluster_config c = parse_cluster_config("nodes: [{name: solo, port: 7101}]");
  REQUIRE(c.nodes.size() == 1);
  CHECK(c.nodes[0].devices == std::vector<std::string>{"cpu"});
}

TEST_CASE("an unknown key is rejected with its full path and a suggestion", "[config]") {
  config_error e = test::parse_error("scheduler:\n  max_batch_tokns: 128\n");
  CHECK(e.path == "scheduler.max_batch_tokns");
  CHECK_THAT(e.what(), Contains("test.yaml: scheduler.max_batch_tokns: unknown key (did you mean max_batch_tokens?)"));
  CHECK_THAT(e.what(), Contains("line 2"));

  config_error top = test::parse_error("paralel: {tensor: 2}");
  CHECK(top.path == "paralel");
  CHECK_THAT(top.what(), Contains("did you mean parallel?"));

  config_error node = test::parse_error(two_nodes + "  - {name: c, prot: 7103}\n");
  CHECK(node.path == "nodes[2].prot");
  CHECK_THAT(node.what(), Contains("did you mean port?"));

  config_error far = test::parse_error("server: {zzzzzz: 1}");
  CHECK(far.path == "server.zzzzzz");
  CHECK_THAT(far.what(), !Contains("did you mean"));
}

TEST_CASE("a value of the wrong type names its path and the expected type", "[config]") {
  config_error i = test::parse_error("parallel: {tensor: two}");
  CHECK(i.path == "parallel.tensor");
  CHECK_THAT(i.what(), Contains("test.yaml: parallel.tensor: expected an integer, got \"two\""));

  config_error b = test::parse_error("scheduler: {prefix_caching: maybe}");
  CHECK(b.path == "scheduler.prefix_caching");
  CHECK_THAT(b.what(), Contains("expected true or false"));

  config_error l = test::parse_error("server: {api_keys: secret}");
  CHECK(l.path == "server.api_keys");
  CHECK_THAT(l.what(), Contains("expected a list"));

  config_error s = test::parse_error("parallel: 4");
  CHECK(s.path == "parallel");
  CHECK_THAT(s.what(), Contains("must be a map"));

  config_error n = test::parse_error("nodes: {name: a}");
  CHECK(n.path == "nodes");
  CHECK_THAT(n.what(), Contains("expected a list of nodes"));

  config_error f = test::parse_error("parallel: {tensor: 1.5}");
  CHECK(f.path == "parallel.tensor");
}

TEST_CASE("a port outside 1..65535 is rejected with its path", "[config]") {
  config_error e = test::parse_error("nodes: [{name: a, port: 70000}]");
  CHECK(e.path == "nodes[0].port");
  CHECK_THAT(e.what(), Contains("expected a port 0..65535, got 70000"));
  config_error h = test::parse_error("head: {port: 0}");
  CHECK(h.path == "head.port");
  CHECK_THAT(h.what(), Contains("expected a port 1..65535"));
  CHECK(test::parse_error("server: {port: -1}").path == "server.port");
}

TEST_CASE("a tensor size below one is rejected", "[config]") {
  config_error e = test::parse_error("parallel: {tensor: -2}");
  CHECK(e.path == "parallel.tensor");
  CHECK_THAT(e.what(), Contains("test.yaml: parallel.tensor: must be >= 1, got -2"));
  CHECK(test::parse_error("parallel: {pipeline: 0}").path == "parallel.pipeline");
  CHECK(test::parse_error("parallel: {replicas: 0}").path == "parallel.replicas");
}

TEST_CASE("two nodes with the same name are rejected", "[config]") {
  config_error e = test::parse_error("nodes:\n  - {name: a, port: 7101}\n  - {name: a, port: 7102}\n");
  CHECK(e.path == "nodes[1].name");
  CHECK_THAT(e.what(), Contains("\"a\" is already the name of nodes[0]"));
  CHECK(test::parse_error("nodes: [{name: '', port: 7101}]").path == "nodes[0].name");
  CHECK(test::parse_error("nodes: []").path == "nodes");
}

TEST_CASE("two nodes on the same host and port, or a node on the head's port, are rejected", "[config]") {
  config_error e = test::parse_error("nodes:\n  - {name: a, port: 7101}\n  - {name: b, host: localhost, port: 7101}\n");
  CHECK(e.path == "nodes[1].port");
  CHECK_THAT(e.what(), Contains("already used by nodes[0]"));

  config_error head = test::parse_error("head: {port: 7300}\nnodes: [{name: a, port: 7300}]");
  CHECK(head.path == "nodes[0].port");
  CHECK_THAT(head.what(), Contains("head's port"));

  CHECK_NOTHROW(parse_cluster_config("nodes:\n  - {name: a, host: h1, port: 7101}\n  - {name: b, host: h2, port: 7101}\n"));
  CHECK_NOTHROW(parse_cluster_config("nodes: [{name: a, host: h1, port: 7100}]"));
  CHECK(test::parse_error("server: {port: 7100}").path == "server.port");
}

TEST_CASE("a cluster that needs more shards than its nodes have devices is rejected", "[config]") {
  config_error e = test::parse_error(R"(
parallel: {tensor: 2, pipeline: 2}
nodes:
  - {name: a, port: 7101, devices: [cpu, cpu]}
  - {name: b, port: 7102, devices: [cpu]}
)");
  CHECK(e.path == "nodes");
  CHECK_THAT(e.what(),
             Contains("the cluster needs 4 shards (tensor 2 x pipeline 2 x replicas 1) but its nodes list 3 devices"));
}

TEST_CASE("a heartbeat interval not shorter than the timeout is rejected", "[config]") {
  config_error e = test::parse_error("fault_tolerance: {heartbeat_interval: 1s, heartbeat_timeout: 1000ms}");
  CHECK(e.path == "fault_tolerance.heartbeat_interval");
  CHECK_THAT(e.what(), Contains("must be shorter than heartbeat_timeout"));
  CHECK(test::parse_error("fault_tolerance: {collective_timeout: 0}").path == "fault_tolerance.collective_timeout");
  CHECK(test::parse_error("fault_tolerance: {max_restarts: -1}").path == "fault_tolerance.max_restarts");
}

TEST_CASE("a step timeout shorter than the collective timeout is rejected", "[config]") {
  config_error e = test::parse_error("fault_tolerance: {collective_timeout: 10s, step_timeout: 5s}");
  CHECK(e.path == "fault_tolerance.step_timeout");
  CHECK_THAT(e.what(), Contains("must be at least collective_timeout"));
  CHECK(parse_cluster_config("fault_tolerance: {step_timeout: 3m}").fault_tolerance.step_timeout ==
        std::chrono::minutes(3));
}

TEST_CASE("stall_timeout, release_wait and connection_timeout are read, written back and checked", "[config]") {
  const auto defaults = default_cluster_config().fault_tolerance;
  CHECK(defaults.stall_timeout == std::chrono::seconds(5));
  CHECK(defaults.release_wait == std::chrono::seconds(30));
  CHECK(defaults.connection_timeout == std::chrono::seconds(30));
  auto c = parse_cluster_config("fault_tolerance: {stall_timeout: 2s, release_wait: 10s, connection_timeout: 1m}");
  CHECK(c.fault_tolerance.stall_timeout == std::chrono::seconds(2));
  CHECK(c.fault_tolerance.release_wait == std::chrono::seconds(10));
  CHECK(c.fault_tolerance.connection_timeout == std::chrono::minutes(1));
  const auto back = parse_cluster_config(to_yaml(c)).fault_tolerance;
  CHECK(back.stall_timeout == c.fault_tolerance.stall_timeout);
  CHECK(back.release_wait == c.fault_tolerance.release_wait);
  CHECK(back.connection_timeout == c.fault_tolerance.connection_timeout);
  CHECK(parse_cluster_config("fault_tolerance: {stall_timeout: 0}").fault_tolerance.stall_timeout.count() == 0);
  config_error e = test::parse_error("fault_tolerance: {stall_timeout: 50ms}");
  CHECK(e.path == "fault_tolerance.stall_timeout");
  CHECK_THAT(e.what(), Contains("must be 0 (off) or from 100ms up to below step_timeout") && Contains("got 50ms"));
  CHECK(test::parse_error("fault_tolerance: {stall_timeout: 3m}").path == "fault_tolerance.stall_timeout");
  CHECK(test::parse_error("fault_tolerance: {release_wait: 0}").path == "fault_tolerance.release_wait");
  e = test::parse_error("fault_tolerance: {connection_timeout: 1s}");
  CHECK(e.path == "fault_tolerance.connection_timeout");
  CHECK_THAT(e.what(), Contains("must be longer than heartbeat_timeout"));
}

TEST_CASE("a bad duration string is rejected with its path", "[config]") {
  for (const char* bad : {"fast", "10 sec", "1.5ms", "s", "1..2s", "-5s"}) {
    INFO(bad);
    config_error e = test::parse_error(std::string("fault_tolerance: {request_wait: \"") + bad + "\"}");
    CHECK(e.path == "fault_tolerance.request_wait");
    CHECK_THAT(e.what(), Contains("expected a duration"));
  }
}

TEST_CASE("a bad device string is rejected with its path", "[config]") {
  for (const char* bad : {"gpu", "cuda", "cuda:", "cuda:x", "CPU", "cuda:-1"}) {
    INFO(bad);
    config_error e = test::parse_error(std::string("nodes: [{name: a, port: 7101, devices: [cpu, \"") + bad + "\"]}]");
    CHECK(e.path == "nodes[0].devices[1]");
    CHECK_THAT(e.what(), Contains("expected a device \"cpu\" or \"cuda:N\""));
  }
  config_error twice = test::parse_error("nodes: [{name: a, port: 7101, devices: [\"cuda:0\", \"cuda:0\"]}]");
  CHECK(twice.path == "nodes[0].devices[1]");
  CHECK(test::parse_error("nodes: [{name: a, port: 7101, devices: []}]").path == "nodes[0].devices");
}

TEST_CASE("scheduler values out of range are rejected with their path", "[config]") {
  config_error e = test::parse_error("scheduler: {block_size: 24}");
  CHECK(e.path == "scheduler.block_size");
  CHECK_THAT(e.what(), Contains("power of two"));
  CHECK(test::parse_error("scheduler: {block_size: 512}").path == "scheduler.block_size");
  CHECK(test::parse_error("scheduler: {max_seqs: 0}").path == "scheduler.max_seqs");
  CHECK(test::parse_error("scheduler: {micro_batches: 0}").path == "scheduler.micro_batches");
  CHECK(test::parse_error("server: {max_queue_tokens: 0}").path == "server.max_queue_tokens");
  CHECK(test::parse_error("server: {admin_keys: [\"\"]}").path == "server.admin_keys[0]");
  const auto same = test::parse_error("server: {api_keys: [k1], admin_keys: [a, k1]}");
  CHECK(same.path == "server.admin_keys[1]");
  CHECK_THAT(same.what(), Catch::Contains("must differ from every key in server.api_keys"));
}

TEST_CASE("overlapped steps are refused for a replica of several stages, naming both settings", "[config]") {
  CHECK(parse_cluster_config("scheduler: {overlap: true}", "test.yaml").scheduler.overlap);
  CHECK(parse_cluster_config("scheduler: {overlap: true}\nparallel: {tensor: 2}\n"
                             "nodes: [{name: a, port: 7101, devices: [cpu, cpu]}]",
                             "test.yaml")
            .scheduler.overlap);
  config_error e = test::parse_error("scheduler: {overlap: true}\nparallel: {pipeline: 2}\n"
                                     "nodes: [{name: a, port: 7101, devices: [cpu, cpu]}]");
  CHECK(e.path == "scheduler.overlap");
  CHECK_THAT(e.what(), Contains("parallel.pipeline 1"));
}

TEST_CASE("layers_per_stage needs one positive entry per stage", "[config]") {
  config_error n = test::parse_error("parallel: {tensor: 1, pipeline: 2, layers_per_stage: [30]}\n"
                               "nodes: [{name: a, port: 7101, devices: [cpu, cpu]}]");
  CHECK(n.path == "parallel.layers_per_stage");
  CHECK_THAT(n.what(), Contains("one entry per pipeline stage (2), got 1"));
  config_error z = test::parse_error("parallel: {pipeline: 2, layers_per_stage: [30, 0]}\n"
                               "nodes: [{name: a, port: 7101, devices: [cpu, cpu]}]");
  CHECK(z.path == "parallel.layers_per_stage[1]");
}

TEST_CASE("a YAML syntax error names the file, line and column", "[config]") {
  config_error e = test::parse_error("parallel:\n  tensor: [1, 2\nnodes: x\n", "broken.yaml");
  CHECK(e.path.empty());
  CHECK_THAT(e.what(), Contains("broken.yaml: line "));
  CHECK_THAT(e.what(), Contains("column"));
  CHECK_THAT(e.what(), Contains("YAML syntax error"));

  config_error tab = test::parse_error("model:\n  path: a\n   bad: [\n", "tab.yaml");
  CHECK_THAT(tab.what(), Contains("tab.yaml: line 3"));
}

TEST_CASE("a duplicate key in one map is rejected", "[config]") {
  config_error e = test::parse_error("parallel:\n  tensor: 1\n  tensor: 2\n");
  CHECK(e.path == "parallel.tensor");
  CHECK_THAT(e.what(), Contains("duplicate key"));
  config_error top = test::parse_error(two_nodes + "parallel: {pipeline: 2}\n");
  CHECK(top.path == "parallel");
  CHECK_THAT(top.what(), Contains("duplicate key"));
}

TEST_CASE("a missing cluster file is rejected with its name", "[config]") {
  auto dir = test::scratch_dir("cluster-config");
  const std::string missing = (dir / "nope.yaml").string();
  try {
    load_cluster_config(missing);
    FAIL("no error");
  } catch (const config_error& e) {
    CHECK_THAT(e.what(), Contains(missing + ": cannot open the cluster file"));
  }
  std::ofstream(dir / "bad.yaml") << "head:\n  port: nine\n";
  try {
    load_cluster_config((dir / "bad.yaml").string());
    FAIL("no error");
  } catch (const config_error& e) {
    CHECK(e.path == "head.port");
    CHECK_THAT(e.what(), Contains((dir / "bad.yaml").string() + ": head.port: expected a port 1..65535"));
    CHECK_THAT(e.what(), Contains("(line 2)"));
  }
}

TEST_CASE("overrides set scalars, list entries and lists, then validate", "[config]") {
  cluster_config c = parse_cluster_config(two_nodes, "two.yaml");
  apply_overrides(c, {"parallel.tensor=1", "parallel.replicas=2", "nodes[1].port=7002",
                      "scheduler.prefix_caching=false", "server.api_keys=[a,b]", "nodes[0].devices=[cpu, \"cuda:3\"]",
                      "fault_tolerance.heartbeat_timeout=3s"});
  CHECK(c.parallel.tensor == 1);
  CHECK(c.parallel.replicas == 2);
  CHECK(c.nodes[1].port == 7002);
  CHECK_FALSE(c.scheduler.prefix_caching);
  CHECK(c.server.api_keys == std::vector<std::string>{"a", "b"});
  CHECK(c.nodes[0].devices == std::vector<std::string>{"cpu", "cuda:3"});
  CHECK(c.fault_tolerance.heartbeat_timeout == std::chrono::milliseconds(3000));
  CHECK(c.source == "two.yaml");
  CHECK(c.nodes[0].name == "a");
}

TEST_CASE("an override can append a node at the end of the list", "[config]") {
  cluster_config c = parse_cluster_config(two_nodes);
  apply_overrides(c, {"nodes[2].name=c", "nodes[2].port=7103", "parallel.pipeline=2", "nodes[3]={name: d, port: 7104}"});
  REQUIRE(c.nodes.size() == 4);
  CHECK(c.nodes[2].name == "c");
  CHECK(c.nodes[2].devices == std::vector<std::string>{"cpu"});
  CHECK(c.nodes[3].port == 7104);
  CHECK(c.parallel.pipeline == 2);
}

TEST_CASE("an override to an unknown key is rejected and names the override", "[config]") {
  cluster_config c = default_cluster_config();
  config_error e = override_error(c, {"scheduler.max_batch_tokns=128"});
  CHECK(e.path == "scheduler.max_batch_tokns");
  CHECK_THAT(e.what(), Contains("--set scheduler.max_batch_tokns=128: scheduler.max_batch_tokns: unknown key "
                                "(did you mean max_batch_tokens?)"));
  CHECK(override_error(c, {"paralel.tensor=2"}).path == "paralel");
  CHECK(override_error(c, {"nodez[0].port=1"}).path == "nodez");
  CHECK(c.parallel.tensor == 1);
}

TEST_CASE("a bad override value gets the same errors as the file", "[config]") {
  cluster_config c = default_cluster_config();
  config_error t = override_error(c, {"parallel.tensor=two"});
  CHECK(t.path == "parallel.tensor");
  CHECK_THAT(t.what(), Contains("--set parallel.tensor=two: parallel.tensor: expected an integer"));
  CHECK(override_error(c, {"nodes[0].devices=[gpu]"}).path == "nodes[0].devices[0]");
  CHECK(override_error(c, {"fault_tolerance.request_wait=soon"}).path == "fault_tolerance.request_wait");
  CHECK(override_error(c, {"parallel.tensor=[1"}).path == "parallel.tensor");
}

TEST_CASE("overrides that leave an invalid cluster are rejected and change nothing", "[config]") {
  cluster_config c = default_cluster_config();
  config_error e = override_error(c, {"parallel.tensor=2"});
  CHECK(e.path == "nodes");
  CHECK_THAT(e.what(), Contains("with --set parallel.tensor=2"));
  CHECK_THAT(e.what(), Contains("needs 2 shards"));
  CHECK(override_error(c, {"parallel.tensor=-1"}).path == "parallel.tensor");
  CHECK(c.parallel.tensor == 1);
}

TEST_CASE("bad override syntax is rejected naming the override", "[config]") {
  cluster_config c = default_cluster_config();
  for (const char* bad : {"parallel.tensor", "=2", "parallel..tensor=2", "nodes[x].port=1", "nodes[0.port=1",
                          "parallel.=2"}) {
    INFO(bad);
    config_error e = override_error(c, {bad});
    CHECK_THAT(e.what(), Contains(std::string("--set ") + bad + ":"));
  }
  config_error range = override_error(c, {"nodes[5].port=7101"});
  CHECK(range.path == "nodes[5]");
  CHECK_THAT(range.what(), Contains("no such entry"));
  config_error into = override_error(c, {"parallel.tensor.x=1"});
  CHECK(into.path == "parallel.tensor");
  CHECK_THAT(into.what(), Contains("is a value, not a section"));
}

TEST_CASE("to_yaml writes a config that reads back equal", "[config]") {
  cluster_config c = load_cluster_config(example("tensor2_pipeline2.yaml"));
  c.server.api_keys = {"k"};
  c.parallel.layers_per_stage = {14, 16};
  c.fault_tolerance.request_wait = std::chrono::milliseconds(1234);
  cluster_config back = parse_cluster_config(to_yaml(c), "round-trip");
  CHECK(to_yaml(back) == to_yaml(c));
  CHECK(back.nodes.size() == 4);
  CHECK(back.nodes[3].name == "stage1-b");
  CHECK(back.parallel.layers_per_stage == std::vector<int>{14, 16});
  CHECK(back.server.api_keys == std::vector<std::string>{"k"});
  CHECK(back.fault_tolerance.request_wait == std::chrono::milliseconds(1234));
  CHECK(back.parallel.allow_uneven_heads);
}

TEST_CASE("a bad model dtype, load format or KV fraction is rejected naming the key", "[config]") {
  auto with = [](const std::string& yaml) { return parse_cluster_config(yaml, "bad.yaml"); };
  CHECK_THROWS_WITH(with("model: {dtype: f8}\n"), Catch::Contains("model.dtype") && Catch::Contains("bf16 or f16"));
  CHECK_THROWS_WITH(with("model: {load_format: dummy}\n"), Catch::Contains("model.load_format"));
  CHECK_THROWS_WITH(with("scheduler: {kv_fraction: 1.5}\n"), Catch::Contains("scheduler.kv_fraction"));
  CHECK_THROWS_WITH(with("scheduler: {kv_fraction: lots}\n"), Catch::Contains("expected a number"));
}

TEST_CASE("model.generation_defaults is read field by field, unset fields stay unset", "[config][generation]") {
  cluster_config c = parse_cluster_config(
      "model:\n  generation_defaults:\n    temperature: 0.3\n    top_k: 20\n    max_tokens: 64\n", "gen.yaml");
  const auto& g = c.model.generation_defaults;
  CHECK(g.temperature == 0.3f);
  CHECK(g.top_k == 20);
  CHECK(g.max_tokens == 64);
  CHECK_FALSE(g.top_p);
  CHECK_FALSE(g.repetition_penalty);
  CHECK(default_cluster_config().model.generation_defaults.empty());
}

TEST_CASE("server.max_tokens_default is 512 unless set, and must be at least 1", "[config][generation]") {
  CHECK(default_cluster_config().server.max_tokens_default == 512);
  CHECK(parse_cluster_config("server: {max_tokens_default: 64}\n", "cap.yaml").server.max_tokens_default == 64);
  CHECK_THROWS_WITH(parse_cluster_config("server: {max_tokens_default: 0}\n", "cap.yaml"),
                    Catch::Contains("cap.yaml: server.max_tokens_default: must be >= 1, got 0"));
  CHECK_THROWS_WITH(parse_cluster_config("server: {max_tokens_default: lots}\n", "cap.yaml"),
                    Catch::Contains("server.max_tokens_default: expected an integer"));
}

TEST_CASE("a generation default out of range or unknown is rejected naming its key path", "[config][generation]") {
  auto with = [](const std::string& yaml) { return parse_cluster_config(yaml, "gen.yaml"); };
  CHECK_THROWS_WITH(with("model: {generation_defaults: {temperature: 3}}\n"),
                    Catch::Contains("gen.yaml: model.generation_defaults.temperature: must be in [0, 2], got 3"));
  CHECK_THROWS_WITH(with("model: {generation_defaults: {top_p: 0}}\n"),
                    Catch::Contains("model.generation_defaults.top_p: must be in (0, 1], got 0"));
  CHECK_THROWS_WITH(with("model: {generation_defaults: {max_tokens: 0}}\n"),
                    Catch::Contains("model.generation_defaults.max_tokens: must be >= 1, got 0"));
  CHECK_THROWS_WITH(with("model: {generation_defaults: {temprature: 0.2}}\n"),
                    Catch::Contains("model.generation_defaults.temprature: unknown key (did you mean temperature?)"));
  CHECK_THROWS_WITH(with("model: {generation_defaults: {top_k: 1.5}}\n"),
                    Catch::Contains("model.generation_defaults.top_k: expected an integer"));
}

TEST_CASE("generation defaults and max_tokens_default survive to_yaml and --set", "[config][generation]") {
  cluster_config c = default_cluster_config();
  apply_overrides(c, {"model.generation_defaults.temperature=0.7", "model.generation_defaults.top_p=0.95",
                      "server.max_tokens_default=128"});
  CHECK(c.model.generation_defaults.temperature == 0.7f);
  CHECK(c.model.generation_defaults.top_p == 0.95f);
  CHECK(c.server.max_tokens_default == 128);
  const cluster_config back = parse_cluster_config(to_yaml(c), "round-trip");
  CHECK(back.model.generation_defaults == c.model.generation_defaults);
  CHECK(back.server.max_tokens_default == 128);
  apply_overrides(c, {"model.generation_defaults.temperature=null"});
  CHECK_FALSE(c.model.generation_defaults.temperature);
  CHECK_THROWS_WITH(apply_overrides(c, {"model.generation_defaults.min_p=2"}),
                    Catch::Contains("model.generation_defaults.min_p: must be in [0, 1], got 2"));
}

TEST_CASE("nodes[].launch is true unless set false, and must be a boolean", "[config]") {
  CHECK(default_cluster_config().nodes.front().launch);
  const auto c = parse_cluster_config("nodes:\n  - {name: a, launch: false}\n  - {name: b}\n", "p.yaml");
  CHECK(!c.nodes[0].launch);
  CHECK(c.nodes[1].launch);
  CHECK_THROWS_WITH(parse_cluster_config("nodes:\n  - {name: a, launch: sometimes}\n", "p.yaml"),
                    Catch::Contains("p.yaml") && Catch::Contains("nodes[0].launch"));
}

TEST_CASE("fault_tolerance.head_grace is 0 (fence at once) unless set, and never negative", "[config]") {
  CHECK(default_cluster_config().fault_tolerance.head_grace.count() == 0);
  CHECK(parse_cluster_config("fault_tolerance: {head_grace: 15s}\n", "p.yaml").fault_tolerance.head_grace.count() ==
        15000);
  CHECK_THROWS_WITH(parse_cluster_config("fault_tolerance: {head_grace: -2s}\n", "p.yaml"),
                    Catch::Contains("p.yaml: fault_tolerance.head_grace"));
}

TEST_CASE("fault_tolerance.compute_nice is 0 (as started) unless set, and a nice value from 0 to 19", "[config]") {
  CHECK(default_cluster_config().fault_tolerance.compute_nice == 0);
  CHECK(parse_cluster_config("fault_tolerance: {compute_nice: 10}\n", "p.yaml").fault_tolerance.compute_nice == 10);
  for (const char* bad : {"-1", "20"})
    CHECK_THROWS_WITH(parse_cluster_config(std::string("fault_tolerance: {compute_nice: ") + bad + "}\n", "p.yaml"),
                      Catch::Contains("p.yaml: fault_tolerance.compute_nice: must be a nice value from 0") &&
                          Catch::Contains(std::string("got ") + bad));
}

TEST_CASE("scheduler.prefill_per_decode is 0 (off) unless set, and never negative", "[config]") {
  CHECK(default_cluster_config().scheduler.prefill_per_decode == 0);
  CHECK(parse_cluster_config("scheduler: {prefill_per_decode: 2}\n", "p.yaml").scheduler.prefill_per_decode == 2);
  CHECK_THROWS_WITH(parse_cluster_config("scheduler: {prefill_per_decode: -1}\n", "p.yaml"),
                    Catch::Contains("p.yaml: scheduler.prefill_per_decode: must be >= 0, got -1"));
}

TEST_CASE("scheduler.max_prefill_tokens is 0 (no limit of its own) unless set, and never negative", "[config]") {
  CHECK(default_cluster_config().scheduler.max_prefill_tokens == 0);
  CHECK(parse_cluster_config("scheduler: {max_prefill_tokens: 256}\n", "p.yaml").scheduler.max_prefill_tokens == 256);
  CHECK_THROWS_WITH(parse_cluster_config("scheduler: {max_prefill_tokens: -1}\n", "p.yaml"),
                    Catch::Contains("p.yaml: scheduler.max_prefill_tokens: must be >= 0, got -1"));
}
