// Byte-level BPE: the byte alphabet, the merge loop, special-token splitting, decoding.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <queue>
#include <string>
#include <utility>

#include "core/error.h"
#include "core/text.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvp {

namespace tok {

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet = [] {
    ByteAlphabet a;
    a.cp_to_byte.fill(-1);
    uint32_t next_extra = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const uint32_t cp = byte_level_printable(static_cast<uint8_t>(b)) ? b : next_extra++;
      a.byte_to_cp[b] = cp;
      append_utf8(a.byte_to_utf8[b], cp);
      a.cp_to_byte[cp] = static_cast<int16_t>(b);
    }
    return a;
  }();
  return alphabet;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t next_utf8(std::string_view s, size_t i, uint32_t& cp) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  cp = 0xFFFFFFFFu;
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  size_t len = 0;
  uint32_t value = 0, min = 0;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, value = b0 & 0x1F, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, value = b0 & 0x0F, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, value = b0 & 0x07, min = 0x10000;
  } else {
    return 1;
  }
  if (i + len > s.size()) return 1;
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 1;
    value = (value << 6) | (b & 0x3F);
  }
  if (value < min || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return 1;
  cp = value;
  return len;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  const ByteAlphabet& a = byte_alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += a.byte_to_utf8[static_cast<uint8_t>(c)];
  return out;
}

}  // namespace tok

