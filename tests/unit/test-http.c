#include "harness.h"
TEST(placeholder_http) { }
