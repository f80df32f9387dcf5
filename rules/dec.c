/*
 * rules/dec.c — exact decimal numbers: JSON number text (RFC 8259 §6) to
 * GMP rationals, canonical text for fingerprints, rationals back to text,
 * rounding to integers.
 */
#include <float.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

/* The parts of a JSON number text. */
struct decnum {
	int         neg;
	const char *ip;    /* integer digits */
	size_t      ilen;
	const char *fp;    /* fraction digits, flen may be 0 */
	size_t      flen;
	int         eneg;
	const char *ep;    /* exponent digits, elen may be 0 */
	size_t      elen;
};

static int
isdig(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Split s[0..len) by the RFC 8259 §6 number grammar
 *   number = [ "-" ] int [ frac ] [ exp ]
 *   int    = "0" / ( digit1-9 *DIGIT )
 *   frac   = "." 1*DIGIT
 *   exp    = ("e" / "E") [ "-" / "+" ] 1*DIGIT
 * into *d. Returns 0, or -1 when the whole text is not one number.
 */
static int
dec_scan(const char *s, size_t len, struct decnum *d)
{
	size_t i = 0;

	memset(d, 0, sizeof(*d));
	if (s == NULL)
		return -1;
	if (i < len && s[i] == '-') {
		d->neg = 1;
		i++;
	}
	if (i >= len || !isdig(s[i]))
		return -1;
	d->ip = s + i;
	if (s[i] == '0')
		i++;
	else
		while (i < len && isdig(s[i]))
			i++;
	d->ilen = (size_t)(s + i - d->ip);
	if (i < len && s[i] == '.') {
		i++;
		d->fp = s + i;
		while (i < len && isdig(s[i]))
			i++;
		d->flen = (size_t)(s + i - d->fp);
		if (d->flen == 0)
			return -1;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-')) {
			d->eneg = s[i] == '-';
			i++;
		}
		d->ep = s + i;
		while (i < len && isdig(s[i]))
			i++;
		d->elen = (size_t)(s + i - d->ep);
		if (d->elen == 0)
			return -1;
	}
	return i == len ? 0 : -1;
}

/* Set z to the unsigned value n. */
static void
z_set_size(mpz_t z, size_t n)
{
	uint64_t v = n;

	mpz_import(z, 1, 1, sizeof(v), 0, 0, &v);
}

/*
 * The significant digits of d (integer then fraction digits, leading zeros
 * dropped; trailing zeros kept) as a malloc'd NUL-terminated string (caller
 * frees); "" when the number is zero.
 */
static char *
dec_digits(const struct decnum *d)
{
	char  *buf;
	size_t n = 0, i;

	if (d->ilen > SIZE_MAX - d->flen - 1)
		return NULL;
	buf = rule__xmalloc(d->ilen + d->flen + 1);
	for (i = 0; i < d->ilen; i++)
		if (n > 0 || d->ip[i] != '0')
			buf[n++] = d->ip[i];
	for (i = 0; i < d->flen; i++)
		if (n > 0 || d->fp[i] != '0')
			buf[n++] = d->fp[i];
	buf[n] = '\0';
	return buf;
}

/*
 * The usual number (an amount like 120.50): at most 18 significant digits
 * and a value m × 10^k with |k| <= 18. Its reduced fraction is found
 * with machine integers: the denominator 10^-k is 2^j × 5^j, so
 * dividing m by 2 and by 5 while both have such a factor leaves it in
 * lowest terms. Two big-number parses per event were 4 % of a batch
 * worker's instructions. 0 when done, 1 when the number is not such a
 * one (the caller takes the general way).
 */
static int
dec_parse_small(const struct decnum *d, unsigned long exp, mpq_t out)
{
	unsigned long m = 0, den = 1;
	size_t        i, nd = 0;
	long          k;
	int           two, five;

	if (sizeof(m) < 8)
		return 1;      /* 18 digits need 64 bits */
	for (i = 0; i < d->ilen + d->flen; i++) {
		char c = i < d->ilen ? d->ip[i] : d->fp[i - d->ilen];
		if (nd == 0 && c == '0')
			continue;
		if (++nd > 18)
			return 1;
		m = m * 10 + (unsigned long)(c - '0');
	}
	if (m == 0) {
		mpq_set_ui(out, 0, 1);
		return 0;
	}
	if (exp > 18)
		return 1;
	k = (d->eneg ? -(long)exp : (long)exp) - (long)d->flen;
	if (k < -18)
		return 1;
	for (; k > 0; k--) {
		if (m > ULONG_MAX / 10)
			return 1;
		m *= 10;
	}
	for (two = five = (int)-k; two > 0 && m % 2 == 0; two--)
		m /= 2;
	for (; five > 0 && m % 5 == 0; five--)
		m /= 5;
	while (two-- > 0)
		den *= 2;
	while (five-- > 0)
		den *= 5;
	mpz_set_ui(mpq_numref(out), m);
	if (d->neg)
		mpz_neg(mpq_numref(out), mpq_numref(out));
	mpz_set_ui(mpq_denref(out), den);
	return 0;
}

