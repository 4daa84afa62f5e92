#include "parallel/ucx_communicator.h"

#include "kernels/base/progress.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

namespace troupe::parallel {

namespace {

using clock_type = std::chrono::steady_clock;

// Tag layout: [63:62] kind (ucx_communicator::kind_*), [61:20] sequence number,
// [19:16] phase, [15:0] source rank.
constexpr uint64_t full_mask = ~uint64_t{0};
constexpr int max_ranks = 1 << 16;

// How long clean-up after a failed call may progress before it gives up on a request.
constexpr auto cancel_grace = std::chrono::milliseconds(100);
constexpr auto force_close_grace = std::chrono::milliseconds(500);
constexpr auto destroy_grace = std::chrono::milliseconds(500);

// UCX's configuration parser and global state are not meant for concurrent first use.
std::mutex& ucx_init_mutex() {
  static std::mutex m;
  return m;
}

// What a receive request carries in the space reserved in it (ucp_params_t::request_size).
struct recv_length {
  size_t bytes;
};

void on_recv_done(void* request, ucs_status_t, const ucp_tag_recv_info_t* info, void*) {
  static_cast<recv_length*>(request)->bytes = info ? info->length : 0;
}

std::string status_text(ucs_status_t s) { return ucs_status_string(s); }

// A failed request's status as a comm_errc: truncation is a size mismatch, the rest peer loss.
comm_errc classify(ucs_status_t s) {
  return s == UCS_ERR_MESSAGE_TRUNCATED ? comm_errc::invalid : comm_errc::peer_lost;
}

// Who published an address: decides shared memory (same host and IPC namespace) and whether
// the peer's pid can be watched (same host and pid namespace). Sent as raw bytes (x86-64 only).
struct process_identity {
  char boot_id[40] = {};    // /proc/sys/kernel/random/boot_id (or the host name)
  uint64_t ipc_ns = 0;      // inode of /proc/self/ns/ipc
  uint64_t pid_ns = 0;      // inode of /proc/self/ns/pid
  int64_t pid = 0;          // getpid()
  uint64_t start_time = 0;  // field 22 of /proc/self/stat (clock ticks since boot)
};
constexpr char address_magic[8] = {'t', 'r', 'o', 'u', 'p', 'e', 'U', '1'};
constexpr size_t envelope_bytes = sizeof(address_magic) + sizeof(process_identity);
constexpr auto watch_interval = std::chrono::milliseconds(10);

uint64_t ns_inode(const char* path) {
  struct stat st {};
  return ::stat(path, &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

// The start time of a live (not zombie) process, or nothing when it is gone.
std::optional<uint64_t> start_time_of(int64_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 1));
  std::string field;
  uint64_t start = 0;
  for (int i = 3; i <= 22 && rest >> field; ++i) {
    if (i == 3 && (field == "Z" || field == "X" || field == "x")) return std::nullopt;
    if (i == 22) start = std::strtoull(field.c_str(), nullptr, 10);
  }
  return start;
}

process_identity self_identity() {
  process_identity id;
  std::string boot;
  std::getline(std::ifstream("/proc/sys/kernel/random/boot_id"), boot);
  if (boot.empty()) {
    char host[sizeof id.boot_id] = {};
    ::gethostname(host, sizeof host - 1);
    boot = host;
  }
  std::memcpy(id.boot_id, boot.data(), std::min(boot.size(), sizeof id.boot_id - 1));
  id.ipc_ns = ns_inode("/proc/self/ns/ipc");
  id.pid_ns = ns_inode("/proc/self/ns/pid");
  id.pid = static_cast<int64_t>(::getpid());
  id.start_time = start_time_of(id.pid).value_or(0);
  return id;
}

}  // namespace

ucx_communicator::ucx_communicator(int rank, int size, ucx_options options)
    : rank_(rank), size_(size), options_(options) {
  if (size < 1 || size > max_ranks || rank < 0 || rank >= size)
    throw comm_error(comm_errc::invalid, "ucx_communicator", -1,
                     "rank " + std::to_string(rank) + " is not in a group of size " +
                         std::to_string(size) + " (size must be 1.." + std::to_string(max_ranks) +
                         ")");
  std::lock_guard<std::mutex> lock(ucx_init_mutex());
  ucp_config_t* config = nullptr;
  ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) throw std::runtime_error("UCX ucp_config_read failed: " + status_text(s));
  if (!std::getenv("UCX_WARN_UNUSED_ENV_VARS"))
    ucp_config_modify(config, "WARN_UNUSED_ENV_VARS", "n");
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_ESTIMATED_NUM_EPS |
                      UCP_PARAM_FIELD_MT_WORKERS_SHARED | UCP_PARAM_FIELD_REQUEST_SIZE;
  params.request_size = sizeof(recv_length);
  params.features = UCP_FEATURE_TAG;
  params.estimated_num_eps = static_cast<size_t>(size);
  params.mt_workers_shared = 0;
  s = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (s != UCS_OK) throw std::runtime_error("UCX ucp_init failed: " + status_text(s));
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  s = ucp_worker_create(context_, &wp, &worker_);
  if (s != UCS_OK) {
    ucp_cleanup(context_);
    throw std::runtime_error("UCX ucp_worker_create failed: " + status_text(s));
  }
  ucp_address_t* addr = nullptr;
  size_t len = 0;
  s = ucp_worker_get_address(worker_, &addr, &len);
  if (s != UCS_OK) {
    ucp_worker_destroy(worker_);
    ucp_cleanup(context_);
    throw std::runtime_error("UCX ucp_worker_get_address failed: " + status_text(s));
  }
  const process_identity id = self_identity();
  address_.assign(address_magic, address_magic + sizeof address_magic);
  address_.insert(address_.end(), reinterpret_cast<const char*>(&id),
                  reinterpret_cast<const char*>(&id) + sizeof id);
  address_.insert(address_.end(), reinterpret_cast<const char*>(addr),
                  reinterpret_cast<const char*>(addr) + len);
  ucp_worker_release_address(worker_, addr);
  const auto n = static_cast<size_t>(size);
  unguarded_.assign(n, 0);
  watch_pid_.assign(n, 0);
  watch_start_.assign(n, 0);
  exited_.assign(n, 0);
  eps_.assign(n, nullptr);
  ep_ctx_ = std::make_unique<ep_context[]>(n);
  for (int p = 0; p < size; ++p) ep_ctx_[static_cast<size_t>(p)] = {this, p};
  ep_status_.assign(n, UCS_OK);
  send_seq_.assign(n, 0);
  recv_seq_.assign(n, 0);
}

