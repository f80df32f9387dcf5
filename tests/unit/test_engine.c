/*
 * Unit tests for the rule engine core (rules/engine.c): CONF.md's example
 * rules, tier multipliers, rounding, limits, stop, sets and tier changes.
 * Each row names the rules it runs (from a catalogue), the event and the
 * profile state before it, and the expected outcome written as text:
 *   A:applied,...  S:id(reason),...  D:id/balance/delta/after/lifetime,...
 *   V:id/name=value,...  T:before>after (a trailing * when changed; "-" is
 *   no tier)  P:points_awarded
 * Empty lists are left out; T only appears when a tier is involved.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules.h"
#include "tests/unit/t.h"

#define PURCHASE "purchase_completed"

/* A rule as the YAML would say it; sets: up to two name/expression pairs. */
struct spec {
	const char *id, *event, *when, *points, *balance, *amount;
	const char *set1, *set1_expr, *set2, *set2_expr;
	long        per_profile, per_day, per_month;
	int         stop, tier_multiplier;
};

static const struct spec catalogue[] = {
	{ .id = "per_dollar", .event = PURCHASE,
	    .points = "properties.amount * 1" },
	{ .id = "per_dollar_tm", .event = PURCHASE,
	    .points = "properties.amount * 1", .tier_multiplier = 1 },
	/* CONF.md's examples */
	{ .id = "points_per_dollar", .event = PURCHASE,
	    .when = "properties.amount > 0",
	    .points = "properties.amount * 1 + (properties.amount > 100 ? 50 : 0)",
	    .tier_multiplier = 1 },
	{ .id = "electronics_bonus", .event = PURCHASE,
	    .when = "properties.category == \"electronics\"",
	    .points = "properties.amount * 1" },
	{ .id = "welcome", .event = "signup", .points = "100",
	    .set1 = "welcome_eligible", .set1_expr = "true",
	    .per_profile = 1 },
	{ .id = "manual", .event = "points_adjusted",
	    .points = "properties.points", .stop = 1 },
	{ .id = "after_manual", .event = "points_adjusted", .points = "1" },
	{ .id = "spend", .event = PURCHASE, .set1 = "total_spend",
	    .set1_expr = "coalesce(profile.vars.total_spend, 0) + "
	    "properties.amount" },
	/* more */
	{ .id = "half", .event = PURCHASE, .points = "properties.amount * 0.5" },
	{ .id = "daily", .event = PURCHASE, .points = "10", .per_day = 2,
	    .per_month = 5 },
	{ .id = "monthly", .event = PURCHASE, .points = "1", .per_month = 3 },
	{ .id = "div0", .event = PURCHASE,
	    .points = "properties.amount / properties.zero" },
	{ .id = "setfail", .event = PURCHASE, .points = "5", .set1 = "x",
	    .set1_expr = "properties.missing + 1" },
	{ .id = "attempt", .event = PURCHASE, .balance = "attempts",
	    .amount = "properties.amount / 100" },
	{ .id = "low_balance", .event = PURCHASE,
	    .when = "profile.balance.points < 100", .points = "50" },
	{ .id = "low_balance2", .event = PURCHASE,
	    .when = "profile.balance.points < 100", .points = "50" },
	{ .id = "zero", .event = PURCHASE, .points = "0" },
	{ .id = "maybe_stop", .event = PURCHASE,
	    .when = "properties.amount > 1000", .points = "1", .stop = 1 },
	{ .id = "big", .event = PURCHASE, .points = "properties.amount * 1e18" },
	{ .id = "bal_points", .event = PURCHASE, .balance = "points",
	    .amount = "2" },
	{ .id = "tiered_set", .event = PURCHASE, .set1 = "tier_seen",
	    .set1_expr = "profile.tier", .set2 = "flag", .set2_expr = "true" },
	{ .id = "spend_again", .event = PURCHASE, .set1 = "total_spend",
	    .set1_expr = "coalesce(profile.vars.total_spend, 0) * 2" },
	{ .id = "when_null", .event = PURCHASE, .when = "properties.nope > 1",
	    .points = "1" },
	{ .id = "refund", .event = PURCHASE, .points = "-properties.amount" },
};
#define NCAT (sizeof(catalogue) / sizeof(catalogue[0]))

