#include "eval/dataset.h"

#include <cctype>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

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

std::vector<EvalRow> parse_jsonl(const std::string& text, const std::string& source) {
  std::vector<EvalRow> rows;
  std::istringstream in(text);
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (blank(line)) continue;
    const std::string where = source + " line " + std::to_string(n) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + "not valid JSON (" + e.what() + ")");
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
            where + "\"max_new_tokens\" must be a positive integer");
      r.max_new_tokens = m.get<int>();
    }
    r.metric = r.task.rfind("qa", 0) == 0 ? "any" : "all";
    if (j.contains("metric")) {
      const std::string m = need_string("metric", false);
      check(m == "all" || m == "any",
            where + "\"metric\" must be \"all\" or \"any\", got \"" + m + "\"");
      r.metric = m;
    }
    for (const auto& [key, value] : j.items()) {
      static const char* known[] = {"context", "question",       "answers", "answer_prefix",
                                    "task",    "max_new_tokens", "metric"};
      bool ok = false;
      for (const char* k : known) ok = ok || key == k;
      check(ok, where + "unknown field \"" + key +
                    "\" (known: context, question, answers, answer_prefix, task, max_new_tokens, "
                    "metric)");
    }
    rows.push_back(std::move(r));
  }
  check(!rows.empty(), source + ": no rows (expected one JSON object per line)");
  return rows;
}

std::vector<EvalRow> load_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(static_cast<bool>(in), "cannot read dataset file '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_jsonl(ss.str(), path);
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
