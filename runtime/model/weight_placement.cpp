// Weights onto their device: host f32 tensors converted and copied in chunks through
// pinned staging memory, or random weights made on the device for the `random` format.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/convert.h"
#include "kernels/base/device.h"
#include "runtime/model/model_loader.h"

namespace troupe {

namespace {

/// f32 elements per staging chunk (64 MiB).
constexpr int64_t chunk_elems = int64_t{16} << 20;

/// Every weight tensor slot of `w`, with a stable index for seeding.
std::vector<tensor*> weight_slots(model_weights& w) {
  std::vector<tensor*> all{&w.tok_embd, &w.out_norm, &w.output};
  for (auto& l : w.layers)
    for (tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.bq, &l.bk, &l.bv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up,
                      &l.w_down})
      all.push_back(t);
  return all;
}

std::string gigabytes(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  return buf;
}

/// Reports progress every 10%.
class progress_meter {
 public:
  progress_meter(double total, const std::function<void(const std::string&)>& f) : total_(total), f_(f) {}
  void add(double bytes) {
    done_ += bytes;
    const int decile = total_ > 0 ? static_cast<int>(10.0 * done_ / total_) : 10;
    if (f_ && decile > last_) {
      last_ = decile;
      f_("weights " + std::to_string(decile * 10) + "% (" + gigabytes(done_) + ")");
    }
  }

 private:
  double total_, done_ = 0;
  int last_ = 0;
  const std::function<void(const std::string&)>& f_;
};

/// Two staging lanes: pinned host f32 and device f32, used alternately so that the copy of
/// one chunk overlaps the host-side fill of the next.
struct staging {
  pinned_buffer host[2];
  tensor device[2];  // [chunk_elems] f32 each
};

/// `src` (host f32) converted to `type` on the stream's device.
tensor upload(const tensor& src, dtype type, const device_stream& s, staging& st, int& lane) {
  const kernels::op_context ctx{backend_kind::cuda, 1, s.get()};
  tensor dst(src.shape(), type, backend_kind::cuda);
  const int64_t n = src.numel();
  for (int64_t off = 0; off < n; off += chunk_elems) {
    const int64_t len = std::min(chunk_elems, n - off);
    if (lane == 0) s.synchronize();  // both lanes were in flight: the older one is free after this
    float* host = static_cast<float*>(st.host[lane].data());
    std::copy(src.f32() + off, src.f32() + off + len, host);
    tensor_view dev = st.device[lane].view().rows(0, len);
    copy_bytes(dev.data, host, static_cast<size_t>(len) * sizeof(float), backend_kind::cuda, s.get());
    tensor_view out = dst.view();
    out.data = static_cast<char*>(out.data) + static_cast<size_t>(off) * dtype_size(type);
    out.shape = shape_t{len};
    kernels::convert(ctx, out, dev);
    lane ^= 1;
  }
  return dst;
}

/// The same on the host (a type change only).
tensor convert_on_host(const tensor& src, dtype type) {
  tensor dst(src.shape(), type, backend_kind::cpu);
  kernels::convert(kernels::op_context{backend_kind::cpu, 8, nullptr}, dst.view(), src.view());
  return dst;
}

}  // namespace

void place_weights(loaded_model& m, const device_ref& device, dtype type,
                   const std::function<void(const std::string&)>& progress) {
  if (type == dtype::i32) throw load_error(m.path + ": weights cannot be placed as i32");
  auto slots = weight_slots(m.weights);
  double total = 0;
  for (tensor* t : slots)
    if (!t->empty()) total += static_cast<double>(t->numel()) * static_cast<double>(dtype_size(type));
  progress_meter meter(total, progress);
  if (device.backend == backend_kind::cpu) {
    for (tensor* t : slots)
      if (!t->empty() && t->type() != type) *t = convert_on_host(*t, type);
    m.device = device;
    return;
  }
  use_device(device);
  device_stream s(device);
  staging st;
  for (int i = 0; i < 2; ++i) {
    st.host[i] = pinned_buffer(static_cast<size_t>(chunk_elems) * sizeof(float), device.backend);
    st.device[i] = tensor({chunk_elems}, dtype::f32, backend_kind::cuda);
  }
  int lane = 0;
  for (tensor* t : slots) {
    if (t->empty() || t->where() == backend_kind::cuda) continue;
    if (t->type() != dtype::f32) throw load_error(m.path + ": host weights must be f32 to be placed on a device");
    tensor placed = upload(*t, type, s, st, lane);
    s.synchronize();  // the host tensor is read by then: free it
    *t = std::move(placed);
    meter.add(static_cast<double>(t->bytes()));
  }
  m.device = device;
}

