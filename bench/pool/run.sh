#!/usr/bin/env bash
# bench/pool/run.sh [--skip-missing] [--quick] [--only IMPL,...] [BUILD_DIR]: the pool bench.
#
# Builds every pool (after scripts/bench-deps): the plain mutex-and-condvar C pool, GLib's
# GThreadPool, Java's ThreadPoolExecutor (javac, the class cached in BUILD_DIR/bench/pool/java),
# a Go channel pool (go build, GOCACHE and GOPATH in BUILD_DIR/bench/pool/go), a oneTBB
# task_group in a task_arena of 2 threads (g++ and libtbb-dev, in BUILD_DIR/bench/pool/tbb),
# weft's pool, weft's pool with its measurements compiled out, and weft's pool with a fixed spin
# of 200 us (weft-spin: weft_pool_opts.spin, twice the gap between tasks at 10,000/s: CPU traded
# for latency; the default pool is `weft`). Then runs every figure for every pool in this
# one invocation and prints one line per (figure, pool), then the ratios weft/peer per figure:
#   name=throughput impl=I tasks_per_s=MEDIAN min= max= runs= ...
#   name=latency impl=I p50_us=MEDIAN p50_min= p50_max= p99_us=MEDIAN p99_min= p99_max= ...
#   name=idle impl=I after_create_cpu_pct= after_work_cpu_pct=
#   ratio figure=throughput weft/plain=X weft/glib=X ... (> 1: weft does more tasks per second)
#   ratio figure=latency_p50 ... and latency_p99, latency_cpu_per_task (< 1: weft's is lower)
#   rounds figure=latency_p99 weft<plain=W/R ...: the rounds in which weft's p99 was the lower
# (the median of weft's figure over the peer's; weft/weft-nomeasure is what the measurements cost;
# the latency ratios are printed for weft-spin too, base=weft-spin)
# What each figure measures and leaves out: the head comment of bench/pool/common.c.
#
# The figures are interleaved to share the machine's noise fairly: each round runs one process
# per pool (in an order rotated every round), each process one timed run after its own warm-up;
# a figure's median, min and max are over the rounds (7 for throughput, 9 for latency, 1 for idle;
# --quick: 3, 1, 1 with smaller runs, for a smoke test). The raw lines are kept in
# BUILD_DIR/bench/pool/raw.txt.
#
# BUILD_DIR (default build-release) is set up with --buildtype=release when it does not exist:
# a debug build checks weft's lock order on every lock, which is not what users run.
# Exit 1 with one line naming the problem if a pool cannot be built (--skip-missing: skip it and
# say so) or a run fails; 2 for bad arguments.
set -u
caller=$PWD
cd "$(dirname "$0")/../.." || exit 1

skip_missing=0 quick=0 only="" build=build-release
while [ $# -gt 0 ]; do
	case "$1" in
	--skip-missing) skip_missing=1 ;;
	--quick) quick=1 ;;
	--only) only=${2:-}; shift ;;
	--only=*) only=${1#--only=} ;;
	-h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) echo "pool bench: unknown option '$1' (see --help)" >&2; exit 2 ;;
	*) build=$1 ;;
	esac
	shift
done

all_impls="plain glib java go tbb weft weft-nomeasure weft-spin"
impls=""
for i in ${only//,/ }; do
	case " $all_impls " in
	*" $i "*) impls="$impls $i" ;;
	*) echo "pool bench: no pool named '$i' (pools: $all_impls)" >&2; exit 2 ;;
	esac
