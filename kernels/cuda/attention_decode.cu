// Decode attention with one block per (row, kv head, split of split_len kv positions)
// serving every query head of the GQA group, so each K and V row is read once for the
// group, in 16-byte loads: CH lanes of a warp share a kv row (CH = 16-byte chunks per
// row), NT / CH rows per slot pass and UN passes in flight at once. The rows'
// offsets are looked up for the whole split first (one round trip to the block table),
// and the first V rows are loaded before the softmax, so a split costs a few memory
// round trips, not one per pass (the kernel before this was latency-bound: 24 us a layer
// at batch 1 under Nsight Compute, tools/gpu/profile.sh). Scores, softmax and the weighted sum are in
// float; the sum over a split's positions runs in a fixed order (per slot, then slots in
// order), and splits are cut at fixed positions and merged in split order, so a row's
// result depends on the rest of the batch only through the block size and split length
// the grid picks (launch_g: a grid that would not fill the multiprocessors takes shorter
// splits): the batch-invariant mode does not use this kernel (attention.cu).
#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "kernels/cuda/attention_common.cuh"

namespace troupe::kernels::cuda {
namespace {

constexpr int max_group = 8;  // query heads per kv head served by one block
// Threads a block (NT) and kv rows a thread has in flight a pass (UN): 8 rows, 256 threads
// for a grid smaller than the multiprocessor count, else 128 (launch_g); for head rows of 16
// chunks (head_dim 128 in 16-bit types) TROUPE_ATTN_VARIANT=3 pins 128 threads, 1 pins
// 16 rows and 2 pins 256 threads, for the benchmarks to compare; 4 pins the tensor-core
// kernel (attention_decode_mma.cu), which a grid of at least the SM count gets by default.

/// Unpacks a 16-byte chunk of T into floats.
template <class T>
__device__ __forceinline__ void unpack(const uint4& raw, float* f) {
  constexpr int per = 16 / sizeof(T);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < per; ++j) f[j] = to_f32(e[j]);
}

/// Shared memory of one block (G: query heads a block serves, a power of two).
template <int G, int EPC, int NT>
struct decode_smem {
  float p[G][split_len];           // scores, then softmax weights
  int64_t off[split_len];          // element offset of each position's kv row, or -1
  float red[NT * G * EPC];         // [slot, head, dim] partial outputs
  float m[G], l[G];                // per-head max and sum
};

/// Loads chunk c of the kv rows base + u * R + slot (u < UN) into raw: every load of a
/// pass is issued before any is used (the offsets come from shared memory, so no load
/// waits on another).
template <int R, int UN>
__device__ __forceinline__ void load_rows(uint4 (&raw)[UN], const int64_t* off, const void* cache,
                                          int base, int slot, int c, int len, int elem_bytes) {
#pragma unroll
  for (int u = 0; u < UN; ++u) {
    const int i = base + u * R + slot;
    const int64_t o = i < len ? off[i] : -1;
    raw[u] = o >= 0 ? reinterpret_cast<const uint4*>(static_cast<const char*>(cache) + o * elem_bytes)[c]
                    : make_uint4(0, 0, 0, 0);
  }
}

/// Scores of the split's positions for every head of the group into s.p; thread (slot,
/// chunk c) reads chunk c of rows slot, slot + R, ...
template <class T, int CH, int G, int EPC, int NT, int UN>
__device__ void score_pass(decode_smem<G, EPC, NT>& s, const float (&qf)[G][EPC], const T* k_cache, float scale,
                           int len, int group) {
  constexpr int R = NT / CH;
  const int c = threadIdx.x % CH, slot = threadIdx.x / CH;
  for (int base = 0; base < len; base += R * UN) {  // uniform: every lane shuffles
    uint4 raw[UN];
    load_rows<R, UN>(raw, s.off, k_cache, base, slot, c, len, sizeof(T));
#pragma unroll
    for (int u = 0; u < UN; ++u) {
      const int i = base + u * R + slot;
      float k[EPC];
      unpack<T>(raw[u], k);
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < EPC; ++e) dot += qf[h][e] * k[e];
#pragma unroll
        for (int o = CH / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        if (c == 0 && i < len && h < group) s.p[h][i] = s.off[i] >= 0 ? dot * scale : -INFINITY;
      }
    }
  }
}

