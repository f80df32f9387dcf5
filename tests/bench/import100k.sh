#!/usr/bin/env bash
# tests/bench/import100k.sh — `rfevents import` of 100,000 events, interrupted once and
# resumed; checks that every event was applied exactly once and reports events/s.
# Not part of `make test` (it takes a minute or two).
#
#   tests/bench/import100k.sh
#
# It starts its own stack (private MariaDB + lighttpd, the test configuration, tenant
# acme), writes an NDJSON file of points_adjusted events (1 point each) for fresh users,
# runs bin/rfevents import, interrupts it after a few seconds, runs the same command
# again (resume), then once more from the start (everything must answer duplicate), and
# compares the database with the file: one event row and one ledger row per valid line,
# the users' balances summing to the number of valid lines.
#
# Settings (environment):
#   IMPORT_VAR         state directory (default <repo>/var/bench-import)
#   IMPORT_PORT        HTTP port on 127.0.0.1 (default 19520)
#   IMPORT_PROCS       FastCGI processes (default 4)
#   IMPORT_EVENTS      lines in the file (default 100000)
#   IMPORT_USERS       users the events are spread over (default 100)
#   IMPORT_BAD_EVERY   every Nth line is not JSON (default 10000; 0: none)
#   IMPORT_STOP_AFTER  seconds before the interruption (default 5)
#   IMPORT_SIGNAL      KILL (default) or INT or TERM
#   IMPORT_BATCH       --batch (default 1000)
#   STACK              the stack script (default <repo>/tests/stack.sh)
#   CLI_BIN            bin/rfevents to use (default <repo>/bin/rfevents; also for STACK)
# Prints a last line "RESULT key=value ...".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLI=${CLI_BIN:-$ROOT/bin/rfevents}
STACK=${STACK:-$ROOT/tests/stack.sh}
VAR=${IMPORT_VAR:-$ROOT/var/bench-import}
PORT=${IMPORT_PORT:-19520}
PROCS=${IMPORT_PROCS:-4}
EVENTS=${IMPORT_EVENTS:-100000}
USERS=${IMPORT_USERS:-100}
BAD_EVERY=${IMPORT_BAD_EVERY:-10000}
STOP_AFTER=${IMPORT_STOP_AFTER:-5}
SIG=${IMPORT_SIGNAL:-KILL}
BATCH=${IMPORT_BATCH:-1000}
CONF=$ROOT/tests/conf

say() { printf 'import100k: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ -x $CLI && -x ${FCGI_BIN:-$ROOT/bin/rfevents.fcgi} ]] || die "build first: make"
{ "$CLI" import --help 2>&1 || true; } | grep -q 'rfevents import' || die "$CLI has no import command"
case $SIG in KILL | INT | TERM) ;; *) die "IMPORT_SIGNAL must be KILL, INT or TERM" ;; esac

mkdir -p -- "$VAR"
VAR=$(cd -- "$VAR" && pwd)
export VAR PORT PROCS CONF CLI_BIN=$CLI
WORK=$VAR/import
DB_SOCK=$VAR/mysql/mysqld.sock
URL=http://127.0.0.1:$PORT

STARTED_DB=""
STARTED_WEB=""
stack_down() {
	trap - EXIT INT TERM
	[[ -n $STARTED_WEB ]] && { "$STACK" web-stop || say "warning: web-stop failed"; }
	[[ -n $STARTED_DB ]] && { "$STACK" db-stop || say "warning: db-stop failed"; }
	return 0
}
trap stack_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sql() {
	mariadb --no-defaults --socket="$DB_SOCK" -u "$(id -un)" --batch --skip-column-names \
		rfevents -e "$1"
}

if ! { [[ -s $VAR/mysql/mysqld.pid ]] &&
	[[ $(cat "/proc/$(cat "$VAR/mysql/mysqld.pid")/comm" 2>/dev/null) == mariadbd ]]; }; then
	STARTED_DB=1
fi
"$STACK" db-start
"$STACK" migrate >/dev/null
RFEVENTS_DB=$(sed -n 's/^RFEVENTS_DB=//p' "$VAR/db.env")
export RFEVENTS_DB
STARTED_WEB=1
"$STACK" web-start
KEY=$("$CLI" key create --tenant acme --scopes admin --name import100k) || die "no key"
export RFEVENTS_KEY=$KEY

# ---------------------------------------------------------------- the file
rm -rf -- "$WORK"
mkdir -p -- "$WORK"
FILE=$WORK/events.ndjson
NONCE=$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
SRC=bench.import.$NONCE
say "writing $EVENTS events for $USERS users to $FILE"
python3 - "$FILE" "$EVENTS" "$USERS" "$BAD_EVERY" "$SRC" "$NONCE" <<'EOF'
import json, sys
path, n, users, bad, src, nonce = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
with open(path, "w") as f:
    for i in range(n):
        if bad and i % bad == bad - 1:
            f.write("{broken line %d\n" % i)
            continue
        f.write(json.dumps({"source": src, "externalEventId": "%s-%d" % (nonce, i),
                            "eventType": "points_adjusted",
                            "identity": {"externalUserId": "imp-%s-%d" % (nonce, i % users)},
                            "properties": {"points": 1, "reason": "bulk"}},
                           separators=(",", ":")) + "\n")
