/* predict.c: prediction mode of the lock monitor: lock classes, each thread's held locks, and the
 * order graph of classes, which reports a lock-order inversion the first time the second order is
 * taken, before the thread blocks, whether or not the run ever deadlocks (the idea of the Linux
 * kernel's lockdep, for user-space locks).
 *
 * Lock classes. A class is a small integer > 0 standing for a group of locks that play one role.
 * weft_mutex and weft_rwlock carry theirs (weft__predict_class_named: same name, same class; no
 * name: the init call's site). A pthread lock's class is its init site (weft__predict_class_init,
 * so locks initialised at one place share a class, as lockdep's static keys do), remembered per
 * address; a statically initialised lock gets the class of its first-use site
 * (weft__predict_class). Two tables, both fixed and mapped by weft__predict_start:
 *  - keys: open addressing, key -> class, where the key is a site address or (bit 63 set) the
 *    64-bit FNV-1a hash of a name. Keys are never removed, so insertion is lock-free: a CAS claims
 *    an empty slot (0 -> key); the winner takes the next class number (fetch_add) and publishes it
 *    with a release store; a reader that finds the key before the class is there spins until it
 *    is (the winner is a few instructions away). Out of classes: the slot gets NONE and its locks
 *    are not tracked (class 0), counted.
 *  - addrs: open addressing with a bounded probe window (ADDR_PROBE slots), lock address ->
 *    class. Lookups are lock-free (an acquire load of the address, then the class). Inserts and
 *    removals (weft__predict_forget, at destroy) change slots under `table_lock` because a removal
 *    leaves a tombstone that a later insert reuses: two lock-free inserts of one address could
 *    otherwise land in two slots. A removal also turns trailing tombstones back into empty slots
 *    (a tombstone followed by an empty slot ends no probe chain), so churn does not clog the table.
 *    A full window: the lock is not tracked (class 0), counted.
 *
 * Held locks. Each thread keeps a fixed list (HELD_MAX) of what it holds: lock, class, mode, site,
 * flags. Release removes the entry wherever it is (locks are not always released in LIFO order);
 * a release of a lock not in the list (taken before this run, beyond the list, inside a hook, or
 * never) changes nothing. An acquisition takes orders from the oldest HELD_ORDERS entries only
 * (a bound on its work); the newer ones still count as gates and in reports, and take part in
 * orders once older ones are released. Nesting beyond the list is counted and not tracked. A
 * global epoch, bumped by each start, resets lists left over from a previous run of the monitor
 * (their releases were not seen).
 *
 * The order graph. An edge A -> B means "a lock of class B was taken while one of class A was
 * held". It keeps its first occurrence (thread, the two locks, the acquisition's site and stack)
 * and what makes a cycle through it harmless, narrowed by every later occurrence: its gates (the
 * locks, by address, held at every occurrence, other than locks of classes A and B and untracked
 * ones, up to GATES_MAX) and its read ends (A held in
 * read mode at every occurrence, B taken in read mode at every occurrence). Edges live in a fixed
 * array, indexed by a hash of (A, B) for lock-free lookups (the key is published last, with a
 * release store) and linked into per-class out-lists for the search; both change only under
 * `graph_lock`. Edges and classes are never removed.
 *
 * weft__predict_before, for each held lock H of class A != B (the class being taken):
 *  1. looks (A, B) up in the thread's direct-mapped edge cache (CACHE_SIZE entries). A hit on an
 *     edge with nothing to narrow (no gates, no read ends) is done: the common case costs a few
 *     loads per held lock. An edge that has some is cached with the thread's held signature (a
 *     sum of one hash per held (lock, class, mode), kept up by after and release, plus the mode
 *     being taken): a hit under the same signature is done too, since the same held locks and
 *     modes fit the same edge again (its gates and read ends only shrink). Otherwise the slow path
 *     checks that this occurrence is at least as gated and as read-only as the edge says.
 *  2. otherwise looks the edge up in the graph; if it is missing or must be narrowed, takes
 *     graph_lock, adds or narrows it and, unless the pair was reported, searches a path
 *     B -> ... -> A (depth-first, at most DFS_DEPTH deep and DFS_VISITS edges). A path closes a
 *     cycle with this acquisition; the cycle is excused when
 *      - a gate: some lock (the same instance, not just the same class: the locks of two objects
 *        made at one site exclude nothing from each other) is held now and is a gate of every
 *        edge of the path, so every acquisition of the cycle happens under it (the search
 *        carries the set of current gates still common to the path as a mask and reports only a
 *        path that reaches A with an empty mask);
 *      - read mode: at some class of the cycle both adjacent edges have their end there in read
 *        mode (a reader lock held for reading by one side and wanted for reading by the next:
 *        readers do not block each other);
 *     The first unexcused path is reported with weft__watch_emit: order[0] is the stored first
 *     edge of the path (for a two-class cycle, B -> A: its stack is the earlier acquisition),
 *     order[1] this acquisition with the stack captured now, threads[0] this thread with its held
 *     locks. The emit happens here, before the caller blocks. The pair is marked reported (both
 *     edges of a two-class cycle), so a pair is reported once.
 *  3. stores (A, B) in the cache, flagged when the edge still has gates or read ends.
 * Not class edges: a lock taken while another lock of its own class is held (same-class nesting,
 * counted per class in same_class; an instance order, below), the same lock held again (recursive
 * mutexes, nested read locks: the engine reports a self-deadlock), a trylock (weft__predict_after
 * with WEFT__PREDICT_TRY: it cannot block, so callers do not call before for it; edges out of it
 * later are normal), the re-lock inside a condition wait (after with WEFT__PREDICT_REACQUIRE,
 * again without before). The rule for callers: call before only for an acquisition that may
 * block; call after for every successful acquisition.
 *
 * Instance orders. Classes cannot order two locks of one class (the accounts of a bank transfer,
 * initialised in one loop; static mutexes first locked at one call site), and reporting every
 * same-class nesting would be wrong (code that orders them by address or id nests them
 * legitimately). So same-class nesting is ordered by lock address, as TSan and Helgrind order
 * every lock: taking L while holding H of L's class records the instance order H -> L, and a
 * path L -> ... -> H among instance orders is an inversion, reported as a class inversion is
 * (order[0] the path's first order with its stored stack, order[1] this acquisition; both class
 * ends name the one class), once per pair, excused by a gate (a lock instance, of any class, held
 * at every occurrence of every order of the cycle) or by read mode, as for classes.
 *  - the table: INST_DEFAULT records (from, to, first occurrence, gates, read ends, reported),
 *    published lock-free: a record is claimed by a CAS on the counter (stopping at the cap: a
 *    full table counts inst_overflow and the order is not recorded), filled, and its index CASed
 *    into an empty slot of the pair hash (release); a lookup acquire-loads the index and then
 *    reads the record. Two threads adding one pair at once: the slot CAS decides and the
 *    loser's record is left unused. Each record is then pushed (CAS, release) on the out-list
 *    of its from-address's node (a second lock-free hash, address -> node, never removed), which
 *    the search follows.
 *  - weft__predict_before, for a held H of the class being taken (H != L): the per-thread
 *    instance cache (ICACHE_SIZE, direct-mapped by the pair) hit is done (a few loads, as for
 *    classes: an order with gates or read ends only under the same held signature). Otherwise
 *    the slow path looks the pair up, adds or narrows it (gates and read ends are only ever
 *    cleared: atomics, racing narrowers agree) and, when something changed and the order is not
 *    reported, and only if L has orders out of it (a lock-free check: most new orders take no
 *    lock), takes graph_lock and searches a path L -> ... -> H (the same search as for classes,
 *    over live instance orders; its dfs scratch is shared, under graph_lock). Searches
 *    and reports are serialised by graph_lock and every order is fully published before its
 *    thread searches, so of two orders that close a cycle at once the later search sees both.
 *  - destroyed locks: weft__predict_forget bumps the gen of the address's node, and a record
 *    whose ends' gens differ from the ones it was made with is dead (skipped by the search; met
 *    again, refilled under graph_lock as a new first occurrence), so a lock made at a freed
 *    lock's address takes no old orders along; forget also bumps `forgets`, which expires every
 *    thread's instance cache. A lock freed without destroy keeps its orders (as for classes).
 *  - cycles mixing instance orders and class orders (H -> L of one class, L -> M of another,
 *    M -> H) are not searched: each graph is searched alone.
 *
 * Concurrency and memory orders:
 *  - `active` (release store by start/stop, acquire load by every hook) says the tables are
 *    mapped and hooks work; the tables stay mapped for the life of the process, so a hook that is
 *    running when stop flips it finishes on valid memory.
 *  - classes: 1. the winner CASes the key into an empty slot (acq_rel); 2. fills the class entry;
 *    3. stores the class number (release). A reader acquire-loads the class number, so it sees
 *    the entry. Two claimers of one slot: the CAS decides; the loser reads the winner's key.
 *  - addrs: writers (under table_lock) store the class, then the address (release); readers
 *    acquire-load the address, then read the class. A reader racing a removal may get the old
 *    class of a lock being destroyed: harmless (using a destroyed lock is the caller's bug).
 *  - edges: built under graph_lock: 1. the record is filled; 2. linked into its class's out-list;
 *    3. its index stored in the hash slot; 4. the key stored (release). A lock-free reader
 *    acquire-loads the key and then sees the whole record. Later changes (gates cleared to 0,
 *    read ends cleared, reported set) are atomics that only ever go one way, so a stale read only
 *    costs a trip to the slow path.
 *  - graph_lock and table_lock are raw futex locks (no pthread lock: the preload library wraps
 *    those); they never nest. weft__watch_emit is called under graph_lock (it never blocks),
 *    which also guards the one report buffer. A fork in another thread while one is held would
 *    leave it held in the child: an atfork handler takes both around fork.
 *  - a per-thread `busy` flag (volatile sig_atomic_t, see enter()) is set around every section
 *    that takes table_lock or graph_lock, claims a class slot, or changes the held list; every
 *    hook that finds it set returns at once (class 0, nothing recorded). So a lock taken inside
 *    a hook (a stack capture or emit that reaches a wrapped lock) is ignored, and a signal handler
 *    that locks a mutex while its thread is inside pthread_mutex_init, a first lock or destroy
 *    cannot spin for ever on a raw lock its own thread holds; its acquisition is just untracked.
 *    The atfork handlers set it too while they hold both locks.
 *  - the held list and the cache are the thread's own (TLS): no synchronisation.
 *
 * Limits and what prediction cannot see:
 *  - classes merge by site: all locks initialised at one place (or first used at one place, for
 *    static initialisers) are one class; orders between two of them are instance orders
 *    (above), which a lock freed without destroy keeps. Two sites that are
 *    really one role are two classes, so an inversion needs both orders between the same sites.
 *  - a pthread lock freed without destroy leaves its address entry: a new lock at that address
 *    takes the old class unless it is initialised with pthread_*_init.
 *  - fixed tables: CLASSES_DEFAULT classes, ADDRS_DEFAULT address slots (probe window
 *    ADDR_PROBE), EDGES_DEFAULT edges, HELD_MAX held locks per thread, GATES_MAX gates per edge
 *    (a gate set cut to its first GATES_MAX makes fewer excuses, never more); the path search is
 *    bounded (DFS_DEPTH, DFS_VISITS; a cut search reports nothing and is counted). Overflows are
 *    counted in weft__predict_get_stats and never crash.
 *  - gates and read ends are intersected over all occurrences of an edge, but the stack kept is
 *    the first occurrence's. Gates are lock addresses: a lock destroyed and another one made at
 *    its address between two occurrences counts as the same gate.
 *  - a lock taken by a signal handler while its thread is inside a hook's section is untracked
 *    (no orders into or out of it); a fork from such a handler leaves the raw locks as they are.
 *  - the read-mode excuse assumes readers do not wait for waiting writers (glibc's default); with
 *    writer preference a read-read cycle can deadlock and is not reported.
 *  - semaphores and condition variables are not locks here: a wait for a signal that only a
 *    thread needing one of your locks can send is not an order prediction sees.
 *  - held lists are per OS thread: a lock released by another thread than the one that took it
 *    (a fiber that moved while holding a weft_mutex) leaves a stale entry behind, whose orders
 *    are wrong until that thread's list is reset (the next start).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../internal/common.h"
#include "../internal/watch.h"

enum {
	CLASSES_DEFAULT = 16384, /* classes (numbers 1 .. cap - 1) */
	ADDRS_DEFAULT = 1 << 17, /* address slots */
	EDGES_DEFAULT = 32768,   /* edges (indexes 1 .. cap - 1) */
	ADDR_PROBE = 64,         /* the address table's probe window */
	HELD_MAX = 64,           /* held locks per thread */
	HELD_ORDERS = 32,        /* the oldest held locks an acquisition takes orders from */
	CACHE_SIZE = 128,        /* per-thread edge cache (a power of two) */
	GATES_MAX = 8,           /* gate locks kept per edge */
	G0_MAX = 31,             /* current gates a search tracks (bits of a mask) */
	DFS_DEPTH = 48,          /* path length searched */
	DFS_VISITS = 20000,      /* edges a search examines */
	SPIN_LOCK = 100,         /* spins before a raw lock sleeps */
	INST_DEFAULT = 16384,    /* instance orders (indexes 1 .. cap - 1) */
	ICACHE_SIZE = 64,        /* per-thread instance order cache (a power of two) */
};

