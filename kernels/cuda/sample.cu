// CUDA logits processing: argmax and sampling, one block of 1024 threads per row.
//
// The sampler follows runtime/engine/sampler.cpp step by step without sorting the vocabulary.
// Candidates are ranked by the same 64-bit key (descending logit, ties by ascending id);
// every cut is a "first key at which a running mass crosses a target" query, answered by
// a radix select over the key, 8 bits a pass from the top: each pass histograms the mass
// (a count for top-k) of the candidates that share the bits fixed so far, and keeps the
// bucket where the running mass crosses. A pass that leaves one candidate ends the search.
//   weights  w = expf((x - x_max) / T)
//   top-k    the k best keys (count select); z_norm = their mass (all of the vocab without)
//   min-p    keep w >= min_p and w > 0; z_keep = their mass
//   top-p    the shortest prefix whose mass reaches top_p * z_norm; z_keep = its mass
//   draw     the first key whose running mass exceeds uniform01(seed, token_index) * z_keep
// Masses are summed in double with shared-memory atomics, in no fixed order: a cut can
// move only when its target lies within rounding of a candidate boundary.
#include <cstdint>
#include <cstring>

#include "kernels/cuda/common.cuh"
#include "kernels/sample.h"
#include "kernels/base/rng.h"

namespace troupe::kernels::cuda {
namespace {

constexpr int threads = 1024;
constexpr float greedy_below = 1e-5f;  // runtime/engine/sampler.h's greedy_temperature
constexpr uint64_t no_bound = ~uint64_t{0};

/// The rank key of (logit, id): ascending key = descending logit, ties by ascending id.
__device__ __forceinline__ uint64_t rank_key(float logit, int id) {
  if (logit == 0.0f) logit = 0.0f;
  const uint32_t bits = __float_as_uint(logit);
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(~ascending) << 32) | static_cast<uint32_t>(id);
}

/// One row's view of its logits and the candidate set a select runs over.
struct row_view {
  const float* x;
  int vocab;
  float x_max, inv_t;
  uint64_t k_bound = no_bound;  ///< keys above it are outside top-k
  uint64_t p_bound = no_bound;  ///< keys above it are outside top-p
  float min_w = 0.0f;           ///< min-p: weights below it are dropped
  bool drop_zero = false;       ///< weights of zero are dropped

