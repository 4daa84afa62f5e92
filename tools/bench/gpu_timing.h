#pragma once
/// GPU timing helpers of troupe_gpu: the two ceilings (copy rate, bf16 matrix rate) and
/// per-op decode timings at a model's shape.
#include <algorithm>
#include <chrono>
#include <vector>

#include "kernels/attention.h"
#include "kernels/base/device.h"
#include "kernels/base/tensor.h"
#include "runtime/model/model_config.h"

namespace troupe::bench {

/// A decode batch of m sequences at context `ctx_len` (16-position blocks, one block table
/// a sequence): the attention metadata, positions and KV slots on the device, and the shape
/// of a layer's K (or V) cache that holds them.
struct decode_fixture {
  static constexpr int block = 16;
  static int max_blocks(int ctx_len) { return (ctx_len + block - 1) / block; }
  decode_fixture(const model_config& c, device_stream& s, int64_t m, int ctx_len);
  shape_t kv_shape;                    // [m * max_blocks, block, n_kv_heads, head_dim]
  tensor pos, slots;                   // [m] i32: the new token's position and KV slot
  tensor query_start;                  // [m + 1] i32
  tensor context_len;                  // [m] i32
  tensor block_tables;                 // [m, max_blocks] i32
  tensor workspace;                    // [kernels::decode_workspace_floats] f32: split partials, as a shard context keeps
  tensor split_counts;                 // [m * n_kv_heads] i32, zero: the fused split merge's (attention_batch::split_counts)
  kernels::attention_batch meta;       // views of the above
};

/// Median time in microseconds of one call of `f`, replayed from a CUDA graph of `per_graph`
/// calls (the way decode steps run), after one eager warm-up call.
template <class F>
double graph_us(device_stream& s, F f, int per_graph = 20, int reps = 7) {
  using clock_type = std::chrono::steady_clock;
  f();
  s.synchronize();
  device_graph::begin_capture(s.get());
  try {
    for (int i = 0; i < per_graph; ++i) f();
  } catch (...) {
    device_graph::abandon_capture(s.get());
    throw;
  }
  device_graph g = device_graph::end_capture(s.get());
  g.launch(s.get());
  s.synchronize();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clock_type::now();
    g.launch(s.get());
    s.synchronize();
    t.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count() / per_graph);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// The median of `v` (0 when empty).
double median(std::vector<double> v);

/// Device-to-device copy rate (bytes read + written per second) of a 1 GiB buffer.
double copy_rate(const device_ref& d);

/// bf16 matrix rate (FLOP/s) of one large cuBLASLt GEMM.
double gemm_rate(const device_ref& d);

/// Per-op decode timings at the shape of `c` (tensor 1) in weight type `t`, one JSON object
/// per line on stdout: every projection through cuBLASLt and through the skinny GEMV at
/// several row counts, and the other ops of a layer.
void run_kernel_timings(const model_config& c, const device_ref& d, dtype t);

/// One row's decode layers (tensor 1, context 192) as a chain of kernels in one CUDA graph,
/// 32 layers of distinct weights, the way the forward enqueues them; then the same chain with
/// op groups left out and under each GEMV tiling: what each costs inside the overlapped
/// (programmatic dependent launch) step. One JSON object per line on stdout.
void run_layer_chain(const model_config& c, const device_ref& d, dtype t);

}  // namespace troupe::bench
