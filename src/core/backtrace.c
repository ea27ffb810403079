/* backtrace.c: capture of the calling thread's return addresses, and their symbolization.
 *
 * Capture. glibc's backtrace() walks the stack with libgcc's unwinder, which reads .eh_frame, so
 * it works without frame pointers. Its first call dlopens libgcc_s (allocation, the loader lock),
 * which is why weft_backtrace_init makes that first call once (pthread_once); after it a capture
 * takes no lock and allocates nothing, and may run in a signal handler. weft_backtrace walks into
 * a stack buffer of at most WALK_MAX entries (2 KiB), finds its caller's frame by the caller's
 * return address (__builtin_return_address(0)), drops everything inner to it (its own frame, and
 * the frame of a sanitizer's backtrace interceptor in ASan and TSan builds), then `skip` more,
 * and copies out at most `max`. It is noinline so that the frame it drops is really its own.
 *
 * Symbolization has two backends behind one handle, chosen by weft_symbolizer_create:
 *  - libdw (built when elfutils is found, WEFT_HAVE_LIBDW): a Dwfl session over this process's
 *    mappings (/proc/self/maps). Names come from the ELF symbol tables (.symtab, or the separate
 *    debug file's), file:line from DWARF. A pc in no reported module makes the session report
 *    the mappings again, adding and never removing modules, but only when the loader has added
 *    an object since the last report (dl_iterate_phdr's dlpi_adds), so bad pcs stay cheap.
 *    Separate debug files come from the standard search (build-id and .gnu_debuglink under
 *    /usr/lib/debug); when DEBUGINFOD_URLS is set we look by build-id in /usr/lib/debug only,
 *    so that a symbolization never waits on a debuginfod server.
 *  - elf (always built): dl_iterate_phdr gives the module (the loaded object whose PT_LOAD
 *    segment holds the pc: its path and load bias); the module's file is read once (.symtab,
 *    else .dynsym) into a table of function symbols sorted by address, so static functions are
 *    found too; no file:line. When the file cannot be read (the vDSO, a deleted file) dladdr's
 *    exported symbol is used.
 * WEFT_SYMBOLIZER=libdw|elf|auto (environment, read at create) overrides the choice; auto (the
 * default) takes libdw when built and it starts, elf otherwise.
 *
 * A return address points after its call, possibly at the first byte of the next function or
 * line, so lookups use pc - 1 for the function and file:line; the offset reported is from pc.
 *
 * Invariants:
 *  - Every string a lookup returns lives as long as the symbolizer: libdw modules are never
 *    removed from the session (re-reports only add), and the elf backend's module cache only
 *    grows. (A library unloaded with dlclose keeps its old name for its old range; a symbolizer
 *    created after the dlclose does not.)
 *  - All state of a symbolizer (the Dwfl session, the module caches) is touched only under its
 *    mutex (rank SYMBOLIZER), so one symbolizer may be shared by threads; lookups run one at a
 *    time. No other weft lock is taken under it, but the loader's lock is (dl_iterate_phdr,
 *    dladdr): a library constructor must not look up on a symbolizer that another
 *    thread may be using.
 *  - A symbolizer belongs to the process that created it (its Dwfl session holds the parent's
 *    files after fork; lookups would still work, but create a new one in the child).
 *  - Capture leaves errno as it found it and, after init, takes no lock.
 *
 * Init race, numbered: (1) every capture loads unwinder_ready (acquire); (2) if false it calls
 * pthread_once, whose one winner loads the unwinder and (3) stores true (release) while the
 * others wait inside pthread_once; (4) a capture that saw true at (1) sees the loaded unwinder.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <execinfo.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef WEFT_HAVE_LIBDW
#include <dwarf.h>
#include <elfutils/libdwfl.h>
#endif

#include "../internal/alloc.h"
#include "../internal/buf.h"
#include "../internal/common.h"
#include "../internal/lock.h"

/* ------------------------------------------------------------------------------------------------
 * Capture
 */

/* Frames one capture walks, skipped ones included: the stack buffer is WALK_MAX pointers. */
#define WALK_MAX 256
/* Frames inner to the caller's that we tolerate: our own, plus a wrapper (sanitizer interceptor).
 */
#define INNER_MAX 4

