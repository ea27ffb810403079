/* buf.c: the growable text buffer (internal/buf.h). Capacity doubles; errors are sticky. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal/alloc.h"
#include "../internal/buf.h"
#include "../internal/common.h"

static int reserve(weft__buf *b, size_t extra)
{
	if (b->err)
		return b->err;
	if (extra > WEFT__BUF_MAX - b->len - 1)
		return b->err = -E2BIG;
	size_t need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	char *p = weft__realloc(b->data, cap);
	if (!p)
		return b->err = -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

void weft__buf_add(weft__buf *b, const void *p, size_t n)
{
	if (reserve(b, n) < 0)
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void weft__buf_puts(weft__buf *b, const char *s)
{
	weft__buf_add(b, s, strlen(s));
}

void weft__buf_putc(weft__buf *b, char c)
{
	weft__buf_add(b, &c, 1);
}

void weft__buf_printf(weft__buf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		if (!b->err)
			b->err = -EINVAL;
		return;
	}
	if ((size_t)n < sizeof(small)) {
		weft__buf_add(b, small, (size_t)n);
		return;
	}
	if (reserve(b, (size_t)n) < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void weft__buf_json_str(weft__buf *b, const char *s)
{
	weft__buf_putc(b, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': weft__buf_puts(b, "\\\""); break;
		case '\\': weft__buf_puts(b, "\\\\"); break;
		case '\n': weft__buf_puts(b, "\\n"); break;
		case '\r': weft__buf_puts(b, "\\r"); break;
		case '\t': weft__buf_puts(b, "\\t"); break;
		default:
			if (*p < 0x20)
				weft__buf_printf(b, "\\u%04x", *p);
			else
				weft__buf_putc(b, (char)*p);
		}
	}
	weft__buf_putc(b, '"');
}

void weft__format_double(char out[WEFT__NUM_LEN], double v)
{
	int saved = errno; /* strtod sets ERANGE for subnormals */
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(out, WEFT__NUM_LEN, "%.*g", prec, v);
		if (strtod(out, NULL) == v)
			break;
	}
	errno = saved;
	for (char *p = out; *p; p++)
		if (!(*p >= '0' && *p <= '9') && *p != '-' && *p != '+' && *p != 'e')
			*p = '.'; /* the locale's decimal point */
}

void weft__buf_json_num(weft__buf *b, double v)
{
	if (!isfinite(v)) {
		weft__buf_puts(b, "null");
		return;
	}
	char s[WEFT__NUM_LEN];
	weft__format_double(s, v);
	weft__buf_puts(b, s);
}

int weft__buf_finish(weft__buf *b, char **ret_text, size_t *ret_len)
{
	if (!b->err)
		reserve(b, 0); /* an empty buffer still gets its NUL */
	if (b->err) {
		int err = b->err;
		weft__buf_free(b);
		return err;
	}
	b->data[b->len] = '\0';
	*ret_text = b->data;
	if (ret_len)
		*ret_len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return 0;
}

void weft__buf_free(weft__buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->err = 0;
}
