/*
 * MariaDB access through MariaDB Connector/C prepared statements.
 *
 * One connection per process (FastCGI workers are single-threaded). All SQL
 * sits in stmt_sql[] below, indexed by enum db_stmt, prepared lazily once
 * per connection. Parameters are always bound, never pasted into SQL.
 * Failures are classified into enum db_rc so that callers can retry a
 * transaction (deadlock, lock wait, Galera certification failure), reconnect
 * (connection lost) or give up.
 */
#include <sys/types.h>
#include <sys/stat.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>
#include <mysqld_error.h>
#include <errmsg.h>
#include <openssl/crypto.h>

#include "db/db.h"
#include "db/sql.h"

#define DB_MAX_HOSTS 8

static const char *const stmt_sql[DB_STMT__MAX] = {
	/* DB_KEY_BY_PREFIX */
	"SELECT k.id, k.key_id, k.tenant_id, t.slug, k.digest, k.scopes, k.sources,"
	" k.revoked_at IS NOT NULL FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
	" WHERE k.prefix = ?",
	/* DB_KEY_INSERT */
	"INSERT INTO api_keys (key_id, tenant_id, prefix, digest, scopes, sources,"
	" name, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
	/* DB_KEY_LIST */
	"SELECT k.key_id, k.prefix, k.scopes, k.sources, k.name,"
	" DATE_FORMAT(k.created_at, '%Y-%m-%dT%H:%i:%sZ'),"
	" DATE_FORMAT(k.revoked_at, '%Y-%m-%dT%H:%i:%sZ')"
	" FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE t.slug = ?"
	" ORDER BY k.created_at, k.key_id",
	/* DB_KEY_REVOKE */
	"UPDATE api_keys SET revoked_at = UTC_TIMESTAMP(6)"
	" WHERE key_id = ? AND revoked_at IS NULL",
	/* DB_TENANT_INSERT */
	"INSERT IGNORE INTO tenants (slug, created_at) VALUES (?, UTC_TIMESTAMP(6))",
	/* DB_TENANT_BY_SLUG */
	"SELECT id FROM tenants WHERE slug = ?",
	/* DB_EVENT_OUTCOME: what an accepted event answered */
	"SELECT e.outcome, p.public_id FROM events e"
	" LEFT JOIN profiles p ON p.id = e.profile_id WHERE e.id = ?",
	/* DB_EVENT_BY_PUBLIC_ID */
	"SELECT e.doc, e.outcome, e.rules_version, p.public_id FROM events e"
	" LEFT JOIN profiles p ON p.id = e.profile_id"
	" WHERE e.tenant_id = ? AND e.public_id = ?",
	/* DB_IDENT_OF_PROFILE */
	"SELECT type, value FROM identities WHERE profile_id = ? ORDER BY type, value",
	/* DB_PROFILE_BY_ID */
	"SELECT public_id, tier, DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%fZ')"
	" FROM profiles WHERE id = ?",
	/* DB_PROFILE_BY_PUBLIC_ID */
	"SELECT id, public_id, tier, DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%fZ')"
	" FROM profiles WHERE tenant_id = ? AND public_id = ?",
	/* DB_IDENT_LOOKUP */
	"SELECT profile_id FROM identities WHERE tenant_id = ? AND type = ? AND value = ?",
	/* DB_BALANCES_OF */
	"SELECT name, balance, lifetime FROM balances WHERE profile_id = ? ORDER BY name",
	/* DB_VARS_OF */
	"SELECT name, value FROM variables WHERE profile_id = ? ORDER BY name",
	/* DB_PROFILE_EVENTS: newest first by occurredAt, then by receipt; the
	 * cursor is the (occurred_at, received_at, id) of the last row seen */
	"SELECT e.id, e.public_id, e.doc, e.outcome, e.rules_version,"
	" DATE_FORMAT(e.occurred_at, '%Y-%m-%d %H:%i:%s.%f'),"
	" DATE_FORMAT(e.received_at, '%Y-%m-%d %H:%i:%s.%f')"
	" FROM events e WHERE e.profile_id = ?"
	" AND (e.occurred_at, e.received_at, e.id) < (?, ?, ?)"
	" ORDER BY e.occurred_at DESC, e.received_at DESC, e.id DESC LIMIT ?",
	/* DB_LEDGER_OF */
	"SELECT l.id, e.public_id, l.rule_id, l.balance_name, l.delta, l.balance_after,"
	" DATE_FORMAT(l.created_at, '%Y-%m-%dT%H:%i:%s.%fZ'),"
	" DATE_FORMAT(l.created_at, '%Y-%m-%d %H:%i:%s.%f')"
	" FROM ledger l JOIN events e ON e.id = l.event_id WHERE l.profile_id = ?"
	" AND (l.created_at, l.id) < (?, ?)"
	" ORDER BY l.created_at DESC, l.id DESC LIMIT ?",
	/* DB_COUNTERS_OF */
	"SELECT rule_id, period, count FROM rule_counters WHERE profile_id = ?"
	" AND period IN ('all', ?, ?)",
	/* DB_PING_QUERY */
	"SELECT 1",
	/* DB_MIGRATION_DONE */
	"SELECT 1 FROM schema_migrations WHERE version = ?",
	/* DB_MIGRATION_INSERT */
	"INSERT INTO schema_migrations (version, applied_at) VALUES (?, UTC_TIMESTAMP(6))",
	/* DB_INSTANCE_OF */
	"SELECT (SELECT DATE_FORMAT(MIN(applied_at), '%Y-%m-%d %H:%i:%s.%f')"
	" FROM schema_migrations), (SELECT COALESCE(MAX(id), 0) + 1 FROM events)",
};
_Static_assert(sizeof(stmt_sql) / sizeof(stmt_sql[0]) == DB_STMT__MAX,
    "stmt_sql must have one entry per enum db_stmt");

/* Templates of enum db_multi, same order: their text and syntax are in
 * db/sql.h (shared with the bench's ceiling). */
static const char *const multi_sql[DB_M__MAX] = {
	SQL_M_EVENT_KEYS,
	SQL_M_IDENT_LOCK,
	SQL_M_STATE_OF,
	SQL_M_IDENT_STATE_LOCK,
	SQL_M_PROFILE_INSERT,
	SQL_M_IDENT_INSERT,
	SQL_M_EVENT_INSERT,
	SQL_M_LEDGER_INSERT,
	SQL_M_BALANCE_UPSERT,
	SQL_M_VAR_UPSERT,
	SQL_M_COUNTER_ADD,
	SQL_M_PROFILE_TOUCH,
	SQL_M_WRITE_ONE,
};

