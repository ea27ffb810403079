/* engine.c: the lock monitor's engine (src/internal/watch.h): thread records, the wait protocol,
 * the watchdog (wait-for graph, cycles, long waits), the report queue and its emission, the
 * contention profile, the cross-process registry, weft_watch_start/stop and the report formats.
 *
 * Tables. Everything the lock path touches is mapped once and never unmapped (the private record
 * table, the profile table; the report ring is static), so a thread that is still inside a wait
 * when the monitor stops writes into live memory. The shared registry is the one exception: it
 * is unmapped at stop only when no thread is inside a process-shared wait (shm_users, below).
 *
 * Thread records. A record says what its thread waits for now. `state`: 0 free, the pid of the
 * process that claimed it, or -pid while process pid claims or reclaims it. It is claimed by the
 * thread on its first recorded wait (or rwlock acquisition): a CAS of `state` from 0 to -pid, the
 * fields (tid, the image stamp, ...), then state = pid (release); cached in a __thread pointer,
 * and released (wseq = 0, state = 0) by a pthread key destructor at thread exit. A thread writes
 * only its own record; the watchdog only reads records (never a lock's memory).
 * The shared registry holds the same records, for waits on process-shared locks, with the pid.
 * Records of threads that are gone are reclaimed by a watchdog (reclaim_dead, every 16 scans):
 *  - a record whose process is gone (kill(pid, 0) == ESRCH), by any process's watchdog;
 *  - a record of this very pid from an earlier image of the process: an exec ends every thread
 *    of the old image without running its destructors, and keeps the pid. Each image stamps
 *    its records with `image` (CLOCK_MONOTONIC ns when its monitor first started: a later
 *    image's is later, so never equal), and a process's watchdog reclaims the records of its
 *    pid with another stamp. (A new image that does not run the monitor on the same registry
 *    leaves them claimed until the process exits.)
 *  A reclaim takes the record with a CAS from the state it judged (pid) to -me, clears wseq,
 *  then frees it: two reclaimers, or a reclaimer and a claimer, never both write it (a claim
 *  ends with a CAS from -pid to pid, and tries the next record if it lost it). After the CAS
 *  the stamp is read again: another stamp means that the record was freed and claimed anew
 *  by a process with the reused pid since it was judged, and it is given back. A claim in
 *  progress (-pid) is judged by its process only: reclaimed if that process is gone; one of
 *  this pid's (-me) only at the image's first start, when it can only be an earlier image's
 *  claim or reclaim cut short by exec (no thread of this image has claimed yet). The acquire
 *  load of state pairs with the claim's release, so the stamp read after it is the claim's.
 *  A fork child gets a stamp of its own (atfork_child), so images never share one.
 *
 * The wait protocol (weft__watch_wait), on the waiting thread:
 *   0. the quick wait: the first slice is op->timed and nothing else, up to QUICK_NS past
 *      the coarse clock's tick (CLOCK_MONOTONIC_COARSE: a few ns to read, coarse_res behind
 *      the precise clock at most; so 0.1 ms to 4.1 ms here) or to the deadline. A wait that
 *      ends there writes nothing shared: its count and its time on the coarse clock go to a
 *      per-thread sum, added to the profile in batches (quick_flush). Two cases go on to the
 *      recorded wait, which calls op->timed again and reports them as self-waits: EDEADLK
 *      (an error-checking relock: the call changed nothing and says the same again), and a
 *      timeout at the deadline while op->owner reads the caller (a relock with a deadline).
 *      Why: in a loop where threads fight over one lock nearly every wait is a short one, and
 *      recording it (two precise clock reads, the record, the profile's shared counters)
 *      cost more than the native lock call itself; a spin before recording, tried too, was
 *      worse still (it keeps both threads awake, and the lock's cache line moves on every
 *      acquisition). Only a wait that outlasts the quick slice is recorded; a deadlock is
 *      found at most that much later.
 *   1. wseq = 0 already (the end of the previous wait, a seq_cst store); a release fence;
 *      lock, kind, site, start, deadline, owner, owner_ns with relaxed stores; start is read
 *      after step 0 (the thread is inside its lock call from then on), owner_ns when the
 *      recording begins, and the owner is read from the lock after it;
 *   2. wseq = ++nextseq, a release store: the wait is published;
 *   3. wait in slices of op->timed; after each slice that timed out, owner_ns' = now, owner =
 *      op->owner(lock), stored owner first, then owner_ns (both release); after the first
 *      slice, the stack, itself a sequence lock (stack_seq = 0, a release fence, the frames
 *      and nstack relaxed, then stack_seq = wseq, release);
 *   4. wseq = 0, a seq_cst store: the wait is over.
 * On x86 steps 1-3 are plain moves (no locked instruction); step 4 is one xchg.
 * Re-entrancy: a per-thread nesting count, raised (with a signal fence) before any field is
 * written; a wait that starts while it is raised (a signal handler's, interrupting the
 * recording of another) is not recorded, so the outer wait's fields are never overwritten.
 * The snapshot (snap), a sequence lock's read: s1 = wseq (acquire); the fields (relaxed,
 * owner_ns acquire); an acquire fence; s2 = wseq (relaxed); kept only when s1 == s2 != 0.
 * Why the fields then all belong to wait s1:
 *  a. s1 read the release store of step 2, so every field store of wait s1 happens before the
 *     field loads: they read that wait's values or later ones.
 *  b. A later value was stored by a later wait (step 1 after that wait's release fence, which
 *     follows its predecessor's step 4) or by a refresh (step 3, same wait). A field load that
 *     reads a later wait's store makes the acquire fence synchronize with that wait's release
 *     fence, so the step-4 store wseq = 0 that preceded it happens before the load of s2: s2
 *     reads 0 or a later number, never s1 again (wait numbers of a record never repeat:
 *     nextseq survives release and reclaim, and a shared record numbers its waits itself,
 *     whichever thread of whichever process holds it). The snapshot is dropped.
 *  c. owner and owner_ns change within a wait: owner_ns is loaded with acquire before owner,
 *     and stored with release after it, so a snapshot never pairs an older owner with a newer
 *     time (a newer owner with an older time is fine: that owner was read even later, and its
 *     own release store orders the waiter's read of the lock before it).
 * (ThreadSanitizer has no model of fences: its build makes the field stores release and the
 * loads acquire instead, which gives the same argument without them.)
 *
 * Who wins each race:
 *  - two threads claiming one free record: the CAS; the loser tries the next record.
 *  - two watchdogs reclaiming one record, or a reclaim against a claim: the CAS on state
 *    from the value judged to -pid (see "Thread records").
 *  - the watchdog reading a record that changes: the snapshot is dropped (wseq check).
 *  - a report queued while the ring is full: dropped and counted (never blocks).
 *  - stop against a thread entering a process-shared wait: a Dekker pair on shm_users and
 *    shm (both seq_cst): either the thread sees no registry, or stop sees the user and keeps
 *    the mapping.
 *
 * Cycles. Every scan builds the wait-for graph from the snapshots, with proven edges only:
 *  - X -> Y when X's published owner is Y and X's owner_ns >= Y's start. Proof: X read Y as the
 *    owner at a time t >= owner_ns >= Y.start, so Y owned the lock at t while already inside
 *    its own lock call; a thread blocked in a lock call releases nothing, so Y still owns it
 *    for as long as that wait of Y lasts. An owner published before Y started waiting proves
 *    nothing: Y may have released the lock and then blocked elsewhere (the stale-owner case:
 *    the waiter refreshes its owner only once per slice).
 *    Memory orders of this proof. The times are clock readings, not memory events, so what
 *    matters is when stores become visible. A record seen late only delays a report: a start
 *    or a publication (steps 1-2, plain stores on x86) not yet visible leaves the edge out
 *    until a later scan. What must never be seen late is an end: a wait that has ended must
 *    not be taken for one still going. Hence, numbered:
 *     1. Step 4 (wseq = 0) is a seq_cst store: on x86 an xchg, visible to every CPU before
 *        the thread runs anything after its wait; on arm64 an stlr, which no later release
 *        (of the lock that proved an edge into the thread, say) can pass.
 *     2. X stores owner_ns with release after reading its clock and then the owner; the
 *        watchdog loads it with acquire in X's snapshot, every snapshot ends with an acquire
 *        fence, and the re-check of each wait before a report (on_cycle) is a seq_cst load
 *        made after all of them.
 *     3. So if the re-check still reads Y's wait number, Y's step 4 had not become visible
 *        by then, nor, by 1, had Y left that wait when X read the owner (t is before the
 *        watchdog's load of owner_ns, which is before the re-check): at t Y owned the lock
 *        inside the wait that began at Y.start <= t, and it still owns it at the re-check.
 *        With every edge so, the cycle existed at the first re-check.
 *  - X -> Y (rwlock waits) when Y's held-rwlock list, read while Y waits (wseq the same before
 *    and after the read), holds the lock X waits for (writers only for a read wait): Y's list
 *    does not change while Y is blocked.
 * Cycles are found by depth-first search; before a report every thread of the cycle is checked
 * to be still in the wait of its snapshot (wseq unchanged). Then every edge held at that moment
 * together: the cycle was real (for untimed waits, a deadlock for good). One scan is enough, no
 * confirmation on a second: a cycle is reported on the first scan at which each waiter has
 * refreshed its owner after the owner began to wait, i.e. within a slice (scan/2) and a scan
 * period of forming, within two scan periods. A cycle is keyed by a hash of (pid, tid, wait
 * number, next tid) in a canonical rotation and reported once (a ring of reported keys). A
 * process reports only cycles holding one of its threads. A found cycle waits up to
 * STACK_GRACE_SCANS scans in all for the stacks of its threads (each captures its own after its
 * first slice), then goes without the missing ones.
 * A cycle with a timed wait in it (deadline) is reported with `ends` set: it breaks by itself,
 * so the deadlock action is not taken; so is a self-wait whose call returned an error
 * (EDEADLK) or has a deadline.
 *
 * Condition waits are not sliced: a thread woken from one retakes the mutex inside glibc,
 * where no wrapper sees it wait (the record still says COND). The watchdog finds that wait from
 * outside, and only for a condition-waiting thread X that some waiter names as owner (a
 * candidate for a cycle; idle condition waiters are never probed), at most RELOCK_PROBES a scan:
 *  1. /proc/self/task/X/syscall: X is blocked in futex(2), a wait or PI-lock operation, on the
 *     address of its wait's mutex M (its lock word comes first in pthread_mutex_t). A condition
 *     wait blocks on M only to retake it: X was signalled and will not wait on the condvar again
 *     in this call, and it cannot hold M and wait again without ending the call (and its record).
 *  2. then the clock (t2), then M's owner Y (glibc's __owner, read with process_vm_readv, which
 *     fails instead of faulting if M is gone). If Y is neither 0 nor X, at t2 M was owned by Y
 *     and X, still retaking it, did not hold it: X -> Y with owner_ns = t2, proven as any owner
 *     edge (Y's start <= t2, Y blocked releases nothing), and the cycle's re-check of every
 *     wait number confirms that X's condition wait had not ended.
 * A cycle through a condition re-lock is reported as any deadlock, the re-locking thread's
 * wait kind being the condvar's, with its mutex and that mutex's owner. Cross-process condition
 * waits (another process's /proc) are not probed: the long-wait report of a thread whose owner
 * is in a condition wait names the condvar and its mutex.
 *
 * The report queue is a bounded MPSC ring (each slot has a sequence word: producers claim a
 * position with a CAS on the tail, fill the slot, then publish with a release store; the watchdog
 * is the single consumer). The watchdog sleeps on a futex bumped by each emit.
 *
 * fork: the child handler resets the forking thread's cached tid and record pointers, frees the
 * private records of the parent's threads, empties the ring, and, if the monitor ran, marks the
 * watchdog for a lazy restart at the child's first contended wait or emit. It also gives the
 * child a new image stamp (a sibling that later gets its pid must not own its records).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal/alloc.h"
#include "internal/buf.h"
#include "internal/common.h"
#include "internal/watch.h"

int weft__watch_on;
int weft__watch_predict_on;
int weft__watch_profile_sample;
__thread int weft__watch_internal WEFT__WATCH_TLS;

/* ---- limits ---- */
#define PRIV_RECS 2048 /* threads recorded per process */
#define SHM_DEFAULT_SLOTS 4096
#define SHM_MAX_SLOTS 65536
#define RW_MAX 8      /* rwlocks listed as held per thread */
#define RING 64       /* queued reports */
#define PROF_CAP 4096 /* profile sites (power of two) */
#define PROF_PROBE 64
#define EDGE_MAX 9           /* out-edges per waiting thread (owner + readers) */
#define CYCLE_MAX 64         /* cycles remembered per scan */
#define RELOCK_PROBES 32     /* condition waiters probed for a re-lock per scan */
#define REPORTED_MAX 256     /* reported cycle keys remembered */
#define STACK_GRACE_SCANS 10 /* scans a confirmed cycle waits for its threads' stacks */
#define SLICE_MIN 1000000    /* ns */
#define SLICE_MAX 1000000000
#define OFF_SLICE 1000000000 /* slices of an unrecorded wait (picks up a monitor started later) */
#define QUICK_NS 100000      /* the first, unrecorded slice of a wait, past a tick (step 0) */
#define QUICK_BATCH 64       /* quick waits a thread sums up before adding them to the profile */

/* The record protocol's orders (head comment): fences, or for ThreadSanitizer, which has no
 * model of them, release stores and acquire loads of the fields themselves. */
#if WEFT__TSAN
#define FIELD_ST memory_order_release
#define FIELD_LD memory_order_acquire
#define FENCE_REL() ((void)0)
#define FENCE_ACQ() ((void)0)
#else
#define FIELD_ST memory_order_relaxed
#define FIELD_LD memory_order_relaxed
#define FENCE_REL() atomic_thread_fence(memory_order_release)
#define FENCE_ACQ() atomic_thread_fence(memory_order_acquire)
#endif

