/*
 * tests/bench/ceiling.c — the database ceiling for `make bench`.
 *
 * Runs, directly against MariaDB and with nothing of rfevents in between,
 * the SQL the service runs per event, so that the service's throughput can be
 * read as a fraction of what the database allows on this machine. N threads,
 * each with its own connection (set up like db/db.c connect_host(): utf8mb4,
 * READ-COMMITTED, strict mode, CLIENT_FOUND_ROWS), prepared statements with
 * bound parameters (strings as MYSQL_TYPE_BLOB, integers as
 * MYSQL_TYPE_LONGLONG), every result fetched with mysql_stmt_store_result()
 * and copied out, as db/db.c fetch_all() does.
 *
 * The statements are the service's, compiled from the same header
 * (db/sql.h): ST_M_X here is the template DB_M_X of db/db.c, expanded by the
 * same code (db/sql.c db_sql_expand(), linked in); they cannot drift apart.
 * Each (template, list lengths) is prepared
 * once per connection and kept in a cache of 24 statements, least recently
 * used dropped first (db.c get_mstmt()). Every list is at most 1000 long
 * (DB_MULTI_MAX_ROWS): longer lists are split into several statements. The
 * lists of the reads and of the balance upsert are sent padded as the
 * service sends them (db_sql_pads(), db_sql_padded()).
 *
 * --mode accept: new events of known users (identity externalUserId +
 * email, both bound to the user's profile) for a tenant with one points
 * rule, no tiers, no limits. The connection runs with autocommit off, as
 * the service's (db/db.c): the first statement begins the transaction, no
 * START TRANSACTION is sent. One transaction of --per-txn events:
 *     SELECT ... FROM events WHERE <keys>      (ST_M_EVENT_KEYS {N}: the first
 *                                              read, not locking; only with more
 *                                              than MERGED_KEYS events)
 *     SELECT STRAIGHT_JOIN ... FROM identities JOIN profiles ... FOR UPDATE
 *                                              (ST_M_IDENT_LOCK {K}: the K distinct
 *                                              identities sorted by (type, value),
 *                                              2 per user; the profile ids come
 *                                              from here, locked)
 *     SELECT balances                          (ST_M_STATE_OF {U,0,0,P}: the U
 *                                              distinct profiles; the variables
 *                                              and counters parts are left out,
 *                                              as the service does for a tenant
 *                                              whose rules read no variable and
 *                                              have no limit)
 *     INSERT IGNORE INTO events ... RETURNING id, public_id
 *                                              (ST_M_EVENT_INSERT {N}: new external
 *                                              ids, a ~400-byte doc, the ~250-byte
 *                                              outcome, a req_ request id and an
 *                                              attempt token per transaction; rows
 *                                              matched back by public_id)
 *     INSERT INTO ledger ...                   (ST_M_LEDGER_INSERT {N}: one row per
 *                                              event, balance_after running per
 *                                              profile)
 *     INSERT INTO balances ... ON DUPLICATE KEY UPDATE
 *                                              (ST_M_BALANCE_UPSERT {U}: the final
 *                                              balance of each profile)
 *     COMMIT
 * With at most MERGED_IDENTS identities (a single event: 2), IDENT_LOCK
 * and STATE_OF are one statement, ST_M_IDENT_STATE_LOCK {K,0,0,P,0} (the
 * balances joined to the identities), as in the service; with at most
 * MERGED_KEYS events too, the keys are read at its end instead of before
 * ({K,0,0,P,N}). A single event's writes and COMMIT are one compound
 * statement, ST_M_WRITE_ONE {1,1,0,0,0,0} (the event, its ledger row, the
 * balance; core/ingest.c write_one()): a single event is 2 round trips
 * (lock and keys; writes and COMMIT). Identities are
 * locked LOCK_IDENTS per statement, events and
 * ledger rows inserted EVENT_ROWS / LEDGER_ROWS per statement, as in
 * core/ingest.c. (DB_M_PROFILE_TOUCH is not run: the service runs it only
 * on a Galera cluster or when a tier changes, and this tenant has no
 * tiers.)
 * --mode dup: the duplicate path of a single event, on the existing keys
 * <dup-prefix>-<0..dup-count-1>, as the service runs it for a key it has
 * answered duplicate lately (core/ingest.c recent_any()): one read of the
 * key (ST_M_EVENT_KEYS {1}); the transaction the reads began is rolled
 * back once it is READ_KEEP_US old, as the service's workers keep it for
 * the requests that follow at once (db_read_kept()). (The first duplicate
 * of a key costs ST_M_IDENT_STATE_LOCK and COMMIT instead.)
 * The user of each event is random; --sorted 1 orders the events of one
 * transaction by user, as the bench's batches are sent (BENCH_BATCH_ORDER).
 * The lock order does not depend on it: the identities are locked in
 * statements of at most LOCK_IDENTS, sorted by (type, value), whatever the
 * order of the events. Nothing is remembered between
 * transactions: every transaction finds its profiles and balances with the
 * SQL above.
 *
 * --fcgi 1: the minimal endpoint. Instead of generating events, serve
 * FastCGI requests on fd 0 with one connection (a web server starts it, as
 * it starts rfevents.fcgi; with no arguments the options are read from
 * $CEILING_ARGS). Each request is a single event (201 accepted) or a batch
 * {"items":[...]} (200, a result per item), parsed with json-c for the
 * external id, the externalUserId and the amount, and stored with the SQL
 * of --mode accept; a single event whose external id begins with
 * "<dup-prefix>-" is a replay and takes the --mode dup read first (200
 * duplicate when its key is stored). No authentication, validation, rules
 * or logging: what any endpoint must do to store the event, so that `make
 * bench` can tell the web server's cost from the service's.
 *
 * Deadlocks and lock-wait timeouts roll back and run the transaction again
 * after a short randomised backoff, as db_txn() does, at most 8 times; the
 * retries and the transactions given up (the service's 503) are counted.
 *
 * Prints one line:
 *   RESULT events=N txns=N seconds=S eps=E p50_ms=X p99_ms=Y retries=N gave_up=N
 * where p50/p99 are per transaction (from the key check to COMMIT's answer;
 * for dup, per key read and ROLLBACK). Exit 0, or 1 with a message on stderr.
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

#include <fcgiapp.h>
#include <json-c/json.h>
#include <mysql.h>
#include <mysqld_error.h>

#include "db/sql.h"

/* The statements: the templates DB_M_X of db/db.c. */
enum st {
	ST_M_EVENT_KEYS,
	ST_M_IDENT_LOCK,
	ST_M_STATE_OF,
	ST_M_IDENT_STATE_LOCK,
	ST_M_EVENT_INSERT,
	ST_M_LEDGER_INSERT,
	ST_M_BALANCE_UPSERT,
	ST_M_WRITE_ONE,
	ST__MAX
};

static const char *const st_name[ST__MAX] = {
	"M_EVENT_KEYS", "M_IDENT_LOCK", "M_STATE_OF",
	"M_IDENT_STATE_LOCK",
	"M_EVENT_INSERT", "M_LEDGER_INSERT", "M_BALANCE_UPSERT", "M_WRITE_ONE",
};

/* The service's own text (db/sql.h), so the two cannot drift apart. */
static const char *const st_sql[ST__MAX] = {
	SQL_M_EVENT_KEYS,
	SQL_M_IDENT_LOCK,
	SQL_M_STATE_OF,
	SQL_M_IDENT_STATE_LOCK,
	SQL_M_EVENT_INSERT,
	SQL_M_LEDGER_INSERT,
	SQL_M_BALANCE_UPSERT,
	SQL_M_WRITE_ONE,
};
_Static_assert(sizeof(st_sql) / sizeof(st_sql[0]) == ST__MAX,
    "st_sql must have one entry per enum st");