#define F RULE_ROUND_FLOOR
#define R RULE_ROUND_HALF_AWAY
#define C RULE_ROUND_CEIL
#define NOTIER NULL

static const struct row {
	int                 line;
	const char         *rules;        /* catalogue ids, comma-separated */
	const char         *event;
	const char         *props;        /* JSON object */
	int                 tiers;        /* 1: bronze/silver/gold */
	const char         *tier;         /* profile tier before, or NULL */
	int64_t             balance, lifetime;   /* of "points" */
	const char         *vars;         /* JSON object or NULL */
	int64_t             ever, day, month;    /* counts of every rule */
	enum rule_rounding  rounding;
	const char         *expect;
} rows[] = {
	/* $125 -> 125 points with properties.amount * 1 */
	{ __LINE__, "per_dollar_tm", PURCHASE, "{\"amount\": 125}", 1, "bronze",
	    0, 0, NULL, 0, 0, 0, F,
	    "A:per_dollar_tm D:per_dollar_tm/points/125/125/125 "
	    "T:bronze>bronze P:125" },
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 125.00}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, F,
	    "A:per_dollar D:per_dollar/points/125/125/125 P:125" },
	/* amount * 1 + (amount > 100 ? 50 : 0): $50 -> 50, $150 -> 200 */
	{ __LINE__, "points_per_dollar", PURCHASE, "{\"amount\": 50}", 1,
	    "bronze", 0, 0, NULL, 0, 0, 0, F,
	    "A:points_per_dollar D:points_per_dollar/points/50/50/50 "
	    "T:bronze>bronze P:50" },
	{ __LINE__, "points_per_dollar", PURCHASE, "{\"amount\": 150}", 1,
	    "bronze", 0, 0, NULL, 0, 0, 0, F,
	    "A:points_per_dollar D:points_per_dollar/points/200/200/200 "
	    "T:bronze>bronze P:200" },
	{ __LINE__, "points_per_dollar", PURCHASE, "{\"amount\": 0}", 1,
	    "bronze", 0, 0, NULL, 0, 0, 0, F,
	    "S:points_per_dollar(when false) T:bronze>bronze P:0" },
	/* tier multiplier 1.25 from lifetime 1000, chosen before the event */
	{ __LINE__, "points_per_dollar", PURCHASE, "{\"amount\": 150}", 1,
	    "bronze", 900, 900, NULL, 0, 0, 0, F,
	    "A:points_per_dollar D:points_per_dollar/points/200/1100/1100 "
	    "T:bronze>silver* P:200" },
	{ __LINE__, "points_per_dollar", PURCHASE, "{\"amount\": 150}", 1,
	    "bronze", 999, 999, NULL, 0, 0, 0, F,
	    "A:points_per_dollar D:points_per_dollar/points/200/1199/1199 "
	    "T:bronze>silver* P:200" },
	{ __LINE__, "points_per_dollar", PURCHASE, "{\"amount\": 150}", 1,
	    "silver", 300, 1000, NULL, 0, 0, 0, F,
	    "A:points_per_dollar D:points_per_dollar/points/250/550/1250 "
	    "T:silver>silver P:250" },
	{ __LINE__, "points_per_dollar", PURCHASE, "{\"amount\": 20}", 1,
	    "silver", 100, 4990, NULL, 0, 0, 0, F,
	    "A:points_per_dollar D:points_per_dollar/points/25/125/5015 "
	    "T:silver>gold* P:25" },
	{ __LINE__, "points_per_dollar", PURCHASE, "{\"amount\": 10}", 1,
	    "gold", 0, 5000, NULL, 0, 0, 0, F,
	    "A:points_per_dollar D:points_per_dollar/points/15/15/5015 "
	    "T:gold>gold P:15" },
	/* a later rule of the same event still uses the tier before it */
	{ __LINE__, "points_per_dollar,per_dollar_tm", PURCHASE,
	    "{\"amount\": 150}", 1, "bronze", 900, 900, NULL, 0, 0, 0, F,
	    "A:points_per_dollar,per_dollar_tm "
	    "D:points_per_dollar/points/200/1100/1100,"
	    "per_dollar_tm/points/150/1250/1250 T:bronze>silver* P:350" },
	/* without tier_multiplier no multiplier */
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 100}", 1, "gold",
	    0, 6000, NULL, 0, 0, 0, F,
	    "A:per_dollar D:per_dollar/points/100/100/6100 T:gold>gold P:100" },
	/* rounding: 10.1 × 1.25 = 12.625 */
	{ __LINE__, "per_dollar_tm", PURCHASE, "{\"amount\": 10.1}", 1,
	    "silver", 0, 1000, NULL, 0, 0, 0, F,
	    "A:per_dollar_tm D:per_dollar_tm/points/12/12/1012 "
	    "T:silver>silver P:12" },
	{ __LINE__, "per_dollar_tm", PURCHASE, "{\"amount\": 10.1}", 1,
	    "silver", 0, 1000, NULL, 0, 0, 0, R,
	    "A:per_dollar_tm D:per_dollar_tm/points/13/13/1013 "
	    "T:silver>silver P:13" },
	{ __LINE__, "per_dollar_tm", PURCHASE, "{\"amount\": 10.1}", 1,
	    "silver", 0, 1000, NULL, 0, 0, 0, C,
	    "A:per_dollar_tm D:per_dollar_tm/points/13/13/1013 "
	    "T:silver>silver P:13" },
	/* rounded once, after the multiplier: 0.4 × 1.25 = 0.5 */
	{ __LINE__, "per_dollar_tm", PURCHASE, "{\"amount\": 0.4}", 1,
	    "silver", 0, 1000, NULL, 0, 0, 0, R,
	    "A:per_dollar_tm D:per_dollar_tm/points/1/1/1001 "
	    "T:silver>silver P:1" },
	{ __LINE__, "per_dollar_tm", PURCHASE, "{\"amount\": 0.4}", 1,
	    "silver", 0, 1000, NULL, 0, 0, 0, F,
	    "A:per_dollar_tm T:silver>silver P:0" },
	/* rounding of halves, both signs */
	{ __LINE__, "half", PURCHASE, "{\"amount\": 3}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, F, "A:half D:half/points/1/1/1 P:1" },
	{ __LINE__, "half", PURCHASE, "{\"amount\": 3}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, R, "A:half D:half/points/2/2/2 P:2" },
	{ __LINE__, "half", PURCHASE, "{\"amount\": 3}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, C, "A:half D:half/points/2/2/2 P:2" },
	{ __LINE__, "half", PURCHASE, "{\"amount\": -3}", 0, NOTIER,
	    10, 10, NULL, 0, 0, 0, F, "A:half D:half/points/-2/8/10 P:-2" },
	{ __LINE__, "half", PURCHASE, "{\"amount\": -3}", 0, NOTIER,
	    10, 10, NULL, 0, 0, 0, R, "A:half D:half/points/-2/8/10 P:-2" },
	{ __LINE__, "half", PURCHASE, "{\"amount\": -3}", 0, NOTIER,
	    10, 10, NULL, 0, 0, 0, C, "A:half D:half/points/-1/9/10 P:-1" },
	/* 1.005 exactly, all three modes; 100.5 rounds away from zero */
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 1.005}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, F, "A:per_dollar D:per_dollar/points/1/1/1 P:1" },
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 1.005}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, R, "A:per_dollar D:per_dollar/points/1/1/1 P:1" },
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 1.005}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, C, "A:per_dollar D:per_dollar/points/2/2/2 P:2" },
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 100.5}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, R,
	    "A:per_dollar D:per_dollar/points/101/101/101 P:101" },
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": -100.5}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, R,
	    "A:per_dollar D:per_dollar/points/-101/-101/0 P:-101" },
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 19.99}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, F,
	    "A:per_dollar D:per_dollar/points/19/19/19 P:19" },
	/* all matching rules apply, in order */
	{ __LINE__, "points_per_dollar,electronics_bonus", PURCHASE,
	    "{\"amount\": 150, \"category\": \"electronics\"}", 1, "bronze",
	    0, 0, NULL, 0, 0, 0, F,
	    "A:points_per_dollar,electronics_bonus "
	    "D:points_per_dollar/points/200/200/200,"
	    "electronics_bonus/points/150/350/350 T:bronze>bronze P:350" },
	{ __LINE__, "points_per_dollar,electronics_bonus", PURCHASE,
	    "{\"amount\": 150, \"category\": \"tv\"}", 1, "bronze",
	    0, 0, NULL, 0, 0, 0, F,
	    "A:points_per_dollar S:electronics_bonus(when false) "
	    "D:points_per_dollar/points/200/200/200 T:bronze>bronze P:200" },
	/* per_profile */
	{ __LINE__, "welcome", "signup", "{}", 0, NOTIER, 0, 0, NULL, 0, 0, 0, F,
	    "A:welcome D:welcome/points/100/100/100 "
	    "V:welcome/welcome_eligible=true P:100" },
	{ __LINE__, "welcome", "signup", "{}", 0, NOTIER, 100, 100, NULL,
	    1, 0, 0, F, "S:welcome(limit per_profile reached) P:0" },
	/* per_day / per_month counters given by the caller */
	{ __LINE__, "daily", PURCHASE, "{}", 0, NOTIER, 0, 0, NULL, 9, 1, 4, F,
	    "A:daily D:daily/points/10/10/10 P:10" },
	{ __LINE__, "daily", PURCHASE, "{}", 0, NOTIER, 0, 0, NULL, 9, 2, 4, F,
	    "S:daily(limit per_day reached) P:0" },
	{ __LINE__, "daily", PURCHASE, "{}", 0, NOTIER, 0, 0, NULL, 9, 0, 5, F,
	    "S:daily(limit per_month reached) P:0" },
	{ __LINE__, "monthly", PURCHASE, "{}", 0, NOTIER, 0, 0, NULL, 50, 50, 2,
	    F, "A:monthly D:monthly/points/1/1/1 P:1" },
	{ __LINE__, "monthly", PURCHASE, "{}", 0, NOTIER, 0, 0, NULL, 3, 0, 3,
	    F, "S:monthly(limit per_month reached) P:0" },
	/* stop */
	{ __LINE__, "manual,after_manual", "points_adjusted",
	    "{\"points\": -30, \"reason\": \"x\"}", 0, NOTIER, 170, 1170, NULL,
	    0, 0, 0, F,
	    "A:manual S:after_manual(stopped by manual) "
	    "D:manual/points/-30/140/1170 P:-30" },
	{ __LINE__, "maybe_stop,per_dollar", PURCHASE, "{\"amount\": 10}", 0,
	    NOTIER, 0, 0, NULL, 0, 0, 0, F,
	    "A:per_dollar S:maybe_stop(when false) "
	    "D:per_dollar/points/10/10/10 P:10" },
	{ __LINE__, "maybe_stop,per_dollar", PURCHASE, "{\"amount\": 2000}", 0,
	    NOTIER, 0, 0, NULL, 0, 0, 0, F,
	    "A:maybe_stop S:per_dollar(stopped by maybe_stop) "
	    "D:maybe_stop/points/1/1/1 P:1" },
	/* a stop rule that failed to evaluate does not stop */
	{ __LINE__, "manual,after_manual", "points_adjusted", "{}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, F,
	    "A:after_manual S:manual(evaluation failed: result is null, not a "
	    "number) D:after_manual/points/1/1/1 P:1" },
	/* set with coalesce, seeing the variables before the event */
	{ __LINE__, "spend", PURCHASE, "{\"amount\": 125}", 0, NOTIER, 0, 0,
	    NULL, 0, 0, 0, F, "A:spend V:spend/total_spend=125 P:0" },
	{ __LINE__, "spend", PURCHASE, "{\"amount\": 125}", 0, NOTIER, 0, 0,
	    "{\"total_spend\": 100.5}", 0, 0, 0, F,
	    "A:spend V:spend/total_spend=225.5 P:0" },
	{ __LINE__, "spend,spend_again", PURCHASE, "{\"amount\": 1}", 0, NOTIER,
	    0, 0, "{\"total_spend\": 10}", 0, 0, 0, F,
	    "A:spend,spend_again V:spend/total_spend=11,"
	    "spend_again/total_spend=20 P:0" },
	{ __LINE__, "tiered_set", PURCHASE, "{}", 1, "silver", 0, 1000, NULL,
	    0, 0, 0, F,
	    "A:tiered_set V:tiered_set/tier_seen=\"silver\",tiered_set/flag=true"
	    " T:silver>silver P:0" },
	/* evaluation failures skip the rule, others still apply */
	{ __LINE__, "div0,per_dollar", PURCHASE,
	    "{\"amount\": 10, \"zero\": 0}", 0, NOTIER, 0, 0, NULL, 0, 0, 0, F,
	    "A:per_dollar S:div0(evaluation failed: division by zero) "
	    "D:per_dollar/points/10/10/10 P:10" },
	{ __LINE__, "setfail", PURCHASE, "{}", 0, NOTIER, 0, 0, NULL, 0, 0, 0,
	    F, "S:setfail(evaluation failed: null operand of '+') P:0" },
	{ __LINE__, "when_null", PURCHASE, "{}", 0, NOTIER, 0, 0, NULL, 0, 0, 0,
	    F, "S:when_null(evaluation failed: null operand of '>') P:0" },
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": \"12\"}", 0, NOTIER,
	    0, 0, NULL, 0, 0, 0, F,
	    "S:per_dollar(evaluation failed: '*' on a string and a number) P:0" },
	{ __LINE__, "big", PURCHASE, "{\"amount\": 100}", 0, NOTIER, 0, 0, NULL,
	    0, 0, 0, F,
	    "S:big(evaluation failed: result does not fit a 64-bit integer) P:0" },
	{ __LINE__, "big", PURCHASE, "{\"amount\": 9.223372036854775807}", 0,
	    NOTIER, 0, 0, NULL, 0, 0, 0, F,
	    "A:big D:big/points/9223372036854775807/9223372036854775807/"
	    "9223372036854775807 P:9223372036854775807" },
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 10}", 0, NOTIER,
	    INT64_MAX - 5, 0, NULL, 0, 0, 0, F,
	    "S:per_dollar(evaluation failed: balance points would not fit a "
	    "64-bit integer) P:0" },
	{ __LINE__, "refund", PURCHASE, "{\"amount\": 10}", 0, NOTIER,
	    INT64_MIN + 5, 0, NULL, 0, 0, 0, F,
	    "S:refund(evaluation failed: balance points would not fit a "
	    "64-bit integer) P:0" },
	/* another balance; a balance the profile lacks starts at 0 */
	{ __LINE__, "attempt", PURCHASE, "{\"amount\": 250}", 0, NOTIER, 0, 0,
	    NULL, 0, 0, 0, F, "A:attempt D:attempt/attempts/2/2/2 P:0" },
	{ __LINE__, "attempt", PURCHASE, "{\"amount\": 250}", 0, NOTIER, 0, 0,
	    NULL, 0, 0, 0, R, "A:attempt D:attempt/attempts/3/3/3 P:0" },
	/* two deltas to "points" in one event accumulate */
	{ __LINE__, "per_dollar,bal_points", PURCHASE, "{\"amount\": 10}", 0,
	    NOTIER, 5, 7, NULL, 0, 0, 0, F,
	    "A:per_dollar,bal_points D:per_dollar/points/10/15/17,"
	    "bal_points/points/2/17/19 P:12" },
	/* every rule sees the profile before the event */
	{ __LINE__, "low_balance,low_balance2", PURCHASE, "{}", 0, NOTIER,
	    90, 90, NULL, 0, 0, 0, F,
	    "A:low_balance,low_balance2 D:low_balance/points/50/140/140,"
	    "low_balance2/points/50/190/190 P:100" },
	/* zero points: applied, no balance change */
	{ __LINE__, "zero", PURCHASE, "{}", 0, NOTIER, 0, 0, NULL, 0, 0, 0, F,
	    "A:zero P:0" },
	/* negative points do not lower the lifetime nor the tier */
	{ __LINE__, "refund", PURCHASE, "{\"amount\": 500}", 1, "silver",
	    600, 1200, NULL, 0, 0, 0, F,
	    "A:refund D:refund/points/-500/100/1200 T:silver>silver P:-500" },
	/* rules of other events are ignored */
	{ __LINE__, "welcome,per_dollar,manual", PURCHASE, "{\"amount\": 3}", 0,
	    NOTIER, 0, 0, NULL, 0, 0, 0, F,
	    "A:per_dollar D:per_dollar/points/3/3/3 P:3" },
	{ __LINE__, "per_dollar", "signup", "{}", 0, NOTIER, 0, 0, NULL,
	    0, 0, 0, F, "P:0" },
	/* tier: a new profile gets one; a stale stored tier is corrected */
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 10}", 1, NULL,
	    0, 0, NULL, 0, 0, 0, F,
	    "A:per_dollar D:per_dollar/points/10/10/10 T:->bronze* P:10" },
	{ __LINE__, "welcome", "signup", "{}", 1, "bronze", 0, 2000, NULL,
	    1, 0, 0, F,
	    "S:welcome(limit per_profile reached) T:bronze>silver* P:0" },
	/* without tiers the tier is left as it was */
	{ __LINE__, "per_dollar", PURCHASE, "{\"amount\": 5000}", 0, "vip",
	    0, 0, NULL, 0, 0, 0, F,
	    "A:per_dollar D:per_dollar/points/5000/5000/5000 T:vip>vip P:5000" },
};

