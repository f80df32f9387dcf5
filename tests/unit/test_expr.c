/*
 * Unit tests for rules/: exact decimals (dec.c) and the expression
 * language (lex.c, expr.c): precedence, every operator and function, null
 * and type semantics, compile errors with columns, limits, exactness.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules.h"
#include "rules/rules_int.h"
#include "tests/unit/t.h"

/* ---- decimals ---- */

static const struct {
	int         line;
	const char *in;
	const char *canon;   /* NULL: rejected */
} canon_cases[] = {
	{ __LINE__, "7", "7" },
	{ __LINE__, "100", "1e2" },
	{ __LINE__, "120.50", "1205e-1" },
	{ __LINE__, "1.2e2", "12e1" },
	{ __LINE__, "-0.001", "-1e-3" },
	{ __LINE__, "0", "0" },
	{ __LINE__, "-0", "0" },
	{ __LINE__, "0.0", "0" },
	{ __LINE__, "-0.000e-7", "0" },
	{ __LINE__, "1E+0", "1" },
	{ __LINE__, "1e0", "1" },
	{ __LINE__, "12.5e-3", "125e-4" },
	{ __LINE__, "1e-7", "1e-7" },
	{ __LINE__, "10.0e-1", "1" },
	{ __LINE__, "0.5", "5e-1" },
	{ __LINE__, "-120", "-12e1" },
	{ __LINE__, "100e-2", "1" },
	{ __LINE__, "1000000000000000000000000001",
	    "1000000000000000000000000001" },
	{ __LINE__, "1e99999999999999999999", "1e99999999999999999999" },
	{ __LINE__, "1.5e-99999999999999999999",
	    "15e-100000000000000000000" },
	{ __LINE__, "", NULL },
	{ __LINE__, "-", NULL },
	{ __LINE__, "01", NULL },
	{ __LINE__, "1.", NULL },
	{ __LINE__, ".1", NULL },
	{ __LINE__, "1e", NULL },
	{ __LINE__, "1e+", NULL },
	{ __LINE__, "+1", NULL },
	{ __LINE__, " 1", NULL },
	{ __LINE__, "1 ", NULL },
	{ __LINE__, "0x10", NULL },
	{ __LINE__, "NaN", NULL },
	{ __LINE__, "Infinity", NULL },
	{ __LINE__, "--1", NULL },
	{ __LINE__, "1.2.3", NULL },
	{ __LINE__, "-01.5", NULL },
};

static const struct {
	int         line;
	const char *in;
	const char *q;       /* expected value "num/den" or "num"; NULL: rejected */
} parse_cases[] = {
	{ __LINE__, "0.1", "1/10" },
	{ __LINE__, "-12.50e-1", "-5/4" },
	{ __LINE__, "1E+2", "100" },
	{ __LINE__, "19.99", "1999/100" },
	{ __LINE__, "-0", "0" },
	{ __LINE__, "0e-1000", "0" },
	{ __LINE__, "123456789012345678901234567890", "123456789012345678901234567890" },
	/* the machine-integer way's edges (dec_parse_small()) */
	{ __LINE__, "120.50", "241/2" },
	{ __LINE__, "-0.0000", "0" },
	{ __LINE__, "999999999999999999", "999999999999999999" },     /* 18 digits */
	{ __LINE__, "9999999999999999999", "9999999999999999999" },   /* 19 */
	{ __LINE__, "0.000000000000000001", "1/1000000000000000000" },
	{ __LINE__, "0.0000000000000000001", "1/10000000000000000000" },
	{ __LINE__, "1e18", "1000000000000000000" },
	{ __LINE__, "1e19", "10000000000000000000" },
	{ __LINE__, "18446744073709551615e0", "18446744073709551615" },
	{ __LINE__, "99999999999999999e2", "9999999999999999900" },
	{ __LINE__, "999999999999999999e1", "9999999999999999990" },
	{ __LINE__, "123456789012345678e-36", "123456789012345678/1000000000000000000000000000000000000" },
	{ __LINE__, "-2.5e-17", "-1/40000000000000000" },
	{ __LINE__, "6.25e-2", "1/16" },
	{ __LINE__, "0.2e1", "2" },
	{ __LINE__, "1000.000", "1000" },
	{ __LINE__, "1e1001", NULL },
	{ __LINE__, "1e-1001", NULL },
	{ __LINE__, "0e1001", NULL },
	{ __LINE__, "1e99999999999999999999999", NULL },
	{ __LINE__, "01", NULL },
	{ __LINE__, "1.", NULL },
	{ __LINE__, ".5", NULL },
	{ __LINE__, "+5", NULL },
	{ __LINE__, "5 ", NULL },
	{ __LINE__, "1e", NULL },
	{ __LINE__, "", NULL },
	{ __LINE__, "abc", NULL },
};

static void
test_dec_parse(void)
{
	size_t i;

	for (i = 0; i < sizeof(canon_cases) / sizeof(canon_cases[0]); i++) {
		char *c = rule_dec_canon(canon_cases[i].in,
		    strlen(canon_cases[i].in));

		if (canon_cases[i].canon == NULL)
			T_CHECK(canon_cases[i].line, c == NULL,
			    "canon(%s) = %s, want NULL", canon_cases[i].in, c);
		else
			T_CHECK(canon_cases[i].line, c != NULL &&
			    strcmp(c, canon_cases[i].canon) == 0,
			    "canon(%s) = %s, want %s", canon_cases[i].in,
			    c ? c : "NULL", canon_cases[i].canon);
		free(c);
	}
	/* canon reads exactly len bytes: "12" of "123" */
	{
		char *c = rule_dec_canon("123", 2);

		T_OK(c && strcmp(c, "12") == 0, "canon length-bounded: %s", c);
		free(c);
	}

	for (i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		mpq_t q, want;
		int   r;

		mpq_init(q);
		mpq_init(want);
		mpq_set_ui(q, 42, 1);
		r = rule_dec_parse(parse_cases[i].in, strlen(parse_cases[i].in),
		    q);
		if (parse_cases[i].q == NULL)
			T_CHECK(parse_cases[i].line, r == -1 &&
			    mpq_cmp_ui(q, 42, 1) == 0,
			    "parse(%s) accepted or touched out", parse_cases[i].in);
		else {
			mpq_set_str(want, parse_cases[i].q, 10);
			mpq_canonicalize(want);
			T_CHECK(parse_cases[i].line, r == 0 && mpq_equal(q, want),
			    "parse(%s) r=%d", parse_cases[i].in, r);
		}
		mpq_clear(q);
		mpq_clear(want);
	}
	/* both ways give the same value: numbers built from digit runs,
	 * fractions and exponents around the machine-integer edges */
	{
		static const char *const mant[] = { "0", "1", "5", "25", "120.50",
		    "0.001", "99999999999999999", "999999999999999999",
		    "9999999999999999999", "18446744073709551616", "4.096",
		    "100000000000000000", "0.000000000000000000100" };
		static const char *const ex[] = { "", "e0", "e1", "e-1", "e17",
		    "e18", "e19", "e-17", "e-18", "e-19", "e-36", "E+3", "e-0005" };
		size_t a, b, bad = 0, n = 0;
		char   buf[80];
		mpq_t  x, y;

		mpq_init(x);
		mpq_init(y);
		for (a = 0; a < sizeof(mant) / sizeof(mant[0]); a++)
			for (b = 0; b < sizeof(ex) / sizeof(ex[0]); b++) {
				int neg, r1, r2;
				for (neg = 0; neg < 2; neg++) {
					snprintf(buf, sizeof(buf), "%s%s%s", neg ? "-" : "",
					    mant[a], ex[b]);
					mpq_set_ui(x, 7, 3);
					mpq_set_ui(y, 5, 3);
					r1 = rule_dec_parse(buf, strlen(buf), x);
					r2 = rule__dec_parse_big(buf, strlen(buf), y);
					n++;
					if (r1 != 0 || r2 != 0 || !mpq_equal(x, y) ||
					    mpz_sgn(mpq_denref(x)) <= 0) {
						if (bad++ == 0)
							T_OK(0, "%s: the two ways differ", buf);
					}
				}
			}
		T_OK(bad == 0 && n == 338, "%zu of %zu numbers parse differently",
		    bad, n);
		mpq_clear(x);
		mpq_clear(y);
	}
	/* exponent limit is exactly RULE_DEC_MAX_EXP */
	{
		mpq_t q;
		mpz_t p;

		mpq_init(q);
		mpz_init(p);
		mpz_ui_pow_ui(p, 10, RULE_DEC_MAX_EXP);
		T_OK(rule_dec_parse("1e1000", 6, q) == 0 &&
		    mpz_cmp(mpq_numref(q), p) == 0 &&
		    mpz_cmp_ui(mpq_denref(q), 1) == 0, "1e1000 is 10^1000");
		T_OK(rule_dec_parse("1e0001000", 9, q) == 0,
		    "leading zeros in exponent");
		T_OK(rule_dec_parse("1e0001001", 9, q) == -1,
		    "1e0001001 rejected");
		T_OK(rule_dec_parse("-1e-1000", 8, q) == 0 &&
		    mpz_cmp_si(mpq_numref(q), -1) == 0 &&
		    mpz_cmp(mpq_denref(q), p) == 0, "-1e-1000 is -1/10^1000");
		mpq_clear(q);
		mpz_clear(p);
	}
}

