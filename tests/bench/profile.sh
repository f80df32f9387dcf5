#!/usr/bin/env bash
# tests/bench/profile.sh — `make bench PROFILE=1`: where the time goes in one scenario.
#
# Starts the bench's own stack (as tests/bench/run.sh: var/bench, tenant "bench",
# 1000 known users), runs one scenario with wrk for BENCH_SECONDS and samples it:
#
#   perf      (default when it can sample here) `perf record -g -a` on the whole machine;
#             prints the CPU share per process, then the top entries (self time) of
#             this stack's FastCGI workers and of its mariadbd. Hardware counters are
#             used when the machine has them (perf stat -e instructions works), else
#             the cpu-clock software event (virtual machines).
#   callgrind (fallback when perf cannot sample, or BENCH_PROFILE_TOOL=callgrind) one
#             FastCGI worker under valgrind --tool=callgrind (PROCS=1,
#             RFEVENTS_MAX_REQUESTS as a bound); prints its top entries. mariadbd is
#             not profiled then.
#
# Settings (environment; see also tests/bench/lib.sh):
#   BENCH_PROFILE_SCENARIO  single16 (default) | single64 | batch | dup
#   BENCH_PROFILE_TOOL      auto (default) | perf | callgrind
#   BENCH_PROFILE_TOP       entries shown per process (default 15)
#   BENCH_PROFILE_CALLGRAPH perf's call-graph mode: fp (default, -g) | dwarf
# The recording stays in var/bench/ (perf-*.data / callgrind.out.*) for perf report
# or callgrind_annotate.
set -euo pipefail

# shellcheck source=tests/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIO=${BENCH_PROFILE_SCENARIO:-single16}
TOOL=${BENCH_PROFILE_TOOL:-auto}
TOP=${BENCH_PROFILE_TOP:-15}
CALLGRAPH=${BENCH_PROFILE_CALLGRAPH:-fp}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

case $SCENARIO in
single16 | single64 | batch | dup) ;;
*) die "BENCH_PROFILE_SCENARIO must be single16, single64, batch or dup" ;;
esac

# run_scenario SECONDS TAG — the scenario's wrk run (TAG keeps the new external ids
# of each run apart); RESULT in R.
run_scenario() {
	local log=$LOGS/profile-$SCENARIO-$2.log n=$2-$NONCE
	case $SCENARIO in
	single16) wrk_run "$log" "$1" 16 single BENCH_NONCE="p16-$n" ;;
	single64) wrk_run "$log" "$1" 64 single BENCH_NONCE="p64-$n" ;;
	batch) wrk_run "$log" "$1" 4 batch BENCH_NONCE="pb-$n" BENCH_ITEMS=1000 BENCH_SORTED=1 ;;
	dup) wrk_run "$log" "$1" 16 replay ;;
	esac
	say "$SCENARIO ($2): ${R[requests]} requests, accepted ${R[accepted]}," \
		"duplicate ${R[duplicate]}, errors $((R[item_errors] + R[http_errors] + R[socket_errors]))"
}