_Static_assert(sizeof(st_name) / sizeof(st_name[0]) == ST__MAX,
    "st_name must have one entry per enum st");

#define GROUPS       6           /* list groups of the templates here, at most */
#define MAX_LIST     1000        /* db/db.h DB_MULTI_MAX_ROWS */
/* The service's chunks (core/ingest.c): identities locked per statement,
 * identities up to which lock and state are one statement, events and
 * ledger rows per INSERT. */
#define LOCK_IDENTS   128
#define MERGED_IDENTS 16
/* fcgi/fcgi.h FCGI_READ_KEEP_US: the age at which a worker ends the
 * transaction its reads began */
#define READ_KEEP_US  50000
#define MERGED_KEYS   16
#define EVENT_ROWS    200
#define LEDGER_ROWS   400
#define STMT_CACHE   24          /* db/db.c DB_MCACHE */
#define MAX_COLS     10
#define MAX_ATTEMPTS 8           /* db/db.h DB_MAX_ATTEMPTS */
#define ATTEMPT_LEN  16          /* core: EV_ATTEMPT_LEN */
#define SOURCE       "brand.pos"
#define EVENT_TYPE   "purchase_completed"
#define RULE_ID      "points_per_dollar"
#define BALANCE      "points"
/* the fixed occurredAt of every event, and its periods (core/ingest.c periods()) */
#define OCCURRED     "2025-05-20 12:45:00"
#define OCCURRED_ISO "2025-05-20T12:45:00Z"
#define PERIOD_DAY   "d2025-05-20"
#define PERIOD_MONTH "m2025-05"

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
static size_t     st_groups[ST__MAX];   /* list groups of each template */
static int        st_pads[ST__MAX];     /* sent padded (db_sql_pads()) */

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

/* The rows of the last result set, every column as text (db.c fetch_all()):
 * cell (r, c) is buf + off[r * ncols + c], NUL-terminated, len bytes;
 * isnull says NULL. */
struct res {
	size_t         nrows, ncols;
	size_t         cap;               /* cells */
	size_t        *off;
	unsigned long *len;
	my_bool       *isnull;
	char          *buf;
	size_t         bufused, bufcap;
};

/* A prepared statement of a template with these list lengths. */
struct cstmt {
	MYSQL_STMT *s;
	enum st     st;
	size_t      counts[GROUPS];
	uint64_t    used;
};

/*
 * One event. ext is the external id; the doc has the shape of core/event.c
 * ev_event_doc() for API.md's example body; out is the outcome.
 */
struct evbuf {
	char               ext[96], pub[32], fp[32], rec[32];
	char               user[64], email[96], doc[1024], out[512];
	unsigned           amount;     /* in cents */
	size_t             uslot;      /* in txn.users */
	long long          delta, bal_after;
	unsigned long long evid;       /* from RETURNING; 0 before */
};

/* A distinct user of the transaction: its identities and profile. */
struct tuser {
	const char *ext, *email;
	long long   pid, pid_email;    /* from IDENT_LOCK, by identity type */
	size_t      prof;              /* in txn.profs */
};

/* An identity to lock: (type, value) of a user. */
struct ident {
	int         type;
	const char *v;
	size_t      len;
	size_t      uslot;
};

/* A distinct profile of the transaction and its points balance. */
struct tprof {
	long long pid, bal, life;
};

/* The work of one transaction; the arrays hold per_txn (idents 2 ×). */
struct txn {
	struct evbuf *evs;
	unsigned     *us;              /* user of each event, before make_event */
	size_t        n;               /* events */
	struct tuser *users;
	size_t        nusers;
	struct ident *idents;
	size_t        nidents;
	struct tprof *profs;
	size_t        nprofs;
	size_t       *bypub;           /* event indices sorted by public id */
	char          reqid[32];
	char          attempt[ATTEMPT_LEN];
};

/* One worker: a connection, its statements, its counters and samples. */
struct worker {
	unsigned            id;
	pthread_t           th;
	MYSQL              *conn;
	struct cstmt        cache[STMT_CACHE];
	uint64_t            clock;         /* cache use counter */
	uint64_t            rnd;
	unsigned long long  seq;           /* external ids made so far */
	unsigned long long  events, txns, retries, gave_up;
	double             *lat;           /* per-transaction latency, ms */
	size_t              nlat, caplat;
	struct param       *p;             /* parameters of the next statement */
	size_t              capp;
	struct param       *pp;            /* the same padded (2 * capp) */
	MYSQL_BIND         *b;             /* their binds (2 * capp) */
	unsigned long      *blen;
	my_bool            *bnull;
	char               *col[MAX_COLS]; /* result column buffers */
	size_t              colcap[MAX_COLS];
	struct res          res;
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
	my_bool      off = 0;
	const char  *init =
	    "SET SESSION tx_isolation = 'READ-COMMITTED',"
	    " SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION',"
	    " SESSION innodb_lock_wait_timeout = 10, SESSION time_zone = '+00:00',"
	    " SESSION autocommit = 0";

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
	return 0;
}

/* ---- templates ---- */

/*
 * The prepared statement of st with these list lengths: from the
 * connection's cache, or prepared now in place of the least recently used.
 * NULL on failure (w->err set).
 */
static MYSQL_STMT *
get_stmt(struct worker *w, enum st st, const size_t *counts)
{
	struct cstmt *slot = &w->cache[0];
	size_t        key[GROUPS] = { 0 }, i;
	MYSQL_STMT   *s;
	char         *sql;
	my_bool       upd = 1;

	for (i = 0; i < st_groups[st]; i++)
		key[i] = counts[i];
	for (i = 0; i < STMT_CACHE; i++) {
		struct cstmt *e = &w->cache[i];
		if (e->s != NULL && e->st == st &&
		    memcmp(e->counts, key, sizeof(key)) == 0) {
			e->used = ++w->clock;
			return e->s;
		}
		if (e->s == NULL || (slot->s != NULL && e->used < slot->used))
			slot = e;
	}
	if ((sql = db_sql_expand(st_sql[st], key, NULL)) == NULL) {
		fail(w, st_name[st], "cannot expand the template");
		return NULL;
	}
	if ((s = mysql_stmt_init(w->conn)) == NULL) {
		free(sql);
		fail(w, st_name[st], "mysql_stmt_init: out of memory");
		return NULL;
	}
	if (mysql_stmt_prepare(s, sql, strlen(sql)) != 0) {
		fail(w, st_name[st], mysql_stmt_error(s));
		mysql_stmt_close(s);
		free(sql);
		return NULL;
	}
	free(sql);
	mysql_stmt_attr_set(s, STMT_ATTR_UPDATE_MAX_LENGTH, &upd);
	if (slot->s != NULL)
		mysql_stmt_close(slot->s);
	slot->s = s;
	slot->st = st;
	memcpy(slot->counts, key, sizeof(key));
	slot->used = ++w->clock;
	return s;
}

/* ---- execution ---- */

/* Room for n parameters in w->p (and their binds); what w->p held is
 * lost when it grows: call before filling it. 0 or -1. */
static int
param_room(struct worker *w, size_t n)
{
	if (n <= w->capp)
		return 0;
	free(w->p);
	free(w->pp);
	free(w->b);
	free(w->blen);
	free(w->bnull);
	/* padding adds at most an eighth to a list longer than 16 */
	w->p = calloc(n, sizeof(*w->p));
	w->pp = calloc(2 * n, sizeof(*w->pp));
	w->b = calloc(2 * n, sizeof(*w->b));
	w->blen = calloc(2 * n, sizeof(*w->blen));
	w->bnull = calloc(2 * n, sizeof(*w->bnull));
	if (w->p == NULL || w->pp == NULL || w->b == NULL || w->blen == NULL ||
	    w->bnull == NULL) {
		w->capp = 0;
		fail(w, "parameters", "out of memory");
		return -1;
	}
	w->capp = n;
	return 0;
}

