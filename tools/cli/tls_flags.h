#pragma once
/// The TLS flags of the commands that connect to a running cluster (`troupe generate
/// --head`, `troupe drain`): the cluster CA and this client's certificate and key.
#include <boost/program_options.hpp>
#include <string>

#include "actors/link_security.h"

namespace troupe::cli {

/// --ca, --cert and --key as given ("" when left out).
struct tls_flags {
  std::string ca;
  std::string cert;
  std::string key;
};

/// Adds --ca, --cert and --key to `d`.
void add_tls_flags(boost::program_options::options_description& d, tls_flags& f);

/// The identity the flags name: TLS off when none is given; throws usage_error when only
/// some of the three are given.
tls_identity identity_of(const tls_flags& f);

}  // namespace troupe::cli
