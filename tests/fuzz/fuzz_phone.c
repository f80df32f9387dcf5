/*
 * libFuzzer target for the identity normalisers (core/ident_norm.c),
 * mainly ident_norm_phone(). The first byte picks a default country code;
 * the rest is the value. Results must be well formed; a rejection must
 * carry a reason; anything else aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const ccs[] = { NULL, "", "1", "44", "+49", "1x", "0" };

/* 1 if s is "+" then 8 to 15 digits. */
static int
is_e164(const char *s)
{
	size_t n = strlen(s);

	return n >= 9 && n <= 16 && s[0] == '+' && s[1] != '0' &&
	    strspn(s + 1, "0123456789") == n - 1;
}

static int
is_blank(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *cc = NULL, *s, *why;
	char       *out;
	size_t      len, b, e;

	if (size > 0) {
		cc = ccs[data[0] % (sizeof(ccs) / sizeof(ccs[0]))];
		data++;
		size--;
	}
	s = size ? (const char *)data : "";
	len = size;

	why = NULL;
	if ((out = ident_norm_phone(s, len, cc, &why)) != NULL) {
		if (!is_e164(out))
			abort();
		free(out);
	} else if (why == NULL)
		abort();

	/* Text: the result is exactly the input minus ASCII blanks at the ends. */
	b = 0;
	e = len;
	while (b < e && is_blank((unsigned char)s[b]))
		b++;
	while (e > b && is_blank((unsigned char)s[e - 1]))
		e--;
	why = NULL;
	if ((out = ident_norm_text(s, len, &why)) != NULL) {
		if (strlen(out) != e - b || e == b ||
		    memcmp(out, s + b, e - b) != 0 ||
		    utf8_count(out, e - b) > IDENT_MAX_CHARS)
			abort();
		free(out);
	} else if (why == NULL)
		abort();

	why = NULL;
	if ((out = ident_norm_email(s, len, &why)) != NULL) {
		const char *at = strchr(out, '@');

		if (at == NULL || at == out || at[1] == '\0' ||
		    strchr(at + 1, '@') != NULL)
			abort();
		free(out);
	} else if (why == NULL)
		abort();
	return 0;
}
