#ifdef TROUPE_HAVE_NCCL

#include "parallel/nccl_communicator.h"

#include "kernels/base/progress.h"

#include <cstring>
#include <string>
#include <thread>

namespace troupe::parallel {

namespace {

using clock_type = std::chrono::steady_clock;

// How long the destructor lets ncclCommFinalize flush before it aborts instead.
constexpr auto finalize_grace = std::chrono::milliseconds(2000);

std::string nccl_text(ncclResult_t r) { return ncclGetErrorString(r); }

// An NCCL failure as a comm_errc: argument and usage errors are ours, the rest the group's.
comm_errc classify(ncclResult_t r) {
  return r == ncclInvalidArgument || r == ncclInvalidUsage ? comm_errc::invalid
                                                           : comm_errc::peer_lost;
}

void backoff(int& idle) {
  progress_beats::beat();  // waiting on the group is not a stall of this thread
  if (++idle < 256) return;
  if (idle < 16384)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(20));
}

// Polls a non-blocking communicator until it leaves ncclInProgress or `until` passes.
ncclResult_t poll_state(ncclComm_t comm, clock_type::time_point until) {
  ncclResult_t state = ncclInProgress;
  int idle = 0;
  while (true) {
    const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return r;
    if (state != ncclInProgress || clock_type::now() >= until) return state;
    backoff(idle);
  }
}

}  // namespace

std::vector<char> nccl_communicator::nccl_unique_id() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess)
    throw comm_error(classify(r), "nccl_unique_id", -1, "ncclGetUniqueId failed: " + nccl_text(r));
  return std::vector<char>(id.internal, id.internal + sizeof id.internal);
}

nccl_communicator::nccl_communicator(int rank, int size, const std::vector<char>& id, int device,
                                     cudaStream_t stream, deadline d)
    : rank_(rank), size_(size), device_(device), stream_(stream) {
  const char* op = "nccl_communicator";
  if (size < 1 || rank < 0 || rank >= size)
    throw comm_error(
        comm_errc::invalid, op, -1,
        "rank " + std::to_string(rank) + " is not in a group of size " + std::to_string(size));
  ncclUniqueId uid;
  if (id.size() != sizeof uid.internal)
    throw comm_error(comm_errc::invalid, op, -1,
                     "the unique id has " + std::to_string(id.size()) + " bytes, NCCL's has " +
                         std::to_string(sizeof uid.internal));
  std::memcpy(uid.internal, id.data(), sizeof uid.internal);
  if (const cudaError_t e = cudaSetDevice(device); e != cudaSuccess)
    throw comm_error(
        comm_errc::invalid, op, -1,
        "cannot use CUDA device " + std::to_string(device) + ": " + cudaGetErrorString(e));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const ncclResult_t r = ncclCommInitRankConfig(&comm_, size, uid, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm_) ncclCommAbort(comm_);
    throw comm_error(classify(r), op, -1, "ncclCommInitRankConfig failed: " + nccl_text(r));
  }
  const ncclResult_t state = poll_state(comm_, d);
  if (state == ncclSuccess) return;
  ncclCommAbort(comm_);
  comm_ = nullptr;
  if (state == ncclInProgress)
    throw comm_error(
        comm_errc::timeout, op, -1,
        "the other " + std::to_string(size - 1) + " ranks did not join by the deadline");
  throw comm_error(classify(state), op, -1, "NCCL init failed: " + nccl_text(state));
}

nccl_communicator::~nccl_communicator() {
  std::lock_guard<std::mutex> lock(comm_mutex_);
  if (!comm_) return;
  cudaSetDevice(device_);
  const ncclResult_t f = ncclCommFinalize(comm_);
  if (f == ncclSuccess || f == ncclInProgress) {
    const ncclResult_t state = poll_state(comm_, clock_type::now() + finalize_grace);
    if (state == ncclSuccess) {
      ncclCommDestroy(comm_);
      comm_ = nullptr;
      return;
    }
  }
  ncclCommAbort(comm_);
  comm_ = nullptr;
}

void nccl_communicator::abort_locked() noexcept {
  aborted_.store(true, std::memory_order_release);
  if (!comm_) return;
  ncclCommAbort(comm_);
  comm_ = nullptr;
}

void nccl_communicator::abort() noexcept {
  aborted_.store(true, std::memory_order_release);
  std::lock_guard<std::mutex> lock(comm_mutex_);
  cudaSetDevice(device_);
  abort_locked();
}

ncclDataType_t nccl_communicator::check_call(const char* op, const tensor_view& t, int peer) const {
  if (aborted()) throw comm_error(comm_errc::aborted, op, peer, "the communicator was aborted");
  if (t.where != backend_kind::cuda)
    throw comm_error(
        comm_errc::invalid, op, peer,
        std::string("NCCL transfers CUDA buffers, got a ") + backend_name(t.where) + " tensor");
  if (t.numel() > 0 && t.data == nullptr)
    throw comm_error(comm_errc::invalid, op, peer,
                     "the tensor of shape " + t.shape.str() + " has no data");
  if (peer != -1 && (peer < 0 || peer >= size_ || peer == rank_))
    throw comm_error(comm_errc::invalid, op, peer,
                     "peer must be another rank in 0.." + std::to_string(size_ - 1) +
                         " (this is rank " + std::to_string(rank_) + ")");
  switch (t.type) {
    case dtype::f32:
      return ncclFloat32;
    case dtype::f16:
      return ncclFloat16;
    case dtype::bf16:
      return ncclBfloat16;
    case dtype::i32:
      return ncclInt32;
  }
  throw comm_error(comm_errc::invalid, op, peer,
                   std::string("unsupported dtype ") + dtype_name(t.type));
}

