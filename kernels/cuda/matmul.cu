// CUDA matmul through cuBLASLt: out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]).
//
// Types: x and w are both f32, f16 or bf16; out is x's type or f32; bias is out's type or
// f32. Products accumulate in fp32 (CUBLAS_COMPUTE_32F: no TF32 for f32 inputs). In
// cuBLASLt's column-major terms this is the "TN" GEMM D[n, m] = Aᵀ · B with A = w (k x n,
// ld k) and B = x (k x m, ld k), D = out (n x m, ld n).
//
// Caches (process lifetime, behind one mutex): one cuBLASLt handle per device, one 32 MiB
// workspace per (device, stream) (a workspace must not be shared by concurrent streams),
// and one plan (descriptors and the algorithm) per (device, shape, types, pointer
// alignment): the heuristic's first, or at decode row counts the fastest of its first eight,
// timed once in a decode shape's first step (op_context::tune_gemms; gemm_tune.cuh;
// opt-in: TROUPE_GEMM_TUNE=1, or 2 among candidates that do not split k). After the first call of a shape no allocation or heuristic query
// happens, so a warmed-up step can be captured in a CUDA graph. Outside tuning and the
// batch-invariant mode, m rows take the algorithm chosen for matmul_plan_rows(m) rows
// (checked to support m, else m's own): a row count first met while serving, as a mixed
// step's, then costs its descriptors and an algorithm check (the first product 0-15 us above
// the second on an H200) instead of a heuristic query and, often, the loading of a kernel
// module (2.0-2.9 ms a projection measured there).
//
// A shape cuBLASLt has no algorithm for falls back to a plain fp32-accumulating kernel.
//
// Batch invariance: cuBLASLt picks its algorithm per shape, so unlike the CPU kernel a row
// computed in a batch of m rows may differ in the last bits from the same row alone. With
// op_context::batch_invariant, matmul takes no GEMV and one cuBLASLt algorithm per (n, k,
// types, alignment), whatever m: the heuristic's first algorithm for pinned_rows rows that
// splits no k (split-K would sum a row in parts whose cut may move with m), checked to
// support each m (else the fallback kernel, invariant too).
#include <cublasLt.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm_tune.cuh"
#include "kernels/cuda/matmul_common.cuh"
#include "kernels/matmul.h"

namespace troupe::kernels::cuda {
namespace matmul_detail {

/// Largest power of two (at most 256) dividing the address.
uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

/// out[r, c] += bias[c] (in float, stored in out's type).
template <class TO, class TB>
__global__ void bias_kernel(TO* out, const TB* bias, int64_t m, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < m * n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = from_f32<TO>(to_f32(out[i]) + to_f32(bias[i % n]));
}

void add_bias(const op_context& ctx, tensor_view out, tensor_view bias, int64_t m, int64_t n) {
  dispatch_float(out.type, "matmul", [&](auto tag) {
    using TO = typename decltype(tag)::type;
    TO* o = static_cast<TO*>(out.data);
    if (bias.type == dtype::f32)
      bias_kernel<TO, float><<<grid_for(m * n, 256), 256, 0, stream_of(ctx)>>>(o, bias.f32(), m, n);
    else
      bias_kernel<TO, TO><<<grid_for(m * n, 256), 256, 0, stream_of(ctx)>>>(
          o, static_cast<const TO*>(bias.data), m, n);
  });
  check_launch("matmul", "bias_kernel");
}

/// The checks every product x[m, k] · w[n, k]ᵀ on the device shares (`op` names it).
void check_operands(const char* op, const op_context& ctx, tensor_view out, tensor_view x, tensor_view w) {
  require_cuda_ctx(op, ctx);
  require_device_float(op, "x", x);
  require_device(op, "w", w);
  require_device(op, "out", out);
  require_same_type(op, "w", w, "x", x);
  require_rank(op, "x", x, 2);
  require_rank(op, "w", w, 2);
  require(x.shape[1] == w.shape[1], op, "x " + x.shape.str() + " and w " + w.shape.str() + " disagree on k");
}

void check(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias) {
  const char* op = "matmul";
  check_operands(op, ctx, out, x, w);
  require(out.type == x.type || out.type == dtype::f32, op,
          std::string("out is ") + dtype_name(out.type) + ", expected f32 or " + dtype_name(x.type));
  require_shape(op, "out", out, shape_t{x.shape[0], w.shape[0]});
  if (!bias.empty()) {
    require_device(op, "bias", bias);
    require(bias.type == out.type || bias.type == dtype::f32, op,
            std::string("bias is ") + dtype_name(bias.type) + ", expected f32 or " +
                dtype_name(out.type));
    require_shape(op, "bias", bias, shape_t{w.shape[0]});
  }
}

}  // namespace matmul_detail

namespace {
using namespace matmul_detail;

constexpr size_t workspace_bytes = 32u << 20;
constexpr int64_t pinned_rows = 512;  // the row count a batch-invariant algorithm is chosen for
constexpr int tune_candidates = 8;    // the heuristic's algorithms a tuned shape times

/// Throws std::runtime_error naming the op, the step and the cuBLAS status.
void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("matmul: ") + what + ": cuBLAS status " +
                             std::to_string(static_cast<int>(st)) + " (" +
                             cublasLtGetStatusString(st) + ")");
}

