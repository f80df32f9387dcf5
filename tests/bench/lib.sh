# tests/bench/lib.sh — shared by tests/bench/run.sh and tests/bench/profile.sh
# (sourced, not run). Starts and stops the bench's own stack, seeds it, runs wrk
# and the ceiling program and parses their RESULT lines.
#
# Settings (environment):
#   BENCH_VAR      state directory (default <repo>/var/bench)
#   BENCH_PORT     HTTP port of lighttpd on 127.0.0.1 (default 19500)
#   BENCH_PROCS    FastCGI processes (default 4)
#   BENCH_SECONDS  seconds per measurement (default 10)
#   BENCH_USERS    known users, pre-created before measuring (default 1000)
#   BENCH_DUP_COUNT  events seeded for the duplicate path (default 10000)
#   BENCH_WRK_THREADS  wrk threads (default 2)
#   BENCH_KEEP_DB=1  keep the database of the last run (default: start empty)
#   BENCH_STACK    the stack script (default tests/stack.sh)
# The web server is always lighttpd (SERVER=lighttpd for tests/stack.sh): the worker
# processes are found as the children of its pid.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR=$ROOT/tests/bench
STACK=${BENCH_STACK:-$ROOT/tests/stack.sh}
FCGI_BIN=$ROOT/bin/rfevents.fcgi
CLI_BIN=$ROOT/bin/rfevents

VAR=${BENCH_VAR:-$ROOT/var/bench}
PORT=${BENCH_PORT:-19500}
PROCS=${BENCH_PROCS:-4}
SECS=${BENCH_SECONDS:-10}
USERS=${BENCH_USERS:-1000}
DUP_COUNT=${BENCH_DUP_COUNT:-10000}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
CONF=$BENCH_DIR/conf
TENANT=bench

mkdir -p -- "$VAR"
VAR=$(cd -- "$VAR" && pwd)
LOGS=$VAR/logs
CEILING=$VAR/ceiling
DB_SOCK=$VAR/mysql/mysqld.sock
SERVER=lighttpd
export VAR PORT PROCS CONF SERVER

# A random part of every external id of this run: ids never repeat across runs
# even with BENCH_KEEP_DB=1.
NONCE=$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
DUP_PREFIX=dup-$NONCE

STARTED_DB=""
STARTED_WEB=""

# The minimal endpoint: a second lighttpd on PORT + 1, state in $VAR/minimal, whose
# FastCGI processes are the ceiling's --fcgi mode: the service's SQL behind the same
# web server, with nothing of rfevents (minimal_up).
MIN_VAR=$VAR/minimal
MIN_PORT=$((PORT + 1))
STARTED_MIN=""
# The lighttpd that wrk_run() sends to and whose workers worker_pids() lists
# (minimal_wrk() points them at the minimal endpoint).
WEB_VAR=$VAR
WORKER_COMM=rfevents.fcgi
TARGET_PORT=$PORT

say() {
	printf 'bench: %s\n' "$*" >&2
}

die() {
	printf 'bench: %s\n' "$*" >&2
	exit 1
}

# need_pkg CMD PACKAGE — install the Debian package PACKAGE when CMD is missing
# (as root), else tell the command to run.
need_pkg() {
	command -v "$1" >/dev/null 2>&1 && return 0
	if (($(id -u) != 0)); then
		die "$1 is missing: run as root: apt-get install -y $2"
	fi
	say "installing $2"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >/dev/null ||
		die "could not install $2"
}

# sql QUERY — run QUERY in the rfevents database as the server's administrator
# (the OS user over the socket); one row per line, tab-separated.
sql() {
	mariadb --no-defaults --socket="$DB_SOCK" -u "$(id -un)" --batch --skip-column-names \
		rfevents -e "$1"
}

stack_down() {
	trap - EXIT INT TERM
	if [[ -n $STARTED_MIN ]]; then
		VAR=$MIN_VAR FCGI_BIN=$CEILING "$STACK" web-stop || say "warning: web-stop failed"
		STARTED_MIN=""
	fi
	if [[ -n $STARTED_WEB ]]; then
		"$STACK" web-stop || say "warning: web-stop failed"
		STARTED_WEB=""
	fi
	if [[ -n $STARTED_DB ]]; then
		"$STACK" db-stop || say "warning: db-stop failed"
		STARTED_DB=""
	fi
}