  __device__ float weight(int i) const { return expf((x[i] - x_max) * inv_t); }
  __device__ bool keep(uint64_t key, float w) const {
    return key <= k_bound && key <= p_bound && w >= min_w && !(drop_zero && w <= 0.0f);
  }
};

/// Shared state of the selects.
struct select_smem {
  double mass[256];
  unsigned count[256];
  double base;       // mass of the candidates before the current bucket range
  uint64_t prefix;   // key bits fixed so far
  int chosen;        // bucket kept by the last pass
  unsigned left;     // candidates left in the kept bucket
  uint64_t found_key;
  float found_w;
  double reduce[32];
};

/// Sum of a double over the block (fixed order).
__device__ double block_sum_double(double v, double* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Mass (or count) of the candidates of `v` with key <= bound.
__device__ double mass_upto(const row_view& v, uint64_t bound, bool count, select_smem& sm) {
  double sum = 0.0;
  for (int i = threadIdx.x; i < v.vocab; i += blockDim.x) {
    const float w = v.weight(i);
    const uint64_t key = rank_key(v.x[i], i);
    if (key <= bound && v.keep(key, w)) sum += count ? 1.0 : static_cast<double>(w);
  }
  return block_sum_double(sum, sm.reduce);
}

/// The result of a select: the crossing candidate's key and the mass up to and including it.
struct crossing {
  uint64_t key;
  double mass;
};

/// The first candidate (ascending key) at which the running mass (count when `count`)
/// crosses `target` (reaches it when `inclusive`); the last candidate when none does.
/// Every thread of the block must call it.
__device__ crossing select_crossing(const row_view& v, double target, bool inclusive, bool count,
                                    select_smem& sm) {
  if (threadIdx.x == 0) {
    sm.base = 0.0;
    sm.prefix = 0;
  }
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      sm.mass[b] = 0.0;
      sm.count[b] = 0;
    }
    __syncthreads();
    const uint64_t high_mask = shift == 56 ? 0 : (no_bound << (shift + 8));
    const uint64_t prefix = sm.prefix;
    for (int i = threadIdx.x; i < v.vocab; i += blockDim.x) {
      const uint64_t key = rank_key(v.x[i], i);
      if ((key & high_mask) != (prefix & high_mask)) continue;
      const float w = v.weight(i);
      if (!v.keep(key, w)) continue;
      const int b = static_cast<int>((key >> shift) & 255u);
      atomicAdd(&sm.mass[b], count ? 1.0 : static_cast<double>(w));
      atomicAdd(&sm.count[b], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double cum = sm.base;
      int chosen = -1, last = -1;
      double before_last = 0.0;
      for (int b = 0; b < 256; ++b) {
        if (sm.count[b] == 0) continue;
        last = b;
        before_last = cum;
        cum += sm.mass[b];
        if (inclusive ? cum >= target : cum > target) {
          chosen = b;
          break;
        }
      }
      if (chosen < 0) chosen = last;  // never crosses: the last candidate
      sm.base = before_last;
      sm.chosen = chosen;
      sm.left = chosen >= 0 ? sm.count[chosen] : 0;
      sm.prefix = prefix | (static_cast<uint64_t>(chosen < 0 ? 0 : chosen) << shift);
    }
    __syncthreads();
    if (sm.left <= 1) {
      if (sm.left == 0) return {no_bound, sm.base};  // no candidate at all
      const uint64_t mask = no_bound << shift;
      const uint64_t want = sm.prefix;
      for (int i = threadIdx.x; i < v.vocab; i += blockDim.x) {
        const uint64_t key = rank_key(v.x[i], i);
        if ((key & mask) != want) continue;
        const float w = v.weight(i);
        if (!v.keep(key, w)) continue;
        sm.found_key = key;
        sm.found_w = count ? 1.0f : w;
      }
      __syncthreads();
      const crossing c{sm.found_key, sm.base + static_cast<double>(sm.found_w)};
      __syncthreads();
      return c;
    }
  }
  // 64 bits fixed with more than one candidate left cannot happen: keys are unique.
  return {sm.prefix, sm.base};
}

/// Index of the largest logit of the row (lowest index on ties) and that logit.
__device__ void row_argmax(const float* x, int vocab, int& best, float& best_x, float* sf, int* si) {
  float bx = -INFINITY;
  int bi = 0x7fffffff;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x)
    if (x[i] > bx || bi == 0x7fffffff) {
      bx = x[i];
      bi = i;
    }
  for (int o = 16; o > 0; o >>= 1) {
    const float ox = __shfl_xor_sync(0xffffffffu, bx, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ox > bx || (ox == bx && oi < bi)) {
      bx = ox;
      bi = oi;
    }
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) {
    sf[warp] = bx;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    const bool has = lane < static_cast<int>(blockDim.x / 32);
    bx = has ? sf[lane] : -INFINITY;
    bi = has ? si[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
      const float ox = __shfl_xor_sync(0xffffffffu, bx, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ox > bx || (ox == bx && oi < bi)) {
        bx = ox;
        bi = oi;
      }
    }
    if (lane == 0) {
      sf[0] = bx;
      si[0] = bi;
    }
  }
  __syncthreads();
  best = si[0];
  best_x = sf[0];
  __syncthreads();
}

__global__ void argmax_kernel(int32_t* tokens, const float* logits, int vocab) {
  __shared__ float sf[32];
  __shared__ int si[32];
  int best;
  float bx;
  row_argmax(logits + static_cast<int64_t>(blockIdx.x) * vocab, vocab, best, bx, sf, si);
  if (threadIdx.x == 0) tokens[blockIdx.x] = best;
}

constexpr int argmax_chunk = 4096;  // logits per block of the split argmax
constexpr int chunk_threads = 256;

/// The best (value, id) of one chunk of a row.
struct argmax_part {
  float x;
  int id;
};

/// True when (ox, oi) ranks before (bx, bi): larger value, lower id on ties.
__device__ __forceinline__ bool ranks_before(float ox, int oi, float bx, int bi) {
  return bi == 0x7fffffff || ox > bx || (ox == bx && oi < bi);
}

