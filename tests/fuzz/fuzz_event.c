/*
 * libFuzzer target for the request path JSON -> event: json_parse_strict()
 * then ev_parse() (core/event.c) against two tenants loaded once from a
 * built-in YAML (unknown properties rejected / allowed), and for a body
 * with "items" each item as a batch would. Invariants (abort otherwise):
 *  - accepted: source 1-64 of [A-Za-z0-9_.:-]; externalEventId 1-255 code
 *    points; a registered type; at least one non-empty identity of valid
 *    UTF-8; properties an object; the canonical form and the stored
 *    document (ev_event_doc) are valid JSON; the fingerprint is the
 *    SHA-256 of the canonical form, the same on a second parse and after a
 *    serialise -> parse round trip of the request;
 *  - refused: one of the four parse errors with a message, 1..32 problems
 *    (none only for malformed_json) of valid UTF-8, the event left empty,
 *    and an error body that serialises to valid JSON.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
/* 2026-05-20T12:45:00Z */
#define NOW_US 1779281100000000LL

static const char strict_yaml[] =
    "settings:\n"
    "  auto_create_profiles: true\n"
    "  default_country_code: \"1\"\n"
    "  unknown_properties: reject\n"
    "event_types:\n"
    "  purchase_completed:\n"
    "    properties:\n"
    "      order_id: { type: string, required: true, max_length: 64 }\n"
    "      amount:   { type: number, required: true, min: 0, max: 1000000 }\n"
    "      currency: { type: string, required: true, enum: [USD, EUR, GBP] }\n"
    "      category: { type: string, filterable: true }\n"
    "      qty:      { type: integer, min: 1, max: 100 }\n"
    "      gift:     { type: boolean }\n"
    "      at:       { type: timestamp }\n"
    "  signup:\n"
    "    properties: {}\n"
    "  points_adjusted:\n"
    "    properties:\n"
    "      points: { type: integer, required: true }\n"
    "      reason: { type: string, required: true, max_length: 3 }\n"
    "rules:\n"
    "  - id: per_dollar\n"
    "    event: purchase_completed\n"
    "    points: properties.amount * 1\n";

static const char loose_yaml[] =
    "settings:\n"
    "  default_country_code: \"44\"\n"
    "  unknown_properties: allow\n"
    "event_types:\n"
    "  purchase_completed:\n"
    "    properties:\n"
    "      amount: { type: number, min: -5, max: 5 }\n"
    "      s:      { type: string, max_length: 2, enum: [a, \"\\u00e9\"] }\n"
    "  e:\n"
    "    properties: {}\n";

static struct conf_tenant *tenants[2];
static char dir[64];

static void
cleanup(void)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/strict.yaml", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/loose.yaml", dir);
	unlink(p);
	rmdir(dir);
}

static struct conf_tenant *
load(const char *name, const char *yaml)
{
	struct conf_error  *errs = NULL;
	struct conf_tenant *t;
	size_t              n = 0;
	char                p[128];
	FILE               *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	if ((f = fopen(p, "wb")) == NULL || fputs(yaml, f) == EOF || fclose(f) != 0)
		abort();
	if ((t = conf_tenant_load(p, &errs, &n)) == NULL) {
		size_t i;
		for (i = 0; i < n; i++)
			fprintf(stderr, "%s:%d:%d: %s\n", errs[i].file,
			    errs[i].line, errs[i].col, errs[i].msg);
		abort();
	}
	conf_errors_free(errs, n);
	return t;
}

static void
setup(void)
{
	if (tenants[0] != NULL)
		return;
	snprintf(dir, sizeof(dir), "/tmp/fuzz_event.XXXXXX");
	if (mkdtemp(dir) == NULL)
		abort();
	tenants[0] = load("strict.yaml", strict_yaml);
	tenants[1] = load("loose.yaml", loose_yaml);
	atexit(cleanup);
}

