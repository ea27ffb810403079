/* metrics.c: the metrics registry (counters, gauges, histograms with labels) and its Prometheus
 * text (format 0.0.4) and JSON exposition.
 *
 * Layout. A registry holds a list of families in registration order; a family (one metric name:
 * its type, help and label names) holds its series in registration order. Every series starts
 * with a header, struct series: a magic number, its kind, the registry that owns it, its family,
 * its list links and its label values (in the family's label order). The public handles are the
 * objects that embed the header first:
 *
 *   weft_counter  = { header, _Atomic uint64_t value }
 *   weft_gauge    = { header, _Atomic uint64_t bits (a double), fn, arg }   kind GAUGE or GAUGE_FN
 *   hist_series   = { header, weft_hist *h }   the handle given out is h, which the registry owns
 *
 * A series is one allocation: the object, then its label value pointers, then the strings. A
 * family is one allocation too: the struct, its label name pointers, then name, help and label
 * names. A histogram series adds weft_hist_create's allocation.
 *
 * Invariants (under m->lock): every family in m's list has at least one series (the last removal
 * frees the family, so a name can later be registered again with another type); m->nseries is
 * the number of series in all families and never exceeds m->max_series; within a family no two
 * series have equal label values; a series' header names m as its owner.
 *
 * Costs. Registration looks the family up by a linear scan of the families and checks for a
 * duplicate by a scan of the family's series; removal finds the pointer by a scan of every series
 * of the registry. Both are O(series) string or pointer compares under the lock: at the default
 * cap of 10000 series, well under a millisecond each, paid only when registering or removing,
 * never on an update. Removal never trusts the header of the pointer it is given: a pointer the
 * registry never handed out (or one already removed) is simply not found (-ENOENT).
 *
 * Concurrency. Updates are lock-free and never take m->lock:
 *   counter: 1. atomic_fetch_add(value, n, relaxed). Counts wrap modulo 2^64.
 *   gauge set: 1. atomic_store(bits, v, relaxed).
 *   gauge add: 1. old = load(bits, relaxed); 2. CAS(bits, old, old + delta, relaxed) until it
 *     succeeds; a loser re-reads the winner's value and adds to it, so no add is lost.
 * Relaxed order is enough: a value carries no other data with it, and an exporter only needs some
 * value that was current between the start and the end of its read. An export reads each series
 * once, under the lock (which keeps every series alive while it is read), so it is not a
 * consistent cut across series. Histogram buckets are read in one pass over the buckets
 * (weft__hist_count_le_many), so the cumulative bucket counts are monotonic; the +Inf bucket and
 * _count print the larger of that pass's total and weft_hist_count, so they never fall below the
 * last finite bucket while records are in flight.
 *
 * Prometheus histogram buckets. Recorded values are integers in raw units. The bucket labelled
 * le = 2^k * scale counts weft_hist_count_le(h, 2^k - 1): exactly the values < 2^k, because
 * 2^k - 1 is always the upper edge of a log-linear bucket. The only difference from a true
 * "<= 2^k" is that a value of exactly 2^k raw units counts in the next bucket up, a shift of one
 * raw unit (1/2^k relative; 0.2% at the default lo of 1000 ns rounded to 512). lo is rounded down
 * and hi up to powers of two (hi at most 2^62), so there are at most 63 finite buckets.
 *
 * The global registry is created on first use by whichever thread wins a CAS on one pointer
 * (acquire/release; a loser frees its copy and uses the winner's) and is never destroyed:
 * weft_metrics_destroy ignores it, so weft's own parts can keep series in it for the life of the
 * process.
 *
 * Numbers are printed in the shortest form that strtod reads back to the same double (at most 17
 * significant digits); Prometheus text writes NaN, +Inf and -Inf, JSON writes null for them. The
 * decimal point is always '.', whatever LC_NUMERIC says (a single-byte decimal point is assumed).
 *
 * fork: the registry holds no thread. A child forked while another thread held m->lock must not
 * use m (the lock stays held in the child); updates from the child are fine.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../internal/alloc.h"
#include "../internal/buf.h"
#include "../internal/common.h"
#include "../internal/hist.h"
#include "../internal/lock.h"

#define SERIES_MAGIC 0x77667473u /* "wfts" */
#define DEFAULT_MAX_SERIES 10000
#define NAME_MAX_LEN 255 /* metric and label names */
#define LABELS_MAX 32    /* label pairs per series */
#define HIST_EDGES_MAX 63
#define LE_LEN WEFT__NUM_LEN /* a formatted double and its NUL */

