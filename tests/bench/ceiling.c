/*
 * tests/bench/ceiling.c — the database ceiling for `make bench`.
 *
 * Runs, directly against MariaDB and with nothing of rfevents in between,
 * the SQL the service runs per event, so that the service's throughput can be
 * read as a fraction of what the database allows on this machine. N threads,
 * each with its own connection (set up like db/db.c connect_host(): utf8mb4,
 * READ-COMMITTED, strict mode, CLIENT_FOUND_ROWS), prepared statements with
 * bound parameters, results fetched with mysql_stmt_store_result().
 *
 * --mode accept: one accepted event for a known user, the statements of
 * core/ingest.c (ev_ingest(), apply_one(), load_state(), write_outcome())
 * for a tenant with one points rule, per event:
 *     SELECT id, public_id, fingerprint, attempt FROM events WHERE <key>
 *                                        (DB_EVENT_BY_KEY;
 *                                        a single event: before START TRANSACTION)
 *     SELECT ... FROM identities JOIN profiles ... FOR UPDATE (DB_IDENT_FIND_LOCK:
 *                                        externalUserId + email, locks the profile)
 *     SELECT balances UNION ALL variables UNION ALL counters (DB_STATE_OF)
 *     INSERT IGNORE INTO events ... with the outcome       (DB_EVENT_INSERT;
 *                                        a new external id, a ~400-byte doc)
 *     INSERT INTO balances ... ON DUPLICATE KEY UPDATE ... (DB_BALANCE_UPSERT)
 *     INSERT INTO ledger ...                               (DB_LEDGER_INSERT)
 *     UPDATE profiles SET tier, updated_at WHERE id = ?    (DB_PROFILE_SET_TIER:
 *                                        every event that changes a profile)
 * inside START TRANSACTION ... COMMIT, --per-txn events per transaction (a
 * batch: one transaction, the key check of every item inside it).
 * --mode dup: the duplicate path of a single event: one SELECT of the key
 * (DB_EVENT_BY_KEY, autocommit, no transaction), on the existing keys
 * <dup-prefix>-<0..dup-count-1>.
 * The statement texts are those of db/db.c stmt_sql[] (ST_X here is DB_X
 * there); tests/bench/run.sh reports when they drift apart.
 * The user of each event is random; --sorted 1 orders the events of one
 * transaction by user, so that concurrent transactions lock the profiles in
 * the same order (with random order, several concurrent 1000-event
 * transactions over 1000 users deadlock nearly every time).
 *
 * Deadlocks and lock-wait timeouts roll back and run the transaction again
 * after a short randomised backoff, as db_txn() does, at most 8 times; the
 * retries and the transactions given up (the service's 503) are counted.
 *
 * Prints one line:
 *   RESULT events=N txns=N seconds=S eps=E p50_ms=X p99_ms=Y retries=N gave_up=N
 * where p50/p99 are per transaction (from the key check to COMMIT's answer;
 * for dup, per read). Exit 0, or 1 with a message on stderr.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>
#include <mysqld_error.h>

/* The statements, as in db/db.c stmt_sql[]. */
enum st {
	ST_EVENT_INSERT,
	ST_EVENT_BY_KEY,
	ST_IDENT_FIND_LOCK,
	ST_STATE_OF,
	ST_BALANCE_UPSERT,
	ST_LEDGER_INSERT,
	ST_PROFILE_SET_TIER,
	ST__MAX
};