/* Cell k of w->res: a copy of v (len bytes, NUL-terminated). 0 or -1. */
static int
res_cell(struct res *r, size_t k, const char *v, unsigned long len, my_bool isnull)
{
	if (isnull)
		len = 0;
	if (len + 1 > r->bufcap - r->bufused) {
		size_t cap = r->bufcap ? r->bufcap : 65536;
		char  *n;
		while (len + 1 > cap - r->bufused)
			cap *= 2;
		if ((n = realloc(r->buf, cap)) == NULL)
			return -1;
		r->buf = n;
		r->bufcap = cap;
	}
	memcpy(r->buf + r->bufused, v, len);
	r->buf[r->bufused + len] = '\0';
	r->off[k] = r->bufused;
	r->len[k] = len;
	r->isnull[k] = isnull;
	r->bufused += len + 1;
	return 0;
}

/* Room for cells cells in r. 0 or -1. */
static int
res_room(struct res *r, size_t cells)
{
	size_t        cap = r->cap ? r->cap : 4096;
	size_t        *off;
	unsigned long *len;
	my_bool       *isnull;

	if (cells <= r->cap)
		return 0;
	while (cells > cap)
		cap *= 2;
	if ((off = realloc(r->off, cap * sizeof(*off))) == NULL)
		return -1;
	r->off = off;
	if ((len = realloc(r->len, cap * sizeof(*len))) == NULL)
		return -1;
	r->len = len;
	if ((isnull = realloc(r->isnull, cap * sizeof(*isnull))) == NULL)
		return -1;
	r->isnull = isnull;
	r->cap = cap;
	return 0;
}

/* Cell (row, col) of the last result: NULL for SQL NULL. */
static const char *
cell(const struct res *r, size_t row, size_t col)
{
	size_t i = row * r->ncols + col;

	return r->isnull[i] ? NULL : r->buf + r->off[i];
}

static unsigned long
cell_len(const struct res *r, size_t row, size_t col)
{
	return r->len[row * r->ncols + col];
}

/*
 * After a failed call on s: the retryable errno, or -1 (w->err set).
 * A deadlock or lock wait reported while the result set is read (a locking
 * SELECT: the metadata is already sent) leaves the statement handle of
 * Connector/C 3.3 unusable: its next execute waits for an answer that never
 * comes until the read timeout ("Server has gone away"). mysql_stmt_reset()
 * makes it usable again for the retry.
 */
static int
stmt_err(struct worker *w, enum st st, MYSQL_STMT *s)
{
	unsigned no = mysql_stmt_errno(s);

	if (!retryable(no)) {
		fail(w, st_name[st], mysql_stmt_error(s));
		mysql_stmt_free_result(s);
		return -1;
	}
	mysql_stmt_free_result(s);
	if (mysql_stmt_reset(s) != 0 && !retryable(mysql_stmt_errno(s))) {
		fail(w, st_name[st], mysql_stmt_error(s));
		return -1;
	}
	return (int)no;
}

/*
 * Fetch every row of executed statement s into w->res (db.c fetch_all():
 * store the result, size the buffers by max_length, copy each cell).
 * 0, a retryable errno or -1.
 */
static int
fetch_rows(struct worker *w, enum st st, MYSQL_STMT *s, MYSQL_RES *meta)
{
	struct res  *r = &w->res;
	MYSQL_FIELD *f;
	MYSQL_BIND   rb[MAX_COLS];
	unsigned long lens[MAX_COLS];
	my_bool      nulls[MAX_COLS];
	size_t       ncols = mysql_num_fields(meta), i;

	r->nrows = 0;
	r->ncols = ncols;
	r->bufused = 0;
	if (ncols > MAX_COLS) {
		fail(w, st_name[st], "too many columns");
		return -1;
	}
	if (mysql_stmt_store_result(s) != 0)
		goto err;
	f = mysql_fetch_fields(meta);
	memset(rb, 0, sizeof(rb));
	for (i = 0; i < ncols; i++) {
		size_t sz = (size_t)f[i].max_length + 1;
		if (sz < 32)
			sz = 32;       /* numbers: max_length may be 0 */
		if (sz > w->colcap[i]) {
			char *n = realloc(w->col[i], sz);
			if (n == NULL) {
				fail(w, st_name[st], "out of memory");
				return -1;
			}
			w->col[i] = n;
			w->colcap[i] = sz;
		}
		rb[i].buffer_type = MYSQL_TYPE_STRING;
		rb[i].buffer = w->col[i];
		rb[i].buffer_length = w->colcap[i];
		rb[i].length = &lens[i];
		rb[i].is_null = &nulls[i];
	}
	if (mysql_stmt_bind_result(s, rb) != 0)
		goto err;
	for (;;) {
		int fr = mysql_stmt_fetch(s);
		if (fr == MYSQL_NO_DATA)
			break;
		if (fr == 1)
			goto err;
		if (fr == MYSQL_DATA_TRUNCATED) {
			fail(w, st_name[st], "column longer than max_length");
			return -1;
		}
		if (res_room(r, (r->nrows + 1) * ncols) != 0) {
			fail(w, st_name[st], "out of memory");
			return -1;
		}
		for (i = 0; i < ncols; i++)
			if (res_cell(r, r->nrows * ncols + i, w->col[i], lens[i],
			    nulls[i]) != 0) {
				fail(w, st_name[st], "out of memory");
				return -1;
			}
		r->nrows++;
	}
	mysql_stmt_free_result(s);
	return 0;
err:
	return stmt_err(w, st, s);
}

/*
 * Execute st with list lengths counts[] (NULL for no lists) and the np
 * parameters in w->p. A result set is fetched into w->res (else w->res is
 * empty). Returns 0, the server's error number when retryable (the caller
 * rolls back), or -1 (w->err set).
 */
static int
run(struct worker *w, enum st st, const size_t *counts, size_t np)
{
	MYSQL_STMT         *s;
	MYSQL_RES          *meta;
	size_t              i, to[GROUPS] = { 0 };
	const size_t       *shape = counts;
	const struct param *pv = w->p;
	int                 rc;

	w->res.nrows = 0;
	w->res.ncols = 0;
	if (np > w->capp) {
		fail(w, st_name[st], "more parameters than room");
		return -1;
	}
	if (st_pads[st] && db_sql_pad_counts(counts, st_groups[st], MAX_LIST, to))
		shape = to;
	if ((s = get_stmt(w, st, shape)) == NULL)
		return -1;
	if (shape != counts) {
		size_t want = mysql_stmt_param_count(s);
		if (want > 2 * w->capp || db_sql_pad_params(st_sql[st], counts, to,
		    w->p, np, w->pp, sizeof(*w->pp)) != want) {
			fail(w, st_name[st], "parameters do not pad");
			return -1;
		}
		pv = w->pp;
		np = want;
	}
	if (mysql_stmt_param_count(s) != np) {
		fail(w, st_name[st], "parameter count mismatch");
		return -1;
	}
	for (i = 0; i < np; i++) {
		const struct param *p = &pv[i];
		MYSQL_BIND         *b = &w->b[i];

		memset(b, 0, sizeof(*b));
		w->bnull[i] = p->type == P_NULL;
		b->is_null = &w->bnull[i];
		if (p->type == P_I64) {
			b->buffer_type = MYSQL_TYPE_LONGLONG;
			b->buffer = (void *)(uintptr_t)&p->i;
		} else if (p->type == P_STR) {
			b->buffer_type = MYSQL_TYPE_BLOB;
			b->buffer = (void *)(uintptr_t)p->s;
			w->blen[i] = p->len;
			b->buffer_length = p->len;
			b->length = &w->blen[i];
		} else
			b->buffer_type = MYSQL_TYPE_NULL;
	}
	if ((np > 0 && mysql_stmt_bind_param(s, w->b) != 0) ||
	    mysql_stmt_execute(s) != 0)
		goto err;
	if ((meta = mysql_stmt_result_metadata(s)) == NULL) {
		mysql_stmt_free_result(s);
		return 0;
	}
	rc = fetch_rows(w, st, s, meta);
	mysql_free_result(meta);
	return rc;
err:
	return stmt_err(w, st, s);
}

