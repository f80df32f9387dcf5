/*
 * One HTTP request: route table, method / auth / scope / content type /
 * size checks done once before dispatch, JSON parsing, the handlers, and
 * the JSON response with its fixed headers (API.md §1, §2, §4, §5).
 */
#include <ctype.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "core/core.h"
#include "rules/rules.h"
#include "db/db.h"
#include "fcgi/fcgi.h"

#define JSON_FLAGS    (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define REQID_MAX     200
#define RETRY_AFTER   "1"
#define BIG_BODY      (256u << 10)   /* trim the heap after bodies this big */

enum body_kind { BODY_NONE, BODY_SINGLE, BODY_BATCH, BODY__MAX };

/* What a handler hands back: status, optional headers, a JSON body (or a
 * text body for /metrics). */
struct resp {
	int          status;
	json_object *body;
	char        *json;           /* or the body as JSON text (owned) */
	char        *text;           /* or a text/plain body (owned) */
	char         location[96];
	const char  *allow;
	int          www_auth;
	int          retry_after;
};

/* Everything a handler may need about the request. */
struct req {
	struct fcgi_app     *app;
	const struct fcgi_io *io;
	const struct conf   *conf;
	const char          *method;
	char                 path[512];
	const char          *query;
	char                 reqid[REQID_MAX + 1];
	char                 param[64];      /* {id} of the route */
	struct ev_key        key;
	struct ev_tenant     tenant;
	json_object         *json;           /* parsed body */
	int64_t              now_us;
};

typedef void (*handler_fn)(struct req *, struct resp *);

static void h_health(struct req *, struct resp *);
static void h_ingest(struct req *, struct resp *);
static void h_batch(struct req *, struct resp *);
static void h_event_get(struct req *, struct resp *);
static void h_event_types(struct req *, struct resp *);
static void h_profile_find(struct req *, struct resp *);
static void h_profile_get(struct req *, struct resp *);
static void h_profile_events(struct req *, struct resp *);
static void h_profile_ledger(struct req *, struct resp *);
static void h_metrics(struct req *, struct resp *);

/* A route: method, path pattern ("{id}" matches one segment), handler,
 * body kind (limit and parsing), and the scope required (-1: none). */
struct route {
	const char *method;
	const char *pattern;
	handler_fn  fn;
	enum body_kind body;
	int         scope;
};

#define ROUTE_SINGLE_EVENT "/v1/cdp/events"
static const struct route routes[] = {
	{ "GET",  "/v1/health",            h_health,      BODY_NONE,   -1 },
	{ "POST", ROUTE_SINGLE_EVENT,      h_ingest,      BODY_SINGLE, EV_SCOPE_EVENTS_WRITE },
	{ "POST", "/v1/cdp/events/batch",  h_batch,       BODY_BATCH,  EV_SCOPE_EVENTS_WRITE },
	{ "GET",  "/v1/cdp/events/{id}",   h_event_get,   BODY_NONE,   EV_SCOPE_EVENTS_READ },
	{ "GET",  "/v1/cdp/event-types",   h_event_types, BODY_NONE,   EV_SCOPE_EVENTS_WRITE },
	{ "GET",  "/v1/cdp/profiles",      h_profile_find, BODY_NONE,  EV_SCOPE_PROFILES_READ },
	{ "GET",  "/v1/cdp/profiles/{id}", h_profile_get, BODY_NONE,   EV_SCOPE_PROFILES_READ },
	{ "GET",  "/v1/cdp/profiles/{id}/events", h_profile_events, BODY_NONE, EV_SCOPE_PROFILES_READ },
	{ "GET",  "/v1/cdp/profiles/{id}/ledger", h_profile_ledger, BODY_NONE, EV_SCOPE_PROFILES_READ },
	{ "GET",  "/metrics",              h_metrics,     BODY_NONE,   EV_SCOPE_ADMIN },
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))
_Static_assert(NROUTES < FCGI_METRIC_ROUTES, "room for every route in metrics");

static const char *
status_text(int st)
{
	switch (st) {
	case 200: return "OK";
	case 201: return "Created";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 503: return "Service Unavailable";
	default:  return "Internal Server Error";
	}
}

/* Make r an error response from verr. */
static void
resp_error(struct resp *r, const struct ev_verr *verr)
{
	if (r->body != NULL)
		json_object_put(r->body);
	r->status = ev_err_status(verr->err);
	r->body = ev_error_body(verr);
	if (verr->err == EV_UNAUTHORIZED)
		r->www_auth = 1;
	if (verr->err == EV_UNAVAILABLE || verr->err == EV_RATE_LIMITED)
		r->retry_after = 1;
}

static void
resp_err(struct resp *r, enum ev_err e, const char *msg)
{
	struct ev_verr verr;

	ev_verr_set(&verr, e, "%s", msg);
	resp_error(r, &verr);
}

/* Match path against pattern; a "{id}" segment is copied into param. */
static int
route_match(const char *pattern, const char *path, char *param, size_t psz)
{
	while (*pattern != '\0') {
		if (strncmp(pattern, "{id}", 4) == 0) {
			size_t n = strcspn(path, "/");
			if (n == 0 || n >= psz)
				return 0;
			memcpy(param, path, n);
			param[n] = '\0';
			path += n;
			pattern += 4;
			continue;
		}
		if (*pattern++ != *path++)
			return 0;
	}
	return *path == '\0';
}

/* The request id: the client's when it is printable ASCII of at most
 * REQID_MAX bytes (what can safely go back in a header), else a new one. */
