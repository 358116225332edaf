// JSON files and the memory mapping under every reader: errors name the path and the reason.
#include "io/json_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "core/error.h"
#include "io/mapped_file.h"

namespace kvp {
namespace {

namespace fs = std::filesystem;

class IoFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("kvp_json_test_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add);
    fs::remove_all(dir_);
  }
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  static std::string error_of(const std::function<void()>& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  }
  fs::path dir_;
};

TEST_F(IoFileTest, MappedFileMapsTheWholeFile) {
  const std::string text = "hello, mapping\n";
  const std::string path = write("a.txt", text);
  auto f = MappedFile::open(path);
  ASSERT_EQ(f->size(), text.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->data()), f->size()), text);
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f->data()) % 4096, 0u);  // page-aligned mapping
}

TEST_F(IoFileTest, MappedFileErrorsNamePathAndReason) {
  const std::string missing = (dir_ / "missing.bin").string();
  std::string msg = error_of([&] { MappedFile::open(missing); });
  EXPECT_EQ(msg.rfind(missing, 0), 0u) << msg;
  EXPECT_NE(msg.find("No such file or directory"), std::string::npos) << msg;

  msg = error_of([&] { MappedFile::open(dir_.string()); });
  EXPECT_EQ(msg.rfind(dir_.string(), 0), 0u) << msg;
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;

  const std::string empty = write("empty.bin", "");
  msg = error_of([&] { MappedFile::open(empty); });
  EXPECT_EQ(msg.rfind(empty, 0), 0u) << msg;
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;

  msg = error_of([&] { MappedFile::open("/dev/null"); });
  EXPECT_EQ(msg.rfind("/dev/null", 0), 0u) << msg;
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;

  msg = error_of([&] { MappedFile::open(""); });
  EXPECT_NE(msg.find("empty path"), std::string::npos) << msg;

  const std::string secret = write("secret.bin", "x");
  ::chmod(secret.c_str(), 0);
  if (::geteuid() != 0) {  // root reads anything
    msg = error_of([&] { MappedFile::open(secret); });
    EXPECT_EQ(msg.rfind(secret, 0), 0u) << msg;
    EXPECT_NE(msg.find("Permission denied"), std::string::npos) << msg;
  }
}

TEST_F(IoFileTest, ReadsJson) {
  const std::string path =
      write("config.json",
            "{\"hidden_size\": 576, \"rope_theta\": 10000.0, \"tie_word_embeddings\": true,\n"
            " \"architectures\": [\"LlamaForCausalLM\"], \"name\": \"sm\\u00f6l\"}");
  const nlohmann::json j = read_json_file(path);
  EXPECT_EQ(j.at("hidden_size").get<int>(), 576);
  EXPECT_EQ(j.at("rope_theta").get<double>(), 10000.0);
  EXPECT_TRUE(j.at("tie_word_embeddings").get<bool>());
  EXPECT_EQ(j.at("architectures")[0].get<std::string>(), "LlamaForCausalLM");
  EXPECT_EQ(j.at("name").get<std::string>(), "sm\xc3\xb6l");
  EXPECT_EQ(read_json_file(write("n.json", "  42 \n")).get<int>(), 42);
}

TEST_F(IoFileTest, JsonErrorsNamePathAndPosition) {
  const std::string bad = write("bad.json", "{\n  \"a\": 1,\n  \"b\": [1, 2,, 3]\n}\n");
  std::string msg = error_of([&] { read_json_file(bad); });
  EXPECT_EQ(msg.rfind(bad, 0), 0u) << msg;
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3, column 14"), std::string::npos) << msg;

  const std::string truncated = write("t.json", "{\"a\": [1, 2");
  msg = error_of([&] { read_json_file(truncated); });
  EXPECT_EQ(msg.rfind(truncated, 0), 0u) << msg;
  EXPECT_NE(msg.find("line 1"), std::string::npos) << msg;

  const std::string trailing = write("trail.json", "{} x");
  msg = error_of([&] { read_json_file(trailing); });
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;

  const std::string missing = (dir_ / "nope.json").string();
  msg = error_of([&] { read_json_file(missing); });
  EXPECT_EQ(msg.rfind(missing, 0), 0u) << msg;
  EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;

  msg = error_of([&] { read_json_file(dir_.string()); });
  EXPECT_EQ(msg.rfind(dir_.string(), 0), 0u) << msg;
  EXPECT_NE(msg.find("directory"), std::string::npos) << msg;

  const std::string empty = write("empty.json", "");
  msg = error_of([&] { read_json_file(empty); });
  EXPECT_EQ(msg.rfind(empty, 0), 0u) << msg;
}

// nlohmann's message ends with the whole token it was reading: for an unterminated string in
// a large file that is megabytes. The error quotes a short, escaped excerpt instead.
TEST_F(IoFileTest, InvalidJsonQuotesAShortExcerpt) {
  const std::string path =
      write("long.json", "{\"a\": \"" + std::string(1 << 20, 'x') + "\xff\x1b[2J");
  const std::string msg = error_of([&] { read_json_file(path); });
  EXPECT_EQ(msg.rfind(path, 0), 0u) << msg.substr(0, 300);
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg.substr(0, 300);
  EXPECT_NE(msg.find("line 1, column"), std::string::npos) << msg.substr(0, 300);
  EXPECT_LT(msg.size(), 500u) << msg.substr(0, 300);
  const auto raw =
      std::count_if(msg.begin(), msg.end(), [](char c) { return c < 0x20 || c >= 0x7f; });
  EXPECT_EQ(raw, 0) << msg.substr(0, 300);
}

TEST_F(IoFileTest, DeeplyNestedJsonDoesNotCrash) {
  const std::string deep = write("deep.json", std::string(200000, '[') + std::string(200000, ']'));
  EXPECT_NO_THROW(read_json_file(deep));
  const std::string open = write("open.json", std::string(200000, '['));
  EXPECT_THROW(read_json_file(open), Error);
}

}  // namespace
}  // namespace kvp
