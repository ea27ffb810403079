#!/usr/bin/env bash
# bench/fiber/run.sh [--skip-missing] [--quick] [--no-callgrind] [--only FIG,...] [BUILD_DIR]:
# the fiber bench, weft beside its peers in one invocation (the table docs/fiber.md describes).
#
# Builds (after scripts/bench-deps): weft's two bench programs with meson and ninja in BUILD_DIR
# (bench-fiber-switch: the raw switch; bench-fiber-weft: the workloads on the public API), and the
# peers into BUILD_DIR/bench/fiber: Boost.Context's jump_fcontext (boost-context.cpp) and
# Boost.Fiber (boost-fiber.cpp) with g++ -O2, Go's goroutines (fiber.go) with go build
# (GOCACHE and GOPATH under BUILD_DIR/bench/fiber/go). Then runs, figure by figure, every
# implementation one after the other, each as its own process reporting the median of its 7 runs
# (what each program measures and leaves out: the head comment of each file):
#   switch     switch-weft, switch-weft-fpu, switch-ret (the same switch ending in `ret`),
#              switch-weft-fpu-mixed; Boost.Context: switch-boost-context(-mixed)     ns/switch
#   yield      weft, Go (Gosched), Boost.Fiber                                        ns/yield
#   chan       unbuffered hand-off: weft, Go, Boost.Fiber                              ns/hand-off
#   spawn      spawn + run + complete, 1 and 2 threads, in waves of 1,000 fibers alive at once,
#              and on 1 thread in waves of 50 and 10,000 (spawn-1t-w50, spawn-1t-w10000):
#              weft, Go                                                                ns/fiber
#   parked     1,000,000 parked fibers: peak RSS of weft (4 KiB stacks, overflow detection on:
#              guard pages while the map budget lasts, then canaries; and 2 KiB stacks, two to a
#              page with canaries: parked-stack2048) and Go
#   pingpong2  unbuffered hand-off between two threads: weft, Go                      ns/hand-off
# and prints every raw line (name=... impl=... ns_per_op=...), then one line of ratios per figure
#   ratio figure=F weft/PEER=X ...      (< 1: weft is faster, or smaller for parked)
# then callgrind's instruction counts for weft's figures (and the `ret` twin):
#   callgrind figure=F impl=I ir_per_op=X
# (valgrind --tool=callgrind at two sizes N1 < N2, with no warm-up where the program allows it:
# (Ir(N2) - Ir(N1)) / (ops(N2) - ops(N1)), so start-up and set-up cancel out; --no-callgrind skips
# it), and last a table of the same figures for people.
#
# --quick: smaller N and 3 runs, for a smoke test. --only: some figures (switch, yield, chan,
# spawn, parked, pingpong2). BUILD_DIR (default build-release) is set up with
# --buildtype=release when it does not exist. A peer that cannot be built is an error (exit 1
# naming it) unless --skip-missing; a weft figure that fails (e.g. before the scheduler exists)
# is reported as failed and the others still run; exit 1 then. Exit 2 for bad arguments.
set -u
caller=$PWD
cd "$(dirname "$0")/../.." || exit 1

skip_missing=0 quick=0 callgrind=1 only="" build=build-release
while [ $# -gt 0 ]; do
	case "$1" in
	--skip-missing) skip_missing=1 ;;
	--quick) quick=1 ;;
	--no-callgrind) callgrind=0 ;;
	--only) only=${2:-}; shift ;;
	--only=*) only=${1#--only=} ;;
	-h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) echo "fiber bench: unknown option '$1' (see --help)" >&2; exit 2 ;;
	*) build=$1 ;;
	esac
	shift
done
all_figs="switch yield chan spawn parked pingpong2"
figs=""
for f in ${only//,/ }; do
	case " $all_figs " in
	*" $f "*) figs="$figs $f" ;;
	*) echo "fiber bench: no figure named '$f' (figures: $all_figs)" >&2; exit 2 ;;
	esac
