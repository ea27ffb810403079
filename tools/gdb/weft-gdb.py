"""weft-gdb.py: gdb commands for weft's fibers, on a live process or a core file.

Usage (gdb 12 or later, with Python; weft built with debug info, as its default
debugoptimized build is):

    (gdb) source tools/gdb/weft-gdb.py
    (gdb) weft fibers            every fiber of every scheduler (also: info weft-fibers)
    (gdb) weft bt ID|NAME [full] the backtrace of a parked fiber (waiting, or runnable and not
                                 running), by id or by name; "full" adds the locals
    (gdb) weft bt all [full]     the backtrace of every parked fiber

    gdb -p PID -ex 'source tools/gdb/weft-gdb.py' -ex 'weft fibers'      an attached process
    gdb PROGRAM CORE -ex 'source tools/gdb/weft-gdb.py' -ex 'weft bt 12' a core file
    gdb -batch -nx -p PID -ex 'source .../weft-gdb.py' -ex 'weft fibers' -ex 'weft bt all'

`weft fibers` prints one row per fiber: its id, its name (the function's symbol when it has
none), its state (runnable, running, waiting, dead), its wait reason, its scheduler's name, the
worker it last ran on ("-": never ran), whether it is pinned, and the fiber's address (for
`p *(weft__fiber *)ADDR`).

How it reads the process. The process's schedulers are on the list headed by the static `scheds`
of weft's src/fiber/dump.c (found with gdb.lookup_static_symbols, and checked to be that file's
`weft_sched *`); each scheduler's root scope keeps its fibers in `shards[i].head` lists linked by
`scope_next`, and its child scopes under `child_head`/`sib_next`. Every field is read through the
debug info, so the script follows the structures of the weft it finds. It only reads memory: a
list that a stopped thread was changing at the instant the process stopped may be cut short or
show a fiber twice (each list is walked at most once per fiber, so a damaged list cannot loop).

How `weft bt` works. A parked fiber's registers are in the switch frame at its saved stack
pointer f->sp (src/internal/switch.h). x86-64, 8 words from sp: FPU slot, r15, r14, r13, r12,
rbx, rbp, resume address; the fiber resumes with rsp = sp + 64. aarch64 (src/fiber/switch-aarch64.S,
176 bytes): FPCR, unused, d8-d15, x19-x28, x29 (frame pointer), x30 (resume address); sp + 176.
A core file's registers cannot be written ("You can't do that without a process to debug"), so
instead of setting $rsp/$rip the script registers a Python frame unwinder that, for one `bt`,
makes the fiber's saved context the caller of the selected thread's innermost frame; gdb then
unwinds the fiber's stack with its usual DWARF unwinder, and the script prints the frames from
the fiber's resume point on, renumbered from #0. Nothing is written to the process, so there is
nothing to restore; the unwinder is disarmed (try/finally) and gdb's frame cache flushed after
each backtrace. The frame ids keep gdb's "previous frame inner to this frame" check quiet across
the change of stacks.

A running fiber's registers are live in a worker thread: `weft bt` names that worker and its gdb
thread (the thread whose stack pointer is inside the fiber's stack, else the thread whose
pthread_t is the worker's), and `thread N` then `bt` shows it. A fiber whose state says parked
while it is still on a CPU (on_cpu: stopped in the middle of a switch) gets its saved context
shown with a warning that it may be stale. A runnable fiber that never ran has no context yet.

Errors are one line, prefixed "weft:": no process or core, no weft in the process, weft without
debug info, no scheduler, no such fiber, an unsupported architecture.
"""

import re

import gdb
import gdb.unwinder

_PREFIX = "weft: "


def _error(msg):
    raise gdb.GdbError(_PREFIX + msg)


# ---- names of the enums (from the debug info when it has them, else weft's table) -------------

_STATE_NAMES = ["runnable", "running", "waiting", "dead"]
_REASON_NAMES = ["none", "sleep", "chan-send", "chan-recv", "select", "mutex", "cond", "sem",
                 "waitgroup", "join", "io", "blocking"]
_RUNNABLE, _RUNNING, _WAITING, _DEAD = 0, 1, 2, 3


