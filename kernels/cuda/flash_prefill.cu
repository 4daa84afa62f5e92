// Prefill attention on tensor cores (FlashAttention-2 style), f16 and bf16, head_dim 64
// or 128; everything else (f32, other head_dims, a pointer not 16-byte aligned, a grid
// too tall) returns false, launching nothing, and the caller runs the general kernel.
//
// Work split: one block of 4 warps per (query head, 64-row query tile of one sequence);
// grid x = query heads (the heads of one GQA group run side by side and share K/V in L2),
// grid y = tiles, numbered by find_tile and walked last tile first within a sequence (the
// longest causal rows start first). Warp w owns rows [16w, 16w + 16) of the tile.
//
// Data path: the Q tile goes global -> shared (cp.async) -> registers once, as
// m16n8k16 A fragments (ldmatrix.x4). KV tiles of 64 positions start at absolute
// positions 0, 64, 128, ... up to the tile's last row; each position is gathered through
// the block table (offsets computed two tiles ahead into a 3-slot ring) with 16-byte
// cp.async into a double-buffered shared K/V tile, zero-filled where the position is past
// the tile's last row or its block id is outside the cache. Shared rows are padded by 8
// elements (16 bytes), so the 8 row addresses of every ldmatrix phase hit distinct banks.
//
// Per KV tile and warp: S[16, 64] = Q K^T with mma.sync m16n8k16 (K rows are the B
// operand's columns: plain ldmatrix); scale folded with log2(e) and exp2f; masked
// (position after the row, or invalid block) -> -inf; online softmax per row in registers
// (a thread holds rows g and g + 8 of its warp, g = lane / 4; row max across the 4 lanes
// of a quad, row sums kept per thread and summed across the quad at the end). P is
// rounded to T in registers and is directly the A operand of O += P V (V through
// ldmatrix.trans); O stays in f32 registers. A warp skips KV tiles entirely after its
// rows. At the end O / l is staged through the warp's own Q rows in shared memory and
// written with 16-byte stores; a row whose position is outside [0, max_blocks *
// block_size), or that has no valid kv position, is written as zeros; tile rows past the
// sequence's rows are computed on zeros and not written.
//
// Each row's result depends only on its q row and its kv positions: tiles are cut at
// absolute positions, a KV tile fully masked for a row leaves it unchanged bit for bit,
// no atomics. It differs from attention.cu's general prefill kernel in the last bits.
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/attention_common.cuh"
#include "kernels/cuda/mma.cuh"

