#pragma once
// Evaluation rows (a context, one question, its reference answers) from the built-in
// RULER-style generator or a JSONL file, and RULER's string-match scoring.
#include <cstdint>
#include <string>
#include <vector>

namespace kvp {

struct EvalRow {
  std::string task;
  std::string context;
  std::string question;
  std::string answer_prefix;
  std::vector<std::string> answers;
  int max_new_tokens = 0;  // 0: the run's default
  // "all": the fraction of references found (RULER's string_match_all); "any": 1 when any
  // reference is found (string_match_part, for qa-style rows).
  std::string metric = "all";
  int64_t line = 0;  // 1-based JSONL line, 0 for generated rows
};

// Score of one answer in [0, 1]: references found case-insensitively as substrings.
double score_answer(const std::string& answer, const std::vector<std::string>& references,
                    const std::string& metric);

// Caps on a dataset, checked while it is read: a wrong path (/dev/zero, a multi-gigabyte log
// without newlines) fails at the cap instead of growing until memory runs out.
struct JsonlLimits {
  uint64_t max_line_bytes = uint64_t{16} << 20;  // one row; a 1M-token context is about 4 MiB
  uint64_t max_total_bytes = uint64_t{1} << 30;  // the whole file: every row is kept in memory
};

// Reads a JSONL file: one object per non-blank line with "context", "question", "answers"
// (a non-empty list of strings) and optionally "answer_prefix", "task" (default "jsonl"),
// "max_new_tokens" (positive integer), "metric" ("all" or "any"; default "any" for tasks
// whose name starts with "qa", else "all"). Throws Error naming the first bad line, or the
// cap a line or the file exceeds.
std::vector<EvalRow> load_jsonl(const std::string& path, const JsonlLimits& limits = {});
std::vector<EvalRow> parse_jsonl(const std::string& text, const std::string& source,
                                 const JsonlLimits& limits = {});

// A stable 64-bit FNV-1a hash, as hex, for resumable result keys.
std::string stable_hash(const std::string& text);

}  // namespace kvp
