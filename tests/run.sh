#!/usr/bin/env bash
# tests/run.sh — the test runner behind `make test`.
#
# 1. Runs every unit test binary bin/test_* (built from tests/unit/test_*.c). Each prints
#    "<name>: N passed, N failed" and exits non-zero on failure; a binary that crashes,
#    hangs (UNIT_TIMEOUT, default 300 s) or exits non-zero without reporting a failure
#    counts as one failed test.
# 2. Starts a fresh test stack under var/test (private MariaDB, lighttpd on 127.0.0.1 at
#    TEST_PORT, default 18080, or the next free port; RFEVENTS_CONF=tests/conf), applies
#    the schema and runs tests/integration/run.py (INTEGRATION_TIMEOUT, default 1800 s),
#    whose last "N passed, N failed" line is counted. The suite gets:
#      BASE_URL RFEVENTS_DB RFEVENTS_CONF RFEVENTS_BIN RFEVENTS_VAR RFEVENTS_TESTDATA
#      RFEVENTS_STACK (tests/stack.sh; with the exported VAR, PORT, CONF and PROCS it
#      can stop and start the database or the web server of this stack)
# 3. With SANITIZE set (binaries built with sanitizers), the sanitizer options are
#    exported to the units and to the app, and every sanitizer report in the app's log
#    counts as one failed test.
# The stack is always stopped at the end. The last line printed is "N passed, N failed";
# the exit status is non-zero when anything failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STACK=$ROOT/tests/stack.sh
export VAR=$ROOT/var/test
UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}
INTEGRATION_TIMEOUT=${INTEGRATION_TIMEOUT:-1800}

PASSED=0
FAILED=0
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/rfevents-test.XXXXXX")
STACK_UP=""

note() {
	printf '%s\n' "$*"
}

# last_counts FILE — set P and F from the last "N passed, N failed" line; status 1 if none.
last_counts() {
	local line
	line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1) || return 1
	[[ $line =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]] || return 1
	P=${BASH_REMATCH[1]}
	F=${BASH_REMATCH[2]}
}

# count NAME RC LOG — add the result of one test program to the totals.
count() {
	local name=$1 rc=$2 log=$3 P F
	if ! last_counts "$log"; then
		if ((rc == 124)); then
			note "FAIL $name: timed out"
		else
			note "FAIL $name: no \"N passed, N failed\" line (exit status $rc)"
		fi
		FAILED=$((FAILED + 1))
		return
	fi
	PASSED=$((PASSED + P))
	FAILED=$((FAILED + F))
	if ((rc != 0 && F == 0)); then
		# Crashed after its report, a sanitizer finding at exit (leaks), or the like.
		note "FAIL $name: exit status $rc although it reported no failure"
		FAILED=$((FAILED + 1))
	fi
}

stop_stack() {
	if [[ -n $STACK_UP ]]; then
		STACK_UP=""
		"$STACK" stop || note "warning: could not stop the test stack under $VAR"
	fi
}

SUMMARY_DONE=""

