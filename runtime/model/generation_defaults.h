#pragma once
/// The sampling defaults a model ships (Hugging Face generation_config.json, GGUF
/// general.sampling.*) or a cluster file sets (model.generation_defaults): what a request
/// gets for the fields it leaves out. Precedence, as in vLLM: request > cluster file >
/// model file > OpenAI defaults.
#include <optional>
#include <string>
#include <utility>

namespace troupe {

/// Sampling defaults; an empty field means "no opinion" (the next source decides).
struct generation_defaults {
  std::optional<float> temperature;         ///< [0, 2]
  std::optional<float> top_p;               ///< (0, 1]
  std::optional<int> top_k;                 ///< >= -1; -1 or 0 = off
  std::optional<float> min_p;               ///< [0, 1]
  std::optional<float> repetition_penalty;  ///< (0, 100]
  std::optional<float> presence_penalty;    ///< [-2, 2]
  std::optional<float> frequency_penalty;   ///< [-2, 2]
  std::optional<int> max_tokens;            ///< >= 1; tokens a request without max_tokens may generate

  /// This, with every field that `over` sets replaced by its value.
  generation_defaults overlaid_with(const generation_defaults& over) const;
  /// Whether no field is set.
  bool empty() const;
  bool operator==(const generation_defaults& o) const;
  bool operator!=(const generation_defaults& o) const { return !(*this == o); }
};

/// Calls f(name, field) for every field of `g` (a const or mutable generation_defaults) in
/// one fixed order, with the names of the cluster file and the OpenAI API.
template <class G, class F>
void for_each_field(G& g, F&& f) {
  f("temperature", g.temperature);
  f("top_p", g.top_p);
  f("top_k", g.top_k);
  f("min_p", g.min_p);
  f("repetition_penalty", g.repetition_penalty);
  f("presence_penalty", g.presence_penalty);
  f("frequency_penalty", g.frequency_penalty);
  f("max_tokens", g.max_tokens);
}

/// The first field outside its range as {field, reason}, e.g. {"temperature", "must be in
/// [0, 2], got 3"}; {"", ""} when every set field is in range. Field names are the ones of
/// the cluster file and the OpenAI API.
std::pair<std::string, std::string> first_problem(const generation_defaults& g);

/// "temperature 0.2, top_p 0.9" (the set fields), or "none (OpenAI's)".
std::string describe_generation(const generation_defaults& g);

/// The default model's (SmolLM2-135M-Instruct) sampling defaults: temperature 0.2 and
/// top_p 0.9, the values Hugging Face's SmolLM2-135M-Instruct release recommends (its
/// generation_config.json; its model card's generate() example uses the same). Its GGUF
/// carries no general.sampling.* keys, so they are given here.
generation_defaults default_model_generation();

/// The sampling defaults the model at `path` ships: a Hugging Face directory's
/// generation_config.json (temperature, top_p, top_k, min_p, repetition_penalty,
/// max_new_tokens as max_tokens; the keys vLLM takes), or a .gguf file's
/// general.sampling.{temp, top_p, top_k, min_p, penalty_repeat}. "default" is the default
/// model, with default_model_generation() under what its file holds. Throws load_error
/// naming the file and key for a value out of range or of the wrong type.
generation_defaults read_generation_defaults(const std::string& path);

}  // namespace troupe
