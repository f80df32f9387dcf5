/*
 * rules/ — exact decimal numbers, the expression language of CONF.md and
 * the rule engine's pure evaluation core. Pure code: no I/O, nothing of
 * HTTP or SQL. Public names carry the rule_ prefix.
 *
 * Out of memory aborts the process (GMP does the same); no function here
 * reports it as an error.
 */
#ifndef RULES_H
#define RULES_H

#include <stddef.h>
#include <stdint.h>
#include <gmp.h>
#include <json-c/json.h>

/* ==== exact decimals (dec.c) ==== */

/* Largest |decimal exponent| accepted by rule_dec_parse(): keeps 1e999999999
 * from allocating a huge integer. 1e400 is accepted here; callers that need
 * a double-sized range check with rule_dec_in_double_range(). */
#define RULE_DEC_MAX_EXP 1000

/*
 * Parse a JSON number text (RFC 8259 §6 grammar: -?int frac? exp?) into an
 * exact rational. Returns 0 on success, -1 on bad syntax or an exponent
 * beyond RULE_DEC_MAX_EXP (the exponent as written, after "e"). `out` must
 * be initialised by the caller; it is left unchanged on error.
 */
int rule_dec_parse(const char *s, size_t len, mpq_t out);

/* 1 when |q| <= DBL_MAX (about 1.8e308), so every JSON peer can read it. */
int rule_dec_in_double_range(const mpq_t q);

/*
 * Canonical text of a JSON number (RFC 8259 §6 grammar) for fingerprints.
 * Write the value as  digits × 10^e  where `digits` are the significant
 * digits (integer and fraction digits together, leading and trailing zeros
 * stripped). Then the canonical form is:
 *   - "0" for any zero ("0", "-0", "0.0e5", ...);
 *   - otherwise "-" when negative, then `digits`, then, only when e != 0,
 *     "e" followed by e in decimal ("-" when negative, no "+").
 * Examples: "7" -> "7", "100" -> "1e2", "120.50" -> "1205e-1",
 * "1.2e2" -> "12e1", "-0.001" -> "-1e-3", "1E+0" -> "1", "12.5e-3" ->
 * "125e-4". Any exponent is accepted (no RULE_DEC_MAX_EXP limit).
 * Returns a malloc'd NUL-terminated string (caller frees) or NULL on bad
 * syntax.
 */
char *rule_dec_canon(const char *s, size_t len);

/* Text of q as a decimal when it has a finite decimal expansion with at most
 * `maxfrac` fraction digits, else rounded half away from zero to maxfrac
 * digits; no exponent, no trailing fraction zeros, never "-0" (e.g. 1205/10
 * -> "120.5", 1/3 with maxfrac 4 -> "0.3333", -1/1000 with maxfrac 2 ->
 * "0"). The result is valid JSON number text. Caller frees. */
char *rule_dec_to_text(const mpq_t q, unsigned maxfrac);

/* How a fractional number becomes an integer (CONF.md settings.rounding).
 * Same order as conf's enum conf_rounding. */
enum rule_rounding {
	RULE_ROUND_FLOOR,      /* toward -infinity */
	RULE_ROUND_HALF_AWAY,  /* "round": to nearest, halves away from zero */
	RULE_ROUND_CEIL,       /* toward +infinity */
	RULE_ROUND__MAX
};

/* Round q to an integer by `mode` into `out` (initialised by the caller). */
void rule_dec_round(mpz_t out, const mpq_t q, enum rule_rounding mode);

/* ==== values ==== */

/* What a compiled expression must produce. */
enum rule_want {
	RULE_WANT_ANY,      /* set: values */
	RULE_WANT_BOOL,     /* when: */
	RULE_WANT_NUMBER,   /* points:, amount: */
	RULE_WANT__MAX
};

enum rule_vtype {
	RULE_V_NULL,
	RULE_V_BOOL,
	RULE_V_NUM,
	RULE_V_STR,
	RULE_V__MAX
};

/* A value produced by evaluation. `num` is initialised only for RULE_V_NUM;
 * `str` (NUL-terminated, length `len`, may hold U+0000 inside) is owned by
 * the value. A zero-filled struct is a valid null. Release with
 * rule_value_clear(). */
struct rule_value {
	enum rule_vtype type;
	int             b;
	mpq_t           num;
	char           *str;
	size_t          len;
};

