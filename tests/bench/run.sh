#!/usr/bin/env bash
# tests/bench/run.sh — `make bench`: the service against the database's ceiling.
#
# Starts its own stack (tests/stack.sh with VAR=var/bench, lighttpd on
# 127.0.0.1:$BENCH_PORT, CONF=tests/bench/conf: tenant "bench", one rule), creates
# a key, pre-creates BENCH_USERS users through the service and seeds
# BENCH_DUP_COUNT events for the duplicate path. Then, BENCH_ROUNDS times, each
# ceiling measurement right before the service measurement it is compared with
# (so that drift hits both alike):
#
#   ceiling  (tests/bench/ceiling.c: the service's SQL, straight to MariaDB; its
#            header lists the statements: db/db.c multi_sql[]
#            templates DB_M_*, in the order core/ingest.c runs them)
#     accept 1 conn, accept 4 conn        one event per transaction
#     txn1000 1 conn, txn1000 4 conn      1000 events per transaction
#     dup 4 conn                          the read that answers a known event
#   service  (wrk + tests/bench/events.lua through lighttpd)
#     single@16, single@64                one new event per request
#     batch@4                             1000 new events per request
#     dup@16                              replay of already-seen events
#   minimal  (the same wrk runs against a minimal endpoint: the ceiling program
#            as a FastCGI app behind its own lighttpd, tests/bench/lib.sh
#            minimal_up; the service's SQL and the web server's cost, nothing
#            of rfevents)
#     single@16, batch@4, dup@16          right after the service's run
#
# and reports medians: events/s, p50 and p99 latency (per request; per
# transaction for the ceiling), the service/ceiling ratios, the same ratios for
# the minimal endpoint and the service/minimal ratios, the peak RSS
# (VmHWM) of the FastCGI workers after the runs and after BENCH_LEAK_REQUESTS
# more single events (the peak reset before them), and plain-CGI cold starts
# (GET /v1/health and one POST, BENCH_CGI_N sequential runs each). The report
# is printed and saved as var/bench/results-<timestamp>.txt; every run's raw
# output is in var/bench/logs/.
#
# Settings (environment; see also tests/bench/lib.sh):
#   BENCH_SECONDS=10  BENCH_ROUNDS=3  BENCH_LEAK_REQUESTS=100000  BENCH_CGI_N=200
#   BENCH_BATCH_CONNS=4  BENCH_PORT=19500  BENCH_PROCS=4  BENCH_USERS=1000
#   BENCH_BATCH_ORDER=sorted|random   the users of one batch / 1000-event transaction
#     are random; "sorted" sends them in ascending order (default). When profiles
#     were locked event by event, random order made concurrent 1000-event
#     transactions over 1000 users deadlock nearly every time, so the numbers
#     measured retries, not throughput; with DB_M_IDENT_LOCK (the identities of a
#     transaction locked in statements of up to 1000, sorted) the ceiling takes its
#     locks in the same order either way.
# With the defaults it takes about 7 minutes.
set -euo pipefail

# shellcheck source=tests/bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${BENCH_ROUNDS:-3}
LEAK_REQUESTS=${BENCH_LEAK_REQUESTS:-100000}
CGI_N=${BENCH_CGI_N:-200}
BATCH_CONNS=${BENCH_BATCH_CONNS:-4}
BATCH_ORDER=${BENCH_BATCH_ORDER:-sorted}
case $BATCH_ORDER in
sorted) SORTED=1 ;;
random) SORTED=0 ;;
*) die "BENCH_BATCH_ORDER must be sorted or random" ;;
esac
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RAW=$LOGS/raw-$STAMP.tsv
OUT=$VAR/results-$STAMP.txt

need_pkg wrk wrk
need_pkg curl curl
need_pkg pkg-config pkg-config
need_pkg python3 python3
build_ceiling
T0=$(date +%s)
stack_up
minimal_up
say "stack up on 127.0.0.1:$PORT ($PROCS FastCGI processes), state in $VAR;" \
	"the minimal endpoint on 127.0.0.1:$MIN_PORT"
