/*
 * RFEVENTS_DB URL parsing (db_open does not connect): what is accepted,
 * and that bad URLs are refused with a message rather than guessed at.
 * The expansion of the multi-row statement templates (db_multi_text()).
 */
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "db/sql.h"
#include "tests/unit/t.h"

static const struct {
	int         line;
	const char *url;
	int         ok;
	const char *msg;     /* substring of the error, when refused */
} cases[] = {
	{ __LINE__, "mariadb://u:p@localhost/db?socket=/tmp/x.sock", 1, NULL },
	{ __LINE__, "mariadb://u:p@127.0.0.1:3306/rfevents", 1, NULL },
	{ __LINE__, "mysql://u@h/db", 1, NULL },
	{ __LINE__, "mariadb://u:p%40ss@h1:3311,h2:3312,h3:3313/db", 1, NULL },
	{ __LINE__, "mariadb://h/db", 1, NULL },
	{ __LINE__, "mariadb:///db", 1, NULL },
	{ __LINE__, "postgres://u@h/db", 0, "mariadb://" },
	{ __LINE__, "", 0, "not set" },
	{ __LINE__, "mariadb://u@h", 0, "/database" },
	{ __LINE__, "mariadb://u@h/", 0, "empty database" },
	{ __LINE__, "mariadb://u@h:0/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u@h:65536/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u@h:12x/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u@:3306/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u:p%zz@h/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u:p%00@h/db", 0, "not a valid" },
	{ __LINE__, "mariadb://u@h/db?sslmode=on", 0, "unknown option" },
	{ __LINE__, "mariadb://u@a,b,c,d,e,f,g,h,i/db", 0, "more than" },
};

/* The parts of DB_M_IDENT_STATE_LOCK with lists of 1 (periods: P),
 * written out from db/sql.h's text. */
#define L_IDENT \
	"(SELECT STRAIGHT_JOIN 'i', i.type, i.value, i.profile_id, p.public_id," \
	" p.tier, x.value, s.name, s.balance, s.lifetime FROM identities i" \
	" JOIN profiles p ON p.id = i.profile_id" \
	" LEFT JOIN identities x ON x.ext_profile_id = p.id" \
	" LEFT JOIN balances s ON s.profile_id = p.id" \
	" WHERE i.tenant_id = ? AND (i.type, i.value) IN ((?, ?)) FOR UPDATE)"
#define L_VAR \
	" UNION ALL (SELECT STRAIGHT_JOIN 'v', NULL, s.name, s.profile_id, s.value," \
	" NULL, NULL, NULL, NULL, NULL FROM identities i JOIN variables s" \
	" ON s.profile_id = i.profile_id" \
	" WHERE i.tenant_id = ? AND (i.type, i.value) IN ((?, ?)) FOR UPDATE)"
#define L_CNT(P) \
	" UNION ALL (SELECT STRAIGHT_JOIN 'c', NULL, s.rule_id, s.profile_id, s.period," \
	" s.count, NULL, NULL, NULL, NULL FROM identities i JOIN rule_counters s" \
	" ON s.profile_id = i.profile_id" \
	" WHERE i.tenant_id = ? AND (i.type, i.value) IN ((?, ?))" \
	" AND s.period IN (" P ") FOR UPDATE)"
#define L_KEY \
	" UNION ALL (SELECT 'k', id, public_id, fingerprint, attempt, source," \
	" external_event_id, NULL, NULL, NULL FROM events WHERE tenant_id = ? AND" \
	" (source, external_event_id) IN ((?, ?)) LOCK IN SHARE MODE)"

/* DB_M_WRITE_ONE, written out: the head (the event and its checks), the
 * parts with lists of 1, the end. */
