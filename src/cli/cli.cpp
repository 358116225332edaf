#include "cli/cli.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "backend/factory.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/text.h"
#include "io/read_file.h"

namespace kvp {

namespace {

const char* kTopHelp =
    "kvpress: compress a language model's KV cache while it reads a long context, then answer\n"
    "questions from what is left.\n\n"
    "usage: kvpress <command> [options]\n\n"
    "commands:\n"
    "  generate    answer questions about a context (optionally with a compressed cache)\n"
    "  presses     list the presses and their parameters\n"
    "  eval        score presses and ratios on long-context tasks (built-in RULER-style or JSONL)\n"
    "  serve       an OpenAI-compatible HTTP server with a press per request and stored contexts\n"
    "  help        show this help, or `kvpress help <command>` for one command\n\n"
    "options: --version prints the version; -h or --help after a command shows its options\n\n"
    "The default model is SmolLM2-135M-Instruct (Q4_1 GGUF), fetched by scripts/fetch-model.sh\n"
    "into models/. Any Llama, Mistral, Qwen2 or Qwen3 GGUF file or Hugging Face directory\n"
    "works with --model.\n\n"
    "example:\n"
    "  kvpress generate --context \"The secret code is 4719. Remember it.\" \\\n"
    "                   --question \"What is the secret code?\" --press snapkv --ratio 0.25\n";

}  // namespace

std::string default_model_path() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("KVPRESS_MODEL"); env && *env) return env;
  const std::string name = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::vector<fs::path> roots = {fs::current_path()};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (fs::path p = exe.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
      roots.push_back(p);
    }
  }
  for (const auto& r : roots) {
    if (fs::exists(r / name, ec)) return (r / name).string();
  }
  throw Error("no --model given and the default model was not found (" + name +
              "); run scripts/fetch-model.sh or pass --model PATH");
}

std::string read_text_argument(const std::string& value, const std::string& what) {
  if (value.empty() || value[0] != '@') return value;
  return read_file_capped(value.substr(1), what + " file", {.max_bytes = kMaxTextFileBytes});
}

int default_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(std::min(n, 64u));
}

DType parse_kv_dtype(const std::string& name) {
  if (name == "f32") return DType::F32;
  if (name == "f16") return DType::F16;
  if (name == "bf16") return DType::BF16;
  throw Error("--kv-dtype must be f32, f16 or bf16, not '" + printable(name) + "'");
}

std::string lowercase_dtype(DType dtype) {
  std::string name = dtype_name(dtype);
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

int run_cli(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "--version" || args[0] == "version")) {
    std::string devices;
    for (const std::string& d : backend_names()) devices += (devices.empty() ? "" : ", ") + d;
    std::printf("kvpress %s (devices: %s)\n", KVP_VERSION, devices.c_str());
    return 0;
  }
  // `kvpress help generate` is `kvpress generate --help`.
  if (args.size() >= 2 && args[0] == "help") {
    args.erase(args.begin());
    args.insert(args.begin() + 1, "--help");
  }
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kTopHelp, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  try {
    if (command == "generate") return cmd_generate(args);
    if (command == "presses") return cmd_presses(args);
    if (command == "eval") return cmd_eval(args);
    if (command == "serve") return cmd_serve(args);
    const std::string near = closest(command, {"generate", "presses", "eval", "serve", "help"});
    throw Error("unknown command '" + command + "'" +
                (near.empty() ? "" : " (did you mean '" + near + "'?)") + "; see kvpress --help");
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  }
}

}  // namespace kvp