/* ---- records ---- */
struct rec {
	_Atomic int32_t state; /* 0 free, pid: claimed by process pid, -pid: pid (re)claiming it */
	_Atomic int32_t tid;
	_Atomic uint64_t wseq;    /* 0: not waiting; else the number of the wait in progress */
	_Atomic uint64_t nextseq; /* written by the owning thread only; survives release */
	_Atomic uintptr_t lock;
	_Atomic uint32_t kind;
	_Atomic int32_t owner;
	_Atomic int64_t owner_ns; /* when owner was read (taken just before the read) */
	_Atomic int64_t start;
	_Atomic int64_t deadline; /* the wait's deadline (CLOCK_MONOTONIC), -1 none */
	_Atomic uintptr_t aux;    /* COND: the mutex of the wait */
	_Atomic uintptr_t site;
	_Atomic uint64_t stack_seq;  /* the wait the stack belongs to */
	_Atomic uint32_t stack_site; /* 1: the stack is the site's first (condition waits) */
	_Atomic int32_t nstack;
	_Atomic uintptr_t stack[WEFT_WATCH_MAX_FRAMES];
	_Atomic uint64_t name[2];
	_Atomic uint64_t lname[3];    /* the waited lock's name (weft_mutex's), "" if none */
	_Atomic uintptr_t rw[RW_MAX]; /* held rwlocks, 0 free */
	_Atomic uint32_t rw_write[RW_MAX];
	_Atomic uint32_t rw_untracked;
	_Atomic uint64_t long_seq; /* the watchdog's: the last wait reported as long */
	_Atomic uint64_t image;    /* the stamp of the process image that claimed it */
};

#define SHM_MAGIC 0x77656674776174ull /* "weftwat" */
struct shm_hdr {
	uint64_t magic;
	uint32_t rec_size, slots;
	char pad[48];
};

static struct rec *priv;            /* PRIV_RECS records, mapped at the first start */
static struct shm_hdr *_Atomic shm; /* the shared registry, NULL if none */
static size_t shm_len;
static _Atomic uint32_t shm_gen; /* bumped when the registry changes */
static _Atomic int shm_users;    /* threads inside a process-shared wait */
static pid_t my_pid;
static _Atomic uint64_t image; /* this image's stamp (set at its first start, never 0 after) */

static __thread pid_t my_tid WEFT__WATCH_TLS;
static __thread struct rec *my_rec WEFT__WATCH_TLS;
static __thread struct rec *my_srec WEFT__WATCH_TLS;
static __thread uint32_t my_srec_gen WEFT__WATCH_TLS;
static __thread int nest
        WEFT__WATCH_TLS; /* waits of this thread being recorded (see re-entrancy) */
static __thread int shm_waiting
        WEFT__WATCH_TLS; /* this thread counts itself in shm_users for a wait */
static __thread int64_t name_at
        WEFT__WATCH_TLS; /* when the thread's name was last read into its records */
/* Quick waits (step 0) not yet added to the profile: one site and lock at a time, of one
 * monitor session (gen: quick_gen when they were summed). busy: the thread is changing the
 * sums (a signal handler's quick wait then goes to the profile directly). */
static __thread struct quick {
	uintptr_t site, lock;
	uint32_t kind, n, acquired, gen;
	int64_t ns, ns_max;
	int busy;
} quick WEFT__WATCH_TLS;
static _Atomic uint32_t quick_gen; /* bumped by each start: older sums are another session's */
static __thread int key_armed WEFT__WATCH_TLS; /* the key is set: its destructor will run */

void (*weft__watch_test_hook)(void);
void (*weft__watch_test_quick_hook)(void *lock);

static pthread_key_t rec_key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int once_err;

/* ---- the report ring ---- */
struct slot {
	_Atomic uint64_t
	        seq; /* stored minus the slot's index, so that zeroed memory is the start */
	weft_watch_report r;
};
static struct slot ring[RING];
static _Atomic uint64_t ring_tail, ring_head;
static _Atomic uint64_t report_seq;
static _Atomic uint64_t counts[WEFT_WATCH_EVENT_COUNT];
static _Atomic uint64_t dropped;
static _Atomic uint64_t lost_output; /* report outputs not written: the fd changed files */
static _Atomic uint64_t unrecorded;  /* waits not recorded: table full */
static _Atomic uint32_t wake_word;

/* ---- the profile ---- */
struct prof {
	_Atomic uintptr_t site;
	_Atomic uintptr_t lock;
	_Atomic uint32_t kind;
	_Atomic uint64_t contended;
	_Atomic int64_t wait_total, wait_max;
	_Atomic uint64_t hold_samples;
	_Atomic int64_t hold_total, hold_max;
};
/* The first stack captured at a call site, for condition waits (stack_state: 0 none, 1 being
 * written by the thread that won the CAS, 2 ready, then never changed until a new session). */
struct prof_stack {
	_Atomic uint32_t stack_state;
	_Atomic uint32_t nstack;
	_Atomic uintptr_t stack[WEFT_WATCH_MAX_FRAMES];
};
static struct prof *prof;
static struct prof_stack *prof_stacks; /* PROF_CAP, parallel to prof */
static _Atomic uint64_t prof_full;
static __thread int hold_countdown WEFT__WATCH_TLS;
static __thread const void *hold_lock WEFT__WATCH_TLS;
static __thread void *hold_site WEFT__WATCH_TLS;
static __thread int64_t hold_start WEFT__WATCH_TLS;

/* ---- the session ---- */
enum { ST_STOPPED, ST_BUSY, ST_RUNNING };
static _Atomic int state;
static weft_watch_options opts;
static int64_t slice_ns;
static pthread_t dog;
static int dog_valid;
static _Atomic int dog_stop;
static _Atomic int need_restart;
static weft_symbolizer *sym, *stale_sym;
static weft_counter *m_reports[WEFT_WATCH_EVENT_COUNT];
static weft_gauge *m_waits, *m_records;
static weft_counter *m_dropped, *m_unrecorded;
static uint64_t m_dropped_seen, m_unrecorded_seen;

/* An output fd and the file it was at start: written only while it still is that file. */
struct out {
	int fd; /* 0: none */
	int dead;
	dev_t dev;
	ino_t ino;
};
static struct out out_json, out_text;

/* ---- the watchdog's scratch (allocated at start) ---- */
struct node {
	pid_t pid, tid, owner;
	uint32_t kind;
	uint64_t wseq;
	uintptr_t lock, site, aux;
	int64_t start, deadline, owner_ns;
	struct rec *rec; /* a record of this process, or the shared one of another */
	int own;
	int nedge;
	int edge[EDGE_MAX];
	int self_hold; /* waits for an rwlock it holds itself */
	int probe;     /* a condition wait whose thread a waiter names as owner (re-lock probe) */
};
struct hold {
	uintptr_t lock;
	pid_t tid;
	int write;
	uint64_t wseq; /* the holder's wait during which the list was read */
};
static struct node *nodes;
static struct hold *holds;
static int *tidmap; /* open addressing: tid -> node index + 1 */
static int tidmap_cap;
static int *dfs_stack, *dfs_edge, *dfs_color, *dfs_pos;
static int nodes_cap, holds_cap;
static uint64_t prev_keys[CYCLE_MAX], cur_keys[CYCLE_MAX];
static int prev_seen[CYCLE_MAX], cur_seen[CYCLE_MAX]; /* consecutive scans a key was seen */
static int nprev, ncur;
static uint64_t reported[REPORTED_MAX];
static unsigned nreported;
static weft_watch_report scratch_report;

/* ------------------------------------------------------------------------------------------------
 * Small things.
 */
int64_t weft__watch_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CLOCK_MONOTONIC_COARSE (the last tick: a few ns to read, coarse_res behind at most), for the
 * quick slice, whose length and profile time need no more. */
static int64_t coarse_res = 10000000; /* set at start from clock_getres */

static int64_t coarse_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t weft__watch_realtime_to_mono(const struct timespec *abstime)
{
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	int64_t now = weft__watch_now();
	/* whole seconds from now, checked: tv_sec may be anything (LONG_MAX for "never") */
	int64_t secs;
	if (__builtin_sub_overflow((int64_t)abstime->tv_sec, (int64_t)rt.tv_sec, &secs))
		return abstime->tv_sec > 0 ? -1 : 0;
	if (secs > (INT64_MAX - now) / 1000000000 - 2)
		return -1; /* beyond what int64 ns can hold: forever */
	if (secs < -(now / 1000000000) - 2)
		return 0;
	int64_t r = now + secs * 1000000000 + ((int64_t)abstime->tv_nsec - rt.tv_nsec);
	return r < 0 ? 0 : r;
}

pid_t weft__watch_tid(void)
{
	if (weft__unlikely(!my_tid))
		my_tid = (pid_t)syscall(SYS_gettid);
	return my_tid;
}

/* Lock functions sit a few frames above the capture (engine, then prim.c or the preload's
 * wrappers): SITE_SEARCH frames are enough to find the user's. */
#define SITE_SEARCH 8

__attribute__((noinline)) int weft__watch_stack(void **frames, int max, int skip, void *site)
{
	int e = errno;
	void *all[WEFT_WATCH_MAX_FRAMES + SITE_SEARCH];
	int cap = max < WEFT_WATCH_MAX_FRAMES ? max : WEFT_WATCH_MAX_FRAMES;
	int n = weft_backtrace(all, cap + SITE_SEARCH, 1);
	errno = e;
	if (n <= 0)
		return 0;
	int from = skip < n ? skip : n;
	for (int i = 0; site && i < n && i < SITE_SEARCH; i++) {
		if (all[i] == site) {
			from = i;
			break;
		}
	}
	int k = n - from < cap ? n - from : cap;
	memcpy(frames, all + from, (size_t)k * sizeof(void *));
	return k;
}

static pid_t cur_pid(void)
{
	pid_t p = __atomic_load_n(&my_pid, __ATOMIC_RELAXED);
	if (!p) {
		p = getpid();
		__atomic_store_n(&my_pid, p, __ATOMIC_RELAXED);
	}
	return p;
}

static int is_on(void)
{
	return __atomic_load_n(&weft__watch_on, __ATOMIC_RELAXED) && !weft__watch_internal;
}

static void futex_wake(_Atomic uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void wake_dog(void)
{
	atomic_fetch_add(&wake_word, 1);
	futex_wake(&wake_word);
}

static void restart_dog(void);

/* ------------------------------------------------------------------------------------------------
 * Records.
 */
static void rec_set_name(struct rec *r)
{
	char name[16] = {0};
	prctl(PR_GET_NAME, name, 0, 0, 0);
	uint64_t w[2];
	memcpy(w, name, 16);
	atomic_store_explicit(&r->name[0], w[0], memory_order_relaxed);
	atomic_store_explicit(&r->name[1], w[1], memory_order_relaxed);
}

/* The thread's name into its records at most once a second (a prctl per wait would cost more
 * than the rest of a condition wait's recording); `force` at claim. */
static void rec_refresh_name(struct rec *r, struct rec *s, int64_t now, int force)
{
	if (!force && name_at && now - name_at < 1000000000)
		return;
	name_at = now;
	rec_set_name(r);
	if (s)
		rec_set_name(s);
}

static void rec_get_name(struct rec *r, char out[16])
{
	uint64_t w[2] = {atomic_load_explicit(&r->name[0], memory_order_relaxed),
	                 atomic_load_explicit(&r->name[1], memory_order_relaxed)};
	memcpy(out, w, 16);
	out[15] = '\0';
}

/* The lock's name into the record: copied, as the watchdog reads only records. */
static void rec_set_lname(struct rec *r, const char *lname)
{
	uint64_t w[3] = {0, 0, 0};
	if (lname)
		memcpy(w, lname, strnlen(lname, sizeof(w) - 1));
	for (int i = 0; i < 3; i++)
		atomic_store_explicit(&r->lname[i], w[i], FIELD_ST);
}

static void rec_get_lname(struct rec *r, char out[24])
{
	uint64_t w[3];
	for (int i = 0; i < 3; i++)
		w[i] = atomic_load_explicit(&r->lname[i], FIELD_LD);
	memcpy(out, w, 24);
	out[23] = '\0';
}

static struct rec *claim(struct rec *tab, int n, pid_t pid)
{
	static _Atomic unsigned hint;
	unsigned h = atomic_load_explicit(&hint, memory_order_relaxed);
	for (int k = 0; k < n; k++) {
		struct rec *r = &tab[(h + (unsigned)k) % (unsigned)n];
		int32_t zero = 0;
		if (atomic_load_explicit(&r->state, memory_order_relaxed) != 0 ||
		    !atomic_compare_exchange_strong(&r->state, &zero, -pid))
			continue;
		atomic_store_explicit(&hint, (h + (unsigned)k + 1) % (unsigned)n,
		                      memory_order_relaxed);
		atomic_store(&r->tid, weft__watch_tid());
		atomic_store_explicit(&r->image, atomic_load_explicit(&image, memory_order_relaxed),
		                      memory_order_relaxed);
		atomic_store(&r->wseq, 0);
		for (int i = 0; i < RW_MAX; i++)
			atomic_store_explicit(&r->rw[i], 0, memory_order_relaxed);
		atomic_store_explicit(&r->rw_untracked, 0, memory_order_relaxed);
		atomic_store(&r->nstack, 0);
		rec_set_name(r);
		/* claimed; a CAS: a reclaimer that judged a dead process's claim in progress under
		 * this reused pid may have taken it meanwhile (then try the next one) */
		int32_t claiming = -pid;
		if (!atomic_compare_exchange_strong_explicit(
		            &r->state, &claiming, pid, memory_order_release, memory_order_relaxed))
			continue;
		return r;
	}
	atomic_fetch_add_explicit(&unrecorded, 1, memory_order_relaxed);
	return NULL;
}

/* The calling thread's private record, claimed on first use; NULL if none (table full). */
static struct rec *my_record(void)
{
	struct rec *r = my_rec;
	if (weft__likely(r != NULL))
		return r;
	struct rec *tab = __atomic_load_n(&priv, __ATOMIC_ACQUIRE);
	if (!tab)
		return NULL;
	r = claim(tab, PRIV_RECS, cur_pid());
	if (r) {
		my_rec = r;
		pthread_setspecific(rec_key, (void *)1);
	}
	return r;
}

/* The calling thread's shared record; the caller counts itself in shm_users first. */
static struct rec *my_shared_record(void)
{
	struct shm_hdr *h = atomic_load(&shm);
	if (!h)
		return NULL;
	uint32_t gen = atomic_load(&shm_gen);
	if (my_srec && my_srec_gen == gen)
		return my_srec;
	my_srec = claim((struct rec *)(h + 1), (int)h->slots, cur_pid());
	my_srec_gen = gen;
	if (my_srec)
		pthread_setspecific(rec_key, (void *)1);
	return my_srec;
}

static void rec_release(struct rec *r)
{
	atomic_store(&r->wseq, 0);
	atomic_store(&r->state, 0);
}

/* At thread exit (the __thread variables are still there when key destructors run). A thread
 * cancelled inside a wait (sem_clockwait is a cancellation point) never ran end_wait: its
 * records are released here and its count in shm_users given back. */
static void quick_flush(void);

static void key_destructor(void *v)
{
	(void)v;
	quick_flush();
	key_armed = 0; /* glibc cleared the key: a later quick wait (another key's destructor
	                  taking a lock) sets it again, and glibc runs another round */
	if (my_rec) {
		rec_release(my_rec);
		my_rec = NULL;
	}
	if (my_srec) {
		atomic_fetch_add(&shm_users, 1);
		if (atomic_load(&shm) && my_srec_gen == atomic_load(&shm_gen))
			rec_release(my_srec);
		atomic_fetch_sub(&shm_users, 1);
		my_srec = NULL;
	}
	if (shm_waiting) {
		shm_waiting = 0;
		atomic_fetch_sub(&shm_users, 1);
	}
	nest = 0;
}

static void atfork_child(void)
{
	my_tid = 0;
	my_rec = NULL;
	my_srec = NULL;
	shm_waiting = 0;
	nest = 0;
	hold_lock = NULL;
	memset(&quick, 0, sizeof(quick)); /* the parent's sums are the parent's */
	__atomic_store_n(&my_pid, getpid(), __ATOMIC_RELAXED);
	/* a new stamp: a sibling that gets this pid after this child has exited must not take
	 * this child's shared records for its own (its shared records are claimed afresh) */
	if (atomic_load_explicit(&image, memory_order_relaxed))
		atomic_store_explicit(&image, (uint64_t)weft__watch_now(), memory_order_relaxed);
	if (priv)
		for (int i = 0; i < PRIV_RECS; i++)
			atomic_store_explicit(&priv[i].state, 0, memory_order_relaxed);
	for (uint64_t i = 0; i < RING; i++)
		atomic_store_explicit(&ring[i].seq, 0, memory_order_relaxed);
	atomic_store(&ring_head, 0);
	atomic_store(&ring_tail, 0);
	atomic_store(&shm_users, 0);
	if (atomic_load(&state) == ST_RUNNING) {
		/* the parent's watchdog is not here; its symbolizer's lock may be held for good */
		dog_valid = 0;
		stale_sym = sym;
		sym = NULL;
		atomic_store(&need_restart, 1);
	}
}

static void once_init(void)
{
	if (pthread_key_create(&rec_key, key_destructor) != 0) {
		once_err = -EAGAIN;
		return;
	}
	if (pthread_atfork(NULL, NULL, atfork_child) != 0)
		once_err = -ENOMEM;
}

/* ------------------------------------------------------------------------------------------------
 * The report queue.
 */
void weft__watch_emit(const weft_watch_report *r)
{
	if (!r)
		return;
	int e = errno;
	if (weft__unlikely(atomic_load_explicit(&need_restart, memory_order_relaxed)))
		restart_dog();
	uint64_t pos = atomic_load_explicit(&ring_tail, memory_order_relaxed);
	struct slot *s;
	for (;;) {
		s = &ring[pos % RING];
		uint64_t sq = atomic_load_explicit(&s->seq, memory_order_acquire) + pos % RING;
		int64_t dif = (int64_t)(sq - pos);
		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&ring_tail, &pos, pos + 1,
			                                          memory_order_relaxed,
			                                          memory_order_relaxed))
				break;
		} else if (dif < 0) {
			atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
			errno = e;
			return;
		} else {
			pos = atomic_load_explicit(&ring_tail, memory_order_relaxed);
		}
	}
	memcpy(&s->r, r, sizeof(*r));
	s->r.seq = atomic_fetch_add_explicit(&report_seq, 1, memory_order_relaxed) + 1;
	s->r.time_ns = weft__watch_now();
	if (s->r.nthreads < 0)
		s->r.nthreads = 0;
	if (s->r.nthreads > WEFT_WATCH_MAX_THREADS)
		s->r.nthreads = WEFT_WATCH_MAX_THREADS;
	for (int i = 0; i < s->r.nthreads; i++)
		if (!s->r.threads[i].pid)
			s->r.threads[i].pid = cur_pid();
	if (r->event > 0 && r->event < WEFT_WATCH_EVENT_COUNT)
		atomic_fetch_add_explicit(&counts[r->event], 1, memory_order_relaxed);
	atomic_store_explicit(&s->seq, pos + 1 - pos % RING, memory_order_release);
	wake_dog();
	errno = e;
}

