/*
 * rules/engine.c — the pure core of the rule engine (CONF.md "rules",
 * "tiers"): given a tenant's compiled rules, its tiers and rounding, the
 * profile as it was before the event and the per-rule counters, compute
 * which rules apply and what they change. No I/O: core/ turns the outcome
 * into JSON and SQL.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

/* A balance as the event's deltas move it (starts from env). */
struct bstate {
	const char *name;
	int64_t     balance;
	int64_t     lifetime;
};

/* Work state of one run; arrays grow into the outcome. */
struct run {
	const struct rule_env *env;
	struct rule_outcome   *out;
	size_t                 capapplied, capskipped, capdeltas, capassigns;
	struct bstate         *bs;
	size_t                 nbs, capbs;
};

const struct rule_tier *
rule_tier_for(const struct rule_tier *tiers, size_t n, int64_t lifetime)
{
	const struct rule_tier *best = NULL;
	mpq_t                   l;
	size_t                  i;

	if (tiers == NULL || n == 0)
		return NULL;
	mpq_init(l);
	rule__q_set_i64(l, lifetime);
	for (i = 0; i < n; i++) {
		if (tiers[i].min_lifetime == NULL ||
		    mpq_cmp(tiers[i].min_lifetime, l) > 0)
			continue;
		if (best == NULL ||
		    mpq_cmp(tiers[i].min_lifetime, best->min_lifetime) > 0)
			best = &tiers[i];
	}
	mpq_clear(l);
	return best;
}

/* The env's balance `name`, or NULL when the profile has none. */
static const struct rule_balance *
env_balance(const struct rule_env *env, const char *name)
{
	size_t i;

	for (i = 0; i < env->nbalances; i++)
		if (env->balances[i].name != NULL &&
		    strcmp(env->balances[i].name, name) == 0)
			return &env->balances[i];
	return NULL;
}

/* The running state of balance `name`, created from env (or 0) on first
 * use. The pointer is valid until the next call. */
static struct bstate *
run_balance(struct run *r, const char *name)
{
	const struct rule_balance *eb;
	struct bstate             *s;
	size_t                     i;

	for (i = 0; i < r->nbs; i++)
		if (strcmp(r->bs[i].name, name) == 0)
			return &r->bs[i];
	r->bs = rule__grow(r->bs, &r->capbs, r->nbs + 1,
	    sizeof(r->bs[0]));
	s = &r->bs[r->nbs++];
	s->name = name;
	eb = env_balance(r->env, name);
	s->balance = eb ? eb->balance : 0;
	s->lifetime = eb ? eb->lifetime : 0;
	return s;
}

static void
add_skip(struct run *r, const char *id, const char *fmt, const char *arg)
{
	struct rule_outcome *o = r->out;
	struct rule_skip    *s;

	o->skipped = rule__grow(o->skipped, &r->capskipped,
	    o->nskipped + 1, sizeof(o->skipped[0]));
	s = &o->skipped[o->nskipped++];
	s->rule_id = id;
	snprintf(s->reason, sizeof(s->reason), fmt, arg ? arg : "");
}

/*
 * Evaluate a points/amount expression to an int64: exact value, times
 * `mult` when not NULL, rounded once. Returns 0, or -1 with why filled.
 */
static int
eval_int(const struct rule_expr *e, const struct rule_env *env,
    mpq_srcptr mult, enum rule_rounding rounding, int64_t *res, char *why,
    size_t whysz)
{
	struct rule_value v;
	mpz_t             z;
	int               rc = -1;

	if (rule_expr_eval(e, env, &v, why, whysz) == -1)
		return -1;
	if (v.type != RULE_V_NUM) {
		rule__why(why, whysz, "result is not a number");
		rule_value_clear(&v);
		return -1;
	}
	if (mult != NULL)
		mpq_mul(v.num, v.num, mult);
	mpz_init(z);
	rule_dec_round(z, v.num, rounding);
	if (rule__z_get_i64(z, res) == -1)
		rule__why(why, whysz, "result does not fit a 64-bit integer");
	else
		rc = 0;
	mpz_clear(z);
	rule_value_clear(&v);
	return rc;
}

