// CUDA row scatter: one block per source row copies it into its table row. Indices live
// on the device; a row whose index is outside the table is skipped (never written past it).
#include "kernels/cuda/common.cuh"
#include "kernels/scatter_rows.h"

namespace troupe::kernels::cuda {
namespace {

template <class T>
__global__ void scatter_rows_kernel(T* table, const T* src, const int32_t* index, int64_t rows, int64_t d) {
  const int64_t r = blockIdx.x;
  const int32_t id = index[r];
  if (id < 0 || id >= rows) return;
  T* dst = table + static_cast<int64_t>(id) * d;
  const T* s = src + r * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) dst[i] = s[i];
}

}  // namespace

void scatter_rows(const op_context& ctx, tensor_view table, tensor_view src, tensor_view index) {
  const char* op = "scatter_rows";
  require_cuda_ctx(op, ctx);
  require_device_float(op, "table", table);
  require_device(op, "src", src);
  require_device(op, "index", index, dtype::i32);
  require_same_type(op, "src", src, "table", table);
  require_rank(op, "table", table, 2);
  require_rank(op, "index", index, 1);
  require_shape(op, "src", src, shape_t{index.shape[0], table.shape[1]});
  const int64_t m = index.shape[0], d = table.shape[1];
  require(m <= 2147483647, op, "too many rows: " + std::to_string(m));
  if (m == 0 || d == 0) return;
  dispatch_float(table.type, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    scatter_rows_kernel<T><<<static_cast<unsigned>(m), 256, 0, stream_of(ctx)>>>(
        static_cast<T*>(table.data), static_cast<const T*>(src.data), index.i32(), table.shape[0], d);
  });
  check_launch(op, "scatter_rows_kernel");
}

}  // namespace troupe::kernels::cuda