/* Prepared multi statements kept per connection, least recently used
 * dropped first. */
#define DB_MCACHE 24
struct db_mstmt {
	MYSQL_STMT    *s;
	enum db_multi  m;
	size_t         counts[DB_MULTI_GROUPS];
	uint64_t       used;
};

struct db_host {
	char     *host;
	unsigned  port;
};

struct db {
	char           *user, *pass, *name, *socket;
	struct db_host  hosts[DB_MAX_HOSTS];
	size_t          nhosts;
	size_t          cur;                     /* host in use / to try first */
	MYSQL          *conn;                    /* NULL when not connected */
	MYSQL_STMT     *stmts[DB_STMT__MAX];     /* prepared lazily */
	struct db_mstmt mstmts[DB_MCACHE];       /* multi statements */
	uint64_t        mclock;                  /* their use counter */
	struct db_param *pad;                    /* padded parameters */
	size_t          padcap;
	int             cluster;                 /* wsrep_on */
	int             in_txn;                  /* inside db_txn() */
	int             txn_fresh;               /* no statement of it ran yet */
	int             txn_done;                /* a statement of it committed */
	int             pending;                 /* ROLLBACK sent, answer unread */
	uint64_t        read_since;              /* when a read outside db_txn()
	                                            began the open transaction;
	                                            0: none known */
	uint64_t        elapsed_us;              /* time in the database */
	uint64_t        instance;                /* db_instance(); 0: not read */
	uint64_t        instance_at;             /* when (mono_us()) */
	unsigned        last_errno;
	char            last_error[256];
};

/* ---- URL parsing ---- */

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decode s[0..len) into a new string; NULL on bad escapes or NUL. */
static char *
pct_decode(const char *s, size_t len)
{
	char   *out;
	size_t  i, o = 0;

	if ((out = malloc(len + 1)) == NULL)
		return NULL;
	for (i = 0; i < len; i++) {
		if (s[i] == '%') {
			int hi, lo;
			if (len - i < 3 || (hi = hexval(s[i + 1])) < 0 ||
			    (lo = hexval(s[i + 2])) < 0 || (hi == 0 && lo == 0)) {
				free(out);
				return NULL;
			}
			out[o++] = (char)(hi * 16 + lo);
			i += 2;
		} else
			out[o++] = s[i];
	}
	out[o] = '\0';
	return out;
}

static void
db_free_fields(struct db *db)
{
	size_t i;

	free(db->user);
	free(db->pass);
	free(db->name);
	free(db->socket);
	for (i = 0; i < db->nhosts; i++)
		free(db->hosts[i].host);
}

/*
 * Parse mariadb://user[:pass]@host[:port][,host[:port]...]/db[?socket=path]
 * into db. Returns 0 or -1 with a message in err.
 */
static int
parse_url(struct db *db, const char *url, char *err, size_t errsz)
{
	const char *p, *at, *slash, *q, *hp, *end;

	if (strncmp(url, "mariadb://", 10) == 0)
		p = url + 10;
	else if (strncmp(url, "mysql://", 8) == 0)
		p = url + 8;
	else {
		snprintf(err, errsz, "RFEVENTS_DB must start with mariadb://");
		return -1;
	}
	slash = strchr(p, '/');
	if (slash == NULL) {
		snprintf(err, errsz, "RFEVENTS_DB has no /database");
		return -1;
	}
	at = memchr(p, '@', (size_t)(slash - p));
	if (at != NULL) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (colon != NULL) {
			db->user = pct_decode(p, (size_t)(colon - p));
			db->pass = pct_decode(colon + 1, (size_t)(at - colon - 1));
			if (db->pass == NULL)
				goto bad;
		} else
			db->user = pct_decode(p, (size_t)(at - p));
		if (db->user == NULL)
			goto bad;
		hp = at + 1;
	} else
		hp = p;

	/* host list up to the slash */
	while (hp < slash) {
		const char *comma = memchr(hp, ',', (size_t)(slash - hp));
		const char *hend = comma ? comma : slash;
		const char *colon = memchr(hp, ':', (size_t)(hend - hp));
		struct db_host *h;

		if (db->nhosts == DB_MAX_HOSTS) {
			snprintf(err, errsz, "RFEVENTS_DB lists more than %d hosts",
			    DB_MAX_HOSTS);
			return -1;
		}
		h = &db->hosts[db->nhosts];
		h->port = 0;
		if (colon != NULL) {
			char  *e;
			long   v;
			char   buf[8];
			size_t n = (size_t)(hend - colon - 1);
			if (n == 0 || n >= sizeof(buf))
				goto bad;
			memcpy(buf, colon + 1, n);
			buf[n] = '\0';
			v = strtol(buf, &e, 10);
			if (*e != '\0' || v <= 0 || v > 65535)
				goto bad;
			h->port = (unsigned)v;
		} else
			colon = hend;
		if (colon == hp)
			goto bad;
		if ((h->host = pct_decode(hp, (size_t)(colon - hp))) == NULL)
			goto bad;
		db->nhosts++;
		hp = comma ? comma + 1 : slash;
	}
	if (db->nhosts == 0) {
		db->hosts[0].host = strdup("localhost");
		db->hosts[0].port = 0;
		db->nhosts = 1;
	}

	q = strchr(slash, '?');
	end = q ? q : slash + strlen(slash);
	if (end - slash <= 1) {
		snprintf(err, errsz, "RFEVENTS_DB has an empty database name");
		return -1;
	}
	if ((db->name = pct_decode(slash + 1, (size_t)(end - slash - 1))) == NULL)
		goto bad;
	while (q != NULL && *q != '\0') {
		const char *amp, *pend;
		q++;
		amp = strchr(q, '&');
		pend = amp ? amp : q + strlen(q);
		if (strncmp(q, "socket=", 7) == 0) {
			free(db->socket);
			if ((db->socket = pct_decode(q + 7, (size_t)(pend - q - 7))) == NULL)
				goto bad;
		} else {
			snprintf(err, errsz, "RFEVENTS_DB: unknown option");
			return -1;
		}
		q = amp;
	}
	return 0;
bad:
	snprintf(err, errsz, "RFEVENTS_DB is not a valid mariadb:// URL");
	return -1;
}