static void
request_id(const struct fcgi_io *io, char out[REQID_MAX + 1])
{
	const char *s = io->getenv(io->ctx, "HTTP_X_REQUEST_ID");
	size_t      i, n;

	if (s != NULL && (n = strlen(s)) > 0 && n <= REQID_MAX) {
		for (i = 0; i < n; i++)
			if (s[i] < 0x20 || s[i] > 0x7e)
				break;
		if (i == n) {
			memcpy(out, s, n + 1);
			return;
		}
	}
	if (ev_public_id("req_", out) != 0)
		snprintf(out, REQID_MAX + 1, "req_unknown");
}

/* 1 when the Content-Type is application/json (charset utf-8 or none). */
static int
is_json_type(const char *ct)
{
	const char *p;

	if (ct == NULL)
		return 0;
	while (*ct == ' ')
		ct++;
	if (strncasecmp(ct, "application/json", 16) != 0)
		return 0;
	p = ct + 16;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0')
		return 1;
	if (*p != ';')
		return 0;
	/* parameters: only charset=utf-8 (any case, maybe quoted) is allowed */
	for (p++; *p != '\0';) {
		const char *e;
		while (*p == ' ' || *p == '\t' || *p == ';')
			p++;
		if (*p == '\0')
			break;
		e = strchr(p, ';');
		if (strncasecmp(p, "charset=", 8) == 0) {
			const char *v = p + 8;
			size_t      n = e ? (size_t)(e - v) : strlen(v);
			while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
				n--;
			if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
				v++;
				n -= 2;
			}
			if (!((n == 5 && strncasecmp(v, "utf-8", 5) == 0) ||
			    (n == 4 && strncasecmp(v, "utf8", 4) == 0)))
				return 0;
		}
		if (e == NULL)
			break;
		p = e + 1;
	}
	return 1;
}

/* Value of a query parameter, not decoded; 1 found (copied to out), 0 not
 * there, -1 longer than outsz-1 bytes (never silently cut). */
static int
query_param(const char *q, const char *name, char *out, size_t outsz)
{
	size_t nl = strlen(name);

	while (q != NULL && *q != '\0') {
		const char *amp = strchr(q, '&');
		size_t      n = amp ? (size_t)(amp - q) : strlen(q);
		if (n >= nl && strncmp(q, name, nl) == 0 &&
		    (n == nl || q[nl] == '=')) {
			size_t vl = n > nl ? n - nl - 1 : 0;
			if (vl >= outsz)
				return -1;
			memcpy(out, q + (n > nl ? nl + 1 : nl), vl);
			out[vl] = '\0';
			return 1;
		}
		q = amp ? amp + 1 : NULL;
	}
	return 0;
}

/*
 * Percent-decode a query value in place ('+' stays '+': phone numbers are
 * sent as +15551234567). Returns 0, or -1 on a bad escape or %00.
 */
static int
query_decode(char *s)
{
	char *o = s;

	for (; *s != '\0'; s++) {
		if (*s == '%') {
			int hi, lo;
			char h[3] = { s[1], s[1] ? s[2] : 0, 0 };
			if (h[0] == 0 || h[1] == 0 ||
			    sscanf(h, "%1x%1x", &hi, &lo) != 2 || (hi == 0 && lo == 0))
				return -1;
			*o++ = (char)(hi * 16 + lo);
			s += 2;
		} else
			*o++ = *s;
	}
	*o = '\0';
	return 0;
}

/* ?dry_run=true|false|1|0; -1 for anything else. */
static int
dry_run_flag(const struct req *rq)
{
	char v[16];

	int  qp = query_param(rq->query, "dry_run", v, sizeof(v));

	if (qp == 0)
		return 0;
	if (qp < 0)
		return -1;
	if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || v[0] == '\0')
		return 1;
	if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
		return 0;
	return -1;
}

/*
 * Read the request body: at most `limit` bytes. Returns a malloc'd buffer
 * (caller frees) with *len, or NULL with the error in r (413, 400).
 */
