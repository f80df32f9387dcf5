/*
 * Unit tests of conf/: tenant files (valid, every kind of error with its
 * file:line:col), limits, rfevents.yaml, folder loading, the reload cache
 * of conf_current() (in-place edits, rename, broken and fixed files,
 * deletions) and the shipped demo tenant. YAML snippets are written to
 * files under a mkdtemp() folder that is removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "conf/conf.h"
#include "rules/rules.h"
#include "tests/unit/t.h"

static char tmpdir[64];

/* Write text to path (truncating); returns 0 or -1. */
static int
write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL)
		return -1;
	if (fwrite(text, 1, len, f) != len) {
		fclose(f);
		return -1;
	}
	return fclose(f) == 0 ? 0 : -1;
}

/* Overwrite the start of an existing file in place (same inode). */
static int
rewrite_in_place(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	size_t len = strlen(text);
	int ok;

	if (fd == -1)
		return -1;
	ok = write(fd, text, len) == (ssize_t)len;
	return close(fd) == 0 && ok ? 0 : -1;
}

/* tmpdir/name in buf. */
static const char *
tpath(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s/%s", tmpdir, name);
	return buf;
}

/* Load `yaml` as tenant file `name` in tmpdir; errors to *errs, *n. */
static struct conf_tenant *
load_text(const char *name, const char *yaml, size_t len,
    struct conf_error **errs, size_t *n)
{
	char path[256];

	tpath(path, sizeof(path), name);
	if (write_file(path, yaml, len) == -1) {
		T_OK(0, "cannot write %s", path);
		return NULL;
	}
	*errs = NULL;
	*n = 0;
	return conf_tenant_load(path, errs, n);
}

/* 1 if some error is at line:col (-1: any) and contains sub. */
static int
has_error(const struct conf_error *e, size_t n, int line, int col,
    const char *sub)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((line == -1 || e[i].line == line) &&
		    (col == -1 || e[i].col == col) &&
		    strstr(e[i].msg, sub) != NULL)
			return 1;
	return 0;
}

/* All errors as one line for failure messages. */
static const char *
errors_text(const struct conf_error *e, size_t n)
{
	static char buf[2048];
	char one[512];
	size_t i;

	buf[0] = '\0';
	for (i = 0; i < n; i++) {
		conf_error_fmt(&e[i], one, sizeof(one));
		strncat(buf, one, sizeof(buf) - strlen(buf) - 1);
		strncat(buf, " | ", sizeof(buf) - strlen(buf) - 1);
	}
	return buf;
}

/* ---- a valid tenant ---- */

static const char valid_yaml[] =
    "# a comment\n"
    "settings:\n"
    "  auto_create_profiles: false\n"
    "  default_country_code: \"+44\"\n"
    "  unknown_properties: reject\n"
    "  rounding: round\n"
    "event_types:\n"
    "  buy:\n"
    "    description: A purchase\n"
    "    properties:\n"
    "      amount: { type: number, required: true, min: -1.5, max: 1e3 }\n"
    "      sku: { type: string, max_length: 0, enum: [a, \"b c\", 7] }\n"
    "      n: { type: integer, filterable: true, derivable: true, "
    "description: count }\n"
    "      ok: { type: boolean, required: false }\n"
    "      at: { type: timestamp }\n"
    "  ping:\n"
    "    properties: {}\n"
    "  bare: {}\n"
    "tiers:\n"
    "  - { name: gold, min_lifetime: 5000, multiplier: 1.5 }\n"
    "  - { name: bronze, min_lifetime: 0 }\n"
    "  - { name: \"Silver Club\", min_lifetime: 1000.5, multiplier: 1.25 }\n"
    "rules:\n"
    "  - id: r.1-x_y\n"
    "    event: buy\n"
    "    when: 'properties.amount > 0'\n"
    "    points: \"properties.amount * 2\"\n"
    "    tier_multiplier: true\n"
    "  - id: bal\n"
    "    event: ping\n"
    "    balance: stamps\n"
    "    amount: 1\n"
    "    limit: { per_profile: 3, per_day: 2, per_month: 10 }\n"
    "    stop: True\n"
    "  - id: vars\n"
    "    event: buy\n"
    "    set:\n"
    "      total: coalesce(profile.vars.total, 0) + properties.amount\n"
    "      flag: true\n"
    "      note: |\n"
    "        \"multi\"\n";

/* 1 if q equals the decimal text s (a fraction "n/d" or an integer). */
static int
q_is(const mpq_t q, const char *s)
{
	mpq_t w;
	int eq;

	mpq_init(w);
	if (mpq_set_str(w, s, 10) != 0) {
		mpq_clear(w);
		return 0;
	}
	mpq_canonicalize(w);
	eq = mpq_equal(q, w);
	mpq_clear(w);
	return eq;
}

