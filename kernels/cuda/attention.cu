// CUDA KV-cache write and paged attention.
//
// q, out and both caches share one element type (f32, f16 or bf16); scores, softmax and
// the weighted sum of V are computed in float. The batch description (query_start,
// context_len, block_tables) lives on the device and is read only by the kernels, so the
// host checks shapes and types, not contents; a block id outside the cache or a row whose
// sequence cannot be found never makes a kernel read or write outside its tensors (the
// position is skipped, the row is written as zeros).
//
// Decode rows (m <= n_seqs) go to the grouped kernel of attention_decode.cu and prefill
// batches to the tensor-core kernel of flash_prefill.cu when their shapes fit; otherwise to
// the two general kernels here, both correct for any batch:
// - decode: one block per (row, head, split of split_len kv positions); a row longer than
//   one split writes per-split partials (max, sum, unnormalized output) and a combine
//   kernel merges them in split order. Splits are cut at fixed positions, so a row's
//   result does not depend on the rest of the batch.
// - prefill (flash-attention style on CUDA cores): one block per (32-row query tile of one
//   sequence, head); kv tiles of 32 positions are staged in shared memory and folded into
//   an online softmax, causal per row. A row's result depends only on its own positions
//   (kv tiles start at absolute multiples of 32), not on the other rows of its tile.
// The kernels sum in different orders: a row computed by one differs from the same row
// computed by another in the last bits. With op_context::batch_invariant every row takes a
// prefill kernel (flash when it fits), so a row does not depend on the batch's shape.
#include <cmath>

#include "kernels/attention.h"
#include "kernels/cuda/attention_common.cuh"

namespace troupe::kernels::cuda {
namespace {

constexpr int decode_threads = 128;
constexpr int tile_q = 32;        // query rows per prefill block
constexpr int tile_k = 32;        // kv positions per prefill tile
constexpr int prefill_threads = 128;
constexpr int max_head_dim = 256;

/// dot(q[0, hd), k[0, hd)) in index order; `vec` reads k 16 bytes at a time (k 16-byte
/// aligned, hd a multiple of 16 / sizeof(T)); both paths sum in the same order.
template <class T>
__device__ __forceinline__ float dot_row(const float* q, const T* k, int hd, bool vec) {
  float dot = 0.0f;
  if (vec) {
    constexpr int per = 16 / sizeof(T);
    const uint4* k4 = reinterpret_cast<const uint4*>(k);
    for (int c = 0; c < hd / per; ++c) {
      const uint4 raw = k4[c];
      const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
      for (int j = 0; j < per; ++j) dot += q[c * per + j] * to_f32(e[j]);
    }
  } else {
    for (int d = 0; d < hd; ++d) dot += q[d] * to_f32(k[d]);
  }
  return dot;
}

template <class T>
__global__ void kv_write_kernel(T* k_cache, T* v_cache, const T* k, const T* v,
                                const int32_t* slots, int64_t row, int64_t n_slots) {
  const int64_t r = blockIdx.x;
  const int32_t slot = slots[r];
  if (slot < 0 || slot >= n_slots) return;
  for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
    k_cache[slot * row + i] = k[r * row + i];
    v_cache[slot * row + i] = v[r * row + i];
  }
}

/// One (row, head, split) of decode attention; see the file comment.
template <class T>
__global__ void decode_kernel(T* out, float* part_o, float* part_ml, const T* q, const T* k_cache,
                              const T* v_cache, attn_args a, int max_splits, bool vec) {
  __shared__ float q_s[max_head_dim];
  __shared__ float p_s[split_len];
  __shared__ int64_t off_s[split_len];  // element offset of each position's kv row, or -1
  __shared__ float scratch[32];
  const int h = blockIdx.x, r = blockIdx.y, z = blockIdx.z, hd = a.head_dim;
  const int64_t row_off = (static_cast<int64_t>(r) * a.n_heads + h) * hd;
  const int s = find_seq(a, r);
  const int pos = s < 0 ? -1 : row_position(a, s, r);
  if (pos < 0) {
    if (z == 0)
      for (int d = threadIdx.x; d < hd; d += blockDim.x) out[row_off + d] = from_f32<T>(0.0f);
    return;
  }
  const int n_splits = pos / a.split + 1;
  if (z >= n_splits) return;
  const int start = z * a.split, len = min(a.split, pos + 1 - start);
  const int g = kv_head_of(a, h);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) q_s[d] = to_f32(q[row_off + d]);
  __syncthreads();
  // One thread per position: each reads its whole K row (contiguous), many rows in flight.
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    const int64_t off = kv_offset(a, s, start + i, g);
    off_s[i] = off;
    p_s[i] = off >= 0 ? dot_row(q_s, k_cache + off, hd, vec) * a.scale : -INFINITY;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < len; i += blockDim.x) mx = fmaxf(mx, p_s[i]);
  mx = block_max(mx, scratch);
  float sum = 0.0f;
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    const float e = mx == -INFINITY ? 0.0f : expf(p_s[i] - mx);
    p_s[i] = e;
    sum += e;
  }
  sum = block_sum(sum, scratch);  // its barriers also publish p_s
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int i = 0; i < len; ++i) {
      const int64_t off = off_s[i];
      if (off >= 0) acc += p_s[i] * to_f32(v_cache[off + d]);
    }
    if (n_splits == 1) {
      out[row_off + d] = from_f32<T>(sum > 0.0f ? acc / sum : 0.0f);
    } else {
      const int64_t part = (static_cast<int64_t>(r) * a.n_heads + h) * max_splits + z;
      part_o[part * hd + d] = acc;
      if (d == 0) {
        part_ml[part * 2] = mx;
        part_ml[part * 2 + 1] = sum;
      }
    }
  }
}

