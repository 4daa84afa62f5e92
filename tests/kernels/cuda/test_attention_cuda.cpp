// The CUDA kv_write and paged attention (decode with split-K, flash-style prefill) against
// the CPU reference (needs a GPU; skipped without one).
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "attention_test_util.h"
#include "kernels/matmul.h"

using namespace troupe;
using namespace troupe::test;


TEST_CASE("CUDA decode attention with GQA and split-K matches the CPU at contexts 1, 769 and 5125",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(19);
  const std::vector<seq_spec> seqs{{1, 1}, {769, 1}, {5125, 1}, {16, 1}, {513, 1}};
  for (dtype t : float_types()) {
    CAPTURE(dtype_name(t));
    CHECK(attention_error(rng, seqs, {6, 2, 64}, t) <= tolerance(t));
    CHECK(attention_error(rng, seqs, {4, 4, 80}, t) <= tolerance(t));
    CHECK(attention_error(rng, seqs, {2, 1, 1}, t) <= tolerance(t));
  }
}

TEST_CASE("CUDA grouped decode attention matches the CPU for GQA groups 1 to 8 and head_dim 64 to 256",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(23);
  const std::vector<seq_spec> seqs{{1, 1}, {769, 1}, {5125, 1}, {129, 1}};
  for (dtype t : float_types())
    for (head_spec h : {head_spec{8, 2, 128}, head_spec{8, 1, 64}, head_spec{4, 4, 128},
                        head_spec{2, 1, 256}, head_spec{16, 1, 64}}) {
      CAPTURE(dtype_name(t), h.n_heads, h.n_kv, h.head_dim);
      CHECK(attention_error(rng, seqs, h, t) <= tolerance(t));
    }
}

TEST_CASE("CUDA tensor-core decode attention (a batch that fills the GPU) matches the CPU at awkward contexts",
          "[cuda]") {
  // 40 rows x the kv heads x the splits exceed the SM count (132 on an H200), so f16 and
  // bf16 at head_dim 64 and 128 run attention_decode_mma.cu; f32 and head_dim 80 run the
  // CUDA-core kernel on the same batch.
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(29);
  const int ctxs[] = {1, 769, 5125, 16, 64, 65, 255, 256, 257, 513};
  std::vector<seq_spec> seqs;
  for (int i = 0; i < 40; ++i) seqs.push_back({ctxs[i % 10], 1});
  for (dtype t : float_types())
    for (head_spec h : {head_spec{32, 8, 128}, head_spec{16, 2, 64}, head_spec{8, 8, 128}, head_spec{12, 4, 80}}) {
      CAPTURE(dtype_name(t), h.n_heads, h.n_kv, h.head_dim);
      CHECK(attention_error(rng, seqs, h, t) <= tolerance(t));
    }
}

TEST_CASE("CUDA decode attention gives a row bitwise the same alone and in a batch of 9 when batch-invariant",
          "[cuda]") {
  // Without the mode the grouped decode kernel picks its block size from the grid (a small
  // batch gets 256 threads), which sums a row in another order: equal within tolerance only.
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(24);
  const std::vector<seq_spec> batch{{700, 1}, {1, 1},   {129, 1}, {5125, 1}, {16, 1},
                                    {300, 1}, {2048, 1}, {77, 1},  {640, 1}};
  for (dtype t : float_types())
    for (head_spec h : {head_spec{8, 2, 128}, head_spec{4, 4, 80}}) {
      CAPTURE(dtype_name(t), h.n_heads, h.head_dim);
      const size_t row = static_cast<size_t>(h.n_heads) * h.head_dim;
      const auto alone = attention_run(rng, {batch[0]}, h, t, 99, true);
      const auto in_batch = attention_run(rng, batch, h, t, 99, true);
      REQUIRE(alone.cuda.size() == row);
      CHECK(std::equal(alone.cuda.begin(), alone.cuda.end(), in_batch.cuda.begin()));
      CHECK(max_rel_error(alone.cuda, alone.cpu) <= tolerance(t));
      const auto fast_alone = attention_run(rng, {batch[0]}, h, t, 99);
      const auto fast_batch = attention_run(rng, batch, h, t, 99);
      const std::vector<float> fast_row(fast_batch.cuda.begin(), fast_batch.cuda.begin() + static_cast<long>(row));
      CHECK(max_rel_error(fast_alone.cuda, fast_alone.cpu) <= tolerance(t));
      CHECK(max_rel_error(fast_row, fast_alone.cpu) <= tolerance(t));
    }
}

