// Tokenizer::from_hf_json: a Hugging Face tokenizer.json (byte-level BPE), plus the
// tokenizer_config.json next to it when there is one (special tokens, chat template).
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "core/error.h"
#include "core/text.h"
#include "io/json_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvp {

namespace {

using nlohmann::json;

json read_json(const std::string& path, bool required) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!required) return json();
    throw Error(path + ": cannot open tokenizer file");
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    return json::parse(buffer.str());
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + json_error_message(e));
  }
}

// A JSON value quoted in a message: its structure is what the reader needs, so it gets more
// room than a plain excerpt.
std::string short_dump(const json& j) {
  return printable(j.dump(), 2 * kExcerptBytes);
}

std::string type_of(const json& j) {
  return j.is_object() && j.contains("type") && j["type"].is_string() ? j["type"].get<std::string>()
                                                                      : std::string();
}

bool bool_or(const json& j, const char* key, bool fallback) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  return j[key].is_boolean() ? j[key].get<bool>() : fallback;
}

void check_byte_level(const json& j, bool want_regex, const std::string& path) {
  check(!bool_or(j, "add_prefix_space", false),
        path + ": ByteLevel pre-tokenizer with add_prefix_space=true is not supported");
  check(bool_or(j, "use_regex", true) == want_regex,
        path + ": unsupported pre-tokenizer structure: ByteLevel use_regex=" +
            (want_regex ? "false" : "true") + " in " + short_dump(j));
}

// Recognises the pre-tokenizer family from its structure and regex.
PreTokenizer classify_pre_tokenizer(const json& pt, const std::string& path) {
  const std::string unsupported = path + ": unsupported pre_tokenizer ";
  if (pt.is_null())
    throw Error(path + ": tokenizer.json has no pre_tokenizer (byte-level BPE expected)");
  const std::string type = type_of(pt);
  if (type == "ByteLevel") {
    check_byte_level(pt, true, path);
    return PreTokenizer::GPT2;
  }
  if (type == "Sequence" && pt.contains("pretokenizers") && pt["pretokenizers"].is_array() &&
      pt["pretokenizers"].size() == 2) {
    const json& first = pt["pretokenizers"][0];
    const json& second = pt["pretokenizers"][1];
    if (type_of(second) != "ByteLevel") throw Error(unsupported + short_dump(pt));
    if (type_of(first) == "Digits" && bool_or(first, "individual_digits", false)) {
      check_byte_level(second, true, path);
      return PreTokenizer::SMOLLM;
    }
    if (type_of(first) == "Split") {
      check_byte_level(second, false, path);
      const json& pattern = first.contains("pattern") ? first["pattern"] : json();
      check(pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string(),
            unsupported + "(Split without a regex): " + short_dump(first));
      check(
          first.value("behavior", std::string()) == "Isolated" && !bool_or(first, "invert", false),
          unsupported + "(Split must be Isolated, not inverted): " + short_dump(first));
      const std::string regex = pattern["Regex"].get<std::string>();
      for (PreTokenizer kind : {PreTokenizer::GPT2, PreTokenizer::LLAMA3, PreTokenizer::QWEN2})
        if (regex == tok::pre_tokenizer_pattern(kind)) return kind;
      throw Error(unsupported + "regex '" + printable(regex, 2 * kExcerptBytes) + "'");
    }
  }
  throw Error(unsupported + short_dump(pt));
}

// Token ids are below this: a larger id would make a table of that many entries.
constexpr int64_t kMaxVocab = 1 << 24;

// Why id is not a usable token id, or "" when it is. The value is quoted as the file wrote it
// (get<int64_t> would wrap 2^63 to a negative number and print that).
std::string id_problem(const json& id) {
  if (!id.is_number_integer()) return "is not an integer id";
  const bool ok = id.is_number_unsigned() ? id.get<uint64_t>() < static_cast<uint64_t>(kMaxVocab)
                                          : id.get<int64_t>() >= 0 && id.get<int64_t>() < kMaxVocab;
  return ok ? std::string() : "has an invalid id " + id.dump();
}