namespace troupe::kernels::cuda {
namespace {

constexpr int fp_rows = 64;     // query rows per block
constexpr int fp_kv = 64;       // kv positions per tile
constexpr int fp_threads = 128; // 4 warps of 16 rows
constexpr float log2e = 1.4426950408889634f;

/// Shared row stride in elements: head_dim plus 16 bytes of padding.
template <int HD>
constexpr int row_stride = HD + 8;

/// Bytes of shared memory of one block: kv offsets [3, 64] (i64), validity masks [3, 2]
/// (u32, padded to 16 bytes), then Q [64, HD + 8], K [2, 64, HD + 8], V [2, 64, HD + 8].
template <int HD>
constexpr int smem_bytes() {
  return 3 * fp_kv * 8 + 32 + 5 * fp_rows * row_stride<HD> * 2;
}

/// One block's view of the batch: its sequence, tile rows and kv range.
struct tile_info {
  int s = 0, h = 0, g = 0;  // sequence, query head, kv head
  int first = 0;            // batch row of the tile's row 0
  int n_rows = 0;           // rows of the tile that belong to the sequence
  int pos0 = 0;             // position of row 0, clamped to [-128, max_pos]
  int max_pos = 0;          // max_blocks * block_size
  int kv_last = -1;         // last kv position any valid row reads
  int n_tiles = 0;          // kv tiles: kv_last / 64 + 1, or 0
};

/// Finds this block's tile (last tile of a sequence first); false past the last tile.
__device__ inline bool block_tile(const attn_args& a, tile_info& ti) {
  int tile;
  if (!find_tile(a, fp_rows, blockIdx.y, ti.s, tile)) return false;
  const int n_query = a.query_start[ti.s + 1] - a.query_start[ti.s];
  tile = (n_query + fp_rows - 1) / fp_rows - 1 - tile;
  ti.h = blockIdx.x;
  ti.g = kv_head_of(a, ti.h);
  ti.first = a.query_start[ti.s] + tile * fp_rows;
  ti.n_rows = min(fp_rows, n_query - tile * fp_rows);
  ti.max_pos = a.max_blocks * a.block_size;
  const int64_t pos0 = static_cast<int64_t>(a.context_len[ti.s]) - n_query + tile * fp_rows;
  ti.pos0 = static_cast<int>(pos0 < -128 ? -128 : (pos0 > ti.max_pos ? ti.max_pos : pos0));
  ti.kv_last = min(ti.pos0 + ti.n_rows - 1, ti.max_pos - 1);
  ti.n_tiles = ti.kv_last < 0 ? 0 : ti.kv_last / fp_kv + 1;
  return true;
}

/// True when tile row r is a row of the batch (it is read and written).
__device__ __forceinline__ bool row_in_batch(const attn_args& a, const tile_info& ti, int r) {
  return r < ti.n_rows && ti.first + r >= 0 && ti.first + r < a.m;
}

/// Called by 64 threads (idx = 0..63, two whole warps): the element offset of kv position
/// kv_tile * 64 + idx into off [64] (-1 past kv_last or for an invalid block), and the
/// validity bits of the tile into mask [2] (bit j of word w: position 32 w + j).
__device__ inline void tile_offsets(const attn_args& a, const tile_info& ti, int kv_tile, int idx,
                                    int64_t* off, uint32_t* mask) {
  const int t = kv_tile * fp_kv + idx;
  const int64_t o = t <= ti.kv_last ? kv_offset(a, ti.s, t, ti.g) : -1;
  off[idx] = o;
  const uint32_t bits = __ballot_sync(0xffffffffu, o >= 0);
  if (idx % 32 == 0) mask[idx / 32] = bits;
}

/// Issues the cp.async copies of the Q tile [64, HD] into q_s [64, HD + 8] (zeros for rows
/// outside the batch).
template <class T, int HD>
__device__ inline void load_q(const attn_args& a, const tile_info& ti, const T* q, T* q_s) {
  constexpr int chunks = HD / 8, rows_per_pass = fp_threads / chunks;
  const int c = threadIdx.x % chunks;
#pragma unroll
  for (int i = 0; i < fp_rows / rows_per_pass; ++i) {
    const int r = threadIdx.x / chunks + i * rows_per_pass;
    const bool ok = row_in_batch(a, ti, r);
    const int64_t row = static_cast<int64_t>(ti.first + r) * a.n_heads + ti.h;
    const T* src = ok ? q + row * HD + c * 8 : q;
    cp_async16(smem_addr(q_s + r * row_stride<HD> + c * 8), src, ok);
  }
}

/// Issues the cp.async copies of one KV tile: position j of the tile (offset off[j], [64])
/// into row j of k_s and v_s [64, HD + 8]; zeros where off[j] < 0.
template <class T, int HD>
__device__ inline void load_kv(const T* k_cache, const T* v_cache, const int64_t* off, T* k_s,
                               T* v_s) {
  constexpr int chunks = HD / 8, rows_per_pass = fp_threads / chunks;
  const int c = threadIdx.x % chunks;
#pragma unroll
  for (int i = 0; i < fp_kv / rows_per_pass; ++i) {
    const int r = threadIdx.x / chunks + i * rows_per_pass;
    const int64_t o = off[r];
    const bool ok = o >= 0;
    const int e = r * row_stride<HD> + c * 8;
    cp_async16(smem_addr(k_s + e), ok ? k_cache + o + c * 8 : k_cache, ok);
    cp_async16(smem_addr(v_s + e), ok ? v_cache + o + c * 8 : v_cache, ok);
  }
}

/// s[8][4] = the warp's 16 Q rows (fragments qf [HD / 16][4]) times the 64 K rows of k_s:
/// s[n][i] is row g (i < 2) or g + 8, kv column 8 n + 2 (lane % 4) + (i & 1).
template <class T, int HD>
__device__ __forceinline__ void qk_tile(float (&s)[8][4], const uint32_t (&qf)[HD / 16][4],
                                        const T* k_s, int lane) {
  constexpr int ld = row_stride<HD>;
#pragma unroll
  for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
  // Matrices: (columns 8n, k low), (8n, k high), (8n + 8, k low), (8n + 8, k high).
  const uint32_t base =
      smem_addr(k_s + ((lane / 16) * 8 + lane % 8) * ld + ((lane / 8) % 2) * 8);
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk)
#pragma unroll
    for (int n = 0; n < 8; n += 2) {
      uint32_t b[4];  // B fragments: n-tile n (b[0], b[1]), n-tile n + 1 (b[2], b[3])
      ldmatrix_x4(b, base + (8 * n * ld + 16 * kk) * 2);
      mma16816<T>(s[n], qf[kk], b[0], b[1]);
      mma16816<T>(s[n + 1], qf[kk], b[2], b[3]);
    }
}

/// Folds one tile of scores s[8][4] (layout of qk_tile) into the online softmax of this
/// thread's rows g and g + 8: masks, scales to log2 units, updates the running max m[2] and
/// this thread's share of the row sums l[2], rescales o [HD / 8][4] and leaves P in s.
/// `mask` holds the tile's valid positions; rp0 is the position of row g.
template <int HD>
__device__ __forceinline__ void softmax_tile(float (&s)[8][4], float (&m)[2], float (&l)[2],
                                             float (&o)[HD / 8][4], bool need_mask,
                                             uint64_t mask, int kv0, int rp0, int lane,
                                             float scale_log2) {
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int i = 0; i < 4; ++i) s[n][i] *= scale_log2;
  if (need_mask) {
    const int col0 = 2 * (lane % 4);
    const uint64_t bits = mask >> col0;  // bit c: column col0 + c
    const int lim = rp0 - kv0 - col0;    // row g sees columns col0 + c with c <= lim
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int c = 8 * n + (i & 1);
        if (!((bits >> c) & 1u) || c > lim + (i / 2) * 8) s[n][i] = -INFINITY;
      }
  }
  online_softmax<8, HD>(s, m, l, o);
}