/* Hex SHA-256 of buf, as the tenant version must be. */
static void
sha256_hex(const char *buf, size_t len, char out[65])
{
	unsigned char md[32];
	size_t i;

	EVP_Digest(buf, len, md, NULL, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void
test_valid(void)
{
	struct conf_error *errs;
	struct conf_tenant *t;
	const struct conf_event_type *ty;
	const struct conf_prop *p;
	const struct conf_rule *r;
	char hex[65], path[256];
	size_t n;

	t = load_text("shop-1.yaml", valid_yaml, strlen(valid_yaml), &errs, &n);
	T_OK(t != NULL && n == 0, "valid tenant: %s", errors_text(errs, n));
	conf_errors_free(errs, n);
	if (t == NULL)
		return;
	T_OK(strcmp(t->slug, "shop-1") == 0, "slug %s", t->slug);
	T_OK(strcmp(t->path, tpath(path, sizeof(path), "shop-1.yaml")) == 0,
	    "path %s", t->path);
	sha256_hex(valid_yaml, strlen(valid_yaml), hex);
	T_OK(strcmp(t->version, hex) == 0, "version %s", t->version);
	T_OK(t->auto_create_profiles == 0, "auto_create_profiles");
	T_OK(strcmp(t->default_cc, "44") == 0, "default_cc %s", t->default_cc);
	T_OK(t->allow_unknown_props == 0, "unknown_properties");
	T_OK(t->rounding == CONF_ROUND_ROUND, "rounding");

	T_OK(t->ntypes == 3, "ntypes %zu", t->ntypes);
	ty = conf_type_find(t, "buy");
	T_OK(ty != NULL && ty->nprops == 5, "buy");
	T_OK(conf_type_find(t, "nope") == NULL, "type nope");
	T_OK(conf_type_find(t, "ping") != NULL &&
	    conf_type_find(t, "ping")->nprops == 0, "ping");
	T_OK(conf_type_find(t, "bare") != NULL &&
	    conf_type_find(t, "bare")->nprops == 0, "bare");
	if (ty != NULL && ty->nprops == 5) {
		T_OK(strcmp(ty->description, "A purchase") == 0, "type description");
		p = &ty->props[0];
		T_OK(strcmp(p->name, "amount") == 0 && p->type == CONF_PT_NUMBER &&
		    p->required && p->has_min && p->has_max &&
		    q_is(p->min, "-3/2") && q_is(p->max, "1000") &&
		    p->max_length == -1 && p->enum_vals == NULL, "amount");
		p = &ty->props[1];
		T_OK(strcmp(p->name, "sku") == 0 && p->type == CONF_PT_STRING &&
		    !p->required && !p->has_min && p->max_length == 0 &&
		    p->nenum == 3 && strcmp(p->enum_vals[0], "a") == 0 &&
		    strcmp(p->enum_vals[1], "b c") == 0 &&
		    strcmp(p->enum_vals[2], "7") == 0, "sku");
		p = &ty->props[2];
		T_OK(p->type == CONF_PT_INTEGER && p->filterable && p->derivable &&
		    strcmp(p->description, "count") == 0, "n");
		T_OK(ty->props[3].type == CONF_PT_BOOLEAN &&
		    ty->props[3].required == 0, "ok");
		T_OK(ty->props[4].type == CONF_PT_TIMESTAMP &&
		    ty->props[4].description == NULL, "at");
	}

	T_OK(t->ntiers == 3, "ntiers");
	if (t->ntiers == 3) {
		T_OK(strcmp(t->tiers[0].name, "bronze") == 0 &&
		    q_is(t->tiers[0].min_lifetime, "0") &&
		    q_is(t->tiers[0].multiplier, "1"), "tier 0");
		T_OK(strcmp(t->tiers[1].name, "Silver Club") == 0 &&
		    q_is(t->tiers[1].min_lifetime, "2001/2") &&
		    q_is(t->tiers[1].multiplier, "5/4"), "tier 1");
		T_OK(strcmp(t->tiers[2].name, "gold") == 0 &&
		    q_is(t->tiers[2].min_lifetime, "5000") &&
		    q_is(t->tiers[2].multiplier, "3/2"), "tier 2");
	}

	T_OK(t->nrules == 3, "nrules");
	if (t->nrules == 3) {
		r = &t->rules[0];
		T_OK(strcmp(r->id, "r.1-x_y") == 0 && strcmp(r->event, "buy") == 0 &&
		    strcmp(r->when_src, "properties.amount > 0") == 0 &&
		    r->when != NULL &&
		    strcmp(r->points_src, "properties.amount * 2") == 0 &&
		    r->points != NULL && r->tier_multiplier && !r->stop &&
		    r->balance == NULL && r->nsets == 0 && r->per_profile == 0,
		    "rule 0");
		r = &t->rules[1];
		T_OK(strcmp(r->balance, "stamps") == 0 &&
		    strcmp(r->amount_src, "1") == 0 && r->amount != NULL &&
		    r->points == NULL && r->when == NULL && r->per_profile == 3 &&
		    r->per_day == 2 && r->per_month == 10 && r->stop &&
		    !r->tier_multiplier, "rule 1");
		r = &t->rules[2];
		T_OK(r->nsets == 3 && strcmp(r->sets[0].name, "total") == 0 &&
		    strcmp(r->sets[0].src, "coalesce(profile.vars.total, 0) + "
		    "properties.amount") == 0 && r->sets[0].expr != NULL &&
		    strcmp(r->sets[1].name, "flag") == 0 &&
		    strcmp(r->sets[1].src, "true") == 0 &&
		    strcmp(r->sets[2].src, "\"multi\"\n") == 0, "rule 2");
	}
	conf_tenant_free(t);
}

/* ---- errors ---- */

/* Event types used by the rule rows: 4 lines, so "rules:" is line 5. */
#define TYPES "event_types:\n  buy:\n    properties:\n" \
    "      amount: { type: number }\n"
#define PROP(x) "event_types:\n  a:\n    properties:\n      " x "\n"

static const struct {
	int         line;       /* __LINE__ of the row */
	const char *yaml;
	int         eline, ecol;
	const char *msg;        /* substring of the message */
} error_rows[] = {
	/* top level and settings */
	{ __LINE__, "foo: 1\n", 1, 1, "unknown key 'foo'" },
	{ __LINE__, "settings:\n  colour: red\n", 2, 3, "unknown key 'colour'" },
	{ __LINE__, "settings:\n  auto_create_profiles: yes\n", 2, 25,
	    "auto_create_profiles: expected true or false" },
	{ __LINE__, "settings:\n  auto_create_profiles: \"true\"\n", 2, 25,
	    "expected true or false" },
	{ __LINE__, "settings:\n  rounding: up\n", 2, 13,
	    "rounding: expected one of floor, round, ceil" },
	{ __LINE__, "settings:\n  unknown_properties: keep\n", 2, 23,
	    "expected one of reject, allow" },
	{ __LINE__, "settings:\n  default_country_code: \"0044\"\n", 2, 25,
	    "country calling code" },
	{ __LINE__, "settings:\n  default_country_code: [1]\n", 2, 25,
	    "country calling code" },
	{ __LINE__, "settings: [1]\n", 1, 11,
	    "settings: expected a mapping, not a sequence" },
	{ __LINE__, "settings:\n", 1, 10, "settings: expected a mapping, not null" },
	{ __LINE__, "- a\n", 1, 1, "tenant file: expected a mapping" },
	{ __LINE__, "just text\n", 1, 1, "tenant file: expected a mapping" },
	{ __LINE__, "", 0, 0, "empty file" },
	{ __LINE__, "# only a comment\n", 0, 0, "empty file" },
	/* event types and properties */
	{ __LINE__, "event_types: [a]\n", 1, 14, "event_types: expected a mapping" },
	{ __LINE__, "event_types:\n  a:\n    propertys: {}\n", 3, 5,
	    "unknown key 'propertys'" },
	{ __LINE__, "event_types:\n  9a: { properties: {} }\n", 2, 3,
	    "bad event type name '9a'" },
	{ __LINE__, "event_types:\n  a.b: { properties: {} }\n", 2, 3,
	    "bad event type name 'a.b'" },
	{ __LINE__, "event_types:\n  a: [1]\n", 2, 6,
	    "event type: expected a mapping, not a sequence" },
	{ __LINE__, "event_types:\n  a:\n    description: [x]\n", 3, 18,
	    "description: expected a string, not a sequence" },
	{ __LINE__, "event_types:\n  a:\n    properties:\n", 3, 16,
	    "properties: expected a mapping, not null (write {} for none)" },
	{ __LINE__, PROP("x: { type: string, requird: true }"), 4, 26,
	    "unknown key 'requird'" },
	{ __LINE__, PROP("x: { required: true }"), 4, 10,
	    "property: missing 'type'" },
	{ __LINE__, PROP("x: string"), 4, 10, "property: expected a mapping" },
	{ __LINE__, PROP("x: { type: float }"), 4, 18,
	    "type: expected one of string, number, integer, boolean, timestamp" },
	{ __LINE__, PROP("x: { type: string, min: 0 }"), 4, 31,
	    "only number and integer properties have a minimum" },
	{ __LINE__, PROP("x: { type: boolean, max: 0 }"), 4, 32,
	    "only number and integer properties have a maximum" },
	{ __LINE__, PROP("x: { type: number, min: abc }"), 4, 31,
	    "min: expected a number" },
	{ __LINE__, PROP("x: { type: number, min: \"5\" }"), 4, 31,
	    "min: expected a number" },
	{ __LINE__, PROP("x: { type: number, min: .5 }"), 4, 31,
	    "min: expected a number" },
	{ __LINE__, PROP("x: { type: number, min: 1e99999 }"), 4, 31,
	    "min: expected a number" },
	{ __LINE__, PROP("x: { type: number, min: 5, max: 1 }"), 4, 39,
	    "max: less than min" },
	{ __LINE__, PROP("x: { type: string, max_length: -1 }"), 4, 38,
	    "max_length: expected a whole number" },
	{ __LINE__, PROP("x: { type: string, max_length: 1.5 }"), 4, 38,
	    "max_length: expected a whole number" },
	{ __LINE__, PROP("x: { type: string, max_length: 99999999999999999999 }"),
	    4, 38, "max_length: must be from 0 to" },
	{ __LINE__, PROP("x: { type: number, max_length: 5 }"), 4, 38,
	    "only string properties have a maximum length" },
	{ __LINE__, PROP("x: { type: string, enum: USD }"), 4, 32,
	    "enum: expected a sequence" },
	{ __LINE__, PROP("x: { type: string, enum: [] }"), 4, 32,
	    "enum: expected 1 to 1000 values" },
	{ __LINE__, PROP("x: { type: string, enum: [a, b, a] }"), 4, 39,
	    "enum: duplicate value 'a'" },
	{ __LINE__, PROP("x: { type: string, enum: [{a: 1}] }"), 4, 33,
	    "enum: expected a string, not a mapping" },
	{ __LINE__, PROP("x: { type: string, enum: [a, ~] }"), 4, 36,
	    "enum: expected a string, not null" },
	{ __LINE__, PROP("x: { type: integer, enum: [1] }"), 4, 33,
	    "only string properties have an enum" },
	{ __LINE__, PROP("2x: { type: string }"), 4, 7,
	    "bad property name '2x'" },
	{ __LINE__, PROP("x: { type: string, required: yes }"), 4, 36,
	    "required: expected true or false" },
	{ __LINE__, PROP("x: { type: string, filterable: 1 }"), 4, 38,
	    "filterable: expected true or false" },
	{ __LINE__, PROP("x: { type: string, derivable: no }"), 4, 37,
	    "derivable: expected true or false" },
	{ __LINE__, "event_types:\n  a:\n    description: \"x\\0y\"\n", 3, 18,
	    "description: NUL character" },
	/* tiers */
	{ __LINE__, "tiers: {a: 1}\n", 1, 8, "tiers: expected a sequence" },
	{ __LINE__, "tiers:\n  - { name: a, min_lifetime: 0, rank: 1 }\n", 2, 33,
	    "unknown key 'rank'" },
	{ __LINE__, "tiers:\n  - { min_lifetime: 0 }\n", 2, 5,
	    "tier: missing 'name'" },
	{ __LINE__, "tiers:\n  - { name: a }\n", 2, 5,
	    "tier: missing 'min_lifetime'" },
	{ __LINE__, "tiers:\n  - { name: a, min_lifetime: -1 }\n", 2, 30,
	    "min_lifetime: must not be negative" },
	{ __LINE__, "tiers:\n  - { name: a, min_lifetime: x }\n", 2, 30,
	    "min_lifetime: expected a number" },
	{ __LINE__, "tiers:\n  - { name: a, min_lifetime: 0 }\n"
	    "  - { name: a, min_lifetime: 5 }\n", 3, 13,
	    "name: duplicate tier 'a'" },
	{ __LINE__, "tiers:\n  - { name: a, min_lifetime: 0 }\n"
	    "  - { name: b, min_lifetime: 0.0 }\n", 3, 30,
	    "min_lifetime: same as tier 'a'" },
	{ __LINE__, "tiers:\n  - { name: a, min_lifetime: 0, multiplier: -2 }\n",
	    2, 45, "multiplier: must not be negative" },
	{ __LINE__, "tiers:\n  - { name: a, min_lifetime: 0, multiplier: \"1.5\" }\n",
	    2, 45, "multiplier: expected a number" },
	{ __LINE__, "tiers:\n  - gold\n", 2, 5, "tier: expected a mapping" },
	{ __LINE__, "tiers:\n  - { name: \"a\\tb\", min_lifetime: 0 }\n", 2, 13,
	    "no control characters" },
	{ __LINE__, "tiers:\n  - { name: \"\", min_lifetime: 0 }\n", 2, 13,
	    "name: 1 to 64 characters" },
	/* rules */
	{ __LINE__, "rules: {}\n", 1, 8, "rules: expected a sequence" },
	{ __LINE__, "rules:\n  - r\n", 2, 5, "rule: expected a mapping" },
	{ __LINE__, TYPES "rules:\n  - id: r1\n    event: buy\n    points: 1\n"
	    "    colour: red\n", 9, 5, "unknown key 'colour'" },
	{ __LINE__, TYPES "rules:\n  - event: buy\n    points: 1\n", 6, 5,
	    "rule: missing 'id'" },
	{ __LINE__, TYPES "rules:\n  - id: a b\n    event: buy\n    points: 1\n",
	    6, 9, "id: expected [A-Za-z0-9_.-]{1,64}" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, points: 1 }\n"
	    "  - { id: r, event: buy, points: 2 }\n", 7, 11,
	    "id: duplicate rule id 'r'" },
	{ __LINE__, TYPES "rules:\n  - { id: r, points: 1 }\n", 6, 5,
	    "rule: missing 'event'" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: sell, points: 1 }\n", 6, 21,
	    "event: unknown event type 'sell'" },
	{ __LINE__, "rules:\n  - { id: r, event: sell, points: 1 }\n", 2, 21,
	    "event: unknown event type 'sell'" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy }\n", 6, 5,
	    "rule: no effect" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, stop: true }\n", 6, 5,
	    "rule: no effect" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, balance: stamps }\n",
	    6, 35, "balance: needs 'amount'" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, amount: 1 }\n", 6, 34,
	    "amount: needs 'balance'" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, balance: 1x, amount: 1 }\n",
	    6, 35, "balance: expected a name" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, set: [a] }\n", 6, 31,
	    "set: expected a mapping" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, set: { 1x: 1 } }\n",
	    6, 33, "set: bad variable name '1x'" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, set: { x: { y: 1 } } }\n",
	    6, 36, "x: expected an expression, not a mapping" },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n    set:\n      x:\n",
	    9, 9, "x: expected an expression, not null" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, points: 1, "
	    "limit: { per_week: 1 } }\n", 6, 46, "unknown key 'per_week'" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, points: 1, "
	    "limit: { per_day: 0 } }\n", 6, 55, "per_day: must be from 1 to" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, points: 1, "
	    "limit: {} }\n", 6, 44,
	    "limit: expected per_profile, per_day or per_month" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, points: 1, "
	    "limit: { per_month: 99999999999999999999 } }\n", 6, 57,
	    "per_month: must be from 1 to" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, points: 1, "
	    "limit: 1 }\n", 6, 44, "limit: expected a mapping" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, points: 1, stop: 1 }\n",
	    6, 43, "stop: expected true or false" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, set: { x: 1 }, "
	    "tier_multiplier: true }\n", 6, 58,
	    "tier_multiplier: the rule has no points" },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n    when:\n"
	    "    points: 1\n", 8, 10, "when: expected an expression, not null" },
	{ __LINE__, TYPES "rules:\n  - { id: r, event: buy, when: [1], points: 1 }\n",
	    6, 32, "when: expected an expression, not a sequence" },
	/* YAML itself */
	{ __LINE__, "settings:\n  rounding: floor\n  rounding: ceil\n", 3, 3,
	    "duplicate key 'rounding'" },
	{ __LINE__, "tiers: []\nrules: []\ntiers: []\n", 3, 1,
	    "duplicate key 'tiers'" },
	{ __LINE__, "settings: &s\n  rounding: floor\nrules: *s\n", 1, 11,
	    "anchors and aliases are not supported" },
	{ __LINE__, "settings: &s\n  rounding: floor\nrules: *s\n", 3, 8,
	    "aliases are not supported (*s)" },
	{ __LINE__, "settings:\n  rounding: !!str floor\n", 2, 13,
	    "tags are not supported" },
	{ __LINE__, "x: [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]\n", 1, 19,
	    "nesting deeper than 16 levels" },
	{ __LINE__, "settings: {}\n---\nrules: []\n", 2, 1,
	    "only one YAML document per file" },
	{ __LINE__, "settings: [a, b\n", 2, 1, "did not find expected" },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n"
	    "    points: a > 1 ? 2 : 3\n", 8, 23,
	    "mapping values are not allowed in this context (quote a value" },
	{ __LINE__, "? [a]\n: 1\n", 1, 3, "mapping keys must be scalars" },
	{ __LINE__, "settings:\n  rounding: \xff\n", 2, 13, "invalid" },
	{ __LINE__, "settings:\n\trounding: floor\n", 2, 1,
	    "cannot start any token" },
};