done
[ -n "$impls" ] || impls=$all_impls
case "$build" in
/*) ;;
*) build=$caller/$build ;; # relative to where run.sh was called from
esac

if [ "$quick" = 1 ]; then
	tp_rounds=3 lat_rounds=1 tp_args="--tasks 200000" lat_args="--seconds 0.5"
else
	tp_rounds=7 lat_rounds=9 tp_args="" lat_args=""
fi

missing=()   # "impl (reason)"
declare -A cmd
out=$build/bench/pool
log=$out/logs

# 1. Dependencies.
deps_ok=1
if ! deps_msg=$(scripts/bench-deps 2>&1); then
	deps_ok=0
fi

# 2. The C pools, with meson and ninja.
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" --buildtype=release >"/tmp/pool-bench-setup.$$" 2>&1 || {
		echo "pool bench: meson setup $build failed:" \
			"$(tail -1 "/tmp/pool-bench-setup.$$")"
		rm -f "/tmp/pool-bench-setup.$$"
		exit 1
	}
	rm -f "/tmp/pool-bench-setup.$$"
fi
mkdir -p "$log" "$out/java" "$out/go" "$out/tbb"
# GLib may have been installed after the build folder was set up: let meson look again.
if pkg-config --exists glib-2.0 2>/dev/null &&
	! ninja -C "$build" -t targets all 2>/dev/null | grep -q '^bench/bench-pool-glib:'; then
	meson setup --reconfigure "$build" >"$log/reconfigure.log" 2>&1
fi
buildtype=$(meson introspect --buildoptions "$build" 2>/dev/null |
	grep -o '"name": "buildtype", "value": "[a-z]*"' | sed 's/.*"value": "//; s/"//')
buildtype=${buildtype:-unknown}

why() { # log: the first line of a build log that says what went wrong
	grep -m1 -E 'error:|undefined reference|not found|cannot find|No such' "$1" 2>/dev/null | cut -c1-160 ||
		true
}

for impl in $impls; do
	case $impl in
	java)
		if ! command -v javac >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
			missing+=("java (no javac/java; scripts/bench-deps installs openjdk-17-jdk-headless)")
			continue
		fi
		if [ ! -f "$out/java/Pool.class" ] || [ bench/pool/Pool.java -nt "$out/java/Pool.class" ]
		then
			javac -d "$out/java" bench/pool/Pool.java >"$log/java.log" 2>&1 || {
				missing+=("java (javac failed: $(why "$log/java.log"); see $log/java.log)")
				continue
			}
		fi
		cmd[java]="java -cp $out/java Pool"
		;;
	go)
		if ! command -v go >/dev/null 2>&1; then
			missing+=("go (no go; scripts/bench-deps installs golang-go)")
			continue
		fi
		GO111MODULE=off GOFLAGS="" GOCACHE="$out/go/cache" GOPATH="$out/go/path" \
			go build -o "$out/go/pool-go" bench/pool/pool.go >"$log/go.log" 2>&1 || {
			missing+=("go (go build failed: $(why "$log/go.log"); see $log/go.log)")
			continue
		}
		cmd[go]="$out/go/pool-go"
		;;
	tbb)
		if ! command -v g++ >/dev/null 2>&1 || [ ! -f /usr/include/oneapi/tbb/task_group.h ]
		then
			missing+=("tbb (no g++ or oneTBB; scripts/bench-deps installs g++ and libtbb-dev)")
			continue
		fi
		# common.c is C (C11 atomics): compiled by cc, linked by g++ with the C++ peer.
		t=$out/tbb/pool-tbb
		if [ ! -x "$t" ] || [ bench/pool/tbb.cpp -nt "$t" ] || [ bench/pool/common.c -nt "$t" ] ||
			[ bench/pool/common.h -nt "$t" ]; then
			{ cc -O2 -std=gnu11 -c bench/pool/common.c -o "$out/tbb/common.o" &&
				g++ -O2 -std=c++17 bench/pool/tbb.cpp "$out/tbb/common.o" -ltbb -pthread \
					-o "$t"; } >"$log/tbb.log" 2>&1 || {
				missing+=("tbb (g++ failed: $(why "$log/tbb.log"); see $log/tbb.log)")
				continue
			}
		fi
		cmd[tbb]=$t
		;;
	weft-spin)
		ninja -C "$build" bench/bench-pool-weft >"$log/$impl.log" 2>&1 || {
			missing+=("$impl (ninja bench/bench-pool-weft failed: $(why "$log/$impl.log"))")
			continue
		}
		cmd[$impl]="env BENCH_POOL_SPIN_US=200 $build/bench/bench-pool-weft"
		;;
	*)
		target=bench/bench-pool-$impl
		if [ "$impl" = glib ] && ! pkg-config --exists glib-2.0 2>/dev/null; then
			missing+=("glib (no glib-2.0; scripts/bench-deps installs libglib2.0-dev)")
			continue
		fi
		ninja -C "$build" "$target" >"$log/$impl.log" 2>&1 || {
			missing+=("$impl (ninja $target failed: $(why "$log/$impl.log"); see $log/$impl.log)")
			continue
		}
		cmd[$impl]="$build/$target"
		;;
	esac
done

if [ ${#missing[@]} -gt 0 ]; then
	list=$(printf '%s; ' "${missing[@]}")
	list=${list%; }
	if [ "$skip_missing" = 0 ]; then
		[ "$deps_ok" = 1 ] || list="$list; scripts/bench-deps: $(echo "$deps_msg" | tail -1)"
		echo "pool bench: cannot build: $list (or pass --skip-missing)"
		exit 1
	fi
fi
run_impls=""
for impl in $impls; do
	[ -n "${cmd[$impl]:-}" ] && run_impls="$run_impls $impl"
done
run_impls=${run_impls# }
[ -n "$run_impls" ] || { echo "pool bench: no pool could be built"; exit 1; }

# 3. The figures, interleaved.
raw=$out/raw.txt
: >"$raw"
failed=()
echo "# pool bench $(date -u +%FT%TZ) on $(hostname): $(nproc) CPUs, load average" \
	"$(cut -d' ' -f1-3 /proc/loadavg); build $build ($buildtype); pools: $run_impls"
[ "$buildtype" = release ] ||
	echo "# warning: $build is a $buildtype build, not release (weft's lock checks may be on)"
for m in "${missing[@]}"; do
	echo "# skipped: $m"
done

run_one() { # impl figure args...
	local impl=$1
	shift
	local line rc
	# shellcheck disable=SC2086
	line=$(timeout 600 ${cmd[$impl]} "$@" 2>"$log/run-$impl.err")
	rc=$?
	if [ $rc -ne 0 ] || [ -z "$line" ]; then
		failed+=("$impl $1 (exit $rc: $(tail -1 "$log/run-$impl.err"))")
		return
	fi
	echo "$line" >>"$raw"
}

rotate() { # round: the pools, starting at index round mod count
	local -a a
	read -r -a a <<<"$run_impls"
	local n=${#a[@]} k
	for ((k = 0; k < n; k++)); do
		echo "${a[$((($1 + k) % n))]}"
	done
}

for ((r = 0; r < tp_rounds; r++)); do
	for impl in $(rotate $r); do
		# shellcheck disable=SC2086
		run_one "$impl" throughput --runs 1 $tp_args
	done
done
for ((r = 0; r < lat_rounds; r++)); do
	for impl in $(rotate $r); do
		# shellcheck disable=SC2086
		run_one "$impl" latency --runs 1 $lat_args
	done
done
for impl in $(rotate 0); do
	run_one "$impl" idle
done

# 4. Medians over the rounds, one line per (figure, pool), then the ratios.
awk -v order="$run_impls" '
function med(s,    a, n, t, i, j) {
	n = split(s, a, " ")
	for (i = 2; i <= n; i++)
		for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
			t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
		}
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function lo(s,    a, n, i, m) {
	n = split(s, a, " "); m = a[1]
	for (i = 2; i <= n; i++) if (a[i] + 0 < m + 0) m = a[i]
	return m
}
function hi(s,    a, n, i, m) {
	n = split(s, a, " "); m = a[1]
	for (i = 2; i <= n; i++) if (a[i] + 0 > m + 0) m = a[i]
	return m
}
{
	delete kv
	for (i = 1; i <= NF; i++) {
		p = index($i, "=")
		kv[substr($i, 1, p - 1)] = substr($i, p + 1)
	}
	f = kv["name"]; im = kv["impl"]; k = f SUBSEP im
	runs[k]++
	if (f == "throughput") {
		tp[im] = tp[im] " " kv["tasks_per_s"]; tcpu[im] = tcpu[im] " " kv["cpu_per_task_ns"]
		tasks = kv["tasks"]
		skip = "name impl tasks_per_s min max runs tasks cpu_per_task_ns"
	} else if (f == "latency") {
		p50[im] = p50[im] " " kv["p50_us"]; p99[im] = p99[im] " " kv["p99_us"]
		p99r[im, ++nr[im]] = kv["p99_us"]
		mx[im] = mx[im] " " kv["max_us"]; lcpu[im] = lcpu[im] " " kv["cpu_per_task_us"]
		got[im] = got[im] " " kv["achieved_rate"]; rate = kv["rate"]; ltasks = kv["tasks"]
		skip = "name impl rate tasks runs p50_us p50_min p50_max p99_us p99_min p99_max " \
			"max_us cpu_per_task_us achieved_rate"
	} else {
		idle[im] = $0
		next
	}
	extra[k] = ""
	for (i = 1; i <= NF; i++) {
		key = substr($i, 1, index($i, "=") - 1)
		if (index(" " skip " ", " " key " ") == 0)
			extra[k] = extra[k] " " $i
	}
}
function ratio(fig, arr, base,    s, i, n, a, w, v) {
	n = split(order, a, " ")
	if (!((base) in arr)) {
		if (base == "weft")
			print "ratio figure=" fig " (no weft figure)"
		return
	}
	w = med(arr[base])
	s = "ratio figure=" fig (base == "weft" ? "" : " base=" base)
	for (i = 1; i <= n; i++) {
		if (a[i] == base || !(a[i] in arr)) continue
		v = med(arr[a[i]])
		s = s sprintf(" %s/%s=%.2f", base, a[i], v > 0 ? w / v : 0)
	}
	print s
}
# In how many rounds the p99 of base was below that of the peer in the same round (each round
# runs every pool once, back to back: a paired comparison, which slow drifts of the machine do
# not bias).
function wins(fig, base,    s, i, n, a, r, w, m) {
	if (!((base) in p99)) return
	n = split(order, a, " ")
	s = "rounds figure=" fig
	for (i = 1; i <= n; i++) {
		if (a[i] == base || !(a[i] in p99)) continue
		w = 0; m = 0
		for (r = 1; r <= nr[base] && r <= nr[a[i]]; r++) {
			m++
			if (p99r[base, r] + 0 < p99r[a[i], r] + 0) w++
		}
		s = s sprintf(" %s<%s=%d/%d", base, a[i], w, m)
	}
	print s
}
END {
	n = split(order, a, " ")
	for (i = 1; i <= n; i++) {
		im = a[i]
		if (im in tp)
			printf "name=throughput impl=%s tasks_per_s=%.0f min=%.0f max=%.0f runs=%d " \
				"tasks=%s cpu_per_task_ns=%.1f%s\n", im, med(tp[im]), lo(tp[im]),
				hi(tp[im]), runs["throughput", im], tasks, med(tcpu[im]),
				extra["throughput", im]
	}
	for (i = 1; i <= n; i++) {
		im = a[i]
		if (im in p50)
			printf "name=latency impl=%s rate=%s tasks=%s runs=%d p50_us=%.2f " \
				"p50_min=%.2f p50_max=%.2f p99_us=%.2f p99_min=%.2f p99_max=%.2f " \
				"max_us=%.1f cpu_per_task_us=%.2f achieved_rate=%.0f%s\n", im, rate,
				ltasks, runs["latency", im], med(p50[im]), lo(p50[im]), hi(p50[im]),
				med(p99[im]), lo(p99[im]), hi(p99[im]), med(mx[im]), med(lcpu[im]),
				med(got[im]), extra["latency", im]
	}
	for (i = 1; i <= n; i++)
		if (a[i] in idle)
			print idle[a[i]]
	ratio("throughput", tp, "weft")
	ratio("latency_p50", p50, "weft")
	ratio("latency_p99", p99, "weft")
	ratio("latency_cpu_per_task", lcpu, "weft")
	wins("latency_p99", "weft")
	ratio("latency_p50", p50, "weft-spin")
	ratio("latency_p99", p99, "weft-spin")
	ratio("latency_cpu_per_task", lcpu, "weft-spin")
}' "$raw"
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); raw lines: $raw"

if [ ${#failed[@]} -gt 0 ]; then
	echo "pool bench: runs failed: $(printf '%s; ' "${failed[@]}" | sed 's/; $//')"
	exit 1
fi
exit 0
