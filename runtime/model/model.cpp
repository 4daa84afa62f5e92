#include "runtime/model/model.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>

#include "kernels/rope.h"
#include "kernels/base/device.h"

namespace troupe {

std::string resolve_model_path(const std::string& path) {
  if (path != "default") return path;
  std::filesystem::path cache;
  if (const char* c = std::getenv("TROUPE_CACHE"); c && *c) {
    cache = c;
  } else {
    const char* home = std::getenv("HOME");
    cache = std::filesystem::path(home ? home : "/root") / ".cache" / "troupe";
  }
  auto p = cache / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(p))
    throw std::runtime_error("the default model is not in the cache (" + p.string() +
                             "); fetch it with tools/fetch_model.sh");
  return p.string();
}

std::shared_ptr<const model> model::load(const std::string& path, const load_options& opt) {
  return std::make_shared<const model>(load_model(resolve_model_path(path), opt));
}

std::shared_ptr<const model> model::load_metadata(const std::string& path) {
  load_options none;
  none.layer_end = 0;
  none.load_embeddings = false;
  none.load_head = false;
  return load(path, none);
}

model::model(loaded_model&& m)
    : loaded_(std::move(m)), tokenizer_(loaded_.tokenizer) {
  const auto& c = loaded_.config;
  c.validate();
  auto freqs = kernels::rope_inv_freq(c.head_dim, c.rope_theta, c.scaling);
  const device_ref& dev = loaded_.device;
  rope_inv_freq_ = tensor({static_cast<int64_t>(freqs.size())}, dtype::f32, dev.backend);
  use_device(dev);
  device_stream s(dev);
  copy_bytes(rope_inv_freq_.view().data, freqs.data(), freqs.size() * sizeof(float), dev.backend, s.get());
  s.synchronize();
  layer_begin_ = 0;
  layer_end_ = c.n_layers;
  // Only the loaded layer range is usable; find it from which layers hold weights.
  while (layer_begin_ < layer_end_ && loaded_.weights.layers[layer_begin_].wq.empty()) ++layer_begin_;
  while (layer_end_ > layer_begin_ && loaded_.weights.layers[layer_end_ - 1].wq.empty()) --layer_end_;
  for (int l = layer_begin_; l < layer_end_; ++l) {
    auto& lw = loaded_.weights.layers[static_cast<size_t>(l)];
    lw.q_rows = static_cast<int>(lw.wq.shape()[0]);
    lw.kv_rows = static_cast<int>(lw.wk.shape()[0]);
    lw.ffn_rows = static_cast<int>(lw.w_gate.shape()[0]);
  }
  // TROUPE_FUSE=0 keeps the projections apart (measuring the unfused forward).
  const char* fuse = std::getenv("TROUPE_FUSE");
  if (dev.backend == backend_kind::cuda && !(fuse && std::strcmp(fuse, "0") == 0)) fuse_projections(s);
}

namespace {

/// The rows of `parts` (same type and row length, on `s`'s device) stacked in order.
tensor stack_rows(std::initializer_list<const tensor*> parts, const device_stream& s) {
  const tensor& first = **parts.begin();
  int64_t rows = 0;
  for (const tensor* p : parts) rows += p->shape()[0];
  tensor out(first.shape().rank == 1 ? shape_t{rows} : shape_t{rows, first.shape()[1]}, first.type(), first.where());
  size_t off = 0;
  for (const tensor* p : parts) {
    copy_bytes(static_cast<char*>(out.view().data) + off, p->view().data, p->bytes(), first.where(), s.get());
    off += p->bytes();
  }
  return out;
}

bool stackable(std::initializer_list<const tensor*> parts) {
  const tensor& first = **parts.begin();
  for (const tensor* p : parts)
    if (p->empty() || p->type() != first.type() || p->shape().rank != first.shape().rank ||
        (p->shape().rank == 2 && p->shape()[1] != first.shape()[1]))
      return false;
  return true;
}

}  // namespace

void model::fuse_projections(const device_stream& s) {
  for (int l = layer_begin_; l < layer_end_; ++l) {
    auto& lw = loaded_.weights.layers[static_cast<size_t>(l)];
    const bool no_bias = lw.bq.empty() && lw.bk.empty() && lw.bv.empty();
    if (stackable({&lw.wq, &lw.wk, &lw.wv}) && (no_bias || stackable({&lw.bq, &lw.bk, &lw.bv}))) {
      lw.wqkv = stack_rows({&lw.wq, &lw.wk, &lw.wv}, s);
      if (!no_bias) lw.bqkv = stack_rows({&lw.bq, &lw.bk, &lw.bv}, s);
      s.synchronize();  // the parts are read: free them
      lw.wq = tensor();
      lw.wk = tensor();
      lw.wv = tensor();
      lw.bq = tensor();
      lw.bk = tensor();
      lw.bv = tensor();
    }
    if (stackable({&lw.w_gate, &lw.w_up})) {
      lw.w_gate_up = stack_rows({&lw.w_gate, &lw.w_up}, s);
      s.synchronize();
      lw.w_gate = tensor();
      lw.w_up = tensor();
    }
  }
}

dtype model::weight_type() const {
  for (const auto& l : loaded_.weights.layers) {
    if (!l.wq.empty()) return l.wq.type();
    if (!l.wqkv.empty()) return l.wqkv.type();
  }
  return loaded_.weights.tok_embd.empty() ? dtype::f32 : loaded_.weights.tok_embd.type();
}

const tensor& model::output_weight() const {
  return loaded_.weights.output.empty() ? loaded_.weights.tok_embd : loaded_.weights.output;
}

}  // namespace troupe
