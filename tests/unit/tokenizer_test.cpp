#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "support/test_paths.h"
#include "tokenizer/chat_template.h"

namespace kvp {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Ids = std::vector<int32_t>;
using Pieces = std::vector<std::string>;

// ---------------------------------------------------------------------------------------
// Helpers: temp files, the byte alphabet, a tiny handmade byte-level BPE vocabulary.

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("kvp_tokenizer_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::string& content) const {
    const fs::path p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }

 private:
  fs::path path_;
};

// The GPT-2 byte alphabet, written independently of the implementation (the check that
// byte_level_printable and byte_level_char agree with it is below).
bool stands_for_itself(int b) {
  return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

std::string byte_char(int b) {
  int cp = b;
  if (!stands_for_itself(b)) {
    cp = 256;
    for (int k = 0; k < b; ++k)
      if (!stands_for_itself(k)) ++cp;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

std::string byte_level(const std::string& raw) {
  std::string s;
  for (unsigned char c : raw) s += byte_char(c);
  return s;
}

// Ids 0..255: the byte alphabet in byte order, so an unmerged byte b encodes to id b.
// Then merged tokens, given in raw (not byte-level) form, get 256, 257, ...
json tiny_tokenizer_json(const std::vector<std::pair<std::string, std::string>>& raw_merges,
                         const json& pre_tokenizer = json{{"type", "ByteLevel"},
                                                          {"add_prefix_space", false},
                                                          {"trim_offsets", true},
                                                          {"use_regex", true}}) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  json merges = json::array();
  int next = 256;
  for (const auto& [a, b] : raw_merges) {
    const std::string merged = byte_level(a + b);
    if (!vocab.contains(merged)) vocab[merged] = next++;
    merges.push_back(byte_level(a) + " " + byte_level(b));
  }
  json added = json::array();
  auto add = [&](const std::string& content, bool special) {
    added.push_back({{"id", next++},
                     {"content", content},
                     {"special", special},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false}});
  };
  add("<|endoftext|>", true);
  add("<|im_end|>", true);
  add("<|im_end|>x", true);  // overlaps <|im_end|>: the longest match must win
  add("[USER]", false);      // user-defined: matched even without parse_special
  return json{{"version", "1.0"},
              {"added_tokens", added},
              {"normalizer", nullptr},
              {"pre_tokenizer", pre_tokenizer},
              {"post_processor", {{"type", "ByteLevel"}}},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"vocab", vocab},
                {"merges", merges}}}};
}

Tokenizer load_json(const TempDir& dir, const json& j) {
  return Tokenizer::from_hf_json(dir.write("tokenizer.json", j.dump()));
}

int32_t id_of(const Tokenizer& tok, const std::string& raw) {
  const std::string text = byte_level(raw);
  for (int32_t id = 0; id < tok.vocab_size(); ++id)
    if (tok.token_text(id) == text) return id;
  return -1;
}

// Expects that fn throws kvp::Error whose message contains every one of needles.
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected kvp::Error";
  } catch (const Error& e) {
    for (const std::string& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message '" << e.what() << "' lacks '" << n << "'";
  }
}

// ---------------------------------------------------------------------------------------
// The byte alphabet.

TEST(ByteAlphabet, PrintableBytesStandForThemselves) {
  int printable = 0;
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(byte_level_printable(static_cast<uint8_t>(b)), stands_for_itself(b)) << b;
    printable += byte_level_printable(static_cast<uint8_t>(b)) ? 1 : 0;
  }
  EXPECT_EQ(printable, 188);  // 94 ASCII + 12 + 82 Latin-1: the 68 others are remapped
  EXPECT_TRUE(byte_level_printable('!'));
  EXPECT_TRUE(byte_level_printable('~'));
  EXPECT_FALSE(byte_level_printable(' '));
  EXPECT_FALSE(byte_level_printable(0x7F));
  EXPECT_FALSE(byte_level_printable(0xAD));  // the soft hyphen
}

TEST(ByteAlphabet, EveryByteHasItsCodePoint) {
  for (int b = 0; b < 256; ++b)
    EXPECT_EQ(byte_level_char(static_cast<uint8_t>(b)), byte_char(b)) << b;
  EXPECT_EQ(byte_level_char(' '), "\xc4\xa0");   // U+0120, the familiar "Ġ"
  EXPECT_EQ(byte_level_char('\n'), "\xc4\x8a");  // U+010A, "Ċ"
  EXPECT_EQ(byte_level_char('a'), "a");
}

// ---------------------------------------------------------------------------------------
// Pre-tokenizers.