#define W_HEAD \
	"BEGIN NOT ATOMIC DECLARE e BIGINT UNSIGNED; DECLARE w, r INT;" \
	" INSERT IGNORE INTO events (tenant_id, source, external_event_id, public_id," \
	" fingerprint, event_type, occurred_at, received_at, doc, request_id," \
	" profile_id, outcome, rules_version, attempt) VALUES" \
	" (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);" \
	" GET DIAGNOSTICS w = NUMBER, r = ROW_COUNT;" \
	" IF r <> 1 THEN SIGNAL SQLSTATE '23000' SET MYSQL_ERRNO = 1062," \
	" MESSAGE_TEXT = 'rfevents: the event was stored meanwhile'; END IF;" \
	" IF w <> 0 THEN SIGNAL SQLSTATE '45000' SET MYSQL_ERRNO = 1644," \
	" MESSAGE_TEXT = 'INSERT IGNORE stored a row with warnings'; END IF;" \
	" SET e = LAST_INSERT_ID();"
#define W_LEDGER \
	" INSERT INTO ledger (profile_id, event_id, seq, rule_id, balance_name, delta," \
	" balance_after, created_at) VALUES (?, e, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6));"
#define W_BAL \
	" INSERT INTO balances (profile_id, name, balance, lifetime) VALUES (?, ?, ?, ?)" \
	" ON DUPLICATE KEY UPDATE balance = VALUES(balance), lifetime = VALUES(lifetime);"
#define W_TOUCH \
	" UPDATE profiles SET tier = CASE id WHEN ? THEN ? END," \
	" updated_at = UTC_TIMESTAMP(6) WHERE id IN (?);"
#define W_END " COMMIT; END"

/* Expansions: exact texts for two small shapes, and for every template
 * and several shapes the placeholder count against the text. */
static const struct {
	int           line;
	enum db_multi m;
	size_t        counts[DB_MULTI_GROUPS];
	size_t        nparams;        /* 0: do not check */
	const char   *text;           /* NULL: do not compare */
} mcases[] = {
	{ __LINE__, DB_M_EVENT_KEYS, { 1 }, 3,
	  "SELECT id, public_id, fingerprint, attempt, source, external_event_id"
	  " FROM events WHERE tenant_id = ? AND (source, external_event_id) IN"
	  " ((?, ?))" },
	{ __LINE__, DB_M_EVENT_KEYS, { 3 }, 7,
	  "SELECT id, public_id, fingerprint, attempt, source, external_event_id"
	  " FROM events WHERE tenant_id = ? AND (source, external_event_id) IN"
	  " ((?, ?), (?, ?), (?, ?))" },
	{ __LINE__, DB_M_PROFILE_TOUCH, { 2, 2 }, 6,
	  "UPDATE profiles SET tier = CASE id WHEN ? THEN ? WHEN ? THEN ? END,"
	  " updated_at = UTC_TIMESTAMP(6) WHERE id IN (?, ?)" },
	{ __LINE__, DB_M_STATE_OF, { 2, 2, 2, 3 }, 9, NULL },
	{ __LINE__, DB_M_IDENT_LOCK, { 128 }, 257, NULL },
	{ __LINE__, DB_M_IDENT_STATE_LOCK, { 2, 2, 2, 3, 1 }, 21, NULL },
	{ __LINE__, DB_M_IDENT_STATE_LOCK, { 2, 2, 2, 3, 0 }, 18, NULL },
	/* every part */
	{ __LINE__, DB_M_IDENT_STATE_LOCK, { 1, 1, 1, 1, 1 }, 13,
	  L_IDENT L_VAR L_CNT("?") L_KEY },
	/* a tenant without variables or limits: no such parts, the
	 * periods' count is then ignored */
	{ __LINE__, DB_M_IDENT_STATE_LOCK, { 1, 0, 0, 7, 1 }, 6,
	  L_IDENT L_KEY },
	/* the identities and balances alone */
	{ __LINE__, DB_M_IDENT_STATE_LOCK, { 1, 0, 0, 0, 0 }, 3, L_IDENT },
	/* the state, no keys */
	{ __LINE__, DB_M_IDENT_STATE_LOCK, { 1, 0, 1, 2, 0 }, 8,
	  L_IDENT L_CNT("?, ?") },
	{ __LINE__, DB_M_STATE_OF, { 2, 0, 0, 5 }, 2,
	  "SELECT 'b', NULL, name, profile_id, balance, lifetime, NULL FROM balances"
	  " WHERE profile_id IN (?, ?)" },
	{ __LINE__, DB_M_STATE_OF, { 1, 0, 1, 2 }, 4,
	  "SELECT 'b', NULL, name, profile_id, balance, lifetime, NULL FROM balances"
	  " WHERE profile_id IN (?)"
	  " UNION ALL SELECT 'c', NULL, rule_id, profile_id, period, count, NULL"
	  " FROM rule_counters WHERE profile_id IN (?) AND period IN (?, ?)" },
	{ __LINE__, DB_M_EVENT_INSERT, { 200 }, 2800, NULL },
	{ __LINE__, DB_M_LEDGER_INSERT, { 400 }, 2800, NULL },
	{ __LINE__, DB_M_PROFILE_INSERT, { 1 }, 3, NULL },
	{ __LINE__, DB_M_IDENT_INSERT, { 5 }, 25, NULL },
	{ __LINE__, DB_M_BALANCE_UPSERT, { 1000 }, 4000, NULL },
	{ __LINE__, DB_M_VAR_UPSERT, { 7 }, 21, NULL },
	{ __LINE__, DB_M_COUNTER_ADD, { 3 }, 12, NULL },
	/* a single event's writes: the bench's (a ledger row, a balance) */
	{ __LINE__, DB_M_WRITE_ONE, { 1, 1, 0, 0, 0, 0 }, 24,
	  W_HEAD W_LEDGER W_BAL W_END },
	/* nothing but the event (no rule applied), and a tier change only */
	{ __LINE__, DB_M_WRITE_ONE, { 0, 0, 0, 0, 0, 0 }, 14, W_HEAD W_END },
	{ __LINE__, DB_M_WRITE_ONE, { 0, 0, 0, 0, 1, 1 }, 17,
	  W_HEAD W_TOUCH W_END },
	{ __LINE__, DB_M_WRITE_ONE, { 3, 2, 2, 4, 1, 1 }, 14 + 18 + 8 + 6 + 16 + 3,
	  NULL },
};

