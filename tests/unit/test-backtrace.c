#include "harness.h"
TEST(placeholder_backtrace) { }
