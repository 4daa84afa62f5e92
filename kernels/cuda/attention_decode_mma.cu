// Decode attention on tensor cores, for a batch large enough to fill the GPU (f16/bf16,
// head_dim 64 or 128, a GQA group of at most 8 query heads). Same grid and split rule as
// attention_decode.cu's grouped kernel: one block per (kv head, row, split of split_len
// positions), and the same split-K partials; what changes is how a block computes.
//
// The group's query heads are the 16 rows of an mma.sync m16n8k16 A operand (rows past the
// group are zeros), so K and V are read once for the group and every product runs on
// tensor cores instead of CUDA-core dot products and shuffles (the grouped kernel was
// instruction-bound at batch 256: 84 us a layer, 1.75 TB/s, tools/gpu/profile.sh).
//
// A block has 4 warps and walks its split in tiles of 64 positions: the tile's K and V rows
// are gathered through the block table with 16-byte cp.async into shared memory, two tiles
// in flight; warp w owns positions [16 w, 16 w + 16) of every tile: S = Q K^T for them
// (2 n-tiles), masked past the split or for an invalid block, an online softmax per row in
// log2 units, P rounded to T is the A operand of O += P V (V through ldmatrix.trans). The 4
// warps' (max, sum, O) are merged in shared memory in warp order at the end, so a row's
// result depends on its own positions only (no atomics). It differs from the grouped
// kernel in the last bits (P is rounded to T before the product with V).
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/mma.cuh"

