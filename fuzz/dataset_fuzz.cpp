// Fuzz target: an eval dataset in JSONL (one row per line), read from a file as `eval
// --dataset FILE` reads it. Rows that load are scored the way the eval runner scores an
// answer, and hashed for their resumable result keys.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "eval/dataset.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const kvp::fuzz::TempDir dir;
  const std::string path = dir.write("data.jsonl", {reinterpret_cast<const char*>(data), size});
  try {
    for (const kvp::EvalRow& row : kvp::load_jsonl(path)) {
      kvp::score_answer(row.context, row.answers, row.metric);
      kvp::stable_hash(row.context + row.question);
    }
  } catch (const kvp::Error&) {
  }
  return 0;
}
