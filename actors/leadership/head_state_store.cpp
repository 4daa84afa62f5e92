// The head's state on disk (head_state_store.h): atomic saves, `.prev`, fallback on load.
#include "actors/leadership/head_state_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "actors/actor_system_config.h"

namespace troupe {
namespace {

namespace fs = std::filesystem;

/// No head state comes near this; a larger file is not one.
constexpr std::uintmax_t max_state_file = std::uintmax_t{1} << 30;

std::runtime_error sys_error(const std::string& what, const fs::path& p) {
  return std::runtime_error("head state store: cannot " + what + " " + p.string() + ": " + std::strerror(errno));
}

/// Closes a descriptor when it goes out of scope.
struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

void write_all(int fd, const std::string& bytes, const fs::path& p) {
  size_t done = 0;
  while (done < bytes.size()) {
    const auto n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw sys_error("write", p);
    done += static_cast<size_t>(n);
  }
}

/// Writes `bytes` to `p` (created or truncated) and fsyncs it.
void write_synced(const fs::path& p, const std::string& bytes) {
  fd_guard f{::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (f.fd < 0) throw sys_error("create", p);
  write_all(f.fd, bytes, p);
  if (::fsync(f.fd) != 0) throw sys_error("fsync", p);
  const int fd = f.fd;
  f.fd = -1;
  if (::close(fd) != 0) throw sys_error("close", p);
}

void fsync_directory(const fs::path& dir) {
  fd_guard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (d.fd < 0) throw sys_error("open the directory", dir);
  if (::fsync(d.fd) != 0) throw sys_error("fsync the directory", dir);
}

void rename_or_throw(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) throw sys_error("rename " + from.string() + " to", to);
}

/// The bytes of `p`, or nothing when it does not exist.
std::optional<std::string> read_file(const fs::path& p) {
  std::error_code ec;
  const auto size = fs::file_size(p, ec);
  if (ec == std::errc::no_such_file_or_directory) return std::nullopt;
  if (ec) throw std::runtime_error("head state store: cannot read " + p.string() + ": " + ec.message());
  if (size > max_state_file)
    throw head_state_error(p.string() + ": " + std::to_string(size) + " bytes, more than any head state (" +
                           std::to_string(max_state_file) + ")");
  std::ifstream in(p, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (!in) throw std::runtime_error("head state store: cannot read " + p.string());
  return bytes.str();
}

/// Whether `p` holds a state that decodes.
bool decodes(const fs::path& p) {
  try {
    const auto bytes = read_file(p);
    if (!bytes) return false;
    decode(*bytes, p.string());
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::string describe(const head_state& s) {
  return "term " + std::to_string(s.term) + ", sequence " + std::to_string(s.sequence);
}

}  // namespace

head_state_store::head_state_store(head_state_store_options o) : opts_(std::move(o)) {
  if (opts_.directory.empty()) throw std::invalid_argument("head state store: no directory given");
  if (opts_.file_name.empty() || opts_.file_name.find('/') != std::string::npos)
    throw std::invalid_argument("head state store: file name '" + opts_.file_name +
                                "' must be a plain, non-empty file name");
}

fs::path head_state_store::main_path() const { return opts_.directory / opts_.file_name; }
fs::path head_state_store::previous_path() const { return opts_.directory / (opts_.file_name + ".prev"); }
fs::path head_state_store::temp_path() const { return opts_.directory / (opts_.file_name + ".tmp"); }

void head_state_store::save(const head_state& s) {
  std::error_code ec;
  fs::create_directories(opts_.directory, ec);
  if (ec)
    throw std::runtime_error("head state store: cannot create the directory " + opts_.directory.string() + ": " +
                             ec.message());
  const auto main = main_path(), prev = previous_path(), tmp = temp_path();
  write_synced(tmp, encode(s));
  // The current file becomes `.prev`, unless it is damaged: then the `.prev` there stays.
  if (fs::exists(main) && decodes(main)) {
    const fs::path prev_tmp = prev.string() + ".tmp";
    ::unlink(prev_tmp.c_str());
    if (::link(main.c_str(), prev_tmp.c_str()) != 0) {
      if (errno != EXDEV && errno != EPERM && errno != ENOTSUP && errno != EMLINK) throw sys_error("link", prev_tmp);
      write_synced(prev_tmp, *read_file(main));  // a file system without hard links: copy
    }
    rename_or_throw(prev_tmp, prev);
  }
  rename_or_throw(tmp, main);
  fsync_directory(opts_.directory);
}

std::optional<loaded_head_state> head_state_store::load() const {
  const auto main = main_path(), prev = previous_path();
  std::string why;
  bool main_missing = false;
  if (auto bytes = read_file(main)) {
    try {
      auto s = decode(*bytes, main.string());
      logger()->info("head state: loaded {} ({})", main.string(), describe(s));
      return loaded_head_state{std::move(s), main, false, ""};
    } catch (const head_state_error& e) {
      why = e.what();
    }
  } else {
    why = main.string() + ": missing";
    main_missing = true;
  }
  auto prev_bytes = read_file(prev);
  if (!prev_bytes) {
    if (main_missing) return std::nullopt;  // a fresh directory
    throw head_state_error("no good head state in " + opts_.directory.string() + ": " + why + "; and " +
                           prev.string() + " to fall back to is missing");
  }
  try {
    auto s = decode(*prev_bytes, prev.string());
    logger()->warn("head state: {}; loaded the previous state {} instead ({})", why, prev.string(), describe(s));
    return loaded_head_state{std::move(s), prev, true, why};
  } catch (const head_state_error& e) {
    throw head_state_error("no good head state in " + opts_.directory.string() + ": " + why + "; and " + e.what());
  }
}

}  // namespace troupe
