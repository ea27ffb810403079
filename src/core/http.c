/* http.c: written in the next step. */