/* Compiled catalogue. */
static struct rule_expr *when_x[NCAT], *points_x[NCAT], *amount_x[NCAT];
static struct rule_set   sets_x[NCAT][2];
static struct rule_def   defs[NCAT];

/* Compile one expression of the catalogue or die: a typo here is a bug of
 * the test itself. Caller frees with rule_expr_free(). */
static struct rule_expr *
must(const char *src, enum rule_want want)
{
	struct rule_err   err;
	struct rule_expr *e;

	if (src == NULL)
		return NULL;
	e = rule_expr_compile(src, strlen(src), want, &err);
	if (e == NULL) {
		fprintf(stderr, "catalogue: %s: col %u: %s\n", src, err.col,
		    err.msg);
		exit(2);
	}
	return e;
}

static void
catalogue_compile(void)
{
	size_t i;

	for (i = 0; i < NCAT; i++) {
		const struct spec *s = &catalogue[i];
		struct rule_def   *d = &defs[i];

		memset(d, 0, sizeof(*d));
		when_x[i] = must(s->when, RULE_WANT_BOOL);
		points_x[i] = must(s->points, RULE_WANT_NUMBER);
		amount_x[i] = must(s->amount, RULE_WANT_NUMBER);
		d->id = s->id;
		d->event = s->event;
		d->when = when_x[i];
		d->points = points_x[i];
		d->balance = s->balance;
		d->amount = amount_x[i];
		if (s->set1) {
			sets_x[i][0].name = s->set1;
			sets_x[i][0].expr = must(s->set1_expr, RULE_WANT_ANY);
			d->nsets = 1;
		}
		if (s->set2) {
			sets_x[i][1].name = s->set2;
			sets_x[i][1].expr = must(s->set2_expr, RULE_WANT_ANY);
			d->nsets = 2;
		}
		d->sets = sets_x[i];
		d->per_profile = s->per_profile;
		d->per_day = s->per_day;
		d->per_month = s->per_month;
		d->stop = s->stop;
		d->tier_multiplier = s->tier_multiplier;
	}
}

