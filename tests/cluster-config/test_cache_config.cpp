// The cluster file's `cache:` section: defaults, reading, errors that name the key, the
// redis url, and the round trip through to_yaml and --set.
#include <catch2/catch.hpp>

#include "cluster-config/cluster_config.h"
#include "config_test_util.h"

using namespace troupe;

TEST_CASE("the response cache is off by default with a 300 s TTL", "[config][cache]") {
  const auto c = parse_cluster_config("", "test.yaml");
  CHECK(c.cache.backend == "off");
  CHECK(c.cache.ttl == std::chrono::seconds(300));
  CHECK(c.cache.url == "redis://127.0.0.1:6379");
  CHECK(c.cache.max_bytes == 64 << 20);
}

TEST_CASE("the cache section is read and survives to_yaml and --set", "[config][cache]") {
  auto c = parse_cluster_config("cache:\n  backend: redis\n  url: redis://:pw@cache.local:6380/2\n  ttl: 90s\n"
                                "  max_bytes: 1000000\n",
                                "test.yaml");
  CHECK(c.cache.backend == "redis");
  CHECK(c.cache.url == "redis://:pw@cache.local:6380/2");
  CHECK(c.cache.ttl == std::chrono::seconds(90));
  CHECK(c.cache.max_bytes == 1000000);
  const auto back = parse_cluster_config(to_yaml(c), "round-trip");
  CHECK(to_yaml(back) == to_yaml(c));
  apply_overrides(c, {"cache.backend=memory", "cache.ttl=2m"});
  CHECK(c.cache.backend == "memory");
  CHECK(c.cache.ttl == std::chrono::minutes(2));
}

TEST_CASE("bad cache values are rejected with the key named", "[config][cache]") {
  auto e = test::parse_error("cache:\n  backend: memcached\n");
  CHECK(e.path == "cache.backend");
  CHECK(std::string(e.what()).find("off, memory or redis") != std::string::npos);
  CHECK(test::parse_error("cache:\n  ttl: 0\n").path == "cache.ttl");
  CHECK(test::parse_error("cache:\n  ttl: soon\n").path == "cache.ttl");
  CHECK(test::parse_error("cache:\n  max_bytes: -1\n").path == "cache.max_bytes");
  CHECK(test::parse_error("cache:\n  backend: memory\n  max_bytes: 0\n").path == "cache.max_bytes");
  CHECK(test::parse_error("cache:\n  backend: redis\n  url: http://x\n").path == "cache.url");
  e = test::parse_error("cache:\n  backend: redis\n  url: redis://host:99999\n");
  CHECK(e.path == "cache.url");
  CHECK(std::string(e.what()).find("port") != std::string::npos);
  CHECK(test::parse_error("cache:\n  backend: redis\n  url: redis://:7000\n").path == "cache.url");
  e = test::parse_error("cache:\n  bakend: redis\n");
  CHECK(e.path == "cache.bakend");
  CHECK(std::string(e.what()).find("did you mean backend") != std::string::npos);
}

TEST_CASE("redis urls give host, port, password and database", "[config][cache]") {
  auto a = parse_redis_url("redis://127.0.0.1:6379");
  CHECK(a.host == "127.0.0.1");
  CHECK(a.port == 6379);
  CHECK(a.password.empty());
  CHECK(a.db == 0);
  a = parse_redis_url("redis://user:secret@cache.example:6380/3");
  CHECK(a.host == "cache.example");
  CHECK(a.port == 6380);
  CHECK(a.password == "secret");
  CHECK(a.db == 3);
  a = parse_redis_url("redis://localhost");
  CHECK(a.host == "127.0.0.1");
  CHECK(a.port == 6379);
  CHECK_THROWS_AS(parse_redis_url("redis://host:port"), std::invalid_argument);
  CHECK_THROWS_AS(parse_redis_url("redis://host/x"), std::invalid_argument);
  CHECK_THROWS_AS(parse_redis_url("rediss://host"), std::invalid_argument);
}