#define CLS_NONE UINT32_MAX      /* a key slot whose class could not be made */
#define ADDR_TOMB ((uintptr_t)1) /* a removed address slot */
#define NAME_BIT (UINT64_C(1) << 63)
#define CACHE_RELAXED (UINT64_C(1) << 63) /* cached edge has gates or read ends to check */
#define READ_FROM 1u                      /* the held end was in read mode at every occurrence */
#define READ_TO 2u                        /* the taken end was in read mode at every occurrence */

/* ---- the mapped tables ---- */

/* A node's search scratch (graph_lock): visited in this search (stamp) with write or read entry,
 * and the gate mask then. */
struct dfs_mark {
	uint32_t stamp_w, stamp_r;
	uint32_t mask_w, mask_r;
};

struct lock_class {
	_Atomic(void *) site; /* init, first-use or naming site (relaxed: see class_for_key) */
	char name[24];        /* a named class's name (truncated), written before it is published */
	_Atomic uint32_t self_nested; /* seen taken under its own class (counted once) */
	uint32_t first_out;           /* graph_lock: first edge out of this class, 0: none */
	struct dfs_mark mark;         /* graph_lock: search scratch */
};

struct key_slot {
	_Atomic uint64_t key; /* 0: empty */
	_Atomic uint32_t cls; /* 0: being made; CLS_NONE: none */
};

struct addr_slot {
	_Atomic uintptr_t addr; /* 0: empty; ADDR_TOMB: removed */
	_Atomic uint32_t cls;
};

struct edge {
	uint32_t from, to;                  /* classes; immutable once published */
	uint32_t next_out;                  /* graph_lock: next edge out of `from` */
	_Atomic uint32_t read_ends;         /* READ_FROM | READ_TO, only ever cleared */
	_Atomic uintptr_t gates[GATES_MAX]; /* locks held at every occurrence; 0: none */
	_Atomic uint32_t reported;          /* the pair was reported */
	pid_t tid;                          /* first occurrence: */
	const void *held, *acquired;
	void *site;
	int nstack;
	void *stack[WEFT_WATCH_MAX_FRAMES];
};

struct edge_slot {
	_Atomic uint64_t key; /* (from << 32) | to; 0: empty */
	_Atomic uint32_t idx;
};

/* A lock address that is an end of some instance order. Never removed. */
struct inst_node {
	_Atomic uintptr_t addr;     /* 0: empty; claimed by CAS */
	_Atomic uint32_t gen;       /* bumped by weft__predict_forget (the lock was destroyed) */
	_Atomic uint32_t first_out; /* the newest instance order out of it, 0: none */
	struct dfs_mark mark;       /* graph_lock: search scratch, as lock_class's */
};

/* An instance order: lock `to` was taken while lock `from` of the same class was held. The
 * record is filled before it is published (pair slot CAS, release) and is immutable then, but
 * for what narrows (read_ends, gates: only cleared) and what a refresh rewrites under graph_lock
 * (an order whose end was destroyed since: gens, gates, read ends, the first occurrence). */
struct inst {
	uintptr_t from, to;
	uint32_t nfrom, nto;         /* their nodes */
	_Atomic uint32_t gfrom, gto; /* the nodes' gens when recorded: live while equal */
	_Atomic uint32_t next_out;   /* the next older order out of nfrom */
	_Atomic uint32_t read_ends;  /* READ_FROM | READ_TO, as struct edge */
	_Atomic uintptr_t gates[GATES_MAX];
	_Atomic uint32_t reported;
	uint32_t cls;
	pid_t tid; /* first occurrence: */
	void *site;
	int nstack;
	void *stack[WEFT_WATCH_MAX_FRAMES];
};

static struct {
	_Atomic int active;     /* hooks work (tables mapped and the monitor predicting) */
	_Atomic int mapped;     /* 0 no, 1 being mapped, 2 yes */
	_Atomic uint32_t epoch; /* bumped by each start: stale held lists are reset */
	uint32_t want_classes, want_addrs, want_edges, want_inst; /* weft__predict_test_caps */
	void *base;
	size_t size;
	uint32_t ncls, key_bits, addr_bits, nedges, edge_bits;
	struct lock_class *cls;
	struct key_slot *keys;
	struct addr_slot *addrs;
	struct edge *edges;
	struct edge_slot *eslots;
	uint32_t ninst, islot_bits, node_bits;
	struct inst *inst;
	_Atomic uint32_t *islots; /* pair hash -> instance order index, 0: empty */
	struct inst_node *nodes;
	_Atomic uint32_t next_inst;
	_Atomic uint32_t forgets; /* bumped with a node's gen: per-thread instance caches expire */
	uint32_t istamp;          /* graph_lock: instance search number */
	_Atomic uint32_t next_cls, next_edge;
	_Atomic uint32_t table_lock, graph_lock;
	bool atfork;
	uint32_t stamp; /* graph_lock: search number */
	struct {
		uint32_t node, next, mask, via; /* via: the edge that led here */
		bool rd;                        /* entered in read mode */
	} dfs[DFS_DEPTH];                       /* graph_lock */
	struct {
		uint32_t cls;
		const void *lock;
	} path[DFS_DEPTH + 1]; /* graph_lock: the path a search found, and its closing step */
	int npath;
	weft_watch_report report; /* graph_lock */
	struct {
		_Atomic uint64_t classes, class_overflow, addr_overflow, edges, edge_overflow,
		        held_overflow, same_class, inversions, excused_gate, excused_read,
		        search_truncated, inst_edges, inst_overflow;
	} st;
} g;