static void
test_errors(void)
{
	struct conf_error *errs;
	struct conf_tenant *t;
	size_t i, n;

	for (i = 0; i < sizeof(error_rows) / sizeof(error_rows[0]); i++) {
		t = load_text("t.yaml", error_rows[i].yaml,
		    strlen(error_rows[i].yaml), &errs, &n);
		T_CHECK(error_rows[i].line, t == NULL, "loaded despite errors");
		T_CHECK(error_rows[i].line, has_error(errs, n, error_rows[i].eline,
		    error_rows[i].ecol, error_rows[i].msg),
		    "want %d:%d '%s', got: %s", error_rows[i].eline,
		    error_rows[i].ecol, error_rows[i].msg, errors_text(errs, n));
		T_CHECK(error_rows[i].line, n > 0 && strstr(errs[0].file,
		    "/t.yaml") != NULL, "error file name");
		conf_tenant_free(t);
		conf_errors_free(errs, n);
	}
}

/* Expression errors from rules/expr.c, placed inside the YAML line: the
 * node's column, plus 1 for a quoted scalar, plus the column inside the
 * expression; a block scalar reports its start. Needs the real
 * rule_expr_compile() (rules/expr.c), which reports the column of an
 * unexpected character and of an unknown path. */
static const struct {
	int         line;
	const char *yaml;
	int         eline, ecol;
	const char *msg;
} expr_rows[] = {
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n    points: 1 + @\n",
	    8, 17, "points: " },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n    points: \"1 + @\"\n",
	    8, 18, "points: " },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n    points: '1 + @'\n",
	    8, 18, "points: " },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n    points: |\n"
	    "      1 + @\n", 8, 13, "points: " },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n"
	    "    when: \"\\x41 + @\"\n", 8, 11, "when: " },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n    when: 1 + 2\n",
	    8, -1, "when: " },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n    points: 1\n"
	    "    set: { x: nothing.here }\n", 9, 15, "x: " },
	/* a property the event type does not have (unknown_properties: reject) */
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n"
	    "    points: properties.amont * 2\n", 8, 13,
	    "points: event type 'buy' has no property 'amont'" },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n"
	    "    when: \"properties.amount > 1 && has(properties.x)\"\n", 8, 41,
	    "when: event type 'buy' has no property 'x'" },
	{ __LINE__, TYPES "rules:\n  - id: r\n    event: buy\n    balance: b\n"
	    "    amount: properties.y\n", 9, 13,
	    "amount: event type 'buy' has no property 'y'" },
};

