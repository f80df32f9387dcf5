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
	int64_t  found[IDENT__MAX];    /* profile each given identity is bound to */
};

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
		if (dry)
			return DB_OK;
		if (ev_public_id("prf_", rv->public_id) != 0) {
			ev_verr_set(verr, EV_INTERNAL, "no randomness");
			return DB_ERROR;
		}
		p[0] = DBP_I64(t->id);
		p[1] = DBP_CSTR(rv->public_id);
		p[2] = DBP_NULL;
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
		json_object_object_add(res->body, "points_awarded",
		    json_object_new_int64(0));
		json_object_object_add(res->body, "rules_applied",
		    json_object_new_array());
		json_object_object_add(res->body, "effects", json_object_new_array());
		return DB_OK;
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

	/* 3. rules: effects are added by the rules engine (issue 3) */
	outcome = json_object_new_object();
	json_object_object_add(outcome, "points_awarded", json_object_new_int64(0));
	json_object_object_add(outcome, "rules_applied", json_object_new_array());
	json_object_object_add(outcome, "rules_skipped", json_object_new_array());
	json_object_object_add(outcome, "effects", json_object_new_array());
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
