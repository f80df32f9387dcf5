/*
 * core/ts.c — RFC 3339 §5.6 date-time parsing and formatting, in
 * microseconds since the Unix epoch (proleptic Gregorian calendar, UTC).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/core.h"

#define US_PER_SEC   INT64_C(1000000)
#define SEC_PER_DAY  INT64_C(86400)
/* Days from 0001-01-01 to 1970-01-01. */
#define EPOCH_DAYS   INT64_C(719162)
/* Days in 400, 100 (not ending in a 400th year), 4 (with a leap) and 1 years. */
#define DAYS_400Y    146097
#define DAYS_100Y    36524
#define DAYS_4Y      1461
#define DAYS_1Y      365
/* 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z in seconds since the epoch. */
#define TS_MIN_SEC   INT64_C(-62135596800)
#define TS_MAX_SEC   INT64_C(253402300799)

/* Days before each month in a common year. */
static const int mdays_before[13] = {
	0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365
};

static int
is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Number of days in month m (1-12) of year y. */
static int
month_days(int64_t y, int m)
{
	int n = mdays_before[m] - mdays_before[m - 1];

	return m == 2 && is_leap(y) ? n + 1 : n;
}

/* Days since 1970-01-01 of the valid date y-m-d with y >= 1. */
static int64_t
days_from_date(int64_t y, int m, int d)
{
	int64_t py = y - 1;   /* whole years before y */
	int64_t days;

	days = py * 365 + py / 4 - py / 100 + py / 400;
	days += mdays_before[m - 1] + (m > 2 && is_leap(y)) + (d - 1);
	return days - EPOCH_DAYS;
}

/*
 * Inverse of days_from_date() for any day count (years before 1 come out
 * zero or negative): splits the days since 0001-01-01 into 400-, 100-, 4-
 * and 1-year cycles. Writes the date into *y, *m, *d.
 */
static void
date_from_days(int64_t days, int64_t *y, int *m, int *d)
{
	int64_t z = days + EPOCH_DAYS, era, r, c, q, n;
	int     leap, mm;

	era = z / DAYS_400Y;
	r = z % DAYS_400Y;
	if (r < 0) {
		r += DAYS_400Y;
		era--;
	}
	c = r / DAYS_100Y;
	if (c > 3)
		c = 3;
	r -= c * DAYS_100Y;
	q = r / DAYS_4Y;
	r -= q * DAYS_4Y;
	n = r / DAYS_1Y;
	if (n > 3)
		n = 3;
	r -= n * DAYS_1Y;
	*y = era * 400 + c * 100 + q * 4 + n + 1;
	leap = is_leap(*y);
	for (mm = 1; mm < 12; mm++) {
		int end = mdays_before[mm] + (mm >= 2 && leap);

		if (r < end)
			break;
	}
	*m = mm;
	*d = (int)(r - (mdays_before[mm - 1] + (mm > 2 && leap))) + 1;
}

/*
 * Read exactly n ASCII digits at s[pos..pos+n) (the caller checked that they
 * are in bounds) into *v. Returns 1, or 0 if one is not a digit.
 */
static int
digits(const char *s, size_t pos, size_t n, int *v)
{
	size_t i;
	int    x = 0;

	for (i = 0; i < n; i++) {
		if (s[pos + i] < '0' || s[pos + i] > '9')
			return 0;
		x = x * 10 + (s[pos + i] - '0');
	}
	*v = x;
	return 1;
}

/*
 * See core.h. Grammar (RFC 3339 §5.6, with the upper bounds of §5.7):
 *   full-date "T" partial-time time-offset
 *   YYYY-MM-DD T HH:MM:SS [ "." 1*9DIGIT ] ( "Z" / ("+"/"-") HH:MM )
 * No whitespace anywhere and nothing after the offset. Besides the local
 * date being in years 0001-9999, the instant converted to UTC must be too
 * (so "0001-01-01T00:00:00+01:00" is rejected).
 */