static void
test_expr_errors(void)
{
	static const char allow[] = "settings: { unknown_properties: allow }\n"
	    TYPES "rules:\n  - { id: r, event: buy, points: properties.zz }\n";
	struct conf_error *errs;
	struct conf_tenant *t;
	size_t i, n;

	for (i = 0; i < sizeof(expr_rows) / sizeof(expr_rows[0]); i++) {
		t = load_text("t.yaml", expr_rows[i].yaml,
		    strlen(expr_rows[i].yaml), &errs, &n);
		T_CHECK(expr_rows[i].line, t == NULL, "loaded despite errors");
		T_CHECK(expr_rows[i].line, has_error(errs, n, expr_rows[i].eline,
		    expr_rows[i].ecol, expr_rows[i].msg),
		    "want %d:%d '%s', got: %s", expr_rows[i].eline,
		    expr_rows[i].ecol, expr_rows[i].msg, errors_text(errs, n));
		conf_tenant_free(t);
		conf_errors_free(errs, n);
	}
	/* With unknown_properties: allow, any property name may be read. */
	t = load_text("t.yaml", allow, strlen(allow), &errs, &n);
	T_OK(t != NULL && t->allow_unknown_props, "allow: %s",
	    errors_text(errs, n));
	conf_tenant_free(t);
	conf_errors_free(errs, n);
}

/* Several errors in one file are all reported. */
static void
test_many_errors(void)
{
	static const char yaml[] = "settings:\n  rounding: up\n  colour: red\n"
	    "tiers:\n  - { name: a }\nwhat: 1\n";
	struct conf_error *errs;
	struct conf_tenant *t;
	size_t n;

	t = load_text("t.yaml", yaml, strlen(yaml), &errs, &n);
	T_OK(t == NULL && n == 4 && has_error(errs, n, 2, 13, "rounding") &&
	    has_error(errs, n, 3, 3, "colour") &&
	    has_error(errs, n, 5, 5, "min_lifetime") &&
	    has_error(errs, n, 6, 1, "what"), "4 errors: %s",
	    errors_text(errs, n));
	conf_errors_free(errs, n);
}

/* ---- limits ---- */

/* A growable string for generated YAML. */
struct sbuf {
	char   *s;
	size_t  len, cap;
};

static void
sb_add(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0,
		    fmt, ap);
		va_end(ap);
		if (n >= 0 && b->s && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		b->cap = b->cap * 2 + (size_t)n + 64;
		b->s = realloc(b->s, b->cap);
		if (b->s == NULL)
			abort();
	}
}