cudaDataType_t blas_type(dtype t) {
  switch (t) {
    case dtype::f32: return CUDA_R_32F;
    case dtype::f16: return CUDA_R_16F;
    case dtype::bf16: return CUDA_R_16BF;
    case dtype::i32: break;
  }
  throw std::invalid_argument("matmul: i32 is not a matmul type");
}


/// The descriptors and algorithm of one GEMM shape.
struct plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool fallback = false;  ///< no cuBLASLt algorithm: fallback_gemm_kernel computes it
  bool tuned = false;     ///< the algorithm is the fastest of several, timed
  bool tune_tried = false;  ///< timing was wanted when the plan was made (tuned or not)
  plan() = default;
  plan(const plan&) = delete;
  plan& operator=(const plan&) = delete;
  ~plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

using plan_key = std::tuple<int, int64_t, int64_t, int64_t, int, int, uint32_t, uint32_t, uint32_t, bool>;
/// (device, n, k, in type, out type, alignments): a batch-invariant shape family.
using pinned_key = std::tuple<int, int64_t, int64_t, int, int, uint32_t, uint32_t, uint32_t>;

/// The process-wide cuBLASLt state (never destroyed: it may outlive the CUDA context).
struct blas_cache {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;                  // device -> handle
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;  // (device, stream) -> 32 MiB
  std::map<plan_key, std::unique_ptr<plan>> plans;
  std::map<pinned_key, std::optional<cublasLtMatmulAlgo_t>> pinned;  // none: the fallback kernel
  /// The heuristic's first algorithm at a matmul_plan_rows count (key's m), none: it has none.
  std::map<plan_key, std::optional<cublasLtMatmulAlgo_t>> by_rows;
  size_t tuned = 0;  // plans whose algorithm was chosen by timing
  size_t queries = 0;  // heuristic queries made
};

blas_cache& cache() {
  static blas_cache* c = new blas_cache();
  return *c;
}

cublasLtHandle_t handle_for(blas_cache& c, int device) {
  auto it = c.handles.find(device);
  if (it != c.handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  check_blas(cublasLtCreate(&h), "cublasLtCreate");
  c.handles.emplace(device, h);
  return h;
}

void* workspace_for(blas_cache& c, int device, cudaStream_t stream) {
  auto key = std::make_pair(device, stream);
  auto it = c.workspaces.find(key);
  if (it != c.workspaces.end()) return it->second;
  void* ws = nullptr;
  check_cuda(cudaMalloc(&ws, workspace_bytes), "matmul", "allocating the cuBLASLt workspace");
  c.workspaces.emplace(key, ws);
  return ws;
}

/// The descriptors of a shape (m rows of x and out).
std::unique_ptr<plan> make_descriptors(int64_t m, int64_t n, int64_t k, dtype in, dtype out) {
  auto p = std::make_unique<plan>();
  check_blas(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  check_blas(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
             "transa");
  check_blas(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
             "transb");
  check_blas(cublasLtMatrixLayoutCreate(&p->a, blas_type(in), k, n, k), "layout of w");
  check_blas(cublasLtMatrixLayoutCreate(&p->b, blas_type(in), k, m, k), "layout of x");
  check_blas(cublasLtMatrixLayoutCreate(&p->d, blas_type(out), n, m, n), "layout of out");
  return p;
}

/// Up to `want` of the heuristic's algorithms for plan `p`, best first.
std::vector<cublasLtMatmulHeuristicResult_t> heuristic(cublasLtHandle_t h, const plan& p,
                                                       const uint32_t align[3], int want) {
  cublasLtMatmulPreference_t pref = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&pref), "preference");
  const size_t ws = workspace_bytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align[0],
                                       sizeof align[0]);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align[1],
                                       sizeof align[1]);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align[2],
                                       sizeof align[2]);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align[2],
                                       sizeof align[2]);
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(want));
  int found = 0;
  ++cache().queries;  // the caller holds the cache's mutex
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.a, p.b, p.d, p.d, pref, want, results.data(), &found);
  cublasLtMatmulPreferenceDestroy(pref);
  results.resize(st == CUBLAS_STATUS_SUCCESS ? static_cast<size_t>(found) : 0);
  return results;
}

