/* ewma.c: written in the next step. */
