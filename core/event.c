/*
 * One event: from a parsed JSON object to a validated struct ev_event
 * (API.md §2.1, CONF.md property types), its stored document and its
 * fingerprint (SHA-256 over a canonical form).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "rules/rules.h"
#include "core/core.h"

#define EV_SOURCE_MAX   64
#define EV_EXTID_MAX    255
#define EV_FUTURE_US    (24LL * 3600 * 1000000)   /* occurredAt limit */
#define EV_MIN_US       (-2208988800LL * 1000000) /* 1900-01-01T00:00:00Z */

static const char *const top_fields[] = {
	"source", "externalEventId", "eventType", "occurredAt", "identity",
	"properties", NULL
};

/* The string of o when it is a string without U+0000; else NULL. */
static const char *
str_of(const json_object *o, size_t *len)
{
	const char *s;
	int         n;

	if (o == NULL || !json_object_is_type(o, json_type_string))
		return NULL;
	s = json_object_get_string((json_object *)o);
	n = json_object_get_string_len(o);
	if (n < 0 || strlen(s) != (size_t)n)
		return NULL;
	*len = (size_t)n;
	return s;
}

/* Problem name for a string field that str_of() refused. */
static const char *
str_problem(const json_object *o)
{
	if (o != NULL && json_object_is_type(o, json_type_string))
		return "contains_nul";
	return "type";
}

static int
source_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > EV_SOURCE_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
		    c == '-'))
			return 0;
	}
	return 1;
}

void
ev_event_free(struct ev_event *ev)
{
	size_t i;

	if (ev == NULL)
		return;
	free(ev->source);
	free(ev->ext_id);
	free(ev->type);
	free(ev->occurred_text);
	for (i = 0; i < IDENT__MAX; i++)
		free(ev->ident[i]);
	if (ev->properties != NULL)
		json_object_put(ev->properties);
	memset(ev, 0, sizeof(*ev));
}

/* Compare a JSON number's text against an exact bound; -2 on bad number. */
static int
num_cmp(const mpq_t v, const mpq_t bound)
{
	return mpq_cmp(v, bound);
}

/* A problem of the field prefix + name (formatted only when there is a
 * problem: most events have none). */
static void
field_problem(struct ev_verr *verr, const char *prefix, const char *name,
    const char *problem)
{
	char field[160];

	snprintf(field, sizeof(field), "%s%s", prefix, name);
	ev_problem_add(verr, field, problem);
}

/*
 * Check one property value against its registered definition. Adds problems
 * to verr under "properties.NAME".
 */
static void
check_prop(const struct conf_prop *p, json_object *v, struct ev_verr *verr)
{
	size_t      len, i;
	const char *s;
	mpq_t       q;
	int         isnum = 0;

	switch (p->type) {
	case CONF_PT_STRING:
	case CONF_PT_TIMESTAMP:
		if ((s = str_of(v, &len)) == NULL) {
			field_problem(verr, "properties.", p->name, str_problem(v));
			return;
		}
		if (p->type == CONF_PT_TIMESTAMP) {
			int64_t us;
			if (ts_parse(s, len, &us) != 0) {
				field_problem(verr, "properties.", p->name, "timestamp");
				return;
			}
		}
		if (p->max_length >= 0 && utf8_count(s, len) > (size_t)p->max_length)
			field_problem(verr, "properties.", p->name, "max_length");
		if (p->enum_vals != NULL) {
			for (i = 0; i < p->nenum; i++)
				if (strlen(p->enum_vals[i]) == len &&
				    memcmp(p->enum_vals[i], s, len) == 0)
					break;
			if (i == p->nenum)
				field_problem(verr, "properties.", p->name, "enum");
		}
		return;
	case CONF_PT_BOOLEAN:
		if (!json_object_is_type(v, json_type_boolean))
			field_problem(verr, "properties.", p->name, "type");
		return;
	case CONF_PT_NUMBER:
	case CONF_PT_INTEGER:
		break;
	default:
		field_problem(verr, "properties.", p->name, "type");
		return;
	}

	if (!json_is_number(v)) {
		field_problem(verr, "properties.", p->name, "type");
		return;
	}
	s = json_object_get_string(v);
	mpq_init(q);
	if (rule_dec_parse(s, strlen(s), q) != 0 || !rule_dec_in_double_range(q)) {
		field_problem(verr, "properties.", p->name, "out_of_range");
		goto out;
	}
	isnum = 1;
	if (p->type == CONF_PT_INTEGER && mpz_cmp_ui(mpq_denref(q), 1) != 0) {
		field_problem(verr, "properties.", p->name, "integer");
		goto out;
	}
	if (p->has_min && num_cmp(q, p->min) < 0)
		field_problem(verr, "properties.", p->name, "min");
	if (p->has_max && num_cmp(q, p->max) > 0)
		field_problem(verr, "properties.", p->name, "max");
	if (p->enum_vals != NULL) {
		for (i = 0; i < p->nenum; i++) {
			mpq_t e;
			int   eq;
			mpq_init(e);
			eq = rule_dec_parse(p->enum_vals[i], strlen(p->enum_vals[i]), e) == 0 &&
			    mpq_equal(e, q);
			mpq_clear(e);
			if (eq)
				break;
		}
		if (i == p->nenum)
			field_problem(verr, "properties.", p->name, "enum");
	}
out:
	(void)isnum;
	mpq_clear(q);
}