static void
test_limits(void)
{
	static const struct {
		int         line;
		int         what;     /* 0 types, 1 props, 2 rules, 3 enum, 4 tiers */
		int         count;
		const char *msg;      /* NULL: must load */
	} rows[] = {
		{ __LINE__, 0, 200, NULL },
		{ __LINE__, 0, 201, "event_types: more than 200" },
		{ __LINE__, 1, 200, NULL },
		{ __LINE__, 1, 201, "properties: more than 200" },
		{ __LINE__, 2, 1000, NULL },
		{ __LINE__, 2, 1001, "rules: more than 1000" },
		{ __LINE__, 3, 1000, NULL },
		{ __LINE__, 3, 1001, "enum: expected 1 to 1000 values" },
		{ __LINE__, 4, 100, NULL },
		{ __LINE__, 4, 101, "tiers: more than 100" },
	};
	struct sbuf b;
	struct conf_error *errs;
	struct conf_tenant *t;
	size_t i, n;
	int k;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		memset(&b, 0, sizeof(b));
		sb_add(&b, "event_types:\n  e:\n    properties:%s\n",
		    rows[i].what == 1 || rows[i].what == 3 ? "" : " {}");
		if (rows[i].what == 1)
			for (k = 0; k < rows[i].count; k++)
				sb_add(&b, "      p%d: { type: string }\n", k);
		if (rows[i].what == 3) {
			sb_add(&b, "      p: { type: string, enum: [");
			for (k = 0; k < rows[i].count; k++)
				sb_add(&b, "%sv%d", k ? ", " : "", k);
			sb_add(&b, "] }\n");
		}
		if (rows[i].what == 0)
			for (k = 1; k < rows[i].count; k++)
				sb_add(&b, "  e%d: { properties: {} }\n", k);
		if (rows[i].what == 2) {
			sb_add(&b, "rules:\n");
			for (k = 0; k < rows[i].count; k++)
				sb_add(&b, "  - { id: r%d, event: e, points: 1 }\n", k);
		}
		if (rows[i].what == 4) {
			sb_add(&b, "tiers:\n");
			for (k = 0; k < rows[i].count; k++)
				sb_add(&b, "  - { name: t%d, min_lifetime: %d }\n", k, k);
		}
		t = load_text("t.yaml", b.s, b.len, &errs, &n);
		if (rows[i].msg == NULL)
			T_CHECK(rows[i].line, t != NULL && n == 0, "must load: %s",
			    errors_text(errs, n));
		else
			T_CHECK(rows[i].line, t == NULL && has_error(errs, n,
			    -1, -1, rows[i].msg),
			    "want '%s', got: %s", rows[i].msg, errors_text(errs, n));
		conf_tenant_free(t);
		conf_errors_free(errs, n);
		free(b.s);
	}

	/* Depth 16 is fine (only the unknown key is reported). */
	{
		static const char deep[] = "x: [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]\n";

		t = load_text("t.yaml", deep, strlen(deep), &errs, &n);
		T_OK(t == NULL && n == 1 && has_error(errs, n, 1, 1,
		    "unknown key 'x'"), "depth 16: %s", errors_text(errs, n));
		conf_errors_free(errs, n);
	}

	/* 1 MiB: a comment-padded valid file loads; one byte more fails. */
	memset(&b, 0, sizeof(b));
	sb_add(&b, "event_types: {}\n");
	while (b.len < 1024 * 1024 - 80)
		sb_add(&b, "# %070d\n", 0);
	while (b.len < 1024 * 1024)
		sb_add(&b, "\n");
	t = load_text("t.yaml", b.s, b.len, &errs, &n);
	T_OK(t != NULL && n == 0 && b.len == 1024 * 1024, "1 MiB file: %s",
	    errors_text(errs, n));
	conf_tenant_free(t);
	conf_errors_free(errs, n);
	sb_add(&b, "\n");
	t = load_text("t.yaml", b.s, b.len, &errs, &n);
	T_OK(t == NULL && has_error(errs, n, 0, 0, "file larger than"),
	    "1 MiB + 1: %s", errors_text(errs, n));
	conf_errors_free(errs, n);
	free(b.s);

	/* Many errors are capped. */
	memset(&b, 0, sizeof(b));
	for (k = 0; k < 200; k++)
		sb_add(&b, "k%d: 1\n", k);
	t = load_text("t.yaml", b.s, b.len, &errs, &n);
	T_OK(t == NULL && n == 51 && strstr(errs[50].msg, "too many errors"),
	    "error cap: %zu", n);
	conf_errors_free(errs, n);
	free(b.s);
}

/* ---- file names ---- */

static void
test_names(void)
{
	static const struct {
		int         line;
		const char *name;
		int         ok;
	} rows[] = {
		{ __LINE__, "acme.yaml", 1 },
		{ __LINE__, "0-a_b.yaml", 1 },
		{ __LINE__, "a234567890123456789012345678901234567890123456789012345678901234.yaml", 1 },
		{ __LINE__, "a2345678901234567890123456789012345678901234567890123456789012345.yaml", 0 },
		{ __LINE__, "Acme.yaml", 0 },
		{ __LINE__, "-acme.yaml", 0 },
		{ __LINE__, "_acme.yaml", 0 },
		{ __LINE__, "ac me.yaml", 0 },
		{ __LINE__, "ac.me.yaml", 0 },
		{ __LINE__, "acme.yml", 0 },
		{ __LINE__, "acme", 0 },
		{ __LINE__, ".yaml", 0 },
	};
	static const char yaml[] = "event_types: {}\n";
	struct conf_error *errs;
	struct conf_tenant *t;
	char path[512];
	size_t i, n;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		t = load_text(rows[i].name, yaml, strlen(yaml), &errs, &n);
		if (rows[i].ok)
			T_CHECK(rows[i].line, t != NULL && n == 0 &&
			    strncmp(t->slug, rows[i].name, strlen(t->slug)) == 0 &&
			    strlen(t->slug) + 5 == strlen(rows[i].name),
			    "name %s: %s", rows[i].name, errors_text(errs, n));
		else
			T_CHECK(rows[i].line, t == NULL && has_error(errs, n, 0, 0,
			    "bad file name"), "name %s: %s", rows[i].name,
			    errors_text(errs, n));
		conf_tenant_free(t);
		conf_errors_free(errs, n);
		unlink(tpath(path, sizeof(path), rows[i].name));
	}
	/* Missing file and a folder. */
	errs = NULL;
	n = 0;
	t = conf_tenant_load(tpath(path, sizeof(path), "none.yaml"), &errs, &n);
	T_OK(t == NULL && has_error(errs, n, 0, 0, "cannot open"), "missing: %s",
	    errors_text(errs, n));
	conf_errors_free(errs, n);
	errs = NULL;
	n = 0;
	tpath(path, sizeof(path), "dir.yaml");
	mkdir(path, 0700);
	t = conf_tenant_load(path, &errs, &n);
	T_OK(t == NULL && has_error(errs, n, 0, 0, "not a regular file"),
	    "folder: %s", errors_text(errs, n));
	conf_errors_free(errs, n);
	rmdir(path);
}

/* ---- folders: conf_load() and rfevents.yaml ---- */

/* Make tmpdir/name/ with tenants/ inside; path in dir. */
static void
make_conf_dir(char *dir, size_t size, const char *name)
{
	char sub[512];

	snprintf(dir, size, "%s/%s", tmpdir, name);
	mkdir(dir, 0700);
	snprintf(sub, sizeof(sub), "%s/tenants", dir);
	mkdir(sub, 0700);
}

/* Write dir/rel with text. */
static void
put(const char *dir, const char *rel, const char *text)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	T_OK(write_file(path, text, strlen(text)) == 0, "write %s", path);
}

static void
del(const char *dir, const char *rel)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	T_OK(unlink(path) == 0, "unlink %s", path);
}