/* ------------------------------------------------------------------------------------------------
 * The contention profile.
 */
static struct prof *prof_entry(void *site)
{
	struct prof *p = __atomic_load_n(&prof, __ATOMIC_ACQUIRE);
	if (!p || !site)
		return NULL;
	uintptr_t key = (uintptr_t)site;
	uint64_t h = (uint64_t)key * 0x9e3779b97f4a7c15ull;
	for (int k = 0; k < PROF_PROBE; k++) {
		struct prof *e = &p[((h >> 40) + (uint64_t)k) & (PROF_CAP - 1)];
		uintptr_t cur = atomic_load_explicit(&e->site, memory_order_acquire);
		if (cur == key)
			return e;
		if (cur == 0) {
			if (atomic_compare_exchange_strong(&e->site, &cur, key) || cur == key)
				return e;
		}
	}
	atomic_fetch_add_explicit(&prof_full, 1, memory_order_relaxed);
	return NULL;
}

static void max_store(_Atomic int64_t *m, int64_t v)
{
	int64_t cur = atomic_load_explicit(m, memory_order_relaxed);
	while (v > cur && !atomic_compare_exchange_weak_explicit(m, &cur, v, memory_order_relaxed,
	                                                         memory_order_relaxed))
		;
}

/* The entry's lock and kind: the last seen (stored only when they change: threads that fight
 * over one lock share the entry's cache line). */
static void prof_lock_kind(struct prof *e, uintptr_t lock, uint32_t kind)
{
	if (atomic_load_explicit(&e->lock, memory_order_relaxed) != lock)
		atomic_store_explicit(&e->lock, lock, memory_order_relaxed);
	if (atomic_load_explicit(&e->kind, memory_order_relaxed) != kind)
		atomic_store_explicit(&e->kind, kind, memory_order_relaxed);
}

static void prof_wait(const void *lock, weft_watch_lock_kind kind, void *site, int64_t ns,
                      int acquired)
{
	struct prof *e = prof_entry(site);
	if (!e)
		return;
	prof_lock_kind(e, (uintptr_t)lock, (uint32_t)kind);
	if (acquired)
		atomic_fetch_add_explicit(&e->contended, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&e->wait_total, ns, memory_order_relaxed);
	max_store(&e->wait_max, ns);
}

/* Quick waits (the wait protocol, step 0) go to the profile in batches: one round of shared
 * atomics per QUICK_BATCH of them, or when the thread moves to another site or lock, or exits
 * (key_destructor), or stops the monitor or reads the profile itself. What a thread still holds
 * back (fewer than QUICK_BATCH waits per thread) is missing from a profile read by another
 * thread. */
