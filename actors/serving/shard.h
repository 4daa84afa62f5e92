#pragma once
/// The shard actor: one device's share of one replica (a pipeline stage's tensor rank).
/// Its compute runs on a dedicated thread behind the actor (runtime/engine/shard_worker.h), so
/// loading, blocking transfers and kernels never stall CAF's scheduler; the actor itself
/// stays responsive, which is what lets `abort_atom` release a transfer blocked on a
/// dead peer.
#include <caf/all.hpp>
#include <chrono>
#include <functional>
#include <string>

#include "actors/messages.h"

namespace troupe {

/// The shard's typed interface (replica -> shard).
using shard_actor = caf::typed_actor<
    /// Answered once the weights are loaded: the communicators' local addresses.
    caf::replies_to<addresses_atom>::with<shard_addresses>,
    /// Connects the communicators to the peers; answered when connected. Refused when the
    /// term is older than the owner's (term fencing, below).
    caf::replies_to<connect_atom, head_term, shard_peers>::with<caf::ok_atom>,
    /// Runs one step (forward, and sampling on the sampling shard), in arrival order.
    /// Refused when the term is older than the owner's (term fencing, below).
    caf::replies_to<step_atom, head_term, step_request>::with<step_output>,
    /// A peer is gone: fail blocked and later transfers at once. Idempotent.
    caf::reacts_to<abort_atom>,
    /// Stage-local recovery: fresh communicator endpoints, weights and KV cache kept;
    /// answered with the new addresses (then connect_atom with keep_kv).
    caf::replies_to<relink_atom, head_term>::with<shard_addresses>,
    /// From the node agent, when a new head adopts this loaded shard: fresh communicator
    /// endpoints, the context and KV cache dropped (the next connect makes a fresh one);
    /// answered with the new addresses, which addresses_atom answers from then on. The
    /// adopting head's term becomes the owner's term (an older one is refused).
    caf::replies_to<adopt_atom, head_term>::with<shard_addresses>>;

/// Spawns a shard that starts loading `spec` at once on its own thread. `progress` is
/// called from that thread with "loading", "loaded", "connected" or "failed: why"; it must
/// be thread-safe and must not capture the actor system's actors by reference.
///
/// Replies: `addresses_atom` is answered once loaded (requests that arrive earlier wait);
/// when loading fails every pending and later request gets an error naming the shard and
/// the cause. A failing connect or step answers that request with
/// `sec::runtime_error` ("shard s1r0: step 7 failed: ...") and the shard stays alive.
/// When the shard terminates it answers what is still pending with "<shard> stopped" and
/// aborts its worker without waiting for it: a worker still busy (loading, or stuck in a
/// step) is detached, and a shard spawned later on the same device (in this process) waits
/// for it to end before loading, up to spec.release_wait_ms, then fails to load naming
/// the device and fault_tolerance.release_wait.
///
/// Stall watchdog (spec.stall_timeout_ms > 0): while a step runs, the worker beats at
/// every layer and every poll of a transfer; a step without a beat for the stall timeout
/// is stalled: every pending request gets an error naming the step and
/// fault_tolerance.stall_timeout, and the shard terminates with that error.
///
/// Term fencing (issue 15): the shard knows its owner's term (`owner`, the term of the head
/// whose node agent spawned it; raised by `adopt_atom` of a newer head). A step, connect or
/// relink of an older term is refused with an error naming both terms ("shard s0r0: refused
/// step 7 of term 1: its owner leads term 2 (a deposed leader's step)"), so a paused or
/// cut-off old leader's in-flight steps do nothing once a newer head adopted the shard.
/// With a single head every term is 0 and nothing is refused.
///
/// Test hook: TROUPE_FAULT_HANG="s<stage>r<rank>:<step>:<ms>" makes that shard's worker
/// sleep <ms> (no beats, deaf to abort) in its <step>-th step, once per process and value;
/// a malformed value fails the load naming the variable.
shard_actor spawn_shard(caf::actor_system& sys, shard_spec spec,
                        std::function<void(const std::string&)> progress = {}, head_term owner = {});

/// The shard's name in logs and errors: "shard s<stage>r<tensor rank>".
inline std::string shard_name(const shard_spec& s) {
  return "shard s" + std::to_string(s.stage) + "r" + std::to_string(s.tp_rank);
}

/// Registers the shard's handle type (and std::vector of it) for remote sends; called by
/// system_config (actors/actor_system_config.h).
inline void add_shard_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<shard_actor>("troupe::shard_actor");
}

}  // namespace troupe
