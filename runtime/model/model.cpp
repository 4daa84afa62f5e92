#include "runtime/model/model.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>

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
}

dtype model::weight_type() const {
  for (const auto& l : loaded_.weights.layers)
    if (!l.wq.empty()) return l.wq.type();
  return loaded_.weights.tok_embd.empty() ? dtype::f32 : loaded_.weights.tok_embd.type();
}

const tensor& model::output_weight() const {
  return loaded_.weights.output.empty() ? loaded_.weights.tok_embd : loaded_.weights.output;
}

}  // namespace troupe