TEST_CASE("CUDA prefill attention matches the CPU for full, chunked and mixed-in decode rows",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(20);
  const std::vector<seq_spec> seqs{{77, 77}, {100, 37}, {769, 1}, {40, 0}, {33, 2}};
  for (dtype t : float_types())
    for (head_spec h : {head_spec{4, 4, 80}, head_spec{6, 2, 128}, head_spec{2, 1, 1}}) {
      CAPTURE(dtype_name(t), h.n_heads, h.n_kv, h.head_dim);
      CHECK(attention_error(rng, seqs, h, t) <= tolerance(t));
    }
}

TEST_CASE("CUDA attention of a mixed batch with its decode rows first (decode kernels, then flash prefill) "
          "matches the CPU", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(22);
  // Four leading decode rows (contexts 1 to 5125), then chunks and a late single row; and
  // 40 leading decode rows, enough for the tensor-core decode kernel's grid.
  std::vector<seq_spec> many(40, seq_spec{300, 1});
  many.push_back({200, 64});
  many.push_back({90, 90});
  for (const auto& seqs : {std::vector<seq_spec>{{300, 1}, {5125, 1}, {1, 1}, {769, 1}, {77, 77}, {100, 37}, {40, 1}},
                           many})
    for (dtype t : float_types())
      for (head_spec h : {head_spec{8, 2, 128}, head_spec{4, 4, 64}, head_spec{6, 2, 80}}) {
        CAPTURE(seqs.size(), dtype_name(t), h.n_heads, h.n_kv, h.head_dim);
        CHECK(attention_error(rng, seqs, h, t) <= tolerance(t));
      }
}

TEST_CASE("CUDA prefill attention over a 1100-token prompt matches the CPU", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(21);
  for (dtype t : {dtype::f32, dtype::bf16}) {
    CAPTURE(dtype_name(t));
    CHECK(attention_error(rng, {{1100, 1100}}, {2, 1, 128}, t) <= tolerance(t));
  }
}

TEST_CASE("CUDA attention follows a tensor-parallel slice's head mapping in decode and prefill",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  std::mt19937 rng(22);
  head_spec slice{2, 1, 64};
  slice.q_head_offset = 2;
  slice.kv_group = 2;
  slice.kv_head_offset = 1;
  CHECK(attention_error(rng, {{600, 1}, {5, 1}}, slice, dtype::f32) <= tolerance(dtype::f32));
  CHECK(attention_error(rng, {{60, 60}, {5, 1}}, slice, dtype::f32) <= tolerance(dtype::f32));
}

TEST_CASE("CUDA paged_attention rejects a head mapping outside the cache's kv heads", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  tensor dq({1, 4, 8}, dtype::f32, backend_kind::cuda), d_out({1, 4, 8}, dtype::f32, backend_kind::cuda);
  tensor dkc({1, 16, 1, 8}, dtype::f32, backend_kind::cuda), dvc({1, 16, 1, 8}, dtype::f32, backend_kind::cuda);
  tensor dqs = to_device_i32({0, 1}, {2}), dcl = to_device_i32({1}, {1}), dbt = to_device_i32({0}, {1, 1});
  kernels::attention_batch b;
  b.n_seqs = 1;
  b.max_blocks = 1;
  b.query_start = dqs.view();
  b.context_len = dcl.view();
  b.block_tables = dbt.view();
  b.kv_group = 2;
  CHECK_THROWS_WITH(kernels::paged_attention(cuda_ctx(), d_out.view(), dq.view(), dkc.view(),
                                             dvc.view(), b, 1.0f),
                    Catch::Contains("map outside the 1 kv heads"));
}

TEST_CASE("CUDA decode attention keeps its split partials in a workspace with the bits of allocating them",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  // One row (a small grid: shortened splits), 40 rows (the tensor-core kernel) and 5 rows.
  std::vector<seq_spec> many;
  for (int i = 0; i < 40; ++i) many.push_back({257 + 61 * i, 1});
  for (const auto& seqs : {std::vector<seq_spec>{{192, 1}}, many, std::vector<seq_spec>{{1, 1}, {769, 1}, {5125, 1},
                                                                                        {64, 1}, {300, 1}}})
    for (dtype t : {dtype::bf16, dtype::f16}) {
      CAPTURE(seqs.size(), dtype_name(t));
      std::mt19937 a(41), b(41);
      const auto allocated = attention_run(a, seqs, {32, 8, 128}, t);
      const auto kept = attention_run(b, seqs, {32, 8, 128}, t, 0, false, true);
      CHECK(kept.cuda == allocated.cuda);
      CHECK(max_rel_error(kept.cuda, kept.cpu) <= tolerance(t));
    }
}