/* ---- events ---- */

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

/* A public id of the service's shape (core/util.c ev_public_id()):
 * prefix, then 10 characters of the clock in milliseconds and 12 random
 * ones, all of its base 32 (ids sort by creation time). */
static void
public_id(struct worker *w, const char *prefix, char out[32])
{
	static const char b32[] = "0123456789abcdefghjkmnpqrstvwxyz";
	struct timespec   ts;
	uint64_t          ms;
	size_t            i, n = strlen(prefix);

	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	memcpy(out, prefix, n);
	for (i = 0; i < 10; i++)
		out[n + i] = b32[(ms >> (5 * (9 - i))) & 31];
	for (; i < 22; i++)
		out[n + i] = b32[rnd_next(w) & 31];
	out[n + 22] = '\0';
}

static void
make_event(struct worker *w, struct evbuf *e, const char *ext, const char *user,
    unsigned amount, unsigned store)
{
	char   iso[40];
	size_t i;

	snprintf(e->ext, sizeof(e->ext), "%s", ext);
	public_id(w, "evt_", e->pub);
	for (i = 0; i < sizeof(e->fp); i++)
		e->fp[i] = (char)(rnd_next(w) & 0xff);
	sql_now(e->rec);
	snprintf(e->user, sizeof(e->user), "%s", user);
	snprintf(e->email, sizeof(e->email), "%s@example.com", e->user);
	for (i = 0; e->email[i]; i++)
		if (e->email[i] >= 'A' && e->email[i] <= 'Z')
			e->email[i] = (char)(e->email[i] - 'A' + 'a');
	e->amount = amount;
	e->evid = 0;
	snprintf(iso, sizeof(iso), "%.10sT%sZ", e->rec, e->rec + 11);
	snprintf(e->doc, sizeof(e->doc),
	    "{\"source\":\"" SOURCE "\",\"externalEventId\":\"%s\","
	    "\"eventType\":\"" EVENT_TYPE "\",\"occurredAt\":\"" OCCURRED_ISO "\","
	    "\"occurredAtUtc\":\"" OCCURRED_ISO "\",\"receivedAt\":\"%s\","
	    "\"identity\":{\"externalUserId\":\"%s\",\"email\":\"%s\"},"
	    "\"properties\":{\"order_id\":\"order_%s\",\"amount\":%u.%02u,"
	    "\"currency\":\"USD\",\"store_id\":\"store_%u\"}}",
	    e->ext, iso, e->user, e->email, e->ext, amount / 100, amount % 100,
	    store);
}

static int
cmp_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;

	return x < y ? -1 : x > y;
}

static int
cmp_ll(long long x, long long y)
{
	return x < y ? -1 : x > y;
}

static int
cmp_tuser(const void *a, const void *b)
{
	return strcmp(((const struct tuser *)a)->ext, ((const struct tuser *)b)->ext);
}

/* Identities in the order of their primary key (type, value bytes). */
static int
cmp_ident(const void *a, const void *b)
{
	const struct ident *x = a, *y = b;
	int                 c;

	if (x->type != y->type)
		return x->type < y->type ? -1 : 1;
	c = memcmp(x->v, y->v, x->len < y->len ? x->len : y->len);
	if (c != 0)
		return c;
	return x->len < y->len ? -1 : x->len > y->len;
}

static int
cmp_tprof(const void *a, const void *b)
{
	return cmp_ll(((const struct tprof *)a)->pid, ((const struct tprof *)b)->pid);
}

/* qsort_r is not C11: the events of the public-id sort. */
static _Thread_local const struct evbuf *sort_evs;

static int
cmp_bypub(const void *a, const void *b)
{
	return strcmp(sort_evs[*(const size_t *)a].pub, sort_evs[*(const size_t *)b].pub);
}

/*
 * What a transaction needs before its first statement and the same for
 * every attempt (the service builds it from the request): the distinct
 * users, their identities sorted in lock order, the public-id index.
 */
static void
txn_prepare(struct worker *w, struct txn *t)
{
	size_t i, k;

	for (i = 0; i < t->n; i++) {
		t->users[i].ext = t->evs[i].user;
		t->users[i].email = t->evs[i].email;
	}
	qsort(t->users, t->n, sizeof(*t->users), cmp_tuser);
	for (i = 0, k = 0; i < t->n; i++)
		if (k == 0 || strcmp(t->users[k - 1].ext, t->users[i].ext) != 0)
			t->users[k++] = t->users[i];
	t->nusers = k;
	for (i = 0; i < t->n; i++) {
		struct tuser key = { .ext = t->evs[i].user }, *f;
		f = bsearch(&key, t->users, t->nusers, sizeof(key), cmp_tuser);
		t->evs[i].uslot = (size_t)(f - t->users);
	}
	for (i = 0, k = 0; i < t->nusers; i++) {
		t->idents[k++] = (struct ident){ 0, t->users[i].ext,
		    strlen(t->users[i].ext), i };
		t->idents[k++] = (struct ident){ 1, t->users[i].email,
		    strlen(t->users[i].email), i };
	}
	qsort(t->idents, k, sizeof(*t->idents), cmp_ident);
	t->nidents = k;
	for (i = 0; i < t->n; i++)
		t->bypub[i] = i;
	sort_evs = t->evs;
	qsort(t->bypub, t->n, sizeof(*t->bypub), cmp_bypub);
	/* the request: its id, and the attempt token's 15 request bytes */
	public_id(w, "req_", t->reqid);
	for (i = 0; i < ATTEMPT_LEN - 1; i++)
		t->attempt[i] = (char)(rnd_next(w) & 0xff);
	t->attempt[ATTEMPT_LEN - 1] = 0;
}

#define MIN(a, b) ((a) < (b) ? (a) : (b))
/* returned when a new event's key is stored already */
#define TAKEN (-2)

/* The keys of all events at once (DB_M_EVENT_KEYS): all must be free
 * (TAKEN when one is not). */
static int
keys_check(struct worker *w, struct txn *t)
{
	size_t c0, c, j;
	int    rc;

	for (c0 = 0; c0 < t->n; c0 += c) {
		c = MIN(t->n - c0, MAX_LIST);
		if (param_room(w, 1 + 2 * c) != 0)
			return -1;
		w->p[0] = PI(opt.tenant);
		for (j = 0; j < c; j++) {
			w->p[1 + 2 * j] = PS(SOURCE);
			w->p[2 + 2 * j] = PS(t->evs[c0 + j].ext);
		}
		if ((rc = run(w, ST_M_EVENT_KEYS, &c, 1 + 2 * c)) != 0)
			return rc;
		if (w->res.nrows > 0)
			return TAKEN;
	}
	return 0;
}

/* The 'i' rows of w->res (identities c0..c0+c of t): the profile of every
 * user. 0 or -1. */
