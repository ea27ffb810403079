/* weft_fiber_dump: every fiber of every scheduler, with its name, state, wait reason and how
 * long it has waited, its spawn site, and a stack trace for each parked fiber.
 *
 * The process's schedulers are on one list (under a ranked mutex). The dump works in two passes
 * so that no spin lock is held while it allocates or symbolizes: first, under each scope shard's
 * lock, it copies every fiber's fields and raw frames into a snapshot array sized from the alive
 * counts (fibers spawned meanwhile past that size are counted, not shown); then it symbolizes and
 * formats from the snapshot.
 *
 * A parked fiber's frames are read from its saved context: the switch frame gives the resume
 * address and the frame pointer (weft is built with frame pointers), then the frame-pointer chain
 * is followed while it stays inside the fiber's stack and goes up. A fiber can be resumed while
 * the dump reads its stack (the shard lock only keeps it from exiting, so its stack stays
 * mapped): such a trace may be wrong, never a crash; the reads are bounded to the stack. Frames in
 * code built without frame pointers are skipped over or end the trace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fiber-impl.h"
#include "internal/alloc.h"
#include "internal/buf.h"
#include "internal/switch.h"

#define DUMP_FRAMES 32

static weft__mutex scheds_lock = WEFT__MUTEX_INIT(WEFT__RANK_FIBER_SCHEDS);
static weft_sched *scheds;

void weft__sched_register(weft_sched *s)
{
	weft__mutex_lock(&scheds_lock);
	s->all_prev = NULL;
	s->all_next = scheds;
	if (scheds)
		scheds->all_prev = s;
	scheds = s;
	weft__mutex_unlock(&scheds_lock);
}

void weft__sched_unregister(weft_sched *s)
{
	weft__mutex_lock(&scheds_lock);
	for (weft_sched *p = scheds; p; p = p->all_next) {
		if (p != s)
			continue;
		if (s->all_prev)
			s->all_prev->all_next = s->all_next;
		else
			scheds = s->all_next;
		if (s->all_next)
			s->all_next->all_prev = s->all_prev;
		break;
	}
	weft__mutex_unlock(&scheds_lock);
}

/* fork child: the parent's schedulers are not this process's (and the lock may have been held by
 * a thread that does not exist here) */
void weft__sched_list_after_fork(void)
{
	weft__mutex_init(&scheds_lock, WEFT__RANK_FIBER_SCHEDS);
	scheds = NULL;
}

struct snap {
	uint64_t id;
	char name[32];
	char sched[64];
	int state, reason, worker;
	int64_t since;
	void *spawn_site;
	void *fn;
	bool pinned;
	int nframes;
	void *frames[DUMP_FRAMES];
};

__attribute__((no_sanitize_address, no_sanitize("thread"))) static int
parked_frames(const weft__fiber *f, void **out)
{
#if defined(__x86_64__) || defined(__aarch64__)
	const uintptr_t lo = (uintptr_t)f->stack.lo, hi = (uintptr_t)f->stack.hi;
	const uintptr_t *sp = (const uintptr_t *)f->sp;
	if ((uintptr_t)sp < lo || (uintptr_t)sp + WEFT__CTX_FRAME_SIZE > hi)
		return 0;
	int n = 0;
	out[n++] = (void *)sp[WEFT__CTX_PC_SLOT];
	uintptr_t fp = sp[WEFT__CTX_FP_SLOT];
	while (n < DUMP_FRAMES && fp >= lo && fp + 16 <= hi && (fp & 7) == 0) {
		const uintptr_t *frame = (const uintptr_t *)fp;
		uintptr_t ret = frame[1], next = frame[0];
		if (!ret)
			break;
		out[n++] = (void *)ret;
		if (next <= fp)
			break;
		fp = next;
	}
	return n;
#else
	(void)f;
	(void)out;
	return 0;
#endif
}

static void snap_fiber(struct snap *sn, const weft__fiber *f)
{
	memset(sn, 0, sizeof(*sn));
	sn->id = f->id;
	memcpy(sn->name, f->name, sizeof(sn->name));
	sn->name[sizeof(sn->name) - 1] = 0;
	snprintf(sn->sched, sizeof(sn->sched), "%s", f->sched->name);
	sn->state = atomic_load_explicit(&f->state, memory_order_relaxed);
	sn->reason = atomic_load_explicit(&f->wait_reason, memory_order_relaxed);
	sn->worker = atomic_load_explicit(&f->worker_index, memory_order_relaxed);
	sn->since = atomic_load_explicit(&f->wait_since, memory_order_relaxed);
	sn->spawn_site = f->spawn_site;
	sn->fn = (void *)f->fn;
	sn->pinned = f->pinned;
	if (sn->state == WEFT_FIBER_WAITING || sn->state == WEFT_FIBER_RUNNABLE)
		sn->nframes = parked_frames(f, sn->frames);
}