# metric NAME — a counter of the service's GET /metrics (every worker's), or 0.
metric() {
	curl -fsS -H "Authorization: Bearer $ADMIN_KEY" "http://127.0.0.1:$PORT/metrics" |
		awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }'
}

# snapshot — copies of the binaries and the migrations under $VAR/snap, used for the
# whole run: a rebuild in the working tree meanwhile (make, another terminal) cannot
# swap the binary or the schema in the middle of a measurement.
snapshot() {
	local snap=$VAR/snap
	[[ -x $FCGI_BIN && -x $CLI_BIN ]] || die "build first: make"
	rm -rf -- "$snap"
	mkdir -p -- "$snap/bin" "$snap/db"
	cp -- "$FCGI_BIN" "$CLI_BIN" "$snap/bin/"
	cp -R -- "$ROOT/db/migrations" "$snap/db/"
	# the CLI finds the migrations next to its bin/
	FCGI_BIN=$snap/bin/${FCGI_BIN##*/}
	CLI_BIN=$snap/bin/${CLI_BIN##*/}
	export FCGI_BIN CLI_BIN
}

# stack_up — MariaDB (an empty rfevents database unless BENCH_KEEP_DB=1), the
# schema, lighttpd with PROCS workers on PORT; stopped again on exit.
stack_up() {
	local pid
	snapshot
	if [[ -s $VAR/lighttpd.pid ]] && pid=$(cat "$VAR/lighttpd.pid") &&
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) == lighttpd ]]; then
		die "lighttpd already runs under $VAR (pid $pid): another bench? (VAR=$VAR tests/stack.sh stop)"
	fi
	mkdir -p -- "$LOGS"
	trap stack_down EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	if ! { [[ -s $VAR/mysql/mysqld.pid ]] &&
		[[ $(cat "/proc/$(cat "$VAR/mysql/mysqld.pid")/comm" 2>/dev/null) == mariadbd ]]; }; then
		STARTED_DB=1
	fi
	"$STACK" db-start
	if [[ -z ${BENCH_KEEP_DB:-} ]]; then
		mariadb --no-defaults --socket="$DB_SOCK" -u "$(id -un)" \
			-e 'DROP DATABASE IF EXISTS rfevents'
		"$STACK" db-start     # provisions the database again
	fi
	"$STACK" migrate >/dev/null
	RFEVENTS_DB=$(sed -n 's/^RFEVENTS_DB=//p' "$VAR/db.env")
	export RFEVENTS_DB
	"$CLI_BIN" check "$CONF" >/dev/null 2>"$LOGS/check.log" ||
		{ cat "$LOGS/check.log" >&2; die "the bench configuration does not load"; }
	# the logs hold the last run only (the app's stderr: one line per request)
	: >"$VAR/access.log"
	: >"$VAR/lighttpd-error.log"
	STARTED_WEB=1
	"$STACK" web-start
	KEY=$("$CLI_BIN" key create --tenant "$TENANT" --scopes events:write,events:read \
		--name bench) || die "could not create a key"
	ADMIN_KEY=$("$CLI_BIN" key create --tenant "$TENANT" --scopes admin --name bench-admin) ||
		die "could not create a key"
	TENANT_ID=$(sql "SELECT id FROM tenants WHERE slug = '$TENANT'")
	RULES_VERSION=$(sha256sum "$CONF/tenants/$TENANT.yaml" | cut -c1-64)
	[[ -n $TENANT_ID ]] || die "tenant $TENANT has no id"
}

# build_ceiling — the ceiling program (bin/bench-ceiling, built by the Makefile with
# the project's flags), copied to $CEILING so that a rebuild meanwhile cannot swap
# it in the middle of a run.
build_ceiling() {
	make -C "$ROOT" --no-print-directory bin/bench-ceiling >/dev/null ||
		die "could not build bin/bench-ceiling"
	cp -f -- "$ROOT/bin/bench-ceiling" "$CEILING"
}