/* A planned balance change of the rule being evaluated. */
struct plan {
	const char *balance;
	int64_t     delta;
	int64_t     after, lifetime_after;
};

/*
 * Check the planned deltas against the running balances (a second delta
 * to the same balance starts from the first one's result) and the points
 * sum. 0 when all fit int64, else -1 with why.
 */
static int
plan_check(struct run *r, struct plan *pl, size_t npl, int64_t *points,
    char *why, size_t whysz)
{
	size_t i, j;

	for (i = 0; i < npl; i++) {
		struct bstate *s = run_balance(r, pl[i].balance);
		int64_t        b = s->balance, l = s->lifetime;

		for (j = 0; j < i; j++)
			if (strcmp(pl[j].balance, pl[i].balance) == 0) {
				b = pl[j].after;
				l = pl[j].lifetime_after;
			}
		if (rule__add_i64(b, pl[i].delta, &pl[i].after) == -1 ||
		    rule__add_i64(l, pl[i].delta > 0 ? pl[i].delta : 0,
		    &pl[i].lifetime_after) == -1) {
			rule__why(why, whysz, "balance %.60s would not fit a "
			    "64-bit integer", pl[i].balance);
			return -1;
		}
		if (strcmp(pl[i].balance, "points") == 0 &&
		    rule__add_i64(*points, pl[i].delta, points) == -1) {
			rule__why(why, whysz, "points awarded would not fit a "
			    "64-bit integer");
			return -1;
		}
	}
	return 0;
}

/*
 * Evaluate one rule that passed its event, stop and limit checks. On
 * success its effects are appended to the outcome and 1 is returned; 0
 * when it was skipped (reason recorded).
 */
static int
run_rule(struct run *r, const struct rule_def *d, size_t idx,
    const struct rule_tier *tier, enum rule_rounding rounding)
{
	const struct rule_env *env = r->env;
	struct rule_outcome   *o = r->out;
	struct rule_value      v, *vals = NULL;
	struct plan            pl[2];
	size_t                 npl = 0, nvals = 0, i;
	int64_t                n, points = o->points_awarded;
	char                   why[RULE_WHY_MAX];
	int                    ok = 0;

	why[0] = '\0';
	if (d->when != NULL) {
		if (rule_expr_eval(d->when, env, &v, why, sizeof(why)) == -1)
			goto fail;
		if (v.type != RULE_V_BOOL) {
			/* only when `when` was not compiled as RULE_WANT_BOOL */
			rule_value_clear(&v);
			rule__why(why, sizeof(why), "condition is not a boolean");
			goto fail;
		}
		if (!v.b) {
			add_skip(r, d->id, "when false%s", NULL);
			return 0;
		}
	}
	if (d->points != NULL) {
		if (eval_int(d->points, env, d->tier_multiplier && tier ?
		    tier->multiplier : NULL, rounding, &n, why,
		    sizeof(why)) == -1)
			goto fail;
		if (n != 0) {
			pl[npl].balance = "points";
			pl[npl++].delta = n;
		}
	}
	if (d->balance != NULL && d->amount != NULL) {
		if (eval_int(d->amount, env, NULL, rounding, &n, why,
		    sizeof(why)) == -1)
			goto fail;
		if (n != 0) {
			pl[npl].balance = d->balance;
			pl[npl++].delta = n;
		}
	}
	if (d->nsets > 0)
		vals = rule__xcalloc(d->nsets, sizeof(vals[0]));
	for (nvals = 0; nvals < d->nsets; nvals++)
		if (rule_expr_eval(d->sets[nvals].expr, env, &vals[nvals], why,
		    sizeof(why)) == -1)
			goto fail;
	if (plan_check(r, pl, npl, &points, why, sizeof(why)) == -1)
		goto fail;

	/* commit: applied, deltas, running balances, assigns */
	o->applied = rule__grow(o->applied, &r->capapplied, o->napplied + 1,
	    sizeof(o->applied[0]));
	o->applied[o->napplied].rule_id = d->id;
	o->applied[o->napplied++].index = idx;
	for (i = 0; i < npl; i++) {
		struct bstate     *s = run_balance(r, pl[i].balance);
		struct rule_delta *dl;

		s->balance = pl[i].after;
		s->lifetime = pl[i].lifetime_after;
		o->deltas = rule__grow(o->deltas, &r->capdeltas,
		    o->ndeltas + 1, sizeof(o->deltas[0]));
		dl = &o->deltas[o->ndeltas++];
		dl->rule_id = d->id;
		dl->balance = s->name;
		dl->delta = pl[i].delta;
		dl->balance_after = s->balance;
		dl->lifetime_after = s->lifetime;
	}
	o->points_awarded = points;
	for (i = 0; i < d->nsets; i++) {
		struct rule_assign *a;

		o->assigns = rule__grow(o->assigns, &r->capassigns,
		    o->nassigns + 1, sizeof(o->assigns[0]));
		a = &o->assigns[o->nassigns++];
		a->rule_id = d->id;
		a->name = d->sets[i].name;
		a->value = vals[i];          /* moved: owned by the outcome */
	}
	nvals = 0;
	ok = 1;
fail:
	/* frees: set values evaluated but not moved into the outcome */
	for (i = 0; i < nvals && i < d->nsets; i++)
		rule_value_clear(&vals[i]);
	free(vals);
	if (!ok)
		add_skip(r, d->id, "evaluation failed: %s", why);
	return ok;
}

