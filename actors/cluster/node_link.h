#pragma once
/// Dropping the connection to a node on purpose: what CAF's connection timeout does, for a
/// node that the supervisor's application heartbeats declared lost (the CAF timeout itself
/// is long, so that a process starved of CPU keeps its healthy peers).
#include <caf/all.hpp>

namespace troupe {

/// Closes this process's direct connection to `node`, if any: every proxy of an actor on
/// it goes down with exit_reason::remote_link_unreachable (monitors see a down_msg, as on
/// a cut connection). Returns at once (the middleman does it on its own thread); a null or
/// local node id does nothing.
void drop_node_link(caf::actor_system& sys, const caf::node_id& node);

}  // namespace troupe
