#include <catch2/catch.hpp>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/attention.h"
#include "kernels/rope.h"
#include "kernels/rope_kv_write.h"

using namespace troupe;
using troupe::test::cpu_ctx;
using troupe::test::f32_tensor;
using troupe::test::i32_tensor;
using troupe::test::random_floats;
using troupe::test::values;

TEST_CASE("rope_kv_write over fused q/k/v rows equals rope on q and k, then kv_write", "[kernels]") {
  std::mt19937 rng(32);
  const int64_t nh = 4, nkv = 2, hd = 8, m = 3, blocks = 4, bs = 2;
  const auto inv = kernels::rope_inv_freq(static_cast<int>(hd), 10000.0f, {});
  const std::vector<int32_t> pos{0, 5, 769}, slots{6, 1, 3};
  const auto qkv = random_floats(rng, static_cast<size_t>(m * (nh + 2 * nkv) * hd));
  std::vector<float> q, k, v;
  for (int64_t r = 0; r < m; ++r) {
    const auto row = qkv.begin() + r * (nh + 2 * nkv) * hd;
    q.insert(q.end(), row, row + nh * hd);
    k.insert(k.end(), row + nh * hd, row + (nh + nkv) * hd);
    v.insert(v.end(), row + (nh + nkv) * hd, row + (nh + 2 * nkv) * hd);
  }
  tensor tq = f32_tensor({m, nh, hd}, q), tk = f32_tensor({m, nkv, hd}, k), tv = f32_tensor({m, nkv, hd}, v);
  tensor tp = i32_tensor({m}, pos), ts = i32_tensor({m}, slots), tf = f32_tensor({hd / 2}, inv);
  const std::vector<float> zeros(static_cast<size_t>(blocks * bs * nkv * hd), 0.0f);
  tensor kc = f32_tensor({blocks, bs, nkv, hd}, zeros), vc = f32_tensor({blocks, bs, nkv, hd}, zeros);
  kernels::rope(cpu_ctx(), tq.view(), tp.view(), tf.view());
  kernels::rope(cpu_ctx(), tk.view(), tp.view(), tf.view());
  kernels::kv_write(cpu_ctx(), kc.view(), vc.view(), tk.view(), tv.view(), ts.view());

  tensor fq({m, nh, hd}, dtype::f32, backend_kind::cpu), tqkv = f32_tensor({m, (nh + 2 * nkv) * hd}, qkv);
  tensor fkc = f32_tensor({blocks, bs, nkv, hd}, zeros), fvc = f32_tensor({blocks, bs, nkv, hd}, zeros);
  kernels::rope_kv_write(cpu_ctx(), fq.view(), fkc.view(), fvc.view(), tqkv.view(), tp.view(), tf.view(), ts.view());
  CHECK(values(fq) == values(tq));
  CHECK(values(fkc) == values(kc));
  CHECK(values(fvc) == values(vc));
}

TEST_CASE("rope_kv_write rejects a qkv row of the wrong length", "[kernels]") {
  tensor q({1, 2, 4}, dtype::f32, backend_kind::cpu), qkv({1, 15}, dtype::f32, backend_kind::cpu);
  tensor kc({1, 2, 1, 4}, dtype::f32, backend_kind::cpu), vc({1, 2, 1, 4}, dtype::f32, backend_kind::cpu);
  tensor p = i32_tensor({1}, {0}), s = i32_tensor({1}, {0}), f({2}, dtype::f32, backend_kind::cpu);
  CHECK_THROWS_WITH(kernels::rope_kv_write(cpu_ctx(), q.view(), kc.view(), vc.view(), qkv.view(), p.view(), f.view(), s.view()),
                    Catch::Contains("qkv"));
}
