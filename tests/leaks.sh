#!/usr/bin/env bash
# tests/leaks.sh — valgrind leak and memory-error check of one FastCGI worker
# (`make valgrind`).
#
# 1. Starts a private MariaDB under $LEAK_VAR (default <repo>/var/leaks) with
#    tests/stack.sh db-start + migrate, and makes the keys it needs with bin/rfevents.
# 2. Runs ONE bin/rfevents.fcgi under
#      valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99
#    served by spawn-fcgi (no fork) on a unix socket, with RFEVENTS_MAX_REQUESTS set so
#    that the worker leaves its accept loop and exits normally after that many requests.
# 3. tests/leaks_driver.py talks FastCGI to it directly and sends exactly that many
#    requests: accepted events, duplicates, conflicts, batches of 10, dry runs,
#    validation errors, malformed JSON, 401, 403, 404, 405, 413, 415, GET event,
#    profile, history, ledger (with cursors), event types, metrics, health.
# 4. Reads the valgrind log: fails when anything is "definitely lost" or valgrind
#    reports any error (invalid read/write, uninitialised value, bad free, ...).
#
# Environment: LEAK_REQUESTS (default 10000), LEAK_VAR, LEAK_TIMEOUT (seconds for
# the whole run under valgrind, default 1500), FCGI_BIN, CLI_BIN, VALGRIND_OPTS (extra
# options). Prints the summary numbers; the last line is "N passed, N failed".
# The database is stopped at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STACK=$ROOT/tests/stack.sh
REQUESTS=${LEAK_REQUESTS:-10000}
TIMEOUT=${LEAK_TIMEOUT:-1500}
export VAR=${LEAK_VAR:-$ROOT/var/leaks}
FCGI_BIN=${FCGI_BIN:-$ROOT/bin/rfevents.fcgi}
CLI_BIN=${CLI_BIN:-$ROOT/bin/rfevents}
export CLI_BIN FCGI_BIN

say() { printf 'leaks: %s\n' "$*"; }
result() {
	printf '%d passed, %d failed\n' "$1" "$2"
}

