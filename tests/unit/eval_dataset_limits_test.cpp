// The JSONL dataset reader against hostile files: an over-long line is refused at the cap
// without being read into memory whole, and every message is one short, printable line.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <new>
#include <string>

#include "core/error.h"
#include "eval/dataset.h"
#include "support/temp_dir.h"

// The largest single allocation made while tracking is on: this test program's operator new
// records it, so a test can tell that a reader never held a whole line.
namespace {
std::atomic<bool> g_tracking{false};
std::atomic<size_t> g_largest{0};
}  // namespace

void* operator new(size_t n) {
  if (g_tracking.load(std::memory_order_relaxed)) {
    size_t seen = g_largest.load(std::memory_order_relaxed);
    while (n > seen && !g_largest.compare_exchange_weak(seen, n)) {
    }
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// A replacement operator delete frees what the replacement operator new took from malloc;
// GCC 12 at -O2 sees only `new T` meeting free() and warns of a mismatch.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace kvp {
namespace {

namespace fs = std::filesystem;

const std::string kGood = R"({"context": "c", "question": "q", "answers": ["a"]})";

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

size_t raw_bytes(const std::string& msg) {
  size_t n = 0;
  for (char c : msg) n += (c < 0x20 || c >= 0x7f) ? 1 : 0;
  return n;
}

class EvalDatasetLimits : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test::make_test_dir("kvp_dataset_limits_"); }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// Line 3 opens a string and never ends: 24 MiB without a newline.
TEST_F(EvalDatasetLimits, OverLongLineIsRefusedAtTheCapWithoutReadingItWhole) {
  const std::string path = (dir_ / "long.jsonl").string();
  {
    std::ofstream out(path, std::ios::binary);
    out << kGood << "\n"
        << kGood << "\n"
        << R"({"context": ")";
    const std::string mib(1 << 20, 'a');
    for (int i = 0; i < 24; ++i) out << mib;
  }
  g_largest = 0;
  g_tracking = true;
  const std::string msg = error_of([&] { load_jsonl(path); });
  g_tracking = false;
  EXPECT_NE(msg.find(path + " line 3 is longer than the 16 MiB cap"), std::string::npos)
      << msg.substr(0, 300);
  EXPECT_LT(msg.size(), 500u) << msg.substr(0, 300);
  EXPECT_LT(g_largest.load(), size_t{20} << 20) << "the reader held most of the line at once";
}

TEST_F(EvalDatasetLimits, DevZeroIsRefusedAtTheLineCap) {
  if (!fs::exists("/dev/zero")) GTEST_SKIP() << "no /dev/zero";
  const std::string msg = error_of([] { load_jsonl("/dev/zero"); });
  EXPECT_NE(msg.find("/dev/zero line 1 is longer than the 16 MiB cap"), std::string::npos) << msg;
}

TEST_F(EvalDatasetLimits, DirectoryIsNamedAsSuch) {
  const std::string msg = error_of([&] { load_jsonl(dir_.string()); });
  EXPECT_NE(msg.find(dir_.string() + ": is a directory"), std::string::npos) << msg;
}

// The whole file is capped too (rows are all held in memory); small caps keep the test fast.
TEST_F(EvalDatasetLimits, FileLargerThanTheCapIsRefused) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += kGood + "\n";
  const JsonlLimits limits{.max_line_bytes = 1024, .max_total_bytes = 4096};
  EXPECT_NE(error_of([&] {
              parse_jsonl(text, "d.jsonl", limits);
            }).find("d.jsonl is larger than the 4 KiB cap for a dataset"),
            std::string::npos);
  EXPECT_EQ(parse_jsonl(text, "d.jsonl", {.max_line_bytes = 1024, .max_total_bytes = 8192}).size(),
            100u);
  EXPECT_NE(error_of([&] {
              parse_jsonl(kGood + "\n" + kGood, "d.jsonl", {.max_line_bytes = 40});
            }).find("d.jsonl line 1 is longer than the 40 bytes cap"),
            std::string::npos);
}

// nlohmann's parse error ends with the whole token it read: here 100 KB of one string.
TEST_F(EvalDatasetLimits, ParseErrorsQuoteAShortExcerpt) {
  const std::string line = R"({"context": ")" + std::string(100000, 'b') + "\x01\xff";
  const std::string msg = error_of([&] { parse_jsonl(kGood + "\n" + line + "\n", "d.jsonl"); });
  EXPECT_NE(msg.find("d.jsonl line 2: not valid JSON"), std::string::npos) << msg.substr(0, 300);
  EXPECT_LT(msg.size(), 500u) << msg.substr(0, 300);
  EXPECT_EQ(raw_bytes(msg), 0u) << msg.substr(0, 300);
}

TEST_F(EvalDatasetLimits, FileTextInMessagesIsEscaped) {
  const std::string base = R"({"context": "c", "question": "q", "answers": ["a"], )";
  std::string msg = error_of([&] { parse_jsonl(base + R"("\u001b[31mx": 1})", "d.jsonl"); });
  EXPECT_NE(msg.find("unknown field \"\\x1b[31mx\""), std::string::npos) << msg;
  EXPECT_EQ(raw_bytes(msg), 0u) << msg;
  msg = error_of([&] { parse_jsonl(base + R"("metric": "\u009b2J"})", "d.jsonl"); });
  EXPECT_NE(msg.find("got \"\\xc2\\x9b2J\""), std::string::npos) << msg;
  msg = error_of(
      [&] { parse_jsonl(base + R"("metric": ")" + std::string(5000, 'm') + "\"}", "d.jsonl"); });
  EXPECT_LT(msg.size(), 500u) << msg.substr(0, 300);
}

}  // namespace
}  // namespace kvp
