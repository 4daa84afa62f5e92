// The CUDA fused-projection kernels (swiglu, rope_kv_write) against their CPU references
// (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/kernel_test_util.h"
#include "kernels/attention.h"
#include "kernels/rope.h"
#include "kernels/rope_kv_write.h"
#include "kernels/swiglu.h"

using namespace troupe;
using namespace troupe::test;

TEST_CASE("CUDA swiglu matches the CPU at awkward sizes in every float type", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(41);
  for (dtype t : float_types())
    for (int64_t f : {1, 769, 5125, 5128})  // 5128: whole 16-byte chunks (the vectorized kernel)
      for (int64_t m : {1, 3}) {
        CAPTURE(dtype_name(t), f, m);
        const auto gu = round_to(random_floats(rng, m * 2 * f, -6.0f, 6.0f), t);
        tensor hgu = f32_tensor({m, 2 * f}, gu), ho({m, f}, dtype::f32, backend_kind::cpu);
        kernels::swiglu(cpu_ctx(), ho.view(), hgu.view());
        tensor dgu = to_device(gu, {m, 2 * f}, t), dout({m, f}, t, backend_kind::cuda);
        cuda_ok(cudaMemset(dout.view().data, 0xff, dout.bytes()), "poison");
        kernels::swiglu(cuda_ctx(), dout.view(), dgu.view());
        CHECK(max_rel_error(to_host(dout), values(ho)) <= tolerance(t));
      }
}

TEST_CASE("CUDA rope_kv_write matches the CPU (q and both caches, llama3 scaling, far positions)", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(42);
  kernels::rope_scaling llama3;
  llama3.type = kernels::rope_scaling::kind::llama3;
  llama3.factor = 8.0f;
  for (dtype t : float_types())
    for (int64_t hd : {2, 64, 128})
      for (int64_t nh : {1, 7}) {
        const int64_t nkv = 2, m = 5, blocks = 4, bs = 4;
        CAPTURE(dtype_name(t), hd, nh);
        const auto inv = kernels::rope_inv_freq(static_cast<int>(hd), 500000.0f, llama3);
        const std::vector<int32_t> pos{0, 1, 769, 5125, 131071}, slots{3, 0, 15, 7, 9};
        const auto qkv = round_to(random_floats(rng, m * (nh + 2 * nkv) * hd), t);
        const auto cache0 = round_to(random_floats(rng, blocks * bs * nkv * hd), t);
        tensor hq({m, nh, hd}, dtype::f32, backend_kind::cpu), hqkv = f32_tensor({m, (nh + 2 * nkv) * hd}, qkv);
        tensor hk = f32_tensor({blocks, bs, nkv, hd}, cache0), hv = f32_tensor({blocks, bs, nkv, hd}, cache0);
        tensor hp = i32_tensor({m}, pos), hs = i32_tensor({m}, slots), hf = f32_tensor({hd / 2}, inv);
        kernels::rope_kv_write(cpu_ctx(), hq.view(), hk.view(), hv.view(), hqkv.view(), hp.view(), hf.view(), hs.view());
        tensor dq({m, nh, hd}, t, backend_kind::cuda), dqkv = to_device(qkv, {m, (nh + 2 * nkv) * hd}, t);
        tensor dk = to_device(cache0, {blocks, bs, nkv, hd}, t), dv = to_device(cache0, {blocks, bs, nkv, hd}, t);
        tensor dp = to_device_i32(pos, {m}), ds = to_device_i32(slots, {m}), df = to_device(inv, {hd / 2}, dtype::f32);
        cuda_ok(cudaMemset(dq.view().data, 0xff, dq.bytes()), "poison");
        kernels::rope_kv_write(cuda_ctx(), dq.view(), dk.view(), dv.view(), dqkv.view(), dp.view(), df.view(), ds.view());
        CHECK(max_rel_error(to_host(dq), values(hq)) <= tolerance(t));
        CHECK(max_rel_error(to_host(dk), values(hk)) <= tolerance(t));
        CHECK(max_rel_error(to_host(dv), values(hv)) <= tolerance(t));
      }
}

TEST_CASE("CUDA rope_kv_write equals rope + kv_write bitwise on the device", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(43);
  const int64_t nh = 32, nkv = 8, hd = 128, m = 3, blocks = 2, bs = 16;
  const auto inv = kernels::rope_inv_freq(static_cast<int>(hd), 500000.0f, {});
  const std::vector<int32_t> pos{4, 77, 1000}, slots{0, 17, 31};
  const auto qkv = round_to(random_floats(rng, m * (nh + 2 * nkv) * hd), dtype::bf16);
  std::vector<float> q, k, v;
  for (int64_t r = 0; r < m; ++r) {
    const auto row = qkv.begin() + r * (nh + 2 * nkv) * hd;
    q.insert(q.end(), row, row + nh * hd);
    k.insert(k.end(), row + nh * hd, row + (nh + nkv) * hd);
    v.insert(v.end(), row + (nh + nkv) * hd, row + (nh + 2 * nkv) * hd);
  }
  const std::vector<float> zeros(static_cast<size_t>(blocks * bs * nkv * hd), 0.0f);
  const dtype t = dtype::bf16;
  tensor dp = to_device_i32(pos, {m}), ds = to_device_i32(slots, {m}), df = to_device(inv, {hd / 2}, dtype::f32);
  tensor q1 = to_device(q, {m, nh, hd}, t), k1 = to_device(k, {m, nkv, hd}, t), v1 = to_device(v, {m, nkv, hd}, t);
  tensor kc1 = to_device(zeros, {blocks, bs, nkv, hd}, t), vc1 = to_device(zeros, {blocks, bs, nkv, hd}, t);
  kernels::rope(cuda_ctx(), q1.view(), dp.view(), df.view());
  kernels::rope(cuda_ctx(), k1.view(), dp.view(), df.view());
  kernels::kv_write(cuda_ctx(), kc1.view(), vc1.view(), k1.view(), v1.view(), ds.view());
  tensor q2({m, nh, hd}, t, backend_kind::cuda), dqkv = to_device(qkv, {m, (nh + 2 * nkv) * hd}, t);
  tensor kc2 = to_device(zeros, {blocks, bs, nkv, hd}, t), vc2 = to_device(zeros, {blocks, bs, nkv, hd}, t);
  kernels::rope_kv_write(cuda_ctx(), q2.view(), kc2.view(), vc2.view(), dqkv.view(), dp.view(), df.view(), ds.view());
  CHECK(to_host(q2) == to_host(q1));
  CHECK(to_host(kc2) == to_host(kc1));
  CHECK(to_host(vc2) == to_host(vc1));
}
#endif