TEST(PreTokenizer, Names) {
  EXPECT_EQ(pre_tokenizer_from_name("gpt2"), PreTokenizer::GPT2);
  EXPECT_EQ(pre_tokenizer_from_name("gpt-2"), PreTokenizer::GPT2);
  EXPECT_EQ(pre_tokenizer_from_name("default"), PreTokenizer::GPT2);
  EXPECT_EQ(pre_tokenizer_from_name("llama3"), PreTokenizer::LLAMA3);
  EXPECT_EQ(pre_tokenizer_from_name("llama-bpe"), PreTokenizer::LLAMA3);
  EXPECT_EQ(pre_tokenizer_from_name("llama-v3"), PreTokenizer::LLAMA3);
  EXPECT_EQ(pre_tokenizer_from_name("qwen2"), PreTokenizer::QWEN2);
  EXPECT_EQ(pre_tokenizer_from_name("smollm"), PreTokenizer::SMOLLM);
  expect_error([] { pre_tokenizer_from_name("deepseek-coder"); }, {"'deepseek-coder'"});
  expect_error([] { pre_tokenizer_from_name(""); }, {"pre-tokenizer"});
  EXPECT_STREQ(pre_tokenizer_name(PreTokenizer::SMOLLM), "smollm");
}

TEST(PreTokenizer, Gpt2) {
  const auto k = PreTokenizer::GPT2;
  EXPECT_EQ(pre_tokenize(k, "Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(pre_tokenize(k, "I'm  here's"), (Pieces{"I", "'m", " ", " here", "'s"}));
  // Contractions are case-sensitive in GPT-2.
  EXPECT_EQ(pre_tokenize(k, "IT'S"), (Pieces{"IT", "'", "S"}));
  EXPECT_EQ(pre_tokenize(k, "abc 12345 x"), (Pieces{"abc", " 12345", " x"}));
  EXPECT_EQ(pre_tokenize(k, "a\n\nb"), (Pieces{"a", "\n", "\n", "b"}));
  EXPECT_EQ(pre_tokenize(k, "a   "), (Pieces{"a", "   "}));
  EXPECT_EQ(pre_tokenize(k, "a   b"), (Pieces{"a", "  ", " b"}));
  EXPECT_EQ(pre_tokenize(k, "hello, world!!!"), (Pieces{"hello", ",", " world", "!!!"}));
  EXPECT_EQ(pre_tokenize(k, "café naïve Ωμέγα"), (Pieces{"café", " naïve", " Ωμέγα"}));
  EXPECT_EQ(pre_tokenize(k, "x² ٣٤"), (Pieces{"x", "²", " ٣٤"}));
  EXPECT_EQ(pre_tokenize(k, ""), Pieces{});
}

TEST(PreTokenizer, Llama3) {
  const auto k = PreTokenizer::LLAMA3;
  EXPECT_EQ(pre_tokenize(k, "IT'S don't"), (Pieces{"IT", "'S", " don", "'t"}));
  EXPECT_EQ(pre_tokenize(k, "12345"), (Pieces{"123", "45"}));
  EXPECT_EQ(pre_tokenize(k, "a\n\nb"), (Pieces{"a", "\n\n", "b"}));
  EXPECT_EQ(pre_tokenize(k, "hello, world!!!\n"), (Pieces{"hello", ",", " world", "!!!\n"}));
  EXPECT_EQ(pre_tokenize(k, ".Net 3.14"), (Pieces{".Net", " ", "3", ".", "14"}));
  EXPECT_EQ(pre_tokenize(k, "a  \n  b"), (Pieces{"a", "  \n", " ", " b"}));
  EXPECT_EQ(pre_tokenize(k, "x   "), (Pieces{"x", "   "}));
}

TEST(PreTokenizer, Qwen2) {
  const auto k = PreTokenizer::QWEN2;
  EXPECT_EQ(pre_tokenize(k, "12345"), (Pieces{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(pre_tokenize(k, "IT'S a1b"), (Pieces{"IT", "'S", " a", "1", "b"}));
  EXPECT_EQ(pre_tokenize(k, "a\r\n\r\nb"), (Pieces{"a", "\r\n\r\n", "b"}));
}

TEST(PreTokenizer, SmolLM) {
  const auto k = PreTokenizer::SMOLLM;
  // Digits are split one by one first, so " 1" never stays together.
  EXPECT_EQ(pre_tokenize(k, "abc 12345 x"), (Pieces{"abc", " ", "1", "2", "3", "4", "5", " x"}));
  EXPECT_EQ(pre_tokenize(k, "x² ⅓"), (Pieces{"x", "²", " ", "⅓"}));
  EXPECT_EQ(pre_tokenize(k, "It's  ok"), (Pieces{"It", "'s", " ", " ok"}));
  EXPECT_EQ(pre_tokenize(k, "v2.0\n"), (Pieces{"v", "2", ".", "0", "\n"}));
}

TEST(PreTokenizer, PiecesAlwaysConcatenateToTheText) {
  std::mt19937 rng(7);
  const std::vector<std::string> atoms = {
      "a", "Z", " ",  "  ",   "\n", "\r\n", "\t", "'s",   "'T",   "7",    "42",
      "é", "ß", "中", "🦙", "٣",  ",",    "!",  "\xff", "\xc3", "\x80", "\xe4\xb8"};
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const int n = static_cast<int>(rng() % 30);
    for (int i = 0; i < n; ++i) text += atoms[rng() % atoms.size()];
    for (auto k :
         {PreTokenizer::GPT2, PreTokenizer::LLAMA3, PreTokenizer::QWEN2, PreTokenizer::SMOLLM}) {
      std::string joined;
      for (const std::string& p : pre_tokenize(k, text)) {
        EXPECT_FALSE(p.empty());
        joined += p;
      }
      EXPECT_EQ(joined, text) << pre_tokenizer_name(k);
    }
  }
}

TEST(PreTokenizer, VeryLongWhitespaceRun) {
  const std::string text = std::string(200000, ' ') + "a" + std::string(100000, '\n');
  for (auto k : {PreTokenizer::GPT2, PreTokenizer::LLAMA3, PreTokenizer::SMOLLM}) {
    const Pieces p = pre_tokenize(k, text);
    ASSERT_GE(p.size(), 2u);
    std::string joined;
    for (const auto& s : p) joined += s;
    EXPECT_EQ(joined, text);
  }
  EXPECT_EQ(pre_tokenize(PreTokenizer::GPT2, std::string(5, ' ') + "a"), (Pieces{"    ", " a"}));
}

// ---------------------------------------------------------------------------------------
// BPE on a tiny handmade vocabulary.

TEST(TinyBpe, MergeOrderDecides) {
  TempDir dir;
  // "b c" ranks before "a b": "abc" -> a + bc.
  const Tokenizer first_bc = load_json(dir, tiny_tokenizer_json({{"b", "c"}, {"a", "b"}}));
  EXPECT_EQ(first_bc.encode("abc"), (Ids{'a', id_of(first_bc, "bc")}));
  // The other order: "abc" -> ab + c.
  const Tokenizer first_ab = load_json(dir, tiny_tokenizer_json({{"a", "b"}, {"b", "c"}}));
  EXPECT_EQ(first_ab.encode("abc"), (Ids{id_of(first_ab, "ab"), 'c'}));
}

TEST(TinyBpe, MergesChainAndLeftmostWinsOnTies) {
  TempDir dir;
  const Tokenizer tok = load_json(
      dir, tiny_tokenizer_json(
               {{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}, {"a", "a"}}));
  EXPECT_EQ(tok.encode("hello"), (Ids{id_of(tok, "hello")}));
  EXPECT_EQ(tok.encode("hello world"),
            (Ids{id_of(tok, "hello"), id_of(tok, " w"), 'o', 'r', 'l', 'd'}));
  // "aaa": the leftmost pair merges first -> aa + a.
  EXPECT_EQ(tok.encode("aaa"), (Ids{id_of(tok, "aa"), 'a'}));
  EXPECT_EQ(tok.encode("aaaaa"), (Ids{id_of(tok, "aa"), id_of(tok, "aa"), 'a'}));
  // Merges never cross pre-token boundaries: "hel lo" has no "hello".
  EXPECT_EQ(tok.encode("hel lo"), (Ids{id_of(tok, "he"), 'l', ' ', 'l', 'o'}));
  EXPECT_EQ(tok.decode(tok.encode("hello world")), "hello world");
}

TEST(TinyBpe, UnseenBytesGoThroughTheByteAlphabet) {
  TempDir dir;
  const Tokenizer tok = load_json(dir, tiny_tokenizer_json({{"a", "b"}}));
  // UTF-8 of é is C3 A9: two byte-alphabet tokens, ids = byte values here.
  EXPECT_EQ(tok.encode("é"), (Ids{0xC3, 0xA9}));
  EXPECT_EQ(tok.token_text(0xC3), "Ã");
  EXPECT_EQ(tok.token_text(' '), "Ġ");   // space -> U+0120
  EXPECT_EQ(tok.token_text('\n'), "Ċ");  // newline -> U+010A
  EXPECT_EQ(tok.token_text(0), "Ā");     // NUL -> U+0100
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const Ids ids = tok.encode(all, false);
  EXPECT_EQ(tok.decode(ids), all);
  // Invalid UTF-8 survives a round trip byte for byte.
  const std::string bad =
      "ab\xff\xfe"
      "c\xc3";
  EXPECT_EQ(tok.decode(tok.encode(bad)), bad);
}

TEST(TinyBpe, SpecialTokensSplitTheText) {
  TempDir dir;
  const Tokenizer tok = load_json(dir, tiny_tokenizer_json({{"a", "b"}, {" ", "a"}}));
  const int32_t ab = id_of(tok, "ab");
  const int32_t eot = 256 + 2, im_end = eot + 1, im_end_x = eot + 2, user = eot + 3;
  ASSERT_EQ(tok.token_text(eot), "<|endoftext|>");
  ASSERT_EQ(tok.token_text(user), "[USER]");
  EXPECT_EQ(tok.encode("ab<|endoftext|>ab"), (Ids{ab, eot, ab}));
  // The pieces around a special token are pre-tokenised separately: " a" stays " a".
  EXPECT_EQ(tok.encode("b<|im_end|> a"), (Ids{'b', im_end, id_of(tok, " a")}));
  // "a b" ranks before " a": " ab" -> " " + "ab".
  EXPECT_EQ(tok.encode("b<|im_end|> ab"), (Ids{'b', im_end, ' ', ab}));
  // Longest match: "<|im_end|>x" is one token, "<|im_end|>y" is <|im_end|> + y.
  EXPECT_EQ(tok.encode("<|im_end|>x"), (Ids{im_end_x}));
  EXPECT_EQ(tok.encode("<|im_end|>y"), (Ids{im_end, 'y'}));
  EXPECT_EQ(tok.encode("<|im_end|><|endoftext|>"), (Ids{im_end, eot}));
  EXPECT_EQ(tok.encode("<|im_end|"), (Ids{'<', '|', 'i', 'm', '_', 'e', 'n', 'd', '|'}));
  // Without parse_special, control tokens are plain text; user-defined ones still match.
  const Ids plain = tok.encode("<|endoftext|>[USER]", false);
  EXPECT_EQ(plain.back(), user);
  EXPECT_EQ(plain.size(), std::string("<|endoftext|>").size() + 1);
  EXPECT_EQ(tok.encode("[USER]ab", true), (Ids{user, ab}));
  // decode: control tokens dropped unless asked for, user-defined ones kept.
  EXPECT_EQ(tok.decode({ab, eot, user, ab}), "ab[USER]ab");
  EXPECT_EQ(tok.decode({ab, eot, user, ab}, false), "ab<|endoftext|>[USER]ab");
  expect_error([&] { tok.decode({tok.vocab_size()}); }, {"token id"});
  expect_error([&] { tok.decode({-1}); }, {"token id"});
}

TEST(TinyBpe, EndOfGenerationAndIds) {
  TempDir dir;
  const Tokenizer tok = load_json(dir, tiny_tokenizer_json({{"a", "b"}}));
  const int32_t eot = 256 + 1, im_end = eot + 1;
  EXPECT_EQ(tok.eos_id(), eot);  // no tokenizer_config.json: <|endoftext|> by convention
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_TRUE(tok.is_end_of_generation(eot));
  EXPECT_TRUE(tok.is_end_of_generation(im_end));
  EXPECT_FALSE(tok.is_end_of_generation('a'));
  EXPECT_FALSE(tok.is_end_of_generation(-1));
  EXPECT_FALSE(tok.is_end_of_generation(tok.vocab_size()));
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::GPT2);
  EXPECT_EQ(tok.chat_template(), "");
  // add_bos only matters when the model asks for a BOS.
  EXPECT_EQ(tok.encode("ab", true, true), tok.encode("ab", true, false));
}

TEST(TinyBpe, MergesAsPairsAndTokenizerConfig) {
  TempDir dir;
  json j = tiny_tokenizer_json({{"a", "b"}});
  j["model"]["merges"] = json::array({json::array({"a", "b"})});
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})}};
  dir.write("tokenizer_config.json",
            json{{"eos_token", "<|im_end|>"}, {"chat_template", "{{ '<|im_start|>' }}"}}.dump());
  const Tokenizer tok = load_json(dir, j);
  const int32_t eot = 256 + 1;
  EXPECT_EQ(tok.encode("ab"), (Ids{256}));
  EXPECT_EQ(tok.bos_id(), eot);
  EXPECT_EQ(tok.encode("ab", true, true), (Ids{eot, 256}));
  EXPECT_EQ(tok.eos_id(), eot + 1);
  EXPECT_EQ(tok.chat_template(), "{{ '<|im_start|>' }}");
}

