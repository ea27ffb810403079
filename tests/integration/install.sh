#!/usr/bin/env bash
# install.sh SOURCE_ROOT BUILD_ROOT: install weft into a temporary folder and build a program
# against it with pkg-config (shared and static) and with CMake's find_package; check that the
# shared library exports only weft_ symbols. Prints TAP.
set -u
src=$1 build=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0 failed=0
echo "1..7"
result() { # ok? description [log]
	n=$((n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		failed=$((failed + 1))
		[ -n "${3:-}" ] && [ -f "$3" ] && sed 's/^/# /' "$3"
	fi
}

dest=$tmp/dest
meson install -C "$build" --no-rebuild --destdir "$dest" >"$tmp/install.log" 2>&1
result $? "meson install into a DESTDIR" "$tmp/install.log"

prefix=$(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"))')
libdir=$(meson introspect "$build" --buildoptions | python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="libdir"))')
root=$dest$prefix
lib=$root/$libdir

ok=0
for f in "$root/include/weft.h" "$root/include/weft/core.h" "$lib/libweft.so" "$lib/libweft.a" \
	"$lib/pkgconfig/weft.pc" "$lib/cmake/weft/weftConfig.cmake" "$lib/cmake/weft/weftConfigVersion.cmake" \
	"$root/bin/weft"; do
	[ -e "$f" ] || { echo "# missing: $f"; ok=1; }
done
result $ok "headers, libraries, pkg-config and CMake files, the weft command are installed"

# Only weft_ symbols leave the shared library (weft__ internals and everything else stay hidden).
nm -D --defined-only "$lib/libweft.so" | awk '{print $3}' | grep -v '^WEFT_0$' >"$tmp/syms"
bad=$(grep -Ev '^weft_[a-z]' "$tmp/syms" | head -5)
[ -s "$tmp/syms" ] && [ -z "$bad" ]
result $? "libweft.so exports only weft_ symbols ($(wc -l <"$tmp/syms") exported${bad:+; also: $bad})"

export PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
{
	cc -o "$tmp/c-shared" "$src/tests/integration/consumer/main.c" $(pkg-config --cflags --libs weft) &&
		LD_LIBRARY_PATH=$lib "$tmp/c-shared" | grep -q '^weft 0\.1\.0 cpus=[0-9]'
} >"$tmp/pc.log" 2>&1
result $? "a program builds and runs against the shared library through pkg-config" "$tmp/pc.log"

{
	cc -static-libgcc -o "$tmp/c-static" "$src/tests/integration/consumer/main.c" \
		$(pkg-config --cflags weft) "$lib/libweft.a" $(pkg-config --static --libs-only-l weft | sed 's/-lweft//') &&
		"$tmp/c-static" | grep -q '^weft 0\.1\.0 cpus=[0-9]' &&
		! ldd "$tmp/c-static" | grep -q libweft
} >"$tmp/pcs.log" 2>&1
result $? "a program links the static library with pkg-config --static's dependencies" "$tmp/pcs.log"

{
	cmake -S "$src/tests/integration/consumer" -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$root" &&
		cmake --build "$tmp/cmake" &&
		LD_LIBRARY_PATH=$lib "$tmp/cmake/consumer_shared" | grep -q '^weft 0\.1\.0' &&
		"$tmp/cmake/consumer_static" | grep -q '^weft 0\.1\.0'
} >"$tmp/cmake.log" 2>&1
result $? "CMake find_package(weft) gives weft::weft and weft::weft_static" "$tmp/cmake.log"

{
	mkdir -p "$tmp/c3" &&
		sed 's/find_package(weft 0.1 REQUIRED)/find_package(weft 1 REQUIRED)/' \
			"$src/tests/integration/consumer/CMakeLists.txt" >"$tmp/c3/CMakeLists.txt" &&
		cp "$src/tests/integration/consumer/main.c" "$tmp/c3/" &&
		! cmake -S "$tmp/c3" -B "$tmp/c3/b" -DCMAKE_PREFIX_PATH="$root"
} >"$tmp/cmake3.log" 2>&1
result $? "CMake refuses an incompatible major version" "$tmp/cmake3.log"
[ "$failed" -eq 0 ]