/* ---- per thread ---- */

struct held {
	const void *lock;
	void *site;
	uint32_t cls;
	uint8_t mode, flags;
};

struct cache_entry {
	uint64_t key; /* an edge key known (| CACHE_RELAXED); 0: empty */
	uint64_t sig; /* CACHE_RELAXED: the held signature it was checked under */
};

struct inst_cache_entry {
	uintptr_t from, to; /* an instance order known; from 0: empty */
	uint32_t forgets;   /* g.forgets when it was checked: a destroy since expires it */
	uint32_t relaxed;   /* it has gates or read ends: valid under `sig` only */
	uint64_t sig;
};

struct pstate {
	uint32_t epoch;
	int n; /* entries in held */
	/* Inside a hook's section that a hook run by a signal handler on this thread must not
	 * enter (a raw lock, a class being made, the held list being built): see enter(). */
	volatile sig_atomic_t busy;
	uint64_t sig; /* sum of held_sig() over held: the multiset of held (lock, class, mode) */
	struct held held[HELD_MAX];
	struct cache_entry cache[CACHE_SIZE];
	struct inst_cache_entry icache[ICACHE_SIZE];
};

static __thread struct pstate me WEFT__WATCH_TLS;

/* ---- helpers ---- */

static inline void count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static inline uint32_t hash_bits(uint64_t x, uint32_t bits)
{
	return (uint32_t)((x * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - bits));
}

static inline uint64_t edge_key(uint32_t from, uint32_t to)
{
	return ((uint64_t)from << 32) | to;
}

/* The top `bits` of a hash of an edge key. Fibonacci hashing of the 64-bit key would spread
 * `from` (its high half) badly: each half gets a multiplier of its own. */
static inline uint32_t edge_hash(uint64_t key, uint32_t bits)
{
	uint32_t h =
	        (uint32_t)(key >> 32) * UINT32_C(0x9E3779B1) + (uint32_t)key * UINT32_C(0x85EBCA77);
	return h >> (32 - bits);
}

static inline int active(void)
{
	return atomic_load_explicit(&g.active, memory_order_acquire);
}

/* The thread's state, its held list reset if a new run of the monitor began since it was used. */
static inline struct pstate *self(void)
{
	struct pstate *t = &me;
	uint32_t e = atomic_load_explicit(&g.epoch, memory_order_relaxed);
	if (weft__unlikely(t->epoch != e)) {
		t->epoch = e;
		t->n = 0;
		t->sig = 0;
	}
	return t;
}

/* Enter a section of a hook that a signal handler running hooks on this thread must not
 * interrupt: a raw lock held (graph_lock, table_lock), a class slot claimed and not yet published
 * (class_for_key), the held list or the cache being changed by before_slow. A hook that finds the
 * thread inside one returns at once (class 0, nothing recorded), so a handler that locks a mutex
 * while its thread is inside pthread_mutex_init or a first lock cannot wait for itself. The flag is
 * the thread's own and only a handler on this thread can see it mid-change: a volatile
 * sig_atomic_t, and signal fences keep the section's memory accesses inside the flag's window
 * (they cost no instruction). False: already inside one (do nothing). */
static inline bool enter(struct pstate *t)
{
	if (t->busy)
		return false;
	t->busy = 1;
	atomic_signal_fence(memory_order_seq_cst);
	return true;
}

static inline void leave(struct pstate *t)
{
	atomic_signal_fence(memory_order_seq_cst);
	t->busy = 0;
}

/* A held lock's part of the thread's held signature. The signature is a sum (held locks come
 * and go in any order, and two of one class must not cancel out as with xor); a cached edge that
 * has gates or read ends is known to fit while the signature (with the mode being taken) is the
 * one it was checked under: the same held locks, classes and modes give the same answer (gates
 * are lock instances, read ends modes), and an edge's gates and read ends only ever shrink. */
static inline uint64_t held_sig(const void *lock, uint32_t cls, int mode)
{
	uint64_t x = (uint64_t)(uintptr_t)lock * UINT64_C(0xC2B2AE3D27D4EB4F) + (uint64_t)cls * 2 +
	             (uint64_t)mode + 1;
	return x * UINT64_C(0x9E3779B97F4A7C15);
}

static inline uint64_t taking_sig(const struct pstate *t, int mode)
{
	return t->sig + (mode == 1 ? UINT64_C(0xD6E8FEB86659FD93) : 0);
}

/* Raw lock: 0 free, 1 locked, 2 locked with sleepers. Acquire on taking, release on giving. The
 * futex calls go through syscall(), which may set errno: saved around them. */