static char *
read_body(struct req *rq, size_t limit, size_t *len, struct resp *r)
{
	const char *cl = rq->io->getenv(rq->io->ctx, "CONTENT_LENGTH");
	char       *buf, *end;
	size_t      want, got = 0;
	long long   v = -1;

	if (cl != NULL && *cl != '\0') {
		v = strtoll(cl, &end, 10);
		if (*end != '\0' || v < 0) {
			resp_err(r, EV_MALFORMED_JSON, "bad Content-Length");
			return NULL;
		}
		if ((unsigned long long)v > limit) {
			resp_err(r, EV_PAYLOAD_TOO_LARGE, "the body is larger than the limit");
			return NULL;
		}
	}
	want = v >= 0 ? (size_t)v : limit + 1;
	if ((buf = malloc(want + 1)) == NULL) {
		resp_err(r, EV_INTERNAL, "out of memory");
		return NULL;
	}
	while (got < want) {
		long n = rq->io->read(rq->io->ctx, buf + got, want - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (v < 0 && got > limit) {
		free(buf);
		resp_err(r, EV_PAYLOAD_TOO_LARGE, "the body is larger than the limit");
		return NULL;
	}
	if (v >= 0 && got < want) {
		free(buf);
		resp_err(r, EV_MALFORMED_JSON, "the body is shorter than its Content-Length");
		return NULL;
	}
	buf[got] = '\0';
	*len = got;
	return buf;
}

/* Only well-formed public ids (prefix + base-32) reach the database. */
static int
public_id_ok(const char *s, const char *prefix)
{
	size_t i, n = strlen(s), pl = strlen(prefix);

	if (n <= pl || n > 31 || strncmp(s, prefix, pl) != 0)
		return 0;
	for (i = pl; i < n; i++)
		if (!isalnum((unsigned char)s[i]))
			return 0;
	return 1;
}

/* ---- handlers ---- */

static void
h_health(struct req *rq, struct resp *r)
{
	json_object *errs = json_object_new_array();
	size_t       i;
	enum db_rc   rc = DB_GONE;
	struct db_res res;

	if (rq->conf != NULL)
		for (i = 0; i < rq->conf->nerrors; i++) {
			const struct conf_error *e = &rq->conf->errors[i];
			char line[1024];
			conf_error_fmt(e, line, sizeof(line));
			json_object_array_add(errs, json_object_new_string(line));
		}
	if (rq->app->db != NULL &&
	    (rc = db_exec(rq->app->db, DB_PING_QUERY, NULL, 0, &res, NULL, NULL)) == DB_OK)
		db_res_free(&res);
	if (rc == DB_OK) {
		r->status = 200;
		r->body = json_object_new_object();
		json_object_object_add(r->body, "status", json_object_new_string("ok"));
		json_object_object_add(r->body, "database", json_object_new_string("ok"));
	} else {
		resp_err(r, EV_UNAVAILABLE, "the database is unreachable");
		json_object_object_add(r->body, "database",
		    json_object_new_string("unreachable"));
	}
	json_object_object_add(r->body, "tenants", json_object_new_int64(
	    rq->conf != NULL ? (int64_t)rq->conf->ntenants : 0));
	json_object_object_add(r->body, "config_errors", errs);
}

static void
dry_run_error(struct resp *r)
{
	struct ev_verr verr;

	ev_verr_set(&verr, EV_VALIDATION_FAILED, "dry_run must be true or false");
	ev_problem_add(&verr, "dry_run", "invalid");
	resp_error(r, &verr);
}

/* Turn a finished single-event result into the response. */
static void
single_response(struct req *rq, struct ev_result *res, struct resp *r)
{
	switch (res->st) {
	case EV_ST_ACCEPTED:
		r->status = 201;
		snprintf(r->location, sizeof(r->location), "/v1/cdp/events/%s",
		    res->event_id);
		break;
	case EV_ST_DUPLICATE:
	case EV_ST_DRY_RUN:
		r->status = 200;
		break;
	case EV_ST_CONFLICT:
		r->status = 409;
		break;
	default:
		r->status = ev_err_status(res->err);
		break;
	}
	r->body = res->body;
	r->json = res->text;
	res->body = NULL;
	res->text = NULL;
	(void)rq;
}

/* Parse and check one event of the tenant; EV_OK or an error in res. */
static enum ev_err
prepare_event(struct req *rq, json_object *o, struct ev_event *ev,
    struct ev_result *res)
{
	struct ev_verr verr;
	enum ev_err    e;

	e = ev_parse(o, rq->tenant.conf, rq->now_us, ev, &verr);
	if (e != EV_OK) {
		ev_result_error(res, &verr);
		return e;
	}
	if (!ev_key_allows_source(&rq->key, ev->source)) {
		ev_verr_set(&verr, EV_FORBIDDEN,
		    "this key may not send events of this source");
		ev_problem_add(&verr, "source", "not_allowed");
		ev_result_error(res, &verr);
		ev_event_free(ev);
		return EV_FORBIDDEN;
	}
	return EV_OK;
}

/* The answer to a single event that ev_ingest() returned e for. */
static void
ingest_response(struct req *rq, enum ev_err e, struct ev_result *res,
    unsigned retries, struct resp *r)
{
	if (e != EV_OK) {
		resp_err(r, e, e == EV_UNAVAILABLE ?
		    "the database is unavailable; retry with the same externalEventId" :
		    "internal error; retry with the same externalEventId");
		return;
	}
	fcgi_metrics_event(res->st, retries, res->from_memory);
	single_response(rq, res, r);
}

static void
h_ingest(struct req *rq, struct resp *r)
{
	struct ev_event   ev;
	struct ev_event  *evp = &ev;
	struct ev_result  res;
	enum ev_err       e;
	int               dry = dry_run_flag(rq);
	unsigned          retries = 0;

	memset(&res, 0, sizeof(res));
	if (dry < 0) {
		dry_run_error(r);
		return;
	}
	if (prepare_event(rq, rq->json, &ev, &res) != EV_OK) {
		single_response(rq, &res, r);
		return;
	}
	e = ev_ingest(rq->app->db, &rq->tenant, &evp, &res, 1, dry, rq->reqid,
	    &retries);
	ev_event_free(&ev);
	ingest_response(rq, e, &res, retries, r);
}

static void
h_batch(struct req *rq, struct resp *r)
{
	json_object       *items = NULL;
	struct ev_buf      out = { NULL, 0, 0 };
	struct ev_event   *evbuf = NULL, **evs = NULL;
	struct ev_result  *res = NULL;
	size_t             n, i, max;
	enum ev_err        e;
	int                dry = dry_run_flag(rq);
	struct ev_verr     verr;
	int64_t            counts[EV_ST__MAX] = { 0 };
	unsigned           retries = 0;

	if (dry < 0) {
		dry_run_error(r);
		return;
	}
	if (!json_object_is_type(rq->json, json_type_object)) {
		resp_err(r, EV_MALFORMED_JSON, "the body must be a JSON object");
		return;
	}
	json_object_object_foreach(rq->json, k, v) {
		(void)v;
		if (strcmp(k, "items") != 0) {
			ev_verr_set(&verr, EV_VALIDATION_FAILED,
			    "unknown field in the batch body");
			ev_problem_add(&verr, k, "unknown_field");
			resp_error(r, &verr);
			return;
		}
	}
	if (!json_object_object_get_ex(rq->json, "items", &items) ||
	    !json_object_is_type(items, json_type_array)) {
		ev_verr_set(&verr, EV_VALIDATION_FAILED, "items must be an array");
		ev_problem_add(&verr, "items", items == NULL ? "required" : "type");
		resp_error(r, &verr);
		return;
	}
	n = json_object_array_length(items);
	max = rq->conf != NULL ? rq->conf->server.max_batch_items : 1000;
	if (n == 0) {
		ev_verr_set(&verr, EV_VALIDATION_FAILED, "items must not be empty");
		ev_problem_add(&verr, "items", "empty");
		resp_error(r, &verr);
		return;
	}
	if (n > max) {
		ev_verr_set(&verr, EV_BATCH_TOO_LARGE,
		    "a batch holds at most %zu items; split it", max);
		resp_error(r, &verr);
		return;
	}
	evbuf = calloc(n, sizeof(*evbuf));
	evs = calloc(n, sizeof(*evs));
	res = calloc(n, sizeof(*res));
	if (evbuf == NULL || evs == NULL || res == NULL) {
		resp_err(r, EV_INTERNAL, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++)
		if (prepare_event(rq, json_object_array_get_idx(items, i), &evbuf[i],
		    &res[i]) == EV_OK)
			evs[i] = &evbuf[i];
	/* the events hold what they need (properties by reference): the
	 * parsed body goes now, it weighs megabytes for a large batch */
	json_object_put(rq->json);
	rq->json = NULL;
	e = ev_ingest(rq->app->db, &rq->tenant, evs, res, n, dry, rq->reqid,
	    &retries);
	if (e != EV_OK) {
		resp_err(r, e, e == EV_UNAVAILABLE ?
		    "the database is unavailable; nothing of this batch was applied;"
		    " retry it with the same ids" :
		    "internal error; nothing of this batch was applied");
		goto out;
	}
	/* the answer is written as text: the accepted items' answers are
	 * text already (a json-c tree per item cost a sixth of a batch) */
	ev_buf_str(&out, "{\"results\":[");
	for (i = 0; i < n; i++) {
		counts[res[i].st]++;
		fcgi_metrics_event(res[i].st, i == 0 ? retries : 0, res[i].from_memory);
		if (i > 0)
			ev_buf_put(&out, ",", 1);
		ev_buf_str(&out, res[i].text != NULL ? res[i].text :
		    res[i].body != NULL ?
		    json_object_to_json_string_ext(res[i].body, JSON_FLAGS) : "null");
	}
	ev_buf_str(&out, "],\"accepted\":");
	ev_buf_i64(&out, (int64_t)counts[EV_ST_ACCEPTED]);
	ev_buf_str(&out, ",\"duplicates\":");
	ev_buf_i64(&out, (int64_t)counts[EV_ST_DUPLICATE]);
	ev_buf_str(&out, ",\"errors\":");
	ev_buf_i64(&out, (int64_t)(counts[EV_ST_ERROR] + counts[EV_ST_CONFLICT]));
	ev_buf_put(&out, "}", 1);
	r->status = 200;
	r->json = out.p;
out:
	/* frees: events, leftover result bodies, arrays */
	for (i = 0; evbuf != NULL && i < n; i++)
		ev_event_free(&evbuf[i]);
	for (i = 0; res != NULL && i < n; i++) {
		if (res[i].body != NULL)
			json_object_put(res[i].body);
		free(res[i].text);
	}
	free(evbuf);
	free(evs);
	free(res);
}

static void
h_event_get(struct req *rq, struct resp *r)
{
	enum ev_err  e;
	json_object *o;

	if (!public_id_ok(rq->param, "evt_")) {
		resp_err(r, EV_NOT_FOUND, "no such event");
		return;
	}
	o = ev_event_get(rq->app->db, &rq->tenant, rq->param, &e);
	if (o == NULL) {
		resp_err(r, e, e == EV_NOT_FOUND ? "no such event" :
		    "the database is unavailable");
		return;
	}
	r->status = 200;
	r->body = o;
}

/* A number from the registry as JSON (exact text as a number). */
static json_object *
num_json(const mpq_t q)
{
	char        *s = rule_dec_to_text(q, 12);
	json_object *o = s ? json_object_new_double_s(mpq_get_d(q), s) : NULL;

	free(s);
	return o;
}

static void
h_event_types(struct req *rq, struct resp *r)
{
	const struct conf_tenant *t = rq->tenant.conf;
	json_object              *types = json_object_new_array();
	size_t                    i, j, k;

	for (i = 0; t != NULL && i < t->ntypes; i++) {
		const struct conf_event_type *et = &t->types[i];
		json_object *o = json_object_new_object(), *props = json_object_new_object();
		json_object_object_add(o, "name", json_object_new_string(et->name));
		if (et->description != NULL)
			json_object_object_add(o, "description",
			    json_object_new_string(et->description));
		for (j = 0; j < et->nprops; j++) {
			const struct conf_prop *p = &et->props[j];
			json_object *po = json_object_new_object();
			json_object_object_add(po, "type",
			    json_object_new_string(conf_ptype_name[p->type]));
			json_object_object_add(po, "required",
			    json_object_new_boolean(p->required));
			if (p->has_min)
				json_object_object_add(po, "min", num_json(p->min));
			if (p->has_max)
				json_object_object_add(po, "max", num_json(p->max));
			if (p->max_length >= 0)
				json_object_object_add(po, "max_length",
				    json_object_new_int64(p->max_length));
			if (p->enum_vals != NULL) {
				json_object *ea = json_object_new_array();
				for (k = 0; k < p->nenum; k++)
					json_object_array_add(ea,
					    json_object_new_string(p->enum_vals[k]));
				json_object_object_add(po, "enum", ea);
			}
			if (p->description != NULL)
				json_object_object_add(po, "description",
				    json_object_new_string(p->description));
			if (p->filterable)
				json_object_object_add(po, "filterable",
				    json_object_new_boolean(1));
			if (p->derivable)
				json_object_object_add(po, "derivable",
				    json_object_new_boolean(1));
			json_object_object_add(props, p->name, po);
		}
		json_object_object_add(o, "properties", props);
		json_object_array_add(types, o);
	}
	r->status = 200;
	r->body = json_object_new_object();
	json_object_object_add(r->body, "tenant", json_object_new_string(rq->key.tenant));
	json_object_object_add(r->body, "rules_version",
	    json_object_new_string(t != NULL ? t->version : ""));
	json_object_object_add(r->body, "event_types", types);
}

static void
h_profile_find(struct req *rq, struct resp *r)
{
	char           val[4096];
	const char    *why = NULL;
	char          *norm = NULL;
	json_object   *o = NULL;
	enum ev_err    e = EV_NOT_FOUND;
	struct ev_verr verr;
	size_t         i, given = 0;

	for (i = 0; i < IDENT__MAX && o == NULL; i++) {
		int qp = query_param(rq->query, ident_json_key[i], val, sizeof(val));
		if (qp == 0)
			continue;
		given++;
		if (qp < 0 || query_decode(val) != 0) {
			ev_verr_set(&verr, EV_INVALID_IDENTITY, "bad percent-encoding");
			ev_problem_add(&verr, ident_json_key[i], "encoding");
			resp_error(r, &verr);
			return;
		}
		switch (i) {
		case IDENT_EMAIL:
			norm = ident_norm_email(val, strlen(val), &why);
			break;
		case IDENT_PHONE:
			norm = ident_norm_phone(val, strlen(val), rq->tenant.conf ?
			    rq->tenant.conf->default_cc : NULL, &why);
			break;
		default:
			norm = ident_norm_text(val, strlen(val), &why);
			break;
		}
		if (norm == NULL) {
			ev_verr_set(&verr, EV_INVALID_IDENTITY, "%s: %s",
			    ident_json_key[i], why ? why : "not valid");
			ev_problem_add(&verr, ident_json_key[i], "invalid");
			resp_error(r, &verr);
			return;
		}
		o = ev_profile_find(rq->app->db, &rq->tenant, (enum ident_type)i, norm, &e);
		free(norm);
		if (o == NULL && e != EV_NOT_FOUND) {
			resp_err(r, e, "the database is unavailable");
			return;
		}
	}
	if (given == 0) {
		ev_verr_set(&verr, EV_VALIDATION_FAILED, "give one of externalUserId,"
		    " email, phone, deviceKey");
		ev_problem_add(&verr, "identity", "required");
		resp_error(r, &verr);
		return;
	}
	if (o == NULL) {
		resp_err(r, EV_NOT_FOUND, "no profile has this identity");
		return;
	}
	r->status = 200;
	r->body = o;
}

static void
h_profile_get(struct req *rq, struct resp *r)
{
	enum ev_err  e = EV_NOT_FOUND;
	json_object *o = NULL;

	if (public_id_ok(rq->param, "prf_"))
		o = ev_profile_get(rq->app->db, &rq->tenant, rq->param, &e);
	if (o == NULL) {
		resp_err(r, e, e == EV_NOT_FOUND ? "no such profile" :
		    "the database is unavailable");
		return;
	}
	r->status = 200;
	r->body = o;
}

/* History and ledger share their paging parameters. */
static void
profile_page(struct req *rq, struct resp *r, int ledger)
{
	char           limit[16] = "", cursor[256] = "";
	int            hl, hc;
	json_object   *o;
	struct ev_verr verr;

	if (!public_id_ok(rq->param, "prf_")) {
		resp_err(r, EV_NOT_FOUND, "no such profile");
		return;
	}
	hl = query_param(rq->query, "limit", limit, sizeof(limit));
	hc = query_param(rq->query, "cursor", cursor, sizeof(cursor));
	if (hl < 0 || hc < 0 || (hc && query_decode(cursor) != 0) ||
	    (hl && limit[0] == '\0')) {
		ev_verr_set(&verr, EV_VALIDATION_FAILED, "bad paging parameters");
		ev_problem_add(&verr, hc ? "cursor" : "limit", "invalid");
		resp_error(r, &verr);
		return;
	}
	o = ledger ?
	    ev_profile_ledger(rq->app->db, &rq->tenant, rq->param, hl ? limit : NULL,
	    cursor, &verr) :
	    ev_profile_events(rq->app->db, &rq->tenant, rq->param, hl ? limit : NULL,
	    cursor, &verr);
	if (o == NULL) {
		resp_error(r, &verr);
		return;
	}
	r->status = 200;
	r->body = o;
}

static void
h_profile_events(struct req *rq, struct resp *r)
{
	profile_page(rq, r, 0);
}

static void
h_profile_ledger(struct req *rq, struct resp *r)
{
	profile_page(rq, r, 1);
}

static void
h_metrics(struct req *rq, struct resp *r)
{
	static char        labels[NROUTES][64];
	static const char *names[NROUTES];
	size_t             i;

	(void)rq;
	for (i = 0; i < NROUTES; i++) {
		snprintf(labels[i], sizeof(labels[i]), "%s %s", routes[i].method,
		    routes[i].pattern);
		names[i] = labels[i];
	}
	r->status = 200;
	r->text = fcgi_metrics_text(names, NROUTES);
}

/* ---- the request ---- */

/* Write the response with the headers every answer carries. */
static void
write_response(struct req *rq, struct resp *r, int head_only)
{
	const char *body = r->text ? r->text : r->json ? r->json : r->body ?
	    json_object_to_json_string_ext(r->body, JSON_FLAGS) : "{}";
	size_t      blen = strlen(body);
	struct ev_buf h = { NULL, 0, 0 };

	ev_buf_str(&h, "Status: ");
	ev_buf_i64(&h, r->status);
	ev_buf_put(&h, " ", 1);
	ev_buf_str(&h, status_text(r->status));
	ev_buf_str(&h, r->text ? "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8" :
	    "\r\nContent-Type: application/json; charset=utf-8");
	ev_buf_str(&h, "\r\nX-Request-Id: ");
	ev_buf_str(&h, rq->reqid);
	ev_buf_str(&h, "\r\nX-Content-Type-Options: nosniff\r\n"
	    "Cache-Control: no-store\r\nContent-Length: ");
	ev_buf_i64(&h, (int64_t)blen);
	ev_buf_str(&h, "\r\n");
	if (r->location[0]) {
		ev_buf_str(&h, "Location: ");
		ev_buf_str(&h, r->location);
		ev_buf_str(&h, "\r\n");
	}
	if (r->allow) {
		ev_buf_str(&h, "Allow: ");
		ev_buf_str(&h, r->allow);
		ev_buf_str(&h, "\r\n");
	}
	if (r->www_auth)
		ev_buf_str(&h, "WWW-Authenticate: Bearer realm=\"rfevents\"\r\n");
	if (r->retry_after)
		ev_buf_str(&h, "Retry-After: " RETRY_AFTER "\r\n");
	ev_buf_str(&h, "\r\n");
	rq->io->write(rq->io->ctx, h.p, h.len);
	free(h.p);
	if (!head_only)
		rq->io->write(rq->io->ctx, body, blen);
}

/* One JSON log line per request on stderr (never a key or a body),
 * written directly: as a json-c object it cost 7,000 instructions of the
 * 200,000 of a whole request. */
static void
log_request(const struct req *rq, const struct resp *r, int64_t start_us)
{
	struct ev_buf b = { NULL, 0, 0 };
	char          ts[32], frac[4];
	int64_t       us = ts_now() - start_us;

	ev_buf_str(&b, "{\"ts\":");
	ev_buf_json_str(&b, ts_format(start_us, ts));
	ev_buf_str(&b, ",\"request_id\":");
	ev_buf_json_str(&b, rq->reqid);
	ev_buf_str(&b, ",\"method\":");
	ev_buf_json_str(&b, rq->method);
	ev_buf_str(&b, ",\"path\":");
	ev_buf_json_str(&b, rq->path);
	ev_buf_str(&b, ",\"tenant\":");
	ev_buf_json_str(&b, rq->key.tenant[0] ? rq->key.tenant : NULL);
	ev_buf_str(&b, ",\"key_id\":");
	ev_buf_json_str(&b, rq->key.key_id[0] ? rq->key.key_id : NULL);
	ev_buf_str(&b, ",\"status\":");
	ev_buf_i64(&b, r->status);
	/* milliseconds with the microseconds as written: 92.056 */
	ev_buf_str(&b, ",\"duration_ms\":");
	if (us < 0) {
		ev_buf_put(&b, "-", 1);
		us = -us;
	}
	ev_buf_i64(&b, us / 1000);
	frac[0] = (char)('0' + us / 100 % 10);
	frac[1] = (char)('0' + us / 10 % 10);
	frac[2] = (char)('0' + us % 10);
	frac[3] = '\0';
	ev_buf_put(&b, ".", 1);
	ev_buf_put(&b, frac, 3);
	ev_buf_str(&b, "}\n");
	fwrite(b.p, 1, b.len, stderr);
	free(b.p);
}

/* The request's path: REQUEST_URI without the query, else SCRIPT_NAME +
 * PATH_INFO; cut at size - 1 bytes. */
static void
request_path(const struct fcgi_io *io, char *path, size_t size)
{
	const char *uri = io->getenv(io->ctx, "REQUEST_URI");
	size_t      plen;

	if (uri != NULL && *uri != '\0') {
		plen = strcspn(uri, "?");
		if (plen >= size)
			plen = size - 1;
		memcpy(path, uri, plen);
		path[plen] = '\0';
	} else {
		const char *sn = io->getenv(io->ctx, "SCRIPT_NAME");
		const char *pi = io->getenv(io->ctx, "PATH_INFO");
		snprintf(path, size, "%s%s", sn ? sn : "", pi ? pi : "");
	}
}

/* One request on its way: what its steps (call_begin(), the handler,
 * call_end()) share. */
struct call {
	struct req          rq;
	struct resp         r;
	const struct route *rt;
	char                allow[64];
	char               *body;
	size_t              blen;
	int                 head;
};

/*
 * The first steps of a request: route, authenticate, read and parse the
 * body. 1: the handler c->rt->fn is to run next; 0: the answer is set
 * already (an error). call_end() follows either way.
 */
static int
call_begin(struct call *c, struct fcgi_app *app, const struct fcgi_io *io)
{
	struct req          *rq = &c->rq;
	struct resp         *r = &c->r;
	const struct route  *rt = NULL;
	const char          *q;
	char                *allow = c->allow;
	size_t               i, limit;
	struct json_perr     perr;
	enum ev_err          e;
	struct ev_verr       verr;

	memset(c, 0, sizeof(*c));
	rq->app = app;
	rq->io = io;
	rq->now_us = ts_now();
	app->requests++;
	request_id(io, rq->reqid);
	rq->method = io->getenv(io->ctx, "REQUEST_METHOD");
	if (rq->method == NULL)
		rq->method = "GET";
	if (strcmp(rq->method, "HEAD") == 0)
		c->head = 1;

	request_path(io, rq->path, sizeof(rq->path));
	q = io->getenv(io->ctx, "QUERY_STRING");
	rq->query = q != NULL ? q : "";

	rq->conf = conf_current(app->conf_dir, time(NULL));

	/* route: 404 when no pattern matches, 405 when only the method differs */
	for (i = 0; i < NROUTES; i++) {
		char param[64];
		if (!route_match(routes[i].pattern, rq->path, param, sizeof(param)))
			continue;
		if (strcmp(routes[i].method, rq->method) == 0 ||
		    (c->head && strcmp(routes[i].method, "GET") == 0)) {
			rt = &routes[i];
			memcpy(rq->param, param, sizeof(param));
			break;
		}
		if (allow[0] != '\0')
			strcat(allow, ", ");
		strcat(allow, routes[i].method);
		if (strcmp(routes[i].method, "GET") == 0)
			strcat(allow, ", HEAD");
	}
	if (rt == NULL) {
		if (allow[0] != '\0') {
			resp_err(r, EV_METHOD_NOT_ALLOWED, "method not allowed here");
			r->allow = allow;
		} else
			resp_err(r, EV_NOT_FOUND, "no such endpoint");
		return 0;
	}
	c->rt = rt;

	/* authentication and scope */
	if (rt->scope >= 0) {
		if (app->db == NULL) {
			resp_err(r, EV_UNAVAILABLE, "the database is not configured");
			return 0;
		}
		e = ev_key_check(app->db, io->getenv(io->ctx, "HTTP_AUTHORIZATION"),
		    &rq->key, rq->now_us);
		if (e != EV_OK) {
			resp_err(r, e, e == EV_UNAUTHORIZED ?
			    "a valid API key is required (Authorization: Bearer KEY)" :
			    "the database is unavailable");
			return 0;
		}
		if (!ev_key_has_scope(&rq->key, (enum ev_scope)rt->scope)) {
			ev_verr_set(&verr, EV_FORBIDDEN, "this key lacks the scope %s",
			    ev_scope_name[rt->scope]);
			resp_error(r, &verr);
			return 0;
		}
		rq->tenant.id = rq->key.tenant_id;
		rq->tenant.slug = rq->key.tenant;
		rq->tenant.conf = rq->conf ? conf_tenant_find(rq->conf, rq->key.tenant) : NULL;
		/*
		 * A tenant whose file is missing or has never loaded cannot
		 * validate or score events. That is for the operator to fix, so
		 * the client is told to retry later (503) instead of dropping
		 * the event as invalid (422).
		 */
		if (rq->tenant.conf == NULL && rt->scope == EV_SCOPE_EVENTS_WRITE) {
			ev_verr_set(&verr, EV_UNAVAILABLE, "no configuration is loaded for"
			    " tenant %s; retry later with the same externalEventId",
			    rq->key.tenant);
			resp_error(r, &verr);
			return 0;
		}
	}

	/* body: size, content type, strict JSON */
	if (rt->body != BODY_NONE) {
		limit = rt->body == BODY_BATCH ?
		    (rq->conf ? rq->conf->server.max_body_batch : 8u << 20) :
		    (rq->conf ? rq->conf->server.max_body_single : 64u << 10);
		{
			const char *cl = io->getenv(io->ctx, "CONTENT_LENGTH");
			if (cl != NULL && strtoull(cl, NULL, 10) > limit) {
				resp_err(r, EV_PAYLOAD_TOO_LARGE,
				    "the body is larger than the limit");
				return 0;
			}
		}
		if (!is_json_type(io->getenv(io->ctx, "CONTENT_TYPE"))) {
			resp_err(r, EV_UNSUPPORTED_MEDIA,
			    "Content-Type must be application/json");
			return 0;
		}
		if ((c->body = read_body(rq, limit, &c->blen, r)) == NULL)
			return 0;
		rq->json = json_parse_strict(c->body, c->blen, JSON_MAX_DEPTH, &perr);
		if (rq->json == NULL) {
			ev_verr_set(&verr, EV_MALFORMED_JSON,
			    "the body is not valid JSON: %s at byte %zu",
			    c->blen == 0 ? "empty body" : perr.msg, perr.offset);
			resp_error(r, &verr);
			return 0;
		}
		if (!json_object_is_type(rq->json, json_type_object)) {
			resp_err(r, EV_MALFORMED_JSON, "the body must be a JSON object");
			return 0;
		}
	}
	return 1;
}

/* The last step: send the answer, log and count the request, free it. */
static void
call_end(struct call *c)
{
	struct fcgi_app *app = c->rq.app;

	/* frees: body, parsed JSON, key, response body */
	if (c->r.body == NULL && c->r.json == NULL && c->r.text == NULL &&
	    c->r.status == 0)
		resp_err(&c->r, EV_INTERNAL, "no response");
	write_response(&c->rq, &c->r, c->head);
	log_request(&c->rq, &c->r, c->rq.now_us);
	fcgi_metrics_request(c->rt != NULL ? (size_t)(c->rt - routes) : NROUTES,
	    c->r.status, (uint64_t)(ts_now() - c->rq.now_us),
	    db_take_elapsed_us(app->db));
	free(c->r.text);
	free(c->r.json);
	free(c->body);
	if (c->rq.json != NULL)
		json_object_put(c->rq.json);
	ev_key_clear(&c->rq.key);
	if (c->r.body != NULL)
		json_object_put(c->r.body);
	/* a large batch leaves megabytes behind: given back when idle */
	app->last_big = c->blen > BIG_BODY;
	app->trim_due |= app->last_big;
	if (c->rq.io->done != NULL)
		c->rq.io->done(c->rq.io->ctx);
}

void
fcgi_handle(struct fcgi_app *app, const struct fcgi_io *io)
{
	struct call c;

	if (call_begin(&c, app, io))
		c.rt->fn(&c.rq, &c.r);
	call_end(&c);
}

int
fcgi_groupable(const struct fcgi_io *io)
{
	const char *method = io->getenv(io->ctx, "REQUEST_METHOD");
	char        path[sizeof(((struct req *)0)->path)];

	if (method == NULL || strcmp(method, "POST") != 0)
		return 0;
	request_path(io, path, sizeof(path));
	return strcmp(path, ROUTE_SINGLE_EVENT) == 0;
}

void
fcgi_handle_many(struct fcgi_app *app, const struct fcgi_io *const *ios,
    size_t n)
{
	struct call       c[FCGI_GROUP_MAX];
	struct ev_event   evs[FCGI_GROUP_MAX], *evp[FCGI_GROUP_MAX];
	struct ev_result  res[FCGI_GROUP_MAX];
	size_t            who[FCGI_GROUP_MAX], m = 0, i, k;
	int               run[FCGI_GROUP_MAX], done[FCGI_GROUP_MAX];
	const struct req *lead = NULL;
	unsigned          retries = 0;
	enum ev_err       e;

	if (n > FCGI_GROUP_MAX)
		abort();
	memset(res, 0, sizeof(res));
	memset(done, 0, sizeof(done));
	/*
	 * The single events of the first tenant among them (and of the same
	 * configuration: a reload may fall between two requests) go together;
	 * every other request is served on its own, after them.
	 */
	for (i = 0; i < n; i++) {
		struct req *rq = &c[i].rq;
		run[i] = call_begin(&c[i], app, ios[i]);
		if (!run[i] || c[i].rt->fn != h_ingest || dry_run_flag(rq) != 0 ||
		    (lead != NULL && (rq->tenant.id != lead->tenant.id ||
		    rq->tenant.conf != lead->tenant.conf)))
			continue;
		run[i] = 0;
		if (prepare_event(rq, rq->json, &evs[m], &res[m]) != EV_OK) {
			single_response(rq, &res[m], &c[i].r);
			memset(&res[m], 0, sizeof(res[m]));
			continue;
		}
		if (lead == NULL)
			lead = rq;
		evs[m].request_id = rq->reqid;
		evp[m] = &evs[m];
		who[m++] = i;
	}
	if (m > 0) {
		e = ev_ingest(app->db, &lead->tenant, evp, res, m, 0, lead->reqid,
		    &retries);
		for (k = 0; k < m; k++) {
			i = who[k];
			ingest_response(&c[i].rq, e, &res[k], k == 0 ? retries : 0,
			    &c[i].r);
			ev_event_free(&evs[k]);
			call_end(&c[i]);
			done[i] = 1;
		}
		if (e == EV_OK)
			fcgi_metrics_group(m);
	}
	for (i = 0; i < n; i++) {
		if (done[i])
			continue;
		if (run[i])
			c[i].rt->fn(&c[i].rq, &c[i].r);
		call_end(&c[i]);
	}
}

void
fcgi_app_trim(struct fcgi_app *app)
{
	db_trim(app->db);
	malloc_trim(0);
	app->trim_due = 0;
}

/*
 * The database URL from RFEVENTS_DB_FILE: a file holding the URL on its
 * first line, or a line "RFEVENTS_DB=URL" (the format of var/db.env). It
 * keeps the password out of the web server's configuration, and fits where
 * an environment value is limited (mod_fcgid's FcgidInitialEnv keeps only
 * 127 characters). Returns a static buffer or NULL.
 */
static const char *
db_url_from_file(const char *path)
{
	static char line[4096];
	FILE       *f;

	if (path == NULL || *path == '\0' || (f = fopen(path, "r")) == NULL)
		return NULL;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *v = line;
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(v, "RFEVENTS_DB=", 12) == 0)
			v += 12;
		else if (strncmp(v, "mariadb://", 10) != 0 && strncmp(v, "mysql://", 8) != 0)
			continue;
		fclose(f);
		memmove(line, v, strlen(v) + 1);
		return line;
	}
	fclose(f);
	return NULL;
}

int
fcgi_app_init(struct fcgi_app *app)
{
	const char *url = getenv("RFEVENTS_DB");

	if (url == NULL || *url == '\0')
		url = db_url_from_file(getenv("RFEVENTS_DB_FILE"));
	memset(app, 0, sizeof(*app));
	app->conf_dir = getenv("RFEVENTS_CONF");
	if (app->conf_dir == NULL || *app->conf_dir == '\0')
		app->conf_dir = "conf";
	app->db = db_open(url, app->db_err, sizeof(app->db_err));
	if (app->db == NULL)
		fprintf(stderr, "rfevents: %s\n", app->db_err);
	fcgi_metrics_init(url);
	return 0;
}

int
fcgi_app_idle(struct fcgi_app *app)
{
	/* reads outside a transaction (a duplicate's key, GET requests)
	 * leave one open: kept for the next request while young */
	return db_read_kept(app->db, FCGI_READ_KEEP_US);
}

void
fcgi_app_release(struct fcgi_app *app)
{
	db_release(app->db);
}

void
fcgi_app_free(struct fcgi_app *app)
{
	db_close(app->db);
	conf_current_free();
	app->db = NULL;
}
