/*
 * db/ — MariaDB access: the connection from RFEVENTS_DB, one enum-indexed
 * table of prepared statements, transactions retried on deadlock and lock
 * wait, reconnect, migrations. Knows nothing of JSON requests or HTTP.
 * Public names carry the db_ prefix.
 */
#ifndef DB_H
#define DB_H

#include <stddef.h>
#include <stdint.h>

struct db; /* opaque: connection + prepared statements */

/* Every statement the application runs. SQL text in db.c, same order. */
enum db_stmt {
	DB_KEY_BY_PREFIX,
	DB_KEY_INSERT,
	DB_KEY_LIST,
	DB_KEY_REVOKE,
	DB_TENANT_INSERT,
	DB_TENANT_BY_SLUG,
	DB_EVENT_OUTCOME,
	DB_EVENT_BY_PUBLIC_ID,
	DB_IDENT_OF_PROFILE,
	DB_PROFILE_BY_ID,
	DB_PROFILE_BY_PUBLIC_ID,
	DB_IDENT_LOOKUP,
	DB_BALANCES_OF,
	DB_VARS_OF,
	DB_PROFILE_EVENTS,
	DB_LEDGER_OF,
	DB_COUNTERS_OF,
	DB_PING_QUERY,
	DB_MIGRATION_DONE,
	DB_MIGRATION_INSERT,
	DB_INSTANCE_OF,
	DB_STMT__MAX
};

/* A parameter: string (pointer + length), 64-bit integer, or NULL. */
enum db_ptype { DB_P_STR, DB_P_I64, DB_P_NULL, DB_P__MAX };
struct db_param {
	enum db_ptype  type;
	const char    *s;
	size_t         len;
	int64_t        i;
};
#define DBP_STR(p, l) ((struct db_param){ DB_P_STR, (p), (l), 0 })
#define DBP_CSTR(p)   ((struct db_param){ DB_P_STR, (p), strlen(p), 0 })
#define DBP_I64(v)    ((struct db_param){ DB_P_I64, NULL, 0, (v) })
#define DBP_NULL      ((struct db_param){ DB_P_NULL, NULL, 0, 0 })

/* A materialised result: nrows × ncols cells, each NUL-terminated bytes
 * with a length, or NULL (v == NULL). Free with db_res_free(). */
struct db_cell { char *v; size_t len; };
struct db_res {
	size_t          nrows, ncols;
	struct db_cell *cells;
	char           *data;          /* the values, one block */
};
#define DB_CELL(r, row, col) (&(r)->cells[(row) * (r)->ncols + (col)])
void    db_res_free(struct db_res *r);
int64_t db_cell_i64(const struct db_cell *c);  /* 0 for NULL */

/* Outcome of a database call. */
enum db_rc {
	DB_OK,
	DB_RETRY,      /* deadlock, lock wait, node not ready, duplicate race:
	                  roll back and run the whole transaction again */
	DB_GONE,       /* connection lost or cannot connect */
	DB_DUPKEY,     /* 1062 on a plain INSERT */
	DB_ERROR,      /* anything else: a bug or bad data */
	DB_ROLLBACK,   /* returned by a transaction body: roll back, do not
	                  retry (the answer is already decided) */
	DB_RC__MAX
};

/*
 * Open a connection from a URL: mariadb://user[:pass]@host[:port][,host2[:port]...]/db
 * [?socket=/path]. Returns NULL on a bad URL (message in err). Connects
 * lazily: the first db_* call connects. Caller frees with db_close().
 */
struct db *db_open(const char *url, char *err, size_t errsz);
void       db_close(struct db *db);

/* Connect now if not connected. DB_OK or DB_GONE. */
enum db_rc db_connect(struct db *db);

/*
 * Run a prepared statement with parameters. When res is not NULL the result
 * set is materialised into *res (caller frees with db_res_free()).
 * *affected (may be NULL) gets the affected rows; *insert_id (may be NULL)
 * the auto-increment id. Warnings other than a duplicate key on an
 * INSERT IGNORE are errors (DB_ERROR).
 */
enum db_rc db_exec(struct db *db, enum db_stmt st, const struct db_param *p,
    size_t np, struct db_res *res, uint64_t *affected, uint64_t *insert_id);

/*
 * The connection runs with autocommit off. Outside db_txn() a statement
 * that writes is committed at once; reads leave a transaction open (no
 * locks: READ COMMITTED), which the next db_txn() continues, or
 * db_release() ends. Call db_release() before a connection goes idle (the
 * end of a request), so that no transaction holds metadata locks while
 * nothing happens.
 */
void db_release(struct db *db);

/*
 * A 64-bit name of the database the connection reads, never 0: a hash of
 * when its schema was created (the first row of schema_migrations), so a
 * database dropped and created again under the same URL gets another
 * name, while the nodes of a Galera cluster keep theirs. Read at most
 * every DB_INSTANCE_MAX_AGE_US per connection (a read outside db_txn():
 * see db_release()), with the highest events.id: *max_event gets it plus
 * one when it was read now, else 0 (a restored backup or deleted events
 * show as a highest id lower than before). 0 when it cannot be read.
 */
#define DB_INSTANCE_MAX_AGE_US 10000000u
uint64_t db_instance(struct db *db, uint64_t *max_event);

