/*
 * Read side of user state (API.md §4): a profile with identities, balances,
 * tier and variables; the profile an identity resolves to; the event
 * history and the ledger, newest first, with opaque cursors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "db/db.h"
#include "core/core.h"

#define CURSOR_MAX 160

static enum ev_err
db_err(enum db_rc rc)
{
	return rc == DB_ERROR ? EV_INTERNAL : EV_UNAVAILABLE;
}

/* ---- opaque cursors: base64url of "v1|field|field|..." ---- */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void
b64url(const char *in, size_t n, char *out, size_t outsz)
{
	size_t i, o = 0;

	for (i = 0; i < n && o + 5 < outsz; i += 3) {
		unsigned v = (unsigned char)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned char)in[i + 1] << 8;
		if (i + 2 < n)
			v |= (unsigned char)in[i + 2];
		out[o++] = b64[(v >> 18) & 63];
		out[o++] = b64[(v >> 12) & 63];
		if (i + 1 < n)
			out[o++] = b64[(v >> 6) & 63];
		if (i + 2 < n)
			out[o++] = b64[v & 63];
	}
	out[o] = '\0';
}

/* Decode base64url (no padding) into out; -1 on bad input. */
static int
unb64url(const char *in, char *out, size_t outsz)
{
	size_t   n = strlen(in), i, o = 0;
	unsigned acc = 0, bits = 0;

	if (n > CURSOR_MAX)
		return -1;
	for (i = 0; i < n; i++) {
		const char *p = strchr(b64, in[i]);
		if (p == NULL || in[i] == '\0')
			return -1;
		acc = (acc << 6) | (unsigned)(p - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o + 1 >= outsz)
				return -1;
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	out[o] = '\0';
	return 0;
}

/*
 * Split a decoded cursor "v1|a|b|c" into nf fields (pointers into buf).
 * Each field must be a DATETIME text or digits. Returns 0 or -1.
 */
static int
cursor_fields(char *buf, char **f, size_t nf)
{
	size_t i;
	char  *p = buf, *e;

	if (strncmp(p, "v1|", 3) != 0)
		return -1;
	p += 3;
	for (i = 0; i < nf; i++) {
		const char *c;
		e = strchr(p, '|');
		if ((e == NULL) != (i == nf - 1))
			return -1;
		if (e != NULL)
			*e = '\0';
		if (*p == '\0' || strlen(p) > 32)
			return -1;
		for (c = p; *c != '\0'; c++)
			if (!strchr("0123456789-: .", *c))
				return -1;
		f[i] = p;
		p = e ? e + 1 : p;
	}
	return 0;
}

/* The internal id of a tenant's profile by its public id; 0 if none. */
static enum ev_err
profile_row(struct db *db, const struct ev_tenant *t, const char *public_id,
    struct db_res *r)
{
	struct db_param p[2];
	enum db_rc      rc;

	p[0] = DBP_I64(t->id);
	p[1] = DBP_CSTR(public_id);
	if ((rc = db_exec(db, DB_PROFILE_BY_PUBLIC_ID, p, 2, r, NULL, NULL)) != DB_OK)
		return db_err(rc);
	if (r->nrows == 0) {
		db_res_free(r);
		return EV_NOT_FOUND;
	}
	return EV_OK;
}

/* The profile document of internal id pid (row r of DB_PROFILE_BY_PUBLIC_ID). */
static json_object *
profile_doc(struct db *db, const struct db_res *pr, enum ev_err *err)
{
	struct db_param p = DBP_I64(db_cell_i64(DB_CELL(pr, 0, 0)));
	struct db_res   r;
	enum db_rc      rc;
	json_object    *o, *a, *b, *v;
	size_t          i;

	o = json_object_new_object();
	json_object_object_add(o, "profile_id",
	    json_object_new_string(DB_CELL(pr, 0, 1)->v));
	json_object_object_add(o, "created_at",
	    json_object_new_string(DB_CELL(pr, 0, 3)->v ? DB_CELL(pr, 0, 3)->v : ""));
	json_object_object_add(o, "tier", DB_CELL(pr, 0, 2)->v ?
	    json_object_new_string(DB_CELL(pr, 0, 2)->v) : NULL);

	if ((rc = db_exec(db, DB_IDENT_OF_PROFILE, &p, 1, &r, NULL, NULL)) != DB_OK)
		goto fail;
	a = json_object_new_array();
	for (i = 0; i < r.nrows; i++) {
		int64_t      ty = db_cell_i64(DB_CELL(&r, i, 0));
		json_object *id = json_object_new_object();
		json_object_object_add(id, "type", json_object_new_string(
		    ty >= 0 && ty < IDENT__MAX ? ident_type_name[ty] : "UNKNOWN"));
		json_object_object_add(id, "value", json_object_new_string_len(
		    DB_CELL(&r, i, 1)->v, (int)DB_CELL(&r, i, 1)->len));
		json_object_array_add(a, id);
	}
	db_res_free(&r);
	json_object_object_add(o, "identities", a);

	if ((rc = db_exec(db, DB_BALANCES_OF, &p, 1, &r, NULL, NULL)) != DB_OK)
		goto fail;
	b = json_object_new_object();
	for (i = 0; i < r.nrows; i++) {
		json_object *bal = json_object_new_object();
		json_object_object_add(bal, "balance",
		    json_object_new_int64(db_cell_i64(DB_CELL(&r, i, 1))));
		json_object_object_add(bal, "lifetime",
		    json_object_new_int64(db_cell_i64(DB_CELL(&r, i, 2))));
		json_object_object_add(b, DB_CELL(&r, i, 0)->v, bal);
	}
	db_res_free(&r);
	json_object_object_add(o, "balances", b);

	if ((rc = db_exec(db, DB_VARS_OF, &p, 1, &r, NULL, NULL)) != DB_OK)
		goto fail;
	v = json_object_new_object();
	for (i = 0; i < r.nrows; i++) {
		struct json_perr perr;
		json_object *val = json_parse_strict(DB_CELL(&r, i, 1)->v,
		    DB_CELL(&r, i, 1)->len, JSON_MAX_DEPTH, &perr);
		/* a stored null parses to NULL too, which is what we want */
		json_object_object_add(v, DB_CELL(&r, i, 0)->v, val);
	}
	db_res_free(&r);
	json_object_object_add(o, "variables", v);
	*err = EV_OK;
	return o;
fail:
	json_object_put(o);
	*err = db_err(rc);
	return NULL;
}

json_object *
ev_profile_get(struct db *db, const struct ev_tenant *t, const char *public_id,
    enum ev_err *err)
{
	struct db_res r;
	json_object  *o;

	if ((*err = profile_row(db, t, public_id, &r)) != EV_OK)
		return NULL;
	o = profile_doc(db, &r, err);
	db_res_free(&r);
	return o;
}

json_object *
ev_profile_find(struct db *db, const struct ev_tenant *t, enum ident_type type,
    const char *value, enum ev_err *err)
{
	struct db_param p[3];
	struct db_res   r, pr;
	enum db_rc      rc;
	json_object    *o;

	p[0] = DBP_I64(t->id);
	p[1] = DBP_I64((int64_t)type);
	p[2] = DBP_CSTR(value);
	if ((rc = db_exec(db, DB_IDENT_LOOKUP, p, 3, &r, NULL, NULL)) != DB_OK) {
		*err = db_err(rc);
		return NULL;
	}
	if (r.nrows == 0) {
		db_res_free(&r);
		*err = EV_NOT_FOUND;
		return NULL;
	}
	p[0] = DBP_I64(db_cell_i64(DB_CELL(&r, 0, 0)));
	db_res_free(&r);
	if ((rc = db_exec(db, DB_PROFILE_BY_ID, p, 1, &r, NULL, NULL)) != DB_OK) {
		*err = db_err(rc);
		return NULL;
	}
	if (r.nrows == 0) {
		db_res_free(&r);
		*err = EV_NOT_FOUND;
		return NULL;
	}
	/* reuse the public-id path so both answers are the same document */
	*err = profile_row(db, t, DB_CELL(&r, 0, 0)->v, &pr);
	db_res_free(&r);
	if (*err != EV_OK)
		return NULL;
	o = profile_doc(db, &pr, err);
	db_res_free(&pr);
	return o;
}

/* Parse ?limit= (default 50, 1..200); -1 when invalid. */
static long
page_limit(const char *s)
{
	char *e;
	long  v;

	if (s == NULL || *s == '\0')
		return 50;
	v = strtol(s, &e, 10);
	if (*e != '\0' || v < 1 || v > 200)
		return -1;
	return v;
}

/*
 * The common start of a paged read: check `limit` and decode `cursor` into
 * nf fields (defaults when no cursor), then find the tenant's profile.
 * Returns the profile's internal id (> 0), or 0 with *verr set.
 */
static int64_t
page_start(struct db *db, const struct ev_tenant *t, const char *public_id,
    const char *limit_s, const char *cursor, char *dec, size_t decsz,
    char **f, size_t nf, const char *const *defaults, long *limit,
    struct ev_verr *verr)
{
	struct db_res pr;
	enum ev_err   e;
	int64_t       pid;
	size_t        i;

	if ((*limit = page_limit(limit_s)) < 0) {
		ev_verr_set(verr, EV_VALIDATION_FAILED, "limit must be 1 to 200");
		ev_problem_add(verr, "limit", "range");
		return 0;
	}
	if (cursor != NULL && *cursor != '\0') {
		if (unb64url(cursor, dec, decsz) != 0 ||
		    cursor_fields(dec, f, nf) != 0) {
			ev_verr_set(verr, EV_VALIDATION_FAILED, "the cursor is not valid");
			ev_problem_add(verr, "cursor", "invalid");
			return 0;
		}
	} else
		for (i = 0; i < nf; i++)
			f[i] = (char *)defaults[i];
	if ((e = profile_row(db, t, public_id, &pr)) != EV_OK) {
		ev_verr_set(verr, e, e == EV_NOT_FOUND ? "no such profile" :
		    "the database is unavailable");
		return 0;
	}
	pid = db_cell_i64(DB_CELL(&pr, 0, 0));
	db_res_free(&pr);
	return pid;
}

/*
 * A paged read: page_start(), then statement st with the profile's id, the
 * nf cursor fields and limit + 1 (one row more tells whether a next page
 * exists). 0 with the rows in *r (caller frees) and *limit, or -1 with
 * *verr set.
 */
#define PAGE_FIELDS 3
static int
page_query(struct db *db, const struct ev_tenant *t, const char *public_id,
    const char *limit_s, const char *cursor, size_t nf,
    const char *const *defaults, enum db_stmt st, struct db_res *r,
    long *limit, struct ev_verr *verr)
{
	struct db_param p[PAGE_FIELDS + 2];
	char            dec[CURSOR_MAX], *f[PAGE_FIELDS];
	enum db_rc      rc;
	size_t          i;

	p[0] = DBP_I64(page_start(db, t, public_id, limit_s, cursor, dec,
	    sizeof(dec), f, nf, defaults, limit, verr));
	if (p[0].i == 0)
		return -1;
	for (i = 0; i < nf; i++)
		p[1 + i] = DBP_CSTR(f[i]);
	p[1 + nf] = DBP_I64(*limit + 1);
	if ((rc = db_exec(db, st, p, nf + 2, r, NULL, NULL)) != DB_OK) {
		ev_verr_set(verr, db_err(rc), "the database is unavailable");
		return -1;
	}
	return 0;
}

/* The next_cursor of a page: base64url of "v1|" + the last row's key. */
static void
add_cursor(json_object *o, const char *raw, int more)
{
	char cur[CURSOR_MAX * 2];

	if (!more) {
		json_object_object_add(o, "next_cursor", NULL);
		return;
	}
	b64url(raw, strlen(raw), cur, sizeof(cur));
	json_object_object_add(o, "next_cursor", json_object_new_string(cur));
}

json_object *
ev_profile_events(struct db *db, const struct ev_tenant *t, const char *public_id,
    const char *limit_s, const char *cursor, struct ev_verr *verr)
{
	static const char *const defaults[3] = { "9999-12-31 23:59:59.999999",
	    "9999-12-31 23:59:59.999999", "18446744073709551615" };
	struct db_res    r;
	json_object     *o, *arr;
	char             raw[CURSOR_MAX] = "";
	long             limit;
	size_t           i;

	if (page_query(db, t, public_id, limit_s, cursor, 3, defaults,
	    DB_PROFILE_EVENTS, &r, &limit, verr) != 0)
		return NULL;
	arr = json_object_new_array();
	for (i = 0; i < r.nrows && i < (size_t)limit; i++) {
		struct json_perr perr;
		json_object *doc = json_parse_strict(DB_CELL(&r, i, 2)->v,
		    DB_CELL(&r, i, 2)->len, JSON_MAX_DEPTH + 8, &perr);
		json_object *ev = json_object_new_object();
		json_object_object_add(ev, "event_id",
		    json_object_new_string(DB_CELL(&r, i, 1)->v));
		if (doc != NULL) {
			json_object_object_foreach(doc, k, v)
				json_object_object_add(ev, k, json_object_get(v));
			json_object_put(doc);
		}
		json_object_object_add(ev, "profile_id", json_object_new_string(public_id));
		json_object_object_add(ev, "rules_version", json_object_new_string(
		    DB_CELL(&r, i, 4)->v ? DB_CELL(&r, i, 4)->v : ""));
		json_object_object_add(ev, "outcome", DB_CELL(&r, i, 3)->v ?
		    json_parse_strict(DB_CELL(&r, i, 3)->v, DB_CELL(&r, i, 3)->len,
		    JSON_MAX_DEPTH + 8, &perr) : NULL);
		json_object_array_add(arr, ev);
	}
	o = json_object_new_object();
	json_object_object_add(o, "events", arr);
	if (r.nrows > (size_t)limit) {
		size_t last = (size_t)limit - 1;
		snprintf(raw, sizeof(raw), "v1|%s|%s|%s", DB_CELL(&r, last, 5)->v,
		    DB_CELL(&r, last, 6)->v, DB_CELL(&r, last, 0)->v);
	}
	add_cursor(o, raw, r.nrows > (size_t)limit);
	db_res_free(&r);
	return o;
}

json_object *
ev_profile_ledger(struct db *db, const struct ev_tenant *t, const char *public_id,
    const char *limit_s, const char *cursor, struct ev_verr *verr)
{
	static const char *const defaults[2] = { "9999-12-31 23:59:59.999999",
	    "18446744073709551615" };
	struct db_res    r;
	json_object     *o, *arr;
	char             raw[CURSOR_MAX] = "";
	long             limit;
	size_t           i;

	if (page_query(db, t, public_id, limit_s, cursor, 2, defaults,
	    DB_LEDGER_OF, &r, &limit, verr) != 0)
		return NULL;
	arr = json_object_new_array();
	for (i = 0; i < r.nrows && i < (size_t)limit; i++) {
		json_object *en = json_object_new_object();
		json_object_object_add(en, "event_id",
		    json_object_new_string(DB_CELL(&r, i, 1)->v));
		json_object_object_add(en, "rule",
		    json_object_new_string(DB_CELL(&r, i, 2)->v));
		json_object_object_add(en, "balance",
		    json_object_new_string(DB_CELL(&r, i, 3)->v));
		json_object_object_add(en, "delta",
		    json_object_new_int64(db_cell_i64(DB_CELL(&r, i, 4))));
		json_object_object_add(en, "balance_after",
		    json_object_new_int64(db_cell_i64(DB_CELL(&r, i, 5))));
		json_object_object_add(en, "created_at",
		    json_object_new_string(DB_CELL(&r, i, 6)->v));
		json_object_array_add(arr, en);
	}
	o = json_object_new_object();
	json_object_object_add(o, "entries", arr);
	if (r.nrows > (size_t)limit) {
		size_t last = (size_t)limit - 1;
		snprintf(raw, sizeof(raw), "v1|%s|%s", DB_CELL(&r, last, 7)->v,
		    DB_CELL(&r, last, 0)->v);
	}
	add_cursor(o, raw, r.nrows > (size_t)limit);
	db_res_free(&r);
	return o;
}
