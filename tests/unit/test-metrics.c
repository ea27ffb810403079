/* test-metrics.c: the metrics registry: registration and its validation, duplicates, family
 * consistency, the series cap, removal, values of every kind in Prometheus text and JSON (exact
 * text for a small registry), escaping, NaN and infinities, histogram buckets, concurrent updates,
 * fault injection on registration and export, and promtool's verdict on the text. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "harness.h"
#include "internal/alloc.h"

static weft_metrics *new_registry(size_t max_series)
{
	weft_metrics *m = NULL;
	weft_metrics_opts o = {.max_series = max_series};
	ASSERT_OK(weft_metrics_create(&m, &o));
	ASSERT_NOT_NULL(m);
	return m;
}

static char *prom(weft_metrics *m)
{
	char *t = NULL;
	size_t len = 0;
	ASSERT_OK(weft_metrics_prometheus(m, &t, &len));
	ASSERT_EQ(len, strlen(t));
	return t;
}

static char *json(weft_metrics *m)
{
	char *t = NULL;
	size_t len = 0;
	ASSERT_OK(weft_metrics_json(m, &t, &len));
	ASSERT_EQ(len, strlen(t));
	return t;
}

static double seven(void *arg)
{
	(void)arg;
	return 7;
}

static double read_double(void *arg)
{
	return *(double *)arg;
}

TEST(create_and_arguments)
{
	weft_metrics *m;
	ASSERT_ERR(weft_metrics_create(NULL, NULL), -EINVAL);
	ASSERT_OK(weft_metrics_create(&m, NULL));
	ASSERT_EQ(weft_metrics_size(m), 0);
	ASSERT_EQ(weft_metrics_size(NULL), 0);
	weft_metrics_destroy(m);
	weft_metrics_destroy(NULL);

	m = new_registry(0);
	weft_counter *c;
	weft_gauge *g;
	weft_hist *h;
	ASSERT_ERR(weft_metrics_counter(NULL, "a_total", "", NULL, &c), -EINVAL);
	ASSERT_ERR(weft_metrics_counter(m, NULL, "", NULL, &c), -EINVAL);
	ASSERT_ERR(weft_metrics_counter(m, "a_total", "", NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_metrics_gauge(NULL, "a", "", NULL, &g), -EINVAL);
	ASSERT_ERR(weft_metrics_gauge(m, "a", "", NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_metrics_gauge_fn(m, "a", "", NULL, NULL, NULL, &g), -EINVAL);
	ASSERT_ERR(weft_metrics_gauge_fn(NULL, "a", "", NULL, seven, NULL, &g), -EINVAL);
	ASSERT_ERR(weft_metrics_gauge_fn(m, "a", "", NULL, seven, NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_metrics_histogram(NULL, "a", "", NULL, NULL, &h), -EINVAL);
	ASSERT_ERR(weft_metrics_histogram(m, "a", "", NULL, NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_metrics_remove(NULL, m), -EINVAL);
	ASSERT_ERR(weft_metrics_remove(m, NULL), -EINVAL);
	char *t;
	ASSERT_ERR(weft_metrics_prometheus(NULL, &t, NULL), -EINVAL);
	ASSERT_ERR(weft_metrics_prometheus(m, NULL, NULL), -EINVAL);
	ASSERT_ERR(weft_metrics_json(NULL, &t, NULL), -EINVAL);
	ASSERT_ERR(weft_metrics_json(m, NULL, NULL), -EINVAL);
	ASSERT_EQ(weft_metrics_size(m), 0);

	/* NULL handles are harmless no-ops: a failed registration does not crash its updates. */
	weft_counter_add(NULL, 1);
	ASSERT_UEQ(weft_counter_value(NULL), 0);
	weft_gauge_set(NULL, 1);
	weft_gauge_add(NULL, 1);
	ASSERT_EQ(weft_gauge_value(NULL), 0);

	/* An empty registry exports nothing (but valid JSON). */
	t = prom(m);
	ASSERT_STR_EQ(t, "");
	free(t);
	t = json(m);
	ASSERT_STR_EQ(t, "{\"metrics\":[]}\n");
	free(t);
	weft_metrics_destroy(m);
}

