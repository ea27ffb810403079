/* hist.c: written in the next step. */