namespace troupe::kernels::cuda {
namespace {

constexpr int dm_threads = 128;  // 4 warps
constexpr int dm_tile = 64;      // kv positions per tile, 16 per warp
constexpr int dm_rows = 8;       // query heads a block may serve (rows of the merge)
constexpr float dm_log2e = 1.4426950408889634f;

/// Shared row stride in elements: head_dim plus 16 bytes of padding (distinct banks for
/// the 8 row addresses of an ldmatrix phase).
template <int HD>
constexpr int dm_ld = HD + 8;

/// Bytes of shared memory of one block: offsets [split_len] (i64), Q [16, HD + 8],
/// K [2, 64, HD + 8], V [2, 64, HD + 8]; the merge reuses K.
template <int HD>
constexpr int dm_smem_bytes() {
  return split_len * 8 + (16 + 4 * dm_tile) * dm_ld<HD> * 2;
}

/// Issues the cp.async copies of tile n's K and V rows into k_s, v_s [64, HD + 8]: zeros
/// past the split (len) or for an invalid block.
template <class T, int HD>
__device__ __forceinline__ void dm_load_tile(const T* k_cache, const T* v_cache, const int64_t* off, int n,
                                             int len, T* k_s, T* v_s) {
  constexpr int chunks = HD / 8, rows_per_pass = dm_threads / chunks;
  const int c = threadIdx.x % chunks;
#pragma unroll
  for (int i = 0; i < dm_tile / rows_per_pass; ++i) {
    const int r = threadIdx.x / chunks + i * rows_per_pass, j = n * dm_tile + r;
    const int64_t o = j < len ? off[j] : -1;
    const bool ok = o >= 0;
    const int e = r * dm_ld<HD> + c * 8;
    cp_async16(smem_addr(k_s + e), ok ? k_cache + o + c * 8 : k_cache, ok);
    cp_async16(smem_addr(v_s + e), ok ? v_cache + o + c * 8 : v_cache, ok);
  }
}

/// s[2][4] = the 16 query rows (A fragments qf) times K rows [16 w, 16 w + 16) of k_s:
/// s[n][i] is row g (i < 2) or g + 8, tile column 16 w + 8 n + 2 (lane % 4) + (i & 1).
template <class T, int HD>
__device__ __forceinline__ void dm_qk(float (&s)[2][4], const uint32_t (&qf)[HD / 16][4], const T* k_s, int warp,
                                      int lane) {
  constexpr int ld = dm_ld<HD>;
#pragma unroll
  for (int n = 0; n < 2; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
  // Matrices: (columns 0-7, k low), (0-7, k high), (8-15, k low), (8-15, k high).
  const uint32_t base = smem_addr(k_s + (16 * warp + (lane / 16) * 8 + lane % 8) * ld + ((lane / 8) % 2) * 8);
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    uint32_t b[4];
    ldmatrix_x4(b, base + 16 * kk * 2);
    mma16816<T>(s[0], qf[kk], b[0], b[1]);
    mma16816<T>(s[1], qf[kk], b[2], b[3]);
  }
}

/// Folds the warp's 16 scores of this tile into the online softmax of rows g and g + 8
/// (m[2] running max in log2 units, l[2] this thread's share of the sums), rescales o and
/// leaves P in s. Column j of the split is valid when j < len and off[j] >= 0.
template <int HD>
__device__ __forceinline__ void dm_softmax(float (&s)[2][4], float (&m)[2], float (&l)[2], float (&o)[HD / 8][4],
                                           const int64_t* off, int col0, int len, float scale_log2) {
#pragma unroll
  for (int n = 0; n < 2; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int j = col0 + 8 * n + (i & 1);
      s[n][i] = j < len && off[j] >= 0 ? s[n][i] * scale_log2 : -INFINITY;
    }
  online_softmax<2, HD>(s, m, l, o);
}

/// o [HD / 8][4] += P (the C fragments of s's two n-tiles are the A fragment of one k-step)
/// times V rows [16 w, 16 w + 16) of v_s.
template <class T, int HD>
__device__ __forceinline__ void dm_pv(float (&o)[HD / 8][4], const float (&p)[2][4], const T* v_s, int warp,
                                      int lane) {
  constexpr int ld = dm_ld<HD>;
  const uint32_t a[4] = {pack2<T>(p[0][0], p[0][1]), pack2<T>(p[0][2], p[0][3]), pack2<T>(p[1][0], p[1][1]),
                         pack2<T>(p[1][2], p[1][3])};
  // Matrices, transposed (positions, dims): (0, 8d), (8, 8d), (0, 8d + 8), (8, 8d + 8).
  const uint32_t base = smem_addr(v_s + (16 * warp + lane % 16) * ld + (lane / 16) * 8);
#pragma unroll
  for (int d = 0; d < HD / 8; d += 2) {
    uint32_t b[4];
    ldmatrix_x4_trans(b, base + 8 * d * 2);
    mma16816<T>(o[d], a, b[0], b[1]);
    mma16816<T>(o[d + 1], a, b[2], b[3]);
  }
}

/// Merges the 4 warps' rows g < group (in warp order) and writes the block's result: the
/// normalized rows when the row has one split, else its partials for combine_kernel (sum
/// relative to the max, the max in natural-log units, the sum of weights) at part0 + h *
/// max_splits for head h of the group.
template <class T, int HD>
__device__ void dm_merge(float* mo, float* mm, float* ml, const float (&o)[HD / 8][4], const float (&m)[2],
                         const float (&l)[2], int warp, int lane, int group, T* out, int64_t row_off,
                         float* part_o, float* part_ml, int64_t part0, int max_splits, int n_splits) {
  const int g = lane / 4;  // rows g + 8 are never a query head (group <= 8)
  float sum = l[0];
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  sum += __shfl_xor_sync(0xffffffffu, sum, 2);
  if (lane % 4 == 0) {
    mm[warp * dm_rows + g] = m[0];
    ml[warp * dm_rows + g] = sum;
  }
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) {
    float* dst = mo + (warp * dm_rows + g) * HD + 8 * d + 2 * (lane % 4);
    dst[0] = o[d][0];
    dst[1] = o[d][1];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < group * HD; e += dm_threads) {
    const int h = e / HD, d = e % HD;
    float mx = -INFINITY;
    for (int w = 0; w < 4; ++w) mx = fmaxf(mx, mm[w * dm_rows + h]);
    float acc = 0.0f, total = 0.0f;
    for (int w = 0; w < 4; ++w) {
      const float m_w = mm[w * dm_rows + h];
      if (m_w == -INFINITY) continue;
      const float f = exp2f(m_w - mx);
      acc += mo[(w * dm_rows + h) * HD + d] * f;
      total += ml[w * dm_rows + h] * f;
    }
    if (n_splits == 1) {
      out[row_off + e] = from_f32<T>(total > 0.0f ? acc / total : 0.0f);
    } else {
      const int64_t part = part0 + static_cast<int64_t>(h) * max_splits;
      part_o[part * HD + d] = acc;
      if (d == 0) {
        part_ml[part * 2] = mx == -INFINITY ? -INFINITY : mx / dm_log2e;
        part_ml[part * 2 + 1] = total;
      }
    }
  }
}

template <class T, int HD>
__global__ void __launch_bounds__(dm_threads) decode_mma_kernel(T* out, float* part_o, float* part_ml, const T* q,
                                                                const T* k_cache, const T* v_cache, attn_args a,
                                                                int max_splits) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int ld = dm_ld<HD>, tile_elems = dm_tile * ld;
  int64_t* off_s = reinterpret_cast<int64_t*>(smem);  // [split_len]
  T* q_s = reinterpret_cast<T*>(off_s + split_len);    // [16, HD + 8]
  T* k_s = q_s + 16 * ld;                              // [2, 64, HD + 8]
  T* v_s = k_s + 2 * tile_elems;                       // [2, 64, HD + 8]
  const int g = blockIdx.x, r = blockIdx.y, z = blockIdx.z;
  // The block's share and its positions' row offsets come from the step's metadata, which no
  // kernel writes: read while the kernel before runs; q, the caches and `out` after pdl_wait.
  decode_split d;
  const bool work = decode_split_of(a, g, r, z, HD, d);
  const int h_lo = d.h_lo, group = d.group, seq = d.seq, start = d.start, len = d.len, n_splits = d.n_splits;
  const int64_t row_off = d.row_off;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (work)
    for (int i = tid; i < len; i += dm_threads) off_s[i] = kv_offset(a, seq, start + i, g);
  pdl_wait();
  pdl_trigger();
  if (!work) return decode_zero_rows(d, HD, dm_threads, out);
  for (int e = tid; e < 16 * (HD / 8); e += dm_threads) {
    const int row = e / (HD / 8), c = e % (HD / 8);
    const bool ok = row < group;
    cp_async16(smem_addr(q_s + row * ld + c * 8), ok ? q + row_off + row * HD + c * 8 : q, ok);
  }
  cp_async_commit();
  __syncthreads();  // the offsets
  const int n_tiles = (len + dm_tile - 1) / dm_tile;
  dm_load_tile<T, HD>(k_cache, v_cache, off_s, 0, len, k_s, v_s);
  cp_async_commit();
  uint32_t qf[HD / 16][4];  // A fragments of the 16 rows, k-step kk = dims [16 kk, 16 kk + 16)
  float o[HD / 8][4];       // O rows g, g + 8; dims 8d + 2 (lane % 4) + {0, 1}
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // [2]: rows g, g + 8
  const float scale_log2 = a.scale * dm_log2e;
  for (int n = 0; n < n_tiles; ++n) {
    if (n + 1 < n_tiles)
      dm_load_tile<T, HD>(k_cache, v_cache, off_s, n + 1, len, k_s + ((n + 1) % 2) * tile_elems,
                          v_s + ((n + 1) % 2) * tile_elems);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (n == 0) {
      const uint32_t q_base = smem_addr(q_s + (lane % 16) * ld + (lane / 16) * 8);
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) ldmatrix_x4(qf[kk], q_base + 16 * kk * 2);
    }
    const int col0 = n * dm_tile + 16 * warp;
    if (col0 < len) {
      float s[2][4];  // S, then P
      dm_qk<T, HD>(s, qf, k_s + (n % 2) * tile_elems, warp, lane);
      dm_softmax<HD>(s, m, l, o, off_s, col0 + 2 * (lane % 4), len, scale_log2);
      dm_pv<T, HD>(o, s, v_s + (n % 2) * tile_elems, warp, lane);
    }
    __syncthreads();
  }
  float* mo = reinterpret_cast<float*>(k_s);  // [4, 8, HD] (reuses K: every warp is past it)
  float* mm = mo + 4 * dm_rows * HD;          // [4, 8]
  float* ml = mm + 4 * dm_rows;               // [4, 8]
  const int64_t part0 = (static_cast<int64_t>(r) * a.n_heads + h_lo) * max_splits + z;
  dm_merge<T, HD>(mo, mm, ml, o, m, l, warp, lane, group, out, row_off, part_o, part_ml, part0, max_splits, n_splits);
}

