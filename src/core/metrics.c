/* metrics.c: written in the next step. */