static pthread_once_t unwinder_once = PTHREAD_ONCE_INIT;
/* Set (release) once the unwinder is loaded; read (acquire) by every capture. */
static atomic_bool unwinder_ready;

static void load_unwinder(void)
{
	void *pc[2];
	int saved = errno;
	backtrace(pc, 2);
	errno = saved;
	atomic_store_explicit(&unwinder_ready, true, memory_order_release);
}

WEFT_API int weft_backtrace_init(void)
{
	pthread_once(&unwinder_once, load_unwinder);
	return 0;
}

WEFT_API __attribute__((noinline, noclone)) int weft_backtrace(void **frames, int max, int skip)
{
	if (!frames || max < 0 || skip < 0)
		return -EINVAL;
	if (!atomic_load_explicit(&unwinder_ready, memory_order_acquire))
		weft_backtrace_init();
	void *const caller_pc = __builtin_return_address(0);
	void *buf[WALK_MAX];
	long want = (long)max + skip + INNER_MAX;
	int saved = errno;
	int n = backtrace(buf, want < WALK_MAX ? (int)want : WALK_MAX);
	errno = saved;
	/* Keeps the call above from becoming a tail call and buf from being optimised away. */
	__asm__ volatile("" : : "r"(buf) : "memory");

	/* The caller's frame is the first whose pc is the caller's return address; everything
	 * before it is ours (buf[0] is a pc in this function) or a wrapper's. */
	int first = -1;
	for (int i = 0; i < n && i < INNER_MAX; i++) {
		if (buf[i] == caller_pc) {
			first = i;
			break;
		}
	}
	if (first < 0) /* not seen (cannot happen with a sane unwinder): drop our own frame only */
		first = n > 0 ? 1 : 0;
	long start = (long)first + skip;
	if (start >= n)
		return 0;
	int count = n - (int)start;
	if (count > max)
		count = max;
	memcpy(frames, buf + start, (size_t)count * sizeof(*frames));
	return count;
}

/* ------------------------------------------------------------------------------------------------
 * The symbolizer's state. Everything below `mu` is touched only under it.
 */
struct abs_path;
struct dw_module;
struct elf_module;

enum backend {
	BACKEND_ELF,
	BACKEND_LIBDW,
};

struct weft_symbolizer {
	weft__mutex mu;
	enum backend backend;
	struct elf_module *modules; /* elf backend: every module looked up so far */
#ifdef WEFT_HAVE_LIBDW
	Dwfl *dwfl;
	unsigned long long adds; /* loader_adds() before the last report; 0: always re-report */
	struct dw_module *dw_modules; /* symbol tables of the modules looked up so far */
	struct abs_path *paths; /* relative DWARF file names made absolute, by libdw's string */
#endif
};

/* What a lookup found; strings owned by the symbolizer. */
struct lookup_result {
	const char *func;
	uintptr_t offset;
	const char *file;
	int line;
	const char *module;
};

/* ------------------------------------------------------------------------------------------------
 * Function symbol tables, sorted by address: both backends name a pc with one binary search
 * (dwfl_module_addrinfo scans the whole table: 0.2 ms per lookup in libc's 10000 symbols).
 */

/* Symbols one module's table may hold, and bytes one module file may make us read. */
#define SYMS_MAX ((size_t)1 << 24)
#define ELF_SECTION_MAX ((uint64_t)256 << 20)

struct sym {
	uintptr_t addr; /* run-time address (bias applied) */
	uintptr_t size; /* 0: unknown */
	const char *name;
	uint8_t pref; /* among symbols at one address, lower wins: global, weak, local */
};

struct symtab {
	struct sym *syms; /* sorted by (addr, pref, sized first) */
	size_t n;
};

static int sym_cmp(const void *a, const void *b)
{
	const struct sym *x = a, *y = b;
	if (x->addr != y->addr)
		return x->addr < y->addr ? -1 : 1;
	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return (x->size == 0) - (y->size == 0);
}

static uint8_t bind_pref(unsigned char info)
{
	switch (ELF64_ST_BIND(info)) {
	case STB_GLOBAL: return 0;
	case STB_WEAK: return 1;
	default: return 2;
	}
}

static bool is_function(unsigned char info)
{
	unsigned type = ELF64_ST_TYPE(info);
	return type == STT_FUNC || type == STT_GNU_IFUNC;
}