static void snap_scope(weft_scope *sc, struct snap *v, size_t cap, size_t *n, size_t *missed)
{
	for (int i = 0; i < sc->nshards; i++) {
		struct scope_shard *sh = &sc->shards[i];
		weft__spin_lock(&sh->lock);
		for (weft__fiber *f = sh->head; f; f = f->scope_next) {
			/* finished, in the list until its spawner unlinks it (scope.c) */
			if (atomic_load_explicit(&f->state, memory_order_relaxed) ==
			    WEFT_FIBER_DEAD)
				continue;
			if (*n < cap)
				snap_fiber(&v[(*n)++], f);
			else
				(*missed)++;
		}
		weft__spin_unlock(&sh->lock);
	}
	weft__spin_lock(&sc->children_lock);
	for (weft_scope *c = sc->child_head; c; c = c->sib_next)
		snap_scope(c, v, cap, n, missed);
	weft__spin_unlock(&sc->children_lock);
}

static void put_pc(weft__buf *b, weft_symbolizer *sym, const void *pc, bool is_ret, bool where)
{
	const char *func = "??", *file = NULL;
	uintptr_t off = 0;
	int line = 0;
	/* the symbolizer looks up pc - 1 (a return address); a function's entry is not one */
	const void *q = is_ret ? pc : (const char *)pc + 1;
	if (sym && weft_symbolizer_lookup(sym, q, &func, &off, &file, &line, NULL) == 0) {
		if (!is_ret && off)
			off--;
	}
	weft__buf_printf(b, "%s+0x%" PRIxPTR, func, off);
	if (file && where)
		weft__buf_printf(b, " at %s:%d", file, line);
}

int weft_fiber_dump(char **ret_text, size_t *ret_len)
{
	if (!ret_text)
		return -EINVAL;
	weft__mutex_lock(&scheds_lock);
	size_t cap = 16;
	for (weft_sched *s = scheds; s; s = s->all_next)
		cap += (size_t)atomic_load_explicit(&s->root.alive, memory_order_relaxed) + 16;
	struct snap *v = weft__calloc(cap, sizeof(*v));
	if (!v) {
		weft__mutex_unlock(&scheds_lock);
		return -ENOMEM;
	}
	size_t n = 0, missed = 0;
	int nscheds = 0;
	for (weft_sched *s = scheds; s; s = s->all_next, nscheds++)
		snap_scope(&s->root, v, cap, &n, &missed);
	weft__mutex_unlock(&scheds_lock);

	weft_symbolizer *sym = NULL;
	if (weft_symbolizer_create(&sym) < 0)
		sym = NULL;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	weft__buf b = WEFT__BUF_INIT;
	weft__buf_printf(&b, "%zu fibers in %d schedulers", n + missed, nscheds);
	if (missed)
		weft__buf_printf(&b, " (%zu spawned during the dump not shown)", missed);
	weft__buf_printf(&b, "\n");
	for (size_t i = 0; i < n; i++) {
		struct snap *sn = &v[i];
		weft__buf_printf(&b, "\nfiber %" PRIu64 " \"", sn->id);
		if (sn->name[0])
			weft__buf_printf(&b, "%s", sn->name);
		else
			put_pc(&b, sym, sn->fn, false, false);
		weft__buf_printf(&b, "\" %s", weft_fiber_state_name(sn->state));
		if (sn->state == WEFT_FIBER_WAITING) {
			weft__buf_printf(&b, " on %s", weft_wait_reason_name(sn->reason));
			if (sn->since)
				weft__buf_printf(&b, " for %.3f s",
				                 (double)(now > sn->since ? now - sn->since : 0) *
				                         1e-9);
		}
		weft__buf_printf(&b, ", sched \"%s\"", sn->sched);
		if (sn->worker >= 0)
			weft__buf_printf(&b, " worker %d", sn->worker);
		if (sn->pinned)
			weft__buf_printf(&b, " (pinned)");
		weft__buf_printf(&b, "\n  spawned at ");
		put_pc(&b, sym, sn->spawn_site, true, true);
		weft__buf_printf(&b, "\n");
		for (int k = 0; k < sn->nframes; k++) {
			weft__buf_printf(&b, "  #%d  %p  ", k, sn->frames[k]);
			put_pc(&b, sym, sn->frames[k], true, true);
			weft__buf_printf(&b, "\n");
		}
	}
	weft_symbolizer_destroy(sym);
	free(v);
	return weft__buf_finish(&b, ret_text, ret_len);
}