static int
ident_rows(struct worker *w, struct txn *t, size_t c0, size_t c)
{
	size_t r;

	/* 'i', i.type, i.value, i.profile_id, p.public_id, p.tier, x.value */
	for (r = 0; r < w->res.nrows; r++) {
		const char   *kind = cell(&w->res, r, 0);
		const char   *ty = cell(&w->res, r, 1), *v = cell(&w->res, r, 2);
		const char   *pid = cell(&w->res, r, 3);
		struct ident  key, *f;
		if (kind == NULL || strcmp(kind, "i") != 0 || ty == NULL || v == NULL ||
		    pid == NULL)
			continue;
		key.type = atoi(ty);
		key.v = v;
		key.len = cell_len(&w->res, r, 2);
		f = bsearch(&key, t->idents + c0, c, sizeof(key), cmp_ident);
		if (f == NULL) {
			fail(w, st_name[ST_M_IDENT_LOCK], "a row for an identity"
			    " not asked for");
			return -1;
		}
		if (key.type == 0)
			t->users[f->uslot].pid = strtoll(pid, NULL, 10);
		else
			t->users[f->uslot].pid_email = strtoll(pid, NULL, 10);
	}
	return 0;
}

/* Every user found, with its email on the same profile? 0 or -1. */
static int
users_check(struct worker *w, struct txn *t)
{
	size_t j;

	for (j = 0; j < t->nusers; j++) {
		if (t->users[j].pid == 0) {
			fail(w, "identity look-up", "a known user was not found: run the"
			    " bench's user seeding first (or check --user-fmt)");
			return -1;
		}
		if (t->users[j].pid_email != t->users[j].pid) {
			fail(w, "identity look-up", "a user's email is not bound to its"
			    " profile: the ceiling runs known users only");
			return -1;
		}
	}
	return 0;
}

/* The distinct profiles of the users, sorted by id. */
static void
profs_build(struct txn *t)
{
	size_t j, k;

	for (j = 0; j < t->nusers; j++)
		t->profs[j] = (struct tprof){ t->users[j].pid, 0, 0 };
	qsort(t->profs, t->nusers, sizeof(*t->profs), cmp_tprof);
	for (j = 0, k = 0; j < t->nusers; j++)
		if (k == 0 || t->profs[k - 1].pid != t->profs[j].pid)
			t->profs[k++] = t->profs[j];
	t->nprofs = k;
	for (j = 0; j < t->nusers; j++) {
		struct tprof key = { t->users[j].pid, 0, 0 }, *f;
		f = bsearch(&key, t->profs, t->nprofs, sizeof(key), cmp_tprof);
		t->users[j].prof = (size_t)(f - t->profs);
	}
}

/*
 * The points balances of w->res: from the 'b' rows of ST_M_STATE_OF
 * ('b', NULL, name, profile_id, balance, lifetime, NULL: col 2), or
 * from the 'i' rows of ST_M_IDENT_STATE_LOCK (profile_id in column 3,
 * then name, balance, lifetime from col 7).
 */
static void
state_rows(struct worker *w, struct txn *t, size_t col)
{
	const char *want = col == 2 ? "b" : "i";
	size_t      r;

	for (r = 0; r < w->res.nrows; r++) {
		const char   *kind = cell(&w->res, r, 0), *pid = cell(&w->res, r, 3);
		const char   *name = cell(&w->res, r, col);
		struct tprof  key, *f;
		if (kind == NULL || pid == NULL || name == NULL ||
		    strcmp(kind, want) != 0 || strcmp(name, BALANCE) != 0)
			continue;
		key.pid = strtoll(pid, NULL, 10);
		if ((f = bsearch(&key, t->profs, t->nprofs, sizeof(key),
		    cmp_tprof)) == NULL)
			continue;
		f->bal = cell(&w->res, r, col + 1) ?
		    strtoll(cell(&w->res, r, col + 1), NULL, 10) : 0;
		f->life = cell(&w->res, r, col + 2) ?
		    strtoll(cell(&w->res, r, col + 2), NULL, 10) : 0;
	}
}

static const char *const periods[] = { "all", PERIOD_DAY, PERIOD_MONTH };
#define NPERIODS (sizeof(periods) / sizeof(periods[0]))

/* Lock the identities and their profiles (DB_M_IDENT_LOCK, LOCK_IDENTS
 * per statement): the profile of every user. */
static int
ident_lock(struct worker *w, struct txn *t)
{
	size_t c0, c, j;
	int    rc;

	for (j = 0; j < t->nusers; j++)
		t->users[j].pid = t->users[j].pid_email = 0;
	for (c0 = 0; c0 < t->nidents; c0 += c) {
		c = MIN(t->nidents - c0, LOCK_IDENTS);
		if (param_room(w, 1 + 2 * c) != 0)
			return -1;
		w->p[0] = PI(opt.tenant);
		for (j = 0; j < c; j++) {
			const struct ident *id = &t->idents[c0 + j];
			w->p[1 + 2 * j] = PI(id->type);
			w->p[2 + 2 * j] = PB(id->v, id->len);
		}
		if ((rc = run(w, ST_M_IDENT_LOCK, &c, 1 + 2 * c)) != 0)
			return rc;
		if (ident_rows(w, t, c0, c) != 0)
			return -1;
	}
	return users_check(w, t);
}

/* The distinct profiles, and their points balances (DB_M_STATE_OF). */
static int
state_of(struct worker *w, struct txn *t)
{
	size_t c0, c, j;
	int    rc;

	profs_build(t);
	for (c0 = 0; c0 < t->nprofs; c0 += c) {
		size_t counts[GROUPS], n = 0;
		c = MIN(t->nprofs - c0, MAX_LIST);
		/* balances only: the tenant's rule reads no variable and has
		 * no limit, so the service leaves those parts out */
		counts[0] = c;
		counts[1] = counts[2] = 0;
		counts[3] = NPERIODS;
		if (param_room(w, c) != 0)
			return -1;
		for (j = 0; j < c; j++)
			w->p[n++] = PI(t->profs[c0 + j].pid);
		if ((rc = run(w, ST_M_STATE_OF, counts, n)) != 0)
			return rc;
		state_rows(w, t, 2);
	}
	return 0;
}

/* Both in one statement (DB_M_IDENT_STATE_LOCK), as the service does for
 * up to MERGED_IDENTS identities (balances only: no variables or limits
 * in this tenant); with keys, the events' keys too (as the service does
 * for up to MERGED_KEYS events not checked before the transaction):
 * *taken counts the keys
 * stored. */
static int
ident_state_lock(struct worker *w, struct txn *t, int keys, size_t *taken)
{
	size_t counts[GROUPS], n = 0, c = t->nidents, j, r;
	int    rc;

	for (j = 0; j < t->nusers; j++)
		t->users[j].pid = t->users[j].pid_email = 0;
	counts[0] = c;
	counts[1] = counts[2] = 0;
	counts[3] = NPERIODS;
	counts[4] = keys ? t->n : 0;
	if (param_room(w, 1 + 2 * c + 1 + 2 * t->n) != 0)
		return -1;
	w->p[n++] = PI(opt.tenant);
	for (j = 0; j < c; j++) {
		w->p[n++] = PI(t->idents[j].type);
		w->p[n++] = PB(t->idents[j].v, t->idents[j].len);
	}
	if (keys) {
		w->p[n++] = PI(opt.tenant);
		for (j = 0; j < t->n; j++) {
			w->p[n++] = PS(SOURCE);
			w->p[n++] = PS(t->evs[j].ext);
		}
	}
	if ((rc = run(w, ST_M_IDENT_STATE_LOCK, counts, n)) != 0)
		return rc;
	*taken = 0;
	for (r = 0; r < w->res.nrows; r++) {
		const char *kind = cell(&w->res, r, 0);
		*taken += kind != NULL && strcmp(kind, "k") == 0;
	}
	if (ident_rows(w, t, 0, c) != 0 || users_check(w, t) != 0)
		return -1;
	profs_build(t);
	state_rows(w, t, 7);
	return 0;
}