/// Shared memory of one prefill block, in floats (rows padded by one against bank conflicts).
__host__ __device__ constexpr int prefill_smem_floats(int hd) {
  return tile_q * (hd + 1) + tile_k * (hd + 1) + tile_k * hd + tile_q * (tile_k + 1) +
         tile_q * hd + tile_k;
}

/// One (query tile, head) of prefill attention; see the file comment. Thread t serves
/// row t / 4 of the tile, kv columns t % 4 + 4c and output dims t % 4 + 4c.
template <class T>
__global__ void prefill_kernel(T* out, const T* q, const T* k_cache, const T* v_cache, attn_args a) {
  extern __shared__ float smem[];
  const int hd = a.head_dim;
  float* q_s = smem;                        // [tile_q, hd + 1]
  float* k_s = q_s + tile_q * (hd + 1);     // [tile_k, hd + 1]
  float* v_s = k_s + tile_k * (hd + 1);     // [tile_k, hd]
  float* p_s = v_s + tile_k * hd;           // [tile_q, tile_k + 1]
  float* o_s = p_s + tile_q * (tile_k + 1); // [tile_q, hd]
  int* off_s = reinterpret_cast<int*>(o_s + tile_q * hd);  // [tile_k] kv offsets / head_dim
  int s, tile;
  if (!find_tile(a, tile_q, blockIdx.x, s, tile)) return;
  const int h = blockIdx.y, g = kv_head_of(a, h);
  const int n_query = a.query_start[s + 1] - a.query_start[s];
  const int first = a.query_start[s] + tile * tile_q, n_rows = min(tile_q, n_query - tile * tile_q);
  const int pos0 = a.context_len[s] - n_query + tile * tile_q;  // position of the tile's row 0
  const int last = pos0 + n_rows - 1;
  const bool tile_ok = pos0 >= 0 && last < a.max_blocks * a.block_size;
  const int i = threadIdx.x / 4, sub = threadIdx.x % 4;
  const bool active = tile_ok && i < n_rows;
  const int pos = pos0 + i;
  for (int e = threadIdx.x; e < tile_q * hd; e += blockDim.x) {
    const int row = e / hd, d = e % hd;
    q_s[row * (hd + 1) + d] =
        row < n_rows ? to_f32(q[(static_cast<int64_t>(first + row) * a.n_heads + h) * hd + d]) : 0.0f;
    o_s[e] = 0.0f;
  }
  float m_run = -INFINITY, l_run = 0.0f;
  for (int kv0 = 0; tile_ok && kv0 <= last; kv0 += tile_k) {
    __syncthreads();
    if (threadIdx.x < tile_k) {
      const int t = kv0 + threadIdx.x;
      const int64_t off = t <= last ? kv_offset(a, s, t, g) : -1;
      off_s[threadIdx.x] = off < 0 ? -1 : static_cast<int>(off / hd);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < tile_k * hd; e += blockDim.x) {
      const int j = e / hd, d = e % hd;
      const int o = off_s[j];
      k_s[j * (hd + 1) + d] = o >= 0 ? to_f32(k_cache[static_cast<int64_t>(o) * hd + d]) : 0.0f;
      v_s[e] = o >= 0 ? to_f32(v_cache[static_cast<int64_t>(o) * hd + d]) : 0.0f;
    }
    __syncthreads();
    float sc[tile_k / 4];
    float tile_max = -INFINITY;
#pragma unroll
    for (int c = 0; c < tile_k / 4; ++c) {
      const int j = sub + 4 * c;
      float v = -INFINITY;
      if (active && kv0 + j <= pos && off_s[j] >= 0) {
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot += q_s[i * (hd + 1) + d] * k_s[j * (hd + 1) + d];
        v = dot * a.scale;
      }
      sc[c] = v;
      tile_max = fmaxf(tile_max, v);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    const float m_new = fmaxf(m_run, tile_max);
    float tile_sum = 0.0f;
#pragma unroll
    for (int c = 0; c < tile_k / 4; ++c) {
      const float p = m_new == -INFINITY ? 0.0f : expf(sc[c] - m_new);
      p_s[i * (tile_k + 1) + sub + 4 * c] = p;
      tile_sum += p;
    }
    tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 1);
    tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, 2);
    const float alpha = m_run == -INFINITY ? 0.0f : expf(m_run - m_new);
    l_run = l_run * alpha + tile_sum;
    m_run = m_new;
    __syncwarp();
    for (int d = sub; d < hd; d += 4) {
      float acc = o_s[i * hd + d] * alpha;
      for (int j = 0; j < tile_k; ++j) acc += p_s[i * (tile_k + 1) + j] * v_s[j * hd + d];
      o_s[i * hd + d] = acc;
    }
  }
  if (i >= n_rows) return;
  T* o = out + (static_cast<int64_t>(first + i) * a.n_heads + h) * hd;
  for (int d = sub; d < hd; d += 4) {
    const float v = active && l_run > 0.0f ? o_s[i * hd + d] / l_run : 0.0f;
    o[d] = from_f32<T>(v);
  }
}