enum series_kind {
	KIND_COUNTER = 1,
	KIND_GAUGE,
	KIND_GAUGE_FN,
	KIND_HIST,
};

enum family_type {
	TYPE_COUNTER,
	TYPE_GAUGE,
	TYPE_HISTOGRAM,
};

static const char *const type_names[] = {
        [TYPE_COUNTER] = "counter",
        [TYPE_GAUGE] = "gauge",
        [TYPE_HISTOGRAM] = "histogram",
};

struct family;

/* The header every series starts with. */
struct series {
	uint32_t magic;
	uint32_t kind; /* enum series_kind */
	weft_metrics *owner;
	struct family *fam;
	struct series *prev, *next;
	const char **values; /* fam->nlabels label values, in the family's label order */
};

struct weft_counter {
	struct series s;
	_Atomic uint64_t value;
};

struct weft_gauge {
	struct series s;
	_Atomic uint64_t bits;   /* the double's bits; KIND_GAUGE only */
	double (*fn)(void *arg); /* KIND_GAUGE_FN only */
	void *arg;
};

struct hist_series {
	struct series s;
	weft_hist *h; /* owned */
};

struct family {
	struct family *prev, *next;
	enum family_type type;
	const char *name, *help;
	size_t nlabels;
	const char **label_names;
	/* Histograms: the normalised export settings, the same for every series of the family. */
	double scale;
	double inv_scale;       /* 1 / scale when that is an integer (1e-9 -> 1e9), else 0 */
	int shift_lo, shift_hi; /* buckets at 2^shift_lo .. 2^shift_hi */
	char (*le)[LE_LEN];     /* the buckets' le labels, scaled and formatted */
	struct series *first, *last;
	size_t nseries;
};

struct weft_metrics {
	weft__mutex lock; /* rank METRICS: families, series lists, nseries */
	struct family *first, *last;
	size_t nseries, max_series;
	bool global; /* weft_metrics_global's registry: never destroyed */
};

static _Atomic(weft_metrics *) global_registry;

/* --- registry -------------------------------------------------------------------------------- */

WEFT_API int weft_metrics_create(weft_metrics **ret, const weft_metrics_opts *opts)
{
	if (!ret)
		return -EINVAL;
	weft_metrics *m = weft__calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	weft__mutex_init(&m->lock, WEFT__RANK_METRICS);
	m->max_series = opts && opts->max_series ? opts->max_series : DEFAULT_MAX_SERIES;
	*ret = m;
	return 0;
}

static void free_series(struct series *s)
{
	if (s->kind == KIND_HIST)
		weft_hist_destroy(((struct hist_series *)s)->h);
	s->magic = 0;
	free(s);
}

WEFT_API void weft_metrics_destroy(weft_metrics *m)
{
	if (!m || m->global)
		return;
	struct family *f = m->first;
	while (f) {
		struct family *fnext = f->next;
		struct series *s = f->first;
		while (s) {
			struct series *snext = s->next;
			free_series(s);
			s = snext;
		}
		free(f);
		f = fnext;
	}
	weft__mutex_destroy(&m->lock);
	free(m);
}

WEFT_API int weft_metrics_global(weft_metrics **ret)
{
	if (!ret)
		return -EINVAL;
	/* 1. acquire load: a registry seen here was fully built before its release CAS (3). */
	weft_metrics *m = atomic_load_explicit(&global_registry, memory_order_acquire);
	if (!m) {
		/* 2. build one; 3. publish it with a release CAS. The loser of a race frees its own
		 * copy (still private) and takes the winner's, read by the failed CAS (acquire). */
		weft_metrics *mine;
		int r = weft_metrics_create(&mine, NULL);
		if (r < 0)
			return r;
		mine->global = true;
		if (atomic_compare_exchange_strong_explicit(&global_registry, &m, mine,
		                                            memory_order_acq_rel,
		                                            memory_order_acquire)) {
			m = mine;
		} else {
			mine->global = false;
			weft_metrics_destroy(mine);
		}
	}
	*ret = m;
	return 0;
}