/*
 * Parse a JSON number into an exact rational (see rules.h). The value is
 * digits × 10^(exp - flen); the exponent as written is limited to
 * RULE_DEC_MAX_EXP so that no text can ask for a huge power of ten.
 * Small numbers take dec_parse_small(), the others the big-number way
 * (rule__dec_parse_big(), which tests compare it with).
 */
static int
dec_parse(const char *s, size_t len, mpq_t out, int small)
{
	struct decnum d;
	char         *digits;
	unsigned long exp = 0;
	size_t        i;
	mpz_t         num, p;

	if (dec_scan(s, len, &d) == -1)
		return -1;
	for (i = 0; i < d.elen; i++) {
		exp = exp * 10 + (unsigned long)(d.ep[i] - '0');
		if (exp > RULE_DEC_MAX_EXP)
			return -1;
	}
	if (small && dec_parse_small(&d, exp, out) == 0)
		return 0;
	if ((digits = dec_digits(&d)) == NULL)
		return -1;
	if (digits[0] == '\0') {
		free(digits);
		mpq_set_ui(out, 0, 1);
		return 0;
	}
	mpz_init(num);
	mpz_init(p);
	mpz_set_str(num, digits, 10);
	free(digits);
	/* value = num × 10^(±exp) / 10^flen */
	if (!d.eneg) {
		mpz_ui_pow_ui(p, 10, exp);
		mpz_mul(num, num, p);
		mpz_set_ui(p, 1);
	} else
		mpz_ui_pow_ui(p, 10, exp);
	if (d.flen > 0) {
		mpz_t f;

		mpz_init(f);
		z_set_size(f, d.flen);
		if (!mpz_fits_ulong_p(f)) {
			mpz_clear(f);
			mpz_clear(num);
			mpz_clear(p);
			return -1;
		}
		mpz_ui_pow_ui(f, 10, mpz_get_ui(f));
		mpz_mul(p, p, f);
		mpz_clear(f);
	}
	if (d.neg)
		mpz_neg(num, num);
	mpz_set(mpq_numref(out), num);
	mpz_set(mpq_denref(out), p);
	mpq_canonicalize(out);
	mpz_clear(num);
	mpz_clear(p);
	return 0;
}

int
rule_dec_parse(const char *s, size_t len, mpq_t out)
{
	return dec_parse(s, len, out, 1);
}

int
rule__dec_parse_big(const char *s, size_t len, mpq_t out)
{
	return dec_parse(s, len, out, 0);
}

int
rule_dec_in_double_range(const mpq_t q)
{
	mpz_t m;
	int   r;

	mpz_init(m);
	mpz_set_d(m, DBL_MAX);          /* DBL_MAX is an integer: exact */
	mpz_mul(m, m, mpq_denref(q));
	r = mpz_cmpabs(mpq_numref(q), m) <= 0;
	mpz_clear(m);
	return r;
}

/*
 * Canonical text (rule in rules.h): digits × 10^e with e computed in
 * arbitrary precision, so that any exponent the grammar allows works.
 */