static const struct {
	int         line;
	const char *in;
	int         in_range;
} range_cases[] = {
	{ __LINE__, "1.7976931348623157e308", 1 },
	{ __LINE__, "-1.7976931348623157e308", 1 },
	{ __LINE__, "1.7976931348623159e308", 0 },
	{ __LINE__, "1e309", 0 },
	{ __LINE__, "-1e400", 0 },
	{ __LINE__, "1e-400", 1 },
	{ __LINE__, "0", 1 },
	{ __LINE__, "123.456", 1 },
};

static const struct {
	int         line;
	const char *q;        /* rational "num/den" */
	unsigned    maxfrac;
	const char *text;
} text_cases[] = {
	{ __LINE__, "1205/10", 2, "120.5" },
	{ __LINE__, "1/3", 4, "0.3333" },
	{ __LINE__, "2/3", 2, "0.67" },
	{ __LINE__, "-1/1000", 2, "0" },
	{ __LINE__, "-5/1000", 2, "-0.01" },
	{ __LINE__, "5/1000", 2, "0.01" },
	{ __LINE__, "1999", 0, "1999" },
	{ __LINE__, "1/2", 0, "1" },
	{ __LINE__, "-1/2", 0, "-1" },
	{ __LINE__, "1/8", 3, "0.125" },
	{ __LINE__, "1/8", 2, "0.13" },
	{ __LINE__, "0", 3, "0" },
	{ __LINE__, "100", 2, "100" },
	{ __LINE__, "-123456789/1000", 6, "-123456.789" },
	{ __LINE__, "1/10", 1, "0.1" },
	{ __LINE__, "1/100", 1, "0" },
	{ __LINE__, "199/200", 2, "1" },
	{ __LINE__, "-199/200", 2, "-1" },
	{ __LINE__, "7/100000", 6, "0.00007" },
};

static const struct {
	int         line;
	const char *q;
	long        floor_, round_, ceil_;
} round_cases[] = {
	{ __LINE__, "5/2", 2, 3, 3 },
	{ __LINE__, "-5/2", -3, -3, -2 },
	{ __LINE__, "14999/10000", 1, 1, 2 },
	{ __LINE__, "-14999/10000", -2, -1, -1 },
	{ __LINE__, "3", 3, 3, 3 },
	{ __LINE__, "-3", -3, -3, -3 },
	{ __LINE__, "0", 0, 0, 0 },
	{ __LINE__, "1/2", 0, 1, 1 },
	{ __LINE__, "-1/2", -1, -1, 0 },
	{ __LINE__, "1005/10", 100, 101, 101 },   /* 1.005 * 100 */
	{ __LINE__, "1/3", 0, 0, 1 },
};

static void
test_dec_misc(void)
{
	size_t i;

	for (i = 0; i < sizeof(range_cases) / sizeof(range_cases[0]); i++) {
		mpq_t q;

		mpq_init(q);
		T_CHECK(range_cases[i].line, rule_dec_parse(range_cases[i].in,
		    strlen(range_cases[i].in), q) == 0 &&
		    rule_dec_in_double_range(q) == range_cases[i].in_range,
		    "in_double_range(%s)", range_cases[i].in);
		mpq_clear(q);
	}
	for (i = 0; i < sizeof(text_cases) / sizeof(text_cases[0]); i++) {
		mpq_t q;
		char *t;

		mpq_init(q);
		mpq_set_str(q, text_cases[i].q, 10);
		mpq_canonicalize(q);
		t = rule_dec_to_text(q, text_cases[i].maxfrac);
		T_CHECK(text_cases[i].line, t && strcmp(t, text_cases[i].text)
		    == 0, "to_text(%s, %u) = %s, want %s", text_cases[i].q,
		    text_cases[i].maxfrac, t, text_cases[i].text);
		free(t);
		mpq_clear(q);
	}
	for (i = 0; i < sizeof(round_cases) / sizeof(round_cases[0]); i++) {
		mpq_t q;
		mpz_t z;

		mpq_init(q);
		mpz_init(z);
		mpq_set_str(q, round_cases[i].q, 10);
		mpq_canonicalize(q);
		rule_dec_round(z, q, RULE_ROUND_FLOOR);
		T_CHECK(round_cases[i].line, mpz_cmp_si(z,
		    round_cases[i].floor_) == 0, "floor(%s)", round_cases[i].q);
		rule_dec_round(z, q, RULE_ROUND_HALF_AWAY);
		T_CHECK(round_cases[i].line, mpz_cmp_si(z,
		    round_cases[i].round_) == 0, "round(%s)", round_cases[i].q);
		rule_dec_round(z, q, RULE_ROUND_CEIL);
		T_CHECK(round_cases[i].line, mpz_cmp_si(z,
		    round_cases[i].ceil_) == 0, "ceil(%s)", round_cases[i].q);
		mpq_clear(q);
		mpz_clear(z);
	}
}

/* ---- expressions: evaluation ---- */

static json_object *g_props, *g_vars;
static const struct rule_balance g_bal[] = {
	{ "points", 170, 1170 },
	{ "attempts", -3, 5 },
};
static struct rule_env g_env;

