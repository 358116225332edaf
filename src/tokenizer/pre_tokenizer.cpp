// Pre-tokenizers: the regex splits that run before BPE, one per family, with PCRE2.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/text.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvp {

namespace {

// The classic GPT-2 split (also HF ByteLevel's use_regex pattern).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3: case-insensitive contractions, a letter run with one leading non-letter,
// numbers in groups of up to three digits, newlines kept together.
constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: as Llama 3 with single digits.
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// SmolLM: every digit on its own first (HF Digits(individual_digits=True)).
constexpr const char* kDigitPattern = R"(\p{N})";

class Regex {
 public:
  explicit Regex(const char* pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(error, buf, sizeof(buf));
      throw Error(std::string("tokenizer: cannot compile pre-tokenizer regex '") + pattern +
                  "' at offset " + std::to_string(offset) + ": " +
                  reinterpret_cast<const char*>(buf));
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Splits text into the matches and the (normally empty) gaps between them, in order.
  template <typename Fn>
  void split(std::string_view text, Fn&& fn) const {
    if (text.empty()) return;
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
        pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    if (!md) throw Error("tokenizer: out of memory for regex match data");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = 0;      // where the next search starts
    size_t emitted = 0;  // text before this is already handed out
    bool use_jit = jit_;
    while (pos < text.size()) {
      int rc = use_jit
                   ? pcre2_jit_match(code_, subject, text.size(), pos, 0, md.get(), nullptr)
                   : pcre2_match(code_, subject, text.size(), pos, PCRE2_NO_JIT, md.get(), nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT && use_jit) {
        use_jit = false;  // very long runs: retry with the interpreter (heap frames)
        continue;
      }
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR buf[256];
        pcre2_get_error_message(rc, buf, sizeof(buf));
        throw Error(std::string("tokenizer: pre-tokenizer regex failed: ") +
                    reinterpret_cast<const char*>(buf));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const size_t start = ov[0], end = ov[1];
      if (end == start) {  // cannot happen with our patterns; step over to be safe
        pos = start + 1;
        continue;
      }
      if (start > emitted) fn(text.substr(emitted, start - emitted));
      fn(text.substr(start, end - start));
      emitted = pos = end;
    }
    if (emitted < text.size()) fn(text.substr(emitted));
  }

 private:
  pcre2_code* code_ = nullptr;
  bool jit_ = false;
};

const Regex& regex_gpt2() {
  static const Regex r(kGpt2Pattern);
  return r;
}
const Regex& regex_llama3() {
  static const Regex r(kLlama3Pattern);
  return r;
}
const Regex& regex_qwen2() {
  static const Regex r(kQwen2Pattern);
  return r;
}
const Regex& regex_digit() {
  static const Regex r(kDigitPattern);
  return r;
}

}  // namespace

namespace tok {

const char* pre_tokenizer_pattern(PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::GPT2:
      return kGpt2Pattern;
    case PreTokenizer::LLAMA3:
      return kLlama3Pattern;
    case PreTokenizer::QWEN2:
      return kQwen2Pattern;
    case PreTokenizer::SMOLLM:
      return kGpt2Pattern;
  }
  return kGpt2Pattern;
}

void for_each_pre_token(PreTokenizer kind, std::string_view text,
                        const std::function<void(std::string_view)>& fn) {
  switch (kind) {
    case PreTokenizer::GPT2:
      regex_gpt2().split(text, fn);
      return;
    case PreTokenizer::LLAMA3:
      regex_llama3().split(text, fn);
      return;
    case PreTokenizer::QWEN2:
      regex_qwen2().split(text, fn);
      return;
    case PreTokenizer::SMOLLM: {
      const Regex& gpt2 = regex_gpt2();
      regex_digit().split(text, [&](std::string_view piece) { gpt2.split(piece, fn); });
      return;
    }
  }
  throw Error("tokenizer: invalid pre-tokenizer kind");
}

}  // namespace tok

PreTokenizer pre_tokenizer_from_name(const std::string& name) {
  if (name == "gpt-2" || name == "gpt2" || name == "default") return PreTokenizer::GPT2;
  if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") return PreTokenizer::LLAMA3;
  if (name == "qwen2") return PreTokenizer::QWEN2;
  if (name == "smollm") return PreTokenizer::SMOLLM;
  throw Error("tokenizer: unsupported pre-tokenizer '" + printable(name) +
              "' (supported: gpt2, gpt-2, default, llama3, llama-bpe, llama-v3, qwen2, smollm)");
}

const char* pre_tokenizer_name(PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::GPT2:
      return "gpt2";
    case PreTokenizer::LLAMA3:
      return "llama3";
    case PreTokenizer::QWEN2:
      return "qwen2";
    case PreTokenizer::SMOLLM:
      return "smollm";
  }
  return "?";
}

std::vector<std::string> pre_tokenize(PreTokenizer kind, const std::string& text) {
  std::vector<std::string> pieces;
  tok::for_each_pre_token(kind, text, [&](std::string_view piece) { pieces.emplace_back(piece); });
  return pieces;
}

}  // namespace kvp