static void quick_busy(int on)
{
	if (!on)
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
	quick.busy = on;
	if (on)
		__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

/* The caller has set quick.busy. Sums of an earlier session are dropped. */
static void quick_add(void)
{
	if (quick.n && quick.gen == atomic_load_explicit(&quick_gen, memory_order_relaxed)) {
		struct prof *e = prof_entry((void *)quick.site);
		if (e) {
			prof_lock_kind(e, quick.lock, quick.kind);
			if (quick.acquired)
				atomic_fetch_add_explicit(&e->contended, quick.acquired,
				                          memory_order_relaxed);
			atomic_fetch_add_explicit(&e->wait_total, quick.ns, memory_order_relaxed);
			max_store(&e->wait_max, quick.ns_max);
		}
	}
	quick.n = quick.acquired = 0;
	quick.ns = quick.ns_max = 0;
}

static void quick_flush(void)
{
	if (quick.busy)
		return; /* a signal handler's: the interrupted code goes on with the sums */
	quick_busy(1);
	quick_add();
	quick_busy(0);
}

static void quick_note(const struct weft__watch_op *op, int acquired, int64_t ns)
{
	if (quick.busy) { /* a signal handler's wait, inside the thread's own bookkeeping */
		prof_wait(op->lock, op->kind, op->site, ns, acquired);
		return;
	}
	quick_busy(1);
	uint32_t gen = atomic_load_explicit(&quick_gen, memory_order_relaxed);
	if (quick.gen != gen || quick.site != (uintptr_t)op->site ||
	    quick.lock != (uintptr_t)op->lock) {
		quick_add();
		quick.gen = gen;
		quick.site = (uintptr_t)op->site;
		quick.lock = (uintptr_t)op->lock;
		quick.kind = (uint32_t)op->kind;
	}
	if (weft__unlikely(!key_armed)) {
		key_armed = 1;
		pthread_setspecific(rec_key, (void *)1); /* no allocation: an early key */
	}
	quick.acquired += acquired != 0;
	quick.ns += ns;
	if (ns > quick.ns_max)
		quick.ns_max = ns;
	if (++quick.n >= QUICK_BATCH)
		quick_add();
	quick_busy(0);
}

void weft__watch_hold_acquired(const void *lock, void *site)
{
	int n = __atomic_load_n(&weft__watch_profile_sample, __ATOMIC_RELAXED);
	if (n <= 0 || weft__watch_internal)
		return;
	if (--hold_countdown > 0)
		return;
	hold_countdown = n;
	/* a sample still open (its lock not yet released) is dropped: one sample at a time */
	hold_lock = lock;
	hold_site = site;
	hold_start = weft__watch_now();
}

void weft__watch_hold_released(const void *lock)
{
	if (weft__likely(lock != hold_lock) || !lock)
		return;
	hold_lock = NULL;
	int64_t ns = weft__watch_now() - hold_start;
	struct prof *e = prof_entry(hold_site);
	if (!e)
		return;
	if (!atomic_load_explicit(&e->lock, memory_order_relaxed))
		atomic_store_explicit(&e->lock, (uintptr_t)lock, memory_order_relaxed);
	atomic_fetch_add_explicit(&e->hold_samples, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&e->hold_total, ns, memory_order_relaxed);
	max_store(&e->hold_max, ns);
}

/* ------------------------------------------------------------------------------------------------
 * The wait protocol.
 */
static void fill_self(weft_watch_thread *t, weft_watch_lock_kind kind, const void *lock,
                      const char *lname, pid_t owner, void *site)
{
	memset(t, 0, sizeof(*t));
	t->pid = cur_pid();
	t->tid = weft__watch_tid();
	prctl(PR_GET_NAME, t->name, 0, 0, 0);
	t->name[15] = '\0';
	t->wait_kind = kind;
	t->waits_for = lock;
	if (lname) {
		size_t len = strnlen(lname, sizeof(t->lock_name) - 1);
		memcpy(t->lock_name, lname, len);
	}
	t->owner_tid = owner;
	t->wait_site = site;
}

/* A report about the calling thread alone, its stack captured here (skip: frames of ours).
 * error: what the lock call returned instead of waiting (0: none); deadline: -1 none. */
static __attribute__((noinline)) void emit_self(weft_watch_event ev, weft_watch_lock_kind kind,
                                                const void *lock, const char *lname, pid_t owner,
                                                void *site, int64_t waited, int error,
                                                int64_t deadline)
{
	weft_watch_report r;
	memset(&r, 0, sizeof(r));
	r.event = ev;
	r.nthreads = 1;
	weft_watch_thread *t = &r.threads[0];
	fill_self(t, kind, lock, lname, owner, site);
	t->waited_ns = waited;
	t->error = error;
	t->deadline_ns = deadline < 0 ? 0 : WEFT__MAX(deadline, 1);
	r.ends = error != 0 || deadline >= 0;
	if (kind == WEFT_WATCH_LOCK_MUTEX || kind == WEFT_WATCH_LOCK_WRLOCK ||
	    kind == WEFT_WATCH_LOCK_RDLOCK) {
		if (ev == WEFT_WATCH_SELF_DEADLOCK || ev == WEFT_WATCH_OWNER_DIED) {
			t->nholds = 1;
			t->holds[0] = lock;
			/* in prediction mode the thread's held list says the rest */
			const void *held[WEFT_WATCH_MAX_HOLDS];
			int n = __atomic_load_n(&weft__watch_predict_on, __ATOMIC_RELAXED)
			                ? weft__predict_held(held, WEFT_WATCH_MAX_HOLDS)
			                : 0;
			for (int i = 0; i < n && t->nholds < WEFT_WATCH_MAX_HOLDS; i++)
				if (held[i] != lock)
					t->holds[t->nholds++] = held[i];
		}
	}
	t->nstack = weft__watch_stack(t->stack, WEFT_WATCH_MAX_FRAMES, 2, site);
	weft__watch_emit(&r);
}

struct wctx {
	struct rec *r, *s;  /* private and shared records (NULL: not recorded) */
	uint64_t seq, sseq; /* the wait's number in each (each record numbers its own waits) */
	int stacked;
	void *site;
	const char *lname;
};

/* What a wait publishes in its record. */
struct wfields {
	const void *lock;
	uint32_t kind;
	void *site;
	int64_t start, deadline, owner_ns;
	pid_t owner;
	const void *aux;
};

/* Step 1 of the wait protocol: the record does not wait (wseq = 0, stored seq_cst by the end
 * of its last wait, or at claim); the release fence orders that store before the fields' (the
 * snapshot's argument b). */
static void rec_fields(struct rec *r, const struct wfields *f)
{
	FENCE_REL();
	atomic_store_explicit(&r->lock, (uintptr_t)f->lock, FIELD_ST);
	atomic_store_explicit(&r->kind, f->kind, FIELD_ST);
	atomic_store_explicit(&r->site, (uintptr_t)f->site, FIELD_ST);
	atomic_store_explicit(&r->start, f->start, FIELD_ST);
	atomic_store_explicit(&r->deadline, f->deadline, FIELD_ST);
	atomic_store_explicit(&r->aux, (uintptr_t)f->aux, FIELD_ST);
	atomic_store_explicit(&r->owner, f->owner, FIELD_ST);
	atomic_store_explicit(&r->owner_ns, f->owner_ns, memory_order_release);
}

/* Step 3: a new owner, read at `seen`. */
static void rec_owner(struct rec *r, pid_t owner, int64_t seen)
{
	/* release: the lock read that gave `owner` is ordered before this store (see the head
	 * comment's argument c; a plain mov on x86) */
	atomic_store_explicit(&r->owner, owner, memory_order_release);
	atomic_store_explicit(&r->owner_ns, seen, memory_order_release);
}

/* Records the wait; the caller has raised `nest` (and is the only recording on this thread). */
static void begin_wait(struct wctx *w, const struct wfields *f, int pshared)
{
	struct rec *r = my_record();
	if (!r || atomic_load_explicit(&r->wseq, memory_order_relaxed) != 0)
		return; /* table full (or a record left waiting by a cancelled wait): not recorded
		         */
	uint64_t seq = atomic_load_explicit(&r->nextseq, memory_order_relaxed) + 1;
	atomic_store_explicit(&r->nextseq, seq, memory_order_relaxed);
	w->r = r;
	w->seq = seq;
	rec_fields(r, f);
	rec_set_lname(r, w->lname);
	void (*hook)(void) = __atomic_load_n(&weft__watch_test_hook, __ATOMIC_RELAXED);
	if (weft__unlikely(hook != NULL))
		hook();
	atomic_store_explicit(&r->wseq, seq, memory_order_release); /* step 2 */
	if (pshared && atomic_load_explicit(&shm, memory_order_relaxed)) {
		atomic_fetch_add(&shm_users, 1);
		struct rec *s = my_shared_record();
		if (s && atomic_load_explicit(&s->wseq, memory_order_relaxed) == 0) {
			/* the shared record's own numbers: it passes from thread to thread (and
			 * process to process), and its wait numbers must never repeat */
			uint64_t sseq = atomic_load_explicit(&s->nextseq, memory_order_relaxed) + 1;
			atomic_store_explicit(&s->nextseq, sseq, memory_order_relaxed);
			w->s = s;
			w->sseq = sseq;
			shm_waiting = 1;
			rec_fields(s, f);
			rec_set_lname(s, w->lname);
			atomic_store_explicit(&s->wseq, sseq, memory_order_release);
		} else {
			atomic_fetch_sub(&shm_users, 1);
		}
	}
}

static void store_stack(struct rec *r, uint64_t seq, void *const *frames, int n, int from_site)
{
	atomic_store_explicit(&r->stack_seq, 0, FIELD_ST);
	FENCE_REL();
	for (int i = 0; i < n; i++)
		atomic_store_explicit(&r->stack[i], (uintptr_t)frames[i], FIELD_ST);
	atomic_store_explicit(&r->nstack, n, FIELD_ST);
	atomic_store_explicit(&r->stack_site, (uint32_t)from_site, FIELD_ST);
	atomic_store_explicit(&r->stack_seq, seq, memory_order_release);
}

/* Captures the stack into the records; returns the frame count (frames filled). */
static __attribute__((noinline)) int capture(struct wctx *w, void **frames, int64_t now)
{
	/* skip this function and weft__watch_wait (or cond_begin): the first frame is the lock
	 * function that called the engine */
	int n = weft__watch_stack(frames, WEFT_WATCH_MAX_FRAMES, 2, w->site);
	store_stack(w->r, w->seq, frames, n, 0);
	if (w->s)
		store_stack(w->s, w->sseq, frames, n, 0);
	rec_refresh_name(w->r, w->s, now, 0);
	w->stacked = 1;
	return n;
}

/* Step 4, seq_cst: see "Memory orders" in the head comment. */
static void end_wait(struct wctx *w)
{
	if (w->r)
		atomic_store(&w->r->wseq, 0);
	if (w->s) {
		atomic_store(&w->s->wseq, 0);
		shm_waiting = 0;
		atomic_fetch_sub(&shm_users, 1);
	}
}

static void nest_up(void)
{
	nest++;
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
}

static void nest_down(void)
{
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	nest--;
}

/* A wait for a lock the thread owns, after its first slice returned r: reported then, with what
 * we know by now (the call returned an error, it has a deadline, or it waits on for good). A
 * slice that got the lock after all (someone else unlocked a normal mutex) is no report. */
static __attribute__((noinline)) void self_wait(const struct weft__watch_op *op, pid_t owner, int r,
                                                int64_t deadline, int64_t waited)
{
	if (r == 0 || r == EOWNERDEAD)
		return;
	emit_self(WEFT_WATCH_SELF_DEADLOCK, op->kind, op->lock, op->name, owner, op->site, waited,
	          r == ETIMEDOUT ? 0 : r, deadline);
	__asm__ volatile("" ::: "memory"); /* no tail call: emit_self skips this frame */
}

int weft__watch_wait(const struct weft__watch_op *op, int64_t deadline)
{
	int e = errno;
	if (weft__unlikely(atomic_load_explicit(&need_restart, memory_order_relaxed)))
		restart_dog();
	int r;
	/* step 0 */
	int64_t quick_ns = 0; /* the quick slice's length, when it ran out */
	if (is_on()) {
		/* at least QUICK_NS from the precise now, which is at most coarse_res ahead */
		int64_t q = coarse_now();
		int64_t end = q + __atomic_load_n(&coarse_res, __ATOMIC_RELAXED) + QUICK_NS;
		if (deadline >= 0 && deadline < end)
			end = deadline;
		void (*hook)(void *) =
		        __atomic_load_n(&weft__watch_test_quick_hook, __ATOMIC_RELAXED);
		if (weft__unlikely(hook != NULL))
			hook(op->lock);
		r = op->timed(op->lock, end);
		quick_ns = coarse_now() - q;
		/* a self-wait (the caller owns the lock) goes on to the recorded wait below, which
		 * reports it: an error-checking relock (EDEADLK, which the call there returns
		 * again: this one changed nothing), or a relock timed out at its deadline */
		int self_end = r == ETIMEDOUT && end == deadline && op->owner &&
		               op->owner(op->lock) == weft__watch_tid();
		if (r != EDEADLK && !self_end && (r != ETIMEDOUT || end == deadline)) {
			quick_note(op, r == 0 || r == EOWNERDEAD, quick_ns);
			errno = e;
			return r;
		}
	}
	/* precise, read inside the lock call: the owner-edge proof's start */
	int64_t start = weft__watch_now(), now = start;
	struct wctx w = {.site = op->site, .lname = op->name};
	int tried = 0, was_on = 0, nested;
	pid_t self = 0;
	nest_up();
	nested = nest > 1;
	for (;;) {
		if (!tried && is_on()) {
			tried = was_on = 1;
			/* the owner is read after the clock (now): owner_ns = now */
			pid_t owner = op->owner ? op->owner(op->lock) : 0;
			if (owner != 0 && owner == weft__watch_tid())
				self = owner;
			struct wfields f = {.lock = op->lock,
			                    .kind = (uint32_t)op->kind,
			                    .site = op->site,
			                    .start = start,
			                    .deadline = deadline,
			                    .owner_ns = now,
			                    .owner = owner};
			if (!nested)
				begin_wait(&w, &f, op->pshared);
		}
		int64_t end =
		        now + (w.r ? __atomic_load_n(&slice_ns, __ATOMIC_RELAXED) : OFF_SLICE);
		if (deadline >= 0 && deadline < end)
			end = deadline;
		r = op->timed(op->lock, end);
		if (weft__unlikely(self != 0)) {
			if (!nested)
				self_wait(op, self, r, deadline, weft__watch_now() - start);
			self = 0;
		}
		if (r != ETIMEDOUT || end == deadline)
			break;
		/* one clock read per slice: the refreshed owner's time, and the next slice's base
		 */
		now = weft__watch_now();
		if (w.r) {
			if (op->owner) {
				/* the time first, then the owner (step 3) */
				pid_t o = op->owner(op->lock);
				rec_owner(w.r, o, now);
				if (w.s)
					rec_owner(w.s, o, now);
			}
			if (!w.stacked) {
				void *frames[WEFT_WATCH_MAX_FRAMES];
				capture(&w, frames, now);
			}
		}
	}
	end_wait(&w);
	nest_down();
	if (was_on)
		prof_wait(op->lock, op->kind, op->site, weft__watch_now() - start + quick_ns,
		          r == 0 || r == EOWNERDEAD);
	errno = e;
	return r;
}

/* A condition wait's stack: the site's first one when there is one (copied: a few dozen stores),
 * else captured here, and kept for the site by the thread that wins the CAS. */
static void cond_stack(struct wctx *w, int64_t now)
{
	struct prof *e = prof_entry(w->site);
	struct prof_stack *ps = e ? &prof_stacks[e - prof] : NULL;
	uint32_t st = ps ? atomic_load_explicit(&ps->stack_state, memory_order_acquire) : 0;
	if (ps && st == 2) {
		void *frames[WEFT_WATCH_MAX_FRAMES];
		int n = (int)atomic_load_explicit(&ps->nstack, memory_order_relaxed);
		n = WEFT__MIN(n, WEFT_WATCH_MAX_FRAMES);
		for (int i = 0; i < n; i++)
			frames[i] =
			        (void *)atomic_load_explicit(&ps->stack[i], memory_order_relaxed);
		store_stack(w->r, w->seq, frames, n, 1);
		rec_refresh_name(w->r, NULL, now, 0);
		w->stacked = 1;
		return;
	}
	void *frames[WEFT_WATCH_MAX_FRAMES];
	int n = capture(w, frames, now);
	if (ps && st == 0 && n > 0 &&
	    atomic_compare_exchange_strong(&ps->stack_state, &(uint32_t){0}, 1)) {
		for (int i = 0; i < n; i++)
			atomic_store_explicit(&ps->stack[i], (uintptr_t)frames[i],
			                      memory_order_relaxed);
		atomic_store_explicit(&ps->nstack, (uint32_t)n, memory_order_relaxed);
		atomic_store_explicit(&ps->stack_state, 2, memory_order_release);
	}
}

uint64_t weft__watch_cond_begin(const void *cond, const void *mutex, void *site)
{
	if (!is_on())
		return 0;
	nest_up();
	if (nest > 1) {
		nest_down();
		return 0;
	}
	int e = errno;
	if (weft__unlikely(atomic_load_explicit(&need_restart, memory_order_relaxed)))
		restart_dog();
	struct wctx w = {.site = site};
	int64_t now = weft__watch_now();
	struct wfields f = {.lock = cond,
	                    .kind = WEFT_WATCH_LOCK_COND,
	                    .site = site,
	                    .start = now,
	                    .deadline = -1,
	                    .owner_ns = now,
	                    .aux = mutex};
	begin_wait(&w, &f, 0);
	uint64_t token = 0;
	if (w.r) {
		cond_stack(&w, now);
		token = w.seq;
	} else {
		nest_down();
	}
	errno = e;
	return token;
}

void weft__watch_cond_end(uint64_t token)
{
	if (!token)
		return;
	nest_down();
	struct rec *r = my_rec;
	if (!r || atomic_load_explicit(&r->wseq, memory_order_relaxed) != token)
		return;
	int64_t ns = weft__watch_now() - atomic_load_explicit(&r->start, memory_order_relaxed);
	atomic_store(&r->wseq, 0);
	if (is_on())
		prof_wait((const void *)atomic_load_explicit(&r->lock, memory_order_relaxed),
		          WEFT_WATCH_LOCK_COND,
		          (void *)atomic_load_explicit(&r->site, memory_order_relaxed), ns, 1);
}

void weft__watch_rw_acquired(const void *lock, int write)
{
	if (!is_on() || !lock)
		return;
	struct rec *r = my_record();
	if (!r)
		return;
	for (int i = 0; i < RW_MAX; i++) {
		if (atomic_load_explicit(&r->rw[i], memory_order_relaxed) == 0) {
			atomic_store_explicit(&r->rw_write[i], write ? 1 : 0, memory_order_relaxed);
			atomic_store_explicit(&r->rw[i], (uintptr_t)lock, memory_order_release);
			return;
		}
	}
	atomic_fetch_add_explicit(&r->rw_untracked, 1, memory_order_relaxed);
}

void weft__watch_rw_released(const void *lock)
{
	struct rec *r = my_rec;
	if (!r || !lock)
		return;
	for (int i = RW_MAX - 1; i >= 0; i--) {
		if (atomic_load_explicit(&r->rw[i], memory_order_relaxed) == (uintptr_t)lock) {
			atomic_store_explicit(&r->rw[i], 0, memory_order_release);
			return;
		}
	}
}

void weft__watch_owner_died(const void *lock, void *site)
{
	if (!is_on())
		return;
	emit_self(WEFT_WATCH_OWNER_DIED, WEFT_WATCH_LOCK_MUTEX, lock, NULL, 0, site, 0, 0, -1);
	__asm__ volatile("" ::: "memory"); /* no tail call: emit_self skips this frame */
}

/* ------------------------------------------------------------------------------------------------
 * Names and report formats.
 */
static const char *const event_names[] = {"?",         "deadlock",  "self-deadlock", "inversion",
                                          "long-wait", "cond-wait", "owner-died"};
static const char *const kind_names[] = {"?", "mutex", "rdlock", "wrlock", "cond", "sem"};

const char *weft_watch_event_name(weft_watch_event e)
{
	return (int)e > 0 && (int)e < WEFT_WATCH_EVENT_COUNT ? event_names[e] : "?";
}

const char *weft_watch_lock_kind_name(weft_watch_lock_kind k)
{
	return (int)k > 0 && (int)k <= WEFT_WATCH_LOCK_SEM ? kind_names[k] : "?";
}

static const char *base_name(const char *p)
{
	const char *s = p ? strrchr(p, '/') : NULL;
	return s ? s + 1 : p;
}

static void text_frame(weft__buf *b, weft_symbolizer *s, const void *pc)
{
	const char *func = "??", *file = NULL, *module = NULL;
	uintptr_t off = 0;
	int line = 0;
	if (s)
		weft_symbolizer_lookup(s, pc, &func, &off, &file, &line, &module);
	weft__buf_printf(b, "%s+0x%" PRIxPTR, func ? func : "??", off);
	if (file)
		weft__buf_printf(b, " at %s:%d", base_name(file), line);
	if (module)
		weft__buf_printf(b, " (%s)", base_name(module));
}

static void text_stack(weft__buf *b, weft_symbolizer *s, void *const *st, int n)
{
	if (n <= 0) {
		weft__buf_puts(b, "      (no stack)\n");
		return;
	}
	for (int i = 0; i < n && i < WEFT_WATCH_MAX_FRAMES; i++) {
		weft__buf_printf(b, "      #%-2d %p  ", i, st[i]);
		text_frame(b, s, st[i]);
		weft__buf_putc(b, '\n');
	}
}

static void text_secs(weft__buf *b, int64_t ns)
{
	weft__buf_printf(b, "%.3f s", (double)ns / 1e9);
}

/* "EDEADLK" for an errno value, "error N" when unknown */
static void text_errno(weft__buf *b, int err)
{
	const char *name = strerrorname_np(err);
	if (name)
		weft__buf_puts(b, name);
	else
		weft__buf_printf(b, "error %d", err);
}

static void text_thread(weft__buf *b, weft_symbolizer *s, const weft_watch_report *r,
                        const weft_watch_thread *t)
{
	weft__buf_printf(b, "  thread %d", (int)t->tid);
	if (t->name[0])
		weft__buf_printf(b, " \"%.16s\"", t->name);
	if (t->pid)
		weft__buf_printf(b, " (pid %d)", (int)t->pid);
	if (t->wait_kind) {
		const char *verb = r->event == WEFT_WATCH_OWNER_DIED ? "got" : "waits for";
		weft__buf_printf(b, " %s %s", verb, weft_watch_lock_kind_name(t->wait_kind));
		if (t->lock_name[0])
			weft__buf_printf(b, " \"%.23s\"", t->lock_name);
		weft__buf_printf(b, " %p", t->waits_for);
		if (t->cond_mutex)
			weft__buf_printf(b, " with mutex %p", t->cond_mutex);
		if (t->cond_mutex && r->event == WEFT_WATCH_DEADLOCK)
			weft__buf_puts(b, ", signalled, retaking the mutex,");
		if (t->owner_tid)
			weft__buf_printf(b, " owned by thread %d", (int)t->owner_tid);
		if (t->waited_ns > 0) {
			weft__buf_puts(b, " for ");
			text_secs(b, t->waited_ns);
		}
		if (t->error) {
			weft__buf_puts(b, " (the call returned ");
			text_errno(b, t->error);
			weft__buf_putc(b, ')');
		} else if (t->deadline_ns > 0) {
			weft__buf_puts(b, " (ends at its deadline)");
		}
	}
	weft__buf_putc(b, '\n');
	if (t->wait_site) {
		weft__buf_puts(b, "    called at ");
		text_frame(b, s, t->wait_site);
		weft__buf_putc(b, '\n');
	}
	if (t->nholds > 0) {
		weft__buf_puts(b, "    holds");
		for (int i = 0; i < t->nholds && i < WEFT_WATCH_MAX_HOLDS; i++)
			weft__buf_printf(b, " %p", t->holds[i]);
		weft__buf_putc(b, '\n');
	}
	weft__buf_puts(b, t->stack_from_site && t->nstack > 0
	                          ? "    stack (the first one seen at this call site):\n"
	                          : "    stack:\n");
	text_stack(b, s, t->stack, t->nstack);
}

/* A class: its name when it has one, else the site it was made at. */
static void text_class(weft__buf *b, weft_symbolizer *s, const char *name, void *site)
{
	if (name[0])
		weft__buf_printf(b, "\"%.23s\"", name);
	else
		text_frame(b, s, site);
}

static const char *headline(weft_watch_event e)
{
	switch (e) {
	case WEFT_WATCH_DEADLOCK: return "threads wait for each other in a cycle";
	case WEFT_WATCH_SELF_DEADLOCK: return "a thread waits for a lock it holds itself";
	case WEFT_WATCH_INVERSION: return "two locks taken in both orders (a possible deadlock)";
	case WEFT_WATCH_LONG_WAIT: return "a lock wait is taking long";
	case WEFT_WATCH_COND_WAIT: return "a condition wait is taking long";
	case WEFT_WATCH_OWNER_DIED: return "a robust mutex's owner died holding it";
	default: return "?";
	}
}

static int report_text(const weft_watch_report *r, weft_symbolizer *s, char **ret_text)
{
	weft__buf b = WEFT__BUF_INIT;
	weft__buf_printf(&b, "weft watch: %s: %s (report %" PRIu64 ", pid %d)\n",
	                 weft_watch_event_name(r->event), headline(r->event), r->seq,
	                 (int)getpid());
	int n = r->nthreads < 0 ? 0 : WEFT__MIN(r->nthreads, WEFT_WATCH_MAX_THREADS);
	for (int i = 0; i < n; i++)
		text_thread(&b, s, r, &r->threads[i]);
	if (r->more_threads > 0)
		weft__buf_printf(&b, "  ... and %d more threads\n", r->more_threads);
	if ((r->event == WEFT_WATCH_DEADLOCK || r->event == WEFT_WATCH_SELF_DEADLOCK) && r->ends)
		weft__buf_puts(&b, "  this wait ends by itself: no deadlock action is taken\n");
	if (r->event == WEFT_WATCH_LONG_WAIT && n == 2 &&
	    r->threads[1].wait_kind == WEFT_WATCH_LOCK_COND)
		weft__buf_printf(
		        &b,
		        "  its owner, thread %d, is in a condition wait on %p with mutex "
		        "%p: if it was woken, it may be blocked retaking that mutex inside "
		        "the wait (a deadlock if thread %d holds it, reported as one when "
		        "the watchdog sees the re-lock; it cannot in another process)\n",
		        (int)r->threads[1].tid, r->threads[1].waits_for, r->threads[1].cond_mutex,
		        (int)r->threads[0].tid);
	if (r->event == WEFT_WATCH_INVERSION) {
		for (int i = 0; i < 2; i++) {
			const weft_watch_order *o = &r->order[i];
			weft__buf_printf(&b, "  %s: thread %d took %p (class ",
			                 i == 0 ? "first order" : "now, reversed", (int)o->tid,
			                 o->acquired);
			text_class(&b, s, o->acquired_class_name, o->acquired_class_site);
			weft__buf_printf(&b, ") while holding %p (class ", o->held);
			text_class(&b, s, o->held_class_name, o->held_class_site);
			weft__buf_puts(&b, ")\n    stack:\n");
			text_stack(&b, s, o->stack, o->nstack);
		}
		/* a cycle of three or more: the two orders above are its first and closing ones */
		int np = WEFT__MIN(r->npath, WEFT_WATCH_MAX_PATH);
		if (np > 2) {
			weft__buf_printf(
			        &b,
			        "  the whole cycle (%d locks, each taken while the one before "
			        "it was held):\n",
			        r->npath + r->more_path);
			for (int i = 0; i < np; i++) {
				weft__buf_printf(&b, "    %p (class ", r->path[i].lock);
				text_class(&b, s, r->path[i].class_name, r->path[i].class_site);
				weft__buf_puts(&b, ")\n");
			}
			if (r->more_path > 0)
				weft__buf_printf(&b, "    ... and %d more\n", r->more_path);
		}
	}
	return weft__buf_finish(&b, ret_text, NULL);
}

static void json_ptr(weft__buf *b, const void *p)
{
	if (p)
		weft__buf_printf(b, "\"%p\"", p);
	else
		weft__buf_puts(b, "null");
}

static void json_frame(weft__buf *b, weft_symbolizer *s, const void *pc)
{
	if (!pc) {
		weft__buf_puts(b, "null");
		return;
	}
	const char *func = "??", *file = NULL;
	int line = 0;
	if (s)
		weft_symbolizer_lookup(s, pc, &func, NULL, &file, &line, NULL);
	weft__buf_printf(b, "{\"pc\":\"%p\",\"func\":", pc);
	weft__buf_json_str(b, func ? func : "??");
	weft__buf_puts(b, ",\"file\":");
	if (file)
		weft__buf_json_str(b, file);
	else
		weft__buf_puts(b, "null");
	weft__buf_printf(b, ",\"line\":%d}", line);
}

static void json_stack(weft__buf *b, weft_symbolizer *s, void *const *st, int n)
{
	weft__buf_putc(b, '[');
	for (int i = 0; i < n && i < WEFT_WATCH_MAX_FRAMES; i++) {
		if (i)
			weft__buf_putc(b, ',');
		json_frame(b, s, st[i]);
	}
	weft__buf_putc(b, ']');
}

/* ,"key":"name" for a name of up to 23 bytes (not always NUL-terminated), null when empty */
static void json_name(weft__buf *b, const char *key, const char *name)
{
	weft__buf_printf(b, ",\"%s\":", key);
	if (!name[0]) {
		weft__buf_puts(b, "null");
		return;
	}
	char s[24];
	size_t len = strnlen(name, 23);
	memcpy(s, name, len);
	s[len] = '\0';
	weft__buf_json_str(b, s);
}

static int report_json(const weft_watch_report *r, weft_symbolizer *s, char **ret_json)
{
	weft__buf b = WEFT__BUF_INIT;
	weft__buf_puts(&b, "{\"event\":");
	weft__buf_json_str(&b, weft_watch_event_name(r->event));
	weft__buf_printf(&b, ",\"seq\":%" PRIu64 ",\"time_ns\":%" PRId64 ",\"pid\":%d,\"ends\":%s",
	                 r->seq, r->time_ns, (int)getpid(), r->ends ? "true" : "false");
	weft__buf_puts(&b, ",\"threads\":[");
	int n = r->nthreads < 0 ? 0 : WEFT__MIN(r->nthreads, WEFT_WATCH_MAX_THREADS);
	for (int i = 0; i < n; i++) {
		const weft_watch_thread *t = &r->threads[i];
		char name[17];
		memcpy(name, t->name, 16);
		name[16] = '\0';
		weft__buf_printf(&b, "%s{\"pid\":%d,\"tid\":%d,\"name\":", i ? "," : "",
		                 (int)t->pid, (int)t->tid);
		weft__buf_json_str(&b, name);
		weft__buf_puts(&b, ",\"wait_kind\":");
		if (t->wait_kind)
			weft__buf_json_str(&b, weft_watch_lock_kind_name(t->wait_kind));
		else
			weft__buf_puts(&b, "null");
		weft__buf_puts(&b, ",\"waits_for\":");
		json_ptr(&b, t->waits_for);
		json_name(&b, "lock_name", t->lock_name);
		weft__buf_printf(&b, ",\"owner_tid\":%d,\"waited_ns\":%" PRId64 ",\"wait_site\":",
		                 (int)t->owner_tid, t->waited_ns);
		json_frame(&b, s, t->wait_site);
		weft__buf_puts(&b, ",\"deadline_ns\":");
		if (t->deadline_ns > 0)
			weft__buf_printf(&b, "%" PRId64, t->deadline_ns);
		else
			weft__buf_puts(&b, "null");
		weft__buf_puts(&b, ",\"error\":");
		if (t->error) {
			const char *en = strerrorname_np(t->error);
			if (en)
				weft__buf_json_str(&b, en);
			else
				weft__buf_printf(&b, "\"%d\"", t->error);
		} else {
			weft__buf_puts(&b, "null");
		}
		weft__buf_puts(&b, ",\"cond_mutex\":");
		json_ptr(&b, t->cond_mutex);
		weft__buf_printf(&b, ",\"stack_from_site\":%s",
		                 t->stack_from_site ? "true" : "false");
		weft__buf_puts(&b, ",\"holds\":[");
		for (int k = 0; k < t->nholds && k < WEFT_WATCH_MAX_HOLDS; k++) {
			if (k)
				weft__buf_putc(&b, ',');
			json_ptr(&b, t->holds[k]);
		}
		weft__buf_puts(&b, "],\"stack\":");
		json_stack(&b, s, t->stack, t->nstack);
		weft__buf_putc(&b, '}');
	}
	weft__buf_printf(&b, "],\"more_threads\":%d", r->more_threads);
	if (r->event == WEFT_WATCH_INVERSION) {
		weft__buf_puts(&b, ",\"order\":[");
		for (int i = 0; i < 2; i++) {
			const weft_watch_order *o = &r->order[i];
			weft__buf_printf(&b, "%s{\"tid\":%d,\"held\":", i ? "," : "", (int)o->tid);
			json_ptr(&b, o->held);
			weft__buf_puts(&b, ",\"acquired\":");
			json_ptr(&b, o->acquired);
			weft__buf_puts(&b, ",\"held_class\":");
			json_frame(&b, s, o->held_class_site);
			weft__buf_puts(&b, ",\"acquired_class\":");
			json_frame(&b, s, o->acquired_class_site);
			json_name(&b, "held_name", o->held_class_name);
			json_name(&b, "acquired_name", o->acquired_class_name);
			weft__buf_puts(&b, ",\"stack\":");
			json_stack(&b, s, o->stack, o->nstack);
			weft__buf_putc(&b, '}');
		}
		weft__buf_puts(&b, "],\"path\":[");
		int np = WEFT__MIN(r->npath, WEFT_WATCH_MAX_PATH);
		for (int i = 0; i < np; i++) {
			weft__buf_printf(&b, "%s{\"lock\":", i ? "," : "");
			json_ptr(&b, r->path[i].lock);
			weft__buf_puts(&b, ",\"class\":");
			json_frame(&b, s, r->path[i].class_site);
			json_name(&b, "class_name", r->path[i].class_name);
			weft__buf_putc(&b, '}');
		}
		weft__buf_printf(&b, "],\"more_path\":%d", r->more_path);
	}
	weft__buf_putc(&b, '}');
	return weft__buf_finish(&b, ret_json, NULL);
}

static int valid_report(const weft_watch_report *r)
{
	return r && r->event > 0 && r->event < WEFT_WATCH_EVENT_COUNT && r->nthreads >= 0 &&
	       r->nthreads <= WEFT_WATCH_MAX_THREADS;
}

int weft_watch_report_text(const weft_watch_report *r, char **ret_text)
{
	if (!valid_report(r) || !ret_text)
		return -EINVAL;
	int e = errno;
	weft_symbolizer *s = NULL;
	int rc = weft_symbolizer_create(&s);
	if (rc == 0)
		rc = report_text(r, s, ret_text);
	weft_symbolizer_destroy(s);
	errno = e;
	return rc;
}

int weft_watch_report_json(const weft_watch_report *r, char **ret_json)
{
	if (!valid_report(r) || !ret_json)
		return -EINVAL;
	int e = errno;
	weft_symbolizer *s = NULL;
	int rc = weft_symbolizer_create(&s);
	if (rc == 0)
		rc = report_json(r, s, ret_json);
	weft_symbolizer_destroy(s);
	errno = e;
	return rc;
}

/* ------------------------------------------------------------------------------------------------
 * Emission, on the watchdog thread.
 */
static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

/* Notes the file fd is now (0: none); -EBADF if it is not open. */
static int out_open(struct out *o, int fd)
{
	memset(o, 0, sizeof(*o));
	if (fd <= 0)
		return 0;
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -EBADF;
	o->fd = fd;
	o->dev = st.st_dev;
	o->ino = st.st_ino;
	return 0;
}

/* May this output be written? Only while its fd is the file it was at start: a program that
 * closed it and opened a file of its own at that number must not get reports in its data. On a
 * mismatch the output stops for good; every report not written is counted. (A close and reopen
 * between this check and the write is not seen: the window is a system call wide.) */
static int out_ok(struct out *o)
{
	if (o->fd <= 0)
		return 0;
	if (!o->dead) {
		struct stat st;
		if (fstat(o->fd, &st) == 0 && st.st_dev == o->dev && st.st_ino == o->ino)
			return 1;
		o->dead = 1;
	}
	atomic_fetch_add_explicit(&lost_output, 1, memory_order_relaxed);
	return 0;
}

static void emit_one(const weft_watch_report *r)
{
	if (opts.on_report)
		opts.on_report(r, opts.arg);
	if (r->event > 0 && r->event < WEFT_WATCH_EVENT_COUNT)
		weft_counter_add(m_reports[r->event], 1);
	if (!sym && (opts.json_fd > 0 || opts.text_fd > 0))
		weft_symbolizer_create(&sym);
	char *t;
	if (out_ok(&out_json) && report_json(r, sym, &t) == 0) {
		size_t n = strlen(t);
		t[n] = '\n'; /* the NUL becomes the newline: one write, one line */
		write_all(out_json.fd, t, n + 1);
		free(t);
	}
	if (out_ok(&out_text) && report_text(r, sym, &t) == 0) {
		write_all(out_text.fd, t, strlen(t));
		free(t);
	}
	/* the action only for a wait that cannot end by itself */
	if ((r->event == WEFT_WATCH_DEADLOCK || r->event == WEFT_WATCH_SELF_DEADLOCK) && !r->ends) {
		if (opts.on_deadlock == WEFT_WATCH_ACTION_ABORT)
			abort();
		if (opts.on_deadlock == WEFT_WATCH_ACTION_EXIT)
			_exit(opts.exit_code ? opts.exit_code : 86);
	}
}

static void drain(void)
{
	for (;;) {
		uint64_t pos = atomic_load_explicit(&ring_head, memory_order_relaxed);
		struct slot *s = &ring[pos % RING];
		if (atomic_load_explicit(&s->seq, memory_order_acquire) + pos % RING != pos + 1)
			break;
		emit_one(&s->r);
		atomic_store_explicit(&ring_head, pos + 1, memory_order_relaxed);
		atomic_store_explicit(&s->seq, pos + RING - pos % RING, memory_order_release);
	}
	uint64_t d = atomic_load_explicit(&dropped, memory_order_relaxed);
	if (d != m_dropped_seen) {
		weft_counter_add(m_dropped, d - m_dropped_seen);
		m_dropped_seen = d;
	}
	uint64_t u = atomic_load_explicit(&unrecorded, memory_order_relaxed) +
	             atomic_load_explicit(&prof_full, memory_order_relaxed);
	if (u != m_unrecorded_seen) {
		weft_counter_add(m_unrecorded, u - m_unrecorded_seen);
		m_unrecorded_seen = u;
	}
}

/* ------------------------------------------------------------------------------------------------
 * The scan: snapshots, the wait-for graph, cycles, long waits.
 */

/* A consistent snapshot of a waiting record into n; 0 if it does not wait (or changed). */
static int snap(struct rec *r, struct node *n)
{
	uint64_t s1 = atomic_load_explicit(&r->wseq, memory_order_acquire);
	if (!s1)
		return 0;
	n->tid = atomic_load_explicit(&r->tid, FIELD_LD); /* set at claim */
	n->lock = atomic_load_explicit(&r->lock, FIELD_LD);
	n->kind = atomic_load_explicit(&r->kind, FIELD_LD);
	/* owner_ns before owner: see the snapshot's argument c */
	n->owner_ns = atomic_load_explicit(&r->owner_ns, memory_order_acquire);
	n->owner = atomic_load_explicit(&r->owner, FIELD_LD);
	n->start = atomic_load_explicit(&r->start, FIELD_LD);
	n->deadline = atomic_load_explicit(&r->deadline, FIELD_LD);
	n->aux = atomic_load_explicit(&r->aux, FIELD_LD);
	n->site = atomic_load_explicit(&r->site, FIELD_LD);
	FENCE_ACQ();
	if (atomic_load_explicit(&r->wseq, memory_order_relaxed) != s1)
		return 0;
	n->wseq = s1;
	n->rec = r;
	n->nedge = 0;
	n->self_hold = 0;
	n->probe = 0;
	return 1;
}

static int tid_lookup(pid_t tid)
{
	unsigned mask = (unsigned)tidmap_cap - 1;
	for (unsigned h = ((unsigned)tid * 2654435761u) & mask;; h = (h + 1) & mask) {
		int v = tidmap[h];
		if (v == 0)
			return -1;
		if (nodes[v - 1].tid == tid)
			return v - 1;
	}
}

static void tid_insert(pid_t tid, int idx)
{
	unsigned mask = (unsigned)tidmap_cap - 1;
	for (unsigned h = ((unsigned)tid * 2654435761u) & mask;; h = (h + 1) & mask) {
		if (tidmap[h] == 0) {
			tidmap[h] = idx + 1;
			return;
		}
		if (nodes[tidmap[h] - 1].tid == tid)
			return; /* a tid twice (a stale record): keep the first */
	}
}

static void add_edge(struct node *n, int to)
{
	for (int i = 0; i < n->nedge; i++)
		if (n->edge[i] == to)
			return;
	if (n->nedge < EDGE_MAX)
		n->edge[n->nedge++] = to;
}

/* The stack of a record, if it belongs to wait seq (from_site: the stack is the site's first). */
static int rec_stack(struct rec *r, uint64_t seq, void **out, int *from_site)
{
	if (atomic_load_explicit(&r->stack_seq, memory_order_acquire) != seq)
		return 0;
	int n = atomic_load_explicit(&r->nstack, FIELD_LD);
	if (n < 0 || n > WEFT_WATCH_MAX_FRAMES)
		return 0;
	for (int i = 0; i < n; i++)
		out[i] = (void *)atomic_load_explicit(&r->stack[i], FIELD_LD);
	*from_site = (int)atomic_load_explicit(&r->stack_site, FIELD_LD);
	FENCE_ACQ(); /* the frames' loads before the re-check */
	if (atomic_load(&r->stack_seq) != seq || atomic_load(&r->wseq) != seq)
		return 0;
	return n;
}

static void node_thread(const struct node *n, weft_watch_thread *t, int64_t now)
{
	memset(t, 0, sizeof(*t));
	t->pid = n->pid;
	t->tid = n->tid;
	rec_get_name(n->rec, t->name);
	t->wait_kind = (weft_watch_lock_kind)n->kind;
	t->waits_for = n->own ? (const void *)n->lock : NULL;
	t->owner_tid = n->owner;
	t->waited_ns = now - n->start;
	t->wait_site = n->own ? (void *)n->site : NULL;
	t->deadline_ns = n->deadline < 0 ? 0 : WEFT__MAX(n->deadline, 1);
	if (n->kind == WEFT_WATCH_LOCK_COND && n->own)
		t->cond_mutex = (const void *)n->aux;
	if (n->own) {
		t->nstack = rec_stack(n->rec, n->wseq, t->stack, &t->stack_from_site);
		rec_get_lname(n->rec, t->lock_name);
		FENCE_ACQ();
		if (atomic_load(&n->rec->wseq) != n->wseq)
			t->lock_name[0] = '\0'; /* the wait ended: the name may be the next one's */
	}
}

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
	return h * 0xff51afd7ed558ccdull;
}