TEST(TinyBpe, PreTokenizerRecognisedFromStructure) {
  TempDir dir;
  const json byte_level_no_regex = {{"type", "ByteLevel"},
                                    {"add_prefix_space", false},
                                    {"trim_offsets", true},
                                    {"use_regex", false}};
  auto split = [&](const std::string& regex) {
    return json{{"type", "Sequence"},
                {"pretokenizers", json::array({{{"type", "Split"},
                                                {"pattern", {{"Regex", regex}}},
                                                {"behavior", "Isolated"},
                                                {"invert", false}},
                                               byte_level_no_regex})}};
  };
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string qwen2 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  EXPECT_EQ(load_json(dir, tiny_tokenizer_json({}, split(llama3))).pre_tokenizer(),
            PreTokenizer::LLAMA3);
  EXPECT_EQ(load_json(dir, tiny_tokenizer_json({}, split(qwen2))).pre_tokenizer(),
            PreTokenizer::QWEN2);
  const json smollm = {
      {"type", "Sequence"},
      {"pretokenizers",
       json::array({{{"type", "Digits"}, {"individual_digits", true}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}})}};
  const Tokenizer tok = load_json(dir, tiny_tokenizer_json({{" ", "1"}, {"1", "2"}}, smollm));
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::SMOLLM);
  EXPECT_EQ(tok.encode(" 12"), (Ids{' ', '1', '2'}));  // digits isolated: no merge applies
  // Unknown regexes and structures are refused, naming the problem.
  expect_error([&] { load_json(dir, tiny_tokenizer_json({}, split("\\p{L}+"))); },
               {"unsupported pre_tokenizer", "\\p{L}+"});
  expect_error(
      [&] {
        load_json(dir, tiny_tokenizer_json({}, json{{"type", "Whitespace"}}));
      },
      {"unsupported pre_tokenizer", "Whitespace"});
  expect_error([&] { load_json(dir, tiny_tokenizer_json({}, json())); }, {"pre_tokenizer"});
}