/*
 * 1 when some object key inside v held U+0000 (json_parse_strict() stores
 * it as the bytes C0 80). Depth is bounded by the parser's limit.
 */
static int
has_nul_key(json_object *v)
{
	size_t i, n;

	if (json_object_is_type(v, json_type_object)) {
		json_object_object_foreach(v, k, val) {
			if (strchr(k, (char)0xC0) != NULL || has_nul_key(val))
				return 1;
		}
	} else if (json_object_is_type(v, json_type_array)) {
		n = json_object_array_length(v);
		for (i = 0; i < n; i++)
			if (has_nul_key(json_object_array_get_idx(v, i)))
				return 1;
	}
	return 0;
}

/* Validate `properties` against the event type; unknown keys per tenant. */
static void
check_props(const struct conf_tenant *t, const struct conf_event_type *et,
    json_object *props, struct ev_verr *verr)
{
	size_t i;

	for (i = 0; i < et->nprops; i++) {
		const struct conf_prop *p = &et->props[i];
		json_object            *v = NULL;

		if (!json_object_object_get_ex(props, p->name, &v) || v == NULL) {
			/* absent or null */
			if (p->required)
				field_problem(verr, "properties.", p->name, "required");
			continue;
		}
		check_prop(p, v, verr);
	}
	if (t->allow_unknown_props)
		return;
	json_object_object_foreach(props, key, val) {
		(void)val;
		for (i = 0; i < et->nprops; i++)
			if (strcmp(et->props[i].name, key) == 0)
				break;
		if (i == et->nprops)
			field_problem(verr, "properties.", key, "unknown_property");
	}
}

/*
 * Normalise the identity object into ev->ident[]. Structural problems are
 * validation problems; values that do not normalise are invalid_identity
 * (why the first one was refused goes to ident_why for the message).
 * Returns the error kind found (EV_OK when all is well).
 */
static enum ev_err
parse_identity(json_object *id, const struct conf_tenant *t,
    struct ev_event *ev, struct ev_verr *verr, char *ident_why, size_t whysz)
{
	size_t      i, n = 0, len;
	const char *s, *why;
	enum ev_err kind = EV_OK;

	if (id == NULL) {
		ev_problem_add(verr, "identity", "required");
		return EV_VALIDATION_FAILED;
	}
	if (!json_object_is_type(id, json_type_object)) {
		ev_problem_add(verr, "identity", "type");
		return EV_VALIDATION_FAILED;
	}
	json_object_object_foreach(id, key, val) {
		(void)val;
		for (i = 0; i < IDENT__MAX; i++)
			if (strcmp(ident_json_key[i], key) == 0)
				break;
		if (i == IDENT__MAX) {
			field_problem(verr, "identity.", key, "unknown_field");
			kind = EV_VALIDATION_FAILED;
		}
	}
	for (i = 0; i < IDENT__MAX; i++) {
		json_object *v;
		if (!json_object_object_get_ex(id, ident_json_key[i], &v) || v == NULL)
			continue;
		if ((s = str_of(v, &len)) == NULL) {
			field_problem(verr, "identity.", ident_json_key[i], str_problem(v));
			kind = EV_VALIDATION_FAILED;
			continue;
		}
		n++;
		switch (i) {
		case IDENT_EMAIL:
			ev->ident[i] = ident_norm_email(s, len, &why);
			break;
		case IDENT_PHONE:
			ev->ident[i] = ident_norm_phone(s, len,
			    t != NULL ? t->default_cc : NULL, &why);
			break;
		default:
			ev->ident[i] = ident_norm_text(s, len, &why);
			break;
		}
		if (ev->ident[i] == NULL) {
			field_problem(verr, "identity.", ident_json_key[i], "invalid");
			if (kind == EV_OK) {
				kind = EV_INVALID_IDENTITY;
				snprintf(ident_why, whysz, "identity.%s: %s",
				    ident_json_key[i], why != NULL ? why : "not valid");
			}
		}
	}
	if (n == 0 && kind == EV_OK) {
		ev_problem_add(verr, "identity", "required");
		kind = EV_VALIDATION_FAILED;
	}
	return kind;
}