static void
catalogue_free(void)
{
	size_t i;

	for (i = 0; i < NCAT; i++) {
		rule_expr_free(when_x[i]);
		rule_expr_free(points_x[i]);
		rule_expr_free(amount_x[i]);
		rule_expr_free((struct rule_expr *)sets_x[i][0].expr);
		rule_expr_free((struct rule_expr *)sets_x[i][1].expr);
	}
}

/* Tiers of CONF.md. */
static mpq_t           tq[3][2];
static struct rule_tier tiers[3];

static void
tiers_init(void)
{
	static const char *const def[3][3] = {
		{ "bronze", "0", "1" },
		{ "silver", "1000", "5/4" },
		{ "gold", "5000", "3/2" },
	};
	size_t i;

	for (i = 0; i < 3; i++) {
		mpq_init(tq[i][0]);
		mpq_init(tq[i][1]);
		mpq_set_str(tq[i][0], def[i][1], 10);
		mpq_set_str(tq[i][1], def[i][2], 10);
		mpq_canonicalize(tq[i][1]);
		tiers[i].name = def[i][0];
		tiers[i].min_lifetime = tq[i][0];
		tiers[i].multiplier = tq[i][1];
	}
}

static void
tiers_free(void)
{
	size_t i;

	for (i = 0; i < 3; i++) {
		mpq_clear(tq[i][0]);
		mpq_clear(tq[i][1]);
	}
}