/// Softmax of each head's scores in place (unnormalized weights; max and sum to s.m, s.l).
template <int G, int EPC, int NT>
__device__ void softmax_pass(decode_smem<G, EPC, NT>& s, int len, int group) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int h = warp; h < group; h += NT / 32) {
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

/// The softmax-weighted sum of the split's V rows, per slot (positions slot, slot + R, ...
/// in order), into acc; the first pass's rows are loaded before the softmax runs.
template <class T, int CH, int G, int EPC, int NT, int UN>
__device__ void value_pass(decode_smem<G, EPC, NT>& s, float (&acc)[G][EPC], const T* v_cache, int len, int group) {
  constexpr int R = NT / CH;
  const int c = threadIdx.x % CH, slot = threadIdx.x / CH;
  uint4 raw[UN];
  load_rows<R, UN>(raw, s.off, v_cache, 0, slot, c, len, sizeof(T));
  softmax_pass<G, EPC, NT>(s, len, group);
  __syncthreads();
  for (int base = 0; base < len; base += R * UN) {
    if (base > 0) load_rows<R, UN>(raw, s.off, v_cache, base, slot, c, len, sizeof(T));
#pragma unroll
    for (int u = 0; u < UN; ++u) {
      const int i = base + u * R + slot;
      if (i >= len || s.off[i] < 0) continue;
      float v[EPC];
      unpack<T>(raw[u], v);
#pragma unroll
      for (int h = 0; h < G; ++h) {
        const float p = h < group ? s.p[h][i] : 0.0f;
#pragma unroll
        for (int e = 0; e < EPC; ++e) acc[h][e] += p * v[e];
      }
    }
  }
}

/// The fused merge (decode_partials::fuse_merge): after its partials, a split counts itself
/// in counts[r, g]; the split that finds every other one done merges the group's heads of
/// row r (merged_element, in split order: combine_kernel's bits) and sets the count back to
/// zero for the next launch.
template <class T, int G, int NT>
__device__ void merge_if_last(T* out, const float* part_o, const float* part_ml, int* counts, const attn_args& a,
                              const decode_split& d, int r, int g, int max_splits) {
  __shared__ bool last;
  __threadfence();  // this block's partials before its count
  __syncthreads();
  if (threadIdx.x == 0) {
    int* c = counts + static_cast<int64_t>(r) * a.n_kv_heads + g;
    last = atomicAdd(c, 1) == d.n_splits - 1;
    if (last) *c = 0;  // every split of (r, g) has counted: none reads it again in this launch
  }
  __syncthreads();
  if (!last) return;
  __threadfence();  // the other splits' partials after their counts
  const int hd = a.head_dim;
  for (int e = threadIdx.x; e < d.group * hd; e += NT) {
    const int h = e / hd, dim = e % hd;
    const int64_t base = (static_cast<int64_t>(r) * a.n_heads + d.h_lo + h) * max_splits;
    out[d.row_off + e] = from_f32<T>(merged_element(part_o, part_ml, base, d.n_splits, hd, dim));
  }
}

template <class T, int CH, int G, int NT, int UN>
__global__ void __launch_bounds__(NT) grouped_kernel(T* out, float* part_o, float* part_ml, int* counts, const T* q,
                                                          const T* k_cache, const T* v_cache, attn_args a,
                                                          int max_splits) {
  constexpr int EPC = 16 / sizeof(T), HD = CH * EPC, R = NT / CH;
  __shared__ decode_smem<G, EPC, NT> s;
  const int g = blockIdx.x, r = blockIdx.y, z = blockIdx.z;
  // The block's share and every position's row offset (one block-table read each, all in
  // flight) come from the step's metadata, which no kernel writes: read while the kernel
  // before (the KV write) runs. q, the caches and `out` after pdl_wait.
  decode_split d;
  const bool work = decode_split_of(a, g, r, z, HD, d);
  const int h_lo = d.h_lo, group = d.group, seq = d.seq, start = d.start, len = d.len, n_splits = d.n_splits;
  const int64_t row_off = d.row_off;
  const int c = threadIdx.x % CH, slot = threadIdx.x / CH;
  if (work)
    for (int i = threadIdx.x; i < len; i += NT) s.off[i] = kv_offset(a, seq, start + i, g);
  pdl_wait();
  pdl_trigger();
  if (!work) return decode_zero_rows(d, HD, NT, out);
  float qf[G][EPC];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    if (h < group) unpack<T>(reinterpret_cast<const uint4*>(q + row_off + h * HD)[c], qf[h]);
    else
#pragma unroll
      for (int e = 0; e < EPC; ++e) qf[h][e] = 0.0f;
  }
  __syncthreads();
  score_pass<T, CH, G, EPC, NT, UN>(s, qf, k_cache, a.scale, len, group);
  __syncthreads();
  float acc[G][EPC] = {};
  value_pass<T, CH, G, EPC, NT, UN>(s, acc, v_cache, len, group);
#pragma unroll
  for (int h = 0; h < G; ++h)
#pragma unroll
    for (int e = 0; e < EPC; ++e) s.red[(slot * G + h) * HD + c * EPC + e] = acc[h][e];
  __syncthreads();
  for (int e = threadIdx.x; e < group * HD; e += NT) {
    const int h = e / HD, d = e % HD;
    float sum = 0.0f;
    for (int j = 0; j < R; ++j) sum += s.red[(j * G + h) * HD + d];
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
  if (n_splits > 1 && counts) merge_if_last<T, G, NT>(out, part_o, part_ml, counts, a, d, r, g, max_splits);
}

/// TROUPE_ATTN_VARIANT (0 by default: chosen by the grid; see NT and UN above).
int attn_variant() {
  static const int v = [] {
    const char* e = std::getenv("TROUPE_ATTN_VARIANT");
    return e && *e ? std::atoi(e) : 0;
  }();
  return v;
}

template <class T, int CH, int G, int NT, int UN>
void launch_v(cudaStream_t st, const decode_partials& p, T* out, const T* q, const T* kc, const T* vc,
              const attn_args& a) {
  const dim3 grid(a.n_kv_heads, a.m, p.max_splits);
  launch_pdl(grouped_kernel<T, CH, G, NT, UN>, grid, dim3(NT), 0, st, out, p.part_o, p.part_ml, p.counts, q, kc, vc,
             a, p.max_splits);
  check_launch("paged_attention", "grouped decode kernel");
}

/// Multiprocessors of the first device asked (cached per process; the GPUs of one host are
/// alike).
int sm_count() {
  static const int n = [] {
    int dev = 0, count = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return 132;
    return count;
  }();
  return n;
}

/// Blocks of a decode grid over `a` at `split` positions a split (kv heads x rows x splits).
int64_t grid_blocks(const attn_args& a, int split) {
  const int64_t context = static_cast<int64_t>(a.max_blocks) * a.block_size;
  return a.n_kv_heads * static_cast<int64_t>(a.m) * std::max<int64_t>((context + split - 1) / split, 1);
}

/// The split of a grid that would not fill the multiprocessors at split_len positions a
/// split: halved (down to 64) while the grid stays within the SM count, so a small batch's
/// positions are read by more blocks at once (their partials merged by combine_kernel).
int small_grid_split(const attn_args& a) {
  int split = split_len;
  while (split > 64 && grid_blocks(a, split / 2) <= sm_count()) split /= 2;
  return split;
}

/// Runs the grouped kernel of NT threads (UN rows each in flight) over `a`, then merges
/// its splits.
template <class T, int CH, int G, int NT, int UN>
void launch_split(cudaStream_t st, T* out, const T* q, const T* kc, const T* vc, const attn_args& a) {
  decode_partials p(st, a);
  p.fuse_merge(a);
  launch_v<T, CH, G, NT, UN>(st, p, out, q, kc, vc, a);
  p.combine(out, a);
}

/// 256 threads a block where the grid would not fill the multiprocessors once (a small
/// batch: each block then brings twice the rows in flight; measured on one H200 at batch 1,
/// Llama-3.1-8B shape: 4.43 against 4.59 ms a step), with splits shortened until the grid
/// nearly fills them (small_grid_split); else the tensor-core kernel where it applies, else
/// 128 threads (more blocks resident: 6.0 against 6.1 ms at batch 64, 10.4 against 11.0 at
/// 256). TROUPE_ATTN_VARIANT pins one (pinned, splits keep split_len positions).
template <class T, int CH, int G>
void launch_g(cudaStream_t st, T* out, const T* q, const T* kc, const T* vc, const attn_args& a) {
  const int variant = attn_variant();
  const bool small = grid_blocks(a, split_len) <= sm_count();
  attn_args shorter = a;
  if (variant == 0 && small) shorter.split = small_grid_split(a);
  if constexpr (sizeof(T) == 2) {
    const dtype type = std::is_same_v<T, __half> ? dtype::f16 : dtype::bf16;
    if (variant == 4 || (variant == 0 && !small)) {
      decode_partials p(st, a);
      if (decode_mma(st, out, p.part_o, p.part_ml, p.max_splits, q, kc, vc, type, a)) return p.combine(out, a);
    }
    if constexpr (CH == 16) {
      if (variant == 1) return launch_split<T, CH, G, 128, 16>(st, out, q, kc, vc, a);
      if constexpr (G <= 4) {  // 256 threads' partial sums fit the 48 KB of static shared memory
        if (variant == 2) return launch_split<T, CH, G, 256, 8>(st, out, q, kc, vc, a);
        if (variant == 0 && small) return launch_split<T, CH, G, 256, 8>(st, out, q, kc, vc, shorter);
      }
    }
  }
  launch_split<T, CH, G, 128, 8>(st, out, q, kc, vc, shorter);
}

/// The kernel for the group size rounded up to a power of two (registers and shared
/// memory scale with it).
template <class T, int CH>
void launch(cudaStream_t st, T* out, const T* q, const T* kc, const T* vc, const attn_args& a) {
  if (a.kv_group <= 1) return launch_g<T, CH, 1>(st, out, q, kc, vc, a);
  if (a.kv_group <= 2) return launch_g<T, CH, 2>(st, out, q, kc, vc, a);
  if (a.kv_group <= 4) return launch_g<T, CH, 4>(st, out, q, kc, vc, a);
  launch_g<T, CH, max_group>(st, out, q, kc, vc, a);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

env_switch fused_merge_switch{"TROUPE_ATTN_FUSED_MERGE"};

}  // namespace

bool fused_merge_enabled() { return fused_merge_switch.enabled(); }

void set_fused_merge(bool on) { fused_merge_switch.set(on); }

int64_t decode_workspace_floats(int rows, int n_heads, int n_kv_heads, int head_dim, int context) {
  static const bool off = [] {  // TROUPE_ATTN_WORKSPACE=0: none (benchmarks compare the two)
    const char* e = std::getenv("TROUPE_ATTN_WORKSPACE");
    return e && e[0] == '0';
  }();
  if (off) return 0;
  // Every decode step within the bounds: each row count, each span in 64-position steps (a
  // split is a multiple of 64, so a span between two takes the larger one's splits).
  int64_t most = 0;
  attn_args a{};
  a.n_kv_heads = n_kv_heads;
  a.block_size = 64;
  for (int m = 1; m <= rows; ++m)
    for (int blocks = 1; (blocks - 1) * 64 < context; ++blocks) {
      a.m = m;
      a.max_blocks = blocks;
      a.split = grid_blocks(a, split_len) <= sm_count() ? small_grid_split(a) : split_len;
      const int splits = decode_partials::splits_of(a);
      if (splits > 1) most = std::max(most, static_cast<int64_t>(m) * n_heads * splits * (head_dim + 2));
    }
  return most;
}

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
