/*
 * conf/tenant.c — the schemas of CONF.md over the YAML tree of yaml.c:
 * a tenant file (settings, event_types, tiers, rules) and rfevents.yaml.
 * Every unknown key, wrong type or bad value is an error at the position of
 * its node; checking goes on after an error so that one pass reports as
 * much as it can. Expressions are compiled here, once, by rule_expr_compile.
 *
 * Scalars follow YAML's plain/quoted distinction: booleans, numbers and
 * counts must be plain (`true`, `12.5`, `3`); a quoted "true" is a string.
 * Booleans are true/false (also True/TRUE/False/FALSE, YAML 1.2 core
 * schema); YAML 1.1's yes/no/on/off are rejected as ambiguous. Numbers use
 * the JSON grammar (RFC 8259 §6) and are exact (rule_dec_parse).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf_impl.h"
#include "rules/rules.h"

const char *const conf_ptype_name[CONF_PT__MAX] = {
	"string",    /* CONF_PT_STRING */
	"number",    /* CONF_PT_NUMBER */
	"integer",   /* CONF_PT_INTEGER */
	"boolean",   /* CONF_PT_BOOLEAN */
	"timestamp", /* CONF_PT_TIMESTAMP */
};
_Static_assert(sizeof(conf_ptype_name) / sizeof(conf_ptype_name[0]) ==
    CONF_PT__MAX, "conf_ptype_name");

static const char *const rounding_name[CONF_ROUND__MAX] = {
	"floor",     /* CONF_ROUND_FLOOR */
	"round",     /* CONF_ROUND_ROUND */
	"ceil",      /* CONF_ROUND_CEIL */
};
_Static_assert(sizeof(rounding_name) / sizeof(rounding_name[0]) ==
    CONF_ROUND__MAX, "rounding_name");

static const char *const log_level_name[] = {
	"error", "warn", "info", "debug",   /* 0 .. 3, conf_server.log_level */
};

static const char *const unknown_props_name[] = {
	"reject", "allow",                  /* conf_tenant.allow_unknown_props */
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_COUNT 1000000000L           /* limits, max_length, ... */
#define MAX_BODY  (1024L * 1024 * 1024) /* rfevents.yaml body sizes */

/* Shorthand for reporting at a node (most messages carry a key name). */
static void __attribute__((format(printf, 3, 4)))
nerr(struct conf_diag *d, const struct conf_ynode *n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_diag_vadd(d, n->line, n->col, fmt, ap);
	va_end(ap);
}

/* 1 for a plain scalar that YAML reads as null: empty, ~, null. */
static int
is_null(const struct conf_ynode *n)
{
	if (n->kind != CONF_Y_SCALAR || !n->plain)
		return 0;
	return n->len == 0 || strcmp(n->text, "~") == 0 ||
	    strcmp(n->text, "null") == 0 || strcmp(n->text, "Null") == 0 ||
	    strcmp(n->text, "NULL") == 0;
}

/* What a node is, for "expected X, not Y" messages. */
static const char *
kind_name(const struct conf_ynode *n)
{
	if (n->kind == CONF_Y_MAP)
		return "a mapping";
	if (n->kind == CONF_Y_SEQ)
		return "a sequence";
	if (is_null(n))
		return "null";
	return n->plain ? "a plain scalar" : "a quoted string";
}

/* 1 when scalar n's text is exactly the NUL-terminated word w. */
static int
text_is(const struct conf_ynode *n, const char *w)
{
	return n->kind == CONF_Y_SCALAR && strlen(w) == n->len &&
	    memcmp(n->text, w, n->len) == 0;
}

static int
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* [A-Za-z_][A-Za-z0-9_]{0,63}: event types, properties, variables,
 * balances. */
static int
ident_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > CONF_MAX_NAME || !(is_alpha(s[0]) || s[0] == '_'))
		return 0;
	for (i = 1; i < len; i++)
		if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '_')
			return 0;
	return 1;
}

/* Length to quote a name in a message: at most CONF_MAX_NAME bytes. */
static int
clip(size_t len)
{
	return (int)(len > CONF_MAX_NAME ? CONF_MAX_NAME : len);
}

/* Error "<what> 'NAME': expected ..." unless mapping key k is an
 * identifier (ident_ok()). */
static void
want_ident(struct conf_diag *d, const struct conf_ynode *k, const char *what)
{
	if (!ident_ok(k->text, k->len))
		nerr(d, k, "%s '%.*s': expected [A-Za-z_][A-Za-z0-9_]{0,63}",
		    what, clip(k->len), k->text);
}

