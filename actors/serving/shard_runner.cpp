#include "actors/serving/shard_runner.h"

#include <cstdlib>
#include <utility>

#include <spdlog/fmt/fmt.h>

#include "actors/actor_system_config.h"
#include "actors/serving/compute_priority.h"
#include "actors/serving/device_releases.h"
#include "kernels/base/progress.h"

namespace troupe {

using namespace shard_completion;

namespace {

/// TROUPE_SLOW_STEP_MS=<ms>: steps that take longer are logged with their shape; unset: none.
int64_t slow_step_us() {
  static const int64_t us = [] {
    const char* e = std::getenv("TROUPE_SLOW_STEP_MS");
    if (!e || !*e) return int64_t{0};
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    if (end == e || *end != '\0' || v <= 0 || v > 86400000) {
      logger()->warn("TROUPE_SLOW_STEP_MS='{}' is not a whole number of milliseconds from 1 to 86400000: slow "
                     "steps are not logged", e);
      return int64_t{0};
    }
    return static_cast<int64_t>(v) * 1000;
  }();
  return us;
}

}  // namespace

shard_runner::~shard_runner() {
  if (thread_.joinable()) thread_.detach();  // only when stop() was never called
}

void shard_runner::start() {
  auto me = shared_from_this();
  thread_ = std::thread([me] { me->main(); });
}

void shard_runner::post(shard_job job) {
  {
    std::lock_guard<std::mutex> lock(mx_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void shard_runner::abort() noexcept {
  std::lock_guard<std::mutex> lock(mx_);
  aborted_ = true;
  if (worker_) worker_->abort();
}

void shard_runner::cut_short_for_adoption(const std::string& why) {
  std::vector<uint64_t> dropped;
  {
    std::lock_guard<std::mutex> lock(mx_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (it->kind != job_kind::step) {
        ++it;
        continue;
      }
      dropped.push_back(it->id);
      it = jobs_.erase(it);
    }
    if (worker_) worker_->abort();  // the relink replaces the aborted links
  }
  for (uint64_t id : dropped)
    reply(job_failed_atom::value, id, caf::make_error(caf::sec::runtime_error, name_ + ": step dropped: " + why));
}

void shard_runner::stop() {
  abort();
  {
    std::lock_guard<std::mutex> lock(mx_);
    closing_ = true;
  }
  cv_.notify_all();
  bool finished = false;
  {
    std::lock_guard<std::mutex> lock(done_mx_);
    finished = finished_;
    if (!finished) {
      retired_ = true;
      device_releases::instance().retire(spec_.device);
    }
  }
  if (finished) {
    thread_.join();  // it is past its last use of the worker
    return;
  }
  if (busy_)
    logger()->warn("{}: worker thread still busy at stop (loading or in a job); detached, {} is released when it "
                   "ends", name_, spec_.device);
  thread_.detach();  // an idle one ends as soon as it has freed its worker
}

void shard_runner::main() {
  renice_compute_thread(spec_.device, name_);
  progress_beats::attach(&beats_);
  busy_ = true;
  if (load()) {
    busy_ = false;
    while (auto job = next_job()) {
      busy_ = true;
      run(*job);
      busy_ = false;
    }
  }
  std::unique_ptr<shard_worker> w;
  {
    std::lock_guard<std::mutex> lock(mx_);
    w = std::move(worker_);
  }
  w.reset();  // communicators and context are released on the thread that used them
  std::lock_guard<std::mutex> lock(done_mx_);
  finished_ = true;
  if (retired_) device_releases::instance().release(spec_.device);
}

void shard_runner::wait_for_device() {
  const auto bound = std::chrono::milliseconds(spec_.release_wait_ms);
  const bool free = device_releases::instance().wait(spec_.device, bound, [this] {
    std::lock_guard<std::mutex> lock(mx_);
    return aborted_;
  });
  if (free) return;
  throw std::runtime_error("device " + spec_.device + " is still held by a stopped shard's worker after " +
                           std::to_string(bound.count()) + " ms (fault_tolerance.release_wait)");
}

bool shard_runner::load() {
  try {
    hang_ = shard_faults::read_hang_fault();
    token_ = shard_faults::read_token_fault();
    wait_for_device();
    shard_spec spec = spec_;
    if (slow_step_us() > 0) spec.context.time_steps = true;  // note_step logs a slow step's device time
    auto w = std::make_unique<shard_worker>(spec, progress_);
    auto addresses = w->addresses();
    {
      std::lock_guard<std::mutex> lock(mx_);
      worker_ = std::move(w);
      if (aborted_) worker_->abort();
    }
    reply(loaded_atom::value, std::move(addresses));
    return true;
  } catch (const std::exception& e) {
    const std::string cause = e.what();
    report("failed: " + cause);
    std::string why = name_ + " (stage " + std::to_string(spec_.stage) + ", tensor rank " +
                      std::to_string(spec_.tp_rank) + ") failed to load";
    if (cause.find(spec_.model_path) == std::string::npos) why += " model '" + spec_.model_path + "'";
    reply(load_failed_atom::value, why + ": " + cause);
    return false;
  }
}

std::optional<shard_job> shard_runner::next_job() {
  std::unique_lock<std::mutex> lock(mx_);
  cv_.wait(lock, [this] { return closing_ || !jobs_.empty(); });
  if (closing_) return std::nullopt;
  auto job = std::move(jobs_.front());
  jobs_.pop_front();
  return job;
}

step_output shard_runner::run_step(step_request& r) {  // fills its ahead rows in place (shard_worker::run)
  running_step_ = r.step_id + 1;
  progress_beats::beat();
  ++steps_run_;
  if (hang_ && name_ == "shard " + hang_->shard && steps_run_ == hang_->step && shard_faults::claim_fault(hang_->text)) {
    logger()->warn("{}: TROUPE_FAULT_HANG: the worker hangs for {} ms in step {}", name_, hang_->sleep.count(),
                   r.step_id);
    std::this_thread::sleep_for(hang_->sleep);
  }
  struct clear {
    std::atomic<uint64_t>& v;
    ~clear() { v = 0; }
  } done{running_step_};
  auto out = worker_->run(r);
  if (token_ && name_ == "shard " + token_->shard && steps_run_ == token_->step && !out.samples.empty() &&
      shard_faults::claim_fault(token_->text)) {
    logger()->warn("{}: TROUPE_FAULT_TOKEN: step {} answers token {} for {}", name_, r.step_id,
                   out.samples[0].token ^ 1, out.samples[0].token);
    out.samples[0].token ^= 1;
  }
  return out;
}

bool shard_runner::pipelining() {
  static const bool on = [] {
    const char* e = std::getenv("TROUPE_PIPELINE");
    return !(e && e[0] == '0');
  }();
  return on;
}

void shard_runner::run_pipelined(shard_job first) {
  std::deque<shard_job> flight;
  auto fail_all = [&](const std::string& why) noexcept {
    for (const auto& j : flight) fail_job(j, why);
    flight.clear();
    worker_->abandon();  // the worker and this list stay in step: neither keeps a step
  };
  try {
    flight.push_back(std::move(first));
    begin_pipelined(flight);
    while (!flight.empty()) {
      if (flight.size() == 1)
        if (auto next = next_pipelined()) {
          flight.push_back(std::move(*next));
          begin_pipelined(flight);
        }
      bool done = true;  // a device error or the deadline shows in complete(), which fails the steps in flight
      try {
        done = flight.size() > 1 || worker_->front_done();
      } catch (const std::exception&) {
      }
      if (!done) {
        std::this_thread::yield();
        continue;
      }
      try {
        auto out = worker_->complete();
        auto j = std::move(flight.front());
        flight.pop_front();
        last_end_ = std::chrono::steady_clock::now();
        note_step(j.step, out, j.replayed);
        reply(step_done_atom::value, j.id, std::move(out));
      } catch (const std::exception& e) {
        fail_all(e.what());
      }
    }
  } catch (const std::exception& e) {
    fail_all(e.what());
  } catch (...) {
    fail_all("an unknown error");
  }
  running_step_ = 0;
}

void shard_runner::begin_pipelined(std::deque<shard_job>& flight) {
  try {
    running_step_ = flight.back().step.step_id + 1;
    progress_beats::beat();
    ++steps_run_;
    const int64_t before = graph_replays();
    worker_->begin(flight.back().step);
    flight.back().replayed = graph_replays() > before;
  } catch (const std::exception& e) {
    fail_job(flight.back(), e.what());
    flight.pop_back();
  }
}

void shard_runner::fail_job(const shard_job& j, const std::string& why) noexcept {
  try {
    reply(job_failed_atom::value, j.id,
          caf::make_error(caf::sec::runtime_error,
                          name_ + ": step " + std::to_string(j.step.step_id) + " failed: " + why));
  } catch (...) {
  }
}

std::optional<shard_job> shard_runner::next_pipelined() {
  std::lock_guard<std::mutex> lock(mx_);
  if (closing_ || aborted_ || jobs_.empty() || jobs_.front().kind != job_kind::step ||
      !worker_->can_begin(jobs_.front().step))
    return std::nullopt;
  auto job = std::move(jobs_.front());
  jobs_.pop_front();
  return job;
}

void shard_runner::note_gap(uint64_t step_id) noexcept {
  try {
    const int64_t limit = slow_step_us();
    if (limit == 0 || last_end_ == std::chrono::steady_clock::time_point{}) return;
    const auto gap = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - last_end_);
    if (gap.count() < limit || gap >= std::chrono::seconds(1)) return;  // a second or more: a quiet period
    logger()->warn("{}: idle gap of {:.1f} ms before step {}: no step was queued when the one before ended", name_,
                   static_cast<double>(gap.count()) / 1000.0, step_id);
  } catch (...) {  // a diagnostic: never in the way of the step
  }
}

void shard_runner::run(shard_job& job) {
  if (job.kind == job_kind::step) note_gap(job.step.step_id);
  if (job.kind == job_kind::step && job.step.keep_tokens && pipelining() && !hang_ && !token_ &&
      worker_->can_begin(job.step))
    return run_pipelined(std::move(job));
  const std::string what = job.kind == job_kind::step      ? "step " + std::to_string(job.step.step_id)
                           : job.kind == job_kind::relink ? std::string("relink")
                                                          : std::string("connect");
  try {
    if (job.kind == job_kind::step) {
      const int64_t before = graph_replays();
      auto out = run_step(job.step);
      last_end_ = std::chrono::steady_clock::now();
      note_step(job.step, out, graph_replays() > before);
      reply(step_done_atom::value, job.id, std::move(out));
    } else if (job.kind == job_kind::relink) {
      shard_addresses a;
      {
        std::lock_guard<std::mutex> lock(mx_);  // abort() reads the communicators relink replaces
        aborted_ = false;  // the links an abort was for are replaced (a later abort sets it again)
        a = worker_->relink(job.drop_context);
      }
      reply(relinked_atom::value, job.id, job.drop_context, std::move(a));
    } else {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(spec_.timeout_ms);
      if (job.peers.kv_blocks > 0 && !job.peers.keep_kv) worker_->set_kv_blocks(job.peers.kv_blocks);
      worker_->connect(job.peers.tensor_group, job.peers.prev, job.peers.next, deadline, job.peers.keep_kv);
      const shard_context* ctx = worker_->context();
      report(ctx && ctx->graph_count() > 0
                 ? "connected (" + std::to_string(ctx->graph_count()) + " decode graphs captured)"
                 : std::string("connected"));
      reply(connected_atom::value, job.id);
    }
  } catch (const std::exception& e) {
    if (job.kind == job_kind::connect) report("failed: connect: " + std::string(e.what()));
    reply(job_failed_atom::value, job.id,
          caf::make_error(caf::sec::runtime_error, name_ + ": " + what + " failed: " + e.what()));
  }
}

int64_t shard_runner::graph_replays() const {
  const shard_context* ctx = worker_ ? worker_->context() : nullptr;
  return ctx ? ctx->graph_replays() : 0;
}

void shard_runner::note_step(const step_request& r, const step_output& out, bool replayed) noexcept {
  try {
    const shard_context* ctx = worker_->context();
    const int64_t limit = slow_step_us();
    if (limit == 0 || out.busy_us < limit) return;
    const double device_ms = ctx ? ctx->last_step_device_ms() : 0.0;  // 0 off the GPU
    const std::string on_device = device_ms > 0 ? fmt::format(" ({:.1f} on the device)", device_ms) : std::string();
    logger()->warn("{}: slow step {}: {:.1f} ms{}, {} tokens of {} sequences ({} decoding), {} logit rows, {} KV "
                   "blocks a row, {}",
                   name_, r.step_id, static_cast<double>(out.busy_us) / 1000.0, on_device, r.batch.n_tokens(),
                   r.batch.n_seqs(), r.batch.leading_singles(), r.batch.logit_rows.size(), r.batch.max_blocks,
                   replayed ? "a decode graph replay" : "run eagerly");
  } catch (...) {  // a diagnostic: never in the way of the step's answer
  }
}

void shard_runner::report(const std::string& what) {
  if (progress_) progress_(what);
}

}  // namespace troupe
