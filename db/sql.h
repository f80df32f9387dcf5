/*
 * db/sql.h — the SQL text of the statements whose lists have a run-time
 * length (enum db_multi, db_exec_multi()). A header of its own because
 * tests/bench/ceiling.c compiles the same text: the ceiling runs the
 * service's SQL by construction.
 *
 * Templates: a group `{S...}` is repeated as many times as its count,
 * joined by S: ',' gives ", ", '|' gives " OR ", '.' nothing. A part in
 * `[...]` (not nested, with at least one group) is left out, with its
 * placeholders, when the count of its first group is 0; its groups then
 * take any count. Lists of keys
 * are row constructors, `(a, b) IN ((?, ?), ...)`: the server searches them
 * in a sorted array, where an OR of 1000 conditions costs 1000 comparisons
 * for every row read (5x slower for a 1000-event batch). Identities are
 * read with STRAIGHT_JOIN so that the rows are locked in the order of the
 * identities' primary key: every transaction takes its profile locks in one
 * global order.
 */
#ifndef DB_SQL_H
#define DB_SQL_H

#include <stddef.h>

/* The number of list groups `{...}` of template t. */
size_t db_sql_groups(const char *t);

/* Template t with group k repeated counts[k] times (one count per group,
 * none 0 but in a part left out): a new string, caller frees; *nparams
 * (may be NULL) gets its number of placeholders. NULL when out of memory,
 * a count is 0, or t is malformed (a group without its `}`, an unknown
 * separator, a `[` without `]` or group, nested `[`). */
char *db_sql_expand(const char *t, const size_t *counts, size_t *nparams);

/*
 * Padding, for the templates whose lists may repeat an entry without
 * changing what the statement does (an IN list; an upsert that sets
 * values, not one that adds; an INSERT IGNORE whose repeated row hits a
 * unique key): a list of n is sent as db_sql_padded(n, max) entries, the
 * last one repeated. Lengths up to 16 are rounded up to a power of two;
 * longer ones to a multiple of an eighth of the power of two at or below
 * them (at most max). A batch's varying counts of profiles and
 * identities, and the events of a shared transaction (1 to 16), then
 * fall on a few shapes, each prepared once per connection, where every
 * new length cost a prepare (the server parses the text anew, the client
 * reads a description of every parameter) and a cached statement of
 * the connector about 17 kB of a worker's heap.
 */
size_t db_sql_padded(size_t n, size_t max);

/* db_sql_padded() of each of counts[0..ng) into to[]: the lengths a
 * template's lists are sent with. 1 when one of them differs from its
 * count (the parameters must then be padded), else 0. */
int db_sql_pad_counts(const size_t *counts, size_t ng, size_t max, size_t *to);

/* 1 when template t (one of the SQL_M_ texts here, compared by text) is
 * one whose lists may be padded: the reads (SQL_M_EVENT_KEYS,
 * SQL_M_IDENT_LOCK, SQL_M_STATE_OF, SQL_M_IDENT_STATE_LOCK), the writes
 * that set values (SQL_M_BALANCE_UPSERT, SQL_M_VAR_UPSERT,
 * SQL_M_PROFILE_TOUCH) and the inserts that ignore a duplicate key
 * (SQL_M_EVENT_INSERT, SQL_M_LEDGER_INSERT). Never SQL_M_COUNTER_ADD,
 * which adds (a repeated row would count twice), nor a plain INSERT. The
 * service and the ceiling both ask here. */
int db_sql_pads(const char *t);

/* The parameters of template t for lengths to[] (each at least counts[],
 * 0 exactly where counts[] is 0) from in[0..nin), laid out for counts[]:
 * each group's last entry repeated. Elements of size bytes are copied to
 * out, which has room for them; returns how many, 0 when t is malformed,
 * to[] does not fit counts[] or nin is not the count counts[] make. */
size_t db_sql_pad_params(const char *t, const size_t *counts, const size_t *to,
    const void *in, size_t nin, void *out, size_t size);

/* SQL_M_EVENT_KEYS: the stored events of a request's keys */
#define SQL_M_EVENT_KEYS \
	"SELECT id, public_id, fingerprint, attempt, source, external_event_id" \
	" FROM events WHERE tenant_id = ? AND" \
	" (source, external_event_id) IN ({,(?, ?)})"

/* SQL_M_IDENT_LOCK: every given identity that is bound ('i': type,
 * value, profile, its public id and tier, and that profile's EXTERNAL
 * identity if any); the profiles stay locked until the transaction
 * ends. The seven columns are shared by the two statements below. */
#define SQL_M_IDENT_LOCK \
	"SELECT STRAIGHT_JOIN 'i', i.type, i.value, i.profile_id, p.public_id," \
	" p.tier, x.value FROM identities i JOIN profiles p ON p.id = i.profile_id" \
	" LEFT JOIN identities x ON x.ext_profile_id = p.id" \
	" WHERE i.tenant_id = ? AND (i.type, i.value) IN ({,(?, ?)}) FOR UPDATE"

