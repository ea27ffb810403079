/* weft: a concurrency runtime for C on Linux. This umbrella header includes every part. */
#ifndef WEFT_H
#define WEFT_H

#include <weft/core.h>
#include <weft/pool.h>
#include <weft/fiber.h>
#include <weft/watch.h>

#endif
