#pragma once
// Chat templates recognised from the template text stored with a model. We do not run
// Jinja: we recognise the known families and render them in C++.
#include <string>
#include <vector>

namespace kvp {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

enum class ChatFormat { NONE, CHATML, LLAMA3 };

class ChatTemplate {
 public:
  // Recognises the family from the stored template; "" or an unknown one gives NONE
  // unless fallback says otherwise. ChatML templates that inject a default system prompt
  // (SmolLM2, Qwen2.5) keep it.
  static ChatTemplate detect(const std::string& template_text);
  static ChatTemplate none();

  ChatFormat format() const { return format_; }
  std::string name() const;
  // The prompt text, with the assistant header at the end when add_generation_prompt.
  // NONE concatenates the contents.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 private:
  ChatFormat format_ = ChatFormat::NONE;
  std::string default_system_;  // injected when the first message is not a system one
  // Llama 3.1/3.2: a system turn "Cutting Knowledge Date: ...\nToday Date: {date}\n\n"
  // is always emitted (holding the system message, if any).
  bool knowledge_date_system_ = false;
  std::string date_string_;
};

}  // namespace kvp