static void
test_server(void)
{
	static const struct {
		int         line;
		const char *yaml;
		size_t      single, batch, items;
		int         level;
		const char *err;    /* NULL: no error */
	} rows[] = {
		{ __LINE__, "", 65536, 8388608, 1000, 2, NULL },
		{ __LINE__, "# nothing\n", 65536, 8388608, 1000, 2, NULL },
		{ __LINE__, "max_body_single: 1024\nmax_body_batch: 2048\n"
		    "max_batch_items: 10000\nlog_level: debug\n",
		    1024, 2048, 10000, 3, NULL },
		{ __LINE__, "log_level: error\nmax_batch_items: 1\n",
		    65536, 8388608, 1, 0, NULL },
		{ __LINE__, "log_level: warn\n", 65536, 8388608, 1000, 1, NULL },
		{ __LINE__, "max_batch_items: 0\n", 65536, 8388608, 1000, 2,
		    "1:18: max_batch_items: must be from 1 to 10000" },
		{ __LINE__, "max_batch_items: 10001\n", 65536, 8388608, 1000, 2,
		    "1:18: max_batch_items: must be from 1 to 10000" },
		{ __LINE__, "max_body_single: 64k\n", 65536, 8388608, 1000, 2,
		    "1:18: max_body_single: expected a whole number" },
		{ __LINE__, "max_body_batch: -1\n", 65536, 8388608, 1000, 2,
		    "1:17: max_body_batch: expected a whole number" },
		{ __LINE__, "log_level: verbose\n", 65536, 8388608, 1000, 2,
		    "1:12: log_level: expected one of error, warn, info, debug" },
		{ __LINE__, "max_body_single: 1024\ncolour: red\n", 65536, 8388608,
		    1000, 2, "2:1: unknown key 'colour'" },
		{ __LINE__, "[1]\n", 65536, 8388608, 1000, 2,
		    "1:1: rfevents.yaml: expected a mapping" },
	};
	char dir[256], buf[1024];
	struct conf *c;
	size_t i;

	make_conf_dir(dir, sizeof(dir), "server");
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		put(dir, "rfevents.yaml", rows[i].yaml);
		c = conf_load(dir);
		T_CHECK(rows[i].line, c->server.max_body_single == rows[i].single &&
		    c->server.max_body_batch == rows[i].batch &&
		    c->server.max_batch_items == rows[i].items &&
		    c->server.log_level == rows[i].level, "values");
		if (rows[i].err == NULL)
			T_CHECK(rows[i].line, c->nerrors == 0, "errors: %s",
			    errors_text(c->errors, c->nerrors));
		else {
			buf[0] = '\0';
			if (c->nerrors > 0)
				conf_error_fmt(&c->errors[0], buf, sizeof(buf));
			T_CHECK(rows[i].line, c->nerrors == 1 &&
			    strstr(buf, "/rfevents.yaml:") != NULL &&
			    strstr(buf, rows[i].err) != NULL, "got %s", buf);
		}
		conf_free(c);
	}
}

static void
test_load_dir(void)
{
	char dir[256];
	struct conf *c;
	size_t i;

	make_conf_dir(dir, sizeof(dir), "load");
	put(dir, "tenants/zeta.yaml", "event_types: {}\n");
	put(dir, "tenants/a-b.yaml", "event_types: {}\n");
	put(dir, "tenants/a.yaml", "event_types: {}\n");
	put(dir, "tenants/Bad.yaml", "event_types: {}\n");
	put(dir, "tenants/broken.yaml", "event_types: [\n");
	put(dir, "tenants/.hidden.yaml", "junk: 1\n");
	put(dir, "tenants/a.yaml~", "junk: 1\n");
	put(dir, "tenants/.a.yaml.swp", "junk: 1\n");
	put(dir, "tenants/a.yaml.bak", "junk: 1\n");
	put(dir, "tenants/notes.txt", "junk: 1\n");
	c = conf_load(dir);
	T_OK(c->ntenants == 3, "ntenants %zu", c->ntenants);
	if (c->ntenants == 3)
		T_OK(strcmp(c->tenants[0]->slug, "a") == 0 &&
		    strcmp(c->tenants[1]->slug, "a-b") == 0 &&
		    strcmp(c->tenants[2]->slug, "zeta") == 0, "sorted by slug");
	T_OK(c->nerrors == 2 &&
	    has_error(c->errors, c->nerrors, 0, 0, "bad file name") &&
	    has_error(c->errors, c->nerrors, 2, 1, "did not find expected"),
	    "errors: %s", errors_text(c->errors, c->nerrors));
	for (i = 0; i < c->nerrors; i++)
		T_OK(strstr(c->errors[i].file, "/tenants/Bad.yaml") ||
		    strstr(c->errors[i].file, "/tenants/broken.yaml"), "file %s",
		    c->errors[i].file);
	T_OK(conf_tenant_find(c, "a-b") == c->tenants[1], "find a-b");
	T_OK(conf_tenant_find(c, "zeta") == c->tenants[2], "find zeta");
	T_OK(conf_tenant_find(c, "a") == c->tenants[0], "find a");
	T_OK(conf_tenant_find(c, "b") == NULL && conf_tenant_find(c, "") == NULL &&
	    conf_tenant_find(c, "zz") == NULL, "find missing");
	T_OK(c->server.max_batch_items == 1000, "server defaults");
	conf_free(c);

	/* No tenants folder: an error, nothing loaded. */
	snprintf(dir, sizeof(dir), "%s/nonexistent", tmpdir);
	c = conf_load(dir);
	T_OK(c->ntenants == 0 && c->nerrors == 1 &&
	    strstr(c->errors[0].msg, "cannot read folder") &&
	    strstr(c->errors[0].file, "/tenants"), "no folder: %s",
	    errors_text(c->errors, c->nerrors));
	conf_free(c);
}

/* ---- the reload cache ---- */

/* The first event type name of tenant slug in c, or "" / "-". */
static const char *
type0(const struct conf *c, const char *slug)
{
	const struct conf_tenant *t = conf_tenant_find(c, slug);

	if (t == NULL)
		return "-";
	return t->ntypes ? t->types[0].name : "";
}