struct db *
db_open(const char *url, char *err, size_t errsz)
{
	struct db *db;

	if (url == NULL || *url == '\0') {
		snprintf(err, errsz, "RFEVENTS_DB is not set");
		return NULL;
	}
	/*
	 * Before the connector starts: it initialises libssl with
	 * OPENSSL_INIT_LOAD_CONFIG, and reading openssl.cnf that way made
	 * about 1 MB of libcrypto resident (a test program's VmRSS: 5.7 MB
	 * after mysql_library_init(), 4.7 MB with this first). Our
	 * connections use no TLS (the URL has no option for it) and
	 * libcrypto only hashes (ev_sha256()), so nothing in that file
	 * changes what the process does. The first initialisation decides:
	 * the connector's later request to load the file does nothing.
	 */
	OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
	if ((db = calloc(1, sizeof(*db))) == NULL) {
		snprintf(err, errsz, "out of memory");
		return NULL;
	}
	if (parse_url(db, url, err, errsz) == -1) {
		db_free_fields(db);
		free(db);
		return NULL;
	}
	return db;
}

/* Close the connection and its statements; keep the settings. */
static void
db_disconnect(struct db *db)
{
	size_t i;

	for (i = 0; i < DB_STMT__MAX; i++)
		if (db->stmts[i] != NULL) {
			mysql_stmt_close(db->stmts[i]);
			db->stmts[i] = NULL;
		}
	for (i = 0; i < DB_MCACHE; i++)
		if (db->mstmts[i].s != NULL) {
			mysql_stmt_close(db->mstmts[i].s);
			memset(&db->mstmts[i], 0, sizeof(db->mstmts[i]));
		}
	if (db->conn != NULL) {
		mysql_close(db->conn);
		db->conn = NULL;
	}
	db->pending = 0;
	db->read_since = 0;
	db->instance = 0;
}

void
db_close(struct db *db)
{
	if (db == NULL)
		return;
	db_disconnect(db);
	db_free_fields(db);
	free(db->pad);
	free(db);
}

static void
set_error(struct db *db, unsigned no, const char *msg)
{
	db->last_errno = no;
	snprintf(db->last_error, sizeof(db->last_error), "%s", msg ? msg : "");
}

/* Map a server/client error number to what the caller should do. */
static enum db_rc
classify(unsigned no)
{
	switch (no) {
	case ER_LOCK_DEADLOCK:          /* 1213, also Galera certification */
	case ER_LOCK_WAIT_TIMEOUT:      /* 1205 */
	case ER_UNKNOWN_COM_ERROR:      /* 1047: Galera node not ready */
	case ER_CHECKREAD:              /* 1020: record changed since last read */
		return DB_RETRY;
	case ER_DUP_ENTRY:              /* 1062 */
		return DB_DUPKEY;
	case CR_SERVER_GONE_ERROR:      /* 2006 */
	case CR_SERVER_LOST:            /* 2013 */
	case CR_CONNECTION_ERROR:       /* 2002 */
	case CR_CONN_HOST_ERROR:        /* 2003 */
	case CR_SERVER_LOST_EXTENDED:   /* 2055 */
	case ER_CONNECTION_KILLED:      /* 1927 */
	case ER_SERVER_SHUTDOWN:        /* 1053 */
	case 4031:                      /* disconnected for inactivity */
		return DB_GONE;
	default:
		return DB_ERROR;
	}
}

/*
 * After a failure: a lost connection is closed; a Galera node that is not
 * ready (1047: not in the primary component, or still joining) is left
 * for the next host in the list, and the transaction retried there.
 */
static enum db_rc
after_fail(struct db *db, enum db_rc rc)
{
	if (rc == DB_GONE)
		db_disconnect(db);
	else if (db->last_errno == ER_UNKNOWN_COM_ERROR) {
		db_disconnect(db);
		db->cur = (db->cur + 1) % db->nhosts;
	}
	return rc;
}

static enum db_rc
conn_fail(struct db *db)
{
	set_error(db, mysql_errno(db->conn), mysql_error(db->conn));
	return after_fail(db, classify(db->last_errno));
}