TEST(TinyBpe, IgnoreMerges) {
  TempDir dir;
  // "abc" is in the vocab (via a merge chain) but with ignore_merges the whole word is
  // taken directly even when the merges would not build it.
  json j = tiny_tokenizer_json({{"b", "c"}, {"a", "bc"}});
  j["model"]["merges"] = json::array({byte_level("b") + " " + byte_level("c")});
  const Tokenizer plain = load_json(dir, j);
  const int32_t abc = 257;
  ASSERT_EQ(plain.token_text(abc), "abc");
  EXPECT_EQ(plain.encode("abc"), (Ids{'a', 256}));
  j["model"]["ignore_merges"] = true;
  const Tokenizer ignoring = load_json(dir, j);
  EXPECT_EQ(ignoring.encode("abc"), (Ids{abc}));
}

TEST(TinyBpe, MalformedTokenizerJson) {
  TempDir dir;
  json j = tiny_tokenizer_json({{"a", "b"}});
  json no_vocab = j;
  no_vocab["model"].erase("vocab");
  expect_error([&] { load_json(dir, no_vocab); }, {"model.vocab"});
  json no_model = j;
  no_model.erase("model");
  expect_error([&] { load_json(dir, no_model); }, {"model"});
  json unknown_merge = j;
  unknown_merge["model"]["merges"].push_back("q zz");
  expect_error([&] { load_json(dir, unknown_merge); },
               {"merge 1", "'zz'", "not in the vocabulary"});
  json unmerged_result = j;  // both sides exist but the merged token does not
  unmerged_result["model"]["merges"].push_back("x y");
  expect_error([&] { load_json(dir, unmerged_result); }, {"'xy'", "not in the vocabulary"});
  json bad_merge = j;
  bad_merge["model"]["merges"].push_back("nospace");
  expect_error([&] { load_json(dir, bad_merge); }, {"model.merges[1]", "nospace"});
  json bad_id = j;
  bad_id["model"]["vocab"]["a"] = "zero";
  expect_error([&] { load_json(dir, bad_id); }, {"not an integer id"});
  json dup_id = j;
  dup_id["model"]["vocab"]["zzz"] = 5;
  expect_error([&] { load_json(dir, dup_id); }, {"id 5"});
  json wordpiece = j;
  wordpiece["model"]["type"] = "WordPiece";
  expect_error([&] { load_json(dir, wordpiece); }, {"WordPiece"});
  const std::string broken = dir.write("broken.json", "{\"model\": {\"vocab\": ");
  expect_error([&] { Tokenizer::from_hf_json(broken); }, {"broken.json", "invalid JSON"});
  expect_error([&] { Tokenizer::from_hf_json(dir.write("x", "") + ".missing"); },
               {".missing", "cannot open"});
}

