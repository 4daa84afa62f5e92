#pragma once
// Shared by the cluster-config tests: the error a cluster file's text raises.
#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>

#include "cluster-config/cluster_config.h"

namespace troupe::test {

/// The config_error that parsing `text` (as file `source`) throws; fails the test when none.
inline config_error parse_error(const std::string& text, const std::string& source = "test.yaml") {
  try {
    parse_cluster_config(text, source);
  } catch (const config_error& e) {
    return e;
  }
  FAIL("no config_error for:\n" << text);
  throw std::logic_error("unreachable");
}

}  // namespace troupe::test