TEST(name_validation)
{
	weft_metrics *m = new_registry(0);
	weft_counter *c;
	static const char *const bad_names[] = {"", "1abc", "a-b", "a b", "a.b", "é", "a\n"};
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
		ASSERT_ERR(weft_metrics_counter(m, bad_names[i], "", NULL, &c), -EINVAL);
	ASSERT_OK(weft_metrics_counter(m, "job:requests:rate5m", "", NULL, &c));
	ASSERT_OK(weft_metrics_counter(m, "_x9", "", NULL, &c));
	ASSERT_OK(weft_metrics_counter(m, ":x", "", NULL, &c));
	ASSERT_OK(weft_metrics_counter(m, "__double_underscore_is_fine_for_metrics", "", NULL, &c));

	char longname[300];
	memset(longname, 'a', 255);
	longname[255] = '\0';
	ASSERT_OK(weft_metrics_counter(m, longname, "", NULL, &c));
	memset(longname, 'b', 256);
	longname[256] = '\0';
	ASSERT_ERR(weft_metrics_counter(m, longname, "", NULL, &c), -EINVAL);

	/* Label names: syntax, the reserved "__" prefix, pairs, duplicates, count. */
	static const char *const l_reserved[] = {"__name", "x", NULL};
	static const char *const l_digit[] = {"1a", "x", NULL};
	static const char *const l_dash[] = {"a-b", "x", NULL};
	static const char *const l_colon[] = {"a:b", "x", NULL};
	static const char *const l_empty[] = {"", "x", NULL};
	static const char *const l_odd[] = {"a", NULL};
	static const char *const l_odd3[] = {"a", "1", "b", NULL};
	static const char *const l_dup[] = {"a", "1", "a", "2", NULL};
	const char *const *bad_labels[] = {l_reserved, l_digit, l_dash, l_colon,
	                                   l_empty,    l_odd,   l_odd3, l_dup};
	for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++) {
		ASSERT_ERR(weft_metrics_counter(m, "lab_total", "", bad_labels[i], &c), -EINVAL);
		weft_gauge *g;
		ASSERT_ERR(weft_metrics_gauge(m, "lab_gauge", "", bad_labels[i], &g), -EINVAL);
	}
	static const char *const l_ok[] = {"_a", "", "b9", "any \"value\"\n\\", NULL};
	ASSERT_OK(weft_metrics_counter(m, "lab_total", "", l_ok, &c));

	/* At most 32 label pairs. */
	char names[33][8];
	const char *many[2 * 33 + 1];
	for (int i = 0; i < 33; i++) {
		snprintf(names[i], sizeof(names[i]), "l%d", i);
		many[2 * i] = names[i];
		many[2 * i + 1] = "v";
	}
	many[2 * 33] = NULL;
	ASSERT_ERR(weft_metrics_counter(m, "many_total", "", many, &c), -EINVAL);
	many[2 * 32] = NULL;
	ASSERT_OK(weft_metrics_counter(m, "many_total", "", many, &c));

	/* Histograms reserve "le" and check their export settings. */
	weft_hist *h;
	static const char *const l_le[] = {"le", "1", NULL};
	ASSERT_ERR(weft_metrics_histogram(m, "h_seconds", "", l_le, NULL, &h), -EINVAL);
	ASSERT_OK(weft_metrics_counter(m, "le_is_fine_total", "", l_le, &c));
	weft_hist_export bad_exports[] = {
	        {.scale = -1},
	        {.scale = NAN},
	        {.scale = INFINITY},
	        {.lo = -1},
	        {.hi = -5},
	        {.lo = 100, .hi = 10},
	        {.hi = ((int64_t)1 << 62) + 1},
	};
	for (size_t i = 0; i < sizeof(bad_exports) / sizeof(bad_exports[0]); i++)
		ASSERT_ERR(weft_metrics_histogram(m, "h_seconds", "", NULL, &bad_exports[i], &h),
		           -EINVAL);
	weft_hist_export widest = {.scale = 1, .lo = 1, .hi = (int64_t)1 << 62};
	ASSERT_OK(weft_metrics_histogram(m, "h_seconds", "", NULL, &widest, &h));
	weft_hist_record(h, INT64_MAX);
	char *t = prom(m);
	ASSERT_CONTAINS(t, "h_seconds_bucket{le=\"1\"} 0\n");
	ASSERT_CONTAINS(t, "h_seconds_bucket{le=\"4.611686018427388e+18\"} 0\n");
	ASSERT_CONTAINS(t, "h_seconds_bucket{le=\"+Inf\"} 1\n");
	free(t);
	ASSERT_EQ(weft_metrics_size(m), 9);
	weft_metrics_destroy(m);
}