def _enum_names(type_name, prefix, fallback):
    """{value: "chan-recv"} from enum weft_wait_reason's WEFT_WAIT_CHAN_RECV, as
    weft_wait_reason_name spells it."""
    names = dict(enumerate(fallback))
    try:
        t = gdb.lookup_type(type_name)
    except gdb.error:
        return names
    for field in t.fields():
        if field.name.startswith(prefix) and not field.name.endswith("_"):
            names[field.enumval] = field.name[len(prefix):].lower().replace("_", "-")
    return names


def _name_of(names, v):
    return names.get(v, "unknown(%d)" % v)


# ---- finding the schedulers ----------------------------------------------------------------

def _check_target():
    if not hasattr(gdb, "lookup_static_symbols") or not hasattr(gdb.Inferior, "architecture"):
        _error("this script needs gdb 12 or later")
    thread = gdb.selected_thread()
    if thread is None:
        _error("no process or core file: run the program, attach to it or load a core first")
    if thread.is_running():
        _error("the selected thread is running: interrupt the process first")


def _is_weft_list(sym):
    t = sym.type
    if t is None or t.code != gdb.TYPE_CODE_PTR:
        return False
    target = t.target().strip_typedefs()
    if target.code != gdb.TYPE_CODE_STRUCT or target.tag != "weft_sched":
        return False
    return sym.symtab is not None and sym.symtab.filename.endswith("dump.c")


def _sched_lists():
    """The value of every weft `scheds` variable (one per copy of weft in the process)."""
    _check_target()
    found, seen = [], set()
    for sym in gdb.lookup_static_symbols("scheds"):
        if not _is_weft_list(sym):
            continue
        v = sym.value()
        addr = int(v.address) if v.address is not None else id(sym)
        if addr not in seen:
            seen.add(addr)
            found.append(v)
    if found:
        return found
    section = _section_of("weft_sched_create")
    if section is None:
        _error("no weft in this process (no symbol weft_sched_create)")
    if section.startswith(".plt"):
        _error("weft's shared library is not loaded in gdb, only the program's PLT entry for "
               "weft_sched_create: see `info sharedlibrary` (set sysroot, solib-search-path)")
    _error("weft is in this process but without debug info (no static `scheds` of "
           "src/fiber/dump.c): rebuild weft with debug info (-g)")


def _section_of(symbol):
    """The ELF section of the code gdb knows for a symbol (".text", ".plt"...), or None."""
    try:
        v = gdb.parse_and_eval(symbol)
        addr = int(v.address) if v.address is not None else int(v)
        out = gdb.execute("info symbol 0x%x" % addr, to_string=True)
    except gdb.error:
        return None
    m = re.search(r" in section (\S+)", out)
    return m.group(1) if m else "?"


class _Fiber:
    """One fiber's fields, read in one go."""

    def __init__(self, ptr, sched, currents):
        v = ptr.dereference()
        v.fetch_lazy()
        self.addr = int(ptr)
        self.id = int(v["id"])
        self.name = v["name"].string(errors="replace")
        self.fn = int(v["fn"])
        self.state = int(v["state"])
        self.reason = int(v["wait_reason"])
        self.worker = int(v["worker_index"])
        self.pinned = bool(v["pinned"])
        self.on_cpu = int(v["on_cpu"])
        self.sp = int(v["sp"])
        self.stack_lo = int(v["stack"]["lo"])
        self.stack_hi = int(v["stack"]["hi"])
        self.u64 = v["id"].type  # uint64_t, whatever gdb's current language calls it
        self.sched = sched
        self.current_on = currents.get(self.addr)  # the worker running it now, or None

    def label(self):
        return self.name if self.name else _symbol(self.fn)


def _symbol(pc):
    """The function at pc: from the debug info, else the ELF symbol table, else "fiber"."""
    try:
        block = gdb.block_for_pc(pc)
        while block is not None and block.function is None:
            block = block.superblock
        if block is not None:
            return block.function.print_name
    except (gdb.error, RuntimeError):
        pass
    try:
        out = gdb.execute("info symbol 0x%x" % pc, to_string=True)
        m = re.match(r"(\S+)( \+ \d+)? in section", out)
        if m:
            return m.group(1)
    except gdb.error:
        pass
    return "fiber"