/* SQL_M_STATE_OF: balances ('b': name, profile, balance, lifetime),
 * variables ('v': name, profile, value) and limit counters ('c':
 * rule, profile, period, count) of the periods given, of profiles
 * locked before. Variables and counters are left out (count 0) when no
 * rule of the tenant reads or sets a variable, or has a limit. */
#define SQL_M_STATE_OF \
	"SELECT 'b', NULL, name, profile_id, balance, lifetime, NULL FROM balances" \
	" WHERE profile_id IN ({,?})" \
	"[ UNION ALL SELECT 'v', NULL, name, profile_id, value, NULL, NULL" \
	" FROM variables WHERE profile_id IN ({,?})]" \
	"[ UNION ALL SELECT 'c', NULL, rule_id, profile_id, period, count, NULL" \
	" FROM rule_counters WHERE profile_id IN ({,?}) AND period IN ({,?})]"

/* SQL_M_IDENT_STATE_LOCK: both of the above in one round trip, then the
 * stored events of the keys, so that a single event costs no read before
 * its transaction. The identity rows ('i') carry three more columns: a
 * balance of the profile (name, balance, lifetime; NULL when it has
 * none), joined rather than read by a part of its own, which costs the
 * server a third less than a UNION part (the optimizer plans each part
 * and the executor runs each join again). A profile with several
 * balances gives an 'i' row per balance; one found by two identities
 * gives them twice. Variables ('v'), counters ('c') and keys ('k': id,
 * public_id, fingerprint, attempt, source, external_event_id) follow in
 * the layout of the statements above, padded with NULLs, each left out
 * when its count is 0. The parts run in order: the first locks the
 * profiles (waiting for any transaction that holds them), then the state
 * and the keys are read with locking reads, which see the latest
 * committed rows, never a snapshot taken before the wait (a key committed
 * while this statement waited is seen). */
#define SQL_M_IDENT_STATE_LOCK \
	"(SELECT STRAIGHT_JOIN 'i', i.type, i.value, i.profile_id, p.public_id," \
	" p.tier, x.value, s.name, s.balance, s.lifetime FROM identities i" \
	" JOIN profiles p ON p.id = i.profile_id" \
	" LEFT JOIN identities x ON x.ext_profile_id = p.id" \
	" LEFT JOIN balances s ON s.profile_id = p.id" \
	" WHERE i.tenant_id = ? AND (i.type, i.value) IN ({,(?, ?)}) FOR UPDATE)" \
	"[ UNION ALL (SELECT STRAIGHT_JOIN 'v', NULL, s.name, s.profile_id, s.value," \
	" NULL, NULL, NULL, NULL, NULL FROM identities i JOIN variables s" \
	" ON s.profile_id = i.profile_id" \
	" WHERE i.tenant_id = ? AND (i.type, i.value) IN ({,(?, ?)}) FOR UPDATE)]" \
	"[ UNION ALL (SELECT STRAIGHT_JOIN 'c', NULL, s.rule_id, s.profile_id, s.period," \
	" s.count, NULL, NULL, NULL, NULL FROM identities i JOIN rule_counters s" \
	" ON s.profile_id = i.profile_id" \
	" WHERE i.tenant_id = ? AND (i.type, i.value) IN ({,(?, ?)})" \
	" AND s.period IN ({,?}) FOR UPDATE)]" \
	"[ UNION ALL (SELECT 'k', id, public_id, fingerprint, attempt, source," \
	" external_event_id, NULL, NULL, NULL FROM events WHERE tenant_id = ? AND" \
	" (source, external_event_id) IN ({,(?, ?)}) LOCK IN SHARE MODE)]"

/* SQL_M_PROFILE_INSERT: new profiles */
#define SQL_M_PROFILE_INSERT \
	"INSERT INTO profiles (tenant_id, public_id, tier, created_at, updated_at)" \
	" VALUES {,(?, ?, ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))}" \
	" RETURNING id, public_id"

/* SQL_M_IDENT_INSERT: new identity bindings */
#define SQL_M_IDENT_INSERT \
	"INSERT INTO identities (tenant_id, type, value, profile_id, ext_profile_id," \
	" created_at) VALUES {,(?, ?, ?, ?, ?, UTC_TIMESTAMP(6))}"

/* SQL_M_EVENT_INSERT: the dedup key claimed with the outcome; a row
 * claimed meanwhile is not returned, nor a padded repeat of the last */
#define SQL_EVENT_COLUMNS \
	"INSERT IGNORE INTO events (tenant_id, source, external_event_id, public_id," \
	" fingerprint, event_type, occurred_at, received_at, doc, request_id," \
	" profile_id, outcome, rules_version, attempt) VALUES "