/// The batch-invariant algorithm of a shape family: the heuristic's first for pinned_rows
/// rows whose split-K count is 1; none when it has none.
std::optional<cublasLtMatmulAlgo_t> pick_pinned(cublasLtHandle_t h, int64_t n, int64_t k, dtype in, dtype out,
                                                const uint32_t align[3]) {
  const auto ref = make_descriptors(pinned_rows, n, k, in, out);
  for (const auto& r : heuristic(h, *ref, align, 16)) {
    int32_t split = 1;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&r.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &split, sizeof split,
                                             &written) != CUBLAS_STATUS_SUCCESS)
      continue;
    if (split <= 1) return r.algo;
  }
  return std::nullopt;
}

/// Gives plan `p` of m rows the heuristic's first algorithm for matmul_plan_rows(m) rows
/// (queried once per such count, `key` with m replaced) when that one supports m. False:
/// the heuristic has none there, or it does not support m.
bool take_rows_algo(blas_cache& c, cublasLtHandle_t h, plan& p, plan_key key, const uint32_t align[3]) {
  const int64_t m = std::get<1>(key), n = std::get<2>(key), k = std::get<3>(key);
  const int64_t rows = matmul_plan_rows(m);
  std::get<1>(key) = rows;
  auto it = c.by_rows.find(key);
  if (it == c.by_rows.end()) {
    const auto ref = rows == m ? nullptr
                               : make_descriptors(rows, n, k, static_cast<dtype>(std::get<4>(key)),
                                                  static_cast<dtype>(std::get<5>(key)));
    const auto best = heuristic(h, ref ? *ref : p, align, 1);
    it = c.by_rows.emplace(key, best.empty() ? std::nullopt : std::optional(best.front().algo)).first;
  }
  if (!it->second) return false;
  if (rows != m) {
    cublasLtMatmulHeuristicResult_t check{};
    if (cublasLtMatmulAlgoCheck(h, p.desc, p.a, p.b, p.d, p.d, &*it->second, &check) != CUBLAS_STATUS_SUCCESS ||
        check.workspaceSize > workspace_bytes)
      return false;
  }
  p.algo = *it->second;
  return true;
}

/// Builds the descriptors of a shape (`key`) and chooses its algorithm: (batch-invariant)
/// the family's pinned one when it supports this m; for a decode row count (gemm_tune.cuh)
/// with `call` the fastest of the heuristic's first tune_candidates, timed on its operands;
/// else the one of matmul_plan_rows(m) rows (take_rows_algo), or the heuristic's first.
std::unique_ptr<plan> make_plan(blas_cache& c, cublasLtHandle_t h, const plan_key& key, const uint32_t align[3],
                                const std::optional<cublasLtMatmulAlgo_t>* pinned, const gemm_call* call) {
  const int64_t m = std::get<1>(key), n = std::get<2>(key), k = std::get<3>(key);
  auto p = make_descriptors(m, n, k, static_cast<dtype>(std::get<4>(key)), static_cast<dtype>(std::get<5>(key)));
  if (pinned) {
    cublasLtMatmulHeuristicResult_t check{};
    p->fallback = !pinned->has_value() ||
                  cublasLtMatmulAlgoCheck(h, p->desc, p->a, p->b, p->d, p->d, &**pinned, &check) !=
                      CUBLAS_STATUS_SUCCESS ||
                  check.workspaceSize > workspace_bytes;
    if (!p->fallback) p->algo = **pinned;
    return p;
  }
  const bool tune = call && gemm_tuning_wanted(m, call->stream);
  if (!tune) {
    if (take_rows_algo(c, h, *p, key, align)) return p;
    p->fallback = matmul_plan_rows(m) == m;  // the heuristic has none for m itself
    if (p->fallback) return p;
  }
  const auto best = heuristic(h, *p, align, tune ? tune_candidates : 1);
  p->fallback = best.empty();
  if (p->fallback) return p;
  size_t pick = 0;
  p->tune_tried = tune;
  if (tune) {
    gemm_call c = *call;
    c.desc = p->desc;
    c.a = p->a;
    c.b = p->b;
    c.d = p->d;
    pick = fastest_algo(c, best);
    p->tuned = best.size() > 1;
  }
  p->algo = best[pick].algo;
  return p;
}

/// The GEMM for shapes cuBLASLt has no algorithm for (such as odd leading dimensions):
/// one thread per output element, k in order, fp32 accumulation.
template <class T, class TO>
__global__ void fallback_gemm_kernel(TO* out, const T* x, const T* w, int64_t m, int64_t n,
                                     int64_t k) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < m * n;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = e / n, c = e % n;
    const T* xr = x + r * k;
    const T* wr = w + c * k;
    float acc = 0.0f;
    for (int64_t i = 0; i < k; ++i) acc = fmaf(to_f32(xr[i]), to_f32(wr[i]), acc);
    out[e] = from_f32<TO>(acc);
  }
}