TEST_CASE("CUDA decode attention merging a row's splits in its last split gives the merge kernel's bits and leaves "
          "every count at zero",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const bool was = kernels::cuda::fused_merge_enabled();
  struct restore {
    bool was;
    ~restore() { kernels::cuda::set_fused_merge(was); }
  } restored{was};
  // Grids within the SM count take the CUDA-core kernel and merge in the last split: one row
  // and two rows of ~600 positions (shortened splits; 256 threads for groups up to 4, 128 for
  // 8), five rows up to 5125 positions at head_dim 64. Larger grids (the five rows at head_dim
  // 128, 40 rows) take the tensor-core kernel, which keeps the merge kernel.
  std::vector<seq_spec> many;
  for (int i = 0; i < 40; ++i) many.push_back({257 + 61 * i, 1});
  const std::vector<seq_spec> five{{1, 1}, {769, 1}, {5125, 1}, {64, 1}, {300, 1}};
  const std::vector<seq_spec> two{{600, 1}, {577, 1}};
  for (const auto& seqs : {std::vector<seq_spec>{{192, 1}}, two, five, many})
    for (head_spec h : {head_spec{32, 8, 128}, head_spec{32, 4, 128}, head_spec{8, 1, 64}})
      for (dtype t : {dtype::bf16, dtype::f16}) {
        CAPTURE(seqs.size(), h.n_heads, h.n_kv, h.head_dim, dtype_name(t));
        std::mt19937 a(47), b(47);
        kernels::cuda::set_fused_merge(false);
        const auto merged_by_kernel = attention_run(a, seqs, h, t, 0, false, true, true);
        kernels::cuda::set_fused_merge(true);
        const auto merged_in_split = attention_run(b, seqs, h, t, 0, false, true, true);
        CHECK(merged_in_split.cuda == merged_by_kernel.cuda);
        CHECK(merged_in_split.repeats_equal);
        CHECK(merged_in_split.counts == std::vector<int32_t>(merged_in_split.counts.size(), 0));
        CHECK(max_rel_error(merged_in_split.cuda, merged_in_split.cpu) <= tolerance(t));
      }
}

TEST_CASE("the decode workspace covers every row count and span up to its bounds and grows with them", "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const auto ctx = cuda_ctx();
  const int64_t one = kernels::decode_workspace_floats(ctx, 1, 32, 8, 128, 192);
  const int64_t big = kernels::decode_workspace_floats(ctx, 256, 32, 8, 128, 8192);
  CHECK(one > 0);  // 192 positions in splits of 64 at one row: 3 splits
  CHECK(one <= 32 * 8 * 130);
  CHECK(big >= int64_t{256} * 32 * 32 * 130);  // 256 rows, 32 splits of 256 positions
  CHECK(big >= kernels::decode_workspace_floats(ctx, 64, 32, 8, 128, 8192));
  CHECK(kernels::decode_workspace_floats(ctx, 1, 32, 8, 128, 64) == 0);  // one split: no partials
  CHECK(kernels::decode_workspace_floats(kernels::op_context{}, 256, 32, 8, 128, 8192) == 0);  // the CPU
}

