/* cpu.c: written in the next step. */
