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

static size_t
count_marks(const char *s, size_t n)
{
	size_t i, q = 0;

	for (i = 0; i < n; i++)
		q += s[i] == '?';
	return q;
}

/*
 * One pass over template t with list lengths counts: lit() is given each
 * run of literal text, group() each group kept (its index, body and
 * separator); a part left out gives neither. 0, or -1 when t is malformed
 * or a kept group's count is 0.
 */
struct walk {
	const size_t *counts;
	void        (*lit)(struct walk *, const char *, size_t);
	void        (*group)(struct walk *, size_t, const char *, size_t,
	                const char *);
};

static int
walk(const char *t, struct walk *w)
{
	const char *c = t;
	size_t      g = 0, run;

	while (*c != '\0') {
		const char *body, *end;
		if (*c == '[') {
			/* an optional part: left out, with its groups, when
			 * its first group's count is 0 */
			const char *close = strchr(c, ']'), *open = strchr(c, '{');
			if (close == NULL || open == NULL || open > close ||
			    memchr(c + 1, '[', (size_t)(close - c - 1)) != NULL)
				return -1;
			if (w->counts[g] == 0) {
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
			run = strcspn(c, "[]{");
			w->lit(w, c, run);
			c += run;
			continue;
		}
		if (c[1] != ',' && c[1] != '|' && c[1] != '.')
			return -1;
		body = c + 2;
		if ((end = strchr(body, '}')) == NULL || w->counts[g] == 0)
			return -1;
		w->group(w, g, body, (size_t)(end - body),
		    c[1] == ',' ? ", " : c[1] == '|' ? " OR " : "");
		g++;
		c = end + 1;
	}
	return 0;
}

/* db_sql_expand(): measures (out NULL), then writes. */
struct expand {
	struct walk w;
	char       *out;
	size_t      len, n;
};

static void
put(struct expand *e, const char *s, size_t n)
{
	if (e->out != NULL)
		memcpy(e->out + e->len, s, n);
	e->len += n;
}

static void
expand_lit(struct walk *w, const char *s, size_t n)
{
	struct expand *e = (struct expand *)w;

	put(e, s, n);
	e->n += count_marks(s, n);
}

static void
expand_group(struct walk *w, size_t g, const char *body, size_t blen,
    const char *sep)
{
	struct expand *e = (struct expand *)w;
	size_t         k, slen = strlen(sep);

	for (k = 0; k < w->counts[g]; k++) {
		if (k > 0)
			put(e, sep, slen);
		put(e, body, blen);
	}
	e->n += count_marks(body, blen) * w->counts[g];
}

char *
db_sql_expand(const char *t, const size_t *counts, size_t *nparams)
{
	struct expand e = { { counts, expand_lit, expand_group }, NULL, 0, 0 };

	/* the first pass checks and measures, the second writes */
	if (walk(t, &e.w) != 0 || (e.out = malloc(e.len + 1)) == NULL)
		return NULL;
	e.len = 0;
	e.n = 0;
	(void)walk(t, &e.w);
	e.out[e.len] = '\0';
	if (nparams != NULL)
		*nparams = e.n;
	return e.out;
}

size_t
db_sql_padded(size_t n, size_t max)
{
	size_t top = 1;

	if (n == 0)
		return 0;
	if (n <= 16) {
		while (top < n)
			top *= 2;
		return top <= max ? top : max > n ? max : n;
	}
	while (top <= n / 2)
		top *= 2;
	n = (n + top / 8 - 1) / (top / 8) * (top / 8);
	return n < max ? n : max;
}

int
db_sql_pad_counts(const size_t *counts, size_t ng, size_t max, size_t *to)
{
	size_t i;
	int    padded = 0;

	for (i = 0; i < ng; i++) {
		to[i] = db_sql_padded(counts[i], max);
		padded |= to[i] != counts[i];
	}
	return padded;
}

int
db_sql_pads(const char *t)
{
	static const char *const pads[] = {
		SQL_M_EVENT_KEYS, SQL_M_IDENT_LOCK, SQL_M_STATE_OF,
		SQL_M_IDENT_STATE_LOCK, SQL_M_BALANCE_UPSERT, SQL_M_VAR_UPSERT,
		SQL_M_PROFILE_TOUCH, SQL_M_EVENT_INSERT, SQL_M_LEDGER_INSERT,
	};
	size_t i;

	for (i = 0; t != NULL && i < sizeof(pads) / sizeof(pads[0]); i++)
		if (strcmp(t, pads[i]) == 0)
			return 1;
	return 0;
}

/* db_sql_pad_params(): copies parameters of size bytes from in to out. */
struct pad {
	struct walk          w;
	const size_t        *to;
	const unsigned char *in;
	unsigned char       *out;
	size_t               size, nin, nout;
};

static void
pad_copy(struct pad *p, size_t n)
{
	if (p->out != NULL)
		memcpy(p->out + p->nout * p->size, p->in + p->nin * p->size,
		    n * p->size);
	p->nin += n;
	p->nout += n;
}

static void
pad_lit(struct walk *w, const char *s, size_t n)
{
	pad_copy((struct pad *)w, count_marks(s, n));
}

static void
pad_group(struct walk *w, size_t g, const char *body, size_t blen,
    const char *sep)
{
	struct pad *p = (struct pad *)w;
	size_t      q = count_marks(body, blen), k;

	(void)sep;
	pad_copy(p, q * w->counts[g]);
	for (k = w->counts[g]; k < p->to[g] && q > 0; k++) {
		if (p->out != NULL)
			memcpy(p->out + p->nout * p->size,
			    p->in + (p->nin - q) * p->size, q * p->size);
		p->nout += q;
	}
}

size_t
db_sql_pad_params(const char *t, const size_t *counts, const size_t *to,
    const void *in, size_t nin, void *out, size_t size)
{
	struct pad p = { { counts, pad_lit, pad_group }, to, in, out, size, 0, 0 };
	size_t     g, ng = db_sql_groups(t);

	for (g = 0; g < ng; g++)
		if (to[g] < counts[g] || (to[g] > 0) != (counts[g] > 0))
			return 0;
	/* the measuring pass reads nothing: in[] must hold what counts say */
	p.in = NULL;
	p.out = NULL;
	if (walk(t, &p.w) != 0 || p.nin != nin)
		return 0;
	p.in = in;
	p.out = out;
	p.nin = p.nout = 0;
	(void)walk(t, &p.w);
	return p.nout;
}