# parse_result FILE — the RESULT line of FILE into the associative array R.
declare -A R
parse_result() {
	local line kv
	R=()
	line=$(grep '^RESULT ' "$1" | tail -n 1) || return 1
	for kv in ${line#RESULT }; do
		R[${kv%%=*}]=${kv#*=}
	done
}

# wrk_run LOG SECONDS CONNS MODE [NAME=VALUE...] — one wrk run of events.lua; the
# RESULT in R. With BENCH_MARK_DIR given, wrk is ended as soon as every thread
# has written its mark (seed, quota), SECONDS is then only an upper bound.
wrk_run() {
	local log=$1 secs=$2 conns=$3 mode=$4 threads=$WRK_THREADS pid marks="" i
	shift 4
	((conns < threads)) && threads=$conns
	for i in "$@"; do
		[[ $i == BENCH_MARK_DIR=* ]] && marks=${i#*=}
	done
	if [[ -n $marks ]]; then
		rm -rf -- "$marks"
		mkdir -p -- "$marks"
	fi
	env BENCH_KEY="$KEY" BENCH_MODE="$mode" BENCH_USERS="$USERS" BENCH_THREADS="$threads" \
		BENCH_PREFIX="$DUP_PREFIX" BENCH_COUNT="$DUP_COUNT" "$@" \
		wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 120s --latency \
		-s "$BENCH_DIR/events.lua" "http://127.0.0.1:$TARGET_PORT" >"$log" 2>&1 &
	pid=$!
	if [[ -n $marks ]]; then
		while kill -0 "$pid" 2>/dev/null; do
			if (($(find "$marks" -name 'done-*' | wc -l) >= threads)); then
				kill -INT "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.1
		done
	fi
	wait "$pid" || { cat "$log" >&2; die "wrk failed (log: $log)"; }
	parse_result "$log" || { cat "$log" >&2; die "wrk gave no RESULT (log: $log)"; }
	drain
}

# drain — wait until every FastCGI worker waits for a connection again: requests
# that were in flight when wrk stopped (a batch takes seconds) must not slow down
# the next measurement. A waiting worker is in poll() on its one listening socket
# with no timeout (fcgi/main.c; /proc/PID/syscall: poll, 1 fd, timeout -1, or
# ppoll with no timeout), or in accept() where the socket could not be made
# non-blocking; its database waits are poll() with the 30 s read timeout. Where
# the syscall numbers are not known, wait 3 seconds.
drain() {
	local i p busy nr nfds tmo accept poll ppoll
	case $(uname -m) in
	x86_64) accept=" 43 288 " poll=7 ppoll=271 ;;    # accept, accept4; poll; ppoll
	aarch64) accept=" 202 242 " poll=-1 ppoll=73 ;;
	*) sleep 3; return 0 ;;
	esac
	for ((i = 0; i < 1200; i++)); do
		busy=0
		for p in $(worker_pids); do
			read -r nr _ nfds tmo _ <"/proc/$p/syscall" 2>/dev/null || continue
			[[ $accept == *" $nr "* ]] && continue
			[[ $nr == "$poll" && $nfds == 0x1 && $tmo == 0xffffffff ]] && continue
			[[ $nr == "$ppoll" && $nfds == 0x1 && $tmo == 0x0 ]] && continue
			busy=1
		done
		((busy)) || return 0
		sleep 0.05
	done
	say "warning: the FastCGI workers are still busy after 60 s"
}

# ceiling_run LOG MODE CONNS PER_TXN PREFIX [OPTION...] — one run of the ceiling;
# RESULT in R.
ceiling_run() {
	local log=$1 mode=$2 conns=$3 per=$4 prefix=$5
	shift 5
	"$CEILING" --db "$RFEVENTS_DB" --tenant "$TENANT_ID" --mode "$mode" --conns "$conns" \
		--per-txn "$per" --seconds "$SECS" --users "$USERS" --prefix "$prefix" \
		--dup-prefix "$DUP_PREFIX" --dup-count "$DUP_COUNT" \
		--rules-version "$RULES_VERSION" "$@" >"$log" 2>&1 ||
		{ cat "$log" >&2; die "the ceiling failed (log: $log)"; }
	parse_result "$log" || die "the ceiling gave no RESULT (log: $log)"
}

# minimal_up — the minimal endpoint: PROCS processes of the ceiling (built) in
# --fcgi mode behind a second lighttpd on MIN_PORT, configured as the service's.
# It stores events with the ceiling's SQL and answers as the service does (201
# accepted, 200 duplicate, a batch's results), parsing the body with json-c; it
# does no authentication, validation or rules. Events whose external id begins
# with DUP_PREFIX take the duplicate read first: the ceiling's SQL for a
# duplicate (the service answers those from its table of stored events,
# without a statement). Needs stack_up first.
minimal_up() {
	mkdir -p -- "$MIN_VAR"
	cp -- "$VAR/db.env" "$MIN_VAR/db.env"
	STARTED_MIN=1
	VAR=$MIN_VAR PORT=$MIN_PORT FCGI_BIN=$CEILING \
		CEILING_ARGS="--fcgi 1 --tenant $TENANT_ID --dup-prefix $DUP_PREFIX --rules-version $RULES_VERSION" \
		"$STACK" web-start
}