bool byte_level_printable(uint8_t b) {
  return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

const std::string& byte_level_char(uint8_t b) {
  return tok::byte_alphabet().byte_to_utf8[b];
}

namespace {

// The value of a hex digit, or -1 (not std::stoi: it accepts signs and spaces, and throws
// std::invalid_argument, which no caller expects from decode()).
int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Texts of tokens that end a generation turn in the model families we know.
constexpr const char* kEndOfGenerationTexts[] = {
    "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<|end|>", "<|eom_id|>",
};

}  // namespace

std::unique_ptr<Tokenizer::Impl> Tokenizer::Impl::build(tok::TokenizerData data) {
  const std::string& src = data.source;
  const size_t n = data.tokens.size();
  check(n > 0, src + ": tokenizer vocabulary is empty");
  check(n <= 0x7FFFFFFF, src + ": tokenizer vocabulary is too large");
  if (data.types.empty()) data.types.assign(n, tok::TOKEN_NORMAL);
  check(data.types.size() == n, src + ": tokenizer has " + std::to_string(n) + " tokens but " +
                                    std::to_string(data.types.size()) + " token types");

  auto impl = std::make_unique<Impl>();
  impl->source = src;
  impl->types = std::move(data.types);
  impl->token_to_id.reserve(n * 2);
  for (size_t id = 0; id < n; ++id) {
    const std::string& text = data.tokens[id];
    const uint8_t type = impl->types[id];
    if (type > tok::TOKEN_BYTE)  // the message is built on failure only
      throw Error(src + ": token " + std::to_string(id) + " has an invalid token type " +
                  std::to_string(type));
    // On duplicates the first id wins (as in llama.cpp); unused tokens never take a text.
    if (!text.empty() && type != tok::TOKEN_UNUSED)
      impl->token_to_id.emplace(text, static_cast<int32_t>(id));
  }
  impl->id_to_token = std::move(data.tokens);

  const tok::ByteAlphabet& alphabet = tok::byte_alphabet();
  for (int b = 0; b < 256; ++b) {
    auto it = impl->token_to_id.find(alphabet.byte_to_utf8[b]);
    impl->byte_ids[b] = it == impl->token_to_id.end() ? -1 : it->second;
  }

  impl->merges.reserve(data.merges.size() * 2);
  for (size_t rank = 0; rank < data.merges.size(); ++rank) {
    // Not a structured binding: clang 14 (the fuzz build) cannot capture one in a lambda.
    const std::string& left = data.merges[rank].first;
    const std::string& right = data.merges[rank].second;
    auto find = [&](const std::string& text) {
      auto it = impl->token_to_id.find(text);
      if (it == impl->token_to_id.end())
        throw Error(src + ": merge " + std::to_string(rank) + " ('" +
                    printable(left + " " + right) + "') references '" + printable(text) +
                    "', which is not in the vocabulary");
      return it->second;
    };
    const int32_t a = find(left), b = find(right), merged = find(left + right);
    // A repeated pair keeps its first (lowest) rank.
    impl->merges.emplace(pair_key(a, b), Merge{static_cast<int32_t>(rank), merged});
  }

  auto check_id = [&](int32_t id, const char* what) {
    check(id >= -1 && id < static_cast<int64_t>(n),
          src + ": " + what + " token id " + std::to_string(id) + " is outside the vocabulary (" +
              std::to_string(n) + " tokens)");
    return id;
  };
  impl->bos = check_id(data.bos, "bos");
  impl->eos = check_id(data.eos, "eos");
  impl->unk = check_id(data.unk, "unknown");
  impl->pad = check_id(data.pad, "padding");
  check_id(data.eot, "eot");
  check_id(data.eom, "eom");
  impl->add_bos = data.add_bos && impl->bos >= 0;
  impl->ignore_merges = data.ignore_merges;
  impl->pre = data.pre;
  impl->chat_template = std::move(data.chat_template);

  impl->eog.assign(n, 0);
  for (int32_t id : {impl->eos, data.eot, data.eom})
    if (id >= 0) impl->eog[id] = 1;
  for (const char* text : kEndOfGenerationTexts) {
    auto it = impl->token_to_id.find(text);
    if (it != impl->token_to_id.end()) impl->eog[it->second] = 1;
  }

  // Trie of the texts matched literally before pre-tokenisation.
  impl->trie.emplace_back();
  impl->trie_first.fill(false);
  for (size_t id = 0; id < n; ++id) {
    const uint8_t type = impl->types[id];
    if (type != tok::TOKEN_CONTROL && type != tok::TOKEN_USER_DEFINED && type != tok::TOKEN_UNKNOWN)
      continue;
    const std::string& text = impl->id_to_token[id];
    if (text.empty()) continue;
    int32_t node = 0;
    for (char c : text) {
      const auto byte = static_cast<uint8_t>(c);
      auto it = impl->trie[node].next.find(byte);
      if (it == impl->trie[node].next.end()) {
        impl->trie.emplace_back();
        const auto child = static_cast<int32_t>(impl->trie.size() - 1);
        impl->trie[node].next.emplace(byte, child);
        node = child;
      } else {
        node = it->second;
      }
    }
    if (impl->trie[node].token < 0) impl->trie[node].token = static_cast<int32_t>(id);
    impl->trie_first[static_cast<uint8_t>(text[0])] = true;
  }
  return impl;
}

// BPE on one pre-token: start from its bytes (in the byte alphabet) and apply the merge
// of lowest rank, leftmost first, until none applies.
void Tokenizer::Impl::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (piece.size() == 1) {
    const int32_t id = byte_ids[static_cast<uint8_t>(piece[0])];
    if (id >= 0)
      out.push_back(id);
    else if (unk >= 0)
      out.push_back(unk);
    return;
  }
  if (ignore_merges) {
    auto it = token_to_id.find(tok::bytes_to_byte_level(piece));
    if (it != token_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }

  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t left_id;
    int32_t right_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  const auto n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i)
    sym[i] = Symbol{byte_ids[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};

  std::vector<Candidate> storage;
  storage.reserve(static_cast<size_t>(n));
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue(
      std::greater<Candidate>(), std::move(storage));
  auto consider = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = sym[left].next;
    if (right < 0) return;
    const int32_t a = sym[left].id, b = sym[right].id;
    if (a < 0 || b < 0) return;
    auto it = merges.find(pair_key(a, b));
    if (it != merges.end()) queue.push(Candidate{it->second.rank, left, a, b});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = sym[c.left];
    // Stale entries: the left symbol was merged away (id -1) or changed, or its right
    // neighbour is now a different token.
    if (left.id != c.left_id || left.next < 0) continue;
    Symbol& right = sym[left.next];
    if (right.id != c.right_id) continue;
    left.id = merges.at(pair_key(c.left_id, c.right_id)).result;
    const int32_t after = right.next;
    right.id = -2;  // dead
    left.next = after;
    if (after >= 0) sym[after].prev = c.left;
    consider(left.prev);
    consider(c.left);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    if (sym[i].id >= 0)
      out.push_back(sym[i].id);
    else if (unk >= 0)
      out.push_back(unk);
  }
}

