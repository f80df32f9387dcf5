#!/usr/bin/env bash
# tests/stack.sh — a private MariaDB + web server + rfevents stack on one machine.
#
#   tests/stack.sh deps        install missing Debian packages (root), else print the command
#   tests/stack.sh db-start    start (first time: initialise) the private MariaDB under $VAR
#   tests/stack.sh db-stop     stop it
#   tests/stack.sh migrate     apply the schema (bin/rfevents migrate) to it
#   tests/stack.sh web-start   start the web server $SERVER + the app on 127.0.0.1:$PORT
#   tests/stack.sh web-stop    stop the web server $SERVER (and the app processes it runs)
#   tests/stack.sh web-logs    print the paths of the logs that hold the app's stderr
#   tests/stack.sh app-pids    print the pids of the app processes of $SERVER (for tests
#                              that kill them; the server starts new ones)
#   tests/stack.sh run         all of the above, print a demo key, stay in the foreground
#   tests/stack.sh stop        stop every web server running under $VAR, then MariaDB
#
# Environment:
#   SERVER   the web server (default lighttpd):
#              lighttpd  lighttpd mod_fastcgi spawning the FastCGI app
#              apache    Apache 2.4 mod_fcgid running the FastCGI app
#              nginx     nginx fastcgi_pass to a unix socket, the app started by spawn-fcgi
#              cgi       Apache 2.4 mod_cgi running the same binary as plain CGI
#   VAR      state directory (default: <repo>/var); relative paths are taken from $PWD
#   PORT     HTTP port of the web server (default 8080), always bound on 127.0.0.1
#   CONF     configuration directory handed to the app as RFEVENTS_CONF (default: <repo>/conf)
#   PROCS    FastCGI processes (default 4); plain CGI starts one per request
#   DB_PORT  if set, MariaDB also listens on 127.0.0.1:$DB_PORT (default: socket only)
#   WEB_USER account Apache, nginx and spawn-fcgi switch to when started as root
#            (default www-data; Apache refuses to serve as root)
#   ASAN_OPTIONS, UBSAN_OPTIONS, LSAN_OPTIONS, RFEVENTS_GROUP  passed on to the app
#            when set
#   FCGI_BIN, CLI_BIN  the binaries (default: <repo>/bin/rfevents.fcgi, <repo>/bin/rfevents)
#
# Layout under $VAR: db.env (RFEVENTS_DB=..., mode 600), mysql/{data,tmp,mysqld.sock,
# mysqld.pid,error.log}, errors/ (JSON error pages), www/, tmp/, and per server:
#   lighttpd  lighttpd.conf, lighttpd.pid, lighttpd-error.log (also the app's stderr),
#             access.log, fcgi.sock-N
#   apache    apache-fcgid.conf, apache-fcgid.pid, apache-fcgid-error.log (also the
#             app's stderr), apache-fcgid-access.log, apache-fcgid.run/
#   cgi       the same with apache-cgi instead of apache-fcgid
#   nginx     nginx.conf, nginx.pid, nginx-error.log, nginx-access.log, nginx.tmp/,
#             nginx-fcgi.sock, spawn-fcgi.pid (the sh loops that run and restart the
#             app processes), nginx-app-error.log (the app's stderr)
# The configurations are made from the templates in conf/deploy/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=${0##*/}
START_CMD="tests/stack.sh db-start"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/tests/lib.sh"

DEB_PACKAGES=(libfcgi-dev libjson-c-dev libmariadb-dev libyaml-dev libssl-dev libgmp-dev
	mariadb-server mariadb-client pkg-config python3 curl gcc make
	lighttpd apache2-bin libapache2-mod-fcgid nginx spawn-fcgi)
# apache2-bin is Apache without Debian's configuration and system service: the stack
# runs its own instances. nginx comes only with its service (package nginx-common).

FCGI_BIN=${FCGI_BIN:-$ROOT/bin/rfevents.fcgi}
CLI_BIN=${CLI_BIN:-$ROOT/bin/rfevents}
SERVER=${SERVER:-lighttpd}
SERVERS=(lighttpd apache cgi nginx)

LIGHTTPD=/usr/sbin/lighttpd
APACHE=/usr/sbin/apache2
APACHE_MODULES=/usr/lib/apache2/modules
NGINX=/usr/sbin/nginx
SPAWN_FCGI=/usr/bin/spawn-fcgi
DEPLOY=$ROOT/conf/deploy

