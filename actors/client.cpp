#include "actors/client.h"

#include <map>
#include <set>
#include <thread>
#include <unordered_map>

#include "actors/actor_system_config.h"
#include "actors/cluster/supervisor.h"
#include "actors/link_connect.h"
#include "actors/link_security.h"
#include "runtime/text/chat_template.h"

namespace troupe {

namespace {

using clock_type = std::chrono::steady_clock;

/// Connects to the supervisor at host:port, retrying with backoff until `deadline`.
supervisor_actor connect_to_head(caf::actor_system& sys, const client_options& o, clock_type::time_point deadline) {
  const auto begin = clock_type::now();
  auto backoff = std::chrono::milliseconds(50);
  for (;;) {
    auto sup = connect_link<supervisor_actor>(sys, o.host, o.port);
    if (sup) return *sup;
    if (sup.error() == caf::sec::unexpected_actor_messaging_interface)
      throw std::runtime_error("the actor at " + endpoint(o.host, o.port) +
                               " is not the supervisor of this troupe version (its interface differs)");
    if (clock_type::now() + backoff > deadline)
      throw std::runtime_error(
          "head unreachable at " + endpoint(o.host, o.port) + " (tried for " +
          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - begin).count()) +
          " ms): " + sys.render(sup.error()));
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
}

/// A request the client actor relays.
struct relay {
  caf::actor receiver;
  uint64_t id = 0;            ///< the receiver's id
  generate_request request;   ///< what was asked, with `emitted` growing: a re-submission resumes after it
};

struct client_state {
  caf::actor router;      ///< null while it follows the head to a new router
  caf::actor supervisor;  ///< the head that gave the router (supervisor_actor), told a gateway is alive
  head_term term;     ///< the highest term of the routers it used: an older head is refused
  uint64_t next = 1;
  std::unordered_map<uint64_t, relay> relays;  ///< by the id the router knows
  std::optional<client_options> follow;        ///< set: follow the head across a router loss
  bool following = false;                      ///< a reconnection to the head is under way
  /// Receivers monitored (once each: an HTTP gateway's bridge sends every request).
  std::set<caf::actor_addr> watched;
  static inline const char* name = "troupe.client";
};

using client_ptr = client_actor::stateful_pointer<client_state>;

/// Whether the client follows the head across a loss of its router.
bool can_follow(const client_state& st) { return st.follow && st.follow->failover.count() > 0; }

/// The router-side id of the receiver's request `id`; 0 when unknown.
uint64_t find_relay(const client_state& st, const caf::actor& receiver, uint64_t id) {
  for (const auto& [rid, r] : st.relays)
    if (r.id == id && r.receiver == receiver) return rid;
  return 0;
}

void end_all(client_ptr self, const std::string& why) {
  for (auto& [rid, r] : self->state.relays) {
    token_msg m;
    m.request = r.id;
    m.finished = true;
    m.finish_reason = "error";
    m.error = why;
    caf::anon_send(r.receiver, token_atom::value, std::move(m));
  }
  self->state.relays.clear();
}

/// Submits relay `rid` to the current router (with the tokens its receiver already has).
void submit(client_ptr self, uint64_t rid, const relay& r) {
  caf::anon_send(self->state.router, generate_atom::value, rid, r.request, caf::actor_cast<caf::actor>(self));
}

/// The router is gone: reconnects to the head in a detached helper (connect_to_cluster
/// blocks) for up to client_options::failover; the answer comes back as router_atom.
void follow_head(client_ptr self, const std::string& why) {
  auto o = *self->state.follow;
  self->state.following = true;
  const auto heads = endpoint(o.host, o.port) +
                     (o.other_heads.empty() ? "" : " and " + std::to_string(o.other_heads.size()) + " other head(s)");
  logger()->warn("client: lost the cluster's router ({}): reconnecting to the head at {} for up to {} ms, {} "
                 "request(s) to resume",
                 why, heads, o.failover.count(), self->state.relays.size());
  o.connect_timeout = o.failover;
  o.serve_timeout = o.failover;
  auto client = caf::actor_cast<caf::actor>(self);
  self->system().spawn<caf::detached>([o, client, at_least = self->state.term](caf::event_based_actor* helper) {
    leader_router found;
    std::string error;
    try {
      found = connect_to_leader(helper->system(), o, at_least);
    } catch (const std::exception& e) {
      error = e.what();
    }
    helper->send(client, router_atom::value, found.router, found.term, error, found.supervisor);
    helper->quit();
  });
}

client_actor::behavior_type client_impl(client_ptr self, caf::actor router, std::optional<client_options> follow,
                                        head_term term, caf::actor supervisor) {
  self->state.router = router;
  self->state.supervisor = std::move(supervisor);
  self->state.term = term;
  self->state.follow = std::move(follow);
  self->monitor(router);
  if (self->state.follow && self->state.follow->gateway_index >= 0) self->send(self, sweep_atom::value);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.router && dm.source == st.router.address()) {
      const auto why = self->system().render(dm.reason);
      if (can_follow(st)) {
        st.router = nullptr;
        follow_head(self, why);
      } else {
        end_all(self, "lost the cluster's router: " + why);
      }
      return;
    }
    st.watched.erase(dm.source);
    for (auto it = st.relays.begin(); it != st.relays.end();) {
      if (it->second.receiver.address() == dm.source) {
        if (st.router) caf::anon_send(st.router, cancel_atom::value, it->first, caf::actor_cast<caf::actor>(self));
        it = st.relays.erase(it);
      } else {
        ++it;
      }
    }
  });
  return {
      [self](generate_atom, uint64_t id, generate_request& req, const caf::actor& receiver) {
        auto& st = self->state;
        const uint64_t rid = st.next++;
        auto& r = st.relays[rid] = relay{receiver, id, std::move(req)};
        if (st.watched.insert(receiver.address()).second) self->monitor(receiver);
        if (st.router) return submit(self, rid, r);
        // Submitted when the new router is known; after a failover that gave up, a new
        // request starts the next one (it waits up to client_options::failover).
        if (!st.following && can_follow(st)) follow_head(self, "no router since the last failover gave up");
      },
      [self](cancel_atom, uint64_t id, const caf::actor& receiver) {
        auto& st = self->state;
        const uint64_t rid = find_relay(st, receiver, id);
        if (rid == 0) return;
        if (st.router) {
          caf::anon_send(st.router, cancel_atom::value, rid, caf::actor_cast<caf::actor>(self));
          return;
        }
        token_msg m;  // no router to ask: the request ends here
        m.request = id;
        m.finished = true;
        m.finish_reason = "cancelled";
        caf::anon_send(receiver, token_atom::value, std::move(m));
        st.relays.erase(rid);
      },
      [self](router_atom, const caf::actor& router, head_term term, const std::string& error,
             const caf::actor& supervisor) {
        auto& st = self->state;
        if (st.router) return;
        st.following = false;
        if (!router) {
          end_all(self, "lost the cluster's router and found no head to follow: " + error);
          return;
        }
        if (term.value < st.term.value) {  // connect_to_leader refuses these; never take one
          follow_head(self, "a router of term " + std::to_string(term.value) + ", older than term " +
                                std::to_string(st.term.value) + " this client has used");
          return;
        }
        st.term = term;
        st.router = router;
        st.supervisor = supervisor;
        self->monitor(router);
        logger()->info("client: following the head: {} request(s) resumed on its router", st.relays.size());
        for (const auto& [rid, r] : st.relays) submit(self, rid, r);
      },
      [self](sweep_atom) {
        auto& st = self->state;
        if (st.router && st.supervisor)
          caf::anon_send(caf::actor_cast<supervisor_actor>(st.supervisor), gateway_atom::value,
                         st.follow->gateway_index);
        self->delayed_send(self, std::chrono::seconds(1), sweep_atom::value);
      },
      [self](status_atom) {
        auto rp = self->make_response_promise<router_status>();
        auto& st = self->state;
        if (!st.router) {  // a poller (an HTTP gateway's /ready) keeps it looking for the head
          if (!st.following && can_follow(st)) follow_head(self, "no router since the last failover gave up");
          rp.deliver(caf::make_error(caf::sec::unavailable_or_would_block));
          return rp;
        }
        self->request(caf::actor_cast<router_actor>(self->state.router), std::chrono::seconds(5), status_atom::value)
            .then([rp](const router_status& s) mutable { rp.deliver(s); },
                  [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
        return rp;
      },
      [self](token_atom, token_msg& m) {
        auto& st = self->state;
        auto it = st.relays.find(m.request);
        if (it == st.relays.end()) return;
        if (m.token >= 0) it->second.request.emitted.push_back(m.token);
        const bool finished = m.finished;
        m.request = it->second.id;
        caf::anon_send(it->second.receiver, token_atom::value, std::move(m));
        if (finished) st.relays.erase(it);
      },
  };
}

/// The term of the head `sup` leads by (lease_atom), asked within `timeout`.
caf::expected<head_term> term_of(caf::scoped_actor& self, const supervisor_actor& sup, caf::timespan timeout) {
  caf::expected<head_term> out{caf::make_error(caf::sec::runtime_error, "no answer")};
  self->request(sup, timeout, lease_atom::value)
      .receive([&](uint64_t t) { out = head_term{t}; }, [&](caf::error& e) { out = std::move(e); });
  return out;
}

/// Term fencing: why the router of the head at `where` of term `t` is refused ("" when it
/// is not older than `at_least`); logged once per head and call.
std::string refusal(const std::string& where, head_term t, head_term at_least, std::set<std::string>& logged) {
  if (t.value >= at_least.value) return "";
  const auto why = "refused the router of " + where + ": its term " + std::to_string(t.value) +
                   " is older than term " + std::to_string(at_least.value) + " this client has used (a deposed leader)";
  if (logged.insert(where).second) logger()->warn("client: {}", why);
  return why;
}

/// Several heads: tries each in turn (every attempt bounded: a paused head never answers)
/// until one gives its router (the head that leads and serves) and is not of an older
/// term than `at_least`, up to both timeouts.
leader_router connect_to_any_head(caf::actor_system& sys, const client_options& o, head_term at_least) {
  auto heads = o.other_heads;
  heads.insert(heads.begin(), std::make_pair(o.host, o.port));
  const auto deadline = clock_type::now() + o.connect_timeout + o.serve_timeout;
  const auto attempt = caf::timespan{std::chrono::seconds(1)};
  std::string last;
  std::set<std::string> logged;
  caf::scoped_actor self{sys};
  for (;;) {
    for (const auto& head : heads) {
      const auto where = endpoint(head.first, head.second);
      auto sup = connect_link_within<supervisor_actor>(sys, head.first, head.second, attempt);
      if (!sup) {
        last = where + ": " + sys.render(sup.error());
        continue;
      }
      caf::actor router;
      self->request(*sup, attempt, router_atom::value)
          .receive([&](caf::actor& r) { router = std::move(r); },
                   [&](caf::error& e) { last = where + ": " + sys.render(e); });
      if (!router) continue;
      auto term = term_of(self, *sup, attempt);
      if (!term) {
        last = where + ": " + sys.render(term.error());
        continue;
      }
      if (auto why = refusal(where, *term, at_least, logged); !why.empty()) {
        last = why;
        continue;
      }
      return {router, *term, where, caf::actor_cast<caf::actor>(*sup)};
    }
    if (clock_type::now() > deadline)
      throw std::runtime_error("no head of the " + std::to_string(heads.size()) + " gave a router within " +
                               std::to_string((o.connect_timeout + o.serve_timeout).count()) +
                               " ms; the last answer: " + last);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

caf::actor connect_to_cluster(caf::actor_system& sys, const client_options& o) {
  return connect_to_leader(sys, o).router;
}

leader_router connect_to_leader(caf::actor_system& sys, const client_options& o, head_term at_least) {
  if (!o.other_heads.empty()) return connect_to_any_head(sys, o, at_least);
  auto sup = connect_to_head(sys, o, clock_type::now() + o.connect_timeout);
  const auto deadline = clock_type::now() + o.serve_timeout;
  const auto where = endpoint(o.host, o.port);
  std::set<std::string> logged;
  caf::scoped_actor self{sys};
  for (;;) {
    caf::actor router;
    caf::error err;
    std::string refused;
    self->request(sup, std::chrono::seconds(5), router_atom::value)
        .receive([&](caf::actor& r) { router = std::move(r); }, [&](caf::error& e) { err = std::move(e); });
    if (router) {
      auto term = term_of(self, sup, std::chrono::seconds(5));
      if (!term) err = term.error();
      else if ((refused = refusal(where, *term, at_least, logged)).empty())
        return {router, *term, where, caf::actor_cast<caf::actor>(sup)};
    }
    const bool not_yet = err == caf::sec::unavailable_or_would_block || !refused.empty();
    if (!not_yet || clock_type::now() > deadline)
      throw std::runtime_error("the head at " + where +
                               (not_yet ? " was still not serving after " +
                                              std::to_string(o.serve_timeout.count() / 1000) + " s"
                                        : " gave no router") +
                               ": " + (refused.empty() ? sys.render(err) : refused));
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

client_actor spawn_client(caf::actor_system& sys, caf::actor router, std::optional<client_options> follow,
                          head_term term, caf::actor supervisor) {
  return sys.spawn(client_impl, std::move(router), std::move(follow), term, std::move(supervisor));
}

struct blocking_client::impl {
  client_options opts;
  std::shared_ptr<const model> meta;
  std::unique_ptr<system_config> cfg;
  std::unique_ptr<caf::actor_system> sys;
  client_actor client;

  explicit impl(client_options o) : opts(std::move(o)) {
    meta = model::load_metadata(opts.model);
    // Default heartbeats, but a lenient connection timeout: a head whose heartbeat
    // interval is longer than ours is not dropped; a silent one hits idle_timeout.
    fault_tolerance_section ft;
    ft.heartbeat_timeout = std::max(opts.idle_timeout, std::chrono::milliseconds(30000));
    ft.connection_timeout = ft.heartbeat_timeout;
    cfg = std::make_unique<system_config>(ft, 2);
    sys = std::make_unique<caf::actor_system>(*cfg);
    client = spawn_client(*sys, connect_to_cluster(*sys, opts), opts);
  }

  ~impl() {
    caf::anon_send_exit(client, caf::exit_reason::user_shutdown);
    client = nullptr;
  }

  /// Submits every prompt and collects the answers (ids = index + 1).
  std::vector<client_result> run(const std::vector<std::vector<int32_t>>& prompts, const sampling_params& p,
                                 const std::function<void(const token_msg&)>& on_token) {
    caf::scoped_actor self{*sys};
    std::vector<client_result> out(prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      out[i].prompt_tokens = prompts[i];
      self->send(client, generate_atom::value, uint64_t{i + 1}, generate_request{prompts[i], p},
                 caf::actor_cast<caf::actor>(self));
    }
    size_t open = prompts.size();
    std::string error;
    auto last = clock_type::now();
    while (open > 0 && error.empty()) {
      self->receive(
          [&](token_atom, token_msg& m) {
            last = clock_type::now();
            if (m.request < 1 || m.request > out.size()) return;
            if (on_token) on_token(m);
            auto& r = out[m.request - 1];
            if (m.token >= 0) r.tokens.push_back(m.token);
            r.text += m.text;
            if (!m.finished) return;
            r.finish_reason = m.finish_reason;
            if (m.finish_reason == "error") error = m.error.empty() ? "the request failed" : m.error;
            --open;
          },
          caf::after(std::chrono::milliseconds(200)) >> [&] {
            if (clock_type::now() - last > opts.idle_timeout)
              error = "no answer from the cluster at " + endpoint(opts.host, opts.port) + " in " +
                      std::to_string(opts.idle_timeout.count()) + " ms";
          });
    }
    if (!error.empty()) {
      for (size_t i = 0; i < out.size(); ++i)
        if (out[i].finish_reason.empty())
          self->send(client, cancel_atom::value, uint64_t{i + 1}, caf::actor_cast<caf::actor>(self));
      throw std::runtime_error(error);
    }
    return out;
  }
};

blocking_client::blocking_client(client_options o) : impl_(std::make_unique<impl>(std::move(o))) {}

blocking_client::~blocking_client() = default;

std::vector<int32_t> blocking_client::encode(const std::string& prompt, bool chat) const {
  const auto& tok = impl_->meta->tokenizer();
  if (!chat) return tok.encode(prompt, true, true);
  return tok.encode(apply_chat_template(tok.data(), {{"user", prompt}}, true), true, true);
}

client_result blocking_client::generate(const std::string& prompt, const sampling_params& p, bool chat,
                                        const std::function<void(const token_msg&)>& on_token) {
  return impl_->run({encode(prompt, chat)}, p, on_token).front();
}

std::vector<client_result> blocking_client::generate_all(const std::vector<std::vector<int32_t>>& prompts,
                                                         const sampling_params& p) {
  return impl_->run(prompts, p, {});
}

}  // namespace troupe