/* Free what v holds and make it null. Accepts NULL and null values; safe to
 * call twice. */
void rule_value_clear(struct rule_value *v);

/* Deep copy src into dst (dst need not be initialised; it is overwritten,
 * not cleared first). Caller clears dst with rule_value_clear(). */
void rule_value_copy(struct rule_value *dst, const struct rule_value *src);

/* 1 when a and b are the same type and value (the `==` of expressions:
 * null equals null, different types are never equal), else 0. */
int rule_value_equal(const struct rule_value *a, const struct rule_value *b);

/*
 * Convert a json-c value into *out (need not be initialised): NULL pointer
 * or json null -> null; boolean; string (bytes copied); a number -> exact
 * rational parsed with rule_dec_parse() from json_object_get_string(), i.e.
 * the original JSON text of doubles made with json_object_new_double_s()
 * and the decimal text of json-c int64/uint64 values (never the binary
 * double). Returns 0, or -1 with a reason in why (objects, arrays, NaN,
 * infinities, exponents beyond RULE_DEC_MAX_EXP); *out is null then.
 * Caller clears *out.
 */
int rule_value_from_json(json_object *o, struct rule_value *out, char *why,
    size_t whysz);

/*
 * New json-c value for v: null (returns NULL, which json-c treats as null),
 * boolean, string (length kept), or for a number a json-c double whose
 * serialisation is rule_dec_to_text(v->num, maxfrac) (exact when the number
 * has at most maxfrac fraction digits). Caller releases with
 * json_object_put().
 */
json_object *rule_value_to_json(const struct rule_value *v, unsigned maxfrac);

/* ==== expressions (CONF.md "Expressions"; expr.c, lex.c) ==== */

/* Compile error: 1-based column inside the expression text, counted in
 * Unicode characters (code points), and a message. */
struct rule_err {
	unsigned col;
	char     msg[160];
};

#define RULE_EXPR_MAX_LEN   4096     /* bytes of expression text */
#define RULE_EXPR_MAX_DEPTH 64       /* nesting of the parse tree */
#define RULE_STR_MAX        1048576  /* bytes of a string made by `+` */
#define RULE_WHY_MAX        192      /* room for a failure reason */

struct rule_expr; /* opaque compiled tree */

/*
 * Compile `src` (len bytes of UTF-8, need not be NUL-terminated) following
 * CONF.md "Expressions":
 *   literals   numbers in JSON syntax without sign (12, 12.5, 1e3; a
 *              leading "-" is the unary operator), exact; strings in
 *              double quotes with the JSON escapes \" \\ \/ \b \f \n \r \t
 *              \uXXXX (surrogates must pair); true, false, null
 *   paths      properties.NAME, event.type, event.source,
 *              event.occurred_at, profile.tier, profile.balance.NAME,
 *              profile.lifetime.NAME, profile.vars.NAME (NAME is
 *              [A-Za-z_][A-Za-z0-9_]*), resolved here; other roots fail
 *   operators  lowest first: ?: (right associative), ||, &&, == !=,
 *              < <= > >= in, + -, * × / %, unary ! -; parentheses.
 *              Binary operators are left associative.
 *   functions  min(n, ...), max(n, ...), floor(n), ceil(n), round(n)
 *              (half away from zero), abs(n), has(properties.NAME),
 *              coalesce(a, ...), lower(s), upper(s)
 * Static checks: a type error that is certain (an operand that can never
 * have a suitable type, e.g. "a" * 2, !5, null + 1), unknown names and
 * functions, wrong arity, has() on anything but a properties path, a
 * `when` (RULE_WANT_BOOL) that can never be a boolean, a points/amount
 * (RULE_WANT_NUMBER) that can never be a number; length above
 * RULE_EXPR_MAX_LEN, a tree deeper than RULE_EXPR_MAX_DEPTH (a chain
 * a+b+c+... counts one level per operator) or nesting deeper than that.
 * Returns the tree (caller frees with rule_expr_free()) or NULL with *err
 * set (err may not be NULL).
 */
struct rule_expr *rule_expr_compile(const char *src, size_t len,
    enum rule_want want, struct rule_err *err);
void rule_expr_free(struct rule_expr *e);   /* accepts NULL */