say "seeding $USERS users and $DUP_COUNT events for the duplicate path"
seed_users
seed_dups
DOC_BYTES=$(sql "SELECT ROUND(AVG(LENGTH(doc))) FROM events")

: >"$RAW"
# record SCENARIO ROUND — append the values in R to the raw table:
# scenario round events/s p50_ms p99_ms note
record() {
	local eps p50 p99 note
	if [[ -n ${R[eps]:-} ]]; then                 # the ceiling
		eps=${R[eps]} p50=${R[p50_ms]} p99=${R[p99_ms]}
		note="retries=${R[retries]} gave_up=${R[gave_up]}"
	else                                          # wrk
		local ok=$((R[accepted] + R[duplicate]))
		eps=$(awk -v n="$ok" -v d="${R[duration_us]}" 'BEGIN { printf "%.1f", n / (d / 1e6) }')
		p50=$(awk -v v="${R[p50_us]}" 'BEGIN { printf "%.3f", v / 1000 }')
		p99=$(awk -v v="${R[p99_us]}" 'BEGIN { printf "%.3f", v / 1000 }')
		note="req=${R[requests]} acc=${R[accepted]} dup=${R[duplicate]}"
		note+=" item_err=${R[item_errors]} http_err=${R[http_errors]} sock_err=${R[socket_errors]}"
		[[ -z ${R[from_memory]:-} ]] || note+=" from_memory=${R[from_memory]}"
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$eps" "$p50" "$p99" "$note" >>"$RAW"
	say "round $2 $(printf '%-22s' "$1") $(printf '%10s' "$eps") ev/s  p50 ${p50} ms  p99 ${p99} ms  $note"
}

# The order inside a round keeps each ceiling next to its service measurement.
CPU_A=$(cpu_snapshot)
GROUP_TXNS0=$(metric rfevents_event_groups_total)
GROUPED0=$(metric rfevents_grouped_events_total)
for ((round = 1; round <= ROUNDS; round++)); do
	p=c$round-$NONCE
	ceiling_run "$LOGS/ceil-accept-1c-$round.log" accept 1 1 "$p-a1"
	record "ceiling accept 1c" "$round"
	ceiling_run "$LOGS/ceil-accept-4c-$round.log" accept 4 1 "$p-a4"
	record "ceiling accept 4c" "$round"
	wrk_run "$LOGS/svc-single-16-$round.log" "$SECS" 16 single BENCH_NONCE="s16-$round-$NONCE"
	record "service single@16" "$round"
	wrk_run "$LOGS/svc-single-64-$round.log" "$SECS" 64 single BENCH_NONCE="s64-$round-$NONCE"
	record "service single@64" "$round"
	minimal_wrk "$LOGS/min-single-16-$round.log" "$SECS" 16 single BENCH_NONCE="m16-$round-$NONCE"
	record "minimal single@16" "$round"

	ceiling_run "$LOGS/ceil-txn1000-1c-$round.log" accept 1 1000 "$p-t1" --sorted "$SORTED"
	record "ceiling txn1000 1c" "$round"
	ceiling_run "$LOGS/ceil-txn1000-4c-$round.log" accept 4 1000 "$p-t4" --sorted "$SORTED"
	record "ceiling txn1000 4c" "$round"
	wrk_run "$LOGS/svc-batch-$round.log" "$SECS" "$BATCH_CONNS" batch BENCH_NONCE="b-$round-$NONCE" \
		BENCH_ITEMS=1000 BENCH_SORTED="$SORTED"
	record "service batch1000@$BATCH_CONNS" "$round"
	minimal_wrk "$LOGS/min-batch-$round.log" "$SECS" "$BATCH_CONNS" batch BENCH_NONCE="mb-$round-$NONCE" \
		BENCH_ITEMS=1000 BENCH_SORTED="$SORTED"
	record "minimal batch1000@$BATCH_CONNS" "$round"

	ceiling_run "$LOGS/ceil-dup-4c-$round.log" dup 4 1 "$p-d4"
	record "ceiling dup 4c" "$round"
	# how many of them no statement answered (the first duplicate of each
	# key is read from the database, the next ones from the shared table)
	mem0=$(metric rfevents_duplicates_from_memory_total)
	wrk_run "$LOGS/svc-dup-16-$round.log" "$SECS" 16 replay BENCH_NONCE="r-$round-$NONCE"
	R[from_memory]=$(($(metric rfevents_duplicates_from_memory_total) - mem0))
	record "service dup@16" "$round"
	minimal_wrk "$LOGS/min-dup-16-$round.log" "$SECS" 16 replay BENCH_NONCE="mr-$round-$NONCE"
	record "minimal dup@16" "$round"
