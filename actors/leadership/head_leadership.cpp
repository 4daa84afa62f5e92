#include "actors/leadership/head_leadership.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>
#include <vector>

#include "actors/actor_system_config.h"
#include "actors/leadership/head_election.h"
#include "actors/leadership/lease_voter_actor.h"
#include "actors/link_security.h"

namespace troupe {

/// What the election reported, shared with its callback (an actor thread).
struct head_leadership::shared {
  std::mutex mutex;
  std::condition_variable changed;
  std::optional<uint64_t> led;        ///< the term this head led (set once)
  std::optional<std::string> fallen;  ///< why it stepped down after it led
};

namespace {

/// 16 hex digits that differ for every process image (random, from the OS).
std::string image_nonce() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

head_leadership::head_leadership(caf::actor_system& sys, const cluster_config& c, std::size_t index,
                                 troupe_metrics* metrics)
    : sys_(sys), shared_(std::make_shared<shared>()) {
  if (index >= c.heads.size())
    throw std::invalid_argument("head index " + std::to_string(index) + " is not in heads: (" +
                                std::to_string(c.heads.size()) + " entries)");
  const auto& me = c.heads[index];
  const leadership::lease_timing timing{c.leadership.lease_duration, c.leadership.drift_margin};
  voter_ = publish_lease_voter(sys, me.host, me.voter_port, c.leadership,
                               "heads[" + std::to_string(index) + "].voter_port");
  voter_port_ = me.voter_port;
  head_election_options eo;
  // One id per process image: a head that stepped down and exec'd itself (same pid) must
  // not renew its former image's lease in the same term; it waits for the lease to end and
  // wins a later term, which nodes and clients tell apart from the one it lost.
  eo.id = "head-" + std::to_string(index) + "@" + image_nonce();
  eo.voters = election_voters(c);
  eo.timing = timing;
  eo.metrics = metrics;
  eo.on_event = [s = shared_](const election_event& e) {
    std::lock_guard<std::mutex> lock(s->mutex);
    if (e.role == election_role::leader && !s->led) s->led = e.term;
    if (e.role == election_role::stepped_down && s->led && !s->fallen)
      s->fallen = "stepped down from term " + std::to_string(*s->led) + ": " + e.detail;  // the term it led
    s->changed.notify_all();
  };
  election_ = caf::actor_cast<caf::actor>(spawn_head_election(sys, std::move(eo)));
  logger()->info("head {}: standing by until a majority of {} voter(s) grants this head a term", index,
                 election_voters(c).size());
}

head_leadership::~head_leadership() {
  caf::anon_send_exit(election_, caf::exit_reason::user_shutdown);
  unpublish_link(sys_, caf::actor_cast<lease_voter_actor>(voter_), voter_port_);
  caf::anon_send_exit(voter_, caf::exit_reason::user_shutdown);
}

std::optional<uint64_t> head_leadership::wait_to_lead(const std::function<bool()>& interrupted) {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(shared_->mutex);
      if (shared_->led) return shared_->led;
    }
    if (interrupted()) return std::nullopt;
  }
}

std::optional<std::string> head_leadership::stepped_down() const {
  std::lock_guard<std::mutex> lock(shared_->mutex);
  return shared_->fallen;
}

caf::actor publish_lease_voter(caf::actor_system& sys, const std::string& host, uint16_t port,
                               const leadership_section& l, const std::string& who) {
  auto voter = spawn_lease_voter(sys, {l.lease_duration, l.drift_margin});
  auto bound = publish_link(sys, voter, port, host);
  if (!bound) {
    caf::anon_send_exit(voter, caf::exit_reason::user_shutdown);
    throw std::runtime_error(who + ": cannot listen for lease requests on " + endpoint(host, port) + ": " +
                             sys.render(bound.error()));
  }
  logger()->info("lease voter listening on {}", endpoint(host, *bound));
  return caf::actor_cast<caf::actor>(voter);
}

namespace {

/// This process's arguments, from /proc/self/cmdline.
std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::vector<std::string> args;
  for (std::size_t at = 0; at < all.size();) {
    const auto end = all.find('\0', at);
    args.push_back(all.substr(at, end == std::string::npos ? std::string::npos : end - at));
    at = end == std::string::npos ? all.size() : end + 1;
  }
  return args;
}

}  // namespace

void restart_as_standby(const std::string& why) {
  logger()->warn("head: {}: this head stops acting at once (supervisor, router, replicas, links) and starts "
                 "again as a standby",
                 why);
  logger()->flush();
  auto args = own_arguments();
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  rlimit lim{};
  const int max_fd = getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < 65536 ? static_cast<int>(lim.rlim_cur) : 65536;
  // Close-on-exec rather than close: the other threads' descriptors stay valid until the exec
  // closes them all at once.
  for (int fd = 3; fd < max_fd; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  ::execv("/proc/self/exe", argv.data());
  _exit(3);
}

}  // namespace troupe