ucx_communicator::~ucx_communicator() {
  // Healthy endpoints are flushed so that data already sent reaches the peer; failed ones and
  // all of them after abort() are closed at once. Either way the wait is bounded.
  std::vector<void*> closing;
  for (size_t p = 0; p < eps_.size(); ++p) {
    if (!eps_[p]) continue;
    ucp_request_param_t prm{};
    if (!unguarded_[p] && (aborted() || ep_status_[p] != UCS_OK)) {
      prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      prm.flags = UCP_EP_CLOSE_FLAG_FORCE;
    }
    void* r = ucp_ep_close_nbx(eps_[p], &prm);
    if (r && !UCS_PTR_IS_ERR(r)) closing.push_back(r);
    eps_[p] = nullptr;
  }
  const auto until = clock_type::now() + destroy_grace;
  int idle = 0;
  while (!closing.empty() && clock_type::now() < until) {
    progress_idle(idle);
    closing.erase(std::remove_if(closing.begin(), closing.end(),
                                 [](void* r) {
                                   if (ucp_request_check_status(r) == UCS_INPROGRESS) return false;
                                   ucp_request_free(r);
                                   return true;
                                 }),
                  closing.end());
  }
  for (void* r : closing) ucp_request_free(r);
  std::lock_guard<std::mutex> lock(ucx_init_mutex());
  ucp_worker_destroy(worker_);
  ucp_cleanup(context_);
}

void ucx_communicator::on_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* ctx = static_cast<ep_context*>(arg);
  auto& st = ctx->self->ep_status_[static_cast<size_t>(ctx->peer)];
  if (st == UCS_OK) st = status == UCS_OK ? UCS_ERR_CONNECTION_RESET : status;
}

uint64_t ucx_communicator::tag(uint64_t kind, uint64_t seq, uint64_t phase, int src) const {
  return (kind << 62) | ((seq & ((uint64_t{1} << 42) - 1)) << 20) | ((phase & 0xF) << 16) |
         static_cast<uint64_t>(src);
}

