#!/usr/bin/env bash
# bench/watch/run.sh [--quick] [--only PART,...] [--limit S] [--seconds S] [BUILD_DIR]: the lock
# monitor bench, weft watch beside native runs, ThreadSanitizer and Helgrind, in one invocation.
#
# Installs what it needs (scripts/bench-deps watch: clang and its TSan runtime, valgrind,
# memcached, memaslap), builds in BUILD_DIR (default build-release, set up with
# --buildtype=release when it does not exist) the preload library, the weft CLI, the lock loops
# (bench/watch/lock.c) and the known-answer programs (tests/watch's), and with clang
# -fsanitize=thread their TSan twins into BUILD_DIR/bench/watch/tsan. Then four parts (--only
# micro,contended,memcached,ka):
#   1 micro      one thread, lock+unlock of one pthread mutex, and of a nested pair (A, B, unlock B,
#                unlock A; per pair), ns per pair: native (default and error-checking mutexes;
#                the process has a second, sleeping thread, as it has under the monitor: glibc
#                skips the atomics in a single-threaded process, which "no second thread" shows),
#                under the preload library always-on and with prediction, weft_mutex with the
#                monitor off, on and predicting, the TSan build, Helgrind (fewer pairs, fewer runs).
#   2 contended  two threads on one mutex, the same columns, total time per pair.
#   3 memcached  Debian's memcached (-t 2, 127.0.0.1, a free port, started and stopped here)
#                driven by memaslap (1 thread, 16 connections) for S seconds (default 10) per run,
#                5 runs each, interleaved: ops/s native, under `weft watch`, under `weft watch
#                --predict`, and the server's CPU time per operation over the load (the
#                monitor's cost shows there when the machine's noise hides it in the ops/s);
#                ratios: the median over runs of each run's ratio to native's run.
#   4 ka         the known-answer programs: tests/watch's (the integration tests' own: seven that
#                deadlock, one of them through a condition wait's re-lock, a lost condition
#                signal, a semaphore never posted, a robust mutex's dead owner, an inversion
#                that does not deadlock, and five clean ones; not `semantics`, which checks
#                results, not reports; and bank, the bank transfer: an inversion of two locks of
#                one class), under weft watch
#                (always-on and --predict; --on-deadlock exit --cond-wait-ms 500
#                --long-wait-ms 500), TSan (halt_on_error=1) and Helgrind: found / missed / false
#                report, and the time from start to the first report. A program still running
#                after --limit seconds (default 10) is killed, and what a tool had not said by
#                then is missed.
# Each figure is the median with [min-max] over its runs; the runs of parts 1 and 2 are
# interleaved (each round runs every column once, in an order rotated every round) to share the
# machine's noise. Ratios are against native. Nothing here asserts a speed: the goals from the
# design (always-on <= native + 5 ns a pair, prediction <= 15 ns a pair) are printed beside the
# figures. A tool that cannot be built or fails shows "n/a" with the reason; logs and raw lines
# are kept in BUILD_DIR/bench/watch. Servers and temporary files are cleaned up on exit.
# --quick: fewer and shorter runs (a smoke test). Exit 0 when every part ran (a column that is
# n/a is not a failure), 1 when the build of the bench itself failed, 2 for bad arguments.
set -u
caller=$PWD
cd "$(dirname "$0")/../.." || exit 1
src=$PWD

quick=0 only="" build=build-release limit=10 mc_secs=10
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--only) only=${2:-}; shift ;;
	--only=*) only=${1#--only=} ;;
	--limit) limit=${2:-}; shift ;;
	--limit=*) limit=${1#--limit=} ;;
	--seconds) mc_secs=${2:-}; shift ;;
	--seconds=*) mc_secs=${1#--seconds=} ;;
	-h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) echo "watch bench: unknown option '$1' (see --help)" >&2; exit 2 ;;
	*) build=$1 ;;
	esac
	shift
done
all_parts="micro contended memcached ka"
parts=""
for p in ${only//,/ }; do
	case " $all_parts " in
	*" $p "*) parts="$parts $p" ;;
	*) echo "watch bench: no part named '$p' (parts: $all_parts)" >&2; exit 2 ;;
	esac