static void
env_setup(void)
{
	g_props = json_tokener_parse("{"
	    "\"amount\": 125.50, \"cents\": 1999, \"zero\": 0, \"neg\": -7.5,"
	    "\"cat\": \"electronics\", \"Name\": \"MiXeD\", \"flag\": true,"
	    "\"off\": false, \"nul\": null, \"obj\": {\"x\": 1}, \"arr\": [1],"
	    "\"big\": 18446744073709551615, \"p1\": 0.1, \"p2\": 0.2,"
	    "\"price\": 19.99, \"tiny\": 0.29, \"huge\": 1e400,"
	    "\"esc\": \"a\\\"b\", \"utf\": \"\\u00e9\", \"e\": \"\","
	    "\"in\": 5, \"toobig\": 1e1001, \"nulbyte\": \"a\\u0000b\"}");
	g_vars = json_tokener_parse("{\"total_spend\": 100.5, \"seen\": true,"
	    " \"nick\": \"bob\"}");
	/* a json-c int and a json-c double without original text */
	json_object_object_add(g_props, "i64", json_object_new_int64(-42));
	json_object_object_add(g_props, "nan", json_object_new_double(NAN));
	memset(&g_env, 0, sizeof(g_env));
	g_env.properties = g_props;
	g_env.event_type = "purchase_completed";
	g_env.event_source = "brand.pos";
	g_env.event_occurred_at = "2024-05-01T10:00:00Z";
	g_env.tier = "silver";
	g_env.balances = g_bal;
	g_env.nbalances = sizeof(g_bal) / sizeof(g_bal[0]);
	g_env.vars = g_vars;
}

#define A RULE_WANT_ANY
#define B RULE_WANT_BOOL
#define N RULE_WANT_NUMBER

/*
 * expect: "n:RATIONAL" (exact, e.g. "n:251/2"), "s:TEXT", "b:true",
 * "b:false", "null", or "!REASON" (evaluation fails; reason contains
 * REASON).
 */