/* 1 if s[0..n) is valid UTF-8 without U+0000 (RFC 3629, no surrogates). */
static int
utf8_ok(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t        k;
		uint32_t      cp;

		if (c == 0)
			return 0;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF) {
			k = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			k = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			k = 3;
			cp = c & 0x07;
		} else
			return 0;
		if (i + k >= n)
			return 0;               /* cut short */
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + j] & 0x3F);
		}
		if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
		    cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return 0;
		i += k + 1;
	}
	return 1;
}

/* The text of o must be valid JSON (json_parse_strict accepts it). */
static void
must_be_json(json_object *o)
{
	const char       *txt = json_object_to_json_string_ext(o, FLAGS);
	struct json_perr  e;
	json_object      *back;

	if (txt == NULL)
		abort();
	back = json_parse_strict(txt, strlen(txt), JSON_MAX_DEPTH + 2, &e);
	if (back == NULL) {
		fprintf(stderr, "not valid JSON (%s at %zu): %.300s\n", e.msg,
		    e.offset, txt);
		abort();
	}
	json_object_put(back);
}

static int
source_ok(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= 64 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789_.:-") == n;
}

static void
check_accepted(const struct conf_tenant *t, json_object *o, struct ev_event *ev)
{
	char            *canon;
	json_object     *doc, *again;
	struct ev_event  ev2;
	struct ev_verr   verr;
	struct json_perr e;
	const char      *txt;
	char            *copy, *doc_txt;
	size_t           i, nid = 0;

	if (ev->source == NULL || !source_ok(ev->source))
		abort();
	if (ev->ext_id == NULL || ev->ext_id_len == 0 ||
	    ev->ext_id[ev->ext_id_len] != '\0' ||
	    !utf8_ok((const unsigned char *)ev->ext_id, ev->ext_id_len) ||
	    utf8_count(ev->ext_id, ev->ext_id_len) > 255)
		abort();
	if (ev->type == NULL || conf_type_find(t, ev->type) == NULL)
		abort();
	for (i = 0; i < IDENT__MAX; i++) {
		if (ev->ident[i] == NULL)
			continue;
		nid++;
		if (ev->ident[i][0] == '\0' || !utf8_ok((const unsigned char *)
		    ev->ident[i], strlen(ev->ident[i])) ||
		    utf8_count(ev->ident[i], strlen(ev->ident[i])) > IDENT_MAX_CHARS)
			abort();
	}
	if (nid == 0 || ev->occurred_text == NULL ||
	    !json_object_is_type(ev->properties, json_type_object))
		abort();

	/* canonical form: JSON, and its digest is the fingerprint */
	if ((canon = ev_canonical(ev)) == NULL)
		abort();
	{
		json_object *c = json_parse_strict(canon, strlen(canon),
		    JSON_MAX_DEPTH + 2, &e);
		if (c == NULL) {
			fprintf(stderr, "canonical form is not JSON: %.300s\n", canon);
			abort();
		}
		json_object_put(c);
	}
	{
		char hex[65], fp[65];
		ev_sha256_hex(canon, strlen(canon), hex);
		for (i = 0; i < 32; i++)
			snprintf(fp + 2 * i, 3, "%02x", ev->fingerprint[i]);
		if (strcmp(hex, fp) != 0)
			abort();
	}
	free(canon);

	/* the stored document: JSON, and the very text json-c makes of it */
	doc_txt = ev_event_doc(ev);
	doc = json_parse_strict(doc_txt, strlen(doc_txt), JSON_MAX_DEPTH + 2, &e);
	if (doc == NULL) {
		fprintf(stderr, "stored document not JSON (%s at %zu): %.300s\n",
		    e.msg, e.offset, doc_txt);
		abort();
	}
	if (strcmp(json_object_to_json_string_ext(doc, FLAGS), doc_txt) != 0) {
		fprintf(stderr, "stored document differs from json-c's text: %.300s\n",
		    doc_txt);
		abort();
	}
	json_object_put(doc);
	free(doc_txt);

	/* the same object again: the same fingerprint */
	if (ev_parse(o, t, NOW_US, &ev2, &verr) != EV_OK ||
	    memcmp(ev2.fingerprint, ev->fingerprint, 32) != 0)
		abort();
	ev_event_free(&ev2);

	/* serialise -> parse -> ev_parse: the same fingerprint */
	txt = json_object_to_json_string_ext(o, FLAGS);
	if ((copy = strdup(txt)) == NULL)
		abort();
	if ((again = json_parse_strict(copy, strlen(copy), JSON_MAX_DEPTH, &e)) == NULL) {
		fprintf(stderr, "request does not round-trip: %.300s\n", copy);
		abort();
	}
	if (ev_parse(again, t, NOW_US, &ev2, &verr) != EV_OK ||
	    memcmp(ev2.fingerprint, ev->fingerprint, 32) != 0)
		abort();
	ev_event_free(&ev2);
	json_object_put(again);
	free(copy);
}

