/*
 * The application's error enum mapped to HTTP statuses and error codes
 * (API.md §5), and the JSON error body.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "core/core.h"

static const struct {
	int         status;
	const char *code;
} errs[EV_ERR__MAX] = {
	{ 200, "ok" },                       /* EV_OK */
	{ 400, "malformed_json" },           /* EV_MALFORMED_JSON */
	{ 401, "unauthorized" },             /* EV_UNAUTHORIZED */
	{ 403, "forbidden" },                /* EV_FORBIDDEN */
	{ 404, "not_found" },                /* EV_NOT_FOUND */
	{ 404, "identity_not_found" },       /* EV_IDENTITY_NOT_FOUND */
	{ 405, "method_not_allowed" },       /* EV_METHOD_NOT_ALLOWED */
	{ 409, "conflict" },                 /* EV_CONFLICT */
	{ 413, "payload_too_large" },        /* EV_PAYLOAD_TOO_LARGE */
	{ 415, "unsupported_media_type" },   /* EV_UNSUPPORTED_MEDIA */
	{ 422, "validation_failed" },        /* EV_VALIDATION_FAILED */
	{ 422, "invalid_identity" },         /* EV_INVALID_IDENTITY */
	{ 422, "unknown_event_type" },       /* EV_UNKNOWN_EVENT_TYPE */
	{ 422, "batch_too_large" },          /* EV_BATCH_TOO_LARGE */
	{ 429, "rate_limited" },             /* EV_RATE_LIMITED */
	{ 500, "internal_error" },           /* EV_INTERNAL */
	{ 503, "unavailable" },              /* EV_UNAVAILABLE */
};
_Static_assert(sizeof(errs) / sizeof(errs[0]) == EV_ERR__MAX,
    "one row per enum ev_err");

int
ev_err_status(enum ev_err e)
{
	return (unsigned)e < EV_ERR__MAX ? errs[e].status : 500;
}

const char *
ev_err_code(enum ev_err e)
{
	return (unsigned)e < EV_ERR__MAX ? errs[e].code : "internal_error";
}

void
ev_verr_set(struct ev_verr *verr, enum ev_err err, const char *fmt, ...)
{
	va_list ap;

	verr->err = err;
	verr->nprobs = 0;
	va_start(ap, fmt);
	vsnprintf(verr->msg, sizeof(verr->msg), fmt, ap);
	va_end(ap);
}

/* Replace every byte that is not part of valid UTF-8 by '?', in place. */
static void
utf8_sanitize(char *s)
{
	unsigned char *p = (unsigned char *)s;

	while (*p != '\0') {
		size_t n = 0, i;
		unsigned c = *p;
		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			n = 1;
		else if (c >= 0xE0 && c <= 0xEF)
			n = 2;
		else if (c >= 0xF0 && c <= 0xF4)
			n = 3;
		for (i = 1; n > 0 && i <= n; i++)
			if ((p[i] & 0xC0) != 0x80)
				break;
		if (n == 0 || i <= n ||
		    (c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) ||
		    (c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F)) {
			*p++ = '?';
			continue;
		}
		p += n + 1;
	}
}

void
ev_problem_add(struct ev_verr *verr, const char *field, const char *problem)
{
	struct ev_problem *p;

	if (verr->nprobs >= EV_MAX_PROBLEMS)
		return;
	p = &verr->probs[verr->nprobs++];
	snprintf(p->field, sizeof(p->field), "%s", field);
	/* never echo invalid UTF-8: a C0 80 (a U+0000 in a key), or a
	 * multi-byte character cut by the size limit, becomes '?' */
	utf8_sanitize(p->field);
	p->problem = problem;
}

json_object *
ev_error_body(const struct ev_verr *verr)
{
	json_object *o = json_object_new_object(), *d;
	size_t       i;

	json_object_object_add(o, "status", json_object_new_string("error"));
	json_object_object_add(o, "error_code",
	    json_object_new_string(ev_err_code(verr->err)));
	json_object_object_add(o, "message", json_object_new_string(verr->msg));
	if (verr->nprobs > 0) {
		d = json_object_new_array();
		for (i = 0; i < verr->nprobs; i++) {
			json_object *p = json_object_new_object();
			json_object_object_add(p, "field",
			    json_object_new_string(verr->probs[i].field));
			json_object_object_add(p, "problem",
			    json_object_new_string(verr->probs[i].problem));
			json_object_array_add(d, p);
		}
		json_object_object_add(o, "details", d);
	}
	return o;
}

void
ev_result_error(struct ev_result *res, const struct ev_verr *verr)
{
	if (res->body != NULL)
		json_object_put(res->body);
	free(res->text);
	res->text = NULL;
	res->st = EV_ST_ERROR;
	res->err = verr->err;
	res->body = ev_error_body(verr);
}
