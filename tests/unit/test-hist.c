#include "harness.h"
TEST(placeholder_hist) { }