/* Run the rules of one event; see rules.h. */
int
rule_engine_run(const struct rule_def *rules, size_t nrules,
    const struct rule_tier *tiers, size_t ntiers, enum rule_rounding rounding,
    const struct rule_env *env, const struct rule_count *counts,
    struct rule_outcome *out)
{
	static const struct rule_count zero;
	const struct rule_balance     *pb;
	const struct rule_tier        *tier, *after;
	const char                    *stopped = NULL;
	struct run                     r;
	size_t                         i;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (out == NULL || env == NULL || (rules == NULL && nrules > 0))
		return -1;
	memset(&r, 0, sizeof(r));
	r.env = env;
	r.out = out;
	out->tier_before = env->tier;
	pb = env_balance(env, "points");
	tier = rule_tier_for(tiers, ntiers, pb ? pb->lifetime : 0);

	for (i = 0; i < nrules; i++) {
		const struct rule_def   *d = &rules[i];
		const struct rule_count *c = counts ? &counts[i] : &zero;

		if (d->event == NULL || env->event_type == NULL ||
		    strcmp(d->event, env->event_type) != 0)
			continue;
		if (stopped != NULL)
			add_skip(&r, d->id, "stopped by %s", stopped);
		else if (d->per_profile > 0 && c->ever >= d->per_profile)
			add_skip(&r, d->id, "limit per_profile reached%s", NULL);
		else if (d->per_day > 0 && c->day >= d->per_day)
			add_skip(&r, d->id, "limit per_day reached%s", NULL);
		else if (d->per_month > 0 && c->month >= d->per_month)
			add_skip(&r, d->id, "limit per_month reached%s", NULL);
		else if (run_rule(&r, d, i, tier, rounding) && d->stop)
			stopped = d->id;
	}

	if (ntiers == 0 || tiers == NULL)
		out->tier_after = env->tier;
	else {
		const struct bstate *s = NULL;
		size_t               k;

		for (k = 0; k < r.nbs; k++)
			if (strcmp(r.bs[k].name, "points") == 0)
				s = &r.bs[k];
		after = rule_tier_for(tiers, ntiers, s ? s->lifetime :
		    pb ? pb->lifetime : 0);
		out->tier_after = after ? after->name : NULL;
		if (out->tier_after == NULL || out->tier_before == NULL)
			out->tier_changed = out->tier_after != out->tier_before;
		else
			out->tier_changed = strcmp(out->tier_after,
			    out->tier_before) != 0;
	}
	free(r.bs);
	return 0;
}

void
rule_outcome_free(struct rule_outcome *o)
{
	size_t i;

	if (o == NULL)
		return;
	for (i = 0; i < o->nassigns; i++)
		rule_value_clear(&o->assigns[i].value);
	free(o->applied);
	free(o->skipped);
	free(o->deltas);
	free(o->assigns);
	memset(o, 0, sizeof(*o));
}
