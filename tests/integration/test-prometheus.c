#include "harness.h"
TEST(placeholder_prometheus) { }
