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

/* What identity resolution decided for one event. */
struct resolved {
	int64_t  pid;                  /* the profile (created or found) */
	char     public_id[32];
	int      created;
	char     tier[72];             /* tier before the event */
	int      has_tier;
	int64_t  found[IDENT__MAX];    /* profile each given identity is bound to */
	char     found_pub[IDENT__MAX][32];   /* ... its public id */
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
 * candidate, creates a profile when there is none and binds
 * unbound identities to the chosen profile. A race with another transaction
 * surfaces as a duplicate key and is answered with DB_RETRY, so the whole
 * transaction runs again and sees the other's committed rows.
 * Returns DB_OK, DB_ROLLBACK with verr set (identity_not_found), or a
 * database failure.
 */
static enum db_rc
resolve(struct db *db, const struct ev_tenant *t, const struct ev_event *ev,
    struct resolved *rv, struct ev_verr *verr)
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
	/* 1. every given identity, its profile and that profile's EXTERNAL;
	 * the profiles found are locked until the transaction ends */
	if ((rc = query(db, DB_IDENT_FIND_LOCK, p, 5, &r)) != DB_OK)
		return rc;
	for (i = 0; i < r.nrows; i++) {
		int64_t type = db_cell_i64(DB_CELL(&r, i, 0));
		if (type < 0 || type >= IDENT__MAX)
			continue;
		rv->found[type] = db_cell_i64(DB_CELL(&r, i, 1));
		snprintf(rv->found_pub[type], sizeof(rv->found_pub[type]), "%s",
		    DB_CELL(&r, i, 2)->v ? DB_CELL(&r, i, 2)->v : "");
	}

	/* 2. the highest-precedence identity found gives the candidate */
	for (i = 0; i < IDENT__MAX && cand == 0; i++)
		if (ev->ident[i] != NULL && rv->found[i] != 0)
			cand = rv->found[i];
	for (i = 0; cand != 0 && i < r.nrows; i++) {
		if (db_cell_i64(DB_CELL(&r, i, 1)) != cand)
			continue;
		/* 3. a new externalUserId never joins a profile that has another */
		if (ev->ident[IDENT_EXTERNAL] != NULL &&
		    rv->found[IDENT_EXTERNAL] == 0 && DB_CELL(&r, i, 4)->v != NULL) {
			cand = 0;
			break;
		}
		snprintf(rv->public_id, sizeof(rv->public_id), "%s",
		    DB_CELL(&r, i, 2)->v ? DB_CELL(&r, i, 2)->v : "");
		if (DB_CELL(&r, i, 3)->v != NULL) {
			snprintf(rv->tier, sizeof(rv->tier), "%s", DB_CELL(&r, i, 3)->v);
			rv->has_tier = 1;
		}
		break;
	}
	db_res_free(&r);

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
	} else
		rv->pid = cand;      /* 5. the candidate, locked above */
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

/* identity_conflicts: given identities bound to another profile (they
 * stay there: profiles are never merged automatically). New array. */
static json_object *
conflicts_json(const struct ev_event *ev, const struct resolved *rv)
{
	json_object *a = json_object_new_array();
	size_t       i;

	for (i = 0; i < IDENT__MAX; i++) {
		json_object *c;
		if (ev->ident[i] == NULL || rv->found[i] == 0 ||
		    rv->found[i] == rv->pid)
			continue;
		c = json_object_new_object();
		json_object_object_add(c, "type",
		    json_object_new_string(ident_type_name[i]));
		json_object_object_add(c, "value",
		    json_object_new_string(ev->ident[i]));
		json_object_object_add(c, "bound_to_profile_id",
		    json_object_new_string(rv->found_pub[i]));
		json_object_array_add(a, c);
	}
	return a;
}


/* ---- rules: state before the event, the engine, the writes ---- */

/* Everything read about the profile for the rules, and what the engine
 * made of it; freed by state_free(). */
struct state {
	struct db_res        res;       /* rows the views below point into */
	struct rule_balance *bals;
	size_t               nbals;
	json_object         *vars;
	struct rule_def     *defs;
	struct rule_set     *sets;
	struct rule_tier    *tiers;
	struct rule_count   *counts;
	struct rule_outcome  oc;
	int                  ran;       /* the engine ran (oc is valid) */
};