/// The warp's best (value, id) into every lane's bx, bi.
__device__ __forceinline__ void warp_best(float& bx, int& bi) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ox = __shfl_xor_sync(0xffffffffu, bx, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (oi != 0x7fffffff && ranks_before(ox, oi, bx, bi)) {
      bx = ox;
      bi = oi;
    }
  }
}

/// Chunk blockIdx.x of row blockIdx.y: its best (value, id) into parts[row, chunk].
__global__ void argmax_chunk_kernel(argmax_part* parts, const float* logits, int vocab) {
  pdl_wait();  // launched plainly (after the allocation), where this is a no-op; safe with launch_pdl
  pdl_trigger();
  __shared__ float sf[32];
  __shared__ int si[32];
  const int begin = blockIdx.x * argmax_chunk, end = min(vocab, begin + argmax_chunk);
  const float* x = logits + static_cast<int64_t>(blockIdx.y) * vocab;
  float bx = -INFINITY;
  int bi = 0x7fffffff;
  for (int i = begin + threadIdx.x; i < end; i += blockDim.x)
    if (ranks_before(x[i], i, bx, bi)) {
      bx = x[i];
      bi = i;
    }
  warp_best(bx, bi);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sf[warp] = bx;
    si[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w)
      if (si[w] != 0x7fffffff && ranks_before(sf[w], si[w], bx, bi)) {
        bx = sf[w];
        bi = si[w];
      }
    parts[static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x] = {bx, bi};
  }
}

/// Merges row blockIdx.x's chunk results into its token (one warp).
__global__ void argmax_merge_kernel(int32_t* tokens, const argmax_part* parts, int n_chunks) {
  pdl_wait();  // launched with launch_pdl: nothing before this reads or writes
  pdl_trigger();
  const argmax_part* p = parts + static_cast<int64_t>(blockIdx.x) * n_chunks;
  float bx = -INFINITY;
  int bi = 0x7fffffff;
  for (int c = threadIdx.x; c < n_chunks; c += 32)
    if (p[c].id != 0x7fffffff && ranks_before(p[c].x, p[c].id, bx, bi)) {
      bx = p[c].x;
      bi = p[c].id;
    }
  warp_best(bx, bi);
  if (threadIdx.x == 0) tokens[blockIdx.x] = bi;
}

__global__ void sample_kernel(int32_t* tokens, const float* logits, int vocab,
                              const sample_row* rows) {
  __shared__ float sf[32];
  __shared__ int si[32];
  __shared__ select_smem sm;
  const sample_row p = rows[blockIdx.x];
  row_view v;
  v.x = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  v.vocab = vocab;
  int best;
  row_argmax(v.x, vocab, best, v.x_max, sf, si);
  if (p.temperature < greedy_below || v.x_max == -INFINITY) {
    if (threadIdx.x == 0) tokens[blockIdx.x] = best;
    return;
  }
  v.inv_t = 1.0f / p.temperature;
  double z_norm;
  if (p.top_k > 0 && p.top_k < vocab) {
    v.k_bound = select_crossing(v, static_cast<double>(p.top_k), true, true, sm).key;
    z_norm = mass_upto(v, no_bound, false, sm);
  } else {
    v.drop_zero = true;
    z_norm = mass_upto(v, no_bound, false, sm);
  }
  v.drop_zero = true;
  v.min_w = p.min_p;
  double z_keep;
  if (p.top_p < 1.0f) {
    const crossing cut = select_crossing(v, static_cast<double>(p.top_p) * z_norm, true, false, sm);
    v.p_bound = cut.key;
    z_keep = cut.mass;
  } else {
    z_keep = mass_upto(v, no_bound, false, sm);
  }
  const double target = static_cast<double>(uniform01(p.seed, p.token_index)) * z_keep;
  const crossing pick = select_crossing(v, target, false, false, sm);
  if (threadIdx.x == 0)
    tokens[blockIdx.x] = pick.key == no_bound ? best : static_cast<int32_t>(pick.key & 0xffffffffu);
}

