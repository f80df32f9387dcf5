/*
 * The ingest pipeline (DESIGN.md "The path of one event", API.md §2-§3):
 * INSERT IGNORE on the dedup key, duplicate / conflict answers, identity
 * resolution with pre-provisioning, the outcome on the event row — all in
 * one transaction per request (a savepoint per item of a batch), retried
 * whole on deadlocks by db_txn().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "db/db.h"
#include "rules/rules.h"
#include "core/core.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Format microseconds as a DATETIME(6) literal for a parameter. */
static void
sql_time(int64_t us, char out[32])
{
	char iso[32];

	ts_format(us, iso);
	/* "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" -> "YYYY-MM-DD HH:MM:SS[.ffffff]" */
	snprintf(out, 32, "%.10s %.*s", iso, (int)(strlen(iso) - 12), iso + 11);
}

/* What identity resolution decided for one event. */
struct resolved {
	int64_t  pid;                  /* 0: none (dry run of a new profile) */
	char     public_id[32];
	int      created;
	char     tier[72];             /* tier before the event */
	int      has_tier;
	int64_t  found[IDENT__MAX];    /* profile each given identity is bound to */
};

/* The tier a profile with this lifetime has; NULL with no tiers. */
static const char *
tier_name_for(const struct conf_tenant *ct, int64_t lifetime)
{
	size_t i;
	const char *name = NULL;

	/* tiers are sorted by min_lifetime: the last one reached wins */
	for (i = 0; ct != NULL && i < ct->ntiers; i++) {
		mpq_t l;
		int   reached;
		mpq_init(l);
		mpq_set_si(l, (long)lifetime, 1);
		reached = mpq_cmp(ct->tiers[i].min_lifetime, l) <= 0;
		mpq_clear(l);
		if (reached)
			name = ct->tiers[i].name;
	}
	return name;
}

/* Run a statement that returns at most one row; DB_OK with *r filled. */
static enum db_rc
query(struct db *db, enum db_stmt st, const struct db_param *p, size_t np,
    struct db_res *r)
{
	return db_exec(db, st, p, np, r, NULL, NULL);
}

/*
 * Identity resolution, API.md §3. Looks every given identity up, picks the
 * candidate, creates a profile when there is none (unless dry) and binds
 * unbound identities to the chosen profile. A race with another transaction
 * surfaces as a duplicate key and is answered with DB_RETRY, so the whole
 * transaction runs again and sees the other's committed rows.
 * Returns DB_OK, DB_ROLLBACK with verr set (identity_not_found), or a
 * database failure.
 */
