# shellcheck shell=bash
# tests/lib.sh — shared by tests/stack.sh and tests/cluster.sh (sourced, not run):
# processes, Debian packages, and the private MariaDB servers both run (a datadir made
# once, the rfevents database and account, the shutdown by pid file), so that the
# single server and the Galera nodes are set up the same way.
#
# The sourcing script sets, before calling anything here:
#   ROOT       the checkout
#   PROG       its name, the prefix of its messages
#   STOP_WAIT  seconds for a process to exit after being asked to
#   DB_ENV     the file that keeps RFEVENTS_DB (and the account's password)
#   START_CMD  the command that makes DB_ENV, named when it is missing
#   CLI_BIN    bin/rfevents
# and setup_var sets VAR and DB_ADMIN.
# shellcheck disable=SC2154  # the variables above belong to the sourcing script

die() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	exit 1
}

say() {
	printf '%s: %s\n' "$PROG" "$*" >&2
}

# usage — print the header comment of the script that was run (its documentation).
usage() {
	sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[-1]}" >&2
	exit 2
}

ON_EXIT=""
FOLLOW_PID=""

# on_exit FUNC — run FUNC once when the script ends, also on Ctrl-C and SIGTERM (then
# with the exit status of a shell killed by them), after ending `follow`.
on_exit() {
	ON_EXIT=$1
	trap at_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

at_exit() {
	trap - INT TERM EXIT
	# `|| true`: under set -e, a tail that is gone already must not cut FUNC short.
	[[ -z $FOLLOW_PID ]] || kill "$FOLLOW_PID" 2>/dev/null || true
	"$ON_EXIT"
}

# follow FILE... — copy what is appended to the FILEs to standard output, in the
# background until the script ends (see on_exit).
follow() {
	tail -n 0 -F "$@" 2>/dev/null &
	FOLLOW_PID=$!
}

# abspath DIR — DIR made absolute against $PWD (the directory is created).
abspath() {
	mkdir -p -- "$1"
	(cd -- "$1" && pwd)
}

# Paths end up unquoted in db.env and option files, in URLs and in lighttpd's config:
# keep them plain.
check_plain_path() {
	[[ $1 =~ ^/[A-Za-z0-9_./+-]*$ ]] ||
		die "$2 '$1' may only contain letters, digits and _ . / + - (no spaces or quotes)"
}

# setup_var — VAR (default <repo>/var) made absolute and checked, and DB_ADMIN.
setup_var() {
	VAR=$(abspath "${VAR:-$ROOT/var}")
	check_plain_path "$VAR" VAR
	# The MariaDB account that administers the private servers: the OS user, who
	# authenticates over the socket (unix_socket plugin), root included.
	DB_ADMIN=$(id -un)
}

need_bin() {
	[[ -x $1 ]] || die "$1 is missing: build it first ('make')"
}

# alive_pid FILE NAME — print the pid in FILE if that process runs and is NAME.
alive_pid() {
	local pid comm
	[[ -s $1 ]] || return 1
	read -r pid <"$1" || true
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[[ $comm == "$2" ]] || return 1
	printf '%s\n' "$pid"
}

# wait_exit PID SECONDS — wait until PID is gone; status 1 on timeout.
wait_exit() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

# wait_ready PID SECONDS CMD... — wait until CMD succeeds (tried ten times a second):
# status 0; 1 after SECONDS; 2 as soon as PID (the server it waits for) is gone.
wait_ready() {
	local pid=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		"$@" && return 0
		kill -0 "$pid" 2>/dev/null || return 2
		sleep 0.1
	done
	return 1
}

# start_failed STATUS PID NAME LOG WHY — after wait_ready for the server PID failed
# with STATUS: die that it exited, or stop it (it would hold its ports and files,
# and a later start would take it for a running server) and die with WHY.
start_failed() {
	local rc=$1 pid=$2 name=$3 log=$4 why=$5
	if ((rc == 2)); then
		die "$name exited during start-up (log: $log)"
	fi
	kill -TERM "$pid" 2>/dev/null || true
	wait_exit "$pid" "$STOP_WAIT" || kill -KILL "$pid" 2>/dev/null || true
	die "$name $why and was stopped (log: $log)"
}

# daemon CMD... — exec CMD in a session of its own (run it with &): it outlives the
# script and does not get the terminal's Ctrl-C, so `stop` (or the trap of `run`) shuts
# it down in order. Inherited descriptors other than 0-2 are closed first, so that the
# server holds no lock or pipe of whoever called the script. Not being a process
# group leader, setsid execs in place: $! is the server's pid.
daemon() {
	local fd
	for fd in /proc/"$BASHPID"/fd/*; do
		fd=${fd##*/}
		if ((fd > 2)); then
			eval "exec $fd>&-" 2>/dev/null || true
		fi
	done
	exec setsid "$@"
}