void nccl_communicator::enqueued(ncclResult_t r, const char* op, int peer, deadline d) {
  if (r != ncclSuccess && r != ncclInProgress) {
    std::lock_guard<std::mutex> lock(comm_mutex_);
    abort_locked();
    throw comm_error(classify(r), op, peer, "enqueueing failed: " + nccl_text(r));
  }
  if (!deferred_) return wait(op, peer, d);
  if (r != ncclInProgress) return;
  // A non-blocking communicator may still be setting the call up (lazy connections): wait
  // for that, not for the transfer.
  std::lock_guard<std::mutex> lock(comm_mutex_);
  if (!comm_) throw comm_error(comm_errc::aborted, op, peer, "aborted while enqueueing");
  const ncclResult_t state = poll_state(comm_, d);
  if (state == ncclSuccess) return;
  abort_locked();
  throw comm_error(state == ncclInProgress ? comm_errc::timeout : classify(state), op, peer,
                   "enqueueing did not complete: " + nccl_text(state));
}

void nccl_communicator::synchronize(deadline d) {
  if (aborted()) throw comm_error(comm_errc::aborted, "synchronize", -1, "the communicator was aborted");
  wait("synchronize", -1, d);
}

void nccl_communicator::wait(const char* op, int peer, deadline d) {
  int idle = 0;
  while (true) {
    // abort() may be inside ncclCommAbort (which takes a while) holding the mutex: see the
    // flag first so that the waiting call returns at once.
    if (aborted()) throw comm_error(comm_errc::aborted, op, peer, "aborted while waiting");
    {
      std::lock_guard<std::mutex> lock(comm_mutex_);
      if (!comm_ || aborted())
        throw comm_error(comm_errc::aborted, op, peer, "aborted while waiting");
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      const ncclResult_t bad = r != ncclSuccess ? r : state;
      if (bad != ncclSuccess && bad != ncclInProgress) {
        abort_locked();
        throw comm_error(classify(bad), op, peer, "NCCL reported: " + nccl_text(bad));
      }
      if (state == ncclSuccess) {
        const cudaError_t e = cudaStreamQuery(stream_);
        if (e == cudaSuccess) return;
        if (e != cudaErrorNotReady) {
          abort_locked();
          throw comm_error(comm_errc::peer_lost, op, peer,
                           std::string("CUDA stream error: ") + cudaGetErrorString(e));
        }
      }
      if (clock_type::now() >= d) {
        abort_locked();
        throw comm_error(comm_errc::timeout, op, peer,
                         "the deadline passed before the transfer finished (NCCL communicator "
                         "aborted: re-create the group)");
      }
    }
    backoff(idle);
  }
}

void nccl_communicator::all_reduce(tensor_view buf, deadline d) {
  const ncclDataType_t type = check_call("all_reduce", buf, -1);
  ncclResult_t r;
  {
    std::lock_guard<std::mutex> lock(comm_mutex_);
    if (!comm_)
      throw comm_error(comm_errc::aborted, "all_reduce", -1, "the communicator was aborted");
    cudaSetDevice(device_);
    r = ncclAllReduce(buf.data, buf.data, static_cast<size_t>(buf.numel()), type, ncclSum, comm_,
                      stream_);
  }
  enqueued(r, "all_reduce", -1, d);
}

void nccl_communicator::all_gather(tensor_view in, tensor_view out, deadline d) {
  const ncclDataType_t type = check_call("all_gather", in, -1);
  check_call("all_gather", out, -1);
  if (in.type != out.type || out.numel() != in.numel() * size_)
    throw comm_error(comm_errc::invalid, "all_gather", -1,
                     "output " + std::string(dtype_name(out.type)) + " " + out.shape.str() +
                         " cannot hold " + std::to_string(size_) + " inputs " +
                         dtype_name(in.type) + " " + in.shape.str());
  ncclResult_t r;
  {
    std::lock_guard<std::mutex> lock(comm_mutex_);
    if (!comm_)
      throw comm_error(comm_errc::aborted, "all_gather", -1, "the communicator was aborted");
    cudaSetDevice(device_);
    r = ncclAllGather(in.data, out.data, static_cast<size_t>(in.numel()), type, comm_, stream_);
  }
  enqueued(r, "all_gather", -1, d);
}

void nccl_communicator::send(tensor_view buf, int peer, deadline d) {
  const ncclDataType_t type = check_call("send", buf, peer);
  ncclResult_t r;
  {
    std::lock_guard<std::mutex> lock(comm_mutex_);
    if (!comm_) throw comm_error(comm_errc::aborted, "send", peer, "the communicator was aborted");
    cudaSetDevice(device_);
    r = ncclSend(buf.data, static_cast<size_t>(buf.numel()), type, peer, comm_, stream_);
  }
  enqueued(r, "send", peer, d);
}

void nccl_communicator::recv(tensor_view buf, int peer, deadline d) {
  const ncclDataType_t type = check_call("recv", buf, peer);
  ncclResult_t r;
  {
    std::lock_guard<std::mutex> lock(comm_mutex_);
    if (!comm_) throw comm_error(comm_errc::aborted, "recv", peer, "the communicator was aborted");
    cudaSetDevice(device_);
    r = ncclRecv(buf.data, static_cast<size_t>(buf.numel()), type, peer, comm_, stream_);
  }
  enqueued(r, "recv", peer, d);
}

}  // namespace troupe::parallel

#endif  // TROUPE_HAVE_NCCL