TEST(duplicates_and_families)
{
	weft_metrics *m = new_registry(0);
	weft_counter *c1, *c2, *c3;
	static const char *const get[] = {"method", "get", "code", "200", NULL};
	static const char *const get_swapped[] = {"code", "200", "method", "get", NULL};
	static const char *const post[] = {"code", "200", "method", "post", NULL};
	ASSERT_OK(weft_metrics_counter(m, "http_requests_total", "Requests.", get, &c1));
	ASSERT_ERR(weft_metrics_counter(m, "http_requests_total", "Requests.", get, &c2), -EEXIST);
	ASSERT_ERR(weft_metrics_counter(m, "http_requests_total", "Requests.", get_swapped, &c2),
	           -EEXIST);
	/* Labels in another order name the family's labels: stored and exported in family order. */
	ASSERT_OK(weft_metrics_counter(m, "http_requests_total", "Requests.", post, &c2));
	weft_counter_add(c2, 2);

	/* Family consistency: type, help, label names, label count. */
	weft_gauge *g;
	weft_hist *h;
	static const char *const other_names[] = {"verb", "get", "code", "200", NULL};
	static const char *const fewer[] = {"method", "put", NULL};
	static const char *const more[] = {"method", "put", "code", "200", "x", "y", NULL};
	ASSERT_ERR(weft_metrics_gauge(m, "http_requests_total", "Requests.", post, &g), -EINVAL);
	ASSERT_ERR(weft_metrics_histogram(m, "http_requests_total", "Requests.", NULL, NULL, &h),
	           -EINVAL);
	ASSERT_ERR(weft_metrics_counter(m, "http_requests_total", "Other.", post, &c3), -EINVAL);
	ASSERT_ERR(weft_metrics_counter(m, "http_requests_total", "Requests.", other_names, &c3),
	           -EINVAL);
	ASSERT_ERR(weft_metrics_counter(m, "http_requests_total", "Requests.", fewer, &c3),
	           -EINVAL);
	ASSERT_ERR(weft_metrics_counter(m, "http_requests_total", "Requests.", more, &c3), -EINVAL);
	ASSERT_ERR(weft_metrics_counter(m, "http_requests_total", "Requests.", NULL, &c3), -EINVAL);

	/* No labels: one series only. NULL help is the empty help. */
	ASSERT_OK(weft_metrics_counter(m, "plain_total", NULL, NULL, &c3));
	ASSERT_ERR(weft_metrics_counter(m, "plain_total", "", NULL, &c3), -EEXIST);
	static const char *const empty[] = {NULL};
	ASSERT_ERR(weft_metrics_counter(m, "plain_total", NULL, empty, &c3), -EEXIST);

	/* Gauges and function gauges share a family. */
	static const char *const a[] = {"k", "a", NULL};
	static const char *const b[] = {"k", "b", NULL};
	ASSERT_OK(weft_metrics_gauge(m, "mixed", "", a, &g));
	ASSERT_ERR(weft_metrics_gauge_fn(m, "mixed", "", a, seven, NULL, &g), -EEXIST);
	ASSERT_OK(weft_metrics_gauge_fn(m, "mixed", "", b, seven, NULL, &g));

	/* Histograms of one family share their export settings. */
	weft_hist_export e1 = {.scale = 1e-6, .lo = 1, .hi = 1024};
	weft_hist_export e1_rounded = {
	        .scale = 1e-6, .lo = 1, .hi = 1000}; /* same after rounding */
	weft_hist_export e2 = {.scale = 1e-3, .lo = 1, .hi = 1024};
	weft_hist_export e3 = {.scale = 1e-6, .lo = 2, .hi = 1024};
	ASSERT_OK(weft_metrics_histogram(m, "lat_seconds", "", a, &e1, &h));
	ASSERT_OK(weft_metrics_histogram(m, "lat_seconds", "", b, &e1_rounded, &h));
	static const char *const c[] = {"k", "c", NULL};
	ASSERT_ERR(weft_metrics_histogram(m, "lat_seconds", "", c, &e2, &h), -EINVAL);
	ASSERT_ERR(weft_metrics_histogram(m, "lat_seconds", "", c, &e3, &h), -EINVAL);
	ASSERT_ERR(weft_metrics_histogram(m, "lat_seconds", "", c, NULL, &h), -EINVAL);
	ASSERT_ERR(weft_metrics_histogram(m, "lat_seconds", "", a, &e1, &h), -EEXIST);

	ASSERT_EQ(weft_metrics_size(m), 7);
	char *t = prom(m);
	ASSERT_CONTAINS(t, "http_requests_total{method=\"get\",code=\"200\"} 0\n"
	                   "http_requests_total{method=\"post\",code=\"200\"} 2\n");
	ASSERT_CONTAINS(t, "# TYPE plain_total counter\nplain_total 0\n");
	ASSERT_NOT_CONTAINS(t, "# HELP plain_total");
	free(t);
	weft_metrics_destroy(m);
}

TEST(series_cap)
{
	weft_metrics *m = new_registry(3);
	weft_counter *c[4];
	static const char *const l[4][3] = {
	        {"i", "0", NULL}, {"i", "1", NULL}, {"i", "2", NULL}, {"i", "3", NULL}};
	for (int i = 0; i < 3; i++)
		ASSERT_OK(weft_metrics_counter(m, "x_total", "", l[i], &c[i]));
	ASSERT_ERR(weft_metrics_counter(m, "x_total", "", l[3], &c[3]), -ENOSPC);
	weft_gauge *g;
	weft_hist *h;
	ASSERT_ERR(weft_metrics_gauge(m, "y", "", NULL, &g), -ENOSPC);
	ASSERT_ERR(weft_metrics_histogram(m, "z", "", NULL, NULL, &h), -ENOSPC);
	/* A duplicate is still a duplicate when full. */
	ASSERT_ERR(weft_metrics_counter(m, "x_total", "", l[0], &c[3]), -EEXIST);
	ASSERT_EQ(weft_metrics_size(m), 3);
	ASSERT_OK(weft_metrics_remove(m, c[1]));
	ASSERT_OK(weft_metrics_counter(m, "x_total", "", l[3], &c[3]));
	ASSERT_EQ(weft_metrics_size(m), 3);
	char *t = prom(m);
	ASSERT_STR_EQ(t, "# TYPE x_total counter\nx_total{i=\"0\"} 0\nx_total{i=\"2\"} 0\n"
	                 "x_total{i=\"3\"} 0\n");
	free(t);
	weft_metrics_destroy(m);

	/* The default cap is 10000. */
	m = new_registry(0);
	char v[16];
	const char *lv[] = {"i", v, NULL};
	for (int i = 0; i < 10000; i++) {
		snprintf(v, sizeof(v), "%d", i);
		ASSERT_OK(weft_metrics_counter(m, "many_total", "", lv, &c[0]));
	}
	snprintf(v, sizeof(v), "%d", 10000);
	ASSERT_ERR(weft_metrics_counter(m, "many_total", "", lv, &c[0]), -ENOSPC);
	weft_metrics_destroy(m);
}