/* [A-Za-z0-9_.-]{1,64}: rule ids. */
static int
rule_id_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > CONF_MAX_NAME)
		return 0;
	for (i = 0; i < len; i++)
		if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '_' &&
		    s[i] != '.' && s[i] != '-')
			return 0;
	return 1;
}

/* 1 to 64 bytes without control characters: tier names (UTF-8 is already
 * checked by libyaml). */
static int
tier_name_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > CONF_MAX_NAME)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

int
conf_slug_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > CONF_MAX_NAME ||
	    !((s[0] >= 'a' && s[0] <= 'z') || is_digit(s[0])))
		return 0;
	for (i = 1; i < len; i++)
		if (!(s[i] >= 'a' && s[i] <= 'z') && !is_digit(s[i]) &&
		    s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

/*
 * Match the pairs of mapping m against the NULL-terminated list `names`:
 * vals[i] becomes the value node of names[i], or NULL when absent. Keys
 * not in the list are errors at the key. Keys are unique (yaml.c).
 */
static void
fields(struct conf_diag *d, const struct conf_ynode *m,
    const char *const *names, const struct conf_ynode **vals)
{
	const struct conf_ynode *k;
	size_t i, j;

	for (j = 0; names[j] != NULL; j++)
		vals[j] = NULL;
	for (i = 0; i + 1 < m->nkids; i += 2) {
		k = m->kids[i];
		for (j = 0; names[j] != NULL; j++)
			if (text_is(k, names[j]))
				break;
		if (names[j] != NULL)
			vals[j] = m->kids[i + 1];
		else
			nerr(d, k, "unknown key '%.*s'", clip(k->len), k->text);
	}
}

/* Check that n is a mapping (kind: CONF_Y_MAP) or a sequence; error
 * "what: expected ..." otherwise. Returns 0 when it is. */
static int
want_kind(struct conf_diag *d, const struct conf_ynode *n, const char *what,
    enum conf_ykind kind, const char *hint)
{
	if (n->kind == kind)
		return 0;
	nerr(d, n, "%s: expected %s, not %s%s", what,
	    kind == CONF_Y_MAP ? "a mapping" : "a sequence", kind_name(n), hint);
	return -1;
}

/* A boolean: a plain true or false. Returns 0 and *out, or -1. */
static int
get_bool(struct conf_diag *d, const struct conf_ynode *n, const char *what,
    int *out)
{
	if (n->kind == CONF_Y_SCALAR && n->plain) {
		if (text_is(n, "true") || text_is(n, "True") ||
		    text_is(n, "TRUE")) {
			*out = 1;
			return 0;
		}
		if (text_is(n, "false") || text_is(n, "False") ||
		    text_is(n, "FALSE")) {
			*out = 0;
			return 0;
		}
	}
	nerr(d, n, "%s: expected true or false", what);
	return -1;
}

/* A string: any non-null scalar without NUL bytes. Returns 0 and a copy in
 * *out (caller frees; any previous *out is freed), or -1. */
static int
get_str(struct conf_diag *d, const struct conf_ynode *n, const char *what,
    char **out)
{
	if (n->kind != CONF_Y_SCALAR || is_null(n)) {
		nerr(d, n, "%s: expected a string, not %s", what, kind_name(n));
		return -1;
	}
	if (memchr(n->text, '\0', n->len) != NULL) {
		nerr(d, n, "%s: NUL character in a string", what);
		return -1;
	}
	free(*out);
	*out = conf_xstrndup(n->text, n->len);
	return 0;
}

/* An exact number: a plain scalar in JSON number syntax. `out` is
 * initialised by the caller. Returns 0 or -1. */
static int
get_number(struct conf_diag *d, const struct conf_ynode *n, const char *what,
    mpq_t out)
{
	if (n->kind == CONF_Y_SCALAR && n->plain &&
	    rule_dec_parse(n->text, n->len, out) == 0)
		return 0;
	nerr(d, n, "%s: expected a number like 12 or 12.5", what);
	return -1;
}

/* A whole number lo..hi written as plain decimal digits. Returns 0 and
 * *out, or -1. */
static int
get_count(struct conf_diag *d, const struct conf_ynode *n, const char *what,
    long lo, long hi, long *out)
{
	long v = 0;
	size_t i;

	if (n->kind != CONF_Y_SCALAR || !n->plain || n->len == 0)
		goto bad;
	for (i = 0; i < n->len; i++) {
		if (!is_digit(n->text[i]))
			goto bad;
		if (v > (hi - (n->text[i] - '0')) / 10)
			goto range;
		v = v * 10 + (n->text[i] - '0');
	}
	if (v < lo || v > hi)
		goto range;
	*out = v;
	return 0;
range:
	nerr(d, n, "%s: must be from %ld to %ld", what, lo, hi);
	return -1;
bad:
	nerr(d, n, "%s: expected a whole number from %ld to %ld", what, lo, hi);
	return -1;
}

/* One word of `names` (n of them). Returns 0 and its index in *out, or -1
 * with "what: expected one of ...". */
static int
get_choice(struct conf_diag *d, const struct conf_ynode *n, const char *what,
    const char *const *names, size_t count, int *out)
{
	char list[128] = "";
	size_t i;

	for (i = 0; i < count; i++)
		if (n->kind == CONF_Y_SCALAR && text_is(n, names[i])) {
			*out = (int)i;
			return 0;
		}
	for (i = 0; i < count; i++) {
		strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
		strncat(list, names[i], sizeof(list) - strlen(list) - 1);
	}
	nerr(d, n, "%s: expected one of %s", what, list);
	return -1;
}

/* Column of character `col` (1-based) of scalar n's value: exact when the
 * scalar maps 1:1 onto its line, else the node's start. */
static int
value_col(const struct conf_ynode *n, unsigned col)
{
	if (n->exact && col >= 1 && col - 1 <= n->len)
		return n->col + n->quoted + (int)(col - 1);
	return n->col;
}

/*
 * Compile the expression of scalar n (CONF.md "Expressions"): stores a
 * copy of the text in *src and the tree in *out (both owned by the rule,
 * freed by conf_tenant_free()). A compile error is reported at the node's
 * position plus the column inside the expression (value_col()). When `ty`
 * is not NULL (the rule's event type, unknown properties rejected), every
 * properties.NAME read must be one of its properties. Returns 0 or -1.
 */
static int
get_expr(struct conf_diag *d, const struct conf_ynode *n, const char *what,
    enum rule_want want, const struct conf_event_type *ty, char **src,
    struct rule_expr **out)
{
	struct rule_err err;
	const char *name;
	unsigned col;
	size_t i, j;
	int rc = 0;

	if (n->kind != CONF_Y_SCALAR || (n->plain && n->len == 0)) {
		nerr(d, n, "%s: expected an expression, not %s", what,
		    kind_name(n));
		return -1;
	}
	if (memchr(n->text, '\0', n->len) != NULL) {
		nerr(d, n, "%s: NUL character in an expression", what);
		return -1;
	}
	if (n->len > RULE_EXPR_MAX_LEN) {
		nerr(d, n, "%s: expression longer than %d bytes", what,
		    RULE_EXPR_MAX_LEN);
		return -1;
	}
	memset(&err, 0, sizeof(err));
	*out = rule_expr_compile(n->text, n->len, want, &err);
	if (*out == NULL) {
		err.msg[sizeof(err.msg) - 1] = '\0';
		conf_diag_add(d, n->line, value_col(n, err.col), "%s: %s", what,
		    err.msg[0] ? err.msg : "invalid expression");
		return -1;
	}
	*src = conf_xstrndup(n->text, n->len);
	for (i = 0; ty != NULL && i < rule_expr_nprops(*out); i++) {
		name = rule_expr_prop(*out, i, &col);
		for (j = 0; j < ty->nprops; j++)
			if (ty->props[j].name && strcmp(ty->props[j].name, name) == 0)
				break;
		if (j < ty->nprops)
			continue;
		conf_diag_add(d, n->line, value_col(n, col), "%s: event type "
		    "'%s' has no property '%.64s'", what, ty->name, name);
		rc = -1;
	}
	return rc;
}

/* ---- tenant: settings ---- */

static void
parse_settings(struct conf_diag *d, const struct conf_ynode *m,
    struct conf_tenant *t)
{
	static const char *const keys[] = { "auto_create_profiles",
	    "default_country_code", "unknown_properties", "rounding", NULL };
	const struct conf_ynode *v[NELEM(keys)];
	const struct conf_ynode *cc;
	const char *s;
	size_t len;
	int i;

	if (want_kind(d, m, "settings", CONF_Y_MAP, "") == -1)
		return;
	fields(d, m, keys, v);
	if (v[0] != NULL)
		get_bool(d, v[0], "auto_create_profiles",
		    &t->auto_create_profiles);
	if ((cc = v[1]) != NULL) {
		/* E.164 country code: 1 to 3 digits, no leading 0, optional +. */
		s = cc->text;
		len = cc->kind == CONF_Y_SCALAR ? cc->len : 0;
		if (len > 0 && s[0] == '+') {
			s++;
			len--;
		}
		if (len >= 1 && len <= 3 && s[0] != '0' && is_digit(s[0]) &&
		    (len < 2 || is_digit(s[1])) && (len < 3 || is_digit(s[2]))) {
			memcpy(t->default_cc, s, len);
			t->default_cc[len] = '\0';
		} else
			nerr(d, cc, "default_country_code: expected a country "
			    "calling code of 1 to 3 digits, like \"1\" or \"44\"");
	}
	if (v[2] != NULL && get_choice(d, v[2], "unknown_properties",
	    unknown_props_name, NELEM(unknown_props_name), &i) == 0)
		t->allow_unknown_props = i;
	if (v[3] != NULL && get_choice(d, v[3], "rounding", rounding_name,
	    NELEM(rounding_name), &i) == 0)
		t->rounding = (enum conf_rounding)i;
}

/* ---- tenant: event types ---- */

/* The values of `enum:` (a sequence of non-null scalars, distinct). */
static void
parse_enum(struct conf_diag *d, const struct conf_ynode *s, struct conf_prop *p)
{
	const struct conf_ynode **sorted;
	const struct conf_ynode *x;
	size_t i, n = 0;

	if (want_kind(d, s, "enum", CONF_Y_SEQ, "") == -1)
		return;
	if (s->nkids == 0 || s->nkids > CONF_MAX_ENUM) {
		nerr(d, s, "enum: expected 1 to %d values", CONF_MAX_ENUM);
		return;
	}
	p->enum_vals = conf_xcalloc(s->nkids, sizeof(*p->enum_vals));
	p->nenum = s->nkids;
	for (i = 0; i < s->nkids; i++)
		get_str(d, s->kids[i], "enum", &p->enum_vals[i]);
	/* Duplicates, found by sorting the scalar nodes. */
	sorted = conf_xmalloc(s->nkids * sizeof(*sorted));
	for (i = 0; i < s->nkids; i++)
		if (s->kids[i]->kind == CONF_Y_SCALAR)
			sorted[n++] = s->kids[i];
	qsort(sorted, n, sizeof(*sorted), conf_ynode_cmp);
	for (i = 1; i < n; i++) {
		x = sorted[i];
		if (x->len == sorted[i - 1]->len &&
		    memcmp(x->text, sorted[i - 1]->text, x->len) == 0)
			nerr(d, x, "enum: duplicate value '%.*s'", clip(x->len),
			    x->text);
	}
	free(sorted);
}

/* One property: `{ type: string, required: true, ... }`. */
static void
parse_prop(struct conf_diag *d, const struct conf_ynode *m, struct conf_prop *p)
{
	static const char *const keys[] = { "type", "required", "min", "max",
	    "max_length", "enum", "description", "filterable", "derivable",
	    NULL };
	enum { K_TYPE, K_REQUIRED, K_MIN, K_MAX, K_MAXLEN, K_ENUM, K_DESC,
	    K_FILTERABLE, K_DERIVABLE };
	const struct conf_ynode *v[NELEM(keys)];
	int ty = -1, numeric, okmin = 0, okmax = 0;

	if (want_kind(d, m, "property", CONF_Y_MAP,
	    " (write { type: string })") == -1)
		return;
	fields(d, m, keys, v);
	if (v[K_TYPE] == NULL)
		nerr(d, m, "property: missing 'type'");
	else if (get_choice(d, v[K_TYPE], "type", conf_ptype_name,
	    CONF_PT__MAX, &ty) == 0)
		p->type = (enum conf_ptype)ty;
	numeric = ty == CONF_PT_NUMBER || ty == CONF_PT_INTEGER;
	if (v[K_REQUIRED] != NULL)
		get_bool(d, v[K_REQUIRED], "required", &p->required);
	if (v[K_MIN] != NULL) {
		mpq_init(p->min);
		p->has_min = 1;
		okmin = get_number(d, v[K_MIN], "min", p->min) == 0;
		if (ty != -1 && !numeric)
			nerr(d, v[K_MIN], "min: only number and integer "
			    "properties have a minimum");
	}
	if (v[K_MAX] != NULL) {
		mpq_init(p->max);
		p->has_max = 1;
		okmax = get_number(d, v[K_MAX], "max", p->max) == 0;
		if (ty != -1 && !numeric)
			nerr(d, v[K_MAX], "max: only number and integer "
			    "properties have a maximum");
	}
	if (okmin && okmax && mpq_cmp(p->min, p->max) > 0)
		nerr(d, v[K_MAX], "max: less than min");
	if (v[K_MAXLEN] != NULL) {
		get_count(d, v[K_MAXLEN], "max_length", 0, MAX_COUNT,
		    &p->max_length);
		if (ty != -1 && ty != CONF_PT_STRING)
			nerr(d, v[K_MAXLEN], "max_length: only string "
			    "properties have a maximum length");
	}
	if (v[K_ENUM] != NULL) {
		parse_enum(d, v[K_ENUM], p);
		if (ty != -1 && ty != CONF_PT_STRING)
			nerr(d, v[K_ENUM], "enum: only string properties "
			    "have an enum");
	}
	if (v[K_DESC] != NULL)
		get_str(d, v[K_DESC], "description", &p->description);
	if (v[K_FILTERABLE] != NULL)
		get_bool(d, v[K_FILTERABLE], "filterable", &p->filterable);
	if (v[K_DERIVABLE] != NULL)
		get_bool(d, v[K_DERIVABLE], "derivable", &p->derivable);
}

/* One event type: `{ description: ..., properties: { NAME: {...} } }`. */
static void
parse_type(struct conf_diag *d, const struct conf_ynode *m,
    struct conf_event_type *ty)
{
	static const char *const keys[] = { "description", "properties", NULL };
	const struct conf_ynode *v[NELEM(keys)];
	const struct conf_ynode *ps, *k;
	size_t i;

	if (want_kind(d, m, "event type", CONF_Y_MAP,
	    " (write { properties: {} })") == -1)
		return;
	fields(d, m, keys, v);
	if (v[0] != NULL)
		get_str(d, v[0], "description", &ty->description);
	if ((ps = v[1]) == NULL || want_kind(d, ps, "properties", CONF_Y_MAP,
	    " (write {} for none)") == -1)
		return;
	if (ps->nkids / 2 > CONF_MAX_PROPS) {
		nerr(d, ps, "properties: more than %d", CONF_MAX_PROPS);
		return;
	}
	ty->props = conf_xcalloc(ps->nkids / 2, sizeof(*ty->props));
	ty->nprops = ps->nkids / 2;
	for (i = 0; i < ty->nprops; i++) {
		k = ps->kids[2 * i];
		ty->props[i].max_length = -1;
		ty->props[i].name = conf_xstrndup(k->text, k->len);
		want_ident(d, k, "bad property name");
		parse_prop(d, ps->kids[2 * i + 1], &ty->props[i]);
	}
}

static void
parse_types(struct conf_diag *d, const struct conf_ynode *m,
    struct conf_tenant *t)
{
	const struct conf_ynode *k;
	size_t i;

	if (want_kind(d, m, "event_types", CONF_Y_MAP, "") == -1)
		return;
	if (m->nkids / 2 > CONF_MAX_TYPES) {
		nerr(d, m, "event_types: more than %d", CONF_MAX_TYPES);
		return;
	}
	t->types = conf_xcalloc(m->nkids / 2, sizeof(*t->types));
	t->ntypes = m->nkids / 2;
	for (i = 0; i < t->ntypes; i++) {
		k = m->kids[2 * i];
		t->types[i].name = conf_xstrndup(k->text, k->len);
		want_ident(d, k, "bad event type name");
		parse_type(d, m->kids[2 * i + 1], &t->types[i]);
	}
}

/* ---- tenant: tiers ---- */

/* Parse one tier into *tr (its numbers already initialised, multiplier 1).
 * `prev` are the tiers before it, for the uniqueness checks. */
static void
parse_tier(struct conf_diag *d, const struct conf_ynode *m,
    struct conf_tier *tr, const struct conf_tier *prev, size_t nprev)
{
	static const char *const keys[] = { "name", "min_lifetime",
	    "multiplier", NULL };
	const struct conf_ynode *v[NELEM(keys)];
	size_t i;

	if (want_kind(d, m, "tier", CONF_Y_MAP,
	    " (write { name: gold, min_lifetime: 5000, multiplier: 1.5 })") == -1)
		return;
	fields(d, m, keys, v);
	if (v[0] == NULL)
		nerr(d, m, "tier: missing 'name'");
	else if (get_str(d, v[0], "name", &tr->name) == 0) {
		if (!tier_name_ok(v[0]->text, v[0]->len))
			nerr(d, v[0], "name: 1 to %d characters, no control "
			    "characters", CONF_MAX_NAME);
		for (i = 0; i < nprev; i++)
			if (prev[i].name && strcmp(prev[i].name, tr->name) == 0)
				nerr(d, v[0], "name: duplicate tier '%s'",
				    tr->name);
	}
	if (v[1] == NULL)
		nerr(d, m, "tier: missing 'min_lifetime'");
	else if (get_number(d, v[1], "min_lifetime", tr->min_lifetime) == 0) {
		if (mpq_sgn(tr->min_lifetime) < 0)
			nerr(d, v[1], "min_lifetime: must not be negative");
		for (i = 0; i < nprev; i++)
			if (mpq_equal(prev[i].min_lifetime, tr->min_lifetime))
				nerr(d, v[1], "min_lifetime: same as tier '%s'",
				    prev[i].name ? prev[i].name : "?");
	}
	if (v[2] != NULL && get_number(d, v[2], "multiplier",
	    tr->multiplier) == 0 && mpq_sgn(tr->multiplier) < 0)
		nerr(d, v[2], "multiplier: must not be negative");
}

static void
parse_tiers(struct conf_diag *d, const struct conf_ynode *s,
    struct conf_tenant *t)
{
	struct conf_tier *a, *b;
	char *name;
	size_t i, j;

	if (want_kind(d, s, "tiers", CONF_Y_SEQ, "") == -1)
		return;
	if (s->nkids > CONF_MAX_TIERS) {
		nerr(d, s, "tiers: more than %d", CONF_MAX_TIERS);
		return;
	}
	t->tiers = conf_xcalloc(s->nkids, sizeof(*t->tiers));
	for (i = 0; i < s->nkids; i++) {
		mpq_init(t->tiers[i].min_lifetime);
		mpq_init(t->tiers[i].multiplier);
		mpq_set_ui(t->tiers[i].multiplier, 1, 1);
		t->ntiers = i + 1;
		parse_tier(d, s->kids[i], &t->tiers[i], t->tiers, i);
	}
	/* Insertion sort by min_lifetime (at most CONF_MAX_TIERS). */
	for (i = 1; i < t->ntiers; i++)
		for (j = i; j > 0; j--) {
			a = &t->tiers[j - 1];
			b = &t->tiers[j];
			if (mpq_cmp(a->min_lifetime, b->min_lifetime) <= 0)
				break;
			name = a->name;
			a->name = b->name;
			b->name = name;
			mpq_swap(a->min_lifetime, b->min_lifetime);
			mpq_swap(a->multiplier, b->multiplier);
		}
}

/* ---- tenant: rules ---- */

/* `set: { NAME: expression, ... }` */
static void
parse_set(struct conf_diag *d, const struct conf_ynode *m, struct conf_rule *r,
    const struct conf_event_type *ty)
{
	const struct conf_ynode *k;
	size_t i;

	if (want_kind(d, m, "set", CONF_Y_MAP,
	    " (write { name: expression })") == -1)
		return;
	if (m->nkids / 2 > CONF_MAX_SETS) {
		nerr(d, m, "set: more than %d variables", CONF_MAX_SETS);
		return;
	}
	r->sets = conf_xcalloc(m->nkids / 2, sizeof(*r->sets));
	r->nsets = m->nkids / 2;
	for (i = 0; i < r->nsets; i++) {
		k = m->kids[2 * i];
		r->sets[i].name = conf_xstrndup(k->text, k->len);
		want_ident(d, k, "set: bad variable name");
		get_expr(d, m->kids[2 * i + 1], r->sets[i].name, RULE_WANT_ANY,
		    ty, &r->sets[i].src, &r->sets[i].expr);
	}
}

/* `limit: { per_profile: N, per_day: N, per_month: N }` */
static void
parse_limit(struct conf_diag *d, const struct conf_ynode *m, struct conf_rule *r)
{
	static const char *const keys[] = { "per_profile", "per_day",
	    "per_month", NULL };
	const struct conf_ynode *v[NELEM(keys)];
	long *out[NELEM(keys) - 1] = { &r->per_profile, &r->per_day,
	    &r->per_month };
	size_t i;

	if (want_kind(d, m, "limit", CONF_Y_MAP,
	    " (write { per_profile: 1 })") == -1)
		return;
	fields(d, m, keys, v);
	if (v[0] == NULL && v[1] == NULL && v[2] == NULL) {
		nerr(d, m, "limit: expected per_profile, per_day or per_month");
		return;
	}
	for (i = 0; i < NELEM(out); i++)
		if (v[i] != NULL)
			get_count(d, v[i], keys[i], 1, MAX_COUNT, out[i]);
}

/* One rule; `prev` are the rules before it (duplicate ids). The names of
 * properties its expressions read are checked against its event type
 * unless the tenant allows unknown properties. */
static void
parse_rule(struct conf_diag *d, const struct conf_ynode *m,
    const struct conf_tenant *t, struct conf_rule *r,
    const struct conf_rule *prev, size_t nprev)
{
	static const char *const keys[] = { "id", "event", "when", "points",
	    "balance", "amount", "set", "limit", "stop", "tier_multiplier",
	    NULL };
	enum { K_ID, K_EVENT, K_WHEN, K_POINTS, K_BALANCE, K_AMOUNT, K_SET,
	    K_LIMIT, K_STOP, K_TIERMUL };
	const struct conf_ynode *v[NELEM(keys)];
	const struct conf_event_type *ty = NULL;
	size_t i;

	if (want_kind(d, m, "rule", CONF_Y_MAP, "") == -1)
		return;
	fields(d, m, keys, v);
	if (v[K_ID] == NULL)
		nerr(d, m, "rule: missing 'id'");
	else if (get_str(d, v[K_ID], "id", &r->id) == 0) {
		if (!rule_id_ok(v[K_ID]->text, v[K_ID]->len))
			nerr(d, v[K_ID], "id: expected [A-Za-z0-9_.-]{1,%d}",
			    CONF_MAX_NAME);
		for (i = 0; i < nprev; i++)
			if (prev[i].id && strcmp(prev[i].id, r->id) == 0) {
				nerr(d, v[K_ID], "id: duplicate rule id '%.64s'",
				    r->id);
				break;
			}
	}
	if (v[K_EVENT] == NULL)
		nerr(d, m, "rule: missing 'event'");
	else if (get_str(d, v[K_EVENT], "event", &r->event) == 0 &&
	    (ty = conf_type_find(t, r->event)) == NULL)
		nerr(d, v[K_EVENT], "event: unknown event type '%.64s' (not in "
		    "event_types)", r->event);
	if (t->allow_unknown_props)
		ty = NULL;   /* any property may come: nothing to check */
	if (v[K_WHEN] != NULL)
		get_expr(d, v[K_WHEN], "when", RULE_WANT_BOOL, ty, &r->when_src,
		    &r->when);
	if (v[K_POINTS] != NULL)
		get_expr(d, v[K_POINTS], "points", RULE_WANT_NUMBER, ty,
		    &r->points_src, &r->points);
	if (v[K_BALANCE] != NULL &&
	    get_str(d, v[K_BALANCE], "balance", &r->balance) == 0 &&
	    !ident_ok(v[K_BALANCE]->text, v[K_BALANCE]->len))
		nerr(d, v[K_BALANCE], "balance: expected a name "
		    "[A-Za-z_][A-Za-z0-9_]{0,63}");
	if (v[K_AMOUNT] != NULL)
		get_expr(d, v[K_AMOUNT], "amount", RULE_WANT_NUMBER, ty,
		    &r->amount_src, &r->amount);
	if (v[K_BALANCE] != NULL && v[K_AMOUNT] == NULL)
		nerr(d, v[K_BALANCE], "balance: needs 'amount'");
	if (v[K_AMOUNT] != NULL && v[K_BALANCE] == NULL)
		nerr(d, v[K_AMOUNT], "amount: needs 'balance'");
	if (v[K_SET] != NULL)
		parse_set(d, v[K_SET], r, ty);
	if (v[K_LIMIT] != NULL)
		parse_limit(d, v[K_LIMIT], r);
	if (v[K_STOP] != NULL)
		get_bool(d, v[K_STOP], "stop", &r->stop);
	if (v[K_TIERMUL] != NULL &&
	    get_bool(d, v[K_TIERMUL], "tier_multiplier",
	    &r->tier_multiplier) == 0 && r->tier_multiplier &&
	    v[K_POINTS] == NULL)
		nerr(d, v[K_TIERMUL], "tier_multiplier: the rule has no points");
	if (v[K_POINTS] == NULL && v[K_BALANCE] == NULL && v[K_AMOUNT] == NULL &&
	    v[K_SET] == NULL)
		nerr(d, m, "rule: no effect (give points, balance with amount, "
		    "or set)");
}

static void
parse_rules(struct conf_diag *d, const struct conf_ynode *s,
    struct conf_tenant *t)
{
	size_t i;

	if (want_kind(d, s, "rules", CONF_Y_SEQ, "") == -1)
		return;
	if (s->nkids > CONF_MAX_RULES) {
		nerr(d, s, "rules: more than %d", CONF_MAX_RULES);
		return;
	}
	t->rules = conf_xcalloc(s->nkids, sizeof(*t->rules));
	t->nrules = s->nkids;
	for (i = 0; i < t->nrules; i++)
		parse_rule(d, s->kids[i], t, &t->rules[i], t->rules, i);
}

/* ---- tenant ---- */

/* See conf_impl.h. Frees, on error: the partly built tenant. */
struct conf_tenant *
conf_tenant_build(const char *path, const char *slug,
    const struct conf_ynode *root, struct conf_diag *d)
{
	static const char *const keys[] = { "settings", "event_types", "tiers",
	    "rules", NULL };
	const struct conf_ynode *v[NELEM(keys)];
	struct conf_tenant *t;
	size_t before = d->count;

	t = conf_xcalloc(1, sizeof(*t));
	t->refs = 1;
	t->slug = conf_xstrdup(slug);
	t->path = conf_xstrdup(path);
	t->auto_create_profiles = 1;
	t->rounding = CONF_ROUND_FLOOR;
	if (root == NULL) {
		conf_diag_add(d, 0, 0, "empty file: a tenant file has "
		    "settings, event_types, tiers and rules");
		goto fail;
	}
	if (want_kind(d, root, "tenant file", CONF_Y_MAP,
	    " (with settings, event_types, tiers and rules)") == -1)
		goto fail;
	fields(d, root, keys, v);
	if (v[0] != NULL)
		parse_settings(d, v[0], t);
	if (v[1] != NULL)
		parse_types(d, v[1], t);
	if (v[2] != NULL)
		parse_tiers(d, v[2], t);
	if (v[3] != NULL)
		parse_rules(d, v[3], t);
	if (d->count != before)
		goto fail;
	return t;
fail:
	conf_tenant_free(t);
	return NULL;
}

/*
 * Drop one reference to t; at the last one free it and all it owns
 * (strings, numbers, compiled expressions). Accepts NULL and partly built
 * tenants (fields left zero by calloc).
 */
void
conf_tenant_free(struct conf_tenant *t)
{
	struct conf_prop *p;
	struct conf_rule *r;
	size_t i, j, k;

	if (t == NULL)
		return;
	if (t->refs > 1) {
		t->refs--;
		return;
	}
	for (i = 0; i < t->ntypes; i++) {
		for (j = 0; j < t->types[i].nprops; j++) {
			p = &t->types[i].props[j];
			free(p->name);
			free(p->description);
			if (p->has_min)
				mpq_clear(p->min);
			if (p->has_max)
				mpq_clear(p->max);
			for (k = 0; k < p->nenum; k++)
				free(p->enum_vals[k]);
			free(p->enum_vals);
		}
		free(t->types[i].props);
		free(t->types[i].name);
		free(t->types[i].description);
	}
	free(t->types);
	for (i = 0; i < t->ntiers; i++) {
		free(t->tiers[i].name);
		mpq_clear(t->tiers[i].min_lifetime);
		mpq_clear(t->tiers[i].multiplier);
	}
	free(t->tiers);
	for (i = 0; i < t->nrules; i++) {
		r = &t->rules[i];
		free(r->id);
		free(r->event);
		free(r->when_src);
		free(r->points_src);
		free(r->balance);
		free(r->amount_src);
		rule_expr_free(r->when);
		rule_expr_free(r->points);
		rule_expr_free(r->amount);
		for (j = 0; j < r->nsets; j++) {
			free(r->sets[j].name);
			free(r->sets[j].src);
			rule_expr_free(r->sets[j].expr);
		}
		free(r->sets);
	}
	free(t->rules);
	free(t->slug);
	free(t->path);
	free(t);
}

/* ---- rfevents.yaml ---- */

void
conf_server_default(struct conf_server *s)
{
	s->max_body_single = 65536;
	s->max_body_batch = 8388608;
	s->max_batch_items = 1000;
	s->log_level = 2;
}

/* See conf_impl.h. */
int
conf_server_build(const struct conf_ynode *root, struct conf_server *out,
    struct conf_diag *d)
{
	static const char *const keys[] = { "max_body_single", "max_body_batch",
	    "max_batch_items", "log_level", NULL };
	const struct conf_ynode *v[NELEM(keys)];
	size_t before = d->count;
	long n;

	conf_server_default(out);
	if (root == NULL)
		return 0;
	if (want_kind(d, root, "rfevents.yaml", CONF_Y_MAP, "") == -1)
		return -1;
	fields(d, root, keys, v);
	if (v[0] != NULL && get_count(d, v[0], keys[0], 1, MAX_BODY, &n) == 0)
		out->max_body_single = (size_t)n;
	if (v[1] != NULL && get_count(d, v[1], keys[1], 1, MAX_BODY, &n) == 0)
		out->max_body_batch = (size_t)n;
	if (v[2] != NULL && get_count(d, v[2], keys[2], 1, 10000, &n) == 0)
		out->max_batch_items = (size_t)n;
	if (v[3] != NULL)
		get_choice(d, v[3], keys[3], log_level_name,
		    NELEM(log_level_name), &out->log_level);
	return d->count == before ? 0 : -1;
}