/* Sized symbols looked at below the nearest one, for a symbol nested in a larger function. */
#define NESTED_MAX 8

/* The function containing `a`: the nearest symbol at or below it if `a` is within its size (or
 * it has none), else the nearest of the NESTED_MAX below it that contains `a`. */
static const struct sym *symtab_find(const struct symtab *t, uintptr_t a)
{
	size_t lo = 0, hi = t->n; /* first index with addr > a */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->syms[mid].addr <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	size_t i = lo - 1;
	while (i > 0 && t->syms[i - 1].addr == t->syms[i].addr)
		i--; /* the preferred one of the symbols at that address */
	if (t->syms[i].size == 0 || a - t->syms[i].addr < t->syms[i].size)
		return &t->syms[i];
	for (size_t k = 0; k < NESTED_MAX && i > 0; k++) {
		i--;
		if (t->syms[i].size != 0 && a - t->syms[i].addr < t->syms[i].size)
			return &t->syms[i];
	}
	return NULL; /* past the end of each: a gap, or a function the table does not name */
}

/* ------------------------------------------------------------------------------------------------
 * The elf backend: the loader's list of objects for the module, the module file's own symbol
 * table for the name.
 */

struct elf_module {
	struct elf_module *next;
	uintptr_t bias; /* link_map l_addr */
	char *name;     /* l_name as the loader has it ("": the executable); with bias, the key */
	char *path;     /* the file, links resolved (what lookups return) */
	struct symtab tab;
	char *strtab; /* the names tab points into */
};

static void elf_module_free(struct elf_module *m)
{
	if (!m)
		return;
	free(m->name);
	free(m->path);
	free(m->tab.syms);
	free(m->strtab);
	free(m);
}

