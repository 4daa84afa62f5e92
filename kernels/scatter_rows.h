#pragma once
/// Row scatter: the inverse of the embedding gather. Writes rows of a batch into chosen
/// rows of a table (a pipeline stage's log of the activations it sent, kept by KV slot).
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::scatter_rows.
void scatter_rows(const op_context& ctx, tensor_view table, tensor_view src, tensor_view index);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::scatter_rows.
void scatter_rows(const op_context& ctx, tensor_view table, tensor_view src, tensor_view index);
}  // namespace cuda
#endif

/// table[index[r], :] = src[r, :] for each row r (src [m, d], table [rows, d], index i32
/// [m]). Two rows with the same index must carry the same values (a shared prefix block);
/// which one lands is unspecified. The CPU checks the indices; CUDA skips rows outside.
inline void scatter_rows(const op_context& ctx, tensor_view table, tensor_view src, tensor_view index) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::scatter_rows(ctx, table, src, index);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::scatter_rows(ctx, table, src, index);
#else
      throw backend_unavailable("scatter_rows: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("scatter_rows: unknown backend");
}

}  // namespace troupe::kernels
