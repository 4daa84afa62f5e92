// load_model on the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) and on cut copies of it.
#include <catch2/catch.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/model_loader.h"
#include "test_support.h"

using namespace troupe;
using Catch::Contains;

namespace {

/// Writes the first `bytes` bytes of `src` to `dst`.
void copy_prefix(const std::string& src, const std::string& dst, size_t bytes) {
  std::ifstream in(src, std::ios::binary);
  std::vector<char> buf(bytes);
  in.read(buf.data(), static_cast<std::streamsize>(bytes));
  REQUIRE(static_cast<size_t>(in.gcount()) == bytes);
  std::ofstream(dst, std::ios::binary).write(buf.data(), static_cast<std::streamsize>(bytes));
}

}  // namespace

TEST_CASE("the default model loads with SmolLM2-135M's config and weight shapes", "[loader][slow]") {
  const auto m = load_model(test::default_model());
  const auto& c = m.config;
  CHECK(m.format == "gguf");
  CHECK(c.arch == architecture::llama);
  CHECK(c.n_layers == 30);
  CHECK(c.hidden == 576);
  CHECK(c.n_heads == 9);
  CHECK(c.n_kv_heads == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.ffn == 1536);
  CHECK(c.vocab == 49152);
  CHECK(c.max_context == 8192);
  CHECK(c.rope_theta == 100000.0f);
  CHECK(c.rms_eps == 1e-5f);
  CHECK(c.tied_embeddings);
  CHECK_FALSE(c.attn_bias);
  CHECK(c.scaling.type == rope_scaling::kind::none);
  const auto& w = m.weights;
  CHECK(w.tok_embd.shape() == shape_t{49152, 576});
  CHECK(w.out_norm.shape() == shape_t{576});
  CHECK(w.output.empty());
  REQUIRE(w.layers.size() == 30);
  for (const auto& l : w.layers) {
    CHECK(l.attn_norm.shape() == shape_t{576});
    CHECK(l.wq.shape() == shape_t{576, 576});
    CHECK(l.wk.shape() == shape_t{192, 576});
    CHECK(l.wv.shape() == shape_t{192, 576});
    CHECK(l.wo.shape() == shape_t{576, 576});
    CHECK(l.ffn_norm.shape() == shape_t{576});
    CHECK(l.w_gate.shape() == shape_t{1536, 576});
    CHECK(l.w_up.shape() == shape_t{1536, 576});
    CHECK(l.w_down.shape() == shape_t{576, 1536});
    CHECK(l.bq.empty());
  }
  CHECK(m.tensor_types == std::map<std::string, int>{{"F32", 61}, {"Q4_1", 210}, {"Q8_0", 1}});
  CHECK(m.n_params == 134515008);
}

TEST_CASE("the default model's weights match the gguf Python package's dequantization", "[loader][slow]") {
  // Expected values: gguf.quants.dequantize on the file's tensors (gguf Python package, run once
  // by hand); wq is the HF-order matrix stored.reshape(9, 32, 2, 576).swapaxes(1, 2).
  load_options o;
  o.layer_end = 1;
  const auto m = load_model(test::default_model(), o);
  const float* e = m.weights.tok_embd.f32();  // Q8_0
  CHECK(e[1 * 576 + 0] == -0.0238037109375f);
  CHECK(e[1 * 576 + 1] == -0.015869140625f);
  CHECK(e[1 * 576 + 3] == 0.015869140625f);
  CHECK(e[49151 * 576 + 575] == -0.0417022705078125f);
  const auto& l = m.weights.layers[0];
  const float* d = l.w_down.f32();  // Q4_1
  CHECK(d[5 * 1536 + 0] == -0.198577880859375f);
  CHECK(d[5 * 1536 + 1] == -0.127227783203125f);
  CHECK(d[575 * 1536 + 1535] == -0.181365966796875f);
  const float* q = l.wq.f32();  // Q4_1, un-permuted
  CHECK(q[1 * 576 + 0] == -0.1591796875f);
  CHECK(q[1 * 576 + 1] == 0.39794921875f);
  CHECK(q[32 * 576 + 2] == -0.19281005859375f);
  CHECK(q[575 * 576 + 2] == 0.34100341796875f);
  CHECK(m.weights.layers[1].wq.empty());
}

TEST_CASE("the default model's tokenizer data comes from its GGUF metadata", "[loader][slow]") {
  const auto m = load_model_metadata(test::default_model());
  const auto& t = m.tokenizer;
  CHECK(t.kind == tokenizer_kind::bpe);
  CHECK(t.pre == "smollm");
  CHECK(t.tokens.size() == 49152);
  CHECK(t.types.size() == 49152);
  CHECK(t.merges.size() == 48900);
  CHECK(t.bos_id == 1);
  CHECK(t.eos_id == 2);
  CHECK(t.unk_id == 0);
  CHECK(t.pad_id == 2);
  CHECK(t.tokens[2] == "<|im_end|>");
  CHECK(t.eog_ids == std::vector<int32_t>{2, 0});
  CHECK_FALSE(t.add_bos);
  CHECK_FALSE(t.add_space_prefix);
  CHECK(t.chat_template.find("<|im_start|>") != std::string::npos);
  CHECK(m.weights.layers.empty());
  CHECK(m.weights.tok_embd.empty());
}

TEST_CASE("the default model cut in its header, metadata, tensor infos or data is reported as truncated",
          "[loader][slow]") {
  const std::string src = test::default_model();
  const gguf_file g(src);
  const std::string dst = (test::scratch_dir("loader-cut") / "model.gguf").string();
  struct cut_case {
    size_t at;
    std::string what;
  };
  const std::vector<cut_case> cuts = {
      {10, "truncated while reading header (tensor count)"},
      {200, "truncated while reading metadata"},
      // Tensor info 268 starts at data_offset - 232 (gguf Python package's field offsets); 200 bytes
      // before the data section its 32-byte name has been read, its dimension count has not.
      {static_cast<size_t>(g.data_offset()) - 200, "truncated while reading tensor info 268 (blk.9.attn_output.weight)"},
      {static_cast<size_t>(g.data_offset()) + 1000, "truncated while reading tensor data of 'token_embd.weight'"},
  };
  for (const auto& c : cuts) {
    INFO("cut at " << c.at);
    copy_prefix(src, dst, c.at);
    CHECK_THROWS_WITH(load_model(dst), Contains(dst) && Contains(c.what));
  }
}

TEST_CASE("a path that does not exist is rejected by name", "[loader]") {
  const std::string p = (test::scratch_dir("loader-none") / "nope.gguf").string();
  CHECK_THROWS_WITH(load_model(p), Contains(p) && Contains("no such file or directory"));
}
