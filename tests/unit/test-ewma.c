#include "harness.h"
TEST(placeholder_ewma) { }
