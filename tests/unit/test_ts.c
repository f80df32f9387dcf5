/*
 * Unit tests for core/ts.c: ts_parse() against RFC 3339 §5.6 and
 * ts_format() round trips. Expected microsecond values were computed
 * independently (Python datetime).
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tests/unit/t.h"

struct ts_case {
	int         line;
	const char *in;
	int         ok;       /* 1: must parse */
	int64_t     us;       /* expected value when ok */
	const char *fmt;      /* expected ts_format(us) when ok */
};

static const struct ts_case cases[] = {
	/* zones */
	{ __LINE__, "2026-05-20T12:45:00Z", 1, INT64_C(1779281100000000),
	  "2026-05-20T12:45:00Z" },
	{ __LINE__, "2026-05-20t12:45:00z", 1, INT64_C(1779281100000000),
	  "2026-05-20T12:45:00Z" },
	{ __LINE__, "2026-05-20T12:45:00+00:00", 1, INT64_C(1779281100000000),
	  "2026-05-20T12:45:00Z" },
	{ __LINE__, "2026-05-20T12:45:00-00:00", 1, INT64_C(1779281100000000),
	  "2026-05-20T12:45:00Z" },
	{ __LINE__, "2026-05-20T12:45:00+02:00", 1, INT64_C(1779273900000000),
	  "2026-05-20T10:45:00Z" },
	{ __LINE__, "2026-05-20T12:45:00-05:30", 1, INT64_C(1779300900000000),
	  "2026-05-20T18:15:00Z" },
	{ __LINE__, "2026-01-01T00:00:00+23:59", 1, INT64_C(1767139260000000),
	  "2025-12-31T00:01:00Z" },
	{ __LINE__, "2026-01-01T00:00:00-23:59", 1, INT64_C(1767311940000000),
	  "2026-01-01T23:59:00Z" },
	/* fractions: any number of digits (RFC 3339 "." 1*DIGIT), truncated
	 * to microseconds; the caller bounds the whole text's length */
	{ __LINE__, "2026-05-20T12:45:00.1Z", 1, INT64_C(1779281100100000),
	  "2026-05-20T12:45:00.100000Z" },
	{ __LINE__, "2026-05-20T12:45:00.123Z", 1, INT64_C(1779281100123000),
	  "2026-05-20T12:45:00.123000Z" },
	{ __LINE__, "2026-05-20T12:45:00.123456Z", 1, INT64_C(1779281100123456),
	  "2026-05-20T12:45:00.123456Z" },
	{ __LINE__, "2026-05-20T12:45:00.1234567Z", 1, INT64_C(1779281100123456),
	  "2026-05-20T12:45:00.123456Z" },
	{ __LINE__, "2026-05-20T12:45:00.123456789Z", 1,
	  INT64_C(1779281100123456), "2026-05-20T12:45:00.123456Z" },
	{ __LINE__, "2026-05-20T12:45:00.000000000Z", 1,
	  INT64_C(1779281100000000), "2026-05-20T12:45:00Z" },
	{ __LINE__, "2026-05-20T12:45:00.1234567890Z", 1,
	  INT64_C(1779281100123456), "2026-05-20T12:45:00.123456Z" },
	{ __LINE__, "2026-05-20T12:45:00.999999999999999999999999Z", 1,
	  INT64_C(1779281100999999), "2026-05-20T12:45:00.999999Z" },
	{ __LINE__, "2026-05-20T12:45:00.Z", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:00,5Z", 0, 0, NULL },
	/* epoch, extremes, calendar */
	{ __LINE__, "1970-01-01T00:00:00Z", 1, 0, "1970-01-01T00:00:00Z" },
	{ __LINE__, "1969-12-31T23:59:59.5Z", 1, INT64_C(-500000),
	  "1969-12-31T23:59:59.500000Z" },
	{ __LINE__, "0001-01-01T00:00:00Z", 1, INT64_C(-62135596800000000),
	  "0001-01-01T00:00:00Z" },
	{ __LINE__, "9999-12-31T23:59:59.999999Z", 1,
	  INT64_C(253402300799999999), "9999-12-31T23:59:59.999999Z" },
	{ __LINE__, "2000-02-29T00:00:00Z", 1, INT64_C(951782400000000),
	  "2000-02-29T00:00:00Z" },
	{ __LINE__, "2024-02-29T23:59:59.999999Z", 1,
	  INT64_C(1709251199999999), "2024-02-29T23:59:59.999999Z" },
	{ __LINE__, "1900-03-01T00:00:00Z", 1, INT64_C(-2203891200000000),
	  "1900-03-01T00:00:00Z" },
	{ __LINE__, "2100-02-28T12:00:00Z", 1, INT64_C(4107499200000000),
	  "2100-02-28T12:00:00Z" },
	{ __LINE__, "1900-02-29T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "2023-02-29T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "2100-02-29T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "2024-02-30T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "2026-04-31T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "2026-06-31T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "2026-01-32T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "2026-01-00T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "2026-00-10T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "2026-13-10T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "0000-01-01T00:00:00Z", 0, 0, NULL },
	{ __LINE__, "0000-12-31T23:59:59-01:00", 0, 0, NULL },
	{ __LINE__, "10000-01-01T00:00:00Z", 0, 0, NULL },
	/* the UTC instant must stay in 0001-9999 too */
	{ __LINE__, "0001-01-01T00:00:00+00:01", 0, 0, NULL },
	{ __LINE__, "0001-01-01T00:59:59+01:00", 0, 0, NULL },
	{ __LINE__, "0001-01-01T01:00:00+01:00", 1, INT64_C(-62135596800000000),
	  "0001-01-01T00:00:00Z" },
	{ __LINE__, "0001-01-01T00:00:00-01:00", 1, INT64_C(-62135593200000000),
	  "0001-01-01T01:00:00Z" },
	{ __LINE__, "9999-12-31T23:59:59-00:01", 0, 0, NULL },
	{ __LINE__, "9999-12-31T23:59:59.999999+00:01", 1,
	  INT64_C(253402300739999999), "9999-12-31T23:58:59.999999Z" },
	{ __LINE__, "2026-12-31T23:59:59Z", 1, INT64_C(1798761599000000),
	  "2026-12-31T23:59:59Z" },
	/* time ranges */
	{ __LINE__, "2026-05-20T24:00:00Z", 0, 0, NULL },
	{ __LINE__, "2026-05-20T23:60:00Z", 0, 0, NULL },
	{ __LINE__, "2026-05-20T23:59:60Z", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:00+24:00", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:00+01:60", 0, 0, NULL },
	/* shape */
	{ __LINE__, "2026-05-20T12:45:00", 0, 0, NULL },
	{ __LINE__, "2026-05-20 12:45:00Z", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:00Zx", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:00Z ", 0, 0, NULL },
	{ __LINE__, " 2026-05-20T12:45:00Z", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:00+02:00:00", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:00+0200", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:00+02", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45Z", 0, 0, NULL },
	{ __LINE__, "2026-5-20T12:45:00Z", 0, 0, NULL },
	{ __LINE__, "26-05-20T12:45:00Z", 0, 0, NULL },
	{ __LINE__, "+2026-05-20T12:45:00Z", 0, 0, NULL },
	{ __LINE__, "2026/05/20T12:45:00Z", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12-45-00Z", 0, 0, NULL },
	{ __LINE__, "2026-05-20", 0, 0, NULL },
	{ __LINE__, "", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:00UTC", 0, 0, NULL },
	{ __LINE__, "2026-05-2OT12:45:00Z", 0, 0, NULL },
	{ __LINE__, "2026-05-20T12:45:0-Z", 0, 0, NULL },
};

/*
 * Parse every row from an exact-size heap copy (so ASan sees any read past
 * len); check value and format, and that the formatted text parses back.
 */
static void
run_cases(void)
{
	size_t  i, n;
	int64_t us, back;
	char    out[32], *copy;
	int     rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct ts_case *c = &cases[i];

		n = strlen(c->in);
		copy = malloc(n ? n : 1);
		memcpy(copy, c->in, n);
		us = -42;
		rc = ts_parse(copy, n, &us);
		free(copy);
		if (!c->ok) {
			T_CHECK(c->line, rc == -1, "\"%s\" accepted", c->in);
			continue;
		}
		T_CHECK(c->line, rc == 0, "\"%s\" rejected", c->in);
		if (rc != 0)
			continue;
		T_CHECK(c->line, us == c->us, "\"%s\": %lld, want %lld",
		    c->in, (long long)us, (long long)c->us);
		ts_format(us, out);
		T_CHECK(c->line, strcmp(out, c->fmt) == 0,
		    "format \"%s\", want \"%s\"", out, c->fmt);
		T_CHECK(c->line, ts_parse(out, strlen(out), &back) == 0 &&
		    back == us, "\"%s\" does not parse back", out);
	}
}

/* A length shorter than the string must cut it (no reading up to NUL). */
static void
run_len(void)
{
	const char *s = "2026-05-20T12:45:00Z+01:00";
	int64_t     us = 0;

	T_OK(ts_parse(s, 20, &us) == 0 && us == INT64_C(1779281100000000),
	    "prefix of 20 bytes");
	T_OK(ts_parse(s, 19, &us) == -1, "19 bytes (no zone) accepted");
	T_OK(ts_parse(s, 0, &us) == -1, "empty accepted");
	T_OK(ts_parse(NULL, 0, &us) == -1, "NULL accepted");
}

/* ts_format over a sweep of days: parse(format(x)) == x. */
static void
run_sweep(void)
{
	int64_t us, back;
	char    out[32];
	int     bad = 0;

	/* Every ~1.3 days plus an odd offset from year 1 to 9999. */
	for (us = INT64_C(-62135596800000000);
	    us < INT64_C(253402300799999999);
	    us += INT64_C(112233445566777)) {
		ts_format(us, out);
		if (ts_parse(out, strlen(out), &back) != 0 || back != us) {
			if (bad++ == 0)
				T_OK(0, "round trip of %lld via \"%s\"",
				    (long long)us, out);
		}
	}
	T_OK(bad == 0, "%d round-trip failures", bad);

	/* Far outside 1-9999 ts_format must still fit and terminate. */
	ts_format(INT64_MIN, out);
	T_OK(strlen(out) < 32 && out[strlen(out) - 1] == 'Z', "INT64_MIN: %s", out);
	ts_format(INT64_MAX, out);
	T_OK(strlen(out) < 32 && out[strlen(out) - 1] == 'Z', "INT64_MAX: %s", out);
}

static void
run_now(void)
{
	int64_t a = ts_now(), b = ts_now();

	/* After 2024-01-01 and not going backwards between two calls. */
	T_OK(a > INT64_C(1704067200000000), "ts_now too small: %lld",
	    (long long)a);
	T_OK(b >= a, "ts_now went backwards");
}

int
main(void)
{
	t_file = "test_ts";
	run_cases();
	run_len();
	run_sweep();
	run_now();
	return t_done();
}