# flat_top SAMPLES PIDS TITLE — the top entries (self time) of the processes PIDS
# (comma-separated) in SAMPLES (perf script -F comm,pid,ip,sym,dso output),
# relative to all samples of those processes.
flat_top() {
	awk -v pids=",$2," -v top="$TOP" -v title="$3" '
	{
		split($2, a, "/")
		if (index(pids, "," a[1] ",") == 0)
			next
		dso = $NF
		gsub(/[()]/, "", dso)
		n = split(dso, d, "/")
		sym = $4
		for (i = 5; i < NF; i++)
			sym = sym " " $i
		c[sym "  " (d[n] ~ /^\[/ ? d[n] : "[" d[n] "]")]++
		by[d[n]]++
		t++
	}
	END {
		printf "\n== %s: top %d of %d samples (self time) ==\n", title, top, t
		line = ""
		for (k in by)
			if (by[k] * 100 >= t)
				line = line sprintf("%.0f%% %s, ", 100 * by[k] / t, k)
		print "by object (1% or more): " substr(line, 1, length(line) - 2)
		for (k in c)
			printf "%7.2f%%  %s\n", 100 * c[k] / t, k | "sort -rn | head -n " top
	}' "$1"
}

profile_perf() {
	local event=$1 data=$VAR/perf-$SCENARIO-$STAMP.data samples workers db_pid perf_pid
	local cg=(-g)
	[[ $CALLGRAPH == dwarf ]] && cg=(--call-graph dwarf,16384)
	workers=$(worker_pids | paste -sd,)
	db_pid=$(cat "$VAR/mysql/mysqld.pid")
	say "perf record -e $event ${cg[*]} -a during the $SCENARIO run" \
		"(workers $workers, mariadbd $db_pid)"
	perf record -e "$event" "${cg[@]}" -F 999 -a -o "$data" -- sleep "$((SECS + 1))" \
		>"$LOGS/perf-record.log" 2>&1 &
	perf_pid=$!
	sleep 0.5
	run_scenario "$SECS" run
	wait "$perf_pid" || { cat "$LOGS/perf-record.log" >&2; die "perf record failed"; }
	samples=$VAR/perf-$SCENARIO-$STAMP.samples
	perf script -i "$data" -F comm,pid,ip,sym,dso -G >"$samples" 2>/dev/null ||
		die "perf script failed on $data"

	printf '\n== %s, %s s, perf %s, whole machine: CPU share by process (* = this stack) ==\n' \
		"$SCENARIO" "$SECS" "$event"
	awk -v ours=",$workers,$db_pid,$(cat "$VAR/lighttpd.pid")," '
		{ split($2, a, "/"); k = a[1] " " $1; c[k]++; t++ }
		END { for (k in c) { split(k, b, " "); m = index(ours, "," b[1] ",") ? " *" : ""
			printf "%7.2f%%  %s%s\n", 100 * c[k] / t, k, m | "sort -rn | head -n 12" } }' "$samples"
	flat_top "$samples" "$workers" "FastCGI workers (pids $workers)"
	flat_top "$samples" "$db_pid" "mariadbd (pid $db_pid)"
	printf '\nrecording: %s (perf report -i %s --sort pid,dso,sym)\n' "$data" "$data"
}

profile_callgrind() {
	local wrapper=$VAR/fcgi-callgrind.sh max=${BENCH_PROFILE_REQUESTS:-100000} f
	need_pkg valgrind valgrind
	rm -f -- "$VAR"/callgrind.out.*
	cat >"$wrapper" <<-EOF
		#!/bin/sh
		# written by tests/bench/profile.sh: one FastCGI worker under callgrind
		RFEVENTS_MAX_REQUESTS=$max exec valgrind --tool=callgrind \\
			--callgrind-out-file=$VAR/callgrind.out.%p $FCGI_BIN
	EOF
	chmod 755 "$wrapper"
	"$STACK" web-stop
	PROCS=1 FCGI_BIN=$wrapper "$STACK" web-start
	say "one FastCGI worker under callgrind; $SCENARIO for $SECS s"
	run_scenario "$SECS" run
	"$STACK" web-stop     # the worker exits on SIGTERM and writes its profile
	STARTED_WEB=""
	for f in "$VAR"/callgrind.out.*; do
		[[ -s $f ]] || continue
		printf '\n== %s, callgrind: top %s of the FastCGI worker (%s; self instructions) ==\n' \
			"$SCENARIO" "$TOP" "$f"
		callgrind_annotate --auto=no --threshold=100 "$f" 2>/dev/null |
			grep -E '^ *[0-9,]+ +\(' | head -n "$TOP" || true
	done
	printf '\nmariadbd is not profiled with callgrind (too slow); use perf where it works.\n'
}

need_pkg wrk wrk
if [[ $TOOL == auto || $TOOL == perf ]]; then
	need_pkg perf linux-perf
	if perf stat -e instructions -x, true 2>&1 | grep -q '^[0-9]'; then
		EVENT=cycles
	elif perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1; then
		EVENT=cpu-clock
	elif [[ $TOOL == perf ]]; then
		die "perf cannot sample here (perf_event_paranoid, container?)"
	else
		EVENT=""
	fi
	[[ -n $EVENT ]] && TOOL=perf || TOOL=callgrind
fi
[[ $TOOL == perf || $TOOL == callgrind ]] || die "BENCH_PROFILE_TOOL must be auto, perf or callgrind"

stack_up
say "stack up on 127.0.0.1:$PORT, seeding $USERS users"
seed_users
[[ $SCENARIO == dup ]] && seed_dups
# a short warm-up: connections, prepared statements, key cache, page cache
run_scenario 2 warmup
if [[ $TOOL == perf ]]; then
	profile_perf "$EVENT"
else
	profile_callgrind
fi