/// Checks a cache pair [n_blocks, block_size, n_kv_heads, head_dim] on the device.
void check_caches(const char* op, tensor_view k_cache, tensor_view v_cache) {
  require_device_float(op, "k_cache", k_cache);
  require_device(op, "v_cache", v_cache);
  require_same_type(op, "v_cache", v_cache, "k_cache", k_cache);
  require_rank(op, "k_cache", k_cache, 4);
  require_shape(op, "v_cache", v_cache, k_cache.shape);
}

/// Checks q, out, the caches and the batch; returns the kernels' arguments.
attn_args check_attention(tensor_view out, tensor_view q, tensor_view k_cache, tensor_view v_cache,
                          const attention_batch& b, float scale) {
  const char* op = "paged_attention";
  check_caches(op, k_cache, v_cache);
  require_device(op, "q", q);
  require_device(op, "out", out);
  require_same_type(op, "q", q, "k_cache", k_cache);
  require_same_type(op, "out", out, "k_cache", k_cache);
  require_rank(op, "q", q, 3);
  require_shape(op, "out", out, q.shape);
  require(k_cache.shape[3] == q.shape[2], op,
          "q " + q.shape.str() + " and k_cache " + k_cache.shape.str() + " disagree on head_dim");
  require(q.shape[2] > 0 && q.shape[2] <= max_head_dim, op,
          "head_dim " + std::to_string(q.shape[2]) + " is outside [1, " +
              std::to_string(max_head_dim) + "]");
  const int64_t n_heads = q.shape[1], n_kv = k_cache.shape[2];
  require(n_kv > 0 && (b.kv_group > 0 || n_heads % n_kv == 0), op,
          "q " + q.shape.str() + ": n_heads is not a multiple of k_cache " + k_cache.shape.str() +
              "'s n_kv_heads");
  const int64_t group = b.kv_group > 0 ? b.kv_group : n_heads / n_kv;
  auto kv_of = [&](int64_t h) { return (b.q_head_offset + h) / group - b.kv_head_offset; };
  require(n_heads == 0 || (kv_of(0) >= 0 && kv_of(n_heads - 1) < n_kv), op,
          "query heads [" + std::to_string(b.q_head_offset) + ", " +
              std::to_string(b.q_head_offset + n_heads) + ") map outside the " +
              std::to_string(n_kv) + " kv heads from " + std::to_string(b.kv_head_offset));
  require(b.n_seqs >= 0 && b.max_blocks >= 0, op, "n_seqs and max_blocks must be non-negative");
  require(b.decode_rows >= 0 && b.decode_rows <= b.n_seqs, op,
          "decode_rows " + std::to_string(b.decode_rows) + " is outside [0, n_seqs " + std::to_string(b.n_seqs) + "]");
  require(b.block_size == k_cache.shape[1], op,
          "batch block_size " + std::to_string(b.block_size) + " differs from the cache's " +
              std::to_string(k_cache.shape[1]));
  require_device(op, "query_start", b.query_start, dtype::i32);
  require_device(op, "context_len", b.context_len, dtype::i32);
  require_device(op, "block_tables", b.block_tables, dtype::i32);
  require_shape(op, "query_start", b.query_start, shape_t{b.n_seqs + 1});
  require_shape(op, "context_len", b.context_len, shape_t{b.n_seqs});
  require_shape(op, "block_tables", b.block_tables, shape_t{b.n_seqs, b.max_blocks});
  require(q.shape[0] < 65536 && n_heads < 65536 && k_cache.shape[0] <= INT32_MAX &&
              static_cast<int64_t>(b.max_blocks) * b.block_size <= INT32_MAX / 2,
          op, "q " + q.shape.str() + " or the cache " + k_cache.shape.str() + " is too large");
  attn_args a{};
  a.query_start = b.query_start.i32();
  a.context_len = b.context_len.i32();
  a.block_tables = b.block_tables.i32();
  a.n_seqs = b.n_seqs;
  a.max_blocks = b.max_blocks;
  a.block_size = b.block_size;
  a.n_blocks = static_cast<int>(k_cache.shape[0]);
  a.n_heads = static_cast<int>(n_heads);
  a.n_kv_heads = static_cast<int>(n_kv);
  a.head_dim = static_cast<int>(q.shape[2]);
  a.m = static_cast<int>(q.shape[0]);
  a.q_head_offset = b.q_head_offset;
  a.kv_group = static_cast<int>(group);
  a.kv_head_offset = b.kv_head_offset;
  a.scale = scale;
  if (!b.workspace.empty()) {
    require_device(op, "workspace", b.workspace, dtype::f32);
    a.workspace = b.workspace.f32();
    a.workspace_floats = b.workspace.numel();
  }
  if (!b.split_counts.empty()) {
    require_device(op, "split_counts", b.split_counts, dtype::i32);
    a.split_counts = b.split_counts.i32();
    a.n_split_counts = b.split_counts.numel();
  }
  return a;
}

