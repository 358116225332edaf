#pragma once
// Internals of the tokenizer layer, shared by its .cpp files (not part of the public API).
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace kvp::tok {

// GGUF token types (llama.cpp's llama_token_type); tokenizer.json maps onto them too.
enum TokenType : uint8_t {
  TOKEN_UNDEFINED = 0,
  TOKEN_NORMAL = 1,
  TOKEN_UNKNOWN = 2,
  TOKEN_CONTROL = 3,
  TOKEN_USER_DEFINED = 4,
  TOKEN_UNUSED = 5,
  TOKEN_BYTE = 6,
};

// GPT-2 byte <-> unicode mapping (byte_level_printable in tokenizer.h): every byte is a
// printable code point; bytes already printable map to themselves, the others to 256, ...
struct ByteAlphabet {
  std::array<uint32_t, 256> byte_to_cp{};
  std::array<std::string, 256> byte_to_utf8{};
  std::array<int16_t, 512> cp_to_byte{};  // -1 when the code point is not in the alphabet
};
const ByteAlphabet& byte_alphabet();

// Appends the UTF-8 encoding of code point cp to out.
void append_utf8(std::string& out, uint32_t cp);
// Decodes the code point at s[i]; returns its length in bytes (1 for an invalid byte,
// with cp set to 0xFFFFFFFF).
size_t next_utf8(std::string_view s, size_t i, uint32_t& cp);
// Maps raw bytes to their byte-level (GPT-2 alphabet) form.
std::string bytes_to_byte_level(std::string_view bytes);

// Everything a loader gathers before the tokenizer is built.
struct TokenizerData {
  std::string source;               // for error messages: the file path
  std::vector<std::string> tokens;  // id -> text (byte-level form for normal tokens)
  std::vector<uint8_t> types;       // id -> TokenType
  std::vector<std::pair<std::string, std::string>> merges;  // rank = index
  int32_t bos = -1, eos = -1, unk = -1, pad = -1, eot = -1, eom = -1;
  bool add_bos = false;
  bool ignore_merges = false;  // a whole pre-token found in the vocab is emitted as is
  PreTokenizer pre = PreTokenizer::GPT2;
  std::string chat_template;
};

// Calls fn(std::string_view piece) for each pre-token of text, in order; the pieces
// concatenate to the text exactly (bytes no pattern matches, such as invalid UTF-8, come
// out as pieces of their own).
// The regex of a pre-tokenizer family (for SMOLLM, the one applied after the digit split).
const char* pre_tokenizer_pattern(PreTokenizer kind);

void for_each_pre_token(PreTokenizer kind, std::string_view text,
                        const std::function<void(std::string_view)>& fn);

}  // namespace kvp::tok

namespace kvp {

struct Tokenizer::Impl {
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  struct TrieNode {
    std::unordered_map<uint8_t, int32_t> next;
    int32_t token = -1;
  };

  static std::unique_ptr<Impl> build(tok::TokenizerData data);

  std::string source;
  std::vector<std::string> id_to_token;
  std::vector<uint8_t> types;
  std::unordered_map<std::string, int32_t> token_to_id;
  std::unordered_map<uint64_t, Merge> merges;  // (left << 32 | right) -> rank, result
  std::array<int32_t, 256> byte_ids{};         // id of each single-byte token, -1 if none
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false;
  bool ignore_merges = false;
  PreTokenizer pre = PreTokenizer::GPT2;
  std::string chat_template;
  std::vector<uint8_t> eog;  // id -> 1 when it ends a generation
  // Special (control, unknown, user-defined) token texts, for literal matching.
  std::vector<TrieNode> trie;
  std::array<bool, 256> trie_first{};

  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, std::vector<int32_t>& out) const;
};

}  // namespace kvp
