#pragma once
// Streaming text out of a growing answer: what may be sent now, and where a stop string cuts.
#include <string>
#include <vector>

namespace kvp::server {

// The first byte of the earliest stop string in `text`; npos when none occurs.
size_t first_stop(const std::string& text, const std::vector<std::string>& stops);

// How much of `text` can be sent without taking anything back later: it ends before a UTF-8
// sequence the next token may complete, and before a tail that could begin a stop string.
size_t safe_prefix(const std::string& text, const std::vector<std::string>& stops);

}  // namespace kvp::server
