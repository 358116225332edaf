// printable(): file-provided text quoted in an error message is escaped and cut short;
// edit_distance(): the Levenshtein distance behind "did you mean" suggestions.
#include "core/text.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <string_view>

namespace kvp {
namespace {

TEST(Printable, KeepsPrintableAsciiAndWellFormedUtf8) {
  EXPECT_EQ(printable("blk.0.attn_q.weight"), "blk.0.attn_q.weight");
  EXPECT_EQ(printable("sm\xc3\xb6l \xe2\x82\xac \xf0\x9f\x98\x80"),
            "sm\xc3\xb6l \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(printable(""), "");
}

TEST(Printable, EscapesControlsAndInvalidUtf8ByteByByte) {
  EXPECT_EQ(printable("a\x1b[2Jb"), "a\\x1b[2Jb");
  EXPECT_EQ(printable(std::string("\0\t\n\r\x7f", 5)), "\\x00\\x09\\x0a\\x0d\\x7f");
  EXPECT_EQ(printable("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(printable("\xc3"), "\\xc3");                             // truncated sequence
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a UTF-16 surrogate
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  EXPECT_EQ(printable("\xe2\x82x"), "\\xe2\\x82x");                  // a continuation byte missing
}

// Code points a terminal acts on, or that reorder the rest of the line.
TEST(Printable, EscapesC1AndBidiControls) {
  EXPECT_EQ(printable("\xc2\x9b"
                      "31m"),
            "\\xc2\\x9b31m");                                   // U+009B, the 8-bit CSI
  EXPECT_EQ(printable("x\xe2\x80\xaey"), "x\\xe2\\x80\\xaey");  // U+202E
  EXPECT_EQ(printable("\xe2\x81\xa6"), "\\xe2\\x81\\xa6");      // U+2066
  EXPECT_EQ(printable("\xe2\x80\xa8"), "\\xe2\\x80\\xa8");      // U+2028 line separator
}

TEST(Printable, CutsAtTheLimitOnACharacterBoundary) {
  EXPECT_EQ(printable(std::string(80, 'a')), std::string(80, 'a'));
  EXPECT_EQ(printable(std::string(81, 'a')), std::string(80, 'a') + "...");
  EXPECT_EQ(printable("abc\xc3\xa9", 4), "abc...");  // é would straddle the limit
  EXPECT_EQ(printable(std::string(1 << 20, 'z'), 10), std::string(10, 'z') + "...");
}

TEST(Printable, TailKeepsTheEnd) {
  EXPECT_EQ(printable_tail("short"), "short");
  EXPECT_EQ(printable_tail(std::string(100, 'a') + "END", 10), "..." + std::string(7, 'a') + "END");
  // The cut lands inside é: the tail starts at the next character.
  EXPECT_EQ(printable_tail("\xc3\xa9xyz", 4), "...xyz");
  EXPECT_EQ(printable_tail(std::string(50, 'a') + "\x1b", 3), "...aa\\x1b");
}

TEST(EditDistance, CountsSingleByteEdits) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("knorm", "knorm"), 0u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);  // insertions
  EXPECT_EQ(edit_distance("abc", ""), 3u);  // deletions
  EXPECT_EQ(edit_distance("snapkv", "snakv"), 1u);
  EXPECT_EQ(edit_distance("knorm", "knrom"), 2u);  // a transposition is two edits
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("tova", "chunkkv"), 7u);
  EXPECT_EQ(edit_distance("\xc3\xa9", "e"), 2u);  // bytes, not characters
}

TEST(EditDistance, IsSymmetricAndBoundedByTheLongerLength) {
  const char* const words[] = {"",     "a",    "generate",      "genrate",           "presses",
                               "eval", "help", "streaming_llm", "expected_attention"};
  for (const char* a : words)
    for (const char* b : words) {
      const std::string_view x(a), y(b);
      EXPECT_EQ(edit_distance(x, y), edit_distance(y, x)) << a << " / " << b;
      EXPECT_LE(edit_distance(x, y), std::max(x.size(), y.size())) << a << " / " << b;
      EXPECT_GE(edit_distance(x, y),
                x.size() > y.size() ? x.size() - y.size() : y.size() - x.size());
    }
}

}  // namespace
}  // namespace kvp