void ucx_communicator::connect(const std::vector<std::vector<char>>& addresses, deadline d) {
  if (aborted())
    throw comm_error(comm_errc::aborted, "connect", -1, "the communicator was aborted");
  if (addresses.size() != static_cast<size_t>(size_))
    throw comm_error(comm_errc::invalid, "connect", -1,
                     "got " + std::to_string(addresses.size()) + " addresses for " +
                         std::to_string(size_) + " ranks");
  for (int p = 0; p < size_; ++p) {
    const auto pi = static_cast<size_t>(p);
    if (p == rank_) continue;
    if (eps_[pi]) throw comm_error(comm_errc::invalid, "connect", p, "already connected");
    const auto& a = addresses[pi];
    if (a.size() <= envelope_bytes ||
        std::memcmp(a.data(), address_magic, sizeof address_magic) != 0)
      throw comm_error(comm_errc::invalid, "connect", p,
                       "the " + std::to_string(a.size()) +
                           " address bytes given are not a ucx_communicator::local_address()");
    process_identity mine{}, theirs{};
    std::memcpy(&mine, address_.data() + sizeof address_magic, sizeof mine);
    std::memcpy(&theirs, a.data() + sizeof address_magic, sizeof theirs);
    const bool same_boot = std::memcmp(mine.boot_id, theirs.boot_id, sizeof mine.boot_id) == 0;
    unguarded_[pi] = options_.shared_memory && same_boot && mine.ipc_ns == theirs.ipc_ns;
    if (same_boot && mine.pid_ns == theirs.pid_ns && mine.pid != theirs.pid) {
      watch_pid_[pi] = theirs.pid;
      watch_start_[pi] = theirs.start_time;
    }
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>(a.data() + envelope_bytes);
    ep.err_mode = unguarded_[pi] ? UCP_ERR_HANDLING_MODE_NONE : UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &ucx_communicator::on_ep_error;
    ep.err_handler.arg = &ep_ctx_[pi];
    const ucs_status_t s = ucp_ep_create(worker_, &ep, &eps_[pi]);
    if (s != UCS_OK) {
      eps_[pi] = nullptr;
      throw comm_error(comm_errc::peer_lost, "connect", p,
                       "cannot create an endpoint: " + status_text(s));
    }
  }
  // Handshake: every rank sends its rank to every other and waits for theirs.
  std::vector<uint64_t> mine(1, static_cast<uint64_t>(rank_));
  std::vector<uint64_t> theirs(static_cast<size_t>(size_), ~uint64_t{0});
  std::vector<pending> ops;
  ops.reserve(2 * static_cast<size_t>(size_));
  for (int p = 0; p < size_; ++p)
    if (p != rank_)
      post_recv(ops, &theirs[static_cast<size_t>(p)], sizeof(uint64_t), p, tag(kind_hello, 0, 0, p),
                "connect");
  for (int p = 0; p < size_; ++p)
    if (p != rank_)
      post_send(ops, mine.data(), sizeof(uint64_t), p, tag(kind_hello, 0, 0, rank_), "connect");
  wait_all(ops, "connect", d);
  for (int p = 0; p < size_; ++p)
    if (p != rank_ && theirs[static_cast<size_t>(p)] != static_cast<uint64_t>(p))
      throw comm_error(comm_errc::invalid, "connect", p,
                       "the address given for rank " + std::to_string(p) + " belongs to rank " +
                           std::to_string(theirs[static_cast<size_t>(p)]));
}

void ucx_communicator::abort() noexcept { aborted_.store(true, std::memory_order_release); }

void ucx_communicator::check_call(const char* op, const tensor_view& t, int peer) const {
  if (aborted()) throw comm_error(comm_errc::aborted, op, peer, "the communicator was aborted");
  if (t.where != backend_kind::cpu)
    throw comm_error(
        comm_errc::invalid, op, peer,
        std::string("UCX transfers host buffers, got a ") + backend_name(t.where) + " tensor");
  if (t.numel() > 0 && t.data == nullptr)
    throw comm_error(comm_errc::invalid, op, peer,
                     "the tensor of shape " + t.shape.str() + " has no data");
  auto check_peer = [&](int p) {
    const auto pi = static_cast<size_t>(p);
    if (ep_status_[pi] != UCS_OK)
      throw comm_error(comm_errc::peer_lost, op, p, "failed earlier: " + failure_text(p));
    if (!eps_[pi]) throw comm_error(comm_errc::invalid, op, p, "connect() was not called");
  };
  if (peer >= 0) {
    if (peer >= size_ || peer == rank_)
      throw comm_error(comm_errc::invalid, op, peer,
                       "peer must be another rank in 0.." + std::to_string(size_ - 1) +
                           " (this is rank " + std::to_string(rank_) + ")");
    check_peer(peer);
    return;
  }
  for (int p = 0; p < size_; ++p)
    if (p != rank_) check_peer(p);
}

