#!/usr/bin/env bash
# tests/fuzz/run.sh — build and run the libFuzzer targets (`make fuzz FUZZ_SECONDS=N`).
#
# Builds every tests/fuzz/fuzz_*.c with clang -g -O1 -fsanitize=fuzzer,address,undefined
# (undefined behaviour aborts) against the sources of core/, rules/ and conf/ (an
# archive: a target links only what it uses; nothing of fcgi/ or db/ is needed) into
# build-fuzz/, then runs each target for FUZZ_SECONDS seconds on a scratch copy of its
# seed corpus tests/fuzz/corpus/<name>/ (fuzz_event -> corpus/event/), so the seeds stay
# as they are; tests/fuzz/<name>.dict is used when present. Prints per target the
# executions and the crashes; a crashing input is saved under
# build-fuzz/crashes/<target>/ (crash-*, leak-*, timeout-*, oom-*) and the script exits
# 1. Reproduce one with: build-fuzz/<target> build-fuzz/crashes/<target>/<file>
#
# Environment: FUZZ_SECONDS (default 10), FUZZ_TARGETS (names, default all),
# FUZZ_CC (default clang), FUZZ_KEEP_CORPUS=1 keeps the grown corpora under
# build-fuzz/corpus/<name>/ (default: scratch, removed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

SECONDS_EACH=${FUZZ_SECONDS:-10}
CC=${FUZZ_CC:-clang}
OUT=$ROOT/build-fuzz
OBJ=$OUT/obj

say() { printf 'fuzz: %s\n' "$*"; }

[[ $SECONDS_EACH =~ ^[0-9]+$ ]] && ((SECONDS_EACH >= 1)) || {
	say "FUZZ_SECONDS must be a positive number"
	exit 2
}
if ! command -v "$CC" >/dev/null; then
	if (($(id -u) == 0)) && [[ $CC == clang ]]; then
		say "installing clang"
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			clang libclang-rt-dev >/dev/null 2>&1 ||
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				clang >/dev/null
	else
		say "$CC not found: apt-get install clang"
		exit 1
	fi
fi

PKGS="json-c yaml-0.1"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CFLAGS="-g -O1 -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -I. $SAN
	$(pkg-config --cflags $PKGS)"
LIBS="$(pkg-config --libs $PKGS) -lgmp -lcrypto -lm"

# ---------------------------------------------------------------- build

mkdir -p -- "$OBJ" "$OUT/crashes"
# A header change rebuilds everything (simple and safe); otherwise only newer sources.
newest_header=$(stat -c %Y core/*.h rules/*.h conf/*.h | sort -n | tail -n 1)
objs=()
build_failed=""
for src in core/*.c rules/*.c conf/*.c; do
	o=$OBJ/${src%.c}.o
	objs+=("$o")
	if [[ -f $o && $o -nt $src ]] && (($(stat -c %Y "$o") >= newest_header)); then
		continue
	fi
	mkdir -p -- "$(dirname "$o")"
	# shellcheck disable=SC2086
	$CC $CFLAGS -fsanitize=fuzzer-no-link -c "$src" -o "$o" || build_failed=1
done
[[ -z $build_failed ]] || {
	say "building the library for the fuzzers failed"
	exit 1
}
rm -f -- "$OUT/librfevents-fuzz.a"
ar rcs "$OUT/librfevents-fuzz.a" "${objs[@]}"

targets=()
for src in tests/fuzz/fuzz_*.c; do
	t=$(basename "$src" .c)
	if [[ -n ${FUZZ_TARGETS:-} ]] && ! [[ " $FUZZ_TARGETS " == *" $t "* || " $FUZZ_TARGETS " == *" ${t#fuzz_} "* ]]; then
		continue
	fi
	# shellcheck disable=SC2086
	if ! $CC $CFLAGS -fsanitize=fuzzer "$src" "$OUT/librfevents-fuzz.a" $LIBS -o "$OUT/$t"; then
		say "building $t failed"
		exit 1
	fi
	targets+=("$t")
done
((${#targets[@]})) || {
	say "no targets (FUZZ_TARGETS=${FUZZ_TARGETS:-})"
	exit 1
}

# ---------------------------------------------------------------- run

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/rfevents-fuzz.XXXXXX")
trap 'rm -rf -- "$SCRATCH"' EXIT

total_execs=0
total_crashes=0
failed=()
say "${#targets[@]} targets, ${SECONDS_EACH}s each"
for t in "${targets[@]}"; do
	name=${t#fuzz_}
	seeds=tests/fuzz/corpus/$name
	work=$SCRATCH/corpus-$name
	if [[ -n ${FUZZ_KEEP_CORPUS:-} ]]; then
		work=$OUT/corpus/$name
	fi
	mkdir -p -- "$work"
	nseeds=0
	if [[ -d $seeds ]]; then
		cp -r -- "$seeds"/. "$work"/
		nseeds=$(find "$seeds" -type f | wc -l)
	fi
	crashdir=$OUT/crashes/$t
	mkdir -p -- "$crashdir"
	before=$(find "$crashdir" -type f | wc -l)
	dict=()
	[[ -f tests/fuzz/$name.dict ]] && dict=(-dict="tests/fuzz/$name.dict")
	log=$SCRATCH/$t.log
	rc=0
	"$OUT/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$crashdir/" "${dict[@]}" "$work" \
		>"$log" 2>&1 || rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	execs=${execs:-0}
	crashes=$(($(find "$crashdir" -type f | wc -l) - before))
	if ((rc != 0 && crashes == 0)); then
		crashes=1     # died without leaving an artifact: still a failure
	fi
	final=$(find "$work" -type f | wc -l)
	printf 'fuzz: %-12s %10s executions  %d crashes  (corpus %d seeds -> %d inputs)\n' \
		"$t" "$execs" "$crashes" "$nseeds" "$final"
	total_execs=$((total_execs + execs))
	total_crashes=$((total_crashes + crashes))
	if ((crashes > 0)); then
		failed+=("$t")
		grep -E -A30 '^==[0-9]+==ERROR|runtime error:|deadly signal|SUMMARY:' "$log" | head -n 60 ||
			tail -n 40 "$log"
		ls -t "$crashdir" | head -n 3 | sed "s|^|fuzz:   $crashdir/|"
	fi
done
say "total: $total_execs executions, $total_crashes crashes in ${#targets[@]} targets"
if ((${#failed[@]})); then
	say "FAIL: ${failed[*]} (inputs under $OUT/crashes/)"
	exit 1
fi
