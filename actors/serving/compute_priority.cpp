// The priority of a node's compute threads (compute_priority.h).
#include "actors/serving/compute_priority.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "actors/actor_system_config.h"

namespace troupe {
namespace {

std::atomic<int> compute_nice{0};  ///< set_compute_nice

}  // namespace

void set_compute_nice(int nice) { compute_nice = std::max(0, std::min(19, nice)); }

void renice_compute_thread(const std::string& device, const std::string& shard) {
  const int nice = compute_nice.load();
  if (nice <= 0 || device.rfind("cpu", 0) != 0) return;
  const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  if (::setpriority(PRIO_PROCESS, tid, nice) != 0)
    logger()->warn("{}: cannot set the compute threads' nice value to {} (fault_tolerance.compute_nice): {}", shard,
                   nice, std::strerror(errno));
}

}  // namespace troupe
