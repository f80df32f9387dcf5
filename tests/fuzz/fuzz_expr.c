/*
 * libFuzzer target for the expression language and decimals (rules/).
 * The input is compiled as an expression in each want mode; what compiles
 * is evaluated against a fixed environment and run through the rule
 * engine. Invariants (abort otherwise): a compile error has a column in
 * 1..len+1 and a message; a successful evaluation has the type the want
 * asks for; a failed one has a reason and a null value. The same bytes go
 * through rule_dec_parse()/rule_dec_canon(), which must agree.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules.h"
#include "rules/rules_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_object *props, *vars;
static struct rule_env env;
static const struct rule_balance bals[] = {
	{ "points", 170, 1170 },
	{ "attempts", INT64_MAX, INT64_MAX },
};
static mpq_t tq[2][2];
static struct rule_tier tiers[2];

/* The fixed environment, built once (libFuzzer keeps the process). */
static void
setup(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	props = json_tokener_parse("{\"amount\": 125.50, \"zero\": 0, "
	    "\"cat\": \"electronics\", \"flag\": true, \"nul\": null, "
	    "\"obj\": {\"a\": 1}, \"arr\": [1, 2], \"big\": 1e300, "
	    "\"tiny\": 1e-300, \"neg\": -7, \"s\": \"\\u00e9\\u0000x\", "
	    "\"i\": 9223372036854775807}");
	vars = json_tokener_parse("{\"total_spend\": 100.5, \"seen\": true, "
	    "\"nick\": \"bob\", \"o\": {}}");
	env.properties = props;
	env.vars = vars;
	env.event_type = "purchase_completed";
	env.event_source = "brand.pos";
	env.event_occurred_at = "2024-05-01T10:00:00Z";
	env.tier = "silver";
	env.balances = bals;
	env.nbalances = sizeof(bals) / sizeof(bals[0]);
	mpq_init(tq[0][0]);
	mpq_init(tq[0][1]);
	mpq_init(tq[1][0]);
	mpq_init(tq[1][1]);
	mpq_set_ui(tq[0][1], 1, 1);
	mpq_set_ui(tq[1][0], 1000, 1);
	mpq_set_ui(tq[1][1], 5, 4);
	tiers[0].name = "bronze";
	tiers[0].min_lifetime = tq[0][0];
	tiers[0].multiplier = tq[0][1];
	tiers[1].name = "silver";
	tiers[1].min_lifetime = tq[1][0];
	tiers[1].multiplier = tq[1][1];
}

/* Decimal functions on the raw bytes. */
static void
fuzz_dec(const char *s, size_t n)
{
	mpq_t q, back;
	char *c, *t;
	int   r;

	mpq_init(q);
	mpq_init(back);
	r = rule_dec_parse(s, n, q);
	/* the machine-integer way and the big-number way agree */
	if (rule__dec_parse_big(s, n, back) != r || (r == 0 && !mpq_equal(q, back)))
		abort();
	c = rule_dec_canon(s, n);
	if (r == 0 && c == NULL)
		abort();                    /* parse accepted what canon didn't */
	if (c != NULL) {
		/* the canonical text is a number of the same value */
		if (rule_dec_parse(c, strlen(c), back) == 0 && r == 0 &&
		    !mpq_equal(q, back))
			abort();
		free(c);
	}
	if (r == 0) {
		(void)rule_dec_in_double_range(q);
		t = rule_dec_to_text(q, 30);
		if (rule_dec_parse(t, strlen(t), back) != 0)
			abort();
		free(t);
	}
	mpq_clear(q);
	mpq_clear(back);
}

/* Evaluate and check the result against what `want` asks for. */
static void
fuzz_eval(const struct rule_expr *e, enum rule_want want)
{
	struct rule_value v;
	char              why[RULE_WHY_MAX];

	if (rule_expr_eval(e, &env, &v, why, sizeof(why)) == 0) {
		if ((want == RULE_WANT_BOOL && v.type != RULE_V_BOOL) ||
		    (want == RULE_WANT_NUMBER && v.type != RULE_V_NUM) ||
		    (unsigned)v.type >= RULE_V__MAX)
			abort();
		if (v.type == RULE_V_STR && (v.str == NULL ||
		    v.str[v.len] != '\0'))
			abort();
	} else if (v.type != RULE_V_NULL || why[0] == '\0' ||
	    memchr(why, '\0', sizeof(why)) == NULL)
		abort();
	rule_value_clear(&v);
}

/* Run the expression as a rule's when / points / set through the engine. */
static void
fuzz_engine(const struct rule_expr *e, enum rule_want want)
{
	struct rule_def     d;
	struct rule_set     set = { "v", e };
	struct rule_outcome out;
	struct rule_count   cnt = { 0, 0, 0 };
	enum rule_rounding  m;

	memset(&d, 0, sizeof(d));
	d.id = "fuzz";
	d.event = "purchase_completed";
	d.tier_multiplier = 1;
	if (want == RULE_WANT_BOOL)
		d.when = e;
	else if (want == RULE_WANT_NUMBER) {
		d.points = e;
		d.balance = "attempts";     /* at INT64_MAX: overflow paths */
		d.amount = e;
	} else {
		d.sets = &set;
		d.nsets = 1;
	}
	for (m = RULE_ROUND_FLOOR; m < RULE_ROUND__MAX; m++) {
		if (rule_engine_run(&d, 1, tiers, 2, m, &env, &cnt, &out) != 0)
			abort();
		if (out.napplied + out.nskipped != 1)
			abort();
		rule_outcome_free(&out);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char     *src = (const char *)data;
	enum rule_want  w;

	setup();
	fuzz_dec(src, size);
	for (w = RULE_WANT_ANY; w < RULE_WANT__MAX; w++) {
		struct rule_err   err;
		struct rule_expr *e;
		size_t            i;

		memset(&err, 0x55, sizeof(err));
		e = rule_expr_compile(src, size, w, &err);
		if (e == NULL) {
			if (err.col < 1 || err.col > size + 1 ||
			    err.msg[0] == '\0' ||
			    memchr(err.msg, '\0', sizeof(err.msg)) == NULL)
				abort();
			continue;
		}
		for (i = 0; i < rule_expr_nprops(e); i++) {
			unsigned col = 0;

			if (rule_expr_prop(e, i, &col) == NULL || col < 1 ||
			    col > size)
				abort();
		}
		fuzz_eval(e, w);
		fuzz_engine(e, w);
		rule_expr_free(e);
	}
	return 0;
}
