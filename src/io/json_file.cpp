#include "io/json_file.h"

#include "core/error.h"
#include "io/mapped_file.h"

namespace kvp {

nlohmann::json read_json_file(const std::string& path) {
  const auto file = MappedFile::open(path);  // names the path and the OS reason on failure
  const char* begin = reinterpret_cast<const char*>(file->data());
  try {
    return nlohmann::json::parse(begin, begin + file->size());
  } catch (const nlohmann::json::exception& e) {
    // parse_error's message carries the position: "parse error at line 3, column 7: ...".
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

}  // namespace kvp