TEST(remove)
{
	weft_metrics *m = new_registry(0), *other = new_registry(0);
	weft_counter *c, *oc;
	weft_gauge *g, *gf;
	weft_hist *h;
	static const char *const a[] = {"k", "a", NULL};
	static const char *const b[] = {"k", "b", NULL};
	ASSERT_OK(weft_metrics_counter(m, "c_total", "C.", a, &c));
	ASSERT_OK(weft_metrics_gauge(m, "g", "G.", NULL, &g));
	ASSERT_OK(weft_metrics_gauge_fn(m, "gf", "GF.", NULL, seven, NULL, &gf));
	ASSERT_OK(weft_metrics_histogram(m, "h_seconds", "H.", a, NULL, &h));
	ASSERT_OK(weft_metrics_counter(other, "c_total", "C.", a, &oc));
	ASSERT_EQ(weft_metrics_size(m), 4);

	/* Pointers that are not series of m: another registry's, a local, the registry, garbage. */
	int local = 0;
	ASSERT_ERR(weft_metrics_remove(m, oc), -ENOENT);
	ASSERT_ERR(weft_metrics_remove(m, &local), -ENOENT);
	ASSERT_ERR(weft_metrics_remove(m, m), -ENOENT);
	ASSERT_ERR(weft_metrics_remove(m, (void *)(uintptr_t)0x10), -ENOENT);
	ASSERT_ERR(weft_metrics_remove(other, c), -ENOENT);
	ASSERT_ERR(weft_metrics_remove(other, h), -ENOENT);
	ASSERT_EQ(weft_metrics_size(m), 4);

	ASSERT_OK(weft_metrics_remove(m, h));
	ASSERT_ERR(weft_metrics_remove(m, h), -ENOENT);
	ASSERT_OK(weft_metrics_remove(m, gf));
	ASSERT_OK(weft_metrics_remove(m, g));
	ASSERT_EQ(weft_metrics_size(m), 1);
	char *t = prom(m);
	ASSERT_STR_EQ(t, "# HELP c_total C.\n# TYPE c_total counter\nc_total{k=\"a\"} 0\n");
	free(t);

	/* The last series of a family takes the family with it: the name is free again. */
	ASSERT_OK(weft_metrics_remove(m, c));
	ASSERT_EQ(weft_metrics_size(m), 0);
	t = prom(m);
	ASSERT_STR_EQ(t, "");
	free(t);
	ASSERT_OK(weft_metrics_gauge(m, "c_total", "Now a gauge.", b, &g));
	ASSERT_OK(weft_metrics_counter(m, "g", "", NULL, &c));
	t = prom(m);
	ASSERT_STR_EQ(t, "# HELP c_total Now a gauge.\n# TYPE c_total gauge\nc_total{k=\"b\"} 0\n"
	                 "# TYPE g counter\ng 0\n");
	free(t);
	weft_metrics_destroy(m);
	weft_metrics_destroy(other);
}

/* A small registry of every kind, used for the exact-text tests. */
static weft_metrics *small_registry(void)
{
	weft_metrics *m = new_registry(0);
	weft_counter *get, *post;
	weft_gauge *temp, *depth;
	weft_hist *lat;
	static const char *const lget[] = {"method", "get", NULL};
	static const char *const lpost[] = {"method", "post", NULL};
	ASSERT_OK(weft_metrics_counter(m, "app_requests_total", "Requests served.", lget, &get));
	ASSERT_OK(weft_metrics_counter(m, "app_requests_total", "Requests served.", lpost, &post));
	ASSERT_OK(weft_metrics_gauge(m, "app_temperature_celsius", "Temperature.", NULL, &temp));
	ASSERT_OK(weft_metrics_gauge_fn(m, "app_queue_depth", "Queue depth.", NULL, seven, NULL,
	                                &depth));
	weft_hist_export e = {.scale = 1, .lo = 1, .hi = 4};
	ASSERT_OK(weft_metrics_histogram(m, "app_latency", "Latency.", NULL, &e, &lat));
	weft_counter_add(get, 3);
	weft_counter_add(post, 5);
	weft_gauge_set(temp, 21.5);
	int64_t values[] = {0, 1, 2, 3, 5};
	for (size_t i = 0; i < 5; i++)
		weft_hist_record(lat, values[i]);
	return m;
}

TEST(prometheus_text_exact)
{
	weft_metrics *m = small_registry();
	char *t = prom(m);
	ASSERT_STR_EQ(t, "# HELP app_requests_total Requests served.\n"
	                 "# TYPE app_requests_total counter\n"
	                 "app_requests_total{method=\"get\"} 3\n"
	                 "app_requests_total{method=\"post\"} 5\n"
	                 "# HELP app_temperature_celsius Temperature.\n"
	                 "# TYPE app_temperature_celsius gauge\n"
	                 "app_temperature_celsius 21.5\n"
	                 "# HELP app_queue_depth Queue depth.\n"
	                 "# TYPE app_queue_depth gauge\n"
	                 "app_queue_depth 7\n"
	                 "# HELP app_latency Latency.\n"
	                 "# TYPE app_latency histogram\n"
	                 "app_latency_bucket{le=\"1\"} 1\n"
	                 "app_latency_bucket{le=\"2\"} 2\n"
	                 "app_latency_bucket{le=\"4\"} 4\n"
	                 "app_latency_bucket{le=\"+Inf\"} 5\n"
	                 "app_latency_sum 11\n"
	                 "app_latency_count 5\n");
	free(t);
	weft_metrics_destroy(m);
}

