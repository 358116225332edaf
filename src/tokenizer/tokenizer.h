#pragma once
// Byte-level BPE tokenizer (GPT-2 style byte mapping, merges ranked by order), built from
// GGUF metadata or a Hugging Face tokenizer.json. Special tokens (control and user-defined)
// are matched literally before pre-tokenisation when parse_special is true.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kvp {

class GgufFile;

enum class PreTokenizer { GPT2, LLAMA3, QWEN2, SMOLLM };

// Maps a tokenizer.ggml.pre value ("gpt2", "llama-bpe", "qwen2", "smollm", ...) to its
// kind; throws Error naming the value when it is not supported.
PreTokenizer pre_tokenizer_from_name(const std::string& name);
const char* pre_tokenizer_name(PreTokenizer kind);
// The pre-tokens of text (they concatenate back to text exactly). For tests and tools.
std::vector<std::string> pre_tokenize(PreTokenizer kind, const std::string& text);

// GPT-2's byte-level alphabet, in which every byte is a printable code point: the bytes that
// are printable themselves (33..126, 161..172, 174..255) stand for themselves, the others
// for 256, 257, ... in byte order. Whether byte b stands for itself:
bool byte_level_printable(uint8_t b);
// The UTF-8 text of byte b's code point in that alphabet.
const std::string& byte_level_char(uint8_t b);

class Tokenizer {
 public:
  static Tokenizer from_gguf(const GgufFile& gguf);
  static Tokenizer from_hf_json(const std::string& tokenizer_json_path);
  // The tokenizer of a model path: a GGUF file's own, or a Hugging Face directory's
  // tokenizer.json.
  static Tokenizer from_model_path(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Text to ids. Adds BOS only if the model asks for it (tokenizer.ggml.add_bos_token /
  // the post-processor) and add_bos is true.
  std::vector<int32_t> encode(const std::string& text, bool parse_special = true,
                              bool add_bos = false) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const;
  std::string token_text(int32_t id) const;  // the raw vocab entry

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when none
  int32_t eos_id() const;
  // True for ids that end a generation turn (eos, <|im_end|>, <|eot_id|>, <|endoftext|>...).
  bool is_end_of_generation(int32_t id) const;
  PreTokenizer pre_tokenizer() const;
  // The chat template text stored with the model ("" when none).
  const std::string& chat_template() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvp
