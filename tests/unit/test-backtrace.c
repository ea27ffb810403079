/* Backtrace capture and symbolization: capture semantics (skip, max, the walk limit), capture in a
 * signal handler on another thread, no allocation after init, and symbolization on both backends
 * (libdw and elf, chosen with WEFT_SYMBOLIZER) of static and non-static functions in this binary,
 * of libc, of a library loaded after the symbolizer, and of pcs in no module.
 *
 * The libdw cases SKIP when weft was built without libdw (create says -ENOTSUP), so a build
 * without it is visible in the TAP output and fails under WEFT_TEST_NO_SKIP=1. With libdw, the
 * cases require file:line for this file's functions (the tests are built with -g).
 *
 * The helpers are noipa (no inlining, cloning or tail calls across them), so each is a frame of
 * its own under its own name; some are static, some not, to see that both are named. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "internal/alloc.h"

#define NOIPA __attribute__((noipa))
#define BARRIER() __asm__ volatile("" ::: "memory")

/* ------------------------------------------------------------------------------------------------
 * Allocation counting, for "capture does not allocate": sanitizer builds install the runtime's
 * malloc hook; plain builds interpose malloc, calloc and realloc and forward to glibc's. Only
 * allocations by a thread that has set `counting` are counted.
 */
static __thread bool counting;
static atomic_long allocs;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

static void count_hook(const volatile void *p, size_t n)
{
	if (counting)
		atomic_fetch_add(&allocs, 1);
}

static void free_hook(const volatile void *p)
{
}

static void count_start(void)
{
	static bool installed;
	if (!installed)
		ASSERT_TRUE(__sanitizer_install_malloc_and_free_hooks(count_hook, free_hook) != 0);
	installed = true;
	atomic_store(&allocs, 0);
	counting = true;
}
#else
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t nmemb, size_t size);
void *__libc_realloc(void *p, size_t n);

void *malloc(size_t n)
{
	if (counting)
		atomic_fetch_add(&allocs, 1);
	return __libc_malloc(n);
}

void *calloc(size_t nmemb, size_t size)
{
	if (counting)
		atomic_fetch_add(&allocs, 1);
	return __libc_calloc(nmemb, size);
}

void *realloc(void *p, size_t n)
{
	if (counting)
		atomic_fetch_add(&allocs, 1);
	return __libc_realloc(p, n);
}

static void count_start(void)
{
	atomic_store(&allocs, 0);
	counting = true;
}
#endif

static long count_stop(void)
{
	counting = false;
	return atomic_load(&allocs);
}

/* ------------------------------------------------------------------------------------------------
 * The call chain chain_a -> chain_b -> chain_c -> weft_backtrace, with the line of each call.
 */
static int line_a, line_b, line_c;

int chain_a(void **frames, int max, int skip);
int chain_c(void **frames, int max, int skip);

NOIPA int chain_c(void **frames, int max, int skip)
{
	int n = (line_c = __LINE__, weft_backtrace(frames, max, skip));
	BARRIER();
	return n;
}

NOIPA static int chain_b(void **frames, int max, int skip)
{
	int n = (line_b = __LINE__, chain_c(frames, max, skip));
	BARRIER();
	return n;
}