done

CPU_B=$(cpu_snapshot)
CPU_LINE=$(cpu_report "$CPU_A" "$CPU_B")
# single events that shared a transaction (fcgi_handle_many()) during the
# rounds: new ones and duplicates alike (the counters outlive a run)
GROUP_TXNS=$(($(metric rfevents_event_groups_total) - GROUP_TXNS0))
GROUPED=$(($(metric rfevents_grouped_events_total) - GROUPED0))

# Every event the service accepted is in the database.
SVC_ACCEPTED=$(awk -F'\t' '$1 ~ /^service (single|batch)/ { split($6, a, " "); for (i in a)
	if (a[i] ~ /^acc=/) { sub(/^acc=/, "", a[i]); s += a[i] } } END { print s + 0 }' "$RAW")
DB_ROWS=$(sql "SELECT COUNT(*) FROM events WHERE external_event_id LIKE 's16-%-$NONCE-%' OR
	external_event_id LIKE 's64-%-$NONCE-%' OR external_event_id LIKE 'b-%-$NONCE-%'")
DUP_ROWS=$(sql "SELECT COUNT(*) FROM events WHERE external_event_id LIKE '$DUP_PREFIX-%'")
CHECK=ok
((DB_ROWS >= SVC_ACCEPTED && DUP_ROWS == DUP_COUNT)) || CHECK=FAILED

# ---------------------------------------------------------------- memory
declare -A HWM1 HWM0 HWM2 RSS2
WORKERS=$(worker_pids)
# The peak after the runs includes the 1000-event batches (about 16 MB: a
# batch's body, its parsed events and 14,000 bound parameters). Writing 5 to
# clear_refs resets VmHWM to the current RSS, so the column after the single
# events shows what they alone need; "-" where the kernel refuses the reset.
for w in $WORKERS; do
	HWM1[$w]=$(proc_kb "$w" VmHWM)
	if echo 5 2>/dev/null >"/proc/$w/clear_refs"; then
		HWM0[$w]=$(proc_kb "$w" VmHWM)
	fi
done
say "running $LEAK_REQUESTS more single events for the memory check"
LEAK_T0=$(date +%s.%N)
per_thread=$(((LEAK_REQUESTS + WRK_THREADS - 1) / WRK_THREADS))
wrk_run "$LOGS/svc-leak.log" 1800 16 single BENCH_NONCE="leak-$NONCE" BENCH_QUOTA="$per_thread" \
	BENCH_MARK_DIR="$VAR/marks"
LEAK_S=$(awk -v a="$LEAK_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
LEAK_DONE=${R[requests]}
LEAK_ERR=$((R[item_errors] + R[http_errors] + R[socket_errors]))
WORKERS2=$(worker_pids)
for w in $WORKERS2; do
	HWM2[$w]=$(proc_kb "$w" VmHWM)
	RSS2[$w]=$(proc_kb "$w" VmRSS)
done

# ---------------------------------------------------------------- plain CGI
# cgi_loop N MODE — N sequential executions of the binary as CGI; prints the
# mean milliseconds per execution; the responses' status lines go to LOG.
cgi_loop() {
	local n=$1 mode=$2 i t0 t1 body
	(
		local conf=$CONF db=$DB key=$K bin=$FCGI_BIN
		# only what a web server would pass
		for v in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p'); do
			case $v in PATH | HOME | LANG | LC_ALL) ;; *) unset "$v" 2>/dev/null || true ;; esac
		done
		export RFEVENTS_DB="$db" RFEVENTS_CONF="$conf" GATEWAY_INTERFACE=CGI/1.1 \
			SERVER_PROTOCOL=HTTP/1.1 SERVER_NAME=127.0.0.1 SERVER_PORT=80 REMOTE_ADDR=127.0.0.1
		if [[ $mode == get ]]; then
			export REQUEST_METHOD=GET REQUEST_URI=/v1/health
		else
			export REQUEST_METHOD=POST REQUEST_URI=/v1/cdp/events CONTENT_TYPE=application/json \
				HTTP_AUTHORIZATION="Bearer $key"
		fi
		t0=$(date +%s%N)
		for ((i = 0; i < n; i++)); do
			if [[ $mode == get ]]; then
				"$bin" </dev/null >"$TMPOUT" 2>>"$LOGS/cgi-stderr.log"
			else
				body='{"source":"brand.pos","externalEventId":"cgi-'$NONCE-$i'","eventType":"purchase_completed","occurredAt":"2025-05-20T12:45:00Z","identity":{"externalUserId":"bench-u-'$(printf %04d $((i % USERS)))'","email":"bench-u-'$(printf %04d $((i % USERS)))'@example.com"},"properties":{"order_id":"order_42","amount":120.50,"currency":"USD","store_id":"store_42"}}'
				printf '%s' "$body" >"$TMPIN"
				CONTENT_LENGTH=${#body} "$bin" <"$TMPIN" >"$TMPOUT" 2>>"$LOGS/cgi-stderr.log"
			fi
			head -n 1 "$TMPOUT" >>"$LOGS/cgi-$mode.log"
		done
		t1=$(date +%s%N)
		awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / n / 1e6 }'
	)
}
say "plain CGI: $CGI_N executions of GET /v1/health, $CGI_N of POST /v1/cdp/events"
DB=$RFEVENTS_DB K=$KEY TMPIN=$VAR/tmp/cgi-in TMPOUT=$VAR/tmp/cgi-out
mkdir -p -- "$VAR/tmp"
: >"$LOGS/cgi-get.log"
: >"$LOGS/cgi-post.log"
CGI_GET_MS=$(cgi_loop "$CGI_N" get)
CGI_POST_MS=$(cgi_loop "$CGI_N" post)
CGI_GET_OK=$(grep -c '^Status: 200' "$LOGS/cgi-get.log" || true)
CGI_POST_OK=$(grep -c '^Status: 201' "$LOGS/cgi-post.log" || true)
T1=$(date +%s)

