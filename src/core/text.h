#pragma once
// Text helpers: quoting file text in error messages, and the edit distance.
//
// File-provided text (tensor names, tokens, merges, JSON excerpts) quoted in an error message.
// A hostile or corrupt file must not be able to write terminal escape sequences, bidi overrides
// or megabytes of text into the one-line `error: ...`, so every such quote goes through here.
#include <cstddef>
#include <string>
#include <string_view>

namespace kvp {

// How much of a file's text an error message quotes by default.
inline constexpr size_t kExcerptBytes = 80;

// The first max_bytes bytes of text, with "..." when cut. Printable ASCII and well-formed UTF-8
// are kept; control bytes, C1 controls, line separators, bidi controls and invalid UTF-8
// become \xNN, byte by byte. A character is never split at the cut.
std::string printable(std::string_view text, size_t max_bytes = kExcerptBytes);

// The same for the last max_bytes bytes, with a leading "..." when cut: where a parser stopped
// is at the end of what it read.
std::string printable_tail(std::string_view text, size_t max_bytes = kExcerptBytes);

// Levenshtein distance between a and b (insertions, deletions and substitutions of single
// bytes, each costing 1), for "did you mean" suggestions.
size_t edit_distance(std::string_view a, std::string_view b);

}  // namespace kvp