/*
 * After a request that read outside db_txn(): 1 when its transaction is
 * younger than max_age_us and is kept open, so that the next request
 * continues it instead of paying a ROLLBACK (the duplicate path is one
 * round trip, not two); the caller then calls db_release() as soon as no
 * request follows at once. An older one is ended now (db_release()), and
 * 0: a worker that only ever reads, under load, still ends its
 * transaction every max_age_us, so a migration waits for no more. On a
 * Galera cluster nothing is kept: its causal reads (wsrep_sync_wait) wait
 * only at a transaction's first statement.
 */
int db_read_kept(struct db *db, uint64_t max_age_us);

/*
 * Run fn(db, arg) inside a transaction: fn, COMMIT (no BEGIN: fn's first
 * statement begins it; a statement of fn may end it with its own COMMIT,
 * DB_M_WRITE_ONE, which must then be fn's last: db_txn() sends no COMMIT,
 * and rolls back or runs nothing again after it). When fn or COMMIT
 * returns DB_RETRY the transaction is rolled back and run again (at most
 * DB_MAX_ATTEMPTS times, with a short randomised backoff); DB_GONE
 * reconnects and runs it again once. fn must not cause effects outside the
 * transaction that a second run would duplicate. Returns the last rc;
 * *retries (may be NULL) counts the extra attempts.
 */
#define DB_MAX_ATTEMPTS 8
enum db_rc db_txn(struct db *db, enum db_rc (*fn)(struct db *, void *), void *arg,
    unsigned *retries);

/*
 * Statements whose lists have a length known only at run time: IN lists
 * and multi-row VALUES, so that a batch of events costs a handful of round
 * trips instead of several per event. The templates are in db.c
 * (multi_sql[]); each `{` group `}` is repeated counts[k] times (k-th group
 * of the template). The statement is prepared once per connection and shape
 * (list lengths) and kept in a small cache.
 */
enum db_multi {
	DB_M_EVENT_KEYS,       /* events by dedup key */
	DB_M_IDENT_LOCK,       /* identities + their profiles, locked */
	DB_M_STATE_OF,         /* balances, variables, counters of profiles */
	DB_M_IDENT_STATE_LOCK, /* both in one round trip, and keys */
	DB_M_PROFILE_INSERT,   /* new profiles, RETURNING id, public_id */
	DB_M_IDENT_INSERT,     /* new identity bindings */
	DB_M_EVENT_INSERT,     /* INSERT IGNORE events, RETURNING id, public_id */
	DB_M_LEDGER_INSERT,
	DB_M_BALANCE_UPSERT,
	DB_M_VAR_UPSERT,
	DB_M_COUNTER_ADD,
	DB_M_PROFILE_TOUCH,    /* tier + updated_at of profiles */
	DB_M_WRITE_ONE,        /* one event's writes and COMMIT (db/sql.h) */
	DB_M__MAX
};
#define DB_MULTI_GROUPS   6      /* list groups per template, at most */
#define DB_MULTI_MAX_ROWS 1000   /* rows or list values per statement */

/*
 * Run multi statement m with counts[0..] list lengths (each 1 to
 * DB_MULTI_MAX_ROWS) and p[0..np) parameters in template order. res,
 * affected: as db_exec(). On an INSERT IGNORE ... RETURNING, a row not
 * returned was a duplicate key (the caller compares counts); a warning
 * beyond those is an error (DB_ERROR). The lists of the reads and of the
 * upserts that set values (not DB_M_COUNTER_ADD, no INSERT) are sent
 * padded (db_sql_padded(), db/sql.h): their results are the same, but
 * affected counts the repeated rows too.
 */
enum db_rc db_exec_multi(struct db *db, enum db_multi m, const size_t *counts,
    const struct db_param *p, size_t np, struct db_res *res, uint64_t *affected);

/* The template of multi statement m (db/sql.h), NULL for none. */
const char *db_multi_template(enum db_multi m);

/* The SQL text of multi statement m with these list lengths (a new string,
 * caller frees) and its number of placeholders; NULL when a length is out
 * of range. For tests and diagnostics. */
char *db_multi_text(enum db_multi m, const size_t *counts, size_t *nparams);

/*
 * Close the cached multi statements with more than DB_TRIM_PARAMS
 * parameters: the client library keeps a bind structure per parameter, a
 * few megabytes after a large batch. Called after such a request, so a
 * long-lived worker goes back to its usual size; the next large batch
 * prepares them again (one round trip each).
 */
#define DB_TRIM_PARAMS 64
void db_trim(struct db *db);

/* 1 when the server is a Galera cluster node (wsrep_on), known after the
 * first statement of a connection; 0 otherwise. */
int db_is_cluster(const struct db *db);

/* Plain SQL without parameters (migrations, BEGIN, ...). */
enum db_rc db_simple(struct db *db, const char *sql);

/* Apply db/migrations/NNN_*.sql from dir that are not yet recorded.
 * Prints applied names to stdout. Returns 0 or -1 (message on stderr). */
int db_migrate(struct db *db, const char *dir);

/* Microseconds spent waiting for the database since the last call. */
uint64_t db_take_elapsed_us(struct db *db);

/* The last server error, for logs (never contains parameters). */
const char *db_last_error(const struct db *db);
unsigned    db_last_errno(const struct db *db);

#endif /* DB_H */
