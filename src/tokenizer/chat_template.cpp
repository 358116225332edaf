// Chat templates: the known families recognised from the stored Jinja text, rendered in C++.
#include "tokenizer/chat_template.h"

#include <string>
#include <string_view>

namespace kvp {

namespace {

// Python's str.strip() for the whitespace that matters here (Jinja's |trim).
std::string trim(std::string_view s) {
  constexpr std::string_view ws = " \t\n\r\f\v";
  const size_t begin = s.find_first_not_of(ws);
  if (begin == std::string_view::npos) return {};
  const size_t end = s.find_last_not_of(ws);
  return std::string(s.substr(begin, end - begin + 1));
}

// Undoes the escapes of a Jinja string literal (\n, \t, \r, \\, \', \").
std::string unescape_jinja(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out.push_back(s[i]);
      continue;
    }
    const char c = s[++i];
    switch (c) {
      case 'n':
        out.push_back('\n');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case '\\':
      case '\'':
      case '"':
        out.push_back(c);
        break;
      default:
        out.push_back('\\');
        out.push_back(c);
    }
  }
  return out;
}

// The default system prompt of a ChatML template: the first string literal of the form
// '<|im_start|>system\n{prompt}<|im_end|>...' with a non-empty prompt ("" when none).
std::string extract_default_system(const std::string& t) {
  for (std::string_view header : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    for (size_t pos = t.find(header); pos != std::string::npos; pos = t.find(header, pos + 1)) {
      // The literal's opening quote is the nearest quote before the header.
      const size_t open = t.find_last_of("'\"", pos);
      if (open == std::string::npos) continue;
      const char quote = t[open];
      size_t close = pos + header.size();
      while (close < t.size() && t[close] != quote) close += t[close] == '\\' ? 2 : 1;
      if (close >= t.size()) continue;
      const std::string_view body(t.data() + pos + header.size(), close - pos - header.size());
      const size_t end = body.find("<|im_end|>");
      if (end == std::string_view::npos || end == 0) continue;
      return unescape_jinja(body.substr(0, end));
    }
  }
  return {};
}

// Llama 3.1 / 3.2 put "Cutting Knowledge Date: ...\nToday Date: {date_string}" in a system
// turn they always emit; the date defaults to the literal set in the template.
std::string extract_date_string(const std::string& t) {
  std::string date;
  for (std::string_view key : {"set date_string = \"", "set date_string = '"}) {
    for (size_t pos = t.find(key); pos != std::string::npos; pos = t.find(key, pos + 1)) {
      const size_t start = pos + key.size();
      const size_t end = t.find(key.back(), start);
      if (end != std::string::npos) date = t.substr(start, end - start);
    }
  }
  return date.empty() ? "26 Jul 2024" : date;
}

}  // namespace

ChatTemplate ChatTemplate::detect(const std::string& template_text) {
  ChatTemplate t;
  if (template_text.find("<|im_start|>") != std::string::npos) {
    t.format_ = ChatFormat::CHATML;
    t.default_system_ = extract_default_system(template_text);
  } else if (template_text.find("<|start_header_id|>") != std::string::npos) {
    t.format_ = ChatFormat::LLAMA3;
    if (template_text.find("Cutting Knowledge Date") != std::string::npos) {
      t.knowledge_date_system_ = true;
      t.date_string_ = extract_date_string(template_text);
    }
  }
  return t;
}

ChatTemplate ChatTemplate::none() {
  return ChatTemplate();
}

std::string ChatTemplate::name() const {
  switch (format_) {
    case ChatFormat::CHATML:
      return "chatml";
    case ChatFormat::LLAMA3:
      return "llama3";
    case ChatFormat::NONE:
      break;
  }
  return "none";
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt) const {
  std::string out;
  switch (format_) {
    case ChatFormat::NONE:
      for (const ChatMessage& m : messages) out += m.content;
      return out;

    case ChatFormat::CHATML:
      if (!default_system_.empty() && !messages.empty() && messages[0].role != "system")
        out += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
      for (const ChatMessage& m : messages)
        out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;

    case ChatFormat::LLAMA3: {
      auto turn = [&](const std::string& role, const std::string& content) {
        out += "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + content + "<|eot_id|>";
      };
      out += "<|begin_of_text|>";
      size_t first = 0;
      if (knowledge_date_system_) {
        std::string system;
        if (!messages.empty() && messages[0].role == "system") {
          system = trim(messages[0].content);
          first = 1;
        }
        turn("system", "Cutting Knowledge Date: December 2023\nToday Date: " + date_string_ +
                           "\n\n" + system);
      }
      for (size_t i = first; i < messages.size(); ++i)
        turn(messages[i].role, trim(messages[i].content));
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    }
  }
  return out;
}

}  // namespace kvp
