#!/usr/bin/env bash
# tests/run.sh — the test runner behind `make test`.
#
# 1. Runs every unit test binary bin/test_* (built from tests/unit/test_*.c). Each prints
#    "<name>: N passed, N failed" and exits non-zero on failure; a binary that crashes,
#    hangs (UNIT_TIMEOUT, default 300 s) or exits non-zero without reporting a failure
#    counts as one failed test.
# 2. Starts a fresh private MariaDB under var/test (TEST_VAR) and applies the schema.
#    Then, for each web server of TEST_SERVERS (default "lighttpd apache cgi nginx":
#    lighttpd mod_fastcgi, Apache mod_fcgid, Apache plain CGI, nginx + spawn-fcgi; see
#    tests/stack.sh), starts that server with the app on 127.0.0.1 at TEST_PORT (default
#    18080, or the next free port; RFEVENTS_CONF=tests/conf), runs the same
#    tests/integration/run.py against it (INTEGRATION_TIMEOUT per server, default
#    1200 s), counts its last "N passed, N failed" line and stops the server. The
#    database is shared: the tests make unique ids. The suite gets:
#      BASE_URL RFEVENTS_DB RFEVENTS_CONF RFEVENTS_BIN RFEVENTS_VAR RFEVENTS_TESTDATA
#      RFEVENTS_STACK (tests/stack.sh; with the exported SERVER, VAR, PORT, CONF and
#      PROCS it can stop and start the database or the web server of this stack)
# 3. With SANITIZE set (binaries built with sanitizers), the sanitizer options are
#    exported to the units and to the app, and every sanitizer report in the logs that
#    hold the app's stderr (tests/stack.sh web-logs) counts as one failed test.
# The stack is always stopped at the end. Totals per server are printed, and the last
# line is "N passed, N failed" over everything; the exit status is non-zero when
# anything failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STACK=$ROOT/tests/stack.sh

# Apache, nginx and spawn-fcgi run the app as www-data when started as root. When
# that account cannot reach this checkout (a clone under /root, say), the app binary,
# the test configuration and the state folder are staged under /tmp, which it can.
STAGE=""
if [[ $(id -u) == 0 && -z ${TEST_VAR:-} ]] && id -u "${WEB_USER:-www-data}" >/dev/null 2>&1 &&
	! runuser -u "${WEB_USER:-www-data}" -- test -r "$ROOT/tests/conf/tenants/acme.yaml" 2>/dev/null; then
	STAGE=/tmp/rfevents-test-$(printf '%s' "$ROOT" | md5sum | cut -c1-12)
	rm -rf -- "$STAGE"
	mkdir -p -- "$STAGE/bin"
	chmod 755 "$STAGE" "$STAGE/bin"
	export TEST_VAR=$STAGE/var
fi
export VAR=${TEST_VAR:-$ROOT/var/test}
UNIT_TIMEOUT=${UNIT_TIMEOUT:-300}
INTEGRATION_TIMEOUT=${INTEGRATION_TIMEOUT:-1200}
TEST_SERVERS=${TEST_SERVERS:-lighttpd apache cgi nginx}
read -r -a SERVER_LIST <<<"$TEST_SERVERS"

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

# One test run per state directory at a time: a second one would wipe the first one's.
mkdir -p -- "$(dirname -- "$VAR")"
exec 9>"$VAR.lock"
if ! flock -n 9; then
	note "another test run holds $VAR.lock; waiting for it"
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

# start_db — a fresh private MariaDB under $VAR with the schema.
start_db() {
	# A stack left over from an interrupted run would hold $VAR: stop it first.
	"$STACK" stop >/dev/null 2>&1 || true
	rm -rf -- "$VAR"
	mkdir -p -- "$VAR"
	STACK_UP=1
	export CONF=$ROOT/tests/conf PROCS=${PROCS:-4}
	if [[ -n $STAGE ]]; then
		# a fresh copy each time: the app of every server sees the same files
		rm -rf -- "$STAGE/conf"
		cp -a -- "$ROOT/tests/conf" "$STAGE/conf"
		cp -- "$ROOT/bin/rfevents.fcgi" "$STAGE/bin/rfevents.fcgi"
		chmod -R a+rX -- "$STAGE/conf" "$STAGE/bin"
		export CONF=$STAGE/conf FCGI_BIN=$STAGE/bin/rfevents.fcgi
	fi
	[[ -d $CONF ]] || {
		note "$CONF does not exist"
		return 1
	}
	"$STACK" db-start && "$STACK" migrate
}