static const char *const st_sql[ST__MAX] = {
	/* ST_EVENT_INSERT */
	"INSERT IGNORE INTO events (tenant_id, source, external_event_id, public_id,"
	" fingerprint, event_type, occurred_at, received_at, doc, request_id,"
	" profile_id, outcome, rules_version, attempt)"
	" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
	/* ST_EVENT_BY_KEY */
	"SELECT id, public_id, fingerprint, attempt FROM events"
	" WHERE tenant_id = ? AND source = ? AND external_event_id = ?",
	/* ST_IDENT_FIND_LOCK */
	"SELECT i.type, i.profile_id, p.public_id, p.tier, x.value"
	" FROM identities i JOIN profiles p ON p.id = i.profile_id"
	" LEFT JOIN identities x ON x.ext_profile_id = p.id"
	" WHERE i.tenant_id = ? AND ("
	" (i.type = 0 AND i.value = ?) OR (i.type = 1 AND i.value = ?) OR"
	" (i.type = 2 AND i.value = ?) OR (i.type = 3 AND i.value = ?)) FOR UPDATE",
	/* ST_STATE_OF */
	"SELECT 'b', name, balance, lifetime FROM balances WHERE profile_id = ?"
	" UNION ALL SELECT 'v', name, value, NULL FROM variables WHERE profile_id = ?"
	" UNION ALL SELECT 'c', rule_id, period, count FROM rule_counters"
	" WHERE profile_id = ? AND period IN ('all', ?, ?)",
	/* ST_BALANCE_UPSERT */
	"INSERT INTO balances (profile_id, name, balance, lifetime) VALUES (?, ?, ?, ?)"
	" ON DUPLICATE KEY UPDATE balance = VALUES(balance), lifetime = VALUES(lifetime)",
	/* ST_LEDGER_INSERT */
	"INSERT INTO ledger (profile_id, event_id, seq, rule_id, balance_name, delta,"
	" balance_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
	/* ST_PROFILE_SET_TIER */
	"UPDATE profiles SET tier = ?, updated_at = UTC_TIMESTAMP(6) WHERE id = ?",
};
_Static_assert(sizeof(st_sql) / sizeof(st_sql[0]) == ST__MAX,
    "st_sql must have one entry per enum st");

#define MAX_PARAMS   14
#define MAX_ROWS     8
#define MAX_COLS     5
#define CELL_MAX     1100
#define MAX_ATTEMPTS 8           /* db/db.h DB_MAX_ATTEMPTS */
#define SOURCE       "brand.pos"
#define EVENT_TYPE   "purchase_completed"
#define RULE_ID      "points_per_dollar"

enum mode { MODE_ACCEPT, MODE_DUP };

/* Settings from the command line. */
static struct {
	char          *user, *pass, *host, *db, *socket;
	unsigned       port;
	enum mode      mode;
	unsigned       conns;
	unsigned       per_txn;
	double         seconds;
	long long      tenant;
	unsigned       users;
	const char    *prefix;       /* new external ids: PREFIX-THREAD-N */
	const char    *user_fmt;     /* externalUserId of user i */
	const char    *dup_prefix;   /* existing external ids: DUP_PREFIX-I */
	unsigned       dup_count;
	int            sorted;       /* a transaction's users in ascending order */
	const char    *rules_version;
} opt = {
	.conns = 1, .per_txn = 1, .seconds = 10, .users = 1000,
	.prefix = "ceil", .user_fmt = "bench-u-%04u", .dup_prefix = "dup",
	.dup_count = 10000,
	.rules_version = "0000000000000000000000000000000000000000000000000000000000000000",
};

static atomic_int stop_flag;

/* A bound parameter. */
struct param {
	enum { P_NULL, P_I64, P_STR } type;
	long long      i;
	const char    *s;
	unsigned long  len;
};

#define PI(v)     ((struct param){ P_I64, (v), NULL, 0 })
#define PS(v)     ((struct param){ P_STR, 0, (v), strlen(v) })
#define PB(v, n)  ((struct param){ P_STR, 0, (v), (n) })
#define PNULL     ((struct param){ P_NULL, 0, NULL, 0 })

/* Rows of a SELECT, every column as text (as db/db.c fetch_all()). */
struct rows {
	size_t         n;
	char           cell[MAX_ROWS][MAX_COLS][CELL_MAX];
	unsigned long  len[MAX_ROWS][MAX_COLS];
	my_bool        null[MAX_ROWS][MAX_COLS];
};