static const struct {
	int            line;
	enum rule_want want;
	const char    *src;
	const char    *expect;
} eval_cases[] = {
	/* precedence and associativity */
	{ __LINE__, A, "1 + 2 * 3", "n:7" },
	{ __LINE__, A, "(1 + 2) * 3", "n:9" },
	{ __LINE__, A, "10 - 4 - 3", "n:3" },
	{ __LINE__, A, "100 / 10 / 5", "n:2" },
	{ __LINE__, A, "2 * 3 % 4", "n:2" },
	{ __LINE__, A, "2 + 3 % 4", "n:5" },
	{ __LINE__, A, "-2 * 3", "n:-6" },
	{ __LINE__, A, "- -2", "n:2" },
	{ __LINE__, A, "-(2 + 3)", "n:-5" },
	{ __LINE__, A, "2 - -3", "n:5" },
	{ __LINE__, A, "1 + 2 == 3", "b:true" },
	{ __LINE__, A, "1 < 2 == true", "b:true" },
	{ __LINE__, A, "2 > 1 != 1 > 2", "b:true" },
	{ __LINE__, A, "true || false && false", "b:true" },
	{ __LINE__, A, "false && true || true", "b:true" },
	{ __LINE__, A, "!false && false", "b:false" },
	{ __LINE__, A, "!!true", "b:true" },
	{ __LINE__, A, "true ? 1 : false ? 2 : 3", "n:1" },
	{ __LINE__, A, "false ? 1 : false ? 2 : 3", "n:3" },
	{ __LINE__, A, "false ? 1 : true ? 2 : 3", "n:2" },
	{ __LINE__, A, "true ? false ? 1 : 2 : 3", "n:2" },
	{ __LINE__, A, "true || false ? 1 : 2", "n:1" },
	{ __LINE__, A, "1 < 2 ? \"y\" : \"n\"", "s:y" },
	{ __LINE__, A, "1 + 1 in [2, 3]", "b:true" },
	{ __LINE__, A, "2 in [1, 2] == true", "b:true" },
	{ __LINE__, A, "2 × 3", "n:6" },
	{ __LINE__, A, "2×3+1", "n:7" },
	{ __LINE__, A, "1 + 2×3", "n:7" },
	{ __LINE__, A, "((((1))))", "n:1" },
	{ __LINE__, A, " \t\n1\r\n+ 1 ", "n:2" },
	/* arithmetic */
	{ __LINE__, A, "7 % 3", "n:1" },
	{ __LINE__, A, "-7 % 3", "n:-1" },
	{ __LINE__, A, "7 % -3", "n:1" },
	{ __LINE__, A, "7.5 % 2", "n:3/2" },
	{ __LINE__, A, "-7.5 % 2", "n:-3/2" },
	{ __LINE__, A, "1 % 0.3", "n:1/10" },
	{ __LINE__, A, "1 / 3", "n:1/3" },
	{ __LINE__, A, "1 / 3 * 3 == 1", "b:true" },
	{ __LINE__, A, "5 - 7", "n:-2" },
	{ __LINE__, A, "1e3 + 1E-1", "n:10001/10" },
	{ __LINE__, A, "\"ab\" + \"cd\"", "s:abcd" },
	{ __LINE__, A, "properties.cat + \"!\"", "s:electronics!" },
	{ __LINE__, A, "\"\" + properties.e", "s:" },
	/* exactness */
	{ __LINE__, A, "19.99 * 100 == 1999", "b:true" },
	{ __LINE__, A, "19.99 * 100", "n:1999" },
	{ __LINE__, A, "0.29 * 100 == 29", "b:true" },
	{ __LINE__, A, "properties.price * 100", "n:1999" },
	{ __LINE__, A, "properties.tiny * 100", "n:29" },
	{ __LINE__, A, "0.1 + 0.2 == 0.3", "b:true" },
	{ __LINE__, A, "properties.p1 + properties.p2 == 0.3", "b:true" },
	{ __LINE__, A, "round(1.005 * 100)", "n:101" },
	{ __LINE__, A, "floor(1.005 * 100)", "n:100" },
	{ __LINE__, A, "ceil(1.005 * 100)", "n:101" },
	{ __LINE__, A, "round(1.005 * 100) / 100", "n:101/100" },
	{ __LINE__, A, "properties.big + 1", "n:18446744073709551616" },
	{ __LINE__, A, "properties.huge / 1e399", "n:10" },
	{ __LINE__, A, "properties.i64 * 2", "n:-84" },
	{ __LINE__, A, "properties.cents", "n:1999" },
	/* comparisons */
	{ __LINE__, A, "1 <= 1", "b:true" },
	{ __LINE__, A, "1 < 1", "b:false" },
	{ __LINE__, A, "2 >= 3", "b:false" },
	{ __LINE__, A, "3 > 2.999", "b:true" },
	{ __LINE__, A, "1.0 == 1", "b:true" },
	{ __LINE__, A, "1e2 == 100", "b:true" },
	{ __LINE__, A, "\"a\" < \"b\"", "b:true" },
	{ __LINE__, A, "\"ab\" < \"a\"", "b:false" },
	{ __LINE__, A, "\"a\" <= \"a\"", "b:true" },
	{ __LINE__, A, "\"\\u00e9\" > \"z\"", "b:true" },
	{ __LINE__, A, "event.occurred_at >= \"2024-01-01\"", "b:true" },
	/* null and mixed types with == and != */
	{ __LINE__, A, "null == null", "b:true" },
	{ __LINE__, A, "null != null", "b:false" },
	{ __LINE__, A, "null == 1", "b:false" },
	{ __LINE__, A, "null != 1", "b:true" },
	{ __LINE__, A, "1 == \"1\"", "b:false" },
	{ __LINE__, A, "1 != \"1\"", "b:true" },
	{ __LINE__, A, "true == 1", "b:false" },
	{ __LINE__, A, "\"a\" == \"a\"", "b:true" },
	{ __LINE__, A, "\"a\\u0000b\" == properties.nulbyte", "b:true" },
	{ __LINE__, A, "\"a\" == properties.nulbyte", "b:false" },
	{ __LINE__, A, "properties.missing == null", "b:true" },
	{ __LINE__, A, "properties.nul == null", "b:true" },
	{ __LINE__, A, "properties.missing", "null" },
	{ __LINE__, A, "null", "null" },
	/* null with other operators: does not apply */
	{ __LINE__, A, "properties.missing + 1", "!null operand of '+'" },
	{ __LINE__, A, "properties.nul * 2", "!null operand of '*'" },
	{ __LINE__, A, "properties.missing > 1", "!null operand of '>'" },
	{ __LINE__, A, "-properties.missing", "!null operand of unary '-'" },
	{ __LINE__, A, "!properties.missing", "!operand of '!' is null" },
	{ __LINE__, A, "properties.missing && true", "!operand of '&&' is null" },
	{ __LINE__, A, "false || properties.nul", "!operand of '||' is null" },
	{ __LINE__, A, "properties.missing ? 1 : 2",
	    "!condition of '?:' is null" },
	{ __LINE__, A, "properties.missing in [1, null]", "!null operand of 'in'" },
	{ __LINE__, A, "min(1, properties.missing)", "!null argument of min()" },
	{ __LINE__, A, "floor(properties.missing)", "!null argument of floor()" },
	{ __LINE__, A, "lower(properties.missing)", "!null argument of lower()" },
	/* short circuit and laziness */
	{ __LINE__, A, "false && properties.missing", "b:false" },
	{ __LINE__, A, "true || 1 / 0 == 1", "b:true" },
	{ __LINE__, A, "false && 1 / 0 == 1", "b:false" },
	{ __LINE__, A, "true && properties.missing", "!operand of '&&' is null" },
	{ __LINE__, A, "false || properties.cat", "!needs a boolean, not a string" },
	{ __LINE__, A, "true ? 1 : 1 / 0", "n:1" },
	{ __LINE__, A, "false ? 1 / 0 : 2", "n:2" },
	{ __LINE__, A, "coalesce(1, 1 / 0)", "n:1" },
	{ __LINE__, A, "1 in [1, 1 / 0]", "b:true" },
	{ __LINE__, A, "2 in [1, 1 / 0]", "!division by zero" },
	/* division by zero */
	{ __LINE__, A, "1 / 0", "!division by zero" },
	{ __LINE__, A, "1 % 0", "!modulo by zero" },
	{ __LINE__, A, "properties.amount / properties.zero", "!division by zero" },
	{ __LINE__, A, "1 / (0.1 + 0.2 - 0.3)", "!division by zero" },
	/* type errors at run time */
	{ __LINE__, A, "properties.cat * 2", "!'*' on a string and a number" },
	{ __LINE__, A, "properties.cat + 1", "!'+' on a string and a number" },
	{ __LINE__, A, "properties.flag + 1", "!'+' on a boolean and a number" },
	{ __LINE__, A, "properties.cat < 1", "!'<' on a string and a number" },
	{ __LINE__, A, "-properties.cat", "!unary '-' on a string" },
	{ __LINE__, A, "!properties.amount", "!needs a boolean, not a number" },
	{ __LINE__, A, "properties.amount ? 1 : 2", "!needs a boolean" },
	{ __LINE__, A, "properties.obj == 1", "!properties.obj is an object" },
	{ __LINE__, A, "properties.arr", "!properties.arr is an array" },
	{ __LINE__, A, "has(properties.obj)", "b:true" },
	{ __LINE__, A, "has((properties.cat))", "b:true" },
	{ __LINE__, A, "coalesce(1, \"a\") * 2", "n:2" },
	{ __LINE__, A, "properties.nan", "!not usable" },
	{ __LINE__, A, "properties.toobig", "!not usable" },
	{ __LINE__, A, "abs(properties.cat)", "!abs() needs a number" },
	{ __LINE__, A, "upper(properties.amount)", "!upper() needs a string" },
	/* functions */
	{ __LINE__, A, "min(3, 1, 2)", "n:1" },
	{ __LINE__, A, "max(3, 1, 2)", "n:3" },
	{ __LINE__, A, "min(5)", "n:5" },
	{ __LINE__, A, "max(-1, -0.5)", "n:-1/2" },
	{ __LINE__, A, "min(properties.amount, 100)", "n:100" },
	{ __LINE__, A, "floor(-1.5)", "n:-2" },
	{ __LINE__, A, "ceil(-1.5)", "n:-1" },
	{ __LINE__, A, "round(-2.5)", "n:-3" },
	{ __LINE__, A, "round(2.5)", "n:3" },
	{ __LINE__, A, "round(2.4999)", "n:2" },
	{ __LINE__, A, "round(-0.4)", "n:0" },
	{ __LINE__, A, "abs(-3.25)", "n:13/4" },
	{ __LINE__, A, "abs(2)", "n:2" },
	{ __LINE__, A, "has(properties.cat)", "b:true" },
	{ __LINE__, A, "has(properties.missing)", "b:false" },
	{ __LINE__, A, "has(properties.nul)", "b:false" },
	{ __LINE__, A, "has(properties.off)", "b:true" },
	{ __LINE__, A, "coalesce(properties.missing, properties.nul, 7)", "n:7" },
	{ __LINE__, A, "coalesce(null)", "null" },
	{ __LINE__, A, "coalesce(properties.missing)", "null" },
	{ __LINE__, A, "coalesce(profile.vars.total_spend, 0) + properties.amount",
	    "n:226" },
	{ __LINE__, A, "coalesce(profile.vars.none, 0) + properties.amount",
	    "n:251/2" },
	{ __LINE__, A, "lower(properties.Name)", "s:mixed" },
	{ __LINE__, A, "upper(properties.Name)", "s:MIXED" },
	{ __LINE__, A, "upper(\"a\\u00e9z\")", "s:A\xc3\xa9Z" },
	{ __LINE__, A, "lower(\"\")", "s:" },
	/* paths */
	{ __LINE__, A, "event.type", "s:purchase_completed" },
	{ __LINE__, A, "event.source", "s:brand.pos" },
	{ __LINE__, A, "event.occurred_at", "s:2024-05-01T10:00:00Z" },
	{ __LINE__, A, "profile.tier", "s:silver" },
	{ __LINE__, A, "profile.balance.points", "n:170" },
	{ __LINE__, A, "profile.lifetime.points", "n:1170" },
	{ __LINE__, A, "profile.balance.attempts", "n:-3" },
	{ __LINE__, A, "profile.balance.nope", "n:0" },
	{ __LINE__, A, "profile.lifetime.nope", "n:0" },
	{ __LINE__, A, "profile.vars.seen", "b:true" },
	{ __LINE__, A, "profile.vars.nick", "s:bob" },
	{ __LINE__, A, "profile.vars.nope", "null" },
	{ __LINE__, A, "properties.in", "n:5" },
	{ __LINE__, A, "properties.in in [5]", "b:true" },
	/* in */
	{ __LINE__, A, "properties.cat in [\"tv\", \"electronics\"]", "b:true" },
	{ __LINE__, A, "properties.cat in [\"tv\", \"audio\"]", "b:false" },
	{ __LINE__, A, "properties.cat in []", "b:false" },
	{ __LINE__, A, "1 in [\"1\", 1.0]", "b:true" },
	{ __LINE__, A, "true in [null, false]", "b:false" },
	/* string literals */
	{ __LINE__, A, "\"a\\\"b\" == properties.esc", "b:true" },
	{ __LINE__, A, "\"\\u00e9\" == properties.utf", "b:true" },
	{ __LINE__, A, "\"\\u00E9\" == \"\xc3\xa9\"", "b:true" },
	{ __LINE__, A, "\"\\ud83d\\ude00\"", "s:\xf0\x9f\x98\x80" },
	{ __LINE__, A, "\"\\n\\t\\\\\\/\"", "s:\n\t\\/" },
	/* what the expression must produce, at run time */
	{ __LINE__, B, "properties.amount > 100", "b:true" },
	{ __LINE__, B, "properties.amount", "!condition is a number, not a boolean" },
	{ __LINE__, B, "properties.missing", "!condition is null" },
	{ __LINE__, B, "profile.vars.seen", "b:true" },
	{ __LINE__, N, "properties.cat", "!result is a string, not a number" },
	{ __LINE__, N, "properties.nul", "!result is null" },
	{ __LINE__, N, "profile.vars.total_spend", "n:201/2" },
	{ __LINE__, N, "properties.amount * 1 + (properties.amount > 100 ? 50 : 0)",
	    "n:351/2" },
};