// ---------------------------------------------------------------------------------------
// GGUF metadata: a tiny GGUF written here (metadata only, no tensors).

class GgufWriter {
 public:
  void str(const std::string& key, const std::string& v) {
    key_(key, 8);
    string_(v);
    ++count_;
  }
  void u32(const std::string& key, uint32_t v) {
    key_(key, 4);
    pod_(v);
    ++count_;
  }
  void boolean(const std::string& key, bool v) {
    key_(key, 7);
    body_.push_back(v ? 1 : 0);
    ++count_;
  }
  void strs(const std::string& key, const std::vector<std::string>& v) {
    key_(key, 9);
    pod_(uint32_t{8});
    pod_(static_cast<uint64_t>(v.size()));
    for (const auto& s : v) string_(s);
    ++count_;
  }
  void i32s(const std::string& key, const std::vector<int32_t>& v) {
    key_(key, 9);
    pod_(uint32_t{5});
    pod_(static_cast<uint64_t>(v.size()));
    for (int32_t x : v) pod_(x);
    ++count_;
  }
  std::string bytes() const {
    std::string out = "GGUF";
    auto put = [&](auto v) { out.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
    put(uint32_t{3});
    put(uint64_t{0});
    put(count_);
    out += body_;
    out.append((32 - out.size() % 32) % 32, '\0');
    return out;
  }

 private:
  template <typename T>
  void pod_(T v) {
    body_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void string_(const std::string& s) {
    pod_(static_cast<uint64_t>(s.size()));
    body_ += s;
  }
  void key_(const std::string& key, uint32_t type) {
    string_(key);
    pod_(type);
  }
  std::string body_;
  uint64_t count_ = 0;
};

GgufWriter tiny_gguf(const std::string& pre) {
  GgufWriter w;
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int b = 0; b < 256; ++b) tokens.push_back(byte_char(b)), types.push_back(1);
  tokens.push_back(byte_level("ab")), types.push_back(1);
  tokens.push_back("<|im_start|>"), types.push_back(3);
  tokens.push_back("<|im_end|>"), types.push_back(3);
  tokens.push_back("<tool>"), types.push_back(4);
  w.str("tokenizer.ggml.model", "gpt2");
  if (!pre.empty()) w.str("tokenizer.ggml.pre", pre);
  w.strs("tokenizer.ggml.tokens", tokens);
  w.i32s("tokenizer.ggml.token_type", types);
  w.strs("tokenizer.ggml.merges", {"a b"});
  w.u32("tokenizer.ggml.bos_token_id", 257);
  w.u32("tokenizer.ggml.eos_token_id", 258);
  w.boolean("tokenizer.ggml.add_bos_token", true);
  w.str("tokenizer.chat_template", "{{ '<|im_start|>' }}");
  return w;
}

TEST(GgufTokenizer, TinyVocabulary) {
  TempDir dir;
  const GgufFile gguf = GgufFile::open(dir.write("tiny.gguf", tiny_gguf("smollm").bytes()));
  const Tokenizer tok = Tokenizer::from_gguf(gguf);
  EXPECT_EQ(tok.vocab_size(), 260);
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::SMOLLM);
  EXPECT_EQ(tok.bos_id(), 257);
  EXPECT_EQ(tok.eos_id(), 258);
  EXPECT_TRUE(tok.is_end_of_generation(258));
  EXPECT_EQ(tok.chat_template(), "{{ '<|im_start|>' }}");
  EXPECT_EQ(tok.encode("<|im_start|>ab<tool>", true, true), (Ids{257, 257, 256, 259}));
  EXPECT_EQ(tok.encode("ab a1", true, false), (Ids{256, ' ', 'a', '1'}));
  EXPECT_EQ(tok.decode({257, 256, 259, 258}), "ab<tool>");
}