/* Append printf text to buf[0..sz) at *o. */
static void
put(char *buf, size_t sz, size_t *o, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
put(char *buf, size_t sz, size_t *o, const char *fmt, ...)
{
	va_list ap;
	int     n;

	if (*o >= sz)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *o, sz - *o, fmt, ap);
	va_end(ap);
	if (n > 0)
		*o += (size_t)n;
}

/* The outcome as text, in the notation of the file comment. */
static void
outcome_text(const struct rule_outcome *o, char *buf, size_t sz)
{
	size_t o_ = 0, i;

	buf[0] = '\0';
	for (i = 0; i < o->napplied; i++)
		put(buf, sz, &o_, "%s%s", i ? "," : "A:", o->applied[i].rule_id);
	if (o->napplied)
		put(buf, sz, &o_, " ");
	for (i = 0; i < o->nskipped; i++)
		put(buf, sz, &o_, "%s%s(%s)", i ? "," : "S:",
		    o->skipped[i].rule_id, o->skipped[i].reason);
	if (o->nskipped)
		put(buf, sz, &o_, " ");
	for (i = 0; i < o->ndeltas; i++)
		put(buf, sz, &o_, "%s%s/%s/%lld/%lld/%lld", i ? "," : "D:",
		    o->deltas[i].rule_id, o->deltas[i].balance,
		    (long long)o->deltas[i].delta,
		    (long long)o->deltas[i].balance_after,
		    (long long)o->deltas[i].lifetime_after);
	if (o->ndeltas)
		put(buf, sz, &o_, " ");
	for (i = 0; i < o->nassigns; i++) {
		const struct rule_value *v = &o->assigns[i].value;
		char                    *t = NULL;

		put(buf, sz, &o_, "%s%s/%s=", i ? "," : "V:",
		    o->assigns[i].rule_id, o->assigns[i].name);
		switch (v->type) {
		case RULE_V_NUM:
			t = rule_dec_to_text(v->num, 6);
			put(buf, sz, &o_, "%s", t);
			free(t);
			break;
		case RULE_V_STR:
			put(buf, sz, &o_, "\"%s\"", v->str);
			break;
		case RULE_V_BOOL:
			put(buf, sz, &o_, "%s", v->b ? "true" : "false");
			break;
		default:
			put(buf, sz, &o_, "null");
			break;
		}
	}
	if (o->nassigns)
		put(buf, sz, &o_, " ");
	if (o->tier_before || o->tier_after || o->tier_changed)
		put(buf, sz, &o_, "T:%s>%s%s ", o->tier_before ?
		    o->tier_before : "-", o->tier_after ? o->tier_after : "-",
		    o->tier_changed ? "*" : "");
	put(buf, sz, &o_, "P:%lld", (long long)o->points_awarded);
}