/* Refused shapes: a list of 0 or over DB_MULTI_MAX_ROWS. */
static const struct {
	int           line;
	enum db_multi m;
	size_t        counts[DB_MULTI_GROUPS];
} mbad[] = {
	{ __LINE__, DB_M_EVENT_KEYS, { 0 } },
	{ __LINE__, DB_M_EVENT_KEYS, { DB_MULTI_MAX_ROWS + 1 } },
	{ __LINE__, DB_M_STATE_OF, { 0, 1, 1, 1 } },     /* balances: not optional */
	{ __LINE__, DB_M_STATE_OF, { 1, 1, 1, 0 } },     /* counters without periods */
	{ __LINE__, DB_M_IDENT_STATE_LOCK, { 0, 1, 1, 1, 1 } },
	{ __LINE__, DB_M_IDENT_STATE_LOCK, { 1, 1, 1, 1, DB_MULTI_MAX_ROWS + 1 } },
	{ __LINE__, DB_M_PROFILE_TOUCH, { 1, DB_MULTI_MAX_ROWS + 1 } },
	{ __LINE__, DB_M_WRITE_ONE, { DB_MULTI_MAX_ROWS + 1, 1, 0, 0, 0, 0 } },
};

/* The template syntax itself (db/sql.c): groups and optional parts. */
static const struct {
	int         line;
	const char *t;
	size_t      counts[4];
	const char *want;          /* NULL: refused */
	size_t      nparams;
} xcases[] = {
	{ __LINE__, "a{,?}b", { 3 }, "a?, ?, ?b", 3 },
	{ __LINE__, "x{|c = ?}", { 2 }, "xc = ? OR c = ?", 2 },
	{ __LINE__, "{.(?)}", { 2 }, "(?)(?)", 2 },
	{ __LINE__, "a{,?}[ + ? {,?}] = ?", { 1, 2 }, "a? + ? ?, ? = ?", 5 },
	{ __LINE__, "a{,?}[ + ? {,?}] = ?", { 1, 0 }, "a? = ?", 2 },
	{ __LINE__, "s[ p {,?} q {,?}][ r {,?}]", { 0, 9, 1 }, "s r ?", 1 },
	{ __LINE__, "s[ p {,?} q {,?}][ r {,?}]", { 1, 2, 0 }, "s p ? q ?, ?", 3 },
	{ __LINE__, "s[ p {,?} q {,?}][ r {,?}]", { 1, 0, 1 }, NULL, 0 },
	{ __LINE__, "a{,?}", { 0 }, NULL, 0 },          /* 0 outside a part */
	{ __LINE__, "a{;?}", { 1 }, NULL, 0 },          /* unknown separator */
	{ __LINE__, "a{,?", { 1 }, NULL, 0 },           /* no } */
	{ __LINE__, "a[ b {,?}", { 1 }, NULL, 0 },      /* no ] */
	{ __LINE__, "a[ b ] {,?}", { 1 }, NULL, 0 },    /* a part without a group */
	{ __LINE__, "a[ [b {,?}] ]", { 1 }, NULL, 0 },  /* nested */
};

