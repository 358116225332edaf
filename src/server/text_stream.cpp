#include "server/text_stream.h"

#include <algorithm>

namespace kvp::server {

size_t first_stop(const std::string& text, const std::vector<std::string>& stops) {
  size_t first = std::string::npos;
  for (const std::string& s : stops) first = std::min(first, text.find(s));
  return first;
}

namespace {

// Bytes at the end of `text` that start a UTF-8 sequence still missing continuation bytes.
size_t incomplete_utf8_tail(const std::string& text) {
  const size_t n = text.size();
  for (size_t back = 1; back <= std::min<size_t>(n, 3); ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

}  // namespace

size_t safe_prefix(const std::string& text, const std::vector<std::string>& stops) {
  size_t safe = text.size() - incomplete_utf8_tail(text);
  for (const std::string& s : stops) {
    if (s.empty()) continue;
    // The longest tail of text that is a proper prefix of s.
    for (size_t k = std::min(s.size() - 1, text.size()); k > 0; --k) {
      if (text.compare(text.size() - k, k, s, 0, k) == 0) {
        safe = std::min(safe, text.size() - k);
        break;
      }
    }
  }
  return safe;
}

}  // namespace kvp::server