done
[ -n "$parts" ] || parts=$all_parts
has_part() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }
case "$limit$mc_secs" in
*[!0-9]*) echo "watch bench: --limit and --seconds take whole seconds" >&2; exit 2 ;;
esac
[ "$limit" -ge 1 ] && [ "$limit" -le 60 ] && [ "$mc_secs" -ge 1 ] && [ "$mc_secs" -le 60 ] || {
	echo "watch bench: --limit and --seconds: 1 to 60" >&2
	exit 2
}
case "$build" in
/*) ;;
*) build=$caller/$build ;;
esac

if [ "$quick" = 1 ]; then
	rounds=3 n_single=2000000 n_cont=500000 n_tsan=200000 n_hg=20000 hg_runs=1 mc_runs=1
	[ "$mc_secs" = 10 ] && mc_secs=3
	[ "$limit" = 10 ] && limit=5
else
	rounds=5 n_single=10000000 n_cont=2000000 n_tsan=1000000 n_hg=100000 hg_runs=3 mc_runs=5
fi

out=$build/bench/watch
log=$out/logs
tmp=""
declare -A na        # column -> why it is n/a
pgids=()             # process groups started here and maybe still running
load_pid=""          # the load generator, while it runs

forget_group() { # pgid: no longer ours to clean up (exact matches only)
	local -a keep=()
	local x
	for x in "${pgids[@]}"; do
		[ "$x" = "$1" ] || keep+=("$x")
	done
	pgids=("${keep[@]}")
}

cleanup() {
	local g
	[ -n "$load_pid" ] && kill -TERM "$load_pid" 2>/dev/null
	for g in "${pgids[@]}"; do
		[ -n "$g" ] && kill -KILL -- "-$g" 2>/dev/null
	done
	[ -n "$tmp" ] && rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Dependencies and builds.
deps_msg=$(scripts/bench-deps watch 2>&1) ||
	echo "# scripts/bench-deps: $(echo "$deps_msg" | tail -1)"
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" --buildtype=release >"/tmp/watch-bench-setup.$$" 2>&1 || {
		echo "watch bench: meson setup $build failed: $(tail -1 "/tmp/watch-bench-setup.$$")"
		rm -f "/tmp/watch-bench-setup.$$"
		exit 1
	}
	rm -f "/tmp/watch-bench-setup.$$"
fi
mkdir -p "$log" "$out/tsan"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-watch-bench.XXXXXX") || exit 1
buildtype=$(meson introspect --buildoptions "$build" 2>/dev/null |
	grep -o '"name": "buildtype", "value": "[a-z]*"' | sed 's/.*"value": "//; s/"//')
buildtype=${buildtype:-unknown}

why() { # log: the line of a log that says what went wrong
	{ grep -m1 -E 'error:|undefined reference' "$1" ||
		grep -m1 -E 'error|not found|cannot find|No such|FAILED' "$1" || tail -1 "$1"; } 2>/dev/null |
		sed "s|^$src/||" | cut -c1-120
}

lock=$build/bench/bench-watch-lock
wlock=$build/bench/bench-watch-weft
so=$build/src/libweft-watch.so
weft=$build/tools/weft/weft
if ! ninja -C "$build" bench/bench-watch-lock >"$log/build-bench.log" 2>&1; then
	echo "watch bench: cannot build bench/watch's programs: $(why "$log/build-bench.log"); see" \
		"$log/build-bench.log"
	exit 1
fi
# the known-answer programs (their answers: expect and answers, part 4)
ka_cases="cycle2 cycle3 rwcycle c11cycle forkcycle condrelock relock condlost semlost ownerdied
	inversion bank trylock gate readers prodcons contention"
ka_src() { echo "tests/watch/$1.c"; }        # case: its source file
ka_target() { echo "tests/watch/watch-$1"; } # case: its ninja target (its path in the build folder)
declare -A ka_have
if has_part ka; then
	for k in $ka_cases; do
		if [ -f "$(ka_src "$k")" ] &&
			ninja -C "$build" "$(ka_target "$k")" >"$log/build-ka-$k.log" 2>&1; then
			ka_have[$k]=1
		elif [ -f "$(ka_src "$k")" ]; then
			na[ka-$k]="$(ka_target "$k") does not build: $(why "$log/build-ka-$k.log")"
		else
			na[ka-$k]="no $(ka_src "$k")"
		fi
	done
fi
ninja -C "$build" bench/bench-watch-weft >"$log/build-weft.log" 2>&1 ||
	na[weft_mutex]="libweft does not link: $(why "$log/build-weft.log")"
ninja -C "$build" src/libweft-watch.so >"$log/build-preload.log" 2>&1 ||
	na[preload]="libweft-watch.so does not build: $(why "$log/build-preload.log")"
# `weft watch` when the CLI has it, else the preload library by hand (the same environment)
use_cli=0
if [ -z "${na[preload]:-}" ] && ninja -C "$build" tools/weft/weft >"$log/build-cli.log" 2>&1 &&
	timeout 20 "$weft" watch -- /bin/true >"$log/cli-probe.log" 2>&1; then
	use_cli=1
fi
tsan_lock=$out/tsan/bench-watch-lock
if ! command -v clang >/dev/null 2>&1; then
	na[tsan]="no clang (scripts/bench-deps installs it)"
elif ! clang -O2 -g -fsanitize=thread -pthread -o "$tsan_lock" bench/watch/lock.c \
	>"$log/build-tsan.log" 2>&1; then
	na[tsan]="clang -fsanitize=thread failed: $(why "$log/build-tsan.log")"
else
	for k in "${!ka_have[@]}"; do
		# as tests/watch/meson.build builds them, with clang and TSan
		clang -O1 -g -fsanitize=thread -fno-inline -fno-optimize-sibling-calls -pthread \
			-o "$out/tsan/watch-$k" "$(ka_src "$k")" >"$log/build-tsan-$k.log" 2>&1 ||
			na[tsan-$k]="clang -fsanitize=thread $k.c failed: $(why "$log/build-tsan-$k.log")"
	done
fi
command -v valgrind >/dev/null 2>&1 || na[helgrind]="no valgrind (scripts/bench-deps installs it)"

t_build=$SECONDS
echo "# watch bench $(date -u +%FT%TZ) on $(hostname): $(nproc) CPUs, load average" \
	"$(cut -d' ' -f1-3 /proc/loadavg); build $build ($buildtype); parts: ${parts# }"
[ "$buildtype" = release ] ||
	echo "# warning: $build is a $buildtype build, not release (weft's own lock checks may be on)"
if [ -z "${na[preload]:-}" ]; then
	if [ "$use_cli" = 1 ]; then
		echo "# the preload library runs through \`weft watch [--predict] --\`"
	else
		echo "# \`weft watch\` does not run ($(tail -1 "$log/cli-probe.log" 2>/dev/null |
			cut -c1-80)): LD_PRELOAD=$so with the environment weft watch would set"
	fi
fi
for k in "${!na[@]}"; do
	echo "# n/a: $k: ${na[$k]}" | cut -c1-160
done

# The command that runs a program under the preload library, into the array wcmd:
# watch_cmd MODE(on|predict) JSONFILE EXTRA -- CMD... (EXTRA: comma-separated ondeadlock=ACTION,
# condms=N, longms=N, or ""). With the CLI, JSONFILE goes to --json; without it, the caller opens
# fd 9 on JSONFILE (WEFT_WATCH_JSON_FD=9): launch with 9>>"$JSONFILE".
watch_cmd() {
	local mode=$1 jf=$2 extra=$3 e
	shift 4
	local -a opts=() envs=()
	[ "$mode" = predict ] && { opts+=(--predict); envs+=(WEFT_WATCH_PREDICT=1); }
	for e in ${extra//,/ }; do
		case $e in
		ondeadlock=*) opts+=(--on-deadlock "${e#*=}"); envs+=(WEFT_WATCH_ON_DEADLOCK="${e#*=}") ;;
		condms=*) opts+=(--cond-wait-ms "${e#*=}"); envs+=(WEFT_WATCH_COND_WAIT_MS="${e#*=}") ;;
		longms=*) opts+=(--long-wait-ms "${e#*=}"); envs+=(WEFT_WATCH_LONG_WAIT_MS="${e#*=}") ;;
		esac
	done
	if [ "$use_cli" = 1 ]; then
		[ -n "$jf" ] && opts+=(--json "$jf")
		wcmd=("$weft" watch "${opts[@]}" -- "$@")
	else
		[ -n "$jf" ] && envs+=(WEFT_WATCH_JSON_FD=9)
		wcmd=(env "${envs[@]}" LD_PRELOAD="$so" "$@")
	fi
}

# ---------------------------------------------------------------------------------------------
# 2. Parts 1 and 2: the lock loops.
raw=$out/raw.txt
: >"$raw"
cols="native native-st errorcheck preload preload-predict weft-off weft-on weft-predict tsan"
cols="$cols helgrind"
declare -A fail # "col/fig" -> why the last run failed

col_na() { # col: why this column cannot run, or nothing
	case $1 in
	preload | preload-predict) echo "${na[preload]:-}" ;;
	weft-*) echo "${na[weft_mutex]:-}" ;;
	tsan) echo "${na[tsan]:-}" ;;
	helgrind) echo "${na[helgrind]:-}" ;;
	esac
}

run_loop() { # col fig n
	local col=$1 fig=$2 n=$3 line rc errf=$log/loop-$1-$2.err
	local -a cmd
	case $col in
	native) cmd=("$lock" "$fig" "$n") ;;
	native-st) cmd=("$lock" "$fig" "$n" --single-threaded) ;;
	errorcheck) cmd=("$lock" "$fig" "$n" --errorcheck) ;;
	preload) watch_cmd on "" "" -- "$lock" "$fig" "$n"; cmd=("${wcmd[@]}") ;;
	preload-predict) watch_cmd predict "" "" -- "$lock" "$fig" "$n"; cmd=("${wcmd[@]}") ;;
	weft-off | weft-on | weft-predict) cmd=("$wlock" "$fig" "$n" "${col#weft-}") ;;
	tsan) cmd=("$tsan_lock" "$fig" "$n") ;;
	helgrind) cmd=(valgrind --tool=helgrind -q "$lock" "$fig" "$n") ;;
	esac
	line=$(timeout 120 "${cmd[@]}" 2>"$errf" | grep '^name=')
	rc=${PIPESTATUS[0]}
	if [ -z "$line" ]; then
		fail[$col/$fig]="exit $rc: $(grep -v '^$' "$errf" | tail -1 | cut -c1-100)"
		return
	fi
	echo "$line col=$col" >>"$raw"
}

loop_figs=""
has_part micro && loop_figs="single nested"
has_part contended && loop_figs="$loop_figs contended"
t0_part=$SECONDS
if [ -n "$loop_figs" ]; then
	echo "# lock loops: $rounds rounds (n=$n_single per run, contended n=$n_cont, TSan n=$n_tsan," \
		"Helgrind n=$n_hg in $hg_runs runs)"
	read -ra cols_arr <<<"$cols"
	ncols=${#cols_arr[@]}
	for ((r = 0; r < rounds; r++)); do
		for fig in $loop_figs; do
			n=$n_single
			[ "$fig" = contended ] && n=$n_cont
			for ((i = 0; i < ncols; i++)); do
				c=${cols_arr[$(((i + r) % ncols))]}
				[ -n "$(col_na "$c")" ] && continue
				# two threads run anyway
				[ "$c" = native-st ] && [ "$fig" = contended ] && continue
				case $c in
				tsan) run_loop "$c" "$fig" "$n_tsan" ;;
				helgrind) [ "$r" -lt "$hg_runs" ] && run_loop "$c" "$fig" "$n_hg" ;;
				*) run_loop "$c" "$fig" "$n" ;;
				esac
			done
		done
	done
fi

t_loops=$((SECONDS - t0_part))

# stats FIG COL: "median min max runs" of ns_per_pair, or nothing
stats() {
	awk -v f="$1" -v c="$2" '
	function kv(k,    i, n, a, p) {
		n = split($0, a, " ")
		for (i = 1; i <= n; i++) {
			p = index(a[i], "=")
			if (substr(a[i], 1, p - 1) == k) return substr(a[i], p + 1)
		}
		return ""
	}
	kv("name") == f && kv("col") == c { v[++n] = kv("ns_per_pair") + 0 }
	END {
		if (n == 0) exit
		for (i = 1; i <= n; i++)
			for (j = i + 1; j <= n; j++)
				if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
		m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
		printf "%.2f %.2f %.2f %d\n", m, v[1], v[n], n
	}' "$raw"
}

label() {
	case $1 in
	native) echo "native (default mutex)" ;;
	native-st) echo "native, no second thread" ;;
	errorcheck) echo "native, error-checking" ;;
	preload) echo "weft watch (always-on)" ;;
	preload-predict) echo "weft watch --predict" ;;
	weft-off) echo "weft_mutex, monitor off" ;;
	weft-on) echo "weft_mutex, monitor on" ;;
	weft-predict) echo "weft_mutex, predicting" ;;
	tsan) echo "TSan (clang -O2)" ;;
	helgrind) echo "Helgrind (n=$n_hg)" ;;
	esac
}

na_why() { # fig col: why this cell has no figure, or nothing
	local why
	why=$(col_na "$2")
	[ -n "$why" ] && { echo "$why"; return; }
	[ -n "$(stats "$1" "$2")" ] || echo "${fail[$2/$1]:-no run}"
}

cell() { # fig col: "median [min-max]  ratio  +ns", or n/a (the reason: na_notes)
	local s base
	s=$(stats "$1" "$2")
	if [ -n "$(col_na "$2")" ] || [ -z "$s" ]; then
		printf '%-26s %6s %8s   ' "n/a" "" ""
		return
	fi
	base=$(stats "$1" native)
	echo "$s ${base%% *}" | awk '{
		rng = sprintf("%.1f [%.1f-%.1f]", $1, $2, $3)
		if ($5 != "" && $5 > 0) printf "%-26s %6.2f %+8.1f   ", rng, $1 / $5, $1 - $5
		else printf "%-26s %6s %8s   ", rng, "-", "-"
	}'
}

na_notes() { # figs...: one line per column that is n/a, with the reason
	local c f w last
	for c in $cols; do
		[ "$c" = native-st ] && [ "$1" = contended ] && continue
		last=""
		for f in "$@"; do
			w=$(na_why "$f" "$c")
			[ -n "$w" ] && [ "$w" != "$last" ] && echo "   n/a: $(label "$c") ($f): $w" | cut -c1-160
			last=$w
		done
	done
}

noise_line() { # fig: how far native's own runs spread, the scale below which figures are noise
	stats "$1" native | awk -v f="$1" '$1 > 0 {
		sp = ($3 - $2) / $1 * 100
		w = (sp > 20) ? ": a noisy machine, read differences below that as noise" : ""
		printf "#   %s: the native runs spread over %.0f%% of their median (%.1f ns)%s\n", f, sp,
			$3 - $2, w
	}'
}

goal_line() { # fig: the design's goals against this figure (printed, never asserted)
	local nat on pr won wpr
	nat=$(stats "$1" native | cut -d' ' -f1)
	[ -n "$nat" ] || return
	on=$(stats "$1" preload | cut -d' ' -f1)
	pr=$(stats "$1" preload-predict | cut -d' ' -f1)
	won=$(stats "$1" weft-on | cut -d' ' -f1)
	wpr=$(stats "$1" weft-predict | cut -d' ' -f1)
	awk -v f="$1" -v n="$nat" -v o="$on" -v p="$pr" -v wo="$won" -v wp="$wpr" '
	function on_goal(v) {
		if (v == "") return "n/a"
		return sprintf("%+.1f ns (%s)", v - n, v - n <= 5 ? "within" : "above")
	}
	# "prediction <= 15 ns a pair": as a total, or as the cost added to native
	function pr_goal(v) {
		if (v == "") return "n/a"
		if (v <= 15) w = "within"
		else if (v - n <= 15) w = "within as added cost"
		else w = "above"
		return sprintf("%.1f ns, %+.1f ns (%s)", v, v - n, w)
	}
	BEGIN {
		printf "#   %s: goal always-on <= native + 5 ns: weft watch %s, weft_mutex %s\n", f,
			on_goal(o), on_goal(wo)
		printf "#   %s: goal prediction <= 15 ns a pair: weft watch %s, weft_mutex %s\n", f,
			pr_goal(p), pr_goal(wp)
	}'
}

if has_part micro; then
	echo
	echo "1. Uncontended lock+unlock, one thread: ns per pair, median [min-max] over $rounds runs" \
		"(Helgrind $hg_runs),"
	echo "   ratio and +ns against native's median (each process has a second, sleeping thread" \
		"but \"no second thread\")"
	printf '%-26s %-45s %s\n' "" "one mutex" "nested pair (lock A, lock B, unlock B, unlock A)"
	printf '%-26s %-26s %6s %8s   %-26s %6s %8s\n' "column" "ns/pair" "ratio" "+ns" \
		"ns/pair" "ratio" "+ns"
	for c in $cols; do
		printf '%-26s %s %s\n' "$(label "$c")" "$(cell single "$c")" "$(cell nested "$c")"
	done
	na_notes single nested
	noise_line single
	noise_line nested
	goal_line single
	goal_line nested
fi
if has_part contended; then
	echo
	echo "2. Contended: two threads on one mutex, wall time over all pairs: ns per pair, median" \
		"[min-max] over $rounds runs (Helgrind $hg_runs)"
	printf '%-26s %-26s %6s %8s\n' "column" "ns/pair" "ratio" "+ns"
	for c in $cols; do
		[ "$c" = native-st ] && continue
		printf '%-26s %s\n' "$(label "$c")" "$(cell contended "$c")"
	done
	na_notes contended
	noise_line contended
fi

# ---------------------------------------------------------------------------------------------
# 3. memcached under load.
free_port() { # a TCP port nobody listens on at 127.0.0.1
	local p i
	for ((i = 0; i < 50; i++)); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (/proc/PID/stat
# fields 14 and 15, counted after the command name, which may hold spaces)
cpu_ticks() {
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	st=${st##*) }
	awk '{ print $12 + $13 }' <<<"$st"
}

# Stop a process group: TERM to the server itself (its pid file), then the group; KILL after 5 s.
stop_group() { # pgid [pidfile]
	local g=$1 pf=${2:-} i
	if [ -n "$pf" ] && [ -s "$pf" ]; then
		kill -TERM "$(cat "$pf")" 2>/dev/null
	fi
	for ((i = 0; i < 50; i++)); do
		kill -0 "$g" 2>/dev/null || break
		[ "$i" = 20 ] && kill -TERM -- "-$g" 2>/dev/null
		sleep 0.1
	done
	kill -KILL -- "-$g" 2>/dev/null
	wait "$g" 2>/dev/null
	forget_group "$g"
}

declare -A mc_na
mc_rows="native watch watch-predict"
mcraw=$out/memcached.txt
slap=$(command -v memcaslap || command -v memaslap || true)
t0_part=$SECONDS
if has_part memcached; then
	: >"$mcraw"
	if ! command -v memcached >/dev/null 2>&1; then
		for m in $mc_rows; do mc_na[$m]="no memcached (scripts/bench-deps installs it)"; done
	elif [ -z "$slap" ]; then
		for m in $mc_rows; do mc_na[$m]="no memaslap (scripts/bench-deps installs it)"; done
	elif [ -n "${na[preload]:-}" ]; then
		mc_na[watch]=${na[preload]}
		mc_na[watch-predict]=${na[preload]}
	fi
	mc_user=()
	[ "$(id -u)" = 0 ] && mc_user=(-u root)
	for ((r = 0; r < mc_runs; r++)); do
		for m in $mc_rows; do
			[ -n "${mc_na[$m]:-}" ] && continue
			port=$(free_port) || { mc_na[$m]="no free port"; continue; }
			pf=$tmp/mc.pid jf=$tmp/mc-$m-$r.json
			rm -f "$pf"
			: >"$jf"
			server=(memcached "${mc_user[@]}" -l 127.0.0.1 -p "$port" -U 0 -t 2 -c 1024 -P "$pf")
			case $m in
			native) wcmd=("${server[@]}") ;;
			watch) watch_cmd on "$jf" "" -- "${server[@]}" ;;
			watch-predict) watch_cmd predict "$jf" "" -- "${server[@]}" ;;
			esac
			setsid "${wcmd[@]}" >"$log/memcached-$m.log" 2>&1 9>>"$jf" &
			g=$!
			pgids+=("$g")
			for ((i = 0; i < 100; i++)); do
				port_open "$port" && break
				kill -0 "$g" 2>/dev/null || break
				sleep 0.05
			done
			if ! port_open "$port"; then
				mc_na[$m]="memcached did not listen: $(tail -1 "$log/memcached-$m.log" | cut -c1-80)"
				stop_group "$g" "$pf"
				continue
			fi
			# the server's CPU time over the load: the monitor's cost shows there even when
			# the machine's noise hides it in the throughput
			spid=$(cat "$pf" 2>/dev/null)
			c0=$(cpu_ticks "$spid") || c0=""
			# in the background, so that a signal to this script is handled at once
			timeout $((mc_secs + 30)) "$slap" -s "127.0.0.1:$port" -T 1 -c 16 -t "${mc_secs}s" \
				>"$log/memaslap-$m-$r.log" 2>&1 &
			load_pid=$!
			wait $load_pid
			load_pid=""
			c1=$(cpu_ticks "$spid") || c1=""
			res=$(cat "$log/memaslap-$m-$r.log")
			tps=$(echo "$res" | sed -n 's/.*TPS: *\([0-9][0-9]*\).*/\1/p' | tail -1)
			alive=1
			kill -0 "$g" 2>/dev/null || alive=0
			stop_group "$g" "$pf"
			nrep=$(grep -c '"event"' "$jf" 2>/dev/null)
			if [ -z "$tps" ] || [ "$alive" = 0 ]; then
				died=""
				[ "$alive" = 0 ] && died="the server died; "
				mc_na[$m]="run $((r + 1)): ${died}memaslap: $(echo "$res" | tail -1 | cut -c1-60)"
				continue
			fi
			cpu=""
			if [ -n "$c0" ] && [ -n "$c1" ]; then
				cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" -v t="$tps" \
					-v s="$mc_secs" 'BEGIN { printf "%.3f", (b - a) / hz * 1e6 / (t * s) }')
			fi
			echo "name=memcached col=$m run=$r ops_per_s=$tps cpu_us_per_op=${cpu:-na}" \
				"reports=${nrep:-0}" >>"$mcraw"
		done
	done
	echo
	echo "3. memcached 1.6 (-t 2) on 127.0.0.1 under memaslap (1 thread, 16 connections," \
		"${mc_secs} s a run): ops/s, median [min-max] over $mc_runs runs"
	echo "   and the server's CPU time per operation (user + system, /proc/PID/stat, over the load):"
	echo "   median [min-max], and the median over runs of each run's ratio to native's run"
	printf '%-26s %-26s %6s  %-22s %6s  %s\n' "column" "ops/s" "ratio" "CPU us/op" "ratio" \
		"reports"
	for m in $mc_rows; do
		case $m in
		native) l="native" ;;
		watch) l="weft watch (always-on)" ;;
		watch-predict) l="weft watch --predict" ;;
		esac
		if [ -n "${mc_na[$m]:-}" ]; then
			printf '%-26s %s\n' "$l" "n/a (${mc_na[$m]})"
			continue
		fi
		awk -v col="$m" -v l="$l" '
		function med(a, n,    i, j, t) {
			for (i = 1; i <= n; i++)
				for (j = i + 1; j <= n; j++)
					if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		{
			c = ""; r = ""; o = ""; u = ""; rp = 0
			for (i = 1; i <= NF; i++) {
				split($i, kv, "=")
				if (kv[1] == "col") c = kv[2]
				if (kv[1] == "run") r = kv[2]
				if (kv[1] == "ops_per_s") o = kv[2] + 0
				if (kv[1] == "cpu_us_per_op") u = kv[2]
				if (kv[1] == "reports") rp = kv[2] + 0
			}
			ops[c, r] = o
			if (u != "na") cpu[c, r] = u + 0
			if (c == col) { runs[++n] = r; rep += rp }
		}
		END {
			if (n == 0) { printf "%-26s n/a (no run)\n", l; exit }
			for (k = 1; k <= n; k++) {
				r = runs[k]
				v[k] = ops[col, r]
				if ((col, r) in cpu) w[++nw] = cpu[col, r]
				if (("native", r) in ops && ops["native", r] > 0)
					ro[++nro] = ops[col, r] / ops["native", r]
				if ((col, r) in cpu && ("native", r) in cpu && cpu["native", r] > 0)
					rc[++nrc] = cpu[col, r] / cpu["native", r]
			}
			mo = med(v, n)
			s1 = sprintf("%d [%d-%d]", mo, v[1], v[n])
			s2 = nro ? sprintf("%.3f", med(ro, nro)) : "-"
			s3 = nw ? sprintf("%.2f [%.2f-%.2f]", med(w, nw), w[1], w[nw]) : "n/a"
			s4 = nrc ? sprintf("%.3f", med(rc, nrc)) : "-"
			printf "%-26s %-26s %6s  %-22s %6s  %d\n", l, s1, s2, s3, s4, rep
		}' "$mcraw"
	done
fi

t_mc=$((SECONDS - t0_part))

# ---------------------------------------------------------------------------------------------
# 4. The known-answer programs.
ka_tools="weft weft-predict tsan helgrind"
declare -A ka_res ka_kind
karaw=$out/ka.txt

expect() { # case: the report kinds of weft watch that answer it, or none (a report is false)
	case $1 in
	cycle2 | cycle3 | rwcycle | c11cycle | forkcycle | condrelock) echo "deadlock inversion" ;;
	relock) echo "self-deadlock inversion" ;;
	condlost) echo cond-wait ;;
	semlost) echo long-wait ;;
	ownerdied) echo owner-died ;;
	inversion | bank) echo inversion ;;
	*) echo none ;;
	esac
}