WEFT_API size_t weft_metrics_size(weft_metrics *m)
{
	if (!m)
		return 0;
	weft__mutex_lock(&m->lock);
	size_t n = m->nseries;
	weft__mutex_unlock(&m->lock);
	return n;
}

/* --- validation ------------------------------------------------------------------------------ */

static bool is_alpha_(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]*, at most NAME_MAX_LEN bytes. */
static bool valid_metric_name(const char *s)
{
	if (!s || !(is_alpha_(s[0]) || s[0] == ':'))
		return false;
	size_t n = 0;
	for (; s[n]; n++)
		if (!(is_alpha_(s[n]) || is_digit(s[n]) || s[n] == ':'))
			return false;
	return n <= NAME_MAX_LEN;
}

/* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__", at most NAME_MAX_LEN bytes. */
static bool valid_label_name(const char *s)
{
	if (!s || !is_alpha_(s[0]) || (s[0] == '_' && s[1] == '_'))
		return false;
	size_t n = 0;
	for (; s[n]; n++)
		if (!(is_alpha_(s[n]) || is_digit(s[n])))
			return false;
	return n <= NAME_MAX_LEN;
}

/* Check a labels array; *ret_n receives the number of pairs. Label names must be valid and
 * distinct; "le" is reserved for histograms' buckets. */
static int check_labels(const char *const *labels, bool histogram, size_t *ret_n)
{
	size_t n = 0;
	if (labels) {
		for (; labels[2 * n]; n++) {
			if (n == LABELS_MAX)
				return -EINVAL;
			const char *name = labels[2 * n];
			if (!labels[2 * n + 1] || !valid_label_name(name))
				return -EINVAL;
			if (histogram && strcmp(name, "le") == 0)
				return -EINVAL;
			for (size_t j = 0; j < n; j++)
				if (strcmp(labels[2 * j], name) == 0)
					return -EINVAL;
		}
	}
	*ret_n = n;
	return 0;
}

/* The index of label `name` in `labels` (n pairs), or -1. */
static long find_label(const char *const *labels, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(labels[2 * i], name) == 0)
			return (long)i;
	return -1;
}

static int floor_log2(int64_t v)
{
	return 63 - __builtin_clzll((unsigned long long)v);
}

/* Normalise histogram export settings into the family fields scale, shift_lo, shift_hi. */
static int norm_export(const weft_hist_export *exp, struct family *ret)
{
	double scale = exp && exp->scale != 0 ? exp->scale : 1e-9;
	int64_t lo = exp && exp->lo != 0 ? exp->lo : 1000;
	int64_t hi = exp && exp->hi != 0 ? exp->hi : 100000000000;
	if (!isfinite(scale) || scale <= 0 || lo < 0 || hi < lo || hi > ((int64_t)1 << 62))
		return -EINVAL;
	ret->scale = scale;
	double inv = nearbyint(1 / scale);
	ret->inv_scale = scale < 1 && inv < 0x1p53 && fabs(inv * scale - 1) <= 0x1p-52 ? inv : 0;
	ret->shift_lo = floor_log2(lo);
	ret->shift_hi = floor_log2(hi);
	if (((int64_t)1 << ret->shift_hi) < hi)
		ret->shift_hi++;
	return 0;
}

/* --- registration ---------------------------------------------------------------------------- */

