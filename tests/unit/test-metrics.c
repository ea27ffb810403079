#include "harness.h"
TEST(placeholder_metrics) { }
