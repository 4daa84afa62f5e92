// One model, two formats: the default GGUF and its Hugging Face export
// (tools/export_hf.py, written by tools/setup.sh --test) give the same model.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>

#include "engine_fixture.h"

using namespace troupe;
using namespace troupe::test;

namespace {

std::string hf_dir() {
  auto p = cache_dir() / "models" / "SmolLM2-135M-Instruct-hf";
  if (!std::filesystem::exists(p / "config.json"))
    throw std::runtime_error("Hugging Face export missing at " + p.string() +
                             ": run tools/export_hf.py (tools/setup.sh --test does)");
  return p.string();
}

bool same_bits(const tensor& a, const tensor& b) {
  return a.shape() == b.shape() && a.bytes() == b.bytes() &&
         (a.empty() || std::memcmp(a.f32(), b.f32(), a.bytes()) == 0);
}

}  // namespace

TEST_CASE("the Hugging Face directory and the GGUF load to the same config and weights",
          "[formats][slow]") {
  auto hf = model::load(hf_dir());
  auto gg = shared_default_model();
  const auto &a = hf->config(), &b = gg->config();
  CHECK(hf->source().format == "safetensors");
  CHECK(a.n_layers == b.n_layers);
  CHECK(a.hidden == b.hidden);
  CHECK(a.n_heads == b.n_heads);
  CHECK(a.n_kv_heads == b.n_kv_heads);
  CHECK(a.ffn == b.ffn);
  CHECK(a.vocab == b.vocab);
  CHECK(a.rope_theta == b.rope_theta);
  CHECK(a.rms_eps == Approx(b.rms_eps));
  CHECK(a.tied_embeddings == b.tied_embeddings);
  CHECK(same_bits(hf->weights().tok_embd, gg->weights().tok_embd));
  CHECK(same_bits(hf->weights().out_norm, gg->weights().out_norm));
  for (size_t l = 0; l < hf->weights().layers.size(); ++l) {
    const auto &x = hf->weights().layers[l], &y = gg->weights().layers[l];
    INFO("layer " << l);
    CHECK(same_bits(x.wq, y.wq));
    CHECK(same_bits(x.wk, y.wk));
    CHECK(same_bits(x.wv, y.wv));
    CHECK(same_bits(x.wo, y.wo));
    CHECK(same_bits(x.w_gate, y.w_gate));
    CHECK(same_bits(x.w_up, y.w_up));
    CHECK(same_bits(x.w_down, y.w_down));
    CHECK(same_bits(x.attn_norm, y.attn_norm));
    CHECK(same_bits(x.ffn_norm, y.ffn_norm));
  }
}

TEST_CASE("the Hugging Face directory and the GGUF tokenize, template and generate identically",
          "[formats][slow]") {
  auto hf = model::load(hf_dir());
  auto gg = shared_default_model();
  CHECK(hf->tokenizer().data().chat_template == gg->tokenizer().data().chat_template);
  for (const char* text : {"Hello world!", "  spaces\n\nand 12345 digits", "你好，世界 🌍",
                           "<|im_start|>user\nhi<|im_end|>\n"}) {
    INFO(text);
    CHECK(hf->tokenizer().encode(text, true, true) == gg->tokenizer().encode(text, true, true));
  }
  engine_config cfg;
  cfg.record_logits = true;
  cfg.n_threads = 2;
  cfg.kv_tokens = 1024;
  engine a(hf, cfg), b(gg, cfg);
  auto prompt = gg->tokenizer().encode("The capital of France is", true, true);
  auto ra = a.generate({prompt}, greedy(8));
  auto rb = b.generate({prompt}, greedy(8));
  CHECK(ra[0].tokens == rb[0].tokens);
  for (size_t t = 0; t < ra[0].logits.size(); ++t)
    CHECK(std::memcmp(ra[0].logits[t].data(), rb[0].logits[t].data(), ra[0].logits[t].size() * 4) == 0);
}
