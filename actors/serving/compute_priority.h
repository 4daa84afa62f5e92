#pragma once
/// The priority of a node's compute threads (fault_tolerance.compute_nice): on a host whose
/// cores are all busy, a CPU shard's worker thread, and the OpenMP threads it starts (they
/// inherit it), yield to the control plane (leases, heartbeats, heads, gateways).
#include <string>

namespace troupe {

/// The nice value (0..19; 0 = as started) that the worker thread of every CPU shard spawned
/// later in this process takes before it loads; GPU shards keep theirs. Any thread.
void set_compute_nice(int nice);

/// Gives the calling thread the nice value set for compute threads when `device` is a CPU
/// ("cpu..."); logs (naming `shard`) when the system refuses it. A shard's worker thread.
void renice_compute_thread(const std::string& device, const std::string& shard);

}  // namespace troupe
