#pragma once
/// Token embedding lookup.
#include "kernels/op_context.h"

namespace troupe::kernels {

namespace cpu {
/// CPU implementation of kernels::embedding.
void embedding(const op_context& ctx, tensor_view out, tensor_view table, tensor_view ids);
}  // namespace cpu

#ifdef TROUPE_HAVE_CUDA_KERNELS
namespace cuda {
/// CUDA implementation of kernels::embedding.
void embedding(const op_context& ctx, tensor_view out, tensor_view table, tensor_view ids);
}  // namespace cuda
#endif

/// out[m, d] = table[ids[r], :] for each row r (ids: i32 [m]). Ids are checked by the caller.
inline void embedding(const op_context& ctx, tensor_view out, tensor_view table, tensor_view ids) {
  switch (ctx.backend) {
    case backend_kind::cpu:
      return cpu::embedding(ctx, out, table, ids);
    case backend_kind::cuda:
#ifdef TROUPE_HAVE_CUDA_KERNELS
      return cuda::embedding(ctx, out, table, ids);
#else
      throw backend_unavailable("embedding: this build has no CUDA kernels");
#endif
  }
  throw backend_unavailable("embedding: unknown backend");
}

}  // namespace troupe::kernels