/* Compare v with an expectation string (see eval_cases). 1 if equal. */
static int
value_is(const struct rule_value *v, const char *expect)
{
	if (strcmp(expect, "null") == 0)
		return v->type == RULE_V_NULL;
	if (strcmp(expect, "b:true") == 0)
		return v->type == RULE_V_BOOL && v->b == 1;
	if (strcmp(expect, "b:false") == 0)
		return v->type == RULE_V_BOOL && v->b == 0;
	if (strncmp(expect, "s:", 2) == 0)
		return v->type == RULE_V_STR && v->len == strlen(expect + 2) &&
		    memcmp(v->str, expect + 2, v->len) == 0 &&
		    v->str[v->len] == '\0';
	if (strncmp(expect, "n:", 2) == 0) {
		mpq_t q;
		int   r;

		if (v->type != RULE_V_NUM)
			return 0;
		mpq_init(q);
		mpq_set_str(q, expect + 2, 10);
		mpq_canonicalize(q);
		r = mpq_equal(q, v->num);
		mpq_clear(q);
		return r;
	}
	return 0;
}

static void
test_eval(void)
{
	size_t i;

	for (i = 0; i < sizeof(eval_cases) / sizeof(eval_cases[0]); i++) {
		const char       *src = eval_cases[i].src;
		const char       *exp = eval_cases[i].expect;
		struct rule_err   err;
		struct rule_expr *e;
		struct rule_value v;
		char              why[RULE_WHY_MAX];
		int               r;

		e = rule_expr_compile(src, strlen(src), eval_cases[i].want, &err);
		T_CHECK(eval_cases[i].line, e != NULL, "compile %s: col %u: %s",
		    src, err.col, err.msg);
		if (e == NULL)
			continue;
		memset(why, 'x', sizeof(why));
		r = rule_expr_eval(e, &g_env, &v, why, sizeof(why));
		if (exp[0] == '!') {
			T_CHECK(eval_cases[i].line, r == -1 &&
			    v.type == RULE_V_NULL && strstr(why, exp + 1) != NULL,
			    "%s: r=%d why='%s', want failure '%s'", src, r,
			    r == -1 ? why : "", exp + 1);
		} else {
			char *t = v.type == RULE_V_NUM ?
			    rule_dec_to_text(v.num, 6) : NULL;

			T_CHECK(eval_cases[i].line, r == 0 && value_is(&v, exp),
			    "%s: r=%d (%s) type %d %s, want %s", src, r,
			    r ? why : "", v.type, t ? t : (v.str ? v.str : ""),
			    exp);
			free(t);
		}
		rule_value_clear(&v);
		rule_value_clear(&v);   /* clearing twice is safe */
		rule_expr_free(e);
	}
}

/* An environment with nothing in it: paths read null/0. */
static void
test_eval_empty_env(void)
{
	static const struct {
		int         line;
		const char *src;
		const char *expect;
	} cases[] = {
		{ __LINE__, "properties.x == null", "b:true" },
		{ __LINE__, "event.type == null", "b:true" },
		{ __LINE__, "profile.tier", "null" },
		{ __LINE__, "profile.balance.points", "n:0" },
		{ __LINE__, "profile.vars.x", "null" },
		{ __LINE__, "has(properties.x)", "b:false" },
	};
	struct rule_env env;
	size_t          i;

	memset(&env, 0, sizeof(env));
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rule_err   err;
		struct rule_expr *e = rule_expr_compile(cases[i].src,
		    strlen(cases[i].src), RULE_WANT_ANY, &err);
		struct rule_value v;

		T_CHECK(cases[i].line, e != NULL, "compile %s", cases[i].src);
		if (e == NULL)
			continue;
		T_CHECK(cases[i].line, rule_expr_eval(e, &env, &v, NULL, 0) == 0
		    && value_is(&v, cases[i].expect), "%s", cases[i].src);
		rule_value_clear(&v);
		T_CHECK(cases[i].line, rule_expr_eval(e, NULL, &v, NULL, 0) == 0
		    && value_is(&v, cases[i].expect), "%s (NULL env)",
		    cases[i].src);
		rule_value_clear(&v);
		rule_expr_free(e);
	}
}

/* ---- expressions: compile errors ---- */