void Tokenizer::Impl::encode_plain(std::string_view text, std::vector<int32_t>& out) const {
  tok::for_each_pre_token(pre, text, [&](std::string_view piece) { encode_piece(piece, out); });
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool parse_special,
                                       bool add_bos) const {
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_bos && m.add_bos) out.push_back(m.bos);

  // Split on special tokens, leftmost-longest. User-defined tokens are always matched;
  // control and unknown ones only when parse_special (as llama.cpp and HF tokenizers do).
  const std::string_view view(text);
  size_t plain_start = 0;
  size_t i = 0;
  while (i < view.size()) {
    if (!m.trie_first[static_cast<uint8_t>(view[i])]) {
      ++i;
      continue;
    }
    int32_t node = 0, match = -1;
    size_t match_len = 0;
    for (size_t j = i; j < view.size(); ++j) {
      const auto& next = m.trie[node].next;
      auto it = next.find(static_cast<uint8_t>(view[j]));
      if (it == next.end()) break;
      node = it->second;
      const int32_t id = m.trie[node].token;
      if (id >= 0 && (parse_special || m.types[id] == tok::TOKEN_USER_DEFINED)) {
        match = id;
        match_len = j + 1 - i;
      }
    }
    if (match < 0) {
      ++i;
      continue;
    }
    m.encode_plain(view.substr(plain_start, i - plain_start), out);
    out.push_back(match);
    i += match_len;
    plain_start = i;
  }
  m.encode_plain(view.substr(plain_start), out);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const Impl& m = *impl_;
  const tok::ByteAlphabet& alphabet = tok::byte_alphabet();
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int64_t>(m.id_to_token.size()))  // message on failure only
      throw Error("tokenizer: cannot decode token id " + std::to_string(id) + " (vocabulary has " +
                  std::to_string(m.id_to_token.size()) + " tokens)");
    const std::string& text = m.id_to_token[id];
    switch (m.types[id]) {
      case tok::TOKEN_CONTROL:
      case tok::TOKEN_UNKNOWN:
      case tok::TOKEN_UNUSED:
        if (!skip_special) out += text;
        break;
      case tok::TOKEN_USER_DEFINED:
        out += text;
        break;
      case tok::TOKEN_BYTE:
        // "<0xAB>" byte tokens (rare in byte-level vocabularies). Two hex digits exactly: any
        // other text ("<0xZZ>", "<0x-1>", from a hostile file) decodes as text below.
        if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>' &&
            hex_digit(text[3]) >= 0 && hex_digit(text[4]) >= 0) {
          out.push_back(static_cast<char>(hex_digit(text[3]) * 16 + hex_digit(text[4])));
          break;
        }
        [[fallthrough]];
      default:
        for (size_t k = 0; k < text.size();) {
          uint32_t cp = 0;
          const size_t len = tok::next_utf8(text, k, cp);
          if (cp < alphabet.cp_to_byte.size() && alphabet.cp_to_byte[cp] >= 0)
            out.push_back(static_cast<char>(alphabet.cp_to_byte[cp]));
          else
            out.append(text, k, len);  // not a byte-alphabet character: keep it as is
          k += len;
        }
    }
  }
  return out;
}

std::string Tokenizer::token_text(int32_t id) const {
  check(id >= 0 && id < vocab_size(), "tokenizer: token id " + std::to_string(id) +
                                          " is outside the vocabulary (" +
                                          std::to_string(vocab_size()) + " tokens)");
  return impl_->id_to_token[id];
}

int32_t Tokenizer::vocab_size() const {
  return static_cast<int32_t>(impl_->id_to_token.size());
}
int32_t Tokenizer::bos_id() const {
  return impl_->bos;
}
int32_t Tokenizer::eos_id() const {
  return impl_->eos;
}
bool Tokenizer::is_end_of_generation(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->eog[id] != 0;
}
PreTokenizer Tokenizer::pre_tokenizer() const {
  return impl_->pre;
}
const std::string& Tokenizer::chat_template() const {
  return impl_->chat_template;
}

}  // namespace kvp
