#include "core/text.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace kvp {

namespace {

// Length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0 when the bytes there are not one.
size_t utf8_length(std::string_view s, size_t i, uint32_t* code_point) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  const uint8_t b0 = byte(0);
  // Lead byte: the sequence length, its payload bits and the smallest code point it may encode.
  const size_t n = b0 >= 0xC2 && b0 <= 0xDF   ? 2
                   : b0 >= 0xE0 && b0 <= 0xEF ? 3
                   : b0 >= 0xF0 && b0 <= 0xF4 ? 4
                                              : 0;
  if (n == 0 || i + n > s.size()) return 0;
  static constexpr uint32_t kPayload[] = {0, 0, 0x1F, 0x0F, 0x07};
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  uint32_t cp = b0 & kPayload[n];
  const uint32_t min = kMin[n];
  for (size_t k = 1; k < n; ++k) {
    if ((byte(k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  *code_point = cp;
  return n;
}

// Code points a terminal acts on or that reorder the line: C1 controls, the Unicode line and
// paragraph separators, and the bidirectional marks, embeddings, overrides and isolates.
bool is_format_control(uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || cp == 0x200E || cp == 0x200F || cp == 0x2028 ||
         cp == 0x2029 || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

void append_hex(std::string& out, std::string_view bytes) {
  static const char digits[] = "0123456789abcdef";
  for (char c : bytes) {
    const auto b = static_cast<uint8_t>(c);
    out += "\\x";
    out += digits[b >> 4];
    out += digits[b & 15];
  }
}

}  // namespace

std::string printable(std::string_view text, size_t max_bytes) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const auto b = static_cast<uint8_t>(text[i]);
    uint32_t cp = 0;
    size_t n = b < 0x80 ? 1 : utf8_length(text, i, &cp);
    const bool valid = n > 0;
    if (!valid) n = 1;
    if (i + n > max_bytes) break;
    const std::string_view ch = text.substr(i, n);
    if (n == 1 && b >= 0x20 && b < 0x7F)
      out += static_cast<char>(b);
    else if (valid && n > 1 && !is_format_control(cp))
      out.append(ch);
    else
      append_hex(out, ch);
    i += n;
  }
  if (i < text.size()) out += "...";
  return out;
}

std::string printable_tail(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return printable(text, max_bytes);
  size_t start = text.size() - max_bytes;
  // Start on a character boundary: skip at most three continuation bytes.
  for (int k = 0;
       k < 3 && start < text.size() && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80; ++k)
    ++start;
  return "..." + printable(text.substr(start), max_bytes);
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] =
          std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace kvp