/* One worker: a connection, its statements, its counters and samples. */
struct worker {
	unsigned            id;
	pthread_t           th;
	MYSQL              *conn;
	MYSQL_STMT         *st[ST__MAX];
	uint64_t            rnd;
	unsigned long long  seq;           /* external ids made so far */
	unsigned long long  events, txns, retries, gave_up;
	double             *lat;           /* per-transaction latency, ms */
	size_t              nlat, caplat;
	struct rows         rows;
	int                 failed;
	char                err[512];
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: per-thread randomness, no locking. */
static uint64_t
rnd_next(struct worker *w)
{
	w->rnd ^= w->rnd >> 12;
	w->rnd ^= w->rnd << 25;
	w->rnd ^= w->rnd >> 27;
	return w->rnd * 2685821657736338717ULL;
}

static void
fail(struct worker *w, const char *what, const char *msg)
{
	if (!w->failed)
		snprintf(w->err, sizeof(w->err), "thread %u: %s: %s", w->id, what, msg);
	w->failed = 1;
}

/* Deadlock, lock wait timeout: run the transaction again. */
static int
retryable(unsigned no)
{
	return no == ER_LOCK_DEADLOCK || no == ER_LOCK_WAIT_TIMEOUT ||
	    no == ER_CHECKREAD;
}

/*
 * Parse mariadb://user[:pass]@host[:port]/db[?socket=path] (no percent
 * escapes: tests/stack.sh writes plain values). Returns 0 or -1.
 */
static int
parse_url(const char *url)
{
	char *s, *p, *at, *slash, *q, *colon;

	if (strncmp(url, "mariadb://", 10) != 0 || strchr(url, '%') != NULL)
		return -1;
	if ((s = strdup(url + 10)) == NULL)
		return -1;
	if ((slash = strchr(s, '/')) == NULL)
		return -1;
	*slash = '\0';
	if ((q = strchr(slash + 1, '?')) != NULL) {
		*q++ = '\0';
		if (strncmp(q, "socket=", 7) != 0)
			return -1;
		opt.socket = q + 7;
	}
	opt.db = slash + 1;
	p = s;
	if ((at = strrchr(p, '@')) != NULL) {
		*at = '\0';
		if ((colon = strchr(p, ':')) != NULL) {
			*colon = '\0';
			opt.pass = colon + 1;
		}
		opt.user = p;
		p = at + 1;
	}
	if ((colon = strchr(p, ':')) != NULL) {
		*colon = '\0';
		opt.port = (unsigned)strtoul(colon + 1, NULL, 10);
	}
	opt.host = *p ? p : "localhost";
	return 0;
}

static int
connect_db(struct worker *w)
{
	unsigned int timeout = 30;
	my_bool      off = 0, upd = 1;
	size_t       i;
	const char  *init =
	    "SET SESSION tx_isolation = 'READ-COMMITTED',"
	    " SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION',"
	    " SESSION innodb_lock_wait_timeout = 10, SESSION time_zone = '+00:00'";

	if ((w->conn = mysql_init(NULL)) == NULL) {
		fail(w, "mysql_init", "out of memory");
		return -1;
	}
	mysql_optionsv(w->conn, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	mysql_optionsv(w->conn, MYSQL_OPT_READ_TIMEOUT, &timeout);
	mysql_optionsv(w->conn, MYSQL_OPT_WRITE_TIMEOUT, &timeout);
	mysql_optionsv(w->conn, MYSQL_OPT_RECONNECT, &off);
	mysql_optionsv(w->conn, MYSQL_INIT_COMMAND, init);
	if (mysql_real_connect(w->conn, opt.host, opt.user, opt.pass, opt.db,
	    opt.port, opt.socket, CLIENT_FOUND_ROWS) == NULL) {
		fail(w, "connect", mysql_error(w->conn));
		return -1;
	}
	for (i = 0; i < ST__MAX; i++) {
		if ((w->st[i] = mysql_stmt_init(w->conn)) == NULL ||
		    mysql_stmt_prepare(w->st[i], st_sql[i], strlen(st_sql[i])) != 0) {
			fail(w, "prepare", w->st[i] ? mysql_stmt_error(w->st[i]) :
			    mysql_error(w->conn));
			return -1;
		}
		mysql_stmt_attr_set(w->st[i], STMT_ATTR_UPDATE_MAX_LENGTH, &upd);
	}
	return 0;
}

/*
 * Execute statement st with np parameters. SELECTs fill w->rows. Returns 0,
 * or the server's error number (retryable ones roll the transaction back in
 * the caller), or -1 for anything else (w->err set).
 */
static int
exec_st(struct worker *w, enum st st, const struct param *p, size_t np,
    unsigned long long *affected, unsigned long long *insert_id)
{
	MYSQL_STMT    *s = w->st[st];
	MYSQL_BIND     b[MAX_PARAMS], rb[MAX_COLS];
	unsigned long  lens[MAX_PARAMS];
	my_bool        isnull[MAX_PARAMS];
	MYSQL_RES     *meta;
	size_t         i, ncols;
	unsigned       no;

	memset(b, 0, sizeof(b));
	for (i = 0; i < np; i++) {
		isnull[i] = p[i].type == P_NULL;
		b[i].is_null = &isnull[i];
		if (p[i].type == P_I64) {
			b[i].buffer_type = MYSQL_TYPE_LONGLONG;
			b[i].buffer = (void *)(uintptr_t)&p[i].i;
		} else if (p[i].type == P_STR) {
			b[i].buffer_type = MYSQL_TYPE_BLOB;
			b[i].buffer = (void *)(uintptr_t)p[i].s;
			lens[i] = p[i].len;
			b[i].buffer_length = lens[i];
			b[i].length = &lens[i];
		} else
			b[i].buffer_type = MYSQL_TYPE_NULL;
	}
	if ((np > 0 && mysql_stmt_bind_param(s, b) != 0) ||
	    mysql_stmt_execute(s) != 0)
		goto err;
	if (affected != NULL)
		*affected = (unsigned long long)mysql_stmt_affected_rows(s);
	if (insert_id != NULL)
		*insert_id = (unsigned long long)mysql_stmt_insert_id(s);
	w->rows.n = 0;
	if ((meta = mysql_stmt_result_metadata(s)) == NULL)
		return 0;
	ncols = mysql_num_fields(meta);
	mysql_free_result(meta);
	if (ncols > MAX_COLS) {
		fail(w, st_sql[st], "too many columns");
		return -1;
	}
	if (mysql_stmt_store_result(s) != 0)
		goto err;
	memset(rb, 0, sizeof(rb));
	for (i = 0; i < ncols; i++) {
		rb[i].buffer_type = MYSQL_TYPE_STRING;
		rb[i].buffer_length = CELL_MAX - 1;
	}
	for (;;) {
		int fr;
		if (w->rows.n < MAX_ROWS) {
			for (i = 0; i < ncols; i++) {
				rb[i].buffer = w->rows.cell[w->rows.n][i];
				rb[i].length = &w->rows.len[w->rows.n][i];
				rb[i].is_null = &w->rows.null[w->rows.n][i];
			}
			if (mysql_stmt_bind_result(s, rb) != 0)
				goto err;
		}
		fr = mysql_stmt_fetch(s);
		if (fr == MYSQL_NO_DATA)
			break;
		if (fr == 1)
			goto err;
		if (w->rows.n < MAX_ROWS) {
			for (i = 0; i < ncols; i++)
				w->rows.cell[w->rows.n][i][w->rows.len[w->rows.n][i] <
				    CELL_MAX ? w->rows.len[w->rows.n][i] : CELL_MAX - 1] = '\0';
			w->rows.n++;
		}
	}
	mysql_stmt_free_result(s);
	return 0;
err:
	no = mysql_stmt_errno(s);
	mysql_stmt_free_result(s);
	if (retryable(no))
		return (int)no;
	fail(w, st_sql[st], mysql_stmt_error(s));
	return -1;
}

/* Simple statements (START TRANSACTION): 0, errno or -1. */
static int
query(struct worker *w, const char *sql)
{
	unsigned no;

	if (mysql_real_query(w->conn, sql, strlen(sql)) == 0)
		return 0;
	no = mysql_errno(w->conn);
	if (retryable(no))
		return (int)no;
	fail(w, sql, mysql_error(w->conn));
	return -1;
}

/* "YYYY-MM-DD HH:MM:SS.ffffff" in UTC, now. */
static void
sql_now(char out[32])
{
	struct timespec ts;
	struct tm       tm;
	size_t          n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(out + n, 32 - n, ".%06u", (unsigned)(ts.tv_nsec / 1000) % 1000000u);
}

/* An evt_/random public id of the service's shape (core/util.c). */
static void
public_id(struct worker *w, char out[32])
{
	static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
	size_t            i;

	memcpy(out, "evt_", 4);
	for (i = 0; i < 22; i++)
		out[4 + i] = b32[rnd_next(w) & 31];
	out[26] = '\0';
}

/*
 * The event's parameters: the stored doc has the shape of core/event.c
 * ev_event_doc() for API.md's example body. ext is the external id.
 */
struct evbuf {
	char     ext[96], pub[32], fp[32], rec[32], occ[32];
	char     user[64], email[96], doc[1024];
	unsigned amount;   /* in cents */
};

static void
make_event(struct worker *w, struct evbuf *e, const char *ext, unsigned user,
    unsigned amount)
{
	char   iso[40];
	size_t i;

	snprintf(e->ext, sizeof(e->ext), "%s", ext);
	public_id(w, e->pub);
	for (i = 0; i < sizeof(e->fp); i++)
		e->fp[i] = (char)(rnd_next(w) & 0xff);
	snprintf(e->occ, sizeof(e->occ), "2025-05-20 12:45:00");
	sql_now(e->rec);
	snprintf(e->user, sizeof(e->user), opt.user_fmt, user);
	snprintf(e->email, sizeof(e->email), "%s@example.com", e->user);
	for (i = 0; e->email[i]; i++)
		if (e->email[i] >= 'A' && e->email[i] <= 'Z')
			e->email[i] = (char)(e->email[i] - 'A' + 'a');
	e->amount = amount;
	snprintf(iso, sizeof(iso), "%.10sT%sZ", e->rec, e->rec + 11);
	snprintf(e->doc, sizeof(e->doc),
	    "{\"source\":\"" SOURCE "\",\"externalEventId\":\"%s\","
	    "\"eventType\":\"" EVENT_TYPE "\",\"occurredAt\":\"2025-05-20T12:45:00Z\","
	    "\"occurredAtUtc\":\"2025-05-20T12:45:00Z\",\"receivedAt\":\"%s\","
	    "\"identity\":{\"externalUserId\":\"%s\",\"email\":\"%s\"},"
	    "\"properties\":{\"order_id\":\"order_%s\",\"amount\":%u.%02u,"
	    "\"currency\":\"USD\",\"store_id\":\"store_%u\"}}",
	    e->ext, iso, e->user, e->email, e->ext, amount / 100, amount % 100,
	    user % 100);
}

/* Is the key taken? 0 (free), 1 (taken), retryable errno or -1. */
static int
key_check(struct worker *w, const struct evbuf *e, int *taken)
{
	struct param p[3];
	int          rc;

	p[0] = PI(opt.tenant);
	p[1] = PS(SOURCE);
	p[2] = PS(e->ext);
	if ((rc = exec_st(w, ST_EVENT_BY_KEY, p, 3, NULL, NULL)) != 0)
		return rc;
	*taken = w->rows.n > 0;
	return 0;
}

/*
 * One accepted event for a known user inside the open transaction; the key
 * check first unless done before the transaction. 0, retryable errno or -1.
 */
static int
accept_one(struct worker *w, const struct evbuf *e, int check)
{
	struct param        p[14];
	unsigned long long  affected = 0, evid = 0;
	long long           pid = 0, bal = 0, life = 0, delta = e->amount / 100;
	char                out[512], attempt[16];
	size_t              i;
	int                 rc, taken = 0;

	if (check && (rc = key_check(w, e, &taken)) != 0)
		return rc;
	if (taken) {
		fail(w, "key check", "a new external id is taken");
		return -1;
	}
	p[0] = PI(opt.tenant);
	p[1] = PS(e->user);
	p[2] = PS(e->email);
	p[3] = PNULL;
	p[4] = PNULL;
	if ((rc = exec_st(w, ST_IDENT_FIND_LOCK, p, 5, NULL, NULL)) != 0)
		return rc;
	for (i = 0; i < w->rows.n; i++)
		if (strcmp(w->rows.cell[i][0], "0") == 0)
			pid = strtoll(w->rows.cell[i][1], NULL, 10);
	if (pid == 0) {
		fail(w, "identity look-up", "a known user was not found: run the"
		    " bench's user seeding first");
		return -1;
	}
	p[0] = PI(pid);
	p[1] = PI(pid);
	p[2] = PI(pid);
	p[3] = PS("d2025-05-20");
	p[4] = PS("m2025-05");
	if ((rc = exec_st(w, ST_STATE_OF, p, 5, NULL, NULL)) != 0)
		return rc;
	for (i = 0; i < w->rows.n; i++)
		if (strcmp(w->rows.cell[i][0], "b") == 0 &&
		    strcmp(w->rows.cell[i][1], "points") == 0) {
			bal = strtoll(w->rows.cell[i][2], NULL, 10);
			life = strtoll(w->rows.cell[i][3], NULL, 10);
		}
	bal += delta;
	life += delta;
	/* the attempt token: 15 bytes naming the request, then the attempt */
	for (i = 0; i < sizeof(attempt); i++)
		attempt[i] = (char)(rnd_next(w) & 0xff);
	snprintf(out, sizeof(out),
	    "{\"points_awarded\":%lld,\"rules_applied\":[\"" RULE_ID "\"],"
	    "\"rules_skipped\":[],\"effects\":[{\"type\":\"balance\",\"rule\":"
	    "\"" RULE_ID "\",\"balance\":\"points\",\"delta\":%lld,"
	    "\"balance_after\":%lld}],\"tier\":null,\"identity_conflicts\":[],"
	    "\"profile_created\":false}",
	    delta, delta, bal);
	p[0] = PI(opt.tenant);
	p[1] = PS(SOURCE);
	p[2] = PS(e->ext);
	p[3] = PS(e->pub);
	p[4] = PB(e->fp, 32);
	p[5] = PS(EVENT_TYPE);
	p[6] = PS(e->occ);
	p[7] = PS(e->rec);
	p[8] = PS(e->doc);
	p[9] = PS("");
	p[10] = PI(pid);
	p[11] = PS(out);
	p[12] = PS(opt.rules_version);
	p[13] = PB(attempt, sizeof(attempt));
	if ((rc = exec_st(w, ST_EVENT_INSERT, p, 14, &affected, &evid)) != 0)
		return rc;
	if (affected != 1 || mysql_warning_count(w->conn) > 0) {
		fail(w, "INSERT IGNORE events", "the new event was not stored cleanly");
		return -1;
	}
	p[0] = PI(pid);
	p[1] = PS("points");
	p[2] = PI(bal);
	p[3] = PI(life);
	if ((rc = exec_st(w, ST_BALANCE_UPSERT, p, 4, NULL, NULL)) != 0)
		return rc;
	p[0] = PI(pid);
	p[1] = PI((long long)evid);
	p[2] = PI(0);
	p[3] = PS(RULE_ID);
	p[4] = PS("points");
	p[5] = PI(delta);
	p[6] = PI(bal);
	if ((rc = exec_st(w, ST_LEDGER_INSERT, p, 7, NULL, NULL)) != 0)
		return rc;
	p[0] = PNULL;
	p[1] = PI(pid);
	return exec_st(w, ST_PROFILE_SET_TIER, p, 2, NULL, NULL);
}

static void
add_latency(struct worker *w, double ms)
{
	if (w->nlat == w->caplat) {
		size_t  cap = w->caplat ? w->caplat * 2 : 65536;
		double *n = realloc(w->lat, cap * sizeof(*n));
		if (n == NULL) {
			fail(w, "latency samples", "out of memory");
			return;
		}
		w->lat = n;
		w->caplat = cap;
	}
	w->lat[w->nlat++] = ms;
}

/* Sleep a short, randomised, growing time before a retry (db/db.c). */
static void
backoff(struct worker *w, unsigned attempt)
{
	struct timespec ts;
	long ms = (long)(1u << (attempt < 6 ? attempt : 6));

	ms += (long)(rnd_next(w) % (uint64_t)(ms + 1));
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	nanosleep(&ts, NULL);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int
cmp_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

	return x < y ? -1 : x > y;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct evbuf  *evs;
	unsigned      *us;
	char           ext[96];
	unsigned       i, attempt;

	evs = calloc(opt.per_txn, sizeof(*evs));
	us = calloc(opt.per_txn, sizeof(*us));
	if (evs == NULL || us == NULL) {
		fail(w, "events", "out of memory");
		goto out;
	}
	if (connect_db(w) != 0)
		goto out;
	while (!atomic_load(&stop_flag) && !w->failed) {
		double t0;
		int    rc = 0;

		/* the transaction's events: new ids, or existing ones to replay */
		for (i = 0; i < opt.per_txn; i++)
			us[i] = (unsigned)(rnd_next(w) % opt.users);
		if (opt.sorted)
			qsort(us, opt.per_txn, sizeof(*us), cmp_unsigned);
		for (i = 0; i < opt.per_txn; i++) {
			unsigned user = us[i];
			if (opt.mode == MODE_DUP) {
				unsigned k = (unsigned)(rnd_next(w) % opt.dup_count);
				snprintf(ext, sizeof(ext), "%s-%u", opt.dup_prefix, k);
			} else
				snprintf(ext, sizeof(ext), "%s-%u-%llu", opt.prefix,
				    w->id, w->seq++);
			make_event(w, &evs[i], ext, user,
			    100 + (unsigned)(rnd_next(w) % 50000));
		}
		t0 = now_s();
		if (opt.mode == MODE_DUP) {
			/* a single event seen before: one read, no transaction */
			int taken = 0;
			if ((rc = key_check(w, &evs[0], &taken)) != 0) {
				fail(w, "duplicate path", mysql_error(w->conn));
				goto out;
			}
			if (!taken) {
				fail(w, "duplicate path", "the key is not taken: seed the"
				    " duplicates first (--dup-prefix, --dup-count)");
				goto out;
			}
			add_latency(w, (now_s() - t0) * 1000.0);
			w->txns++;
			w->events++;
			continue;
		}
		/* a single event: its key is checked before the transaction */
		if (opt.per_txn == 1) {
			int taken = 0;
			if ((rc = key_check(w, &evs[0], &taken)) != 0 || taken) {
				fail(w, "key check", "failed or taken");
				goto out;
			}
		}
		for (attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
			if (attempt > 0) {
				w->retries++;
				backoff(w, attempt);
			}
			rc = query(w, "START TRANSACTION");
			for (i = 0; rc == 0 && i < opt.per_txn; i++)
				rc = accept_one(w, &evs[i], opt.per_txn > 1 || attempt > 0);
			if (rc == 0) {
				if (mysql_commit(w->conn) == 0)
					break;
				rc = (int)mysql_errno(w->conn);
				if (!retryable((unsigned)rc)) {
					fail(w, "COMMIT", mysql_error(w->conn));
					rc = -1;
				}
			}
			mysql_rollback(w->conn);
			if (rc == -1)
				goto out;
		}
		if (rc != 0) {
			/* the service answers 503 here; the client would retry */
			w->gave_up++;
			continue;
		}
		add_latency(w, (now_s() - t0) * 1000.0);
		w->txns++;
		w->events += opt.per_txn;
	}
out:
	/* frees: the event buffers; the connection is closed by main() */
	free(evs);
	free(us);
	return NULL;
}


static void
usage(void)
{
	fprintf(stderr,
	    "usage: ceiling --db URL --tenant ID [--mode accept|dup] [--conns N]\n"
	    "               [--per-txn N] [--seconds S] [--users N] [--prefix P]\n"
	    "               [--user-fmt FMT] [--dup-prefix P] [--dup-count N]\n"
	    "               [--sorted 0|1] [--rules-version V]\n"
	    "  --db defaults to $RFEVENTS_DB (mariadb://user:pass@host[:port]/db[?socket=path])\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct worker *ws;
	const char    *url = getenv("RFEVENTS_DB");
	double         t0, el;
	double        *all;
	size_t         nall = 0, k;
	unsigned long long events = 0, txns = 0, retries = 0, gave_up = 0;
	unsigned       i;
	int            a, ret = 0;

	for (a = 1; a < argc; a++) {
		const char *o = argv[a], *v = a + 1 < argc ? argv[a + 1] : NULL;
		if (v == NULL)
			usage();
		a++;
		if (strcmp(o, "--db") == 0)
			url = v;
		else if (strcmp(o, "--mode") == 0) {
			if (strcmp(v, "accept") == 0)
				opt.mode = MODE_ACCEPT;
			else if (strcmp(v, "dup") == 0)
				opt.mode = MODE_DUP;
			else
				usage();
		} else if (strcmp(o, "--conns") == 0)
			opt.conns = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(o, "--per-txn") == 0)
			opt.per_txn = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(o, "--seconds") == 0)
			opt.seconds = strtod(v, NULL);
		else if (strcmp(o, "--tenant") == 0)
			opt.tenant = strtoll(v, NULL, 10);
		else if (strcmp(o, "--users") == 0)
			opt.users = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(o, "--prefix") == 0)
			opt.prefix = v;
		else if (strcmp(o, "--user-fmt") == 0)
			opt.user_fmt = v;
		else if (strcmp(o, "--dup-prefix") == 0)
			opt.dup_prefix = v;
		else if (strcmp(o, "--dup-count") == 0)
			opt.dup_count = (unsigned)strtoul(v, NULL, 10);
		else if (strcmp(o, "--sorted") == 0)
			opt.sorted = strcmp(v, "0") != 0;
		else if (strcmp(o, "--rules-version") == 0)
			opt.rules_version = v;
		else
			usage();
	}
	if (url == NULL || parse_url(url) != 0 || opt.tenant <= 0 ||
	    opt.conns == 0 || opt.conns > 256 || opt.per_txn == 0 ||
	    opt.per_txn > 100000 || opt.users == 0 || opt.dup_count == 0 ||
	    opt.seconds <= 0)
		usage();
	if (opt.mode == MODE_DUP)
		opt.per_txn = 1;
	if (mysql_library_init(0, NULL, NULL) != 0) {
		fprintf(stderr, "ceiling: cannot initialise the MariaDB library\n");
		return 1;
	}
	if ((ws = calloc(opt.conns, sizeof(*ws))) == NULL)
		return 1;
	t0 = now_s();
	for (i = 0; i < opt.conns; i++) {
		ws[i].id = i;
		ws[i].rnd = (uint64_t)time(NULL) * 2654435761u + (uint64_t)i * 40503u +
		    (uint64_t)getpid() + 1;
		if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
			fprintf(stderr, "ceiling: pthread_create: %s\n", strerror(errno));
			return 1;
		}
	}
	{
		struct timespec ts;
		ts.tv_sec = (time_t)opt.seconds;
		ts.tv_nsec = (long)((opt.seconds - (double)ts.tv_sec) * 1e9);
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	atomic_store(&stop_flag, 1);
	for (i = 0; i < opt.conns; i++)
		pthread_join(ws[i].th, NULL);
	el = now_s() - t0;

	for (i = 0; i < opt.conns; i++) {
		if (ws[i].failed) {
			fprintf(stderr, "ceiling: %s\n", ws[i].err);
			ret = 1;
		}
		events += ws[i].events;
		txns += ws[i].txns;
		retries += ws[i].retries;
		gave_up += ws[i].gave_up;
		nall += ws[i].nlat;
	}
	if ((all = malloc((nall ? nall : 1) * sizeof(*all))) == NULL)
		return 1;
	for (i = 0, k = 0; i < opt.conns; i++) {
		memcpy(all + k, ws[i].lat, ws[i].nlat * sizeof(*all));
		k += ws[i].nlat;
	}
	qsort(all, nall, sizeof(*all), cmp_double);
	printf("RESULT events=%llu txns=%llu seconds=%.3f eps=%.1f p50_ms=%.3f"
	    " p99_ms=%.3f retries=%llu gave_up=%llu\n", events, txns, el,
	    (double)events / el,
	    nall ? all[(size_t)((double)(nall - 1) * 0.50)] : 0.0,
	    nall ? all[(size_t)((double)(nall - 1) * 0.99)] : 0.0, retries, gave_up);

	/* frees: samples, statements, connections */
	free(all);
	for (i = 0; i < opt.conns; i++) {
		size_t s;
		for (s = 0; s < ST__MAX; s++)
			if (ws[i].st[s] != NULL)
				mysql_stmt_close(ws[i].st[s]);
		if (ws[i].conn != NULL)
			mysql_close(ws[i].conn);
		free(ws[i].lat);
	}
	free(ws);
	mysql_library_end();
	return ret;
}