done
[ -n "$figs" ] || figs=$all_figs
case "$build" in
/*) ;;
*) build=$caller/$build ;;
esac

if [ "$quick" = 1 ]; then
	sw_args="--n 1000000 --runs 3" ops_args="--n 100000 --runs 3" pp_args="--n 10000 --runs 3"
	parked_n="--n 100000"
else
	sw_args="" ops_args="" pp_args="" parked_n=""
fi

out=$build/bench/fiber
log=$out/logs
missing=()

# 1. Dependencies and builds.
deps_ok=1
deps_msg=$(scripts/bench-deps 2>&1) || deps_ok=0
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" --buildtype=release >"/tmp/fiber-bench-setup.$$" 2>&1 || {
		echo "fiber bench: meson setup $build failed: $(tail -1 "/tmp/fiber-bench-setup.$$")"
		rm -f "/tmp/fiber-bench-setup.$$"
		exit 1
	}
	rm -f "/tmp/fiber-bench-setup.$$"
fi
mkdir -p "$log" "$out/go"
buildtype=$(meson introspect --buildoptions "$build" 2>/dev/null |
	grep -o '"name": "buildtype", "value": "[a-z]*"' | sed 's/.*"value": "//; s/"//')
buildtype=${buildtype:-unknown}

why() { # log: the first line of a build log that says what went wrong
	grep -m1 -E 'error|undefined reference|not found|cannot find|No such' "$1" 2>/dev/null |
		cut -c1-160 || true
}

declare -A have
if ninja -C "$build" bench/bench-fiber-switch bench/bench-fiber-weft >"$log/weft.log" 2>&1; then
	have[weft]=1
else
	echo "fiber bench: cannot build weft's bench programs: $(why "$log/weft.log"); see $log/weft.log"
	exit 1
fi
sw=$build/bench/bench-fiber-switch
fw=$build/bench/bench-fiber-weft

if command -v g++ >/dev/null 2>&1; then
	if g++ -O2 -o "$out/boost-context" bench/fiber/boost-context.cpp -lboost_context \
		>"$log/boost-context.log" 2>&1; then
		have[boost-context]=1
	else
		missing+=("boost-context (g++ failed: $(why "$log/boost-context.log"))")
	fi
	if g++ -O2 -o "$out/boost-fiber" bench/fiber/boost-fiber.cpp -lboost_fiber -lboost_context \
		>"$log/boost-fiber.log" 2>&1; then
		have[boost-fiber]=1
	else
		missing+=("boost-fiber (g++ failed: $(why "$log/boost-fiber.log"))")
	fi
else
	missing+=("boost-context and boost-fiber (no g++; scripts/bench-deps installs it)")
fi
if command -v go >/dev/null 2>&1; then
	if GO111MODULE=off GOFLAGS="" GOCACHE="$out/go/cache" GOPATH="$out/go/path" \
		go build -o "$out/fiber-go" bench/fiber/fiber.go >"$log/go.log" 2>&1; then
		have[go]=1
	else
		missing+=("go (go build failed: $(why "$log/go.log"))")
	fi
else
	missing+=("go (no go; scripts/bench-deps installs golang-go)")
fi
if [ ${#missing[@]} -gt 0 ] && [ "$skip_missing" = 0 ]; then
	list=$(printf '%s; ' "${missing[@]}")
	[ "$deps_ok" = 1 ] || list="$list scripts/bench-deps: $(echo "$deps_msg" | tail -1); "
	echo "fiber bench: cannot build: ${list%; } (or pass --skip-missing)"
	exit 1
fi

# 2. The figures.
raw=$out/raw.txt
: >"$raw"
failed=()
echo "# fiber bench $(date -u +%FT%TZ) on $(hostname): $(nproc) CPUs, load average" \
	"$(cut -d' ' -f1-3 /proc/loadavg); build $build ($buildtype); $(uname -m)"
[ "$buildtype" = release ] ||
	echo "# warning: $build is a $buildtype build, not release (weft's lock checks may be on)"
for m in "${missing[@]}"; do
	echo "# skipped: $m"
done

run() { # impl label command...: one process, its lines into raw
	local impl=$1 label=$2 lines rc
	shift 2
	[ -n "${have[$impl]:-}" ] || return 0
	lines=$(timeout 900 "$@" 2>"$log/run-$label.err")
	rc=$?
	if [ $rc -ne 0 ] || [ -z "$lines" ]; then
		failed+=("$label (exit $rc: $(tail -1 "$log/run-$label.err" | cut -c1-160))")
		return
	fi
	echo "$lines" | tee -a "$raw"
}

for f in $figs; do
	case $f in
	switch)
		# shellcheck disable=SC2086
		run weft switch-weft "$sw" $sw_args
		# shellcheck disable=SC2086
		run boost-context switch-boost "$out/boost-context" $sw_args
		;;
	yield | chan)
		# shellcheck disable=SC2086
		run weft "$f-weft" "$fw" "$f" $ops_args
		# shellcheck disable=SC2086
		run go "$f-go" "$out/fiber-go" "$f" $ops_args
		# shellcheck disable=SC2086
		run boost-fiber "$f-boost" "$out/boost-fiber" "$f" $ops_args
		;;
	spawn)
		# waves of 1,000 alive at once, on 1 and 2 threads; waves of 50, which fit in weft's
		# stack cache; waves of 10,000, past the ring (the injection queue) and the cache's
		# floor (the spare list keeps them)
		for tw in 1:1000 2:1000 1:50 1:10000; do
			t=${tw%:*} w=${tw#*:}
			# shellcheck disable=SC2086
			run weft "spawn$t-$w-weft" "$fw" spawn --threads $t --wave $w $ops_args
			# shellcheck disable=SC2086
			run go "spawn$t-$w-go" "$out/fiber-go" spawn --procs $t --wave $w $ops_args
		done
		;;
	parked)
		# 4 KiB stacks (a page each), and 2 KiB ones (two to a page, canaries only)
		# shellcheck disable=SC2086
		run weft parked-weft "$fw" parked $parked_n
		# shellcheck disable=SC2086
		run weft parked2k-weft "$fw" parked --stack 2048 $parked_n
		# shellcheck disable=SC2086
		run go parked-go "$out/fiber-go" parked $parked_n
		;;
	pingpong2)
		# shellcheck disable=SC2086
		run weft pingpong2-weft "$fw" pingpong2 $pp_args
		# shellcheck disable=SC2086
		run go pingpong2-go "$out/fiber-go" pingpong2 $pp_args
		;;
	esac
done

# 3. callgrind: instructions per operation for weft's figures, by difference of two sizes.
cg=$out/callgrind.txt
: >"$cg"
ir() { # out-file command...: total instructions (Ir) of one run under callgrind
	local f=$1
	shift
	timeout 900 valgrind --tool=callgrind --callgrind-out-file="$f" "$@" >/dev/null \
		2>>"$log/callgrind.err" || return 1
	sed -n 's/^summary: *//p; s/^totals: *//p' "$f" | head -1 | awk '{ print $1 }'
}
cg_fig() { # figure impl ops-per-n n1 n2 command... (an argument @N@ is replaced by n1, n2)
	local fig=$1 impl=$2 per=$3 n1=$4 n2=$5 a b
	shift 5
	a=$(ir "$out/cg.1" "${@/#@N@/$n1}") && b=$(ir "$out/cg.2" "${@/#@N@/$n2}") || {
		failed+=("callgrind $fig $impl (see $log/callgrind.err)")
		return
	}
	awk -v f="$fig" -v i="$impl" -v a="$a" -v b="$b" -v p="$per" -v n1="$n1" -v n2="$n2" \
		'BEGIN { printf "callgrind figure=%s impl=%s ir_per_op=%.1f\n", f, i,
			(b - a) / (p * (n2 - n1)) }' | tee -a "$cg"
}
if [ "$callgrind" = 1 ] && command -v valgrind >/dev/null 2>&1; then
	for f in $figs; do
		case $f in
		switch)
			for s in switch-weft switch-weft-fpu switch-ret; do
				# a switch per half round trip; no warm-up, one run
				cg_fig "$s" "${s#switch-}" 2 100000 200000 \
					"$sw" --n @N@ --runs 1 --warmup 0 "$s"
			done
			;;
		yield | chan)
			# one untimed run and one timed run of 2N operations each
			cg_fig "$f" weft 4 20000 40000 "$fw" "$f" --n @N@ --runs 1
			;;
		spawn)
			cg_fig spawn-1t weft 2 5000 10000 "$fw" spawn --threads 1 --n @N@ --runs 1
			;;
		esac
	done
	rm -f "$out/cg.1" "$out/cg.2"