char *
rule_dec_canon(const char *s, size_t len)
{
	struct decnum d;
	char         *digits, *etxt = NULL, *out;
	size_t        n, tz = 0, need;
	mpz_t         e, t;

	if (dec_scan(s, len, &d) == -1)
		return NULL;
	if ((digits = dec_digits(&d)) == NULL)
		return NULL;
	n = strlen(digits);
	if (n == 0) {
		free(digits);
		out = rule__xmalloc(2);
		memcpy(out, "0", 2);
		return out;
	}
	while (n > 1 && digits[n - 1] == '0') {
		n--;
		tz++;
	}
	digits[n] = '\0';

	/* e = ±exponent - flen + stripped trailing zeros */
	mpz_init(e);
	mpz_init(t);
	if (d.elen > 0) {
		char *eb = rule__xmalloc(d.elen + 1);

		memcpy(eb, d.ep, d.elen);
		eb[d.elen] = '\0';
		mpz_set_str(e, eb, 10);
		free(eb);
		if (d.eneg)
			mpz_neg(e, e);
	}
	z_set_size(t, d.flen);
	mpz_sub(e, e, t);
	z_set_size(t, tz);
	mpz_add(e, e, t);
	if (mpz_sgn(e) != 0) {
		etxt = rule__xmalloc(mpz_sizeinbase(e, 10) + 2);
		mpz_get_str(etxt, 10, e);
	}

	need = (d.neg ? 1 : 0) + n + (etxt ? 1 + strlen(etxt) : 0) + 1;
	out = rule__xmalloc(need);
	out[0] = '\0';
	if (d.neg)
		strcat(out, "-");
	strcat(out, digits);
	if (etxt) {
		strcat(out, "e");
		strcat(out, etxt);
	}
	free(digits);
	free(etxt);
	mpz_clear(e);
	mpz_clear(t);
	return out;
}

/*
 * Round q to an integer: floor, ceil, or half away from zero computed as
 * sign(q) × floor((2|n| + d) / 2d) for q = n/d.
 */
void
rule_dec_round(mpz_t out, const mpq_t q, enum rule_rounding mode)
{
	mpz_t t, d2;

	switch (mode) {
	case RULE_ROUND_CEIL:
		mpz_cdiv_q(out, mpq_numref(q), mpq_denref(q));
		return;
	case RULE_ROUND_HALF_AWAY:
		mpz_init(t);
		mpz_init(d2);
		mpz_abs(t, mpq_numref(q));
		mpz_mul_2exp(t, t, 1);
		mpz_add(t, t, mpq_denref(q));
		mpz_mul_2exp(d2, mpq_denref(q), 1);
		mpz_fdiv_q(t, t, d2);
		if (mpq_sgn(q) < 0)
			mpz_neg(t, t);
		mpz_set(out, t);
		mpz_clear(t);
		mpz_clear(d2);
		return;
	case RULE_ROUND_FLOOR:
	default:
		mpz_fdiv_q(out, mpq_numref(q), mpq_denref(q));
		return;
	}
}

/*
 * Decimal text of q rounded half away from zero to maxfrac fraction
 * digits: N = round(q × 10^maxfrac); its digits, left-padded with zeros to
 * more than maxfrac, get a decimal point maxfrac digits from the right;
 * trailing fraction zeros go.
 */
char *
rule_dec_to_text(const mpq_t q, unsigned maxfrac)
{
	mpq_t  s;
	mpz_t  n, p;
	char  *dig, *pd, *out;
	size_t dlen, plen, ilen, flen, o = 0;
	int    neg;

	mpq_init(s);
	mpz_init(n);
	mpz_init(p);
	mpz_ui_pow_ui(p, 10, maxfrac);
	mpq_set_z(s, p);
	mpq_mul(s, s, q);
	rule_dec_round(n, s, RULE_ROUND_HALF_AWAY);
	neg = mpz_sgn(n) < 0;
	mpz_abs(n, n);
	dig = rule__xmalloc(mpz_sizeinbase(n, 10) + 2);
	mpz_get_str(dig, 10, n);
	dlen = strlen(dig);

	plen = dlen > maxfrac ? dlen : (size_t)maxfrac + 1;
	pd = rule__xmalloc(plen + 1);
	memset(pd, '0', plen - dlen);
	memcpy(pd + (plen - dlen), dig, dlen + 1);
	ilen = plen - maxfrac;
	flen = maxfrac;
	while (flen > 0 && pd[ilen + flen - 1] == '0')
		flen--;

	out = rule__xmalloc(1 + ilen + 1 + flen + 1);
	if (neg)
		out[o++] = '-';
	memcpy(out + o, pd, ilen);
	o += ilen;
	if (flen > 0) {
		out[o++] = '.';
		memcpy(out + o, pd + ilen, flen);
		o += flen;
	}
	out[o] = '\0';
	free(dig);
	free(pd);
	mpq_clear(s);
	mpz_clear(n);
	mpz_clear(p);
	return out;
}
