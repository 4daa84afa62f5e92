#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "parallel/ucx_communicator.h"

namespace {

using std::chrono::milliseconds;
using troupe::dtype;
using troupe::tensor_view;
using troupe::parallel::comm_errc;
using troupe::parallel::comm_error;
using troupe::parallel::deadline_in;
using troupe::parallel::ucx_communicator;
using clock_type = std::chrono::steady_clock;

/// Sets an environment variable for one scope and restores the old value after.
class env_guard {
 public:
  env_guard(std::string name, const char* value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    ::setenv(name_.c_str(), value, 1);
  }
  ~env_guard() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

/// Runs fn(rank) on one thread per rank; rethrows the first exception after all have joined.
void on_ranks(int n, const std::function<void(int)>& fn) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

/// One communicator per rank. Destroys them concurrently, as separate processes would: a
/// communicator's destructor flushes its endpoints, which waits (boundedly) for live peers.
struct group {
  std::vector<std::unique_ptr<ucx_communicator>> comms;  ///< [ranks]
  group() = default;
  group(group&&) = default;
  ~group() { clear(); }
  ucx_communicator& operator[](size_t r) { return *comms[r]; }
  void reset(size_t r) { comms[r].reset(); }
  void clear() {
    on_ranks(static_cast<int>(comms.size()), [&](int r) { comms[static_cast<size_t>(r)].reset(); });
    comms.clear();
  }
};

/// n connected communicators, one per rank.
group make_group(int n, troupe::parallel::ucx_options options = {}) {
  group g;
  std::vector<std::vector<char>> addresses;
  for (int r = 0; r < n; ++r) {
    g.comms.push_back(std::make_unique<ucx_communicator>(r, n, options));
    addresses.push_back(g.comms.back()->local_address());
  }
  on_ranks(n, [&](int r) {
    g[static_cast<size_t>(r)].connect(addresses, deadline_in(milliseconds(5000)));
  });
  return g;
}

tensor_view view_of(std::vector<float>& v) {
  tensor_view t;
  t.data = v.data();
  t.type = dtype::f32;
  t.shape = {static_cast<int64_t>(v.size())};
  return t;
}

/// Rank-dependent values of mixed magnitudes, so that the order of summation shows in the bits.
std::vector<float> input_of(int rank, size_t n) {
  std::vector<float> v(n);
  uint32_t s = 2654435761u * static_cast<uint32_t>(rank + 1) + 12345u;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    const float mag = (s >> 28) % 3 == 0 ? 1e4f : (s >> 28) % 3 == 1 ? 1.0f : 1e-4f;
    v[i] = mag * (static_cast<float>(s >> 8) / 16777216.0f - 0.5f);
  }
  return v;
}

std::vector<float> rank_ordered_sum(int ranks, size_t n) {
  std::vector<float> sum = input_of(0, n);
  for (int r = 1; r < ranks; ++r) {
    const auto v = input_of(r, n);
    for (size_t i = 0; i < n; ++i) sum[i] += v[i];
  }
  return sum;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void check_all_reduce(int ranks, size_t n) {
  INFO(ranks << " ranks, " << n << " floats");
  group g = make_group(ranks);
  std::vector<std::vector<float>> bufs;
  for (int r = 0; r < ranks; ++r) bufs.push_back(input_of(r, n));
  on_ranks(ranks, [&](int r) {
    g[static_cast<size_t>(r)].all_reduce(view_of(bufs[static_cast<size_t>(r)]),
                                         deadline_in(milliseconds(5000)));
  });
  const auto expected = rank_ordered_sum(ranks, n);
  for (int r = 0; r < ranks; ++r) {
    INFO("rank " << r);
    REQUIRE(same_bits(bufs[static_cast<size_t>(r)], expected));
  }
}

void check_ping_pong(group& g, size_t n) {
  std::vector<float> ping = input_of(7, n), pong = input_of(8, n);
  std::vector<float> got_ping(n, 0.0f), got_pong(n, 0.0f);
  on_ranks(2, [&](int r) {
    auto& c = g[static_cast<size_t>(r)];
    const auto d = deadline_in(milliseconds(5000));
    if (r == 0) {
      c.send(view_of(ping), 1, d);
      c.recv(view_of(got_pong), 1, d);
    } else {
      c.recv(view_of(got_ping), 0, d);
      c.send(view_of(pong), 0, d);
    }
  });
  REQUIRE(same_bits(got_ping, ping));
  REQUIRE(same_bits(got_pong, pong));
}

/// Destroys rank 1 and checks that rank 0's pending recv fails (peer_lost or timeout) in time.
void check_lost_peer(troupe::parallel::ucx_options options = {}) {
  group g = make_group(2, options);
  std::vector<float> buf(64, 0.0f);
  g.reset(1);
  const auto start = clock_type::now();
  try {
    g[0].recv(view_of(buf), 1, deadline_in(milliseconds(800)));
    FAIL("the recv from a destroyed peer returned");
  } catch (const comm_error& e) {
    const auto ms = std::chrono::duration_cast<milliseconds>(clock_type::now() - start).count();
    INFO(e.what());
    REQUIRE((e.code == comm_errc::peer_lost || e.code == comm_errc::timeout));
    REQUIRE(e.peer == 1);
    REQUIRE(ms < 800 + 300);
  }
}

}  // namespace

TEST_CASE("all_reduce over 2, 3 and 4 ranks gives every rank the rank-ordered sum bit for bit",
          "[comm]") {
  for (int ranks : {2, 3, 4})
    for (size_t n : {size_t{1}, size_t{769}, size_t{5125}, size_t{1} << 20})
      check_all_reduce(ranks, n);
}

TEST_CASE("all_reduce over TCP gives every rank the rank-ordered sum bit for bit", "[comm]") {
  env_guard tls("UCX_TLS", "tcp,self");
  for (size_t n : {size_t{769}, size_t{1} << 20}) check_all_reduce(3, n);
}

TEST_CASE("repeated all_reduce calls on one group never mix their messages", "[comm]") {
  group g = make_group(3);
  std::vector<std::vector<float>> bufs(3);
  on_ranks(3, [&](int r) {
    auto& b = bufs[static_cast<size_t>(r)];
    for (int step = 0; step < 20; ++step) {
      b.assign(100, static_cast<float>(r * 1000 + step));
      g[static_cast<size_t>(r)].all_reduce(view_of(b), deadline_in(milliseconds(5000)));
      if (b[0] != static_cast<float>(3000 + 3 * step) || b[99] != b[0])
        throw std::runtime_error("step " + std::to_string(step) + " got " + std::to_string(b[0]));
    }
  });
  for (auto& b : bufs) REQUIRE(b[0] == static_cast<float>(3000 + 3 * 19));
}

TEST_CASE("all_gather concatenates every rank's rows in rank order", "[comm]") {
  group g = make_group(3);
  std::vector<std::vector<float>> outs(3, std::vector<float>(3 * 5 * 7, -1.0f));
  on_ranks(3, [&](int r) {
    auto in = input_of(r, 5 * 7);
    tensor_view iv = view_of(in);
    iv.shape = {5, 7};
    tensor_view ov = view_of(outs[static_cast<size_t>(r)]);
    ov.shape = {15, 7};
    g[static_cast<size_t>(r)].all_gather(iv, ov, deadline_in(milliseconds(5000)));
  });
  std::vector<float> expected;
  for (int r = 0; r < 3; ++r) {
    const auto v = input_of(r, 5 * 7);
    expected.insert(expected.end(), v.begin(), v.end());
  }
  for (auto& o : outs) REQUIRE(same_bits(o, expected));
}

TEST_CASE("send and recv carry small and large buffers both ways", "[comm]") {
  group g = make_group(2);
  check_ping_pong(g, 576);
  check_ping_pong(g, size_t{1} << 20);
}

TEST_CASE("send and recv over TCP carry small and large buffers both ways", "[comm]") {
  env_guard tls("UCX_TLS", "tcp,self");
  group g = make_group(2);
  check_ping_pong(g, 576);
  check_ping_pong(g, size_t{1} << 20);
}

TEST_CASE("a recv with no sender times out by its deadline and names the peer", "[comm]") {
  group g = make_group(2);
  std::vector<float> buf(16, 0.0f);
  const auto start = clock_type::now();
  try {
    g[0].recv(view_of(buf), 1, deadline_in(milliseconds(300)));
    FAIL("the recv returned without a sender");
  } catch (const comm_error& e) {
    const auto ms = std::chrono::duration_cast<milliseconds>(clock_type::now() - start).count();
    REQUIRE(e.code == comm_errc::timeout);
    REQUIRE(e.peer == 1);
    REQUIRE(std::string(e.what()).find("peer 1") != std::string::npos);
    REQUIRE(ms >= 300);
    REQUIRE(ms < 300 + 150);
  }
}

TEST_CASE("abort from another thread ends a blocked recv promptly and is idempotent", "[comm]") {
  group g = make_group(2);
  std::vector<float> buf(16, 0.0f);
  clock_type::time_point aborted_at{};
  std::thread aborter([&] {
    std::this_thread::sleep_for(milliseconds(100));
    aborted_at = clock_type::now();
    g[0].abort();
    g[0].abort();
  });
  std::optional<comm_errc> code;
  try {
    g[0].recv(view_of(buf), 1, deadline_in(milliseconds(5000)));
  } catch (const comm_error& e) {
    code = e.code;
  }
  const auto thrown_at = clock_type::now();
  aborter.join();
  REQUIRE(code == comm_errc::aborted);
  REQUIRE(std::chrono::duration_cast<milliseconds>(thrown_at - aborted_at).count() < 200);
  REQUIRE(g[0].aborted());
  g[0].abort();
  try {
    g[0].all_reduce(view_of(buf), deadline_in(milliseconds(5000)));
    FAIL("all_reduce after abort returned");
  } catch (const comm_error& e) {
    REQUIRE(e.code == comm_errc::aborted);
  }
  const auto before_destroy = clock_type::now();
  g.clear();
  REQUIRE(std::chrono::duration_cast<milliseconds>(clock_type::now() - before_destroy).count() <
          1500);
}

TEST_CASE("a destroyed peer fails the survivor's recv within its deadline", "[comm]") {
  check_lost_peer();
}

TEST_CASE("a destroyed peer over TCP fails the survivor's recv within its deadline", "[comm]") {
  env_guard tls("UCX_TLS", "tcp,self");
  check_lost_peer();
}

TEST_CASE("a destroyed peer with UCX peer-failure handling fails the survivor's recv in time",
          "[comm]") {
  troupe::parallel::ucx_options options;
  options.shared_memory = false;
  check_lost_peer(options);
}

TEST_CASE("bad communicator arguments are rejected as invalid with the reason", "[comm]") {
  REQUIRE_THROWS_AS(ucx_communicator(2, 2), comm_error);
  {
    ucx_communicator lone(0, 2);
    const std::vector<std::vector<char>> junk{lone.local_address(), {'x', 'y'}};
    try {
      lone.connect(junk, deadline_in(milliseconds(1000)));
      FAIL("connect accepted a junk address");
    } catch (const comm_error& e) {
      REQUIRE(e.code == comm_errc::invalid);
      REQUIRE(e.peer == 1);
      REQUIRE(std::string(e.what()).find("not a ucx_communicator::local_address()") !=
              std::string::npos);
    }
  }
  group g = make_group(2);
  std::vector<float> buf(8, 0.0f);
  auto expect_invalid = [](const std::function<void()>& call, const std::string& words) {
    try {
      call();
      FAIL("the call returned");
    } catch (const comm_error& e) {
      INFO(e.what());
      REQUIRE(e.code == comm_errc::invalid);
      REQUIRE(std::string(e.what()).find(words) != std::string::npos);
    }
  };
  const auto d = deadline_in(milliseconds(2000));
  expect_invalid([&] { g[0].send(view_of(buf), 0, d); }, "peer must be another rank");
  expect_invalid([&] { g[0].recv(view_of(buf), 5, d); }, "peer must be another rank");
  tensor_view ints = view_of(buf);
  ints.type = dtype::i32;
  expect_invalid([&] { g[0].all_reduce(ints, d); }, "sums f32 tensors, got i32");
  tensor_view on_gpu = view_of(buf);
  on_gpu.where = troupe::backend_kind::cuda;
  expect_invalid([&] { g[0].send(on_gpu, 1, d); }, "got a cuda tensor");
  expect_invalid([&] { g[0].all_gather(view_of(buf), view_of(buf), d); }, "cannot hold 2 inputs");
  std::vector<float> shorter(6, 1.0f), receive(8, 0.0f);
  std::optional<comm_errc> recv_code;
  std::string recv_what;
  on_ranks(2, [&](int r) {
    if (r == 1) {
      g[1].send(view_of(shorter), 0, deadline_in(milliseconds(2000)));
      return;
    }
    try {
      g[0].recv(view_of(receive), 1, deadline_in(milliseconds(2000)));
    } catch (const comm_error& e) {
      recv_code = e.code;
      recv_what = e.what();
    }
  });
  REQUIRE(recv_code == comm_errc::invalid);
  REQUIRE(recv_what.find("expected 32 bytes, the peer sent 24") != std::string::npos);
}

namespace {

bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* p, size_t n, int timeout_ms) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, timeout_ms) <= 0) return false;
    const ssize_t r = ::read(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

/// Swaps addresses with the other process over the pipes and connects rank `rank` of 2.
void connect_over_pipes(ucx_communicator& c, int in_fd, int out_fd) {
  const auto mine = c.local_address();
  const uint64_t n = mine.size();
  if (!write_all(out_fd, &n, sizeof n) || !write_all(out_fd, mine.data(), mine.size()))
    throw std::runtime_error("cannot write the address to the pipe");
  uint64_t m = 0;
  if (!read_all(in_fd, &m, sizeof m, 5000) || m > (1u << 20))
    throw std::runtime_error("no address on the pipe");
  std::vector<char> theirs(m);
  if (!read_all(in_fd, theirs.data(), m, 5000))
    throw std::runtime_error("short address on the pipe");
  std::vector<std::vector<char>> addresses(2);
  addresses[static_cast<size_t>(c.rank())] = mine;
  addresses[static_cast<size_t>(1 - c.rank())] = theirs;
  c.connect(addresses, deadline_in(milliseconds(5000)));
}

/// Forks: the child runs child(in_fd, out_fd) and exits with what it returns (3 when it
/// throws); the parent runs parent(in_fd, out_fd). Returns the child's exit code, or -1 when
/// it had to be killed after 5 s. No UCX object may be alive in this process when called.
int with_child_process(const std::function<int(int, int)>& child,
                       const std::function<void(int, int)>& parent) {
  int to_child[2], to_parent[2];
  if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) throw std::runtime_error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(to_child[1]);
    ::close(to_parent[0]);
    int code = 3;
    try {
      code = child(to_child[0], to_parent[1]);
    } catch (...) {
    }
    ::_exit(code);
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  std::exception_ptr error;
  try {
    parent(to_parent[0], to_child[1]);
  } catch (...) {
    error = std::current_exception();
  }
  ::close(to_child[1]);
  ::close(to_parent[0]);
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 500 && done == 0; ++i) {
    done = ::waitpid(pid, &status, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(milliseconds(10));
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  if (error) std::rethrow_exception(error);
  return done == pid && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// One rank of the two-process test; returns the all-reduced buffers (small, then large).
std::vector<std::vector<float>> two_process_rank(int rank, int in_fd, int out_fd) {
  ucx_communicator c(rank, 2);
  connect_over_pipes(c, in_fd, out_fd);
  std::vector<std::vector<float>> out;
  for (size_t n : {size_t{576}, size_t{1} << 18}) {
    out.push_back(input_of(rank, n));
    c.all_reduce(view_of(out.back()), deadline_in(milliseconds(5000)));
  }
  return out;
}

}  // namespace

TEST_CASE("two processes all-reduce over TCP to the rank-ordered sum", "[comm]") {
  env_guard tls("UCX_TLS", "tcp,self");
  const auto small = rank_ordered_sum(2, 576), large = rank_ordered_sum(2, size_t{1} << 18);
  std::vector<std::vector<float>> out;
  const int child_code = with_child_process(
      [&](int in_fd, int out_fd) {
        const auto got = two_process_rank(1, in_fd, out_fd);
        return same_bits(got[0], small) && same_bits(got[1], large) ? 0 : 2;
      },
      [&](int in_fd, int out_fd) { out = two_process_rank(0, in_fd, out_fd); });
  REQUIRE(child_code == 0);
  REQUIRE(same_bits(out[0], small));
  REQUIRE(same_bits(out[1], large));
}

TEST_CASE("a peer process that exits fails the survivor's recv with peer_lost in time", "[comm]") {
  std::optional<comm_errc> code;
  std::string what;
  long long ms = -1;
  const int child_code = with_child_process(
      [&](int in_fd, int out_fd) {
        ucx_communicator c(1, 2);
        connect_over_pipes(c, in_fd, out_fd);
        char go = 0;
        read_all(in_fd, &go, 1, 5000);  // the parent has connected too
        ::_exit(0);
        return 0;
      },
      [&](int in_fd, int out_fd) {
        ucx_communicator c(0, 2);
        connect_over_pipes(c, in_fd, out_fd);
        const char go = 1;
        write_all(out_fd, &go, 1);
        std::vector<float> buf(1024, 0.0f);
        const auto start = clock_type::now();
        try {
          c.recv(view_of(buf), 1, deadline_in(milliseconds(3000)));
        } catch (const comm_error& e) {
          code = e.code;
          what = e.what();
        }
        ms = std::chrono::duration_cast<milliseconds>(clock_type::now() - start).count();
      });
  INFO(what);
  REQUIRE(child_code == 0);
  REQUIRE(code == comm_errc::peer_lost);
  REQUIRE(what.find("peer 1") != std::string::npos);
  REQUIRE(ms < 1000);
}

TEST_CASE("all_reduce latency over shared memory and TCP (benchmark)", "[.][comm-bench]") {
  for (const char* tls : {"", "tcp,self"}) {
    std::optional<env_guard> guard;
    if (*tls) guard.emplace("UCX_TLS", tls);
    group g = make_group(2);
    for (size_t n : {size_t{576}, size_t{1} << 20}) {
      const int iters = n < 10000 ? 2000 : 50;
      std::vector<std::vector<float>> bufs(2, std::vector<float>(n, 1.0f));
      double us = 0.0;
      on_ranks(2, [&](int r) {
        auto& c = g[static_cast<size_t>(r)];
        auto& b = bufs[static_cast<size_t>(r)];
        for (int i = 0; i < 10; ++i) c.all_reduce(view_of(b), deadline_in(milliseconds(5000)));
        const auto start = clock_type::now();
        for (int i = 0; i < iters; ++i) c.all_reduce(view_of(b), deadline_in(milliseconds(5000)));
        if (r == 0)
          us = std::chrono::duration<double, std::micro>(clock_type::now() - start).count() / iters;
      });
      WARN((*tls ? tls : "default")
           << " all_reduce " << n << " floats over 2 ranks: " << us << " us");
      REQUIRE(us > 0.0);
    }
  }
}
