/*
 * rules/util.c — small helpers shared inside rules/: allocation that
 * aborts on out of memory, int64 <-> GMP conversions, checked addition.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

static void
oom(size_t n)
{
	fprintf(stderr, "rfevents: out of memory (%zu bytes)\n", n);
	abort();
}

void *
rule__xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		oom(n);
	return p;
}

void *
rule__xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		oom(n);
	return q;
}

void *
rule__xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		oom(n);
	return p;
}

/*
 * Make arr hold at least `need` elements of `size` bytes, doubling *cap.
 * Returns the array (realloc'd when it grew); new room is not initialised.
 */
void *
rule__grow(void *arr, size_t *cap, size_t need, size_t size)
{
	size_t ncap;

	if (need <= *cap)
		return arr;
	ncap = *cap ? *cap : 4;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			oom(SIZE_MAX);
		ncap *= 2;
	}
	if (size != 0 && ncap > SIZE_MAX / size)
		oom(SIZE_MAX);
	arr = rule__xrealloc(arr, ncap * size);
	*cap = ncap;
	return arr;
}

/* Set z to v; works whatever the width of long. */
void
rule__z_set_i64(mpz_t z, int64_t v)
{
	uint64_t mag;

	/* magnitude without overflowing on INT64_MIN */
	mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	mpz_import(z, 1, 1, sizeof(mag), 0, 0, &mag);
	if (v < 0)
		mpz_neg(z, z);
}

/*
 * Store z in *v when it fits int64. Returns 0, or -1 (and *v untouched)
 * when z is out of range.
 */
int
rule__z_get_i64(const mpz_t z, int64_t *v)
{
	uint64_t mag = 0;
	size_t   count = 0;

	if (mpz_sgn(z) == 0) {
		*v = 0;
		return 0;
	}
	if (mpz_sizeinbase(z, 2) > 64)
		return -1;
	mpz_export(&mag, &count, 1, sizeof(mag), 0, 0, z);
	if (count != 1)
		return -1;
	if (mpz_sgn(z) > 0) {
		if (mag > (uint64_t)INT64_MAX)
			return -1;
		*v = (int64_t)mag;
	} else {
		if (mag > (uint64_t)INT64_MAX + 1)
			return -1;
		if (mag == (uint64_t)INT64_MAX + 1)
			*v = INT64_MIN;
		else
			*v = -(int64_t)mag;
	}
	return 0;
}

void
rule__q_set_i64(mpq_t q, int64_t v)
{
	rule__z_set_i64(mpq_numref(q), v);
	mpz_set_ui(mpq_denref(q), 1);
}

int
rule__add_i64(int64_t a, int64_t b, int64_t *r)
{
	if (b > 0 && a > INT64_MAX - b)
		return -1;
	if (b < 0 && a < INT64_MIN - b)
		return -1;
	*r = a + b;
	return 0;
}

void
rule__why(char *why, size_t whysz, const char *fmt, ...)
{
	va_list ap;

	if (why == NULL || whysz == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whysz, fmt, ap);
	va_end(ap);
}