/* Are the keys read with the locks (core/ingest.c apply_group())? */
static int
keys_merged(const struct txn *t)
{
	return t->n <= MERGED_KEYS && t->nidents <= MERGED_IDENTS;
}

/*
 * The events of the open transaction; their keys checked first when check
 * is set (or with the locks: keys_merged()). 0, retryable errno or -1.
 */
/* The 14 parameters of event e (SQL_EVENT_ROW) at w->p[n]; the next n. */
static size_t
event_params(struct worker *w, const struct txn *t, const struct evbuf *e,
    size_t n)
{
	w->p[n++] = PI(opt.tenant);
	w->p[n++] = PS(SOURCE);
	w->p[n++] = PS(e->ext);
	w->p[n++] = PS(e->pub);
	w->p[n++] = PB(e->fp, 32);
	w->p[n++] = PS(EVENT_TYPE);
	w->p[n++] = PS(OCCURRED);
	w->p[n++] = PS(e->rec);
	w->p[n++] = PS(e->doc);
	w->p[n++] = PS(t->reqid);
	w->p[n++] = PI(t->users[e->uslot].pid);
	w->p[n++] = PS(e->out);
	w->p[n++] = PS(opt.rules_version);
	w->p[n++] = PB(t->attempt, ATTEMPT_LEN);
	return n;
}

/* The writes of a single event and its COMMIT in one statement, as
 * core/ingest.c write_one(): the event, its ledger row (the event's id
 * taken in SQL), the profile's balance. */
static int
write_one(struct worker *w, struct txn *t)
{
	const struct evbuf *e = &t->evs[0];
	const struct tprof *pr = &t->profs[t->users[e->uslot].prof];
	size_t              counts[GROUPS] = { 1, 1, 0, 0, 0, 0 }, n = 0;

	if (param_room(w, 24) != 0)
		return -1;
	n = event_params(w, t, e, n);
	w->p[n++] = PI(pr->pid);
	w->p[n++] = PI(0);
	w->p[n++] = PS(RULE_ID);
	w->p[n++] = PS(BALANCE);
	w->p[n++] = PI(e->delta);
	w->p[n++] = PI(e->bal_after);
	w->p[n++] = PI(pr->pid);
	w->p[n++] = PS(BALANCE);
	w->p[n++] = PI(pr->bal);
	w->p[n++] = PI(pr->life);
	return run(w, ST_M_WRITE_ONE, counts, n);
}

/* One attempt of transaction t; *committed is set when its last statement
 * committed it (a single event: write_one()). */
