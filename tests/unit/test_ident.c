/*
 * Unit tests for core/ident_norm.c: the identity tables, text / email /
 * phone normalisation (API.md §3), utf8_count, and every string of the
 * Big List of Naughty Strings through the three normalisers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tests/unit/t.h"

/* A table string with its exact length (it may hold NUL bytes). */
#define S(lit) lit, sizeof(lit) - 1

enum kind { K_TEXT, K_EMAIL, K_PHONE };

struct icase {
	int         line;
	enum kind   kind;
	const char *in;
	size_t      len;
	const char *cc;    /* phone only */
	const char *want;  /* NULL: must be rejected */
};

static const struct icase cases[] = {
	/* text: trim ASCII whitespace, keep case, no NUL */
	{ __LINE__, K_TEXT, S("abc"), NULL, "abc" },
	{ __LINE__, K_TEXT, S("  L-1  "), NULL, "L-1" },
	{ __LINE__, K_TEXT, S("\t\n\r\f\vMiXeD cAsE\v\f\r\n\t "), NULL,
	  "MiXeD cAsE" },
	{ __LINE__, K_TEXT, S("a \t b"), NULL, "a \t b" },
	{ __LINE__, K_TEXT, S("\xc2\xa0x\xc2\xa0"), NULL, "\xc2\xa0x\xc2\xa0" },
	{ __LINE__, K_TEXT, S("\xf0\x9f\x98\x80"), NULL, "\xf0\x9f\x98\x80" },
	{ __LINE__, K_TEXT, S(""), NULL, NULL },
	{ __LINE__, K_TEXT, S("   "), NULL, NULL },
	{ __LINE__, K_TEXT, S(" \t\n\r\f\v"), NULL, NULL },
	{ __LINE__, K_TEXT, S("a\0b"), NULL, NULL },
	{ __LINE__, K_TEXT, S("\0"), NULL, NULL },
	{ __LINE__, K_TEXT, S("ab\0"), NULL, NULL },
	{ __LINE__, K_TEXT, S("\xff"), NULL, NULL },
	{ __LINE__, K_TEXT, S("a\xed\xa0\x80"), NULL, NULL },

	/* email: trim, lower-case ASCII, one '@', no blanks or controls */
	{ __LINE__, K_EMAIL, S("  Foo.Bar@Example.COM \n"), NULL,
	  "foo.bar@example.com" },
	{ __LINE__, K_EMAIL, S("a@b"), NULL, "a@b" },
	{ __LINE__, K_EMAIL, S("A+Tag@B.example"), NULL, "a+tag@b.example" },
	{ __LINE__, K_EMAIL, S("\xc3\x9cN\xc3\x8f@EX.COM"), NULL,
	  "\xc3\x9cn\xc3\x8f@ex.com" },
	{ __LINE__, K_EMAIL, S(""), NULL, NULL },
	{ __LINE__, K_EMAIL, S("  "), NULL, NULL },
	{ __LINE__, K_EMAIL, S("ab"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("@b"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a@"), NULL, NULL },
	{ __LINE__, K_EMAIL, S(" @b "), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a@@b"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a@b@c"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a b@c"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a\t@b"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a@b\x7f"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a\x01@b"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a\0@b"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a\xc2\xa0@b"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a\xc2\x85@b"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a@b\xe2\x80\xa8"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a@b\xe3\x80\x80"), NULL, NULL },
	{ __LINE__, K_EMAIL, S("a@\xc0\xaf"), NULL, NULL },

	/* phone: separators, 00, default country code, E.164 length */
	{ __LINE__, K_PHONE, S("+1 (555) 123-4567"), NULL, "+15551234567" },
	{ __LINE__, K_PHONE, S("+1 (555) 123-4567"), "44", "+15551234567" },
	{ __LINE__, K_PHONE, S("(+1) 555-123-4567"), NULL, "+15551234567" },
	{ __LINE__, K_PHONE, S("0044 20 7946 0958"), NULL, "+442079460958" },
	{ __LINE__, K_PHONE, S("0044 20 7946 0958"), "1", "+442079460958" },
	{ __LINE__, K_PHONE, S("0015551234567"), "", "+15551234567" },
	{ __LINE__, K_PHONE, S("555.123.4567"), "1", "+15551234567" },
	{ __LINE__, K_PHONE, S("555.123.4567"), "+1", "+15551234567" },
	{ __LINE__, K_PHONE, S("20 7946 0958"), "44", "+442079460958" },
	{ __LINE__, K_PHONE, S("555.123.4567"), NULL, NULL },
	{ __LINE__, K_PHONE, S("555.123.4567"), "", NULL },
	{ __LINE__, K_PHONE, S("555.123.4567"), "+", NULL },
	{ __LINE__, K_PHONE, S("555.123.4567"), "1x", NULL },
	{ __LINE__, K_PHONE, S("555.123.4567"), " 1", NULL },
	{ __LINE__, K_PHONE, S("+12345678"), NULL, "+12345678" },
	{ __LINE__, K_PHONE, S("+1234567"), NULL, NULL },
	{ __LINE__, K_PHONE, S("+123456789012345"), NULL, "+123456789012345" },
	{ __LINE__, K_PHONE, S("+1234567890123456"), NULL, NULL },
	{ __LINE__, K_PHONE, S("555 1234"), "1", "+15551234" },
	{ __LINE__, K_PHONE, S("555 123"), "1", NULL },
	{ __LINE__, K_PHONE, S("1234567890123"), "44", "+441234567890123" },
	{ __LINE__, K_PHONE, S("1234567890123"), "441", NULL },
	{ __LINE__, K_PHONE, S("00123456789012345"), NULL, "+123456789012345" },
	{ __LINE__, K_PHONE, S("001234567890123456"), NULL, NULL },
	{ __LINE__, K_PHONE, S("0012345678"), NULL, "+12345678" },
	{ __LINE__, K_PHONE, S("001234567"), NULL, NULL },
	{ __LINE__, K_PHONE, S("+0123456789"), NULL, NULL },
	{ __LINE__, K_PHONE, S("000044123456789"), NULL, NULL },
	{ __LINE__, K_PHONE, S("0123456789"), "0", NULL },
	{ __LINE__, K_PHONE, S("+1 555 CALL NOW"), NULL, NULL },
	{ __LINE__, K_PHONE, S("+1 555 123 456a"), NULL, NULL },
	{ __LINE__, K_PHONE, S("+1 555+123 4567"), NULL, NULL },
	{ __LINE__, K_PHONE, S("1+5551234567"), "1", NULL },
	{ __LINE__, K_PHONE, S("++15551234567"), NULL, NULL },
	{ __LINE__, K_PHONE, S("+1/555/123/4567"), NULL, NULL },
	{ __LINE__, K_PHONE, S("\t+15551234567"), NULL, NULL },
	{ __LINE__, K_PHONE, S("+15551234567\n"), NULL, NULL },
	{ __LINE__, K_PHONE, S("+1555123\0004567"), NULL, NULL },
	{ __LINE__, K_PHONE, S("+1 555 123 \xef\xbc\x94\xef\xbc\x95"), NULL, NULL },
	{ __LINE__, K_PHONE, S(""), "1", NULL },
	{ __LINE__, K_PHONE, S("   "), "1", NULL },
	{ __LINE__, K_PHONE, S("+"), "1", NULL },
	{ __LINE__, K_PHONE, S("( ) - ."), "1", NULL },
};

/* Call the normaliser of kind k. */
static char *
norm(enum kind k, const char *s, size_t len, const char *cc, const char **why)
{
	switch (k) {
	case K_TEXT:
		return ident_norm_text(s, len, why);
	case K_EMAIL:
		return ident_norm_email(s, len, why);
	default:
		return ident_norm_phone(s, len, cc, why);
	}
}

/* Run the table, each input from an exact-size heap copy. */
static void
run_cases(void)
{
	const char *why;
	char       *out, *copy;
	size_t      i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct icase *c = &cases[i];

		copy = malloc(c->len ? c->len : 1);
		memcpy(copy, c->in, c->len);
		why = NULL;
		out = norm(c->kind, copy, c->len, c->cc, &why);
		free(copy);
		if (c->want == NULL) {
			T_CHECK(c->line, out == NULL, "accepted as \"%s\"", out);
			T_CHECK(c->line, out != NULL || why != NULL,
			    "rejected without a reason");
		} else {
			T_CHECK(c->line, out != NULL, "rejected: %s",
			    why ? why : "?");
			T_CHECK(c->line, out == NULL || strcmp(out, c->want) == 0,
			    "got \"%s\", want \"%s\"", out, c->want);
		}
		free(out);
	}
}

/* s repeated n times, then `tail` (malloc'd; *len set). */
static char *
repeat(const char *s, size_t n, const char *tail, size_t *len)
{
	size_t sl = strlen(s), tl = strlen(tail), i;
	char  *b = malloc(sl * n + tl + 1);

	for (i = 0; i < n; i++)
		memcpy(b + i * sl, s, sl);
	memcpy(b + sl * n, tail, tl + 1);
	*len = sl * n + tl;
	return b;
}

struct lcase {
	int         line;
	enum kind   kind;
	const char *unit;   /* repeated code point */
	size_t      n;
	const char *tail;   /* appended (counted in code points too) */
	int         ok;
};

/* The 255 code point limit, counted in code points, not bytes. */
static const struct lcase lcases[] = {
	{ __LINE__, K_TEXT, "a", 255, "", 1 },
	{ __LINE__, K_TEXT, "a", 256, "", 0 },
	{ __LINE__, K_TEXT, "\xc3\xa9", 255, "", 1 },
	{ __LINE__, K_TEXT, "\xc3\xa9", 256, "", 0 },
	{ __LINE__, K_TEXT, "\xe2\x82\xac", 255, "", 1 },
	{ __LINE__, K_TEXT, "\xf0\x9f\x98\x80", 255, "", 1 },
	{ __LINE__, K_TEXT, "\xf0\x9f\x98\x80", 256, "", 0 },
	{ __LINE__, K_TEXT, "\xf0\x9f\x98\x80", 254, "   ", 1 },  /* trimmed */
	{ __LINE__, K_EMAIL, "\xc3\xa9", 253, "@x", 1 },
	{ __LINE__, K_EMAIL, "\xc3\xa9", 254, "@x", 0 },
	{ __LINE__, K_EMAIL, "a", 253, "@X", 1 },
	{ __LINE__, K_EMAIL, "a", 254, "@X", 0 },
	{ __LINE__, K_PHONE, "1", 10000, "", 0 },
	{ __LINE__, K_PHONE, " ", 10000, "+15551234567", 1 },
};

static void
run_lengths(void)
{
	const char *why;
	char       *in, *out;
	size_t      i, len;

	for (i = 0; i < sizeof(lcases) / sizeof(lcases[0]); i++) {
		const struct lcase *c = &lcases[i];

		in = repeat(c->unit, c->n, c->tail, &len);
		why = NULL;
		out = norm(c->kind, in, len, "1", &why);
		T_CHECK(c->line, (out != NULL) == c->ok, "%zu x \"%s\": %s",
		    c->n, c->unit, out ? "accepted" : why);
		if (out != NULL && c->kind == K_TEXT)
			T_CHECK(c->line, utf8_count(out, strlen(out)) == c->n,
			    "length %zu", utf8_count(out, strlen(out)));
		if (out == NULL)
			T_CHECK(c->line, why != NULL, "no reason");
		free(out);
		free(in);
	}
}

struct ucase {
	int         line;
	const char *s;
	size_t      len;
	size_t      want;
};

static const struct ucase ucases[] = {
	{ __LINE__, S(""), 0 },
	{ __LINE__, S("abc"), 3 },
	{ __LINE__, S("\0"), 1 },
	{ __LINE__, S("\xc3\xa9"), 1 },
	{ __LINE__, S("\xe2\x82\xac" "x"), 2 },
	{ __LINE__, S("\xf0\x9f\x98\x80" "a" "\xc3\xa9"), 3 },
	{ __LINE__, S("\xf4\x8f\xbf\xbf"), 1 },
};

static void
run_utf8_count(void)
{
	size_t i, n;

	for (i = 0; i < sizeof(ucases) / sizeof(ucases[0]); i++) {
		n = utf8_count(ucases[i].s, ucases[i].len);
		T_CHECK(ucases[i].line, n == ucases[i].want, "%zu, want %zu",
		    n, ucases[i].want);
	}
}

static void
run_tables(void)
{
	static const char *const names[] = {
		"EXTERNAL", "EMAIL", "PHONE", "DEVICE_KEY" };
	static const char *const keys[] = {
		"externalUserId", "email", "phone", "deviceKey" };
	int i;

	T_OK(IDENT__MAX == 4, "IDENT__MAX %d", IDENT__MAX);
	for (i = 0; i < IDENT__MAX && i < 4; i++) {
		T_OK(strcmp(ident_type_name[i], names[i]) == 0,
		    "ident_type_name[%d] = %s", i, ident_type_name[i]);
		T_OK(strcmp(ident_json_key[i], keys[i]) == 0,
		    "ident_json_key[%d] = %s", i, ident_json_key[i]);
	}
	T_OK(strcmp(ident_type_name[IDENT_EXTERNAL], "EXTERNAL") == 0 &&
	    strcmp(ident_json_key[IDENT_DEVICE_KEY], "deviceKey") == 0,
	    "enum order");
}

static int
ascii_ws(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

/* 1 if s is "+" then 8 to 15 digits, the first not 0. */
static int
is_e164(const char *s)
{
	size_t n = strlen(s);

	return n >= 9 && n <= 16 && s[0] == '+' && s[1] != '0' &&
	    strspn(s + 1, "0123456789") == n - 1;
}

/* Read a whole file into a malloc'd buffer; NULL on error. */
static char *
slurp(const char *path, size_t *len)
{
	FILE  *f;
	char  *buf = NULL;
	long   n;

	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
	    fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
		if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		} else
			*len = (size_t)n;
	}
	fclose(f);
	return buf;
}

/*
 * One naughty string through the normalisers. Text: rejected with a reason
 * exactly when the trimmed value is empty, holds U+0000 or has more than
 * 255 code points; otherwise the bytes of the trimmed input. Email and
 * phone: rejected with a reason, or a well-formed result.
 */
static void
check_naughty(int idx, const char *s, size_t len)
{
	const char *why;
	char       *out;
	size_t      b = 0, e = len, n;
	int         valid;

	while (b < e && ascii_ws((unsigned char)s[b]))
		b++;
	while (e > b && ascii_ws((unsigned char)s[e - 1]))
		e--;
	n = e - b;
	valid = n > 0 && memchr(s + b, '\0', n) == NULL &&
	    utf8_count(s + b, n) <= IDENT_MAX_CHARS;

	why = NULL;
	out = ident_norm_text(s, len, &why);
	if (valid)
		T_OK(out != NULL && strlen(out) == n &&
		    memcmp(out, s + b, n) == 0, "blns[%d]: text %s", idx,
		    out ? "changed" : why);
	else
		T_OK(out == NULL && why != NULL, "blns[%d]: text accepted", idx);
	free(out);

	why = NULL;
	out = ident_norm_email(s, len, &why);
	if (out != NULL) {
		const char *at = strchr(out, '@');

		T_OK(at != NULL && at != out && at[1] != '\0' &&
		    strchr(at + 1, '@') == NULL && strcspn(out,
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ \t\r\n") == strlen(out),
		    "blns[%d]: bad email \"%s\"", idx, out);
	} else
		T_OK(why != NULL, "blns[%d]: email without reason", idx);
	free(out);

	why = NULL;
	out = ident_norm_phone(s, len, "1", &why);
	if (out != NULL)
		T_OK(is_e164(out), "blns[%d]: bad phone \"%s\"", idx, out);
	else
		T_OK(why != NULL, "blns[%d]: phone without reason", idx);
	free(out);
}

static void
run_blns(void)
{
	struct json_perr e;
	const char      *env = getenv("RFEVENTS_TESTDATA");
	char             path[1024];
	char            *buf;
	size_t           len, i, n;
	json_object     *arr, *v;

	snprintf(path, sizeof(path), "%s/naughty-strings/blns.json",
	    env ? env : "../shared/testdata");
	if ((buf = slurp(path, &len)) == NULL) {
		T_OK(0, "cannot read %s", path);
		return;
	}
	arr = json_parse_strict(buf, len, JSON_MAX_DEPTH, &e);
	free(buf);
	T_OK(arr != NULL && json_object_is_type(arr, json_type_array),
	    "blns.json: %s at %zu", arr ? "not an array" : e.msg, e.offset);
	if (arr == NULL)
		return;
	n = json_object_array_length(arr);
	T_OK(n > 400, "blns.json has only %zu strings", n);
	for (i = 0; i < n; i++) {
		v = json_object_array_get_idx(arr, i);
		if (!json_object_is_type(v, json_type_string)) {
			T_OK(0, "blns[%zu] not a string", i);
			continue;
		}
		check_naughty((int)i, json_object_get_string(v),
		    (size_t)json_object_get_string_len(v));
	}
	json_object_put(arr);
}

int
main(void)
{
	t_file = "test_ident";
	run_tables();
	run_cases();
	run_lengths();
	run_utf8_count();
	run_blns();
	return t_done();
}