/* Number of distinct properties.NAME paths the expression reads, and the
 * i-th one (NUL-terminated, owned by e) with its column, in order of first
 * appearance: lets conf/ check names against the event type. NULL when i
 * is out of range. */
size_t      rule_expr_nprops(const struct rule_expr *e);
/* Does the expression read profile.vars.NAME? (0 for NULL) Lets the
 * service skip reading variables nobody reads. */
int         rule_expr_reads_vars(const struct rule_expr *e);
const char *rule_expr_prop(const struct rule_expr *e, size_t i,
    unsigned *col);

/* A balance of the profile, for profile.balance.NAME and
 * profile.lifetime.NAME. A balance the profile does not have reads as 0. */
struct rule_balance {
	const char *name;
	int64_t     balance;
	int64_t     lifetime;
};

/*
 * What an expression can read; filled by the caller, nothing is owned.
 *   properties  JSON object of the event's properties, or NULL (all
 *               missing). A missing property or a json null is null;
 *               numbers are read exactly as rule_value_from_json() does;
 *               an object or array fails the evaluation when read.
 *   event_*     strings (NULL reads as null). occurred_at as stored.
 *   tier        the profile's current tier name, NULL when none (null).
 *   balances    the profile's balances (see struct rule_balance).
 *   vars        JSON object of the profile's variables (name -> value,
 *               read like properties), or NULL; a missing one is null.
 */
struct rule_env {
	json_object               *properties;
	const char                *event_type;
	const char                *event_source;
	const char                *event_occurred_at;
	const char                *tier;
	const struct rule_balance *balances;
	size_t                     nbalances;
	json_object               *vars;
};

/*
 * Evaluate e against env. Semantics:
 *  - numbers are exact rationals; + - * / exact; a % b = a - b*trunc(a/b)
 *    (sign of a); / and % by zero fail;
 *  - + on two strings concatenates them (bytes; result at most
 *    RULE_STR_MAX bytes or the evaluation fails);
 *  - < <= > >= compare two numbers, or two strings bytewise (UTF-8, i.e.
 *    by code point);
 *  - == and != compare any two values: null == null is true, values of
 *    different types are never equal; x in [a, b, ...] is true when x == one
 *    of the elements (evaluated left to right, stops at the first match);
 *    its left operand must not be null;
 *  - && || need booleans and short-circuit; ! needs a boolean; ?: needs a
 *    boolean condition and evaluates only the chosen branch;
 *  - coalesce() evaluates its arguments left to right and returns the
 *    first that is not null (null when all are); has(properties.X) is true
 *    when X is present with a value other than json null; lower()/upper()
 *    map ASCII letters only, other characters are kept; min/max/floor/
 *    ceil/round/abs need numbers;
 *  - any other operator or function given null, a null ?: condition, a
 *    type error, reading an object/array property or a result that is not
 *    what the want of the expression asks for: the evaluation fails.
 * Recursion is bounded by the compiled depth (<= RULE_EXPR_MAX_DEPTH).
 * Returns 0 with the result in *out (need not be initialised; caller
 * clears it with rule_value_clear()), or -1 ("does not apply") with *out
 * null and a NUL-terminated reason such as "division by zero" in
 * why[0..whysz) (why may be NULL when whysz is 0).
 */
int rule_expr_eval(const struct rule_expr *e, const struct rule_env *env,
    struct rule_value *out, char *why, size_t whysz);

/* ==== rule engine (engine.c) ==== */

/* One `set:` entry of a rule: variable name and its compiled value. */
struct rule_set {
	const char             *name;
	const struct rule_expr *expr;      /* RULE_WANT_ANY */
};

/*
 * One rule, as configured (CONF.md "rules"). A view: the engine owns
 * nothing here; the pointed-to data must outlive any outcome computed
 * from it (outcomes point at id, balance and set names).
 */
struct rule_def {
	const char             *id;
	const char             *event;        /* event type it listens to */
	const struct rule_expr *when;         /* RULE_WANT_BOOL; NULL: always */
	const struct rule_expr *points;       /* RULE_WANT_NUMBER; NULL: none */
	const char             *balance;      /* `balance:` name, or NULL */
	const struct rule_expr *amount;       /* with balance; NULL: none */
	const struct rule_set  *sets;
	size_t                  nsets;
	long                    per_profile;  /* limits; 0: none */
	long                    per_day;
	long                    per_month;
	int                     stop;
	int                     tier_multiplier;
};

