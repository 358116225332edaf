#include "cli/cli.h"

#include <cstdio>

namespace kvp {

int run_cli(int argc, char** argv) {
  std::fprintf(stderr, "kvpress: not built yet\n");
  return 2;
}

}  // namespace kvp
