#pragma once
/// Paths shared by the tests: the source tree, the goldens and the default model.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace troupe::test {

inline std::filesystem::path source_dir() { return TROUPE_SOURCE_DIR; }
inline std::filesystem::path binary_dir() { return TROUPE_BINARY_DIR; }
inline std::filesystem::path goldens_dir() { return source_dir() / "tests" / "goldens"; }

/// The cache folder tools/fetch_model.sh fills ($TROUPE_CACHE or ~/.cache/troupe).
inline std::filesystem::path cache_dir() {
  if (const char* c = std::getenv("TROUPE_CACHE"); c && *c) return c;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/root") / ".cache" / "troupe";
}

/// The default model (SmolLM2-135M-Instruct Q4_1). Fails loudly when it was not fetched.
inline std::string default_model() {
  auto p = cache_dir() / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(p))
    throw std::runtime_error("default model missing at " + p.string() +
                             ": run tools/fetch_model.sh (or tools/setup.sh --test)");
  return p.string();
}

/// A fresh empty scratch folder under the build tree.
inline std::filesystem::path scratch_dir(const std::string& name) {
  auto p = binary_dir() / "test-scratch" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

/// Whether a TCP listener could bind 127.0.0.1:`port` now.
inline bool port_is_free(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

/// `n` (at most 16) consecutive ports on 127.0.0.1 for one test process: a block of 16
/// in 20000..31999 (below Linux's ephemeral range) that no other test process holds (an
/// flock on /tmp/troupe-test-ports/<block>, kept until this process exits) and whose
/// ports were free when checked. Returns the first port.
inline int reserve_ports(int n) {
  if (n < 1 || n > 16) throw std::invalid_argument("reserve_ports: n must be in 1..16");
  const std::filesystem::path dir = "/tmp/troupe-test-ports";
  std::filesystem::create_directories(dir);
  constexpr int first = 20000, blocks = 750;
  const int start = static_cast<int>(::getpid()) % blocks;
  for (int i = 0; i < blocks; ++i) {
    const int block = (start + i) % blocks, base = first + block * 16;
    const int fd = ::open((dir / std::to_string(block)).c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0666);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      continue;
    }
    bool free = true;
    for (int p = base; p < base + n && free; ++p) free = port_is_free(p);
    if (free) return base;  // fd stays open: the block is ours until exit
    ::close(fd);
  }
  throw std::runtime_error("reserve_ports: no free block of 16 ports in 20000..31999");
}

}  // namespace troupe::test