static int was_reported(uint64_t key)
{
	unsigned n = nreported < REPORTED_MAX ? nreported : REPORTED_MAX;
	for (unsigned i = 0; i < n; i++)
		if (reported[i] == key)
			return 1;
	return 0;
}

/* A cycle: cyc[0] waits for cyc[1]'s lock ... cyc[len-1] for cyc[0]'s. */
static void on_cycle(const int *cyc, int len, int64_t now)
{
	int own = 0, first = 0;
	for (int i = 0; i < len; i++) {
		struct node *n = &nodes[cyc[i]];
		own |= n->own;
		if (n->tid < nodes[cyc[first]].tid)
			first = i;
	}
	if (!own)
		return;
	uint64_t key = (uint64_t)len;
	for (int k = 0; k < len; k++) {
		struct node *n = &nodes[cyc[(first + k) % len]];
		struct node *next = &nodes[cyc[(first + k + 1) % len]];
		key = mix(key, (uint64_t)(uint32_t)n->pid);
		key = mix(key, (uint64_t)(uint32_t)n->tid);
		key = mix(key, n->wseq);
		key = mix(key, (uint64_t)(uint32_t)next->tid);
		key = mix(key, (uint64_t)(uint32_t)n->owner);
	}
	int seen = 1;
	for (int i = 0; i < nprev; i++)
		if (prev_keys[i] == key)
			seen = prev_seen[i] + 1;
	if (ncur < CYCLE_MAX) {
		cur_keys[ncur] = key;
		cur_seen[ncur++] = seen;
	}
	if (was_reported(key))
		return;
	/* every edge was proven at the snapshots; each thread still in the same wait now means
	 * they all held together at this moment: the cycle is real (head comment) */
	for (int k = 0; k < len; k++) {
		struct node *n = &nodes[cyc[k]];
		if (atomic_load(&n->rec->wseq) != n->wseq)
			return;
	}
	/* each of our threads captures its stack after its first slice: a thread that has not run
	 * since (a loaded machine, valgrind) gets a few more scans before the report goes without
	 */
	int stacks = 1;
	for (int k = 0; k < len && seen < STACK_GRACE_SCANS; k++) {
		struct node *n = &nodes[cyc[k]];
		if (n->own && atomic_load(&n->rec->stack_seq) != n->wseq)
			stacks = 0;
	}
	if (!stacks)
		return;
	reported[nreported++ % REPORTED_MAX] = key;

	weft_watch_report *r = &scratch_report;
	memset(r, 0, sizeof(*r));
	r->event = len == 1 ? WEFT_WATCH_SELF_DEADLOCK : WEFT_WATCH_DEADLOCK;
	for (int k = 0; k < len; k++)
		r->ends |= nodes[cyc[k]].deadline >= 0;
	int keep = WEFT__MIN(len, WEFT_WATCH_MAX_THREADS);
	r->nthreads = keep;
	r->more_threads = len - keep;
	for (int k = 0; k < keep; k++) {
		struct node *n = &nodes[cyc[(first + k) % len]];
		struct node *prev = &nodes[cyc[(first + k + len - 1) % len]];
		struct node *next = &nodes[cyc[(first + k + 1) % len]];
		weft_watch_thread *t = &r->threads[k];
		node_thread(n, t, now);
		t->owner_tid = next->tid;
		if (n->own && prev->own) {
			/* what prev waits for: a condition waiter in a cycle waits for its mutex */
			t->nholds = 1;
			t->holds[0] =
			        (const void *)(prev->kind == WEFT_WATCH_LOCK_COND ? prev->aux
			                                                          : prev->lock);
		}
	}
	weft__watch_emit(r);
	drain();
}

