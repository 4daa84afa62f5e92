#pragma once
/// GPU timing helpers of troupe_gpu: the two ceilings (copy rate, bf16 matrix rate) and
/// per-op decode timings at a model's shape.
#include <vector>

#include "kernels/base/device.h"
#include "kernels/base/tensor.h"
#include "runtime/model/model_config.h"

namespace troupe::bench {

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

}  // namespace troupe::bench