void fallback_gemm(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, int64_t m,
                   int64_t n, int64_t k) {
  dispatch_float(x.type, "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xs = static_cast<const T*>(x.data);
    const T* ws = static_cast<const T*>(w.data);
    const unsigned grid = grid_for(m * n, 256);
    if (out.type == dtype::f32)
      fallback_gemm_kernel<T, float><<<grid, 256, 0, stream_of(ctx)>>>(out.f32(), xs, ws, m, n, k);
    else
      fallback_gemm_kernel<T, T><<<grid, 256, 0, stream_of(ctx)>>>(static_cast<T*>(out.data), xs, ws,
                                                                   m, n, k);
  });
  check_launch("matmul", "fallback_gemm_kernel");
}


// ---- skinny GEMV (decode: m <= 8 rows) -----------------------------------------------------
//
}  // namespace

void matmul_cublas(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias) {
  check(ctx, out, x, w, bias);
  const int64_t m = x.shape[0], k = x.shape[1], n = w.shape[0];
  if (m == 0 || n == 0) return;
  cudaStream_t stream = stream_of(ctx);
  if (k == 0) {
    check_cuda(cudaMemsetAsync(out.data, 0, static_cast<size_t>(m * n) * dtype_size(out.type), stream),
               "matmul", "zeroing out for k = 0");
  } else {
    int device = 0;
    check_cuda(cudaGetDevice(&device), "matmul", "cudaGetDevice");
    const uint32_t align[3] = {alignment_of(w.data), alignment_of(x.data), alignment_of(out.data)};
    blas_cache& c = cache();
    cublasLtHandle_t h;
    void* ws;
    const plan* p;
    {
      std::lock_guard<std::mutex> lock(c.mu);
      h = handle_for(c, device);
      ws = workspace_for(c, device, stream);
      const bool inv = ctx.batch_invariant;
      const plan_key key{device, m, n, k, static_cast<int>(x.type), static_cast<int>(out.type),
                         align[0], align[1], align[2], inv};
      auto it = c.plans.find(key);
      if (it == c.plans.end()) {
        const std::optional<cublasLtMatmulAlgo_t>* pinned = nullptr;
        if (inv) {
          const pinned_key family{device, n, k, static_cast<int>(x.type), static_cast<int>(out.type),
                                  align[0], align[1], align[2]};
          auto f = c.pinned.find(family);
          if (f == c.pinned.end()) f = c.pinned.emplace(family, pick_pinned(h, n, k, x.type, out.type, align)).first;
          pinned = &f->second;
        }
        gemm_call call;
        call.handle = h;
        call.w = w.data;
        call.x = x.data;
        call.out = out.data;
        call.workspace = ws;
        call.workspace_bytes = workspace_bytes;
        call.stream = stream;
        it = c.plans.emplace(key, make_plan(c, h, key, align, pinned, ctx.tune_gemms ? &call : nullptr)).first;
        c.tuned += it->second->tuned ? 1 : 0;
      } else if (ctx.tune_gemms && !inv && !it->second->tuned && !it->second->tune_tried &&
                 gemm_tuning_wanted(m, stream)) {
        // A decode shape first met in a prefill or mixed step (not tuned there): tune it now.
        gemm_call call{h, nullptr, nullptr, nullptr, nullptr, w.data, x.data, out.data, ws, workspace_bytes, stream};
        it->second = make_plan(c, h, key, align, nullptr, &call);
        c.tuned += it->second->tuned ? 1 : 0;
      }
      p = it->second.get();
    }
    const float alpha = 1.0f, beta = 0.0f;
    if (p->fallback)
      fallback_gemm(ctx, out, x, w, m, n, k);
    else
        check_blas(cublasLtMatmul(h, p->desc, &alpha, w.data, p->a, x.data, p->b, &beta, out.data,
                                p->d, out.data, p->d, &p->algo, ws, workspace_bytes, stream),
                 "cublasLtMatmul");
  }
  if (!bias.empty()) add_bias(ctx, out, bias, m, n);
}

size_t heuristic_queries() {
  blas_cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.queries;
}

size_t tuned_plans() {
  blas_cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.tuned;
}

void matmul(const op_context& ctx, tensor_view out, tensor_view x, tensor_view w, tensor_view bias) {
  if (!ctx.batch_invariant && x.shape.rank == 2 && x.shape[0] <= gemv_row_limit() && x.where == backend_kind::cuda) {
    const auto pinned = gemv_variants();
    const bool long_k = x.shape[1] >= gemv_long_k;
    const int variant = long_k ? (pinned.second < 0 ? 1 : pinned.second) : (pinned.first < 0 ? 0 : pinned.first);
    if (gemv(ctx, out, x, w, bias, variant)) return;
  }
  matmul_cublas(ctx, out, x, w, bias);
}

}  // namespace troupe::kernels::cuda