TEST(json_exact)
{
	weft_metrics *m = small_registry();
	char *t = json(m);
	ASSERT_STR_EQ(t,
	              "{\"metrics\":["
	              "{\"name\":\"app_requests_total\",\"type\":\"counter\","
	              "\"help\":\"Requests served.\",\"series\":["
	              "{\"labels\":{\"method\":\"get\"},\"value\":3},"
	              "{\"labels\":{\"method\":\"post\"},\"value\":5}]},"
	              "{\"name\":\"app_temperature_celsius\",\"type\":\"gauge\","
	              "\"help\":\"Temperature.\",\"series\":[{\"labels\":{},\"value\":21.5}]},"
	              "{\"name\":\"app_queue_depth\",\"type\":\"gauge\",\"help\":\"Queue depth.\","
	              "\"series\":[{\"labels\":{},\"value\":7}]},"
	              "{\"name\":\"app_latency\",\"type\":\"histogram\",\"help\":\"Latency.\","
	              "\"series\":[{\"labels\":{},\"count\":5,\"sum\":11,\"min\":0,\"max\":5,"
	              "\"p50\":2,\"p90\":5,\"p99\":5,\"p999\":5}]}"
	              "]}\n");
	free(t);
	weft_metrics_destroy(m);
}

TEST(escaping)
{
	weft_metrics *m = new_registry(0);
	weft_gauge *g;
	weft_hist *h;
	static const char *const l[] = {"path", "C:\\dir \"x\"\nnext", "plain", "é ok", NULL};
	ASSERT_OK(weft_metrics_gauge(m, "esc", "Help with \\ and\nnewline and \"quotes\".", l, &g));
	ASSERT_OK(weft_metrics_histogram(m, "esc_seconds", "", l, NULL, &h));
	weft_gauge_set(g, 1);
	char *t = prom(m);
	ASSERT_CONTAINS(t, "# HELP esc Help with \\\\ and\\nnewline and \"quotes\".\n");
	ASSERT_CONTAINS(t, "esc{path=\"C:\\\\dir \\\"x\\\"\\nnext\",plain=\"é ok\"} 1\n");
	ASSERT_CONTAINS(t, "esc_seconds_bucket{path=\"C:\\\\dir \\\"x\\\"\\nnext\",plain=\"é ok\","
	                   "le=\"5.12e-07\"} 0\n");
	ASSERT_CONTAINS(t,
	                "esc_seconds_sum{path=\"C:\\\\dir \\\"x\\\"\\nnext\",plain=\"é ok\"} 0\n");
	free(t);
	t = json(m);
	ASSERT_CONTAINS(t, "\"help\":\"Help with \\\\ and\\nnewline and \\\"quotes\\\".\"");
	ASSERT_CONTAINS(t,
	                "{\"labels\":{\"path\":\"C:\\\\dir \\\"x\\\"\\nnext\",\"plain\":\"é ok\"},"
	                "\"value\":1}");
	free(t);
	weft_metrics_destroy(m);
}

