/*
 * core/ident_norm.c — identity types and the normalisation of identity
 * values (API.md §3): externalUserId/deviceKey, email, phone (E.164).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

const char *const ident_type_name[IDENT__MAX] = {
	"EXTERNAL",        /* IDENT_EXTERNAL */
	"EMAIL",           /* IDENT_EMAIL */
	"PHONE",           /* IDENT_PHONE */
	"DEVICE_KEY",      /* IDENT_DEVICE_KEY */
};
_Static_assert(sizeof(ident_type_name) / sizeof(ident_type_name[0]) ==
    IDENT__MAX, "ident_type_name");

const char *const ident_json_key[IDENT__MAX] = {
	"externalUserId",  /* IDENT_EXTERNAL */
	"email",           /* IDENT_EMAIL */
	"phone",           /* IDENT_PHONE */
	"deviceKey",       /* IDENT_DEVICE_KEY */
};
_Static_assert(sizeof(ident_json_key) / sizeof(ident_json_key[0]) ==
    IDENT__MAX, "ident_json_key");

/* E.164: at most 15 digits after '+'; 8 is the floor API.md sets. */
#define PHONE_MIN_DIGITS 8
#define PHONE_MAX_DIGITS 15

/* Out of memory: log and abort, as xmalloc does elsewhere. */
static _Noreturn void
oom(void)
{
	static const char msg[] = "rfevents: ident: out of memory\n";

	fwrite(msg, 1, sizeof(msg) - 1, stderr);
	abort();
}

/* malloc'd NUL-terminated copy of s[0..n); aborts on OOM. */
static char *
dup_bytes(const char *s, size_t n)
{
	char *p;

	if (n == SIZE_MAX || (p = malloc(n + 1)) == NULL)
		oom();
	if (n > 0)
		memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static int
is_ascii_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
	    c == '\v';
}

/* Narrow [*b, *e) of s past ASCII whitespace at both ends. */
static void
trim(const char *s, size_t len, size_t *b, size_t *e)
{
	size_t i = 0, j = len;

	while (i < j && is_ascii_ws((unsigned char)s[i]))
		i++;
	while (j > i && is_ascii_ws((unsigned char)s[j - 1]))
		j--;
	*b = i;
	*e = j;
}

/* 1 for control characters (C0, DEL, C1) and Unicode White_Space. */
static int
is_space_or_control(unsigned cp)
{
	if (cp < 0x20 || (cp >= 0x7F && cp <= 0xA0))
		return 1;
	return cp == 0x20 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
	    cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
	    cp == 0x3000;
}

/*
 * Check the trimmed value s[0..n): well-formed UTF-8, no U+0000, 1 to
 * IDENT_MAX_CHARS code points, and (when `strict`) no whitespace or control
 * characters. Returns NULL when fine, else the static reason.
 */
static const char *
check_chars(const char *s, size_t n, int strict)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t               i = 0, k, count = 0;
	unsigned             cp;

	if (n == 0)
		return "empty";
	while (i < n) {
		if ((k = ev_utf8_decode(u + i, n - i, &cp)) == 0)
			return "invalid UTF-8";
		if (cp == 0)
			return "contains U+0000";
		if (strict && is_space_or_control(cp))
			return "contains whitespace or control characters";
		if (++count > IDENT_MAX_CHARS)
			return "longer than 255 characters";
		i += k;
	}
	return NULL;
}

/* See core.h. */
char *
ident_norm_text(const char *s, size_t len, const char **why)
{
	const char *msg;
	size_t      b, e;

	if (s == NULL) {
		s = "";
		len = 0;
	}
	trim(s, len, &b, &e);
	if ((msg = check_chars(s + b, e - b, 0)) != NULL) {
		*why = msg;
		return NULL;
	}
	return dup_bytes(s + b, e - b);
}

/*
 * See core.h. Only ASCII letters are lower-cased (the domain part is
 * case-insensitive; non-ASCII local parts are kept as sent). Besides ASCII
 * whitespace and C0/DEL, C1 controls and Unicode White_Space characters
 * (U+00A0, U+2028, U+3000, ...) are rejected too.
 */