# scan_logs SERVER — count sanitizer reports in the logs holding the app's stderr, and
# note FastCGI processes that died by a signal.
scan_logs() {
	local log san died
	while read -r log; do
		[[ -s $log ]] || continue
		if [[ -n ${SANITIZE:-} ]]; then
			san=$(grep -c -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log" || true)
			if ((san > 0)); then
				note "FAIL sanitizers ($1): $san report(s) from the app in $log:"
				grep -n -E -A12 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$log" |
					head -n 200
				FAILED=$((FAILED + san))
			fi
		fi
		# lighttpd: "child signalled"; mod_fcgid: "get unexpected signal"
		died=$(grep -c -E 'child signalled|get unexpected signal' "$log" || true)
		if ((died > 0)); then
			note "note ($1): $died line(s) about FastCGI processes that died (killed by a test, or a crash): see $log"
		fi
	done < <(SERVER=$1 "$STACK" web-logs)
}

# run_server SERVER — web server SERVER in front of the app, the integration suite
# through it, the server stopped and its logs scanned. Adds to the totals and to
# SUMMARY.
run_server() {
	local server=$1 log rc=0 before_p=$PASSED before_f=$FAILED t0=$SECONDS
	export SERVER=$server
	PORT=$(pick_port "${TEST_PORT:-18080}") || {
		note "FAIL $server: no free port from ${TEST_PORT:-18080} on"
		FAILED=$((FAILED + 1))
		SUMMARY+=("$server: could not start")
		return
	}
	export PORT
	# The database may have been left down by an earlier server's outage test.
	if ! "$STACK" db-start || ! "$STACK" web-start; then
		note "FAIL $server: the test stack could not start (logs under $VAR)"
		FAILED=$((FAILED + 1))
		"$STACK" web-stop >/dev/null 2>&1 || true
		SUMMARY+=("$server: could not start")
		return
	fi
	RFEVENTS_DB=$(sed -n 's/^RFEVENTS_DB=//p' "$VAR/db.env")
	export BASE_URL=http://127.0.0.1:$PORT RFEVENTS_DB RFEVENTS_CONF=$CONF \
		RFEVENTS_BIN=$ROOT/bin/rfevents RFEVENTS_VAR=$VAR RFEVENTS_STACK=$STACK
	note "integration tests via $server against $BASE_URL (state in $VAR)"
	log=$SCRATCH/integration-$server.log
	timeout --foreground "$INTEGRATION_TIMEOUT" python3 tests/integration/run.py 2>&1 |
		tee "$log" || rc=$?
	count "integration ($server)" "$rc" "$log"
	# Stop before looking at the logs: the app writes leak reports when it exits.
	if ! "$STACK" web-stop; then
		note "FAIL $server: the web server did not stop cleanly"
		FAILED=$((FAILED + 1))
	fi
	scan_logs "$server"
	SUMMARY+=("$(printf '%-9s %4d passed, %d failed (%d s)' "$server:" \
		"$((PASSED - before_p))" "$((FAILED - before_f))" "$((SECONDS - t0))")")
}

SUMMARY=()
if [[ ! -f tests/integration/run.py ]]; then
	note "skip integration tests: tests/integration/run.py does not exist yet"
elif ! start_db; then
	note "FAIL test stack: the database could not start (logs under $VAR)"
	FAILED=$((FAILED + 1))
else
	for server in "${SERVER_LIST[@]}"; do
		run_server "$server"
	done
fi
stop_stack

# The three-node Galera cluster suite (tests/cluster/run.sh) and one worker under
# valgrind for 10,000 requests (tests/leaks.sh). Both are skipped in the sanitized
# run (TEST_CLUSTER=0 / TEST_LEAKS=0 skip them too).
extra() {
	local name=$1 script=$2 rc=0 t0=$SECONDS
	note "== $name"
	SERVER=lighttpd "$script" >"$SCRATCH/$name.log" 2>&1 || rc=$?
	tail -n 25 "$SCRATCH/$name.log"
	count "$name" "$rc" "$SCRATCH/$name.log"
	SUMMARY+=("$(printf '%-9s (%d s)' "$name:" "$((SECONDS - t0))")")
}
if [[ -z ${SANITIZE:-} && ${TEST_CLUSTER:-1} != 0 ]]; then
	"$ROOT/tests/cluster.sh" deps >/dev/null 2>&1 || true
	extra cluster "$ROOT/tests/cluster/run.sh"
fi
if [[ -z ${SANITIZE:-} && ${TEST_LEAKS:-1} != 0 ]]; then
	extra leaks "$ROOT/tests/leaks.sh"
fi

if ((${#SUMMARY[@]})); then
	note "integration tests per web server:"
	for line in "${SUMMARY[@]}"; do
		note "  $line"
	done
fi
SUMMARY_DONE=1
printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
