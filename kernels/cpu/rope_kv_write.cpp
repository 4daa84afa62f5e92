// CPU reference of the fused RoPE + KV write: the q/k/v parts of each row copied out, then
// cpu::rope on q and k and cpu::kv_write, so it is the unfused path by construction.
#include "kernels/rope_kv_write.h"

#include <algorithm>
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/cpu/op_checks.h"
#include "kernels/rope.h"

namespace troupe::kernels::cpu {

void rope_kv_write(const op_context& ctx, tensor_view q, tensor_view k_cache, tensor_view v_cache,
                   tensor_view qkv, tensor_view positions, tensor_view inv_freq, tensor_view slots) {
  const char* op = "rope_kv_write";
  require_host(op, "q", q);
  require_host(op, "qkv", qkv);
  require_host(op, "k_cache", k_cache);
  require_rank(op, "q", q, 3);
  require_rank(op, "qkv", qkv, 2);
  require_rank(op, "k_cache", k_cache, 4);
  const int64_t m = q.shape[0], nh = q.shape[1], hd = q.shape[2], nkv = k_cache.shape[2];
  require_shape(op, "qkv", qkv, shape_t{m, (nh + 2 * nkv) * hd});
  const int64_t w = qkv.shape[1];
  tensor k({m, nkv, hd}, dtype::f32, backend_kind::cpu), v({m, nkv, hd}, dtype::f32, backend_kind::cpu);
  const float* src = qkv.f32();
  for (int64_t r = 0; r < m; ++r) {
    std::copy(src + r * w, src + r * w + nh * hd, q.f32() + r * nh * hd);
    std::copy(src + r * w + nh * hd, src + r * w + (nh + nkv) * hd, k.f32() + r * nkv * hd);
    std::copy(src + r * w + (nh + nkv) * hd, src + (r + 1) * w, v.f32() + r * nkv * hd);
  }
  cpu::rope(ctx, q, positions, inv_freq);
  cpu::rope(ctx, k.view(), positions, inv_freq);
  cpu::kv_write(ctx, k_cache, v_cache, k.view(), v.view(), slots);
}

}  // namespace troupe::kernels::cpu
