#include "harness.h"
TEST(placeholder_cpus) { }
