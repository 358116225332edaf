#pragma once

namespace kvp {

// Parses the command line, runs the sub-command and returns the process exit code.
// Every kvp::Error becomes a one-line message on stderr and a non-zero code.
int run_cli(int argc, char** argv);

}  // namespace kvp
