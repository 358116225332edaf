#include "cli/cli.h"

int main(int argc, char** argv) {
  return kvp::run_cli(argc, argv);
}