static void
test_expand(void)
{
	size_t i;

	for (i = 0; i < sizeof(xcases) / sizeof(xcases[0]); i++) {
		size_t np = 0;
		char  *sql = db_sql_expand(xcases[i].t, xcases[i].counts, &np);
		if (xcases[i].want == NULL)
			T_CHECK(xcases[i].line, sql == NULL, "accepted: %s", sql);
		else
			T_CHECK(xcases[i].line, sql != NULL &&
			    strcmp(sql, xcases[i].want) == 0 && np == xcases[i].nparams,
			    "got \"%s\" (%zu), want \"%s\" (%zu)", sql ? sql : "(null)",
			    np, xcases[i].want, xcases[i].nparams);
		free(sql);
	}
}

/* db_sql_padded(): lengths up to 16 rounded up to a power of two, longer
 * ones to an eighth of their power of two, never beyond max (nor, up to
 * 16, below the length) */
static const struct {
	int    line;
	size_t n, max, want;
} padcases[] = {
	{ __LINE__, 0, 1000, 0 },
	{ __LINE__, 1, 1000, 1 },
	{ __LINE__, 2, 1000, 2 },
	{ __LINE__, 3, 1000, 4 },         /* 1..16: powers of two */
	{ __LINE__, 4, 1000, 4 },
	{ __LINE__, 5, 1000, 8 },
	{ __LINE__, 8, 1000, 8 },
	{ __LINE__, 9, 1000, 16 },
	{ __LINE__, 15, 1000, 16 },
	{ __LINE__, 16, 1000, 16 },
	{ __LINE__, 5, 6, 6 },            /* 8 capped */
	{ __LINE__, 5, 5, 5 },
	{ __LINE__, 5, 3, 5 },            /* never below the length */
	{ __LINE__, 17, 1000, 18 },       /* 16..31: steps of 2 */
	{ __LINE__, 31, 1000, 32 },
	{ __LINE__, 33, 1000, 36 },       /* 32..63: steps of 4 */
	{ __LINE__, 128, 1000, 128 },
	{ __LINE__, 129, 1000, 144 },
	{ __LINE__, 632, 1000, 640 },     /* 512..1023: steps of 64 */
	{ __LINE__, 640, 1000, 640 },
	{ __LINE__, 961, 1000, 1000 },    /* 1024 capped */
	{ __LINE__, 1000, 1000, 1000 },
	{ __LINE__, 20, 19, 19 },
};

/* db_sql_pad_params(): (template, counts, to) and the parameters out, as
 * the letters of the entries in (each parameter one char) */
static const struct {
	int         line;
	const char *t;
	size_t      counts[3], to[3];
	const char *in, *want;        /* NULL want: refused */
} pcases[] = {
	{ __LINE__, "a ? IN ({,?})", { 3 }, { 3 }, "tABC", "tABC" },
	{ __LINE__, "a ? IN ({,?})", { 3 }, { 5 }, "tABC", "tABCCC" },
	{ __LINE__, "v {,(?, ?)} w ?", { 2 }, { 4 }, "abcdz", "abcdcdcdz" },
	{ __LINE__, "c{. W ? T ?} i ({,?})", { 2, 2 }, { 3, 3 }, "1a2b12",
	    "1a2b2b122" },
	{ __LINE__, "s {,?}[ u {,?}][ x {,?} ?]", { 1, 0, 2 }, { 2, 0, 2 },
	    "ApqZ", "AApqZ" },
	{ __LINE__, "s {,?}[ u {,?}]", { 1, 1 }, { 1, 2 }, "AB", "ABB" },
	{ __LINE__, "f {,(1, 2)} ?", { 2 }, { 9 }, "z", "z" },   /* no ? in it */
	{ __LINE__, "a {,?}", { 3 }, { 2 }, "ABC", NULL },       /* shorter */
	{ __LINE__, "s {,?}[ u {,?}]", { 1, 0 }, { 1, 1 }, "A", NULL },
	{ __LINE__, "a {,?", { 1 }, { 2 }, "A", NULL },          /* malformed */
	{ __LINE__, "a ? {,?}", { 2 }, { 3 }, "tA", NULL },      /* one too few */
	{ __LINE__, "a ? {,?}", { 2 }, { 3 }, "tABC", NULL },    /* one too many */
};

