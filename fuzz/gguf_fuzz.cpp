// Fuzz target: a GGUF file, read the way the engine reads a model. The header and metadata
// (every typed getter on every key), each tensor's data (read whole, from an exact-size heap
// copy, so ASan flags a view past the end), the model config and weights, and the tokenizer
// from tokenizer.ggml.* (ids checked against the vocabulary) with its chat template.
// Any kvp::Error is a clean refusal; anything else (a crash, a sanitizer report, another
// exception) is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "fuzz_util.h"
#include "io/gguf.h"
#include "model/config.h"
#include "model/weights.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

using kvp::Error;
using kvp::GgufFile;

template <typename F>
void refusable(F&& f) {
  try {
    f();
  } catch (const Error&) {
  }
}

void read_metadata(const GgufFile& g) {
  for (const auto& entry : g.metadata()) {
    const std::string& key = entry.first;  // not a binding: clang 14 cannot capture one
    refusable([&] { g.get_string(key); });
    refusable([&] { g.get_int(key); });
    refusable([&] { g.get_float(key); });
    refusable([&] { g.get_bool(key); });
    refusable([&] { g.get_string_array(key); });
    refusable([&] { g.get_int_array(key); });
    refusable([&] { g.get_float_array(key); });
  }
}

void read_tensors(const GgufFile& g) {
  for (const kvp::GgufTensorInfo& info : g.tensors()) {
    kvp::fuzz::touch(info.data, info.nbytes);
    const kvp::Tensor t = g.tensor(info.name);
    kvp::fuzz::touch(t.data(), t.nbytes());
  }
}

void read_model(const GgufFile& g) {
  const kvp::ModelConfig config = kvp::config_from_gguf(g);
  const kvp::ModelWeights weights = kvp::weights_from_gguf(g, config);
  kvp::fuzz::touch(weights.token_embedding.data(), weights.token_embedding.nbytes());
}

void use_tokenizer(const GgufFile& g) {
  const kvp::Tokenizer tok = kvp::Tokenizer::from_gguf(g);
  const std::string text =
      "Hello <|im_start|>user\n<|begin_of_text|> 12345 x\xc2\xb2 \xf0\x9f\x98\x80 \xff\xfe end";
  for (bool special : {true, false}) {
    const std::vector<int32_t> ids = tok.encode(text, special, true);
    tok.decode(ids, true);
    tok.decode(ids, false);
  }
  // Every id of the vocabulary decodes (inputs are small, so the vocabulary is too).
  std::vector<int32_t> all(static_cast<size_t>(tok.vocab_size()));
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    all[static_cast<size_t>(id)] = id;
    tok.token_text(id);
    tok.is_end_of_generation(id);
  }
  tok.decode(all, false);
  tok.is_end_of_generation(tok.bos_id());
  tok.is_end_of_generation(tok.eos_id());

  const kvp::ChatTemplate chat = kvp::ChatTemplate::detect(tok.chat_template());
  const std::vector<kvp::ChatMessage> messages = {{"system", " Be brief. "},
                                                  {"user", "Hi <|im_end|>"}};
  tok.encode(chat.render(messages, true), true, true);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const GgufFile g = GgufFile::open(kvp::MappedFile::from_bytes("fuzz.gguf", data, size));
    read_metadata(g);
    read_tensors(g);
    refusable([&] { read_model(g); });
    refusable([&] { use_tokenizer(g); });
  } catch (const Error&) {
  }
  return 0;
}