# answers TOOL CASE: an extended regex of the report kinds (as report_kinds prints them) that
# answer CASE's bug; one that matches nothing when the tool has no such report
answers() {
	case $1 in
	weft | weft-predict) expect "$2" | sed 's/ /|/g; s/^/^(/; s/$/)$/' ;;
	tsan)
		case $2 in
		cycle2 | cycle3 | rwcycle | c11cycle | forkcycle | condrelock | inversion | bank)
			echo '^lock-order-inversion$' ;;
		relock) echo '^(double-lock|lock-order-inversion)' ;;
		*) echo '^$' ;;
		esac
		;;
	helgrind)
		case $2 in
		cycle2 | cycle3 | rwcycle | c11cycle | forkcycle | condrelock | inversion | bank) echo '^lock-order$' ;;
		relock) echo '^(Attempt-to-re-lock|lock-order$)' ;;
		ownerdied) echo '^Exiting-thread-still-holds' ;;
		*) echo '^$' ;;
		esac
		;;
	esac
}

# the kind of each report in a tool's output so far, one a line
report_kinds() { # tool file errfile case
	case $1 in
	weft | weft-predict)
		{ grep -Eo '"event": *"[a-z-]+"' "$2" | sed 's/.*"\([a-z-]*\)"$/\1/'
			grep -Eo '^weft watch: (deadlock|self-deadlock|inversion|long-wait|cond-wait|owner-died):' \
				"$3" | sed 's/^weft watch: //; s/:$//'; } 2>/dev/null ;;
	tsan) grep -o 'WARNING: ThreadSanitizer: [a-z -]*' "$2" 2>/dev/null |
		sed 's/WARNING: ThreadSanitizer: //; s/ (.*//; s/ *$//; s/ /-/g' ;;
	helgrind)
		# "Exiting thread still holds a lock" is Helgrind's answer to ownerdied only: elsewhere it
		# is what a guard's _exit or our kill leaves behind
		grep -Eo '== (Thread #[0-9]+: [A-Za-z_{} -]+|Possible data race)' "$2" 2>/dev/null |
			sed 's/^== //; s/Thread #[0-9]*: //; s/ *$//; s/ /-/g' |
			{ if [ "$4" = ownerdied ]; then cat; else grep -v '^Exiting-thread-still-holds'; fi; } ;;
	esac
}

