#include "eval/dataset.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/text.h"
#include "io/json_file.h"
#include "io/read_file.h"

namespace kvp {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool blank(const std::string& s) {
  for (char c : s) {
    if (!std::isspace(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

double score_answer(const std::string& answer, const std::vector<std::string>& references,
                    const std::string& metric) {
  if (references.empty()) return 0;
  const std::string a = lower(answer);
  int found = 0;
  for (const auto& r : references) found += a.find(lower(r)) != std::string::npos ? 1 : 0;
  if (metric == "any") return found > 0 ? 1.0 : 0.0;
  return static_cast<double>(found) / static_cast<double>(references.size());
}

namespace {

// Splits a stream into lines while holding at most one of them, and stops at a cap as soon as
// it is crossed: an unterminated line is never read whole.
class LineReader {
 public:
  LineReader(std::istream& in, const std::string& source, const JsonlLimits& limits)
      : in_(in), source_(source), limits_(limits), buffer_(64 << 10) {}

  // The next line, without "\n" or "\r\n"; false at the end of the stream.
  bool next(std::string& line) {
    line.clear();
    if (pos_ == end_ && !refill()) return false;
    ++number_;
    for (;;) {
      const char* begin = buffer_.data() + pos_;
      const auto* newline = static_cast<const char*>(std::memchr(begin, '\n', end_ - pos_));
      const size_t n = newline ? static_cast<size_t>(newline - begin) : end_ - pos_;
      if (line.size() + n > limits_.max_line_bytes)
        throw Error(source_ + " line " + std::to_string(number_) + " is longer than the " +
                    format_byte_size(limits_.max_line_bytes) +
                    " cap (one row is one line of JSON)");
      grow(line, n);
      line.append(begin, n);
      pos_ += n + (newline ? 1 : 0);
      if (newline || (pos_ == end_ && !refill())) break;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }

  int64_t number() const { return number_; }

 private:
  // Room for `more` bytes, never more than the cap: std::string's own doubling would allocate
  // up to twice the cap for a line that is then refused. A fresh string gets exactly what it
  // reserves.
  void grow(std::string& line, size_t more) const {
    if (line.size() + more <= line.capacity()) return;
    const size_t want = std::max(line.size() + more, 2 * line.capacity());
    std::string bigger;
    bigger.reserve(static_cast<size_t>(std::min<uint64_t>(want, limits_.max_line_bytes)));
    bigger.append(line);
    line.swap(bigger);
  }

  bool refill() {
    in_.read(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    if (in_.bad()) throw Error(source_ + ": read error");
    pos_ = 0;
    end_ = static_cast<size_t>(in_.gcount());
    total_ += end_;
    if (total_ > limits_.max_total_bytes)
      throw Error(source_ + " is larger than the " + format_byte_size(limits_.max_total_bytes) +
                  " cap for a dataset (split it into several files)");
    return end_ > 0;
  }

  std::istream& in_;
  const std::string& source_;
  const JsonlLimits& limits_;
  std::vector<char> buffer_;
  size_t pos_ = 0, end_ = 0;
  uint64_t total_ = 0;
  int64_t number_ = 0;
};

// One row from one non-blank line; where is "<source> line N: ".
EvalRow parse_row(const std::string& line, int64_t n, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + "not valid JSON (" + json_error_message(e) + ")");
  }
  check(j.is_object(), where + "expected a JSON object");
  auto need_string = [&](const char* key, bool required) -> std::string {
    if (!j.contains(key)) {
      check(!required, where + "missing \"" + key + "\"");
      return "";
    }
    check(j[key].is_string(), where + "\"" + key + "\" must be a string");
    return j[key].get<std::string>();
  };
  EvalRow r;
  r.line = n;
  r.context = need_string("context", true);
  check(!blank(r.context), where + "\"context\" is empty");
  r.question = need_string("question", true);
  check(!blank(r.question), where + "\"question\" is empty");
  r.answer_prefix = need_string("answer_prefix", false);
  r.task = j.contains("task") ? need_string("task", false) : "jsonl";
  check(!r.task.empty(), where + "\"task\" is empty");
  check(j.contains("answers"), where + "missing \"answers\"");
  const auto& a = j["answers"];
  check(a.is_array() && !a.empty(), where + "\"answers\" must be a non-empty list of strings");
  for (const auto& s : a) {
    check(s.is_string(), where + "\"answers\" must be a non-empty list of strings");
    check(!s.get<std::string>().empty(), where + "\"answers\" contains an empty string");
    r.answers.push_back(s.get<std::string>());
  }
  if (j.contains("max_new_tokens")) {
    const auto& m = j["max_new_tokens"];
    check(m.is_number_integer() && m.get<int64_t>() > 0 && m.get<int64_t>() <= (1 << 20),
          where + "\"max_new_tokens\" must be a positive integer up to 1048576, got " +
              printable(m.dump()));
    r.max_new_tokens = m.get<int>();
  }
  r.metric = r.task.rfind("qa", 0) == 0 ? "any" : "all";
  if (j.contains("metric")) {
    const std::string m = need_string("metric", false);
    check(m == "all" || m == "any",
          where + "\"metric\" must be \"all\" or \"any\", got \"" + printable(m) + "\"");
    r.metric = m;
  }
  for (const auto& [key, value] : j.items()) {
    static const char* known[] = {"context", "question",       "answers", "answer_prefix",
                                  "task",    "max_new_tokens", "metric"};
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    check(ok, where + "unknown field \"" + printable(key) +
                  "\" (known: context, question, answers, answer_prefix, task, max_new_tokens, "
                  "metric)");
  }
  return r;
}

std::vector<EvalRow> read_rows(std::istream& in, const std::string& source,
                               const JsonlLimits& limits) {
  std::vector<EvalRow> rows;
  LineReader reader(in, source, limits);
  std::string line;
  while (reader.next(line)) {
    if (blank(line)) continue;
    const int64_t n = reader.number();
    rows.push_back(parse_row(line, n, source + " line " + std::to_string(n) + ": "));
  }
  check(!rows.empty(), source + ": no rows (expected one JSON object per line)");
  return rows;
}

}  // namespace

std::vector<EvalRow> parse_jsonl(const std::string& text, const std::string& source,
                                 const JsonlLimits& limits) {
  std::istringstream in(text);
  return read_rows(in, source, limits);
}

std::vector<EvalRow> load_jsonl(const std::string& path, const JsonlLimits& limits) {
  std::error_code ec;
  // A directory opens as a stream that reads nothing: it would pass for an empty file.
  check(!std::filesystem::is_directory(path, ec), path + ": is a directory, not a dataset file");
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), "cannot read dataset file '" + path + "'");
  return read_rows(in, path, limits);
}

std::string stable_hash(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace kvp
