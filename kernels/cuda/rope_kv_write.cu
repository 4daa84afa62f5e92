// CUDA fused RoPE + KV write over the fused q/k/v projection's output (kernels/rope_kv_write.h).
// Block (row, head) for the n_heads + 2 n_kv_heads heads of a row, head_dim / 2 threads:
// q and k heads rotate pair (i, i + head_dim/2) with the same float arithmetic as
// cuda::rope (angle = pos * inv_freq[i], sincosf, rotation in float), q heads to q, k heads
// to the cache; v heads are copied to the cache. Rows whose slot is outside the cache write
// no KV (as cuda::kv_write).
#include "kernels/cuda/common.cuh"
#include "kernels/rope_kv_write.h"

namespace troupe::kernels::cuda {
namespace {

/// Where head h of row r goes: q for h < nh, the k cache for the next nkv, the v cache for
/// the last nkv; null for a k or v head whose slot is outside the cache (no KV write).
template <class T>
__device__ __forceinline__ T* head_target(T* q, T* k_cache, T* v_cache, const int32_t* slots, int64_t r, int h,
                                          int nh, int nkv, int hd, int64_t n_slots) {
  if (h < nh) return q + (r * nh + h) * hd;
  const int64_t slot = slots[r];
  if (slot < 0 || slot >= n_slots) return nullptr;
  const int64_t kv_row = static_cast<int64_t>(nkv) * hd;
  return h < nh + nkv ? k_cache + slot * kv_row + static_cast<int64_t>(h - nh) * hd
                      : v_cache + slot * kv_row + static_cast<int64_t>(h - nh - nkv) * hd;
}

template <class T>
__global__ void rope_kv_write_kernel(T* q, T* k_cache, T* v_cache, const T* qkv, const int32_t* positions,
                                     const float* inv_freq, const int32_t* slots, int nh, int nkv, int hd,
                                     int64_t n_slots) {
  pdl_wait();  // launched with launch_pdl: nothing before this reads or writes
  pdl_trigger();
  const int64_t r = blockIdx.x;
  const int h = blockIdx.y, i = threadIdx.x, half = hd / 2;
  const T* src = qkv + r * static_cast<int64_t>(nh + 2 * nkv) * hd + static_cast<int64_t>(h) * hd;
  T* dst = head_target(q, k_cache, v_cache, slots, r, h, nh, nkv, hd, n_slots);
  if (!dst) return;
  if (h >= nh + nkv) {  // v head: copied
    dst[i] = src[i];
    dst[i + half] = src[i + half];
    return;
  }
  const float2 y = rope_rotate(to_f32(src[i]), to_f32(src[i + half]), static_cast<float>(positions[r]) * inv_freq[i]);
  dst[i] = from_f32<T>(y.x);
  dst[i + half] = from_f32<T>(y.y);
}

/// The same in 16-byte chunks (head_dim / 2 a multiple of 16 / sizeof(T), aligned rows):
/// thread item = (head, chunk j) of a row rotates the `per` pairs (j * per + e, half + j *
/// per + e) with the same float arithmetic (rope_rotate), so both agree bitwise.
/// Grid (rows, ceil(items / threads)): one item a thread, so a single row still spreads
/// over several blocks.
template <class T>
__global__ void rope_kv_write_vec_kernel(T* q, T* k_cache, T* v_cache, const T* qkv, const int32_t* positions,
                                         const float* inv_freq, const int32_t* slots, int nh, int nkv, int hd,
                                         int64_t n_slots) {
  pdl_wait();  // launched with launch_pdl: nothing before this reads or writes
  pdl_trigger();
  constexpr int per = 16 / sizeof(T);
  const int half = hd / 2, cph = half / per;  // chunks per half head
  const int item = blockIdx.y * blockDim.x + threadIdx.x;
  if (item >= (nh + 2 * nkv) * cph) return;
  const int h = item / cph, j = item % cph;
  const int64_t r = blockIdx.x;
  const T* src = qkv + r * static_cast<int64_t>(nh + 2 * nkv) * hd + static_cast<int64_t>(h) * hd;
  T* dst = head_target(q, k_cache, v_cache, slots, r, h, nh, nkv, hd, n_slots);
  if (!dst) return;
  const uint4 a4 = reinterpret_cast<const uint4*>(src)[j];
  const uint4 b4 = reinterpret_cast<const uint4*>(src + half)[j];
  if (h >= nh + nkv) {  // v head: copied
    reinterpret_cast<uint4*>(dst)[j] = a4;
    reinterpret_cast<uint4*>(dst + half)[j] = b4;
    return;
  }
  const T* x0 = reinterpret_cast<const T*>(&a4);
  const T* x1 = reinterpret_cast<const T*>(&b4);
  uint4 y0_4, y1_4;
  T* y0 = reinterpret_cast<T*>(&y0_4);
  T* y1 = reinterpret_cast<T*>(&y1_4);
  const float p = static_cast<float>(positions[r]);
#pragma unroll
  for (int e = 0; e < per; ++e) {
    const float2 y = rope_rotate(to_f32(x0[e]), to_f32(x1[e]), p * inv_freq[j * per + e]);
    y0[e] = from_f32<T>(y.x);
    y1[e] = from_f32<T>(y.y);
  }
  reinterpret_cast<uint4*>(dst)[j] = y0_4;
  reinterpret_cast<uint4*>(dst + half)[j] = y1_4;
}

}  // namespace

void rope_kv_write(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache,
                   tensor_view qkv, tensor_view positions, tensor_view inv_freq, tensor_view slots) {
  const char* op = "rope_kv_write";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "qkv", qkv);
  require_device(op, "q", q);
  require_device(op, "k_cache", k_cache);
  require_device(op, "v_cache", v_cache);
  require_device(op, "positions", positions, dtype::i32);
  require_device(op, "inv_freq", inv_freq, dtype::f32);
  require_device(op, "slots", slots, dtype::i32);
  require_same_type(op, "q", q, "qkv", qkv);
  require_same_type(op, "k_cache", k_cache, "qkv", qkv);
  require_same_type(op, "v_cache", v_cache, "qkv", qkv);
  require_rank(op, "q", q, 3);
  require_rank(op, "qkv", qkv, 2);
  require_rank(op, "k_cache", k_cache, 4);
  require_shape(op, "v_cache", v_cache, k_cache.shape);
  const int64_t m = q.shape[0], nh = q.shape[1], hd = q.shape[2], nkv = k_cache.shape[2];
  require(hd > 0 && hd % 2 == 0 && hd <= 2048, op, "q " + q.shape.str() + " needs an even head_dim <= 2048");
  require(k_cache.shape[3] == hd, op, "q " + q.shape.str() + " and k_cache " + k_cache.shape.str() + " disagree on head_dim");
  require_shape(op, "qkv", qkv, shape_t{m, (nh + 2 * nkv) * hd});
  require_shape(op, "positions", positions, shape_t{m});
  require_shape(op, "slots", slots, shape_t{m});
  require_shape(op, "inv_freq", inv_freq, shape_t{hd / 2});
  require(m <= 2147483647 && nh + 2 * nkv <= 65535, op, "qkv " + qkv.shape.str() + " is too large");
  if (m == 0 || nh + 2 * nkv == 0) return;
  const dim3 grid(static_cast<unsigned>(m), static_cast<unsigned>(nh + 2 * nkv));
  dispatch_float(qkv.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int64_t per = 16 / sizeof(T);
    const bool aligned = reinterpret_cast<uintptr_t>(q.data) % 16 == 0 && reinterpret_cast<uintptr_t>(qkv.data) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(k_cache.data) % 16 == 0 && reinterpret_cast<uintptr_t>(v_cache.data) % 16 == 0;
    if (aligned && (hd / 2) % per == 0) {
      constexpr unsigned threads = 128;
      const int64_t items = (nh + 2 * nkv) * (hd / 2 / per);
      launch_pdl(rope_kv_write_vec_kernel<T>, dim3(static_cast<unsigned>(m), static_cast<unsigned>((items + threads - 1) / threads)),
                 dim3(threads), 0, stream_of(ctx), static_cast<T*>(q.data), static_cast<T*>(k_cache.data),
                 static_cast<T*>(v_cache.data), static_cast<const T*>(qkv.data), positions.i32(), inv_freq.f32(), slots.i32(),
                 static_cast<int>(nh), static_cast<int>(nkv), static_cast<int>(hd), k_cache.shape[0] * k_cache.shape[1]);
      return;
    }
    launch_pdl(rope_kv_write_kernel<T>, grid, dim3(static_cast<unsigned>(hd / 2)), 0, stream_of(ctx),
        static_cast<T*>(q.data), static_cast<T*>(k_cache.data), static_cast<T*>(v_cache.data),
        static_cast<const T*>(qkv.data), positions.i32(), inv_freq.f32(), slots.i32(), static_cast<int>(nh),
        static_cast<int>(nkv), static_cast<int>(hd), k_cache.shape[0] * k_cache.shape[1]);
  });
  check_launch(op, "rope_kv_write_kernel");
}

}  // namespace troupe::kernels::cuda
