// The UCX communicator's collectives (ucx_communicator.h): all-gather and all-reduce over
// the point-to-point transfers of ucx_communicator.cpp.
#include "parallel/ucx_communicator.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace troupe::parallel {

namespace {

// Chunk `c` of `n` elements split over `parts` ranks: [begin, begin + count).
std::pair<int64_t, int64_t> chunk_of(int64_t n, int parts, int c) {
  const int64_t base = n / parts, rem = n % parts;
  return {c * base + std::min<int64_t>(c, rem), base + (c < rem ? 1 : 0)};
}

}  // namespace

void ucx_communicator::all_gather(tensor_view in, tensor_view out, deadline d) {
  const busy_scope timing(*this);
  check_call("all_gather", in, -1);
  check_call("all_gather", out, -1);
  if (in.type != out.type)
    throw comm_error(
        comm_errc::invalid, "all_gather", -1,
        std::string("input is ") + dtype_name(in.type) + " but output is " + dtype_name(out.type));
  if (out.numel() != in.numel() * size_ ||
      (in.shape.rank > 0 && out.shape.rank > 0 && out.shape[0] != in.shape[0] * size_))
    throw comm_error(comm_errc::invalid, "all_gather", -1,
                     "output of shape " + out.shape.str() + " cannot hold " +
                         std::to_string(size_) + " inputs of shape " + in.shape.str());
  const size_t bytes = static_cast<size_t>(in.numel()) * dtype_size(in.type);
  auto* dst = static_cast<char*>(out.data);
  if (bytes > 0) std::memmove(dst + static_cast<size_t>(rank_) * bytes, in.data, bytes);
  const uint64_t seq = coll_seq_++;
  if (size_ == 1) return;
  std::vector<pending> ops;
  ops.reserve(2 * static_cast<size_t>(size_));
  for (int p = 0; p < size_; ++p)
    if (p != rank_)
      post_recv(ops, dst + static_cast<size_t>(p) * bytes, bytes, p,
                tag(kind_collective, seq, 0, p), "all_gather");
  for (int p = 0; p < size_; ++p)
    if (p != rank_)
      post_send(ops, in.data, bytes, p, tag(kind_collective, seq, 0, rank_), "all_gather");
  wait_all(ops, "all_gather", d);
}

void ucx_communicator::all_reduce(tensor_view buf, deadline d) {
  const busy_scope timing(*this);
  check_call("all_reduce", buf, -1);
  if (buf.type != dtype::f32)
    throw comm_error(comm_errc::invalid, "all_reduce", -1,
                     std::string("sums f32 tensors, got ") + dtype_name(buf.type));
  const int64_t n = buf.numel();
  if (size_ == 1 || n == 0) return;
  if (static_cast<size_t>(n) * sizeof(float) >= large_all_reduce_bytes && n >= size_)
    all_reduce_large(buf.f32(), n, d);
  else
    all_reduce_small(buf.f32(), n, d);
}

void ucx_communicator::all_reduce_small(float* data, int64_t n, deadline d) {
  // Every rank sends its whole buffer to every other and sums all of them in rank order.
  const uint64_t seq = coll_seq_++;
  const auto un = static_cast<size_t>(n);
  scratch_.resize(static_cast<size_t>(size_ - 1) * un);
  auto slot = [&](int r) {
    return scratch_.data() + static_cast<size_t>(r < rank_ ? r : r - 1) * un;
  };
  std::vector<pending> ops;
  ops.reserve(2 * static_cast<size_t>(size_));
  for (int p = 0; p < size_; ++p)
    if (p != rank_)
      post_recv(ops, slot(p), un * sizeof(float), p, tag(kind_collective, seq, 0, p), "all_reduce");
  for (int p = 0; p < size_; ++p)
    if (p != rank_)
      post_send(ops, data, un * sizeof(float), p, tag(kind_collective, seq, 0, rank_),
                "all_reduce");
  wait_all(ops, "all_reduce", d);
  std::vector<const float*> src(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) src[static_cast<size_t>(r)] = r == rank_ ? data : slot(r);
  for (size_t i = 0; i < un; ++i) {
    float acc = src[0][i];
    for (size_t r = 1; r < src.size(); ++r) acc += src[r][i];
    data[i] = acc;
  }
}

void ucx_communicator::all_reduce_large(float* data, int64_t n, deadline d) {
  // Reduce-scatter: rank c owns chunk c and sums it in rank order; then all-gather the chunks.
  // Each element is summed in the same order as in all_reduce_small, so the bits are the same.
  const uint64_t seq = coll_seq_++;
  const auto [own_begin, own_count] = chunk_of(n, size_, rank_);
  const auto own = static_cast<size_t>(own_count);
  scratch_.resize(static_cast<size_t>(size_ - 1) * own);
  auto slot = [&](int r) {
    return scratch_.data() + static_cast<size_t>(r < rank_ ? r : r - 1) * own;
  };
  std::vector<pending> ops;
  ops.reserve(2 * static_cast<size_t>(size_));
  for (int p = 0; p < size_; ++p)
    if (p != rank_)
      post_recv(ops, slot(p), own * sizeof(float), p, tag(kind_collective, seq, 0, p),
                "all_reduce");
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    const auto [b, c] = chunk_of(n, size_, p);
    post_send(ops, data + b, static_cast<size_t>(c) * sizeof(float), p,
              tag(kind_collective, seq, 0, rank_), "all_reduce");
  }
  wait_all(ops, "all_reduce", d);
  float* mine = data + own_begin;
  std::vector<const float*> src(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) src[static_cast<size_t>(r)] = r == rank_ ? mine : slot(r);
  for (size_t i = 0; i < own; ++i) {
    float acc = src[0][i];
    for (size_t r = 1; r < src.size(); ++r) acc += src[r][i];
    mine[i] = acc;
  }
  for (int p = 0; p < size_; ++p) {
    if (p == rank_) continue;
    const auto [b, c] = chunk_of(n, size_, p);
    post_recv(ops, data + b, static_cast<size_t>(c) * sizeof(float), p,
              tag(kind_collective, seq, 1, p), "all_reduce");
  }
  for (int p = 0; p < size_; ++p)
    if (p != rank_)
      post_send(ops, mine, own * sizeof(float), p, tag(kind_collective, seq, 1, rank_),
                "all_reduce");
  wait_all(ops, "all_reduce", d);
}

}  // namespace troupe::parallel
