// Prefill attention on tensor cores: not written yet (a helper is writing it); until then
// every prefill runs the general kernel in attention.cu.
#include "kernels/cuda/attention_common.cuh"

namespace troupe::kernels::cuda {

bool flash_prefill(const op_context&, void*, const void*, const void*, const void*, dtype,
                   const attn_args&) {
  return false;
}

}  // namespace troupe::kernels::cuda