template <class T, int HD>
void launch(cudaStream_t st, T* out, float* part_o, float* part_ml, int max_splits, const T* q, const T* kc,
            const T* vc, const attn_args& a) {
  constexpr int smem = dm_smem_bytes<HD>();
  // Once per device (the attribute is per device; a process may drive several).
  static std::atomic<bool> raised[64];
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "paged_attention", "reading the current device");
  if (dev < 0 || dev >= 64 || !raised[dev].load(std::memory_order_acquire)) {
    check_cuda(cudaFuncSetAttribute(decode_mma_kernel<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
               "paged_attention", "raising the tensor-core decode kernel's shared memory");
    if (dev >= 0 && dev < 64) raised[dev].store(true, std::memory_order_release);
  }
  launch_pdl(decode_mma_kernel<T, HD>, dim3(a.n_kv_heads, a.m, max_splits), dim3(dm_threads), smem, st, out, part_o,
             part_ml, q, kc, vc, a, max_splits);
  check_launch("paged_attention", "tensor-core decode kernel");
}

}  // namespace

bool decode_mma(cudaStream_t st, void* out, float* part_o, float* part_ml, int max_splits, const void* q,
                const void* k_cache, const void* v_cache, dtype type, const attn_args& a) {
  if (type != dtype::f16 && type != dtype::bf16) return false;
  if (a.head_dim != 64 && a.head_dim != 128) return false;
  if (a.kv_group < 1 || a.kv_group > dm_rows) return false;
  const auto go = [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* o = static_cast<T*>(out);
    const T* qs = static_cast<const T*>(q);
    const T* kc = static_cast<const T*>(k_cache);
    const T* vc = static_cast<const T*>(v_cache);
    if (a.head_dim == 64) launch<T, 64>(st, o, part_o, part_ml, max_splits, qs, kc, vc, a);
    else launch<T, 128>(st, o, part_o, part_ml, max_splits, qs, kc, vc, a);
  };
  if (type == dtype::f16) go(type_tag<__half>{});
  else go(type_tag<__nv_bfloat16>{});
  return true;
}

}  // namespace troupe::kernels::cuda
