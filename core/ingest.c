/*
 * The ingest pipeline (DESIGN.md "The path of one event", API.md §2-§3):
 * INSERT IGNORE on the dedup key, duplicate / conflict answers, identity
 * resolution with pre-provisioning, the rules, the outcome on the event row
 * — all in one transaction per request, the items of a batch applied as one
 * group with multi-row statements (apply_group()), retried whole on
 * deadlocks by db_txn().
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "db/db.h"
#include "rules/rules.h"
#include "core/core.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
/* The attempt token stored with an event: 15 random bytes naming the HTTP
 * request, then the number of the transaction attempt within it. */
#define EV_ATTEMPT_LEN 16

/* Format microseconds as a DATETIME(6) literal for a parameter. */
static void
sql_time(int64_t us, char out[32])
{
	char iso[32];

	ts_format(us, iso);
	/* "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" -> "YYYY-MM-DD HH:MM:SS[.ffffff]" */
	snprintf(out, 32, "%.10s %.*s", iso, (int)(strlen(iso) - 12), iso + 11);
}

/* Run a statement that returns at most one row; DB_OK with *r filled. */
static enum db_rc
query(struct db *db, enum db_stmt st, const struct db_param *p, size_t np,
    struct db_res *r)
{
	return db_exec(db, st, p, np, r, NULL, NULL);
}

/* The body of a duplicate or conflict answer. */
static void
answer_existing(struct ev_result *res, const char *orig_id, int same)
{
	struct ev_verr verr;

	if (same) {
		res->st = EV_ST_DUPLICATE;
		res->body = json_object_new_object();
		json_object_object_add(res->body, "status",
		    json_object_new_string("duplicate"));
	} else {
		ev_verr_set(&verr, EV_CONFLICT, "this (source, externalEventId) was"
		    " already ingested with a different payload");
		ev_result_error(res, &verr);
		res->st = EV_ST_CONFLICT;
	}
	json_object_object_add(res->body, "original_event_id",
	    json_object_new_string(orig_id));
	snprintf(res->event_id, sizeof(res->event_id), "%s", orig_id);
}

/*
 * The answer this request gave when its own COMMIT went through but the
 * reply was lost: accepted, rebuilt from the stored outcome. DB_OK or a
 * database failure.
 */
static enum db_rc
answer_own(struct db *db, int64_t evid, const char *public_id,
    struct ev_result *res)
{
	struct db_param  p = DBP_I64(evid);
	struct db_res    r;
	struct json_perr perr;
	json_object     *oc = NULL;
	enum db_rc       rc;

	if ((rc = query(db, DB_EVENT_OUTCOME, &p, 1, &r)) != DB_OK)
		return rc;
	if (r.nrows > 0 && DB_CELL(&r, 0, 0)->v != NULL)
		oc = json_parse_strict(DB_CELL(&r, 0, 0)->v, DB_CELL(&r, 0, 0)->len,
		    JSON_MAX_DEPTH + 8, &perr);
	res->st = EV_ST_ACCEPTED;
	snprintf(res->event_id, sizeof(res->event_id), "%s", public_id);
	res->body = json_object_new_object();
	json_object_object_add(res->body, "status", json_object_new_string("accepted"));
	json_object_object_add(res->body, "event_id", json_object_new_string(public_id));
	json_object_object_add(res->body, "profile_id", r.nrows > 0 &&
	    DB_CELL(&r, 0, 1)->v ? json_object_new_string(DB_CELL(&r, 0, 1)->v) : NULL);
	if (oc != NULL) {
		json_object_object_foreach(oc, k, v)
			json_object_object_add(res->body, k, json_object_get(v));
		json_object_put(oc);
	}
	db_res_free(&r);
	return DB_OK;
}

/* Reset a result for another attempt. */
static void
result_reset(struct ev_result *res)
{
	if (res->body != NULL)
		json_object_put(res->body);
	free(res->text);
	memset(res, 0, sizeof(*res));
}

struct batch {
	const struct ev_tenant  *t;
	struct ev_event        **evs;
	struct ev_result        *res;
	size_t                   n;
	int                      dry;       /* run everything, then roll back */
	int                      checked;   /* single event, key checked */
	const char              *reqid;
	unsigned char            attempt[EV_ATTEMPT_LEN];
	size_t                  *order;     /* processing order of the items */
	int                      one_by_one;  /* finding an item the server refuses */
	struct evtext           *text;      /* per item, made before the transaction */
	uint64_t                 inst;      /* db_instance() for the table of
	                                       stored events; 0: not used */
};

/* What is stored of an event besides its outcome, as parameter text: made
 * once per request, before any transaction, so that no lock waits for it
 * (but for a single event only once it is known to be new). */
struct evtext {
	char *doc;                          /* the stored document */
	char  occ[32], rec[32];             /* occurredAt, receivedAt */
};

/* The stored texts of an event, when not made yet. */
static void
text_make(struct evtext *tx, const struct ev_event *ev)
{
	if (tx->doc != NULL)
		return;
	tx->doc = ev_event_doc(ev);
	sql_time(ev->occurred_us, tx->occ);
	sql_time(ev->received_us, tx->rec);
}

/* ---- a group of events applied with a handful of statements ---- */

/*
 * The events of a request are applied as one group: each step below is one
 * statement for all of them (split at DB_MULTI_MAX_ROWS), so a 1000-event
 * batch costs about as many round trips as a single event:
 *   1. the dedup keys already taken (DB_M_EVENT_KEYS; for a single event
 *      this read was done before the transaction);
 *   2. every given identity and its profile, locked (DB_M_IDENT_LOCK);
 *   3. identity resolution of every item in order, in memory (API.md §3:
 *      later items see the profiles and bindings of earlier ones);
 *   4. new profiles and identity bindings (DB_M_PROFILE_INSERT,
 *      DB_M_IDENT_INSERT);
 *   5. balances, variables and limit counters of the profiles found
 *      (DB_M_STATE_OF), read after they were locked;
 *   6. the rules of every item in order against its profile's state as the
 *      earlier items left it;
 *   7. the events with their outcomes (DB_M_EVENT_INSERT, claiming the
 *      keys), the ledger, the final balances and variables, the counters
 *      and the profiles whose tier changed (or, on Galera, every profile
 *      changed: see below). When the group stores one event and is the
 *      transaction's last work (a single event, or a batch of which one
 *      item is new), step 7 and the COMMIT are one compound statement
 *      (DB_M_WRITE_ONE, write_one()).
 * Every decision to refuse an item is taken before the first write, so a
 * group needs no savepoints.
 */

/* A balance of a profile in the group. */
struct gbal {
	char    *name;
	int64_t  balance, lifetime;
	int      dirty;
};

/* A limit counter of a profile: rule index, period ("all", "dYYYY-MM-DD",
 * "mYYYY-MM"), the count, and how much this group adds. */
struct gcnt {
	size_t   rule;
	char     period[16];
	int64_t  count, add;
};

/* A profile the group reads or changes. */
struct gprof {
	int64_t      pid;            /* 0 until a new one is inserted */
	char         public_id[32];
	char        *tier;           /* current tier (owned), NULL: none */
	char        *tier0;          /* tier before the group (owned) */
	int          created;        /* inserted by this group */
	int          has_external;   /* an EXTERNAL identity is bound to it */
	int          changed;        /* an accepted item is applied to it */
	int          want_state;     /* an item runs the rules on it */
	struct gbal *bals;   size_t nbals;
	struct gcnt *cnts;   size_t ncnts;
	json_object *vars;           /* name -> value */
	json_object *vars_dirty;     /* name -> final value, to write */
};

/* A distinct identity (type, value) given by the items, and the profile
 * (index into profs + 1) it is bound to, 0 when none. */
struct gident {
	int          type;
	const char  *value;
	size_t       prof;
	int          insert;          /* bound by this group: to insert */
};

/* A stored event of the group's keys (step 1). */
struct gkeyrow {
	int64_t        id;
	char           public_id[32];
	unsigned char  fp[32];
	int            fp_ok;
	unsigned char  attempt[EV_ATTEMPT_LEN];
	int            attempt_ok;
};

/* One item of the group. */
struct gitem {
	size_t           i;          /* index in the request */
	struct ev_event *ev;
	size_t           key;        /* its dedup key: index into keys */
	int              done;       /* answered (duplicate, conflict, error) */
	size_t           prof;       /* profile index + 1 when accepted */
	int              created;    /* this item created the profile */
	size_t           found[IDENT__MAX];   /* profile index + 1 per identity */
	int              runs;       /* the engine runs for it (rules_run_for()) */
	struct ev_buf    out;        /* the outcome object's text */
	int64_t          evid;
};

/* A distinct dedup key: the first item with it, the stored row, the
 * item of the group that claimed it (index + 1). */
struct gkey {
	const struct ev_event *ev;
	struct gkeyrow        *row;
	size_t                 claimed;
};

struct gledger {
	size_t       item, seq;
	const char  *rule_id, *balance;
	int64_t      delta, balance_after;
};

struct group {
	struct db                *db;
	const struct ev_tenant   *t;
	const struct conf_tenant *ct;
	struct gitem   *items;   size_t nitems;
	struct gkey    *keys;    size_t nkeys;
	struct gkeyrow *rows;    size_t nrows;
	struct gident  *idents;  size_t nidents;
	struct gprof   *profs;   size_t nprofs, capprofs;
	size_t         *ptab;    size_t captab;    /* profiles by id (find_prof()) */
	struct gledger *ledger;  size_t nledger, capledger;
	struct rule_def   *defs;
	struct rule_set   *sets;
	struct rule_tier  *tiers;
	int                want_vars;   /* a rule reads or sets a variable */
	int                want_cnts;   /* a rule has a limit */
	struct db_param   *p;    size_t capp;     /* parameters of one statement */
};

/* Room for n parameters in g->p (what it holds is kept). */
static struct db_param *
gparams(struct group *g, size_t n)
{
	if (n > g->capp) {
		size_t cap = g->capp * 2 > n ? g->capp * 2 : n;
		g->p = ev_xrealloc(g->p, cap * sizeof(*g->p));
		g->capp = cap;
	}
	return g->p;
}

static void
group_free(struct group *g)
{
	size_t i, j;

	for (i = 0; i < g->nitems; i++)
		free(g->items[i].out.p);
	for (i = 0; i < g->nprofs; i++) {
		struct gprof *pr = &g->profs[i];
		free(pr->tier);
		free(pr->tier0);
		for (j = 0; j < pr->nbals; j++)
			free(pr->bals[j].name);
		free(pr->bals);
		free(pr->cnts);
		if (pr->vars != NULL)
			json_object_put(pr->vars);
		if (pr->vars_dirty != NULL)
			json_object_put(pr->vars_dirty);
	}
	free(g->items);
	free(g->keys);
	free(g->rows);
	free(g->idents);
	free(g->profs);
	free(g->ptab);
	free(g->ledger);
	free(g->defs);
	free(g->sets);
	free(g->tiers);
	free(g->p);
	memset(g, 0, sizeof(*g));
}

/* Views of the tenant's compiled rules and tiers for the engine. */
static void
build_defs(struct group *g)
{
	const struct conf_tenant *ct = g->ct;
	size_t i, j, nsets = 0, k = 0;

	for (i = 0; i < ct->nrules; i++)
		nsets += ct->rules[i].nsets;
	g->defs = ev_xcalloc(ct->nrules, sizeof(*g->defs));
	g->sets = ev_xcalloc(nsets, sizeof(*g->sets));
	g->tiers = ev_xcalloc(ct->ntiers, sizeof(*g->tiers));
	for (i = 0; i < ct->nrules; i++) {
		const struct conf_rule *cr = &ct->rules[i];
		struct rule_def        *d = &g->defs[i];
		d->id = cr->id;
		d->event = cr->event;
		d->when = cr->when;
		d->points = cr->points;
		d->balance = cr->balance;
		d->amount = cr->amount;
		d->sets = &g->sets[k];
		d->nsets = cr->nsets;
		for (j = 0; j < cr->nsets; j++, k++) {
			g->sets[k].name = cr->sets[j].name;
			g->sets[k].expr = cr->sets[j].expr;
		}
		d->per_profile = cr->per_profile;
		d->per_day = cr->per_day;
		d->per_month = cr->per_month;
		if (cr->per_profile > 0 || cr->per_day > 0 || cr->per_month > 0)
			g->want_cnts = 1;
		if (cr->nsets > 0 || rule_expr_reads_vars(cr->when) ||
		    rule_expr_reads_vars(cr->points) || rule_expr_reads_vars(cr->amount))
			g->want_vars = 1;
		d->stop = cr->stop;
		d->tier_multiplier = cr->tier_multiplier;
	}
	for (i = 0; i < ct->ntiers; i++) {
		g->tiers[i].name = ct->tiers[i].name;
		g->tiers[i].min_lifetime = ct->tiers[i].min_lifetime;
		g->tiers[i].multiplier = ct->tiers[i].multiplier;
	}
}