template <class T>
void launch_decode(const op_context& ctx, T* out, const T* q, const T* kc, const T* vc,
                   const attn_args& a) {
  cudaStream_t st = stream_of(ctx);
  decode_partials p(st, a);
  const dim3 grid(a.n_heads, a.m, p.max_splits);
  const bool vec = a.head_dim % (16 / sizeof(T)) == 0 && reinterpret_cast<uintptr_t>(kc) % 16 == 0;
  decode_kernel<T><<<grid, decode_threads, 0, st>>>(out, p.part_o, p.part_ml, q, kc, vc, a,
                                                    p.max_splits, vec);
  check_launch("paged_attention", "decode_kernel");
  p.combine(out, a);
}

template <class T>
void launch_prefill(const op_context& ctx, T* out, const T* q, const T* kc, const T* vc,
                    const attn_args& a) {
  const char* op = "paged_attention";
  const size_t smem = static_cast<size_t>(prefill_smem_floats(a.head_dim)) * sizeof(float);
  check_cuda(cudaFuncSetAttribute(prefill_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)),
             op, "raising the prefill kernel's shared memory");
  const unsigned tiles = static_cast<unsigned>((a.m + tile_q - 1) / tile_q + a.n_seqs);
  prefill_kernel<T><<<dim3(tiles, a.n_heads), prefill_threads, smem, stream_of(ctx)>>>(
      out, q, kc, vc, a);
  check_launch(op, "prefill_kernel");
}

}  // namespace