char *
ident_norm_email(const char *s, size_t len, const char **why)
{
	const char *msg, *at;
	char       *out;
	size_t      b, e, n, i;

	if (s == NULL) {
		s = "";
		len = 0;
	}
	trim(s, len, &b, &e);
	n = e - b;
	if ((msg = check_chars(s + b, n, 1)) != NULL) {
		*why = msg;
		return NULL;
	}
	at = memchr(s + b, '@', n);
	if (at == NULL || at == s + b || at == s + e - 1 ||
	    memchr(at + 1, '@', (size_t)(s + e - at - 1)) != NULL) {
		*why = "must contain one '@' with text on both sides";
		return NULL;
	}
	out = dup_bytes(s + b, n);
	for (i = 0; i < n; i++)
		if (out[i] >= 'A' && out[i] <= 'Z')
			out[i] = (char)(out[i] - 'A' + 'a');
	return out;
}

/*
 * See core.h (E.164). Separators ' ', '-', '.', '(', ')' are dropped
 * anywhere; '+' is allowed only as the first remaining character; every
 * other character is invalid. The default country code may be written with
 * a leading '+'. The result must not start with "+0" (no E.164 country code
 * starts with 0).
 */
char *
ident_norm_phone(const char *s, size_t len, const char *default_cc,
    const char **why)
{
	char        dig[2 + PHONE_MAX_DIGITS];  /* digits ("00" too), capped */
	char        out[1 + PHONE_MAX_DIGITS + 1];
	const char *num, *cc = "";
	size_t      i, nd = 0, ncc = 0, nnum, skip = 0;
	int         plus = 0, seen = 0;
	char        c;

	if (s == NULL) {
		s = "";
		len = 0;
	}
	for (i = 0; i < len; i++) {
		c = s[i];
		if (c == ' ' || c == '-' || c == '.' || c == '(' || c == ')')
			continue;
		if (c == '+' && !seen)
			plus = 1;
		else if (c >= '0' && c <= '9') {
			/* Digits beyond the cap only need counting. */
			if (nd < sizeof(dig))
				dig[nd] = c;
			nd++;
		} else {
			*why = c == '+' ? "'+' is only allowed first" :
			    "invalid character in phone number";
			return NULL;
		}
		seen = 1;
	}
	if (nd == 0) {
		*why = "empty phone number";
		return NULL;
	}
	if (!plus && nd >= 2 && dig[0] == '0' && dig[1] == '0') {
		plus = 1;
		skip = 2;
	}
	if (!plus) {
		if (default_cc != NULL && default_cc[0] == '+')
			default_cc++;
		if (default_cc == NULL || default_cc[0] == '\0') {
			*why = "no country code: no '+' and no default";
			return NULL;
		}
		cc = default_cc;
		ncc = strlen(cc);
		if (strspn(cc, "0123456789") != ncc) {
			*why = "invalid default country code";
			return NULL;
		}
	}
	/* nd - skip: digits of the number proper; ncc: country code added. */
	if (nd - skip > PHONE_MAX_DIGITS ||
	    ncc > PHONE_MAX_DIGITS - (nd - skip) ||
	    ncc + (nd - skip) < PHONE_MIN_DIGITS) {
		*why = "must be '+' and 8 to 15 digits (E.164)";
		return NULL;
	}
	num = dig + skip;
	nnum = nd - skip;
	out[0] = '+';
	memcpy(out + 1, cc, ncc);
	memcpy(out + 1 + ncc, num, nnum);
	out[1 + ncc + nnum] = '\0';
	if (out[1] == '0') {
		*why = "country code cannot start with 0 (E.164)";
		return NULL;
	}
	return dup_bytes(out, 1 + ncc + nnum);
}

/* See core.h: counts the bytes that start a code point. */
size_t
utf8_count(const char *s, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			n++;
	return n;
}