static void find_cycles(int nn, int64_t now)
{
	for (int i = 0; i < nn; i++)
		dfs_color[i] = 0;
	for (int root = 0; root < nn; root++) {
		if (dfs_color[root])
			continue;
		int sp = 0;
		dfs_stack[sp] = root;
		dfs_edge[sp] = 0;
		dfs_pos[root] = 0;
		dfs_color[root] = 1;
		sp++;
		while (sp > 0) {
			int v = dfs_stack[sp - 1];
			struct node *n = &nodes[v];
			if (dfs_edge[sp - 1] >= n->nedge) {
				dfs_color[v] = 2;
				sp--;
				continue;
			}
			int to = n->edge[dfs_edge[sp - 1]++];
			if (dfs_color[to] == 1) {
				int at = dfs_pos[to];
				on_cycle(&dfs_stack[at], sp - at, now);
			} else if (dfs_color[to] == 0) {
				dfs_color[to] = 1;
				dfs_pos[to] = sp;
				dfs_stack[sp] = to;
				dfs_edge[sp] = 0;
				sp++;
			}
		}
	}
}

static int tid_lookup(pid_t tid);

static void report_long(struct node *n, weft_watch_event ev, int64_t now)
{
	weft_watch_report *r = &scratch_report;
	memset(r, 0, sizeof(*r));
	r->event = ev;
	r->nthreads = 1;
	node_thread(n, &r->threads[0], now);
	for (int i = 0; i < RW_MAX; i++) {
		uintptr_t l = atomic_load_explicit(&n->rec->rw[i], memory_order_relaxed);
		if (l && r->threads[0].nholds < WEFT_WATCH_MAX_HOLDS)
			r->threads[0].holds[r->threads[0].nholds++] = (const void *)l;
	}
	/* an owner in a condition wait may be blocked retaking the wait's mutex inside it, which
	 * no record shows: name it, with its condvar and mutex */
	int o = ev == WEFT_WATCH_LONG_WAIT && n->owner ? tid_lookup(n->owner) : -1;
	if (o >= 0 && nodes[o].kind == WEFT_WATCH_LOCK_COND && nodes[o].own) {
		node_thread(&nodes[o], &r->threads[1], now);
		r->nthreads = 2;
	}
	weft__watch_emit(r);
	drain();
}

/* Frees the shared records of threads that are gone (head comment, "Thread records"). At the
 * image's first start (first_start) a claim in progress under this pid (-me) is gone too: no
 * thread of this image claims before the registry is published, so it is an earlier image's
 * claim or reclaim, cut short by exec. */
static void reclaim_dead(struct rec *tab, int n, pid_t me, int first_start)
{
	uint64_t mine = atomic_load_explicit(&image, memory_order_relaxed);
	for (int i = 0; i < n; i++) {
		struct rec *r = &tab[i];
		int32_t p = atomic_load_explicit(&r->state, memory_order_acquire);
		if (p == 0 || (p == -me && !first_start))
			continue; /* free, or one of our threads claiming it */
		int gone;
		uint64_t img = atomic_load_explicit(&r->image, memory_order_relaxed);
		if (p == me)
			gone = img != mine;
		else if (p == -me)
			gone = 1;
		else
			gone = kill(p < 0 ? -p : p, 0) == -1 && errno == ESRCH;
		int32_t judged = p;
		if (!gone || !atomic_compare_exchange_strong(&r->state, &p, -me))
			continue;
		/* between the kill and the CAS, another reclaimer may have freed the record and a
		 * new process with the reused pid claimed it: then its stamp is another; give it
		 * back (a CAS: it may have released the record meanwhile) */
		if (p > 0 && atomic_load_explicit(&r->image, memory_order_relaxed) != img) {
			int32_t mine_now = -me;
			atomic_compare_exchange_strong(&r->state, &mine_now, judged);
			continue;
		}
		atomic_store(&r->wseq, 0);
		atomic_store_explicit(&r->state, 0, memory_order_release);
	}
}

/* The re-lock probe (head comment, "Condition waits"): the owner of the mutex that condition
 * waiter n is blocked retaking, with *ret_ns the time read before it; 0 if n is not blocked on
 * its mutex or the owner is unknown. */
