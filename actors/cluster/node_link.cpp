#include "actors/cluster/node_link.h"

#include <caf/io/basp_broker.hpp>
#include <caf/io/middleman.hpp>

namespace troupe {

void drop_node_link(caf::actor_system& sys, const caf::node_id& node) {
  if (node == caf::node_id{} || node == sys.node()) return;
  auto& mm = sys.middleman();
  // The BASP broker runs in the middleman's event loop: so does this (as CAF's own proxy
  // clean-up does), and it is what the broker does when a connection closes.
  mm.run_later([&mm, node] {
    auto handle = mm.named_broker<caf::io::basp_broker>(caf::atom("BASP"));
    auto ptr = caf::actor_cast<caf::strong_actor_ptr>(handle);
    if (!ptr) return;
    auto* broker = static_cast<caf::io::basp_broker*>(ptr->get());
    if (broker->getf(caf::abstract_actor::is_terminated_flag)) return;
    auto hdl = broker->instance.tbl().lookup_direct(node);
    if (!hdl) return;
    broker->connection_cleanup(*hdl, caf::sec::connection_timeout);
    broker->close(*hdl);
  });
}

}  // namespace troupe