// "a b" or ["a", "b"]. Messages are built only on failure: this runs for every merge.
std::pair<std::string, std::string> parse_merge(const json& m, size_t rank,
                                                const std::string& path) {
  auto where = [&] { return path + ": model.merges[" + std::to_string(rank) + "] "; };
  if (m.is_string()) {
    const std::string& s = m.get_ref<const std::string&>();
    const size_t space = s.find(' ', 1);
    if (space == std::string::npos || space + 1 >= s.size() ||
        s.find(' ', space + 1) != std::string::npos)
      throw Error(where() + "'" + printable(s) + "' is not of the form \"left right\"");
    return {s.substr(0, space), s.substr(space + 1)};
  }
  if (!(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()))
    throw Error(where() + "must be a string \"left right\" or a pair of strings, got " +
                short_dump(m));
  return {m[0].get<std::string>(), m[1].get<std::string>()};
}

// tokenizer_config.json: "bos_token": "<s>" or {"content": "<s>", ...}.
std::string config_token(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return {};
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return {};
}

// The BOS a TemplateProcessing post-processor puts before a single sequence, if any.
std::string post_processor_bos(const json& pp) {
  if (!pp.is_object()) return {};
  const std::string type = type_of(pp);
  if (type == "Sequence" && pp.contains("processors") && pp["processors"].is_array()) {
    for (const json& p : pp["processors"]) {
      std::string bos = post_processor_bos(p);
      if (!bos.empty()) return bos;
    }
    return {};
  }
  if (type != "TemplateProcessing" || !pp.contains("single") || !pp["single"].is_array() ||
      pp["single"].empty())
    return {};
  const json& first = pp["single"][0];
  if (first.is_object() && first.contains("SpecialToken") && first["SpecialToken"].is_object() &&
      first["SpecialToken"].contains("id") && first["SpecialToken"]["id"].is_string())
    return first["SpecialToken"]["id"].get<std::string>();
  return {};
}

}  // namespace

