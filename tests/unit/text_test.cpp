// printable(): file-provided text quoted in an error message is escaped and cut short.
#include "core/text.h"

#include <gtest/gtest.h>

#include <string>

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

}  // namespace
}  // namespace kvp