static void
test_reload(void)
{
	static const char v1[] = "event_types: { one: {} }\n";
	static const char v2[] = "event_types: { two: {} }\n";   /* same size */
	char dir[256], path[512], tmp[256], hex[65];
	const struct conf *c, *c2;
	struct stat sb1;
	struct timespec ts[2];
	time_t now = 1000;

	make_conf_dir(dir, sizeof(dir), "reload");
	snprintf(path, sizeof(path), "%s/tenants/a.yaml", dir);
	put(dir, "tenants/a.yaml", v1);
	c = conf_current(dir, now);
	T_OK(c->ntenants == 1 && strcmp(type0(c, "a"), "one") == 0 &&
	    c->nerrors == 0, "first load");
	sha256_hex(v1, strlen(v1), hex);
	T_OK(conf_tenant_find(c, "a") &&
	    strcmp(conf_tenant_find(c, "a")->version, hex) == 0, "version v1");
	T_OK(strcmp(c->dir, dir) == 0, "dir");

	/* In place, same size, same second, mtime put back: noticed at the
	 * next check (one second later), not before. */
	T_OK(stat(path, &sb1) == 0, "stat");
	T_OK(rewrite_in_place(path, v2) == 0, "rewrite");
	ts[0] = sb1.st_atim;
	ts[1] = sb1.st_mtim;
	T_OK(utimensat(AT_FDCWD, path, ts, 0) == 0, "utimensat");
	c2 = conf_current(dir, now);
	T_OK(c2 == c && strcmp(type0(c2, "a"), "one") == 0, "same second");
	c = conf_current(dir, ++now);
	T_OK(strcmp(type0(c, "a"), "two") == 0, "in-place edit seen");
	sha256_hex(v2, strlen(v2), hex);
	T_OK(conf_tenant_find(c, "a") &&
	    strcmp(conf_tenant_find(c, "a")->version, hex) == 0, "version v2");

	/* Nothing changed: the same snapshot. */
	c2 = conf_current(dir, ++now);
	T_OK(c2 == c, "unchanged: same snapshot");

	/* Replaced by rename (new inode); the hidden temp file is ignored. */
	snprintf(tmp, sizeof(tmp), "%.200s/tenants/.a.yaml.tmp", dir);
	T_OK(write_file(tmp, "event_types: { three: {} }\n", 27) == 0, "tmp");
	c = conf_current(dir, ++now);
	T_OK(c->ntenants == 1 && c->nerrors == 0, "temp file ignored");
	T_OK(rename(tmp, path) == 0, "rename");
	c = conf_current(dir, ++now);
	T_OK(strcmp(type0(c, "a"), "three") == 0, "rename seen");

	/* Broken: the previous version stays, the error is listed, also at
	 * the next checks. */
	put(dir, "tenants/a.yaml", "event_types: { four: {} }\nbad: 1\n");
	c = conf_current(dir, ++now);
	T_OK(strcmp(type0(c, "a"), "three") == 0, "broken keeps old");
	T_OK(c->nerrors == 1 && c->errors[0].line == 2 && c->errors[0].col == 1 &&
	    strstr(c->errors[0].file, "/tenants/a.yaml") != NULL &&
	    strstr(c->errors[0].msg, "unknown key 'bad'") != NULL, "broken: %s",
	    errors_text(c->errors, c->nerrors));
	c2 = conf_current(dir, ++now);
	T_OK(strcmp(type0(c2, "a"), "three") == 0 && c2->nerrors == 1,
	    "still broken");

	/* Fixed. */
	put(dir, "tenants/a.yaml", "event_types: { five: {} }\n");
	c = conf_current(dir, ++now);
	T_OK(strcmp(type0(c, "a"), "five") == 0 && c->nerrors == 0, "fixed");

	/* A new file; a new broken file with no previous version. */
	put(dir, "tenants/b.yaml", "event_types: { bee: {} }\n");
	put(dir, "tenants/c.yaml", "event_types: [\n");
	c = conf_current(dir, ++now);
	T_OK(c->ntenants == 2 && strcmp(type0(c, "b"), "bee") == 0 &&
	    conf_tenant_find(c, "c") == NULL && c->nerrors == 1 &&
	    strstr(c->errors[0].file, "/c.yaml") != NULL, "added: %s",
	    errors_text(c->errors, c->nerrors));

	/* Deleted files: their tenants and errors go. */
	del(dir, "tenants/a.yaml");
	del(dir, "tenants/c.yaml");
	c = conf_current(dir, ++now);
	T_OK(c->ntenants == 1 && strcmp(c->tenants[0]->slug, "b") == 0 &&
	    c->nerrors == 0, "deleted");

	/* rfevents.yaml: appears, breaks (old values stay), goes. */
	put(dir, "rfevents.yaml", "max_batch_items: 5\n");
	c = conf_current(dir, ++now);
	T_OK(c->server.max_batch_items == 5 && c->nerrors == 0, "server added");
	put(dir, "rfevents.yaml", "max_batch_items: 0\n");
	c = conf_current(dir, ++now);
	T_OK(c->server.max_batch_items == 5 && c->nerrors == 1 &&
	    strstr(c->errors[0].file, "rfevents.yaml") != NULL, "server broken");
	del(dir, "rfevents.yaml");
	c = conf_current(dir, ++now);
	T_OK(c->server.max_batch_items == 1000 && c->nerrors == 0,
	    "server removed");

	/* The tenants folder unreadable: tenants stay, the error is listed. */
	snprintf(tmp, sizeof(tmp), "%.200s/tenants", dir);
	snprintf(path, sizeof(path), "%s/tenants.off", dir);
	T_OK(rename(tmp, path) == 0, "rename folder");
	c = conf_current(dir, ++now);
	T_OK(c->ntenants == 1 && c->nerrors == 1 &&
	    strstr(c->errors[0].msg, "cannot read folder"), "no folder: %s",
	    errors_text(c->errors, c->nerrors));
	T_OK(rename(path, tmp) == 0, "rename folder back");
	c = conf_current(dir, ++now);
	T_OK(c->ntenants == 1 && c->nerrors == 0, "folder back");

	/* The clock going back still checks. */
	put(dir, "tenants/b.yaml", "event_types: { bees: {} }\n");
	c = conf_current(dir, now - 100);
	T_OK(strcmp(type0(c, "b"), "bees") == 0, "clock back");

	/* Another folder starts over. */
	make_conf_dir(tmp, sizeof(tmp), "reload2");
	put(tmp, "tenants/z.yaml", "event_types: {}\n");
	c = conf_current(tmp, now);
	T_OK(c->ntenants == 1 && strcmp(c->tenants[0]->slug, "z") == 0 &&
	    strcmp(c->dir, tmp) == 0, "other folder");
	conf_current_free();
	conf_current_free();   /* twice is fine */
}

/* ---- the shipped demo ---- */

/* A property value of the sample event, as JSON would give it. */
struct sample_prop {
	const char *name;
	int         is_num;
	const char *text;   /* string value, or number text */
};

/* 1 when the sample event's properties satisfy event type ty: every given
 * property exists with a fitting type and constraints, every required one
 * is given. A small stand-in for core's validation, enough to show the
 * demo registry accepts the documented event. */
static int
sample_ok(const struct conf_event_type *ty, const struct sample_prop *ps,
    size_t n)
{
	const struct conf_prop *p;
	size_t i, j, k;
	mpq_t q;
	int ok;

	for (j = 0; j < ty->nprops; j++) {
		p = &ty->props[j];
		for (i = 0; i < n && strcmp(ps[i].name, p->name) != 0; i++)
			;
		if (i == n) {
			if (p->required)
				return 0;
			continue;
		}
		if (ps[i].is_num != (p->type == CONF_PT_NUMBER ||
		    p->type == CONF_PT_INTEGER))
			return 0;
		if (ps[i].is_num) {
			mpq_init(q);
			ok = rule_dec_parse(ps[i].text, strlen(ps[i].text), q) == 0;
			if (p->has_min && mpq_cmp(q, p->min) < 0)
				ok = 0;
			if (p->has_max && mpq_cmp(q, p->max) > 0)
				ok = 0;
			mpq_clear(q);
			if (!ok)
				return 0;
			continue;
		}
		if (p->max_length >= 0 && (long)strlen(ps[i].text) > p->max_length)
			return 0;
		if (p->enum_vals != NULL) {
			for (k = 0; k < p->nenum &&
			    strcmp(p->enum_vals[k], ps[i].text) != 0; k++)
				;
			if (k == p->nenum)
				return 0;
		}
	}
	/* unknown_properties: reject */
	for (i = 0; i < n; i++) {
		for (j = 0; j < ty->nprops; j++)
			if (strcmp(ps[i].name, ty->props[j].name) == 0)
				break;
		if (j == ty->nprops)
			return 0;
	}
	return 1;
}

/* The rule with this id, or NULL. */
static const struct conf_rule *
rule_find(const struct conf_tenant *t, const char *id)
{
	size_t i;

	for (i = 0; i < t->nrules; i++)
		if (strcmp(t->rules[i].id, id) == 0)
			return &t->rules[i];
	return NULL;
}