static void
test_pad(void)
{
	size_t i;
	char   out[64];

	for (i = 0; i < sizeof(padcases) / sizeof(padcases[0]); i++) {
		size_t got = db_sql_padded(padcases[i].n, padcases[i].max);
		T_CHECK(padcases[i].line, got == padcases[i].want,
		    "%zu padded to %zu, want %zu", padcases[i].n, got, padcases[i].want);
	}
	{
		size_t to[3] = { 0 };
		T_OK(db_sql_pad_counts((size_t[3]){ 632, 0, 3 }, 3, 1000, to) == 1 &&
		    to[0] == 640 && to[1] == 0 && to[2] == 4,
		    "pad_counts: %zu %zu %zu", to[0], to[1], to[2]);
		T_OK(db_sql_pad_counts((size_t[2]){ 640, 16 }, 2, 1000, to) == 0 &&
		    to[0] == 640 && to[1] == 16, "pad_counts: nothing to pad");
		T_OK(db_sql_pad_counts((size_t[2]){ 8, 0 }, 2, 1000, to) == 0 &&
		    to[0] == 8 && to[1] == 0, "pad_counts: a power of two");
	}
	for (i = 0; i < sizeof(pcases) / sizeof(pcases[0]); i++) {
		size_t n;
		memset(out, 0, sizeof(out));
		n = db_sql_pad_params(pcases[i].t, pcases[i].counts, pcases[i].to,
		    pcases[i].in, strlen(pcases[i].in), out, 1);
		if (pcases[i].want == NULL)
			T_CHECK(pcases[i].line, n == 0, "accepted: %zu \"%.*s\"",
			    n, (int)n, out);
		else
			T_CHECK(pcases[i].line, n == strlen(pcases[i].want) &&
			    memcmp(out, pcases[i].want, n) == 0,
			    "got \"%.*s\", want \"%s\"", (int)n, out, pcases[i].want);
	}
	/* which templates may be padded: a repeated entry must change
	 * nothing (COUNTER_ADD adds, a plain INSERT would store a row twice;
	 * an INSERT IGNORE drops it on a unique key) */
	{
		static const int want[DB_M__MAX] = {
			[DB_M_EVENT_KEYS] = 1, [DB_M_IDENT_LOCK] = 1,
			[DB_M_STATE_OF] = 1, [DB_M_IDENT_STATE_LOCK] = 1,
			[DB_M_BALANCE_UPSERT] = 1, [DB_M_VAR_UPSERT] = 1,
			[DB_M_PROFILE_TOUCH] = 1, [DB_M_EVENT_INSERT] = 1,
			[DB_M_LEDGER_INSERT] = 1,
		};
		for (i = 0; i < DB_M__MAX; i++)
			T_OK(db_sql_pads(db_multi_template((enum db_multi)i)) == want[i],
			    "template %zu: padded %d, want %d", i,
			    db_sql_pads(db_multi_template((enum db_multi)i)), want[i]);
		T_OK(!db_sql_pads(NULL) && !db_sql_pads("SELECT 1"),
		    "an unknown text padded");
	}
	/* a padded expansion has as many placeholders as the parameters made
	 * for it, for every template */
	for (i = 0; i < DB_M__MAX; i++) {
		size_t counts[DB_MULTI_GROUPS], to[DB_MULTI_GROUPS], k, np = 0, npad = 0;
		char  *a;
		for (k = 0; k < DB_MULTI_GROUPS; k++) {
			counts[k] = 17 + k;
			to[k] = db_sql_padded(counts[k], DB_MULTI_MAX_ROWS);
		}
		a = db_multi_text((enum db_multi)i, counts, &np);
		free(a);
		a = db_multi_text((enum db_multi)i, to, &npad);
		free(a);
		{
			struct db_param *in = calloc(np, sizeof(*in));
			struct db_param *o = calloc(npad, sizeof(*o));
			size_t           got = in && o ? db_sql_pad_params(
			    db_multi_template((enum db_multi)i), counts, to, in, np,
			    o, sizeof(*in)) : 0;
			T_OK(got == npad && npad > np,
			    "template %zu: %zu parameters padded to %zu, want %zu",
			    i, np, got, npad);
			free(in);
			free(o);
		}
	}
}

