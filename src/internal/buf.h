/* A growable byte buffer for building text (exposition formats, JSON, reports).
 *
 * Errors are sticky: after an allocation fails, every append is a no-op and weft__buf_finish
 * returns -ENOMEM and frees the memory, so a caller appends freely and checks once. A buffer
 * refuses to grow past WEFT__BUF_MAX (-E2BIG at finish). */
#ifndef WEFT_INTERNAL_BUF_H
#define WEFT_INTERNAL_BUF_H

#include <stdarg.h>
#include <stddef.h>

#define WEFT__BUF_MAX ((size_t)256 << 20)

typedef struct weft__buf {
	char *data;
	size_t len, cap;
	int err; /* 0, or the first error (-ENOMEM, -E2BIG) */
} weft__buf;

#define WEFT__BUF_INIT                                                                             \
	{                                                                                          \
		0                                                                                  \
	}

void weft__buf_add(weft__buf *b, const void *p, size_t n);
void weft__buf_puts(weft__buf *b, const char *s);
void weft__buf_putc(weft__buf *b, char c);
__attribute__((format(printf, 2, 3))) void weft__buf_printf(weft__buf *b, const char *fmt, ...);
/* A JSON string literal, quotes included, with every needed escape. */
void weft__buf_json_str(weft__buf *b, const char *s);
/* The shortest text that strtod reads back to the same finite double (at most 17 significant
 * digits), with '.' as the decimal point whatever the locale. errno is preserved. */
#define WEFT__NUM_LEN 32
void weft__format_double(char out[WEFT__NUM_LEN], double v);
/* A JSON number in that form; NaN and infinities become null. */
void weft__buf_json_num(weft__buf *b, double v);
/* Hand the NUL-terminated text to the caller (0), or free it and return the sticky error. */
int weft__buf_finish(weft__buf *b, char **ret_text, size_t *ret_len);
void weft__buf_free(weft__buf *b);

#endif
