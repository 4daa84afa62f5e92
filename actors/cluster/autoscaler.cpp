// Autoscaling: the policy (load samples -> target active replicas) and the actor that
// samples the router and the replicas' gauges and tells the replica manager the target.
#include "actors/cluster/autoscaler.h"

#include <algorithm>
#include <cstdio>

#include "actors/actor_system_config.h"

namespace troupe {

const char* to_string(scale_direction d) {
  switch (d) {
    case scale_direction::none: return "none";
    case scale_direction::up: return "up";
    case scale_direction::down: return "down";
  }
  return "none";
}

autoscale_policy::autoscale_policy(const autoscale_section& config, int planned)
    : config_(config),
      max_(std::max(1, config.max_replicas > 0 ? std::min(config.max_replicas, planned) : planned)),
      wanted_(max_) {}

bool autoscale_policy::cooled(time_point at) const {
  return !last_decision_ || at - *last_decision_ >= config_.cooldown;
}

namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

}  // namespace

scale_decision autoscale_policy::decide(const load_sample& s) {
  const int lowest = std::max(1, config_.min_replicas);
  wanted_ = std::clamp(wanted_, std::min(lowest, max_), max_);
  const int highest = std::min(max_, std::max(0, s.available));
  const int current = std::min(wanted_, std::max(0, s.available));
  const double per = std::max(1, s.serving);
  const double queue = s.waiting / per, load = (s.running + s.waiting) / per;
  scale_decision d;
  std::string over;
  if (queue > config_.scale_up_queue)
    over = number(queue) + " waiting requests per serving replica > scale_up_queue " + number(config_.scale_up_queue);
  else if (s.serving > 0 && s.kv_usage > config_.scale_up_kv)
    over = "KV usage " + number(s.kv_usage) + " > scale_up_kv " + number(config_.scale_up_kv);
  const bool low = over.empty() && s.serving > 0 && load < config_.scale_down_load;
  if (!over.empty()) {
    low_since_.reset();
    if (current < highest && cooled(s.at)) {
      wanted_ = current + 1;
      last_decision_ = s.at;
      d.direction = scale_direction::up;
      d.reason = over;
    }
  } else if (low) {
    if (!low_since_) low_since_ = s.at;
    if (s.at - *low_since_ >= config_.scale_down_after && current > lowest && cooled(s.at)) {
      wanted_ = current - 1;
      last_decision_ = s.at;
      low_since_ = s.at;  // the next step down needs another full stretch of low load
      d.direction = scale_direction::down;
      d.reason = number(load) + " running + waiting requests per serving replica < scale_down_load " +
                 number(config_.scale_down_load) + " for " +
                 std::to_string(config_.scale_down_after.count()) + " ms";
    }
  } else {
    low_since_.reset();
  }
  d.target = std::min(wanted_, std::max(0, s.available));
  return d;
}

namespace {

using autoscaler_actor = caf::typed_actor<caf::reacts_to<sweep_atom>>;

struct autoscaler_state {
  autoscaler_options opts;
  std::optional<autoscale_policy> policy;
  int available = 0;     ///< the manager's last answer: replicas the devices allow
  bool asking = false;   ///< a status request to the router is in flight
  static inline const char* name = "troupe.autoscaler";
};

using autoscaler_ptr = autoscaler_actor::stateful_pointer<autoscaler_state>;

/// The sample of the router's `rs` and, when there are metrics, the gauges of the replicas
/// that report ready: their queues (sequences waiting for a batch slot or KV space) and
/// KV usage. Without metrics the replicas' queues are estimated from the requests each
/// holds beyond scheduler.max_seqs.
load_sample sample_of(const autoscaler_state& st, const router_status& rs) {
  load_sample s;
  s.at = std::chrono::steady_clock::now();
  s.serving = rs.ready;
  s.available = st.available;
  s.waiting = rs.waiting;
  if (!st.opts.metrics) {
    const int beyond = std::max(0, rs.running - rs.ready * st.opts.config.scheduler.max_seqs);
    s.waiting += beyond;
    s.running = rs.running - beyond;
    return s;
  }
  auto& m = *st.opts.metrics;
  int reporting = 0;
  double kv = 0;
  for (int r = 0; r < st.opts.config.parallel.replicas; ++r) {
    const metrics::label_values label{std::to_string(r)};
    if (m.replica_ready.with(label).value() < 0.5) continue;
    ++reporting;
    kv += m.kv_cache_usage.with(label).value();
    s.waiting += static_cast<int>(m.waiting_sequences.with(label).value());
    s.running += static_cast<int>(m.running_sequences.with(label).value());
  }
  s.kv_usage = reporting > 0 ? kv / reporting : 0.0;
  return s;
}

/// Decides on the router's answer and sends the manager the target (every interval: the
/// manager parks or restores until the active replicas match it).
void on_router_status(autoscaler_ptr self, const router_status& rs) {
  auto& st = self->state;
  const auto s = sample_of(st, rs);
  const auto d = st.policy->decide(s);
  if (d.direction != scale_direction::none) {
    logger()->info("autoscale: {} to {} active replica(s): {} (serving {}, waiting {}, running {}, KV usage {:.2f})",
                   to_string(d.direction), d.target, d.reason, s.serving, s.waiting, s.running, s.kv_usage);
    if (st.opts.metrics) st.opts.metrics->autoscale_decisions.with({to_string(d.direction)}).inc();
  }
  if (st.opts.metrics) st.opts.metrics->autoscale_target.set(d.target);
  if (d.target < 1) return;
  self->request(st.opts.manager, std::chrono::seconds(5), scale_atom::value, static_cast<int32_t>(d.target))
      .then([self](int32_t available) { self->state.available = available; },
            [](caf::error&) {});
}

autoscaler_actor::behavior_type autoscaler_impl(autoscaler_ptr self, autoscaler_options opts) {
  auto& st = self->state;
  st.opts = std::move(opts);
  st.available = st.opts.config.parallel.replicas;
  st.policy.emplace(st.opts.config.autoscale, st.opts.config.parallel.replicas);
  if (st.opts.initial_target > 0) {
    st.policy->start_at(st.opts.initial_target);
    logger()->info("autoscale: starting from the target of {} active replica(s) the head state holds",
                   st.policy->wanted());
  }
  const auto& a = st.opts.config.autoscale;
  logger()->info("autoscale: between {} and {} active replica(s), sampling every {} ms", std::max(1, a.min_replicas),
                 st.policy->max_replicas(), a.interval.count());
  self->send(self, sweep_atom::value);
  return {
      [self](sweep_atom) {
        auto& st = self->state;
        const auto interval = st.opts.config.autoscale.interval;
        self->delayed_send(self, interval, sweep_atom::value);
        if (st.asking) return;
        st.asking = true;
        self->request(st.opts.router, std::max<caf::timespan>(interval, std::chrono::seconds(2)), status_atom::value)
            .then(
                [self](router_status& rs) {
                  self->state.asking = false;
                  on_router_status(self, rs);
                },
                [self](caf::error&) { self->state.asking = false; });
      },
  };
}

}  // namespace

caf::actor spawn_autoscaler(caf::actor_system& sys, autoscaler_options opts) {
  return caf::actor_cast<caf::actor>(sys.spawn(autoscaler_impl, std::move(opts)));
}

}  // namespace troupe
