/* backtrace.c: written in the next step. */