static int read_at(int fd, void *p, size_t n, uint64_t off)
{
	char *c = p;
	while (n > 0) {
		ssize_t r = pread(fd, c, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -EIO;
		c += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

/* Read the function symbols of m->path into m. A file that cannot be read or is not an ELF file
 * of this machine's class leaves m without symbols (0); only -ENOMEM is an error. */
static int elf_load_symbols(struct elf_module *m)
{
	int fd = open(m->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	int r = 0;
	ElfW(Shdr) *sh = NULL;
	ElfW(Sym) *raw = NULL;
	struct sym *syms = NULL;
	char *strtab = NULL;

	ElfW(Ehdr) eh;
	if (read_at(fd, &eh, sizeof(eh), 0) < 0 || memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
	    eh.e_ident[EI_CLASS] != (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32) ||
	    eh.e_shentsize != sizeof(ElfW(Shdr)) || eh.e_shnum == 0)
		goto out;
	sh = weft__malloc((size_t)eh.e_shnum * sizeof(*sh));
	if (!sh) {
		r = -ENOMEM;
		goto out;
	}
	if (read_at(fd, sh, (size_t)eh.e_shnum * sizeof(*sh), eh.e_shoff) < 0)
		goto out;
	/* .symtab has every function, static ones too; a stripped file has .dynsym only. */
	const ElfW(Shdr) *symsec = NULL;
	for (unsigned i = 0; i < eh.e_shnum; i++)
		if (sh[i].sh_type == SHT_SYMTAB)
			symsec = &sh[i];
	for (unsigned i = 0; !symsec && i < eh.e_shnum; i++)
		if (sh[i].sh_type == SHT_DYNSYM)
			symsec = &sh[i];
	if (!symsec || symsec->sh_link >= eh.e_shnum || sh[symsec->sh_link].sh_type != SHT_STRTAB ||
	    symsec->sh_size > ELF_SECTION_MAX || symsec->sh_size < sizeof(ElfW(Sym)) ||
	    sh[symsec->sh_link].sh_size > ELF_SECTION_MAX || sh[symsec->sh_link].sh_size == 0)
		goto out;
	const ElfW(Shdr) *strsec = &sh[symsec->sh_link];

	size_t nraw = symsec->sh_size / sizeof(ElfW(Sym));
	raw = weft__malloc(nraw * sizeof(*raw));
	strtab = weft__malloc(strsec->sh_size + 1);
	if (!raw || !strtab) {
		r = -ENOMEM;
		goto out;
	}
	if (read_at(fd, raw, nraw * sizeof(*raw), symsec->sh_offset) < 0 ||
	    read_at(fd, strtab, strsec->sh_size, strsec->sh_offset) < 0)
		goto out;
	strtab[strsec->sh_size] = '\0';

	size_t n = 0;
	for (size_t i = 0; i < nraw && n < SYMS_MAX; i++) {
		if (is_function(raw[i].st_info) && raw[i].st_shndx != SHN_UNDEF &&
		    raw[i].st_value != 0 && raw[i].st_name != 0 &&
		    raw[i].st_name < strsec->sh_size && strtab[raw[i].st_name] != '@')
			raw[n++] = raw[i];
	}
	if (n == 0)
		goto out;
	syms = weft__malloc(n * sizeof(*syms));
	if (!syms) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		/* Versioned names ("memcpy@@GLIBC_2.14" in an unstripped .symtab) lose the version,
		 * in place: only bytes from the '@' on change, which no other function's name
		 * starts in (a name starting with '@' was skipped above). */
		char *at = strchr(strtab + raw[i].st_name, '@');
		if (at)
			*at = '\0';
		syms[i].addr = raw[i].st_value + m->bias;
		syms[i].size = raw[i].st_size;
		syms[i].name = strtab + raw[i].st_name;
		syms[i].pref = bind_pref(raw[i].st_info);
	}
	qsort(syms, n, sizeof(*syms), sym_cmp);
	m->tab.syms = syms;
	m->tab.n = n;
	m->strtab = strtab;
	syms = NULL;
	strtab = NULL;
out:
	close(fd);
	free(sh);
	free(raw);
	free(syms);
	free(strtab);
	return r;
}

/* A module's path with symbolic links resolved, as /proc/self/maps (and so libdw) shows it:
 * the executable's through /proc/self/exe. malloc'd; `path` as given if it cannot be resolved. */
static char *module_path(const char *path, bool is_main)
{
	char tmp[PATH_MAX];
	if (is_main) {
		ssize_t n = readlink("/proc/self/exe", tmp, sizeof(tmp) - 1);
		if (n > 0) {
			tmp[n] = '\0';
			return weft__strdup(tmp);
		}
	} else if (realpath(path, tmp)) {
		return weft__strdup(tmp);
	}
	return weft__strdup(path ? path : "");
}

/* The loaded object whose PT_LOAD segments hold an address. */
struct find_object {
	uintptr_t addr;      /* in */
	bool found;          /* out: */
	uintptr_t bias;      /* dlpi_addr */
	char name[PATH_MAX]; /* dlpi_name, copied while the loader's lock is held ("": the program)
	                      */
};

static int find_object_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct find_object *fo = arg;
	for (unsigned i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t start = info->dlpi_addr + ph->p_vaddr;
		if (ph->p_type != PT_LOAD || fo->addr < start || fo->addr - start >= ph->p_memsz)
			continue;
		fo->found = true;
		fo->bias = info->dlpi_addr;
		const char *name = info->dlpi_name ? info->dlpi_name : "";
		size_t len = strnlen(name, sizeof(fo->name) - 1);
		memcpy(fo->name, name, len);
		fo->name[len] = '\0';
		return 1;
	}
	return 0;
}

static int elf_lookup(weft_symbolizer *s, uintptr_t pc, struct lookup_result *res)
{
	/* dl_iterate_phdr, not dladdr: dladdr also looks for the nearest exported symbol, with a
	 * scan of the object's whole .dynsym (4 us a lookup in libc). */
	struct find_object fo = {.addr = pc - 1};
	dl_iterate_phdr(find_object_cb, &fo);
	if (!fo.found)
		return -ENOENT;
	bool is_main = !fo.name[0];
	struct elf_module *m;
	for (m = s->modules; m; m = m->next)
		if (m->bias == fo.bias && strcmp(m->name, fo.name) == 0)
			break;
	if (!m) {
		m = weft__calloc(1, sizeof(*m));
		if (!m)
			return -ENOMEM;
		m->bias = fo.bias;
		m->name = weft__strdup(fo.name);
		m->path = module_path(is_main ? program_invocation_name : fo.name, is_main);
		int r = m->name && m->path ? elf_load_symbols(m) : -ENOMEM;
		if (r < 0) {
			elf_module_free(m);
			return r;
		}
		m->next = s->modules;
		s->modules = m;
	}
	res->module = m->path;
	const struct sym *sym = symtab_find(&m->tab, pc - 1);
	Dl_info info;
	if (sym) {
		res->func = sym->name;
		res->offset = pc - sym->addr;
	} else if (m->tab.n == 0 && dladdr((void *)(pc - 1), &info) && info.dli_sname &&
	           info.dli_saddr) {
		/* No table (the vDSO, an unreadable file): the loader's exported name. It lives as
		 * long as the module stays loaded. */
		res->func = info.dli_sname;
		res->offset = pc - (uintptr_t)info.dli_saddr;
	} else {
		res->offset = pc - m->bias;
	}
	return 0;
}

/* ------------------------------------------------------------------------------------------------
 * The libdw backend.
 */
#ifdef WEFT_HAVE_LIBDW

/* Separate debug info. dwfl_standard_find_debuginfo asks a debuginfod server when
 * DEBUGINFOD_URLS is set: a download (with long timeouts) in the middle of a crash report or a
 * lock monitor's dump is not acceptable, so then only the local build-id tree is consulted. */
static int find_debuginfo(Dwfl_Module *mod, void **userdata, const char *modname, Dwarf_Addr base,
                          const char *file_name, const char *debuglink_file,
                          GElf_Word debuglink_crc, char **debuginfo_file_name)
{
	const char *urls = getenv("DEBUGINFOD_URLS");
	if (!urls || !*urls)
		return dwfl_standard_find_debuginfo(mod, userdata, modname, base, file_name,
		                                    debuglink_file, debuglink_crc,
		                                    debuginfo_file_name);
	const unsigned char *id;
	GElf_Addr vaddr;
	int len = dwfl_module_build_id(mod, &id, &vaddr);
	if (len < 2 || len > 64)
		return -1;
	char path[64 + 2 * 64 + 8];
	int off = snprintf(path, sizeof(path), "/usr/lib/debug/.build-id/%02x/", id[0]);
	for (int i = 1; i < len; i++)
		off += snprintf(path + off, sizeof(path) - (size_t)off, "%02x", id[i]);
	snprintf(path + off, sizeof(path) - (size_t)off, ".debug");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0 && debuginfo_file_name)
		*debuginfo_file_name = weft__strdup(path); /* libdw frees it; NULL is allowed */
	return fd;
}

static const Dwfl_Callbacks dwfl_callbacks = {
        .find_elf = dwfl_linux_proc_find_elf,
        .find_debuginfo = find_debuginfo,
};

static int adds_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	unsigned long long *adds = arg;
	*adds = size >= offsetof(struct dl_phdr_info, dlpi_adds) + sizeof(info->dlpi_adds)
	                ? info->dlpi_adds
	                : 0;
	return 1; /* the counter is global: one object is enough */
}

