#pragma once
/// Helpers of the CUDA kernel tests: the no-GPU skip, host<->device tensors in any float
/// type, and the one table of per-dtype tolerances every [cuda] test compares with.
#ifdef TROUPE_HAVE_CUDA_KERNELS
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/op_context.h"
#include "kernels/base/tensor.h"
#include "skip.h"

namespace troupe::test {

/// True when a CUDA device is present. Without one it records a skip (tests/skip.h: the
/// case shows as skipped, never as passed) and the test returns before any assertion.
inline bool cuda_device_or_skip() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    cudaGetLastError();
    skip_case(err != cudaSuccess ? std::string("no CUDA device: ") + cudaGetErrorString(err) : "no CUDA device");
    return false;
  }
  return true;
}

/// A CUDA op context on the default stream.
inline kernels::op_context cuda_ctx() {
  kernels::op_context c;
  c.backend = backend_kind::cuda;
  return c;
}

/// Throws when a CUDA call failed (test plumbing, not the code under test).
inline void cuda_ok(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

/// Waits for the device and surfaces any asynchronous kernel error.
inline void cuda_sync() { cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

/// Per-dtype tolerance, the one place they are set: |got - want| <= tol * max(1, |want|).
/// f32 is rounding of a different summation order; f16 and bf16 add the rounding of the
/// stored result (and of intermediates such as add_rmsnorm's residual), 2^-11 and 2^-8.
inline double tolerance(dtype t) {
  switch (t) {
    case dtype::f32: return 1e-5;
    case dtype::f16: return 2e-3;
    case dtype::bf16: return 1.6e-2;
    case dtype::i32: break;
  }
  return 0.0;
}

/// The float types every CUDA kernel test runs in.
inline std::vector<dtype> float_types() { return {dtype::f32, dtype::f16, dtype::bf16}; }

/// `v` rounded through `t` (what the device sees after upload).
inline std::vector<float> round_to(const std::vector<float>& v, dtype t) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == dtype::f16) r[i] = __half2float(__float2half_rn(v[i]));
    else if (t == dtype::bf16) r[i] = __bfloat162float(__float2bfloat16_rn(v[i]));
    else r[i] = v[i];
  }
  return r;
}

/// A device tensor of type `t` holding `v` (rounded to `t`).
inline tensor to_device(const std::vector<float>& v, shape_t s, dtype t) {
  tensor d(s, t, backend_kind::cuda);
  if (static_cast<int64_t>(v.size()) != s.numel()) throw std::invalid_argument("to_device: size");
  std::vector<uint16_t> half(t == dtype::f32 ? 0 : v.size());
  for (size_t i = 0; i < half.size(); ++i) {
    if (t == dtype::f16) {
      const __half h = __float2half_rn(v[i]);
      std::memcpy(&half[i], &h, 2);
    } else {
      const __nv_bfloat16 b = __float2bfloat16_rn(v[i]);
      std::memcpy(&half[i], &b, 2);
    }
  }
  const void* src = t == dtype::f32 ? static_cast<const void*>(v.data()) : half.data();
  if (!v.empty()) cuda_ok(cudaMemcpy(d.view().data, src, d.bytes(), cudaMemcpyHostToDevice), "upload");
  return d;
}

/// A device i32 tensor holding `v`.
inline tensor to_device_i32(const std::vector<int32_t>& v, shape_t s) {
  tensor d(s, dtype::i32, backend_kind::cuda);
  if (!v.empty())
    cuda_ok(cudaMemcpy(d.view().data, v.data(), d.bytes(), cudaMemcpyHostToDevice), "upload");
  return d;
}

/// The values of a device float tensor, as floats (waits for the device first).
inline std::vector<float> to_host(const tensor& d) {
  cuda_sync();
  const size_t n = static_cast<size_t>(d.numel());
  std::vector<float> out(n);
  if (n == 0) return out;
  if (d.type() == dtype::f32) {
    cuda_ok(cudaMemcpy(out.data(), d.view().data, n * 4, cudaMemcpyDeviceToHost), "download");
    return out;
  }
  std::vector<uint16_t> half(n);
  cuda_ok(cudaMemcpy(half.data(), d.view().data, n * 2, cudaMemcpyDeviceToHost), "download");
  for (size_t i = 0; i < n; ++i) {
    if (d.type() == dtype::f16) {
      __half h;
      std::memcpy(&h, &half[i], 2);
      out[i] = __half2float(h);
    } else {
      __nv_bfloat16 b;
      std::memcpy(&b, &half[i], 2);
      out[i] = __bfloat162float(b);
    }
  }
  return out;
}

/// The values of a device i32 tensor.
inline std::vector<int32_t> to_host_i32(const tensor& d) {
  cuda_sync();
  std::vector<int32_t> out(static_cast<size_t>(d.numel()));
  if (!out.empty())
    cuda_ok(cudaMemcpy(out.data(), d.view().data, d.bytes(), cudaMemcpyDeviceToHost), "download");
  return out;
}

/// The largest |got - want| / max(floor, |want|); infinity when the sizes differ or a
/// value is not finite where the reference is. `floor` is 1 for element-wise ops; a long
/// reduction passes the size of its partial sums (for a dot of k products of values
/// uniform in [-1, 1]: sqrt(k) / 3), since its rounding scales with them, not the result.
inline double max_rel_error(const std::vector<float>& got, const std::vector<float>& want,
                            double floor = 1.0) {
  if (got.size() != want.size()) return INFINITY;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    if (!std::isfinite(g) && std::isfinite(w)) return INFINITY;
    worst = std::max(worst, std::abs(g - w) / std::max(floor, std::abs(w)));
  }
  return worst;
}

}  // namespace troupe::test
#endif
