#!/usr/bin/env bash
# tests/cluster/run.sh — the cluster suite: exactly once across a three-node Galera cluster.
#
# Starts a fresh cluster with tests/cluster.sh under var/cluster-test (three MariaDB Galera
# nodes on 127.0.0.1, three lighttpd + FastCGI web servers, RFEVENTS_CONF=tests/conf), runs
# tests/cluster/test_cluster.py against it (CLUSTER_TIMEOUT, default 900 s) and stops
# everything again, also when interrupted. The ports stay clear of the single-node tests
# (18080, 3306):
#   CLUSTER_TEST_PORT         first web server (default 18180; the others +1, +2)
#   CLUSTER_TEST_DB_PORT_BASE node N's client port is this + N (default 3320)
#   CLUSTER_TEST_GALERA_BASE  node N's gcomm/IST/SST ports are this + 10*N + 0/1/2
#                             (default 4660)
# The suite gets BASE_URLS (url1,url2,url3), BASE_URL (url1), RFEVENTS_DB (the three
# nodes), RFEVENTS_CONF, RFEVENTS_BIN, RFEVENTS_CLUSTER (tests/cluster.sh; VAR and the port
# bases are exported, so kill-node and restart-node act on this cluster). Arguments are
# passed on to the suite (test name filters). The last line printed is "N passed, N failed";
# the exit status is non-zero when anything failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

CLUSTER=$ROOT/tests/cluster.sh
export VAR=$ROOT/var/cluster-test
# The nodes run as the mysql user (rsync state transfer refuses root); when that
# account cannot reach this checkout (a clone under /root, say), the cluster's
# state goes under /tmp instead.
if [[ $(id -u) == 0 ]] && id -u mysql >/dev/null 2>&1 &&
	! runuser -u mysql -- test -x "$ROOT/tests" 2>/dev/null; then
	VAR=/tmp/rfevents-cluster-$(printf '%s' "$ROOT" | md5sum | cut -c1-12)
	mkdir -p -- "$VAR"
	chmod 755 "$VAR"
fi
export PORT=${CLUSTER_TEST_PORT:-18180}
export DB_PORT_BASE=${CLUSTER_TEST_DB_PORT_BASE:-3320}
export GALERA_PORT_BASE=${CLUSTER_TEST_GALERA_BASE:-4660}
export CONF=$ROOT/tests/conf PROCS=${PROCS:-3}
CLUSTER_TIMEOUT=${CLUSTER_TIMEOUT:-900}

PASSED=0
FAILED=0
UP=""
DONE=""
LOG=$(mktemp "${TMPDIR:-/tmp}/rfevents-cluster.XXXXXX")

note() {
	printf '%s\n' "$*"
}

stop_cluster() {
	if [[ -n $UP ]]; then
		UP=""
		local t0=$SECONDS
		"$CLUSTER" stop || note "warning: could not stop the cluster under $VAR"
		note "cluster stopped in $((SECONDS - t0)) s"
	fi
}

cleanup() {
	local rc=$?
	stop_cluster
	rm -f -- "$LOG"
	if [[ -z $DONE ]]; then
		note "tests/cluster/run.sh: stopped early (exit status $rc)"
		printf '%d passed, %d failed\n' "$PASSED" "$((FAILED + 1))"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One cluster run per tree at a time: a second one would wipe the first one's state.
mkdir -p -- "$ROOT/var"
exec 9>"$ROOT/var/cluster-test.lock"
if ! flock -n 9; then
	note "another cluster test run in this tree holds $ROOT/var/cluster-test.lock; waiting for it"
	flock 9
fi

started=$SECONDS
# A cluster left over from an interrupted run holds var/cluster-test: stop it first.
if [[ -d $VAR/cluster ]]; then
	"$CLUSTER" stop >/dev/null 2>&1 || true
fi
rm -rf -- "$VAR"
mkdir -p -- "$VAR"
UP=1
if ! "$CLUSTER" start 2>&1 | tee "$LOG"; then
	note "FAIL cluster: could not start (logs under $VAR/cluster)"
	FAILED=$((FAILED + 1))
	DONE=1
	stop_cluster
	printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
	exit 1
fi
note "cluster up in $((SECONDS - started)) s"

BASE_URLS=$(sed -n 's/^BASE_URLS=//p' "$VAR/cluster/cluster.env")
RFEVENTS_DB=$(sed -n 's/^RFEVENTS_DB=//p' "$VAR/cluster/db.env")
export BASE_URLS BASE_URL=${BASE_URLS%%,*} RFEVENTS_DB RFEVENTS_CONF=$CONF \
	RFEVENTS_BIN=$ROOT/bin/rfevents RFEVENTS_CLUSTER=$CLUSTER RFEVENTS_VAR=$VAR
note "cluster suite against $BASE_URLS (state in $VAR/cluster)"
rc=0
timeout --foreground "$CLUSTER_TIMEOUT" python3 tests/cluster/test_cluster.py "$@" 2>&1 |
	tee "$LOG" || rc=$?
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOG" | tail -n 1) || line=""
if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
	PASSED=${BASH_REMATCH[1]}
	FAILED=${BASH_REMATCH[2]}
	if ((rc != 0 && FAILED == 0)); then
		note "FAIL cluster suite: exit status $rc although it reported no failure"
		FAILED=1
	fi
else
	note "FAIL cluster suite: no \"N passed, N failed\" line (exit status $rc)"
	FAILED=$((FAILED + 1))
fi

"$CLUSTER" status || true
stop_cluster
died=0
for n in 1 2 3; do
	f=$VAR/cluster/web$n/lighttpd-error.log
	[[ -s $f ]] || continue
	d=$(grep -c 'child signalled' "$f" || true)
	died=$((died + d))
done
((died == 0)) || note "note: $died FastCGI process(es) died by a signal: see $VAR/cluster/web*/lighttpd-error.log"
note "cluster suite: $((SECONDS - started)) s in all"
DONE=1
printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