static enum db_rc
resolve(struct db *db, const struct ev_tenant *t, const struct ev_event *ev,
    int dry, struct resolved *rv, struct ev_verr *verr)
{
	struct db_param p[6];
	struct db_res   r;
	enum db_rc      rc;
	size_t          i;
	int64_t         cand = 0;
	uint64_t        newid = 0;
	int             auto_create = t->conf == NULL || t->conf->auto_create_profiles;

	memset(rv, 0, sizeof(*rv));
	p[0] = DBP_I64(t->id);
	for (i = 0; i < IDENT__MAX; i++)
		p[1 + i] = ev->ident[i] ? DBP_CSTR(ev->ident[i]) : DBP_NULL;
	if ((rc = query(db, DB_IDENT_FIND, p, 5, &r)) != DB_OK)
		return rc;
	for (i = 0; i < r.nrows; i++) {
		int64_t type = db_cell_i64(DB_CELL(&r, i, 0));
		if (type >= 0 && type < IDENT__MAX)
			rv->found[type] = db_cell_i64(DB_CELL(&r, i, 2));
	}
	db_res_free(&r);

	/* 2. the highest-precedence identity found gives the candidate */
	for (i = 0; i < IDENT__MAX && cand == 0; i++)
		if (ev->ident[i] != NULL && rv->found[i] != 0)
			cand = rv->found[i];

	/* 3. a new externalUserId never joins a profile that has another one */
	if (cand != 0 && ev->ident[IDENT_EXTERNAL] != NULL &&
	    rv->found[IDENT_EXTERNAL] == 0) {
		p[0] = DBP_I64(cand);
		if ((rc = query(db, DB_IDENT_EXTERNAL_OF, p, 1, &r)) != DB_OK)
			return rc;
		if (r.nrows > 0)
			cand = 0;
		db_res_free(&r);
	}

	if (cand == 0) {
		/* 4. no candidate: pre-provision a profile */
		if (!auto_create) {
			ev_verr_set(verr, EV_IDENTITY_NOT_FOUND,
			    "no profile has these identities and this tenant does"
			    " not create profiles automatically");
			return DB_ROLLBACK;
		}
		rv->created = 1;
		{
			const char *tn = tier_name_for(t->conf, 0);
			if (tn != NULL) {
				snprintf(rv->tier, sizeof(rv->tier), "%s", tn);
				rv->has_tier = 1;
			}
		}
		if (dry)
			return DB_OK;
		if (ev_public_id("prf_", rv->public_id) != 0) {
			ev_verr_set(verr, EV_INTERNAL, "no randomness");
			return DB_ERROR;
		}
		p[0] = DBP_I64(t->id);
		p[1] = DBP_CSTR(rv->public_id);
		p[2] = rv->has_tier ? DBP_CSTR(rv->tier) : DBP_NULL;
		rc = db_exec(db, DB_PROFILE_INSERT, p, 3, NULL, NULL, &newid);
		if (rc == DB_DUPKEY)
			return DB_RETRY;     /* public id collision: try again */
		if (rc != DB_OK)
			return rc;
		rv->pid = (int64_t)newid;
	} else {
		/* 5. the candidate: lock it for the rest of the transaction */
		p[0] = DBP_I64(cand);
		if ((rc = query(db, dry ? DB_PROFILE_BY_ID : DB_PROFILE_LOCK, p, 1,
		    &r)) != DB_OK)
			return rc;
		if (r.nrows == 0) {
			db_res_free(&r);
			return DB_RETRY;
		}
		snprintf(rv->public_id, sizeof(rv->public_id), "%s",
		    DB_CELL(&r, 0, 0)->v ? DB_CELL(&r, 0, 0)->v : "");
		if (DB_CELL(&r, 0, 1)->v != NULL) {
			snprintf(rv->tier, sizeof(rv->tier), "%s", DB_CELL(&r, 0, 1)->v);
			rv->has_tier = 1;
		}
		db_res_free(&r);
		rv->pid = cand;
	}
	if (dry)
		return DB_OK;

	/* bind the given identities that are still unbound */
	for (i = 0; i < IDENT__MAX; i++) {
		if (ev->ident[i] == NULL || rv->found[i] != 0)
			continue;
		p[0] = DBP_I64(t->id);
		p[1] = DBP_I64((int64_t)i);
		p[2] = DBP_CSTR(ev->ident[i]);
		p[3] = DBP_I64(rv->pid);
		p[4] = i == IDENT_EXTERNAL ? DBP_I64(rv->pid) : DBP_NULL;
		rc = db_exec(db, DB_IDENT_INSERT, p, 5, NULL, NULL, NULL);
		if (rc == DB_DUPKEY)
			return DB_RETRY;     /* bound meanwhile by another event */
		if (rc != DB_OK)
			return rc;
	}
	return DB_OK;
}

