#pragma once
/// A TCP relay on 127.0.0.1 for the leadership tests: it listens on an ephemeral port and
/// forwards every connection to a target port, byte for byte, until `cut()`: from then on
/// it forwards nothing and accepts nothing, but keeps every socket open, as a network
/// partition does (the peers see silence, not a closed connection).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace troupe::test {

class tcp_relay {
 public:
  /// Starts relaying to 127.0.0.1:`target`.
  explicit tcp_relay(uint16_t target) : target_(target) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = loopback(0);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listener_, 16) != 0)
      throw std::runtime_error("tcp_relay: cannot listen on 127.0.0.1");
    socklen_t len = sizeof a;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  tcp_relay(const tcp_relay&) = delete;
  tcp_relay& operator=(const tcp_relay&) = delete;
  ~tcp_relay() {
    stop_ = true;
    thread_.join();
    for (auto [a, b] : pairs_) {
      ::close(a);
      ::close(b);
    }
    ::close(listener_);
  }

  /// The port it listens on.
  uint16_t port() const { return port_; }
  /// Stops forwarding in both directions (the connections stay open and silent).
  void cut() { cut_ = true; }

 private:
  static sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
  }

  void accept_one() {
    const int in = ::accept(listener_, nullptr, nullptr);
    if (in < 0) return;
    const int out = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a = loopback(target_);
    if (out < 0 || ::connect(out, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(in);
      if (out >= 0) ::close(out);
      return;
    }
    pairs_.emplace_back(in, out);
  }

  /// Copies what `from` has to `to`; false when `from` closed.
  static bool forward(int from, int to) {
    char buf[65536];
    const ssize_t n = ::recv(from, buf, sizeof buf, 0);
    if (n <= 0) return false;
    for (ssize_t sent = 0; sent < n;) {
      const ssize_t k = ::send(to, buf + sent, static_cast<size_t>(n - sent), MSG_NOSIGNAL);
      if (k <= 0) return false;
      sent += k;
    }
    return true;
  }

  void run() {
    while (!stop_) {
      if (cut_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      std::vector<pollfd> fds{{listener_, POLLIN, 0}};
      for (auto [a, b] : pairs_) {
        fds.push_back({a, POLLIN, 0});
        fds.push_back({b, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 10) <= 0) continue;
      if (fds[0].revents & POLLIN) accept_one();
      std::vector<std::pair<int, int>> open_pairs;
      for (std::size_t i = 0; i < (fds.size() - 1) / 2; ++i) {
        const auto& from_a = fds[1 + 2 * i];
        const auto& from_b = fds[2 + 2 * i];
        bool open = true;
        if (from_a.revents & (POLLIN | POLLHUP)) open = forward(pairs_[i].first, pairs_[i].second);
        if (open && (from_b.revents & (POLLIN | POLLHUP))) open = forward(pairs_[i].second, pairs_[i].first);
        if (open) {
          open_pairs.push_back(pairs_[i]);
        } else {  // one side closed: close the other too
          ::close(pairs_[i].first);
          ::close(pairs_[i].second);
        }
      }
      const std::size_t accepted = pairs_.size() - (fds.size() - 1) / 2;  // by accept_one above
      open_pairs.insert(open_pairs.end(), pairs_.end() - static_cast<long>(accepted), pairs_.end());
      pairs_ = std::move(open_pairs);
    }
  }

  uint16_t target_;
  uint16_t port_ = 0;
  int listener_ = -1;
  std::vector<std::pair<int, int>> pairs_;  ///< (accepted, to target); touched by the thread only
  std::atomic<bool> stop_{false};
  std::atomic<bool> cut_{false};
  std::thread thread_;
};

}  // namespace troupe::test