void make_random_weights(loaded_model& m, const load_options& opt) {
  const model_config& c = m.config;
  const auto& sl = m.slice;
  const int begin = opt.layer_begin, end = opt.layer_end < 0 ? c.n_layers : opt.layer_end;
  if (begin < 0 || begin > end || end > c.n_layers)
    throw load_error(m.path + ": layer range [" + std::to_string(begin) + ", " + std::to_string(end) +
                     ") is outside the model's " + std::to_string(c.n_layers) + " layers");
  const backend_kind be = opt.device.backend;
  const dtype type = be == backend_kind::cpu ? dtype::f32 : opt.weight_type;
  use_device(opt.device);
  device_stream s(opt.device);
  const kernels::op_context ctx{be, 8, s.get()};
  const int64_t h = c.hidden, hd = c.head_dim, q = int64_t{sl.n_heads} * hd, kv = int64_t{sl.n_kv_heads} * hd;
  double total = 0;
  // Every tensor's seed is a function of (seed, layer, which tensor) and each slice takes its
  // place in the whole tensor, so every tensor or pipeline split holds the same model.
  auto make = [&](shape_t shape, int layer, int which, int64_t first = 0, int64_t stride = 0) {
    tensor t(shape, type, be);
    const uint64_t seed = opt.random_seed * 1000003u + static_cast<uint64_t>(layer + 1) * 64u + static_cast<uint64_t>(which);
    if (which == 0)
      kernels::fill_value(ctx, t.view(), 1.0f);  // norms
    else
      kernels::fill_random(ctx, t.view(), seed, 0.02f, first, stride);
    total += static_cast<double>(t.bytes());
    return t;
  };
  auto& w = m.weights;
  w.layers.resize(static_cast<size_t>(c.n_layers));
  const int64_t q0 = int64_t{sl.head_begin} * hd, k0 = int64_t{sl.kv_head_begin} * hd, f0 = sl.ffn_begin;
  const int64_t q_all = int64_t{c.n_heads} * hd;
  if (opt.load_embeddings) w.tok_embd = make({c.vocab, h}, -1, 1);
  for (int i = begin; i < end; ++i) {
    auto& l = w.layers[static_cast<size_t>(i)];
    l.attn_norm = make({h}, i, 0);
    l.wq = make({q, h}, i, 1, q0 * h);
    l.wk = make({kv, h}, i, 2, k0 * h);
    l.wv = make({kv, h}, i, 3, k0 * h);
    if (c.attn_bias) {
      l.bq = make({q}, i, 4, q0);
      l.bk = make({kv}, i, 5, k0);
      l.bv = make({kv}, i, 6, k0);
    }
    l.wo = make({h, q}, i, 7, q0, q_all);
    l.ffn_norm = make({h}, i, 0);
    l.w_gate = make({sl.ffn_size, h}, i, 8, f0 * h);
    l.w_up = make({sl.ffn_size, h}, i, 9, f0 * h);
    l.w_down = make({h, sl.ffn_size}, i, 10, f0, c.ffn);
  }
  if (opt.load_head) {
    w.out_norm = make({h}, c.n_layers, 0);
    if (!c.tied_embeddings) w.output = make({c.vocab, h}, c.n_layers, 11);
  }
  s.synchronize();
  m.device = opt.device;
  m.n_params = 0;
  if (opt.progress) opt.progress("random weights: " + gigabytes(total));
}

}  // namespace troupe