/* Try one host; 0 on success. */
static int
connect_host(struct db *db, size_t hi)
{
	unsigned int  timeout_connect = 3, timeout_rw = 30;
	my_bool       off = 0;
	const char   *host = db->hosts[hi].host;
	const char   *init =
	    "SET SESSION tx_isolation = 'READ-COMMITTED',"
	    " SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION',"
	    " SESSION innodb_lock_wait_timeout = 10, SESSION time_zone = '+00:00',"
	    " SESSION autocommit = 0";

	if ((db->conn = mysql_init(NULL)) == NULL)
		return -1;
	mysql_optionsv(db->conn, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	mysql_optionsv(db->conn, MYSQL_OPT_CONNECT_TIMEOUT, &timeout_connect);
	mysql_optionsv(db->conn, MYSQL_OPT_READ_TIMEOUT, &timeout_rw);
	mysql_optionsv(db->conn, MYSQL_OPT_WRITE_TIMEOUT, &timeout_rw);
	mysql_optionsv(db->conn, MYSQL_OPT_RECONNECT, &off);
	mysql_optionsv(db->conn, MYSQL_INIT_COMMAND, init);
	if (mysql_real_connect(db->conn, host, db->user, db->pass, db->name,
	    db->hosts[hi].port, db->socket, CLIENT_FOUND_ROWS) == NULL) {
		set_error(db, mysql_errno(db->conn), mysql_error(db->conn));
		mysql_close(db->conn);
		db->conn = NULL;
		return -1;
	}
	/*
	 * On a Galera cluster, reads wait until this node has applied every
	 * write the cluster committed before them, so an event acknowledged
	 * by one node is visible through any other (GALERA.md: 13-24 % stale
	 * reads without it). Without wsrep this is a no-op; a server built
	 * without the variable refuses it, which is fine to ignore.
	 */
	if (mysql_query(db->conn, "SET SESSION wsrep_sync_wait = 1") != 0)
		(void)mysql_errno(db->conn);
	/*
	 * A read transaction a worker kept open (db_read_kept()) and could
	 * not end (its listening socket could not be made non-blocking, so
	 * it waits in accept(): see fcgi/main.c) is ended by the server
	 * after 10 idle seconds, with the connection; the next
	 * statement connects again. Bounds how long it can hold a metadata
	 * lock that a migration waits for. A server without the variable
	 * (before MariaDB 10.3) refuses it, which is fine to ignore.
	 */
	if (mysql_query(db->conn,
	    "SET SESSION idle_readonly_transaction_timeout = 10") != 0)
		(void)mysql_errno(db->conn);
	db->cluster = 0;
	if (mysql_query(db->conn, "SELECT @@wsrep_on") == 0) {
		MYSQL_RES *r = mysql_store_result(db->conn);
		MYSQL_ROW  row = r != NULL ? mysql_fetch_row(r) : NULL;
		db->cluster = row != NULL && row[0] != NULL && strcmp(row[0], "1") == 0;
		if (r != NULL)
			mysql_free_result(r);
	} else
		(void)mysql_errno(db->conn);   /* no wsrep in this server */
	return 0;
}

/* Read the answer of the ROLLBACK db_release() sent; a failure closes the
 * connection (the next statement connects again). */
static void
settle(struct db *db)
{
	if (!db->pending)
		return;
	db->pending = 0;
	if (db->conn != NULL && mysql_read_query_result(db->conn) != 0) {
		set_error(db, mysql_errno(db->conn), mysql_error(db->conn));
		db_disconnect(db);
	}
}

enum db_rc
db_connect(struct db *db)
{
	size_t i;

	settle(db);
	if (db->conn != NULL)
		return DB_OK;
	/* Start with the host that worked last, then the others in order. */
	for (i = 0; i < db->nhosts; i++) {
		size_t hi = (db->cur + i) % db->nhosts;
		if (connect_host(db, hi) == 0) {
			db->cur = hi;
			return DB_OK;
		}
	}
	/* Next time begin with the next host. */
	db->cur = (db->cur + 1) % db->nhosts;
	return DB_GONE;
}

void
db_res_free(struct db_res *r)
{
	if (r == NULL)
		return;
	free(r->data);
	free(r->cells);
	r->data = NULL;
	r->cells = NULL;
	r->nrows = r->ncols = 0;
}

int64_t
db_cell_i64(const struct db_cell *c)
{
	if (c == NULL || c->v == NULL)
		return 0;
	return strtoll(c->v, NULL, 10);
}

static MYSQL_STMT *
get_stmt(struct db *db, enum db_stmt st)
{
	MYSQL_STMT *s;
	my_bool     upd = 1;

	if (db->stmts[st] != NULL)
		return db->stmts[st];
	if ((s = mysql_stmt_init(db->conn)) == NULL)
		return NULL;
	if (mysql_stmt_prepare(s, stmt_sql[st], strlen(stmt_sql[st])) != 0) {
		set_error(db, mysql_stmt_errno(s), mysql_stmt_error(s));
		mysql_stmt_close(s);
		return NULL;
	}
	mysql_stmt_attr_set(s, STMT_ATTR_UPDATE_MAX_LENGTH, &upd);
	db->stmts[st] = s;
	return s;
}

/*
 * A statement failed. Unless the connection is gone, the statement is
 * reset: after a deadlock or lock-wait timeout met while its rows were
 * read, the next execute of the same prepared statement would otherwise
 * wait for the read timeout (30 s) and lose the connection (seen with
 * Connector/C 3.3).
 */
static enum db_rc
stmt_fail(struct db *db, MYSQL_STMT *s)
{
	enum db_rc rc;

	set_error(db, mysql_stmt_errno(s), mysql_stmt_error(s));
	rc = classify(db->last_errno);
	if (rc != DB_GONE)
		(void)mysql_stmt_reset(s);
	return after_fail(db, rc);
}

/* A statement that only reads: outside db_txn() it leaves an open
 * transaction for db_release() to end, where a write is committed at once
 * (see db_release()). */
static int
is_read(const char *sql)
{
	return strncmp(sql, "SELECT", 6) == 0 || strncmp(sql, "(SELECT", 7) == 0;
}

/*
 * After a statement: inside db_txn() the transaction has begun; outside,
 * a write is committed now, as autocommit would have done.
 */
static uint64_t mono_us(void);

static enum db_rc
after_stmt(struct db *db, const char *sql, enum db_rc rc)
{
	if (rc != DB_OK)
		return rc;
	if (db->in_txn)
		db->txn_fresh = 0;
	else if (is_read(sql)) {
		if (db->read_since == 0)
			db->read_since = mono_us();
	} else {
		db->read_since = 0;
		if (mysql_commit(db->conn) != 0)
			return conn_fail(db);
	}
	return DB_OK;
}

/* INSERT IGNORE turns a duplicate key into a warning and a row not
 * stored; any other warning (truncation, conversion) is an error. */
static int
is_insert_ignore(const char *sql)
{
	return strncmp(sql, "INSERT IGNORE", 13) == 0;
}

/* The buffer a result column is fetched into: its longest value and the
 * NUL (numbers: max_length may be 0). */
static size_t
col_size(const MYSQL_FIELD *f)
{
	size_t sz = (size_t)f->max_length + 1;

	return sz < 32 ? 32 : sz;
}

/*
 * Fetch every row of an executed statement into res, all columns as byte
 * strings (numbers in their decimal text). Uses mysql_stmt_store_result so
 * max_length tells the buffer size of each column.
 */
static enum db_rc
fetch_all(struct db *db, MYSQL_STMT *s, struct db_res *res)
{
	MYSQL_RES     *meta;
	MYSQL_FIELD   *f;
	MYSQL_BIND    *b = NULL;
	unsigned long *lens;
	my_bool       *nulls;
	char          *bufs, *col;
	size_t        *offs = NULL, ncols, nrows, i, r, bufsz = 0;
	char          *data = NULL;
	size_t         dlen = 0, dcap = 0;
	enum db_rc     rc = DB_ERROR;

	memset(res, 0, sizeof(*res));
	if ((meta = mysql_stmt_result_metadata(s)) == NULL)
		return DB_OK;
	if (mysql_stmt_store_result(s) != 0) {
		mysql_free_result(meta);
		return stmt_fail(db, s);
	}
	ncols = mysql_num_fields(meta);
	nrows = (size_t)mysql_stmt_num_rows(s);
	f = mysql_fetch_fields(meta);
	for (i = 0; i < ncols; i++)
		bufsz += col_size(&f[i]);
	/* one block: binds, lengths, null flags, the column buffers */
	b = calloc(1, (ncols + 1) * (sizeof(*b) + sizeof(*lens) + sizeof(*nulls)) +
	    bufsz);
	offs = malloc(((nrows && ncols) ? nrows * ncols : 1) * sizeof(*offs));
	res->cells = calloc((nrows && ncols) ? nrows * ncols : 1, sizeof(*res->cells));
	if (b == NULL || offs == NULL || res->cells == NULL)
		goto out;
	lens = (unsigned long *)(b + ncols + 1);
	nulls = (my_bool *)(lens + ncols + 1);
	bufs = (char *)(nulls + ncols + 1);
	res->ncols = ncols;
	for (i = 0, col = bufs; i < ncols; col += col_size(&f[i]), i++) {
		b[i].buffer_type = MYSQL_TYPE_STRING;
		b[i].buffer = col;
		b[i].buffer_length = col_size(&f[i]);
		b[i].length = &lens[i];
		b[i].is_null = &nulls[i];
	}
	if (mysql_stmt_bind_result(s, b) != 0) {
		rc = stmt_fail(db, s);
		goto out;
	}
	/* the values go into one growing block: offsets first, pointers
	 * once it no longer moves */
	for (r = 0; r < nrows; r++) {
		int fr = mysql_stmt_fetch(s);
		if (fr == 1) {
			rc = stmt_fail(db, s);
			goto out;
		}
		if (fr == MYSQL_NO_DATA)
			break;
		for (i = 0; i < ncols; i++) {
			size_t k = r * ncols + i;
			if (nulls[i]) {
				offs[k] = SIZE_MAX;
				continue;
			}
			if (lens[i] >= b[i].buffer_length) {
				/* cannot happen with max_length; refuse rather than truncate */
				set_error(db, 0, "column longer than max_length");
				goto out;
			}
			if (dlen + lens[i] + 1 > dcap) {
				size_t ncap = dcap ? dcap : 256;
				char  *nd;
				while (ncap < dlen + lens[i] + 1)
					ncap *= 2;
				if ((nd = realloc(data, ncap)) == NULL)
					goto out;
				data = nd;
				dcap = ncap;
			}
			offs[k] = dlen;
			memcpy(data + dlen, b[i].buffer, lens[i]);
			data[dlen + lens[i]] = '\0';     /* each value NUL-terminated */
			dlen += lens[i] + 1;
			res->cells[k].len = lens[i];
		}
		res->nrows++;
	}
	for (i = 0; i < res->nrows * ncols; i++)
		res->cells[i].v = offs[i] == SIZE_MAX ? NULL : data + offs[i];
	res->data = data;
	data = NULL;
	rc = DB_OK;
out:
	free(data);
	free(offs);
	free(b);
	mysql_stmt_free_result(s);
	mysql_free_result(meta);
	if (rc != DB_OK)
		db_res_free(res);
	return rc;
}

static enum db_rc exec_once(struct db *, enum db_stmt, const struct db_param *,
    size_t, struct db_res *, uint64_t *, uint64_t *);

/*
 * Outside a transaction a connection found dead (server restarted, idle
 * timeout, failover) is replaced and the statement run once more; inside
 * one the transaction is lost and db_txn() decides.
 */
static uint64_t
mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t
db_take_elapsed_us(struct db *db)
{
	uint64_t v;

	if (db == NULL)
		return 0;
	v = db->elapsed_us;
	db->elapsed_us = 0;
	return v;
}

enum db_rc
db_exec(struct db *db, enum db_stmt st, const struct db_param *p, size_t np,
    struct db_res *res, uint64_t *affected, uint64_t *insert_id)
{
	uint64_t   t0 = mono_us();
	enum db_rc rc = exec_once(db, st, p, np, res, affected, insert_id);

	/* a stale connection before anything of a transaction ran */
	if (rc == DB_GONE && (!db->in_txn || db->txn_fresh))
		rc = exec_once(db, st, p, np, res, affected, insert_id);
	rc = after_stmt(db, stmt_sql[st], rc);
	db->elapsed_us += mono_us() - t0;
	return rc;
}

/*
 * Bind p[0..np) to s and execute it. The bind arrays live on the stack for
 * the usual handful of parameters and on the heap for multi statements.
 */
static enum db_rc
bind_execute(struct db *db, MYSQL_STMT *s, const struct db_param *p, size_t np)
{
	MYSQL_BIND     sb[16], *b = sb;
	unsigned long  slens[16], *lens = slens;
	my_bool        snull[16], *isnull = snull;
	size_t         i;
	enum db_rc     rc = DB_OK;

	if (mysql_stmt_param_count(s) != np) {
		set_error(db, 0, "parameter count mismatch");
		return DB_ERROR;
	}
	if (np > sizeof(sb) / sizeof(sb[0])) {
		b = calloc(np, sizeof(*b));
		lens = calloc(np, sizeof(*lens));
		isnull = calloc(np, sizeof(*isnull));
		if (b == NULL || lens == NULL || isnull == NULL) {
			set_error(db, 0, "out of memory");
			rc = DB_ERROR;
			goto out;
		}
	} else
		memset(sb, 0, sizeof(sb));
	for (i = 0; i < np; i++) {
		isnull[i] = 0;
		b[i].is_null = &isnull[i];
		switch (p[i].type) {
		case DB_P_STR:
			b[i].buffer_type = MYSQL_TYPE_BLOB;
			b[i].buffer = (void *)(uintptr_t)p[i].s;
			lens[i] = (unsigned long)p[i].len;
			b[i].buffer_length = lens[i];
			b[i].length = &lens[i];
			break;
		case DB_P_I64:
			b[i].buffer_type = MYSQL_TYPE_LONGLONG;
			b[i].buffer = (void *)(uintptr_t)&p[i].i;
			break;
		default:
			b[i].buffer_type = MYSQL_TYPE_NULL;
			isnull[i] = 1;
			break;
		}
	}
	if (np > 0 && mysql_stmt_bind_param(s, b) != 0)
		rc = stmt_fail(db, s);
	else if (mysql_stmt_execute(s) != 0)
		rc = stmt_fail(db, s);
out:
	if (b != sb) {
		free(b);
		free(lens);
		free(isnull);
	}
	return rc;
}

static enum db_rc
exec_once(struct db *db, enum db_stmt st, const struct db_param *p, size_t np,
    struct db_res *res, uint64_t *affected, uint64_t *insert_id)
{
	MYSQL_STMT    *s;
	enum db_rc     rc;

	if (res != NULL)
		memset(res, 0, sizeof(*res));
	if ((rc = db_connect(db)) != DB_OK)
		return rc;
	set_error(db, 0, "");
	if ((s = get_stmt(db, st)) == NULL) {
		if (db->last_errno == 0)
			set_error(db, mysql_errno(db->conn), mysql_error(db->conn));
		return after_fail(db, classify(db->last_errno));
	}
	if ((rc = bind_execute(db, s, p, np)) != DB_OK)
		return rc;
	if (affected != NULL)
		*affected = (uint64_t)mysql_stmt_affected_rows(s);
	if (insert_id != NULL)
		*insert_id = (uint64_t)mysql_stmt_insert_id(s);
	if (is_insert_ignore(stmt_sql[st]) && mysql_stmt_affected_rows(s) > 0 &&
	    mysql_warning_count(db->conn) > 0) {
		set_error(db, 0, "INSERT IGNORE stored a row with warnings");
		return DB_ERROR;
	}
	if (res != NULL)
		return fetch_all(db, s, res);
	/* Drain a result set nobody asked for. */
	mysql_stmt_free_result(s);
	return DB_OK;
}

/* ---- multi statements ---- */

/* What each template's text says, read once (the longest template has
 * 1100 characters: counting on every execution was 4 % of a request):
 * its number of groups, whether it ends the transaction with its own
 * COMMIT (its text ends with SQL_COMMITS_SUFFIX, db/sql.h), and whether
 * its lists are sent padded (db_sql_pads()). */
struct multi_info {
	size_t groups;
	int    commits;
	int    pads;
};

static const struct multi_info *
multi_info(enum db_multi m)
{
	static struct multi_info info[DB_M__MAX];
	static int               done;
	size_t                   i, n, k = strlen(SQL_COMMITS_SUFFIX);

	if (!done) {
		for (i = 0; i < DB_M__MAX; i++) {
			n = strlen(multi_sql[i]);
			info[i].groups = db_sql_groups(multi_sql[i]);
			info[i].commits = n >= k &&
			    strcmp(multi_sql[i] + n - k, SQL_COMMITS_SUFFIX) == 0;
			info[i].pads = db_sql_pads(multi_sql[i]);
		}
		done = 1;
	}
	return &info[m];
}

/* Is every list length of m at most DB_MULTI_MAX_ROWS? (0 is refused by
 * db_sql_expand() but for a part left out.) */
static int
counts_ok(enum db_multi m, const size_t *counts)
{
	size_t i, ng = multi_info(m)->groups;

	for (i = 0; i < ng; i++)
		if (counts[i] > DB_MULTI_MAX_ROWS)
			return 0;
	return 1;
}

const char *
db_multi_template(enum db_multi m)
{
	return (unsigned)m < DB_M__MAX ? multi_sql[m] : NULL;
}

char *
db_multi_text(enum db_multi m, const size_t *counts, size_t *nparams)
{
	if ((unsigned)m >= DB_M__MAX || !counts_ok(m, counts))
		return NULL;
	return db_sql_expand(multi_sql[m], counts, nparams);
}

/* The prepared statement of m with these counts, from the cache or new. */
static MYSQL_STMT *
get_mstmt(struct db *db, enum db_multi m, const size_t *counts, size_t ng,
    size_t *nparams)
{
	struct db_mstmt *slot = &db->mstmts[0];
	MYSQL_STMT      *s;
	char            *sql;
	size_t           i;
	my_bool          upd = 1;

	for (i = 0; i < DB_MCACHE; i++) {
		struct db_mstmt *e = &db->mstmts[i];
		if (e->s != NULL && e->m == m &&
		    memcmp(e->counts, counts, ng * sizeof(*counts)) == 0) {
			e->used = ++db->mclock;
			*nparams = mysql_stmt_param_count(e->s);
			return e->s;
		}
		if (e->s == NULL || (slot->s != NULL && e->used < slot->used))
			slot = e;
	}
	if ((sql = db_sql_expand(multi_sql[m], counts, nparams)) == NULL) {
		set_error(db, 0, "a list length of 0 or out of memory");
		return NULL;
	}
	if ((s = mysql_stmt_init(db->conn)) == NULL) {
		free(sql);
		return NULL;
	}
	if (mysql_stmt_prepare(s, sql, strlen(sql)) != 0) {
		set_error(db, mysql_stmt_errno(s), mysql_stmt_error(s));
		mysql_stmt_close(s);
		free(sql);
		return NULL;
	}
	free(sql);
	mysql_stmt_attr_set(s, STMT_ATTR_UPDATE_MAX_LENGTH, &upd);
	if (slot->s != NULL)
		mysql_stmt_close(slot->s);
	memset(slot, 0, sizeof(*slot));
	slot->s = s;
	slot->m = m;
	memcpy(slot->counts, counts, ng * sizeof(*counts));
	slot->used = ++db->mclock;
	return s;
}

/*
 * After an INSERT IGNORE of n rows sent as sent rows (n, then padded
 * repeats of the last), stored of them stored: is that what the caller
 * may see? Each row not stored is one duplicate-key warning: the repeats
 * always, and a row of the n only where the statement returns the stored
 * rows (returns: events, whose keys may be claimed meanwhile; elsewhere
 * every row must be stored). A warning more means a row was stored
 * truncated or converted.
 */
static int
ignored_ok(struct db *db, uint64_t stored, size_t n, size_t sent, int returns)
{
	if (stored > n || (!returns && stored != n)) {
		set_error(db, 0, "INSERT IGNORE left out a row it had to store");
		return 0;
	}
	if (mysql_warning_count(db->conn) > sent - stored) {
		set_error(db, 0, "INSERT IGNORE stored a row with warnings");
		return 0;
	}
	return 1;
}

static enum db_rc
multi_once(struct db *db, enum db_multi m, const size_t *counts, size_t ng,
    const struct db_param *p, size_t np, struct db_res *res, uint64_t *affected)
{
	MYSQL_STMT   *s;
	enum db_rc    rc;
	uint64_t      stored;
	size_t        want, to[DB_MULTI_GROUPS];
	/* the lengths it is sent with: counts, or padded ones in to */
	const size_t *shape = multi_info(m)->pads &&
	    db_sql_pad_counts(counts, ng, DB_MULTI_MAX_ROWS, to) ? to : counts;

	if (res != NULL)
		memset(res, 0, sizeof(*res));
	if ((rc = db_connect(db)) != DB_OK)
		return rc;
	set_error(db, 0, "");
	if ((s = get_mstmt(db, m, shape, ng, &want)) == NULL) {
		if (db->last_errno == 0)
			set_error(db, mysql_errno(db->conn), mysql_error(db->conn));
		return after_fail(db, classify(db->last_errno));
	}
	if (shape != counts) {
		if (want > db->padcap) {
			free(db->pad);
			db->padcap = 0;
			if ((db->pad = malloc(want * sizeof(*db->pad))) == NULL) {
				set_error(db, 0, "out of memory");
				return DB_ERROR;
			}
			db->padcap = want;
		}
		if (db_sql_pad_params(multi_sql[m], counts, shape, p, np, db->pad,
		    sizeof(*p)) != want) {
			set_error(db, 0, "parameter count mismatch");
			return DB_ERROR;
		}
		p = db->pad;
		np = want;
	}
	if (want != np) {
		set_error(db, 0, "parameter count mismatch");
		return DB_ERROR;
	}
	if ((rc = bind_execute(db, s, p, np)) != DB_OK)
		return rc;
	stored = (uint64_t)mysql_stmt_affected_rows(s);
	if (affected != NULL)
		*affected = stored;
	if (res != NULL)
		rc = fetch_all(db, s, res);
	else
		mysql_stmt_free_result(s);
	if (rc == DB_OK && is_insert_ignore(multi_sql[m]) && !ignored_ok(db,
	    res != NULL ? res->nrows : stored, counts[0], shape[0], res != NULL)) {
		if (res != NULL)
			db_res_free(res);
		return DB_ERROR;
	}
	return rc;
}

enum db_rc
db_exec_multi(struct db *db, enum db_multi m, const size_t *counts,
    const struct db_param *p, size_t np, struct db_res *res, uint64_t *affected)
{
	uint64_t   t0 = mono_us();
	size_t     ng = multi_info(m)->groups;
	enum db_rc rc;

	if (!counts_ok(m, counts)) {
		set_error(db, 0, "multi statement list length out of range");
		return DB_ERROR;
	}
	rc = multi_once(db, m, counts, ng, p, np, res, affected);
	if (rc == DB_GONE && (!db->in_txn || db->txn_fresh))
		rc = multi_once(db, m, counts, ng, p, np, res, affected);
	if ((rc = after_stmt(db, multi_sql[m], rc)) != DB_OK && res != NULL)
		db_res_free(res);
	if (rc == DB_OK && db->in_txn && multi_info(m)->commits)
		db->txn_done = 1;
	db->elapsed_us += mono_us() - t0;
	return rc;
}

void
db_trim(struct db *db)
{
	size_t i;

	if (db == NULL)
		return;
	settle(db);
	free(db->pad);
	db->pad = NULL;
	db->padcap = 0;
	for (i = 0; i < DB_MCACHE; i++)
		if (db->mstmts[i].s != NULL &&
		    mysql_stmt_param_count(db->mstmts[i].s) > DB_TRIM_PARAMS) {
			mysql_stmt_close(db->mstmts[i].s);
			memset(&db->mstmts[i], 0, sizeof(db->mstmts[i]));
		}
}

uint64_t
db_instance(struct db *db, uint64_t *max_event)
{
	struct db_res r;
	uint64_t      h = 0xcbf29ce484222325u, now = mono_us();
	size_t        i;

	*max_event = 0;
	if (db->instance != 0 && db->conn != NULL &&
	    now - db->instance_at < DB_INSTANCE_MAX_AGE_US)
		return db->instance;
	db->instance = 0;
	if (db_exec(db, DB_INSTANCE_OF, NULL, 0, &r, NULL, NULL) != DB_OK)
		return 0;
	if (r.nrows == 1 && r.ncols == 2 && DB_CELL(&r, 0, 0)->v != NULL &&
	    DB_CELL(&r, 0, 1)->v != NULL) {
		for (i = 0; i < DB_CELL(&r, 0, 0)->len; i++)
			h = (h ^ (unsigned char)DB_CELL(&r, 0, 0)->v[i]) * 0x100000001b3u;
		db->instance = h != 0 ? h : 1;
		db->instance_at = now;
		*max_event = strtoull(DB_CELL(&r, 0, 1)->v, NULL, 10);
	}
	db_res_free(&r);
	return db->instance;
}

int
db_is_cluster(const struct db *db)
{
	return db->cluster;
}

static enum db_rc simple_once(struct db *, const char *);

enum db_rc
db_simple(struct db *db, const char *sql)
{
	uint64_t   t0 = mono_us();
	enum db_rc rc = after_stmt(db, sql, simple_once(db, sql));

	db->elapsed_us += mono_us() - t0;
	return rc;
}

/*
 * The ROLLBACK is sent without waiting for its answer, which settle()
 * reads before the next statement: the worker goes back to accepting
 * requests at once (a duplicate answered by one read then costs it one
 * round trip, not two).
 */
void
db_release(struct db *db)
{
	unsigned int status = 0;

	if (db == NULL || db->in_txn)
		return;
	settle(db);
	if (db->conn == NULL)
		return;
	db->read_since = 0;
	if (mariadb_get_infov(db->conn, MARIADB_CONNECTION_SERVER_STATUS,
	    &status) == 0 && (status & SERVER_STATUS_IN_TRANS) == 0)
		return;
	if (mysql_send_query(db->conn, "ROLLBACK", 8) == 0)
		db->pending = 1;
	else
		(void)conn_fail(db);
}

int
db_read_kept(struct db *db, uint64_t max_age_us)
{
	if (db == NULL || db->in_txn || db->conn == NULL || db->read_since == 0)
		return 0;
	/* Galera waits for the cluster's writes (wsrep_sync_wait) only at a
	 * transaction's first read: a kept one would let the next request
	 * read past a write acknowledged by another node (seen by the
	 * cluster suite: 1 read of 60 after a write went stale) */
	if (!db->cluster && mono_us() - db->read_since < max_age_us)
		return 1;
	db_release(db);
	return 0;
}

static enum db_rc
simple_once(struct db *db, const char *sql)
{
	enum db_rc rc;
	MYSQL_RES *r;
	int        fresh = db->conn == NULL;

	if ((rc = db_connect(db)) != DB_OK)
		return rc;
	if (mysql_real_query(db->conn, sql, strlen(sql)) != 0) {
		/* a stale connection at the start of a transaction or outside
		 * one: reconnect and send it again once */
		if ((rc = conn_fail(db)) != DB_GONE || fresh ||
		    (db->in_txn && !db->txn_fresh))
			return rc;
		if ((rc = db_connect(db)) != DB_OK)
			return rc;
		if (mysql_real_query(db->conn, sql, strlen(sql)) != 0)
			return conn_fail(db);
	}
	if ((r = mysql_store_result(db->conn)) != NULL)
		mysql_free_result(r);
	return DB_OK;
}

/* Sleep a short, randomised, growing time before a retry. */
static void
backoff(unsigned attempt)
{
	struct timespec ts;
	long ms = (long)(1u << (attempt < 6 ? attempt : 6));

	ms += rand() % (ms + 1);
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	nanosleep(&ts, NULL);
}

enum db_rc
db_txn(struct db *db, enum db_rc (*fn)(struct db *, void *), void *arg,
    unsigned *retries)
{
	unsigned   attempt, reconnects = 0;
	enum db_rc rc = DB_ERROR;

	if (retries != NULL)
		*retries = 0;
	for (attempt = 0; attempt < DB_MAX_ATTEMPTS; attempt++) {
		if (attempt > 0) {
			if (retries != NULL)
				(*retries)++;
			backoff(attempt);
		}
		/* the connection runs with autocommit off: the transaction
		 * begins with fn's first statement (or continued the reads
		 * made just before), which saves a round trip per request */
		db->in_txn = 1;
		db->txn_fresh = 1;
		db->txn_done = 0;
		if ((rc = db_connect(db)) == DB_OK)
			rc = fn(db, arg);
		if (db->txn_done) {
			/* committed by fn's last statement: nothing to
			 * commit, roll back or run again */
			db->in_txn = 0;
			db->read_since = 0;
			return rc;
		}
		if (rc == DB_OK) {
			uint64_t t0 = mono_us();
			int      bad = mysql_commit(db->conn) != 0;
			db->elapsed_us += mono_us() - t0;
			if (bad)
				rc = conn_fail(db);
			else {
				db->in_txn = 0;
				db->read_since = 0;
				return DB_OK;
			}
		}
		if (db->conn != NULL)
			mysql_rollback(db->conn);
		db->in_txn = 0;
		db->read_since = 0;
		if (rc == DB_ROLLBACK)
			return rc;
		if (rc == DB_RETRY || rc == DB_DUPKEY)
			continue;
		if (rc == DB_GONE) {
			/* reconnect (maybe to another node) once, then give up */
			if (reconnects++ > 0)
				return DB_GONE;
			db_disconnect(db);
			continue;
		}
		return rc;
	}
	return rc == DB_DUPKEY ? DB_RETRY : rc;
}

const char *
db_last_error(const struct db *db)
{
	return db->last_error;
}

unsigned
db_last_errno(const struct db *db)
{
	return db->last_errno;
}

/* ---- migrations ---- */

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Split a migration file into statements on ';' at the end of a line,
 * skipping "--" comment lines, and run each. Returns DB_OK or the failure.
 */
static enum db_rc
run_sql_file(struct db *db, const char *text)
{
	char       *buf, *line, *save = NULL, *stmt;
	size_t      cap = strlen(text) + 1, used = 0;
	enum db_rc  rc = DB_OK;

	if ((buf = strdup(text)) == NULL || (stmt = malloc(cap)) == NULL) {
		free(buf);
		return DB_ERROR;
	}
	stmt[0] = '\0';
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		char  *t = line;
		size_t n;
		while (*t == ' ' || *t == '\t')
			t++;
		if (strncmp(t, "--", 2) == 0 || *t == '\0')
			continue;
		n = strlen(line);
		memcpy(stmt + used, line, n);
		used += n;
		stmt[used++] = '\n';
		stmt[used] = '\0';
		while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\r'))
			n--;
		if (n > 0 && line[n - 1] == ';') {
			if ((rc = db_simple(db, stmt)) != DB_OK)
				break;
			used = 0;
			stmt[0] = '\0';
		}
	}
	if (rc == DB_OK && used > 0)
		rc = db_simple(db, stmt);
	free(stmt);
	free(buf);
	return rc;
}