static const struct {
	int            line;
	enum rule_want want;
	const char    *src;
	unsigned       col;
	const char    *msg;       /* substring of the message */
} err_cases[] = {
	/* syntax */
	{ __LINE__, A, "", 1, "empty expression" },
	{ __LINE__, A, "   ", 4, "empty expression" },
	{ __LINE__, A, "1 +", 4, "a value expected, found end of expression" },
	{ __LINE__, A, "(1 + 2", 7, "')' expected" },
	{ __LINE__, A, "(1))", 4, "found ')'" },
	{ __LINE__, A, "1 + * 2", 5, "a value expected, found '*'" },
	{ __LINE__, A, "1 2", 3, "found '2'" },
	{ __LINE__, A, "1 = 1", 3, "did you mean '=='" },
	{ __LINE__, A, "true | false", 6, "did you mean '||'" },
	{ __LINE__, A, "true & false", 6, "did you mean '&&'" },
	{ __LINE__, A, "012", 1, "leading zero" },
	{ __LINE__, A, "1.", 3, "digit expected after '.'" },
	{ __LINE__, A, "1e", 3, "digit expected in exponent" },
	{ __LINE__, A, "1e+x", 4, "digit expected in exponent" },
	{ __LINE__, A, "12abc", 3, "malformed number" },
	{ __LINE__, A, "1.5.5", 4, "malformed number" },
	{ __LINE__, A, ".5", 1, "found '.'" },
	{ __LINE__, A, "1e1001", 1, "exponent beyond 1000" },
	{ __LINE__, A, "2 + 1e-5000", 5, "exponent beyond 1000" },
	{ __LINE__, A, "\"abc", 1, "unterminated string" },
	{ __LINE__, A, "\"abc\\", 1, "unterminated string" },
	{ __LINE__, A, "\"a\\qb\"", 3, "unknown escape" },
	{ __LINE__, A, "\"\\u12\"", 2, "four hex digits" },
	{ __LINE__, A, "\"\\u12g4\"", 2, "four hex digits" },
	{ __LINE__, A, "\"\\ud800\"", 2, "unpaired surrogate" },
	{ __LINE__, A, "\"\\ud800\\u0041\"", 2, "unpaired surrogate" },
	{ __LINE__, A, "\"\\udc00\"", 2, "unpaired surrogate" },
	{ __LINE__, A, "\"a\x01\"", 3, "control character" },
	{ __LINE__, A, "\"a\nb\"", 3, "control character" },
	{ __LINE__, A, "\"\xc3\xa9\" ^", 5, "unexpected character" },
	{ __LINE__, A, "\"\xc3\xa9\xc3\xa9\" + @", 8, "unexpected character" },
	{ __LINE__, A, "1 \xff", 3, "invalid UTF-8" },
	{ __LINE__, A, "\"\xc0\xaf\"", 2, "invalid UTF-8" },
	{ __LINE__, A, "\"\xed\xa0\x80\"", 2, "invalid UTF-8" },
	{ __LINE__, A, "\"\xe2\x82\"", 2, "invalid UTF-8" },
	{ __LINE__, A, "1 \xc3\xa9", 3, "unexpected character" },
	{ __LINE__, A, "2 \xc3\x97\xc3\x97 3", 4, "a value expected, found '*'" },
	{ __LINE__, A, "1 in 2", 6, "'[' after 'in' expected" },
	{ __LINE__, A, "1 in [1, 2", 11, "']' expected" },
	{ __LINE__, A, "1 in [1,]", 9, "a value expected" },
	{ __LINE__, A, "true ? 1", 9, "':' of '?:' expected" },
	{ __LINE__, A, "true ? 1 2", 10, "':' of '?:' expected" },
	{ __LINE__, A, "min(1,", 7, "a value expected" },
	{ __LINE__, A, "min(1 2)", 7, "')' expected" },
	/* names */
	{ __LINE__, A, "foo", 1, "unknown name 'foo'" },
	{ __LINE__, A, "1 + amount", 5, "unknown name 'amount'" },
	{ __LINE__, A, "properties", 11, "'.' expected after properties" },
	{ __LINE__, A, "properties.", 12, "name expected, found end" },
	{ __LINE__, A, "properties.1", 12, "name expected" },
	{ __LINE__, A, "properties.a.b", 13, "properties has no fields" },
	{ __LINE__, A, "event.kind", 1, "unknown field event.kind" },
	{ __LINE__, A, "event.type.x", 11, "has no fields" },
	{ __LINE__, A, "profile.points", 1, "unknown field profile.points" },
	{ __LINE__, A, "profile.balance", 16, "'.' expected after profile.balance" },
	{ __LINE__, A, "profile.vars.", 14, "name expected" },
	{ __LINE__, A, "pow(2, 3)", 1, "unknown function 'pow'" },
	{ __LINE__, A, "1 + properties(1)", 5, "unknown function 'properties'" },
	/* arity */
	{ __LINE__, A, "floor(1, 2)", 1, "floor() takes 1 argument, not 2" },
	{ __LINE__, A, "round()", 1, "round() takes 1 argument, not 0" },
	{ __LINE__, A, "min()", 1, "min() takes at least 1 argument, not 0" },
	{ __LINE__, A, "coalesce()", 1, "at least 1 argument" },
	{ __LINE__, A, "lower(\"a\", \"b\")", 1, "takes 1 argument, not 2" },
	{ __LINE__, A, "has(properties.a, properties.b)", 1, "takes 1 argument" },
	/* static types */
	{ __LINE__, A, "has(1)", 5, "has() takes a properties.NAME path" },
	{ __LINE__, A, "has(profile.vars.x)", 5, "properties.NAME path" },
	{ __LINE__, A, "\"a\" * 2", 5, "'*' needs numbers, not a string" },
	{ __LINE__, A, "2 * \"a\"", 3, "'*' needs numbers, not a string" },
	{ __LINE__, A, "2 / true", 3, "'/' needs numbers, not a boolean" },
	{ __LINE__, A, "2 % null", 3, "'%' needs numbers, not null" },
	{ __LINE__, A, "\"a\" - 1", 5, "'-' needs numbers" },
	{ __LINE__, A, "!5", 1, "'!' needs a boolean, not a number" },
	{ __LINE__, A, "-\"x\"", 1, "unary '-' needs a number, not a string" },
	{ __LINE__, A, "null + 1", 6, "'+' needs two numbers or two strings, "
	    "not null and a number" },
	{ __LINE__, A, "true + 1", 6, "'+' needs two numbers or two strings" },
	{ __LINE__, A, "\"a\" + 1", 5, "not a string and a number" },
	{ __LINE__, A, "3 > 2 > 1", 7, "'>' needs two numbers or two strings, "
	    "not a boolean and a number" },
	{ __LINE__, A, "\"a\" < 1", 5, "'<' needs two numbers or two strings" },
	{ __LINE__, A, "1 && true", 3, "'&&' needs booleans, not a number" },
	{ __LINE__, A, "properties.x && 1", 14, "'&&' needs booleans, not a number" },
	{ __LINE__, A, "true || \"x\"", 6, "'||' needs booleans, not a string" },
	{ __LINE__, A, "1 ? 2 : 3", 3, "condition of '?:' needs a boolean, not a number" },
	{ __LINE__, A, "null in [1]", 6, "'in' needs a value on its left" },
	{ __LINE__, A, "lower(1)", 7, "lower needs a string, not a number" },
	{ __LINE__, A, "abs(\"x\")", 5, "abs needs numbers, not a string" },
	{ __LINE__, A, "max(1, true)", 8, "max needs numbers, not a boolean" },
	{ __LINE__, A, "floor(profile.tier)", 7, "not a string or null" },
	{ __LINE__, A, "profile.balance.points + \"x\"", 24, "not a number and a string" },
	{ __LINE__, A, "event.type * 2", 12, "not a string or null" },
	/* what the expression must produce */
	{ __LINE__, B, "1 + 2", 1, "must be a boolean (a condition), not a number" },
	{ __LINE__, B, "\"x\"", 1, "must be a boolean" },
	{ __LINE__, B, "null", 1, "must be a boolean (a condition), not null" },
	{ __LINE__, B, "properties.a > 1 ? 1 : \"b\"", 1, "not a number or a string" },
	{ __LINE__, B, "lower(properties.c)", 1, "not a string" },
	{ __LINE__, B, "profile.balance.points", 1, "not a number" },
	{ __LINE__, N, "true", 1, "must be a number, not a boolean" },
	{ __LINE__, N, "\"10\"", 1, "must be a number, not a string" },
	{ __LINE__, N, "1 > 2", 1, "must be a number" },
	{ __LINE__, N, "has(properties.x)", 1, "must be a number" },
	{ __LINE__, N, "event.type", 1, "not a string or null" },
};