static void
test_multi(void)
{
	size_t i, m, k;

	for (i = 0; i < sizeof(mcases) / sizeof(mcases[0]); i++) {
		size_t np = 0, q = 0;
		char  *sql = db_multi_text(mcases[i].m, mcases[i].counts, &np);
		T_CHECK(mcases[i].line, sql != NULL, "no text");
		if (sql == NULL)
			continue;
		for (k = 0; sql[k] != '\0'; k++)
			q += sql[k] == '?';
		T_CHECK(mcases[i].line, q == np, "%zu placeholders, counted %zu", q, np);
		if (mcases[i].nparams != 0)
			T_CHECK(mcases[i].line, np == mcases[i].nparams,
			    "%zu parameters, want %zu", np, mcases[i].nparams);
		T_CHECK(mcases[i].line, strchr(sql, '{') == NULL &&
		    strchr(sql, '}') == NULL && strchr(sql, '[') == NULL &&
		    strchr(sql, ']') == NULL, "a group or part left unexpanded: %s", sql);
		if (mcases[i].text != NULL)
			T_CHECK(mcases[i].line, strcmp(sql, mcases[i].text) == 0,
			    "got  %s\nwant %s", sql, mcases[i].text);
		free(sql);
	}
	for (i = 0; i < sizeof(mbad) / sizeof(mbad[0]); i++) {
		size_t np = 0;
		char  *sql = db_multi_text(mbad[i].m, mbad[i].counts, &np);
		T_CHECK(mbad[i].line, sql == NULL, "accepted: %s", sql ? sql : "");
		free(sql);
	}
	/* every template expands for lists of 1 and of the maximum */
	for (m = 0; m < DB_M__MAX; m++) {
		size_t one[DB_MULTI_GROUPS], max[DB_MULTI_GROUPS], np1 = 0, npm = 0;
		char  *a, *b;
		for (k = 0; k < DB_MULTI_GROUPS; k++) {
			one[k] = 1;
			max[k] = DB_MULTI_MAX_ROWS;
		}
		a = db_multi_text((enum db_multi)m, one, &np1);
		b = db_multi_text((enum db_multi)m, max, &npm);
		T_OK(a != NULL && b != NULL && np1 > 0 && npm > np1 && npm < 65536,
		    "template %zu: %zu / %zu parameters (the server takes 65535)",
		    m, np1, npm);
		free(a);
		free(b);
	}
	T_OK(db_multi_text(DB_M__MAX, (size_t[DB_MULTI_GROUPS]){ 1 }, &k) == NULL,
	    "an unknown template expanded");
}

int
main(void)
{
	size_t i;

	t_file = "test_db";
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char       err[256] = "";
		struct db *db = db_open(cases[i].url, err, sizeof(err));
		T_CHECK(cases[i].line, (db != NULL) == cases[i].ok, "%s: %s",
		    cases[i].url, db ? "accepted" : err);
		if (cases[i].msg != NULL)
			T_CHECK(cases[i].line, strstr(err, cases[i].msg) != NULL,
			    "message '%s' lacks '%s'", err, cases[i].msg);
		db_close(db);
	}
	T_OK(db_open(NULL, (char[64]){0}, 64) == NULL, "NULL URL accepted");
	test_expand();
	test_multi();
	test_pad();
	return t_done();
}