static void raw_lock(_Atomic uint32_t *l)
{
	uint32_t c = 0;
	if (atomic_compare_exchange_strong_explicit(l, &c, 1, memory_order_acquire,
	                                            memory_order_relaxed))
		return;
	for (int i = 0; i < SPIN_LOCK; i++) {
		weft__cpu_relax();
		c = 0;
		if (atomic_load_explicit(l, memory_order_relaxed) == 0 &&
		    atomic_compare_exchange_strong_explicit(l, &c, 1, memory_order_acquire,
		                                            memory_order_relaxed))
			return;
	}
	int saved = errno;
	while (atomic_exchange_explicit(l, 2, memory_order_acquire) != 0)
		syscall(SYS_futex, l, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
	errno = saved;
}

static void raw_unlock(_Atomic uint32_t *l)
{
	if (atomic_exchange_explicit(l, 0, memory_order_release) == 2) {
		int saved = errno;
		syscall(SYS_futex, l, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
		errno = saved;
	}
}

/* fork: hold both locks across it so the child never inherits one held by a thread it lost, with
 * the thread's busy flag set (a signal handler's hook must not wait for them). A fork from a
 * signal handler that interrupted a hook's section (busy already set: this thread may hold one
 * of the locks) takes neither, and the child keeps them as they are: the interrupted section goes
 * on in the child and releases its own; one held by another thread then stays held in the child
 * (its hooks that need it would wait: a documented limit). */
static __thread bool fork_entered WEFT__WATCH_TLS;

static void fork_prepare(void)
{
	fork_entered = enter(&me);
	if (!fork_entered)
		return;
	raw_lock(&g.graph_lock);
	raw_lock(&g.table_lock);
}

static void fork_parent(void)
{
	if (!fork_entered)
		return;
	raw_unlock(&g.table_lock);
	raw_unlock(&g.graph_lock);
	leave(&me);
}

static void fork_child(void)
{
	if (!fork_entered)
		return;
	atomic_store_explicit(&g.table_lock, 0, memory_order_relaxed);
	atomic_store_explicit(&g.graph_lock, 0, memory_order_relaxed);
	leave(&me);
}

static uint32_t pow2_bits(uint32_t n)
{
	uint32_t b = 4;
	while ((UINT32_C(1) << b) < n && b < 30)
		b++;
	return b;
}

static size_t align_up(size_t n)
{
	return (n + 63) & ~(size_t)63;
}

/* Map every table once (called by start; the tables then stay for the life of the process). */
static int map_tables(void)
{
	int s = 0;
	if (atomic_compare_exchange_strong(&g.mapped, &s, 1)) {
		uint32_t ncls = g.want_classes ? g.want_classes : CLASSES_DEFAULT;
		uint32_t naddr = g.want_addrs ? g.want_addrs : ADDRS_DEFAULT;
		uint32_t nedge = g.want_edges ? g.want_edges : EDGES_DEFAULT;
		uint32_t ninst = g.want_inst ? g.want_inst : INST_DEFAULT;
		ncls = WEFT__MAX(ncls, 2u);
		nedge = WEFT__MAX(nedge, 2u);
		ninst = WEFT__MAX(ninst, 2u);
		/* pair slots at most half full; nodes (two per order at most) too */
		uint32_t islot_bits = pow2_bits(2 * ninst), node_bits = pow2_bits(4 * ninst);
		uint32_t key_bits = pow2_bits(2 * ncls), addr_bits = pow2_bits(naddr);
		uint32_t edge_bits = pow2_bits(2 * nedge);
		size_t o_cls = 0;
		size_t o_keys = o_cls + align_up(ncls * sizeof(struct lock_class));
		size_t o_addrs =
		        o_keys + align_up(((size_t)1 << key_bits) * sizeof(struct key_slot));
		size_t o_edges =
		        o_addrs + align_up(((size_t)1 << addr_bits) * sizeof(struct addr_slot));
		size_t o_eslots = o_edges + align_up(nedge * sizeof(struct edge));
		size_t o_inst =
		        o_eslots + align_up(((size_t)1 << edge_bits) * sizeof(struct edge_slot));
		size_t o_islots = o_inst + align_up(ninst * sizeof(struct inst));
		size_t o_nodes =
		        o_islots + align_up(((size_t)1 << islot_bits) * sizeof(_Atomic uint32_t));
		size_t size =
		        o_nodes + align_up(((size_t)1 << node_bits) * sizeof(struct inst_node));
		int saved = errno;
		char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		errno = saved;
		if (p == MAP_FAILED) {
			atomic_store(&g.mapped, 0);
			return -ENOMEM;
		}
		g.base = p;
		g.size = size;
		g.ncls = ncls;
		g.key_bits = key_bits;
		g.addr_bits = addr_bits;
		g.nedges = nedge;
		g.edge_bits = edge_bits;
		g.cls = (struct lock_class *)(p + o_cls);
		g.keys = (struct key_slot *)(p + o_keys);
		g.addrs = (struct addr_slot *)(p + o_addrs);
		g.edges = (struct edge *)(p + o_edges);
		g.eslots = (struct edge_slot *)(p + o_eslots);
		g.ninst = ninst;
		g.islot_bits = islot_bits;
		g.node_bits = node_bits;
		g.inst = (struct inst *)(p + o_inst);
		g.islots = (_Atomic uint32_t *)(p + o_islots);
		g.nodes = (struct inst_node *)(p + o_nodes);
		atomic_store(&g.next_inst, 1);
		atomic_store(&g.next_cls, 1);
		atomic_store(&g.next_edge, 1);
		if (!g.atfork) {
			/* pthread_atfork only fails for lack of memory: then fork while a raw lock
			 * is held can leave it held in the child, the risk it guards against. */
			g.atfork = pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
		}
		atomic_store_explicit(&g.mapped, 2, memory_order_release);
		return 0;
	}
	while (atomic_load_explicit(&g.mapped, memory_order_acquire) == 1)
		sched_yield();
	return atomic_load_explicit(&g.mapped, memory_order_acquire) == 2 ? 0 : -ENOMEM;
}

static inline bool mapped(void)
{
	return atomic_load_explicit(&g.mapped, memory_order_acquire) == 2;
}

/* ---- classes ---- */

static uint32_t wait_class(struct key_slot *s)
{
	uint32_t c;
	for (int i = 0; (c = atomic_load_explicit(&s->cls, memory_order_acquire)) == 0; i++) {
		if (i < 1000)
			weft__cpu_relax();
		else
			sched_yield();
	}
	return c == CLS_NONE ? 0 : c;
}

/* The class for `key`, made on first sight (lock-free; see the head comment). 0: no room. */
static uint32_t class_for_key(uint64_t key, void *site, const char *name)
{
	uint32_t mask = (UINT32_C(1) << g.key_bits) - 1;
	uint32_t i = hash_bits(key, g.key_bits);
	for (uint32_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
		struct key_slot *s = &g.keys[i];
		uint64_t k = atomic_load_explicit(&s->key, memory_order_acquire);
		if (k == 0) {
			if (!atomic_compare_exchange_strong_explicit(
			            &s->key, &k, key, memory_order_acq_rel, memory_order_acquire)) {
				if (k == key)
					return wait_class(s);
				continue; /* another key took it */
			}
			uint32_t c =
			        atomic_fetch_add_explicit(&g.next_cls, 1, memory_order_relaxed);
			if (c >= g.ncls) {
				count(&g.st.class_overflow);
				atomic_store_explicit(&s->cls, CLS_NONE, memory_order_release);
				return 0;
			}
			/* relaxed: a thread that learnt the number without our release (weft_mutex
			 * caches it in the lock with relaxed stores) may read it early and see NULL
			 */
			atomic_store_explicit(&g.cls[c].site, site, memory_order_relaxed);
			if (name) {
				size_t len = strnlen(name, sizeof(g.cls[c].name) - 1);
				memcpy(g.cls[c].name, name, len);
				g.cls[c].name[len] = '\0';
			}
			count(&g.st.classes);
			atomic_store_explicit(&s->cls, c, memory_order_release);
			return c;
		}
		if (k == key)
			return wait_class(s);
	}
	count(&g.st.class_overflow);
	return 0;
}

static uint64_t site_key(void *site)
{
	return site ? ((uintptr_t)site & ~NAME_BIT) : 2;
}

uint32_t weft__predict_class_named(const char *name, void *site)
{
	if (!mapped())
		return 0;
	uint64_t key = site_key(site);
	if (name) {
		uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a 64 */
		for (const unsigned char *p = (const unsigned char *)name; *p; p++)
			h = (h ^ *p) * UINT64_C(0x100000001b3);
		key = h | NAME_BIT;
	}
	struct pstate *t = &me;
	if (!enter(t))
		return 0; /* a signal handler inside a hook: untracked (callers retry later) */
	uint32_t c = class_for_key(key, site, name);
	leave(t);
	return c;
}

const char *weft__predict_class_name(uint32_t cls)
{
	if (!mapped() || cls == 0 || cls >= g.ncls ||
	    cls >= atomic_load_explicit(&g.next_cls, memory_order_acquire))
		return "";
	return g.cls[cls].name;
}

void *weft__predict_class_site(uint32_t cls)
{
	if (!mapped() || cls == 0 || cls >= g.ncls ||
	    cls >= atomic_load_explicit(&g.next_cls, memory_order_acquire))
		return NULL;
	return atomic_load_explicit(&g.cls[cls].site, memory_order_relaxed);
}

/* ---- instance order nodes (used by forget) ---- */

static inline uint32_t pair_hash(uintptr_t from, uintptr_t to, uint32_t bits)
{
	uint64_t h = (uint64_t)from * UINT64_C(0x9E3779B97F4A7C15) ^
	             (uint64_t)to * UINT64_C(0xC2B2AE3D27D4EB4F);
	return (uint32_t)((h ^ (h >> 29)) * UINT64_C(0x94D049BB133111EB) >> (64 - bits));
}

/* The node of lock address `a` (index + 1), made if `make`; 0: none (or the table is full,
 * which its size rules out: at most two nodes per order). Lock-free: a CAS claims an empty slot
 * (0 -> a); the loser of a race for one slot reads the winner's address. */
static uint32_t node_get(uintptr_t a, bool make)
{
	uint32_t mask = (UINT32_C(1) << g.node_bits) - 1, i = hash_bits(a >> 3, g.node_bits);
	for (uint32_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
		uintptr_t k = atomic_load_explicit(&g.nodes[i].addr, memory_order_acquire);
		if (k == 0) {
			if (!make)
				return 0;
			if (atomic_compare_exchange_strong_explicit(&g.nodes[i].addr, &k, a,
			                                            memory_order_acq_rel,
			                                            memory_order_acquire))
				return i + 1;
		}
		if (k == a)
			return i + 1;
	}
	return 0;
}

static inline struct inst_node *node_at(uint32_t n)
{
	return &g.nodes[n - 1];
}

/* ---- lock addresses ---- */

static inline uint32_t addr_home(const void *lock)
{
	return hash_bits((uintptr_t)lock >> 3, g.addr_bits);
}

static uint32_t addr_lookup(const void *lock)
{
	uint32_t mask = (UINT32_C(1) << g.addr_bits) - 1, i = addr_home(lock);
	for (int n = 0; n < ADDR_PROBE; n++, i = (i + 1) & mask) {
		uintptr_t a = atomic_load_explicit(&g.addrs[i].addr, memory_order_acquire);
		if (a == (uintptr_t)lock)
			return atomic_load_explicit(&g.addrs[i].cls, memory_order_relaxed);
		if (a == 0)
			return 0;
	}
	return 0;
}

/* Under table_lock: lock -> cls (replace: a new init at a known address takes the new class).
 * Returns the class now stored, 0 when the window is full. */
static uint32_t addr_insert(const void *lock, uint32_t cls, bool replace)
{
	uint32_t mask = (UINT32_C(1) << g.addr_bits) - 1, i = addr_home(lock);
	struct addr_slot *free_slot = NULL;
	for (int n = 0; n < ADDR_PROBE; n++, i = (i + 1) & mask) {
		struct addr_slot *s = &g.addrs[i];
		uintptr_t a = atomic_load_explicit(&s->addr, memory_order_relaxed);
		if (a == (uintptr_t)lock) {
			if (replace)
				atomic_store_explicit(&s->cls, cls, memory_order_relaxed);
			return atomic_load_explicit(&s->cls, memory_order_relaxed);
		}
		if (a == ADDR_TOMB && !free_slot)
			free_slot = s;
		if (a == 0) {
			if (!free_slot)
				free_slot = s;
			break;
		}
	}
	if (!free_slot) {
		count(&g.st.addr_overflow);
		return 0;
	}
	atomic_store_explicit(&free_slot->cls, cls, memory_order_relaxed);
	atomic_store_explicit(&free_slot->addr, (uintptr_t)lock, memory_order_release);
	return cls;
}

/* A signal handler's call that finds its thread inside a hook's section (enter() false) does
 * nothing: init leaves the lock to get its class at first use, first use leaves it untracked
 * this time (class 0; a later use outside the handler classifies it), forget leaves the address
 * entry (a later init at that address replaces it). */
void weft__predict_class_init(const void *lock, void *site)
{
	if (!mapped() || !lock)
		return;
	struct pstate *t = &me;
	if (!enter(t))
		return;
	uint32_t c = class_for_key(site_key(site), site, NULL);
	if (c) {
		raw_lock(&g.table_lock);
		addr_insert(lock, c, true);
		raw_unlock(&g.table_lock);
	}
	leave(t);
}

uint32_t weft__predict_class(const void *lock, void *site)
{
	if (!mapped() || !lock)
		return 0;
	uint32_t c = addr_lookup(lock); /* lock-free: fine inside a signal handler too */
	if (weft__likely(c))
		return c;
	struct pstate *t = &me;
	if (!enter(t))
		return 0;
	c = class_for_key(site_key(site), site, NULL);
	if (c) {
		raw_lock(&g.table_lock);
		/* a racing first use may have stored its own: keep it */
		c = addr_insert(lock, c, false);
		raw_unlock(&g.table_lock);
	}
	leave(t);
	return c;
}

void weft__predict_forget(const void *lock)
{
	if (!mapped() || !lock)
		return;
	struct pstate *t = &me;
	if (!enter(t))
		return;
	uint32_t mask = (UINT32_C(1) << g.addr_bits) - 1, i = addr_home(lock);
	raw_lock(&g.table_lock);
	for (int n = 0; n < ADDR_PROBE; n++, i = (i + 1) & mask) {
		uintptr_t a = atomic_load_explicit(&g.addrs[i].addr, memory_order_relaxed);
		if (a == 0)
			break;
		if (a != (uintptr_t)lock)
			continue;
		atomic_store_explicit(&g.addrs[i].addr, ADDR_TOMB, memory_order_relaxed);
		/* A tombstone followed by an empty slot is inside no probe chain: empty it, and the
		 * tombstones before it in turn. */
		uint32_t j = i;
		while (atomic_load_explicit(&g.addrs[j].addr, memory_order_relaxed) == ADDR_TOMB &&
		       atomic_load_explicit(&g.addrs[(j + 1) & mask].addr, memory_order_relaxed) ==
		               0) {
			atomic_store_explicit(&g.addrs[j].addr, 0, memory_order_relaxed);
			j = (j - 1) & mask;
		}
		break;
	}
	raw_unlock(&g.table_lock);
	/* Its instance orders end: a lock made at this address later starts afresh. The gen
	 * first, then forgets (release: a thread that sees the new forgets and drops its cached
	 * orders sees the gen too). */
	uint32_t n = node_get((uintptr_t)lock, false);
	if (n) {
		atomic_fetch_add_explicit(&node_at(n)->gen, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&g.forgets, 1, memory_order_release);
	}
	leave(t);
}

/* ---- the order graph ---- */

static uint32_t edge_find(uint64_t key)
{
	uint32_t mask = (UINT32_C(1) << g.edge_bits) - 1, i = edge_hash(key, g.edge_bits);
	for (uint32_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
		uint64_t k = atomic_load_explicit(&g.eslots[i].key, memory_order_acquire);
		if (k == key)
			return atomic_load_explicit(&g.eslots[i].idx, memory_order_relaxed);
		if (k == 0)
			return 0;
	}
	return 0;
}

static bool edge_relaxed_parts(_Atomic uint32_t *read_ends, _Atomic uintptr_t *gates)
{
	if (atomic_load_explicit(read_ends, memory_order_relaxed))
		return true;
	for (int i = 0; i < GATES_MAX; i++)
		if (atomic_load_explicit(&gates[i], memory_order_relaxed))
			return true;
	return false;
}

static bool edge_relaxed(struct edge *e)
{
	return edge_relaxed_parts(&e->read_ends, e->gates);
}

static bool holds_lock(const struct pstate *t, uintptr_t lock)
{
	for (int i = 0; i < t->n; i++)
		if ((uintptr_t)t->held[i].lock == lock)
			return true;
	return false;
}

/* This occurrence (held entry h, taking in `mode`) is at least as gated and read-only as every
 * earlier one: nothing to narrow. */
static bool fits(const struct pstate *t, _Atomic uint32_t *read_ends, _Atomic uintptr_t *gates,
                 const struct held *h, int mode)
{
	uint32_t ends = atomic_load_explicit(read_ends, memory_order_relaxed);
	if ((ends & READ_FROM) && h->mode != 1)
		return false;
	if ((ends & READ_TO) && mode != 1)
		return false;
	for (int i = 0; i < GATES_MAX; i++) {
		uintptr_t l = atomic_load_explicit(&gates[i], memory_order_relaxed);
		if (l && !holds_lock(t, l))
			return false;
	}
	return true;
}

static bool occurrence_fits(const struct pstate *t, struct edge *e, const struct held *h, int mode)
{
	return fits(t, &e->read_ends, e->gates, h, mode);
}

/* Under graph_lock: a new edge from -> to with this occurrence. 0: the table is full. */
static uint32_t edge_add(uint64_t key, const struct held *h, const void *lock, uint32_t to,
                         int mode, void *site, const uintptr_t *g0, int ng0, void *const *frames,
                         int nframes)
{
	uint32_t idx = atomic_load_explicit(&g.next_edge, memory_order_relaxed);
	if (idx >= g.nedges) {
		count(&g.st.edge_overflow);
		return 0;
	}
	struct edge *e = &g.edges[idx];
	e->from = h->cls;
	e->to = to;
	atomic_store_explicit(&e->read_ends,
	                      (h->mode == 1 ? READ_FROM : 0) | (mode == 1 ? READ_TO : 0),
	                      memory_order_relaxed);
	for (int i = 0; i < GATES_MAX; i++)
		atomic_store_explicit(&e->gates[i], i < ng0 ? g0[i] : 0, memory_order_relaxed);
	atomic_store_explicit(&e->reported, 0, memory_order_relaxed);
	e->tid = weft__watch_tid();
	e->held = h->lock;
	e->acquired = lock;
	e->site = site;
	e->nstack = WEFT__MAX(nframes, 0);
	if (e->nstack)
		memcpy(e->stack, frames, (size_t)e->nstack * sizeof(void *));
	e->next_out = g.cls[e->from].first_out;
	g.cls[e->from].first_out = idx;
	atomic_store_explicit(&g.next_edge, idx + 1, memory_order_relaxed);
	uint32_t mask = (UINT32_C(1) << g.edge_bits) - 1, i = edge_hash(key, g.edge_bits);
	while (atomic_load_explicit(&g.eslots[i].key, memory_order_relaxed) != 0)
		i = (i + 1) & mask; /* at most half full: an empty slot is near */
	atomic_store_explicit(&g.eslots[i].idx, idx, memory_order_relaxed);
	atomic_store_explicit(&g.eslots[i].key, key, memory_order_release);
	count(&g.st.edges);
	return idx;
}

/* Narrow an order's read ends and gates by this occurrence (they are only ever cleared, so
 * racing narrowers agree). True if anything changed. */
static bool narrow(_Atomic uint32_t *read_ends, _Atomic uintptr_t *gates, const struct pstate *t,
                   const struct held *h, int mode)
{
	bool changed = false;
	uint32_t ends = atomic_load_explicit(read_ends, memory_order_relaxed), keep = ends;
	if (h->mode != 1)
		keep &= ~READ_FROM;
	if (mode != 1)
		keep &= ~READ_TO;
	if (keep != ends) {
		atomic_fetch_and_explicit(read_ends, keep, memory_order_relaxed);
		changed = true;
	}
	for (int i = 0; i < GATES_MAX; i++) {
		uintptr_t l = atomic_load_explicit(&gates[i], memory_order_relaxed);
		if (l && !holds_lock(t, l)) {
			atomic_store_explicit(&gates[i], 0, memory_order_relaxed);
			changed = true;
		}
	}
	return changed;
}

/* Under graph_lock: narrow an existing edge by this occurrence. True if anything changed. */
static bool edge_narrow(struct edge *e, const struct pstate *t, const struct held *h, int mode)
{
	return narrow(&e->read_ends, e->gates, t, h, mode);
}

/* The bits of the current gates g0[0..ng0) that are among `gates`. */
static uint32_t gate_mask(_Atomic uintptr_t *gates, const uintptr_t *g0, int ng0)
{
	uint32_t m = 0;
	for (int i = 0; i < GATES_MAX; i++) {
		uintptr_t l = atomic_load_explicit(&gates[i], memory_order_relaxed);
		if (!l)
			continue;
		for (int j = 0; j < ng0; j++)
			if (g0[j] == l)
				m |= UINT32_C(1) << j;
	}
	return m;
}

/* Visit a node (its scratch `c`) entered with gate mask m (in read mode if rd), unless an earlier
 * visit in this search (number `stamp`) dominates it (entered in write mode, or in the same mode,
 * with a subset of the mask: whatever this visit could reach unexcused, that one could too). */
static bool visit(struct dfs_mark *c, uint32_t stamp, uint32_t m, bool rd)
{
	if (c->stamp_w == stamp && (c->mask_w & ~m) == 0)
		return false;
	if (rd && c->stamp_r == stamp && (c->mask_r & ~m) == 0)
		return false;
	if (rd) {
		c->stamp_r = stamp;
		c->mask_r = m;
	} else {
		c->stamp_w = stamp;
		c->mask_w = m;
	}
	return true;
}

/* Neither end was destroyed since the order was recorded. */
static inline bool inst_live(struct inst *e)
{
	return atomic_load_explicit(&e->gfrom, memory_order_relaxed) ==
	               atomic_load_explicit(&node_at(e->nfrom)->gen, memory_order_relaxed) &&
	       atomic_load_explicit(&e->gto, memory_order_relaxed) ==
	               atomic_load_explicit(&node_at(e->nto)->gen, memory_order_relaxed);
}

/* The two graphs one search walks: the class orders (nodes are classes, edges struct edge) and
 * the instance orders of same-class nesting (nodes are struct inst_node, edges struct inst). */
static struct dfs_mark *mark_of(bool inst, uint32_t node)
{
	return inst ? &node_at(node)->mark : &g.cls[node].mark;
}

static uint32_t first_out_of(bool inst, uint32_t node)
{
	return inst ? atomic_load_explicit(&node_at(node)->first_out, memory_order_acquire)
	            : g.cls[node].first_out;
}

/* A new search number for a graph; on a wrap its scratch is cleared so no old stamp matches. */
static uint32_t new_stamp(bool inst)
{
	uint32_t *stamp = inst ? &g.istamp : &g.stamp;
	if (++*stamp == 0) {
		uint32_t n = inst ? UINT32_C(1) << g.node_bits : g.ncls;
		for (uint32_t i = 0; i < n; i++)
			mark_of(inst, i)->stamp_w = mark_of(inst, i)->stamp_r = 0;
		*stamp = 1;
	}
	return *stamp;
}

/* An order of either graph as the search sees it. */
struct order_view {
	uint32_t next; /* the next order out of the same node */
	uint32_t to;   /* the node it leads to */
	bool closes;   /* it leads to the search's target */
	bool live;     /* instance orders: both ends still the locks recorded */
	uint32_t ends; /* READ_FROM | READ_TO */
	_Atomic uintptr_t *gates;
	uint32_t cls; /* for the report's path: the class and lock it leaves */
	const void *lock;
};

static void view(bool inst, uint32_t ei, uintptr_t target, struct order_view *v)
{
	if (inst) {
		struct inst *e = &g.inst[ei];
		v->next = atomic_load_explicit(&e->next_out, memory_order_relaxed);
		v->to = e->nto;
		v->closes = e->to == target;
		v->live = inst_live(e);
		v->ends = atomic_load_explicit(&e->read_ends, memory_order_relaxed);
		v->gates = e->gates;
		v->cls = e->cls;
		v->lock = (const void *)e->from;
	} else {
		struct edge *e = &g.edges[ei];
		v->next = e->next_out;
		v->to = e->to;
		v->closes = e->to == target;
		v->live = true;
		v->ends = atomic_load_explicit(&e->read_ends, memory_order_relaxed);
		v->gates = e->gates;
		v->cls = e->from;
		v->lock = e->held;
	}
}

/* Under graph_lock: a path start -> ... -> target that closes an unexcused cycle with the
 * acquisition of `start` (mode start_mode) while `target` is held (mode target_mode) and the gate
 * locks g0[0..ng0) are held too. Class orders: start and target are classes. Instance orders
 * (inst): start is the node of the lock being taken, target the held lock's address. Returns the
 * first order of the path (and the path in g.path), 0 if none; counts excuses and cut searches. */
static uint32_t search(bool inst, uintptr_t target, uint32_t start, int target_mode, int start_mode,
                       const uintptr_t *g0, int ng0)
{
	uint32_t stamp = new_stamp(inst);
	uint32_t full = ng0 ? (UINT32_MAX >> (32 - ng0)) : 0;
	bool gated = false, read = false, cut = false;
	int depth = 1, visits = 0;
	g.dfs[0].node = start;
	g.dfs[0].next = first_out_of(inst, start);
	g.dfs[0].mask = full;
	g.dfs[0].rd = start_mode == 1;
	g.dfs[0].via = 0;
	visit(mark_of(inst, start), stamp, full, start_mode == 1);
	uint32_t found = 0;
	while (depth > 0 && !found) {
		__typeof__(g.dfs[0]) *f = &g.dfs[depth - 1];
		uint32_t ei = f->next;
		if (!ei) {
			depth--;
			continue;
		}
		struct order_view e;
		view(inst, ei, target, &e);
		f->next = e.next;
		if (++visits > DFS_VISITS) {
			cut = true;
			break;
		}
		if (!e.live)
			continue; /* an end was destroyed since */
		if (f->rd && (e.ends & READ_FROM)) {
			read = true; /* read mode on both sides of f->node */
			continue;
		}
		uint32_t m = f->mask & gate_mask(e.gates, g0, ng0);
		if (e.closes) {
			if (m)
				gated = true;
			else if ((e.ends & READ_TO) && target_mode == 1)
				read = true;
			else
				found = depth == 1 ? ei : g.dfs[1].via;
			if (found) {
				g.npath = 0;
				for (int k = 1; k < depth; k++) {
					struct order_view pe;
					view(inst, g.dfs[k].via, target, &pe);
					g.path[g.npath].cls = pe.cls;
					g.path[g.npath++].lock = pe.lock;
				}
				g.path[g.npath].cls = e.cls;
				g.path[g.npath++].lock = e.lock;
			}
			continue;
		}
		bool rd = (e.ends & READ_TO) != 0;
		if (!visit(mark_of(inst, e.to), stamp, m, rd))
			continue;
		if (depth == DFS_DEPTH) {
			cut = true;
			continue;
		}
		__typeof__(g.dfs[0]) *n = &g.dfs[depth++];
		n->node = e.to;
		n->next = first_out_of(inst, e.to);
		n->mask = m;
		n->rd = rd;
		n->via = ei;
	}
	if (!found) {
		if (cut)
			count(&g.st.search_truncated);
		if (gated)
			count(&g.st.excused_gate);
		if (read)
			count(&g.st.excused_read);
	}
	return found;
}

static void fill_order(weft_watch_order *o, pid_t tid, const void *held, const void *acquired,
                       uint32_t from, uint32_t to, void *const *frames, int nframes)
{
	o->tid = tid;
	o->held = held;
	o->acquired = acquired;
	o->held_class_site = atomic_load_explicit(&g.cls[from].site, memory_order_relaxed);
	o->acquired_class_site = atomic_load_explicit(&g.cls[to].site, memory_order_relaxed);
	memcpy(o->held_class_name, g.cls[from].name, sizeof(o->held_class_name));
	memcpy(o->acquired_class_name, g.cls[to].name, sizeof(o->acquired_class_name));
	o->nstack = WEFT__MIN(nframes, WEFT_WATCH_MAX_FRAMES);
	if (o->nstack > 0)
		memcpy(o->stack, frames, (size_t)o->nstack * sizeof(void *));
	else
		o->nstack = 0;
}

/* The first occurrence of an order, for order[0] of a report. */
struct first_order {
	pid_t tid;
	const void *held, *acquired;
	uint32_t from, to;
	void *const *stack;
	int nstack;
};

/* Under graph_lock: emit an inversion: order[0] the stored first order of the path, order[1]
 * this acquisition (held entry h of class `from`, taking `lock` of class `to`). */
static void emit_inversion(const struct pstate *t, const struct held *h, uint32_t from, uint32_t to,
                           const struct first_order *p, const void *lock, void *site,
                           void *const *frames, int nframes)
{
	weft_watch_report *r = &g.report;
	memset(r, 0, sizeof(*r));
	r->event = WEFT_WATCH_INVERSION;
	r->nthreads = 1;
	weft_watch_thread *th = &r->threads[0];
	int saved = errno;
	th->pid = getpid();
	char name[16] = "";
	if (prctl(PR_GET_NAME, name) == 0) {
		name[15] = 0;
		memcpy(th->name, name, sizeof(th->name));
	}
	errno = saved;
	th->tid = weft__watch_tid();
	th->waits_for = lock; /* about to be taken; wait_kind 0: it has not waited */
	th->wait_site = site;
	for (int i = 0; i < t->n && th->nholds < WEFT_WATCH_MAX_HOLDS; i++)
		th->holds[th->nholds++] = t->held[i].lock;
	th->nstack = WEFT__MIN(nframes, WEFT_WATCH_MAX_FRAMES);
	if (th->nstack > 0)
		memcpy(th->stack, frames, (size_t)th->nstack * sizeof(void *));
	else
		th->nstack = 0;
	fill_order(&r->order[0], p->tid, p->held, p->acquired, p->from, p->to, p->stack, p->nstack);
	fill_order(&r->order[1], th->tid, h->lock, lock, from, to, frames, nframes);
	/* the cycle: the search's path, then this acquisition's held lock */
	g.path[g.npath].cls = from; /* npath <= DFS_DEPTH */
	g.path[g.npath].lock = h->lock;
	int n = g.npath + 1;
	for (int i = 0; i < n; i++) {
		if (r->npath == WEFT_WATCH_MAX_PATH) {
			r->more_path++;
			continue;
		}
		uint32_t c = g.path[i].cls;
		r->path[r->npath].lock = g.path[i].lock;
		r->path[r->npath].class_site =
		        atomic_load_explicit(&g.cls[c].site, memory_order_relaxed);
		memcpy(r->path[r->npath].class_name, g.cls[c].name, sizeof(r->path[0].class_name));
		r->npath++;
	}
	count(&g.st.inversions);
	weft__watch_emit(r);
}

/* Under graph_lock: report the cycle closed by edge ei (this acquisition) with the path starting
 * at edge first. */
static void report(const struct pstate *t, const struct held *h, uint32_t ei, uint32_t first,
                   const void *lock, void *site, void *const *frames, int nframes)
{
	struct edge *e = &g.edges[ei], *p = &g.edges[first];
	struct first_order fo = {p->tid, p->held, p->acquired, p->from, p->to, p->stack, p->nstack};
	emit_inversion(t, h, e->from, e->to, &fo, lock, site, frames, nframes);
	atomic_store_explicit(&e->reported, 1, memory_order_relaxed);
	if (p->to == e->from) /* a two-class cycle: the reverse edge is the same pair */
		atomic_store_explicit(&p->reported, 1, memory_order_relaxed);
}

/* Adds lock l to the n gates in g0 unless it is there already; the new count. */
static int gate_add(uintptr_t *g0, int n, uintptr_t l)
{
	for (int j = 0; j < n; j++)
		if (g0[j] == l)
			return n;
	g0[n] = l;
	return n + 1;
}

/* The held locks whose class is neither a nor b (nor untracked), without repeats: the gates of
 * this occurrence. Gates are lock instances: two locks of one class (say the locks of two objects
 * made at one site) exclude nothing from each other. */
static int current_gates(const struct pstate *t, uint32_t a, uint32_t b, uintptr_t *g0)
{
	int n = 0;
	for (int i = 0; i < t->n && n < G0_MAX; i++) {
		uint32_t c = t->held[i].cls;
		uintptr_t l = (uintptr_t)t->held[i].lock;
		if (c == 0 || c == a || c == b || c >= g.ncls || l == 0)
			continue;
		n = gate_add(g0, n, l);
	}
	return n;
}

static inline uint32_t cache_slot(uint64_t key)
{
	return edge_hash(key, 7); /* CACHE_SIZE == 1 << 7 */
}
_Static_assert(CACHE_SIZE == 1 << 7, "cache_slot's bits");

static void note_self_nesting(uint32_t cls)
{
	struct lock_class *c = &g.cls[cls];
	if (!atomic_load_explicit(&c->self_nested, memory_order_relaxed) &&
	    !atomic_exchange_explicit(&c->self_nested, 1, memory_order_relaxed))
		count(&g.st.same_class);
}

/* ---- instance orders (same-class nesting) ---- */

/* The instance order from -> to, 0 if none (lock-free). */
static uint32_t inst_find(uintptr_t from, uintptr_t to)
{
	uint32_t mask = (UINT32_C(1) << g.islot_bits) - 1, i = pair_hash(from, to, g.islot_bits);
	for (uint32_t n = 0; n <= mask; n++, i = (i + 1) & mask) {
		uint32_t idx = atomic_load_explicit(&g.islots[i], memory_order_acquire);
		if (idx == 0)
			return 0;
		if (g.inst[idx].from == from && g.inst[idx].to == to)
			return idx;
	}
	return 0;
}

/* (Re)fill an order's first occurrence. */
static void inst_fill(struct inst *e, const struct held *h, int mode, void *site,
                      const uintptr_t *g0, int ng0, void *const *frames, int nframes)
{
	atomic_store_explicit(&e->gfrom, atomic_load(&node_at(e->nfrom)->gen),
	                      memory_order_relaxed);
	atomic_store_explicit(&e->gto, atomic_load(&node_at(e->nto)->gen), memory_order_relaxed);
	atomic_store_explicit(&e->read_ends,
	                      (h->mode == 1 ? READ_FROM : 0) | (mode == 1 ? READ_TO : 0),
	                      memory_order_relaxed);
	for (int i = 0; i < GATES_MAX; i++)
		atomic_store_explicit(&e->gates[i], i < ng0 ? g0[i] : 0, memory_order_relaxed);
	atomic_store_explicit(&e->reported, 0, memory_order_relaxed);
	e->cls = h->cls;
	e->tid = weft__watch_tid();
	e->site = site;
	e->nstack = WEFT__MAX(nframes, 0);
	if (e->nstack)
		memcpy(e->stack, frames, (size_t)e->nstack * sizeof(void *));
}

/* A new instance order (lock-free): the record is claimed (a CAS on the counter, so the count
 * stops at the cap) and filled, then published by a CAS of its index into an empty pair slot
 * (release), then pushed on its from-node's out-list (CAS, release). Two threads adding one
 * pair at once: the slot CAS decides, the loser's record is left unused and the winner's
 * returned. 0: the table is full (counted). */
static uint32_t inst_add(const struct held *h, const void *lock, int mode, void *site,
                         const uintptr_t *g0, int ng0, void *const *frames, int nframes)
{
	uint32_t idx = atomic_load_explicit(&g.next_inst, memory_order_relaxed);
	do {
		if (idx >= g.ninst) {
			count(&g.st.inst_overflow);
			return 0;
		}
	} while (!atomic_compare_exchange_weak_explicit(
	        &g.next_inst, &idx, idx + 1, memory_order_relaxed, memory_order_relaxed));
	uintptr_t from = (uintptr_t)h->lock, to = (uintptr_t)lock;
	uint32_t nf = node_get(from, true), nt = node_get(to, true);
	if (!nf || !nt) {
		count(&g.st.inst_overflow);
		return 0;
	}
	struct inst *e = &g.inst[idx];
	e->from = from;
	e->to = to;
	e->nfrom = nf;
	e->nto = nt;
	inst_fill(e, h, mode, site, g0, ng0, frames, nframes);
	uint32_t mask = (UINT32_C(1) << g.islot_bits) - 1, i = pair_hash(from, to, g.islot_bits);
	for (;; i = (i + 1) & mask) { /* at most half full: an empty slot is near */
		uint32_t cur = 0;
		if (atomic_compare_exchange_strong_explicit(
		            &g.islots[i], &cur, idx, memory_order_release, memory_order_acquire))
			break;
		if (g.inst[cur].from == from && g.inst[cur].to == to)
			return cur; /* lost the race for this pair */
	}
	struct inst_node *n = node_at(nf);
	uint32_t head = atomic_load_explicit(&n->first_out, memory_order_relaxed);
	do
		atomic_store_explicit(&e->next_out, head, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&n->first_out, &head, idx,
	                                              memory_order_release, memory_order_relaxed));
	count(&g.st.inst_edges);
	return idx;
}

/* The held locks other than `a` and `b` (and untracked ones), without repeats: the gates of an
 * instance order a -> b (locks of the same class count: they are instances too). */
static int inst_gates(const struct pstate *t, uintptr_t a, uintptr_t b, uintptr_t *g0)
{
	int n = 0;
	for (int i = 0; i < t->n && n < G0_MAX; i++) {
		uintptr_t l = (uintptr_t)t->held[i].lock;
		if (t->held[i].cls == 0 || l == 0 || l == a || l == b)
			continue;
		n = gate_add(g0, n, l);
	}
	return n;
}

static inline uint32_t icache_slot(const void *from, const void *to)
{
	return pair_hash((uintptr_t)from, (uintptr_t)to, 6); /* ICACHE_SIZE == 1 << 6 */
}
_Static_assert(ICACHE_SIZE == 1 << 6, "icache_slot's bits");

/* The order held -> lock is known to this thread and needs nothing under this signature. */
static inline bool inst_cached(const struct pstate *t, const void *held, const void *lock,
                               uint64_t sig)
{
	const struct inst_cache_entry *c = &t->icache[icache_slot(held, lock)];
	return c->from == (uintptr_t)held && c->to == (uintptr_t)lock &&
	       c->forgets == atomic_load_explicit(&g.forgets, memory_order_relaxed) &&
	       (!c->relaxed || c->sig == sig);
}

/* Same-class nesting: the slow path for the instance order h->lock -> lock (see the head
 * comment). frames/nframes: the acquisition's stack, captured here on first need. */
static void inst_slow(struct pstate *t, const struct held *h, const void *lock, int mode,
                      void *site, uint64_t sig, void **frames, int *nframes)
{
	uintptr_t from = (uintptr_t)h->lock, to = (uintptr_t)lock;
	uint32_t fg = atomic_load_explicit(&g.forgets, memory_order_relaxed);
	note_self_nesting(h->cls);
	uint32_t ii = inst_find(from, to);
	struct inst *e = ii ? &g.inst[ii] : NULL;
	bool live = e && inst_live(e), check = false;
	if (!live || !fits(t, &e->read_ends, e->gates, h, mode)) {
		uintptr_t g0[G0_MAX];
		int ng0 = inst_gates(t, from, to, g0);
		if (!live && *nframes < 0)
			*nframes = weft__watch_stack(frames, WEFT_WATCH_MAX_FRAMES, 3, site);
		if (!e) {
			ii = inst_add(h, lock, mode, site, g0, ng0, frames, *nframes);
			e = ii ? &g.inst[ii] : NULL;
			check = e != NULL;
		} else if (!live) {
			/* an end was destroyed and a lock made at its address: a new order */
			raw_lock(&g.graph_lock);
			if (!inst_live(e))
				inst_fill(e, h, mode, site, g0, ng0, frames, *nframes);
			raw_unlock(&g.graph_lock);
			check = true;
		} else {
			check = narrow(&e->read_ends, e->gates, t, h, mode);
		}
		uint32_t nt = check ? node_get(to, false) : 0;
		/* a cycle needs an order out of `to`: most new orders need no lock */
		if (nt && atomic_load_explicit(&node_at(nt)->first_out, memory_order_acquire) &&
		    !atomic_load_explicit(&e->reported, memory_order_relaxed)) {
			raw_lock(&g.graph_lock);
			uint32_t first = search(true, from, nt, h->mode, mode, g0, ng0);
			if (first && !atomic_load_explicit(&e->reported, memory_order_relaxed)) {
				if (*nframes < 0)
					*nframes = weft__watch_stack(frames, WEFT_WATCH_MAX_FRAMES,
					                             3, site);
				struct inst *p = &g.inst[first];
				struct first_order fo = {p->tid,
				                         (const void *)p->from,
				                         (const void *)p->to,
				                         p->cls,
				                         p->cls,
				                         p->stack,
				                         p->nstack};
				emit_inversion(t, h, h->cls, h->cls, &fo, lock, site, frames,
				               *nframes);
				atomic_store_explicit(&e->reported, 1, memory_order_relaxed);
				if (p->to == from) /* two locks: the reverse is the same pair */
					atomic_store_explicit(&p->reported, 1,
					                      memory_order_relaxed);
			}
			raw_unlock(&g.graph_lock);
		}
	}
	struct inst_cache_entry *c = &t->icache[icache_slot(h->lock, lock)];
	c->from = from;
	c->to = to;
	c->forgets = fg;
	c->relaxed = e && edge_relaxed_parts(&e->read_ends, e->gates);
	c->sig = sig;
}

/* The slow part of before, from held entry i0 on: cache misses and edges to narrow. */
static __attribute__((noinline)) void before_slow(struct pstate *t, int i0, const void *lock,
                                                  uint32_t cls, int mode, void *site)
{
	void *frames[WEFT_WATCH_MAX_FRAMES];
	int nframes = -1; /* not captured yet */
	uintptr_t g0[G0_MAX];
	uint64_t sig = taking_sig(t, mode);
	if (!enter(t))
		return;
	int nh = WEFT__MIN(t->n, (int)HELD_ORDERS);
	for (int i = i0; i < nh; i++) {
		const struct held *h = &t->held[i];
		uint32_t hc = h->cls;
		if (hc == 0 || hc >= g.ncls || h->lock == lock)
			continue;
		uint64_t key = edge_key(hc, cls);
		struct cache_entry *ce = &t->cache[cache_slot(key)];
		if (hc == cls) {
			if (!inst_cached(t, h->lock, lock, sig))
				inst_slow(t, h, lock, mode, site, sig, frames, &nframes);
			continue;
		}
		if (ce->key == key || (ce->key == (key | CACHE_RELAXED) && ce->sig == sig))
			continue;
		uint32_t ei = edge_find(key);
		if (ei && occurrence_fits(t, &g.edges[ei], h, mode)) {
			ce->key = key | (edge_relaxed(&g.edges[ei]) ? CACHE_RELAXED : 0);
			ce->sig = sig;
			continue;
		}
		/* a new order, or one this occurrence narrows */
		if (!ei && nframes < 0)
			nframes = weft__watch_stack(frames, WEFT_WATCH_MAX_FRAMES, 2, site);
		int ng0 = current_gates(t, hc, cls, g0);
		raw_lock(&g.graph_lock);
		bool check;
		ei = edge_find(key); /* another thread may have added it meanwhile */
		if (!ei) {
			ei = edge_add(key, h, lock, cls, mode, site, g0, ng0, frames, nframes);
			check = ei != 0;
		} else {
			check = edge_narrow(&g.edges[ei], t, h, mode);
		}
		if (check && !atomic_load_explicit(&g.edges[ei].reported, memory_order_relaxed)) {
			uint32_t first = search(false, hc, cls, h->mode, mode, g0, ng0);
			if (first) {
				if (nframes < 0)
					nframes = weft__watch_stack(frames, WEFT_WATCH_MAX_FRAMES,
					                            2, site);
				report(t, h, ei, first, lock, site, frames, nframes);
			}
		}
		ce->key = key | (ei && edge_relaxed(&g.edges[ei]) ? CACHE_RELAXED : 0);
		ce->sig = sig;
		raw_unlock(&g.graph_lock);
	}
	leave(t);
}

/* ---- the hooks ---- */

void weft__predict_before(const void *lock, uint32_t cls, int mode, void *site)
{
	if (!active())
		return;
	struct pstate *t = self();
	if (t->busy || cls == 0 || cls >= g.ncls)
		return;
	uint64_t sig = taking_sig(t, mode);
	int nh = WEFT__MIN(t->n, (int)HELD_ORDERS);
	for (int i = 0; i < nh; i++) {
		const struct held *h = &t->held[i];
		uint32_t hc = h->cls;
		if (hc == cls) { /* same-class nesting: an instance order (cls != 0 here) */
			if (weft__likely(h->lock == lock || inst_cached(t, h->lock, lock, sig)))
				continue;
			goto slow;
		}
		uint64_t key = edge_key(hc, cls);
		const struct cache_entry *ce = &t->cache[cache_slot(key)];
		if (weft__likely(ce->key == key))
			continue; /* a known order with nothing to narrow */
		if (ce->key == (key | CACHE_RELAXED) && ce->sig == sig)
			continue; /* known to fit under these held locks */
		if (hc == 0)
			continue; /* an untracked lock */
	slow:
		before_slow(t, i, lock, cls, mode, site);
		/* no tail call: the stack captured in before_slow skips this frame */
		__asm__ volatile("" ::: "memory");
		return;
	}
}

void weft__predict_after(const void *lock, uint32_t cls, int mode, unsigned flags, void *site)
{
	if (!active())
		return;
	struct pstate *t = self();
	if (!enter(t))
		return; /* taken inside a hook (or by a handler interrupting one): untracked */
	if (weft__unlikely(t->n == HELD_MAX)) {
		count(&g.st.held_overflow); /* not tracked: its release finds nothing to remove */
	} else {
		struct held *h = &t->held[t->n++];
		h->lock = lock;
		h->site = site;
		h->cls = cls < g.ncls ? cls : 0;
		h->mode = mode == 1;
		h->flags = (uint8_t)flags;
		t->sig += held_sig(lock, h->cls, h->mode);
	}
	leave(t);
}

void weft__predict_release(const void *lock)
{
	if (!active())
		return;
	struct pstate *t = self();
	if (!enter(t))
		return;
	/* A lock not found (taken before this run of the monitor, beyond the list, while the
	 * thread was inside a hook, or never) changes nothing. */
	for (int i = t->n - 1; i >= 0; i--) {
		if (t->held[i].lock == lock) {
			t->sig -= held_sig(lock, t->held[i].cls, t->held[i].mode);
			for (int j = i + 1; j < t->n; j++)
				t->held[j - 1] = t->held[j];
			t->n--;
			break;
		}
	}
	leave(t);
}

int weft__predict_held(const void **locks, int max)
{
	if (!active() || !locks || max <= 0)
		return 0;
	struct pstate *t = self();
	int n = WEFT__MIN(t->n, max);
	for (int i = 0; i < n; i++)
		locks[i] = t->held[i].lock;
	return n;
}

int weft__predict_start(void)
{
	int r = map_tables();
	if (r < 0)
		return r;
	if (!atomic_load_explicit(&g.active, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&g.epoch, 1, memory_order_relaxed);
		atomic_store_explicit(&g.active, 1, memory_order_release);
	}
	return 0;
}

void weft__predict_stop(void)
{
	/* The tables stay mapped: a thread inside a hook finishes on valid memory, and classes
	 * stored in weft_mutex and weft_rwlock objects stay meaningful for a later start. */
	atomic_store_explicit(&g.active, 0, memory_order_release);
}

void weft__predict_get_stats(struct weft__predict_stats *ret)
{
	if (!ret)
		return;
	ret->classes = atomic_load(&g.st.classes);
	ret->class_overflow = atomic_load(&g.st.class_overflow);
	ret->addr_overflow = atomic_load(&g.st.addr_overflow);
	ret->edges = atomic_load(&g.st.edges);
	ret->edge_overflow = atomic_load(&g.st.edge_overflow);
	ret->held_overflow = atomic_load(&g.st.held_overflow);
	ret->same_class = atomic_load(&g.st.same_class);
	ret->inversions = atomic_load(&g.st.inversions);
	ret->excused_gate = atomic_load(&g.st.excused_gate);
	ret->excused_read = atomic_load(&g.st.excused_read);
	ret->search_truncated = atomic_load(&g.st.search_truncated);
	ret->inst_edges = atomic_load(&g.st.inst_edges);
	ret->inst_overflow = atomic_load(&g.st.inst_overflow);
}

void weft__predict_test_caps(uint32_t classes, uint32_t addrs, uint32_t edges)
{
	if (mapped())
		return;
	g.want_classes = classes;
	g.want_addrs = addrs;
	g.want_edges = edges;
}

void weft__predict_test_inst_cap(uint32_t inst)
{
	if (mapped())
		return;
	g.want_inst = inst;
}
