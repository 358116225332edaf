// Hostile GGUF files, one test per bug class of llama.cpp's GGUF advisories, loaded the way the
// engine loads a model (reader, config, weights, tokenizer, then decoding every token). Each
// must end in a clean kvp::Error naming the problem: no crash, no sanitizer report, no other
// exception. The fuzz corpus (fuzz/corpus/gguf, fuzz/make_corpus.py) holds the same classes as
// seeds; these are the fixed regression cases.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "model/config.h"
#include "model/weights.h"
#include "support/gguf_builder.h"
#include "tokenizer/tokenizer.h"

namespace kvp {
namespace {

using namespace test;  // the GGUF builder

constexpr uint64_t kU64Max = ~uint64_t{0};

// Everything the engine does with a GGUF: the message of the first Error ("" when it all loads).
std::string load(const Bytes& bytes) {
  try {
    const GgufFile g =
        GgufFile::open(MappedFile::from_bytes("hostile.gguf", bytes.data(), bytes.size()));
    if (g.has("general.architecture")) {
      const ModelConfig c = config_from_gguf(g);
      weights_from_gguf(g, c);
    }
    if (g.has("tokenizer.ggml.model")) {
      const Tokenizer tok = Tokenizer::from_gguf(g);
      std::vector<int32_t> all(static_cast<size_t>(tok.vocab_size()));
      for (int32_t id = 0; id < tok.vocab_size(); ++id) all[static_cast<size_t>(id)] = id;
      tok.decode(all, false);
      tok.decode(tok.encode("hello <|im_end|> world", true, true), true);
    }
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_refused(const Bytes& bytes, const std::string& fragment) {
  const std::string message = load(bytes);
  EXPECT_NE(message.find(fragment), std::string::npos)
      << "expected an error containing '" << fragment << "', got '" << message << "'";
}

Bytes string_array(const std::vector<std::string>& items) {
  Bytes e;
  for (const std::string& s : items) put_str(e, s);
  return enc_array(VT::STRING, items.size(), e);
}

Bytes int_array(const std::vector<int32_t>& items) {
  Bytes e;
  for (int32_t v : items) put(e, v);
  return enc_array(VT::I32, items.size(), e);
}

// A small byte-level vocabulary: specials, the printable ASCII bytes, one merge.
struct Vocab {
  std::vector<std::string> tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  std::vector<int32_t> types = {3, 3, 3};
  std::vector<std::string> merges = {"h e"};
  Vocab() {
    for (char c = '!'; c <= '~'; ++c) {
      tokens.emplace_back(1, c);
      types.push_back(1);
    }
    tokens.emplace_back("he");
    types.push_back(1);
  }
};

GgufBuilder tokenizer_builder(const Vocab& v = Vocab()) {
  GgufBuilder b;
  b.kv("tokenizer.ggml.model", VT::STRING, enc_str("gpt2"));
  b.kv("tokenizer.ggml.tokens", VT::ARRAY, string_array(v.tokens));
  b.kv("tokenizer.ggml.token_type", VT::ARRAY, int_array(v.types));
  b.kv("tokenizer.ggml.merges", VT::ARRAY, string_array(v.merges));
  return b;
}

// A one-layer llama with hidden 8 and a 16-token vocabulary (no tokenizer).
GgufBuilder model_builder(uint32_t layers_declared = 1, int layers_held = 1) {
  GgufBuilder b;
  b.kv("general.architecture", VT::STRING, enc_str("llama"));
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, uint32_t>>{{"block_count", layers_declared},
                                                     {"context_length", 64},
                                                     {"embedding_length", 8},
                                                     {"feed_forward_length", 16},
                                                     {"attention.head_count", 2},
                                                     {"attention.head_count_kv", 1},
                                                     {"vocab_size", 16}})
    b.kv("llama." + key, VT::U32, enc<uint32_t>(value));
  b.kv("llama.attention.layer_norm_rms_epsilon", VT::F32, enc<float>(1e-5f));
  b.tensor("token_embd.weight", {8, 16}, kF32).tensor("output_norm.weight", {8}, kF32);
  for (int l = 0; l < layers_held; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    b.tensor(p + "attn_norm.weight", {8}, kF32).tensor(p + "ffn_norm.weight", {8}, kF32);
    b.tensor(p + "attn_q.weight", {8, 8}, kF32).tensor(p + "attn_output.weight", {8, 8}, kF32);
    b.tensor(p + "attn_k.weight", {8, 4}, kF32).tensor(p + "attn_v.weight", {8, 4}, kF32);
    b.tensor(p + "ffn_gate.weight", {8, 16}, kF32).tensor(p + "ffn_up.weight", {8, 16}, kF32);
    b.tensor(p + "ffn_down.weight", {16, 8}, kF32);
  }
  return b;
}

TEST(HostileGguf, ValidBuildersLoad) {
  EXPECT_EQ(load(model_builder().build()), "");
  EXPECT_EQ(load(tokenizer_builder().build()), "");
}

// CVE-2024-21836 (n_tensors), CVE-2024-23605 (n_kv): a count times the size of what it counts
// wraps, and a too-small array is filled from the file.
TEST(HostileGguf, CountsThatOverflowWhenMultiplied) {
  for (uint64_t n : {kU64Max, kU64Max / 40 + 1, uint64_t{1} << 61}) {
    GgufBuilder t = model_builder();
    t.tensor_count = n;
    expect_refused(t.build(), "tensor count");
    GgufBuilder k = model_builder();
    k.kv_count = n;
    expect_refused(k.build(), "metadata count");
  }
}

// CVE-2024-21825: an array of strings whose count times the element size wraps.
TEST(HostileGguf, ArrayCountsThatOverflow) {
  for (uint64_t n : {kU64Max, uint64_t{1} << 61, (uint64_t{1} << 61) + 1}) {
    GgufBuilder b = tokenizer_builder();
    b.kv("tokenizer.ggml.scores", VT::ARRAY, enc_array(VT::STRING, n, enc_str("x")));
    expect_refused(b.build(), "claims " + std::to_string(n) + " elements");
  }
}

// CVE-2024-23496: a string length of 2^64 - 1 (length + 1 wraps to 0), or past the end.
TEST(HostileGguf, StringLengthsPastTheEnd) {
  for (uint64_t n : {kU64Max, kU64Max - 1, uint64_t{1} << 63, uint64_t{100}}) {
    GgufBuilder b = tokenizer_builder();
    Bytes v;
    put<uint64_t>(v, n);
    v.resize(v.size() + 16, 'x');
    b.kv("general.name", VT::STRING, v);
    expect_refused(b.build(), "has length " + std::to_string(n));
  }
  // Inside an array of strings: the second element's length runs past the end.
  GgufBuilder b = tokenizer_builder();
  Bytes e = enc_str("ok");
  put<uint64_t>(e, kU64Max - 1);
  e.push_back('x');
  b.kv("general.tags", VT::ARRAY, enc_array(VT::STRING, 2, e));
  expect_refused(b.build(), "has length 18446744073709551614");
}

// CVE-2024-21802: n_dims larger than the dims array (ggml's GGML_MAX_DIMS is 4).
TEST(HostileGguf, TooManyDims) {
  for (std::vector<uint64_t> ne :
       {std::vector<uint64_t>{2, 2, 2, 2, 2}, std::vector<uint64_t>(64, 1)}) {
    GgufBuilder b = model_builder();
    b.tensor("t", ne, kF32, Bytes(64, 0));
    expect_refused(b.build(), "dims (supported: 1 to 4)");
  }
}

// CVE-2026-33298: the product of the dims times the row stride wraps (2^42 + 1 rows of a
// quantised type; 2^62 f32 elements make 2^64 bytes = 0).
TEST(HostileGguf, ByteSizesThatWrap) {
  struct Case {
    std::vector<uint64_t> ne;
    uint32_t type;
    const char* message;
  };
  for (const Case& c :
       {Case{{uint64_t{1} << 62}, kF32, "byte size overflows"},
        Case{{32, (uint64_t{1} << 42) + 1}, kQ8_0, "past the end of the data section"},
        Case{{uint64_t{1} << 61, 2}, kF32, "byte size overflows"},
        Case{{uint64_t{1} << 32, uint64_t{1} << 32}, kF32, "element count overflows"},
        Case{{1 << 16, 1 << 16, 1 << 16, 1 << 16}, kF32, "element count overflows"}}) {
    GgufBuilder b = model_builder();
    b.tensor("t", c.ne, c.type, Bytes(64, 0));
    expect_refused(b.build(), c.message);
  }
}

// CVE-2025-53630, CVE-2026-27940: offsets and sizes whose sums wrap, so that a check of
// offset + size against the file passes; and data one byte past the end.
TEST(HostileGguf, TensorDataOutOfBounds) {
  {
    GgufBuilder b = model_builder();
    b.tensor("t", {(uint64_t{1} << 61)}, kF32, Bytes(64, 0));
    b.tensors.back().offset = uint64_t{1} << 63;  // offset + 2^63 bytes wraps to 0
    expect_refused(b.build(), "past the end of the data section");
  }
  {
    GgufBuilder b = model_builder();
    b.tensor("t", {8}, kF32, Bytes(32, 0));
    b.tensors.back().offset = kU64Max - 31;  // aligned, and offset + 32 wraps
    expect_refused(b.build(), "past the end of the data section");
  }
  {
    // 17 floats need 68 bytes; the file ends 4 bytes short of them.
    GgufBuilder b;
    b.kv("general.name", VT::STRING, enc_str("x"));
    b.tensor("t", {17}, kF32, Bytes(64, 0));
    expect_refused(b.build(), "past the end of the data section");
  }
}

// The header says fewer layers than the file holds: the extra ones would be ignored.
TEST(HostileGguf, BlockCountBelowTheLayersHeld) {
  expect_refused(model_builder(1, 2).build(), "holds layer 1");
}

// Token ids outside the vocabulary: every special-token id key, in every integer type.
TEST(HostileGguf, SpecialTokenIdsOutsideTheVocabulary) {
  const int64_t n = static_cast<int64_t>(Vocab().tokens.size());
  for (const char* key : {"bos", "eos", "unknown", "padding", "eot", "eom"}) {
    const std::string k = std::string("tokenizer.ggml.") + key + "_token_id";
    for (const auto& [type, value] :
         std::vector<std::pair<VT, Bytes>>{{VT::U32, enc<uint32_t>(static_cast<uint32_t>(n))},
                                           {VT::U32, enc<uint32_t>(0xFFFFFFFFu)},
                                           {VT::I32, enc<int32_t>(-2)},
                                           {VT::I64, enc<int64_t>(int64_t{1} << 40)},
                                           {VT::U64, enc<uint64_t>((uint64_t{1} << 63) + 1)}}) {
      GgufBuilder b = tokenizer_builder();
      b.kv(k, type, value);
      const std::string message = load(b.build());
      EXPECT_FALSE(message.empty()) << k;
      EXPECT_NE(message.find(k), std::string::npos) << message;
    }
  }
}

TEST(HostileGguf, TokenTypesAndMergesThatDisagreeWithTheVocabulary) {
  {
    Vocab v;
    v.types.pop_back();
    expect_refused(tokenizer_builder(v).build(), "token_type has");
  }
  {
    Vocab v;
    v.types.back() = 7;
    expect_refused(tokenizer_builder(v).build(), "invalid token type 7");
  }
  {
    Vocab v;
    v.merges.push_back("zz qq");
    expect_refused(tokenizer_builder(v).build(), "not in the vocabulary");
  }
  {
    Vocab v;
    v.merges.push_back("ab");
    expect_refused(tokenizer_builder(v).build(), "is not of the form");
  }
}

// CVE-2025-49847 (token text to bytes): byte tokens are "<0xHH>"; other texts of that length
// ("<0xZZ>", "<0x-1>") are decoded as text, not parsed as a number (std::stoi threw
// std::invalid_argument past every handler on "<0xZZ>": a crash on the first decode).
TEST(HostileGguf, ByteTokensWithBadHex) {
  for (const std::string text : {"<0xZZ>", "<0x-1>", "<0x 1>", "<0x+F>", "<0xG0>"}) {
    Vocab v;
    v.merges.clear();
    v.tokens[3] = text;  // '!' becomes a BYTE token with a bad text
    v.types[3] = 6;
    GgufBuilder b = tokenizer_builder(v);
    const Bytes bytes = b.build();
    EXPECT_EQ(load(bytes), "") << text;
    const GgufFile g = GgufFile::open(MappedFile::from_bytes("t.gguf", bytes.data(), bytes.size()));
    EXPECT_EQ(Tokenizer::from_gguf(g).decode({3}), text);
  }
  Vocab v;
  v.merges.clear();
  v.tokens[3] = "<0x41>";
  v.types[3] = 6;
  const Bytes bytes = tokenizer_builder(v).build();
  const GgufFile g = GgufFile::open(MappedFile::from_bytes("t.gguf", bytes.data(), bytes.size()));
  EXPECT_EQ(Tokenizer::from_gguf(g).decode({3}), "A");
}

// A chat template naming special tokens the vocabulary lacks: they are plain text, not errors.
TEST(HostileGguf, ChatTemplateSpecialTokensMissingFromTheVocabulary) {
  Vocab v;
  v.tokens.erase(v.tokens.begin(), v.tokens.begin() + 3);
  v.types.erase(v.types.begin(), v.types.begin() + 3);
  GgufBuilder b = tokenizer_builder(v);
  b.kv("tokenizer.chat_template", VT::STRING, enc_str("{{ '<|im_start|>' + message['role'] }}"));
  const Bytes bytes = b.build();
  const GgufFile g = GgufFile::open(MappedFile::from_bytes("t.gguf", bytes.data(), bytes.size()));
  const Tokenizer tok = Tokenizer::from_gguf(g);
  const std::string prompt = "<|im_start|>user:hi<|im_end|>";  // the vocabulary has no '\n'
  EXPECT_EQ(tok.decode(tok.encode(prompt, true, false), false), prompt);
}

}  // namespace
}  // namespace kvp