static void
test_compile_errors(void)
{
	size_t i;

	for (i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); i++) {
		const char       *src = err_cases[i].src;
		struct rule_err   err;
		struct rule_expr *e;

		e = rule_expr_compile(src, strlen(src), err_cases[i].want, &err);
		T_CHECK(err_cases[i].line, e == NULL && err.col ==
		    err_cases[i].col && strstr(err.msg, err_cases[i].msg) != NULL,
		    "'%s': got %s col %u '%s', want col %u '%s'", src,
		    e ? "compiled" : "error", err.col, err.msg, err_cases[i].col,
		    err_cases[i].msg);
		rule_expr_free(e);
	}
	/* compile reads exactly len bytes */
	{
		struct rule_err   err;
		struct rule_expr *e = rule_expr_compile("1 + 2 )))", 5,
		    RULE_WANT_NUMBER, &err);
		struct rule_value v;

		T_OK(e != NULL, "length-bounded compile: %s", err.msg);
		T_OK(e && rule_expr_eval(e, &g_env, &v, NULL, 0) == 0 &&
		    value_is(&v, "n:3"), "length-bounded value");
		rule_value_clear(&v);
		rule_expr_free(e);
		T_OK(rule_expr_compile(NULL, 0, RULE_WANT_ANY, &err) == NULL,
		    "NULL source");
	}
}

/* ---- limits ---- */

/* A malloc'd string: pre × n, then mid, then post × n. */
static char *
repeat(const char *pre, size_t n, const char *mid, const char *post)
{
	size_t lp = strlen(pre), lm = strlen(mid), lq = strlen(post), i, o = 0;
	char  *s = malloc(n * (lp + lq) + lm + 1);

	if (s == NULL)
		abort();
	for (i = 0; i < n; i++, o += lp)
		memcpy(s + o, pre, lp);
	memcpy(s + o, mid, lm);
	o += lm;
	for (i = 0; i < n; i++, o += lq)
		memcpy(s + o, post, lq);
	s[o] = '\0';
	return s;
}

static const struct {
	int         line;
	const char *pre;
	size_t      n;
	const char *mid;
	const char *post;
	int         ok;
} depth_cases[] = {
	{ __LINE__, "(", 63, "1", ")", 1 },
	{ __LINE__, "(", 64, "1", ")", 0 },
	{ __LINE__, "(", 2000, "1", ")", 0 },
	{ __LINE__, "-", 63, "1", "", 1 },
	{ __LINE__, "-", 64, "1", "", 0 },
	{ __LINE__, "!", 63, "true", "", 1 },
	{ __LINE__, "!", 3000, "true", "", 0 },
	{ __LINE__, "", 63, "1", "+1", 1 },          /* height 64 */
	{ __LINE__, "", 64, "1", "+1", 0 },          /* height 65 */
	{ __LINE__, "", 63, "1", "*1", 1 },
	{ __LINE__, "", 800, "1", "*1", 0 },
	{ __LINE__, "abs(", 63, "1", ")", 1 },
	{ __LINE__, "abs(", 64, "1", ")", 0 },
	{ __LINE__, "true ? 1 : ", 63, "2", "", 1 },
	{ __LINE__, "true ? 1 : ", 64, "2", "", 0 },
	{ __LINE__, "1 in [", 63, "1", "]", 1 },
	{ __LINE__, "1 in [", 64, "1", "]", 0 },
	{ __LINE__, "", 63, "true", "&&true", 1 },
	{ __LINE__, "", 64, "true", "&&true", 0 },
};

static void
test_limits(void)
{
	struct rule_err   err;
	struct rule_expr *e;
	struct rule_value v;
	char             *s;
	size_t            i;

	for (i = 0; i < sizeof(depth_cases) / sizeof(depth_cases[0]); i++) {
		s = repeat(depth_cases[i].pre, depth_cases[i].n,
		    depth_cases[i].mid, depth_cases[i].post);
		e = rule_expr_compile(s, strlen(s), RULE_WANT_ANY, &err);
		if (depth_cases[i].ok) {
			T_CHECK(depth_cases[i].line, e != NULL, "%zu × '%s': %s",
			    depth_cases[i].n, depth_cases[i].pre, err.msg);
			T_CHECK(depth_cases[i].line, e && rule_expr_eval(e,
			    &g_env, &v, NULL, 0) == 0, "eval deep");
			rule_value_clear(&v);
		} else
			T_CHECK(depth_cases[i].line, e == NULL && strstr(err.msg,
			    "nested too deeply") != NULL, "%zu × '%s': %s",
			    depth_cases[i].n, depth_cases[i].pre,
			    e ? "compiled" : err.msg);
		rule_expr_free(e);
		free(s);
	}

	/* length: RULE_EXPR_MAX_LEN bytes compile, one more does not */
	s = malloc(RULE_EXPR_MAX_LEN + 2);
	memset(s, ' ', RULE_EXPR_MAX_LEN + 1);
	s[0] = '1';
	s[RULE_EXPR_MAX_LEN + 1] = '\0';
	e = rule_expr_compile(s, RULE_EXPR_MAX_LEN, RULE_WANT_NUMBER, &err);
	T_OK(e != NULL, "%d bytes compile: %s", RULE_EXPR_MAX_LEN, err.msg);
	rule_expr_free(e);
	e = rule_expr_compile(s, RULE_EXPR_MAX_LEN + 1, RULE_WANT_NUMBER, &err);
	T_OK(e == NULL && err.col == 1 && strstr(err.msg, "longer than 4096"),
	    "%d bytes rejected: %s", RULE_EXPR_MAX_LEN + 1, err.msg);
	rule_expr_free(e);
	free(s);

	/* the string length limit of '+' */
	{
		json_object *p = json_object_new_object();
		char        *big = malloc(RULE_STR_MAX / 2 + 1);
		struct rule_env env;
		char         why[RULE_WHY_MAX];

		memset(big, 'x', RULE_STR_MAX / 2);
		big[RULE_STR_MAX / 2] = '\0';
		json_object_object_add(p, "s", json_object_new_string(big));
		memset(&env, 0, sizeof(env));
		env.properties = p;
		s = "properties.s + properties.s";
		e = rule_expr_compile(s, strlen(s), RULE_WANT_ANY, &err);
		T_OK(e && rule_expr_eval(e, &env, &v, why, sizeof(why)) == 0 &&
		    v.len == RULE_STR_MAX, "concat up to RULE_STR_MAX");
		rule_value_clear(&v);
		rule_expr_free(e);
		s = "properties.s + properties.s + \"y\"";
		e = rule_expr_compile(s, strlen(s), RULE_WANT_ANY, &err);
		T_OK(e && rule_expr_eval(e, &env, &v, why, sizeof(why)) == -1 &&
		    strstr(why, "string longer than"), "concat beyond limit");
		rule_value_clear(&v);
		rule_expr_free(e);
		json_object_put(p);
		free(big);
	}

	/* why buffer: truncated, always NUL-terminated; NULL allowed */
	{
		char why[8];

		s = "1 / 0";
		e = rule_expr_compile(s, strlen(s), RULE_WANT_ANY, &err);
		T_OK(e && rule_expr_eval(e, &g_env, &v, why, sizeof(why)) == -1 &&
		    strcmp(why, "divisio") == 0, "why truncated: %s", why);
		T_OK(e && rule_expr_eval(e, &g_env, &v, NULL, 0) == -1,
		    "why NULL");
		rule_expr_free(e);
	}
}