void ucx_communicator::post_send(std::vector<pending>& ops, const void* data, size_t bytes,
                                 int peer, uint64_t tg, const char* op) {
  ucp_request_param_t prm{};
  void* r = ucp_tag_send_nbx(eps_[static_cast<size_t>(peer)], data, bytes, tg, &prm);
  if (UCS_PTR_IS_ERR(r))
    fail_and_drain(ops, classify(UCS_PTR_STATUS(r)), op, peer,
                   "posting a send failed: " + status_text(UCS_PTR_STATUS(r)));
  if (r) ops.push_back({r, peer, true, bytes});
}

void ucx_communicator::post_recv(std::vector<pending>& ops, void* data, size_t bytes, int peer,
                                 uint64_t tg, const char* op) {
  // UCX 1.13 leaves recv_info unset on immediate completion, so every receive gets a request
  // and its callback records the length.
  ucp_request_param_t prm{};
  prm.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  prm.cb.recv = &on_recv_done;
  void* r = ucp_tag_recv_nbx(worker_, data, bytes, tg, full_mask, &prm);
  if (UCS_PTR_IS_ERR(r))
    fail_and_drain(
        ops, classify(UCS_PTR_STATUS(r)), op, peer,
        "receiving " + std::to_string(bytes) + " bytes failed: " + status_text(UCS_PTR_STATUS(r)));
  ops.push_back({r, peer, false, bytes});
}

void ucx_communicator::check_done(std::vector<pending>& ops, const char* op) {
  for (size_t i = 0; i < ops.size();) {
    pending& p = ops[i];
    const ucs_status_t s = ucp_request_check_status(p.req);
    if (s == UCS_INPROGRESS) {
      ++i;
      continue;
    }
    size_t got = p.expected_bytes;
    if (!p.is_send && s == UCS_OK) got = static_cast<recv_length*>(p.req)->bytes;
    ucp_request_free(p.req);
    const pending done = p;
    ops.erase(ops.begin() + static_cast<std::ptrdiff_t>(i));
    if (s != UCS_OK)
      fail_and_drain(ops, classify(s), op, done.peer,
                     std::string(done.is_send ? "send" : "receive") + " failed: " + status_text(s));
    if (got != done.expected_bytes)
      fail_and_drain(ops, comm_errc::invalid, op, done.peer,
                     "expected " + std::to_string(done.expected_bytes) + " bytes, the peer sent " +
                         std::to_string(got));
  }
}

void ucx_communicator::progress_idle(int& idle) {
  progress_beats::beat();  // waiting on a peer is not a stall of this thread
  if (ucp_worker_progress(worker_) != 0) {
    idle = 0;
    return;
  }
  ++idle;
  if (idle < 256) return;
  if (idle < 4096)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(20));
}

void ucx_communicator::wait_all(std::vector<pending>& ops, const char* op, deadline d) {
  int idle = 0;
  for (;;) {
    check_done(ops, op);
    if (ops.empty()) return;
    if (aborted()) fail_and_drain(ops, comm_errc::aborted, op, -1, "aborted while waiting");
    check_liveness(ops);
    for (const pending& p : ops)
      if (ep_status_[static_cast<size_t>(p.peer)] != UCS_OK)
        fail_and_drain(ops, comm_errc::peer_lost, op, p.peer, failure_text(p.peer));
    if (clock_type::now() >= d) {
      std::string waiting;
      for (const pending& p : ops)
        waiting += std::string(waiting.empty() ? "" : ", ") +
                   (p.is_send ? "send to " : "receive from ") + std::to_string(p.peer);
      fail_and_drain(ops, comm_errc::timeout, op, ops.front().peer,
                     "the deadline passed while waiting for " + waiting);
    }
    progress_idle(idle);
  }
}

void ucx_communicator::check_liveness(const std::vector<pending>& ops) {
  const auto now = clock_type::now();
  if (now < next_watch_) return;
  next_watch_ = now + watch_interval;
  for (const pending& p : ops) {
    const auto pi = static_cast<size_t>(p.peer);
    if (!watch_pid_[pi] || exited_[pi]) continue;
    const auto start = start_time_of(watch_pid_[pi]);
    if (start && *start == watch_start_[pi]) continue;
    exited_[pi] = 1;
    if (ep_status_[pi] == UCS_OK) ep_status_[pi] = UCS_ERR_CONNECTION_RESET;
  }
}