cleanup() {
	local rc=$?
	stop_stack
	rm -rf -- "$SCRATCH"
	if [[ -z $SUMMARY_DONE ]]; then
		# Interrupted or aborted: still end with the totals, the run itself failing.
		note "tests/run.sh: stopped early (exit status $rc)"
		printf '%d passed, %d failed\n' "$PASSED" "$((FAILED + 1))"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One test run per tree at a time: a second one would wipe the first one's var/test.
mkdir -p -- "$ROOT/var"
exec 9>"$ROOT/var/test.lock"
if ! flock -n 9; then
	note "another test run in this tree holds $ROOT/var/test.lock; waiting for it"
	flock 9
fi

if [[ -n ${SANITIZE:-} ]]; then
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
	export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi

if [[ -z ${RFEVENTS_TESTDATA:-} && -d $ROOT/../shared/testdata ]]; then
	RFEVENTS_TESTDATA=$(cd "$ROOT/../shared/testdata" && pwd)
fi
export RFEVENTS_TESTDATA=${RFEVENTS_TESTDATA:-}

# ---------------------------------------------------------------- unit tests

shopt -s nullglob
units=0
for bin in bin/test_*; do
	[[ -f $bin && -x $bin ]] || continue
	name=${bin#bin/}
	if [[ ! -f tests/unit/$name.c ]]; then
		note "skip $bin: no tests/unit/$name.c (stale binary)"
		continue
	fi
	units=$((units + 1))
	log=$SCRATCH/$name.log
	rc=0
	timeout --foreground "$UNIT_TIMEOUT" "$bin" >"$log" 2>&1 || rc=$?
	cat "$log"
	count "$name" "$rc" "$log"
done
shopt -u nullglob
note "unit tests: $units programs, $PASSED passed, $FAILED failed"

# ---------------------------------------------------------------- test stack

port_free() {
	python3 - "$1" <<-'EOF' 2>/dev/null
		import socket, sys
		s = socket.socket()
		s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
		s.bind(("127.0.0.1", int(sys.argv[1])))
	EOF
}

pick_port() {
	local p=$1 i
	for ((i = 0; i < 200; i++, p++)); do
		if ((p < 65536)) && port_free "$p"; then
			printf '%s\n' "$p"
			return 0
		fi
	done
	return 1
}

start_stack() {
	# A stack left over from an interrupted run would hold var/test: stop it first.
	"$STACK" stop >/dev/null 2>&1 || true
	rm -rf -- "$VAR"
	mkdir -p -- "$VAR"
	STACK_UP=1
	PORT=$(pick_port "${TEST_PORT:-18080}") || {
		note "no free port from ${TEST_PORT:-18080} on"
		return 1
	}
	export PORT CONF=$ROOT/tests/conf PROCS=${PROCS:-4}
	[[ -d $CONF ]] || {
		note "$CONF does not exist"
		return 1
	}
	"$STACK" db-start && "$STACK" migrate && "$STACK" web-start
}

integration=""
if ! start_stack; then
	note "FAIL test stack: could not start (logs under $VAR)"
	FAILED=$((FAILED + 1))
elif [[ ! -f tests/integration/run.py ]]; then
	note "skip integration tests: tests/integration/run.py does not exist yet"
else
	RFEVENTS_DB=$(sed -n 's/^RFEVENTS_DB=//p' "$VAR/db.env")
	export BASE_URL=http://127.0.0.1:$PORT RFEVENTS_DB RFEVENTS_CONF=$CONF \
		RFEVENTS_BIN=$ROOT/bin/rfevents RFEVENTS_VAR=$VAR RFEVENTS_STACK=$STACK
	note "integration tests against $BASE_URL (state in $VAR)"
	log=$SCRATCH/integration.log
	rc=0
	timeout --foreground "$INTEGRATION_TIMEOUT" python3 tests/integration/run.py 2>&1 | tee "$log" || rc=$?
	before_p=$PASSED before_f=$FAILED
	count integration "$rc" "$log"
	integration="integration tests: $((PASSED - before_p)) passed, $((FAILED - before_f)) failed"
fi

# Stop before looking at the log: the app writes leak reports when it exits.
stop_stack

weblog=$VAR/lighttpd-error.log
if [[ -s $weblog ]]; then
	if [[ -n ${SANITIZE:-} ]]; then
		san=$(grep -c -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$weblog" || true)
		if ((san > 0)); then
			note "FAIL sanitizers: $san report(s) from the app in $weblog:"
			grep -n -E -A12 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$weblog" |
				head -n 200
			FAILED=$((FAILED + san))
		fi
	fi
	died=$(grep -c 'child signalled' "$weblog" || true)
	if ((died > 0)); then
		note "note: $died FastCGI process(es) died by a signal (killed by a test, or a crash): see $weblog"
	fi
fi

[[ -n $integration ]] && note "$integration"
SUMMARY_DONE=1
printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