/// o [HD / 8][4] += P (p[8][4], layout of qk_tile) times the 64 V rows of v_s: the C
/// fragments of S n-tiles 2j and 2j + 1 are exactly the A fragment of k-step j.
template <class T, int HD>
__device__ __forceinline__ void pv_tile(float (&o)[HD / 8][4], const float (&p)[8][4],
                                        const T* v_s, int lane) {
  constexpr int ld = row_stride<HD>;
  // Matrices, transposed (positions, dims): (16j, 8d), (16j + 8, 8d), (16j, 8d + 8),
  // (16j + 8, 8d + 8).
  const uint32_t base = smem_addr(v_s + (lane % 16) * ld + (lane / 16) * 8);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t a[4] = {pack2<T>(p[2 * j][0], p[2 * j][1]),  // A fragment of k-step j
                           pack2<T>(p[2 * j][2], p[2 * j][3]),
                           pack2<T>(p[2 * j + 1][0], p[2 * j + 1][1]),
                           pack2<T>(p[2 * j + 1][2], p[2 * j + 1][3])};
#pragma unroll
    for (int d = 0; d < HD / 8; d += 2) {
      uint32_t b[4];  // B fragments: dims 8d (b[0], b[1]), dims 8d + 8 (b[2], b[3])
      ldmatrix_x4_trans(b, base + (16 * j * ld + 8 * d) * 2);
      mma16816<T>(o[d], a, b[0], b[1]);
      mma16816<T>(o[d + 1], a, b[2], b[3]);
    }
  }
}

