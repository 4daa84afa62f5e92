// CUDA rotary position embedding, NeoX layout (dimension i pairs with i + head_dim/2), as
// the CPU reference: angle = pos * inv_freq[i] in float, then cosf / sinf (precise, not
// the fast intrinsics), rotation in float. One block per token row.
#include "kernels/cuda/common.cuh"
#include "kernels/rope.h"

namespace troupe::kernels::cuda {
namespace {

template <class T>
__global__ void rope_kernel(T* x, const int32_t* positions, const float* inv_freq, int64_t n_heads,
                            int64_t head_dim) {
  const int64_t r = blockIdx.x, half = head_dim / 2;
  const float p = static_cast<float>(positions[r]);
  T* row = x + r * n_heads * head_dim;
  for (int64_t it = threadIdx.x; it < n_heads * half; it += blockDim.x) {
    const int64_t h = it / half, i = it % half;
    T* v = row + h * head_dim;
    const float2 y = rope_rotate(to_f32(v[i]), to_f32(v[i + half]), p * inv_freq[i]);
    v[i] = from_f32<T>(y.x);
    v[i + half] = from_f32<T>(y.y);
  }
}

}  // namespace

void rope(const op_context& ctx, tensor_view x, tensor_view positions, tensor_view inv_freq) {
  const char* op = "rope";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "x", x);
  require_device(op, "positions", positions, dtype::i32);
  require_device(op, "inv_freq", inv_freq, dtype::f32);
  require_rank(op, "x", x, 3);
  require(x.shape[2] > 0 && x.shape[2] % 2 == 0, op,
          "x " + x.shape.str() + " needs an even, positive head_dim");
  require(x.shape[0] <= 2147483647, op, "x " + x.shape.str() + " has too many rows");
  require_shape(op, "positions", positions, shape_t{x.shape[0]});
  require_shape(op, "inv_freq", inv_freq, shape_t{x.shape[2] / 2});
  const int64_t m = x.shape[0];
  if (m == 0 || x.shape[1] == 0) return;
  dispatch_float(x.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    rope_kernel<T><<<static_cast<unsigned>(m), 256, 0, stream_of(ctx)>>>(
        static_cast<T*>(x.data), positions.i32(), inv_freq.f32(), x.shape[1], x.shape[2]);
  });
  check_launch(op, "rope_kernel");
}

}  // namespace troupe::kernels::cuda
