/* json.c: the few JSON writers the --json flags need.
 *
 * Numbers are printed in the shortest form that reads back as the same double: integers below
 * 9e15 (exact in a double) as integers, without exponent; others with 15 significant digits, or
 * 16, or 17 (always enough for a double), the first that strtod turns back into the value. So a
 * reader gets the computed value itself, not one rounded to 6 digits (1.234567 stays 1.234567,
 * not 1.23457), and a short value stays short (0.1 is 0.1, not 0.10000000000000001). Infinities
 * and NaN, which JSON cannot write, are null. The command never sets a locale, so the decimal
 * point is '.'.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "cli.h"

void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

void json_num(FILE *f, double v)
{
	if (!isfinite(v)) {
		fputs("null", f);
		return;
	}
	if (fabs(v) < 9e15 && v == (double)(int64_t)v) {
		fprintf(f, "%lld", (long long)v);
		return;
	}
	char buf[32];      /* "-1.2345678901234567e-308" and its NUL fit */
	int saved = errno; /* strtod sets ERANGE for subnormals */
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	errno = saved;
	fputs(buf, f);
}