/* Objects the loader has added since the process started (0 if it does not say). */
static unsigned long long loader_adds(void)
{
	unsigned long long adds = 0;
	dl_iterate_phdr(adds_cb, &adds);
	return adds;
}

/* A DWARF file name relative to its compilation directory, made absolute once. */
struct abs_path {
	struct abs_path *next;
	const char *raw; /* libdw's string: stable for the session, so it identifies the name */
	char path[];
};

/* Lexically drop "." and "dir/.." from absolute `p`, in place ("/a/b/../c" -> "/a/c"). Lexical,
 * like a shell's `cd -L`: through a symlinked folder the result may name another file. Writes
 * never pass reads: each kept segment is written no further than it was read. */
static void normalize_path(char *p)
{
	char *out = p;
	const char *in = p;
	while (*in) {
		while (*in == '/')
			in++;
		const char *seg = in;
		while (*in && *in != '/')
			in++;
		size_t len = (size_t)(in - seg);
		if (len == 0 || (len == 1 && seg[0] == '.'))
			continue;
		if (len == 2 && seg[0] == '.' && seg[1] == '.') {
			while (out > p && *--out != '/')
				; /* drop the last kept segment; at the root, nothing */
			continue;
		}
		*out++ = '/';
		memmove(out, seg, len);
		out += len;
	}
	if (out == p)
		*out++ = '/';
	*out = '\0';
}