# ka_runs CASE TOOL...: run CASE under each TOOL at the same time (the polling loop watches them
# all), score each into ka_res[tool/case] and a line of $karaw. weft's two modes run one at a
# time, each alone on the machine; TSan and Helgrind run side by side (most of their runs wait
# for the limit: a deadlocked program takes no CPU).
ka_runs() {
	local k=$1 tool f prog now left exp res e
	shift
	local -A g t0 found state rc kinds
	local -a args=()
	case $k in # a guard in each deadlocking program ends it a second after our limit
	cycle2 | cycle3 | rwcycle | c11cycle | forkcycle | condrelock | relock) args=($((limit * 1000 + 1000))) ;;
	esac
	exp=$(expect "$k")
	for tool in "$@"; do
		f=$tmp/ka-$tool-$k.out
		: >"$f"
		: >"$f.err"
		prog=$build/$(ka_target "$k")
		[ "$tool" = tsan ] && prog=$out/tsan/watch-$k
		t0[$tool]=$EPOCHREALTIME
		case $tool in
		weft | weft-predict)
			watch_cmd "$([ "$tool" = weft ] && echo on || echo predict)" "$f" \
				ondeadlock=exit,condms=500,longms=500 -- "$prog" "${args[@]}"
			setsid "${wcmd[@]}" >/dev/null 2>"$f.err" 9>>"$f" &
			;;
		tsan) TSAN_OPTIONS="halt_on_error=1 exitcode=66" setsid "$prog" "${args[@]}" \
			>/dev/null 2>"$f" & ;;
		helgrind) setsid valgrind --tool=helgrind "$prog" "${args[@]}" >/dev/null 2>"$f" & ;;
		esac
		g[$tool]=$!
		pgids+=("$!")
		state[$tool]=running found[$tool]="" rc[$tool]=0 kinds[$tool]=""
	done
	left=$#
	while [ "$left" -gt 0 ]; do
		for tool in "$@"; do
			[ "${state[$tool]}" = running ] || continue
			f=$tmp/ka-$tool-$k.out
			now=$EPOCHREALTIME
			if [ -z "${found[$tool]}" ]; then
				kinds[$tool]=$(report_kinds "$tool" "$f" "$f.err" "$k")
				[ -n "${kinds[$tool]}" ] && found[$tool]=$(awk -v a="${t0[$tool]}" -v b="$now" \
					'BEGIN { printf "%.2f", b - a }')
			fi
			if ! kill -0 "${g[$tool]}" 2>/dev/null; then
				wait "${g[$tool]}"
				rc[$tool]=$?
				state[$tool]=exited
				left=$((left - 1))
				# what it said on its way out
				if [ -z "${found[$tool]}" ]; then
					kinds[$tool]=$(report_kinds "$tool" "$f" "$f.err" "$k")
					[ -n "${kinds[$tool]}" ] && found[$tool]=$(awk -v a="${t0[$tool]}" \
						-v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
				fi
			elif awk -v a="${t0[$tool]}" -v b="$now" -v l="$limit" \
				'BEGIN { exit !(b - a >= l) }'; then
				state[$tool]=killed
				left=$((left - 1))
				stop_group "${g[$tool]}"
			fi
		done
		[ "$left" -gt 0 ] && sleep 0.05
	done
	for tool in "$@"; do
		f=$tmp/ka-$tool-$k.out
		forget_group "${g[$tool]}"
		cp "$f" "$log/ka-$tool-$k.out" 2>/dev/null
		[ -s "$f.err" ] && cp "$f.err" "$log/ka-$tool-$k.err"
		kinds[$tool]=$(echo "${kinds[$tool]}" | awk 'NF && !seen[$0]++' | paste -sd, -)
		local ok=0 fd=${found[$tool]}
		# found: one of its reports answers the bug (the time is that of its first report)
		tr ',' '\n' <<<"${kinds[$tool]}" | grep -Eq "$(answers "$tool" "$k")" && ok=1
		if [ "$exp" = none ] || { [ "$tool" = weft ] && [ "$exp" = inversion ]; }; then
			if [ -n "$fd" ]; then
				res="FALSE ${fd}s"
			elif [ "${state[$tool]}" = exited ] && [ "${rc[$tool]}" != 0 ]; then
				res="error(exit ${rc[$tool]})"
			elif [ "$exp" = inversion ]; then
				res="quiet (*)"
			else
				res="ok (quiet)"
			fi
		elif [ -n "$fd" ] && [ "$ok" = 1 ]; then
			res="found ${fd}s"
		elif [ -n "$fd" ]; then
			res="WRONG ${fd}s"
		else
			res="missed"
		fi
		ka_res[$tool/$k]=$res
		ka_kind[$tool/$k]=${kinds[$tool]:--}
		echo "name=ka case=$k tool=$tool expect=${exp// /|} state=${state[$tool]}" \
			"rc=${rc[$tool]} report_s=${fd:--} kinds=${kinds[$tool]:--} result=${res// /_}" \
			>>"$karaw"
	done
}