static void
test_rows(void)
{
	size_t i;

	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row   *r = &rows[i];
		struct rule_def     sel[NCAT];
		struct rule_count   counts[NCAT];
		struct rule_balance bal = { "points", r->balance, r->lifetime };
		struct rule_env     env;
		struct rule_outcome out;
		size_t              n = 0, k;
		char                names[256], *tok, *save = NULL;
		char                got[1024];
		int                 rc;

		snprintf(names, sizeof(names), "%s", r->rules);
		for (tok = strtok_r(names, ",", &save); tok != NULL;
		    tok = strtok_r(NULL, ",", &save)) {
			for (k = 0; k < NCAT; k++)
				if (strcmp(catalogue[k].id, tok) == 0)
					break;
			if (k == NCAT) {
				fprintf(stderr, "row %d: no rule %s\n", r->line,
				    tok);
				exit(2);
			}
			sel[n] = defs[k];
			counts[n].ever = r->ever;
			counts[n].day = r->day;
			counts[n].month = r->month;
			n++;
		}
		memset(&env, 0, sizeof(env));
		env.properties = json_tokener_parse(r->props);
		env.vars = r->vars ? json_tokener_parse(r->vars) : NULL;
		env.event_type = r->event;
		env.event_source = "pos";
		env.event_occurred_at = "2024-05-01T10:00:00Z";
		env.tier = r->tier;
		env.balances = &bal;
		env.nbalances = 1;

		rc = rule_engine_run(sel, n, r->tiers ? tiers : NULL,
		    r->tiers ? 3 : 0, r->rounding, &env, counts, &out);
		outcome_text(&out, got, sizeof(got));
		T_CHECK(r->line, rc == 0 && strcmp(got, r->expect) == 0,
		    "\n  got  %s\n  want %s", got, r->expect);
		/* applied indexes point back into the rules given */
		for (k = 0; k < out.napplied; k++)
			T_CHECK(r->line, out.applied[k].index < n &&
			    sel[out.applied[k].index].id == out.applied[k].rule_id,
			    "applied index %zu", out.applied[k].index);
		rule_outcome_free(&out);
		T_CHECK(r->line, out.napplied == 0 && out.applied == NULL,
		    "outcome zeroed after free");
		json_object_put(env.properties);
		json_object_put(env.vars);
	}
}