static pid_t relock_owner(const struct node *n, int64_t *ret_ns)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)n->tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t k = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (k <= 0)
		return 0;
	buf[k] = '\0';
	/* "NR 0xARG1 0xARG2 ...": a blocked call, NR and its arguments; else "running" or "-1 ..."
	 */
	char *p = buf, *e;
	long nr = strtol(p, &e, 10);
	if (e == p || nr != SYS_futex)
		return 0;
	unsigned long addr = strtoul(e, &p, 16);
	unsigned long op = strtoul(p, &e, 16);
	if (e == p || addr != (unsigned long)n->aux)
		return 0;
	unsigned long cmd = op & ~(unsigned long)(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
	if (cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET && cmd != FUTEX_LOCK_PI &&
	    cmd != 13 /* FUTEX_LOCK_PI2 */)
		return 0;
	int64_t t = weft__watch_now();
	int owner = 0;
	struct iovec local = {&owner, sizeof(owner)};
	struct iovec remote = {(void *)(n->aux + offsetof(pthread_mutex_t, __data.__owner)),
	                       sizeof(owner)};
	if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != (ssize_t)sizeof(owner))
		return 0;
	/* robust mutexes keep markers above any thread id there (inconsistent, not recoverable) */
	if (owner <= 0 || owner >= (1 << 30) || owner == n->tid)
		return 0;
	*ret_ns = t;
	return owner;
}

static void scan(int64_t now, unsigned scan_no)
{
	pid_t me = cur_pid();
	int nn = 0, nh = 0, inuse = 0, nwait = 0;
	/* 1. snapshots of this process's waiting records, and their held rwlocks read while they
	 * wait (only a waiting thread can be in a cycle; its list cannot change while it waits) */
	for (int i = 0; i < PRIV_RECS; i++) {
		struct rec *r = &priv[i];
		if (atomic_load_explicit(&r->state, memory_order_relaxed) == 0)
			continue;
		inuse++;
		if (nn >= nodes_cap || !snap(r, &nodes[nn]))
			continue;
		struct node *n = &nodes[nn];
		n->pid = me;
		n->own = 1;
		nn++;
		nwait++;
		int first = nh;
		for (int k = 0; k < RW_MAX && nh < holds_cap; k++) {
			uintptr_t l = atomic_load_explicit(&r->rw[k], memory_order_acquire);
			if (!l)
				continue;
			holds[nh].lock = l;
			holds[nh].tid = n->tid;
			holds[nh].write =
			        (int)atomic_load_explicit(&r->rw_write[k], memory_order_relaxed);
			holds[nh].wseq = n->wseq;
			nh++;
		}
		if (atomic_load(&r->wseq) != n->wseq)
			nh = first; /* the wait ended meanwhile: the list proves nothing */
	}
	/* 2. other processes' waits in the shared registry */
	struct shm_hdr *h = atomic_load(&shm);
	if (h) {
		struct rec *tab = (struct rec *)(h + 1);
		if (scan_no % 16 == 0)
			reclaim_dead(tab, (int)h->slots, me, 0);
		for (int i = 0; i < (int)h->slots && nn < nodes_cap; i++) {
			struct rec *r = &tab[i];
			pid_t p = atomic_load_explicit(&r->state, memory_order_relaxed);
			if (p <= 0 || p == me)
				continue;
			if (snap(r, &nodes[nn])) {
				nodes[nn].pid = p;
				nodes[nn].own = 0;
				nn++;
			}
		}
	}
	weft_gauge_set(m_waits, nwait);
	weft_gauge_set(m_records, inuse);

	memset(tidmap, 0, sizeof(int) * (size_t)tidmap_cap);
	for (int i = 0; i < nn; i++)
		tid_insert(nodes[i].tid, i);

	/* 3. long waits and condition waits, this process's only */
	for (int i = 0; i < nn; i++) {
		struct node *n = &nodes[i];
		if (!n->own)
			continue;
		int cond = n->kind == WEFT_WATCH_LOCK_COND;
		int64_t lim = cond ? opts.cond_wait_ns : opts.long_wait_ns;
		if (lim < 0 || now - n->start <= lim)
			continue;
		if (atomic_load_explicit(&n->rec->long_seq, memory_order_relaxed) == n->wseq)
			continue;
		atomic_store_explicit(&n->rec->long_seq, n->wseq, memory_order_relaxed);
		report_long(n, cond ? WEFT_WATCH_COND_WAIT : WEFT_WATCH_LONG_WAIT, now);
	}

	/* 4. condition waiters named as owners: probed for a re-lock (head comment) */
	int probes = 0;
	for (int i = 0; i < nn; i++) {
		int to = nodes[i].owner ? tid_lookup(nodes[i].owner) : -1;
		if (to >= 0 && to != i && nodes[to].own && nodes[to].kind == WEFT_WATCH_LOCK_COND)
			nodes[to].probe = 1;
	}
	for (int i = 0; i < nn; i++) {
		struct node *n = &nodes[i];
		if (n->kind != WEFT_WATCH_LOCK_COND)
			continue;
		int64_t t = 0;
		pid_t o = 0;
		if (n->probe && probes < RELOCK_PROBES) {
			probes++;
			o = relock_owner(n, &t);
		}
		n->owner = o; /* a condition wait's only owner edge is a proven re-lock */
		n->owner_ns = t;
	}

	/* 5. the graph, proven edges only (head comment) */
	for (int i = 0; i < nn; i++) {
		struct node *n = &nodes[i];
		if (n->kind == WEFT_WATCH_LOCK_SEM ||
		    (n->kind == WEFT_WATCH_LOCK_COND && !n->owner))
			continue;
		if (n->owner) {
			int to = tid_lookup(n->owner);
			/* a thread waiting for a mutex it owns reports itself after its first
			 * slice; an owner seen before it began to wait proves nothing */
			if (to >= 0 && to != i && n->owner_ns >= nodes[to].start)
				add_edge(n, to);
		}
		if (!n->own ||
		    (n->kind != WEFT_WATCH_LOCK_RDLOCK && n->kind != WEFT_WATCH_LOCK_WRLOCK))
			continue;
		for (int k = 0; k < nh; k++) {
			if (holds[k].lock != n->lock)
				continue;
			if (n->kind == WEFT_WATCH_LOCK_RDLOCK && !holds[k].write)
				continue;
			int to = tid_lookup(holds[k].tid);
			if (to < 0 || nodes[to].wseq != holds[k].wseq)
				continue;
			if (to == i)
				n->self_hold = 1, add_edge(n, to);
			else
				add_edge(n, to);
		}
	}

	/* 6. cycles (each scan's keys are kept for the stacks' grace) */
	ncur = 0;
	find_cycles(nn, now);
	memcpy(prev_keys, cur_keys, sizeof(uint64_t) * (size_t)ncur);
	memcpy(prev_seen, cur_seen, sizeof(int) * (size_t)ncur);
	nprev = ncur;
}

/* Set by the watchdog when it runs: weft_watch_start returns only then, so that the thread's
 * start-up (weft__thread_create's argument block, freed by the new thread) is over before the
 * caller can fork: a child forked in between would inherit the block with nobody to free it. */
static _Atomic int dog_running;

static void *dog_main(void *arg)
{
	(void)arg;
	weft__watch_internal = 1;
	atomic_store(&dog_running, 1);
	int64_t next = weft__watch_now() + opts.scan_ns;
	unsigned scan_no = 0;
	while (!atomic_load(&dog_stop)) {
		uint32_t w = atomic_load(&wake_word);
		drain();
		int64_t now = weft__watch_now();
		if (now >= next) {
			scan(now, scan_no++);
			drain();
			next += opts.scan_ns;
			if (next <= now)
				next = now + opts.scan_ns;
			continue;
		}
		int64_t d = next - now;
		struct timespec ts = {(time_t)(d / 1000000000), (long)(d % 1000000000)};
		syscall(SYS_futex, &wake_word, FUTEX_WAIT_PRIVATE, w, &ts, NULL, 0);
	}
	drain();
	return NULL;
}

/* In a fork child, at its first recorded wait or emit: a watchdog of its own. */
static void restart_dog(void)
{
	int one = 1;
	if (!atomic_compare_exchange_strong(&need_restart, &one, 0))
		return;
	int e = errno;
	int internal = weft__watch_internal;
	weft__watch_internal = 1;
	atomic_store(&dog_stop, 0);
	if (weft__thread_create(&dog, "weft-watch", dog_main, NULL) == 0)
		dog_valid = 1;
	weft__watch_internal = internal;
	errno = e;
}

/* ------------------------------------------------------------------------------------------------
 * Start and stop.
 */
static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static size_t shm_size(uint32_t slots)
{
	return sizeof(struct shm_hdr) + (size_t)slots * sizeof(struct rec);
}

int weft_watch_shm_create(int slots, int *ret_fd)
{
	if (!ret_fd || slots < 0 || slots > SHM_MAX_SLOTS)
		return -EINVAL;
	if (slots == 0)
		slots = SHM_DEFAULT_SLOTS;
	int e = errno;
	if (weft__fault_hit(WEFT__FAULT_OPEN)) {
		errno = e;
		return -EMFILE;
	}
	int fd = (int)syscall(SYS_memfd_create, "weft-watch", 0u);
	int r = 0;
	if (fd < 0) {
		r = weft__neg_errno();
		goto out;
	}
	size_t len = shm_size((uint32_t)slots);
	if (ftruncate(fd, (off_t)len) != 0) {
		r = weft__neg_errno();
		goto fail;
	}
	struct shm_hdr *h = mmap(NULL, sizeof(*h), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED) {
		r = weft__neg_errno();
		goto fail;
	}
	h->rec_size = sizeof(struct rec);
	h->slots = (uint32_t)slots;
	h->magic = SHM_MAGIC;
	munmap(h, sizeof(*h));
	*ret_fd = fd;
	goto out;
fail:
	close(fd);
out:
	errno = e;
	return r;
}

static int map_shared(int fd, struct shm_hdr **ret, size_t *ret_len)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return weft__neg_errno();
	if ((size_t)st.st_size < sizeof(struct shm_hdr))
		return -EINVAL;
	struct shm_hdr *h =
	        mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (h == MAP_FAILED)
		return weft__neg_errno();
	if (h->magic != SHM_MAGIC || h->rec_size != sizeof(struct rec) || h->slots == 0 ||
	    h->slots > SHM_MAX_SLOTS || shm_size(h->slots) > (size_t)st.st_size) {
		munmap(h, (size_t)st.st_size);
		return -EINVAL;
	}
	*ret = h;
	*ret_len = (size_t)st.st_size;
	return 0;
}

static void unmap_shared(void)
{
	struct shm_hdr *h = atomic_exchange(&shm, NULL);
	if (!h)
		return;
	atomic_fetch_add(&shm_gen, 1);
	pid_t me = cur_pid();
	struct rec *tab = (struct rec *)(h + 1);
	for (uint32_t i = 0; i < h->slots; i++) {
		int32_t p = me;
		atomic_compare_exchange_strong(&tab[i].state, &p, 0);
	}
	/* a thread inside a process-shared wait still writes its record: keep the mapping then */
	if (atomic_load(&shm_users) == 0)
		munmap(h, shm_len);
}

static void free_scratch(void)
{
	free(nodes);
	free(holds);
	free(tidmap);
	free(dfs_stack);
	free(dfs_edge);
	free(dfs_color);
	free(dfs_pos);
	nodes = NULL;
	holds = NULL;
	tidmap = NULL;
	dfs_stack = dfs_edge = dfs_color = dfs_pos = NULL;
}

static void remove_metrics(void)
{
	weft_metrics *m = opts.metrics;
	for (int i = 0; i < WEFT_WATCH_EVENT_COUNT; i++) {
		if (m && m_reports[i])
			weft_metrics_remove(m, m_reports[i]);
		m_reports[i] = NULL;
	}
	if (m && m_waits)
		weft_metrics_remove(m, m_waits);
	if (m && m_records)
		weft_metrics_remove(m, m_records);
	if (m && m_dropped)
		weft_metrics_remove(m, m_dropped);
	if (m && m_unrecorded)
		weft_metrics_remove(m, m_unrecorded);
	m_waits = m_records = NULL;
	m_dropped = m_unrecorded = NULL;
}

static int add_metrics(weft_metrics *m)
{
	int r;
	for (int i = 1; i < WEFT_WATCH_EVENT_COUNT; i++) {
		const char *labels[] = {"event", event_names[i], NULL};
		r = weft_metrics_counter(m, "weft_watch_reports_total",
		                         "Reports of the lock monitor, by event", labels,
		                         &m_reports[i]);
		if (r < 0)
			return r;
	}
	r = weft_metrics_gauge(m, "weft_watch_waits", "Lock waits recorded now", NULL, &m_waits);
	if (r < 0)
		return r;
	r = weft_metrics_gauge(m, "weft_watch_records", "Thread records in use", NULL, &m_records);
	if (r < 0)
		return r;
	r = weft_metrics_counter(m, "weft_watch_dropped_total", "Reports lost to a full queue",
	                         NULL, &m_dropped);
	if (r < 0)
		return r;
	return weft_metrics_counter(m, "weft_watch_unrecorded_total",
	                            "Waits not recorded or profiled: a table was full", NULL,
	                            &m_unrecorded);
}

static int alloc_scratch(int total)
{
	nodes_cap = total;
	holds_cap = PRIV_RECS * RW_MAX;
	tidmap_cap = 16;
	while (tidmap_cap < 2 * total)
		tidmap_cap *= 2;
	nodes = weft__calloc((size_t)total, sizeof(*nodes));
	holds = nodes ? weft__calloc((size_t)holds_cap, sizeof(*holds)) : NULL;
	tidmap = holds ? weft__calloc((size_t)tidmap_cap, sizeof(int)) : NULL;
	dfs_stack = tidmap ? weft__calloc((size_t)total, sizeof(int)) : NULL;
	dfs_edge = dfs_stack ? weft__calloc((size_t)total, sizeof(int)) : NULL;
	dfs_color = dfs_edge ? weft__calloc((size_t)total, sizeof(int)) : NULL;
	dfs_pos = dfs_color ? weft__calloc((size_t)total, sizeof(int)) : NULL;
	if (!dfs_pos) {
		free_scratch();
		return -ENOMEM;
	}
	return 0;
}