static void
check_refused(enum ev_err err, const struct ev_verr *verr, const struct ev_event *ev)
{
	json_object *body;
	size_t       i;

	if (err != verr->err)
		abort();
	if (err != EV_MALFORMED_JSON && err != EV_VALIDATION_FAILED &&
	    err != EV_UNKNOWN_EVENT_TYPE && err != EV_INVALID_IDENTITY)
		abort();
	if (memchr(verr->msg, '\0', sizeof(verr->msg)) == NULL || verr->msg[0] == '\0')
		abort();
	if (verr->nprobs > EV_MAX_PROBLEMS ||
	    (verr->nprobs == 0 && err != EV_MALFORMED_JSON))
		abort();
	for (i = 0; i < verr->nprobs; i++) {
		const struct ev_problem *p = &verr->probs[i];
		if (memchr(p->field, '\0', sizeof(p->field)) == NULL ||
		    !utf8_ok((const unsigned char *)p->field, strlen(p->field)) ||
		    p->problem == NULL || p->problem[0] == '\0')
			abort();
	}
	/* "*ev left empty" */
	if (ev->source != NULL || ev->ext_id != NULL || ev->type != NULL ||
	    ev->occurred_text != NULL || ev->properties != NULL)
		abort();
	for (i = 0; i < IDENT__MAX; i++)
		if (ev->ident[i] != NULL)
			abort();
	body = ev_error_body(verr);
	must_be_json(body);
	json_object_put(body);
}

static void
one(const struct conf_tenant *t, json_object *o)
{
	struct ev_event ev;
	struct ev_verr  verr;
	enum ev_err     err;

	memset(&verr, 0x5a, sizeof(verr));
	err = ev_parse(o, t, NOW_US, &ev, &verr);
	if (err == EV_OK) {
		check_accepted(t, o, &ev);
		ev_event_free(&ev);
	} else
		check_refused(err, &verr, &ev);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_perr e;
	json_object     *o, *items;
	size_t           i, n;

	setup();
	o = json_parse_strict((const char *)data, size, JSON_MAX_DEPTH, &e);
	if (o == NULL)
		return 0;
	for (i = 0; i < 2; i++)
		one(tenants[i], o);
	/* a batch body: every item as if sent alone */
	if (json_object_is_type(o, json_type_object) &&
	    json_object_object_get_ex(o, "items", &items) &&
	    json_object_is_type(items, json_type_array)) {
		n = json_object_array_length(items);
		for (i = 0; i < n && i < 64; i++)
			one(tenants[i % 2], json_object_array_get_idx(items, i));
	}
	/* no tenant configuration: every type is unknown */
	{
		struct ev_event ev;
		struct ev_verr  verr;
		enum ev_err     err = ev_parse(o, NULL, NOW_US, &ev, &verr);
		if (err == EV_OK)
			abort();
		check_refused(err, &verr, &ev);
	}
	json_object_put(o);
	return 0;
}
