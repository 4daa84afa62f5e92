// The leader's head state as it changes (head_state_recorder.h).
#include "actors/leadership/head_state_recorder.h"

#include <openssl/sha.h>

#include "actors/actor_system_config.h"
#include "actors/messages.h"

namespace troupe {

head_state_recorder::head_state_recorder(caf::actor_system& sys, head_state_recorder_options o)
    : sys_(&sys), opts_(std::move(o)) {
  if (opts_.directory) store_.emplace(head_state_store_options{*opts_.directory});
  if (opts_.restored) {
    recorded_ = *opts_.restored;
    saved_ = recorded_.sequence;
  }
  recorded_.config_digest = opts_.config_digest;
  current_ = recorded_;
  for (auto& s : opts_.standbys) senders_.push_back(spawn_state_sender(sys, s));
  if (opts_.metrics) opts_.metrics->head_state_sequence.set(static_cast<double>(recorded_.sequence));
  writer_ = std::thread([this] { write_loop(); });
}

head_state_recorder::~head_state_recorder() { halt(false); }

void head_state_recorder::stop() { halt(true); }

void head_state_recorder::halt(bool wait) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  if (!wait) {
    for (auto& s : senders_) caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
    senders_.clear();
    return;
  }
  // A sender ends its current attempt first (a connection attempt is bounded by 1 s).
  caf::scoped_actor self{*sys_};
  for (auto& s : senders_) {
    self->monitor(s);
    self->send_exit(s, caf::exit_reason::user_shutdown);
  }
  for (std::size_t i = 0; i < senders_.size(); ++i) {
    bool timed_out = false;
    self->receive([](const caf::down_msg&) {}, caf::after(std::chrono::seconds(5)) >> [&] { timed_out = true; });
    if (timed_out) {
      logger()->warn("head state: {} standby sender(s) did not stop within 5 s", senders_.size() - i);
      break;
    }
  }
  senders_.clear();
}

void head_state_recorder::set_members(std::vector<member_state> members) {
  std::lock_guard<std::mutex> lock(mutex_);
  current_.members = std::move(members);
  changed_locked();
}

void head_state_recorder::set_replicas(std::vector<replica_state> replicas, autoscale_state autoscale) {
  std::lock_guard<std::mutex> lock(mutex_);
  current_.replicas = std::move(replicas);
  current_.autoscale = autoscale;
  changed_locked();
}

void head_state_recorder::changed_locked() {
  current_.term = recorded_.term;
  current_.sequence = recorded_.sequence;
  current_.config_digest = opts_.config_digest;
  if (current_ == recorded_) return;  // a heartbeat, a readiness change: nothing to replicate
  current_.term = opts_.term;
  current_.sequence = recorded_.sequence + 1;
  recorded_ = current_;
  if (opts_.metrics) opts_.metrics->head_state_sequence.set(static_cast<double>(recorded_.sequence));
  cv_.notify_all();
}

head_state head_state_recorder::latest() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return recorded_;
}

uint64_t head_state_recorder::saved_sequence() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return saved_;
}

bool head_state_recorder::wait_saved(uint64_t sequence, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mutex_);
  return cv_.wait_for(lock, timeout, [&] { return saved_ >= sequence; });
}

void head_state_recorder::write_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || recorded_.sequence > saved_; });
    if (recorded_.sequence <= saved_) return;  // stopping with everything saved
    const head_state s = recorded_;
    lock.unlock();
    const auto bytes = encode(s);
    if (store_) {
      try {
        store_->save(s);
      } catch (const std::exception& e) {
        logger()->error("head state: saving term {} sequence {} failed: {}", s.term, s.sequence, e.what());
        if (opts_.metrics) opts_.metrics->head_state_replication_errors.with({"disk"}).inc();
      }
    }
    for (auto& sender : senders_) caf::anon_send(sender, replicate_atom::value, s.term, s.sequence, bytes);
    lock.lock();
    saved_ = s.sequence;
    cv_.notify_all();
  }
}

std::string cluster_config_digest(const cluster_config& c) {
  const auto yaml = to_yaml(c);
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(yaml.data()), yaml.size(), d);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char b : d) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

}  // namespace troupe
