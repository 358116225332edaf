// Fuzz target: chat-template detection and rendering. The input is a stored template text,
// then (after separators) messages as "role\ncontent". The prompt is rendered with and without
// the generation prompt, then tokenized with special tokens parsed, as the pipeline does,
// by a fixed byte-level tokenizer that knows some of the templates' special tokens (not
// all: a template may name tokens the vocabulary lacks). Its vocabulary holds all 256 bytes,
// so decoding the ids must give the prompt back exactly; a difference aborts (a finding).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "fuzz_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

// GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for 256 + k.
std::string byte_token(int b) {
  return kvp::byte_level_char(static_cast<uint8_t>(b));
}

kvp::Tokenizer make_tokenizer(const kvp::fuzz::TempDir& dir) {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_token(b)] = b;
  // A few merges, so that BPE runs: "Ġ" + "t", "h" + "e", "Ġt" + "he".
  const std::string space = byte_token(' ');
  vocab[space + "t"] = 256;
  vocab["he"] = 257;
  vocab[space + "the"] = 258;
  const json merges = json::array({space + " t", "h e", space + "t he"});
  json added = json::array();
  int id = 259;
  for (const char* special : {"<|im_start|>", "<|im_end|>", "<|begin_of_text|>",
                              "<|start_header_id|>", "<|end_header_id|>"})  // no <|eot_id|>
    added.push_back({{"id", id++}, {"content", special}, {"special", true}});
  const json root = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"added_tokens", added},
  };
  return kvp::Tokenizer::from_hf_json(dir.write("tokenizer.json", root.dump()));
}

void check_round_trip(const kvp::Tokenizer& tok, const std::string& prompt) {
  const std::string back = tok.decode(tok.encode(prompt, true, false), false);
  if (back != prompt) {
    std::fprintf(stderr, "round trip changed the prompt: %zu bytes in, %zu out\n", prompt.size(),
                 back.size());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kvp::fuzz::TempDir dir;
  static const kvp::Tokenizer tok = make_tokenizer(dir);
  const auto parts = kvp::fuzz::split_parts({reinterpret_cast<const char*>(data), size}, 16);
  std::vector<kvp::ChatMessage> messages;
  for (size_t i = 1; i < parts.size(); ++i) {
    const std::string_view m = parts[i];
    const size_t newline = m.find('\n');
    if (newline == std::string_view::npos)
      messages.push_back({std::string(m), ""});
    else
      messages.push_back({std::string(m.substr(0, newline)), std::string(m.substr(newline + 1))});
  }
  try {
    const kvp::ChatTemplate chat = kvp::ChatTemplate::detect(std::string(parts[0]));
    chat.name();
    for (bool add_generation_prompt : {true, false})
      check_round_trip(tok, chat.render(messages, add_generation_prompt));
  } catch (const kvp::Error&) {
  }
  return 0;
}