/* A tier (CONF.md "tiers"): a view on caller-owned rationals. */
struct rule_tier {
	const char *name;
	mpq_srcptr  min_lifetime;
	mpq_srcptr  multiplier;
};

/* How often a rule already applied to this profile before the event:
 * ever, on the event's UTC day, in the event's UTC month. */
struct rule_count {
	int64_t ever;
	int64_t day;
	int64_t month;
};

/*
 * The tier for a lifetime: the tier with the highest min_lifetime that is
 * <= lifetime (the first of equals); NULL when none qualifies or n is 0.
 * The tiers need not be sorted.
 */
const struct rule_tier *rule_tier_for(const struct rule_tier *tiers,
    size_t n, int64_t lifetime);

/* A rule of the event's type that did not apply, and why: "when false",
 * "limit per_profile reached" (per_day, per_month), "stopped by RULE_ID",
 * "evaluation failed: REASON". */
struct rule_skip {
	const char *rule_id;
	char        reason[RULE_WHY_MAX + 32];
};

/* A rule that applied; index into the rules array given to the engine. */
struct rule_applied {
	const char *rule_id;
	size_t      index;
};

/* A balance change (never 0): points go to the balance "points", amount to
 * the rule's `balance`. balance_after/lifetime_after: the balance after
 * this and all earlier deltas of the event, starting from env->balances
 * (lifetime adds positive deltas only). */
struct rule_delta {
	const char *rule_id;
	const char *balance;
	int64_t     delta;
	int64_t     balance_after;
	int64_t     lifetime_after;
};

/* A variable set by a rule; the value is owned by the outcome. Several
 * rules may set the same name: apply in order, the last one wins. */
struct rule_assign {
	const char        *rule_id;
	const char        *name;
	struct rule_value  value;
};

/*
 * What the rules of one event do. Arrays are owned by the outcome and freed
 * by rule_outcome_free(); every string pointer except skip reasons and
 * values points into the rules, tiers and env given to rule_engine_run().
 * tier_before is env->tier; tier_after is the tier for the "points"
 * lifetime after the event; tier_changed is 1 when their names differ
 * (NULL counts as a name). With no tiers configured, tier_after is
 * tier_before and nothing changes.
 */
struct rule_outcome {
	struct rule_applied *applied;   size_t napplied;
	struct rule_skip    *skipped;   size_t nskipped;
	struct rule_delta   *deltas;    size_t ndeltas;
	struct rule_assign  *assigns;   size_t nassigns;
	int64_t              points_awarded;  /* sum of deltas to "points" */
	const char          *tier_before;
	const char          *tier_after;
	int                  tier_changed;
};

/*
 * Run the rules of env->event_type against the profile state in env (as
 * it was before the event), in array order. Rules for other event types
 * are ignored (neither applied nor skipped). For each rule:
 *  1. after a rule with `stop` applied: skipped, "stopped by ID";
 *  2. counts[i] (NULL: all 0) against per_profile (ever), per_day, per_month;
 *  3. `when` must evaluate to true ("when false");
 *  4. points: evaluated exactly, times the multiplier of
 *     rule_tier_for(lifetime of "points" before the event) when
 *     tier_multiplier is set, then rounded once by `rounding`; amount
 *     (for `balance`) rounded likewise without multiplier; both must fit
 *     int64, as must the resulting balances; sets: each value evaluated;
 *  5. any failure in 3-4 skips the rule with "evaluation failed: ...";
 *     otherwise the rule applies with all its effects, none otherwise.
 * Every rule sees env, never the effects of earlier rules of the event.
 * Returns 0 with *out filled (caller frees with rule_outcome_free()), or
 * -1 when an argument is NULL (out is then zeroed when not NULL).
 */
int rule_engine_run(const struct rule_def *rules, size_t nrules,
    const struct rule_tier *tiers, size_t ntiers, enum rule_rounding rounding,
    const struct rule_env *env, const struct rule_count *counts,
    struct rule_outcome *out);

/* Free what an outcome owns and zero it. Accepts NULL. */
void rule_outcome_free(struct rule_outcome *o);

#endif /* RULES_H */
