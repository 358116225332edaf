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
// The message is built by the caller even when the check passes: keep check() off hot loops
// (or test the condition first there).
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace kvp