TEST(GgufTokenizer, Errors) {
  TempDir dir;
  expect_error(
      [&] {
        Tokenizer::from_gguf(GgufFile::open(dir.write("a.gguf", tiny_gguf("mystery-pre").bytes())));
      },
      {"a.gguf", "'mystery-pre'"});
  GgufWriter spm = tiny_gguf("");
  spm.str("tokenizer.ggml.model", "llama");  // a later duplicate key: either way an error
  expect_error([&] { Tokenizer::from_gguf(GgufFile::open(dir.write("b.gguf", spm.bytes()))); },
               {"b.gguf"});
  GgufWriter no_tok;
  no_tok.str("general.name", "x");
  expect_error([&] { Tokenizer::from_gguf(GgufFile::open(dir.write("c.gguf", no_tok.bytes()))); },
               {"c.gguf", "tokenizer"});
  GgufWriter bad_eos = tiny_gguf("gpt2");
  bad_eos.u32("tokenizer.ggml.eot_token_id", 100000);
  expect_error([&] { Tokenizer::from_gguf(GgufFile::open(dir.write("d.gguf", bad_eos.bytes()))); },
               {"tokenizer.ggml.eot_token_id", "100000"});
}

// A GGUF tokenizer whose merges are `merges` and whose pre-tokenizer is `pre`.
GgufWriter gguf_with_merges(const std::vector<std::string>& merges, const std::string& pre = "gpt2",
                            const std::string& model = "gpt2") {
  GgufWriter w;
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(byte_char(b));
  w.str("tokenizer.ggml.model", model);
  w.str("tokenizer.ggml.pre", pre);
  w.strs("tokenizer.ggml.tokens", tokens);
  w.strs("tokenizer.ggml.merges", merges);
  return w;
}

