#include "harness.h"
TEST(placeholder_cli_cpus) { }