static int
accept_txn(struct worker *w, struct txn *t, int check, int *committed)
{
	size_t c0, c, j, r, taken = 0;
	int    rc;

	t->attempt[ATTEMPT_LEN - 1]++;       /* this transaction attempt */
	if (check && !keys_merged(t) && (rc = keys_check(w, t)) != 0)
		return rc;
	if (t->nidents <= MERGED_IDENTS) {
		if ((rc = ident_state_lock(w, t, keys_merged(t), &taken)) != 0)
			return rc;
		if (taken > 0)
			return TAKEN;
	} else if ((rc = ident_lock(w, t)) != 0 || (rc = state_of(w, t)) != 0)
		return rc;
	/* the rule: a point per dollar, balances running in item order */
	for (j = 0; j < t->n; j++) {
		struct evbuf *e = &t->evs[j];
		struct tprof *pr = &t->profs[t->users[e->uslot].prof];
		e->delta = e->amount / 100;
		pr->bal += e->delta;
		pr->life += e->delta;
		e->bal_after = pr->bal;
		e->evid = 0;
		snprintf(e->out, sizeof(e->out),
		    "{\"points_awarded\":%lld,\"rules_applied\":[\"" RULE_ID "\"],"
		    "\"rules_skipped\":[],\"effects\":[{\"type\":\"balance\",\"rule\":"
		    "\"" RULE_ID "\",\"balance\":\"" BALANCE "\",\"delta\":%lld,"
		    "\"balance_after\":%lld}],\"tier\":null,\"identity_conflicts\":[],"
		    "\"profile_created\":false}",
		    e->delta, e->delta, e->bal_after);
	}
	if (t->n == 1) {
		if ((rc = write_one(w, t)) == 0)
			*committed = 1;
		return rc;
	}
	for (c0 = 0; c0 < t->n; c0 += c) {
		size_t n = 0;
		c = MIN(t->n - c0, EVENT_ROWS);
		if (param_room(w, 14 * c) != 0)
			return -1;
		for (j = 0; j < c; j++)
			n = event_params(w, t, &t->evs[c0 + j], n);
		if ((rc = run(w, ST_M_EVENT_INSERT, &c, n)) != 0)
			return rc;
		/* a list padded as the service pads it (db_sql_pads()):
		 * each repeat of the last row is one duplicate-key warning */
		if (w->res.nrows != c || mysql_warning_count(w->conn) >
		    (st_pads[ST_M_EVENT_INSERT] ? db_sql_padded(c, MAX_LIST) : c) - c) {
			fail(w, "INSERT IGNORE events", "the new events were not all"
			    " stored cleanly");
			return -1;
		}
		/* RETURNING id, public_id */
		for (r = 0; r < w->res.nrows; r++) {
			const char *id = cell(&w->res, r, 0), *pub = cell(&w->res, r, 1);
			size_t      lo = 0, hi = t->n;
			while (id != NULL && pub != NULL && lo < hi) {
				size_t mid = lo + (hi - lo) / 2;
				int    cmp = strcmp(pub, t->evs[t->bypub[mid]].pub);
				if (cmp == 0) {
					t->evs[t->bypub[mid]].evid = strtoull(id, NULL, 10);
					break;
				}
				if (cmp < 0)
					hi = mid;
				else
					lo = mid + 1;
			}
		}
		for (j = 0; j < c; j++)
			if (t->evs[c0 + j].evid == 0) {
				fail(w, "INSERT IGNORE events", "RETURNING did not name"
				    " every event");
				return -1;
			}
	}
	for (c0 = 0; c0 < t->n; c0 += c) {
		size_t n = 0;
		c = MIN(t->n - c0, LEDGER_ROWS);
		if (param_room(w, 7 * c) != 0)
			return -1;
		for (j = 0; j < c; j++) {
			const struct evbuf *e = &t->evs[c0 + j];
			w->p[n++] = PI(t->users[e->uslot].pid);
			w->p[n++] = PI((long long)e->evid);
			w->p[n++] = PI(0);
			w->p[n++] = PS(RULE_ID);
			w->p[n++] = PS(BALANCE);
			w->p[n++] = PI(e->delta);
			w->p[n++] = PI(e->bal_after);
		}
		if ((rc = run(w, ST_M_LEDGER_INSERT, &c, n)) != 0)
			return rc;
	}
	for (c0 = 0; c0 < t->nprofs; c0 += c) {
		size_t n = 0;
		c = MIN(t->nprofs - c0, MAX_LIST);
		if (param_room(w, 4 * c) != 0)
			return -1;
		for (j = 0; j < c; j++) {
			const struct tprof *pr = &t->profs[c0 + j];
			w->p[n++] = PI(pr->pid);
			w->p[n++] = PS(BALANCE);
			w->p[n++] = PI(pr->bal);
			w->p[n++] = PI(pr->life);
		}
		if ((rc = run(w, ST_M_BALANCE_UPSERT, &c, n)) != 0)
			return rc;
	}
	return 0;
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

/* The arrays of a transaction of up to n events; 0 or -1. */
static int
txn_alloc(struct worker *w, struct txn *t, size_t n)
{
	memset(t, 0, sizeof(*t));
	t->n = n;
	t->evs = calloc(n, sizeof(*t->evs));
	t->us = calloc(n, sizeof(*t->us));
	t->users = calloc(n, sizeof(*t->users));
	t->idents = calloc(2 * n, sizeof(*t->idents));
	t->profs = calloc(n, sizeof(*t->profs));
	t->bypub = calloc(n, sizeof(*t->bypub));
	if (t->evs == NULL || t->us == NULL || t->users == NULL ||
	    t->idents == NULL || t->profs == NULL || t->bypub == NULL) {
		fail(w, "events", "out of memory");
		return -1;
	}
	return 0;
}

static void
txn_free(struct txn *t)
{
	free(t->evs);
	free(t->us);
	free(t->users);
	free(t->idents);
	free(t->profs);
	free(t->bypub);
}

/*
 * The duplicate path of t's single event: one plain read of its key; the
 * reads' transaction is ended once READ_KEEP_US old (*read_since: when it
 * began, 0 for none). *found says whether the key is stored. 0, a MariaDB
 * error number (the transaction rolled back) or -1.
 */
static int
dup_read(struct worker *w, const struct txn *t, double t0, double *read_since,
    int *found)
{
	size_t one = 1;
	int    rc;

	if (param_room(w, 3) != 0)
		return -1;
	w->p[0] = PI(opt.tenant);
	w->p[1] = PS(SOURCE);
	w->p[2] = PS(t->evs[0].ext);
	if ((rc = run(w, ST_M_EVENT_KEYS, &one, 3)) == 0) {
		*found = w->res.nrows > 0;
		if (*read_since == 0)
			*read_since = t0;
		if ((t0 - *read_since) * 1e6 >= READ_KEEP_US) {
			*read_since = 0;
			if (mysql_rollback(w->conn) != 0)
				rc = (int)mysql_errno(w->conn);
		}
	}
	if (rc > 0) {
		mysql_rollback(w->conn);
		*read_since = 0;
	}
	return rc;
}

/*
 * Transaction t of new events, run as the service runs it: the keys read
 * first (more than MERGED_KEYS events), then up to MAX_ATTEMPTS attempts
 * while deadlocks and lock-wait timeouts roll it back. 0 committed, 1
 * given up (the service's 503), TAKEN (a key is stored, rolled back) or -1.
 */
static int
accept_run(struct worker *w, struct txn *t)
{
	unsigned attempt;
	int      rc, committed;

	/* the connection runs with autocommit off, as the service's: the
	 * first read begins the transaction, no START TRANSACTION is sent */
	if (!keys_merged(t) && (rc = keys_check(w, t)) != 0) {
		if (rc > 0)
			fail(w, "key check", "lock wait or deadlock on a plain read");
		else if (rc == TAKEN)
			mysql_rollback(w->conn);
		return rc > 0 ? -1 : rc;
	}
	for (attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
		if (attempt > 0) {
			w->retries++;
			backoff(w, attempt);
		}
		/* a retry checks the keys again, inside */
		committed = 0;
		rc = accept_txn(w, t, attempt > 0, &committed);
		if (rc == 0) {
			if (committed || mysql_commit(w->conn) == 0)
				return 0;
			rc = (int)mysql_errno(w->conn);
			if (!retryable((unsigned)rc)) {
				fail(w, "COMMIT", mysql_error(w->conn));
				rc = -1;
			}
		}
		mysql_rollback(w->conn);
		if (rc < 0)
			return rc;
	}
	return 1;
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct txn     t;
	char           ext[96], user[64];
	unsigned       i;
	double         read_since = 0;      /* dup: when the reads began a transaction */

	if (txn_alloc(w, &t, opt.per_txn) != 0 || connect_db(w) != 0)
		goto out;
	while (!atomic_load(&stop_flag) && !w->failed) {
		double t0;
		int    rc = 0, found;

		/* the transaction's events: new ids, or existing ones to replay */
		for (i = 0; i < t.n; i++)
			t.us[i] = (unsigned)(rnd_next(w) % opt.users);
		if (opt.sorted)
			qsort(t.us, t.n, sizeof(*t.us), cmp_unsigned);
		for (i = 0; i < t.n; i++) {
			if (opt.mode == MODE_DUP) {
				unsigned k = (unsigned)(rnd_next(w) % opt.dup_count);
				snprintf(ext, sizeof(ext), "%s-%u", opt.dup_prefix, k);
			} else
				snprintf(ext, sizeof(ext), "%s-%u-%llu", opt.prefix,
				    w->id, w->seq++);
			snprintf(user, sizeof(user), opt.user_fmt, t.us[i]);
			make_event(w, &t.evs[i], ext, user,
			    100 + (unsigned)(rnd_next(w) % 50000), t.us[i] % 100);
		}
		t0 = now_s();
		txn_prepare(w, &t);
		if (opt.mode == MODE_DUP) {
			/* a single event whose key was answered duplicate before */
			if ((rc = dup_read(w, &t, t0, &read_since, &found)) < 0)
				goto out;
			if (rc > 0) {
				if (!retryable((unsigned)rc)) {
					fail(w, "duplicate path", mysql_error(w->conn));
					goto out;
				}
				w->retries++;
				continue;
			}
			if (!found) {
				fail(w, "duplicate path", "the key is not taken: seed the"
				    " duplicates first (--dup-prefix, --dup-count)");
				goto out;
			}
			add_latency(w, (now_s() - t0) * 1000.0);
			w->txns++;
			w->events++;
			continue;
		}
		if ((rc = accept_run(w, &t)) == TAKEN)
			fail(w, "key check", "a new external id is taken");
		if (rc < 0)
			goto out;
		if (rc == 1) {
			/* the service answers 503 here; the client would retry */
			w->gave_up++;
			continue;
		}
		add_latency(w, (now_s() - t0) * 1000.0);
		w->txns++;
		w->events += t.n;
	}
out:
	/* frees: the transaction's arrays; the connection, its statements and
	 * the buffers of w are freed by main() */
	txn_free(&t);
	return NULL;
}

/* ---- --fcgi 1: the same work behind a web server ---- */

/* A worker's connection, statements and buffers. */
static void
worker_free(struct worker *w)
{
	size_t s;

	for (s = 0; s < STMT_CACHE; s++)
		if (w->cache[s].s != NULL)
			mysql_stmt_close(w->cache[s].s);
	if (w->conn != NULL)
		mysql_close(w->conn);
	for (s = 0; s < MAX_COLS; s++)
		free(w->col[s]);
	free(w->p);
	free(w->pp);
	free(w->b);
	free(w->blen);
	free(w->bnull);
	free(w->res.off);
	free(w->res.len);
	free(w->res.isnull);
	free(w->res.buf);
	free(w->lat);
}

#define FCGI_MAX_ITEMS 1000             /* a batch, at most (API.md) */
#define FCGI_MAX_BODY  (8u << 20)

/* The head of an answer: its status line and type. */
static void
fcgi_head(FCGX_Request *req, const char *status)
{
	FCGX_FPrintF(req->out, "Status: %s\r\nContent-Type: application/json\r\n\r\n",
	    status);
}

/* A whole answer: the head and a JSON body. */
static void
fcgi_answer(FCGX_Request *req, const char *status, const char *body)
{
	fcgi_head(req, status);
	FCGX_PutS(body, req->out);
}

/* Is ext a replayed event's external id ("<dup-prefix>-...")? */
static int
is_replay(const char *ext)
{
	size_t n = strlen(opt.dup_prefix);

	return strncmp(ext, opt.dup_prefix, n) == 0 && ext[n] == '-';
}

/* A string member of o, or NULL. */
static const char *
json_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (o == NULL || !json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Event i of t from JSON object o; 0 or -1 (a member missing or wrong). */
static int
fcgi_event(struct worker *w, struct txn *t, size_t i, struct json_object *o)
{
	struct json_object *id = NULL, *props = NULL, *amount = NULL;
	const char         *ext = json_str(o, "externalEventId"), *user;
	double              a;

	if (o == NULL || !json_object_object_get_ex(o, "identity", &id) ||
	    !json_object_object_get_ex(o, "properties", &props) ||
	    !json_object_object_get_ex(props, "amount", &amount))
		return -1;
	user = json_str(id, "externalUserId");
	a = json_object_get_double(amount);
	if (ext == NULL || user == NULL || strlen(ext) >= sizeof(t->evs[i].ext) ||
	    strlen(user) >= sizeof(t->evs[i].user) - 16 || !(a >= 0 && a < 1e7))
		return -1;
	make_event(w, &t->evs[i], ext, user, (unsigned)(a * 100 + 0.5), 0);
	return 0;
}

/*
 * One request: a single event (201 accepted, 200 duplicate) or a batch
 * {"items":[...]} (200, a result per item), run with the SQL of the
 * modes above: a single event whose external id begins with the
 * --dup-prefix is a replay and is answered by dup_read(); new events take
 * accept_run(). No authentication, validation or rules: only what any
 * endpoint must do to store the event.
 */
static void
fcgi_one(struct worker *w, struct txn *t, FCGX_Request *req, char **body,
    size_t *cap, double *read_since)
{
	const char          *cl = FCGX_GetParam("CONTENT_LENGTH", req->envp);
	struct json_tokener *tok;
	struct json_object  *doc, *items = NULL;
	size_t               len = cl != NULL ? strtoul(cl, NULL, 10) : 0, n, i;
	int                  rc, found = 0, batch;
	double               t0 = now_s();

	if (len == 0 || len > FCGI_MAX_BODY) {
		fcgi_answer(req, "413 Payload Too Large", "{\"status\":\"error\"}");
		return;
	}
	if (len > *cap) {
		char *nb = realloc(*body, len);
		if (nb == NULL) {
			fcgi_answer(req, "503 Service Unavailable", "{\"status\":\"error\"}");
			return;
		}
		*body = nb;
		*cap = len;
	}
	if ((size_t)FCGX_GetStr(*body, (int)len, req->in) != len ||
	    (tok = json_tokener_new()) == NULL) {
		fcgi_answer(req, "400 Bad Request", "{\"status\":\"error\"}");
		return;
	}
	doc = json_tokener_parse_ex(tok, *body, (int)len);
	json_tokener_free(tok);
	batch = doc != NULL && json_object_object_get_ex(doc, "items", &items) &&
	    json_object_is_type(items, json_type_array);
	n = batch ? json_object_array_length(items) : 1;
	rc = doc == NULL || n == 0 || n > FCGI_MAX_ITEMS ? -1 : 0;
	for (i = 0; rc == 0 && i < n; i++)
		rc = fcgi_event(w, t, i, batch ? json_object_array_get_idx(items, i) : doc);
	json_object_put(doc);
	if (rc != 0) {
		fcgi_answer(req, "400 Bad Request", "{\"status\":\"error\"}");
		return;
	}
	t->n = n;
	txn_prepare(w, t);
	if (!batch && is_replay(t->evs[0].ext) &&
	    (rc = dup_read(w, t, t0, read_since, &found)) != 0) {
		fcgi_answer(req, "503 Service Unavailable", "{\"status\":\"error\"}");
		return;
	}
	if (!found)
		rc = accept_run(w, t);
	if (found || (rc == TAKEN && !batch)) {
		fcgi_answer(req, "200 OK", "{\"status\":\"duplicate\"}");
		return;
	}
	if (rc != 0) {
		fcgi_answer(req, rc == TAKEN ? "409 Conflict" : "503 Service Unavailable",
		    "{\"status\":\"error\"}");
		return;
	}
	if (!batch) {
		fcgi_head(req, "201 Created");
		FCGX_FPrintF(req->out, "{\"status\":\"accepted\",\"event_id\":\"%s\",%s",
		    t->evs[0].pub, t->evs[0].out + 1);
		return;
	}
	fcgi_head(req, "200 OK");
	FCGX_PutS("{\"results\":[", req->out);
	for (i = 0; i < n; i++) {
		/* (FCGX_FPrintF() has its own printf: no %zu) */
		char item[sizeof(t->evs[i].out) + 96];
		int  k = snprintf(item, sizeof(item), "%s{\"index\":%zu,\"status\":"
		    "\"accepted\",\"event_id\":\"%s\",%s", i ? "," : "", i,
		    t->evs[i].pub, t->evs[i].out + 1);
		if (k > 0)
			FCGX_PutStr(item, k < (int)sizeof(item) ? k : (int)sizeof(item) - 1,
			    req->out);
	}
	FCGX_PutS("]}", req->out);
}

/* Serve FastCGI requests on fd 0 until the web server stops us. */
static int
fcgi_serve(void)
{
	struct worker w;
	struct txn    t;
	FCGX_Request  req;
	char         *body = NULL;
	size_t        cap = 0;
	double        read_since = 0;
	int           ret = 0;

	memset(&w, 0, sizeof(w));
	w.rnd = (uint64_t)time(NULL) * 2654435761u + (uint64_t)getpid() + 1;
	if (txn_alloc(&w, &t, FCGI_MAX_ITEMS) != 0 || connect_db(&w) != 0 ||
	    FCGX_Init() != 0 || FCGX_InitRequest(&req, 0, 0) != 0)
		ret = 1;
	while (ret == 0 && FCGX_Accept_r(&req) >= 0) {
		fcgi_one(&w, &t, &req, &body, &cap, &read_since);
		FCGX_Finish_r(&req);
		ret = w.failed;
	}
	if (w.failed)
		fprintf(stderr, "ceiling: %s\n", w.err);
	txn_free(&t);
	free(body);
	worker_free(&w);
	return ret;
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: ceiling --db URL --tenant ID [--mode accept|dup] [--conns N]\n"
	    "               [--per-txn N] [--seconds S] [--users N] [--prefix P]\n"
	    "               [--user-fmt FMT] [--dup-prefix P] [--dup-count N]\n"
	    "               [--sorted 0|1] [--rules-version V] [--fcgi 0|1]\n"
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
	int            a, ret = 0, fcgi = 0;
	char          *envargs[32], *words = NULL;

	/* under a web server (no arguments): the options from $CEILING_ARGS */
	if (argc == 1 && getenv("CEILING_ARGS") != NULL &&
	    (words = strdup(getenv("CEILING_ARGS"))) != NULL) {
		char *tok, *save = NULL;
		envargs[0] = argv[0];
		argc = 1;
		for (tok = strtok_r(words, " ", &save); tok != NULL && argc < 31;
		    tok = strtok_r(NULL, " ", &save))
			envargs[argc++] = tok;
		envargs[argc] = NULL;
		argv = envargs;
	}
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
		else if (strcmp(o, "--fcgi") == 0)
			fcgi = strcmp(v, "0") != 0;
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
	for (i = 0; i < ST__MAX; i++) {
		st_pads[i] = db_sql_pads(st_sql[i]);
		if ((st_groups[i] = db_sql_groups(st_sql[i])) > GROUPS) {
			fprintf(stderr, "ceiling: %s: too many list groups\n", st_name[i]);
			return 1;
		}
	}
	if (mysql_library_init(0, NULL, NULL) != 0) {
		fprintf(stderr, "ceiling: cannot initialise the MariaDB library\n");
		return 1;
	}
	if (fcgi) {
		ret = fcgi_serve();
		mysql_library_end();
		free(words);
		return ret;
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

	/* frees: samples, statements, connections, the workers' buffers */
	free(all);
	for (i = 0; i < opt.conns; i++)
		worker_free(&ws[i]);
	free(ws);
	mysql_library_end();
	free(words);
	return ret;
}
