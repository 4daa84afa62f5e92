// CPU embedding lookup (also used to gather rows of any [rows, d] f32 table).
#include "kernels/embedding.h"

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/op_checks.h"

namespace troupe::kernels::cpu {

void embedding(const op_context& ctx, tensor_view out, tensor_view table, tensor_view ids) {
  const char* op = "embedding";
  require_host(op, "out", out);
  require_host(op, "table", table);
  require_host(op, "ids", ids, dtype::i32);
  require_rank(op, "table", table, 2);
  require_rank(op, "ids", ids, 1);
  require_shape(op, "out", out, shape_t{ids.shape[0], table.shape[1]});
  const int64_t m = ids.shape[0], d = table.shape[1], rows = table.shape[0];
  const int32_t* id = ids.i32();
  for (int64_t r = 0; r < m; ++r)
    if (id[r] < 0 || id[r] >= rows)
      throw std::out_of_range("embedding: id " + std::to_string(id[r]) + " at row " +
                              std::to_string(r) + " is outside the table of " +
                              std::to_string(rows) + " rows");
  const float* t = table.f32();
  float* o = out.f32();
  const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
  const int threads = team_size(ctx);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t r = 0; r < m; ++r) std::memcpy(o + r * d, t + id[r] * d, row_bytes);
}

}  // namespace troupe::kernels::cpu