std::string ucx_communicator::failure_text(int peer) const {
  const auto pi = static_cast<size_t>(peer);
  if (exited_[pi])
    return "the peer's process (pid " + std::to_string(watch_pid_[pi]) + ") has exited";
  if (ep_status_[pi] == UCS_ERR_CANCELED) return "the endpoint was closed after an earlier failure";
  return "the endpoint failed: " + status_text(ep_status_[pi]);
}

void ucx_communicator::force_close(int peer) {
  const auto pi = static_cast<size_t>(peer);
  if (!eps_[pi]) return;
  if (unguarded_[pi]) {
    // Without UCX error handling a forced close is undefined on the peer's side: leave the
    // endpoint to the destructor's bounded flush and mark the peer unusable.
    if (ep_status_[pi] == UCS_OK) ep_status_[pi] = UCS_ERR_CANCELED;
    return;
  }
  ucp_request_param_t prm{};
  prm.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  prm.flags = UCP_EP_CLOSE_FLAG_FORCE;
  void* r = ucp_ep_close_nbx(eps_[pi], &prm);
  eps_[pi] = nullptr;
  if (ep_status_[pi] == UCS_OK) ep_status_[pi] = UCS_ERR_CANCELED;
  if (!r || UCS_PTR_IS_ERR(r)) return;
  const auto until = clock_type::now() + force_close_grace;
  int idle = 0;
  while (ucp_request_check_status(r) == UCS_INPROGRESS && clock_type::now() < until)
    progress_idle(idle);
  ucp_request_free(r);
}

void ucx_communicator::fail_and_drain(std::vector<pending>& ops, comm_errc code, const char* op,
                                      int peer, const std::string& reason) {
  // Receives not yet matched cancel at once. Sends (and receives already matched) cannot be
  // cancelled in UCX: if they do not finish by themselves shortly, their endpoints are closed
  // (forced where UCX error handling allows it, which fails them); the peer is unusable then.
  for (pending& p : ops)
    if (!p.is_send) ucp_request_cancel(worker_, p.req);
  auto drain = [&](std::chrono::milliseconds grace) {
    const auto until = clock_type::now() + grace;
    int idle = 0;
    while (!ops.empty()) {
      ops.erase(std::remove_if(ops.begin(), ops.end(),
                               [](pending& p) {
                                 if (ucp_request_check_status(p.req) == UCS_INPROGRESS)
                                   return false;
                                 ucp_request_free(p.req);
                                 return true;
                               }),
                ops.end());
      if (ops.empty() || clock_type::now() >= until) break;
      progress_idle(idle);
    }
  };
  drain(cancel_grace);
  bool closed_guarded = false;
  for (const pending& p : ops) {
    closed_guarded = closed_guarded || (eps_[static_cast<size_t>(p.peer)] &&
                                        !unguarded_[static_cast<size_t>(p.peer)]);
    force_close(p.peer);
  }
  if (closed_guarded) drain(force_close_grace);
  // Still pending after that: hand the requests to UCX to release whenever they end. Such a
  // send may still read its buffer later, which is why a group aborts as a whole.
  for (pending& p : ops) ucp_request_free(p.req);
  ops.clear();
  throw comm_error(code, op, peer, reason);
}

void ucx_communicator::send(tensor_view buf, int peer, deadline d) {
  const busy_scope timing(*this);
  check_call("send", buf, peer);
  std::vector<pending> ops;
  const uint64_t seq = send_seq_[static_cast<size_t>(peer)]++;
  post_send(ops, buf.data, static_cast<size_t>(buf.numel()) * dtype_size(buf.type), peer,
            tag(kind_p2p, seq, 0, rank_), "send");
  wait_all(ops, "send", d);
}

void ucx_communicator::recv(tensor_view buf, int peer, deadline d) {
  const busy_scope timing(*this);
  check_call("recv", buf, peer);
  std::vector<pending> ops;
  const uint64_t seq = recv_seq_[static_cast<size_t>(peer)]++;
  post_recv(ops, buf.data, static_cast<size_t>(buf.numel()) * dtype_size(buf.type), peer,
            tag(kind_p2p, seq, 0, peer), "recv");
  wait_all(ops, "recv", d);
}


}  // namespace troupe::parallel
