// CUDA embedding lookup: one block per output row copies its table row. Ids live on the
// device and are checked by the caller (kernels/embedding.h); an id outside the table
// still never reads outside it: its row is written as zeros.
#include "kernels/cuda/common.cuh"
#include "kernels/embedding.h"

namespace troupe::kernels::cuda {
namespace {

template <class T>
__global__ void embedding_kernel(T* out, const T* table, const int32_t* ids, int64_t rows,
                                 int64_t d) {
  const int64_t r = blockIdx.x;
  const int32_t id = ids[r];
  T* o = out + r * d;
  if (id < 0 || id >= rows) {
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = from_f32<T>(0.0f);
    return;
  }
  const T* src = table + static_cast<int64_t>(id) * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) o[i] = src[i];
}

}  // namespace

void embedding(const op_context& ctx, tensor_view out, tensor_view table, tensor_view ids) {
  const char* op = "embedding";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "table", table);
  require_device(op, "out", out);
  require_device(op, "ids", ids, dtype::i32);
  require_same_type(op, "out", out, "table", table);
  require_rank(op, "table", table, 2);
  require_rank(op, "ids", ids, 1);
  require_shape(op, "out", out, shape_t{ids.shape[0], table.shape[1]});
  const int64_t m = ids.shape[0], d = table.shape[1];
  require(m <= 2147483647, op, "too many ids: " + std::to_string(m));
  if (m == 0 || d == 0) return;
  dispatch_float(table.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    embedding_kernel<T><<<static_cast<unsigned>(m), 256, 0, stream_of(ctx)>>>(
        static_cast<T*>(out.data), static_cast<const T*>(table.data), ids.i32(), table.shape[0], d);
  });
  check_launch(op, "embedding_kernel");
}

}  // namespace troupe::kernels::cuda