enum ev_err
ev_parse(const json_object *co, const struct conf_tenant *t, int64_t now_us,
    struct ev_event *ev, struct ev_verr *verr)
{
	json_object                  *o = (json_object *)co, *v;
	const struct conf_event_type *et = NULL;
	const char                   *s;
	size_t                        len, i;
	enum ev_err                   idk;
	char                          buf[32], ident_why[200] = "";

	memset(ev, 0, sizeof(*ev));
	verr->nprobs = 0;
	verr->err = EV_OK;
	verr->msg[0] = '\0';
	ev->received_us = now_us;
	if (o == NULL || !json_object_is_type(o, json_type_object)) {
		ev_verr_set(verr, EV_MALFORMED_JSON, "the event must be a JSON object");
		return verr->err;
	}
	json_object_object_foreach(o, key, val) {
		(void)val;
		for (i = 0; top_fields[i] != NULL; i++)
			if (strcmp(top_fields[i], key) == 0)
				break;
		if (top_fields[i] == NULL)
			field_problem(verr, "", key, "unknown_field");
	}

	/* source */
	if (!json_object_object_get_ex(o, "source", &v) || v == NULL)
		ev_problem_add(verr, "source", "required");
	else if ((s = str_of(v, &len)) == NULL)
		ev_problem_add(verr, "source", str_problem(v));
	else if (!source_ok(s, len))
		ev_problem_add(verr, "source", len == 0 || len > EV_SOURCE_MAX ?
		    "length" : "pattern");
	else
		ev->source = strndup(s, len);

	/* externalEventId */
	if (!json_object_object_get_ex(o, "externalEventId", &v) || v == NULL)
		ev_problem_add(verr, "externalEventId", "required");
	else if ((s = str_of(v, &len)) == NULL)
		ev_problem_add(verr, "externalEventId", str_problem(v));
	else if (len == 0 || utf8_count(s, len) > EV_EXTID_MAX)
		ev_problem_add(verr, "externalEventId", "length");
	else {
		ev->ext_id = strndup(s, len);
		ev->ext_id_len = len;
	}

	/* occurredAt */
	if (json_object_object_get_ex(o, "occurredAt", &v) && v != NULL) {
		if ((s = str_of(v, &len)) == NULL)
			ev_problem_add(verr, "occurredAt", str_problem(v));
		else if (len > 64 || ts_parse(s, len, &ev->occurred_us) != 0)
			ev_problem_add(verr, "occurredAt", "timestamp");
		else if (ev->occurred_us > now_us &&
		    ev->occurred_us - now_us > EV_FUTURE_US)
			ev_problem_add(verr, "occurredAt", "too_far_in_future");
		else if (ev->occurred_us < EV_MIN_US)
			ev_problem_add(verr, "occurredAt", "too_far_in_past");
		else {
			ev->occurred_given = 1;
			ev->occurred_text = strndup(s, len);
		}
	} else {
		ev->occurred_us = now_us;
		ev->occurred_text = strdup(ts_format(now_us, buf));
	}

	/* properties (validated once the type is known) */
	if (json_object_object_get_ex(o, "properties", &v) && v != NULL) {
		if (!json_object_is_type(v, json_type_object))
			ev_problem_add(verr, "properties", "type");
		else if (has_nul_key(v))
			ev_problem_add(verr, "properties", "key_contains_nul");
		else
			ev->properties = json_object_get(v);
	} else
		ev->properties = json_object_new_object();

	/* eventType */
	if (!json_object_object_get_ex(o, "eventType", &v) || v == NULL)
		ev_problem_add(verr, "eventType", "required");
	else if ((s = str_of(v, &len)) == NULL)
		ev_problem_add(verr, "eventType", str_problem(v));
	else if (t == NULL || (et = conf_type_find(t, s)) == NULL) {
		if (verr->nprobs == 0) {
			ev_verr_set(verr, EV_UNKNOWN_EVENT_TYPE,
			    "event type is not registered for this tenant");
			ev_problem_add(verr, "eventType", "unknown_event_type");
			goto fail;
		}
		ev_problem_add(verr, "eventType", "unknown_event_type");
	} else
		ev->type = strdup(s);

	idk = parse_identity(json_object_object_get_ex(o, "identity", &v) ? v : NULL,
	    t, ev, verr, ident_why, sizeof(ident_why));

	if (verr->nprobs == 0 && et != NULL && ev->properties != NULL)
		check_props(t, et, ev->properties, verr);