DB_WAIT=60	# seconds for MariaDB to answer
WEB_WAIT=20	# seconds for the web server to accept connections
STOP_WAIT=60	# seconds for a process to exit after being asked to

setup_paths() {
	setup_var
	DB_DIR=$VAR/mysql
	DATADIR=$DB_DIR/data
	DB_SOCK=$DB_DIR/mysqld.sock
	DB_PID=$DB_DIR/mysqld.pid
	DB_LOG=$DB_DIR/error.log
	DB_TMP=$DB_DIR/tmp
	DB_ENV=$VAR/db.env
	web_setup "$SERVER"
	# A unix socket path is limited to 107 bytes; leave room for lighttpd's "-N" suffix.
	((${#DB_SOCK} < 100)) || die "VAR is too long for a unix socket path: $DB_SOCK"
}

# ---------------------------------------------------------------------------- deps

# web_daemons — pids of running apache2 and nginx processes, one a line.
web_daemons() {
	local d comm
	for d in /proc/[0-9]*; do
		comm=$(cat "$d/comm" 2>/dev/null) || continue
		[[ $comm == apache2 || $comm == nginx ]] && printf '%s\n' "${d#/proc/}"
	done
	return 0
}

cmd_deps() {
	local before
	before=$(web_daemons)
	deps_install "${DEB_PACKAGES[@]}"
	((${#DEPS_MISSING[@]})) || return 0
	# Should a package script have started a system web server anyway (it would hold
	# port 80), stop what this install started -- and only that -- and keep it from
	# starting at boot. The private instances of this script never use port 80.
	local pid ppid started=()
	for pid in $(web_daemons); do
		grep -qx -- "$pid" <<<"$before" && continue
		ppid=$(awk '{print $4}' "/proc/$pid/stat" 2>/dev/null) || continue
		# only the masters: their workers go with them
		grep -qx -- "$ppid" <<<"$(web_daemons)" && continue
		started+=("$pid")
	done
	for pid in "${started[@]}"; do
		say "stopping $(cat "/proc/$pid/comm" 2>/dev/null) (pid $pid), started by the package install"
		kill -TERM "$pid" 2>/dev/null || true
		wait_exit "$pid" "$STOP_WAIT" || say "warning: pid $pid did not stop"
	done
	if [[ -d /run/systemd/system ]] && [[ " ${DEPS_MISSING[*]} " == *" nginx "* ]] &&
		systemctl is-enabled --quiet nginx 2>/dev/null; then
		say "disabling the system nginx service that the nginx package enabled (systemctl enable nginx undoes it)"
		systemctl disable --now nginx >/dev/null 2>&1 || say "warning: could not disable nginx.service"
	fi
}

# ---------------------------------------------------------------------------- MariaDB

db_ping() {
	mariadb-admin --no-defaults --socket="$DB_SOCK" -u "$DB_ADMIN" \
		--connect-timeout=2 ping >/dev/null 2>&1
}

# Initialise the data directory once.
db_init() {
	[[ -d $DATADIR/mysql ]] && return 0
	# db.env belongs to the old data directory, if any: its password is gone with it.
	rm -f -- "$DB_ENV"
	db_install "$DATADIR" "$DB_DIR/install.log" root ""
}

# Create the database and the application account; idempotent. The password is made
# once and kept in $VAR/db.env (mode 600); the account is (re)set to it on every start.
db_provision() {
	local pass
	pass=$(db_password)
	db_create "$pass" db_admin "$DB_SOCK"
	{
		printf 'RFEVENTS_DB=mariadb://rfevents:%s@localhost/rfevents?socket=%s\n' "$pass" "$DB_SOCK"
		if [[ -n ${DB_PORT:-} ]]; then
			printf 'RFEVENTS_DB_TCP=mariadb://rfevents:%s@127.0.0.1:%s/rfevents\n' "$pass" "$DB_PORT"
		fi
	} | write_private "$DB_ENV"
}

cmd_db_start() {
	local pid net_opts user_opt=()
	mkdir -p -- "$DB_DIR" "$DB_TMP"
	if pid=$(alive_pid "$DB_PID" mariadbd); then
		# Running already (or still starting up): reuse it.
		wait_ready "$pid" "$DB_WAIT" db_ping ||
			die "MariaDB (pid $pid) runs under $VAR but does not answer; see $DB_LOG"
		db_provision
		return 0
	fi
	command -v mariadbd >/dev/null || die "mariadbd not found: run 'tests/stack.sh deps'"
	db_init

	if [[ -n ${DB_PORT:-} ]]; then
		[[ $DB_PORT =~ ^[0-9]+$ ]] || die "DB_PORT must be a number"
		port_busy "$DB_PORT" && die "DB_PORT $DB_PORT on 127.0.0.1 is already in use"
		net_opts=(--bind-address=127.0.0.1 --port="$DB_PORT")
	else
		net_opts=(--skip-networking)
	fi
	(($(id -u) == 0)) && user_opt=(--user=root)
	rm -f -- "$DB_PID"
	daemon mariadbd --no-defaults "${user_opt[@]}" \
		--datadir="$DATADIR" --socket="$DB_SOCK" --pid-file="$DB_PID" \
		--log-error="$DB_LOG" --tmpdir="$DB_TMP" "${net_opts[@]}" \
		--skip-name-resolve \
		--character-set-server=utf8mb4 --collation-server=utf8mb4_nopad_bin \
		--max-connections=500 \
		--innodb-buffer-pool-size=256M --innodb-log-file-size=128M \
		--innodb-flush-log-at-trx-commit=1 --innodb-autoinc-lock-mode=2 \
		</dev/null >>"$DB_LOG" 2>&1 &
	local spawned=$! rc=0
	wait_ready "$spawned" "$DB_WAIT" db_ping || rc=$?
	if ((rc == 0)); then
		db_provision
		return 0
	fi
	log_tail "$DB_LOG"
	start_failed "$rc" "$spawned" MariaDB "$DB_LOG" "did not answer on $DB_SOCK within ${DB_WAIT}s"
}

cmd_db_stop() {
	db_stop "$DB_PID" "$DB_SOCK" "$DB_LOG" MariaDB
}

# ---------------------------------------------------------------------------- web servers

# Quote a value for a lighttpd or Apache config string ("..." with \ and " escaped).
conf_str() {
	local s=${1//\\/\\\\}
	printf '"%s"' "${s//\"/\\\"}"
}

write_error_pages() {
	local dir=$VAR/errors code ec msg
	mkdir -p -- "$dir"
	while IFS='|' read -r code ec msg; do
		printf '{"status":"error","error_code":"%s","message":"%s"}\n' "$ec" "$msg" \
			>"$dir/$code.html"
	done <<-'EOF'
		400|bad_request|the HTTP request is malformed
		403|forbidden|forbidden
		404|not_found|not found
		405|method_not_allowed|method not allowed
		408|request_timeout|the request was not received in time
		411|length_required|a request body needs a Content-Length
		413|payload_too_large|the request body is too large
		414|uri_too_long|the request URI is too long
		417|expectation_failed|the Expect header is not supported
		431|request_header_fields_too_large|the request headers are too large
		500|internal_error|internal server error
		501|method_not_allowed|the request method is not implemented
		502|unavailable|the application is unavailable, retry with the same id
		503|unavailable|the application is unavailable, retry with the same id
		504|unavailable|the application did not answer in time, retry with the same id
		505|bad_request|HTTP version not supported
	EOF
}

# web_setup NAME — the facts and file names of web server NAME (one of $SERVERS):
#   WEB_TITLE     what to call it
#   WEB_NAME      prefix of its files under $VAR; WEB_CONF, WEB_PID, WEB_LOG (error log)
#   WEB_COMM      its main process's name (/proc/PID/comm)
#   WEB_TEMPLATE  the configuration template in conf/deploy/
#   WEB_APP_LOG   where the app's stderr goes (the error log but for nginx)
web_setup() {
	case $1 in
	lighttpd)
		WEB_TITLE="lighttpd + mod_fastcgi" WEB_NAME=lighttpd WEB_COMM=lighttpd
		WEB_TEMPLATE=$DEPLOY/lighttpd-dev.conf.in
		;;
	apache)
		WEB_TITLE="Apache + mod_fcgid" WEB_NAME=apache-fcgid WEB_COMM=apache2
		WEB_TEMPLATE=$DEPLOY/apache-fcgid.conf.in
		;;
	cgi)
		WEB_TITLE="Apache + plain CGI (mod_cgi)" WEB_NAME=apache-cgi WEB_COMM=apache2
		WEB_TEMPLATE=$DEPLOY/apache-cgi.conf.in
		;;
	nginx)
		WEB_TITLE="nginx + spawn-fcgi" WEB_NAME=nginx WEB_COMM=nginx
		WEB_TEMPLATE=$DEPLOY/nginx.conf.in
		;;
	*) die "SERVER must be one of: ${SERVERS[*]} (not '$1')" ;;
	esac
	WEB_SERVER=$1
	WEB_CONF=$VAR/$WEB_NAME.conf
	WEB_PID=$VAR/$WEB_NAME.pid
	WEB_LOG=$VAR/$WEB_NAME-error.log
	WEB_APP_LOG=$WEB_LOG
	[[ $1 == nginx ]] && WEB_APP_LOG=$VAR/nginx-app-error.log
	return 0
}

# fill TEMPLATE OUT NAME=VALUE... — write TEMPLATE to OUT with every @NAME@ replaced by
# VALUE; OUT gets mode 600 (it holds the database password). Dies if a placeholder
# is left outside comments.
fill() {
	local tpl=$1 out=$2 text kv
	shift 2
	[[ -r $tpl ]] || die "$tpl is missing"
	text=$(<"$tpl")
	for kv in "$@"; do
		# quoted replacement: taken literally (no & expansion in bash 5.2)
		text=${text//"@${kv%%=*}@"/"${kv#*=}"}
	done
	local left
	left=$(grep -v '^[[:space:]]*#' <<<"$text" | grep -o -m1 '@[A-Z_]*@' | head -n 1) || true
	[[ -z $left ]] || die "$tpl: no value for the placeholder $left"
	(
		umask 077
		printf '# Generated by tests/stack.sh from %s: edit that instead.\n%s\n' \
			"${tpl#"$ROOT"/}" "$text" >"$out.tmp"
	)
	mv -f -- "$out.tmp" "$out"
}

# max_body CONF — the largest request body the web server should accept: 16 MiB, or
# 1 MiB above the app's largest body limit in CONF/rfevents.yaml if that is more.
max_body() {
	local v max=$((16 << 20)) app=0
	if [[ -r $1/rfevents.yaml ]]; then
		while read -r v; do
			[[ $v =~ ^[0-9]{1,10}$ ]] && ((10#$v > app)) && app=$((10#$v))
		done < <(sed -n 's/^max_body_\(single\|batch\):[[:space:]]*\([0-9]*\).*/\2/p' "$1/rfevents.yaml")
	fi
	((app + (1 << 20) > max)) && max=$((app + (1 << 20)))
	printf '%s\n' "$max"
}

# web_account — RUN_USER and RUN_GROUP: the account Apache, nginx and spawn-fcgi run
# the workers and the app as. As root: $WEB_USER (default www-data), as Apache will not
# serve as root; otherwise the invoking user, as nobody else can be switched to.
web_account() {
	if (($(id -u) == 0)); then
		RUN_USER=${WEB_USER:-www-data}
	else
		RUN_USER=$(id -un)
	fi
	id -u "$RUN_USER" >/dev/null 2>&1 || die "WEB_USER '$RUN_USER' is no account on this machine"
	RUN_GROUP=$(id -gn "$RUN_USER")
	if (($(id -u) == 0)) && (($(id -u "$RUN_USER") == 0)) && [[ $WEB_SERVER != nginx ]]; then
		die "Apache does not serve as root: set WEB_USER to another account"
	fi
	return 0
}

# check_reach CONF — as root, make sure RUN_USER can run the app: execute FCGI_BIN, read
# CONF and connect to the MariaDB socket. A checkout under a private home directory
# (/root is mode 700) fails this.
check_reach() {
	(($(id -u) == 0 && $(id -u "$RUN_USER") != 0)) || return 0
	local what
	for what in "x:$FCGI_BIN" "r:$1" "x:$1" "w:$DB_SOCK"; do
		if ! setpriv --reuid="$RUN_USER" --regid="$RUN_GROUP" --init-groups \
			test "-${what%%:*}" "${what#*:}" 2>/dev/null; then
			die "the account $RUN_USER, which $WEB_TITLE runs the app as, cannot reach ${what#*:}: make every directory above it searchable by others (chmod o+x DIR), or set WEB_USER to an account that can"
		fi
	done
}

# descendants PID — the pids of all processes below PID, one a line.
descendants() {
	local k
	for k in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		printf '%s\n' "$k"
		descendants "$k"
	done
	return 0
}

# app_comm — the process name of FCGI_BIN (/proc/PID/comm keeps 15 bytes).
app_comm() {
	local n=${FCGI_BIN##*/}
	printf '%s\n' "${n:0:15}"
}

cmd_web_start() {
	local port=${PORT:-8080} procs=${PROCS:-4} conf=${CONF:-$ROOT/conf} pid
	if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
		die "PORT must be a port number"
	fi
	if ! [[ $procs =~ ^[0-9]+$ ]] || ((procs < 1)); then
		die "PROCS must be a positive number"
	fi
	[[ -d $conf ]] || die "CONF directory '$conf' does not exist"
	conf=$(abspath "$conf")
	check_plain_path "$conf" CONF
	check_plain_path "$FCGI_BIN" FCGI_BIN
	need_bin "$FCGI_BIN"
	load_db_env
	if pid=$(alive_pid "$WEB_PID" "$WEB_COMM"); then
		die "$WEB_TITLE already runs under $VAR (pid $pid); 'SERVER=$WEB_SERVER tests/stack.sh web-stop' stops it"
	fi
	port_busy "$port" && die "port $port on 127.0.0.1 is already in use (choose another: PORT=...)"

	mkdir -p -- "$VAR/www" "$VAR/tmp"
	write_error_pages
	rm -f -- "$WEB_PID"
	: >>"$WEB_LOG"
	local start_mark
	start_mark=$(wc -l <"$WEB_LOG")
	case $WEB_SERVER in
	lighttpd) lighttpd_start "$port" "$procs" "$conf" ;;
	apache | cgi) apache_start "$port" "$procs" "$conf" ;;
	nginx) nginx_start "$port" "$procs" "$conf" ;;
	esac
	local spawned=$! i
	for ((i = 0; i < WEB_WAIT * 10; i++)); do
		if ! kill -0 "$spawned" 2>/dev/null; then
			tail -n "+$((start_mark + 1))" -- "$WEB_LOG" | tail -n 25 >&2
			(web_stop_app) || true
			die "$WEB_TITLE exited during start-up (log: $WEB_LOG)"
		fi
		if port_busy "$port" && alive_pid "$WEB_PID" "$WEB_COMM" >/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	kill -TERM "$spawned" 2>/dev/null || true
	tail -n "+$((start_mark + 1))" -- "$WEB_LOG" | tail -n 25 >&2
	(web_stop_app) || true
	die "$WEB_TITLE did not accept connections on 127.0.0.1:$port within ${WEB_WAIT}s"
}

# check_conf LOG CMD... — run the configuration test CMD; die with its output if it fails.
check_conf() {
	local log=$1
	shift
	if ! "$@" >"$log" 2>&1; then
		cat -- "$log" >&2
		die "$WEB_TITLE rejects $WEB_CONF"
	fi
}

# lighttpd_start PORT PROCS CONF — lighttpd spawns and supervises the FastCGI processes
# (mod_fastcgi); the app's stderr goes to lighttpd's error log. Sets $! to the server.
lighttpd_start() {
	local extra="" v
	[[ -x $LIGHTTPD ]] || die "$LIGHTTPD not found: run 'tests/stack.sh deps'"
	for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS RFEVENTS_GROUP; do
		if [[ -n ${!v:-} ]]; then
			extra+="$(conf_str "$v") => $(conf_str "${!v}"), "
		fi
	done
	fill "$WEB_TEMPLATE" "$WEB_CONF" PORT="$1" VAR="$VAR" FCGI_BIN="$FCGI_BIN" \
		RFEVENTS_DB="$RFEVENTS_DB" RFEVENTS_CONF="$3" PROCS="$2" EXTRA_ENV="$extra"
	check_conf "$VAR/lighttpd-check.log" "$LIGHTTPD" -tt -f "$WEB_CONF"
	daemon "$LIGHTTPD" -D -f "$WEB_CONF" </dev/null >>"$WEB_LOG" 2>&1 &
}

# apache_start PORT PROCS CONF — a private Apache instance, its configuration complete
# in one file (nothing of /etc/apache2): mod_fcgid spawns and supervises the FastCGI
# processes (SERVER=apache), or mod_cgi runs the binary once per request (SERVER=cgi).
# Either way the app's stderr goes to Apache's error log. Sets $! to the server.
apache_start() {
	local run=$VAR/$WEB_NAME.run extra="" v setenv=FcgidInitialEnv indent=""
	[[ -x $APACHE ]] || die "$APACHE not found: run 'tests/stack.sh deps'"
	if [[ $WEB_SERVER == cgi ]]; then
		setenv=SetEnv indent="        "
		[[ -r $APACHE_MODULES/mod_cgi.so ]] || die "mod_cgi not found: run 'tests/stack.sh deps'"
	else
		[[ -r $APACHE_MODULES/mod_fcgid.so ]] || die "mod_fcgid not found: run 'tests/stack.sh deps'"
	fi
	web_account
	check_reach "$3"
	# Runtime files (mod_fcgid sockets, lock files): the workers create
	# some of them after switching to RUN_USER.
	rm -rf -- "$run"
	mkdir -p -- "$run"
	(($(id -u) == 0)) && chown -- "$RUN_USER:$RUN_GROUP" "$run"
	for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS RFEVENTS_GROUP; do
		if [[ -n ${!v:-} ]]; then
			extra+="$indent$setenv $v $(conf_str "${!v}")"$'\n'
		fi
	done
	# The URL goes to the app in a file of its own (mod_fcgid cuts environment
	# values after 127 characters), readable by the account the app runs as.
	local dbfile=$VAR/app-db.url
	printf '%s\n' "$RFEVENTS_DB" >"$dbfile"
	chmod 400 "$dbfile"
	(($(id -u) == 0)) && chown -- "$RUN_USER:$RUN_GROUP" "$dbfile"
	fill "$WEB_TEMPLATE" "$WEB_CONF" PORT="$1" VAR="$VAR" FCGI_BIN="$FCGI_BIN" \
		FCGI_DIR="${FCGI_BIN%/*}" FCGI_NAME="${FCGI_BIN##*/}" RFEVENTS_DB_FILE="$dbfile" \
		RFEVENTS_CONF="$3" PROCS="$2" PROCS_TOTAL="$((2 * $2))" MAX_BODY="$(max_body "$3")" \
		MAX_BODY_FCGID="$(($(max_body "$3") + (1 << 20)))" USER="$RUN_USER" \
		GROUP="$RUN_GROUP" EXTRA_ENV="${extra%$'\n'}"
	check_conf "$VAR/$WEB_NAME-check.log" "$APACHE" -t -f "$WEB_CONF"
	daemon "$APACHE" -f "$WEB_CONF" -DFOREGROUND </dev/null >>"$WEB_LOG" 2>&1 &
}

# nginx_start PORT PROCS CONF — spawn-fcgi starts PROCS FastCGI processes on a unix
# socket (their stderr appended to WEB_APP_LOG through sh: spawn-fcgi itself sends it
# to /dev/null), then nginx passes every request to that socket. Sets $! to nginx.
nginx_start() {
	local sock=$VAR/nginx-fcgi.sock tmp=$VAR/nginx.tmp user_opts=() env=() v
	[[ -x $NGINX ]] || die "$NGINX not found: run 'tests/stack.sh deps'"
	[[ -x $SPAWN_FCGI ]] || die "$SPAWN_FCGI not found: run 'tests/stack.sh deps'"
	web_account
	check_reach "$3"
	(web_stop_app) || true	# processes left over from an earlier start
	mkdir -p -- "$tmp"
	: >>"$WEB_APP_LOG"
	if (($(id -u) == 0)); then
		# the app runs as RUN_USER and owns the socket; nginx's workers too
		user_opts=(-u "$RUN_USER" -g "$RUN_GROUP")
		chown -- "$RUN_USER:$RUN_GROUP" "$tmp" "$WEB_APP_LOG"
	fi
	fill "$WEB_TEMPLATE" "$WEB_CONF" PORT="$1" VAR="$VAR" FCGI_SOCKET="$sock" \
		MAX_BODY="$(max_body "$3")" USER="$RUN_USER" GROUP="$RUN_GROUP"
	if (($(id -u) != 0)); then
		sed -i 's/^user /# user (only for a master started as root): /' "$WEB_CONF"
	fi
	check_conf "$VAR/nginx-check.log" "$NGINX" -t -p "$tmp/" -e "$WEB_LOG" -c "$WEB_CONF"

	# The app's environment, and nothing else.
	env=(PATH=/usr/bin:/bin RFEVENTS_DB="$RFEVENTS_DB" RFEVENTS_CONF="$3")
	for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS RFEVENTS_GROUP; do
		[[ -n ${!v:-} ]] && env+=("$v=${!v}")
	done
	rm -f -- "$sock" "$VAR/spawn-fcgi.pid"
	# Each of the PROCS processes spawn-fcgi forks is a small sh loop that runs the app
	# on the inherited socket and starts it again when it dies (spawn-fcgi itself
	# supervises nothing; lighttpd and mod_fcgid do restart their processes).
	# shellcheck disable=SC2016,SC2094  # $0 and $1 are sh's; the log is only appended to
	daemon env -i "${env[@]}" "$SPAWN_FCGI" -s "$sock" -M 0660 -F "$2" \
		-P "$VAR/spawn-fcgi.pid" "${user_opts[@]}" \
		-- /bin/sh -c 'while :; do "$0" 2>>"$1"; sleep 0.5; done' "$FCGI_BIN" "$WEB_APP_LOG" \
		</dev/null >>"$WEB_APP_LOG" 2>&1 &
	local spawner=$! rc=0
	wait "$spawner" || rc=$?
	if ((rc != 0)) || [[ ! -S $sock ]]; then
		log_tail "$WEB_APP_LOG"
		(web_stop_app) || true
		die "spawn-fcgi could not start the app (exit status $rc; log: $WEB_APP_LOG)"
	fi
	# shellcheck disable=SC2094  # -e names the log that stderr is appended to as well
	daemon "$NGINX" -p "$tmp/" -e "$WEB_LOG" -c "$WEB_CONF" -g 'daemon off;' \
		</dev/null >>"$WEB_LOG" 2>&1 &
}

# spawn_loops — the pids of the sh loops spawn-fcgi started for nginx, one a line
# (or of app processes it started directly, should the pid file list any).
spawn_loops() {
	local pidfile=$VAR/spawn-fcgi.pid pid comm app
	[[ -s $pidfile ]] || return 0
	app=$(app_comm)
	while read -r pid || [[ -n $pid ]]; do
		[[ $pid =~ ^[0-9]+$ ]] || continue
		comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
		[[ $comm == sh || $comm == "$app" ]] && printf '%s\n' "$pid"
	done <"$pidfile"
	return 0
}

# app_pids — the pids of the app processes of WEB_SERVER under $VAR, one a line (for
# plain CGI, the requests running at the moment).
app_pids() {
	local top=() pid kid comm
	comm=$(app_comm)
	if [[ $WEB_SERVER == nginx ]]; then
		mapfile -t top < <(spawn_loops)
	elif pid=$(alive_pid "$WEB_PID" "$WEB_COMM"); then
		top=("$pid")
	fi
	for pid in "${top[@]}"; do
		for kid in "$pid" $(descendants "$pid"); do
			[[ $(cat "/proc/$kid/comm" 2>/dev/null) == "$comm" ]] && printf '%s\n' "$kid"
		done
	done
	return 0
}

# web_stop_app — stop the FastCGI processes spawn-fcgi started for nginx (no-op for the
# other servers: they stop their app processes themselves).
web_stop_app() {
	[[ $WEB_SERVER == nginx ]] || return 0
	local loops=() apps=() pid
	mapfile -t loops < <(spawn_loops)
	mapfile -t apps < <(app_pids)
	# The loops first, so that they start nothing again; then the app processes:
	# SIGTERM makes each finish its request and exit (writing leak reports, if any).
	for pid in "${loops[@]}" "${apps[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	wait_all 10 "${loops[@]}" "${apps[@]}"
	rm -f -- "$VAR/spawn-fcgi.pid" "$VAR/nginx-fcgi.sock"
}

# wait_all SECONDS PID... — wait until every PID is gone; kill those still there after
# SECONDS.
wait_all() {
	local secs=$1 i p left
	shift
	for ((i = 0; i < secs * 10; i++)); do
		left=0
		for p in "$@"; do
			kill -0 "$p" 2>/dev/null && left=1
		done
		((left)) || return 0
		sleep 0.1
	done
	for p in "$@"; do
		if kill -0 "$p" 2>/dev/null; then
			say "process $p ignored SIGTERM for ${secs}s; killing it"
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
}

cmd_web_stop() {
	local pid kids=()
	if pid=$(alive_pid "$WEB_PID" "$WEB_COMM"); then
		# The servers signal the processes they started (FastCGI apps, Apache's
		# children) when they stop; wait for all of them too, so that whatever they
		# write on exit (sanitizer reports) is in the log.
		mapfile -t kids < <(descendants "$pid")
		kill -TERM "$pid" 2>/dev/null || true
		wait_exit "$pid" "$STOP_WAIT" || die "$WEB_TITLE (pid $pid) did not stop within ${STOP_WAIT}s"
		wait_all 10 "${kids[@]}"
	fi
	web_stop_app
	rm -f -- "$WEB_PID"
	case $WEB_SERVER in
	lighttpd) rm -f -- "$VAR"/fcgi.sock-* ;;
	apache | cgi) rm -rf -- "${VAR:?}/$WEB_NAME.run" ;;
	esac
	return 0
}

# cmd_stop_all — stop every web server running under $VAR.
cmd_stop_all() {
	local s rc=0
	for s in "${SERVERS[@]}"; do
		(web_setup "$s" && cmd_web_stop) || rc=1
	done
	return "$rc"
}

cmd_app_pids() {
	app_pids
}

cmd_web_logs() {
	printf '%s\n' "$WEB_LOG"
	[[ $WEB_APP_LOG == "$WEB_LOG" ]] || printf '%s\n' "$WEB_APP_LOG"
}

# ---------------------------------------------------------------------------- run

RUN_DB_STARTED=""
RUN_WEB_STARTED=""

run_cleanup() {
	# Subshells: a failure (die) in one stop must not skip the other.
	if [[ -n $RUN_WEB_STARTED ]]; then
		say "stopping $WEB_TITLE"
		(cmd_web_stop) || true
	fi
	if [[ -n $RUN_DB_STARTED ]]; then
		say "stopping MariaDB"
		(cmd_db_stop) || true
	fi
}

cmd_run() {
	local port=${PORT:-8080} conf=${CONF:-$ROOT/conf} pid
	[[ -d $conf ]] || die "CONF directory '$conf' does not exist"
	conf=$(abspath "$conf")
	export CONF=$conf PORT=$port RFEVENTS_CONF=$conf

	if pid=$(alive_pid "$WEB_PID" "$WEB_COMM"); then
		die "$WEB_TITLE already runs under $VAR (pid $pid): is another 'make run' active? ('tests/stack.sh stop' stops it)"
	fi
	on_exit run_cleanup

	alive_pid "$DB_PID" mariadbd >/dev/null || RUN_DB_STARTED=1
	cmd_db_start
	cmd_migrate
	load_db_env
	app_check "$conf" "$VAR/check.log"
	RUN_WEB_STARTED=1
	cmd_web_start

	local url=http://127.0.0.1:$port
	printf '\nrfevents is running on %s behind %s  (config %s, state %s)\n' \
		"$url" "$WEB_TITLE" "$conf" "$VAR"
	printf 'RFEVENTS_DB and the log files are in %s; Ctrl-C stops everything.\n\n' "$VAR"
	if demo_key "$conf"; then
		printf 'Send an event:\n'
		demo_curl "$url"
		printf '\n'
		printf 'Run it twice: the first answers 201 "accepted" (unless this database has seen\n'
		printf 'it before), the second 200 "duplicate" -- the event is applied once.\n\n'
	fi
	printf 'Health: curl -sS %s/v1/health\n' "$url"
	local logs=()
	mapfile -t logs < <(cmd_web_logs)
	printf 'Following %s:\n' "${logs[*]}"

	follow "${logs[@]}"
	while alive_pid "$WEB_PID" "$WEB_COMM" >/dev/null; do
		sleep 1 &
		wait $! || true
	done
	RUN_WEB_STARTED=""
	say "$WEB_TITLE stopped unexpectedly (log: $WEB_LOG)"
	exit 1
}

# ---------------------------------------------------------------------------- main

main() {
	(($# == 1)) || usage
	case $1 in
	deps) cmd_deps ;;
	db-start | db-stop | migrate | web-start | web-stop | web-logs | app-pids | run | stop)
		setup_paths
		case $1 in
		db-start) cmd_db_start ;;
		db-stop) cmd_db_stop ;;
		migrate) cmd_migrate ;;
		web-start) cmd_web_start ;;
		web-stop) cmd_web_stop ;;
		web-logs) cmd_web_logs ;;
		app-pids) cmd_app_pids ;;
		run) cmd_run ;;
		stop)
			# a failing web server stop must not keep MariaDB running
			cmd_stop_all || say "warning: a web server under $VAR did not stop cleanly"
			cmd_db_stop
			;;
		esac
		;;
	*) usage ;;
	esac
}

main "$@"