static void
test_api(void)
{
	struct rule_outcome     out;
	struct rule_env         env;
	const struct rule_tier *t;
	struct rule_tier        unsorted[3];
	mpq_t                   big;

	memset(&env, 0, sizeof(env));
	T_OK(rule_engine_run(defs, NCAT, NULL, 0, F, NULL, NULL, &out) == -1 &&
	    out.napplied == 0, "NULL env");
	T_OK(rule_engine_run(defs, NCAT, NULL, 0, F, &env, NULL, NULL) == -1,
	    "NULL out");
	T_OK(rule_engine_run(NULL, 3, NULL, 0, F, &env, NULL, &out) == -1,
	    "NULL rules");
	T_OK(rule_engine_run(NULL, 0, NULL, 0, F, &env, NULL, &out) == 0 &&
	    out.nskipped == 0 && out.points_awarded == 0, "no rules");
	rule_outcome_free(&out);
	rule_outcome_free(NULL);

	/* counts NULL: every limit sees 0 */
	env.event_type = "signup";
	T_OK(rule_engine_run(defs, NCAT, NULL, 0, F, &env, NULL, &out) == 0 &&
	    out.napplied == 1 && strcmp(out.applied[0].rule_id, "welcome") == 0
	    && out.points_awarded == 100 && out.nassigns == 1,
	    "welcome with NULL counts");
	rule_outcome_free(&out);

	/* a `when` compiled without RULE_WANT_BOOL that is not a boolean */
	{
		struct rule_err   err;
		struct rule_expr *w = rule_expr_compile("profile.tier", 12,
		    RULE_WANT_ANY, &err);
		struct rule_def   d;

		memset(&d, 0, sizeof(d));
		d.id = "odd";
		d.event = "signup";
		d.when = w;
		T_OK(rule_engine_run(&d, 1, NULL, 0, F, &env, NULL, &out) == 0 &&
		    out.napplied == 0 && out.nskipped == 1 &&
		    strcmp(out.skipped[0].reason, "evaluation failed: condition "
		    "is not a boolean") == 0, "non-boolean when: %s",
		    out.nskipped ? out.skipped[0].reason : "");
		rule_outcome_free(&out);
		rule_expr_free(w);
	}

	/* rule_tier_for: unsorted tiers, boundaries, none */
	unsorted[0] = tiers[2];
	unsorted[1] = tiers[0];
	unsorted[2] = tiers[1];
	T_OK((t = rule_tier_for(unsorted, 3, 0)) && strcmp(t->name, "bronze")
	    == 0, "tier 0");
	T_OK((t = rule_tier_for(unsorted, 3, 999)) && strcmp(t->name,
	    "bronze") == 0, "tier 999");
	T_OK((t = rule_tier_for(unsorted, 3, 1000)) && strcmp(t->name,
	    "silver") == 0, "tier 1000");
	T_OK((t = rule_tier_for(unsorted, 3, INT64_MAX)) && strcmp(t->name,
	    "gold") == 0, "tier max");
	T_OK(rule_tier_for(unsorted, 3, -1) == NULL, "no tier below 0");
	T_OK(rule_tier_for(NULL, 0, 5) == NULL, "no tiers");
	/* min_lifetime beyond int64 never qualifies */
	mpq_init(big);
	mpq_set_str(big, "99999999999999999999999", 10);
	unsorted[0].min_lifetime = big;
	T_OK((t = rule_tier_for(unsorted, 3, INT64_MAX)) && strcmp(t->name,
	    "silver") == 0, "huge min_lifetime");
	mpq_clear(big);
}

int
main(void)
{
	t_file = "test_engine";
	catalogue_compile();
	tiers_init();
	test_rows();
	test_api();
	catalogue_free();
	tiers_free();
	return t_done();
}