/* `file` as an absolute path: relative names are joined to the compilation unit's folder
 * (DW_AT_comp_dir) and normalised, once per name. Returns 0 (*ret_file unchanged if it cannot
 * be made absolute) or -ENOMEM. */
static int dw_absolute(weft_symbolizer *s, Dwfl_Module *mod, Dwarf_Addr a, const char **ret_file)
{
	const char *file = *ret_file;
	if (file[0] == '/')
		return 0;
	for (struct abs_path *e = s->paths; e; e = e->next) {
		if (e->raw == file) {
			*ret_file = e->path;
			return 0;
		}
	}
	Dwarf_Addr cubias;
	Dwarf_Die *cu = dwfl_module_addrdie(mod, a, &cubias);
	Dwarf_Attribute attr;
	const char *dir = cu ? dwarf_formstring(dwarf_attr(cu, DW_AT_comp_dir, &attr)) : NULL;
	if (!dir || dir[0] != '/')
		return 0;
	size_t dlen = strlen(dir), flen = strlen(file);
	struct abs_path *e = weft__malloc(sizeof(*e) + dlen + 1 + flen + 1);
	if (!e)
		return -ENOMEM;
	memcpy(e->path, dir, dlen);
	e->path[dlen] = '/';
	memcpy(e->path + dlen + 1, file, flen + 1);
	normalize_path(e->path);
	e->raw = file;
	e->next = s->paths;
	s->paths = e;
	*ret_file = e->path;
	return 0;
}

/* (Re-)report this process's mappings. `add` keeps the modules already known (their strings
 * stay valid). */
static int dw_report(weft_symbolizer *s, bool add)
{
	s->adds = loader_adds(); /* read before the maps: a later dlopen shows as a change */
	if (add)
		dwfl_report_begin_add(s->dwfl);
	else
		dwfl_report_begin(s->dwfl);
	int r = dwfl_linux_proc_report(s->dwfl, getpid());
	dwfl_report_end(s->dwfl, NULL, NULL);
	if (r > 0)
		return -r;
	if (r < 0)
		return -EIO; /* a libdw error: its codes are private */
	return 0;
}

/* A module's function symbols, sorted; built at the module's first lookup. */
struct dw_module {
	struct dw_module *next;
	Dwfl_Module *mod; /* modules are never removed from the session, so never reused */
	struct symtab tab;
	char *names; /* copies of the versioned names, without "@VERSION" */
};

/* Drop the "@VERSION" or "@@VERSION" that versioned symbols carry in .symtab
 * ("__libc_start_main@@GLIBC_2.34"), so names read the same on both backends. libdw's strings
 * are not ours: the shortened ones are copied into one block. */
static int dw_unversion(struct dw_module *e)
{
	size_t bytes = 0;
	for (size_t i = 0; i < e->tab.n; i++) {
		const char *at = strchr(e->tab.syms[i].name, '@');
		if (at)
			bytes += (size_t)(at - e->tab.syms[i].name) + 1;
	}
	if (bytes == 0)
		return 0;
	char *p = e->names = weft__malloc(bytes);
	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < e->tab.n; i++) {
		const char *name = e->tab.syms[i].name, *at = strchr(name, '@');
		if (!at)
			continue;
		memcpy(p, name, (size_t)(at - name));
		p[at - name] = '\0';
		e->tab.syms[i].name = p;
		p += at - name + 1;
	}
	return 0;
}