class _Sched:
    """One scheduler's name and workers."""

    def __init__(self, ptr):
        self.name = ptr["name"].string(errors="replace")
        self.nworkers = int(ptr["nworkers"])
        self.workers = ptr["workers"]

    def worker_thread(self, index):
        """The worker's pthread_t, or None."""
        if not 0 <= index < self.nworkers:
            return None
        try:
            return int(self.workers[index]["thread"])
        except gdb.MemoryError:
            return None

    def currents(self):
        """{fiber address: worker index} for the fibers the workers run now."""
        out = {}
        for i in range(self.nworkers):
            try:
                cur = int(self.workers[i]["current"])
            except gdb.MemoryError:
                continue
            if cur:
                out[cur] = i
        return out


def _list_fibers():
    """[(_Sched, [_Fiber])] for every scheduler; notes on unreadable lists go to the warnings."""
    result, warnings = [], []
    for head in _sched_lists():
        seen_scheds = set()
        s = head
        while int(s) != 0 and int(s) not in seen_scheds:
            seen_scheds.add(int(s))
            try:
                sched = _Sched(s)
                currents = sched.currents()
            except gdb.MemoryError as e:
                warnings.append("scheduler at 0x%x unreadable: %s" % (int(s), e))
                break
            fibers = []
            _walk_scopes(sched, s["root"], currents, fibers, warnings)
            fibers.sort(key=lambda f: f.id)
            result.append((sched, fibers))
            try:
                s = s["all_next"]
            except gdb.MemoryError:
                break
    return result, warnings


def _walk_scopes(sched, root, currents, fibers, warnings):
    seen_fibers, seen_scopes = set(), set()
    stack = [root]
    while stack:
        scope = stack.pop()
        try:
            nshards = int(scope["nshards"])
            shards = scope["shards"]
            for i in range(nshards):
                f = shards[i]["head"]
                while int(f) != 0 and int(f) not in seen_fibers:
                    seen_fibers.add(int(f))
                    fibers.append(_Fiber(f, sched, currents))
                    f = f["scope_next"]
            children = []
            c = scope["child_head"]
            while int(c) != 0 and int(c) not in seen_scopes:
                seen_scopes.add(int(c))
                children.append(c.dereference())
                c = c["sib_next"]
            stack.extend(reversed(children))
        except gdb.MemoryError as e:
            warnings.append("a scope of sched \"%s\" is unreadable (%s): its list is cut short"
                            % (sched.name, e))


def _all_fibers():
    scheds, warnings = _list_fibers()
    return [f for _, fs in scheds for f in fs], scheds, warnings


# ---- weft fibers ---------------------------------------------------------------------------