static void
test_demo(void)
{
	static const struct sample_prop sample[] = {
		{ "order_id", 0, "order_42" },
		{ "amount", 1, "120.50" },
		{ "currency", 0, "USD" },
		{ "store_id", 0, "store_42" },
	};
	static const struct sample_prop bad_currency[] = {
		{ "order_id", 0, "order_42" },
		{ "amount", 1, "120.50" },
		{ "currency", 0, "JPY" },
	};
	const char *dir = "conf";
	const struct conf_tenant *t;
	const struct conf_event_type *ty;
	const struct conf_prop *p;
	const struct conf_rule *r;
	struct conf *c;
	struct stat sb;
	size_t i;
	int seen_per_day = 0, seen_per_month = 0, seen_total = 0;

	if (stat("conf/tenants/demo.yaml", &sb) == -1)
		dir = "../../conf";   /* run from tests/unit */
	c = conf_load(dir);
	T_OK(c->nerrors == 0, "demo errors: %s", errors_text(c->errors,
	    c->nerrors));
	T_OK(c->server.max_body_single == 65536 &&
	    c->server.max_body_batch == 8388608 &&
	    c->server.max_batch_items == 1000 && c->server.log_level == 2,
	    "conf/rfevents.yaml holds the defaults");
	t = conf_tenant_find(c, "demo");
	T_OK(t != NULL, "demo tenant");
	if (t == NULL) {
		conf_free(c);
		return;
	}
	T_OK(t->auto_create_profiles && strcmp(t->default_cc, "1") == 0 &&
	    !t->allow_unknown_props && t->rounding == CONF_ROUND_FLOOR,
	    "settings");
	ty = conf_type_find(t, "purchase_completed");
	T_OK(ty != NULL && ty->nprops == 5, "purchase_completed");
	if (ty != NULL && ty->nprops == 5) {
		p = &ty->props[0];
		T_OK(strcmp(p->name, "order_id") == 0 && p->type == CONF_PT_STRING &&
		    p->required && p->max_length == 64, "order_id");
		p = &ty->props[1];
		T_OK(strcmp(p->name, "amount") == 0 && p->type == CONF_PT_NUMBER &&
		    p->required && p->has_min && q_is(p->min, "0") && !p->has_max,
		    "amount");
		p = &ty->props[2];
		T_OK(strcmp(p->name, "currency") == 0 && p->required &&
		    p->nenum == 3 && strcmp(p->enum_vals[0], "USD") == 0 &&
		    strcmp(p->enum_vals[1], "EUR") == 0 &&
		    strcmp(p->enum_vals[2], "GBP") == 0, "currency");
		p = &ty->props[3];
		T_OK(strcmp(p->name, "category") == 0 && !p->required &&
		    p->filterable, "category");
		p = &ty->props[4];
		T_OK(strcmp(p->name, "store_id") == 0 && !p->required &&
		    p->type == CONF_PT_STRING, "store_id");
		T_OK(sample_ok(ty, sample, sizeof(sample) / sizeof(sample[0])),
		    "the documented purchase_completed event fits");
		T_OK(!sample_ok(ty, bad_currency, 3), "JPY does not fit");
	}
	T_OK(conf_type_find(t, "signup") != NULL &&
	    conf_type_find(t, "points_adjusted") != NULL, "other types");
	T_OK(t->ntiers == 3 && strcmp(t->tiers[0].name, "bronze") == 0 &&
	    q_is(t->tiers[0].min_lifetime, "0") &&
	    strcmp(t->tiers[1].name, "silver") == 0 &&
	    q_is(t->tiers[1].multiplier, "5/4") &&
	    strcmp(t->tiers[2].name, "gold") == 0 &&
	    q_is(t->tiers[2].multiplier, "3/2"), "tiers");

	r = rule_find(t, "points_per_dollar");
	T_OK(r && r->tier_multiplier && r->points && r->when &&
	    strcmp(r->event, "purchase_completed") == 0, "points_per_dollar");
	r = rule_find(t, "electronics_bonus");
	T_OK(r && r->when && strstr(r->when_src, "\"electronics\"") && r->points,
	    "electronics_bonus");
	r = rule_find(t, "welcome");
	T_OK(r && r->points && r->nsets == 1 &&
	    strcmp(r->sets[0].name, "welcome_eligible") == 0 &&
	    strcmp(r->sets[0].src, "true") == 0 && r->per_profile == 1,
	    "welcome");
	r = rule_find(t, "manual");
	T_OK(r && r->stop && strcmp(r->points_src, "properties.points") == 0 &&
	    strcmp(r->event, "points_adjusted") == 0, "manual");
	for (i = 0; i < t->nrules; i++) {
		r = &t->rules[i];
		seen_per_day |= r->per_day > 0;
		seen_per_month |= r->per_month > 0;
		if (r->nsets > 0 && strcmp(r->sets[0].src,
		    "coalesce(profile.vars.total_spend, 0) + properties.amount") == 0)
			seen_total = 1;
	}
	r = rule_find(t, "visit_stamp");
	T_OK(r && r->balance && r->amount && r->points == NULL, "balance rule");
	T_OK(seen_per_day && seen_per_month, "per_day and per_month limits");
	T_OK(seen_total, "total_spend set");
	conf_free(c);
}

/* Remove path and, for a folder, everything below it (a few levels). */
static void
rm_tree(const char *path)
{
	struct dirent *de;
	char sub[1024];
	DIR *dp;

	if ((dp = opendir(path)) != NULL) {
		while ((de = readdir(dp)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
			rm_tree(sub);
		}
		closedir(dp);
		rmdir(path);
	} else
		unlink(path);
}

/*
 * A process started after a tenant file broke has no previous version of
 * its own: it loads the last good copy that an earlier process saved in
 * RFEVENTS_STATE, and still lists the live file's error.
 */
static void
test_last_good(void)
{
	static const char good[] = "event_types: { one: {} }\n";
	static const char bad[] = "event_types: { one: {} \n";
	char dir[256], state[512], copy[600];
	const struct conf *c;
	time_t now = 5000;
	struct stat sb;

	make_conf_dir(dir, sizeof(dir), "lastgood");
	snprintf(state, sizeof(state), "%s/state", tmpdir);
	setenv("RFEVENTS_STATE", state, 1);
	put(dir, "tenants/a.yaml", good);
	c = conf_current(dir, now);
	T_OK(c->ntenants == 1 && c->nerrors == 0, "good file loads");
	snprintf(copy, sizeof(copy), "%s/a.yaml", state);
	T_OK(stat(copy, &sb) == 0 && (size_t)sb.st_size == strlen(good),
	    "last good copy saved");
	T_OK(stat(state, &sb) == 0 && (sb.st_mode & 077) == 0,
	    "state folder is private");
	conf_current_free();                 /* as if a new process started */
	put(dir, "tenants/a.yaml", bad);
	c = conf_current(dir, ++now);
	T_OK(c->ntenants == 1 && strcmp(type0(c, "a"), "one") == 0,
	    "new process: the last good version is in force");
	T_OK(c->nerrors == 1, "new process: the broken file is listed (%zu)",
	    c->nerrors);
	conf_current_free();
	/* without a saved copy there is nothing to fall back on */
	unlink(copy);
	c = conf_current(dir, ++now);
	T_OK(c->ntenants == 0 && c->nerrors == 1, "no copy: no tenant, one error");
	conf_current_free();
	setenv("RFEVENTS_STATE", "off", 1);
}

int
main(void)
{
	t_file = "test_conf";
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_conf.XXXXXX");
	/* keep the last good copies of these throwaway folders out of /dev/shm */
	setenv("RFEVENTS_STATE", "off", 1);
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_valid();
	test_errors();
	test_expr_errors();
	test_many_errors();
	test_limits();
	test_names();
	test_server();
	test_load_dir();
	test_reload();
	test_last_good();
	test_demo();
	rm_tree(tmpdir);
	return t_done();
}