/* The tier of a lifetime, NULL with no tiers (or none reached). */
static const char *
tier_name_for(const struct group *g, int64_t lifetime)
{
	const struct rule_tier *tr;

	if (g->ct == NULL || g->ct->ntiers == 0)
		return NULL;
	tr = rule_tier_for(g->tiers, g->ct->ntiers, lifetime);
	return tr != NULL ? tr->name : NULL;
}

/* Does the engine run for this event (a rule listens to its type, or
 * there are tiers to keep)? */
static int
rules_run_for(const struct conf_tenant *ct, const struct ev_event *ev)
{
	size_t i;

	if (ct == NULL)
		return 0;
	if (ct->ntiers > 0)
		return 1;
	for (i = 0; i < ct->nrules; i++)
		if (strcmp(ct->rules[i].event, ev->type) == 0)
			return 1;
	return 0;
}

/* "dYYYY-MM-DD" and "mYYYY-MM" of the event's occurredAt in UTC. */
static void
periods(int64_t us, char day[16], char month[16])
{
	char iso[32];

	ts_format(us, iso);
	snprintf(day, 16, "d%.10s", iso);
	snprintf(month, 16, "m%.7s", iso);
}

/* Start group g with the items idx[0..m) of b (idx NULL: 0..m-1) that are
 * still to be answered (b->evs[i] not NULL). */
static void
group_init(struct group *g, struct db *db, const struct batch *b,
    const size_t *idx, size_t m)
{
	size_t k;

	memset(g, 0, sizeof(*g));
	g->db = db;
	g->t = b->t;
	g->ct = b->t->conf;
	g->items = ev_xcalloc(m, sizeof(*g->items));
	for (k = 0; k < m; k++) {
		size_t i = idx != NULL ? idx[k] : k;
		if (b->evs[i] == NULL)
			continue;
		g->items[g->nitems].i = i;
		g->items[g->nitems].ev = b->evs[i];
		g->nitems++;
	}
}

/* ---- lookups ---- */

static int
cmp_evkey(const struct ev_event *a, const struct ev_event *b)
{
	int c = strcmp(a->source, b->source);

	if (c == 0 && a->ext_id_len != b->ext_id_len)
		c = a->ext_id_len < b->ext_id_len ? -1 : 1;
	if (c == 0)
		c = memcmp(a->ext_id, b->ext_id, a->ext_id_len);
	return c;
}

static int
qcmp_key(const void *a, const void *b)
{
	return cmp_evkey(((const struct gkey *)a)->ev, ((const struct gkey *)b)->ev);
}

/* The key of (source, ext_id), or NULL. keys are sorted. */
static struct gkey *
find_key(struct group *g, const char *source, const char *ext, size_t extlen)
{
	struct ev_event probe;
	struct gkey     k, *r;

	memset(&probe, 0, sizeof(probe));
	probe.source = (char *)(uintptr_t)source;
	probe.ext_id = (char *)(uintptr_t)ext;
	probe.ext_id_len = extlen;
	k.ev = &probe;
	r = bsearch(&k, g->keys, g->nkeys, sizeof(*g->keys), qcmp_key);
	return r;
}

static int
qcmp_ident(const void *a, const void *b)
{
	const struct gident *x = a, *y = b;

	if (x->type != y->type)
		return x->type < y->type ? -1 : 1;
	return strcmp(x->value, y->value);
}

static struct gident *
find_ident(struct group *g, int type, const char *value)
{
	struct gident k;

	k.type = type;
	k.value = value;
	return bsearch(&k, g->idents, g->nidents, sizeof(*g->idents), qcmp_ident);
}

/*
 * The profiles by database id: open addressing over g->ptab (profile
 * index + 1, 0 for empty), at most half full. A batch reads a row per
 * identity and per balance of up to 1000 profiles: a scan of the profiles
 * per row was a quarter of its worker's time while it held their locks.
 */
