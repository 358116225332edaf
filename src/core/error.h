#pragma once
// One exception type for every user-facing failure: bad files, bad parameters, bad requests.
// The command line catches it, prints the message and exits non-zero.
#include <stdexcept>
#include <string>

namespace kvp {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws Error(message) when condition is false. Used by parsers on every length and offset.
// A built message (a std::string) is built by the caller even when the check passes: in hot
// loops test the condition first, or pass a literal, which costs nothing until it fails.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}
inline void check(bool condition, const char* message) {
  if (!condition) throw Error(message);
}

}  // namespace kvp