log_tail() {
	if [[ -s $1 ]]; then
		printf -- '--- last lines of %s ---\n' "$1" >&2
		tail -n "${2:-25}" -- "$1" >&2
		printf -- '---\n' >&2
	fi
}

# port_busy PORT — true if something accepts connections on 127.0.0.1:PORT.
port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# write_private FILE — write standard input to FILE, mode 600 (it holds a password),
# through a temporary file: a reader never sees half of it.
write_private() {
	(
		umask 077
		cat >"$1.tmp"
	)
	chmod 600 "$1.tmp"
	mv -f -- "$1.tmp" "$1"
}

# ---------------------------------------------------------------------------- deps

# deps_install PACKAGE... — install those of the Debian packages that are missing (their
# names in DEPS_MISSING, empty when none is). Not as root: print the command and exit 1.
deps_install() {
	local p st
	DEPS_MISSING=()
	for p in "$@"; do
		st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) || st=""
		[[ $st == ii* ]] || DEPS_MISSING+=("$p")
	done
	((${#DEPS_MISSING[@]})) || return 0

	local install="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${DEPS_MISSING[*]}"
	if (($(id -u) != 0)); then
		say "missing Debian packages: ${DEPS_MISSING[*]}"
		say "run as root:"
		printf "  sudo sh -c 'apt-get update && %s'\n" "$install" >&2
		exit 1
	fi
	say "installing: ${DEPS_MISSING[*]}"
	# Installing mariadb-server or nginx must not start the system's MariaDB (on 3306)
	# or nginx service: deny all service starts for the duration unless a policy is
	# already in place.
	local policy=/usr/sbin/policy-rc.d made_policy=""
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\n# temporary, from rfevents tests/%s deps\nexit 101\n' "$PROG" >"$policy"
		chmod 755 "$policy"
		made_policy=1
		# shellcheck disable=SC2064  # expand now: the path is fixed
		trap "rm -f '$policy'" EXIT
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${DEPS_MISSING[@]}"
	if [[ -n $made_policy ]]; then
		rm -f "$policy"
		trap - EXIT
	fi
}

# ---------------------------------------------------------------------------- MariaDB

# db_admin SOCKET OPTION... — the mariadb client as DB_ADMIN on the server at SOCKET,
# for SQL on standard input: tab-separated rows, no column names.
db_admin() {
	local sock=$1
	shift
	mariadb --no-defaults --socket="$sock" -u "$DB_ADMIN" "$@" --batch --skip-column-names
}

# db_install DATADIR LOG USER LABEL OPTION... — make the data directory DATADIR (system
# tables, root over the socket only, no test database) with mariadb-install-db, which
# writes into a scratch directory that is renamed only when it succeeded, so that a
# half-initialised datadir is never mistaken for a usable one. As root, the server is
# to run as USER: the directory above DATADIR becomes USER's, who must be able to
# reach it. LABEL (may be empty) names the server in the error; the OPTIONs go to
# mariadb-install-db.
db_install() {
	local datadir=$1 log=$2 user=$3 label=$4 scratch=$1.init user_opt=()
	shift 4
	rm -rf -- "$scratch" "$datadir"
	mkdir -p -- "$scratch"
	if (($(id -u) == 0)); then
		user_opt=(--user="$user")
		if [[ $user != root ]]; then
			chown -R "$user:" "${datadir%/*}"
			runuser -u "$user" -- test -w "$scratch" 2>/dev/null ||
				die "the $user account cannot reach ${datadir%/*} (a folder above it is closed to others, e.g. /root): set VAR to a folder under /tmp"
		fi
	fi
	if ! mariadb-install-db --no-defaults --datadir="$scratch" "${user_opt[@]}" \
		--auth-root-authentication-method=socket --skip-test-db "$@" >"$log" 2>&1; then
		log_tail "$log"
		die "mariadb-install-db failed${label:+ for $label} (full log: $log)"
	fi
	mv -- "$scratch" "$datadir"
}

# db_stop PIDFILE SOCKET LOG NAME — shut down the server of PIDFILE (mariadb-admin over
# SOCKET, else SIGTERM) and wait until it has exited; NAME and LOG are for the error.
db_stop() {
	local pidfile=$1 sock=$2 log=$3 name=$4 pid
	pid=$(alive_pid "$pidfile" mariadbd) || {
		rm -f -- "$pidfile"
		return 0
	}
	mariadb-admin --no-defaults --socket="$sock" -u "$DB_ADMIN" \
		--connect-timeout=5 shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
	if ! wait_exit "$pid" "$STOP_WAIT"; then
		log_tail "$log"
		die "$name (pid $pid) did not stop within ${STOP_WAIT}s"
	fi
	rm -f -- "$pidfile"
}

# db_password — the application account's password: the one in DB_ENV, made once and
# kept there, else a new one.
db_password() {
	local pass=""
	if [[ -s $DB_ENV ]]; then
		pass=$(sed -n 's|^RFEVENTS_DB=mariadb://rfevents:\([A-Za-z0-9]*\)@.*|\1|p' "$DB_ENV")
	fi
	[[ -n $pass ]] || pass=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
	printf '%s\n' "$pass"
}

# db_create PASS CLIENT... — create the database and the application account (over the
# socket and over 127.0.0.1) with SQL sent to the admin client CLIENT...; idempotent:
# the account is (re)set to PASS every time. The default collation is binary and NO
# PAD: ids, sources and identities compare byte for byte ('L-1' <> 'l-1', 'a' <> 'a ').
# The schema should still name its collations. On a Galera node, CREATE USER and GRANT
# replicate to the other nodes (total order isolation).
db_create() {
	local pass=$1
	shift
	"$@" <<-SQL || die "could not create the rfevents database and account"
		CREATE DATABASE IF NOT EXISTS rfevents
		  CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin;
		CREATE USER IF NOT EXISTS 'rfevents'@'localhost' IDENTIFIED BY '$pass';
		ALTER USER 'rfevents'@'localhost' IDENTIFIED BY '$pass';
		GRANT ALL PRIVILEGES ON rfevents.* TO 'rfevents'@'localhost';
		CREATE USER IF NOT EXISTS 'rfevents'@'127.0.0.1' IDENTIFIED BY '$pass';
		ALTER USER 'rfevents'@'127.0.0.1' IDENTIFIED BY '$pass';
		GRANT ALL PRIVILEGES ON rfevents.* TO 'rfevents'@'127.0.0.1';
	SQL
}

# load_db_env — RFEVENTS_DB (exported) from DB_ENV, and DB_PASS, the account's password.
load_db_env() {
	[[ -s $DB_ENV ]] || die "$DB_ENV is missing: run '$START_CMD' first"
	RFEVENTS_DB=$(sed -n 's/^RFEVENTS_DB=//p' "$DB_ENV")
	[[ -n $RFEVENTS_DB ]] || die "$DB_ENV has no RFEVENTS_DB line"
	# shellcheck disable=SC2034  # for the script: tests/cluster.sh builds URLs with it
	DB_PASS=$(sed -n 's|^mariadb://rfevents:\([A-Za-z0-9]*\)@.*|\1|p' <<<"$RFEVENTS_DB")
	export RFEVENTS_DB
}

cmd_migrate() {
	load_db_env
	need_bin "$CLI_BIN"
	"$CLI_BIN" migrate || die "'bin/rfevents migrate' failed"
}

# ---------------------------------------------------------------------------- run

DEMO_BODY='{"source":"brand.pos","externalEventId":"txn_987654321","eventType":"purchase_completed","occurredAt":"2026-05-20T12:45:00Z","identity":{"externalUserId":"L-123456789","email":"customer@example.com"},"properties":{"order_id":"order_42","amount":120.50,"currency":"USD","store_id":"store_42"}}'

# app_check CONF LOG — warn, with the report of 'bin/rfevents check' (kept in LOG), when
# CONF has problems; only a warning, as the app keeps serving what loads.
app_check() {
	[[ -x $CLI_BIN ]] || return 0
	if ! "$CLI_BIN" check "$1" >"$2" 2>&1; then
		say "warning: 'bin/rfevents check $1' reports problems (the app keeps serving what loads):"
		cat -- "$2" >&2
	fi
}

# demo_key CONF — make a key with the admin scope for the demo tenant of CONF, print it
# and keep it in DEMO_KEY. Status 1 when there is none: CONF has no demo tenant (then
# say how to make a key) or the key could not be made (a warning).
demo_key() {
	DEMO_KEY=""
	if [[ ! -f $1/tenants/demo.yaml ]]; then
		printf 'No demo tenant in %s. Create a key with:\n' "$1"
		printf '  (set -a; . %s; %s key create --tenant SLUG --scopes events:write)\n\n' \
			"$DB_ENV" "$CLI_BIN"
		return 1
	fi
	if DEMO_KEY=$("$CLI_BIN" key create --tenant demo --scopes admin --name demo) &&
		[[ -n $DEMO_KEY ]]; then
		printf 'Demo tenant key (admin scope; shown once):\n  %s\n\n' "$DEMO_KEY"
		return 0
	fi
	say "warning: could not create a key for the demo tenant"
	return 1
}

# demo_curl URL — the curl line that sends the demo event to URL with DEMO_KEY.
demo_curl() {
	printf "  curl -sS -i %s/v1/cdp/events -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '%s'\n" \
		"$1" "$DEMO_KEY" "$DEMO_BODY"
}