/// Checks tokens i32 [m] and logits f32 [m, vocab] on the device.
void check(const char* op, const op_context& ctx, tensor_view tokens, tensor_view logits) {
  require_cuda_ctx(op, ctx);
  require_device(op, "tokens", tokens, dtype::i32);
  require_device(op, "logits", logits, dtype::f32);
  require_rank(op, "logits", logits, 2);
  require(logits.shape[1] > 0 && logits.shape[1] <= INT32_MAX, op,
          "logits " + logits.shape.str() + " needs a vocab in [1, 2^31)");
  require(logits.shape[0] <= INT32_MAX, op, "logits " + logits.shape.str() + " has too many rows");
  require_shape(op, "tokens", tokens, shape_t{logits.shape[0]});
}

}  // namespace

void argmax(const op_context& ctx, tensor_view tokens, tensor_view logits) {
  check("argmax", ctx, tokens, logits);
  const int64_t rows = logits.shape[0];
  const int vocab = static_cast<int>(logits.shape[1]);
  if (rows == 0) return;
  cudaStream_t st = stream_of(ctx);
  const int n_chunks = (vocab + argmax_chunk - 1) / argmax_chunk;
  if (n_chunks <= 1 || rows > 65535) {
    argmax_kernel<<<static_cast<unsigned>(rows), threads, 0, st>>>(tokens.i32(), logits.f32(), vocab);
    check_launch("argmax", "argmax_kernel");
    return;
  }
  // Split rows: each block finds its chunk's best (value, id); a second kernel merges a
  // row's chunks. The merge is order-free (largest value, lowest id on ties).
  argmax_part* parts = nullptr;
  check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&parts),
                             static_cast<size_t>(rows) * n_chunks * sizeof(argmax_part), st),
             "argmax", "allocating the per-chunk results");
  argmax_chunk_kernel<<<dim3(n_chunks, static_cast<unsigned>(rows)), chunk_threads, 0, st>>>(
      parts, logits.f32(), vocab);
  check_launch("argmax", "argmax_chunk_kernel");
  launch_pdl(argmax_merge_kernel, dim3(static_cast<unsigned>(rows)), dim3(32), 0, st, tokens.i32(), parts, n_chunks);
  check_launch("argmax", "argmax_merge_kernel");
  check_cuda(cudaFreeAsync(parts, st), "argmax", "freeing the per-chunk results");
}

void sample(const op_context& ctx, tensor_view tokens, tensor_view logits,
            const std::vector<sample_row>& rows, void* staging) {
  const char* op = "sample";
  check(op, ctx, tokens, logits);
  require(static_cast<int64_t>(rows.size()) == logits.shape[0], op,
          std::to_string(rows.size()) + " parameter rows for logits " + logits.shape.str());
  for (size_t r = 0; r < rows.size(); ++r) {
    const sample_row& p = rows[r];
    const std::string where = "row " + std::to_string(r) + ": ";
    require(p.temperature >= 0.0f && p.temperature <= 100.0f, op,
            where + "temperature must be in [0, 100], got " + std::to_string(p.temperature));
    require(p.top_p > 0.0f && p.top_p <= 1.0f, op,
            where + "top_p must be in (0, 1], got " + std::to_string(p.top_p));
    require(p.top_k >= -1, op, where + "top_k must be -1, 0 or >= 1, got " + std::to_string(p.top_k));
    require(p.min_p >= 0.0f && p.min_p <= 1.0f, op,
            where + "min_p must be in [0, 1], got " + std::to_string(p.min_p));
  }
  if (rows.empty()) return;
  cudaStream_t st = stream_of(ctx);
  sample_row* dev_rows = nullptr;
  const size_t bytes = rows.size() * sizeof(sample_row);
  check_cuda(cudaMallocAsync(reinterpret_cast<void**>(&dev_rows), bytes, st), op,
             "allocating the parameter rows");
  const void* src = rows.data();
  if (staging) {  // page-locked: the copy does not wait for the stream
    std::memcpy(staging, rows.data(), bytes);
    src = staging;
  }
  check_cuda(cudaMemcpyAsync(dev_rows, src, bytes, cudaMemcpyHostToDevice, st), op, "copying the parameter rows");
  sample_kernel<<<static_cast<unsigned>(rows.size()), threads, 0, st>>>(
      tokens.i32(), logits.f32(), static_cast<int>(logits.shape[1]), dev_rows);
  check_launch(op, "sample_kernel");
  check_cuda(cudaFreeAsync(dev_rows, st), op, "freeing the parameter rows");
}

}  // namespace troupe::kernels::cuda
