// Decode attention with one block per (row, kv head, split of split_len kv positions)
// serving every query head of the GQA group, so each K and V row is read once for the
// group, in 16-byte loads: CH lanes of a warp share a kv row (CH = 16-byte chunks per
// row), 128 / CH rows are in flight per pass. Scores, softmax and the weighted sum are in
// float; the sum over a split's positions runs in a fixed order (per slot, then slots in
// order), and splits are cut at fixed positions and merged in split order, so a row's
// result does not depend on the rest of the batch.
#include "kernels/cuda/attention_common.cuh"

namespace troupe::kernels::cuda {
namespace {

constexpr int threads = 128;
constexpr int max_group = 8;  // query heads per kv head served by one block
constexpr int unroll = 4;     // kv rows a thread has in flight in the score pass

/// The local query heads [lo, hi) that read local kv head g.
__device__ __forceinline__ void group_of(const attn_args& a, int g, int& lo, int& hi) {
  lo = max(0, (g + a.kv_head_offset) * a.kv_group - a.q_head_offset);
  hi = min(a.n_heads, (g + a.kv_head_offset + 1) * a.kv_group - a.q_head_offset);
}

/// Unpacks a 16-byte chunk of T into floats.
template <class T>
__device__ __forceinline__ void unpack(const uint4& raw, float* f) {
  constexpr int per = 16 / sizeof(T);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < per; ++j) f[j] = to_f32(e[j]);
}

/// Shared memory of one block.
template <int EPC>
struct decode_smem {
  float p[max_group][split_len];         // scores, then softmax weights
  int64_t off[split_len];                // element offset of each position's kv row, or -1
  float red[threads * max_group * EPC];  // [slot, head, dim] partial outputs
  float m[max_group], l[max_group];      // per-head max and sum
};

/// Scores of the split's positions for every head of the group into s.p (and the rows'
/// offsets into s.off); thread (slot, chunk c) reads chunk c of rows slot, slot + R, ...
template <class T, int CH, int EPC>
__device__ void score_pass(decode_smem<EPC>& s, const float (&qf)[max_group][EPC], const T* k_cache,
                           const attn_args& a, int seq, int g, int start, int len, int group) {
  constexpr int R = threads / CH;
  const int c = threadIdx.x % CH, slot = threadIdx.x / CH;
  for (int base = 0; base < len; base += R * unroll) {  // uniform: every lane shuffles
    uint4 raw[unroll];
    int64_t off[unroll];
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const int i = base + u * R + slot;
      off[u] = i < len ? kv_offset(a, seq, start + i, g) : -1;
      raw[u] = off[u] >= 0 ? reinterpret_cast<const uint4*>(k_cache + off[u])[c] : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < unroll; ++u) {
      const int i = base + u * R + slot;
      float k[EPC];
      unpack<T>(raw[u], k);
#pragma unroll
      for (int h = 0; h < max_group; ++h) {
        if (h >= group) break;
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < EPC; ++e) dot += qf[h][e] * k[e];
#pragma unroll
        for (int o = CH / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        if (c == 0 && i < len) s.p[h][i] = off[u] >= 0 ? dot * a.scale : -INFINITY;
      }
      if (c == 0 && i < len) s.off[i] = off[u];
    }
  }
}

/// Softmax of each head's scores in place (unnormalized weights; max and sum to s.m, s.l).
template <int EPC>
__device__ void softmax_pass(decode_smem<EPC>& s, int len, int group) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int h = warp; h < group; h += threads / 32) {
    float mx = -INFINITY;
    for (int i = lane; i < len; i += 32) mx = fmaxf(mx, s.p[h][i]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
    for (int i = lane; i < len; i += 32) {
      const float e = mx == -INFINITY ? 0.0f : expf(s.p[h][i] - mx);
      s.p[h][i] = e;
      sum += e;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) {
      s.m[h] = mx;
      s.l[h] = sum;
    }
  }
}