/* ---- which expressions read profile.vars ---- */

static const struct {
	int             line;
	const char     *src;
	enum rule_want  want;
	int             reads;
} vcases[] = {
	{ __LINE__, "properties.amount * 1", RULE_WANT_NUMBER, 0 },
	{ __LINE__, "profile.vars.visits", RULE_WANT_ANY, 1 },
	{ __LINE__, "coalesce(profile.vars.total_spend, 0) + properties.amount",
	  RULE_WANT_NUMBER, 1 },
	{ __LINE__, "profile.tier == \"gold\" && profile.balance.points > 10",
	  RULE_WANT_BOOL, 0 },
	{ __LINE__, "profile.lifetime.points >= 100 ? 2 : 1", RULE_WANT_NUMBER, 0 },
	{ __LINE__, "coalesce(profile.vars.x, 0) > 1", RULE_WANT_BOOL, 1 },
	{ __LINE__, "\"profile.vars.x\" == event.type", RULE_WANT_BOOL, 0 },
	{ __LINE__, "properties.vars", RULE_WANT_ANY, 0 },
	{ __LINE__, "1 + 2", RULE_WANT_NUMBER, 0 },
};

static void
test_reads_vars(void)
{
	struct rule_err   err;
	struct rule_expr *e;
	size_t            i;

	for (i = 0; i < sizeof(vcases) / sizeof(vcases[0]); i++) {
		e = rule_expr_compile(vcases[i].src, strlen(vcases[i].src),
		    vcases[i].want, &err);
		T_CHECK(vcases[i].line, e != NULL, "compile: %s", err.msg);
		if (e == NULL)
			continue;
		T_CHECK(vcases[i].line, rule_expr_reads_vars(e) == vcases[i].reads,
		    "reads_vars %d, want %d", rule_expr_reads_vars(e), vcases[i].reads);
		rule_expr_free(e);
	}
	T_OK(rule_expr_reads_vars(NULL) == 0, "reads_vars(NULL)");
}

/* ---- properties list, value helpers ---- */

static void
test_misc(void)
{
	struct rule_err   err;
	struct rule_expr *e;
	const char       *s = "properties.a + properties.bb * properties.a "
	    "+ (has(properties.c) ? 1 : 0)";
	unsigned          col = 0;

	e = rule_expr_compile(s, strlen(s), RULE_WANT_NUMBER, &err);
	T_OK(e != NULL, "props compile: %s", err.msg);
	T_OK(rule_expr_nprops(e) == 3, "nprops %zu", rule_expr_nprops(e));
	T_OK(rule_expr_prop(e, 0, &col) && strcmp(rule_expr_prop(e, 0, &col),
	    "a") == 0 && col == 1, "prop 0");
	T_OK(rule_expr_prop(e, 1, &col) && strcmp(rule_expr_prop(e, 1, &col),
	    "bb") == 0 && col == 16, "prop 1 col %u", col);
	T_OK(rule_expr_prop(e, 2, NULL) && strcmp(rule_expr_prop(e, 2, NULL),
	    "c") == 0, "prop 2");
	T_OK(rule_expr_prop(e, 3, &col) == NULL, "prop 3");
	rule_expr_free(e);
	rule_expr_free(NULL);
	T_OK(rule_expr_nprops(NULL) == 0, "nprops NULL");

	/* from_json / to_json round trip */
	{
		static const struct {
			int         line;
			const char *json;
			const char *expect;
			const char *back;    /* to_json text, maxfrac 6 */
		} cases[] = {
			{ __LINE__, "12.50", "n:25/2", "12.5" },
			{ __LINE__, "-0.0", "n:0", "0" },
			{ __LINE__, "true", "b:true", "true" },
			{ __LINE__, "\"x\\u0000y\"", "s:x", "\"x\\u0000y\"" },
			{ __LINE__, "null", "null", "null" },
			{ __LINE__, "1e2", "n:100", "100" },
			{ __LINE__, "{}", "!is an object", NULL },
			{ __LINE__, "[]", "!is an array", NULL },
			{ __LINE__, "1e2000", "!not usable", NULL },
		};
		size_t i;

		for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			json_object      *o = json_tokener_parse(cases[i].json);
			struct rule_value v, c;
			char              why[RULE_WHY_MAX] = "";
			int               r = rule_value_from_json(o, &v, why,
			    sizeof(why));

			if (cases[i].expect[0] == '!') {
				T_CHECK(cases[i].line, r == -1 &&
				    v.type == RULE_V_NULL &&
				    strstr(why, cases[i].expect + 1),
				    "from_json %s: %s", cases[i].json, why);
			} else if (strcmp(cases[i].json, "\"x\\u0000y\"") == 0) {
				T_CHECK(cases[i].line, r == 0 &&
				    v.type == RULE_V_STR && v.len == 3 &&
				    memcmp(v.str, "x\0y", 3) == 0,
				    "from_json keeps U+0000");
			} else
				T_CHECK(cases[i].line, r == 0 &&
				    value_is(&v, cases[i].expect),
				    "from_json %s", cases[i].json);
			if (cases[i].back != NULL) {
				json_object *b;

				rule_value_copy(&c, &v);
				T_CHECK(cases[i].line, rule_value_equal(&c, &v),
				    "copy equal");
				b = rule_value_to_json(&c, 6);
				T_CHECK(cases[i].line, strcmp(
				    json_object_to_json_string(b),
				    cases[i].back) == 0, "to_json %s: %s",
				    cases[i].json, json_object_to_json_string(b));
				json_object_put(b);
				rule_value_clear(&c);
			}
			rule_value_clear(&v);
			json_object_put(o);
		}
	}
	/* to_json of a non-terminating rational */
	{
		struct rule_value v;
		json_object      *b;

		memset(&v, 0, sizeof(v));
		v.type = RULE_V_NUM;
		mpq_init(v.num);
		mpq_set_ui(v.num, 2, 3);
		b = rule_value_to_json(&v, 4);
		T_OK(strcmp(json_object_to_json_string(b), "0.6667") == 0,
		    "to_json 2/3: %s", json_object_to_json_string(b));
		json_object_put(b);
		rule_value_clear(&v);
	}
	/* equality across types */
	{
		struct rule_value a, b;

		memset(&a, 0, sizeof(a));
		memset(&b, 0, sizeof(b));
		T_OK(rule_value_equal(&a, &b), "null == null");
		b.type = RULE_V_BOOL;
		T_OK(!rule_value_equal(&a, &b), "null != false");
		rule_value_clear(NULL);
	}
}

int
main(void)
{
	t_file = "test_expr";
	env_setup();
	test_dec_parse();
	test_dec_misc();
	test_eval();
	test_eval_empty_env();
	test_compile_errors();
	test_limits();
	test_misc();
	test_reads_vars();
	json_object_put(g_props);
	json_object_put(g_vars);
	return t_done();
}