	if (verr->nprobs > 0) {
		/* An identity value that does not normalise is invalid_identity
		 * when it is the only kind of problem. */
		int only_ident = idk == EV_INVALID_IDENTITY;
		for (i = 0; only_ident && i < verr->nprobs; i++)
			if (strncmp(verr->probs[i].field, "identity.", 9) != 0)
				only_ident = 0;
		if (only_ident) {
			verr->err = EV_INVALID_IDENTITY;
			snprintf(verr->msg, sizeof(verr->msg),
			    "an identity value is not valid (%s)", ident_why);
		} else {
			verr->err = EV_VALIDATION_FAILED;
			snprintf(verr->msg, sizeof(verr->msg),
			    "the event does not match the contract (%s: %s)",
			    verr->probs[0].field, verr->probs[0].problem);
		}
		goto fail;
	}
	if (ev->source == NULL || ev->ext_id == NULL || ev->type == NULL ||
	    ev->occurred_text == NULL || ev->properties == NULL) {
		ev_verr_set(verr, EV_INTERNAL, "out of memory");
		goto fail;
	}
	{
		char *canon = ev_canonical(ev);   /* aborts when out of memory */
		ev_sha256(canon, strlen(canon), ev->fingerprint);
		free(canon);
	}
	return EV_OK;
fail:
	ev_event_free(ev);
	return verr->err;
}

/* ---- canonical form ---- */

/* A JSON string literal with a fixed escaping: only '"', '\\' and control
 * characters are escaped (as \u00XX); UTF-8 is copied as is. */
static void
canon_str(struct ev_buf *b, const char *s, size_t len)
{
	ev_buf_json_esc(b, s, len, 0);
}

/* A number in canonical form (rules/dec.c), or its text when not one. */
static void
canon_num(struct ev_buf *b, json_object *v)
{
	const char *s = json_object_get_string(v);
	char       *c = rule_dec_canon(s, strlen(s));

	ev_buf_str(b, c != NULL ? c : s);
	free(c);
}

/* Canonical JSON of any value: keys sorted by bytes, numbers canonical. */
static const struct ev_json_style canon_style = { canon_str, canon_num, 1 };

/* The event's identities as a JSON object: names[type]: value, the
 * strings written by str(). */
static void
ident_object(struct ev_buf *b, const struct ev_event *ev, const char *const *names,
    void (*str)(struct ev_buf *, const char *, size_t))
{
	size_t i;
	int    first = 1;

	ev_buf_put(b, "{", 1);
	for (i = 0; i < IDENT__MAX; i++) {
		if (ev->ident[i] == NULL)
			continue;
		if (!first)
			ev_buf_put(b, ",", 1);
		first = 0;
		str(b, names[i], strlen(names[i]));
		ev_buf_put(b, ":", 1);
		str(b, ev->ident[i], strlen(ev->ident[i]));
	}
	ev_buf_put(b, "}", 1);
}

char *
ev_canonical(const struct ev_event *ev)
{
	struct ev_buf b = { NULL, 0, 0 };
	char          tbuf[32];

	ev_buf_str(&b, "{\"eventType\":");
	canon_str(&b, ev->type, strlen(ev->type));
	ev_buf_str(&b, ",\"identity\":");
	ident_object(&b, ev, ident_type_name, canon_str);
	/* The given occurredAt counts as the instant it names; a defaulted
	 * one (receipt time) does not count at all. */
	ev_buf_str(&b, ",\"occurredAt\":");
	if (ev->occurred_given) {
		ts_format(ev->occurred_us, tbuf);
		canon_str(&b, tbuf, strlen(tbuf));
	} else
		ev_buf_str(&b, "null");
	ev_buf_str(&b, ",\"properties\":");
	ev_buf_json_as(&b, ev->properties, &canon_style);
	ev_buf_put(&b, "}", 1);
	return b.p;
}

char *
ev_event_doc(const struct ev_event *ev)
{
	struct ev_buf b = { NULL, 0, 0 };
	char          buf[32];

	ev_buf_str(&b, "{\"source\":");
	ev_buf_json_str(&b, ev->source);
	ev_buf_str(&b, ",\"externalEventId\":");
	ev_buf_json_strn(&b, ev->ext_id, ev->ext_id_len);
	ev_buf_str(&b, ",\"eventType\":");
	ev_buf_json_str(&b, ev->type);
	ev_buf_str(&b, ",\"occurredAt\":");
	ev_buf_json_str(&b, ev->occurred_text);
	ev_buf_str(&b, ",\"occurredAtUtc\":");
	ev_buf_json_str(&b, ts_format(ev->occurred_us, buf));
	ev_buf_str(&b, ",\"receivedAt\":");
	ev_buf_json_str(&b, ts_format(ev->received_us, buf));
	ev_buf_str(&b, ",\"identity\":");
	ident_object(&b, ev, ident_json_key, ev_buf_json_strn);
	ev_buf_str(&b, ",\"properties\":");
	ev_buf_json(&b, ev->properties);
	ev_buf_put(&b, "}", 1);
	return b.p;
}
