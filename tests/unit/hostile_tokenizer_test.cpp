// Hostile tokenizer.json files (with their tokenizer_config.json): token ids outside the
// vocabulary or far past it, merges and special tokens naming tokens that do not exist. Each
// loads into a working tokenizer or ends in a clean kvp::Error, quickly. The fuzz corpus
// (fuzz/corpus/tokenizer_json) holds the same classes as seeds.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "support/temp_dir.h"
#include "tokenizer/tokenizer.h"

namespace kvp {
namespace {

using nlohmann::json;

// Printable ASCII as single-byte tokens (ids 0..93), one merge, three special tokens.
json tokenizer_json() {
  json vocab = json::object();
  for (char c = '!'; c <= '~'; ++c) vocab[std::string(1, c)] = c - '!';
  vocab["he"] = 94;
  json added = json::array();
  int id = 95;
  for (const char* s : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"})
    added.push_back({{"id", id++}, {"content", s}, {"special", true}});
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"h e"})}}},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
          {"added_tokens", added}};
}

class HostileTokenizer : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_test_dir("kvp_hostile_tok_"); }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  Tokenizer load(const json& j, const json& config = nullptr) {
    if (!config.is_null()) write("tokenizer_config.json", config.dump());
    return Tokenizer::from_hf_json(write("tokenizer.json", j.dump()));
  }
  void expect_refused(const json& j, const std::string& fragment) {
    try {
      load(j);
      ADD_FAILURE() << "loaded; expected an error containing '" << fragment << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  }

  std::filesystem::path dir_;
};

TEST_F(HostileTokenizer, TheBaseLoads) {
  const Tokenizer tok = load(tokenizer_json());
  EXPECT_EQ(tok.vocab_size(), 98);
  EXPECT_EQ(tok.decode(tok.encode("<|im_start|>hello", true), false), "<|im_start|>hello");
}

TEST_F(HostileTokenizer, IdsOutsideTheAllowedRange) {
  for (const json& id :
       {json(-1), json(int64_t{1} << 24), json(int64_t{1} << 40), json(~uint64_t{0})}) {
    json j = tokenizer_json();
    j["model"]["vocab"]["x"] = id;
    expect_refused(j, "invalid id");
    json a = tokenizer_json();
    a["added_tokens"].push_back({{"id", id}, {"content", "<x>"}, {"special", true}});
    expect_refused(a, "invalid id");
  }
  for (const json& id : {json(1.5), json("3"), json(nullptr)}) {
    json j = tokenizer_json();
    j["model"]["vocab"]["x"] = id;
    expect_refused(j, "is not an integer id");
  }
}

// One id near the top of the range made a vocabulary of 2^24 entries out of a 3 KB file:
// 1.4 GB and 90 s under ASan (found by the tokenizer.json fuzzer). Unused ids (holes) are
// allowed, but not more of them than ids in use.
TEST_F(HostileTokenizer, ASparseIdDoesNotMakeAHugeVocabulary) {
  for (bool added : {false, true}) {
    json j = tokenizer_json();
    const int64_t id = (int64_t{1} << 24) - 1;
    if (added)
      j["added_tokens"].push_back({{"id", id}, {"content", "<x>"}, {"special", true}});
    else
      j["model"]["vocab"]["x"] = id;
    const auto start = std::chrono::steady_clock::now();
    expect_refused(j, "unused ids");
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
  // A few holes are fine: they become unused entries.
  json j = tokenizer_json();
  j["model"]["vocab"]["x"] = 120;
  EXPECT_EQ(load(j).vocab_size(), 121);
}

TEST_F(HostileTokenizer, MergesNamingMissingTokens) {
  json j = tokenizer_json();
  j["model"]["merges"].push_back("z q");  // "zq" is not in the vocabulary
  expect_refused(j, "not in the vocabulary");
  json k = tokenizer_json();
  k["model"]["merges"].push_back(json::array({"h", 5}));
  expect_refused(k, "must be a string");
}

// Special tokens named by tokenizer_config.json or the post-processor that the vocabulary
// lacks: no such id is used (bos/eos stay unset), nothing indexes past the vocabulary.
TEST_F(HostileTokenizer, SpecialTokensMissingFromTheVocabulary) {
  json j = tokenizer_json();
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}})}};
  const Tokenizer tok = load(
      j, {{"bos_token", "<s>"}, {"eos_token", {{"content", "</s>"}}}, {"add_bos_token", true}});
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_EQ(tok.eos_id(), 95);  // the <|endoftext|> fallback
  EXPECT_EQ(tok.encode("hi", true, true), tok.encode("hi", true, false));  // no BOS to add
  EXPECT_FALSE(tok.is_end_of_generation(-1));
  EXPECT_FALSE(tok.is_end_of_generation(1 << 30));
  EXPECT_THROW(tok.decode({98}), Error);
  EXPECT_THROW(tok.decode({-1}), Error);
  EXPECT_THROW(tok.token_text(98), Error);
}

}  // namespace
}  // namespace kvp