static size_t *
ptab_slot(const struct group *g, int64_t pid)
{
	size_t mask = g->captab - 1;
	size_t h = (size_t)(((uint64_t)pid * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & mask;

	while (g->ptab[h] != 0 && g->profs[g->ptab[h] - 1].pid != pid)
		h = (h + 1) & mask;
	return &g->ptab[h];
}

/* The profile with database id pid (index + 1), 0 when not in the group. */
static size_t
find_prof(const struct group *g, int64_t pid)
{
	return g->captab == 0 ? 0 : *ptab_slot(g, pid);
}

/* Profile pi (index + 1) has database id pid. */
static void
prof_set_pid(struct group *g, size_t pi, int64_t pid)
{
	size_t i;

	g->profs[pi - 1].pid = pid;
	if (2 * g->nprofs > g->captab) {
		free(g->ptab);
		g->captab = g->captab ? g->captab : 64;
		while (g->captab < 2 * g->nprofs)
			g->captab *= 2;
		g->ptab = ev_xcalloc(g->captab, sizeof(*g->ptab));
		for (i = 0; i < g->nprofs; i++)
			if (g->profs[i].pid != 0)
				*ptab_slot(g, g->profs[i].pid) = i + 1;
	}
	*ptab_slot(g, pid) = pi;
}

static size_t
add_prof(struct group *g)
{
	if (g->nprofs == g->capprofs) {
		g->capprofs = g->capprofs ? 2 * g->capprofs : 16;
		g->profs = ev_xrealloc(g->profs, g->capprofs * sizeof(*g->profs));
	}
	memset(&g->profs[g->nprofs], 0, sizeof(g->profs[0]));
	return ++g->nprofs;
}

static struct gbal *
prof_bal(struct gprof *pr, const char *name, int create)
{
	size_t i;

	for (i = 0; i < pr->nbals; i++)
		if (strcmp(pr->bals[i].name, name) == 0)
			return &pr->bals[i];
	if (!create)
		return NULL;
	pr->bals = ev_xrealloc(pr->bals, (pr->nbals + 1) * sizeof(*pr->bals));
	memset(&pr->bals[pr->nbals], 0, sizeof(*pr->bals));
	pr->bals[pr->nbals].name = ev_xstrdup(name);
	return &pr->bals[pr->nbals++];
}

static struct gcnt *
prof_cnt(struct gprof *pr, size_t rule, const char *period, int create)
{
	size_t i;

	for (i = 0; i < pr->ncnts; i++)
		if (pr->cnts[i].rule == rule && strcmp(pr->cnts[i].period, period) == 0)
			return &pr->cnts[i];
	if (!create)
		return NULL;
	pr->cnts = ev_xrealloc(pr->cnts, (pr->ncnts + 1) * sizeof(*pr->cnts));
	memset(&pr->cnts[pr->ncnts], 0, sizeof(*pr->cnts));
	pr->cnts[pr->ncnts].rule = rule;
	snprintf(pr->cnts[pr->ncnts].period, sizeof(pr->cnts[0].period), "%s", period);
	return &pr->cnts[pr->ncnts++];
}

/* ---- step 1: the keys ---- */

/* Distinct keys of the items (sorted), each item pointing at its key. */
static void
collect_keys(struct group *g)
{
	size_t k, n = 0;

	g->keys = ev_xcalloc(g->nitems, sizeof(*g->keys));
	for (k = 0; k < g->nitems; k++)
		g->keys[n++].ev = g->items[k].ev;
	qsort(g->keys, n, sizeof(*g->keys), qcmp_key);
	g->nkeys = 0;
	for (k = 0; k < n; k++)
		if (g->nkeys == 0 || cmp_evkey(g->keys[g->nkeys - 1].ev, g->keys[k].ev) != 0)
			g->keys[g->nkeys++] = g->keys[k];
	for (k = 0; k < g->nitems; k++) {
		struct ev_event *ev = g->items[k].ev;
		g->items[k].key = (size_t)(find_key(g, ev->source, ev->ext_id,
		    ev->ext_id_len) - g->keys);
	}
	g->rows = ev_xcalloc(g->nkeys, sizeof(*g->rows));
}

/* A stored event of a key, its columns from c on: id, public_id,
 * fingerprint, attempt, source, external_event_id. */
static void
key_row(struct group *g, const struct db_res *res, size_t r, size_t c)
{
	const struct db_cell *src = DB_CELL(res, r, c + 4), *ext = DB_CELL(res, r, c + 5);
	struct gkey          *key;
	struct gkeyrow       *row;

	if (src->v == NULL || ext->v == NULL || g->nrows == g->nkeys ||
	    (key = find_key(g, src->v, ext->v, ext->len)) == NULL || key->row != NULL)
		return;
	row = &g->rows[g->nrows++];
	key->row = row;
	row->id = db_cell_i64(DB_CELL(res, r, c));
	snprintf(row->public_id, sizeof(row->public_id), "%s",
	    DB_CELL(res, r, c + 1)->v ? DB_CELL(res, r, c + 1)->v : "");
	if ((row->fp_ok = DB_CELL(res, r, c + 2)->len == 32))
		memcpy(row->fp, DB_CELL(res, r, c + 2)->v, 32);
	if ((row->attempt_ok = DB_CELL(res, r, c + 3)->len == EV_ATTEMPT_LEN))
		memcpy(row->attempt, DB_CELL(res, r, c + 3)->v, EV_ATTEMPT_LEN);
}

/* Read the stored rows of the group's keys. */
static enum db_rc
read_keys(struct group *g)
{
	size_t     off, k, r;
	enum db_rc rc;

	for (off = 0; off < g->nkeys; off += DB_MULTI_MAX_ROWS) {
		size_t          n = g->nkeys - off < DB_MULTI_MAX_ROWS ?
		    g->nkeys - off : DB_MULTI_MAX_ROWS;
		struct db_param *p = gparams(g, 1 + 2 * n);
		struct db_res    res;

		p[0] = DBP_I64(g->t->id);
		for (k = 0; k < n; k++) {
			const struct ev_event *ev = g->keys[off + k].ev;
			p[1 + 2 * k] = DBP_CSTR(ev->source);
			p[2 + 2 * k] = DBP_STR(ev->ext_id, ev->ext_id_len);
		}
		if ((rc = db_exec_multi(g->db, DB_M_EVENT_KEYS, &n, p, 1 + 2 * n,
		    &res, NULL)) != DB_OK)
			return rc;
		for (r = 0; r < res.nrows; r++)
			key_row(g, &res, r, 0);
		db_res_free(&res);
	}
	return DB_OK;
}

/* Was the row stored by this very request (any transaction attempt of
 * it: the request bytes of its attempt token)? */
static int
row_of_request(const struct gkeyrow *row, const unsigned char *attempt)
{
	return attempt != NULL && row->attempt_ok &&
	    memcmp(row->attempt, attempt, EV_ATTEMPT_LEN - 1) == 0;
}

/*
 * Answer an item whose key is stored: duplicate or conflict, or accepted
 * when the row was stored by an earlier transaction attempt of this very
 * request (same request bytes of `attempt`, another attempt number) whose
 * COMMIT reply was lost. A row of the current attempt is an earlier item
 * of the same request: a duplicate.
 */
static enum db_rc
answer_stored(struct db *db, const struct gkeyrow *row, const struct ev_event *ev,
    const unsigned char *attempt, struct ev_result *res)
{
	int same = row->fp_ok && memcmp(row->fp, ev->fingerprint, 32) == 0;

	if (same && row_of_request(row, attempt) &&
	    row->attempt[EV_ATTEMPT_LEN - 1] != attempt[EV_ATTEMPT_LEN - 1])
		return answer_own(db, row->id, row->public_id, res);
	answer_existing(res, row->public_id, same);
	return DB_OK;
}

/*
 * Events found stored lately: a table shared by the workers of a machine
 * when the FastCGI front maps it (ev_recent_attach()), so that a client
 * sending an event again (retry loops, replayed files) is answered
 * duplicate from memory, with no statement at all. An entry names what one
 * database read found: the database as it is (ev_recent_key()), the
 * tenant, the key (source, externalEventId) and the payload's fingerprint
 * of the stored event, as 80 bits of a SHA-256 over all of them, and the
 * stored event's public id. So an entry only matches the same payload
 * under the same key against the same database; anything else (a
 * conflict, another database under the same URL, one restored from a
 * backup) misses it and takes the path through the database, which then
 * answers. An entry is only written for a row another request
 * committed: never for one this request wrote itself (a dry run or a
 * failed transaction rolls that back).
 *
 * A slot is 4 words. The first holds a sequence number in its low 32
 * bits, odd while a writer fills the slot (a seqlock: a reader that sees
 * it change or odd takes it as a miss), and in its high 32 bits a tag of
 * the name the entry was put under (ev_recent_key()). Then 24 bytes: the
 * 10 bytes of the digest and the public id's 22 characters of 5 bits
 * packed in 14. Slots are in sets of EV_RECENT_WAYS (one set is 4 cache
 * lines); an entry may sit in either of two sets chosen by its digest,
 * and a new one takes a free slot of the first, else of the second, else
 * evicts one of either. A slot is free when empty or when its tag is not
 * the name's now: entries put before the database went back (or under a
 * database this URL named before) can never match again, and without
 * the tag they kept the whole table full, so that every new entry
 * evicted one still in use (the bench's 10,000 replayed events, in a
 * table left by an earlier run: a quarter of them were read from the
 * database again in every round).
 */
static struct ev_recent_slot *recent;
static size_t                 nrecent;
static struct ev_recent_head *recent_head;

void
ev_recent_attach(struct ev_recent_slot *slots, size_t n,
    struct ev_recent_head *head)
{
	recent = slots;
	nrecent = slots != NULL && head != NULL ? n - n % EV_RECENT_WAYS : 0;
	recent_head = head;
}

/* The highest events.id + 1 seen rises to at least v. */
static void
hwm_raise(uint64_t v)
{
	uint64_t hwm = atomic_load(&recent_head->hwm);

	while (hwm < v && !atomic_compare_exchange_weak(&recent_head->hwm, &hwm, v))
		;
}

uint64_t
ev_recent_key(uint64_t inst, uint64_t max_event)
{
	uint64_t hwm, gen, k;

	if (nrecent == 0 || inst == 0)
		return 0;
	for (;;) {
		hwm = atomic_load(&recent_head->hwm);
		if (max_event == 0 || max_event == hwm)
			break;
		if (atomic_compare_exchange_strong(&recent_head->hwm, &hwm,
		    max_event)) {
			/* gone back: a new generation from this point on (a
			 * read older than a remembered event, raced with its
			 * entry, starts one too: that only empties the table) */
			if (max_event < hwm)
				atomic_fetch_add(&recent_head->gen, 1);
			break;
		}
	}
	gen = atomic_load(&recent_head->gen);
	k = (inst ^ (gen * 0x9e3779b97f4a7c15u)) * 0xff51afd7ed558ccdu;
	return k != 0 ? k : 1;
}

#define RECENT_DIGEST 10
#define RECENT_ID     22        /* public id characters after "evt_" */

/* SHA-256 of (instance, tenant, source, externalEventId, fingerprint),
 * each of its length; -1 for a key too long for the buffer (not kept). */
static int
recent_digest(uint64_t inst, int64_t tenant, const struct ev_event *ev,
    const unsigned char fp[32], unsigned char out[32])
{
	unsigned char buf[8 + 8 + 2 + 256 + 2 + 1024 + 32];
	size_t        n = 0, slen = strlen(ev->source), i;

	if (slen > 256 || ev->ext_id_len > 1024)
		return -1;
	for (i = 0; i < 8; i++)
		buf[n++] = (unsigned char)(inst >> (8 * i));
	for (i = 0; i < 8; i++)
		buf[n++] = (unsigned char)((uint64_t)tenant >> (8 * i));
	buf[n++] = (unsigned char)(slen >> 8);
	buf[n++] = (unsigned char)slen;
	memcpy(buf + n, ev->source, slen);
	n += slen;
	buf[n++] = (unsigned char)(ev->ext_id_len >> 8);
	buf[n++] = (unsigned char)ev->ext_id_len;
	memcpy(buf + n, ev->ext_id, ev->ext_id_len);
	n += ev->ext_id_len;
	memcpy(buf + n, fp, 32);
	n += 32;
	ev_sha256(buf, n, out);
	return 0;
}

/* The first slot of the digest's set number which (0 or 1: an entry may
 * sit in either of two sets, so that a set given more than its share
 * overflows into another), from digest bytes not stored. */
static size_t
recent_set(const unsigned char d[32], int which)
{
	uint64_t h = 0;
	size_t   i;

	for (i = 0; i < 8; i++)
		h = h << 8 | d[RECENT_DIGEST + 8 * (size_t)which + i];
	return (size_t)(h % (nrecent / EV_RECENT_WAYS)) * EV_RECENT_WAYS;
}

/* The 24 bytes of an entry as 3 words. */
static void
recent_words(const unsigned char b[24], uint64_t w[3])
{
	size_t i;

	for (i = 0; i < 24; i++)
		w[i / 8] = (i % 8 == 0 ? 0 : w[i / 8] << 8) | b[i];
}

#define SEQ_MASK 0xffffffffu

/* The tag of the name inst (ev_recent_key()) in a slot's first word. */
static uint64_t
recent_tag(uint64_t inst)
{
	return (inst ^ (inst >> 32)) << 32;
}

/* May a slot whose first word is seq take a new entry under tag? */
static int
slot_free(uint64_t seq, uint64_t tag)
{
	return (seq & SEQ_MASK) == 0 ||
	    (!(seq & 1) && (seq & ~(uint64_t)SEQ_MASK) != tag);
}

/* Read slot s: 0 and its 3 payload words when it held one entry put
 * under tag all the time, -1 when empty, of another name, being written,
 * or written meanwhile. */
static int
slot_read(struct ev_recent_slot *s, uint64_t tag, uint64_t w[3])
{
	uint64_t seq = atomic_load_explicit(&s->w[0], memory_order_acquire);
	size_t   i;

	if ((seq & SEQ_MASK) == 0 || (seq & 1) || (seq & ~(uint64_t)SEQ_MASK) != tag)
		return -1;
	for (i = 0; i < 3; i++)
		w[i] = atomic_load_explicit(&s->w[i + 1], memory_order_relaxed);
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&s->w[0], memory_order_relaxed) == seq ? 0 : -1;
}

/* Write slot s under tag, unless another writer holds it (the entry is
 * then lost: a later duplicate only takes the longer path). The sequence
 * number only grows (its 32 bits wrap after 2^31 writes of one slot,
 * past 0, which means empty), so a reader never takes a slot rewritten
 * while it read for the one it began with. */
static void
slot_write(struct ev_recent_slot *s, uint64_t tag, const uint64_t w[3])
{
	uint64_t seq = atomic_load_explicit(&s->w[0], memory_order_relaxed);
	uint64_t n = (seq & SEQ_MASK) + 2;
	size_t   i;

	if ((n & SEQ_MASK) == 0)
		n = 2;
	if ((seq & 1) || !atomic_compare_exchange_strong_explicit(&s->w[0], &seq,
	    tag | (n - 1), memory_order_relaxed, memory_order_relaxed))
		return;
	atomic_thread_fence(memory_order_release);
	for (i = 0; i < 3; i++)
		atomic_store_explicit(&s->w[i + 1], w[i], memory_order_relaxed);
	atomic_store_explicit(&s->w[0], tag | n, memory_order_release);
}

void
ev_recent_put(uint64_t inst, int64_t tenant, const struct ev_event *ev,
    const unsigned char fp[32], const char *public_id, uint64_t row_id)
{
	unsigned char d[32], b[24];
	uint64_t      w[3], x[3], tag = recent_tag(inst);
	size_t        set, k, bit = 0, victim;
	int           v;

	if (nrecent == 0 || inst == 0 || public_id == NULL ||
	    strncmp(public_id, "evt_", 4) != 0 || strlen(public_id) != 4 + RECENT_ID ||
	    recent_digest(inst, tenant, ev, fp, d) != 0)
		return;
	memset(b, 0, sizeof(b));
	memcpy(b, d, RECENT_DIGEST);
	for (k = 0; k < RECENT_ID; k++) {
		if ((v = ev_b32_value((unsigned char)public_id[4 + k])) < 0)
			return;
		for (int j = 4; j >= 0; j--, bit++)
			if ((v >> j) & 1)
				b[RECENT_DIGEST + bit / 8] |= (unsigned char)(0x80 >> (bit % 8));
	}
	recent_words(b, w);
	/* a free slot of the first set, else of the second, else one of
	 * either chosen by the digest */
	victim = recent_set(d, d[RECENT_DIGEST + 16] & 1) +
	    d[RECENT_DIGEST + 17] % EV_RECENT_WAYS;
	for (int which = 1; which >= 0; which--) {
		set = recent_set(d, which);
		for (k = set + EV_RECENT_WAYS; k-- > set; ) {
			if (slot_read(&recent[k], tag, x) == 0 &&
			    memcmp(x, w, sizeof(x)) == 0)
				return;
			if (slot_free(atomic_load_explicit(&recent[k].w[0],
			    memory_order_relaxed), tag))
				victim = k;
		}
	}
	slot_write(&recent[victim], tag, w);
	/* the highest id seen includes every event remembered, so losing
	 * the newest of them shows (ev_recent_key()) */
	hwm_raise(row_id + 1);
}

int
ev_recent_on(void)
{
	return nrecent > 0;
}

int
ev_recent_find(uint64_t inst, int64_t tenant, const struct ev_event *ev,
    char public_id[32])
{
	unsigned char d[32], b[24], want[24];
	uint64_t      w[3], dw[3], tag = recent_tag(inst);
	size_t        k, i, bit, set[2];

	if (nrecent == 0 || inst == 0 ||
	    recent_digest(inst, tenant, ev, ev->fingerprint, d) != 0)
		return 0;
	/* the digest's bits of the first two words, to compare */
	memset(want, 0, sizeof(want));
	memcpy(want, d, RECENT_DIGEST);
	recent_words(want, dw);
	set[0] = recent_set(d, 0);
	set[1] = recent_set(d, 1);
	for (k = 0; k < 2 * EV_RECENT_WAYS; k++) {
		size_t slot = set[k / EV_RECENT_WAYS] + k % EV_RECENT_WAYS;
		if (slot_read(&recent[slot], tag, w) != 0 || w[0] != dw[0] ||
		    (w[1] & 0xffff000000000000u) != dw[1])
			continue;
		for (i = 0; i < 24; i++)
			b[i] = (unsigned char)(w[i / 8] >> (8 * (7 - i % 8)));
		memcpy(public_id, "evt_", 4);
		for (i = 0, bit = 0; i < RECENT_ID; i++) {
			int v = 0, j;
			for (j = 0; j < 5; j++, bit++)
				v = v << 1 | ((b[RECENT_DIGEST + bit / 8] >> (7 - bit % 8)) & 1);
			public_id[4 + i] = ev_b32_alphabet[v];
		}
		public_id[4 + RECENT_ID] = '\0';
		return 1;
	}
	return 0;
}

/* Answer the items whose key is stored; they take no further part. */
static enum db_rc
answer_keys(struct group *g, struct batch *b)
{
	size_t     k;
	enum db_rc rc;

	for (k = 0; k < g->nitems; k++) {
		struct gitem         *it = &g->items[k];
		const struct gkeyrow *row = g->keys[it->key].row;
		if (row == NULL || it->done)
			continue;
		if ((rc = answer_stored(g->db, row, it->ev, b->attempt,
		    &b->res[it->i])) != DB_OK)
			return rc;
		/* the stored event, as committed by another request (a row of
		 * this one's own attempts may yet be rolled back) */
		if (row->fp_ok && !row_of_request(row, b->attempt))
			ev_recent_put(b->inst, g->t->id, it->ev, row->fp, row->public_id,
			    (uint64_t)row->id);
		it->done = 1;
	}
	return DB_OK;
}

/* ---- step 2: identities ---- */

static void
collect_idents(struct group *g)
{
	size_t k, t, n = 0;

	g->idents = ev_xcalloc(g->nitems * IDENT__MAX, sizeof(*g->idents));
	for (k = 0; k < g->nitems; k++)
		for (t = 0; t < IDENT__MAX; t++)
			if (!g->items[k].done && g->items[k].ev->ident[t] != NULL) {
				g->idents[n].type = (int)t;
				g->idents[n].value = g->items[k].ev->ident[t];
				n++;
			}
	qsort(g->idents, n, sizeof(*g->idents), qcmp_ident);
	g->nidents = 0;
	for (k = 0; k < n; k++)
		if (g->nidents == 0 || qcmp_ident(&g->idents[g->nidents - 1],
		    &g->idents[k]) != 0)
			g->idents[g->nidents++] = g->idents[k];
}

/* Take an 'i' row (DB_M_IDENT_LOCK layout, or DB_M_IDENT_STATE_LOCK's
 * with a balance of the profile in columns 7 to 9) into the group. */
static void
ident_row(struct group *g, const struct db_res *res, size_t r)
{
	int64_t        type = db_cell_i64(DB_CELL(res, r, 1));
	int64_t        pid = db_cell_i64(DB_CELL(res, r, 3));
	const char    *val = DB_CELL(res, r, 2)->v;
	struct gident *id;
	size_t         pi;

	if (type < 0 || type >= IDENT__MAX || val == NULL ||
	    (id = find_ident(g, (int)type, val)) == NULL)
		return;
	if ((pi = find_prof(g, pid)) == 0) {
		struct gprof *pr;
		pi = add_prof(g);
		prof_set_pid(g, pi, pid);
		pr = &g->profs[pi - 1];
		snprintf(pr->public_id, sizeof(pr->public_id), "%s",
		    DB_CELL(res, r, 4)->v ? DB_CELL(res, r, 4)->v : "");
		pr->tier = ev_xstrdup(DB_CELL(res, r, 5)->v);
		pr->tier0 = ev_xstrdup(pr->tier);
	}
	if (DB_CELL(res, r, 6)->v != NULL)
		g->profs[pi - 1].has_external = 1;
	if (res->ncols >= 10 && DB_CELL(res, r, 7)->v != NULL) {
		struct gbal *b = prof_bal(&g->profs[pi - 1], DB_CELL(res, r, 7)->v, 1);
		b->balance = db_cell_i64(DB_CELL(res, r, 8));
		b->lifetime = db_cell_i64(DB_CELL(res, r, 9));
	}
	id->prof = pi;
}

static void state_row(struct group *, const struct db_res *, size_t, int);
static size_t collect_periods(struct group *, char (**)[16]);

/*
 * Identities locked per statement. With a longer list the optimizer may
 * prefer reading all of the tenant's identities (a `ref` on tenant_id)
 * to hundreds of ranges once the list is a good part of the tenant (seen
 * from 400 of 2000), and a locking read then waits on rows nobody asked
 * for. The chunks are taken in key order, so the global lock order holds.
 */
#define LOCK_IDENTS 128

/* Identities up to which the lock and the state are read in one round
 * trip: the merged statement repeats the identity list up to three times, which
 * is cheap for a few events and only costs memory for a large batch (whose
 * one extra round trip does not matter). */
#define MERGED_IDENTS 16

/* Keys up to which a group not checked before its transaction reads them
 * with the locks (DB_M_IDENT_STATE_LOCK): a single event, or a few. */
#define MERGED_KEYS 16

/*
 * Lock the identities' profiles and learn their bindings. When the group
 * runs rules, or with keys (at most MERGED_KEYS keys, a configured
 * tenant), and has at most MERGED_IDENTS identities, the profiles' state,
 * then the keys' stored rows, come in the same round trip
 * (DB_M_IDENT_STATE_LOCK) and *state_done is set.
 */
static enum db_rc
lock_idents(struct group *g, int *state_done, int keys)
{
	char      (*per)[16] = NULL;
	size_t     off, k, r, nper = 0, run = 0;
	enum db_rc rc = DB_OK;

	*state_done = 0;
	for (k = 0; g->ct != NULL && k < g->nitems; k++)
		run += !g->items[k].done && g->items[k].runs;
	if ((run > 0 || keys) && g->nidents <= MERGED_IDENTS &&
	    (nper = collect_periods(g, &per)) <= DB_MULTI_MAX_ROWS &&
	    g->nidents > 0) {
		size_t           n = g->nidents, nk = keys ? g->nkeys : 0, x = 0, part;
		/* the parts of the state the rules need (the balances come
		 * with the identities) */
		size_t           counts[5] = { n, run && g->want_vars ? n : 0,
		    run && g->want_cnts ? n : 0, nper, nk };
		struct db_param *p = gparams(g, 3 * (1 + 2 * n) + nper + 1 + 2 * nk);
		struct db_res    res;

		for (part = 0; part < 3; part++) {
			if (counts[part] == 0)
				continue;
			p[x++] = DBP_I64(g->t->id);
			for (k = 0; k < n; k++) {
				p[x++] = DBP_I64(g->idents[k].type);
				p[x++] = DBP_CSTR(g->idents[k].value);
			}
		}
		for (k = 0; counts[2] > 0 && k < nper; k++)
			p[x++] = DBP_CSTR(per[k]);
		if (nk > 0) {
			p[x++] = DBP_I64(g->t->id);
			for (k = 0; k < nk; k++) {
				p[x++] = DBP_CSTR(g->keys[k].ev->source);
				p[x++] = DBP_STR(g->keys[k].ev->ext_id, g->keys[k].ev->ext_id_len);
			}
		}
		rc = db_exec_multi(g->db, DB_M_IDENT_STATE_LOCK, counts, p, x, &res,
		    NULL);
		free(per);       /* the parameters pointed into it */
		if (rc != DB_OK)
			return rc;
		/* the profiles first, then their state and the keys */
		for (r = 0; r < res.nrows; r++)
			if (DB_CELL(&res, r, 0)->v != NULL && DB_CELL(&res, r, 0)->v[0] == 'i')
				ident_row(g, &res, r);
		for (r = 0; r < res.nrows; r++) {
			const char *kind = DB_CELL(&res, r, 0)->v;
			if (kind != NULL && kind[0] == 'k')
				key_row(g, &res, r, 1);
			else if (kind != NULL && kind[0] != 'i')
				state_row(g, &res, r, 1);
		}
		db_res_free(&res);
		*state_done = 1;
		return DB_OK;
	}
	free(per);
	for (off = 0; off < g->nidents; off += LOCK_IDENTS) {
		size_t           n = g->nidents - off < LOCK_IDENTS ?
		    g->nidents - off : LOCK_IDENTS;
		struct db_param *p = gparams(g, 1 + 2 * n);
		struct db_res    res;

		p[0] = DBP_I64(g->t->id);
		for (k = 0; k < n; k++) {
			p[1 + 2 * k] = DBP_I64(g->idents[off + k].type);
			p[2 + 2 * k] = DBP_CSTR(g->idents[off + k].value);
		}
		if ((rc = db_exec_multi(g->db, DB_M_IDENT_LOCK, &n, p, 1 + 2 * n,
		    &res, NULL)) != DB_OK)
			return rc;
		for (r = 0; r < res.nrows; r++)
			ident_row(g, &res, r);
		db_res_free(&res);
	}
	return DB_OK;
}

/* ---- step 3: resolution ---- */

/*
 * API.md §3 for one item, against the bindings known so far: the
 * highest-precedence identity found gives the candidate; a new
 * externalUserId never joins a profile that has another; with no candidate
 * a profile is pre-provisioned (or identity_not_found when the tenant does
 * not create profiles); unbound identities are bound to the profile.
 * 0, -1 when the item was answered with an error, -2 when no random
 * public id could be made.
 */
static int
resolve_item(struct group *g, struct gitem *it, struct ev_result *res)
{
	const struct ev_event *ev = it->ev;
	struct gident         *id[IDENT__MAX];
	size_t                 t, cand = 0;
	int auto_create = g->ct == NULL || g->ct->auto_create_profiles;

	for (t = 0; t < IDENT__MAX; t++) {
		id[t] = ev->ident[t] ? find_ident(g, (int)t, ev->ident[t]) : NULL;
		it->found[t] = id[t] != NULL ? id[t]->prof : 0;
		if (cand == 0 && it->found[t] != 0)
			cand = it->found[t];
	}
	if (cand != 0 && ev->ident[IDENT_EXTERNAL] != NULL &&
	    it->found[IDENT_EXTERNAL] == 0 && g->profs[cand - 1].has_external)
		cand = 0;
	if (cand == 0) {
		struct gprof *pr;
		if (!auto_create) {
			struct ev_verr verr;
			ev_verr_set(&verr, EV_IDENTITY_NOT_FOUND,
			    "no profile has these identities and this tenant does"
			    " not create profiles automatically");
			ev_result_error(res, &verr);
			return -1;
		}
		cand = add_prof(g);
		pr = &g->profs[cand - 1];
		pr->created = 1;
		pr->tier = ev_xstrdup(tier_name_for(g, 0));
		pr->tier0 = ev_xstrdup(pr->tier);
		if (ev_public_id("prf_", pr->public_id) != 0)
			return -2;   /* no randomness */
		it->created = 1;
	}
	it->prof = cand;
	for (t = 0; t < IDENT__MAX; t++) {
		if (id[t] == NULL || id[t]->prof != 0)
			continue;
		id[t]->prof = cand;
		id[t]->insert = 1;
		if (t == IDENT_EXTERNAL)
			g->profs[cand - 1].has_external = 1;
	}
	return 0;
}

/* ---- step 4: new profiles and bindings ---- */

static enum db_rc
insert_profiles(struct group *g)
{
	size_t     k, n = 0, r;
	size_t    *todo = ev_xcalloc(g->nprofs, sizeof(*todo));
	enum db_rc rc = DB_OK;

	for (k = 0; k < g->nprofs; k++)
		if (g->profs[k].created)
			todo[n++] = k;
	for (k = 0; k < n && rc == DB_OK; ) {
		size_t           m = n - k < DB_MULTI_MAX_ROWS ? n - k : DB_MULTI_MAX_ROWS;
		struct db_param *p = gparams(g, 3 * m);
		struct db_res    res;
		size_t           j;

		for (j = 0; j < m; j++) {
			struct gprof *pr = &g->profs[todo[k + j]];
			p[3 * j] = DBP_I64(g->t->id);
			p[3 * j + 1] = DBP_CSTR(pr->public_id);
			p[3 * j + 2] = pr->tier ? DBP_CSTR(pr->tier) : DBP_NULL;
		}
		rc = db_exec_multi(g->db, DB_M_PROFILE_INSERT, &m, p, 3 * m, &res, NULL);
		if (rc == DB_DUPKEY)
			rc = DB_RETRY;    /* public id collision: run again */
		if (rc != DB_OK)
			break;
		/* RETURNING gives the rows in VALUES order */
		for (r = 0, j = 0; r < res.nrows; r++) {
			const char *pub = DB_CELL(&res, r, 1)->v;
			while (j < m && pub != NULL &&
			    strcmp(g->profs[todo[k + j]].public_id, pub) != 0)
				j++;
			if (j == m)
				break;
			prof_set_pid(g, todo[k + j] + 1, db_cell_i64(DB_CELL(&res, r, 0)));
			j++;
		}
		db_res_free(&res);
		for (j = 0; j < m; j++)
			if (g->profs[todo[k + j]].pid == 0) {
				fprintf(stderr, "rfevents: a new profile came back without its id\n");
				rc = DB_ERROR;
			}
		k += m;
	}
	free(todo);
	return rc;
}

static enum db_rc
insert_idents(struct group *g)
{
	size_t     k, n = 0;
	size_t    *todo = ev_xcalloc(g->nidents, sizeof(*todo));
	enum db_rc rc = DB_OK;

	for (k = 0; k < g->nidents; k++)
		if (g->idents[k].insert)
			todo[n++] = k;
	for (k = 0; k < n && rc == DB_OK; ) {
		size_t           m = n - k < DB_MULTI_MAX_ROWS ? n - k : DB_MULTI_MAX_ROWS;
		struct db_param *p = gparams(g, 5 * m);
		size_t           j;

		for (j = 0; j < m; j++) {
			const struct gident *id = &g->idents[todo[k + j]];
			int64_t pid = g->profs[id->prof - 1].pid;
			p[5 * j] = DBP_I64(g->t->id);
			p[5 * j + 1] = DBP_I64(id->type);
			p[5 * j + 2] = DBP_CSTR(id->value);
			p[5 * j + 3] = DBP_I64(pid);
			p[5 * j + 4] = id->type == IDENT_EXTERNAL ? DBP_I64(pid) : DBP_NULL;
		}
		rc = db_exec_multi(g->db, DB_M_IDENT_INSERT, &m, p, 5 * m, NULL, NULL);
		if (rc == DB_DUPKEY)
			rc = DB_RETRY;    /* bound meanwhile by another request */
		k += m;
	}
	free(todo);
	return rc;
}

/* A JSON value of the engine (a variable's value) into o. */
static void
value_text(struct ev_buf *o, const struct rule_value *v)
{
	json_object *j = rule_value_to_json(v, 12);

	ev_buf_str(o, j != NULL ? json_object_to_json_string_ext(j, JSON_FLAGS) : "null");
	json_object_put(j);
}

/* Open the next object of a JSON array in o: "," after the first (*n
 * counts them), "{" and its first member's key, head. */
static void
item_open(struct ev_buf *o, size_t *n, const char *head)
{
	if ((*n)++ > 0)
		ev_buf_put(o, ",", 1);
	ev_buf_put(o, "{", 1);
	ev_buf_str(o, head);
}

/*
 * The outcome object into o, written directly (a json-c tree per event
 * was a third of a batch's CPU): "{" and points_awarded, rules_applied,
 * rules_skipped, effects, tier (the engine's; with oc NULL the engine did
 * not run: an empty outcome and the profile's tier), without the closing
 * brace: outcome_end() adds the resolution's fields.
 */
static void
outcome_text(const struct group *g, const struct rule_outcome *oc,
    const char *tier, struct ev_buf *o)
{
	size_t i, n = 0;

	ev_buf_str(o, "{\"points_awarded\":");
	ev_buf_i64(o, oc != NULL ? oc->points_awarded : 0);
	ev_buf_str(o, ",\"rules_applied\":[");
	for (i = 0; oc != NULL && i < oc->napplied; i++) {
		if (i > 0)
			ev_buf_put(o, ",", 1);
		ev_buf_json_str(o, oc->applied[i].rule_id);
	}
	ev_buf_str(o, "],\"rules_skipped\":[");
	for (i = 0; oc != NULL && i < oc->nskipped; i++) {
		item_open(o, &n, "\"rule\":");
		ev_buf_json_str(o, oc->skipped[i].rule_id);
		ev_buf_str(o, ",\"reason\":");
		ev_buf_json_str(o, oc->skipped[i].reason);
		ev_buf_put(o, "}", 1);
	}
	ev_buf_str(o, "],\"effects\":[");
	n = 0;
	for (i = 0; oc != NULL && i < oc->ndeltas; i++) {
		item_open(o, &n, "\"type\":\"balance\",\"rule\":");
		ev_buf_json_str(o, oc->deltas[i].rule_id);
		ev_buf_str(o, ",\"balance\":");
		ev_buf_json_str(o, oc->deltas[i].balance);
		ev_buf_str(o, ",\"delta\":");
		ev_buf_i64(o, oc->deltas[i].delta);
		ev_buf_str(o, ",\"balance_after\":");
		ev_buf_i64(o, oc->deltas[i].balance_after);
		ev_buf_put(o, "}", 1);
	}
	for (i = 0; oc != NULL && i < oc->nassigns; i++) {
		item_open(o, &n, "\"type\":\"variable\",\"rule\":");
		ev_buf_json_str(o, oc->assigns[i].rule_id);
		ev_buf_str(o, ",\"name\":");
		ev_buf_json_str(o, oc->assigns[i].name);
		ev_buf_str(o, ",\"value\":");
		value_text(o, &oc->assigns[i].value);
		ev_buf_put(o, "}", 1);
	}
	if (oc != NULL && oc->tier_changed) {
		const char *cause = NULL;
		/* the rule whose points delta first brought the lifetime into
		 * the new tier (none when a configuration change moved it) */
		for (i = 0; i < oc->ndeltas && cause == NULL; i++) {
			const char *tn;
			if (strcmp(oc->deltas[i].balance, "points") != 0)
				continue;
			tn = tier_name_for(g, oc->deltas[i].lifetime_after);
			if (tn != NULL && oc->tier_after != NULL &&
			    strcmp(tn, oc->tier_after) == 0)
				cause = oc->deltas[i].rule_id;
		}
		item_open(o, &n, "\"type\":\"tier\",\"rule\":");
		ev_buf_json_str(o, cause);
		ev_buf_str(o, ",\"from\":");
		ev_buf_json_str(o, oc->tier_before);
		ev_buf_str(o, ",\"to\":");
		ev_buf_json_str(o, oc->tier_after);
		ev_buf_put(o, "}", 1);
	}
	if (oc != NULL)
		tier = oc->tier_after;
	ev_buf_str(o, "],\"tier\":");
	ev_buf_json_str(o, tier);
}

/* The end of an accepted item's outcome: identity_conflicts (given
 * identities bound to another profile: they stay there, profiles are
 * never merged automatically), profile_created and "}". */
static void
outcome_end(const struct group *g, struct gitem *it)
{
	size_t t, n = 0;

	ev_buf_str(&it->out, ",\"identity_conflicts\":[");
	for (t = 0; t < IDENT__MAX; t++) {
		if (it->ev->ident[t] == NULL || it->found[t] == 0 ||
		    it->found[t] == it->prof)
			continue;
		item_open(&it->out, &n, "\"type\":");
		ev_buf_json_str(&it->out, ident_type_name[t]);
		ev_buf_str(&it->out, ",\"value\":");
		ev_buf_json_str(&it->out, it->ev->ident[t]);
		ev_buf_str(&it->out, ",\"bound_to_profile_id\":");
		ev_buf_json_str(&it->out, g->profs[it->found[t] - 1].public_id);
		ev_buf_put(&it->out, "}", 1);
	}
	ev_buf_str(&it->out, it->created ? "],\"profile_created\":true}" :
	    "],\"profile_created\":false}");
}

/* ---- step 5: the state of the profiles found ---- */

/* Period strings of the items that run the rules, "all" first; only
 * "all" when no rule has a limit (no counter is read then). */
static size_t
collect_periods(struct group *g, char (**out)[16])
{
	char  (*per)[16] = ev_xcalloc(1 + 2 * g->nitems, sizeof(*per));
	size_t n = 1, k, j, q;

	snprintf(per[0], sizeof(per[0]), "all");
	for (k = 0; g->want_cnts && k < g->nitems; k++) {
		char two[2][16];
		if (g->items[k].done || !g->items[k].runs)
			continue;
		periods(g->items[k].ev->occurred_us, two[0], two[1]);
		for (q = 0; q < 2; q++) {
			for (j = 0; j < n && strcmp(per[j], two[q]) != 0; j++)
				;
			if (j == n)
				memcpy(per[n++], two[q], 16);
		}
	}
	*out = per;
	return n;
}

/* Take a state row ('b', 'v' or 'c' in the DB_M_STATE_OF layout) into
 * its profile; balances and variables only when with_bv. */
static void
state_row(struct group *g, const struct db_res *res, size_t r, int with_bv)
{
	const char   *kind = DB_CELL(res, r, 0)->v, *k1 = DB_CELL(res, r, 2)->v;
	size_t        pi = find_prof(g, db_cell_i64(DB_CELL(res, r, 3))), j;
	struct gprof *pr;

	if (kind == NULL || k1 == NULL || pi == 0)
		return;
	pr = &g->profs[pi - 1];
	if (kind[0] == 'b' && with_bv) {
		struct gbal *b = prof_bal(pr, k1, 1);
		b->balance = db_cell_i64(DB_CELL(res, r, 4));
		b->lifetime = db_cell_i64(DB_CELL(res, r, 5));
	} else if (kind[0] == 'v' && with_bv) {
		struct json_perr perr;
		json_object *v = json_parse_strict(DB_CELL(res, r, 4)->v,
		    DB_CELL(res, r, 4)->len, JSON_MAX_DEPTH, &perr);
		if (pr->vars == NULL)
			pr->vars = json_object_new_object();
		json_object_object_add(pr->vars, k1, v);
	} else if (kind[0] == 'c' && DB_CELL(res, r, 4)->v != NULL) {
		for (j = 0; j < g->ct->nrules; j++)
			if (strcmp(g->ct->rules[j].id, k1) == 0)
				prof_cnt(pr, j, DB_CELL(res, r, 4)->v, 1)->count =
				    db_cell_i64(DB_CELL(res, r, 5));
	}
}

/* Balances, variables and counters of the existing profiles whose items
 * run the rules, read after step 2 locked them. */
static enum db_rc
load_state(struct group *g)
{
	char      (*per)[16] = NULL;
	size_t    *ids = ev_xcalloc(g->nprofs, sizeof(*ids));
	size_t     nids = 0, nper, k, po, qo;
	enum db_rc rc = DB_OK;

	for (k = 0; k < g->nitems; k++) {
		struct gitem *it = &g->items[k];
		if (it->prof != 0 && it->runs)
			g->profs[it->prof - 1].want_state = 1;
	}
	for (k = 0; k < g->nprofs; k++)
		if (g->profs[k].want_state && !g->profs[k].created)
			ids[nids++] = k;
	nper = collect_periods(g, &per);
	for (po = 0; po < nids && rc == DB_OK; po += DB_MULTI_MAX_ROWS) {
		size_t np = nids - po < DB_MULTI_MAX_ROWS ? nids - po : DB_MULTI_MAX_ROWS;
		/* counters only when a rule has a limit: then one statement
		 * per chunk of periods */
		for (qo = 0; qo < (g->want_cnts ? nper : 1) && rc == DB_OK;
		    qo += DB_MULTI_MAX_ROWS) {
			size_t nq = nper - qo < DB_MULTI_MAX_ROWS ? nper - qo : DB_MULTI_MAX_ROWS;
			size_t counts[4] = { np, g->want_vars ? np : 0,
			    g->want_cnts ? np : 0, nq }, l, j, x = 0;
			struct db_param *p = gparams(g, 3 * np + nq);
			struct db_res    res;

			for (l = 0; l < 3; l++)
				for (j = 0; j < counts[l]; j++)
					p[x++] = DBP_I64(g->profs[ids[po + j]].pid);
			for (j = 0; counts[2] > 0 && j < nq; j++)
				p[x++] = DBP_CSTR(per[qo + j]);
			if ((rc = db_exec_multi(g->db, DB_M_STATE_OF, counts, p, x,
			    &res, NULL)) != DB_OK)
				break;
			/* balances and variables come with every period chunk */
			for (j = 0; j < res.nrows; j++)
				state_row(g, &res, j, qo == 0);
			db_res_free(&res);
		}
	}
	free(ids);
	free(per);
	return rc;
}

/* ---- step 6: the rules ---- */

/* Run the rules for an accepted item against its profile's state and
 * carry their effects into that state. */
static enum db_rc
run_rules(struct group *g, struct gitem *it)
{
	const struct conf_tenant *ct = g->ct;
	struct gprof             *pr = &g->profs[it->prof - 1];
	struct rule_env           env;
	struct rule_outcome       oc;
	struct rule_balance      *bals;
	struct rule_count        *counts;
	size_t                    i, j;
	char                      occ[32], day[16], month[16];
	int                       ran;

	if (!it->runs) {
		outcome_text(g, NULL, pr->tier, &it->out);
		return DB_OK;
	}
	periods(it->ev->occurred_us, day, month);
	bals = ev_xcalloc(pr->nbals, sizeof(*bals));
	for (i = 0; i < pr->nbals; i++) {
		bals[i].name = pr->bals[i].name;
		bals[i].balance = pr->bals[i].balance;
		bals[i].lifetime = pr->bals[i].lifetime;
	}
	counts = ev_xcalloc(ct->nrules, sizeof(*counts));
	for (i = 0; i < pr->ncnts; i++) {
		const struct gcnt *c = &pr->cnts[i];
		if (strcmp(c->period, "all") == 0)
			counts[c->rule].ever = c->count;
		else if (strcmp(c->period, day) == 0)
			counts[c->rule].day = c->count;
		else if (strcmp(c->period, month) == 0)
			counts[c->rule].month = c->count;
	}
	memset(&env, 0, sizeof(env));
	env.properties = it->ev->properties;
	env.event_type = it->ev->type;
	env.event_source = it->ev->source;
	env.event_occurred_at = ts_format(it->ev->occurred_us, occ);
	env.tier = pr->tier;
	env.balances = bals;
	env.nbalances = pr->nbals;
	env.vars = pr->vars;
	ran = rule_engine_run(g->defs, ct->nrules, g->tiers, ct->ntiers,
	    (enum rule_rounding)ct->rounding, &env, counts, &oc) == 0;
	free(counts);
	if (!ran) {
		free(bals);
		return DB_ERROR;
	}
	outcome_text(g, &oc, pr->tier, &it->out);

	/* the effects, into the profile's state and the ledger */
	for (i = 0; i < oc.ndeltas; i++) {
		const struct rule_delta *d = &oc.deltas[i];
		struct gbal             *b = prof_bal(pr, d->balance, 1);
		struct gledger          *l;
		b->balance = d->balance_after;
		b->lifetime = d->lifetime_after;
		b->dirty = 1;
		if (g->nledger == g->capledger) {
			g->capledger = g->capledger ? 2 * g->capledger : 64;
			g->ledger = ev_xrealloc(g->ledger,
			    g->capledger * sizeof(*g->ledger));
		}
		l = &g->ledger[g->nledger++];
		l->item = (size_t)(it - g->items);
		l->seq = i;
		/* both point into the rules or the group's balances: they
		 * live as long as the group */
		l->rule_id = d->rule_id;
		l->balance = b->name;
		l->delta = d->delta;
		l->balance_after = d->balance_after;
	}
	for (i = 0; i < oc.nassigns; i++) {
		json_object *v = rule_value_to_json(&oc.assigns[i].value, 12);
		if (pr->vars == NULL)
			pr->vars = json_object_new_object();
		if (pr->vars_dirty == NULL)
			pr->vars_dirty = json_object_new_object();
		json_object_object_add(pr->vars, oc.assigns[i].name, v);
		json_object_object_add(pr->vars_dirty, oc.assigns[i].name,
		    json_object_get(v));
	}
	for (i = 0; i < oc.napplied; i++) {
		const struct conf_rule *cr = &ct->rules[oc.applied[i].index];
		const char *per[3] = { NULL, NULL, NULL };
		if (cr->per_profile > 0)
			per[0] = "all";
		if (cr->per_day > 0)
			per[1] = day;
		if (cr->per_month > 0)
			per[2] = month;
		for (j = 0; j < 3; j++) {
			struct gcnt *c;
			if (per[j] == NULL)
				continue;
			c = prof_cnt(pr, oc.applied[i].index, per[j], 1);
			c->count++;      /* what the next item of the profile sees */
			c->add++;        /* what this group writes */
		}
	}
	if (oc.tier_after != pr->tier &&
	    (oc.tier_after == NULL || pr->tier == NULL || strcmp(oc.tier_after, pr->tier) != 0)) {
		char *nt = ev_xstrdup(oc.tier_after);
		free(pr->tier);
		pr->tier = nt;
	}
	rule_outcome_free(&oc);
	free(bals);
	return DB_OK;
}

/* ---- step 7: the writes ---- */

/*
 * Rows per multi-row INSERT of events and of ledger rows. Their statements
 * carry many parameters per row, and the client library keeps a bind
 * structure per parameter of a prepared statement (and builds the whole
 * packet in memory): 200 events per statement cost 4 more round trips per
 * 1000-event batch (well under 1 ms) and save about 5 MB of peak memory.
 */
#define EVENT_ROWS  200
#define LEDGER_ROWS 400

/* The id of the HTTP request that sent ev: its own when requests share
 * the call (ev_event.request_id), else the call's reqid; NULL: none. */
static const char *
event_reqid(const struct ev_event *ev, const char *reqid)
{
	return ev->request_id != NULL ? ev->request_id : reqid;
}

/* The 14 parameters of item it's event (SQL_EVENT_ROW) at q. */
static void
event_params(struct group *g, const struct gitem *it, struct db_param *q,
    const unsigned char *attempt, const char *reqid, struct ev_result *res,
    struct evtext *text)
{
	const struct ev_event *ev = it->ev;
	const char            *rid = event_reqid(ev, reqid);

	text_make(&text[it->i], ev);
	q[0] = DBP_I64(g->t->id);
	q[1] = DBP_CSTR(ev->source);
	q[2] = DBP_STR(ev->ext_id, ev->ext_id_len);
	q[3] = DBP_CSTR(res[it->i].event_id);
	q[4] = DBP_STR((const char *)ev->fingerprint, 32);
	q[5] = DBP_CSTR(ev->type);
	q[6] = DBP_CSTR(text[it->i].occ);
	q[7] = DBP_CSTR(text[it->i].rec);
	q[8] = DBP_CSTR(text[it->i].doc);
	q[9] = DBP_CSTR(rid != NULL ? rid : "");
	q[10] = DBP_I64(g->profs[it->prof - 1].pid);
	q[11] = DBP_STR(it->out.p, it->out.len);
	q[12] = DBP_CSTR(g->ct != NULL ? g->ct->version : "");
	q[13] = DBP_STR((const char *)attempt, EV_ATTEMPT_LEN);
}

/* The events with their outcomes; DB_RETRY when a key was claimed by
 * another request since step 1. */
static enum db_rc
insert_events(struct group *g, const unsigned char *attempt, const char *reqid,
    struct ev_result *res, struct evtext *text)
{
	size_t    *todo = ev_xcalloc(g->nitems, sizeof(*todo));
	size_t     n = 0, k, j, r;
	enum db_rc rc = DB_OK;

	for (k = 0; k < g->nitems; k++)
		if (g->items[k].prof != 0)
			todo[n++] = k;
	for (k = 0; k < n && rc == DB_OK; k += EVENT_ROWS) {
		size_t           m = n - k < EVENT_ROWS ? n - k : EVENT_ROWS;
		struct db_param *p = gparams(g, 14 * m);
		struct db_res    dr;

		for (j = 0; j < m; j++)
			event_params(g, &g->items[todo[k + j]], &p[14 * j], attempt,
			    reqid, res, text);
		if ((rc = db_exec_multi(g->db, DB_M_EVENT_INSERT, &m, p, 14 * m, &dr,
		    NULL)) != DB_OK)
			break;
		/* RETURNING gives the stored rows in VALUES order (a row
		 * not stored is missing) */
		for (r = 0, j = 0; r < dr.nrows; r++) {
			const char *pub = DB_CELL(&dr, r, 1)->v;
			while (j < m && pub != NULL &&
			    strcmp(res[g->items[todo[k + j]].i].event_id, pub) != 0)
				j++;
			if (j == m)
				break;
			g->items[todo[k + j++]].evid = db_cell_i64(DB_CELL(&dr, r, 0));
		}
		/* a key claimed meanwhile (or a public id collision): run
		 * again, step 1 then answers duplicate */
		if (dr.nrows != m)
			rc = DB_RETRY;
		db_res_free(&dr);
		for (j = 0; rc == DB_OK && j < m; j++)
			if (g->items[todo[k + j]].evid == 0)
				rc = DB_RETRY;
	}
	free(todo);
	return rc;
}

/*
 * Rows of one kind. On their own (part 0) they are sent as statement m,
 * max rows at a time, from g->p[0]; as a part of DB_M_WRITE_ONE (part 1)
 * they are appended to g->p after base, the parameters of the parts
 * before, and rows_end() gives their count.
 */
struct rowbuf {
	struct group  *g;
	int            part;
	enum db_multi  m;
	size_t         width, max, n, base;
	enum db_rc     rc;
};

static void
rows_begin(struct rowbuf *rb, enum db_multi m, size_t width, size_t max)
{
	rb->m = m;
	rb->width = width;
	rb->max = max;
	rb->n = 0;
}

static void
rows_flush(struct rowbuf *rb)
{
	if (rb->n > 0 && rb->rc == DB_OK)
		rb->rc = db_exec_multi(rb->g->db, rb->m, &rb->n, rb->g->p,
		    rb->n * rb->width, NULL, NULL);
	rb->n = 0;
}

/* The end of a kind: its rows sent, or (a part) kept; the part's count. */
static size_t
rows_end(struct rowbuf *rb)
{
	size_t n = rb->n;

	if (!rb->part)
		rows_flush(rb);
	else {
		rb->base += n * rb->width;
		rb->n = 0;
	}
	return n;
}

/* The next row's parameters. */
static struct db_param *
rows_next(struct rowbuf *rb)
{
	if (!rb->part && rb->n == rb->max)
		rows_flush(rb);
	gparams(rb->g, rb->base + (rb->n + 1) * rb->width);
	return &rb->g->p[rb->base + rb->width * rb->n++];
}

/* The ledger rows; a part takes the event's id in SQL, not as a parameter. */
static size_t
write_ledger(struct group *g, struct rowbuf *rb)
{
	size_t k;

	rows_begin(rb, DB_M_LEDGER_INSERT, rb->part ? 6 : 7, LEDGER_ROWS);
	for (k = 0; k < g->nledger; k++) {
		const struct gledger *l = &g->ledger[k];
		const struct gitem   *it = &g->items[l->item];
		struct db_param      *q = rows_next(rb);
		*q++ = DBP_I64(g->profs[it->prof - 1].pid);
		if (!rb->part)
			*q++ = DBP_I64(it->evid);
		*q++ = DBP_I64((int64_t)l->seq);
		*q++ = DBP_CSTR(l->rule_id);
		*q++ = DBP_CSTR(l->balance);
		*q++ = DBP_I64(l->delta);
		*q = DBP_I64(l->balance_after);
	}
	return rows_end(rb);
}

/* Final balances, variables and counter increments of every profile; the
 * count of each kind in n[0..3). */
static void
write_state(struct group *g, struct rowbuf *rb, size_t n[3])
{
	size_t k, j;

	rows_begin(rb, DB_M_BALANCE_UPSERT, 4, DB_MULTI_MAX_ROWS);
	for (k = 0; k < g->nprofs; k++)
		for (j = 0; j < g->profs[k].nbals; j++) {
			const struct gbal *b = &g->profs[k].bals[j];
			struct db_param   *q;
			if (!b->dirty)
				continue;
			q = rows_next(rb);
			q[0] = DBP_I64(g->profs[k].pid);
			q[1] = DBP_CSTR(b->name);
			q[2] = DBP_I64(b->balance);
			q[3] = DBP_I64(b->lifetime);
		}
	n[0] = rows_end(rb);

	rows_begin(rb, DB_M_VAR_UPSERT, 3, DB_MULTI_MAX_ROWS);
	for (k = 0; k < g->nprofs; k++) {
		if (g->profs[k].vars_dirty == NULL)
			continue;
		json_object_object_foreach(g->profs[k].vars_dirty, name, v) {
			struct db_param *q = rows_next(rb);
			q[0] = DBP_I64(g->profs[k].pid);
			q[1] = DBP_CSTR(name);
			q[2] = DBP_CSTR(v ? json_object_to_json_string_ext(v, JSON_FLAGS) :
			    "null");
		}
	}
	n[1] = rows_end(rb);

	rows_begin(rb, DB_M_COUNTER_ADD, 4, DB_MULTI_MAX_ROWS);
	for (k = 0; k < g->nprofs; k++)
		for (j = 0; j < g->profs[k].ncnts; j++) {
			const struct gcnt *c = &g->profs[k].cnts[j];
			struct db_param   *q;
			if (c->add == 0)
				continue;
			q = rows_next(rb);
			q[0] = DBP_I64(g->profs[k].pid);
			q[1] = DBP_CSTR(g->ct->rules[c->rule].id);
			q[2] = DBP_CSTR(c->period);
			q[3] = DBP_I64(c->add);
		}
	n[2] = rows_end(rb);
}

/*
 * Profiles whose tier changed get it written. On a Galera cluster every
 * existing profile the group changed is written too: a SELECT ... FOR
 * UPDATE holds only on its own node, and two nodes could otherwise both
 * apply an event to a state read before the other's commit arrived; with a
 * write to the same row their write sets conflict, so one of them is
 * aborted (1213) and runs again with the fresh state. On one server the
 * lock already serialises them and the write is saved. Returns how many
 * (a part: its two lists are that long).
 */
static size_t
touch_profiles(struct group *g, struct rowbuf *rb)
{
	size_t *todo = ev_xcalloc(g->nprofs, sizeof(*todo));
	size_t  n = 0, k, j;
	int     cluster = db_is_cluster(g->db);

	for (k = 0; k < g->nprofs; k++) {
		const struct gprof *pr = &g->profs[k];
		int tier_moved = (pr->tier == NULL) != (pr->tier0 == NULL) ||
		    (pr->tier != NULL && strcmp(pr->tier, pr->tier0) != 0);
		if (pr->changed && (tier_moved || (cluster && !pr->created)))
			todo[n++] = k;
	}
	/* the (id, tier) pairs of the CASE, then the ids of the IN list */
	for (k = 0; k < n && rb->rc == DB_OK; k += DB_MULTI_MAX_ROWS) {
		size_t           m = n - k < DB_MULTI_MAX_ROWS ? n - k : DB_MULTI_MAX_ROWS;
		size_t           counts[2] = { m, m }, x = rb->base;
		struct db_param *p = gparams(g, rb->base + 3 * m);

		for (j = 0; j < m; j++) {
			const struct gprof *pr = &g->profs[todo[k + j]];
			p[x++] = DBP_I64(pr->pid);
			p[x++] = pr->tier ? DBP_CSTR(pr->tier) : DBP_NULL;
		}
		for (j = 0; j < m; j++)
			p[x++] = DBP_I64(g->profs[todo[k + j]].pid);
		if (rb->part) {
			rb->base = x;
			break;
		}
		rb->rc = db_exec_multi(g->db, DB_M_PROFILE_TOUCH, counts, p, x,
		    NULL, NULL);
	}
	free(todo);
	return n;
}

/*
 * The writes of a group that stores one event, its only item to store,
 * and the COMMIT, as one statement (DB_M_WRITE_ONE): 1 round trip instead
 * of 4 or more. DB_DECLINED when a part has more rows than a statement
 * takes: the caller writes as for a batch.
 */
#define DB_DECLINED DB_RC__MAX
static enum db_rc
write_one(struct group *g, const struct gitem *it, const unsigned char *attempt,
    const char *reqid, struct ev_result *res, struct evtext *text)
{
	struct rowbuf rb;
	size_t        counts[DB_MULTI_GROUPS], k;

	memset(&rb, 0, sizeof(rb));
	rb.g = g;
	rb.part = 1;
	rb.base = 14;
	event_params(g, it, gparams(g, 14), attempt, reqid, res, text);
	counts[0] = write_ledger(g, &rb);
	write_state(g, &rb, &counts[1]);
	counts[4] = counts[5] = touch_profiles(g, &rb);
	for (k = 0; k < DB_MULTI_GROUPS; k++)
		if (counts[k] > DB_MULTI_MAX_ROWS)
			return DB_DECLINED;
	return db_exec_multi(g->db, DB_M_WRITE_ONE, counts, g->p, rb.base, NULL,
	    NULL);
}

/* The writes of step 7, as statements of their own. */
static enum db_rc
write_all(struct group *g, const unsigned char *attempt, const char *reqid,
    struct ev_result *res, struct evtext *text)
{
	struct rowbuf rb;
	size_t        n[3];
	enum db_rc    rc;

	if ((rc = insert_events(g, attempt, reqid, res, text)) != DB_OK)
		return rc;
	memset(&rb, 0, sizeof(rb));
	rb.g = g;
	(void)write_ledger(g, &rb);
	write_state(g, &rb, n);
	(void)touch_profiles(g, &rb);
	return rb.rc;
}

/* ---- the group ---- */

/*
 * Apply the items idx[0..m) of batch b, in that order, inside the open
 * transaction. Answers every item in b->res. DB_OK, or a database failure
 * for db_txn() (everything is then rolled back). When last is set the
 * group is the transaction's last work, which its final statement may
 * commit (write_one()).
 */
static enum db_rc
apply_group(struct db *db, struct batch *b, const size_t *idx, size_t m,
    int checked, int last)
{
	struct group g;
	enum db_rc   rc = DB_OK;
	size_t       k, nstore = 0, one = 0;
	int          state_done = 0, keys_here;

	group_init(&g, db, b, idx, m);
	for (k = 0; k < g.nitems; k++) {
		result_reset(&b->res[g.items[k].i]);
		g.items[k].runs = rules_run_for(g.ct, g.items[k].ev);
	}
	if (g.nitems == 0)
		goto out;
	if (g.ct != NULL)
		build_defs(&g);

	/* 1. keys stored before; 2. identities locked. A group whose keys
	 * were not read before its transaction reads them here: a few of
	 * them (a single event) in the same statement as the locks, many
	 * first, so that the answered items lock nothing. */
	collect_keys(&g);
	collect_idents(&g);
	keys_here = !checked && g.ct != NULL && g.nkeys <= MERGED_KEYS &&
	    g.nidents > 0 && g.nidents <= MERGED_IDENTS;
	if (!checked && !keys_here) {
		if ((rc = read_keys(&g)) != DB_OK ||
		    (rc = answer_keys(&g, b)) != DB_OK)
			goto out;
		free(g.idents);
		collect_idents(&g);
	}
	if ((rc = lock_idents(&g, &state_done, keys_here)) != DB_OK ||
	    (keys_here && (rc = answer_keys(&g, b)) != DB_OK))
		goto out;

	/* 3. resolution, item by item; the first item of a key claims it */
	for (k = 0; k < g.nitems; k++) {
		struct gitem *it = &g.items[k];
		struct gkey  *key = &g.keys[it->key];
		if (it->done)
			continue;
		if (key->claimed != 0) {
			const struct gitem *first = &g.items[key->claimed - 1];
			answer_existing(&b->res[it->i], b->res[first->i].event_id,
			    memcmp(first->ev->fingerprint, it->ev->fingerprint, 32) == 0);
			it->done = 1;
			continue;
		}
		switch (resolve_item(&g, it, &b->res[it->i])) {
		case 0:
			break;
		case -1:
			it->done = 1;
			continue;
		default:
			rc = DB_ERROR;
			goto out;
		}
		key->claimed = k + 1;
		g.profs[it->prof - 1].changed = 1;
		if (ev_public_id("evt_", b->res[it->i].event_id) != 0) {
			rc = DB_ERROR;
			goto out;
		}
	}

	/* 4. new profiles and bindings; 5. state of the others */
	if ((rc = insert_profiles(&g)) != DB_OK || (rc = insert_idents(&g)) != DB_OK)
		goto out;
	if (g.ct != NULL && !state_done && (rc = load_state(&g)) != DB_OK)
		goto out;

	/* 6. the rules, item by item */
	for (k = 0; k < g.nitems; k++) {
		struct gitem *it = &g.items[k];
		if (it->prof == 0)
			continue;
		if ((rc = run_rules(&g, it)) != DB_OK)
			goto out;
		outcome_end(&g, it);
	}

	/* 7. the writes: one event's in one statement with the COMMIT */
	for (k = 0; k < g.nitems; k++)
		if (g.items[k].prof != 0) {
			nstore++;
			one = k;
		}
	rc = DB_DECLINED;
	if (last && nstore == 1)
		rc = write_one(&g, &g.items[one], b->attempt, b->reqid, b->res,
		    b->text);
	if (rc == DB_DECLINED)
		rc = write_all(&g, b->attempt, b->reqid, b->res, b->text);
	if (rc != DB_OK)
		goto out;

	/* the answers of the accepted items */
	for (k = 0; k < g.nitems; k++) {
		struct gitem     *it = &g.items[k];
		struct ev_result *res = &b->res[it->i];
		struct ev_buf     t = { NULL, 0, 0 };
		if (it->prof == 0)
			continue;
		res->st = EV_ST_ACCEPTED;
		ev_buf_str(&t, "{\"status\":\"accepted\",\"event_id\":");
		ev_buf_json_str(&t, res->event_id);
		ev_buf_str(&t, ",\"profile_id\":");
		ev_buf_json_str(&t, g.profs[it->prof - 1].public_id);
		ev_buf_put(&t, ",", 1);
		ev_buf_put(&t, it->out.p + 1, it->out.len - 1);
		res->text = t.p;
	}
out:
	group_free(&g);
	return rc;
}

/* The identity that decides an event's profile: its highest-precedence one. */
static int
primary_ident(const struct ev_event *ev, const char **value)
{
	int i;

	for (i = 0; i < IDENT__MAX; i++)
		if (ev->ident[i] != NULL) {
			*value = ev->ident[i];
			return i;
		}
	*value = "";
	return IDENT__MAX;
}

/* Order of two items: by the dedup key, then position. */
static int
cmp_key(struct ev_event **evs, size_t a, size_t b)
{
	int c = strcmp(evs[a]->source, evs[b]->source);

	if (c == 0 && evs[a]->ext_id_len != evs[b]->ext_id_len)
		c = evs[a]->ext_id_len < evs[b]->ext_id_len ? -1 : 1;
	if (c == 0)
		c = memcmp(evs[a]->ext_id, evs[b]->ext_id, evs[a]->ext_id_len);
	if (c == 0)
		c = a < b ? -1 : a > b;
	return c;
}

/* Order of two items by their group leader's primary identity, then
 * leader position, then position (lead[] maps an item to its leader). */
static int
cmp_lock(struct ev_event **evs, const size_t *lead, size_t a, size_t b)
{
	const char *va, *vb;
	size_t      la = lead[a], lb = lead[b];
	int         ta = primary_ident(evs[la], &va), tb = primary_ident(evs[lb], &vb);
	int         c = ta - tb;

	if (c == 0)
		c = strcmp(va, vb);
	if (c == 0)
		c = la < lb ? -1 : la > lb;
	if (c == 0)
		c = a < b ? -1 : a > b;
	return c;
}

/* Stable merge sort of idx[0..n) with one of the comparators above. */
static void
sort_idx(size_t *idx, size_t *tmp, size_t n, struct ev_event **evs,
    const size_t *lead)
{
	size_t m, i, j, k;

	if (n < 2)
		return;
	m = n / 2;
	sort_idx(idx, tmp, m, evs, lead);
	sort_idx(idx + m, tmp, n - m, evs, lead);
	for (i = 0, j = m, k = 0; k < n; k++) {
		int left;
		if (i == m)
			left = 0;
		else if (j == n)
			left = 1;
		else
			left = (lead ? cmp_lock(evs, lead, idx[i], idx[j]) :
			    cmp_key(evs, idx[i], idx[j])) <= 0;
		tmp[k] = left ? idx[i++] : idx[j++];
	}
	memcpy(idx, tmp, n * sizeof(*idx));
}

/*
 * The order a batch is applied in. Items are grouped by the identity that
 * decides their profile, in one global order (type, then value), so two
 * concurrent batches over the same customers lock their profiles in the
 * same order instead of deadlocking each other on every attempt. Items
 * repeating an earlier item's (source, externalEventId) stay right behind
 * it, so the first of them is still the one accepted; otherwise items keep
 * their relative order. Results are always reported in the order of items.
 * Returns order[0..n) of the valid items (*nvalid), or NULL when out of
 * memory (then items are applied in their own order).
 */
static size_t *
batch_order(struct ev_event **evs, size_t n, size_t *nvalid)
{
	size_t *idx = malloc((n ? n : 1) * sizeof(*idx));
	size_t *tmp = malloc((n ? n : 1) * sizeof(*tmp));
	size_t *lead = malloc((n ? n : 1) * sizeof(*lead));
	size_t  i, m = 0;

	if (idx == NULL || tmp == NULL || lead == NULL) {
		free(idx);
		free(tmp);
		free(lead);
		return NULL;
	}
	for (i = 0; i < n; i++)
		if (evs[i] != NULL)
			idx[m++] = i;
	/* leaders: the first item of each dedup key */
	sort_idx(idx, tmp, m, evs, NULL);
	for (i = 0; i < m; i++)
		lead[idx[i]] = idx[i];
	for (i = 1; i < m; i++) {
		struct ev_event *a = evs[idx[i - 1]], *b = evs[idx[i]];
		if (strcmp(a->source, b->source) == 0 && a->ext_id_len == b->ext_id_len &&
		    memcmp(a->ext_id, b->ext_id, a->ext_id_len) == 0)
			lead[idx[i]] = lead[idx[i - 1]];
	}
	sort_idx(idx, tmp, m, evs, lead);
	free(tmp);
	free(lead);
	*nvalid = m;
	return idx;
}

/*
 * The transaction body: the items as one group (apply_group()). When the
 * group meets a database error that retrying cannot cure (DB_ERROR: a bug,
 * or data the server refuses), the transaction runs again with one group
 * per item to find the item: it is answered internal_error on its own and
 * the others run again as one group, so it never spoils them; the happy
 * path pays nothing for that.
 */
static enum db_rc
batch_fn(struct db *db, void *arg)
{
	struct batch *b = arg;
	size_t        k, i, all = b->n;
	enum db_rc    rc;
	int           checked = b->checked;

	b->checked = 0;          /* a retry checks the key again */
	b->attempt[EV_ATTEMPT_LEN - 1]++;   /* this transaction attempt */
	if (!b->one_by_one) {
		size_t *idx = b->order;
		size_t *seq = NULL;
		if (idx == NULL) {
			seq = ev_xcalloc(all, sizeof(*seq));
			for (k = 0; k < all; k++)
				seq[k] = k;
			idx = seq;
		}
		rc = apply_group(db, b, idx, all, checked, !b->dry);
		free(seq);
		if (rc == DB_ERROR && b->n > 1) {
			b->one_by_one = 1;
			return DB_RETRY;
		}
		if (rc != DB_OK)
			return rc;
		return b->dry ? DB_ROLLBACK : DB_OK;
	}
	for (k = 0; k < all; k++) {
		i = b->order != NULL ? b->order[k] : k;
		if (b->evs[i] == NULL)
			continue;
		rc = apply_group(db, b, &i, 1, checked, 0);
		if (rc == DB_ERROR) {
			struct ev_verr verr;
			const char    *rid = event_reqid(b->evs[i], b->reqid);
			fprintf(stderr, "rfevents: request %s: item %zu: database"
			    " error %u: %s\n", rid != NULL ? rid : "-", i,
			    db_last_errno(db), db_last_error(db));
			ev_verr_set(&verr, EV_INTERNAL, "this item could not be"
			    " stored; retry it with the same externalEventId");
			ev_result_error(&b->res[i], &verr);
			b->evs[i] = NULL;
			b->one_by_one = 0;
			return DB_RETRY;
		}
		if (rc != DB_OK)
			return rc;
	}
	/* a dry run did everything for real and now takes it all back */
	return b->dry ? DB_ROLLBACK : DB_OK;
}

/*
 * Turn the answers of a rolled-back run into dry-run answers: "dry_run"
 * instead of "accepted", no event_id, and no profile_id for a profile
 * that only the run created. Duplicates and errors stay what they are.
 */
static void
to_dry_run(struct ev_result *res)
{
	json_object *created;

	if (res->st == EV_ST_ACCEPTED && res->text != NULL && res->body == NULL) {
		/* rare: a dry run's answer is edited as a tree */
		res->body = json_tokener_parse(res->text);
		free(res->text);
		res->text = NULL;
	}
	if (res->st != EV_ST_ACCEPTED || res->body == NULL)
		return;
	res->st = EV_ST_DRY_RUN;
	res->event_id[0] = '\0';
	json_object_object_add(res->body, "status", json_object_new_string("dry_run"));
	json_object_object_del(res->body, "event_id");
	if (json_object_object_get_ex(res->body, "profile_created", &created) &&
	    json_object_get_boolean(created))
		json_object_object_add(res->body, "profile_id", NULL);
}

/*
 * The keys of a request's events already stored, read before any
 * transaction: those items are answered duplicate or conflict at once and
 * take no part in it, and the transaction's first attempt does not read
 * keys again while it holds the profiles' locks. A key stored meanwhile is
 * caught by the INSERT IGNORE, and the retry reads the keys inside.
 */
static enum db_rc
precheck_keys(struct db *db, struct batch *b)
{
	struct group g;
	enum db_rc   rc = DB_OK;
	size_t       k;

	group_init(&g, db, b, NULL, b->n);
	if (g.nitems > 0) {
		collect_keys(&g);
		rc = read_keys(&g);
	}
	if (rc == DB_OK)
		rc = answer_keys(&g, b);
	for (k = 0; rc == DB_OK && k < g.nitems; k++)
		if (g.items[k].done)
			b->evs[g.items[k].i] = NULL;      /* answered */
	group_free(&g);
	return rc;
}

/* The stored texts of the events (struct evtext), all made now when
 * eager (else by insert_events(), for the items accepted); freed by
 * texts_free(). */
static struct evtext *
texts_make(struct ev_event **evs, size_t n, int eager)
{
	struct evtext *tx = ev_xcalloc(n, sizeof(*tx));
	size_t         i;

	for (i = 0; eager && i < n; i++)
		if (evs[i] != NULL)
			text_make(&tx[i], evs[i]);
	return tx;
}

static void
texts_free(struct evtext *tx, size_t n)
{
	size_t i;

	for (i = 0; tx != NULL && i < n; i++)
		free(tx[i].doc);
	free(tx);
}

enum ev_err
ev_ingest(struct db *db, const struct ev_tenant *t, struct ev_event **evs,
    struct ev_result *res, size_t n, int dry_run, const char *request_id,
    unsigned *retries)
{
	struct batch b = { t, evs, res, n, dry_run, 0, request_id, { 0 }, NULL, 0,
	    NULL, 0 };
	enum db_rc   rc = DB_OK;
	size_t       i, nvalid = n, left;

	if (ev_random_pool(b.attempt, sizeof(b.attempt)) != 0)
		return EV_INTERNAL;

	/*
	 * Events this machine found stored lately are answered duplicate from
	 * the table, without a statement (ev_recent_find()). The events of a
	 * batch already seen are answered by one read before the transaction,
	 * which then leaves them out (and a request of duplicates only locks
	 * nothing). A single event, or a few, have their keys read in the
	 * statement that locks their profiles (apply_group()): a new event,
	 * the usual case, costs no round trip for them; the texts to store are
	 * then made only for the events accepted.
	 */
	if (ev_recent_on()) {
		uint64_t max_event, inst = db_instance(db, &max_event);
		b.inst = ev_recent_key(inst, max_event);
	}
	for (i = 0; b.inst != 0 && i < n; i++) {
		char orig[32];
		if (evs[i] != NULL &&
		    ev_recent_find(b.inst, t->id, evs[i], orig)) {
			answer_existing(&res[i], orig, 1);
			res[i].from_memory = 1;
			evs[i] = NULL;
		}
	}
	if (n > MERGED_KEYS && (rc = precheck_keys(db, &b)) == DB_OK)
		b.checked = 1;
	for (i = 0, left = 0; i < n; i++)
		left += evs[i] != NULL;
	/* (the transaction that read begins is ended by the caller's
	 * db_release(), after the answer has gone) */
	if (rc == DB_OK && left == 0)
		return EV_OK;
	if (n > 1 && (b.order = batch_order(evs, n, &nvalid)) != NULL)
		b.n = nvalid;
	if (rc == DB_OK) {
		b.text = texts_make(evs, n, b.checked);
		rc = db_txn(db, batch_fn, &b, retries);
	}
	free(b.order);
	texts_free(b.text, n);
	b.order = NULL;
	b.n = n;
	if (rc == DB_OK)
		return EV_OK;
	if (rc == DB_ROLLBACK && dry_run) {
		for (i = 0; i < n; i++)
			if (evs[i] != NULL)
				to_dry_run(&res[i]);
		return EV_OK;
	}
	/* Nothing was committed: drop whatever the attempts built. */
	for (i = 0; i < n; i++)
		if (evs[i] != NULL) {
			if (res[i].body != NULL)
				json_object_put(res[i].body);
			free(res[i].text);
			res[i].body = NULL;
			res[i].text = NULL;
		}
	if (rc == DB_ERROR) {
		fprintf(stderr, "rfevents: request %s: database error %u: %s\n",
		    request_id ? request_id : "-", db_last_errno(db),
		    db_last_error(db));
		return EV_INTERNAL;
	}
	return EV_UNAVAILABLE;
}

json_object *
ev_event_get(struct db *db, const struct ev_tenant *t, const char *public_id,
    enum ev_err *err)
{
	struct db_param  p[2];
	struct db_res    r;
	struct json_perr perr;
	json_object     *doc, *out;
	enum db_rc       rc;

	p[0] = DBP_I64(t->id);
	p[1] = DBP_CSTR(public_id);
	rc = db_exec(db, DB_EVENT_BY_PUBLIC_ID, p, 2, &r, NULL, NULL);
	if (rc != DB_OK) {
		*err = rc == DB_ERROR ? EV_INTERNAL : EV_UNAVAILABLE;
		return NULL;
	}
	if (r.nrows == 0 || DB_CELL(&r, 0, 0)->v == NULL) {
		db_res_free(&r);
		*err = EV_NOT_FOUND;
		return NULL;
	}
	doc = json_parse_strict(DB_CELL(&r, 0, 0)->v, DB_CELL(&r, 0, 0)->len,
	    JSON_MAX_DEPTH + 8, &perr);
	if (doc == NULL) {
		db_res_free(&r);
		*err = EV_INTERNAL;
		return NULL;
	}
	out = json_object_new_object();
	json_object_object_add(out, "event_id", json_object_new_string(public_id));
	json_object_object_foreach(doc, k, v)
		json_object_object_add(out, k, json_object_get(v));
	json_object_put(doc);
	json_object_object_add(out, "profile_id", DB_CELL(&r, 0, 3)->v ?
	    json_object_new_string(DB_CELL(&r, 0, 3)->v) : NULL);
	json_object_object_add(out, "rules_version",
	    json_object_new_string(DB_CELL(&r, 0, 2)->v ? DB_CELL(&r, 0, 2)->v : ""));
	if (DB_CELL(&r, 0, 1)->v != NULL) {
		json_object *oc = json_parse_strict(DB_CELL(&r, 0, 1)->v,
		    DB_CELL(&r, 0, 1)->len, JSON_MAX_DEPTH + 8, &perr);
		json_object_object_add(out, "outcome", oc);
	} else
		json_object_object_add(out, "outcome", NULL);
	db_res_free(&r);
	*err = EV_OK;
	return out;
}