TEST(numbers_nan_inf)
{
	weft_metrics *m = new_registry(0);
	struct {
		const char *label, *text, *json;
		double v;
	} cases[] = {
	        {"nan", "NaN", "null", NAN},
	        {"pinf", "+Inf", "null", INFINITY},
	        {"ninf", "-Inf", "null", -INFINITY},
	        {"tenth", "0.1", "0.1", 0.1},
	        {"third", "0.3333333333333333", "0.3333333333333333", 1.0 / 3},
	        {"big", "1e+300", "1e+300", 1e300},
	        {"int", "-42", "-42", -42},
	        {"zero", "0", "0", 0},
	        {"tiny", "4.94065645841247e-324", "4.94065645841247e-324", 5e-324},
	        {"max", "1.7976931348623157e+308", "1.7976931348623157e+308",
	         1.7976931348623157e308},
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	for (size_t i = 0; i < n; i++) {
		weft_gauge *g;
		const char *l[] = {"v", cases[i].label, NULL};
		ASSERT_OK(weft_metrics_gauge(m, "num", "", l, &g));
		weft_gauge_set(g, cases[i].v);
	}
	char *t = prom(m), *j = json(m);
	for (size_t i = 0; i < n; i++) {
		char want[128];
		snprintf(want, sizeof(want), "num{v=\"%s\"} %s\n", cases[i].label, cases[i].text);
		ASSERT_CONTAINS(t, want);
		snprintf(want, sizeof(want), "{\"labels\":{\"v\":\"%s\"},\"value\":%s}",
		         cases[i].label, cases[i].json);
		ASSERT_CONTAINS(j, want);
		if (isfinite(cases[i].v)) /* every printed value reads back exactly */
			ASSERT_TRUE(strtod(cases[i].text, NULL) == cases[i].v);
	}
	free(t);
	free(j);

	/* Counters print as exact integers, up to 2^64 - 1. */
	weft_counter *c;
	ASSERT_OK(weft_metrics_counter(m, "big_total", "", NULL, &c));
	weft_counter_add(c, UINT64_MAX);
	t = prom(m);
	ASSERT_CONTAINS(t, "big_total 18446744073709551615\n");
	free(t);
	weft_counter_add(c, 2); /* wraps modulo 2^64 */
	ASSERT_UEQ(weft_counter_value(c), 1);
	weft_metrics_destroy(m);
}

TEST(gauges)
{
	weft_metrics *m = new_registry(0);
	weft_gauge *g, *gf;
	ASSERT_OK(weft_metrics_gauge(m, "g", "", NULL, &g));
	ASSERT_EQ(weft_gauge_value(g), 0);
	weft_gauge_set(g, 2.5);
	ASSERT_TRUE(weft_gauge_value(g) == 2.5);
	weft_gauge_add(g, -4);
	ASSERT_TRUE(weft_gauge_value(g) == -1.5);
	weft_gauge_set(g, NAN);
	ASSERT_TRUE(isnan(weft_gauge_value(g)));

	double x = 3.25;
	ASSERT_OK(weft_metrics_gauge_fn(m, "gf", "", NULL, read_double, &x, &gf));
	ASSERT_TRUE(weft_gauge_value(gf) == 3.25);
	x = -8;
	ASSERT_TRUE(weft_gauge_value(gf) == -8);
	/* set and add do not apply to a function gauge: its value is its function's. */
	weft_gauge_set(gf, 100);
	weft_gauge_add(gf, 100);
	ASSERT_TRUE(weft_gauge_value(gf) == -8);
	char *t = prom(m);
	ASSERT_CONTAINS(t, "\ngf -8\n");
	free(t);
	x = 0.5;
	t = json(m);
	ASSERT_CONTAINS(t, "\"value\":0.5}");
	free(t);
	weft_metrics_destroy(m);
}

TEST(histogram_buckets)
{
	weft_metrics *m = new_registry(0);
	weft_hist *h;
	static const char *const l[] = {"op", "read", NULL};
	ASSERT_OK(weft_metrics_histogram(m, "op_duration_seconds", "Op time.", l, NULL, &h));
	/* The bucket le=2^k counts the values < 2^k: 1023 is in le=1.024e-06, 1024 and 1025 are
	 * not. */
	weft_hist_record(h, 1023);
	weft_hist_record(h, 1024);
	weft_hist_record(h, 1025);
	weft_hist_record(h, 3000);
	weft_hist_record(h, WEFT_SEC(200)); /* beyond hi: only in +Inf */
	char *t = prom(m);
	const char *lab = "op_duration_seconds_bucket{op=\"read\",le=";
	char want[256];
	struct {
		const char *le;
		int n;
	} rows[] = {
	        {"5.12e-07", 0},  {"1.024e-06", 1},     {"2.048e-06", 3},
	        {"4.096e-06", 4}, {"137.438953472", 4}, {"+Inf", 5},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		snprintf(want, sizeof(want), "%s\"%s\"} %d\n", lab, rows[i].le, rows[i].n);
		ASSERT_CONTAINS(t, want);
	}
	/* The default buckets: 2^9 .. 2^37 ns, 29 of them, plus +Inf. */
	int nb = 0;
	for (const char *p = t; (p = strstr(p, "_bucket{")); p++)
		nb++;
	ASSERT_EQ(nb, 30);
	ASSERT_NOT_CONTAINS(t, "le=\"2.56e-07\"");
	ASSERT_NOT_CONTAINS(t, "le=\"274.877906944\"");
	ASSERT_CONTAINS(t, "op_duration_seconds_sum{op=\"read\"} 200.000006072\n");
	ASSERT_CONTAINS(t, "op_duration_seconds_count{op=\"read\"} 5\n");
	free(t);

	t = json(m);
	ASSERT_CONTAINS(t, "{\"labels\":{\"op\":\"read\"},\"count\":5,\"sum\":200.000006072,"
	                   "\"min\":1.023e-06,\"max\":200,");
	free(t);

	/* JSON percentiles, scaled: 1..1000 us recorded in ns, exported in ms. */
	weft_hist *h2;
	weft_hist_export ms = {.scale = 1e-6};
	ASSERT_OK(weft_metrics_histogram(m, "wait_ms", "", NULL, &ms, &h2));
	for (int i = 1; i <= 1000; i++)
		weft_hist_record(h2, WEFT_USEC(i));
	t = json(m);
	const char *p = strstr(t, "\"name\":\"wait_ms\"");
	ASSERT_NOT_NULL(p);
	double count, sum, mn, mx, p50, p90, p99, p999;
	ASSERT_EQ(
	        sscanf(strstr(p, "\"count\":"),
	               "\"count\":%lf,\"sum\":%lf,\"min\":%lf,\"max\":%lf,\"p50\":%lf,\"p90\":%lf,"
	               "\"p99\":%lf,\"p999\":%lf",
	               &count, &sum, &mn, &mx, &p50, &p90, &p99, &p999),
	        8);
	ASSERT_EQ(count, 1000);
	ASSERT_NEAR(sum, 500500e-3, 1e-6);
	ASSERT_NEAR(mn, 0.001, 1e-12);
	ASSERT_NEAR(mx, 1, 1e-12);
	ASSERT_NEAR(p50, 0.5, 0.5 * WEFT_HIST_REL_ERROR);
	ASSERT_NEAR(p90, 0.9, 0.9 * WEFT_HIST_REL_ERROR);
	ASSERT_NEAR(p99, 0.99, 0.99 * WEFT_HIST_REL_ERROR);
	ASSERT_NEAR(p999, 0.999, 0.999 * WEFT_HIST_REL_ERROR);
	free(t);
	weft_metrics_destroy(m);
}

/* --- concurrency ----------------------------------------------------------------------------- */

#define THREADS 4
#define ITERS 20000

struct shared {
	weft_metrics *m;
	weft_counter *c;
	weft_gauge *g;
	weft_hist *h;
	atomic_bool stop;
};

static void *updater(void *arg)
{
	struct shared *sh = arg;
	for (int i = 0; i < ITERS; i++) {
		weft_counter_add(sh->c, 1);
		weft_gauge_add(sh->g, 1);
		weft_hist_record(sh->h, i);
	}
	return NULL;
}

static void *churner(void *arg)
{
	struct shared *sh = arg;
	/* At least 100 rounds, so registration, removal and export overlap the updaters. */
	for (int i = 0; i < 100 || !atomic_load(&sh->stop);) {
		char v[16];
		snprintf(v, sizeof(v), "%d", i++ % 8);
		const char *l[] = {"i", v, NULL};
		weft_gauge *g;
		if (weft_metrics_gauge(sh->m, "churn", "", l, &g) == 0) {
			weft_gauge_set(g, i);
			ASSERT_OK(weft_metrics_remove(sh->m, g));
		}
		char *t;
		ASSERT_OK(weft_metrics_prometheus(sh->m, &t, NULL));
		free(t);
		ASSERT_OK(weft_metrics_json(sh->m, &t, NULL));
		free(t);
	}
	return NULL;
}

TEST_TIMEOUT(concurrent_updates, 60)
{
	struct shared sh = {.m = new_registry(0)};
	ASSERT_OK(weft_metrics_counter(sh.m, "ops_total", "", NULL, &sh.c));
	ASSERT_OK(weft_metrics_gauge(sh.m, "level", "", NULL, &sh.g));
	ASSERT_OK(weft_metrics_histogram(sh.m, "op_seconds", "", NULL, NULL, &sh.h));
	pthread_t t[THREADS], ch;
	ASSERT_EQ(pthread_create(&ch, NULL, churner, &sh), 0);
	for (int i = 0; i < THREADS; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, updater, &sh), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	atomic_store(&sh.stop, true);
	pthread_join(ch, NULL);
	ASSERT_UEQ(weft_counter_value(sh.c), THREADS * ITERS);
	ASSERT_TRUE(weft_gauge_value(sh.g) == THREADS * ITERS);
	ASSERT_UEQ(weft_hist_count(sh.h), THREADS * ITERS);
	char *text = prom(sh.m);
	char want[64];
	snprintf(want, sizeof(want), "ops_total %d\n", THREADS * ITERS);
	ASSERT_CONTAINS(text, want);
	snprintf(want, sizeof(want), "op_seconds_count %d\n", THREADS * ITERS);
	ASSERT_CONTAINS(text, want);
	ASSERT_NOT_CONTAINS(text, "churn{");
	free(text);
	ASSERT_EQ(weft_metrics_size(sh.m), 3);
	weft_metrics_destroy(sh.m);
}

/* --- the global registry -----------------------------------------------------------------------
 */

static void *get_global(void *arg)
{
	weft_metrics **ret = arg;
	ASSERT_OK(weft_metrics_global(ret));
	return NULL;
}

TEST(global_registry)
{
	ASSERT_ERR(weft_metrics_global(NULL), -EINVAL);
	/* Each case runs in a fresh child: the first creation may race and may fail. */
	weft__fault_arm(WEFT__FAULT_ALLOC, 1, false);
	weft_metrics *g0;
	ASSERT_ERR(weft_metrics_global(&g0), -ENOMEM);
	weft_metrics *got[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, get_global, &got[i]), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	weft_metrics *g;
	ASSERT_OK(weft_metrics_global(&g));
	for (int i = 0; i < 4; i++)
		ASSERT_TRUE(got[i] == g);
	weft_counter *c;
	ASSERT_OK(weft_metrics_counter(g, "global_total", "", NULL, &c));
	weft_metrics_destroy(g); /* ignored: the global registry lives as long as the process */
	weft_metrics *again;
	ASSERT_OK(weft_metrics_global(&again));
	ASSERT_TRUE(again == g);
	weft_counter_add(c, 1);
	ASSERT_EQ(weft_metrics_size(g), 1);
	ASSERT_OK(weft_metrics_remove(g, c));
}

/* --- fault injection ------------------------------------------------------------------------- */

/* Run `reg` with the n-th allocation failing for n = 1, 2, ... until it succeeds; every failure
 * must be -ENOMEM and leave the registry as it was. Returns the number of failures. */
static int fault_loop(weft_metrics *m, int (*reg)(weft_metrics *m))
{
	size_t before = weft_metrics_size(m);
	for (long n = 1;; n++) {
		weft__fault_arm(WEFT__FAULT_ALLOC, n, false);
		int r = reg(m);
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (r == 0) {
			ASSERT_EQ(weft_metrics_size(m), before + 1);
			return (int)n - 1;
		}
		ASSERT_ERR(r, -ENOMEM);
		ASSERT_EQ(weft_metrics_size(m), before);
		ASSERT_TRUE(n < 100);
	}
}

static const char *const fl_a[] = {"k", "a", NULL};
static const char *const fl_b[] = {"k", "b", NULL};

static int reg_counter_new(weft_metrics *m)
{
	weft_counter *c;
	return weft_metrics_counter(m, "fc_total", "Help.", fl_a, &c);
}

static int reg_counter_existing(weft_metrics *m)
{
	weft_counter *c;
	return weft_metrics_counter(m, "fc_total", "Help.", fl_b, &c);
}

static int reg_gauge(weft_metrics *m)
{
	weft_gauge *g;
	return weft_metrics_gauge(m, "fg", "", fl_a, &g);
}

static int reg_gauge_fn(weft_metrics *m)
{
	weft_gauge *g;
	return weft_metrics_gauge_fn(m, "fgf", "", NULL, seven, NULL, &g);
}

static int reg_hist_new(weft_metrics *m)
{
	weft_hist *h;
	return weft_metrics_histogram(m, "fh_seconds", "", fl_a, NULL, &h);
}

static int reg_hist_existing(weft_metrics *m)
{
	weft_hist *h;
	return weft_metrics_histogram(m, "fh_seconds", "", fl_b, NULL, &h);
}

TEST(fault_injection_register)
{
	weft_metrics *m;
	for (long n = 1;; n++) {
		weft__fault_arm(WEFT__FAULT_ALLOC, n, false);
		int r = weft_metrics_create(&m, NULL);
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (r == 0)
			break;
		ASSERT_ERR(r, -ENOMEM);
		ASSERT_TRUE(n < 10);
	}
	ASSERT_GE(fault_loop(m, reg_counter_new), 2);      /* family, series */
	ASSERT_GE(fault_loop(m, reg_counter_existing), 1); /* series */
	ASSERT_GE(fault_loop(m, reg_gauge), 2);
	ASSERT_GE(fault_loop(m, reg_gauge_fn), 2);
	ASSERT_GE(fault_loop(m, reg_hist_new), 3); /* family, histogram, series */
	ASSERT_GE(fault_loop(m, reg_hist_existing), 2);
	ASSERT_EQ(weft_metrics_size(m), 6);
	weft_metrics_destroy(m);
}

TEST(fault_injection_export)
{
	weft_metrics *m = new_registry(0);
	char v[16];
	const char *l[] = {"i", v, NULL};
	for (int i = 0; i < 50; i++) {
		snprintf(v, sizeof(v), "%d", i);
		weft_counter *c;
		weft_hist *h;
		ASSERT_OK(weft_metrics_counter(m, "exp_total", "", l, &c));
		ASSERT_OK(weft_metrics_histogram(m, "exp_seconds", "", l, NULL, &h));
		weft_hist_record(h, i * 1000);
	}
	int (*fns[2])(weft_metrics *, char **, size_t *) = {weft_metrics_prometheus,
	                                                    weft_metrics_json};
	for (int f = 0; f < 2; f++) {
		char *t;
		long n;
		for (n = 1;; n++) {
			t = NULL;
			weft__fault_arm(WEFT__FAULT_ALLOC, n, false);
			int r = fns[f](m, &t, NULL);
			weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
			if (r == 0)
				break;
			ASSERT_ERR(r, -ENOMEM);
			ASSERT_NULL(t);
			ASSERT_TRUE(n < 100);
		}
		ASSERT_GE(n, 5); /* the buffer grew several times */
		free(t);
	}
	weft_metrics_destroy(m);
}

/* --- promtool -------------------------------------------------------------------------------- */

TEST_TIMEOUT(promtool_accepts_text, 60)
{
	if (!th_have_program("promtool"))
		SKIP("promtool not installed (scripts/deps installs prometheus)");
	weft_metrics *m = new_registry(0);
	weft_counter *c1, *c2;
	weft_gauge *g, *gn, *gf;
	weft_hist *h1, *h2;
	static const char *const get[] = {"method", "GET", "path", "/a \"b\"\\c\nd", NULL};
	static const char *const post[] = {"method", "POST", "path", "/", NULL};
	ASSERT_OK(weft_metrics_counter(m, "demo_requests_total",
	                               "Requests, by \\ method\nand path.", get, &c1));
	ASSERT_OK(weft_metrics_counter(m, "demo_requests_total",
	                               "Requests, by \\ method\nand path.", post, &c2));
	ASSERT_OK(weft_metrics_gauge(m, "demo_temperature_celsius", "Temperature.", get, &g));
	ASSERT_OK(weft_metrics_gauge(m, "demo_temperature_celsius", "Temperature.", post, &gn));
	ASSERT_OK(weft_metrics_gauge_fn(m, "demo_queue_length", "Queue length.", NULL, seven, NULL,
	                                &gf));
	ASSERT_OK(weft_metrics_histogram(m, "demo_request_duration_seconds", "Request time.", get,
	                                 NULL, &h1));
	ASSERT_OK(weft_metrics_histogram(m, "demo_request_duration_seconds", "Request time.", post,
	                                 NULL, &h2));
	weft_counter_add(c1, 4242);
	weft_gauge_set(g, -3.5e-7);
	weft_gauge_set(gn, NAN);
	for (int i = 0; i < 1000; i++)
		weft_hist_record(h1, (int64_t)i * 7919);
	weft_hist_record(h2, WEFT_SEC(1000));

	char *t = prom(m);
	char path[512];
	snprintf(path, sizeof(path), "%s/metrics.prom", th_tmpdir());
	th_write_file(path, t);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "promtool check metrics < '%s'", path);
	char *const argv[] = {"sh", "-c", cmd, NULL};
	char *out = NULL;
	int st = th_run(argv, 30, true, &out);
	if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
		FAIL("promtool check metrics: status %d, output:\n%s\ntext:\n%s", st, out, t);
	free(out);
	free(t);

	/* promtool does read the text: it rejects a broken one. */
	th_write_file(path, "# TYPE x counter\nx{a=\"unterminated} 1\n");
	out = NULL;
	st = th_run(argv, 30, true, &out);
	ASSERT_TRUE(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) != 0);
	free(out);
	weft_metrics_destroy(m);
}