/// Writes the warp's 16 rows: O / l (zeros for a row outside [0, max_pos) or with l == 0)
/// staged in the warp's own rows of q_s [64, HD + 8], then 16-byte stores to out.
template <class T, int HD>
__device__ inline void write_rows(const attn_args& a, const tile_info& ti, T* out, T* q_s,
                                  const float (&o)[HD / 8][4], const float (&l)[2], int warp,
                                  int lane) {
  constexpr int ld = row_stride<HD>, chunks = HD / 8;
  float inv[2];  // [2]: 1 / l of rows g, g + 8, or 0 for a row written as zeros
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = l[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int pos = ti.pos0 + 16 * warp + lane / 4 + 8 * r;
    inv[r] = pos >= 0 && pos < ti.max_pos && sum > 0.0f ? 1.0f / sum : 0.0f;
  }
  T* rows = q_s + 16 * warp * ld;
#pragma unroll
  for (int d = 0; d < HD / 8; ++d)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float v0 = inv[r] == 0.0f ? 0.0f : o[d][2 * r] * inv[r];
      const float v1 = inv[r] == 0.0f ? 0.0f : o[d][2 * r + 1] * inv[r];
      *reinterpret_cast<uint32_t*>(rows + (lane / 4 + 8 * r) * ld + 8 * d + 2 * (lane % 4)) =
          pack2<T>(v0, v1);
    }
  __syncwarp();
#pragma unroll
  for (int i = 0; i < 16 * chunks / 32; ++i) {
    const int e = lane + 32 * i, r = e / chunks, c = e % chunks;
    if (!row_in_batch(a, ti, 16 * warp + r)) continue;
    T* dst = out + (static_cast<int64_t>(ti.first + 16 * warp + r) * a.n_heads + ti.h) * HD + c * 8;
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(rows + r * ld + c * 8);
  }
}

/// One (query head, 64-row query tile) of prefill attention; see the file comment.
template <class T, int HD>
__global__ void __launch_bounds__(fp_threads, HD == 128 ? 2 : 4)
    flash_prefill_kernel(T* out, const T* q, const T* k_cache, const T* v_cache, attn_args a) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int tile_elems = fp_rows * row_stride<HD>;
  int64_t* off_s = reinterpret_cast<int64_t*>(smem);             // [3, 64]
  uint32_t* mask_s = reinterpret_cast<uint32_t*>(off_s + 3 * fp_kv);  // [3, 2] (+2 padding)
  T* q_s = reinterpret_cast<T*>(mask_s + 8);                      // [64, HD + 8]
  T* k_s = q_s + tile_elems;                                      // [2, 64, HD + 8]
  T* v_s = k_s + 2 * tile_elems;                                  // [2, 64, HD + 8]
  tile_info ti;
  if (!block_tile(a, ti)) return;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // Offsets of kv tiles 0 (threads 0-63) and 1 (threads 64-127); then Q, then KV tile 0.
  if (tid / 64 < ti.n_tiles) tile_offsets(a, ti, tid / 64, tid % 64, off_s + (tid / 64) * fp_kv,
                                          mask_s + (tid / 64) * 2);
  load_q<T, HD>(a, ti, q, q_s);
  cp_async_commit();
  __syncthreads();
  if (ti.n_tiles > 0) load_kv<T, HD>(k_cache, v_cache, off_s, k_s, v_s);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();
  uint32_t qf[HD / 16][4];  // A fragments of the warp's rows, k-step kk = dims [16 kk, 16 kk + 16)
  const uint32_t q_base =
      smem_addr(q_s + (16 * warp + lane % 16) * row_stride<HD> + (lane / 16) * 8);
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) ldmatrix_x4(qf[kk], q_base + 16 * kk * 2);
  float o[HD / 8][4];  // O rows g, g + 8; dims 8d + 2 (lane % 4) + {0, 1}
