#pragma once
/// Argument checks and threading helpers shared by the CPU kernels (internal).
#include <stdexcept>
#include <string>

#include "kernels/op_context.h"

namespace troupe::kernels::cpu {

/// Throws std::invalid_argument("<op>: <what>") unless `ok`.
inline void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(op) + ": " + what);
}

/// Checks that `t` is a host tensor of type `type` (f32 unless said otherwise).
inline void require_host(const char* op, const char* name, const tensor_view& t,
                         dtype type = dtype::f32) {
  require(t.where == backend_kind::cpu, op,
          std::string(name) + " lives on " + backend_name(t.where) + ", not on the cpu");
  require(t.type == type, op,
          std::string(name) + " is " + dtype_name(t.type) + ", expected " + dtype_name(type));
  require(t.data != nullptr || t.numel() == 0, op, std::string(name) + " has no data");
}

/// Checks that `t` has exactly the shape `want`.
inline void require_shape(const char* op, const char* name, const tensor_view& t,
                          const shape_t& want) {
  require(t.shape == want, op,
          std::string(name) + " has shape " + t.shape.str() + ", expected " + want.str());
}

/// Checks that `t` has rank `rank`.
inline void require_rank(const char* op, const char* name, const tensor_view& t, int rank) {
  require(t.shape.rank == rank, op,
          std::string(name) + " has shape " + t.shape.str() + ", expected rank " +
              std::to_string(rank));
}

/// OpenMP team size for `ctx`: 1 (serial) when n_threads <= 1.
inline int team_size(const op_context& ctx) { return ctx.n_threads > 1 ? ctx.n_threads : 1; }

}  // namespace troupe::kernels::cpu
