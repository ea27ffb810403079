# The README's two commands, and a few conveniences. The build itself is meson's (build/).
.PHONY: all run check bench bench-pool bench-fiber bench-watch install clean

all:
	@scripts/deps build
	@[ -f build/build.ninja ] || meson setup build
	ninja -C build

# Build and run `weft tour`, the main job.
run: all
	build/tools/weft/weft tour

# Build and run every test suite: default build (and unit tests under valgrind), ASan+UBSan, TSan.
check:
	scripts/check

bench: all
	build/bench/weft-bench
	bench/watch/run.sh

# The pool against its peers (plain C, GLib, Java, Go), side by side; installs the peers first.
bench-pool:
	bench/pool/run.sh

# The fibers against their peers (Go, Boost.Context, Boost.Fiber), side by side, with callgrind
# instruction counts; installs the peers first.
bench-fiber:
	bench/fiber/run.sh

# The lock monitor (weft watch, weft_mutex) against native locks, ThreadSanitizer and Helgrind:
# lock costs, memcached's throughput, the known-answer programs; installs what it needs first.
bench-watch:
	bench/watch/run.sh

install: all
	meson install -C build

clean:
	rm -rf build build-asan build-tsan build-release build-aarch64