static void
state_free(struct state *st)
{
	rule_outcome_free(&st->oc);
	db_res_free(&st->res);
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

/*
 * Load balances, variables and limit counters of an existing profile in
 * one round trip (DB_STATE_OF: rows of kind 'b', 'v' and 'c').
 */
static enum db_rc
load_state(struct db *db, const struct conf_tenant *ct, const struct ev_event *ev,
    int64_t pid, struct state *st)
{
	struct db_param p[5];
	enum db_rc      rc;
	size_t          i, j;
	char            day[16], month[16];

	periods(ev->occurred_us, day, month);
	p[0] = DBP_I64(pid);
	p[1] = DBP_I64(pid);
	p[2] = DBP_I64(pid);
	p[3] = DBP_CSTR(day);
	p[4] = DBP_CSTR(month);
	if ((rc = db_exec(db, DB_STATE_OF, p, 5, &st->res, NULL, NULL)) != DB_OK)
		return rc;
	if ((st->bals = calloc(st->res.nrows ? st->res.nrows : 1,
	    sizeof(*st->bals))) == NULL)
		abort();
	for (i = 0; i < st->res.nrows; i++) {
		const char *kind = DB_CELL(&st->res, i, 0)->v;
		const char *k1 = DB_CELL(&st->res, i, 1)->v;
		if (kind == NULL || k1 == NULL)
			continue;
		if (kind[0] == 'b') {
			struct rule_balance *b = &st->bals[st->nbals++];
			b->name = k1;
			b->balance = db_cell_i64(DB_CELL(&st->res, i, 2));
			b->lifetime = db_cell_i64(DB_CELL(&st->res, i, 3));
		} else if (kind[0] == 'v') {
			struct json_perr perr;
			json_object *v = json_parse_strict(DB_CELL(&st->res, i, 2)->v,
			    DB_CELL(&st->res, i, 2)->len, JSON_MAX_DEPTH, &perr);
			json_object_object_add(st->vars, k1, v);
		} else if (kind[0] == 'c') {
			const char *per = DB_CELL(&st->res, i, 2)->v;
			int64_t     n = db_cell_i64(DB_CELL(&st->res, i, 3));
			for (j = 0; per != NULL && j < ct->nrules; j++) {
				if (strcmp(ct->rules[j].id, k1) != 0)
					continue;
				if (strcmp(per, "all") == 0)
					st->counts[j].ever = n;
				else if (per[0] == 'd')
					st->counts[j].day = n;
				else
					st->counts[j].month = n;
			}
		}
	}
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
	char            day[16], month[16];

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
		if ((rc = db_exec(db, DB_LEDGER_INSERT, p, 7, NULL, NULL, NULL)) != DB_OK)
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
	/*
	 * The profile row is written by every event that changes an existing
	 * profile, not only on a tier change: on a Galera cluster a SELECT ...
	 * FOR UPDATE holds only on its own node, and two nodes could otherwise
	 * both add to a balance read before the other's commit arrived. With a
	 * write to the same row their write sets conflict, so one of them is
	 * aborted (1213) and runs again with the fresh balance.
	 */
	if (oc->tier_changed || !rv->created) {
		p[0] = oc->tier_after ? DBP_CSTR(oc->tier_after) : DBP_NULL;
		p[1] = DBP_I64(rv->pid);
		if ((rc = db_exec(db, DB_PROFILE_SET_TIER, p, 2, NULL, NULL, NULL)) != DB_OK)
			return rc;
	}
	return DB_OK;
}

/* Outcome fields into o: points_awarded, rules_applied, rules_skipped,
 * effects, tier (the engine's, or an empty outcome when it did not run). */
static void
outcome_json(const struct conf_tenant *ct, const struct state *st,
    const struct resolved *rv, json_object *o)
{
	const struct rule_outcome *oc = &st->oc;
	json_object *ap = json_object_new_array(), *sk = json_object_new_array();
	json_object *ef = json_object_new_array();
	size_t       i;

	for (i = 0; st->ran && i < oc->napplied; i++)
		json_object_array_add(ap, json_object_new_string(oc->applied[i].rule_id));
	for (i = 0; st->ran && i < oc->nskipped; i++) {
		json_object *s = json_object_new_object();
		json_object_object_add(s, "rule",
		    json_object_new_string(oc->skipped[i].rule_id));
		json_object_object_add(s, "reason",
		    json_object_new_string(oc->skipped[i].reason));
		json_object_array_add(sk, s);
	}
	for (i = 0; st->ran && i < oc->ndeltas; i++) {
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
	for (i = 0; st->ran && i < oc->nassigns; i++) {
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
	if (st->ran && oc->tier_changed) {
		json_object *e = json_object_new_object();
		const char  *cause = NULL;
		/* the rule whose points delta first brought the lifetime into
		 * the new tier (none when a configuration change moved it) */
		for (i = 0; i < oc->ndeltas && cause == NULL; i++) {
			const char *tn;
			if (strcmp(oc->deltas[i].balance, "points") != 0)
				continue;
			tn = tier_name_for(ct, oc->deltas[i].lifetime_after);
			if (tn != NULL && oc->tier_after != NULL &&
			    strcmp(tn, oc->tier_after) == 0)
				cause = oc->deltas[i].rule_id;
		}
		json_object_object_add(e, "type", json_object_new_string("tier"));
		json_object_object_add(e, "rule", cause ?
		    json_object_new_string(cause) : NULL);
		json_object_object_add(e, "from", oc->tier_before ?
		    json_object_new_string(oc->tier_before) : NULL);
		json_object_object_add(e, "to", oc->tier_after ?
		    json_object_new_string(oc->tier_after) : NULL);
		json_object_array_add(ef, e);
	}
	json_object_object_add(o, "points_awarded",
	    json_object_new_int64(st->ran ? oc->points_awarded : 0));
	json_object_object_add(o, "rules_applied", ap);
	json_object_object_add(o, "rules_skipped", sk);
	json_object_object_add(o, "effects", ef);
	if (st->ran)
		json_object_object_add(o, "tier", oc->tier_after ?
		    json_object_new_string(oc->tier_after) : NULL);
	else
		json_object_object_add(o, "tier", rv->has_tier ?
		    json_object_new_string(rv->tier) : NULL);
}

/*
 * Evaluate the tenant's rules for the event against the profile as it was
 * before it (locked by resolve()). Fills st (the engine did not run when
 * no rule listens to this type and there are no tiers: no round trip).
 */
static enum db_rc
eval_rules(struct db *db, const struct ev_tenant *t, const struct ev_event *ev,
    const struct resolved *rv, struct state *st)
{
	const struct conf_tenant *ct = t->conf;
	struct rule_env           env;
	enum db_rc                rc;
	size_t                    i;
	int                       relevant = 0;
	char                      occ[32];

	for (i = 0; ct != NULL && i < ct->nrules && !relevant; i++)
		relevant = strcmp(ct->rules[i].event, ev->type) == 0;
	if (!relevant && (ct == NULL || ct->ntiers == 0))
		return DB_OK;
	st->vars = json_object_new_object();
	build_defs(ct, st);
	if (rv->pid != 0 && !rv->created &&
	    (rc = load_state(db, ct, ev, rv->pid, st)) != DB_OK)
		return rc;
	memset(&env, 0, sizeof(env));
	env.properties = ev->properties;
	env.event_type = ev->type;
	env.event_source = ev->source;
	env.event_occurred_at = ts_format(ev->occurred_us, occ);
	env.tier = rv->has_tier ? rv->tier : NULL;
	env.balances = st->bals;
	env.nbalances = st->nbals;
	env.vars = st->vars;
	if (rule_engine_run(st->defs, ct->nrules, st->tiers, ct->ntiers,
	    (enum rule_rounding)ct->rounding, &env, st->counts, &st->oc) != 0)
		return DB_ERROR;
	st->ran = 1;
	return DB_OK;
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

/*
 * Is the dedup key taken? 1 (res answered: duplicate or conflict, or
 * accepted when the row was stored by an earlier transaction attempt of
 * this very request — same request bytes of `attempt`, another attempt
 * number — whose COMMIT reply was lost), 0 (free), or -1 with *rc set on a
 * database failure. A row of the current attempt is an earlier item of the
 * same batch: a duplicate.
 */
static int
key_taken(struct db *db, const struct ev_tenant *t, const struct ev_event *ev,
    const unsigned char *attempt, struct ev_result *res, enum db_rc *rc)
{
	struct db_param p[3];
	struct db_res   r;
	int             same;

	p[0] = DBP_I64(t->id);
	p[1] = DBP_CSTR(ev->source);
	p[2] = DBP_STR(ev->ext_id, ev->ext_id_len);
	if ((*rc = query(db, DB_EVENT_BY_KEY, p, 3, &r)) != DB_OK)
		return -1;
	if (r.nrows == 0) {
		db_res_free(&r);
		return 0;
	}
	same = DB_CELL(&r, 0, 2)->len == 32 &&
	    memcmp(DB_CELL(&r, 0, 2)->v, ev->fingerprint, 32) == 0;
	if (same && attempt != NULL && DB_CELL(&r, 0, 3)->len == EV_ATTEMPT_LEN &&
	    memcmp(DB_CELL(&r, 0, 3)->v, attempt, EV_ATTEMPT_LEN - 1) == 0 &&
	    DB_CELL(&r, 0, 3)->v[EV_ATTEMPT_LEN - 1] != (char)attempt[EV_ATTEMPT_LEN - 1]) {
		*rc = answer_own(db, db_cell_i64(DB_CELL(&r, 0, 0)),
		    DB_CELL(&r, 0, 1)->v, res);
		db_res_free(&r);
		return *rc == DB_OK ? 1 : -1;
	}
	answer_existing(res, DB_CELL(&r, 0, 1)->v, same);
	db_res_free(&r);
	return 1;
}

/* Reset a result for another attempt. */
static void
result_reset(struct ev_result *res)
{
	if (res->body != NULL)
		json_object_put(res->body);
	memset(res, 0, sizeof(*res));
}

/*
 * Apply one event inside the open transaction. The order keeps every
 * decision before the first write: (1) is the key taken (duplicate /
 * conflict: answered, nothing written); (2) identity resolution — an
 * unknown identity in a tenant without auto-creation is answered here,
 * before anything is written; (3) the rules against the locked profile;
 * (4) INSERT IGNORE of the event with its outcome — claiming the key; when
 * another transaction claimed it since (1), the whole transaction runs
 * again and (1) then answers duplicate; (5) the effects.
 * `checked`: (1) was already done outside the transaction.
 * Returns DB_OK (res decided) or a database failure for db_txn().
 */
static enum db_rc
apply_one(struct db *db, const struct ev_tenant *t, const struct ev_event *ev,
    struct ev_result *res, int checked, const unsigned char *attempt,
    const char *reqid)
{
	struct db_param  p[14];
	struct resolved  rv;
	struct ev_verr   verr;
	struct state     st;
	enum db_rc       rc;
	uint64_t         affected = 0, evid = 0;
	char             occ[32], rec[32];
	json_object     *doc = NULL, *outcome = NULL;
	const char      *doctext, *outtext;

	result_reset(res);
	memset(&st, 0, sizeof(st));

	/* 1. the same key seen before */
	if (!checked) {
		int taken = key_taken(db, t, ev, attempt, res, &rc);
		if (taken < 0)
			return rc;
		if (taken)
			return DB_OK;
	}

	/* 2. the profile */
	rc = resolve(db, t, ev, &rv, &verr);
	if (rc == DB_ROLLBACK) {
		ev_result_error(res, &verr);
		return DB_OK;        /* nothing was written */
	}
	if (rc != DB_OK)
		return rc;

	/* 3. the rules against the profile as it was */
	if ((rc = eval_rules(db, t, ev, &rv, &st)) != DB_OK)
		goto out;
	outcome = json_object_new_object();
	outcome_json(t->conf, &st, &rv, outcome);
	json_object_object_add(outcome, "identity_conflicts", conflicts_json(ev, &rv));
	json_object_object_add(outcome, "profile_created",
	    json_object_new_boolean(rv.created));


	/* 4. claim the dedup key, with the outcome */
	if (ev_public_id("evt_", res->event_id) != 0) {
		rc = DB_ERROR;
		goto out;
	}
	doc = ev_event_doc(ev);
	doctext = json_object_to_json_string_ext(doc, JSON_FLAGS);
	outtext = json_object_to_json_string_ext(outcome, JSON_FLAGS);
	sql_time(ev->occurred_us, occ);
	sql_time(ev->received_us, rec);
	p[0] = DBP_I64(t->id);
	p[1] = DBP_CSTR(ev->source);
	p[2] = DBP_STR(ev->ext_id, ev->ext_id_len);
	p[3] = DBP_CSTR(res->event_id);
	p[4] = DBP_STR((const char *)ev->fingerprint, 32);
	p[5] = DBP_CSTR(ev->type);
	p[6] = DBP_CSTR(occ);
	p[7] = DBP_CSTR(rec);
	p[8] = DBP_CSTR(doctext);
	p[9] = DBP_CSTR(reqid ? reqid : "");
	p[10] = DBP_I64(rv.pid);
	p[11] = DBP_CSTR(outtext);
	p[12] = DBP_CSTR(t->conf != NULL ? t->conf->version : "");
	p[13] = DBP_STR((const char *)attempt, EV_ATTEMPT_LEN);
	rc = db_exec(db, DB_EVENT_INSERT, p, 14, NULL, &affected, &evid);
	if (rc != DB_OK)
		goto out;
	if (affected == 0) {
		/* claimed meanwhile (or a public id collision): run again */
		rc = DB_RETRY;
		goto out;
	}

	/* 5. the effects */
	if (st.ran && (rc = write_outcome(db, t->conf, ev, &rv, (int64_t)evid,
	    &st.oc)) != DB_OK)
		goto out;

	res->st = EV_ST_ACCEPTED;
	res->body = json_object_new_object();
	json_object_object_add(res->body, "status", json_object_new_string("accepted"));
	json_object_object_add(res->body, "event_id",
	    json_object_new_string(res->event_id));
	json_object_object_add(res->body, "profile_id",
	    json_object_new_string(rv.public_id));
	json_object_object_foreach(outcome, k, v)
		json_object_object_add(res->body, k, json_object_get(v));
out:
	/* frees: document, outcome, rule state */
	if (doc != NULL)
		json_object_put(doc);
	if (outcome != NULL)
		json_object_put(outcome);
	state_free(&st);
	return rc;
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
};

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
 * The transaction body: every item in order. Items need no savepoint:
 * apply_one() decides every refusal before its first write. An item that
 * meets a database error that retrying cannot cure (DB_ERROR: a bug or data
 * the server refuses) is answered internal_error on its own and the
 * transaction runs again without it, so it never spoils the others; the
 * happy path pays nothing for that.
 */
static enum db_rc
batch_fn(struct db *db, void *arg)
{
	struct batch *b = arg;
	size_t        k, i;
	enum db_rc    rc;
	int           checked = b->checked;

	b->checked = 0;          /* a retry checks the key again */
	b->attempt[EV_ATTEMPT_LEN - 1]++;   /* this transaction attempt */
	for (k = 0; k < b->n; k++) {
		i = b->order != NULL ? b->order[k] : k;
		if (b->evs[i] == NULL)
			continue;
		rc = apply_one(db, b->t, b->evs[i], &b->res[i], checked, b->attempt,
		    b->reqid);
		if (rc == DB_ERROR && b->n > 1) {
			struct ev_verr verr;
			fprintf(stderr, "rfevents: request %s: item %zu: database"
			    " error %u: %s\n", b->reqid ? b->reqid : "-", i,
			    db_last_errno(db), db_last_error(db));
			ev_verr_set(&verr, EV_INTERNAL, "this item could not be"
			    " stored; retry it with the same externalEventId");
			ev_result_error(&b->res[i], &verr);
			b->evs[i] = NULL;
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

enum ev_err
ev_ingest(struct db *db, const struct ev_tenant *t, struct ev_event **evs,
    struct ev_result *res, size_t n, int dry_run, const char *request_id,
    unsigned *retries)
{
	struct batch b = { t, evs, res, n, dry_run, 0, request_id, { 0 }, NULL };
	enum db_rc   rc = DB_OK;
	size_t       i, nvalid = n;

	if (ev_random(b.attempt, sizeof(b.attempt)) != 0)
		return EV_INTERNAL;

	/* A single event already seen is answered by one read, without a
	 * transaction: the duplicate path is the cheapest one. */
	if (n == 1 && evs[0] != NULL) {
		int taken = key_taken(db, t, evs[0], NULL, &res[0], &rc);
		if (taken == 1)
			return EV_OK;
		if (taken == 0)
			b.checked = 1;
	}
	if (n > 1 && (b.order = batch_order(evs, n, &nvalid)) != NULL)
		b.n = nvalid;
	if (rc == DB_OK)
		rc = db_txn(db, batch_fn, &b, retries);
	free(b.order);
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