elif [ "$callgrind" = 1 ]; then
	echo "# callgrind skipped: no valgrind (scripts/bench-deps installs it)"
fi

# 4. Ratios and the table.
awk -v cgfile="$cg" '
function kv(line, key,    n, i, a, p) {
	n = split(line, a, " ")
	for (i = 1; i <= n; i++) {
		p = index(a[i], "=")
		if (substr(a[i], 1, p - 1) == key)
			return substr(a[i], p + 1)
	}
	return ""
}
FILENAME == cgfile { irop[kv($0, "figure") "/" kv($0, "impl")] = kv($0, "ir_per_op"); next }
{
	name = kv($0, "name"); impl = kv($0, "impl"); th = kv($0, "threads")
	if (name == "parked") {
		v = kv($0, "peak_rss_kb") / 1024
		unit = "MiB peak RSS"
	} else {
		v = kv($0, "ns_per_op")
		unit = "ns/op"
	}
	wv = kv($0, "wave"); ss = kv($0, "stack_size")
	key = name (name == "spawn" ? "-" th "t" (wv != "" && wv != 1000 ? "-w" wv : "") : "")
	if (name == "parked" && impl == "weft" && ss != 4096) {
		# weft with other stacks: its own row, compared with the same Go figure
		key = "parked-stack" ss
		if (!(key in seen)) { order[++n] = key; seen[key] = 1 }
		units[key] = unit
		val[key "/weft"] = v
		impls[key] = impls[key] " weft"
		pending[key] = 1
		next
	}
	if (name == "parked" && impl == "go")
		for (p in pending) {
			val[p "/go"] = v
			impls[p] = impls[p] " go"
		}
	if (name ~ /^switch-/) {
		# the raw-switch family: one figure per line, keyed by its own name
		val[key] = v
		units[key] = unit
		if (!(key in seen)) { order[++n] = key; seen[key] = 1 }
	} else {
		val[key "/" impl] = v
		units[key] = unit
		if (!(key in seen)) { order[++n] = key; seen[key] = 1 }
		impls[key] = impls[key] " " impl
	}
}
function r(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
END {
	# ratios
	if ("switch-weft" in val) {
		s = "ratio figure=switch weft/ret=" r(val["switch-weft"], val["switch-ret"])
		s = s " weft/boost-context=" r(val["switch-weft"], val["switch-boost-context"])
		s = s " weft-fpu/boost-context=" r(val["switch-weft-fpu"], val["switch-boost-context"])
		s = s " weft-fpu-mixed/boost-context-mixed=" \
			r(val["switch-weft-fpu-mixed"], val["switch-boost-context-mixed"])
		print s
	}
	for (i = 1; i <= n; i++) {
		k = order[i]
		if (k ~ /^switch-/) continue
		s = "ratio figure=" k
		m = split(impls[k], a, " ")
		for (j = 1; j <= m; j++)
			if (a[j] != "weft")
				s = s " weft/" a[j] "=" r(val[k "/weft"], val[k "/" a[j]])
		print s
	}
	# the table
	print ""
	printf "%-24s %12s  %-44s %s\n", "figure", "weft", "peers (weft/peer)", "weft Ir/op"
	for (i = 1; i <= n; i++) {
		k = order[i]
		if (k ~ /^switch-/) {
			if (k == "switch-ret" || k ~ /boost/) continue
			peer = ""
			if (k == "switch-weft") {
				peer = sprintf("ret %s (%s), boost %s (%s)", val["switch-ret"],
					r(val[k], val["switch-ret"]), val["switch-boost-context"],
					r(val[k], val["switch-boost-context"]))
			} else if (k == "switch-weft-fpu") {
				peer = sprintf("boost %s (%s)", val["switch-boost-context"],
					r(val[k], val["switch-boost-context"]))
			} else if (k == "switch-weft-fpu-mixed") {
				peer = sprintf("boost %s (%s)", val["switch-boost-context-mixed"],
					r(val[k], val["switch-boost-context-mixed"]))
			}
			c = irop[k "/" substr(k, 8)]
			if (k == "switch-weft" && ("switch-ret/ret" in irop))
				c = c " (ret " irop["switch-ret/ret"] ")"
			printf "%-24s %9s ns  %-44s %s\n", k, val[k], peer, c
			continue
		}
		peer = ""
		m = split(impls[k], a, " ")
		for (j = 1; j <= m; j++)
			if (a[j] != "weft")
				peer = peer sprintf("%s%s %s (%s)", peer == "" ? "" : ", ", a[j],
					val[k "/" a[j]], r(val[k "/weft"], val[k "/" a[j]]))
		c = irop[(k == "spawn-1t" ? "spawn-1t" : k) "/weft"]
		w = (k "/weft") in val ? val[k "/weft"] : "failed"
		if (units[k] != "ns/op") {
			# peak RSS in MiB: whole numbers
			if (w != "failed") w = sprintf("%.0f", w)
			gsub(/\.[0-9]+ \(/, " (", peer)
		}
		printf "%-24s %9s %s  %-44s %s\n", k, w, units[k] == "ns/op" ? "ns" : "MiB", peer, c
	}
}' "$cg" "$raw"
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); raw lines: $raw"

if [ ${#failed[@]} -gt 0 ]; then
	echo "fiber bench: failed: $(printf '%s; ' "${failed[@]}" | sed 's/; $//')"
	exit 1
fi
exit 0
