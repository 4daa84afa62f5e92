#include "tools/cli/tls_flags.h"

#include "tools/cli/commands.h"

namespace po = boost::program_options;

namespace troupe::cli {

void add_tls_flags(po::options_description& d, tls_flags& f) {
  d.add_options()
      ("ca", po::value(&f.ca),
       "with a cluster whose security.tls is required: the cluster CA's certificate (PEM);\n"
       "needs --cert and --key (tools/make_certs.sh makes all three)")
      ("cert", po::value(&f.cert), "this client's certificate (PEM), signed by the cluster CA")
      ("key", po::value(&f.key), "this client's private key (PEM)");
}

tls_identity identity_of(const tls_flags& f) {
  tls_identity id;
  if (f.ca.empty() && f.cert.empty() && f.key.empty()) return id;
  if (f.ca.empty() || f.cert.empty() || f.key.empty())
    throw usage_error("--ca, --cert and --key go together (a TLS cluster needs all three), got only " +
                      std::string(f.ca.empty() ? "" : "--ca ") + (f.cert.empty() ? "" : "--cert ") +
                      (f.key.empty() ? "" : "--key"));
  id.ca = f.ca;
  id.certificate = f.cert;
  id.key = f.key;
  id.ca_from = "--ca";
  id.certificate_from = "--cert";
  id.key_from = "--key";
  return id;
}

}  // namespace troupe::cli
