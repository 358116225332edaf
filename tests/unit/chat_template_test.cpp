#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvp {
namespace {

using Messages = std::vector<ChatMessage>;

// SmolLM2-Instruct's template as stored in its GGUF (real newlines inside the literals).
const std::string kSmolLM2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

// A Qwen2.5-shaped template: Jinja escapes (\n as backslash-n), a tools branch whose
// system literal ends right after the header, then the default prompt in its own literal.
const std::string kQwenLike = R"({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are Qwen.' }}{%- endif %}
    {{- "\n\n# Tools<|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You\'re "helpful".<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %})";

// Llama 3 (8B Instruct) shape.
const std::string kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

// Llama 3.1 shape: an always-present system turn with the knowledge and today's date.
const std::string kLlama31 = R"({{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }})";

TEST(ChatTemplate, DetectsFamilies) {
  EXPECT_EQ(ChatTemplate::detect(kSmolLM2).format(), ChatFormat::CHATML);
  EXPECT_EQ(ChatTemplate::detect(kQwenLike).format(), ChatFormat::CHATML);
  EXPECT_EQ(ChatTemplate::detect(kLlama3).format(), ChatFormat::LLAMA3);
  EXPECT_EQ(ChatTemplate::detect(kLlama31).format(), ChatFormat::LLAMA3);
  EXPECT_EQ(ChatTemplate::detect("").format(), ChatFormat::NONE);
  EXPECT_EQ(ChatTemplate::detect("[INST] {{ messages[0]['content'] }} [/INST]").format(),
            ChatFormat::NONE);
  EXPECT_EQ(ChatTemplate::none().format(), ChatFormat::NONE);
  EXPECT_EQ(ChatTemplate::detect(kSmolLM2).name(), "chatml");
  EXPECT_EQ(ChatTemplate::detect(kLlama3).name(), "llama3");
  EXPECT_EQ(ChatTemplate::none().name(), "none");
}

TEST(ChatTemplate, SmolLM2InjectsItsDefaultSystemPrompt) {
  const ChatTemplate t = ChatTemplate::detect(kSmolLM2);
  const std::string sys =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\n";
  EXPECT_EQ(t.render({{"user", "Hi"}}, true),
            sys + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.render({{"user", "Hi"}}, false), sys + "<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_EQ(t.render({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", " Yo "}}, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n Yo <|im_end|>\n<|im_start|>assistant\n");
  // No messages: the loop never runs, so no system prompt either.
  EXPECT_EQ(t.render({}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplate, QwenStyleEscapedDefaultSystemPrompt) {
  const ChatTemplate t = ChatTemplate::detect(kQwenLike);
  EXPECT_EQ(t.render({{"user", "2+2?"}}, true),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You're "
            "\"helpful\".<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, PlainChatMLHasNoDefaultSystemPrompt) {
  const ChatTemplate t = ChatTemplate::detect(
      "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + "
      "'<|im_end|>\n'}}{% endfor %}");
  EXPECT_EQ(t.render({{"user", "x"}}, false), "<|im_start|>user\nx<|im_end|>\n");
}

TEST(ChatTemplate, Llama3TrimsContent) {
  const ChatTemplate t = ChatTemplate::detect(kLlama3);
  EXPECT_EQ(t.render({{"system", "  Be brief.\n"}, {"user", "\tHi there \n\n"}}, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(t.render({{"user", "Hi"}}, false),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(ChatTemplate, Llama31AlwaysHasADatedSystemTurn) {
  const ChatTemplate t = ChatTemplate::detect(kLlama31);
  const std::string head =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
      "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
  EXPECT_EQ(t.render({{"user", "Hi"}}, true),
            head +
                "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(t.render({{"system", " Terse. "}, {"user", "Hi"}}, false),
            head + "Terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(ChatTemplate, NoneConcatenates) {
  const ChatTemplate t = ChatTemplate::none();
  EXPECT_EQ(t.render({{"system", "a "}, {"user", "b"}}, true), "a b");
  EXPECT_EQ(t.render({}, true), "");
}

}  // namespace
}  // namespace kvp