/* identity_conflicts: given identities bound to another profile. */
static enum db_rc
conflicts_json(struct db *db, const struct ev_event *ev,
    const struct resolved *rv, json_object **out)
{
	json_object    *a = json_object_new_array();
	struct db_param p;
	struct db_res   r;
	enum db_rc      rc;
	size_t          i;

	*out = a;
	for (i = 0; i < IDENT__MAX; i++) {
		json_object *c;
		if (ev->ident[i] == NULL || rv->found[i] == 0 ||
		    rv->found[i] == rv->pid)
			continue;
		p = DBP_I64(rv->found[i]);
		if ((rc = query(db, DB_PROFILE_BY_ID, &p, 1, &r)) != DB_OK)
			return rc;
		c = json_object_new_object();
		json_object_object_add(c, "type",
		    json_object_new_string(ident_type_name[i]));
		json_object_object_add(c, "value",
		    json_object_new_string(ev->ident[i]));
		json_object_object_add(c, "bound_to_profile_id", r.nrows > 0 &&
		    DB_CELL(&r, 0, 0)->v ? json_object_new_string(DB_CELL(&r, 0, 0)->v) :
		    NULL);
		json_object_array_add(a, c);
		db_res_free(&r);
	}
	return DB_OK;
}


/* ---- rules: state before the event, the engine, the writes ---- */

/* Everything read about the profile for the rules; freed by state_free(). */
struct state {
	struct db_res        bal_res;
	struct rule_balance *bals;
	size_t               nbals;
	json_object         *vars;
	struct rule_def     *defs;
	struct rule_set     *sets;
	struct rule_tier    *tiers;
	struct rule_count   *counts;
};

static void
state_free(struct state *st)
{
	db_res_free(&st->bal_res);
	free(st->bals);
	if (st->vars != NULL)
		json_object_put(st->vars);
	free(st->defs);
	free(st->sets);
	free(st->tiers);
	free(st->counts);
	memset(st, 0, sizeof(*st));
}