EOF
BAD=0
((BAD_EVERY > 0)) && BAD=$((EVENTS / BAD_EVERY))
VALID=$((EVENTS - BAD))
say "$(du -h "$FILE" | cut -f1) written: $VALID valid lines, $BAD broken ones"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
summary_field() {	# summary_field FILE N — the Nth number of the summary line
	sed -n 's/^imported \([0-9]*\) lines: \([0-9]*\) accepted, \([0-9]*\) duplicate, \([0-9]*\) rejected.*/\1 \2 \3 \4/p' "$1" |
		tail -n 1 | cut -d' ' -f"$2"
}

# ---------------------------------------------------------------- run 1: interrupted
say "import, interrupted by SIG$SIG after ${STOP_AFTER}s"
t0=$(now)
"$CLI" import --url "$URL" --batch "$BATCH" "$FILE" >"$WORK/run1.out" 2>"$WORK/run1.err" &
pid=$!
sleep "$STOP_AFTER"
kill -"$SIG" "$pid" 2>/dev/null || die "the import ended within ${STOP_AFTER}s: raise IMPORT_EVENTS"
rc=0
wait "$pid" || rc=$?
t1=$(now)
[[ -f $FILE.state ]] || die "no state file after the interruption (exit $rc)"
DONE1=$(sed -n 's/^lines //p' "$FILE.state")
say "stopped with exit $rc after $(secs "$t0" "$t1") s; state file: $DONE1 lines done"

# ---------------------------------------------------------------- run 2: resume
t2=$(now)
"$CLI" import --url "$URL" --batch "$BATCH" "$FILE" >"$WORK/run2.out" 2>"$WORK/run2.err" ||
	{ cat "$WORK/run2.err" >&2; die "the resumed import failed"; }
t3=$(now)
cat "$WORK/run2.out" >&2
grep -q resuming "$WORK/run2.err" || die "the second run did not resume"
LINES=$(summary_field "$WORK/run2.out" 1)
ACC=$(summary_field "$WORK/run2.out" 2)
DUP=$(summary_field "$WORK/run2.out" 3)
REJ=$(summary_field "$WORK/run2.out" 4)
[[ $LINES == "$EVENTS" && $REJ == "$BAD" && $((ACC + DUP)) == "$VALID" ]] ||
	die "resumed import: $LINES lines, $ACC accepted, $DUP duplicate, $REJ rejected"

# ---------------------------------------------------------------- run 3: everything again
t4=$(now)
"$CLI" import --url "$URL" --batch "$BATCH" "$FILE" >"$WORK/run3.out" 2>"$WORK/run3.err" ||
	{ cat "$WORK/run3.err" >&2; die "the re-run failed"; }
t5=$(now)
cat "$WORK/run3.out" >&2
[[ $(summary_field "$WORK/run3.out" 2) == 0 && $(summary_field "$WORK/run3.out" 3) == "$VALID" ]] ||
	die "the re-run applied something again"

# ---------------------------------------------------------------- the database
ROWS=$(sql "SELECT COUNT(*) FROM events WHERE source = '$SRC'")
LEDGER=$(sql "SELECT COUNT(*) FROM ledger l JOIN events e ON e.id = l.event_id WHERE e.source = '$SRC'")
POINTS=$(sql "SELECT COALESCE(SUM(b.balance), 0) FROM balances b WHERE b.name = 'points' AND
	b.profile_id IN (SELECT DISTINCT profile_id FROM events WHERE source = '$SRC')")
ERRLINES=$(wc -l <"$FILE.errors")
say "database: $ROWS events, $LEDGER ledger rows, $POINTS points; errors file: $ERRLINES lines"
[[ $ROWS == "$VALID" && $LEDGER == "$VALID" && $POINTS == "$VALID" && $ERRLINES == "$BAD" ]] ||
	die "NOT exactly once: want $VALID events, ledger rows and points, $BAD error lines"

WALL=$(awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN { printf "%.2f", (b - a) + (d - c) }')
RATE=$(awk -v w="$WALL" -v n="$EVENTS" 'BEGIN { printf "%.0f", n / w }')
RERUN=$(secs "$t4" "$t5")
RERATE=$(awk -v w="$RERUN" -v n="$EVENTS" 'BEGIN { printf "%.0f", n / w }')
say "exactly once: every one of the $VALID valid events is applied once"
printf 'RESULT events=%d valid=%d signal=%s stopped_after_lines=%s resent_duplicates=%s seconds=%s events_per_s=%s rerun_seconds=%s rerun_events_per_s=%s exactly_once=yes\n' \
	"$EVENTS" "$VALID" "$SIG" "$DONE1" "$DUP" "$WALL" "$RATE" "$RERUN" "$RERATE"
