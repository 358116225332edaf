// Tokenizer::from_gguf: the tokenizer.ggml.* metadata of a GGUF file (byte-level BPE,
// tokenizer.ggml.model == "gpt2"); from_model_path picks it or tokenizer.json.
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/text.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvp {

Tokenizer Tokenizer::from_model_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return from_gguf(GgufFile::open(path));
  const std::string tok = (fs::path(path) / "tokenizer.json").string();
  check(fs::exists(tok, ec), "model directory " + path + " has no tokenizer.json");
  return from_hf_json(tok);
}

Tokenizer Tokenizer::from_gguf(const GgufFile& gguf) {
  const std::string& path = gguf.path();
  check(gguf.has("tokenizer.ggml.model"),
        path + ": no tokenizer in the GGUF metadata (tokenizer.ggml.model is missing)");
  const std::string model = gguf.get_string("tokenizer.ggml.model");
  check(model == "gpt2", path + ": unsupported tokenizer model '" + printable(model) +
                             "' (only byte-level BPE, tokenizer.ggml.model = 'gpt2')");

  tok::TokenizerData data;
  data.source = path;
  data.tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  if (gguf.has("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> types = gguf.get_int_array("tokenizer.ggml.token_type");
    check(types.size() == data.tokens.size(), path + ": tokenizer.ggml.token_type has " +
                                                  std::to_string(types.size()) + " entries for " +
                                                  std::to_string(data.tokens.size()) + " tokens");
    data.types.reserve(types.size());
    for (size_t id = 0; id < types.size(); ++id) {
      if (types[id] < 0 || types[id] > tok::TOKEN_BYTE)  // the message is built on failure only
        throw Error(path + ": token " + std::to_string(id) + " has an invalid token type " +
                    std::to_string(types[id]));
      data.types.push_back(static_cast<uint8_t>(types[id]));
    }
  }
  const std::vector<std::string> merges = gguf.get_string_array("tokenizer.ggml.merges");
  data.merges.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    const size_t space = m.find(' ', 1);
    if (space == std::string::npos || space + 1 >= m.size())  // the message only on failure
      throw Error(path + ": tokenizer.ggml.merges[" + std::to_string(rank) + "] '" + printable(m) +
                  "' is not of the form \"left right\"");
    data.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
  }

  auto id_or = [&](const char* key) -> int32_t {
    const int64_t id = gguf.get_int_or(key, -1);
    check(id >= -1 && id < static_cast<int64_t>(data.tokens.size()),
          path + ": " + key + " = " + std::to_string(id) + " is outside the vocabulary (" +
              std::to_string(data.tokens.size()) + " tokens)");
    return static_cast<int32_t>(id);
  };
  data.bos = id_or("tokenizer.ggml.bos_token_id");
  data.eos = id_or("tokenizer.ggml.eos_token_id");
  data.unk = id_or("tokenizer.ggml.unknown_token_id");
  data.pad = id_or("tokenizer.ggml.padding_token_id");
  data.eot = id_or("tokenizer.ggml.eot_token_id");
  data.eom = id_or("tokenizer.ggml.eom_token_id");
  data.add_bos =
      gguf.has("tokenizer.ggml.add_bos_token") && gguf.get_bool("tokenizer.ggml.add_bos_token");
  if (gguf.has("tokenizer.ggml.add_space_prefix"))
    check(!gguf.get_bool("tokenizer.ggml.add_space_prefix"),
          path + ": tokenizer.ggml.add_space_prefix = true is not supported for byte-level BPE");

  const std::string pre = gguf.get_string_or("tokenizer.ggml.pre", "default");
  try {
    data.pre = pre_tokenizer_from_name(pre);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  // llama.cpp emits a whole pre-token found in the vocabulary as is for Llama 3 (HF:
  // model.ignore_merges = true).
  data.ignore_merges = data.pre == PreTokenizer::LLAMA3;
  data.chat_template = gguf.get_string_or("tokenizer.chat_template", "");
  return Tokenizer(Impl::build(std::move(data)));
}

}  // namespace kvp