int
db_migrate(struct db *db, const char *dir)
{
	DIR           *d;
	struct dirent *de;
	char         **names = NULL, *text = NULL;
	size_t         n = 0, cap = 0, i;
	int            ret = -1;

	if (db_connect(db) != DB_OK) {
		fprintf(stderr, "rfevents: cannot connect to the database: %s\n",
		    db->last_error);
		return -1;
	}
	if (db_simple(db, "CREATE TABLE IF NOT EXISTS schema_migrations ("
	    " version VARCHAR(255) NOT NULL PRIMARY KEY,"
	    " applied_at DATETIME(6) NOT NULL) ENGINE=InnoDB") != DB_OK) {
		fprintf(stderr, "rfevents: %s\n", db->last_error);
		return -1;
	}
	if ((d = opendir(dir)) == NULL) {
		fprintf(stderr, "rfevents: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (len < 5 || !isdigit((unsigned char)de->d_name[0]) ||
		    strcmp(de->d_name + len - 4, ".sql") != 0)
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof(*nn));
			if (nn == NULL)
				goto out;
			names = nn;
		}
		if ((names[n] = strdup(de->d_name)) == NULL)
			goto out;
		n++;
	}
	qsort(names, n, sizeof(*names), cmp_str);
	for (i = 0; i < n; i++) {
		struct db_param p = DBP_CSTR(names[i]);
		struct db_res   r;
		char            path[4096];
		FILE           *f;
		long            sz;

		if (db_exec(db, DB_MIGRATION_DONE, &p, 1, &r, NULL, NULL) != DB_OK) {
			fprintf(stderr, "rfevents: %s\n", db->last_error);
			goto out;
		}
		sz = (long)r.nrows;
		db_res_free(&r);
		if (sz > 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if ((f = fopen(path, "rb")) == NULL) {
			fprintf(stderr, "rfevents: %s: %s\n", path, strerror(errno));
			goto out;
		}
		fseek(f, 0, SEEK_END);
		sz = ftell(f);
		fseek(f, 0, SEEK_SET);
		if (sz < 0 || (text = malloc((size_t)sz + 1)) == NULL ||
		    fread(text, 1, (size_t)sz, f) != (size_t)sz) {
			fclose(f);
			fprintf(stderr, "rfevents: %s: read error\n", path);
			goto out;
		}
		fclose(f);
		text[sz] = '\0';
		if (run_sql_file(db, text) != DB_OK ||
		    db_exec(db, DB_MIGRATION_INSERT, &p, 1, NULL, NULL, NULL) != DB_OK) {
			fprintf(stderr, "rfevents: %s: %s\n", names[i], db->last_error);
			goto out;
		}
		free(text);
		text = NULL;
		printf("applied %s\n", names[i]);
	}
	ret = 0;
out:
	/* frees: file names, directory handle, file text */
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(text);
	closedir(d);
	return ret;
}