namespace {

/// Edges of a captured graph that let the next kernel start before the one before it ends
/// (programmatic dependent launch), and its memory nodes.
struct captured_shape {
  size_t programmatic = 0, memory_nodes = 0, kernels = 0;
};

captured_shape capture_decode_layer(bool workspace, bool fused_merge = false) {
  std::mt19937 rng(43);
  const int64_t k = 4096, n = 4096;
  tensor x = to_device(round_to(random_floats(rng, k), dtype::bf16), {1, k}, dtype::bf16);
  tensor w = to_device(round_to(random_floats(rng, n * k), dtype::bf16), {n, k}, dtype::bf16);
  tensor q_in({1, n}, dtype::bf16, backend_kind::cuda), out({1, n}, dtype::bf16, backend_kind::cuda);
  const int bs = 16, blocks = 16;  // 256 positions of context: 4 splits at one row
  tensor kc({blocks, bs, 8, 128}, dtype::bf16, backend_kind::cuda), vc({blocks, bs, 8, 128}, dtype::bf16, backend_kind::cuda);
  cuda_ok(cudaMemset(kc.view().data, 0, kc.bytes()), "zero k");
  cuda_ok(cudaMemset(vc.view().data, 0, vc.bytes()), "zero v");
  std::vector<int32_t> table(blocks);
  std::iota(table.begin(), table.end(), 0);
  tensor qs = to_device_i32({0, 1}, {2}), cl = to_device_i32({blocks * bs}, {1}), bt = to_device_i32(table, {1, blocks});
  tensor attn({1, 32, 128}, dtype::bf16, backend_kind::cuda), ws;
  kernels::attention_batch b;
  b.n_seqs = 1;
  b.max_blocks = blocks;
  b.block_size = bs;
  b.query_start = qs.view();
  b.context_len = cl.view();
  b.block_tables = bt.view();
  auto ctx = cuda_ctx();
  if (workspace) {
    ws = tensor({kernels::decode_workspace_floats(ctx, 1, 32, 8, 128, blocks * bs)}, dtype::f32, backend_kind::cuda);
    b.workspace = ws.view();
  }
  tensor counts = to_device_i32(std::vector<int32_t>(8, 0), {8});
  if (fused_merge) b.split_counts = counts.view();
  const bool was = kernels::cuda::fused_merge_enabled();
  kernels::cuda::set_fused_merge(fused_merge);
  cudaStream_t st = nullptr;
  cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream");
  ctx.stream = st;
  tensor_view q3{q_in.view().data, dtype::bf16, backend_kind::cuda, shape_t{1, 32, 128}};
  tensor_view a2{attn.view().data, dtype::bf16, backend_kind::cuda, shape_t{1, n}};
  cudaGraph_t g = nullptr;
  cuda_ok(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), "begin capture");
  kernels::matmul(ctx, q_in.view(), x.view(), w.view(), {});  // the projection before (q)
  kernels::paged_attention(ctx, attn.view(), q3, kc.view(), vc.view(), b, 0.088f);
  kernels::matmul(ctx, out.view(), a2, w.view(), {});  // the projection after (o)
  cuda_ok(cudaStreamEndCapture(st, &g), "end capture");
  kernels::cuda::set_fused_merge(was);
  captured_shape shape;
  size_t n_nodes = 0, n_edges = 0;
  cuda_ok(cudaGraphGetNodes(g, nullptr, &n_nodes), "nodes");
  std::vector<cudaGraphNode_t> nodes(n_nodes);
  cuda_ok(cudaGraphGetNodes(g, nodes.data(), &n_nodes), "nodes");
  for (auto node : nodes) {
    cudaGraphNodeType type{};
    cuda_ok(cudaGraphNodeGetType(node, &type), "node type");
    if (type == cudaGraphNodeTypeMemAlloc || type == cudaGraphNodeTypeMemFree) ++shape.memory_nodes;
    if (type == cudaGraphNodeTypeKernel) ++shape.kernels;
  }
  cuda_ok(cudaGraphGetEdges(g, nullptr, nullptr, nullptr, &n_edges), "edges");
  std::vector<cudaGraphNode_t> from(n_edges), to(n_edges);
  std::vector<cudaGraphEdgeData> data(n_edges);
  cuda_ok(cudaGraphGetEdges(g, from.data(), to.data(), data.data(), &n_edges), "edges");
  for (const auto& e : data)
    if (e.type == cudaGraphDependencyTypeProgrammatic || e.from_port != cudaGraphKernelNodePortDefault)
      ++shape.programmatic;
  cudaGraphDestroy(g);
  cudaStreamDestroy(st);
  return shape;
}

}  // namespace

TEST_CASE("a captured one-row decode attention with a workspace chains programmatically to the projections "
          "around it, with no memory nodes",
          "[cuda]") {
  if (!cuda_device_or_skip()) return;
  const auto kept = capture_decode_layer(true);
  const auto allocated = capture_decode_layer(false);
  // GEMV, the split kernel, combine, GEMV: each after the one before, programmatically.
  CHECK(kept.kernels == 4);
  CHECK(kept.memory_nodes == 0);
  CHECK(kept.programmatic == 3);
  // Allocating on the stream puts memory nodes between them, which cut two of the three.
  CHECK(allocated.memory_nodes == 2);
  CHECK(allocated.programmatic == 1);
  // The fused split merge: GEMV, the split kernel (its last split merging), GEMV.
  const auto fused = capture_decode_layer(true, true);
  CHECK(fused.kernels == 3);
  CHECK(fused.memory_nodes == 0);
  CHECK(fused.programmatic == 2);
}
#endif