// Counts the bytes of msg a terminal would act on or that are not ASCII at all.
size_t raw_bytes(const std::string& msg) {
  size_t n = 0;
  for (char c : msg) n += (c < 0x20 || c >= 0x7f) ? 1 : 0;
  return n;
}

// Merges, tokens and names come from the file: messages escape them and quote a short excerpt.
TEST(GgufTokenizer, ErrorsEscapeFileText) {
  TempDir dir;
  auto message = [&](const GgufWriter& w) {
    try {
      Tokenizer::from_gguf(GgufFile::open(dir.write("m.gguf", w.bytes())));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  std::string msg = message(gguf_with_merges({"\x1b[2J\xff\xfe"}));
  EXPECT_NE(msg.find("tokenizer.ggml.merges[0] '\\x1b[2J\\xff\\xfe' is not of the form"),
            std::string::npos)
      << msg;
  EXPECT_EQ(raw_bytes(msg), 0u) << msg;
  msg = message(gguf_with_merges({"a \x1b]0;pwned\x07"}));
  EXPECT_NE(msg.find("references '\\x1b]0;pwned\\x07'"), std::string::npos) << msg;
  EXPECT_EQ(raw_bytes(msg), 0u) << msg;
  msg = message(gguf_with_merges({"a " + std::string(100000, 'z')}));
  EXPECT_LT(msg.size(), 500u) << msg.substr(0, 300);
  msg = message(gguf_with_merges({"a b"}, "x\x1b[2J"));
  EXPECT_NE(msg.find("unsupported pre-tokenizer 'x\\x1b[2J'"), std::string::npos) << msg;
  msg = message(gguf_with_merges({"a b"}, "gpt2",
                                 "\xc2\x9b"
                                 "31m"));  // U+009B: a C1 CSI
  EXPECT_NE(msg.find("unsupported tokenizer model '\\xc2\\x9b31m'"), std::string::npos) << msg;
}

TEST(TinyBpe, ErrorsEscapeFileTextAndPrintTheFileValue) {
  TempDir dir;
  auto message = [&](const json& j) {
    try {
      load_json(dir, j);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  json j = tiny_tokenizer_json({{"a", "b"}});
  json bad_merge = j;
  bad_merge["model"]["merges"].push_back("x\x1b[2Jy");
  std::string msg = message(bad_merge);
  EXPECT_NE(msg.find("model.merges[1] 'x\\x1b[2Jy' is not of the form"), std::string::npos) << msg;
  EXPECT_EQ(raw_bytes(msg), 0u) << msg;
  json unknown = j;
  unknown["model"]["merges"].push_back(
      "a \xe2\x80\xae"
      "evil");  // U+202E reverses the line
  msg = message(unknown);
  EXPECT_NE(msg.find("references '\\xe2\\x80\\xaeevil'"), std::string::npos) << msg;
  json big_id = j;
  big_id["model"]["vocab"]["\x1b[2J"] = 9223372036854775808ull;
  msg = message(big_id);
  EXPECT_NE(msg.find("model.vocab[\"\\x1b[2J\"] has an invalid id 9223372036854775808"),
            std::string::npos)
      << msg;
  json big_added = j;
  big_added["added_tokens"].push_back({{"id", 18446744073709551615ull}, {"content", "x"}});
  msg = message(big_added);
  EXPECT_NE(msg.find("invalid id 18446744073709551615"), std::string::npos) << msg;
}

// ---------------------------------------------------------------------------------------
// The default model against goldens from llama.cpp / transformers.

const std::string kModelPath =
    std::string(KVP_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kGoldenPath =
    std::string(KVP_SOURCE_DIR) + "/tests/golden/smollm2_tokenizer.json";

class SmolLM2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kModelPath)) return;
    gguf_ = new GgufFile(GgufFile::open(kModelPath));
    tok_ = new Tokenizer(Tokenizer::from_gguf(*gguf_));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete gguf_;
    tok_ = nullptr;
    gguf_ = nullptr;
  }
  void SetUp() override {
    if (tok_ == nullptr && test::model_required())
      GTEST_FAIL() << "default model missing under KVP_REQUIRE_MODEL=1: " << kModelPath;
    if (tok_ == nullptr)
      GTEST_SKIP() << "default model not fetched (" << kModelPath
                   << "); run the model fetch script to enable these tests";
  }
  static json golden() {
    std::ifstream in(kGoldenPath);
    if (!in) throw std::runtime_error("missing golden file " + kGoldenPath);
    return json::parse(in);
  }
  static GgufFile* gguf_;
  static Tokenizer* tok_;
};
GgufFile* SmolLM2::gguf_ = nullptr;
Tokenizer* SmolLM2::tok_ = nullptr;

TEST_F(SmolLM2, Metadata) {
  const Tokenizer& tok = *tok_;
  EXPECT_EQ(tok.vocab_size(), 49152);
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::SMOLLM);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.token_text(2), "<|im_end|>");
  EXPECT_TRUE(tok.is_end_of_generation(2));
  EXPECT_TRUE(tok.is_end_of_generation(0));  // <|endoftext|>
  EXPECT_FALSE(tok.is_end_of_generation(1));
  EXPECT_FALSE(tok.is_end_of_generation(tok.encode("Hello")[0]));
  // add_bos_token is false for SmolLM2.
  EXPECT_EQ(tok.encode("Hello", true, true), tok.encode("Hello", true, false));
  const ChatTemplate chat = ChatTemplate::detect(tok.chat_template());
  EXPECT_EQ(chat.format(), ChatFormat::CHATML);
}