NOIPA int chain_a(void **frames, int max, int skip)
{
	int n = (line_a = __LINE__, chain_b(frames, max, skip));
	BARRIER();
	return n;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

/* This test binary's path, symbolic links resolved. Static storage. */
static const char *exe_path(void)
{
	static char path[4096];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	ASSERT_GT(n, 0);
	path[n] = '\0';
	return path;
}

/* Each case runs in its own process, so setting the variable for the case is enough. */
static void use_backend(const char *name)
{
	ASSERT_EQ(setenv("WEFT_SYMBOLIZER", name, 1), 0);
	weft_symbolizer *s;
	int r = weft_symbolizer_create(&s);
	if (r == -ENOTSUP)
		SKIP("weft was built without libdw");
	ASSERT_OK(r);
	weft_symbolizer_destroy(s);
}

/* A case body run once per backend: `dw` is true on libdw. */
#define BOTH(name)                                                                                 \
	NOIPA static void name##_body(bool dw);                                                    \
	TEST(name##_libdw)                                                                         \
	{                                                                                          \
		use_backend("libdw");                                                              \
		name##_body(true);                                                                 \
	}                                                                                          \
	TEST(name##_elf)                                                                           \
	{                                                                                          \
		use_backend("elf");                                                                \
		name##_body(false);                                                                \
	}                                                                                          \
	NOIPA static void name##_body(bool dw)

/* ------------------------------------------------------------------------------------------------
 * Capture
 */

TEST(init_is_idempotent)
{
	ASSERT_EQ(weft_backtrace_init(), 0);
	ASSERT_EQ(weft_backtrace_init(), 0);
	void *f[8];
	ASSERT_GE(chain_a(f, 8, 0), 3);
}

TEST(argument_validation)
{
	void *f[8];
	ASSERT_ERR(weft_backtrace(NULL, 8, 0), -EINVAL);
	ASSERT_ERR(weft_backtrace(f, -1, 0), -EINVAL);
	ASSERT_ERR(weft_backtrace(f, 8, -1), -EINVAL);
	ASSERT_EQ(weft_backtrace(f, 0, 0), 0);

	ASSERT_ERR(weft_symbolizer_create(NULL), -EINVAL);
	weft_symbolizer_destroy(NULL);

	const char *func = "sentinel";
	ASSERT_ERR(
	        weft_symbolizer_lookup(NULL, (void *)weft_backtrace, &func, NULL, NULL, NULL, NULL),
	        -EINVAL);
	ASSERT_STR_EQ(func, "sentinel");

	char *text = (char *)"sentinel";
	ASSERT_ERR(weft_backtrace_format(NULL, 1, &text), -EINVAL);
	ASSERT_ERR(weft_backtrace_format(f, -1, &text), -EINVAL);
	ASSERT_ERR(weft_backtrace_format(f, 1, NULL), -EINVAL);
	ASSERT_STR_EQ(text, "sentinel");
	ASSERT_OK(weft_backtrace_format(NULL, 0, &text));
	ASSERT_STR_EQ(text, "");
	free(text);

	weft_symbolizer *s = NULL;
	ASSERT_EQ(setenv("WEFT_SYMBOLIZER", "gdb", 1), 0);
	ASSERT_ERR(weft_symbolizer_create(&s), -EINVAL);
	ASSERT_NULL(s);
	ASSERT_GE(chain_a(f, 8, 0), 1);
	ASSERT_ERR(weft_backtrace_format(f, 1, &text), -EINVAL);
	ASSERT_OK(weft_backtrace_format(f, 0, &text)); /* no frames: no symbolizer made */
	ASSERT_STR_EQ(text, "");
	free(text);
	ASSERT_EQ(setenv("WEFT_SYMBOLIZER", "auto", 1), 0);
	ASSERT_OK(weft_symbolizer_create(&s));
	weft_symbolizer_destroy(s);
}

TEST(errno_is_preserved)
{
	void *f[8];
	errno = 1234;
	ASSERT_GE(chain_a(f, 8, 0), 3);
	ASSERT_EQ(errno, 1234);
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	ASSERT_EQ(errno, 1234);
	ASSERT_OK(weft_symbolizer_lookup(s, f[0], NULL, NULL, NULL, NULL, NULL));
	ASSERT_ERR(weft_symbolizer_lookup(s, (void *)16, NULL, NULL, NULL, NULL, NULL), -ENOENT);
	ASSERT_EQ(errno, 1234);
	weft_symbolizer_destroy(s);
	ASSERT_EQ(errno, 1234);
}

TEST(skip_drops_inner_frames)
{
	void *f0[64], *f1[64], *f2[64];
	int n0 = chain_a(f0, 64, 0);
	int n1 = chain_a(f1, 64, 1);
	int n2 = chain_a(f2, 64, 2);
	/* chain_c, chain_b, chain_a, this case, the harness, main, libc start-up. */
	ASSERT_GE(n0, 6);
	ASSERT_LT(n0, 64);
	ASSERT_EQ(n1, n0 - 1);
	ASSERT_EQ(n2, n0 - 2);
	/* The same return addresses one and two places further in, but for frame 3 of f0: the
	 * return address in this case, which is another call site for each capture. */
	for (int i = 0; i < n1; i++)
		if (i + 1 != 3)
			ASSERT_TRUE(f1[i] == f0[i + 1]);
	for (int i = 0; i < n2; i++)
		if (i + 2 != 3)
			ASSERT_TRUE(f2[i] == f0[i + 2]);
	ASSERT_TRUE(f1[2] != f0[3] && f2[1] != f0[3]);
	/* Each frame is distinct: the chain's frames are return addresses in different functions.
	 */
	ASSERT_TRUE(f0[0] != f0[1] && f0[1] != f0[2]);

	/* The outermost frame alone (outside this case, so the same whatever the call site), then
	 * nothing. */
	ASSERT_EQ(chain_a(f1, 64, n0 - 1), 1);
	ASSERT_TRUE(f1[0] == f0[n0 - 1]);
	ASSERT_EQ(chain_a(f1, 64, n0), 0);
	ASSERT_EQ(chain_a(f1, 64, 1000000), 0);
	ASSERT_EQ(chain_a(f1, 64, INT32_MAX), 0);
}

TEST(max_bounds_the_count)
{
	void *f0[64], *f1[4];
	int n0 = chain_a(f0, 64, 0);
	ASSERT_GE(n0, 4);
	for (int max = 0; max <= 3; max++) {
		void *f[4] = {NULL, NULL, NULL, NULL};
		ASSERT_EQ(chain_a(f, max, 0), max);
		for (int i = 0; i < max; i++)
			ASSERT_TRUE(f[i] == f0[i]);
		for (int i = max; i < 4; i++)
			ASSERT_NULL(f[i]); /* nothing written past max */
	}
	ASSERT_EQ(chain_a(f1, 2, 1), 2);
	ASSERT_TRUE(f1[0] == f0[1] && f1[1] == f0[2]);
	ASSERT_EQ(chain_a(f0, INT32_MAX, 0), n0);
}

NOIPA static int recurse(int depth, void **frames, int max)
{
	if (depth == 0)
		return weft_backtrace(frames, max, 0);
	int n = recurse(depth - 1, frames, max);
	BARRIER();
	return n;
}

TEST(deep_stack_is_cut_at_the_walk_limit)
{
	void *f[512];
	ASSERT_EQ(recurse(300, f, WEFT_BACKTRACE_MAX), WEFT_BACKTRACE_MAX);
	/* 256 frames are walked; ours (and a sanitizer's backtrace interceptor) are dropped. */
	int n = recurse(300, f, 512);
	ASSERT_GE(n, 250);
	ASSERT_LE(n, 255);
	for (int i = 1; i < n; i++)
		ASSERT_TRUE(f[i] == f[1]); /* all the same return address inside recurse */
}

/* Under valgrind, its own malloc replaces both this file's interposer and the sanitizer hooks, so
 * allocations cannot be counted there; the plain, ASan and TSan builds count them. */
static bool under_valgrind(void)
{
	const char *p = getenv("LD_PRELOAD");
	return p && strstr(p, "vgpreload");
}

/* ------------------------------------------------------------------------------------------------
 * No allocation after init
 */
static void *capture_counted(void *arg)
{
	long *ret = arg;
	void *f[WEFT_BACKTRACE_MAX];
	count_start();
	for (int i = 0; i < 100; i++)
		ASSERT_GE(chain_a(f, WEFT_BACKTRACE_MAX, 0), 3);
	*ret = count_stop();
	return NULL;
}

TEST(capture_does_not_allocate_after_init)
{
	ASSERT_EQ(weft_backtrace_init(), 0);
	if (under_valgrind()) {
		void *f[WEFT_BACKTRACE_MAX];
		ASSERT_GE(chain_a(f, WEFT_BACKTRACE_MAX, 0), 3);
		printf("# allocation counting is not possible under valgrind; counted in the other "
		       "builds\n");
		return;
	}
	/* The counter works: a real allocation is seen (through a volatile pointer, so that the
	 * compiler cannot drop the pair). */
	void *(*volatile do_malloc)(size_t) = malloc;
	count_start();
	free(do_malloc(16));
	ASSERT_EQ(count_stop(), 1);

	long n = -1;
	capture_counted(&n);
	ASSERT_EQ(n, 0);
	/* And on a thread that never captured before. */
	pthread_t t;
	n = -1;
	ASSERT_EQ(pthread_create(&t, NULL, capture_counted, &n), 0);
	ASSERT_EQ(pthread_join(t, NULL), 0);
	ASSERT_EQ(n, 0);
}

/* ------------------------------------------------------------------------------------------------
 * Symbolization
 */

BOTH(chain_is_symbolized)
{
	void *f[64];
	int n = chain_a(f, 64, 0);
	ASSERT_GE(n, 4);
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	const char *want[] = {"chain_c", "chain_b", "chain_a", "chain_is_symbolized_body"};
	const int lines[] = {line_c, line_b, line_a};
	const char *first_func = NULL, *first_module = NULL;
	for (int i = 0; i < 4; i++) {
		const char *func = NULL, *file = NULL, *module = NULL;
		uintptr_t off = 0;
		int line = -1;
		ASSERT_OK(weft_symbolizer_lookup(s, f[i], &func, &off, &file, &line, &module));
		ASSERT_STR_EQ(func, want[i]);
		ASSERT_GT(off, 0);
		ASSERT_LT(off, 4096);
		ASSERT_NOT_NULL(module);
		ASSERT_STR_EQ(module, exe_path());
		if (dw) {
			ASSERT_NOT_NULL(file);
			if (!ends_with(file, "test-backtrace.c"))
				FAIL("frame %d: file %s", i, file);
			if (i < 3)
				ASSERT_NEAR(line, lines[i], 2);
			else
				ASSERT_GT(line, lines[0]);
		} else {
			ASSERT_NULL(file);
			ASSERT_EQ(line, 0);
		}
		if (i == 0) {
			first_func = func;
			first_module = module;
		}
	}
	/* Strings live as long as the symbolizer: look up more, then read the first ones again. */
	for (int i = n - 1; i >= 0; i--)
		weft_symbolizer_lookup(s, f[i], NULL, NULL, NULL, NULL, NULL);
	ASSERT_STR_EQ(first_func, "chain_c");
	ASSERT_STR_EQ(first_module, exe_path());
	/* Every ret_ may be NULL. */
	ASSERT_OK(weft_symbolizer_lookup(s, f[1], NULL, NULL, NULL, NULL, NULL));
	/* libc's start-up is named without a symbol version ("__libc_start_main@@GLIBC_2.34" in
	 * libc's debug file's .symtab). */
	bool start_main = false;
	for (int i = 4; i < n; i++) {
		const char *func;
		if (weft_symbolizer_lookup(s, f[i], &func, NULL, NULL, NULL, NULL) == 0 &&
		    strncmp(func, "__libc_start_main", 17) == 0) {
			ASSERT_STR_EQ(func, "__libc_start_main");
			start_main = true;
		}
	}
	ASSERT_TRUE(start_main);
	weft_symbolizer_destroy(s);
}

/* Module tables, symbol tables and file names are cached: a pc looked up before, and another in
 * the same modules, need no allocation (with every allocation failing they still succeed). */
BOTH(lookups_after_the_first_allocate_nothing)
{
	void *f[64];
	int n = chain_a(f, 64, 0);
	ASSERT_GE(n, 4);
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	for (int i = 0; i < n; i++)
		ASSERT_OK(weft_symbolizer_lookup(s, f[i], NULL, NULL, NULL, NULL, NULL));
	weft__fault_arm(WEFT__FAULT_ALLOC, 1, true);
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < n; i++) {
			const char *func, *file;
			int line;
			ASSERT_OK(weft_symbolizer_lookup(s, f[i], &func, NULL, &file, &line, NULL));
			if (i < 3)
				ASSERT_TRUE(strncmp(func, "chain_", 6) == 0);
			if (dw && i < 3)
				ASSERT_NOT_NULL(file);
		}
	}
	/* A function not looked up yet, in a module that was. */
	const char *func;
	ASSERT_OK(weft_symbolizer_lookup(s, (char *)(uintptr_t)recurse + 1, &func, NULL, NULL, NULL,
	                                 NULL));
	ASSERT_STR_EQ(func, "recurse");
	ASSERT_EQ(weft__fault_injected(WEFT__FAULT_ALLOC), 0);
	weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
	weft_symbolizer_destroy(s);
}

BOTH(pc_in_no_module)
{
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	const char *func = "sentinel";
	ASSERT_ERR(weft_symbolizer_lookup(s, (void *)16, &func, NULL, NULL, NULL, NULL), -ENOENT);
	ASSERT_ERR(weft_symbolizer_lookup(s, NULL, &func, NULL, NULL, NULL, NULL), -ENOENT);
	ASSERT_ERR(weft_symbolizer_lookup(s, (void *)UINTPTR_MAX, &func, NULL, NULL, NULL, NULL),
	           -ENOENT);
	/* Mapped, but anonymous: no module either. */
	char *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_TRUE(page != MAP_FAILED);
	ASSERT_ERR(weft_symbolizer_lookup(s, page + 16, &func, NULL, NULL, NULL, NULL), -ENOENT);
	ASSERT_STR_EQ(func, "sentinel");
	munmap(page, 4096);
	/* The symbolizer still works after misses. */
	void *f[8];
	ASSERT_GE(chain_a(f, 8, 0), 3);
	ASSERT_OK(weft_symbolizer_lookup(s, f[0], &func, NULL, NULL, NULL, NULL));
	ASSERT_STR_EQ(func, "chain_c");
	weft_symbolizer_destroy(s);
}

static void *qsort_frames[WEFT_BACKTRACE_MAX];
static int qsort_nframes;

static int compare_ints(const void *a, const void *b)
{
	/* Every call, so the last capture wins: sanitizers' qsort interceptors call the comparator
	 * themselves first, before libc's qsort does. */
	qsort_nframes = weft_backtrace(qsort_frames, WEFT_BACKTRACE_MAX, 0);
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

/* The first frame in libc, with its name, file and line; fails if none has a name. */
static void find_libc_frame(weft_symbolizer *s, const char **ret_func, const char **ret_file)
{
	int v[64];
	for (int i = 0; i < 64; i++)
		v[i] = (i * 37) % 64;
	qsort_nframes = 0;
	qsort(v, 64, sizeof(v[0]), compare_ints);
	ASSERT_GT(qsort_nframes, 2);
	for (int i = 0; i < qsort_nframes; i++) {
		const char *func, *file, *module;
		if (weft_symbolizer_lookup(s, qsort_frames[i], &func, NULL, &file, NULL, &module) <
		    0)
			continue;
		if (strncmp(base_name(module), "libc.so", 7) != 0 &&
		    strncmp(base_name(module), "libc-", 5) != 0)
			continue;
		if (strstr(func, "qsort") || strstr(func, "msort")) {
			*ret_func = func;
			*ret_file = file;
			return;
		}
	}
	char *text = NULL;
	weft_backtrace_format(qsort_frames, qsort_nframes, &text);
	FAIL("no frame in libc named qsort or msort:\n%s", text ? text : "(format failed)");
}

BOTH(libc_frames_are_named)
{
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	const char *func, *file;
	find_libc_frame(s, &func, &file);
	/* The comparator is ours, the frame above it libc's. */
	const char *cmp;
	ASSERT_OK(weft_symbolizer_lookup(s, qsort_frames[0], &cmp, NULL, NULL, NULL, NULL));
	ASSERT_STR_EQ(cmp, "compare_ints");
	if (!dw)
		ASSERT_NULL(file);
	weft_symbolizer_destroy(s);
}

TEST(debuginfod_urls_keep_the_lookup_local)
{
	use_backend("libdw");
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	const char *func, *file;
	find_libc_frame(s, &func, &file);
	if (!file) {
		weft_symbolizer_destroy(s);
		SKIP("no separate debug info for libc installed (libc6-dbg)");
	}
	char *want = strdup(file);
	weft_symbolizer_destroy(s);

	/* Nothing listens on port 9 of loopback: were it asked, the lookup would fail fast; the
	 * build-id tree alone must give the same file. */
	ASSERT_EQ(setenv("DEBUGINFOD_URLS", "http://127.0.0.1:9", 1), 0);
	ASSERT_OK(weft_symbolizer_create(&s));
	find_libc_frame(s, &func, &file);
	ASSERT_STR_EQ(file, want);
	weft_symbolizer_destroy(s);
	free(want);
}

BOTH(library_loaded_after_create_is_found)
{
	if (dlopen("libcrypt.so.1", RTLD_NOW | RTLD_NOLOAD))
		SKIP("libcrypt.so.1 is loaded already");
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	void *h = dlopen("libcrypt.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		weft_symbolizer_destroy(s);
		SKIP("libcrypt.so.1 cannot be loaded");
	}
	void *fn = dlsym(h, "crypt");
	ASSERT_NOT_NULL(fn);
	const char *func, *module;
	uintptr_t off;
	/* As a return address just after the function's first byte: pc - 1 is its start. */
	ASSERT_OK(weft_symbolizer_lookup(s, (char *)fn + 1, &func, &off, NULL, NULL, &module));
	/* The path with links resolved (libcrypt.so.1 -> libcrypt.so.1.1.0 or so), on both. */
	char *real = realpath(module, NULL);
	ASSERT_NOT_NULL(real);
	ASSERT_STR_EQ(module, real);
	free(real);
	if (strncmp(base_name(module), "libcrypt.so.1", 13) != 0)
		FAIL("module %s", module);
	ASSERT_CONTAINS(func, "crypt");
	ASSERT_EQ(off, 1);
	weft_symbolizer_destroy(s);
	dlclose(h);
}

/* The vDSO is in memory only: the elf backend has no file to read and names it from the loader's
 * table of exported symbols; libdw reads it from memory. */
BOTH(vdso_functions_are_named)
{
	void *h = dlopen("linux-vdso.so.1", RTLD_NOW | RTLD_NOLOAD);
	if (!h && under_valgrind()) {
		/* valgrind maps no vDSO into the programs it runs; the other builds check this */
		printf("# valgrind maps no vDSO: nothing to symbolize\n");
		return;
	}
	if (!h)
		SKIP("no vDSO in this process");
	void *fn = dlsym(h, "__vdso_clock_gettime");
	dlclose(h);
	if (!fn)
		SKIP("the vDSO has no __vdso_clock_gettime");
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	const char *func, *module;
	uintptr_t off;
	ASSERT_OK(weft_symbolizer_lookup(s, (char *)fn + 1, &func, &off, NULL, NULL, &module));
	ASSERT_CONTAINS(func, "clock_gettime");
	ASSERT_EQ(off, 1);
	ASSERT_CONTAINS(module, "vdso");
	weft_symbolizer_destroy(s);
}

BOTH(format_shape)
{
	void *f[65];
	int n = chain_a(f, 64, 0);
	ASSERT_GE(n, 4);
	f[n++] = (void *)16;
	char *text;
	ASSERT_OK(weft_backtrace_format(f, n, &text));

	int lines = 0;
	for (const char *p = text; *p; p++)
		lines += *p == '\n';
	ASSERT_EQ(lines, n);
	ASSERT_TRUE(ends_with(text, "\n"));

	char want[4400];
	snprintf(want, sizeof(want), "#0  0x%" PRIxPTR "  chain_c+0x", (uintptr_t)f[0]);
	ASSERT_EQ(strncmp(text, want, strlen(want)), 0);
	const char *eol = strchr(text, '\n');
	char *first = strndup(text, (size_t)(eol - text));
	char module[4200];
	snprintf(module, sizeof(module), " (%s)", base_name(exe_path()));
	ASSERT_TRUE(ends_with(first, module));
	if (dw) {
		snprintf(want, sizeof(want), "/tests/unit/test-backtrace.c:%d%s", line_c, module);
		ASSERT_CONTAINS(first, " at /");
		ASSERT_CONTAINS(first, want);
		ASSERT_NOT_CONTAINS(first, "/../"); /* the compilation folder's path, normalised */
	} else {
		snprintf(want, sizeof(want), " at ??%s", module);
		ASSERT_CONTAINS(first, want);
	}
	free(first);
	snprintf(want, sizeof(want), "\n#1  0x%" PRIxPTR "  chain_b+0x", (uintptr_t)f[1]);
	ASSERT_CONTAINS(text, want);
	snprintf(want, sizeof(want), "\n#%d  0x10  ?? at ?? (?\?)\n", n - 1);
	ASSERT_TRUE(ends_with(text, want));
	free(text);
}

/* ------------------------------------------------------------------------------------------------
 * Fault injection: every allocation of create and format fails in turn.
 */
BOTH(create_under_fault_injection)
{
	for (long k = 1;; k++) {
		ASSERT_LT(k, 100);
		weft_symbolizer *s = NULL;
		weft__fault_arm(WEFT__FAULT_ALLOC, k, false);
		int r = weft_symbolizer_create(&s);
		long injected = weft__fault_injected(WEFT__FAULT_ALLOC);
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (r == 0) {
			ASSERT_EQ(injected, 0);
			ASSERT_NOT_NULL(s);
			weft_symbolizer_destroy(s);
			break;
		}
		ASSERT_ERR(r, -ENOMEM);
		ASSERT_EQ(injected, 1);
		ASSERT_NULL(s);
	}
}

BOTH(format_under_fault_injection)
{
	void *f[64];
	int n = chain_a(f, 63, 0);
	ASSERT_GE(n, 4);
	f[n++] = (void *)16;
	long failures = 0;
	for (long k = 1;; k++) {
		ASSERT_LT(k, 1000);
		char *text = NULL;
		weft__fault_arm(WEFT__FAULT_ALLOC, k, false);
		int r = weft_backtrace_format(f, n, &text);
		long injected = weft__fault_injected(WEFT__FAULT_ALLOC);
		weft__fault_arm(WEFT__FAULT_ALLOC, 0, false);
		if (r == 0) {
			ASSERT_EQ(injected, 0);
			ASSERT_CONTAINS(text, "chain_a+0x");
			free(text);
			break;
		}
		ASSERT_ERR(r, -ENOMEM);
		ASSERT_EQ(injected, 1);
		ASSERT_NULL(text);
		failures++;
	}
	/* The symbolizer, the text and (elf) the module tables: several allocations. */
	ASSERT_GE(failures, 2);
}

/* ------------------------------------------------------------------------------------------------
 * Threads: capture in a signal handler on another thread; one symbolizer shared by two threads.
 */
static void *sig_frames[WEFT_BACKTRACE_MAX];
static volatile sig_atomic_t sig_nframes;
static sem_t sig_done;
static atomic_bool blocked_entered;

static void on_signal(int sig)
{
	int saved = errno;
	sig_nframes = weft_backtrace(sig_frames, WEFT_BACKTRACE_MAX, 0);
	sem_post(&sig_done);
	errno = saved;
}

void blocked_here(int fd);

NOIPA void blocked_here(int fd)
{
	atomic_store(&blocked_entered, true);
	/* poll, not read: TSan runs a signal handler at once only in the calls it knows to block,
	 * and defers it past a read() that never returns. */
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	while (poll(&pfd, 1, -1) < 0 && errno == EINTR)
		;
	BARRIER();
}

NOIPA static void *blocked_thread(void *arg)
{
	blocked_here(*(int *)arg);
	BARRIER();
	return NULL;
}

BOTH(capture_in_signal_handler_on_another_thread)
{
	ASSERT_EQ(weft_backtrace_init(), 0);
	ASSERT_EQ(sem_init(&sig_done, 0, 0), 0);
	struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
	sigemptyset(&sa.sa_mask);
	ASSERT_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
	int p[2];
	ASSERT_EQ(pipe(p), 0);
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, blocked_thread, &p[0]), 0);
	while (!atomic_load(&blocked_entered))
		th_sleep_ms(1);
	th_sleep_ms(20); /* most likely in read() by now; anywhere inside blocked_here will do */
	ASSERT_EQ(pthread_kill(t, SIGUSR1), 0);
	while (sem_wait(&sig_done) < 0 && errno == EINTR)
		;
	ASSERT_EQ(write(p[1], "x", 1), 1);
	ASSERT_EQ(pthread_join(t, NULL), 0);
	close(p[0]);
	close(p[1]);
	sem_destroy(&sig_done);

	int n = sig_nframes;
	ASSERT_GE(n, 3);
	weft_symbolizer *s;
	ASSERT_OK(weft_symbolizer_create(&s));
	const char *func;
	ASSERT_OK(weft_symbolizer_lookup(s, sig_frames[0], &func, NULL, NULL, NULL, NULL));
	ASSERT_STR_EQ(func, "on_signal");
	int at_blocked = -1, at_thread = -1;
	for (int i = 1; i < n; i++) {
		if (weft_symbolizer_lookup(s, sig_frames[i], &func, NULL, NULL, NULL, NULL) < 0)
			continue;
		if (at_blocked < 0 && strcmp(func, "blocked_here") == 0)
			at_blocked = i;
		if (at_thread < 0 && strcmp(func, "blocked_thread") == 0)
			at_thread = i;
	}
	if (at_blocked < 0 || at_thread != at_blocked + 1) {
		char *text = NULL;
		weft_backtrace_format(sig_frames, n, &text);
		FAIL("blocked_here then blocked_thread not found (%d, %d):\n%s", at_blocked,
		     at_thread, text ? text : "(format failed)");
	}
	weft_symbolizer_destroy(s);
}

struct shared {
	weft_symbolizer *s;
	void **frames;
	int n;
	const char *const *want;
	atomic_long mismatches;
};

static void *lookup_many(void *arg)
{
	struct shared *sh = arg;
	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < sh->n; i++) {
			const char *func;
			int r = weft_symbolizer_lookup(sh->s, sh->frames[i], &func, NULL, NULL,
			                               NULL, NULL);
			if (r < 0 || (i < 3 && strcmp(func, sh->want[i]) != 0))
				atomic_fetch_add(&sh->mismatches, 1);
		}
	}
	return NULL;
}

BOTH(symbolizer_shared_by_two_threads)
{
	void *f[64];
	int n = chain_a(f, 64, 0);
	ASSERT_GE(n, 4);
	const char *const want[] = {"chain_c", "chain_b", "chain_a"};
	struct shared sh = {.frames = f, .n = n, .want = want};
	ASSERT_OK(weft_symbolizer_create(&sh.s));
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, lookup_many, &sh), 0);
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
	ASSERT_EQ(atomic_load(&sh.mismatches), 0);
	weft_symbolizer_destroy(sh.s);
	(void)dw;
}