int weft_watch_start(const weft_watch_options *o)
{
	static const weft_watch_options defaults;
	if (!o)
		o = &defaults;
	if (o->scan_ns < 0 || (o->scan_ns && (o->scan_ns < 1000000 || o->scan_ns > 60000000000)) ||
	    o->long_wait_ns < -1 || o->cond_wait_ns < -1 || o->profile_sample < 0 ||
	    o->on_deadlock < WEFT_WATCH_ACTION_REPORT || o->on_deadlock > WEFT_WATCH_ACTION_EXIT ||
	    o->exit_code < 0 || o->exit_code > 255 || o->json_fd < 0 || o->text_fd < 0 ||
	    o->shm_fd < 0)
		return -EINVAL;
	int expect = ST_STOPPED;
	if (!atomic_compare_exchange_strong(&state, &expect, ST_BUSY))
		return -EALREADY;
	int e = errno;
	int r = 0;
	pthread_once(&once, once_init);
	if (once_err) {
		r = once_err;
		goto fail_state;
	}
	weft_backtrace_init();
	cur_pid();
	struct timespec res;
	if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && res.tv_sec == 0)
		__atomic_store_n(&coarse_res, (int64_t)res.tv_nsec, __ATOMIC_RELAXED);
	/* the image's first start: no thread of this image has claimed a record yet */
	int first_start = !atomic_load_explicit(&image, memory_order_relaxed);
	if (first_start)
		atomic_store_explicit(&image, (uint64_t)weft__watch_now(), memory_order_relaxed);
	if (!priv) {
		struct rec *t = map_anon(sizeof(struct rec) * PRIV_RECS);
		if (!t) {
			r = -ENOMEM;
			goto fail_state;
		}
		__atomic_store_n(&priv, t, __ATOMIC_RELEASE);
	}
	if (!prof) {
		struct prof_stack *ps = map_anon(sizeof(struct prof_stack) * PROF_CAP);
		struct prof *p = ps ? map_anon(sizeof(struct prof) * PROF_CAP) : NULL;
		if (!p) {
			if (ps)
				munmap(ps, sizeof(struct prof_stack) * PROF_CAP);
			r = -ENOMEM;
			goto fail_state;
		}
		prof_stacks = ps;
		__atomic_store_n(&prof, p, __ATOMIC_RELEASE);
	}
	r = out_open(&out_json, o->json_fd);
	if (r == 0)
		r = out_open(&out_text, o->text_fd);
	if (r < 0)
		goto fail_state;
	opts = *o;
	if (!opts.scan_ns)
		opts.scan_ns = 100000000;
	if (!opts.long_wait_ns)
		opts.long_wait_ns = 10000000000;
	if (!opts.cond_wait_ns)
		opts.cond_wait_ns = 60000000000;
	__atomic_store_n(&slice_ns, WEFT__MAX(SLICE_MIN, WEFT__MIN(SLICE_MAX, opts.scan_ns / 2)),
	                 __ATOMIC_RELAXED);

	struct shm_hdr *h = NULL;
	size_t hlen = 0;
	if (opts.shm_fd > 0) {
		r = map_shared(opts.shm_fd, &h, &hlen);
		if (r < 0)
			goto fail_state;
		/* what an earlier image of this process left (claims cut short by exec) */
		if (first_start)
			reclaim_dead((struct rec *)(h + 1), (int)h->slots, cur_pid(), 1);
	}
	r = alloc_scratch(PRIV_RECS + (h ? (int)h->slots : 0));
	if (r < 0)
		goto fail_shm;
	if (opts.metrics) {
		r = add_metrics(opts.metrics);
		if (r < 0)
			goto fail_metrics;
	}
	if (opts.json_fd > 0 || opts.text_fd > 0) {
		r = weft_symbolizer_create(&sym);
		if (r < 0)
			goto fail_metrics;
	}
	if (opts.predict) {
		r = weft__predict_start();
		if (r < 0)
			goto fail_sym;
	}
	/* reset the profile: a new session (quick sums held back from the last one are dropped) */
	atomic_fetch_add_explicit(&quick_gen, 1, memory_order_relaxed);
	for (int i = 0; i < PROF_CAP; i++) {
		struct prof *p = &prof[i];
		atomic_store_explicit(&p->site, 0, memory_order_relaxed);
		atomic_store_explicit(&p->lock, 0, memory_order_relaxed);
		atomic_store_explicit(&p->contended, 0, memory_order_relaxed);
		atomic_store_explicit(&p->wait_total, 0, memory_order_relaxed);
		atomic_store_explicit(&p->wait_max, 0, memory_order_relaxed);
		atomic_store_explicit(&p->hold_samples, 0, memory_order_relaxed);
		atomic_store_explicit(&p->hold_total, 0, memory_order_relaxed);
		atomic_store_explicit(&p->hold_max, 0, memory_order_relaxed);
		atomic_store_explicit(&prof_stacks[i].stack_state, 0, memory_order_relaxed);
	}
	nprev = ncur = 0;
	m_dropped_seen = atomic_load(&dropped);
	m_unrecorded_seen = atomic_load(&unrecorded) + atomic_load(&prof_full);
	if (h) {
		shm_len = hlen;
		atomic_fetch_add(&shm_gen, 1);
		atomic_store(&shm, h);
		h = NULL;
	}
	atomic_store(&dog_stop, 0);
	atomic_store(&need_restart, 0);
	atomic_store(&dog_running, 0);
	r = weft__thread_create(&dog, "weft-watch", dog_main, NULL);
	if (r < 0)
		goto fail_predict;
	dog_valid = 1;
	while (!atomic_load(&dog_running)) /* once per start: see dog_running */
		sched_yield();
	__atomic_store_n(&weft__watch_profile_sample, opts.profile_sample, __ATOMIC_RELAXED);
	__atomic_store_n(&weft__watch_on, 1, __ATOMIC_SEQ_CST);
	if (opts.predict)
		__atomic_store_n(&weft__watch_predict_on, 1, __ATOMIC_SEQ_CST);
	atomic_store(&state, ST_RUNNING);
	errno = e;
	return 0;

fail_predict:
	unmap_shared();
	if (opts.predict)
		weft__predict_stop();
fail_sym:
	weft_symbolizer_destroy(sym);
	sym = NULL;
fail_metrics:
	remove_metrics();
	free_scratch();
fail_shm:
	if (h)
		munmap(h, hlen);
fail_state:
	atomic_store(&state, ST_STOPPED);
	errno = e;
	return r;
}

void weft_watch_stop(void)
{
	int expect = ST_RUNNING;
	if (!atomic_compare_exchange_strong(&state, &expect, ST_BUSY))
		return;
	if (dog_valid && pthread_equal(pthread_self(), dog)) {
		atomic_store(&state, ST_RUNNING); /* from a report callback: cannot join itself */
		return;
	}
	int e = errno;
	quick_flush();
	__atomic_store_n(&weft__watch_predict_on, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&weft__watch_on, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&weft__watch_profile_sample, 0, __ATOMIC_RELAXED);
	atomic_store(&need_restart, 0);
	if (dog_valid) {
		atomic_store(&dog_stop, 1);
		wake_dog();
		pthread_join(dog, NULL);
		dog_valid = 0;
	} else {
		drain();
	}
	if (opts.predict)
		weft__predict_stop();
	unmap_shared();
	weft_symbolizer_destroy(sym);
	sym = NULL;
	remove_metrics();
	free_scratch();
	memset(&opts, 0, sizeof(opts));
	memset(&out_json, 0, sizeof(out_json));
	memset(&out_text, 0, sizeof(out_text));
	atomic_store(&state, ST_STOPPED);
	errno = e;
}

int weft_watch_get_counts(weft_watch_counts *ret)
{
	if (!ret)
		return -EINVAL;
	for (int i = 0; i < WEFT_WATCH_EVENT_COUNT; i++)
		ret->by_event[i] = atomic_load_explicit(&counts[i], memory_order_relaxed);
	ret->dropped = atomic_load_explicit(&dropped, memory_order_relaxed);
	ret->lost_output = atomic_load_explicit(&lost_output, memory_order_relaxed);
	return 0;
}

/* ------------------------------------------------------------------------------------------------
 * The profile, read.
 */
static int64_t sort_key(const weft_watch_site *s, weft_watch_sort sort)
{
	switch (sort) {
	case WEFT_WATCH_SORT_CONTENDED: return (int64_t)s->contended;
	case WEFT_WATCH_SORT_HOLD: return s->hold_ns_total;
	default: return s->wait_ns_total;
	}
}

int weft_watch_profile(weft_watch_site *out, int max, weft_watch_sort sort)
{
	if (max < 0 || (!out && max > 0) || sort < WEFT_WATCH_SORT_WAIT ||
	    sort > WEFT_WATCH_SORT_HOLD)
		return -EINVAL;
	struct prof *p = __atomic_load_n(&prof, __ATOMIC_ACQUIRE);
	if (!p || max == 0)
		return 0;
	quick_flush(); /* the caller's own */
	int n = 0;
	for (int i = 0; i < PROF_CAP; i++) {
		struct prof *e = &p[i];
		uintptr_t site = atomic_load_explicit(&e->site, memory_order_acquire);
		if (!site)
			continue;
		weft_watch_site s = {
		        .site = (void *)site,
		        .lock = (const void *)atomic_load_explicit(&e->lock, memory_order_relaxed),
		        .kind = (weft_watch_lock_kind)atomic_load_explicit(&e->kind,
		                                                           memory_order_relaxed),
		        .contended = atomic_load_explicit(&e->contended, memory_order_relaxed),
		        .wait_ns_total = atomic_load_explicit(&e->wait_total, memory_order_relaxed),
		        .wait_ns_max = atomic_load_explicit(&e->wait_max, memory_order_relaxed),
		        .hold_samples =
		                atomic_load_explicit(&e->hold_samples, memory_order_relaxed),
		        .hold_ns_total = atomic_load_explicit(&e->hold_total, memory_order_relaxed),
		        .hold_ns_max = atomic_load_explicit(&e->hold_max, memory_order_relaxed),
		};
		if (!s.contended && !s.hold_samples && !s.wait_ns_total)
			continue;
		int64_t k = sort_key(&s, sort);
		if (n == max && k <= sort_key(&out[n - 1], sort))
			continue;
		int at = n < max ? n++ : n - 1;
		while (at > 0 && sort_key(&out[at - 1], sort) < k) {
			out[at] = out[at - 1];
			at--;
		}
		out[at] = s;
	}
	return n;
}

int weft_watch_profile_text(int top, char **ret_text)
{
	if (top < 0 || !ret_text)
		return -EINVAL;
	if (top == 0)
		top = 20;
	if (top > PROF_CAP)
		top = PROF_CAP;
	int e = errno;
	weft_watch_site *s = weft__calloc((size_t)top, sizeof(*s));
	if (!s) {
		errno = e;
		return -ENOMEM;
	}
	int n = weft_watch_profile(s, top, WEFT_WATCH_SORT_WAIT);
	weft_symbolizer *sy = NULL;
	int r = n > 0 ? weft_symbolizer_create(&sy) : 0;
	if (r < 0) {
		free(s);
		errno = e;
		return r;
	}
	weft__buf b = WEFT__BUF_INIT;
	weft__buf_printf(&b, "%-8s %10s %12s %12s %10s %12s %12s  %s\n", "kind", "contended",
	                 "wait_ms", "wait_max_ms", "holds", "hold_avg_us", "hold_max_us", "site");
	for (int i = 0; i < n; i++) {
		double avg = s[i].hold_samples
		                     ? (double)s[i].hold_ns_total / (double)s[i].hold_samples
		                     : 0;
		weft__buf_printf(&b,
		                 "%-8s %10" PRIu64 " %12.3f %12.3f %10" PRIu64 " %12.3f %12.3f  ",
		                 weft_watch_lock_kind_name(s[i].kind), s[i].contended,
		                 (double)s[i].wait_ns_total / 1e6, (double)s[i].wait_ns_max / 1e6,
		                 s[i].hold_samples, avg / 1e3, (double)s[i].hold_ns_max / 1e3);
		text_frame(&b, sy, s[i].site);
		weft__buf_putc(&b, '\n');
	}
	weft_symbolizer_destroy(sy);
	free(s);
	r = weft__buf_finish(&b, ret_text, NULL);
	errno = e;
	return r;
}

/* ------------------------------------------------------------------------------------------------
 * Tests: the record protocol under fire (src/internal/watch.h).
 */
struct torn {
	struct rec *r;
	_Atomic int stop;
};

/* Every field of wait `seq` is a function of it; the refresh (step 3) gives owner + 1 and
 * owner_ns + 1. */
static struct wfields torn_fields(uint64_t seq)
{
	return (struct wfields){.lock = (const void *)(uintptr_t)(seq * 3),
	                        .kind = (uint32_t)(seq * 5),
	                        .site = (void *)(uintptr_t)(seq * 7),
	                        .start = (int64_t)(seq * 11),
	                        .deadline = (int64_t)(seq * 13),
	                        .aux = (const void *)(uintptr_t)(seq * 17),
	                        .owner = (pid_t)(seq & 0xffffff) * 2,
	                        .owner_ns = (int64_t)(seq * 19)};
}

static void *torn_writer(void *p)
{
	struct torn *t = p;
	for (uint64_t seq = 1; !atomic_load_explicit(&t->stop, memory_order_relaxed); seq++) {
		struct wfields f = torn_fields(seq);
		rec_fields(t->r, &f);
		atomic_store_explicit(&t->r->wseq, seq, memory_order_release);
		if (seq % 2)
			rec_owner(t->r, f.owner + 1, f.owner_ns + 1);
		for (unsigned i = 0; i < (unsigned)(seq % 8); i++) /* published for a moment */
			weft__cpu_relax();
		atomic_store(&t->r->wseq, 0);
	}
	return NULL;
}

int weft__watch_test_torn(uint64_t want, int64_t max_ns, uint64_t *ret_torn, uint64_t *ret_seen)
{
	if (!want || max_ns <= 0 || !ret_torn || !ret_seen)
		return -EINVAL;
	struct torn t = {0};
	t.r = weft__calloc(1, sizeof(*t.r));
	if (!t.r)
		return -ENOMEM;
	pthread_t th;
	int r = weft__thread_create(&th, "weft-torn", torn_writer, &t);
	if (r < 0) {
		free(t.r);
		return r;
	}
	uint64_t torn = 0, seen = 0;
	int64_t end = weft__watch_now() + max_ns;
	for (unsigned k = 0; seen < want; k++) {
		if (k % 1024 == 0 && weft__watch_now() > end)
			break;
		struct node n;
		if (!snap(t.r, &n))
			continue;
		seen++;
		struct wfields f = torn_fields(n.wseq);
		int owner_ok = (n.owner == f.owner && n.owner_ns == f.owner_ns) ||
		               (n.owner == f.owner + 1 && n.owner_ns <= f.owner_ns + 1 &&
		                n.owner_ns >= f.owner_ns);
		if (n.lock != (uintptr_t)f.lock || n.kind != f.kind ||
		    n.site != (uintptr_t)f.site || n.start != f.start || n.deadline != f.deadline ||
		    n.aux != (uintptr_t)f.aux || !owner_ok)
			torn++;
	}
	atomic_store(&t.stop, 1);
	pthread_join(th, NULL);
	free(t.r);
	*ret_torn = torn;
	*ret_seen = seen;
	return 0;
}

int weft__watch_test_shm_claimed(pid_t pid)
{
	struct shm_hdr *h = atomic_load(&shm);
	if (!h)
		return -ENOENT;
	struct rec *tab = (struct rec *)(h + 1);
	int n = 0;
	for (uint32_t i = 0; i < h->slots; i++)
		n += atomic_load(&tab[i].state) == pid;
	return n;
}