#pragma unroll
  for (int d = 0; d < HD / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // [2]: rows g, g + 8
  const int warp_rows = min(16, ti.n_rows - 16 * warp);  // the warp's rows of the sequence
  const int warp_last = warp_rows > 0 ? min(ti.pos0 + 16 * warp + warp_rows - 1, ti.kv_last) : -1;
  const int rp0 = ti.pos0 + 16 * warp + lane / 4;
  const float scale_log2 = a.scale * log2e;
  for (int n = 0; n < ti.n_tiles; ++n) {
    if (n + 1 < ti.n_tiles)
      load_kv<T, HD>(k_cache, v_cache, off_s + ((n + 1) % 3) * fp_kv,
                     k_s + ((n + 1) % 2) * tile_elems, v_s + ((n + 1) % 2) * tile_elems);
    cp_async_commit();
    if (n + 2 < ti.n_tiles && tid < 64)
      tile_offsets(a, ti, n + 2, tid, off_s + ((n + 2) % 3) * fp_kv, mask_s + ((n + 2) % 3) * 2);
    cp_async_wait<1>();
    __syncthreads();
    const int kv0 = n * fp_kv;
    if (kv0 <= warp_last) {
      const uint32_t* words = mask_s + (n % 3) * 2;
      const uint64_t mask = words[0] | static_cast<uint64_t>(words[1]) << 32;
      const bool need_mask = mask != ~0ull || kv0 + fp_kv - 1 > ti.pos0 + 16 * warp;
      float s[8][4];  // S, then P: rows g, g + 8; kv columns 8n + 2 (lane % 4) + {0, 1}
      qk_tile<T, HD>(s, qf, k_s + (n % 2) * tile_elems, lane);
      softmax_tile<HD>(s, m, l, o, need_mask, mask, kv0, rp0, lane, scale_log2);
      pv_tile<T, HD>(o, s, v_s + (n % 2) * tile_elems, lane);
    }
    __syncthreads();
  }
  write_rows<T, HD>(a, ti, out, q_s, o, l, warp, lane);
}

/// Launches flash_prefill_kernel<T, HD> over every tile of the batch.
template <class T, int HD>
void launch(const op_context& ctx, void* out, const void* q, const void* k_cache,
            const void* v_cache, const attn_args& a, unsigned tiles) {
  const char* op = "paged_attention";
  constexpr int smem = smem_bytes<HD>();
  check_cuda(cudaFuncSetAttribute(flash_prefill_kernel<T, HD>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
             op, "raising the flash prefill kernel's shared memory");
  flash_prefill_kernel<T, HD><<<dim3(a.n_heads, tiles), fp_threads, smem, stream_of(ctx)>>>(
      static_cast<T*>(out), static_cast<const T*>(q), static_cast<const T*>(k_cache),
      static_cast<const T*>(v_cache), a);
  check_launch(op, "flash_prefill_kernel");
}

/// True when p is 16-byte aligned.
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool flash_prefill(const op_context& ctx, void* out, const void* q, const void* k_cache,
                   const void* v_cache, dtype type, const attn_args& a) {
  if (type != dtype::f16 && type != dtype::bf16) return false;
  if (a.head_dim != 64 && a.head_dim != 128) return false;
  if (!aligned16(out) || !aligned16(q) || !aligned16(k_cache) || !aligned16(v_cache)) return false;
  const int64_t tiles = (static_cast<int64_t>(a.m) + fp_rows - 1) / fp_rows + a.n_seqs;
  if (tiles > 65535 || a.n_heads <= 0) return false;
  const unsigned t = static_cast<unsigned>(tiles);
  if (type == dtype::f16) {
    if (a.head_dim == 64) launch<__half, 64>(ctx, out, q, k_cache, v_cache, a, t);
    else launch<__half, 128>(ctx, out, q, k_cache, v_cache, a, t);
  } else {
    if (a.head_dim == 64) launch<__nv_bfloat16, 64>(ctx, out, q, k_cache, v_cache, a, t);
    else launch<__nv_bfloat16, 128>(ctx, out, q, k_cache, v_cache, a, t);
  }
  return true;
}

}  // namespace troupe::kernels::cuda
