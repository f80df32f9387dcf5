#!/usr/bin/env bash
# tests/cluster.sh — rfevents on a three-node MariaDB Galera Cluster, all on one machine.
#
#   tests/cluster.sh deps            install missing Debian packages (root), else print the command
#   tests/cluster.sh start           start the three nodes (first time: initialise), wait until all
#                                    are Synced, create the database and account, apply the schema,
#                                    start three web servers (lighttpd + the FastCGI app)
#   tests/cluster.sh stop            stop the web servers and the nodes
#   tests/cluster.sh status          state, cluster size and memory of every node; the web servers
#   tests/cluster.sh kill-node N     kill -9 node N (1..3)
#   tests/cluster.sh restart-node N  start node N again after a crash (--wsrep-recover, then
#                                    --wsrep-start-position, so that it rejoins by IST) or after a
#                                    clean stop; wait until it is Synced
#   tests/cluster.sh run             start everything, print keys and curl lines for the three
#                                    web servers, stay in the foreground; Ctrl-C stops everything
#
# Environment:
#   VAR               state directory (default: <repo>/var); the cluster lives in $VAR/cluster
#   PORT              HTTP port of web server 1 (default 8080); web server 2 and 3 listen on
#                     PORT+1 and PORT+2, always on 127.0.0.1
#   DB_PORT_BASE      node N's client port is DB_PORT_BASE+N (default 3310: 3311, 3312, 3313)
#   GALERA_PORT_BASE  node N's group communication port is GALERA_PORT_BASE+10*N, its IST port
#                     one more, its SST (rsync) port two more (default 4560: 4570-4572, ...)
#   CONF              configuration directory of the app (default: <repo>/conf)
#   PROCS             FastCGI processes per web server (default 3)
#   SYNC_TIMEOUT      seconds for a node to become Synced (default 180)
#   BUFFER_POOL, GCACHE   innodb_buffer_pool_size and gcache.size per node (default 64M each)
#   GALERA_SYNC_WAIT  the nodes' default wsrep_sync_wait (default 0; the app sets its own)
#   FCGI_BIN, CLI_BIN the binaries (default: <repo>/bin/rfevents.fcgi, <repo>/bin/rfevents)
#   ASAN_OPTIONS, UBSAN_OPTIONS, LSAN_OPTIONS  passed on to the app when set
# The ports are fixed by `start` when a node is created (they are in its my.cnf) and the web
# ports when the web servers start; later commands read them from there.
#
# Layout under $VAR/cluster: db.env (RFEVENTS_DB listing the three nodes, mode 600, plus
# RFEVENTS_DB_N naming node N alone), cluster.env (ports and URLs, for scripts),
# nodeN/{my.cnf (from conf/deploy/galera-node.cnf.in), data, tmp, mysqld.sock, mysqld.pid,
# error.log, console.log, recover.log}, webN/ (the web server's state directory as
# tests/stack.sh lays it out; its db.env lists node N first, then the other two).
#
# The nodes run as the mysql user when this script runs as root (rsync state transfers
# fail as root), else as the calling user. The database administrator is the OS user,
# over each node's socket (unix_socket authentication).
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=${0##*/}
START_CMD="$PROG start"
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/tests/lib.sh"

DEB_PACKAGES=(galera-4 rsync mariadb-server mariadb-client lighttpd iproute2 lsof
	python3 curl)

NODES=(1 2 3)
STACK=$ROOT/tests/stack.sh
TEMPLATE=$ROOT/conf/deploy/galera-node.cnf.in
FCGI_BIN=${FCGI_BIN:-$ROOT/bin/rfevents.fcgi}
CLI_BIN=${CLI_BIN:-$ROOT/bin/rfevents}
CLUSTER_NAME=rfevents
SYNC_TIMEOUT=${SYNC_TIMEOUT:-180}
STOP_WAIT=90	# seconds for a node to stop after being asked to

# now — seconds since the epoch with milliseconds.
now() {
	date +%s.%3N
}

# since T0 — seconds elapsed since T0 (one decimal).
since() {
	awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'
}

check_number() {
	[[ $2 =~ ^[0-9]+$ ]] || die "$1 must be a number, not '$2'"
}

setup_paths() {
	setup_var
	CL=$VAR/cluster
	mkdir -p -- "$CL"
	DB_ENV=$CL/db.env
	CL_ENV=$CL/cluster.env
	((${#CL} < 80)) || die "VAR is too long for the unix socket paths under $CL"
	if (($(id -u) == 0)); then
		RUN_USER=mysql
		id mysql >/dev/null 2>&1 || die "there is no 'mysql' user: run '$PROG deps' (mariadb-server makes it)"
	else
		RUN_USER=$DB_ADMIN
	fi
	DB_PORT_BASE=${DB_PORT_BASE:-3310}
	GALERA_PORT_BASE=${GALERA_PORT_BASE:-4560}
	check_number DB_PORT_BASE "$DB_PORT_BASE"
	check_number GALERA_PORT_BASE "$GALERA_PORT_BASE"
	check_number SYNC_TIMEOUT "$SYNC_TIMEOUT"
}

node_dir() {
	printf '%s/node%s\n' "$CL" "$1"
}

web_var() {
	printf '%s/web%s\n' "$CL" "$1"
}

check_node_arg() {
	[[ ${1:-} =~ ^[123]$ ]] || die "the node number must be 1, 2 or 3"
}

node_pid() {
	alive_pid "$(node_dir "$1")/mysqld.pid" mariadbd
}

# Ports of node N: from its my.cnf once it exists, else from the environment.
node_ports() {
	local n=$1 cnf
	cnf=$(node_dir "$n")/my.cnf
	if [[ -s $cnf ]]; then
		N_PORT=$(sed -n 's/^port *= *\([0-9]*\)$/\1/p' "$cnf")
		N_GCOMM=$(sed -n 's/^wsrep-node-address *= *127\.0\.0\.1:\([0-9]*\)$/\1/p' "$cnf")
		N_IST=$(sed -n 's/.*ist\.recv_addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$cnf")
		N_SST=$(sed -n 's/^wsrep-sst-receive-address *= *127\.0\.0\.1:\([0-9]*\)$/\1/p' "$cnf")
		[[ -n $N_PORT && -n $N_GCOMM && -n $N_IST && -n $N_SST ]] ||
			die "cannot read the ports of node $n from $cnf"
	else
		N_PORT=$((DB_PORT_BASE + n))
		N_GCOMM=$((GALERA_PORT_BASE + 10 * n))
		N_IST=$((N_GCOMM + 1))
		N_SST=$((N_GCOMM + 2))
	fi
}

# ---------------------------------------------------------------------------- deps

cmd_deps() {
	deps_install "${DEB_PACKAGES[@]}"
}

need_tools() {
	command -v mariadbd >/dev/null || die "mariadbd not found: run '$PROG deps'"
	[[ -r /usr/lib/galera/libgalera_smm.so ]] || die "galera-4 is not installed: run '$PROG deps'"
	command -v rsync >/dev/null || die "rsync not found: run '$PROG deps'"
	[[ -r $TEMPLATE ]] || die "$TEMPLATE is missing"
}

# ---------------------------------------------------------------------------- nodes

admin_sql() {
	db_admin "$(node_dir "$1")/mysqld.sock" --connect-timeout=3
}

# node_var N NAME — a global status variable of node N (empty if it does not answer).
node_var() {
	printf "SHOW GLOBAL STATUS LIKE '%s';\n" "$2" | admin_sql "$1" 2>/dev/null |
		awk -F'\t' 'NR == 1 { print $2 }'
}

# Write nodeN/my.cnf from the template.
write_node_cnf() {
	local n=$1 nd addr="gcomm://" m sep=""
	nd=$(node_dir "$n")
	for m in "${NODES[@]}"; do
		node_ports "$m"
		addr+="${sep}127.0.0.1:$N_GCOMM"
		sep=,
	done
	node_ports "$n"
	sed -e "s|@NODE@|$n|g" \
		-e "s|@NODE_DIR@|$nd|g" \
		-e "s|@PORT@|$N_PORT|g" \
		-e "s|@GCOMM_PORT@|$N_GCOMM|g" \
		-e "s|@IST_PORT@|$N_IST|g" \
		-e "s|@SST_PORT@|$N_SST|g" \
		-e "s|@CLUSTER_ADDRESS@|$addr|g" \
		-e "s|@CLUSTER_NAME@|$CLUSTER_NAME|g" \
		-e "s|@BUFFER_POOL@|${BUFFER_POOL:-64M}|g" \
		-e "s|@GCACHE@|${GCACHE:-64M}|g" \
		-e "s|@SYNC_WAIT@|${GALERA_SYNC_WAIT:-0}|g" \
		-e "s|^user *= *mysql$|user                     = $RUN_USER|" \
		"$TEMPLATE" >"$nd/my.cnf.tmp"
	mv -f -- "$nd/my.cnf.tmp" "$nd/my.cnf"
}

# Create node N's directory, option file and (first time) data directory. Every node gets
# system tables of its own; a joiner's are replaced by the state transfer.
node_init() {
	local n=$1 nd
	nd=$(node_dir "$n")
	mkdir -p -- "$nd/tmp"
	[[ -s $nd/my.cnf ]] || write_node_cnf "$n"
	if [[ ! -d $nd/data/mysql ]]; then
		db_install "$nd/data" "$nd/install.log" "$RUN_USER" "node $n" --tmpdir="$nd/tmp"
	fi
	touch -- "$nd/error.log" "$nd/console.log"
	chown -R "$RUN_USER:" "$nd"
}

# grastate_field N NAME — a field of node N's grastate.dat (seqno, safe_to_bootstrap, uuid).
grastate_field() {
	local f
	f=$(node_dir "$1")/data/grastate.dat
	[[ -s $f ]] || return 1
	sed -n "s/^$2: *//p" "$f" | head -n 1
}

# recover_position N — run node N with --wsrep-recover and print the recovered
# uuid:seqno (InnoDB's last committed write set).
recover_position() {
	local n=$1 nd pos
	nd=$(node_dir "$n")
	: >"$nd/recover.log"
	chown "$RUN_USER:" "$nd/recover.log"
	if ! mariadbd --defaults-file="$nd/my.cnf" --wsrep-recover \
		--log-error="$nd/recover.log" </dev/null >>"$nd/console.log" 2>&1; then
		log_tail "$nd/recover.log"
		die "mariadbd --wsrep-recover failed for node $n"
	fi
	pos=$(sed -n 's/.*WSREP: Recovered position: *\([0-9a-f-]*:-\{0,1\}[0-9]*\).*/\1/p' \
		"$nd/recover.log" | tail -n 1)
	[[ -n $pos ]] || {
		log_tail "$nd/recover.log"
		die "no recovered position for node $n in $nd/recover.log"
	}
	printf '%s\n' "$pos"
}

# node_launch N ARGS... — start mariadbd for node N in the background (no waiting).
node_launch() {
	local n=$1 nd
	shift
	nd=$(node_dir "$n")
	node_ports "$n"
	local p
	for p in "$N_PORT" "$N_GCOMM" "$N_IST" "$N_SST"; do
		port_busy "$p" && die "port $p on 127.0.0.1 (node $n) is already in use"
	done
	rm -f -- "$nd/mysqld.pid"
	chown "$RUN_USER:" "$nd/error.log" "$nd/console.log" 2>/dev/null || true
	printf '%s: starting node %s: mariadbd --defaults-file=%s %s\n' \
		"$(date '+%F %T')" "$n" "$nd/my.cnf" "$*" >>"$nd/console.log"
	daemon mariadbd --defaults-file="$nd/my.cnf" "$@" </dev/null >>"$nd/console.log" 2>&1 &
	LAUNCHED_PID=$!
}

node_synced() {
	[[ $(node_var "$1" wsrep_local_state_comment) == Synced ]]
}

# wait_synced N PID — wait until node N reports Synced: 0; 1 on timeout; 2 when PID died.
wait_synced() {
	wait_ready "$2" "$SYNC_TIMEOUT" node_synced "$1"
}

# node_start N MODE — start node N and wait until it is Synced. MODE: bootstrap (a new
# cluster from this node's state) or join. A node whose last run crashed joins from
# its recovered position (IST when the donor still has the write sets). Prints the time.
node_start() {
	local n=$1 mode=$2 nd t0 args=() rc=0 seqno how
	nd=$(node_dir "$n")
	if node_pid "$n" >/dev/null; then
		say "node $n runs already"
		return 0
	fi
	node_init "$n"
	if [[ $mode == bootstrap ]]; then
		args+=(--wsrep-new-cluster)
	fi
	seqno=$(grastate_field "$n" seqno) || seqno=""
	if [[ -f $nd/data/grastate.dat && $seqno == -1 ]]; then
		# Crashed (or still running when it was copied): the position is in InnoDB.
		local pos
		t0=$(now)
		pos=$(recover_position "$n")
		say "node $n: recovered position $pos ($(since "$t0") s)"
		args+=(--wsrep-start-position="$pos")
	fi
	local mark
	mark=$(wc -l <"$nd/error.log")
	t0=$(now)
	node_launch "$n" "${args[@]}"
	wait_synced "$n" "$LAUNCHED_PID" || rc=$?
	if ((rc != 0)); then
		tail -n "+$((mark + 1))" -- "$nd/error.log" | tail -n 30 >&2
		start_failed "$rc" "$LAUNCHED_PID" "node $n" "$nd/error.log" \
			"was not Synced within ${SYNC_TIMEOUT}s"
	fi
	NODE_TIME=$(since "$t0")
	how=""
	if [[ $mode == join ]]; then
		# The rsync script reports which it did; an SST is followed by an (often empty)
		# IST, so look for SST first.
		if tail -n "+$((mark + 1))" -- "$nd/error.log" | grep -q 'rsync SST completed on joiner'; then
			how=" by SST"
		elif tail -n "+$((mark + 1))" -- "$nd/error.log" | grep -q 'WSREP: IST received'; then
			how=" by IST"
		fi
	fi
	say "node $n Synced after $NODE_TIME s ($mode$how, pid $LAUNCHED_PID)"
}

node_stop() {
	local nd
	nd=$(node_dir "$1")
	db_stop "$nd/mysqld.pid" "$nd/mysqld.sock" "$nd/error.log" "node $1"
}

# Which node should form the cluster when none runs: the one that left last after a clean
# shutdown (safe_to_bootstrap: 1), else (all crashed) the one with the highest recovered
# seqno, which is then marked safe to bootstrap. A fresh cluster starts from node 1.
pick_bootstrap() {
	local n best="" best_seq=-2 pos seq f
	for n in "${NODES[@]}"; do
		if [[ $(grastate_field "$n" safe_to_bootstrap 2>/dev/null) == 1 ]]; then
			printf '%s\n' "$n"
			return 0
		fi
	done
	for n in "${NODES[@]}"; do
		[[ -s $(node_dir "$n")/data/grastate.dat ]] || continue
		seq=$(grastate_field "$n" seqno)
		if [[ $seq == -1 ]]; then
			pos=$(recover_position "$n")
			seq=${pos##*:}
		fi
		if [[ $seq =~ ^-?[0-9]+$ ]] && ((seq > best_seq)); then
			best=$n
			best_seq=$seq
		fi
	done
	if [[ -z $best ]]; then
		printf '1\n'
		return 0
	fi
	f=$(node_dir "$best")/data/grastate.dat
	say "no node left the cluster last: bootstrapping node $best (highest seqno $best_seq)"
	sed -i 's/^safe_to_bootstrap: *0/safe_to_bootstrap: 1/' "$f"
	printf '%s\n' "$best"
}

# ---------------------------------------------------------------------------- database

# The account's password is made once and kept in db.env; the account is (re)set to it
# through node N (the others get it by replication).
db_provision() {
	local n=$1 pass m
	pass=$(db_password)
	db_create "$pass" admin_sql "$n"
	local list="" sep="" ports=()
	for m in "${NODES[@]}"; do
		node_ports "$m"
		ports+=("$N_PORT")
		list+="${sep}127.0.0.1:$N_PORT"
		sep=,
	done
	{
		printf 'RFEVENTS_DB=mariadb://rfevents:%s@%s/rfevents\n' "$pass" "$list"
		for m in "${NODES[@]}"; do
			printf 'RFEVENTS_DB_%s=mariadb://rfevents:%s@127.0.0.1:%s/rfevents\n' \
				"$m" "$pass" "${ports[m - 1]}"
		done
	} | write_private "$DB_ENV"
	DB_PASS=$pass
	# The account must work over TCP on every node (each web server prefers another).
	for m in "${NODES[@]}"; do
		node_ports "$m"
		MYSQL_PWD=$pass mariadb --no-defaults -h 127.0.0.1 -P "$N_PORT" -u rfevents \
			--connect-timeout=5 -e 'SELECT 1' rfevents >/dev/null ||
			die "the rfevents account cannot log in to node $m over 127.0.0.1:$N_PORT"
	done
}

# RFEVENTS_DB for web server N: node N first, then the others in order.
node_list_for() {
	local first=$1 list="" sep="" m
	node_ports "$first"
	list="127.0.0.1:$N_PORT"
	for m in "${NODES[@]}"; do
		((m == first)) && continue
		node_ports "$m"
		list+=",127.0.0.1:$N_PORT"
	done
	printf 'mariadb://rfevents:%s@%s/rfevents\n' "$DB_PASS" "$list"
}

# ---------------------------------------------------------------------------- web servers

web_port() {
	local cnf
	cnf=$(web_var "$1")/lighttpd.conf
	if [[ -s $cnf ]] && alive_pid "$(web_var "$1")/lighttpd.pid" lighttpd >/dev/null; then
		sed -n 's/^server\.port *= *\([0-9]*\)$/\1/p' "$cnf"
	else
		printf '%s\n' "$((${PORT:-8080} + $1 - 1))"
	fi
}

web_start() {
	local n=$1 wv port
	wv=$(web_var "$n")
	mkdir -p -- "$wv"
	port=$((${PORT:-8080} + n - 1))
	printf 'RFEVENTS_DB=%s\n' "$(node_list_for "$n")" | write_private "$wv/db.env"
	VAR=$wv PORT=$port CONF=$CONF PROCS=${PROCS:-3} FCGI_BIN=$FCGI_BIN CLI_BIN=$CLI_BIN \
		"$STACK" web-start || die "web server $n did not start (log: $wv/lighttpd-error.log)"
	say "web server $n on http://127.0.0.1:$port (database node $n first)"
}

web_stop() {
	local wv
	wv=$(web_var "$1")
	[[ -d $wv ]] || return 0
	VAR=$wv "$STACK" web-stop
}

write_cluster_env() {
	local m urls="" nodes="" sep=""
	for m in "${NODES[@]}"; do
		node_ports "$m"
		nodes+="${sep}127.0.0.1:$N_PORT"
		urls+="${sep}http://127.0.0.1:$(web_port "$m")"
		sep=,
	done
	printf 'BASE_URLS=%s\nCLUSTER_NODES=%s\nCLUSTER_VAR=%s\n' "$urls" "$nodes" "$VAR" \
		>"$CL_ENV.tmp"
	mv -f -- "$CL_ENV.tmp" "$CL_ENV"
}

# ---------------------------------------------------------------------------- commands

# Serialise the commands that start or stop things in one $VAR.
take_lock() {
	exec 8>"$CL/.lock"
	if ! flock -n 8; then
		say "another $PROG command holds $CL/.lock; waiting for it"
		flock 8
	fi
}

cmd_db_start() {
	local n running=() t0 boot="" times=""
	need_tools
	for n in "${NODES[@]}"; do
		node_pid "$n" >/dev/null && running+=("$n")
	done
	t0=$(now)
	# New nodes get their system tables in parallel (each has its own tmpdir).
	local pids=() p
	for n in "${NODES[@]}"; do
		[[ -d $(node_dir "$n")/data/mysql ]] && continue
		(node_init "$n") &
		pids+=($!)
	done
	for p in "${pids[@]}"; do
		wait "$p" || die "could not initialise the nodes"
	done
	if ((${#running[@]} == 0)); then
		boot=$(pick_bootstrap)
		node_start "$boot" bootstrap
		times+=" node$boot=${NODE_TIME}s"
	else
		for n in "${running[@]}"; do
			wait_synced "$n" "$(node_pid "$n")" ||
				die "node $n runs but is not Synced within ${SYNC_TIMEOUT}s"
		done
	fi
	# Joiners one after the other: a donor serves one state transfer at a time.
	for n in "${NODES[@]}"; do
		[[ $n == "$boot" ]] && continue
		node_pid "$n" >/dev/null && continue
		node_start "$n" join
		times+=" node$n=${NODE_TIME}s"
	done
	CLUSTER_TIME=$(since "$t0")
	local any=${boot:-${running[0]}}
	say "cluster Synced: $(node_var "$any" wsrep_cluster_size) nodes after $CLUSTER_TIME s (${times# })"
	db_provision "$any"
}

cmd_start() {
	CONF=$(abspath "${CONF:-$ROOT/conf}")
	check_plain_path "$CONF" CONF
	need_bin "$FCGI_BIN"
	take_lock
	cmd_db_start
	cmd_migrate
	local n
	for n in "${NODES[@]}"; do
		if alive_pid "$(web_var "$n")/lighttpd.pid" lighttpd >/dev/null; then
			say "web server $n runs already"
			continue
		fi
		web_start "$n"
	done
	write_cluster_env
	cmd_memory
}

cmd_stop() {
	take_lock
	local n alive=() pids=() rc=0
	for n in "${NODES[@]}"; do
		web_stop "$n" || rc=1
	done
	for n in "${NODES[@]}"; do
		node_pid "$n" >/dev/null && alive+=("$n")
	done
	# All but the last running node together, then the last one: it records that it is
	# safe to bootstrap the cluster from (grastate.dat), which `start` looks for.
	local last=""
	((${#alive[@]} == 0)) || last=${alive[${#alive[@]} - 1]}
	for n in "${alive[@]}"; do
		[[ $n == "$last" ]] && continue
		(node_stop "$n") &
		pids+=($!)
	done
	for n in "${pids[@]}"; do
		wait "$n" || rc=1
	done
	if [[ -n $last ]]; then
		(node_stop "$last") || rc=1
	fi
	return $rc
}

cmd_kill_node() {
	local n=$1 pid
	check_node_arg "$n"
	pid=$(node_pid "$n") || die "node $n does not run"
	kill -KILL "$pid"
	wait_exit "$pid" 10 || die "node $n (pid $pid) survived kill -9"
	printf '%s: node %s killed (kill -9) at %s\n' "$(date '+%F %T')" "$n" "$(now)" \
		>>"$(node_dir "$n")/console.log"
	say "node $n (pid $pid) killed with SIGKILL"
}

cmd_restart_node() {
	local n=$1 m other=""
	check_node_arg "$n"
	take_lock
	need_tools
	if node_pid "$n" >/dev/null; then
		say "node $n runs already"
		return 0
	fi
	for m in "${NODES[@]}"; do
		[[ $m == "$n" ]] && continue
		if [[ $(node_var "$m" wsrep_cluster_status) == Primary ]]; then
			other=$m
			break
		fi
	done
	[[ -n $other ]] || die "no other node is in the primary component: use '$PROG start'"
	# A node that has just crashed is still a member for the others until they evict it
	# (some seconds). Starting it again before that makes the membership negotiation take
	# ~20 s longer: wait until the cluster's size is the number of running nodes.
	local nrun=0 i t0
	for m in "${NODES[@]}"; do
		node_pid "$m" >/dev/null && nrun=$((nrun + 1))
	done
	t0=$(now)
	for ((i = 0; i < 600; i++)); do
		[[ $(node_var "$other" wsrep_cluster_size) == "$nrun" ]] && break
		sleep 0.1
	done
	((i == 0)) || say "waited $(since "$t0") s until node $n had left the cluster"
	node_start "$n" join
	printf 'RESTART_SECONDS=%s\n' "$NODE_TIME"
}

cmd_memory() {
	local n pid rss line=""
	for n in "${NODES[@]}"; do
		pid=$(node_pid "$n") || continue
		rss=$(awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null)
		line+=" node$n=${rss}MB"
	done
	say "memory (RSS):${line}"
}

cmd_status() {
	local n pid st size cstatus committed rss port dsz rc=0
	printf '%-6s %-8s %-6s %-10s %-5s %-8s %-10s %-8s %s\n' \
		node pid port state size status committed rss_MB disk_MB
	for n in "${NODES[@]}"; do
		node_ports "$n"
		dsz=$(du -sm "$(node_dir "$n")/data" 2>/dev/null | cut -f1) || dsz=-
		if pid=$(node_pid "$n"); then
			st=$(node_var "$n" wsrep_local_state_comment)
			size=$(node_var "$n" wsrep_cluster_size)
			cstatus=$(node_var "$n" wsrep_cluster_status)
			committed=$(node_var "$n" wsrep_last_committed)
			rss=$(awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null)
			[[ $st == Synced ]] || rc=1
		else
			pid=- st=down size=- cstatus=- committed=- rss=-
			rc=1
		fi
		printf '%-6s %-8s %-6s %-10s %-5s %-8s %-10s %-8s %s\n' \
			"node$n" "$pid" "$N_PORT" "${st:-?}" "${size:-?}" "${cstatus:-?}" \
			"${committed:-?}" "$rss" "${dsz:--}"
	done
	for n in "${NODES[@]}"; do
		port=$(web_port "$n")
		if pid=$(alive_pid "$(web_var "$n")/lighttpd.pid" lighttpd); then
			printf 'web%s   lighttpd pid %s on http://127.0.0.1:%s (node %s first)\n' \
				"$n" "$pid" "$port" "$n"
		else
			printf 'web%s   down\n' "$n"
			rc=1
		fi
	done
	return $rc
}

# ---------------------------------------------------------------------------- run

RUN_STARTED=""

run_cleanup() {
	if [[ -n $RUN_STARTED ]]; then
		say "stopping the web servers and the cluster"
		(cmd_stop) || true
	fi
}

cmd_run() {
	local conf=${CONF:-$ROOT/conf} n logs=()
	[[ -d $conf ]] || die "CONF directory '$conf' does not exist"
	CONF=$(abspath "$conf")
	export CONF RFEVENTS_CONF=$CONF
	for n in "${NODES[@]}"; do
		if alive_pid "$(web_var "$n")/lighttpd.pid" lighttpd >/dev/null; then
			die "web server $n already runs under $CL: is another cluster 'run' active? ('$PROG stop' stops it)"
		fi
	done
	on_exit run_cleanup
	RUN_STARTED=1
	cmd_start
	exec 8>&-	# the lock: `kill-node` and `restart-node` work while this runs
	load_db_env
	app_check "$CONF" "$CL/check.log"
	printf '\nrfevents runs on a three-node Galera cluster (config %s, state %s):\n' "$CONF" "$CL"
	for n in "${NODES[@]}"; do
		node_ports "$n"
		printf '  web server %s: http://127.0.0.1:%s  -> database node %s (127.0.0.1:%s) first\n' \
			"$n" "$(web_port "$n")" "$n" "$N_PORT"
	done
	printf 'RFEVENTS_DB is in %s; Ctrl-C stops everything.\n' "$DB_ENV"
	printf "Try '%s kill-node 2', then '%s restart-node 2' (same VAR) in another terminal.\n\n" \
		"$0" "$0"
	if demo_key "$CONF"; then
		printf 'Send the same event through each web server: the first answers 201, the others\n'
		printf '200 "duplicate" -- the event is applied once, whichever node takes it.\n'
		for n in "${NODES[@]}"; do
			demo_curl "http://127.0.0.1:$(web_port "$n")"
		done
		printf '\n'
	fi
	for n in "${NODES[@]}"; do
		printf 'Health %s: curl -sS http://127.0.0.1:%s/v1/health\n' "$n" "$(web_port "$n")"
		logs+=("$(web_var "$n")/lighttpd-error.log")
	done
	printf 'Following the web servers'"'"' logs:\n'
	follow "${logs[@]}"
	local up
	while :; do
		up=0
		for n in "${NODES[@]}"; do
			alive_pid "$(web_var "$n")/lighttpd.pid" lighttpd >/dev/null && up=1
		done
		((up)) || break
		sleep 1 &
		wait $! || true
	done
	say "all web servers stopped unexpectedly (logs: ${logs[*]})"
	exit 1
}

# ---------------------------------------------------------------------------- main

main() {
	(($# >= 1)) || usage
	case $1 in
	deps)
		(($# == 1)) || usage
		cmd_deps
		;;
	start | stop | status | run | memory)
		(($# == 1)) || usage
		setup_paths
		case $1 in
		start) cmd_start ;;
		stop) cmd_stop ;;
		status) cmd_status ;;
		run) cmd_run ;;
		memory) cmd_memory ;;
		esac
		;;
	kill-node | restart-node)
		(($# == 2)) || usage
		setup_paths
		case $1 in
		kill-node) cmd_kill_node "$2" ;;
		restart-node) cmd_restart_node "$2" ;;
		esac
		;;
	*) usage ;;
	esac
}

main "$@"
