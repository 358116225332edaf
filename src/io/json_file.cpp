#include "io/json_file.h"

#include <string_view>

#include "core/error.h"
#include "core/text.h"
#include "io/mapped_file.h"

namespace kvp {

nlohmann::json read_json_file(const std::string& path) {
  const auto file = MappedFile::open(path);  // names the path and the OS reason on failure
  const char* begin = reinterpret_cast<const char*>(file->data());
  try {
    return nlohmann::json::parse(begin, begin + file->size());
  } catch (const nlohmann::json::exception& e) {
    // parse_error's message carries the position: "parse error at line 3, column 7: ...".
    throw Error(path + ": invalid JSON: " + json_error_message(e));
  }
}

std::string json_error_message(const nlohmann::json::exception& e) {
  // "...: <reason>; last read: '<token>'" and maybe "; expected <token kind>" after it.
  const std::string_view what = e.what();  // may be megabytes: not copied
  const std::string_view marker = "; last read: '";
  const size_t start = what.find(marker);
  if (start == std::string_view::npos) return printable(what, 4 * kExcerptBytes);
  const size_t token = start + marker.size();
  // The library appends "; expected" last, so its last occurrence is the real one even when
  // the token itself contains the same text.
  size_t end = what.rfind("'; expected ");
  if (end == std::string_view::npos || end < token)
    end = what.size() - (what.back() == '\'' ? 1 : 0);
  return printable(what.substr(0, token), 4 * kExcerptBytes) +
         printable_tail(what.substr(token, end - token)) +
         printable(what.substr(end), kExcerptBytes);
}

}  // namespace kvp
