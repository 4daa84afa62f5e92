// CPU row scatter (the reference of kernels::scatter_rows).
#include "kernels/scatter_rows.h"

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/op_checks.h"

namespace troupe::kernels::cpu {

void scatter_rows(const op_context& ctx, tensor_view table, tensor_view src, tensor_view index) {
  const char* op = "scatter_rows";
  require_host(op, "table", table);
  require_host(op, "src", src);
  require_host(op, "index", index, dtype::i32);
  require_rank(op, "table", table, 2);
  require_rank(op, "index", index, 1);
  require_shape(op, "src", src, shape_t{index.shape[0], table.shape[1]});
  const int64_t m = index.shape[0], d = table.shape[1], rows = table.shape[0];
  const int32_t* id = index.i32();
  for (int64_t r = 0; r < m; ++r)
    if (id[r] < 0 || id[r] >= rows)
      throw std::out_of_range("scatter_rows: index " + std::to_string(id[r]) + " at row " + std::to_string(r) +
                              " is outside the table of " + std::to_string(rows) + " rows");
  const float* s = src.f32();
  float* t = table.f32();
  const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
  const int threads = team_size(ctx);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r = 0; r < m; ++r) std::memcpy(t + id[r] * d, s + r * d, row_bytes);
}

}  // namespace troupe::kernels::cpu
