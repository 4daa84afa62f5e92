#pragma once
/// Whether a network-chaos case may build its namespaces here (tests/chaos/netns.h): it
/// skips without root, and fails instead in CI, where the scenarios must run.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "chaos/netns.h"
#include "skip.h"

namespace troupe::test::chaos {

/// True when this process lacks the privilege a network lab needs (the case then skips,
/// tests/skip.h). In CI (CI set and not "false"), which runs as root, a missing privilege
/// fails the case instead: the CI scenario must run there. Any other error while building
/// the lab is not a skip: net_lab's constructor throws and the case fails.
inline bool lab_needs_privilege() {
  const auto why = net_lab::missing_privilege();
  if (why.empty()) return false;
  const char* ci = std::getenv("CI");
  if (ci && *ci && std::string(ci) != "false")
    FAIL("CI is set, so the network-chaos scenarios must run, but this process cannot build network "
         "namespaces: " << why);
  skip_case("building network namespaces needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN and the ip command: " +
            why);
  return true;
}

}  // namespace troupe::test::chaos