TEST_F(SmolLM2, GoldenEncodeDecode) {
  const json g = golden();
  ASSERT_TRUE(g.contains("cases"));
  ASSERT_GT(g["cases"].size(), 0u);
  size_t matched = 0;
  for (const json& c : g["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const Ids expected = c["ids"].get<Ids>();
    const Ids ids = tok_->encode(text, true, false);
    EXPECT_EQ(ids, expected) << "text: " << text;
    matched += ids == expected;
    EXPECT_EQ(tok_->decode(ids, false), text);
  }
  EXPECT_EQ(matched, g["cases"].size());
  std::cout << "[ golden   ] " << matched << "/" << g["cases"].size()
            << " encode cases identical to the reference\n";
}

TEST_F(SmolLM2, GoldenChat) {
  const json g = golden();
  ASSERT_TRUE(g.contains("chat"));
  ASSERT_GT(g["chat"].size(), 0u);
  const ChatTemplate chat = ChatTemplate::detect(tok_->chat_template());
  for (const json& c : g["chat"]) {
    std::vector<ChatMessage> messages;
    for (const json& m : c["messages"])
      messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    const std::string text = chat.render(messages, c["add_generation_prompt"].get<bool>());
    EXPECT_EQ(text, c["text"].get<std::string>());
    EXPECT_EQ(tok_->encode(text, true, false), c["ids"].get<Ids>()) << text;
  }
}

TEST_F(SmolLM2, SkipSpecialOnDecode) {
  const Ids ids = tok_->encode("<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(tok_->decode(ids), "user\nhi");
  EXPECT_EQ(tok_->decode(ids, false), "<|im_start|>user\nhi<|im_end|>");
  // Without parse_special the markers are ordinary text.
  const Ids plain = tok_->encode("<|im_start|>", false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(tok_->decode(plain), "<|im_start|>");
}

TEST_F(SmolLM2, EncodesTenThousandTokensQuickly) {
  const json g = golden();
  std::string text;
  size_t i = 0;
  while (text.size() < 60000) {
    const auto& cases = g["cases"];
    text += cases[i++ % cases.size()]["text"].get<std::string>();
    text += " The cache keeps " + std::to_string(i * 7919 % 100000) + " tokens per head.\n";
  }
  Ids ids = tok_->encode(text);  // warm-up (regex JIT, page faults)
  const auto start = std::chrono::steady_clock::now();
  ids = tok_->encode(text);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ speed    ] " << ids.size() << " tokens (" << text.size() << " bytes) in " << ms
            << " ms\n";
  EXPECT_GE(ids.size(), 10000u);
  EXPECT_LT(ms, 250.0);  // target is well under 100 ms; loose for sanitizer/shared-core runs
  EXPECT_EQ(tok_->decode(ids, false), text);
}

}  // namespace
}  // namespace kvp