Tokenizer Tokenizer::from_hf_json(const std::string& path) {
  const json root = read_json(path, true);
  check(root.is_object(), path + ": tokenizer.json must be a JSON object");
  check(root.contains("model") && root["model"].is_object(),
        path + ": tokenizer.json has no \"model\" object");
  const json& model = root["model"];
  if (model.contains("type") && !model["type"].is_null()) {
    const std::string type = model["type"].is_string() ? model["type"].get<std::string>() : "?";
    check(type == "BPE", path + ": unsupported tokenizer model type '" + printable(type) +
                             "' (only byte-level BPE is supported)");
  }
  check(model.contains("vocab") && model["vocab"].is_object(),
        path + ": tokenizer.json has no model.vocab object");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string())
      check(model[key].get<std::string>().empty(),
            path + ": model." + key + " is not supported by byte-level BPE");
  }
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    // NFC is accepted (and not applied: text is expected to be NFC already).
    const std::string type = type_of(root["normalizer"]);
    check(type == "NFC", path + ": unsupported normalizer " + short_dump(root["normalizer"]));
  }

  tok::TokenizerData data;
  data.source = path;
  data.pre =
      classify_pre_tokenizer(root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json(), path);
  data.ignore_merges = bool_or(model, "ignore_merges", false);

  // Ids: the vocab plus the added tokens; holes become unused entries.
  std::map<int64_t, std::pair<std::string, uint8_t>> by_id;
  for (const auto& [text, id_json] : model["vocab"].items()) {
    if (const std::string problem = id_problem(id_json); !problem.empty())
      throw Error(path + ": model.vocab[\"" + printable(text) + "\"] " + problem);
    const int64_t id = id_json.get<int64_t>();
    auto [it, inserted] = by_id.emplace(id, std::make_pair(text, tok::TOKEN_NORMAL));
    if (!inserted)  // the message only on failure: this runs for every token
      throw Error(path + ": model.vocab gives id " + std::to_string(id) + " to both '" +
                  printable(it->second.first) + "' and '" + printable(text) + "'");
  }
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    check(root["added_tokens"].is_array(), path + ": added_tokens must be an array");
    for (const json& t : root["added_tokens"]) {
      check(t.is_object() && t.contains("id") && t["id"].is_number_integer() &&
                t.contains("content") && t["content"].is_string(),
            path + ": malformed added token " + short_dump(t));
      if (const std::string problem = id_problem(t["id"]); !problem.empty())
        throw Error(path + ": added token " + problem);
      const int64_t id = t["id"].get<int64_t>();
      const uint8_t type =
          bool_or(t, "special", false) ? tok::TOKEN_CONTROL : tok::TOKEN_USER_DEFINED;
      by_id[id] = {t["content"].get<std::string>(), type};
    }
  }
  check(!by_id.empty(), path + ": model.vocab is empty");
  const int64_t n = by_id.rbegin()->first + 1;
  // Holes become unused entries, but not more of them than ids in use (+256): one id of
  // 2^24 - 1 in a 3 KB file made 16M entries (1.4 GB; found by fuzz/tokenizer_json_fuzz).
  const auto used = static_cast<int64_t>(by_id.size());
  check(n <= 2 * used + 256, path + ": token ids go up to " + std::to_string(n - 1) + " but only " +
                                 std::to_string(used) + " are defined (too many unused ids)");
  data.tokens.assign(static_cast<size_t>(n), std::string());
  data.types.assign(static_cast<size_t>(n), tok::TOKEN_UNUSED);
  for (auto& [id, entry] : by_id) {
    data.tokens[id] = std::move(entry.first);
    data.types[id] = entry.second;
  }

  if (model.contains("merges") && !model["merges"].is_null()) {
    check(model["merges"].is_array(), path + ": model.merges must be an array");
    const json& merges = model["merges"];
    data.merges.reserve(merges.size());
    for (size_t r = 0; r < merges.size(); ++r)
      data.merges.push_back(parse_merge(merges[r], r, path));
  }

  // Special tokens and the chat template, from tokenizer_config.json when present.
  const std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  const json config = read_json(config_path.string(), false);
  auto id_of = [&](const std::string& text) -> int32_t {
    if (text.empty()) return -1;
    for (size_t id = 0; id < data.tokens.size(); ++id)
      if (data.tokens[id] == text && data.types[id] != tok::TOKEN_UNUSED)
        return static_cast<int32_t>(id);
    return -1;
  };
  auto first_of = [&](std::initializer_list<const char*> texts) -> int32_t {
    for (const char* t : texts)
      if (int32_t id = id_of(t); id >= 0) return id;
    return -1;
  };
  const std::string pp_bos =
      post_processor_bos(root.contains("post_processor") ? root["post_processor"] : json());
  data.bos = id_of(config_token(config, "bos_token"));
  if (data.bos < 0) data.bos = id_of(pp_bos);
  if (data.bos < 0) data.bos = first_of({"<|begin_of_text|>", "<s>"});
  data.eos = id_of(config_token(config, "eos_token"));
  if (data.eos < 0) data.eos = first_of({"<|endoftext|>", "<|end_of_text|>", "</s>", "<|im_end|>"});
  data.unk = id_of(config_token(config, "unk_token"));
  if (data.unk < 0 && model.contains("unk_token") && model["unk_token"].is_string())
    data.unk = id_of(model["unk_token"].get<std::string>());
  data.pad = id_of(config_token(config, "pad_token"));
  data.add_bos = !pp_bos.empty() && id_of(pp_bos) >= 0;
  if (config.is_object() && config.contains("add_bos_token") &&
      config["add_bos_token"].is_boolean())
    data.add_bos = config["add_bos_token"].get<bool>();
  if (config.is_object() && config.contains("chat_template")) {
    const json& ct = config["chat_template"];
    if (ct.is_string()) {
      data.chat_template = ct.get<std::string>();
    } else if (ct.is_array()) {  // [{"name": "default", "template": "..."}, ...]
      for (const json& t : ct)
        if (t.is_object() && t.value("name", std::string()) == "default" &&
            t.contains("template") && t["template"].is_string())
          data.chat_template = t["template"].get<std::string>();
    }
  }
  return Tokenizer(Impl::build(std::move(data)));
}

}  // namespace kvp