# ---------------------------------------------------------------- report
median() {  # values on stdin, one per line
	sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
		else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
col() {  # col SCENARIO FIELD — the values of one scenario
	awk -F'\t' -v s="$1" -v f="$2" '$1 == s { print $f }' "$RAW"
}
declare -A MED SEEN
SCENARIOS=("ceiling accept 1c" "ceiling accept 4c" "service single@16" "service single@64"
	"minimal single@16"
	"ceiling txn1000 1c" "ceiling txn1000 4c" "service batch1000@$BATCH_CONNS"
	"minimal batch1000@$BATCH_CONNS"
	"ceiling dup 4c" "service dup@16" "minimal dup@16")
ratio() {
	awk -v a="${MED[$1]}" -v b="${MED[$2]}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }'
}
# ratio_row LABEL A B — one line of a ratio block: LABEL and A / B.
ratio_row() {
	printf '  %-44s %s\n' "$1" "$(ratio "$2" "$3")"
}
{
	printf 'rfevents bench %s  (%s)\n' "$STAMP" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(
		git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' + uncommitted changes')"
	printf 'machine: %s cores, %s; %s; %s\n' "$(nproc)" "$(uname -r)" \
		"$(mariadbd --version 2>/dev/null | awk '{ print $3 }')" "$(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }')"
	printf 'setup: %s FastCGI processes behind lighttpd; %s s per measurement, %s rounds (medians);\n' \
		"$PROCS" "$SECS" "$ROUNDS"
	printf '       %s known users, wrk -t%s; stored event doc %s bytes on average\n' \
		"$USERS" "$WRK_THREADS" "$DOC_BYTES"
	printf '       batches / 1000-event transactions: users in %s order\n' "$BATCH_ORDER"
	printf '       ceiling statements: db/sql.h, compiled into the service and the ceiling\n'
	printf '       latency: per HTTP request (wrk) / per transaction (ceiling)\n'
	printf 'machine during the measurements: %s\n\n' "$CPU_LINE"
	printf '%-24s %11s %10s %10s   %s\n' scenario events/s "p50 ms" "p99 ms" "events/s per round; notes (last round)"
	for s in "${SCENARIOS[@]}"; do
		MED[$s]=$(col "$s" 3 | median)
		printf '%-24s %11s %10s %10s   %s; %s\n' "$s" "${MED[$s]}" "$(col "$s" 4 | median)" \
			"$(col "$s" 5 | median)" "$(col "$s" 3 | paste -sd' ')" "$(col "$s" 6 | tail -n 1)"
	done
	printf '\nservice / ceiling (events/s):\n'
	ratio_row "single@16 / ceiling accept 4c" "service single@16" "ceiling accept 4c"
	ratio_row "single@64 / ceiling accept 4c" "service single@64" "ceiling accept 4c"
	ratio_row "batch1000@$BATCH_CONNS / ceiling txn1000 4c" \
		"service batch1000@$BATCH_CONNS" "ceiling txn1000 4c"
	ratio_row "dup@16 / ceiling dup 4c" "service dup@16" "ceiling dup 4c"
	printf '  single events in shared transactions: %s in %s groups (%s per group)\n' "$GROUPED" \
		"$GROUP_TXNS" "$(awk -v a="$GROUPED" -v b="$GROUP_TXNS" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
	printf '\nminimal endpoint / ceiling (the same SQL behind lighttpd, without rfevents):\n'
	ratio_row "single@16 / ceiling accept 4c" "minimal single@16" "ceiling accept 4c"
	ratio_row "batch1000@$BATCH_CONNS / ceiling txn1000 4c" \
		"minimal batch1000@$BATCH_CONNS" "ceiling txn1000 4c"
	ratio_row "dup@16 / ceiling dup 4c" "minimal dup@16" "ceiling dup 4c"
	printf '\nservice / minimal endpoint (what rfevents costs beyond its SQL and the web server):\n'
	ratio_row "single@16" "service single@16" "minimal single@16"
	ratio_row "batch1000@$BATCH_CONNS" "service batch1000@$BATCH_CONNS" "minimal batch1000@$BATCH_CONNS"
	ratio_row "dup@16" "service dup@16" "minimal dup@16"

	printf '\nFastCGI workers, peak RSS (VmHWM, kB):\n'
	printf '  %-8s %16s %12s %26s %14s\n' pid "after the runs" "reset to" \
		"after $LEAK_DONE more req" "VmRSS now"
	for w in $WORKERS $WORKERS2; do
		[[ -n ${SEEN[$w]:-} ]] && continue
		SEEN[$w]=1
		printf '  %-8s %16s %12s %26s %14s\n' "$w" "${HWM1[$w]:--}" "${HWM0[$w]:--}" \
			"${HWM2[$w]:--}" "${RSS2[$w]:--}"
	done
	printf '  (%s requests in %s s, %s errors; a worker listed on one side only was respawned)\n' \
		"$LEAK_DONE" "$LEAK_S" "$LEAK_ERR"

	printf '\nplain CGI, %s sequential executions each (fork + exec + connect + answer):\n' "$CGI_N"
	printf '  GET /v1/health        %8s ms/request   (%s of %s answered 200)\n' "$CGI_GET_MS" "$CGI_GET_OK" "$CGI_N"
	printf '  POST /v1/cdp/events   %8s ms/request   (%s of %s answered 201)\n' "$CGI_POST_MS" "$CGI_POST_OK" "$CGI_N"

	printf '\nchecks %s: events the service answered "accepted" %s, stored %s (more: requests in flight\n' \
		"$CHECK" "$SVC_ACCEPTED" "$DB_ROWS"
	printf '        when wrk stopped); the duplicate set has %s rows (seeded %s)\n' "$DUP_ROWS" "$DUP_COUNT"
	printf 'total time %s s; raw values %s\n' "$((T1 - T0))" "$RAW"
} >"$OUT"
cat "$OUT"
say "saved $OUT"