static struct family *find_family(weft_metrics *m, const char *name)
{
	for (struct family *f = m->first; f; f = f->next)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

static double scaled(const struct family *f, double v);

/* A family named `name` with the type and histogram settings of `want`; a histogram family also
 * gets its bucket labels, formatted once here rather than at every export. */
static struct family *new_family(const struct family *want, const char *name, const char *help,
                                 const char *const *labels, size_t nlabels)
{
	size_t ptrs = nlabels * sizeof(char *);
	size_t nle =
	        want->type == TYPE_HISTOGRAM ? (size_t)(want->shift_hi - want->shift_lo + 1) : 0;
	size_t strs = strlen(name) + 1 + strlen(help) + 1;
	for (size_t i = 0; i < nlabels; i++)
		strs += strlen(labels[2 * i]) + 1;
	struct family *f = weft__calloc(1, sizeof(*f) + ptrs + nle * LE_LEN + strs);
	if (!f)
		return NULL;
	*f = *want;
	f->label_names = (const char **)(f + 1);
	f->le = (char(*)[LE_LEN])((char *)(f + 1) + ptrs);
	for (size_t i = 0; i < nle; i++)
		weft__format_double(f->le[i],
		                    scaled(f, (double)((int64_t)1 << (f->shift_lo + (int)i))));
	char *p = (char *)(f + 1) + ptrs + nle * LE_LEN;
	f->nlabels = nlabels;
	f->name = strcpy(p, name);
	p += strlen(name) + 1;
	f->help = strcpy(p, help);
	p += strlen(help) + 1;
	for (size_t i = 0; i < nlabels; i++) {
		f->label_names[i] = strcpy(p, labels[2 * i]);
		p += strlen(labels[2 * i]) + 1;
	}
	return f;
}

/* Allocate a series of `size` bytes (the object embedding the header) with its label values
 * copied in family order: order[i] is the index in `labels` of the family's i-th label. */
static struct series *new_series(size_t size, enum series_kind kind, const struct family *f,
                                 const char *const *labels, const long *order)
{
	size_t ptrs = f->nlabels * sizeof(char *);
	size_t strs = 0;
	for (size_t i = 0; i < f->nlabels; i++)
		strs += strlen(labels[2 * order[i] + 1]) + 1;
	struct series *s = weft__calloc(1, size + ptrs + strs);
	if (!s)
		return NULL;
	s->magic = SERIES_MAGIC;
	s->kind = kind;
	s->values = (const char **)((char *)s + size);
	char *p = (char *)s + size + ptrs;
	for (size_t i = 0; i < f->nlabels; i++) {
		const char *v = labels[2 * order[i] + 1];
		s->values[i] = strcpy(p, v);
		p += strlen(v) + 1;
	}
	return s;
}

static bool same_values(const struct series *s, const char *const *labels, const long *order)
{
	for (size_t i = 0; i < s->fam->nlabels; i++)
		if (strcmp(s->values[i], labels[2 * order[i] + 1]) != 0)
			return false;
	return true;
}

/* Everything the registration of one series needs; the kind-specific part is filled by the
 * public functions. */
struct reg {
	enum family_type type;
	enum series_kind kind;
	size_t size;
	const weft_hist_export *exp;
};

/* Register a series: validate, find or make its family, check for duplicates and the cap, make
 * the series (and its histogram), let `init` fill its kind-specific fields, then link it (from
 * then on an export sees it). All of it under the lock, so two registrations of the same series
 * cannot both succeed. */
static int reg_series(weft_metrics *m, const char *name, const char *help,
                      const char *const *labels, const struct reg *rg,
                      void (*init)(struct series *s, void *ctx), void *ctx, struct series **ret)
{
	if (!m || !ret || !valid_metric_name(name))
		return -EINVAL;
	if (!help)
		help = "";
	size_t n;
	int r = check_labels(labels, rg->type == TYPE_HISTOGRAM, &n);
	if (r < 0)
		return r;
	struct family want = {.type = rg->type};
	if (rg->type == TYPE_HISTOGRAM && (r = norm_export(rg->exp, &want)) < 0)
		return r;

	long order[LABELS_MAX];
	weft_hist *h = NULL;
	struct family *fresh = NULL;
	struct series *s = NULL;
	weft__mutex_lock(&m->lock);
	struct family *f = find_family(m, name);
	if (f) {
		if (f->type != rg->type || strcmp(f->help, help) != 0 || f->nlabels != n) {
			r = -EINVAL;
			goto out;
		}
		if (f->type == TYPE_HISTOGRAM &&
		    (f->scale != want.scale || f->shift_lo != want.shift_lo ||
		     f->shift_hi != want.shift_hi)) {
			r = -EINVAL;
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			order[i] = find_label(labels, n, f->label_names[i]);
			if (order[i] < 0) {
				r = -EINVAL;
				goto out;
			}
		}
		for (struct series *o = f->first; o; o = o->next) {
			if (same_values(o, labels, order)) {
				r = -EEXIST;
				goto out;
			}
		}
	} else {
		for (size_t i = 0; i < n; i++)
			order[i] = (long)i;
	}
	if (m->nseries >= m->max_series) {
		r = -ENOSPC;
		goto out;
	}
	if (!f) {
		fresh = new_family(&want, name, help, labels, n);
		if (!fresh) {
			r = -ENOMEM;
			goto out;
		}
		f = fresh;
	}
	if (rg->kind == KIND_HIST && (r = weft_hist_create(&h)) < 0)
		goto out;
	s = new_series(rg->size, rg->kind, f, labels, order);
	if (!s) {
		r = -ENOMEM;
		goto out;
	}
	s->owner = m;
	s->fam = f;
	if (h)
		((struct hist_series *)s)->h = h;
	h = NULL;
	if (init)
		init(s, ctx);

	/* Link the family (if new) at the registry's tail, the series at its family's tail. */
	if (fresh) {
		fresh->prev = m->last;
		if (m->last)
			m->last->next = fresh;
		else
			m->first = fresh;
		m->last = fresh;
		fresh = NULL;
	}
	s->prev = f->last;
	if (f->last)
		f->last->next = s;
	else
		f->first = s;
	f->last = s;
	f->nseries++;
	m->nseries++;
	*ret = s;
	r = 0;
out:
	weft__mutex_unlock(&m->lock);
	weft_hist_destroy(h);
	free(fresh);
	return r;
}

WEFT_API int weft_metrics_counter(weft_metrics *m, const char *name, const char *help,
                                  const char *const *labels, weft_counter **ret)
{
	const struct reg rg = {TYPE_COUNTER, KIND_COUNTER, sizeof(weft_counter), NULL};
	struct series *s;
	int r = reg_series(m, name, help, labels, &rg, NULL, NULL, ret ? &s : NULL);
	if (r == 0)
		*ret = (weft_counter *)s;
	return r;
}

WEFT_API int weft_metrics_gauge(weft_metrics *m, const char *name, const char *help,
                                const char *const *labels, weft_gauge **ret)
{
	const struct reg rg = {TYPE_GAUGE, KIND_GAUGE, sizeof(weft_gauge), NULL};
	struct series *s;
	int r = reg_series(m, name, help, labels, &rg, NULL, NULL, ret ? &s : NULL);
	if (r == 0)
		*ret = (weft_gauge *)s;
	return r;
}

struct fn_ctx {
	double (*fn)(void *arg);
	void *arg;
};

static void init_gauge_fn(struct series *s, void *ctx)
{
	const struct fn_ctx *c = ctx;
	((weft_gauge *)s)->fn = c->fn;
	((weft_gauge *)s)->arg = c->arg;
}

WEFT_API int weft_metrics_gauge_fn(weft_metrics *m, const char *name, const char *help,
                                   const char *const *labels, double (*fn)(void *arg), void *arg,
                                   weft_gauge **ret)
{
	if (!fn)
		return -EINVAL;
	const struct reg rg = {TYPE_GAUGE, KIND_GAUGE_FN, sizeof(weft_gauge), NULL};
	struct fn_ctx c = {fn, arg};
	struct series *s;
	int r = reg_series(m, name, help, labels, &rg, init_gauge_fn, &c, ret ? &s : NULL);
	if (r == 0)
		*ret = (weft_gauge *)s;
	return r;
}

WEFT_API int weft_metrics_histogram(weft_metrics *m, const char *name, const char *help,
                                    const char *const *labels, const weft_hist_export *exp,
                                    weft_hist **ret)
{
	const struct reg rg = {TYPE_HISTOGRAM, KIND_HIST, sizeof(struct hist_series), exp};
	struct series *s;
	int r = reg_series(m, name, help, labels, &rg, NULL, NULL, ret ? &s : NULL);
	if (r == 0)
		*ret = ((struct hist_series *)s)->h;
	return r;
}

/* --- removal --------------------------------------------------------------------------------- */

/* The series whose handle is `p`, or NULL. A linear scan of every series: see "Costs". */
static struct series *find_handle(weft_metrics *m, const void *p)
{
	for (struct family *f = m->first; f; f = f->next) {
		for (struct series *s = f->first; s; s = s->next) {
			const void *handle = s;
			if (s->kind == KIND_HIST)
				handle = ((struct hist_series *)s)->h;
			if (handle == p)
				return s;
		}
	}
	return NULL;
}

WEFT_API int weft_metrics_remove(weft_metrics *m, const void *series)
{
	if (!m || !series)
		return -EINVAL;
	weft__mutex_lock(&m->lock);
	struct series *s = find_handle(m, series);
	if (!s) {
		weft__mutex_unlock(&m->lock);
		return -ENOENT;
	}
	WEFT__ASSERT(s->magic == SERIES_MAGIC && s->owner == m);
	struct family *f = s->fam;
	if (s->prev)
		s->prev->next = s->next;
	else
		f->first = s->next;
	if (s->next)
		s->next->prev = s->prev;
	else
		f->last = s->prev;
	f->nseries--;
	m->nseries--;
	if (f->nseries == 0) {
		if (f->prev)
			f->prev->next = f->next;
		else
			m->first = f->next;
		if (f->next)
			f->next->prev = f->prev;
		else
			m->last = f->prev;
	} else {
		f = NULL;
	}
	weft__mutex_unlock(&m->lock);
	free_series(s);
	free(f);
	return 0;
}

/* --- updates --------------------------------------------------------------------------------- */

WEFT_API void weft_counter_add(weft_counter *c, uint64_t n)
{
	if (!c)
		return;
	WEFT__ASSERT(c->s.magic == SERIES_MAGIC && c->s.kind == KIND_COUNTER);
	atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

WEFT_API uint64_t weft_counter_value(const weft_counter *c)
{
	if (!c)
		return 0;
	WEFT__ASSERT(c->s.magic == SERIES_MAGIC && c->s.kind == KIND_COUNTER);
	return atomic_load_explicit(&c->value, memory_order_relaxed);
}

WEFT_API void weft_gauge_set(weft_gauge *g, double v)
{
	if (!g)
		return;
	WEFT__ASSERT(g->s.magic == SERIES_MAGIC);
	if (g->s.kind != KIND_GAUGE)
		return; /* a function gauge's value is its function's */
	atomic_store_explicit(&g->bits, weft__dbits(v), memory_order_relaxed);
}

WEFT_API void weft_gauge_add(weft_gauge *g, double delta)
{
	if (!g)
		return;
	WEFT__ASSERT(g->s.magic == SERIES_MAGIC);
	if (g->s.kind != KIND_GAUGE)
		return;
	uint64_t old = atomic_load_explicit(&g->bits, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&g->bits, &old,
	                                              weft__dbits(weft__bitsd(old) + delta),
	                                              memory_order_relaxed, memory_order_relaxed))
		;
}

/* A gauge's value; for a function gauge, the caller holds the registry's lock. */
static double gauge_read(const weft_gauge *g)
{
	if (g->s.kind == KIND_GAUGE_FN)
		return g->fn(g->arg);
	return weft__bitsd(atomic_load_explicit(&g->bits, memory_order_relaxed));
}

WEFT_API double weft_gauge_value(const weft_gauge *g)
{
	if (!g)
		return 0;
	WEFT__ASSERT(g->s.magic == SERIES_MAGIC);
	if (g->s.kind != KIND_GAUGE_FN)
		return gauge_read(g);
	/* fn runs under the registry's lock, as it does at export. */
	weft_metrics *m = g->s.owner;
	weft__mutex_lock(&m->lock);
	double v = gauge_read(g);
	weft__mutex_unlock(&m->lock);
	return v;
}

/* --- exposition ------------------------------------------------------------------------------ */

/* The shortest "%.*g" of a finite v, at 15 to 17 digits, that reads back as v, with '.' as the
 * decimal point. A normal double whose shortest form has at most 15 digits prints as that form at
 * "%.15g" (%g drops trailing zeros, and v is far closer to that form than half a unit of its 15th
 * digit); subnormals may print longer than they need, still exact. */
static void put_number(weft__buf *b, double v, bool json)
{
	if (json) {
		weft__buf_json_num(b, v); /* null for NaN and infinities */
	} else if (isnan(v)) {
		weft__buf_puts(b, "NaN");
	} else if (isinf(v)) {
		weft__buf_puts(b, v > 0 ? "+Inf" : "-Inf");
	} else {
		char s[LE_LEN];
		weft__format_double(s, v);
		weft__buf_puts(b, s);
	}
}

static void put_u64(weft__buf *b, uint64_t v)
{
	char digits[20];
	size_t i = sizeof(digits);
	do {
		digits[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	weft__buf_add(b, digits + i, sizeof(digits) - i);
}

/* Prometheus escapes: help text escapes backslash and newline; label values also '"'. Runs of
 * plain bytes are copied whole. */
static void put_escaped(weft__buf *b, const char *s, bool quote)
{
	for (;;) {
		size_t n = strcspn(s, quote ? "\\\n\"" : "\\\n");
		weft__buf_add(b, s, n);
		s += n;
		if (!*s)
			return;
		weft__buf_puts(b, *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" : "\\\"");
		s++;
	}
}

/* name{l1="v1",...,le="X"} with a suffix after the name ("_bucket"...); no braces if empty. */
static void put_series_name(weft__buf *b, const struct series *s, const char *suffix,
                            const char *le)
{
	const struct family *f = s->fam;
	weft__buf_puts(b, f->name);
	weft__buf_puts(b, suffix);
	if (f->nlabels == 0 && !le)
		return;
	weft__buf_putc(b, '{');
	for (size_t i = 0; i < f->nlabels; i++) {
		if (i)
			weft__buf_putc(b, ',');
		weft__buf_puts(b, f->label_names[i]);
		weft__buf_puts(b, "=\"");
		put_escaped(b, s->values[i], true);
		weft__buf_putc(b, '"');
	}
	if (le) {
		if (f->nlabels)
			weft__buf_putc(b, ',');
		weft__buf_puts(b, "le=\"");
		weft__buf_puts(b, le);
		weft__buf_putc(b, '"');
	}
	weft__buf_putc(b, '}');
}

/* A raw histogram value in export units. Dividing by an integer 1/scale is correctly rounded, so
 * 3000 ns prints as 3e-06 rather than 3000 * 1e-9 = 3.0000000000000001e-06. */
static double scaled(const struct family *f, double v)
{
	return f->inv_scale != 0 ? v / f->inv_scale : v * f->scale;
}

static void prom_hist(weft__buf *b, const struct series *s)
{
	const struct family *f = s->fam;
	const weft_hist *h = ((const struct hist_series *)s)->h;
	int64_t edges[HIST_EDGES_MAX] = {0};
	uint64_t counts[HIST_EDGES_MAX] = {0};
	size_t n = (size_t)(f->shift_hi - f->shift_lo + 1);
	for (size_t i = 0; i < n; i++)
		edges[i] = ((int64_t)1 << (f->shift_lo + (int)i)) - 1;
	weft__hist_count_le_many(h, edges, n, counts);
	uint64_t cum = 0;
	for (size_t i = 0; i < n; i++) {
		if (counts[i] > cum) /* monotonic even if a reset races with the read */
			cum = counts[i];
		put_series_name(b, s, "_bucket", f->le[i]);
		weft__buf_putc(b, ' ');
		put_u64(b, cum);
		weft__buf_putc(b, '\n');
	}
	uint64_t count = weft_hist_count(h);
	if (count < cum)
		count = cum;
	put_series_name(b, s, "_bucket", "+Inf");
	weft__buf_putc(b, ' ');
	put_u64(b, count);
	weft__buf_putc(b, '\n');
	put_series_name(b, s, "_sum", NULL);
	weft__buf_putc(b, ' ');
	put_number(b, scaled(f, weft_hist_sum(h)), false);
	weft__buf_putc(b, '\n');
	put_series_name(b, s, "_count", NULL);
	weft__buf_putc(b, ' ');
	put_u64(b, count);
	weft__buf_putc(b, '\n');
}

static void prom_family(weft__buf *b, const struct family *f)
{
	if (f->help[0]) {
		weft__buf_puts(b, "# HELP ");
		weft__buf_puts(b, f->name);
		weft__buf_putc(b, ' ');
		put_escaped(b, f->help, false);
		weft__buf_putc(b, '\n');
	}
	weft__buf_printf(b, "# TYPE %s %s\n", f->name, type_names[f->type]);
	for (const struct series *s = f->first; s; s = s->next) {
		switch (s->kind) {
		case KIND_COUNTER:
			put_series_name(b, s, "", NULL);
			weft__buf_putc(b, ' ');
			put_u64(b, weft_counter_value((const weft_counter *)s));
			weft__buf_putc(b, '\n');
			break;
		case KIND_GAUGE:
		case KIND_GAUGE_FN:
			put_series_name(b, s, "", NULL);
			weft__buf_putc(b, ' ');
			put_number(b, gauge_read((const weft_gauge *)s), false);
			weft__buf_putc(b, '\n');
			break;
		case KIND_HIST: prom_hist(b, s); break;
		}
	}
}

WEFT_API int weft_metrics_prometheus(weft_metrics *m, char **ret_text, size_t *ret_len)
{
	if (!m || !ret_text)
		return -EINVAL;
	weft__buf b = WEFT__BUF_INIT;
	weft__mutex_lock(&m->lock);
	for (const struct family *f = m->first; f && !b.err; f = f->next)
		prom_family(&b, f);
	weft__mutex_unlock(&m->lock);
	return weft__buf_finish(&b, ret_text, ret_len);
}

static void json_hist(weft__buf *b, const struct series *s)
{
	static const double ps[] = {50, 90, 99, 99.9};
	static const char *const pnames[] = {"p50", "p90", "p99", "p999"};
	const weft_hist *h = ((const struct hist_series *)s)->h;
	const struct family *f = s->fam;
	int64_t pv[WEFT__ARRAY_SIZE(ps)];
	weft__hist_percentiles(h, ps, WEFT__ARRAY_SIZE(ps), pv);
	weft__buf_puts(b, ",\"count\":");
	put_u64(b, weft_hist_count(h));
	weft__buf_puts(b, ",\"sum\":");
	put_number(b, scaled(f, weft_hist_sum(h)), true);
	weft__buf_puts(b, ",\"min\":");
	put_number(b, scaled(f, (double)weft_hist_min(h)), true);
	weft__buf_puts(b, ",\"max\":");
	put_number(b, scaled(f, (double)weft_hist_max(h)), true);
	for (size_t i = 0; i < WEFT__ARRAY_SIZE(ps); i++) {
		weft__buf_printf(b, ",\"%s\":", pnames[i]);
		put_number(b, scaled(f, (double)pv[i]), true);
	}
}

static void json_family(weft__buf *b, const struct family *f)
{
	weft__buf_puts(b, "{\"name\":");
	weft__buf_json_str(b, f->name);
	weft__buf_printf(b, ",\"type\":\"%s\",\"help\":", type_names[f->type]);
	weft__buf_json_str(b, f->help);
	weft__buf_puts(b, ",\"series\":[");
	for (const struct series *s = f->first; s; s = s->next) {
		weft__buf_puts(b, s == f->first ? "{\"labels\":{" : ",{\"labels\":{");
		for (size_t i = 0; i < f->nlabels; i++) {
			if (i)
				weft__buf_putc(b, ',');
			weft__buf_json_str(b, f->label_names[i]);
			weft__buf_putc(b, ':');
			weft__buf_json_str(b, s->values[i]);
		}
		weft__buf_putc(b, '}');
		switch (s->kind) {
		case KIND_COUNTER:
			weft__buf_puts(b, ",\"value\":");
			put_u64(b, weft_counter_value((const weft_counter *)s));
			break;
		case KIND_GAUGE:
		case KIND_GAUGE_FN:
			weft__buf_puts(b, ",\"value\":");
			put_number(b, gauge_read((const weft_gauge *)s), true);
			break;
		case KIND_HIST: json_hist(b, s); break;
		}
		weft__buf_putc(b, '}');
	}
	weft__buf_puts(b, "]}");
}

WEFT_API int weft_metrics_json(weft_metrics *m, char **ret_text, size_t *ret_len)
{
	if (!m || !ret_text)
		return -EINVAL;
	weft__buf b = WEFT__BUF_INIT;
	weft__buf_puts(&b, "{\"metrics\":[");
	weft__mutex_lock(&m->lock);
	for (const struct family *f = m->first; f && !b.err; f = f->next) {
		if (f != m->first)
			weft__buf_putc(&b, ',');
		json_family(&b, f);
	}
	weft__mutex_unlock(&m->lock);
	weft__buf_puts(&b, "]}\n");
	return weft__buf_finish(&b, ret_text, ret_len);
}