#define SQL_EVENT_ROW "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
#define SQL_M_EVENT_INSERT \
	SQL_EVENT_COLUMNS "{," SQL_EVENT_ROW "} RETURNING id, public_id"

/* SQL_M_LEDGER_INSERT: created_at is taken while the profiles are
 * locked and ids grow in row order, so (created_at, id) is the order
 * the changes were applied in. IGNORE only so that its list may be
 * padded: a repeat of the last row hits ledger_event_seq and is dropped,
 * and db/db.c requires every row sent once to be stored and no other
 * warning. Inside SQL_M_WRITE_ONE, never padded, it is a plain INSERT. */
#define SQL_LEDGER_ROWS(verb, event_id) \
	verb " INTO ledger (profile_id, event_id, seq, rule_id, balance_name," \
	" delta, balance_after, created_at) VALUES {,(?, " event_id ", ?, ?, ?," \
	" ?, ?, UTC_TIMESTAMP(6))}"
#define SQL_M_LEDGER_INSERT SQL_LEDGER_ROWS("INSERT IGNORE", "?")

/* SQL_M_BALANCE_UPSERT: the state after the last change */
#define SQL_M_BALANCE_UPSERT \
	"INSERT INTO balances (profile_id, name, balance, lifetime)" \
	" VALUES {,(?, ?, ?, ?)}" \
	" ON DUPLICATE KEY UPDATE balance = VALUES(balance), lifetime = VALUES(lifetime)"

/* SQL_M_VAR_UPSERT: the final value of variables */
#define SQL_M_VAR_UPSERT \
	"INSERT INTO variables (profile_id, name, value) VALUES {,(?, ?, ?)}" \
	" ON DUPLICATE KEY UPDATE value = VALUES(value)"

/* SQL_M_COUNTER_ADD: limit counters raised by what the group applied */
#define SQL_M_COUNTER_ADD \
	"INSERT INTO rule_counters (profile_id, rule_id, period, count)" \
	" VALUES {,(?, ?, ?, ?)} ON DUPLICATE KEY UPDATE count = count + VALUES(count)"

/* SQL_M_PROFILE_TOUCH: tier and updated_at of profiles */
#define SQL_M_PROFILE_TOUCH \
	"UPDATE profiles SET tier = CASE id{. WHEN ? THEN ?} END," \
	" updated_at = UTC_TIMESTAMP(6) WHERE id IN ({,?})"

/*
 * SQL_M_WRITE_ONE: the writes of a transaction that stores one event,
 * and its COMMIT, in one round trip instead of five (events, ledger,
 * balances, COMMIT, and variables, counters, profiles when they change).
 * The statements above run in that order inside a compound statement;
 * ledger, balances, variables, counters and profiles are each left out
 * when its first count is 0. The event's 14 parameters come first, then
 * those of each part; the ledger rows take the event's id from the
 * INSERT (LAST_INSERT_ID(): one row, so its id), not from a parameter.
 * An event not stored, because its key or public id was taken since the
 * lock statement read them, ends it with error 1062 (ER_DUP_ENTRY: the
 * caller runs the transaction again, which then finds the key); a row
 * stored with a warning (truncated, converted) with error 1644
 * (ER_SIGNAL_EXCEPTION). Nothing is committed then: the caller rolls
 * back. The text ends with "COMMIT; END": db/db.c knows by it that the
 * transaction is over when the statement succeeds.
 */
#define SQL_M_WRITE_ONE \
	"BEGIN NOT ATOMIC DECLARE e BIGINT UNSIGNED; DECLARE w, r INT;" \
	" " SQL_EVENT_COLUMNS SQL_EVENT_ROW ";" \
	" GET DIAGNOSTICS w = NUMBER, r = ROW_COUNT;" \
	" IF r <> 1 THEN SIGNAL SQLSTATE '23000' SET MYSQL_ERRNO = 1062," \
	" MESSAGE_TEXT = 'rfevents: the event was stored meanwhile'; END IF;" \
	" IF w <> 0 THEN SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 1644," \
	" MESSAGE_TEXT = 'INSERT IGNORE stored a row with warnings'; END IF;" \
	" SET e = LAST_INSERT_ID();" \
	"[ " SQL_LEDGER_ROWS("INSERT", "e") ";]" \
	"[ " SQL_M_BALANCE_UPSERT ";]" \
	"[ " SQL_M_VAR_UPSERT ";]" \
	"[ " SQL_M_COUNTER_ADD ";]" \
	"[ " SQL_M_PROFILE_TOUCH ";]" \
	" COMMIT; END"
#define SQL_COMMITS_SUFFIX " COMMIT; END"

#endif /* DB_SQL_H */