t0_part=$SECONDS
if has_part ka; then
	: >"$karaw"
	for k in $ka_cases; do
		side=()
		for tool in $ka_tools; do
			if [ -z "${ka_have[$k]:-}" ]; then
				ka_res[$tool/$k]="n/a"
				continue
			fi
			case $tool in
			weft | weft-predict)
				[ -n "${na[preload]:-}" ] && { ka_res[$tool/$k]="n/a"; continue; }
				# a cycle across processes needs the registry weft watch shares with children
				[ "$k" = forkcycle ] && [ "$use_cli" = 0 ] &&
					{ ka_res[$tool/$k]="n/a (no CLI)"; continue; }
				ka_runs "$k" "$tool"
				;;
			tsan)
				if [ -n "${na[tsan]:-}" ] || [ ! -x "$out/tsan/watch-$k" ]; then
					ka_res[$tool/$k]="n/a"
				else
					side+=(tsan)
				fi
				;;
			helgrind)
				if [ -n "${na[helgrind]:-}" ]; then ka_res[$tool/$k]="n/a"; else side+=(helgrind); fi
				;;
			esac
		done
		[ ${#side[@]} -gt 0 ] && ka_runs "$k" "${side[@]}"
	done
	echo
	echo "4. Known answers (tests/watch): seconds from start to the first" \
		"report; killed after" \
		"${limit} s"
	printf '%-11s %-13s %-15s %-15s %-15s %-15s\n' "program" "answer" "weft watch" \
		"weft --predict" "TSan" "Helgrind"
	for k in $ka_cases; do
		exp=$(expect "$k")
		exp=${exp%% *}
		[ "$exp" = inversion ] && exp="inversion(p)"
		printf '%-11s %-13s' "$k" "$exp"
		for tool in $ka_tools; do
			printf ' %-15s' "${ka_res[$tool/$k]:-n/a}"
		done
		echo
	done
	printf '%-25s' "found/missed/false"
	for tool in $ka_tools; do
		fo=0 mi=0 fa=0
		for k in $ka_cases; do
			case ${ka_res[$tool/$k]:-} in
			found*) fo=$((fo + 1)) ;;
			missed) mi=$((mi + 1)) ;;
			FALSE* | WRONG*) fa=$((fa + 1)) ;;
			esac
		done
		printf ' %-15s' "$fo/$mi/$fa"
	done
	echo
	echo "   answer: weft's report kind that answers it (deadlock programs: also an inversion" \
		"under --predict); none: any report is false"
	echo "   (*) inversion(p): always-on mode reports what blocks; an inversion that did not" \
		"deadlock is --predict's to find"
	echo "   WRONG: reports, none of which answers the bug (counted as false); error: a clean" \
		"program failed under the tool"
	echo "   what each tool said (report kinds, in order):"
	for k in $ka_cases; do
		line=""
		for tool in $ka_tools; do
			v=${ka_kind[$tool/$k]:-}
			[ -n "$v" ] && [ "$v" != - ] && line="$line $tool=$v"
		done
		[ -n "$line" ] && echo "     $k:$line" | cut -c1-160
	done
fi

t_ka=$((SECONDS - t0_part))
echo
echo "# time: builds and set-up ${t_build}s, lock loops ${t_loops}s, memcached ${t_mc}s, known" \
	"answers ${t_ka}s, total ${SECONDS}s"
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); raw lines: $raw $mcraw $karaw"
exit 0
