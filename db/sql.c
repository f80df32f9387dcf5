/*
 * db/sql.c — expansion of the templates of db/sql.h. Pure string work, no
 * database: db/db.c prepares what it returns, and tests/bench/ceiling.c
 * links this file too, so both expand the same text the same way.
 */
#include <stdlib.h>
#include <string.h>

#include "db/sql.h"

size_t
db_sql_groups(const char *t)
{
	size_t n = 0;

	for (; *t != '\0'; t++)
		n += *t == '{';
	return n;
}

char *
db_sql_expand(const char *t, const size_t *counts, size_t *nparams)
{
	size_t len = 0, g, k, n = 0, pass;
	char  *out = NULL;

	/* pass 0 checks and measures, pass 1 writes */
	for (pass = 0; pass < 2; pass++) {
		const char *c = t;
		len = 0;
		n = 0;
		g = 0;
		while (*c != '\0') {
			const char *body, *end, *sep;
			size_t      blen, slen, q = 0;
			if (*c == '[') {
				/* an optional part: left out, with its groups,
				 * when its first group's count is 0 */
				const char *close = strchr(c, ']'), *open = strchr(c, '{');
				if (close == NULL || open == NULL || open > close ||
				    memchr(c + 1, '[', (size_t)(close - c - 1)) != NULL)
					goto bad;
				if (counts[g] == 0) {
					for (; c < close; c++)
						g += *c == '{';
					c = close + 1;
				} else
					c++;
				continue;
			}
			if (*c == ']') {
				c++;
				continue;
			}
			if (*c != '{') {
				if (*c == '?')
					n++;
				if (pass)
					out[len] = *c;
				len++;
				c++;
				continue;
			}
			if (c[1] != ',' && c[1] != '|' && c[1] != '.')
				goto bad;
			sep = c[1] == ',' ? ", " : c[1] == '|' ? " OR " : "";
			slen = strlen(sep);
			body = c + 2;
			if ((end = strchr(body, '}')) == NULL || counts[g] == 0)
				goto bad;
			blen = (size_t)(end - body);
			for (k = 0; k < blen; k++)
				q += body[k] == '?';
			for (k = 0; k < counts[g]; k++) {
				if (k > 0) {
					if (pass)
						memcpy(out + len, sep, slen);
					len += slen;
				}
				if (pass)
					memcpy(out + len, body, blen);
				len += blen;
			}
			n += q * counts[g];
			g++;
			c = end + 1;
		}
		if (!pass && (out = malloc(len + 1)) == NULL)
			return NULL;
	}
	out[len] = '\0';
	if (nparams != NULL)
		*nparams = n;
	return out;
bad:
	free(out);
	return NULL;
}