template <class T, int CH>
__global__ void __launch_bounds__(threads) grouped_kernel(T* out, float* part_o, float* part_ml, const T* q,
                                                          const T* k_cache, const T* v_cache, attn_args a,
                                                          int max_splits) {
  constexpr int EPC = 16 / sizeof(T), HD = CH * EPC, R = threads / CH;
  __shared__ decode_smem<EPC> s;
  const int g = blockIdx.x, r = blockIdx.y, z = blockIdx.z;
  int h_lo, h_hi;
  group_of(a, g, h_lo, h_hi);
  const int group = h_hi - h_lo;
  if (group <= 0) return;
  const int seq = find_seq(a, r);
  const int pos = seq < 0 ? -1 : row_position(a, seq, r);
  const int64_t row_off = (static_cast<int64_t>(r) * a.n_heads + h_lo) * HD;
  if (pos < 0) {
    if (z == 0)
      for (int e = threadIdx.x; e < group * HD; e += threads) out[row_off + e] = from_f32<T>(0.0f);
    return;
  }
  const int n_splits = pos / split_len + 1;
  if (z >= n_splits) return;
  const int start = z * split_len, len = min(split_len, pos + 1 - start);
  const int c = threadIdx.x % CH, slot = threadIdx.x / CH;
  float qf[max_group][EPC];
#pragma unroll
  for (int h = 0; h < max_group; ++h) {
    if (h < group) unpack<T>(reinterpret_cast<const uint4*>(q + row_off + h * HD)[c], qf[h]);
  }
  score_pass<T, CH, EPC>(s, qf, k_cache, a, seq, g, start, len, group);
  __syncthreads();
  softmax_pass<EPC>(s, len, group);
  __syncthreads();
  float acc[max_group][EPC] = {};
  for (int i = slot; i < len; i += R) {
    const int64_t off = s.off[i];
    if (off < 0) continue;
    float v[EPC];
    unpack<T>(reinterpret_cast<const uint4*>(v_cache + off)[c], v);
#pragma unroll
    for (int h = 0; h < max_group; ++h) {
      if (h >= group) break;
      const float p = s.p[h][i];
#pragma unroll
      for (int e = 0; e < EPC; ++e) acc[h][e] += p * v[e];
    }
  }
#pragma unroll
  for (int h = 0; h < max_group; ++h) {
    if (h >= group) break;
#pragma unroll
    for (int e = 0; e < EPC; ++e) s.red[(slot * max_group + h) * HD + c * EPC + e] = acc[h][e];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < group * HD; e += threads) {
    const int h = e / HD, d = e % HD;
    float sum = 0.0f;
    for (int j = 0; j < R; ++j) sum += s.red[(j * max_group + h) * HD + d];
    if (n_splits == 1) {
      out[row_off + e] = from_f32<T>(s.l[h] > 0.0f ? sum / s.l[h] : 0.0f);
    } else {
      const int64_t part = (static_cast<int64_t>(r) * a.n_heads + h_lo + h) * max_splits + z;
      part_o[part * HD + d] = sum;
      if (d == 0) {
        part_ml[part * 2] = s.m[h];
        part_ml[part * 2 + 1] = s.l[h];
      }
    }
  }
}

template <class T, int CH>
void launch(cudaStream_t st, T* out, const T* q, const T* kc, const T* vc, const attn_args& a) {
  decode_partials p(st, a);
  const dim3 grid(a.n_kv_heads, a.m, p.max_splits);
  grouped_kernel<T, CH><<<grid, threads, 0, st>>>(out, p.part_o, p.part_ml, q, kc, vc, a, p.max_splits);
  check_launch("paged_attention", "grouped decode kernel");
  p.combine(out, a);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool decode_grouped(const op_context& ctx, void* out, const void* q, const void* k_cache,
                    const void* v_cache, dtype type, const attn_args& a) {
  if (a.kv_group < 1 || a.kv_group > max_group) return false;
  if (!aligned16(out) || !aligned16(q) || !aligned16(k_cache) || !aligned16(v_cache)) return false;
  bool done = false;
  dispatch_float(type, "paged_attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const int bytes = a.head_dim * static_cast<int>(sizeof(T));
    if (bytes % 16 != 0) return;
    T* o = static_cast<T*>(out);
    const T* qs = static_cast<const T*>(q);
    const T* kc = static_cast<const T*>(k_cache);
    const T* vc = static_cast<const T*>(v_cache);
    cudaStream_t st = stream_of(ctx);
    switch (bytes / 16) {
      case 4: launch<T, 4>(st, o, qs, kc, vc, a); done = true; return;
      case 8: launch<T, 8>(st, o, qs, kc, vc, a); done = true; return;
      case 16: launch<T, 16>(st, o, qs, kc, vc, a); done = true; return;
      case 32: launch<T, 32>(st, o, qs, kc, vc, a); done = true; return;
      default: return;
    }
  });
  return done;
}

}  // namespace troupe::kernels::cuda