void kv_write(const op_context& ctx, tensor_view k_cache, tensor_view v_cache, tensor_view k,
              tensor_view v, tensor_view slots) {
  const char* op = "kv_write";
  require_cuda_ctx(op, ctx);
  check_caches(op, k_cache, v_cache);
  require_device(op, "k", k);
  require_device(op, "v", v);
  require_device(op, "slots", slots, dtype::i32);
  require_same_type(op, "k", k, "k_cache", k_cache);
  require_same_type(op, "v", v, "k_cache", k_cache);
  require_rank(op, "k", k, 3);
  require_shape(op, "k", k, shape_t{k.shape[0], k_cache.shape[2], k_cache.shape[3]});
  require_shape(op, "v", v, k.shape);
  require_shape(op, "slots", slots, shape_t{k.shape[0]});
  require(k.shape[0] <= INT32_MAX, op, "k " + k.shape.str() + " has too many rows");
  const int64_t m = k.shape[0], row = k.shape[1] * k.shape[2];
  if (m == 0 || row == 0) return;
  dispatch_float(k.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    kv_write_kernel<T><<<static_cast<unsigned>(m), 128, 0, stream_of(ctx)>>>(
        static_cast<T*>(k_cache.data), static_cast<T*>(v_cache.data), static_cast<const T*>(k.data),
        static_cast<const T*>(v.data), slots.i32(), row, k_cache.shape[0] * k_cache.shape[1]);
  });
  check_launch(op, "kv_write_kernel");
}

/// A mixed batch whose first `d` sequences are single decode rows: the rest through flash
/// prefill (absolute rows: the same q and out, the arrays from sequence d on), the decode
/// rows through the decode kernels, which read each kv head once per row where the prefill
/// tiles read it once per query head and fill one row of 64. False, launching nothing, when
/// flash prefill does not take the rest.
template <class T>
bool split_mixed(const op_context& ctx, T* o, const T* qs, const T* kc, const T* vc, dtype type,
                 const attn_args& a, int d) {
  if (d <= 0 || d >= a.n_seqs) return false;
  attn_args rest = a;
  rest.query_start = a.query_start + d;
  rest.context_len = a.context_len + d;
  rest.block_tables = a.block_tables + static_cast<int64_t>(d) * a.max_blocks;
  rest.n_seqs = a.n_seqs - d;
  if (!flash_prefill(ctx, o, qs, kc, vc, type, rest)) return false;
  attn_args dec = a;
  dec.n_seqs = d;
  dec.m = d;
  if (!decode_grouped(ctx, o, qs, kc, vc, type, dec)) launch_decode<T>(ctx, o, qs, kc, vc, dec);
  return true;
}

void paged_attention(const op_context& ctx, tensor_view out, tensor_view q, tensor_view k_cache,
                     tensor_view v_cache, const attention_batch& batch, float scale) {
  require_cuda_ctx("paged_attention", ctx);
  const attn_args a = check_attention(out, q, k_cache, v_cache, batch, scale);
  if (a.m == 0 || a.n_heads == 0) return;
  dispatch_float(q.type, "paged_attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out.data);
    const T* qs = static_cast<const T*>(q.data);
    const T* kc = static_cast<const T*>(k_cache.data);
    const T* vc = static_cast<const T*>(v_cache.data);
    // Batch-invariant: decode and prefill rows alike take the prefill kernels, whose rows
    // do not depend on the batch nor on how a prompt was chunked.
    if (a.m <= a.n_seqs && !ctx.batch_invariant) {
      if (!decode_grouped(ctx, o, qs, kc, vc, q.type, a)) launch_decode<T>(ctx, o, qs, kc, vc, a);
    } else if (!ctx.batch_invariant && split_mixed<T>(ctx, o, qs, kc, vc, q.type, a, batch.decode_rows)) {
    } else if (!flash_prefill(ctx, o, qs, kc, vc, q.type, a)) {
      launch_prefill<T>(ctx, o, qs, kc, vc, a);
    }
  });
}

}  // namespace troupe::kernels::cuda