int
ts_parse(const char *s, size_t len, int64_t *us)
{
	int     y, mo, d, h, mi, sec, oh, om, frac = 0, nfrac = 0;
	int64_t off = 0, t;
	size_t  pos;

	if (s == NULL || len < 20)
		return -1;
	if (!digits(s, 0, 4, &y) || s[4] != '-' || !digits(s, 5, 2, &mo) ||
	    s[7] != '-' || !digits(s, 8, 2, &d) ||
	    (s[10] != 'T' && s[10] != 't') ||
	    !digits(s, 11, 2, &h) || s[13] != ':' || !digits(s, 14, 2, &mi) ||
	    s[16] != ':' || !digits(s, 17, 2, &sec))
		return -1;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo) ||
	    h > 23 || mi > 59 || sec > 59)
		return -1;
	pos = 19;
	if (s[pos] == '.') {
		pos++;
		while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
			if (nfrac < 6)
				frac = frac * 10 + (s[pos] - '0');
			if (nfrac < 7)           /* stays small however long */
				nfrac++;
			pos++;
		}
		if (nfrac == 0)
			return -1;
		for (; nfrac < 6; nfrac++)
			frac *= 10;
	}
	if (pos >= len)
		return -1;
	if (s[pos] == 'Z' || s[pos] == 'z')
		pos++;
	else if (s[pos] == '+' || s[pos] == '-') {
		if (len - pos < 6 || !digits(s, pos + 1, 2, &oh) ||
		    s[pos + 3] != ':' || !digits(s, pos + 4, 2, &om) ||
		    oh > 23 || om > 59)
			return -1;
		off = (int64_t)oh * 3600 + om * 60;
		if (s[pos] == '-')
			off = -off;
		pos += 6;
	} else
		return -1;
	if (pos != len)
		return -1;
	t = days_from_date(y, mo, d) * SEC_PER_DAY + h * 3600 + mi * 60 + sec;
	t -= off;
	/* The instant itself must lie in 0001-9999 UTC, so that ts_format()
	 * gives back text that ts_parse() accepts. */
	if (t < TS_MIN_SEC || t > TS_MAX_SEC)
		return -1;
	*us = t * US_PER_SEC + frac;
	return 0;
}

/* Write v (0 <= v < 10^width) as exactly width decimal digits. */
static char *
put_digits(char *p, int64_t v, int width)
{
	int i;

	for (i = width - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
	return p + width;
}

/*
 * See core.h. Works for every int64_t (years outside 1-9999 come out with
 * more digits or a sign; they fit in 32 bytes).
 */
char *
ts_format(int64_t us, char out[32])
{
	int64_t secs = us / US_PER_SEC, frac = us % US_PER_SEC;
	int64_t days, rem, y;
	int     m, d, n;
	char    tmp[64];

	if (frac < 0) {
		frac += US_PER_SEC;
		secs--;
	}
	days = secs / SEC_PER_DAY;
	rem = secs % SEC_PER_DAY;
	if (rem < 0) {
		rem += SEC_PER_DAY;
		days--;
	}
	date_from_days(days, &y, &m, &d);
	if (y >= 0 && y <= 9999) {
		/* the usual case without printf: this runs several times per
		 * request (timestamps of the event, the log line) */
		char *p = out;
		p = put_digits(p, y, 4);
		*p++ = '-';
		p = put_digits(p, m, 2);
		*p++ = '-';
		p = put_digits(p, d, 2);
		*p++ = 'T';
		p = put_digits(p, rem / 3600, 2);
		*p++ = ':';
		p = put_digits(p, rem / 60 % 60, 2);
		*p++ = ':';
		p = put_digits(p, rem % 60, 2);
		if (frac) {
			*p++ = '.';
			p = put_digits(p, frac, 6);
		}
		*p++ = 'Z';
		*p = '\0';
		return out;
	}
	/* At most 30 bytes for any int64_t (|y| < 300000); the larger buffer
	 * only keeps the compiler's truncation analysis quiet. */
	if (frac)
		n = snprintf(tmp, sizeof(tmp), "%04lld-%02d-%02dT%02d:%02d:%02d.%06dZ",
		    (long long)y, m, d, (int)(rem / 3600),
		    (int)(rem / 60 % 60), (int)(rem % 60), (int)frac);
	else
		n = snprintf(tmp, sizeof(tmp), "%04lld-%02d-%02dT%02d:%02d:%02dZ",
		    (long long)y, m, d, (int)(rem / 3600),
		    (int)(rem / 60 % 60), (int)(rem % 60));
	if (n < 0 || n > 31)
		n = 0;
	memcpy(out, tmp, (size_t)n);
	out[n] = '\0';
	return out;
}

/* See core.h. */
int64_t
ts_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * US_PER_SEC + ts.tv_nsec / 1000;
}