# ---------------------------------------------------------------- tools

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v spawn-fcgi >/dev/null || need+=(spawn-fcgi)
if ((${#need[@]})); then
	if (($(id -u) == 0)); then
		say "installing ${need[*]}"
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"${need[@]}" >/dev/null
	else
		say "missing: ${need[*]}; run as root: apt-get install -y ${need[*]}"
		result 0 1
		exit 1
	fi
fi
[[ -x $FCGI_BIN && -x $CLI_BIN ]] || {
	say "build first: $FCGI_BIN / $CLI_BIN missing (make)"
	result 0 1
	exit 1
}
[[ $REQUESTS =~ ^[0-9]+$ ]] && ((REQUESTS >= 25)) || {
	say "LEAK_REQUESTS must be a number >= 25"
	exit 2
}

# ---------------------------------------------------------------- the database

mkdir -p -- "$VAR"
exec 9>"$VAR.lock"
flock -n 9 || {
	say "another leak check holds $VAR.lock; waiting"
	flock 9
}
WORKER=""
cleanup() {
	local rc=$?
	if [[ -n $WORKER ]] && kill -0 "$WORKER" 2>/dev/null; then
		kill -TERM "$WORKER" 2>/dev/null || true
		sleep 2
		kill -KILL "$WORKER" 2>/dev/null || true
	fi
	"$STACK" db-stop >/dev/null 2>&1 || say "warning: could not stop the database under $VAR"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$STACK" db-start
"$STACK" migrate >/dev/null
RFEVENTS_DB=$(sed -n 's/^RFEVENTS_DB=//p' "$VAR/db.env")
export RFEVENTS_DB

# A configuration of its own: the test tenants as they are now.
CONFDIR=$VAR/conf
rm -rf -- "$CONFDIR"
mkdir -p -- "$CONFDIR/tenants"
cp tests/conf/tenants/acme.yaml tests/conf/tenants/globex.yaml "$CONFDIR/tenants/"
export RFEVENTS_CONF=$CONFDIR

ADMIN=$("$CLI_BIN" key create --tenant acme --scopes admin --name leaks)
OTHER=$("$CLI_BIN" key create --tenant globex --scopes admin --name leaks)
WRITE=$("$CLI_BIN" key create --tenant acme --scopes events:write --name leaks)

# ---------------------------------------------------------------- the worker

SOCK=$VAR/leak.sock
VGLOG=$VAR/valgrind.log
APPLOG=$VAR/app.log
rm -f -- "$SOCK" "$VGLOG"
# shellcheck disable=SC2086  # VALGRIND_OPTS is a list of options
RFEVENTS_MAX_REQUESTS=$REQUESTS spawn-fcgi -n -s "$SOCK" -M 0600 -- \
	/usr/bin/valgrind --leak-check=full --errors-for-leak-kinds=definite \
	--show-leak-kinds=definite --error-exitcode=99 --num-callers=30 \
	--log-file="$VGLOG" ${VALGRIND_OPTS:-} "$FCGI_BIN" \
	</dev/null >"$APPLOG" 2>&1 &
WORKER=$!
for ((i = 0; i < 100; i++)); do
	[[ -S $SOCK ]] && break
	sleep 0.1
done
[[ -S $SOCK ]] || {
	say "spawn-fcgi did not create $SOCK"
	tail -n 20 "$APPLOG" "$VGLOG" 2>/dev/null || true
	result 0 1
	exit 1
}

say "one worker under valgrind, $REQUESTS requests (socket $SOCK)"
start=$(date +%s)
drc=0
timeout "$TIMEOUT" python3 tests/leaks_driver.py "$SOCK" "$REQUESTS" "$ADMIN" "$OTHER" "$WRITE" ||
	drc=$?
# The worker exits by itself after the last request (RFEVENTS_MAX_REQUESTS); valgrind
# then checks for leaks, which takes a moment.
vrc=""
for ((i = 0; i < 600; i++)); do
	if ! kill -0 "$WORKER" 2>/dev/null; then
		vrc=0
		wait "$WORKER" || vrc=$?
		break
	fi
	sleep 0.2
done
if [[ -z $vrc ]]; then
	say "the worker did not exit after $REQUESTS requests; stopping it (SIGTERM)"
	kill -TERM "$WORKER" 2>/dev/null || true
	vrc=0
	wait "$WORKER" || vrc=$?
	drc=1
fi
WORKER=""
took=$(($(date +%s) - start))
unset ADMIN OTHER WRITE

# ---------------------------------------------------------------- the verdict

definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes in \([0-9,]*\) blocks.*/\1 \2/p' "$VGLOG" |
	tr -d , | tail -n 1)
definite=${definite:-0 0}
errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$VGLOG" | tr -d , | tail -n 1)
invalid=$(grep -c -E 'Invalid (read|write|free)|uninitialised|Mismatched free|overlap' "$VGLOG" || true)
lost_bytes=${definite% *}
lost_blocks=${definite#* }
say "valgrind exit status $vrc, driver exit status $drc, ${took}s for $REQUESTS requests"
say "definitely lost: $lost_bytes bytes in $lost_blocks blocks; error summary: ${errors:-none printed};" \
	"invalid accesses / uninitialised values: $invalid"
[[ -s $VGLOG ]] && grep -E 'lost:|reachable:|ERROR SUMMARY' "$VGLOG" | sed 's/^/leaks:   /' || true

failed=0
if ((lost_bytes > 0 || invalid > 0)) || [[ $vrc != 0 ]]; then
	say "FAIL: see $VGLOG"
	grep -n -E -A25 'definitely lost in|Invalid (read|write|free)|uninitialised|Mismatched free' \
		"$VGLOG" | head -n 150 || true
	failed=$((failed + 1))
fi
if [[ -z $errors ]]; then
	say "FAIL: valgrind printed no ERROR SUMMARY (did the worker exit normally?)"
	tail -n 20 "$VGLOG" || true
	failed=$((failed + 1))
fi
if ((drc != 0)); then
	say "FAIL: the driver got unexpected answers or did not finish (exit status $drc)"
	failed=$((failed + 1))
fi
result $((failed == 0 ? 1 : 0)) "$failed"
((failed == 0))
