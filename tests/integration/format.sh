#!/usr/bin/env bash
# format.sh SOURCE_ROOT: every C file in the tree follows .clang-format (STYLE.md rule 15).
# Prints TAP: one case per file.
set -u
cd "$1" || exit 1
if ! command -v clang-format >/dev/null 2>&1; then
	echo "1..1"
	echo "not ok 1 - clang-format is not installed (scripts/deps check installs it)"
	exit 1
fi
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find include src tools tests bench examples -name '*.[ch]')
n=0 bad=0
echo "1..$(echo "$files" | wc -l)"
for f in $files; do
	n=$((n + 1))
	if out=$(clang-format --dry-run --Werror "$f" 2>&1); then
		echo "ok $n - $f"
	else
		echo "not ok $n - $f is not clang-formatted (run: clang-format -i $f)"
		echo "$out" | head -6 | sed 's/^/# /'
		bad=$((bad + 1))
	fi
done
[ "$bad" -eq 0 ]