static int dw_symtab(weft_symbolizer *s, Dwfl_Module *mod, const struct symtab **ret)
{
	struct dw_module *e;
	for (e = s->dw_modules; e; e = e->next) {
		if (e->mod == mod) {
			*ret = &e->tab;
			return 0;
		}
	}
	e = weft__calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	int total = dwfl_module_getsymtab(mod); /* loads the symbol files: main, debug, aux */
	if (total > 0) {
		size_t cap = WEFT__MIN((size_t)total, SYMS_MAX);
		e->tab.syms = weft__malloc(cap * sizeof(*e->tab.syms));
		if (!e->tab.syms) {
			free(e);
			return -ENOMEM;
		}
		for (int i = 0; i < total && e->tab.n < cap; i++) {
			GElf_Sym sym;
			GElf_Addr addr;
			GElf_Word shndx;
			const char *name =
			        dwfl_module_getsym_info(mod, i, &sym, &addr, &shndx, NULL, NULL);
			/* shndx is -1 for a symbol in a section that is not loaded */
			if (!name || !*name || *name == '@' || !is_function(sym.st_info) ||
			    shndx == SHN_UNDEF || shndx == (GElf_Word)-1 || addr == 0)
				continue;
			e->tab.syms[e->tab.n++] = (struct sym){
			        .addr = addr,
			        .size = sym.st_size,
			        .name = name,
			        .pref = bind_pref(sym.st_info),
			};
		}
		if (dw_unversion(e) < 0) {
			free(e->tab.syms);
			free(e);
			return -ENOMEM;
		}
		qsort(e->tab.syms, e->tab.n, sizeof(*e->tab.syms), sym_cmp);
	}
	e->mod = mod;
	e->next = s->dw_modules;
	s->dw_modules = e;
	*ret = &e->tab;
	return 0;
}

/* The module containing `a`. dwfl_addrmodule answers the last module for an address above every
 * module (0.188), hence the range check. */
static Dwfl_Module *dw_module(weft_symbolizer *s, Dwarf_Addr a, Dwarf_Addr *ret_low)
{
	Dwfl_Module *mod = dwfl_addrmodule(s->dwfl, a);
	Dwarf_Addr low = 0, end = 0;
	if (!mod || !dwfl_module_info(mod, NULL, &low, &end, NULL, NULL, NULL, NULL) || a < low ||
	    a >= end)
		return NULL;
	*ret_low = low;
	return mod;
}

