// A timing table of the CUDA kernels at Llama-3-8B shapes (hidden tag: run it explicitly
// with troupe_tests "[.cuda-bench]"). Not a test of speed: it asserts only that each
// timed op ran and took a positive time.
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <catch2/catch.hpp>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/rmsnorm.h"
#include "kernels/sample.h"

using namespace troupe;
using namespace troupe::test;

namespace {

/// Mean time in microseconds of `reps` runs of f after 3 warm-ups.
double time_us(const std::function<void()>& f, int reps = 20) {
  for (int i = 0; i < 3; ++i) f();
  cudaEvent_t a, b;
  cuda_ok(cudaEventCreate(&a), "event");
  cuda_ok(cudaEventCreate(&b), "event");
  cuda_ok(cudaEventRecord(a), "record");
  for (int i = 0; i < reps; ++i) f();
  cuda_ok(cudaEventRecord(b), "record");
  cuda_ok(cudaEventSynchronize(b), "sync");
  float ms = 0;
  cuda_ok(cudaEventElapsedTime(&ms, a, b), "elapsed");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return 1000.0 * ms / reps;
}

/// A device tensor of `s` in type t filled with small values.
tensor filled(shape_t s, dtype t, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (auto& x : v) x = u(rng);
  return to_device(v, s, t);
}

}  // namespace

TEST_CASE("CUDA kernel timings at Llama-3-8B shapes", "[.cuda-bench]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(1);
  const auto ctx = cuda_ctx();
  const dtype bf = dtype::bf16;
  std::printf("| op | shape | time (us) | rate |\n| --- | --- | --- | --- |\n");
  {  // the copy roofline
    const size_t bytes = size_t{1} << 30;
    tensor a({static_cast<int64_t>(bytes / 4)}, dtype::f32, backend_kind::cuda);
    tensor b({static_cast<int64_t>(bytes / 4)}, dtype::f32, backend_kind::cuda);
    const double us = time_us([&] { cudaMemcpyAsync(b.view().data, a.view().data, bytes, cudaMemcpyDeviceToDevice); }, 10);
    std::printf("| d2d copy | 1 GiB | %.1f | %.0f GB/s (read+write) |\n", us, 2.0 * bytes / us / 1e3);
    CHECK(us > 0);
  }
  for (int64_t m : {1, 16, 2048})
    for (auto kn : {std::pair<int64_t, int64_t>{4096, 14336}, {4096, 4096}, {14336, 4096}}) {
      tensor x = filled({m, kn.first}, bf, rng), w = filled({kn.second, kn.first}, bf, rng);
      tensor out({m, kn.second}, bf, backend_kind::cuda);
      const double us = time_us([&] { kernels::matmul(ctx, out.view(), x.view(), w.view(), {}); });
      const double gbs = 2.0 * kn.first * kn.second / us / 1e3;
      const double tflops = 2.0 * m * kn.first * kn.second / us / 1e6;
      std::printf("| matmul bf16 | m=%ld k=%ld n=%ld | %.1f | %.0f GB/s weights, %.1f TFLOP/s |\n",
                  static_cast<long>(m), static_cast<long>(kn.first), static_cast<long>(kn.second), us,
                  gbs, tflops);
      CHECK(us > 0);
    }
  {
    tensor x = filled({16, 4096}, bf, rng), w = filled({4096}, bf, rng), r = filled({16, 4096}, bf, rng);
    tensor out({16, 4096}, bf, backend_kind::cuda);
    const double us = time_us([&] { kernels::add_rmsnorm(ctx, out.view(), r.view(), x.view(), w.view(), 1e-5f); });
    std::printf("| add_rmsnorm bf16 | m=16 d=4096 | %.1f | |\n", us);
    CHECK(us > 0);
  }
  for (int64_t batch : {1, 16}) {  // decode: 32 heads, 8 kv heads, hd 128, 4096 tokens each
    const int bs = 16, ctx_len = 4096, per_seq = ctx_len / bs;
    const int64_t n_blocks = batch * per_seq;
    tensor kc = filled({n_blocks, bs, 8, 128}, bf, rng), vc = filled({n_blocks, bs, 8, 128}, bf, rng);
    tensor q = filled({batch, 32, 128}, bf, rng), out({batch, 32, 128}, bf, backend_kind::cuda);
    std::vector<int32_t> qs, cl, bt;
    for (int64_t s = 0; s <= batch; ++s) qs.push_back(static_cast<int32_t>(s));
    for (int64_t s = 0; s < batch; ++s) {
      cl.push_back(ctx_len);
      for (int b = 0; b < per_seq; ++b) bt.push_back(static_cast<int32_t>(s * per_seq + b));
    }
    tensor dqs = to_device_i32(qs, {batch + 1}), dcl = to_device_i32(cl, {batch});
    tensor dbt = to_device_i32(bt, {batch, per_seq});
    kernels::attention_batch ab;
    ab.n_seqs = static_cast<int>(batch);
    ab.max_blocks = per_seq;
    ab.block_size = bs;
    ab.query_start = dqs.view();
    ab.context_len = dcl.view();
    ab.block_tables = dbt.view();
    const double us = time_us([&] { kernels::paged_attention(ctx, out.view(), q.view(), kc.view(), vc.view(), ab, 0.088f); });
    std::printf("| decode attention bf16 | batch=%ld ctx=4096 32/8 heads hd=128 | %.1f | %.0f GB/s kv |\n",
                static_cast<long>(batch), us, 2.0 * kc.bytes() / us / 1e3);
    CHECK(us > 0);
  }
  {  // prefill: one 2048-token prompt
    const int bs = 16, len = 2048, per_seq = len / bs;
    tensor kc = filled({per_seq, bs, 8, 128}, bf, rng), vc = filled({per_seq, bs, 8, 128}, bf, rng);
    tensor q = filled({len, 32, 128}, bf, rng), out({len, 32, 128}, bf, backend_kind::cuda);
    std::vector<int32_t> bt(per_seq);
    for (int b = 0; b < per_seq; ++b) bt[static_cast<size_t>(b)] = b;
    tensor dqs = to_device_i32({0, len}, {2}), dcl = to_device_i32({len}, {1}), dbt = to_device_i32(bt, {1, per_seq});
    kernels::attention_batch ab;
    ab.n_seqs = 1;
    ab.max_blocks = per_seq;
    ab.block_size = bs;
    ab.query_start = dqs.view();
    ab.context_len = dcl.view();
    ab.block_tables = dbt.view();
    const double us = time_us([&] { kernels::paged_attention(ctx, out.view(), q.view(), kc.view(), vc.view(), ab, 0.088f); }, 3);
    std::printf("| prefill attention bf16 | 2048 tokens 32/8 heads hd=128 | %.1f | %.1f TFLOP/s (causal) |\n", us,
                2.0 * 2 * 32 * 128 * (double{len} * len / 2) / us / 1e6);
    CHECK(us > 0);
  }
  {
    tensor logits = filled({1, 128256}, dtype::f32, rng), tok({1}, dtype::i32, backend_kind::cuda);
    std::vector<kernels::sample_row> rows(1);
    rows[0].top_p = 0.9f;
    rows[0].top_k = 50;
    const double us = time_us([&] { kernels::sample(ctx, tok.view(), logits.view(), rows); });
    const double us_arg = time_us([&] { kernels::argmax(ctx, tok.view(), logits.view()); });
    std::printf("| sample top-k 50 top-p 0.9 | vocab 128256 | %.1f | |\n| argmax | vocab 128256 | %.1f | |\n", us, us_arg);
    CHECK(us > 0);
  }
}
#endif