def _print_fibers():
    scheds, warnings = _list_fibers()
    states = _enum_names("enum weft_fiber_state", "WEFT_FIBER_", _STATE_NAMES)
    reasons = _enum_names("enum weft_wait_reason", "WEFT_WAIT_", _REASON_NAMES)
    rows = []
    for sched, fibers in scheds:
        for f in fibers:
            waiting = f.state == _WAITING  # as weft_fiber_dump: a woken fiber's reason is stale
            rows.append([str(f.id), '"%s"' % f.label(), _name_of(states, f.state),
                         _name_of(reasons, f.reason) if waiting else "-",
                         '"%s"' % f.sched.name, str(f.worker) if f.worker >= 0 else "-",
                         "yes" if f.pinned else "no", "0x%x" % f.addr])
    nfibers = len(rows)
    gdb.write("%d fiber%s in %d scheduler%s\n" % (nfibers, "" if nfibers == 1 else "s",
                                                   len(scheds), "" if len(scheds) == 1 else "s"))
    for w in warnings:
        gdb.write(_PREFIX + w + "\n")
    if not rows:
        return
    head = ["ID", "NAME", "STATE", "WAIT", "SCHED", "WORKER", "PINNED", "FIBER"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        cells = [r[0].rjust(widths[0])] + [c.ljust(w) for c, w in zip(r[1:], widths[1:])]
        gdb.write("  ".join(cells).rstrip() + "\n")


# ---- weft bt -------------------------------------------------------------------------------

class _Arch:
    """Where a parked fiber's registers are in its switch frame."""

    def __init__(self, pc, sp, frame_size, slots):
        self.pc, self.sp = pc, sp  # gdb's names of the two registers
        self.frame_size = frame_size  # the new sp is the saved sp + frame_size
        self.slots = slots  # [(register, byte offset from the saved sp)]


_X86_64 = _Arch("rip", "rsp", 64,  # src/internal/switch.h: fpu r15 r14 r13 r12 rbx rbp resume
                [("r15", 8), ("r14", 16), ("r13", 24), ("r12", 32), ("rbx", 40), ("rbp", 48),
                 ("rip", 56)])
_AARCH64 = _Arch("pc", "sp", 176,  # switch-aarch64.S: FPCR - d8-d15 x19-x28 x29 x30 (resume)
                 [("x%d" % (19 + i), 80 + 8 * i) for i in range(10)] +
                 [("x29", 160), ("x30", 168), ("pc", 168)])


def _arch():
    name = gdb.selected_inferior().architecture().name()
    if "x86-64" in name:
        return _X86_64
    if name.startswith("aarch64"):
        return _AARCH64
    _error("weft bt is not supported on this architecture (%s): only x86-64 and aarch64" % name)


class _FrameId:
    """A frame id for create_unwind_info (gdb 13 wants gdb.Values in sp and pc)."""

    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


class _Armed:
    """One backtrace's worth of unwinder state."""

    def __init__(self, arch, ptid, thread_sp, thread_pc, fiber_sp, regs):
        self.arch = arch
        self.ptid = ptid
        self.thread_sp, self.thread_pc = thread_sp, thread_pc  # the frame to take over
        self.fiber_sp = fiber_sp
        self.regs = regs  # [(register, gdb.Value)]: the fiber's saved registers


class _FiberUnwinder(gdb.unwinder.Unwinder):
    """While armed, gives the selected thread's innermost real frame the fiber's saved context
    as its caller, so gdb's own unwinders carry on up the fiber's stack. That frame's id takes
    the fiber's saved sp as its stack address: gdb ends a backtrace at a caller that is "inner"
    to (below) its callee, and every frame of the fiber is above its saved sp, whichever of the
    two stacks is higher in memory."""

    def __init__(self):
        super().__init__("weft-fiber")
        self.armed = None

    def __call__(self, pending):
        a = self.armed
        if a is None:
            return None
        thread = gdb.selected_thread()
        if thread is None or thread.ptid != a.ptid:
            return None
        sp = pending.read_register(a.arch.sp)
        pc = pending.read_register(a.arch.pc)
        if int(sp) != a.thread_sp or int(pc) != a.thread_pc:
            return None
        info = pending.create_unwind_info(_FrameId(gdb.Value(a.fiber_sp).cast(sp.type), pc))
        for reg, value in a.regs:
            info.add_saved_register(reg, value.cast(pending.read_register(reg).type))
        return info


_unwinder = _FiberUnwinder()
gdb.unwinder.register_unwinder(None, _unwinder, replace=True)


def _saved_regs(arch, f):
    """[(register, gdb.Value)] of the fiber's switch frame and its resume address (an int)."""
    words = gdb.Value(f.sp).cast(f.u64.pointer())
    regs = []
    try:
        for reg, off in arch.slots:
            v = words[off // 8]
            v.fetch_lazy()
            regs.append((reg, v))
    except gdb.MemoryError as e:
        _error("fiber %d: its saved context at 0x%x is unreadable: %s" % (f.id, f.sp, e))
    regs.append((arch.sp, gdb.Value(f.sp + arch.frame_size).cast(f.u64)))
    return regs, int(dict(regs)[arch.pc])


def _selected_level():
    try:
        return gdb.selected_frame().level()
    except gdb.error:
        return 0


def _reselect(level):
    """Select frame `level` again (gdb selects frame 0 when its frame cache is flushed or the
    thread changes)."""
    try:
        frame = gdb.newest_frame()
        for _ in range(level):
            frame = frame.older() if frame is not None else None
        if frame is not None:
            frame.select()  # silent, unlike the `frame N` command
    except gdb.error:
        pass


def _thread_of_worker(arch, f):
    """The gdb thread running fiber f (its stack pointer is inside f's stack), else the thread
    whose pthread_t is the worker's; None if neither is found."""
    inferior = gdb.selected_inferior()
    selected = gdb.selected_thread()
    level = _selected_level()
    by_stack = None
    try:
        for th in inferior.threads():
            try:
                th.switch()
                sp = int(gdb.newest_frame().read_register(arch.sp))
            except gdb.error:
                continue
            if f.stack_lo <= sp < f.stack_hi:
                by_stack = th
                break
    finally:
        if selected is not None and selected.is_valid():
            selected.switch()
            _reselect(level)
    if by_stack is not None:
        return by_stack
    want = f.sched.worker_thread(f.current_on if f.current_on is not None else f.worker)
    if want is None:
        return None
    for th in inferior.threads():
        try:
            if int.from_bytes(th.handle(), "little") == want:
                return th
        except (gdb.error, TypeError, ValueError):
            return None
    return None


def _fiber_title(f):
    states = _enum_names("enum weft_fiber_state", "WEFT_FIBER_", _STATE_NAMES)
    reasons = _enum_names("enum weft_wait_reason", "WEFT_WAIT_", _REASON_NAMES)
    text = 'fiber %d "%s" %s' % (f.id, f.label(), _name_of(states, f.state))
    if f.state == _WAITING:
        text += " on %s" % _name_of(reasons, f.reason)
    text += ', sched "%s"' % f.sched.name
    if f.worker >= 0:
        text += " worker %d" % f.worker
    if f.pinned:
        text += " (pinned)"
    return text


def _bt_lines(arch, f, full):
    """The fiber's backtrace as gdb prints it, renumbered from its resume frame."""
    regs, resume = _saved_regs(arch, f)
    new_sp = f.sp + arch.frame_size
    thread = gdb.selected_thread()
    frame0 = gdb.newest_frame()
    # the innermost real frame: inline frames share its registers
    while frame0.type() == gdb.INLINE_FRAME and frame0.older() is not None:
        frame0 = frame0.older()
    armed = _Armed(arch, thread.ptid, int(frame0.read_register(arch.sp)),
                   int(frame0.read_register(arch.pc)), f.sp, regs)
    selected = _selected_level()
    _unwinder.armed = armed
    gdb.invalidate_cached_frames()
    try:
        first = None
        frame, level = gdb.newest_frame(), 0
        while frame is not None and level < 10000:
            if frame.pc() == resume and int(frame.read_register(arch.sp)) == new_sp:
                first = level
                break
            frame, level = frame.older(), level + 1
        if first is None:
            _error("fiber %d: gdb did not unwind its saved context (resume address 0x%x)"
                   % (f.id, resume))
        text = gdb.execute("backtrace full" if full else "backtrace", to_string=True)
    finally:
        _unwinder.armed = None
        gdb.invalidate_cached_frames()
        _reselect(selected)
    out, keep = [], False
    for line in text.splitlines():
        m = re.match(r"#(\d+)\s+(.*)$", line)
        if m:
            level = int(m.group(1))
            keep = level >= first
            if keep:
                line = "#%-2d %s" % (level - first, m.group(2))
        if keep:
            out.append(line)
    return out


def _print_bt(arch, f, full):
    title = _fiber_title(f)
    if f.state == _DEAD:
        gdb.write("%s: it has finished; no stack to show\n" % title)
        return
    if f.state == _RUNNING or f.current_on is not None:
        worker = f.current_on if f.current_on is not None else f.worker
        th = _thread_of_worker(arch, f)
        if th is not None:
            name = (' "%s"' % th.name) if th.name else ""
            gdb.write("%s: it runs now, on worker %d, in gdb thread %d%s: `thread %d` then `bt` "
                      "shows its stack\n" % (title, worker, th.num, name, th.num))
        else:
            gdb.write("%s: it runs now, on worker %d (its thread is named \"%.10s-%d\" in a live "
                      "process): `thread N` then `bt` shows its stack\n"
                      % (title, worker, f.sched.name, worker))
        return
    if f.worker < 0:
        gdb.write("%s: it has not run yet (it will start in %s); no stack to show\n"
                  % (title, _symbol(f.fn)))
        return
    if not f.stack_lo <= f.sp <= f.stack_hi - arch.frame_size:
        _error("fiber %d: its saved stack pointer 0x%x is outside its stack [0x%x, 0x%x)"
               % (f.id, f.sp, f.stack_lo, f.stack_hi))
    gdb.write(title + ":\n")
    if f.on_cpu:
        gdb.write("  (it was still on a CPU, in the middle of a switch, when the process "
                  "stopped: this saved context may be stale)\n")
    for line in _bt_lines(arch, f, full):
        gdb.write(line + "\n")


def _find(fibers, key):
    if re.fullmatch(r"\d+", key):
        hits = [f for f in fibers if f.id == int(key)]
        if hits:
            return hits[0]
    hits = [f for f in fibers if f.label() == key]
    if len(hits) > 1:
        _error('%d fibers are named "%s" (ids %s): give an id'
               % (len(hits), key, ", ".join(str(f.id) for f in hits)))
    if not hits:
        _error('no fiber with id or name "%s" (weft fibers lists them)' % key)
    return hits[0]


# ---- the commands --------------------------------------------------------------------------

class WeftCommand(gdb.Command):
    """Commands for weft's fibers, on a live process or a core file.

weft fibers: list every fiber of every scheduler.
weft bt ID|NAME|all [full]: print a parked fiber's backtrace."""

    def __init__(self):
        super().__init__("weft", gdb.COMMAND_STACK, gdb.COMPLETE_NONE, prefix=True)

    def invoke(self, arg, from_tty):
        if arg.strip():
            _error('unknown subcommand "%s": use "weft fibers" or "weft bt ID"' % arg.strip())
        gdb.execute("help weft")


class WeftFibersCommand(gdb.Command):
    """List every fiber of every weft scheduler.

One row per fiber: its id, its name (the function's symbol when it has none), its state, its
wait reason (waiting fibers), its scheduler, the worker it last ran on, whether it is pinned, and
its address (p *(weft__fiber *)ADDR shows every field)."""

    def __init__(self, name):
        super().__init__(name, gdb.COMMAND_STACK, gdb.COMPLETE_NONE)

    def invoke(self, arg, from_tty):
        if arg.strip():
            _error("weft fibers takes no argument")
        _check_target()
        _print_fibers()


class WeftBtCommand(gdb.Command):
    """Print the backtrace of a parked weft fiber.

Usage: weft bt ID|NAME|all [full]
A parked fiber is waiting, or runnable and not running; its frames are read from the context it
saved when it switched away. "all": every parked fiber; "full": with the locals, as bt full.
A running fiber's stack is its worker thread's: the command names that thread."""

    def __init__(self):
        super().__init__("weft bt", gdb.COMMAND_STACK, gdb.COMPLETE_NONE)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        full = False
        if args and args[-1] in ("full", "-full"):
            full = True
            args = args[:-1]
        if len(args) != 1:
            _error("usage: weft bt ID|NAME|all [full]")
        _check_target()
        arch = _arch()
        fibers, scheds, warnings = _all_fibers()
        for w in warnings:
            gdb.write(_PREFIX + w + "\n")
        if args[0] == "all":
            parked = [f for f in fibers if f.state in (_WAITING, _RUNNABLE)
                      and f.current_on is None and f.worker >= 0]
            if not parked:
                gdb.write("no parked fiber (%d fibers)\n" % len(fibers))
            for i, f in enumerate(parked):
                if i:
                    gdb.write("\n")
                try:
                    _print_bt(arch, f, full)
                except gdb.GdbError as e:
                    gdb.write("%s\n" % e)
                except gdb.error as e:
                    gdb.write("%sfiber %d: %s\n" % (_PREFIX, f.id, e))
            return
        if not fibers:
            _error("no fibers in this process (%d schedulers)" % len(scheds))
        f = _find(fibers, args[0])
        _print_bt(arch, f, full)


WeftCommand()
WeftFibersCommand("weft fibers")
WeftFibersCommand("info weft-fibers")
WeftBtCommand()