static int dw_lookup(weft_symbolizer *s, uintptr_t pc, struct lookup_result *res)
{
	Dwarf_Addr a = pc - 1, low = 0;
	Dwfl_Module *mod = dw_module(s, a, &low);
	if (!mod && (s->adds == 0 || loader_adds() != s->adds)) {
		/* A library loaded after the last report. A failed re-report keeps what we had. */
		int r = dw_report(s, true);
		if (r == -ENOMEM)
			return r;
		mod = dw_module(s, a, &low);
	}
	if (!mod)
		return -ENOENT;
	res->module = dwfl_module_info(mod, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
	const struct symtab *tab;
	int r = dw_symtab(s, mod, &tab);
	if (r < 0)
		return r;
	const struct sym *sym = symtab_find(tab, a);
	if (sym) {
		res->func = sym->name;
		res->offset = pc - sym->addr;
	} else {
		GElf_Addr bias = low;
		if (!dwfl_module_getelf(mod, &bias))
			bias = low;
		res->offset = pc - (uintptr_t)bias;
	}
	Dwfl_Line *line = dwfl_module_getsrc(mod, a);
	if (line) {
		int lineno = 0;
		const char *file = dwfl_lineinfo(line, NULL, &lineno, NULL, NULL, NULL);
		if (file && *file && lineno > 0) {
			r = dw_absolute(s, mod, a, &file);
			if (r < 0)
				return r;
			res->file = file;
			res->line = lineno;
		}
	}
	return 0;
}

#endif /* WEFT_HAVE_LIBDW */

/* ------------------------------------------------------------------------------------------------
 * The symbolizer
 */

/* The backend WEFT_SYMBOLIZER asks for: 1 libdw, 0 elf, -1 auto; or -EINVAL, -ENOTSUP. */
static int backend_from_env(void)
{
	const char *v = getenv("WEFT_SYMBOLIZER");
	if (!v || !*v || strcmp(v, "auto") == 0)
		return -1;
	if (strcmp(v, "elf") == 0)
		return 0;
	if (strcmp(v, "libdw") == 0) {
#ifdef WEFT_HAVE_LIBDW
		return 1;
#else
		return -ENOTSUP;
#endif
	}
	return -EINVAL;
}

WEFT_API void weft_symbolizer_destroy(weft_symbolizer *s)
{
	if (!s)
		return;
	int saved = errno;
#ifdef WEFT_HAVE_LIBDW
	if (s->dwfl)
		dwfl_end(s->dwfl);
	while (s->dw_modules) {
		struct dw_module *e = s->dw_modules;
		s->dw_modules = e->next;
		free(e->names);
		free(e->tab.syms);
		free(e);
	}
	while (s->paths) {
		struct abs_path *e = s->paths;
		s->paths = e->next;
		free(e);
	}
#endif
	while (s->modules) {
		struct elf_module *m = s->modules;
		s->modules = m->next;
		elf_module_free(m);
	}
	weft__mutex_destroy(&s->mu);
	free(s);
	errno = saved;
}

WEFT_API int weft_symbolizer_create(weft_symbolizer **ret)
{
	if (!ret)
		return -EINVAL;
	int want = backend_from_env();
	if (want < -1)
		return want;
	int saved = errno;
	int r = 0;
	weft_symbolizer *s = weft__calloc(1, sizeof(*s));
	if (!s) {
		r = -ENOMEM;
		goto out;
	}
	weft__mutex_init(&s->mu, WEFT__RANK_SYMBOLIZER);
	s->backend = BACKEND_ELF;
#ifdef WEFT_HAVE_LIBDW
	if (want != 0) {
		s->dwfl = dwfl_begin(&dwfl_callbacks);
		r = s->dwfl ? dw_report(s, false) : -ENOMEM;
		if (r == 0) {
			s->backend = BACKEND_LIBDW;
		} else if (r == -ENOMEM || want == 1) {
			weft_symbolizer_destroy(s);
			goto out;
		} else { /* auto, and libdw cannot read this process (no /proc?): elf it is */
			dwfl_end(s->dwfl);
			s->dwfl = NULL;
			r = 0;
		}
	}
#endif
	*ret = s;
out:
	errno = saved;
	return r;
}

WEFT_API int weft_symbolizer_lookup(weft_symbolizer *s, const void *pc, const char **ret_func,
                                    uintptr_t *ret_offset, const char **ret_file, int *ret_line,
                                    const char **ret_module)
{
	if (!s)
		return -EINVAL;
	if ((uintptr_t)pc == 0)
		return -ENOENT; /* and pc - 1 would wrap */
	struct lookup_result res = {.func = "??"};
	int saved = errno;
	weft__mutex_lock(&s->mu);
	int r;
#ifdef WEFT_HAVE_LIBDW
	if (s->backend == BACKEND_LIBDW)
		r = dw_lookup(s, (uintptr_t)pc, &res);
	else
#endif
		r = elf_lookup(s, (uintptr_t)pc, &res);
	weft__mutex_unlock(&s->mu);
	errno = saved;
	if (r < 0)
		return r;
	if (ret_func)
		*ret_func = res.func;
	if (ret_offset)
		*ret_offset = res.offset;
	if (ret_file)
		*ret_file = res.file;
	if (ret_line)
		*ret_line = res.line;
	if (ret_module)
		*ret_module = res.module;
	return 0;
}

WEFT_API int weft_backtrace_format(void *const *frames, int n, char **ret_text)
{
	if (n < 0 || (!frames && n > 0) || !ret_text)
		return -EINVAL;
	int saved = errno;
	weft_symbolizer *s = NULL;
	int r = n > 0 ? weft_symbolizer_create(&s) : 0; /* none needed for no frames */
	if (r < 0)
		return r;
	weft__buf b = WEFT__BUF_INIT;
	for (int i = 0; i < n; i++) {
		const char *func, *file, *module;
		uintptr_t off;
		int line;
		r = weft_symbolizer_lookup(s, frames[i], &func, &off, &file, &line, &module);
		if (r == -ENOENT) {
			func = "??";
			file = module = NULL;
		} else if (r < 0) {
			break;
		}
		weft__buf_printf(&b, "#%d  0x%" PRIxPTR "  ", i, (uintptr_t)frames[i]);
		if (strcmp(func, "??") != 0)
			weft__buf_printf(&b, "%s+0x%" PRIxPTR, func, off);
		else
			weft__buf_puts(&b, "??");
		if (file)
			weft__buf_printf(&b, " at %s:%d", file, line);
		else
			weft__buf_puts(&b, " at ??");
		const char *base = module ? strrchr(module, '/') : NULL;
		base = base ? base + 1 : module;
		weft__buf_printf(&b, " (%s)\n", base && *base ? base : "??");
		r = 0;
	}
	weft_symbolizer_destroy(s);
	if (r < 0)
		weft__buf_free(&b);
	else
		r = weft__buf_finish(&b, ret_text, NULL);
	errno = saved;
	return r;
}
