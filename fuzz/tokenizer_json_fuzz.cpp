// Fuzz target: a Hugging Face tokenizer.json (and, after a separator, the
// tokenizer_config.json read next to it: special tokens, add_bos_token, the chat template).
// A tokenizer that loads then encodes text with and without special tokens, decodes the ids,
// decodes every id of its vocabulary and renders its chat template.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "fuzz_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

void use_tokenizer(const kvp::Tokenizer& tok) {
  const std::string text =
      "Hello <|im_start|>user\n<s> 12345 x\xc2\xb2 \xf0\x9f\x98\x80 \xff\xfe  end\r\n\t";
  for (bool special : {true, false}) {
    const std::vector<int32_t> ids = tok.encode(text, special, true);
    tok.decode(ids, true);
    tok.decode(ids, false);
  }
  // Inputs are small, so the vocabulary is too (ids are capped at 2^24 by the reader).
  const int32_t n = tok.vocab_size() < (1 << 16) ? tok.vocab_size() : (1 << 16);
  std::vector<int32_t> all(static_cast<size_t>(n));
  for (int32_t id = 0; id < n; ++id) {
    all[static_cast<size_t>(id)] = id;
    tok.token_text(id);
    tok.is_end_of_generation(id);
  }
  tok.decode(all, false);
  const kvp::ChatTemplate chat = kvp::ChatTemplate::detect(tok.chat_template());
  tok.encode(chat.render({{"user", "Hi"}}, true), true, true);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kvp::fuzz::TempDir dir;
  const auto parts = kvp::fuzz::split_parts({reinterpret_cast<const char*>(data), size}, 2);
  dir.clear();
  const std::string path = dir.write("tokenizer.json", parts[0]);
  if (parts.size() > 1) dir.write("tokenizer_config.json", parts[1]);
  try {
    use_tokenizer(kvp::Tokenizer::from_hf_json(path));
  } catch (const kvp::Error&) {
  }
  return 0;
}
