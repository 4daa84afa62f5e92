// The leader's sender of its head state to one standby (state_sender.h).
#include "actors/leadership/state_sender.h"

#include <algorithm>
#include <chrono>

#include "actors/actor_system_config.h"
#include "actors/leadership/state_replica.h"
#include "actors/link_connect.h"
#include "actors/messages.h"

namespace troupe {
namespace {

using namespace std::chrono_literals;

struct sender_state {
  state_sender_options opts;
  uint64_t term = 0, sequence = 0;  ///< the newest state handed to the sender
  std::string bytes;
  uint64_t sent_term = 0, sent_sequence = 0;  ///< the newest state the standby acknowledged
  state_replica_actor replica;                ///< while connected
  bool busy = false;                          ///< a send (or a retry timer) is under way
  std::chrono::milliseconds backoff{100};
  bool failing = false;  ///< the last attempt failed (logged once until one succeeds)
  static inline const char* name = "troupe.state_sender";
};

using sender_ptr = caf::stateful_actor<sender_state>*;

void try_send(sender_ptr self);

bool newer_than_sent(const sender_state& st) {
  return !st.bytes.empty() && (st.term != st.sent_term || st.sequence != st.sent_sequence);
}

/// Counts and logs (once per run of failures) an attempt that failed, and retries later.
void failed(sender_ptr self, const std::string& why) {
  auto& st = self->state;
  if (st.opts.metrics) st.opts.metrics->head_state_replication_errors.with({st.opts.target}).inc();
  if (!st.failing)
    logger()->warn("head state: cannot send term {} sequence {} to the standby {} at {}: {}; retrying (the leader "
                   "goes on)",
                   st.term, st.sequence, st.opts.target, endpoint(st.opts.host, st.opts.port), why);
  st.failing = true;
  st.replica = nullptr;  // connect again: the standby may have restarted
  self->delayed_send(self, st.backoff, sweep_atom::value);  // busy until the timer fires
  st.backoff = std::min(st.backoff * 2, std::chrono::milliseconds{2000});
}

/// Sends the newest state to the connected replica; on its answer, the next newer one.
void send_now(sender_ptr self) {
  auto& st = self->state;
  const auto term = st.term, sequence = st.sequence;
  self->request(st.replica, 3s, replicate_atom::value, term, sequence, st.bytes)
      .then(
          [self, term, sequence](uint64_t) {
            auto& st = self->state;
            if (st.failing)
              logger()->info("head state: the standby {} holds term {} sequence {} again", st.opts.target, term,
                             sequence);
            st.sent_term = term;
            st.sent_sequence = sequence;
            st.busy = false;
            st.failing = false;
            st.backoff = 100ms;
            try_send(self);
          },
          [self](caf::error& e) { failed(self, self->system().render(e)); });
}

/// Sends the newest state unless a send is under way or the standby has it, connecting
/// first when needed (asynchronously, bounded by 1 s: the sender never blocks a thread, so
/// it needs none of its own, and a system that ends never waits for one).
void try_send(sender_ptr self) {
  auto& st = self->state;
  if (st.busy || !newer_than_sent(st)) return;
  st.busy = true;
  if (st.replica) return send_now(self);
  connect_link_async<state_replica_actor>(self, st.opts.host, st.opts.port, caf::timespan{1s},
                                          [self](caf::expected<state_replica_actor> r) {
                                            if (!r)
                                              return failed(self, connect_failure(self->home_system(), r.error(),
                                                                                  "state replica"));
                                            self->state.replica = std::move(*r);
                                            send_now(self);
                                          });
}

caf::behavior sender_impl(sender_ptr self, state_sender_options o) {
  self->state.opts = std::move(o);
  return {
      [self](replicate_atom, uint64_t term, uint64_t sequence, std::string& bytes) {
        auto& st = self->state;
        st.term = term;
        st.sequence = sequence;
        st.bytes = std::move(bytes);
        try_send(self);
      },
      [self](sweep_atom) {
        self->state.busy = false;
        try_send(self);
      },
  };
}

}  // namespace

caf::actor spawn_state_sender(caf::actor_system& sys, state_sender_options o) {
  return sys.spawn(sender_impl, std::move(o));
}

}  // namespace troupe