# on_minimal CMD [ARG...] — run CMD (wrk_run, worker_pids) against the minimal
# endpoint's lighttpd instead of the service's.
on_minimal() {
	local WEB_VAR=$MIN_VAR WORKER_COMM=${CEILING##*/} TARGET_PORT=$MIN_PORT
	"$@"
}

# minimal_pids — the minimal endpoint's processes (its lighttpd and workers), when
# this run started it.
minimal_pids() {
	if [[ -n $STARTED_MIN && -s $MIN_VAR/lighttpd.pid ]]; then
		cat "$MIN_VAR/lighttpd.pid"
		on_minimal worker_pids
	fi
	return 0
}

# minimal_wrk LOG SECONDS CONNS MODE [VAR=VALUE...] — wrk_run against the minimal
# endpoint.
minimal_wrk() {
	on_minimal wrk_run "$@"
}

# seed_users — one event for each known user through the service: creates the
# users' profiles and identities (externalUserId + email).
seed_users() {
	wrk_run "$LOGS/seed-users.log" 600 1 seed BENCH_PREFIX="users-$NONCE" \
		BENCH_COUNT="$USERS" BENCH_MARK_DIR="$VAR/marks"
	((R[accepted] == USERS)) ||
		die "seeding $USERS users accepted ${R[accepted]} events (log: $LOGS/seed-users.log)"
	local n
	n=$(sql "SELECT COUNT(*) FROM profiles")
	((n >= USERS)) || die "after seeding there are $n profiles, expected $USERS"
}

# seed_dups — the events the duplicate path replays (service and ceiling).
seed_dups() {
	wrk_run "$LOGS/seed-dups.log" 600 "$WRK_THREADS" seed BENCH_MARK_DIR="$VAR/marks"
	((R[accepted] == DUP_COUNT)) ||
		die "seeding $DUP_COUNT duplicates accepted ${R[accepted]} (log: $LOGS/seed-dups.log)"
}

# worker_pids — the rfevents.fcgi processes of our lighttpd, one per line.
worker_pids() {
	local lpid p
	lpid=$(cat "$WEB_VAR/lighttpd.pid")
	for p in $(ps -o pid= --ppid "$lpid"); do
		[[ $(cat "/proc/$p/comm" 2>/dev/null) == "$WORKER_COMM" ]] && echo "$p"
	done
	return 0
}

# proc_kb PID FIELD — a kB value of /proc/PID/status (VmHWM, VmRSS).
proc_kb() {
	awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null
}

# cpu_snapshot — prints "busy total ours" in clock ticks: busy and total CPU time of the
# machine (/proc/stat) and the CPU time of this stack (mariadbd, lighttpd, the
# workers, the minimal endpoint's) plus that of this script's waited-for children (wrk, the ceiling).
cpu_snapshot() {
	local ours=0 p f
	for p in "$(cat "$VAR/mysql/mysqld.pid" 2>/dev/null)" "$(cat "$VAR/lighttpd.pid" 2>/dev/null)" \
		$(worker_pids) $(minimal_pids) "$$"; do
		[[ -n $p && -r /proc/$p/stat ]] || continue
		# fields after the ")" of the command: utime stime cutime cstime are 12-15
		f=$(sed 's/^.*) //' "/proc/$p/stat")
		if [[ $p == "$$" ]]; then
			ours=$((ours + $(awk '{ print $14 + $15 }' <<<"$f")))
		else
			ours=$((ours + $(awk '{ print $12 + $13 }' <<<"$f")))
		fi
	done
	awk -v ours="$ours" '$1 == "cpu" { busy = $2 + $3 + $4 + $7 + $8 + $9
		print busy, busy + $5 + $6, ours }' /proc/stat
}

# cpu_report BEFORE AFTER — "X of N cores busy, Y by processes outside this bench".
cpu_report() {
	awk -v a="$1" -v b="$2" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ")
		t = y[2] - x[2]; if (t <= 0) { print "-"; exit }
		busy = (y[1] - x[1]) / t * n; other = busy - (y[3] - x[3]) / t * n
		if (other < 0) other = 0
		printf "%.2f of %d cores busy, %.2f of them outside this bench (other processes, kernel threads)", busy, n, other }'
}
