#include "harness.h"
TEST(placeholder_base) { }