/* Views of the tenant's compiled rules and tiers for the engine. */
static void
build_defs(const struct conf_tenant *ct, struct state *st)
{
	size_t i, j, nsets = 0, k = 0;

	for (i = 0; i < ct->nrules; i++)
		nsets += ct->rules[i].nsets;
	st->defs = calloc(ct->nrules ? ct->nrules : 1, sizeof(*st->defs));
	st->sets = calloc(nsets ? nsets : 1, sizeof(*st->sets));
	st->tiers = calloc(ct->ntiers ? ct->ntiers : 1, sizeof(*st->tiers));
	st->counts = calloc(ct->nrules ? ct->nrules : 1, sizeof(*st->counts));
	if (st->defs == NULL || st->sets == NULL || st->tiers == NULL ||
	    st->counts == NULL)
		abort();      /* out of memory: the web server restarts us */
	for (i = 0; i < ct->nrules; i++) {
		const struct conf_rule *cr = &ct->rules[i];
		struct rule_def        *d = &st->defs[i];
		d->id = cr->id;
		d->event = cr->event;
		d->when = cr->when;
		d->points = cr->points;
		d->balance = cr->balance;
		d->amount = cr->amount;
		d->sets = &st->sets[k];
		d->nsets = cr->nsets;
		for (j = 0; j < cr->nsets; j++, k++) {
			st->sets[k].name = cr->sets[j].name;
			st->sets[k].expr = cr->sets[j].expr;
		}
		d->per_profile = cr->per_profile;
		d->per_day = cr->per_day;
		d->per_month = cr->per_month;
		d->stop = cr->stop;
		d->tier_multiplier = cr->tier_multiplier;
	}
	for (i = 0; i < ct->ntiers; i++) {
		st->tiers[i].name = ct->tiers[i].name;
		st->tiers[i].min_lifetime = ct->tiers[i].min_lifetime;
		st->tiers[i].multiplier = ct->tiers[i].multiplier;
	}
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

/* Load balances, variables and limit counters of an existing profile. */
static enum db_rc
load_state(struct db *db, const struct conf_tenant *ct, const struct ev_event *ev,
    int64_t pid, int need_counts, struct state *st)
{
	struct db_param p[3];
	struct db_res   r;
	enum db_rc      rc;
	size_t          i, j;
	char            day[16], month[16];

	p[0] = DBP_I64(pid);
	if ((rc = db_exec(db, DB_BALANCES_OF, p, 1, &st->bal_res, NULL, NULL)) != DB_OK)
		return rc;
	st->nbals = st->bal_res.nrows;
	if ((st->bals = calloc(st->nbals ? st->nbals : 1, sizeof(*st->bals))) == NULL)
		abort();
	for (i = 0; i < st->nbals; i++) {
		st->bals[i].name = DB_CELL(&st->bal_res, i, 0)->v;
		st->bals[i].balance = db_cell_i64(DB_CELL(&st->bal_res, i, 1));
		st->bals[i].lifetime = db_cell_i64(DB_CELL(&st->bal_res, i, 2));
	}
	if ((rc = db_exec(db, DB_VARS_OF, p, 1, &r, NULL, NULL)) != DB_OK)
		return rc;
	for (i = 0; i < r.nrows; i++) {
		struct json_perr perr;
		json_object *v = json_parse_strict(DB_CELL(&r, i, 1)->v,
		    DB_CELL(&r, i, 1)->len, JSON_MAX_DEPTH, &perr);
		json_object_object_add(st->vars, DB_CELL(&r, i, 0)->v, v);
	}
	db_res_free(&r);
	if (!need_counts)
		return DB_OK;
	periods(ev->occurred_us, day, month);
	p[1] = DBP_CSTR(day);
	p[2] = DBP_CSTR(month);
	if ((rc = db_exec(db, DB_COUNTERS_OF, p, 3, &r, NULL, NULL)) != DB_OK)
		return rc;
	for (i = 0; i < r.nrows; i++) {
		const char *rid = DB_CELL(&r, i, 0)->v, *per = DB_CELL(&r, i, 1)->v;
		int64_t     n = db_cell_i64(DB_CELL(&r, i, 2));
		for (j = 0; j < ct->nrules; j++) {
			if (strcmp(ct->rules[j].id, rid) != 0)
				continue;
			if (strcmp(per, "all") == 0)
				st->counts[j].ever = n;
			else if (per[0] == 'd')
				st->counts[j].day = n;
			else
				st->counts[j].month = n;
		}
	}
	db_res_free(&r);
	return DB_OK;
}

/* Write the engine's outcome: balances, ledger, variables, counters, tier. */
static enum db_rc
write_outcome(struct db *db, const struct conf_tenant *ct, const struct ev_event *ev,
    const struct resolved *rv, int64_t evid, const struct rule_outcome *oc)
{
	struct db_param p[8];
	enum db_rc      rc;
	size_t          i, j;
	char            now[32], day[16], month[16];

	sql_time(ev->received_us, now);
	for (i = 0; i < oc->ndeltas; i++) {
		const struct rule_delta *d = &oc->deltas[i];
		int later = 0;
		/* one balance row per name: its state after the last delta */
		for (j = i + 1; j < oc->ndeltas; j++)
			if (strcmp(oc->deltas[j].balance, d->balance) == 0)
				later = 1;
		if (!later) {
			p[0] = DBP_I64(rv->pid);
			p[1] = DBP_CSTR(d->balance);
			p[2] = DBP_I64(d->balance_after);
			p[3] = DBP_I64(d->lifetime_after);
			if ((rc = db_exec(db, DB_BALANCE_UPSERT, p, 4, NULL, NULL, NULL)) != DB_OK)
				return rc;
		}
		p[0] = DBP_I64(rv->pid);
		p[1] = DBP_I64(evid);
		p[2] = DBP_I64((int64_t)i);
		p[3] = DBP_CSTR(d->rule_id);
		p[4] = DBP_CSTR(d->balance);
		p[5] = DBP_I64(d->delta);
		p[6] = DBP_I64(d->balance_after);
		p[7] = DBP_CSTR(now);
		if ((rc = db_exec(db, DB_LEDGER_INSERT, p, 8, NULL, NULL, NULL)) != DB_OK)
			return rc;
	}
	for (i = 0; i < oc->nassigns; i++) {
		json_object *v = rule_value_to_json(&oc->assigns[i].value, 12);
		const char  *txt = v ? json_object_to_json_string_ext(v, JSON_FLAGS) : "null";
		p[0] = DBP_I64(rv->pid);
		p[1] = DBP_CSTR(oc->assigns[i].name);
		p[2] = DBP_CSTR(txt);
		rc = db_exec(db, DB_VAR_UPSERT, p, 3, NULL, NULL, NULL);
		if (v != NULL)
			json_object_put(v);
		if (rc != DB_OK)
			return rc;
	}
	periods(ev->occurred_us, day, month);
	for (i = 0; i < oc->napplied; i++) {
		const struct conf_rule *cr = &ct->rules[oc->applied[i].index];
		const char *per[3] = { NULL, NULL, NULL };
		if (cr->per_profile > 0)
			per[0] = "all";
		if (cr->per_day > 0)
			per[1] = day;
		if (cr->per_month > 0)
			per[2] = month;
		for (j = 0; j < 3; j++) {
			if (per[j] == NULL)
				continue;
			p[0] = DBP_I64(rv->pid);
			p[1] = DBP_CSTR(cr->id);
			p[2] = DBP_CSTR(per[j]);
			if ((rc = db_exec(db, DB_COUNTER_BUMP, p, 3, NULL, NULL, NULL)) != DB_OK)
				return rc;
		}
	}
	if (oc->tier_changed) {
		p[0] = oc->tier_after ? DBP_CSTR(oc->tier_after) : DBP_NULL;
		p[1] = DBP_I64(rv->pid);
		if ((rc = db_exec(db, DB_PROFILE_SET_TIER, p, 2, NULL, NULL, NULL)) != DB_OK)
			return rc;
	}
	return DB_OK;
}

/* Outcome fields from the engine into o (points_awarded, rules_applied,
 * rules_skipped, effects, tier). */
static void
outcome_json(const struct rule_outcome *oc, json_object *o)
{
	json_object *ap = json_object_new_array(), *sk = json_object_new_array();
	json_object *ef = json_object_new_array();
	size_t       i;

	for (i = 0; i < oc->napplied; i++)
		json_object_array_add(ap, json_object_new_string(oc->applied[i].rule_id));
	for (i = 0; i < oc->nskipped; i++) {
		json_object *s = json_object_new_object();
		json_object_object_add(s, "rule",
		    json_object_new_string(oc->skipped[i].rule_id));
		json_object_object_add(s, "reason",
		    json_object_new_string(oc->skipped[i].reason));
		json_object_array_add(sk, s);
	}
	for (i = 0; i < oc->ndeltas; i++) {
		json_object *e = json_object_new_object();
		json_object_object_add(e, "type", json_object_new_string("balance"));
		json_object_object_add(e, "rule",
		    json_object_new_string(oc->deltas[i].rule_id));
		json_object_object_add(e, "balance",
		    json_object_new_string(oc->deltas[i].balance));
		json_object_object_add(e, "delta",
		    json_object_new_int64(oc->deltas[i].delta));
		json_object_object_add(e, "balance_after",
		    json_object_new_int64(oc->deltas[i].balance_after));
		json_object_array_add(ef, e);
	}
	for (i = 0; i < oc->nassigns; i++) {
		json_object *e = json_object_new_object();
		json_object_object_add(e, "type", json_object_new_string("variable"));
		json_object_object_add(e, "rule",
		    json_object_new_string(oc->assigns[i].rule_id));
		json_object_object_add(e, "name",
		    json_object_new_string(oc->assigns[i].name));
		json_object_object_add(e, "value",
		    rule_value_to_json(&oc->assigns[i].value, 12));
		json_object_array_add(ef, e);
	}
	if (oc->tier_changed) {
		json_object *e = json_object_new_object();
		json_object_object_add(e, "type", json_object_new_string("tier"));
		json_object_object_add(e, "from", oc->tier_before ?
		    json_object_new_string(oc->tier_before) : NULL);
		json_object_object_add(e, "to", oc->tier_after ?
		    json_object_new_string(oc->tier_after) : NULL);
		json_object_array_add(ef, e);
	}
	json_object_object_add(o, "points_awarded",
	    json_object_new_int64(oc->points_awarded));
	json_object_object_add(o, "rules_applied", ap);
	json_object_object_add(o, "rules_skipped", sk);
	json_object_object_add(o, "effects", ef);
	json_object_object_add(o, "tier", oc->tier_after ?
	    json_object_new_string(oc->tier_after) : NULL);
}

/*
 * Evaluate the tenant's rules for the event against the profile as it was
 * before it (locked by resolve()), write the effects unless dry, and put
 * the outcome fields into o. evid is the event row (0 when dry).
 */
static enum db_rc
apply_rules(struct db *db, const struct ev_tenant *t, const struct ev_event *ev,
    const struct resolved *rv, int64_t evid, int dry, json_object *o)
{
	const struct conf_tenant *ct = t->conf;
	struct state              st;
	struct rule_env           env;
	struct rule_outcome       oc;
	enum db_rc                rc = DB_OK;
	size_t                    i;
	int                       relevant = 0, need_counts = 0;
	char                      occ[32];

	memset(&st, 0, sizeof(st));
	memset(&oc, 0, sizeof(oc));
	for (i = 0; ct != NULL && i < ct->nrules; i++)
		if (strcmp(ct->rules[i].event, ev->type) == 0) {
			relevant = 1;
			if (ct->rules[i].per_profile || ct->rules[i].per_day ||
			    ct->rules[i].per_month)
				need_counts = 1;
		}
	if (!relevant && (ct == NULL || ct->ntiers == 0)) {
		/* nothing can change: an empty outcome, no round trips */
		json_object_object_add(o, "points_awarded", json_object_new_int64(0));
		json_object_object_add(o, "rules_applied", json_object_new_array());
		json_object_object_add(o, "rules_skipped", json_object_new_array());
		json_object_object_add(o, "effects", json_object_new_array());
		json_object_object_add(o, "tier", rv->has_tier ?
		    json_object_new_string(rv->tier) : NULL);
		return DB_OK;
	}
	st.vars = json_object_new_object();
	build_defs(ct, &st);
	if (rv->pid != 0 && !rv->created &&
	    (rc = load_state(db, ct, ev, rv->pid, need_counts, &st)) != DB_OK)
		goto out;
	memset(&env, 0, sizeof(env));
	env.properties = ev->properties;
	env.event_type = ev->type;
	env.event_source = ev->source;
	env.event_occurred_at = ts_format(ev->occurred_us, occ);
	env.tier = rv->has_tier ? rv->tier : NULL;
	env.balances = st.bals;
	env.nbalances = st.nbals;
	env.vars = st.vars;
	if (rule_engine_run(st.defs, ct->nrules, st.tiers, ct->ntiers,
	    (enum rule_rounding)ct->rounding, &env, st.counts, &oc) != 0) {
		rc = DB_ERROR;
		goto out;
	}
	if (!dry && (rc = write_outcome(db, ct, ev, rv, evid, &oc)) != DB_OK)
		goto out;
	outcome_json(&oc, o);
out:
	/* frees: engine outcome, state views and rows */
	rule_outcome_free(&oc);
	state_free(&st);
	return rc;
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
 * Apply one event inside the open transaction. Fills res. Returns DB_OK
 * (res decided), DB_ROLLBACK (res is an error and the item's writes must
 * be undone), or a database failure (the whole transaction is retried or
 * abandoned by the caller).
 */
static enum db_rc
apply_one(struct db *db, const struct ev_tenant *t, const struct ev_event *ev,
    struct ev_result *res, int dry, const char *reqid)
{
	struct db_param  p[10];
	struct db_res    r;
	struct resolved  rv;
	struct ev_verr   verr;
	enum db_rc       rc;
	uint64_t         affected = 0, evid = 0;
	char             occ[32], rec[32];
	json_object     *doc = NULL, *outcome = NULL, *conf = NULL;
	const char      *doctext, *outtext;

	if (res->body != NULL) {
		json_object_put(res->body);
		res->body = NULL;
	}
	memset(res, 0, sizeof(*res));
	p[0] = DBP_I64(t->id);
	p[1] = DBP_CSTR(ev->source);
	p[2] = DBP_STR(ev->ext_id, ev->ext_id_len);

	if (dry) {
		/* nothing is written: see whether the key is taken, then resolve */
		if ((rc = query(db, DB_EVENT_BY_KEY, p, 3, &r)) != DB_OK)
			return rc;
		if (r.nrows > 0) {
			int same = DB_CELL(&r, 0, 2)->len == 32 &&
			    memcmp(DB_CELL(&r, 0, 2)->v, ev->fingerprint, 32) == 0;
			answer_existing(res, DB_CELL(&r, 0, 1)->v, same);
			db_res_free(&r);
			return DB_OK;
		}
		db_res_free(&r);
		rc = resolve(db, t, ev, 1, &rv, &verr);
		if (rc == DB_ROLLBACK) {
			ev_result_error(res, &verr);
			return DB_OK;
		}
		if (rc != DB_OK)
			return rc;
		res->st = EV_ST_DRY_RUN;
		res->body = json_object_new_object();
		json_object_object_add(res->body, "status",
		    json_object_new_string("dry_run"));
		json_object_object_add(res->body, "profile_id", rv.created ? NULL :
		    json_object_new_string(rv.public_id));
		json_object_object_add(res->body, "profile_created",
		    json_object_new_boolean(rv.created));
		return apply_rules(db, t, ev, &rv, 0, 1, res->body);
	}

	/* 1. claim the dedup key */
	if (ev_public_id("evt_", res->event_id) != 0)
		return DB_ERROR;
	if ((doc = ev_event_doc(ev)) == NULL)
		return DB_ERROR;
	doctext = json_object_to_json_string_ext(doc, JSON_FLAGS);
	sql_time(ev->occurred_us, occ);
	sql_time(ev->received_us, rec);
	p[3] = DBP_CSTR(res->event_id);
	p[4] = DBP_STR((const char *)ev->fingerprint, 32);
	p[5] = DBP_CSTR(ev->type);
	p[6] = DBP_CSTR(occ);
	p[7] = DBP_CSTR(rec);
	p[8] = DBP_CSTR(doctext);
	p[9] = DBP_CSTR(reqid ? reqid : "");
	rc = db_exec(db, DB_EVENT_INSERT, p, 10, NULL, &affected, &evid);
	json_object_put(doc);
	if (rc != DB_OK)
		return rc;
	if (affected == 0) {
		/* the key was taken: the same event (duplicate) or a conflict */
		if ((rc = query(db, DB_EVENT_BY_KEY, p, 3, &r)) != DB_OK)
			return rc;
		if (r.nrows == 0) {
			/* our random public id collided: run again */
			db_res_free(&r);
			return DB_RETRY;
		}
		answer_existing(res, DB_CELL(&r, 0, 1)->v,
		    DB_CELL(&r, 0, 2)->len == 32 &&
		    memcmp(DB_CELL(&r, 0, 2)->v, ev->fingerprint, 32) == 0);
		db_res_free(&r);
		return DB_OK;
	}

	/* 2. the profile */
	rc = resolve(db, t, ev, 0, &rv, &verr);
	if (rc == DB_ROLLBACK) {
		ev_result_error(res, &verr);
		res->event_id[0] = '\0';
		return DB_ROLLBACK;
	}
	if (rc != DB_OK)
		return rc;
	if ((rc = conflicts_json(db, ev, &rv, &conf)) != DB_OK) {
		json_object_put(conf);
		return rc;
	}

	/* 3. rules against the locked profile, effects written */
	outcome = json_object_new_object();
	if ((rc = apply_rules(db, t, ev, &rv, (int64_t)evid, 0, outcome)) != DB_OK) {
		json_object_put(conf);
		json_object_put(outcome);
		return rc;
	}
	json_object_object_add(outcome, "identity_conflicts", conf);

	/* 4. the outcome on the event row */
	outtext = json_object_to_json_string_ext(outcome, JSON_FLAGS);
	p[0] = DBP_I64(rv.pid);
	p[1] = DBP_CSTR(outtext);
	p[2] = DBP_CSTR(t->conf != NULL ? t->conf->version : "");
	p[3] = DBP_I64((int64_t)evid);
	rc = db_exec(db, DB_EVENT_SET_OUTCOME, p, 4, NULL, NULL, NULL);
	if (rc != DB_OK) {
		json_object_put(outcome);
		return rc;
	}

	res->st = EV_ST_ACCEPTED;
	res->body = json_object_new_object();
	json_object_object_add(res->body, "status", json_object_new_string("accepted"));
	json_object_object_add(res->body, "event_id",
	    json_object_new_string(res->event_id));
	json_object_object_add(res->body, "profile_id",
	    json_object_new_string(rv.public_id));
	json_object_object_add(res->body, "profile_created",
	    json_object_new_boolean(rv.created));
	json_object_object_add(res->body, "points_awarded",
	    json_object_get(json_object_object_get(outcome, "points_awarded")));
	json_object_object_add(res->body, "rules_applied",
	    json_object_get(json_object_object_get(outcome, "rules_applied")));
	json_object_object_add(res->body, "effects",
	    json_object_get(json_object_object_get(outcome, "effects")));
	json_object_object_add(res->body, "identity_conflicts",
	    json_object_get(json_object_object_get(outcome, "identity_conflicts")));
	json_object_object_add(res->body, "tier",
	    json_object_get(json_object_object_get(outcome, "tier")));
	json_object_put(outcome);
	return DB_OK;
}

struct batch {
	const struct ev_tenant  *t;
	struct ev_event        **evs;
	struct ev_result        *res;
	size_t                   n;
	int                      dry;
	const char              *reqid;
};

/* The transaction body: every item, a savepoint around each in a batch. */
static enum db_rc
batch_fn(struct db *db, void *arg)
{
	struct batch *b = arg;
	size_t        i;
	enum db_rc    rc;
	int           sp = b->n > 1 && !b->dry;

	for (i = 0; i < b->n; i++) {
		if (b->evs[i] == NULL)
			continue;
		if (sp && (rc = db_simple(db, "SAVEPOINT item")) != DB_OK)
			return rc;
		rc = apply_one(db, b->t, b->evs[i], &b->res[i], b->dry, b->reqid);
		if (rc == DB_ROLLBACK) {
			if (!sp)
				return DB_ROLLBACK;
			if ((rc = db_simple(db, "ROLLBACK TO SAVEPOINT item")) != DB_OK)
				return rc;
			continue;
		}
		if (rc != DB_OK)
			return rc;
	}
	return DB_OK;
}

enum ev_err
ev_ingest(struct db *db, const struct ev_tenant *t, struct ev_event **evs,
    struct ev_result *res, size_t n, int dry_run, const char *request_id,
    unsigned *retries)
{
	struct batch b = { t, evs, res, n, dry_run, request_id };
	enum db_rc   rc;
	size_t       i;

	rc = db_txn(db, batch_fn, &b, retries);
	if (rc == DB_OK || rc == DB_ROLLBACK)
		return EV_OK;
	/* Nothing was committed: drop whatever the attempts built. */
	for (i = 0; i < n; i++)
		if (evs[i] != NULL && res[i].body != NULL) {
			json_object_put(res[i].body);
			res[i].body = NULL;
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
