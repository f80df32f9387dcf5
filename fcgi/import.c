/*
 * fcgi/import.c — `rfevents import FILE`: historical and bulk loads.
 *
 * Reads events from NDJSON (one API.md §2.1 body per line) or CSV (RFC 4180,
 * columns mapped to event fields) and sends them to POST
 * /v1/cdp/events/batch (API.md §2.2), up to 1000 items and under 7 MiB per
 * request, over plain HTTP/1.1 with a small client on POSIX sockets that
 * keeps its connection alive.
 *
 * Exactly once: a request that fails (timeout, connection error, 5xx, 429,
 * an item answered internal_error) is sent again with the same ids, so the
 * service applies each event at most once (§2.3) and answers "duplicate" for
 * what it already has. After every batch is wholly answered, the position of
 * the next unsent line and the running counts go to a state file (written to
 * a temporary file, then renamed); an interrupted import (SIGINT, SIGTERM,
 * kill -9, a crash) started again with the same command continues there.
 * The errors file is cut back to the size recorded with that position, so
 * it never lists a line twice.
 *
 * Lines the service refuses, and lines that cannot be turned into an event
 * here (bad JSON, wrong CSV field count, a value that does not fit its
 * mapping), go to the errors file as LINE<TAB>error_code<TAB>message<TAB>
 * original line.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/core.h"
#include "fcgi/fcgi.h"
#include "fcgi/import.h"

#define IMP_MAX_RECORD    (7u << 20)   /* longest line or CSV record */
#define IMP_MAX_BODY      (7u << 20)   /* batch body, under the 8 MiB limit */
#define IMP_READ_CHUNK    (256u << 10)
#define IMP_MAX_RESPONSE  (64u << 20)
#define IMP_MAX_HEAD      (64u << 10)
#define IMP_ORIG_MAX      (64u << 10)  /* original text kept for a reject */
#define IMP_DEFAULT_URL   "http://127.0.0.1:8080"
#define IMP_BATCH_PATH    "/v1/cdp/events/batch"
#define IMP_BACKOFF_MAX   30.0         /* seconds */
#define IMP_RETRY_AFTER_MAX 3600L
#define IMP_ITEM_TRIES    10           /* per item answered internal_error */
#define IMP_CONNECT_MS    10000

/* Set by the signal handler: the first SIGINT/SIGTERM stops after the
 * batch in flight, a second one at once. */
static volatile sig_atomic_t g_stop, g_stop_now;

/* ------------------------------------------------------------ buffers */

/* printf into b. */
static void __attribute__((format(printf, 2, 3)))
buf_addf(struct ev_buf *b, const char *fmt, ...)
{
	va_list ap;
	int     n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	ev_buf_room(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* ------------------------------------------------------------ CSV */

/* Start field r->nf at the end of r->data. */
static void
rec_begin(struct imp_csv_rec *r)
{
	if (r->nf == r->fcap) {
		r->fcap = r->fcap ? r->fcap * 2 : 16;
		r->off = ev_xrealloc(r->off, r->fcap * sizeof(*r->off));
		r->flen = ev_xrealloc(r->flen, r->fcap * sizeof(*r->flen));
		r->quoted = ev_xrealloc(r->quoted, r->fcap * sizeof(*r->quoted));
	}
	r->off[r->nf] = r->data.len;
	r->quoted[r->nf] = 0;
}

/* End field r->nf: its length, a NUL after it. */
static void
rec_end(struct imp_csv_rec *r)
{
	r->flen[r->nf] = r->data.len - r->off[r->nf];
	ev_buf_put(&r->data, "", 1);
	r->nf++;
}

/* LF bytes in s[0..n). */
static size_t
count_lf(const char *s, size_t n)
{
	const char *e = s + n, *p;
	size_t      c = 0;

	while (s < e && (p = memchr(s, '\n', (size_t)(e - s))) != NULL) {
		c++;
		s = p + 1;
	}
	return c;
}

/* Bytes up to and with the first LF at or after `at`, or n. */
static size_t
past_line(const char *s, size_t n, size_t at)
{
	const char *p = at < n ? memchr(s + at, '\n', n - at) : NULL;

	return p != NULL ? (size_t)(p - s) + 1 : n;
}

enum imp_csv_rc
imp_csv_parse(const char *s, size_t n, int eof, struct imp_csv_rec *r,
    size_t *used, size_t *lines, const char **why)
{
	size_t i = 0, at;

	r->nf = 0;
	r->data.len = 0;
	*used = *lines = 0;
	*why = NULL;
	if (n == 0)
		return eof ? IMP_CSV_END : IMP_CSV_MORE;
	for (;;) {
		rec_begin(r);
		if (i < n && s[i] == '"') {
			r->quoted[r->nf] = 1;
			at = i++;
			for (;;) {
				const char *q = memchr(s + i, '"', n - i);
				size_t      k = q != NULL ? (size_t)(q - s) : n;

				ev_buf_put(&r->data, s + i, k - i);
				if (q == NULL) {
					if (!eof)
						return IMP_CSV_MORE;
					*why = "a quoted field is never closed";
					goto bad;
				}
				i = k + 1;
				if (i == n && !eof)
					return IMP_CSV_MORE;
				if (i < n && s[i] == '"') {     /* "" is one quote */
					ev_buf_put(&r->data, "\"", 1);
					i++;
					continue;
				}
				break;
			}
		} else {
			for (;;) {
				size_t k = i;

				while (k < n && s[k] != ',' && s[k] != '\n' &&
				    s[k] != '\r')
					k++;
				ev_buf_put(&r->data, s + i, k - i);
				i = k;
				/* a CR without LF is data */
				if (i < n && s[i] == '\r' && n - i > 1 &&
				    s[i + 1] != '\n') {
					ev_buf_put(&r->data, "\r", 1);
					i++;
					continue;
				}
				break;
			}
		}
		/* what ends the field: a comma, a line break, the end */
		if (i == n) {
			if (!eof)
				return IMP_CSV_MORE;
			rec_end(r);
			*used = n;
			*lines = count_lf(s, n);
			return IMP_CSV_OK;
		}
		if (s[i] == ',') {
			rec_end(r);
			i++;
			continue;
		}
		if (s[i] == '\n' || (s[i] == '\r' && n - i > 1 &&
		    s[i + 1] == '\n')) {
			rec_end(r);
			*used = i + (s[i] == '\r' ? 2 : 1);
			*lines = count_lf(s, *used);
			return IMP_CSV_OK;
		}
		if (s[i] == '\r') {             /* CR as the last byte */
			if (!eof)
				return IMP_CSV_MORE;
			rec_end(r);
			*used = n;
			*lines = count_lf(s, n);
			return IMP_CSV_OK;
		}
		*why = "text after the closing quote of a field";
		at = i;
		goto bad;
	}
bad:
	/* go on after the line that holds the problem */
	*used = past_line(s, n, at);
	*lines = count_lf(s, *used);
	return IMP_CSV_BAD;
}

void
imp_csv_free(struct imp_csv_rec *r)
{
	if (r == NULL)
		return;
	ev_buf_free(&r->data);
	free(r->off);
	free(r->flen);
	free(r->quoted);
	memset(r, 0, sizeof(*r));
}

/* ------------------------------------------------------------ mapping */

static const char *const imp_type_name[IMP_T__MAX] = {
	/* IMP_T_STRING */  "string",
	/* IMP_T_NUMBER */  "number",
	/* IMP_T_INTEGER */ "integer",
	/* IMP_T_BOOLEAN */ "boolean",
};
_Static_assert(sizeof(imp_type_name) / sizeof(imp_type_name[0]) == IMP_T__MAX,
    "imp_type_name");

/* Top-level field names (IMP_F_IGNORE, IMP_F_IDENT, IMP_F_PROP have none). */
static const char *const imp_field_name[IMP_F__MAX] = {
	/* IMP_F_IGNORE */   NULL,
	/* IMP_F_SOURCE */   "source",
	/* IMP_F_EXT_ID */   "externalEventId",
	/* IMP_F_TYPE */     "eventType",
	/* IMP_F_OCCURRED */ "occurredAt",
	/* IMP_F_IDENT */    NULL,
	/* IMP_F_PROP */     NULL,
};
_Static_assert(sizeof(imp_field_name) / sizeof(imp_field_name[0]) ==
    IMP_F__MAX, "imp_field_name");
_Static_assert(IDENT__MAX == 4, "imp_map.col_ident has one slot per identity");

int
imp_target_parse(const char *spec, struct imp_target *t, char *err,
    size_t errlen)
{
	const char *colon, *name;
	size_t      i, nlen;
	int         f;

	memset(t, 0, sizeof(*t));
	if (strncmp(spec, "properties.", 11) == 0) {
		name = spec + 11;
		colon = strrchr(name, ':');
		nlen = colon != NULL ? (size_t)(colon - name) : strlen(name);
		t->type = IMP_T_STRING;
		if (colon != NULL) {
			for (i = 0; i < IMP_T__MAX; i++)
				if (strcmp(colon + 1, imp_type_name[i]) == 0)
					break;
			if (i == IMP_T__MAX) {
				snprintf(err, errlen, "%s: unknown type \"%s\""
				    " (string, number, integer, boolean)", spec,
				    colon + 1);
				return -1;
			}
			t->type = (enum imp_type)i;
		}
		if (nlen == 0) {
			snprintf(err, errlen, "%s: the property has no name",
			    spec);
			return -1;
		}
		t->field = IMP_F_PROP;
		t->prop = ev_xrealloc(NULL, nlen + 1);
		memcpy(t->prop, name, nlen);
		t->prop[nlen] = '\0';
		return 0;
	}
	if (strncmp(spec, "identity.", 9) == 0) {
		for (i = 0; i < IDENT__MAX; i++)
			if (strcmp(spec + 9, ident_json_key[i]) == 0) {
				t->field = IMP_F_IDENT;
				t->ident = (int)i;
				return 0;
			}
		snprintf(err, errlen, "%s: unknown identity (externalUserId,"
		    " email, phone, deviceKey)", spec);
		return -1;
	}
	for (f = 0; f < IMP_F__MAX; f++)
		if (imp_field_name[f] != NULL &&
		    strcmp(spec, imp_field_name[f]) == 0) {
			t->field = (enum imp_field)f;
			return 0;
		}
	if (strchr(spec, ':') != NULL)
		snprintf(err, errlen, "%s: only properties.NAME takes a :type",
		    spec);
	else
		snprintf(err, errlen, "%s: unknown field (source,"
		    " externalEventId, eventType, occurredAt, identity.*,"
		    " properties.*)", spec);
	return -1;
}

void
imp_target_free(struct imp_target *t)
{
	if (t == NULL)
		return;
	free(t->prop);
	t->prop = NULL;
}

/* The spec text of a target, for messages. */
static void
target_text(const struct imp_target *t, char *out, size_t outlen)
{
	switch (t->field) {
	case IMP_F_IDENT:
		snprintf(out, outlen, "identity.%s", ident_json_key[t->ident]);
		break;
	case IMP_F_PROP:
		snprintf(out, outlen, "properties.%s%s%s", t->prop,
		    t->type != IMP_T_STRING ? ":" : "",
		    t->type != IMP_T_STRING ? imp_type_name[t->type] : "");
		break;
	default:
		snprintf(out, outlen, "%s", imp_field_name[t->field] ?
		    imp_field_name[t->field] : "-");
		break;
	}
}

/* 1 if a and b fill the same field of the event. */
static int
same_target(const struct imp_target *a, const struct imp_target *b)
{
	if (a->field == IMP_F_IGNORE || a->field != b->field)
		return 0;
	if (a->field == IMP_F_IDENT)
		return a->ident == b->ident;
	if (a->field == IMP_F_PROP)
		return strcmp(a->prop, b->prop) == 0;
	return 1;
}

/* Column index of header name `name` (n bytes): -1 none, -2 twice. */
static long
find_col(const struct imp_map *m, const char *name, size_t n)
{
	long   hit = -1;
	size_t i;

	for (i = 0; i < m->ncols; i++)
		if (strlen(m->names[i]) == n &&
		    memcmp(m->names[i], name, n) == 0) {
			if (hit >= 0)
				return -2;
			hit = (long)i;
		}
	return hit;
}

/* One "COL=FIELD" of --map into m (spec is n bytes, not NUL-terminated). */
static int
map_one(struct imp_map *m, unsigned char *set, const char *spec, size_t n,
    char *err, size_t errlen)
{
	const char       *eq = memchr(spec, '=', n);
	char              field[512];
	struct imp_target t;
	long              col;

	if (eq == NULL || eq == spec || (size_t)(spec + n - eq - 1) == 0) {
		snprintf(err, errlen, "--map: \"%.*s\" is not COL=FIELD",
		    (int)n, spec);
		return -1;
	}
	col = find_col(m, spec, (size_t)(eq - spec));
	if (col == -1 || col == -2) {
		snprintf(err, errlen, "--map: %s column \"%.*s\" in the CSV"
		    " header", col == -1 ? "no" : "more than one",
		    (int)(eq - spec), spec);
		return -1;
	}
	if (set[col]) {
		snprintf(err, errlen, "--map: column \"%s\" is mapped twice",
		    m->names[col]);
		return -1;
	}
	if ((size_t)(spec + n - eq - 1) >= sizeof(field)) {
		snprintf(err, errlen, "--map: field name too long");
		return -1;
	}
	memcpy(field, eq + 1, (size_t)(spec + n - eq - 1));
	field[spec + n - eq - 1] = '\0';
	if (imp_target_parse(field, &t, err, errlen) != 0)
		return -1;
	m->cols[col] = t;
	set[col] = 1;
	return 0;
}

int
imp_map_init(struct imp_map *m, const struct imp_csv_rec *header,
    char *const *maps, size_t nmaps, const char *source,
    const char *event_type, char *err, size_t errlen)
{
	unsigned char *set = NULL;
	char           a[600], b[600];
	size_t         i, j;
	int            rc = -1;

	memset(m, 0, sizeof(*m));
	m->source = source;
	m->event_type = event_type;
	m->ncols = header->nf;
	m->names = ev_xrealloc(NULL, (m->ncols ? m->ncols : 1) * sizeof(*m->names));
	m->cols = ev_xrealloc(NULL, (m->ncols ? m->ncols : 1) * sizeof(*m->cols));
	set = ev_xrealloc(NULL, m->ncols ? m->ncols : 1);
	for (i = 0; i < m->ncols; i++) {
		const char *s = header->data.p + header->off[i];
		size_t      n = header->flen[i];

		if (i == 0 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
			s += 3;         /* a UTF-8 byte order mark */
			n -= 3;
		}
		while (n > 0 && (*s == ' ' || *s == '\t')) {
			s++;
			n--;
		}
		while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
			n--;
		m->names[i] = ev_xrealloc(NULL, n + 1);
		memcpy(m->names[i], s, n);
		m->names[i][n] = '\0';
		memset(&m->cols[i], 0, sizeof(m->cols[i]));
		set[i] = 0;
	}
	for (i = 0; i < nmaps; i++) {
		const char *p = maps[i], *comma;

		for (;;) {
			comma = strchr(p, ',');
			if (map_one(m, set, p, comma ? (size_t)(comma - p) :
			    strlen(p), err, errlen) != 0)
				goto out;
			if (comma == NULL)
				break;
			p = comma + 1;
		}
	}
	/* columns not named by --map: a header that is a field spec maps to it */
	for (i = 0; i < m->ncols; i++) {
		char scratch[256];

		if (set[i])
			continue;
		if (imp_target_parse(m->names[i], &m->cols[i], scratch,
		    sizeof(scratch)) != 0)
			memset(&m->cols[i], 0, sizeof(m->cols[i]));
		if (m->cols[i].field == IMP_F_IGNORE)
			m->nignored++;
	}
	for (i = 0; i < IMP_F__MAX; i++)
		m->col_of[i] = -1;
	for (i = 0; i < IDENT__MAX; i++)
		m->col_ident[i] = -1;
	for (i = 0; i < m->ncols; i++) {
		for (j = 0; j < i; j++)
			if (same_target(&m->cols[i], &m->cols[j])) {
				target_text(&m->cols[i], a, sizeof(a));
				snprintf(err, errlen, "columns \"%s\" and \"%s\""
				    " both map to %s", m->names[j], m->names[i],
				    a);
				goto out;
			}
		if (m->col_of[m->cols[i].field] < 0)
			m->col_of[m->cols[i].field] = (long)i;
		if (m->cols[i].field == IMP_F_IDENT)
			m->col_ident[m->cols[i].ident] = (long)i;
	}
	b[0] = '\0';
	if (m->col_of[IMP_F_EXT_ID] < 0)
		snprintf(b, sizeof(b), "no column maps to externalEventId");
	else if (m->col_of[IMP_F_SOURCE] < 0 && source == NULL)
		snprintf(b, sizeof(b), "no column maps to source and"
		    " --source is not given");
	else if (m->col_of[IMP_F_TYPE] < 0 && event_type == NULL)
		snprintf(b, sizeof(b), "no column maps to eventType and"
		    " --event-type is not given");
	else if (m->col_of[IMP_F_IDENT] < 0)
		snprintf(b, sizeof(b), "no column maps to an identity"
		    " (identity.externalUserId, email, phone or deviceKey)");
	if (b[0] != '\0') {
		snprintf(err, errlen, "%s (use --map COL=FIELD)", b);
		goto out;
	}
	rc = 0;
out:
	/* set is scratch; m is freed by the caller with imp_map_free() */
	free(set);
	return rc;
}

void
imp_map_free(struct imp_map *m)
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->ncols; i++) {
		free(m->names ? m->names[i] : NULL);
		if (m->cols)
			imp_target_free(&m->cols[i]);
	}
	free(m->names);
	free(m->cols);
	memset(m, 0, sizeof(*m));
}

/* UTF-8 per RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF. */
static int
utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t               i = 0, k, j;
	uint32_t             cp;

	while (i < n) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if (s[i] >= 0xc2 && s[i] <= 0xdf) {
			k = 1;
			cp = s[i] & 0x1f;
		} else if (s[i] >= 0xe0 && s[i] <= 0xef) {
			k = 2;
			cp = s[i] & 0x0f;
		} else if (s[i] >= 0xf0 && s[i] <= 0xf4) {
			k = 3;
			cp = s[i] & 0x07;
		} else
			return 0;
		if (k > n - i - 1)
			return 0;
		for (j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += k + 1;
	}
	return 1;
}

/* A value for a message: at most 60 bytes, control bytes as '?'. */
static void
show_value(char *out, size_t outlen, const char *s, size_t n)
{
	size_t i, k = 0;

	for (i = 0; i < n && i < 60 && k + 4 < outlen; i++)
		out[k++] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
	if (i < n && k + 4 < outlen) {
		memcpy(out + k, "...", 3);
		k += 3;
	}
	out[k] = '\0';
}

/* RFC 8259 §6 number grammar. */
static int
json_number_text(const char *s, size_t n)
{
	size_t i = 0;

	if (i < n && s[i] == '-')
		i++;
	if (i == n)
		return 0;
	if (s[i] == '0')
		i++;
	else if (s[i] >= '1' && s[i] <= '9')
		while (i < n && isdigit((unsigned char)s[i]))
			i++;
	else
		return 0;
	if (i < n && s[i] == '.') {
		if (++i == n || !isdigit((unsigned char)s[i]))
			return 0;
		while (i < n && isdigit((unsigned char)s[i]))
			i++;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if (i == n || !isdigit((unsigned char)s[i]))
			return 0;
		while (i < n && isdigit((unsigned char)s[i]))
			i++;
	}
	return i == n;
}

/* Set rej for a value of column col that does not fit its mapping. */
static void
bad_value(const struct imp_map *m, size_t col, const char *s, size_t n,
    const char *what, struct imp_reject *rej)
{
	char t[600], v[80];

	target_text(&m->cols[col], t, sizeof(t));
	show_value(v, sizeof(v), s, n);
	snprintf(rej->code, sizeof(rej->code), "invalid_value");
	snprintf(rej->msg, sizeof(rej->msg), "column \"%s\" (%s): \"%s\" %s",
	    m->names[col], t, v, what);
}

/*
 * The JSON value of cell `col` of r by its mapping: 1 with *v (a new
 * json-c object, the caller puts it), 0 when the cell is empty (the field
 * is left out), -1 with *rej.
 */
static int
cell_value(const struct imp_map *m, const struct imp_csv_rec *r, size_t col,
    json_object **v, struct imp_reject *rej)
{
	const struct imp_target *t = &m->cols[col];
	const char              *s = r->data.p + r->off[col];
	size_t                   n = r->flen[col];
	char                     num[328];
	long long                ll;
	char                    *end;

	*v = NULL;
	if (n == 0 && !r->quoted[col])
		return 0;
	if (t->type == IMP_T_STRING) {
		if (!utf8_valid(s, n)) {
			bad_value(m, col, s, n, "is not valid UTF-8", rej);
			return -1;
		}
		*v = json_object_new_string_len(s, (int)n);
		return 1;
	}
	while (n > 0 && isspace((unsigned char)*s)) {
		s++;
		n--;
	}
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (n == 0)
		return 0;
	switch (t->type) {
	case IMP_T_NUMBER:
		if (n >= sizeof(num) || !json_number_text(s, n)) {
			bad_value(m, col, s, n, "is not a number (JSON"
			    " grammar: -12.50, 3e2)", rej);
			return -1;
		}
		memcpy(num, s, n);
		num[n] = '\0';
		/* the exact text goes out, the double is only json-c's view */
		*v = json_object_new_double_s(strtod(num, NULL), num);
		return 1;
	case IMP_T_INTEGER:
		if (n >= 21 || !json_number_text(s, n) ||
		    memchr(s, '.', n) != NULL || memchr(s, 'e', n) != NULL ||
		    memchr(s, 'E', n) != NULL)
			goto not_int;
		memcpy(num, s, n);
		num[n] = '\0';
		errno = 0;
		ll = strtoll(num, &end, 10);
		if (errno != 0 || *end != '\0')
			goto not_int;
		*v = json_object_new_int64(ll);
		return 1;
	case IMP_T_BOOLEAN: {
		static const struct { const char *s; int v; } words[] = {
			{ "true", 1 }, { "false", 0 }, { "1", 1 }, { "0", 0 },
			{ "yes", 1 }, { "no", 0 },
		};
		size_t i;

		for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
			if (strlen(words[i].s) == n &&
			    strncasecmp(words[i].s, s, n) == 0) {
				*v = json_object_new_boolean(words[i].v);
				return 1;
			}
		bad_value(m, col, s, n, "is not a boolean (true, false, 1, 0,"
		    " yes, no)", rej);
		return -1;
	}
	default:
		break;
	}
not_int:
	bad_value(m, col, s, n, "is not an integer", rej);
	return -1;
}

/* Field f of the event from its column, or from the constant c. */
static int
add_field(json_object *o, const struct imp_map *m, const struct imp_csv_rec *r,
    enum imp_field f, const char *c, struct imp_reject *rej)
{
	json_object *v = NULL;
	int          rc = 0;

	if (m->col_of[f] >= 0 &&
	    (rc = cell_value(m, r, (size_t)m->col_of[f], &v, rej)) < 0)
		return -1;
	if (rc == 0 && c != NULL)
		v = json_object_new_string(c);
	if (v != NULL)
		json_object_object_add(o, imp_field_name[f], v);
	return 0;
}

int
imp_csv_item(const struct imp_map *m, const struct imp_csv_rec *r,
    struct ev_buf *out, struct imp_reject *rej)
{
	json_object *o, *ident, *props = NULL, *v;
	const char  *text;
	size_t       i, tlen;
	int          rc = -1;

	if (r->nf != m->ncols) {
		snprintf(rej->code, sizeof(rej->code), "csv_field_count");
		snprintf(rej->msg, sizeof(rej->msg), "the header has %zu"
		    " fields, this record %zu", m->ncols, r->nf);
		return -1;
	}
	o = json_object_new_object();
	ident = json_object_new_object();
	if (add_field(o, m, r, IMP_F_SOURCE, m->source, rej) != 0 ||
	    add_field(o, m, r, IMP_F_EXT_ID, NULL, rej) != 0 ||
	    add_field(o, m, r, IMP_F_TYPE, m->event_type, rej) != 0 ||
	    add_field(o, m, r, IMP_F_OCCURRED, NULL, rej) != 0)
		goto out;
	for (i = 0; i < IDENT__MAX; i++) {
		if (m->col_ident[i] < 0)
			continue;
		if (cell_value(m, r, (size_t)m->col_ident[i], &v, rej) < 0)
			goto out;
		if (v != NULL)
			json_object_object_add(ident, ident_json_key[i], v);
	}
	json_object_object_add(o, "identity", json_object_get(ident));
	for (i = 0; i < m->ncols; i++) {
		if (m->cols[i].field != IMP_F_PROP)
			continue;
		if (cell_value(m, r, i, &v, rej) < 0)
			goto out;
		if (v == NULL)
			continue;
		if (props == NULL)
			props = json_object_new_object();
		json_object_object_add(props, m->cols[i].prop, v);
	}
	if (props != NULL)
		json_object_object_add(o, "properties", json_object_get(props));
	text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE, &tlen);
	ev_buf_put(out, text, tlen);
	rc = 0;
out:
	/* the event object and our references to identity and properties */
	json_object_put(o);
	json_object_put(ident);
	json_object_put(props);
	return rc;
}

/* A JSON string for s (UTF-8), appended to out. */
static void
add_json_string(struct ev_buf *out, const char *s)
{
	json_object *v = json_object_new_string(s);
	size_t       n;
	const char  *t = json_object_to_json_string_length(v,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);

	ev_buf_put(out, t, n);
	json_object_put(v);
}

int
imp_ndjson_item(const char *line, size_t len, const char *source,
    const char *event_type, struct ev_buf *out, struct imp_reject *rej)
{
	struct json_perr perr;
	json_object     *o;
	size_t           lead = 0;
	int              add_source, add_type, members;

	while (lead < len && (line[lead] == ' ' || line[lead] == '\t' ||
	    line[lead] == '\r' || line[lead] == '\n'))
		lead++;
	line += lead;
	len -= lead;
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t' ||
	    line[len - 1] == '\r' || line[len - 1] == '\n'))
		len--;
	/* the batch body wraps the item in two levels: {"items":[ ... ]} */
	o = json_parse_strict(line, len, JSON_MAX_DEPTH - 2, &perr);
	if (o == NULL) {
		snprintf(rej->code, sizeof(rej->code), "malformed_json");
		snprintf(rej->msg, sizeof(rej->msg), "%s at byte %zu",
		    perr.msg ? perr.msg : "invalid JSON",
		    perr.offset + lead + 1);
		return -1;
	}
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		snprintf(rej->code, sizeof(rej->code), "malformed_json");
		snprintf(rej->msg, sizeof(rej->msg), "the line is not a JSON"
		    " object");
		return -1;
	}
	add_source = source != NULL &&
	    !json_object_object_get_ex(o, "source", NULL);
	add_type = event_type != NULL &&
	    !json_object_object_get_ex(o, "eventType", NULL);
	members = json_object_object_length(o) > 0;
	json_object_put(o);
	if (!add_source && !add_type) {
		ev_buf_put(out, line, len);
		return 0;
	}
	/* line[0] is '{': put the missing fields first */
	ev_buf_put(out, "{", 1);
	if (add_source) {
		ev_buf_str(out, "\"source\":");
		add_json_string(out, source);
	}
	if (add_type) {
		ev_buf_str(out, add_source ? ",\"eventType\":" :
		    "\"eventType\":");
		add_json_string(out, event_type);
	}
	if (members)
		ev_buf_put(out, ",", 1);
	ev_buf_put(out, line + 1, len - 1);
	return 0;
}

/* ------------------------------------------------------------ URL, HTTP */

int
imp_url_parse(const char *url, struct imp_url *u, char *err, size_t errlen)
{
	const char *p, *auth, *aend, *hend, *port = NULL;
	size_t      hlen;
	long        pn;

	memset(u, 0, sizeof(*u));
	if (strncasecmp(url, "https://", 8) == 0) {
		snprintf(err, errlen, "%s: https is not supported yet; use"
		    " http:// (a local TLS proxy can carry it further)", url);
		return -1;
	}
	if (strncasecmp(url, "http://", 7) != 0) {
		snprintf(err, errlen, "%s: the URL must start with http://",
		    url);
		return -1;
	}
	auth = url + 7;
	aend = auth + strcspn(auth, "/?#");
	if (memchr(auth, '@', (size_t)(aend - auth)) != NULL) {
		snprintf(err, errlen, "%s: user info in the URL is not"
		    " supported (use --key)", url);
		return -1;
	}
	if (*auth == '[') {
		hend = memchr(auth, ']', (size_t)(aend - auth));
		if (hend == NULL) {
			snprintf(err, errlen, "%s: unclosed [ in the host", url);
			return -1;
		}
		p = auth + 1;
		hlen = (size_t)(hend - p);
		hend++;
	} else {
		p = auth;
		hend = memchr(auth, ':', (size_t)(aend - auth));
		if (hend == NULL)
			hend = aend;
		hlen = (size_t)(hend - p);
	}
	if (hend < aend) {
		if (*hend != ':') {
			snprintf(err, errlen, "%s: bad host", url);
			return -1;
		}
		port = hend + 1;
	}
	if (hlen == 0 || hlen >= sizeof(u->host)) {
		snprintf(err, errlen, "%s: bad host", url);
		return -1;
	}
	memcpy(u->host, p, hlen);
	if (port != NULL) {
		size_t plen = (size_t)(aend - port), i;

		pn = 0;
		for (i = 0; i < plen && pn <= 65535; i++) {
			if (!isdigit((unsigned char)port[i]))
				break;
			pn = pn * 10 + (port[i] - '0');
		}
		if (plen == 0 || i < plen || pn < 1 || pn > 65535) {
			snprintf(err, errlen, "%s: bad port", url);
			return -1;
		}
		snprintf(u->port, sizeof(u->port), "%ld", pn);
	} else
		snprintf(u->port, sizeof(u->port), "80");
	if ((size_t)(aend - auth) >= sizeof(u->hostport)) {
		snprintf(err, errlen, "%s: host too long", url);
		return -1;
	}
	memcpy(u->hostport, auth, (size_t)(aend - auth));
	if (*aend == '?' || *aend == '#') {
		snprintf(err, errlen, "%s: the URL must not have a query or a"
		    " fragment", url);
		return -1;
	}
	hlen = strlen(aend);
	while (hlen > 0 && aend[hlen - 1] == '/')
		hlen--;
	if (hlen >= sizeof(u->prefix) || memchr(aend, '?', hlen) != NULL ||
	    memchr(aend, '#', hlen) != NULL || memchr(aend, ' ', hlen) != NULL) {
		snprintf(err, errlen, "%s: bad path", url);
		return -1;
	}
	memcpy(u->prefix, aend, hlen);
	return 0;
}

/* Case-insensitive: does the comma-separated list v[0..n) hold token t? */
static int
has_token(const char *v, size_t n, const char *t)
{
	size_t tl = strlen(t), i = 0, j;

	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		j = i;
		while (j < n && v[j] != ',' && v[j] != ' ' && v[j] != '\t' &&
		    v[j] != ';')
			j++;
		if (j - i == tl && strncasecmp(v + i, t, tl) == 0)
			return 1;
		while (j < n && v[j] != ',')
			j++;
		i = j;
	}
	return 0;
}

long
imp_retry_after(const char *v, size_t n, time_t now)
{
	static const char *const mon[12] = { "Jan", "Feb", "Mar", "Apr",
	    "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	static const unsigned char dpos[] = { 5, 6, 12, 13, 14, 15, 17, 18,
	    20, 21, 23, 24 };     /* where the digits of the date are */
	struct tm tm;
	char      d[32];
	long      secs = 0;
	size_t    i;
	time_t    t;

	while (n > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	if (n == 0)
		return -1;
	if (isdigit((unsigned char)v[0])) {
		for (i = 0; i < n; i++) {
			if (!isdigit((unsigned char)v[i]))
				return -1;
			if (secs > (LONG_MAX - 9) / 10)
				return LONG_MAX / 2;
			secs = secs * 10 + (v[i] - '0');
		}
		return secs;
	}
	/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
	if (n != 29)
		return -1;
	memcpy(d, v, n);
	d[n] = '\0';
	memset(&tm, 0, sizeof(tm));
	if (d[3] != ',' || d[4] != ' ' || d[7] != ' ' || d[11] != ' ' ||
	    d[16] != ' ' || d[19] != ':' || d[22] != ':' || d[25] != ' ' ||
	    strcmp(d + 26, "GMT") != 0)
		return -1;
	for (i = 0; i < 12; i++)
		if (strncmp(d + 8, mon[i], 3) == 0)
			break;
	if (i == 12)
		return -1;
	tm.tm_mon = (int)i;
	for (i = 0; i < sizeof(dpos); i++)
		if (!isdigit((unsigned char)d[dpos[i]]))
			return -1;
	tm.tm_mday = (d[5] - '0') * 10 + (d[6] - '0');
	tm.tm_year = atoi(d + 12) - 1900;
	tm.tm_hour = (d[17] - '0') * 10 + (d[18] - '0');
	tm.tm_min = (d[20] - '0') * 10 + (d[21] - '0');
	tm.tm_sec = (d[23] - '0') * 10 + (d[24] - '0');
	if (tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
	    tm.tm_min > 59 || tm.tm_sec > 60)
		return -1;
	if ((t = timegm(&tm)) == (time_t)-1)
		return -1;
	return t > now ? (long)(t - now) : 0;
}

/* First occurrence of needle (k bytes) in s[0..n), or NULL. */
static const char *
find_bytes(const char *s, size_t n, const char *needle, size_t k)
{
	const char *p = s, *e = s + n;

	while ((size_t)(e - p) >= k &&
	    (p = memchr(p, needle[0], (size_t)(e - p) - k + 1)) != NULL) {
		if (memcmp(p, needle, k) == 0)
			return p;
		p++;
	}
	return NULL;
}

int
imp_head_parse(const char *s, size_t n, time_t now, struct imp_head *h)
{
	const char *end, *line, *eol, *colon, *v;
	size_t      vlen, skip;
	int         minor, keep_alive = 0, te = 0;

	memset(h, 0, sizeof(*h));
	h->clen = -1;
	h->retry_after = -1;
	end = find_bytes(s, n, "\r\n\r\n", 4);
	skip = 4;
	{
		const char *lf = find_bytes(s, n, "\n\n", 2);

		if (lf != NULL && (end == NULL || lf < end)) {
			end = lf;
			skip = 2;
		}
	}
	if (end == NULL)
		return n > IMP_MAX_HEAD ? -1 : 0;
	if ((size_t)(end - s) > IMP_MAX_HEAD)
		return -1;
	h->hlen = (size_t)(end - s) + skip;
	/* status-line = HTTP-version SP status-code SP [reason-phrase] */
	if (end - s < 12 || memcmp(s, "HTTP/1.", 7) != 0 ||
	    !isdigit((unsigned char)s[7]) || s[8] != ' ' ||
	    !isdigit((unsigned char)s[9]) || !isdigit((unsigned char)s[10]) ||
	    !isdigit((unsigned char)s[11]) ||
	    (end - s > 12 && s[12] != ' ' && s[12] != '\r' && s[12] != '\n'))
		return -1;
	minor = s[7] - '0';
	h->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	line = memchr(s, '\n', (size_t)(end - s));
	line = line != NULL ? line + 1 : end;
	while (line < end) {
		eol = memchr(line, '\n', (size_t)(end - line));
		if (eol == NULL)
			eol = end;
		colon = memchr(line, ':', (size_t)(eol - line));
		if (colon == NULL || *line == ' ' || *line == '\t') {
			if (*line != ' ' && *line != '\t' && eol > line &&
			    !(eol - line == 1 && *line == '\r'))
				return -1;      /* obs-fold lines are skipped */
			line = eol + 1;
			continue;
		}
		v = colon + 1;
		vlen = (size_t)(eol - v);
		while (vlen > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			vlen--;
		}
		while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == ' ' ||
		    v[vlen - 1] == '\t'))
			vlen--;
#define NAME_IS(nm) ((size_t)(colon - line) == sizeof(nm) - 1 && \
	strncasecmp(line, nm, sizeof(nm) - 1) == 0)
		if (NAME_IS("Content-Length")) {
			int64_t c = 0;
			size_t  i;

			if (vlen == 0 || vlen > 18)
				return -1;
			for (i = 0; i < vlen; i++) {
				if (!isdigit((unsigned char)v[i]))
					return -1;
				c = c * 10 + (v[i] - '0');
			}
			if (h->clen >= 0 && h->clen != c)
				return -1;
			h->clen = c;
		} else if (NAME_IS("Transfer-Encoding")) {
			te = 1;
			if (has_token(v, vlen, "chunked"))
				h->chunked = 1;
		} else if (NAME_IS("Connection")) {
			if (has_token(v, vlen, "close"))
				h->close = 1;
			if (has_token(v, vlen, "keep-alive"))
				keep_alive = 1;
		} else if (NAME_IS("Retry-After"))
			h->retry_after = imp_retry_after(v, vlen, now);
#undef NAME_IS
		line = eol + 1;
	}
	if (te && !h->chunked)
		return -1;              /* a coding we did not ask for */
	if (h->chunked)
		h->clen = -1;
	if (minor == 0 && !keep_alive)
		h->close = 1;
	return 1;
}

int
imp_chunked(const char *s, size_t n, size_t max, struct ev_buf *out,
    size_t *used)
{
	size_t   i = 0, total = 0, digits;
	uint64_t sz;

	for (;;) {
		const char *eol;

		sz = 0;
		digits = 0;
		while (i < n && isxdigit((unsigned char)s[i])) {
			if (++digits > 15)
				return -1;
			sz = sz * 16 + (uint64_t)(isdigit((unsigned char)s[i]) ?
			    s[i] - '0' : (tolower((unsigned char)s[i]) - 'a' + 10));
			i++;
		}
		if (i == n)
			return 0;
		if (digits == 0 || (s[i] != ';' && s[i] != '\r' && s[i] != '\n' &&
		    s[i] != ' ' && s[i] != '\t'))
			return -1;
		if ((eol = memchr(s + i, '\n', n - i)) == NULL)
			return n - i > 4096 ? -1 : 0;
		i = (size_t)(eol - s) + 1;
		if (sz == 0) {
			/* trailer section, then an empty line */
			for (;;) {
				size_t l;

				if ((eol = memchr(s + i, '\n', n - i)) == NULL)
					return n - i > IMP_MAX_HEAD ? -1 : 0;
				l = (size_t)(eol - (s + i));
				i = (size_t)(eol - s) + 1;
				if (l == 0 || (l == 1 && s[i - 2] == '\r')) {
					*used = i;
					return 1;
				}
			}
		}
		if (sz > max - total)
			return -1;
		total += (size_t)sz;
		if (sz > n - i)
			return 0;
		if (out != NULL)
			ev_buf_put(out, s + i, (size_t)sz);
		i += (size_t)sz;
		if (i < n && s[i] == '\r')
			i++;
		if (i == n)
			return 0;
		if (s[i] != '\n')
			return -1;
		i++;
	}
}

/* ------------------------------------------------------------ state */

void
imp_state_format(const struct imp_state *st, struct ev_buf *out)
{
	buf_addf(out, "rfevents-import-state 1\n"
	    "path %s\n"
	    "size %" PRIu64 "\n"
	    "mtime %" PRId64 ".%09ld\n"
	    "options %s\n"
	    "offset %" PRIu64 "\n"
	    "line %" PRIu64 "\n"
	    "lines %" PRIu64 "\n"
	    "accepted %" PRIu64 "\n"
	    "duplicate %" PRIu64 "\n"
	    "rejected %" PRIu64 "\n"
	    "errors_size %" PRIu64 "\n",
	    st->path, st->size, st->mtime_sec, st->mtime_nsec, st->options,
	    st->offset, st->line, st->lines, st->accepted, st->duplicate,
	    st->rejected, st->errors_size);
}

/* Decimal digits v[0..n) into *out; 0 or -1. */
static int
parse_u64(const char *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;
	size_t   i;

	if (n == 0 || n > 19)
		return -1;
	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)v[i]))
			return -1;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return 0;
}

int
imp_state_parse(const char *s, size_t n, struct imp_state *st, char *err,
    size_t errlen)
{
	static const char *const keys[] = { "path", "size", "mtime",
	    "options", "offset", "line", "lines", "accepted", "duplicate",
	    "rejected", "errors_size" };
	uint64_t  *nums[] = { NULL, &st->size, NULL, NULL, &st->offset,
	    &st->line, &st->lines, &st->accepted, &st->duplicate,
	    &st->rejected, &st->errors_size };
	unsigned   seen = 0;
	const char *p = s, *e = s + n, *eol, *sp;
	size_t     k, klen, vlen;
	uint64_t   u;

	_Static_assert(sizeof(keys) / sizeof(keys[0]) ==
	    sizeof(nums) / sizeof(nums[0]), "state keys");
	memset(st, 0, sizeof(*st));
	eol = memchr(p, '\n', n);
	if (eol == NULL || (size_t)(eol - p) != 23 ||
	    memcmp(p, "rfevents-import-state 1", 23) != 0) {
		snprintf(err, errlen, "not an import state file (version 1)");
		return -1;
	}
	for (p = eol + 1; p < e; p = eol + 1) {
		if ((eol = memchr(p, '\n', (size_t)(e - p))) == NULL) {
			snprintf(err, errlen, "truncated");
			return -1;
		}
		sp = memchr(p, ' ', (size_t)(eol - p));
		if (sp == NULL) {
			snprintf(err, errlen, "bad line \"%.*s\"",
			    (int)(eol - p), p);
			return -1;
		}
		klen = (size_t)(sp - p);
		vlen = (size_t)(eol - sp - 1);
		for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			if (strlen(keys[k]) == klen &&
			    memcmp(keys[k], p, klen) == 0)
				break;
		if (k == sizeof(keys) / sizeof(keys[0]))
			continue;               /* a later version's key */
		seen |= 1u << k;
		sp++;
		if (nums[k] != NULL) {
			if (parse_u64(sp, vlen, nums[k]) != 0)
				goto bad;
		} else if (k == 0) {
			if (vlen == 0 || vlen >= sizeof(st->path))
				goto bad;
			memcpy(st->path, sp, vlen);
		} else if (k == 2) {
			const char *dot = memchr(sp, '.', vlen);

			if (dot == NULL || parse_u64(sp, (size_t)(dot - sp), &u) ||
			    u > INT64_MAX)
				goto bad;
			st->mtime_sec = (int64_t)u;
			if ((size_t)(sp + vlen - dot - 1) != 9 ||
			    parse_u64(dot + 1, 9, &u) != 0)
				goto bad;
			st->mtime_nsec = (long)u;
		} else {
			if (vlen != 64)
				goto bad;
			memcpy(st->options, sp, 64);
		}
		continue;
bad:
		snprintf(err, errlen, "bad value for %s", keys[k]);
		return -1;
	}
	for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
		if (!(seen & (1u << k))) {
			snprintf(err, errlen, "%s is missing", keys[k]);
			return -1;
		}
	if (st->line == 0 || st->accepted + st->duplicate + st->rejected !=
	    st->lines) {
		snprintf(err, errlen, "the counts do not add up");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------ the command */

struct opts {
	const char  *url;
	const char  *key;
	const char  *format;
	const char  *source;
	const char  *event_type;
	const char  *errors;
	const char  *state;
	const char  *file;
	char       **maps;
	size_t       nmaps;
	long         batch;
	long         max_retries;    /* -1: unbounded */
	long         timeout;        /* seconds per request */
	int          restart;
};

/* The input: a sliding window over the file. */
struct rd {
	int       fd;
	char     *buf;
	size_t    cap;
	size_t    pos;        /* next unread record starts here */
	size_t    len;        /* bytes in buf */
	int       eof;
	uint64_t  off;        /* input offset of buf[pos] */
	uint64_t  line;       /* line number of buf[pos] */
};

enum rec_kind { REC_END, REC_BLANK, REC_DATA, REC_BAD, REC_STOP, REC_ERROR };

/* One record as read: its bytes in the reader's window (valid until the
 * next read), where it is, and what it takes to step over it. */
struct rec {
	enum rec_kind      kind;
	const char        *text;      /* original text without the line break */
	size_t             tlen;
	size_t             used;      /* bytes with the line break */
	size_t             lines;     /* LF bytes in them */
	uint64_t           line;      /* first line */
	struct imp_reject  rej;       /* REC_BAD */
};

enum slot_st { SL_PENDING, SL_ACCEPTED, SL_DUPLICATE, SL_REJECTED };

/* One line of a batch. */
struct slot {
	uint64_t           line;
	size_t             orig_off, orig_len;   /* in batch.orig */
	size_t             item_off, item_len;   /* in batch.items */
	enum slot_st       st;
	unsigned           tries;     /* answered internal_error and the like */
	struct imp_reject  rej;
};

struct batch {
	struct slot    *s;
	size_t          n, cap;
	size_t          nitems;
	struct ev_buf  items;        /* the JSON text of each item, back to back */
	struct ev_buf  orig;         /* the original text of each line */
	struct ev_buf  body;
	size_t         *sent;         /* slots of the request in flight */
};

struct http {
	struct imp_url   url;
	int              fd;
	int              reused;      /* fd has answered a request before */
	int              timeout_ms;
	char            *auth;        /* "Authorization: Bearer KEY\r\n" */
	struct ev_buf   req;         /* request head */
	struct ev_buf   in;          /* response bytes */
	struct ev_buf   body;        /* response body */
	struct imp_head  head;
	uint64_t         requests;
};

struct ctx {
	struct opts       o;
	int               csv;
	struct imp_map    map;
	int               have_map;
	struct imp_csv_rec crec;
	struct rd         rd;
	struct http       http;
	struct batch      b;
	struct ev_buf    longhead;     /* head of a line too long to keep */
	FILE             *errf;
	char             *errors_path;
	char             *state_path;
	int               keep_state;   /* a regular file: resumable */
	struct imp_state  st;           /* input identity + progress */
	uint64_t          total;        /* input size, 0 when unknown */
	uint64_t          run_lines;    /* lines done by this run */
	uint64_t          run_bytes;
	uint64_t          start_off;
	int64_t           t0;           /* ms, monotonic */
	int               tty;
	int64_t           last_progress;
	int               progress_shown;
	unsigned          batches;
};

/* Monotonic milliseconds. */
static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Clear the progress line before another message on a terminal. */
static void
clear_progress(struct ctx *c)
{
	if (c->tty && c->progress_shown) {
		fputs("\r\033[K", stderr);
		c->progress_shown = 0;
	}
}

/* A message on stderr ("rfevents import: ..."), below the progress line. */
static void __attribute__((format(printf, 2, 3)))
say(struct ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (c != NULL)
		clear_progress(c);
	fputs("rfevents import: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* SIGINT/SIGTERM: the first one lets the batch in flight finish. */
static void
on_signal(int sig)
{
	static const char msg[] = "\nrfevents import: stopping after the"
	    " batch in flight (interrupt again to stop at once)\n";

	if (g_stop) {
		g_stop_now = sig;
		return;
	}
	g_stop = sig;
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing to do about it in a signal handler */
	}
}

static void
usage(void)
{
	fputs("usage: rfevents import [--url URL] [--key KEY] [--format ndjson|csv]\n"
	    "           [--map COL=FIELD,...] [--source S] [--event-type T]\n"
	    "           [--batch N] [--errors FILE] [--state FILE] [--restart]\n"
	    "           [--max-retries N] [--timeout SECONDS] FILE\n"
	    "  Sends the events of FILE to POST /v1/cdp/events/batch, N at a time\n"
	    "  (default 1000). URL: default " IMP_DEFAULT_URL ". KEY: default\n"
	    "  $RFEVENTS_KEY. FILE - is stdin (no resume). Format: csv for *.csv,\n"
	    "  else ndjson (one event object per line).\n"
	    "  CSV: a header row; --map names the field of a column, a header that is\n"
	    "  a field name maps itself, other columns are ignored. FIELD: source,\n"
	    "  externalEventId, eventType, occurredAt, identity.externalUserId|email|\n"
	    "  phone|deviceKey, properties.NAME[:string|number|integer|boolean].\n"
	    "  --source, --event-type: for events that have none.\n"
	    "  Refused lines go to FILE.errors (LINE, error_code, message, line);\n"
	    "  FILE.state lets an interrupted import go on where it stopped\n"
	    "  (--restart: from the beginning). Failed requests are sent again with\n"
	    "  the same ids (--max-retries: give up after N; --timeout: default 60).\n"
	    "  Exit: 0 all answered, 1 error, 2 usage, 130/143 interrupted.\n",
	    stderr);
}

/* Value of option argv[*i] (--name VALUE or --name=VALUE). */
static const char *
opt_value(int argc, char **argv, int *i, const char *name)
{
	size_t n = strlen(name);

	if (argv[*i][n] == '=')
		return argv[*i] + n + 1;
	if (*i + 1 >= argc) {
		say(NULL, "%s needs a value", name);
		return NULL;
	}
	return argv[++*i];
}

/* Whole number in [lo, hi] from s, or -1 with a message. */
static long
opt_num(const char *name, const char *s, long lo, long hi)
{
	char *end;
	long  v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		say(NULL, "%s: \"%s\" is not a number from %ld to %ld", name, s,
		    lo, hi);
		return -1;
	}
	return v;
}

/* Parse argv into o: 0, 2 (usage error, said) or -1 (--help). */
static int
parse_opts(int argc, char **argv, struct opts *o)
{
	static const char *const with_value[] = { "--url", "--key",
	    "--format", "--map", "--source", "--event-type", "--batch",
	    "--errors", "--state", "--max-retries", "--timeout", NULL };
	int i, k, done = 0;

	memset(o, 0, sizeof(*o));
	o->batch = 1000;
	o->max_retries = -1;
	o->timeout = 60;
	o->maps = ev_xrealloc(NULL, (size_t)(argc + 1) * sizeof(*o->maps));
	for (i = 0; i < argc; i++) {
		const char *a = argv[i], *v;
		size_t      n;

		if (done || a[0] != '-' || strcmp(a, "-") == 0) {
			if (o->file != NULL) {
				say(NULL, "one FILE only (got \"%s\" and \"%s\")",
				    o->file, a);
				return 2;
			}
			o->file = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			done = 1;
			continue;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
			return -1;
		if (strcmp(a, "--restart") == 0) {
			o->restart = 1;
			continue;
		}
		for (k = 0; with_value[k] != NULL; k++) {
			n = strlen(with_value[k]);
			if (strncmp(a, with_value[k], n) == 0 &&
			    (a[n] == '\0' || a[n] == '='))
				break;
		}
		if (with_value[k] == NULL) {
			say(NULL, "unknown option %s", a);
			return 2;
		}
		if ((v = opt_value(argc, argv, &i, with_value[k])) == NULL)
			return 2;
		switch (k) {
		case 0: o->url = v; break;
		case 1: o->key = v; break;
		case 2: o->format = v; break;
		case 3: o->maps[o->nmaps++] = (char *)v; break;
		case 4: o->source = v; break;
		case 5: o->event_type = v; break;
		case 6:
			if ((o->batch = opt_num("--batch", v, 1, 100000)) < 0)
				return 2;
			break;
		case 7: o->errors = v; break;
		case 8: o->state = v; break;
		case 9:
			if ((o->max_retries = opt_num("--max-retries", v, 0,
			    1000000)) < 0)
				return 2;
			break;
		case 10:
			if ((o->timeout = opt_num("--timeout", v, 1, 86400)) < 0)
				return 2;
			break;
		}
	}
	if (o->file == NULL) {
		say(NULL, "FILE is missing");
		return 2;
	}
	if (o->format != NULL && strcmp(o->format, "ndjson") != 0 &&
	    strcmp(o->format, "csv") != 0) {
		say(NULL, "--format must be ndjson or csv");
		return 2;
	}
	if ((o->source && !utf8_valid(o->source, strlen(o->source))) ||
	    (o->event_type && !utf8_valid(o->event_type,
	    strlen(o->event_type)))) {
		say(NULL, "--source and --event-type must be UTF-8");
		return 2;
	}
	if (strcmp(o->file, "-") == 0 && o->state != NULL) {
		say(NULL, "--state: stdin cannot be resumed");
		return 2;
	}
	return 0;
}

/* ---- reading ---- */

/*
 * More input into the window: 1 read something, 0 nothing (end of input,
 * or the window is full), -1 read error (said), -2 stopped by a signal.
 */
static int
rd_more(struct ctx *c)
{
	struct rd *r = &c->rd;
	ssize_t    got;

	if (r->eof)
		return 0;
	if (r->pos > 0) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->len -= r->pos;
		r->pos = 0;
	}
	if (r->len == r->cap) {
		size_t want = r->cap * 2;

		if (r->cap >= IMP_MAX_RECORD + 2)
			return 0;
		if (want > IMP_MAX_RECORD + 2)
			want = IMP_MAX_RECORD + 2;
		r->buf = ev_xrealloc(r->buf, want);
		r->cap = want;
	}
	for (;;) {
		got = read(r->fd, r->buf + r->len, r->cap - r->len);
		if (got >= 0)
			break;
		if (errno != EINTR) {
			say(c, "%s: %s", c->o.file, strerror(errno));
			return -1;
		}
		if (g_stop)
			return -2;
	}
	if (got == 0) {
		r->eof = 1;
		return 0;
	}
	r->len += (size_t)got;
	return 1;
}

/* Step over a record the caller took. */
static void
rd_take(struct rd *r, const struct rec *x)
{
	r->pos += x->used;
	r->off += x->used;
	r->line += x->lines;
}

/* Keep the original text of a refused line: no line break inside, at
 * most IMP_ORIG_MAX bytes. */
static void
set_reject(struct rec *x, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_reject(struct rec *x, const char *code, const char *fmt, ...)
{
	va_list ap;

	x->kind = REC_BAD;
	snprintf(x->rej.code, sizeof(x->rej.code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(x->rej.msg, sizeof(x->rej.msg), fmt, ap);
	va_end(ap);
}

/*
 * A line longer than IMP_MAX_RECORD: refuse it and skip to its end, reading
 * on as long as it takes. The record keeps the first bytes as its text.
 */
static int
skip_long(struct ctx *c, struct rec *x)
{
	struct rd *r = &c->rd;
	int        rc;

	set_reject(x, "payload_too_large", "the line is longer than %u MiB",
	    IMP_MAX_RECORD >> 20);
	x->line = r->line;
	/* keep the head of the line for the errors file, drop the rest */
	c->longhead.len = 0;
	ev_buf_put(&c->longhead, r->buf + r->pos, r->len - r->pos <
	    IMP_ORIG_MAX ? r->len - r->pos : IMP_ORIG_MAX);
	for (;;) {
		const char *lf = memchr(r->buf + r->pos, '\n', r->len - r->pos);

		if (lf != NULL) {
			size_t k = (size_t)(lf - (r->buf + r->pos)) + 1;

			r->pos += k;
			r->off += k;
			r->line++;
			break;
		}
		r->off += r->len - r->pos;
		r->pos = r->len;
		if ((rc = rd_more(c)) < 0)
			return rc;
		if (rc == 0 && r->eof)
			break;
	}
	x->text = c->longhead.p;
	x->tlen = c->longhead.len;
	x->used = 0;
	x->lines = 0;
	return 0;
}

/* 1 if s[0..n) holds only blanks. */
static int
blank(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return 0;
	return 1;
}

/*
 * The next record of the input, not yet taken (rd_take() steps over it).
 * REC_BAD records are taken already when they had to be skipped over
 * (x->used == 0 then).
 */
static void
next_record(struct ctx *c, struct rec *x)
{
	struct rd *r = &c->rd;
	size_t     scanned = 0;
	int        rc;

	memset(x, 0, sizeof(*x));
	x->line = r->line;
	for (;;) {
		const char *s = r->buf + r->pos;
		size_t      n = r->len - r->pos;

		if (c->csv) {
			const char     *why;
			enum imp_csv_rc crc = imp_csv_parse(s, n, r->eof,
			    &c->crec, &x->used, &x->lines, &why);

			if (crc == IMP_CSV_END) {
				x->kind = REC_END;
				return;
			}
			if (crc == IMP_CSV_OK || crc == IMP_CSV_BAD) {
				x->text = s;
				x->tlen = x->used;
				while (x->tlen > 0 && (s[x->tlen - 1] == '\n' ||
				    s[x->tlen - 1] == '\r'))
					x->tlen--;
				if (crc == IMP_CSV_BAD)
					set_reject(x, "malformed_csv", "%s", why);
				else if (c->crec.nf == 1 && c->crec.flen[0] == 0 &&
				    !c->crec.quoted[0])
					x->kind = REC_BLANK;
				else
					x->kind = REC_DATA;
				return;
			}
		} else {
			const char *lf = memchr(s + scanned, '\n', n - scanned);

			if (lf != NULL || (r->eof && n > 0)) {
				x->used = lf ? (size_t)(lf - s) + 1 : n;
				x->lines = lf ? 1 : 0;
				x->text = s;
				x->tlen = lf ? (size_t)(lf - s) : n;
				if (x->tlen > 0 && s[x->tlen - 1] == '\r')
					x->tlen--;
				if (r->off == 0 && x->tlen >= 3 &&
				    memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
					x->text += 3;   /* byte order mark */
					x->tlen -= 3;
				}
				x->kind = blank(x->text, x->tlen) ? REC_BLANK :
				    REC_DATA;
				if (x->tlen > IMP_MAX_RECORD) {
					set_reject(x, "payload_too_large",
					    "the line is longer than %u MiB",
					    IMP_MAX_RECORD >> 20);
				}
				return;
			}
			if (r->eof) {
				x->kind = REC_END;
				return;
			}
			scanned = n;
		}
		if (r->len - r->pos > IMP_MAX_RECORD) {
			rc = skip_long(c, x);
			if (rc == -2)
				x->kind = REC_STOP;
			else if (rc < 0)
				x->kind = REC_ERROR;
			return;
		}
		if ((rc = rd_more(c)) < 0) {
			x->kind = rc == -2 ? REC_STOP : REC_ERROR;
			return;
		}
		if (rc == 0 && !r->eof) {   /* window full */
			rc = skip_long(c, x);
			if (rc < 0)
				x->kind = rc == -2 ? REC_STOP : REC_ERROR;
			return;
		}
	}
}

/* ---- the batch ---- */

/* Empty the batch for the next lines (buffers are kept). */
static void
batch_reset(struct batch *b)
{
	b->n = 0;
	b->nitems = 0;
	b->items.len = 0;
	b->orig.len = 0;
}

/* A new slot for input line `line` whose original text is orig[0..olen). */
static struct slot *
batch_slot(struct batch *b, uint64_t line, const char *orig, size_t olen)
{
	struct slot *s;
	size_t       i, k = olen < IMP_ORIG_MAX ? olen : IMP_ORIG_MAX;

	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 1024;
		b->s = ev_xrealloc(b->s, b->cap * sizeof(*b->s));
		b->sent = ev_xrealloc(b->sent, b->cap * sizeof(*b->sent));
	}
	s = &b->s[b->n++];
	memset(s, 0, sizeof(*s));
	s->line = line;
	s->orig_off = b->orig.len;
	/* one line in the errors file: a CSV record's line breaks as \r \n */
	for (i = 0; i < k; ) {
		size_t j = i;

		while (j < k && orig[j] != '\n' && orig[j] != '\r')
			j++;
		ev_buf_put(&b->orig, orig + i, j - i);
		if (j < k)
			ev_buf_put(&b->orig, orig[j] == '\n' ? "\\n" : "\\r", 2);
		i = j + 1;
	}
	if (k < olen)
		ev_buf_str(&b->orig, "...");
	s->orig_len = b->orig.len - s->orig_off;
	return s;
}

/* ---- HTTP client ---- */

/* Drop the connection (the next request opens a new one). */
static void
http_close(struct http *h)
{
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
	h->reused = 0;
}

/*
 * Wait until fd is ready for ev or the deadline passes: 1 ready, 0 timed
 * out, -1 poll failed, -2 stopped by a second signal.
 */
static int
wait_fd(int fd, short ev, int64_t deadline)
{
	struct pollfd p;
	int64_t       left;
	int           rc;

	for (;;) {
		if (g_stop_now)
			return -2;
		if ((left = deadline - now_ms()) <= 0)
			return 0;
		p.fd = fd;
		p.events = ev;
		p.revents = 0;
		rc = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (rc > 0)
			return 1;
		if (rc == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

enum hp { HP_OK, HP_RETRY, HP_STOP };

/* Connect to the URL's host (each address in turn). */
static enum hp
http_connect(struct http *h, int64_t deadline, char *err, size_t errlen)
{
	struct addrinfo  hints, *res = NULL, *ai;
	int              fd = -1, rc, soerr, one = 1;
	socklen_t        sl;
	int64_t          until;
	const char      *why = "no address";

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(h->url.host, h->url.port, &hints, &res)) != 0) {
		snprintf(err, errlen, "cannot resolve %s: %s", h->url.host,
		    gai_strerror(rc));
		return HP_RETRY;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype,
		    ai->ai_protocol)) < 0) {
			why = strerror(errno);
			continue;
		}
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS || errno == EINTR) {
			until = now_ms() + IMP_CONNECT_MS;
			rc = wait_fd(fd, POLLOUT, until < deadline ? until :
			    deadline);
			if (rc == -2) {
				close(fd);
				freeaddrinfo(res);
				return HP_STOP;
			}
			sl = sizeof(soerr);
			if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR,
			    &soerr, &sl) == 0 && soerr == 0)
				break;
			why = rc == 0 ? "timed out" : strerror(rc == 1 ? soerr :
			    errno);
		} else
			why = strerror(errno);
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to %s: %s",
		    h->url.hostport, why);
		return HP_RETRY;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	h->fd = fd;
	h->reused = 0;
	return HP_OK;
}

/* Send iov[0..2) completely: HP_OK, HP_RETRY with err (errno in *eno). */
static enum hp
send_all(struct http *h, struct iovec *iov, int64_t deadline, int *eno,
    char *err, size_t errlen)
{
	struct msghdr mh;
	ssize_t       w;
	int           i = 0, rc;

	*eno = 0;
	while (i < 2) {
		if (iov[i].iov_len == 0) {
			i++;
			continue;
		}
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov + i;
		mh.msg_iovlen = (size_t)(2 - i);
		w = sendmsg(h->fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR) {
				if (g_stop_now)
					return HP_STOP;
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				rc = wait_fd(h->fd, POLLOUT, deadline);
				if (rc == -2)
					return HP_STOP;
				if (rc == 0) {
					snprintf(err, errlen, "timed out sending"
					    " the request");
					return HP_RETRY;
				}
				continue;
			}
			*eno = errno;
			snprintf(err, errlen, "sending the request: %s",
			    strerror(errno));
			return HP_RETRY;
		}
		while (w > 0 && i < 2) {
			size_t k = (size_t)w < iov[i].iov_len ? (size_t)w :
			    iov[i].iov_len;

			iov[i].iov_base = (char *)iov[i].iov_base + k;
			iov[i].iov_len -= k;
			w -= (ssize_t)k;
			if (iov[i].iov_len == 0)
				i++;
		}
	}
	return HP_OK;
}

/*
 * Read one response into h->head and h->body. *none is set when the
 * connection ended before the first byte (a stale keep-alive connection).
 */
static enum hp
read_response(struct http *h, int64_t deadline, int *none, char *err,
    size_t errlen)
{
	int     parsed = 0, rc;
	ssize_t got;
	size_t  used;

	*none = 0;
	h->in.len = 0;
	h->body.len = 0;
	ev_buf_put(&h->body, "", 0);
	for (;;) {
		if (parsed) {
			const char *b = h->in.p + h->head.hlen;
			size_t      bn = h->in.len - h->head.hlen;

			if (h->head.chunked) {
				rc = imp_chunked(b, bn, IMP_MAX_RESPONSE, NULL,
				    &used);
				if (rc < 0) {
					snprintf(err, errlen, "malformed chunked"
					    " response body");
					return HP_RETRY;
				}
				if (rc == 1) {
					imp_chunked(b, bn, IMP_MAX_RESPONSE,
					    &h->body, &used);
					return HP_OK;
				}
			} else if (h->head.clen >= 0 ||
			    h->head.status / 100 == 1 || h->head.status == 204 ||
			    h->head.status == 304) {
				size_t want = h->head.clen >= 0 ?
				    (size_t)h->head.clen : 0;

				if (h->head.status == 204 || h->head.status == 304)
					want = 0;
				if (bn >= want) {
					ev_buf_put(&h->body, b, want);
					return HP_OK;
				}
			}
		}
		ev_buf_room(&h->in, IMP_READ_CHUNK);
		got = recv(h->fd, h->in.p + h->in.len, h->in.cap - h->in.len - 1,
		    0);
		if (got < 0) {
			if (errno == EINTR) {
				if (g_stop_now)
					return HP_STOP;
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				rc = wait_fd(h->fd, POLLIN, deadline);
				if (rc == -2)
					return HP_STOP;
				if (rc == 0) {
					snprintf(err, errlen, "no answer within"
					    " %d s", h->timeout_ms / 1000);
					return HP_RETRY;
				}
				continue;
			}
			if (h->in.len == 0 && (errno == ECONNRESET ||
			    errno == EPIPE))
				*none = 1;
			snprintf(err, errlen, "reading the answer: %s",
			    strerror(errno));
			return HP_RETRY;
		}
		if (got == 0) {
			if (parsed && !h->head.chunked && h->head.clen < 0) {
				/* the body ends with the connection */
				ev_buf_put(&h->body, h->in.p + h->head.hlen,
				    h->in.len - h->head.hlen);
				h->head.close = 1;
				return HP_OK;
			}
			if (h->in.len == 0)
				*none = 1;
			snprintf(err, errlen, "the connection closed %s",
			    h->in.len ? "in the middle of the answer" :
			    "without an answer");
			return HP_RETRY;
		}
		h->in.len += (size_t)got;
		h->in.p[h->in.len] = '\0';
		if (h->in.len > IMP_MAX_RESPONSE + IMP_MAX_HEAD) {
			snprintf(err, errlen, "the answer is larger than %u MiB",
			    IMP_MAX_RESPONSE >> 20);
			return HP_RETRY;
		}
		while (!parsed) {
			rc = imp_head_parse(h->in.p, h->in.len, time(NULL),
			    &h->head);
			if (rc < 0) {
				snprintf(err, errlen, "malformed HTTP answer");
				return HP_RETRY;
			}
			if (rc == 0)
				break;
			if (h->head.status >= 100 && h->head.status < 200) {
				/* 100 Continue and the like: the answer follows */
				memmove(h->in.p, h->in.p + h->head.hlen,
				    h->in.len - h->head.hlen);
				h->in.len -= h->head.hlen;
				continue;
			}
			parsed = 1;
		}
	}
}

/*
 * POST body to path; HP_OK with h->head and h->body, HP_RETRY with err
 * (worth sending again), HP_STOP on a second signal. A kept-alive
 * connection the server closed in between is replaced at once.
 */
static enum hp
http_post(struct http *h, const char *path, const char *body, size_t blen,
    char *err, size_t errlen)
{
	int64_t      deadline = now_ms() + h->timeout_ms;
	struct iovec iov[2];
	enum hp      rc;
	int          attempt, none, eno, was_reused;

	h->req.len = 0;
	buf_addf(&h->req, "POST %s%s HTTP/1.1\r\n"
	    "Host: %s\r\n"
	    "User-Agent: rfevents-import/1\r\n"
	    "%s"
	    "Content-Type: application/json\r\n"
	    "Accept: application/json\r\n"
	    "Content-Length: %zu\r\n"
	    "\r\n", h->url.prefix, path, h->url.hostport, h->auth, blen);
	for (attempt = 0; attempt < 2; attempt++) {
		if (h->fd < 0 &&
		    (rc = http_connect(h, deadline, err, errlen)) != HP_OK)
			return rc;
		was_reused = h->reused;
		iov[0].iov_base = h->req.p;
		iov[0].iov_len = h->req.len;
		iov[1].iov_base = (void *)body;
		iov[1].iov_len = blen;
		rc = send_all(h, iov, deadline, &eno, err, errlen);
		none = rc == HP_RETRY && (eno == EPIPE || eno == ECONNRESET);
		if (rc == HP_OK)
			rc = read_response(h, deadline, &none, err, errlen);
		if (rc == HP_OK) {
			h->requests++;
			h->reused = 1;
			if (h->head.close)
				http_close(h);
			return HP_OK;
		}
		http_close(h);
		if (rc == HP_STOP || !was_reused || !none)
			return rc;
		/* the server had closed the idle connection: once more */
	}
	return HP_RETRY;
}

/* ---- answers ---- */

/* "message (field: problem, ...)" of an error result, one line. */
static void
error_text(json_object *r, struct imp_reject *rej)
{
	json_object *v, *det, *d, *f, *p;
	size_t       i, k, n;
	char        *m = rej->msg;

	snprintf(rej->code, sizeof(rej->code), "%s",
	    json_object_object_get_ex(r, "error_code", &v) &&
	    json_object_is_type(v, json_type_string) ?
	    json_object_get_string(v) : "error");
	snprintf(m, sizeof(rej->msg), "%s",
	    json_object_object_get_ex(r, "message", &v) &&
	    json_object_is_type(v, json_type_string) ?
	    json_object_get_string(v) : "");
	if (json_object_object_get_ex(r, "details", &det) &&
	    json_object_is_type(det, json_type_array) &&
	    (n = json_object_array_length(det)) > 0) {
		char one[400];
		int  listed = 0;

		/* the details the message does not name already */
		k = strlen(m);
		for (i = 0; i < n && k < sizeof(rej->msg) - 1; i++) {
			d = json_object_array_get_idx(det, i);
			if (!json_object_object_get_ex(d, "field", &f) ||
			    !json_object_object_get_ex(d, "problem", &p))
				continue;
			snprintf(one, sizeof(one), "%s: %s",
			    json_object_get_string(f), json_object_get_string(p));
			if (strstr(m, one) != NULL)
				continue;
			k += (size_t)snprintf(m + k, sizeof(rej->msg) - k,
			    "%s%s", listed++ ? ", " : " (also ", one);
		}
		if (listed && k < sizeof(rej->msg) - 1)
			snprintf(m + k, sizeof(rej->msg) - k, ")");
	}
	if (json_object_object_get_ex(r, "original_event_id", &v) &&
	    json_object_is_type(v, json_type_string)) {
		k = strlen(m);
		if (k < sizeof(rej->msg) - 1)
			snprintf(m + k, sizeof(rej->msg) - k,
			    " (original_event_id %s)", json_object_get_string(v));
	}
	for (i = 0; m[i] != '\0'; i++)
		if (m[i] == '\t' || m[i] == '\n' || m[i] == '\r')
			m[i] = ' ';
	for (i = 0; rej->code[i] != '\0'; i++)
		if ((unsigned char)rej->code[i] <= ' ')
			rej->code[i] = '_';
}

/* An item error worth sending again with the same id. */
static int
retryable_code(const char *code)
{
	return strcmp(code, "internal_error") == 0 ||
	    strcmp(code, "unavailable") == 0 ||
	    strcmp(code, "rate_limited") == 0;
}

/* What a refused whole request says, for the fatal message. */
static void
describe_answer(struct http *h, char *out, size_t outlen)
{
	json_object     *o;
	struct imp_reject r;
	size_t           i, n = h->body.len < 200 ? h->body.len : 200;

	o = json_tokener_parse(h->body.p ? h->body.p : "");
	if (o != NULL && json_object_is_type(o, json_type_object)) {
		error_text(o, &r);
		snprintf(out, outlen, "%s: %.400s", r.code, r.msg);
	} else {
		snprintf(out, outlen, "%.*s", (int)n, h->body.p ? h->body.p : "");
		for (i = 0; out[i] != '\0'; i++)
			if ((unsigned char)out[i] < ' ')
				out[i] = ' ';
	}
	json_object_put(o);
}

/*
 * Take a 200 answer to the request for slots b->sent[0..nsent): every slot
 * answered accepted/duplicate/error, or left SL_PENDING for an item error
 * worth retrying. 0, or -1 when the answer does not match the request.
 */
static int
take_results(struct ctx *c, size_t nsent, int *pending)
{
	json_object *o, *res, *r, *st;
	size_t       i;
	const char  *s;

	*pending = 0;
	o = json_tokener_parse(c->http.body.p ? c->http.body.p : "");
	if (o == NULL || !json_object_object_get_ex(o, "results", &res) ||
	    !json_object_is_type(res, json_type_array) ||
	    json_object_array_length(res) != nsent) {
		json_object_put(o);
		return -1;
	}
	for (i = 0; i < nsent; i++) {
		struct slot *sl = &c->b.s[c->b.sent[i]];

		r = json_object_array_get_idx(res, i);
		s = json_object_object_get_ex(r, "status", &st) ?
		    json_object_get_string(st) : "";
		if (strcmp(s, "accepted") == 0)
			sl->st = SL_ACCEPTED;
		else if (strcmp(s, "duplicate") == 0)
			sl->st = SL_DUPLICATE;
		else {
			error_text(r, &sl->rej);
			if (strcmp(s, "error") != 0)
				snprintf(sl->rej.code, sizeof(sl->rej.code),
				    "unexpected_status");
			if (retryable_code(sl->rej.code) &&
			    ++sl->tries < IMP_ITEM_TRIES) {
				(*pending)++;
				continue;
			}
			sl->st = SL_REJECTED;
		}
	}
	json_object_put(o);
	return 0;
}

/* Sleep ms unless a signal stops the import: 0, or -1 when stopped. */
static int
nap(int64_t ms)
{
	int64_t end = now_ms() + ms;
	struct timespec ts;

	while (!g_stop) {
		int64_t left = end - now_ms();

		if (left <= 0)
			return 0;
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000;
		nanosleep(&ts, NULL);
	}
	return -1;
}

enum send_rc { SEND_OK, SEND_FATAL, SEND_STOP };

/*
 * Send the batch until every item is answered: the same ids every time, so
 * nothing is applied twice. Retries timeouts, connection errors, 408, 429
 * and 5xx answers with backoff (0.5 s doubling to 30 s, at least what
 * Retry-After asks), without end unless --max-retries; any other whole
 * request refused is fatal.
 */
static enum send_rc
send_batch(struct ctx *c)
{
	struct batch *b = &c->b;
	char          err[512], what[600];
	long          attempt = 0, ra;
	size_t        i, nsent;
	int           pending;
	double        delay;
	enum hp       hp;

	for (;;) {
		nsent = 0;
		b->body.len = 0;
		ev_buf_str(&b->body, "{\"items\":[");
		for (i = 0; i < b->n; i++) {
			if (b->s[i].st != SL_PENDING || b->s[i].item_len == 0)
				continue;
			if (nsent > 0)
				ev_buf_put(&b->body, ",", 1);
			ev_buf_put(&b->body, b->items.p + b->s[i].item_off,
			    b->s[i].item_len);
			b->sent[nsent++] = i;
		}
		ev_buf_str(&b->body, "]}");
		if (nsent == 0)
			return SEND_OK;
		ra = -1;
		hp = http_post(&c->http, IMP_BATCH_PATH, b->body.p, b->body.len,
		    err, sizeof(err));
		if (hp == HP_STOP)
			return SEND_STOP;
		if (hp == HP_OK) {
			int st = c->http.head.status;

			ra = c->http.head.retry_after;
			if (st == 200) {
				if (take_results(c, nsent, &pending) != 0) {
					say(c, "%s answered 200 but not with one"
					    " result per item; stopping (the"
					    " state file still points before"
					    " this batch)", c->o.url);
					return SEND_FATAL;
				}
				if (pending == 0)
					return SEND_OK;
				snprintf(what, sizeof(what), "%d item(s) answered"
				    " internal_error/unavailable", pending);
			} else if (st == 408 || st == 429 || st >= 500) {
				describe_answer(&c->http, err, sizeof(err));
				snprintf(what, sizeof(what), "HTTP %d %s", st,
				    err);
			} else {
				describe_answer(&c->http, err, sizeof(err));
				say(c, "the service refused the batch starting"
				    " at line %" PRIu64 ": HTTP %d %s%s", b->s[
				    b->sent[0]].line, st, err,
				    st == 401 ? " (check --key / RFEVENTS_KEY)" :
				    st == 403 ? " (the key needs events:write"
				    " and the sources of the file)" :
				    st == 404 ? " (check --url)" :
				    st == 413 || st == 422 ? " (try a smaller"
				    " --batch)" : "");
				return SEND_FATAL;
			}
		} else
			snprintf(what, sizeof(what), "%s", err);
		attempt++;
		if (g_stop) {
			say(c, "%s; not retrying because of the interrupt", what);
			return SEND_STOP;
		}
		if (c->o.max_retries >= 0 && attempt > c->o.max_retries) {
			say(c, "%s; giving up after %ld retr%s (the state file"
			    " points before this batch: run the same command"
			    " again to go on)", what, c->o.max_retries,
			    c->o.max_retries == 1 ? "y" : "ies");
			return SEND_FATAL;
		}
		delay = 0.5;
		for (i = 1; i < (size_t)attempt && delay < IMP_BACKOFF_MAX; i++)
			delay *= 2;
		if (delay > IMP_BACKOFF_MAX)
			delay = IMP_BACKOFF_MAX;
		/* jitter: 75-100% of the step, so many importers spread out */
		delay *= 0.75 + 0.25 * ((double)(now_ms() % 1000) / 1000.0);
		if (ra > IMP_RETRY_AFTER_MAX)
			ra = IMP_RETRY_AFTER_MAX;
		if (ra >= 0 && (double)ra > delay)
			delay = (double)ra;
		say(c, "batch at line %" PRIu64 ": %s; retrying in %.1f s"
		    " (retry %ld)", b->s[b->sent[0]].line, what, delay, attempt);
		if (nap((int64_t)(delay * 1000)) != 0)
			return SEND_STOP;
	}
}

/* ---- errors file and state ---- */

/* Write the batch's rejected lines, flush them to disk. 0 or -1. */
static int
write_errors(struct ctx *c)
{
	struct batch *b = &c->b;
	size_t        i;
	int           any = 0;

	for (i = 0; i < b->n; i++) {
		const struct slot *s = &b->s[i];

		if (s->st != SL_REJECTED)
			continue;
		any = 1;
		fprintf(c->errf, "%" PRIu64 "\t%s\t%s\t%.*s\n", s->line,
		    s->rej.code, s->rej.msg, (int)s->orig_len,
		    b->orig.p + s->orig_off);
	}
	if (fflush(c->errf) != 0 || (any && fdatasync(fileno(c->errf)) != 0 &&
	    errno != EINVAL)) {
		say(c, "%s: %s", c->errors_path, strerror(errno));
		return -1;
	}
	return 0;
}

/* The state file, atomically: a temporary file renamed over it. */
static int
write_state(struct ctx *c)
{
	struct ev_buf t = { 0 };
	char          *tmp = NULL, *dir = NULL, *slash;
	int            fd = -1, rc = -1, dfd;
	size_t         off = 0;
	ssize_t        w;

	imp_state_format(&c->st, &t);
	tmp = ev_xrealloc(NULL, strlen(c->state_path) + 8);
	sprintf(tmp, "%s.tmp", c->state_path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		goto fail;
	while (off < t.len) {
		if ((w = write(fd, t.p + off, t.len - off)) < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += (size_t)w;
	}
	if (fsync(fd) != 0 || close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, c->state_path) != 0)
		goto fail;
	/* the rename itself survives a crash once the directory is synced */
	dir = ev_xstrdup(c->state_path);
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	if ((dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC))
	    >= 0) {
		fsync(dfd);
		close(dfd);
	}
	rc = 0;
	goto out;
fail:
	say(c, "%s: %s", tmp, strerror(errno));
out:
	/* the text, the temporary name, the directory name, a failed fd */
	if (fd >= 0)
		close(fd);
	ev_buf_free(&t);
	free(tmp);
	free(dir);
	return rc;
}

/* ---- progress ---- */

/* "1h02m", "3m05s", "42s" */
static void
fmt_secs(double s, char *out, size_t outlen)
{
	long v = s < 0 ? 0 : (long)(s + 0.5);

	if (v >= 3600)
		snprintf(out, outlen, "%ldh%02ldm", v / 3600, v % 3600 / 60);
	else if (v >= 60)
		snprintf(out, outlen, "%ldm%02lds", v / 60, v % 60);
	else
		snprintf(out, outlen, "%lds", v);
}

/*
 * The progress line: redrawn in place at most 4 times a second on a
 * terminal, else a plain line every 5 s. ETA from the bytes still to read at
 * this run's speed.
 */
static void
progress(struct ctx *c, int force)
{
	int64_t now = now_ms();
	double  secs = (double)(now - c->t0) / 1000.0, rate, bps;
	char    eta[32] = "?", pct[16] = "";

	if (!force && now - c->last_progress < (c->tty ? 250 : 5000))
		return;
	c->last_progress = now;
	rate = secs > 0 ? (double)c->run_lines / secs : 0;
	bps = secs > 0 ? (double)c->run_bytes / secs : 0;
	if (c->total > 0) {
		uint64_t done = c->rd.off < c->total ? c->rd.off : c->total;

		snprintf(pct, sizeof(pct), " (%.0f%%)",
		    100.0 * (double)done / (double)c->total);
		if (bps > 0)
			fmt_secs((double)(c->total - done) / bps, eta,
			    sizeof(eta));
	}
	fprintf(stderr, "%s%" PRIu64 " events%s, %.0f events/s, ETA %s:"
	    " %" PRIu64 " accepted, %" PRIu64 " duplicate, %" PRIu64
	    " rejected%s", c->tty ? "\r\033[K" : "rfevents import: ",
	    c->st.lines, pct, rate, eta, c->st.accepted, c->st.duplicate,
	    c->st.rejected, c->tty ? "" : "\n");
	fflush(stderr);
	c->progress_shown = c->tty;
}

/* ---- set-up ---- */

/* SHA-256 of everything that decides what the events look like. */
static void
options_digest(const struct ctx *c, char out[65])
{
	struct ev_buf t = { 0 };
	size_t         i;

	buf_addf(&t, "format=%s", c->csv ? "csv" : "ndjson");
	for (i = 0; i < c->o.nmaps; i++) {
		ev_buf_put(&t, "\0map=", 5);
		ev_buf_str(&t, c->o.maps[i]);
	}
	ev_buf_put(&t, "\0source=", 8);
	ev_buf_str(&t, c->o.source ? c->o.source : "\x01");
	ev_buf_put(&t, "\0event-type=", 12);
	ev_buf_str(&t, c->o.event_type ? c->o.event_type : "\x01");
	ev_sha256_hex(t.p, t.len, out);
	ev_buf_free(&t);
}

/* Read the whole (small) file at path: a malloc'd buffer or NULL. */
static char *
slurp(const char *path, size_t *n)
{
	struct ev_buf t = { 0 };
	char           chunk[4096];
	ssize_t        got;
	int            fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	while ((got = read(fd, chunk, sizeof(chunk))) != 0) {
		if (got < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			ev_buf_free(&t);
			return NULL;
		}
		ev_buf_put(&t, chunk, (size_t)got);
		if (t.len > (1u << 20))
			break;
	}
	close(fd);
	ev_buf_put(&t, "", 0);
	*n = t.len;
	return t.p;
}

/*
 * Decide where to start: the state file of an earlier run for this same
 * input and these options (unless --restart), or the beginning. Opens the
 * errors file, cut back to the recorded size when resuming. 0, 1 fatal,
 * 2 usage (options differ from the interrupted run).
 */
static int
resume_or_start(struct ctx *c, const struct stat *sb, const char *abspath)
{
	struct imp_state old;
	char             err[256], *text;
	size_t           n = 0;
	int              fd, resume = 0;

	memset(&c->st, 0, sizeof(c->st));
	snprintf(c->st.path, sizeof(c->st.path), "%s", abspath);
	c->st.size = (uint64_t)sb->st_size;
	c->st.mtime_sec = (int64_t)sb->st_mtim.tv_sec;
	c->st.mtime_nsec = sb->st_mtim.tv_nsec;
	options_digest(c, c->st.options);
	c->st.line = 1;
	if (c->keep_state && !c->o.restart &&
	    (text = slurp(c->state_path, &n)) != NULL) {
		if (imp_state_parse(text, n, &old, err, sizeof(err)) != 0) {
			say(c, "%s: %s (delete it or use --restart)",
			    c->state_path, err);
			free(text);
			return 1;
		}
		free(text);
		if (strcmp(old.path, c->st.path) != 0 || old.size != c->st.size ||
		    old.mtime_sec != c->st.mtime_sec ||
		    old.mtime_nsec != c->st.mtime_nsec)
			say(c, "%s is from an import of %s as it was before"
			    " (path, size or time changed): starting from the"
			    " beginning (what was sent before is answered"
			    " duplicate)", c->state_path, old.path);
		else if (strcmp(old.options, c->st.options) != 0) {
			say(c, "%s is from an import with other --format, --map,"
			    " --source or --event-type options: run it with the"
			    " same ones to resume, or use --restart",
			    c->state_path);
			return 2;
		} else if (old.offset > c->st.size) {
			say(c, "%s points past the end of the file; use"
			    " --restart", c->state_path);
			return 1;
		} else {
			c->st.offset = old.offset;
			c->st.line = old.line;
			c->st.lines = old.lines;
			c->st.accepted = old.accepted;
			c->st.duplicate = old.duplicate;
			c->st.rejected = old.rejected;
			c->st.errors_size = old.errors_size;
			resume = 1;
		}
	}
	fd = open(c->errors_path, O_WRONLY | O_CREAT | O_CLOEXEC |
	    (resume ? 0 : O_TRUNC), 0644);
	if (fd < 0) {
		say(c, "%s: %s", c->errors_path, strerror(errno));
		return 1;
	}
	if (resume) {
		struct stat es;

		if (fstat(fd, &es) == 0 && (uint64_t)es.st_size <
		    c->st.errors_size) {
			say(c, "warning: %s is shorter than when the import"
			    " stopped; lines refused before are missing from it",
			    c->errors_path);
			c->st.errors_size = (uint64_t)es.st_size;
		}
		if (ftruncate(fd, (off_t)c->st.errors_size) != 0) {
			say(c, "%s: %s", c->errors_path, strerror(errno));
			close(fd);
			return 1;
		}
		say(c, "resuming %s at line %" PRIu64 " (%" PRIu64 " lines"
		    " done: %" PRIu64 " accepted, %" PRIu64 " duplicate, %"
		    PRIu64 " rejected)", c->o.file, c->st.line, c->st.lines,
		    c->st.accepted, c->st.duplicate, c->st.rejected);
	}
	if (lseek(fd, 0, SEEK_END) < 0 ||
	    (c->errf = fdopen(fd, "a")) == NULL) {
		say(c, "%s: %s", c->errors_path, strerror(errno));
		close(fd);
		return 1;
	}
	return 0;
}

/*
 * CSV: read the header (the first record that is not blank) and set up the
 * mapping; then move to the resume offset when there is one. 0, 1 or 2.
 */
static int
csv_header(struct ctx *c)
{
	struct rec x;
	char       err[512];
	size_t     i;

	for (;;) {
		next_record(c, &x);
		if (x.kind == REC_ERROR || x.kind == REC_STOP)
			return 1;
		if (x.kind == REC_END)
			return 0;               /* an empty file */
		if (x.kind == REC_BAD) {
			say(c, "%s: line %" PRIu64 ": the CSV header: %s",
			    c->o.file, x.line, x.rej.msg);
			return 1;
		}
		if (x.used > 0)
			rd_take(&c->rd, &x);
		if (x.kind == REC_DATA)
			break;
	}
	c->have_map = 1;                /* freed by import_main() either way */
	if (imp_map_init(&c->map, &c->crec, c->o.maps, c->o.nmaps, c->o.source,
	    c->o.event_type, err, sizeof(err)) != 0) {
		say(c, "%s", err);
		return 2;
	}
	if (c->map.nignored > 0) {
		struct ev_buf t = { 0 };

		for (i = 0; i < c->map.ncols; i++)
			if (c->map.cols[i].field == IMP_F_IGNORE)
				buf_addf(&t, "%s\"%s\"", t.len ? ", " : "",
				    c->map.names[i]);
		say(c, "note: column%s %s %s not mapped to an event field and"
		    " ignored (--map COL=FIELD)", c->map.nignored > 1 ? "s" : "",
		    t.p, c->map.nignored > 1 ? "are" : "is");
		ev_buf_free(&t);
	}
	if (c->st.offset > c->rd.off) {
		if (lseek(c->rd.fd, (off_t)c->st.offset, SEEK_SET) < 0) {
			say(c, "%s: %s", c->o.file, strerror(errno));
			return 1;
		}
		c->rd.pos = c->rd.len = 0;
		c->rd.eof = 0;
		c->rd.off = c->st.offset;
		c->rd.line = c->st.line;
	} else if (c->st.offset > 0 && c->st.offset < c->rd.off) {
		say(c, "the state file points into the CSV header; use"
		    " --restart");
		return 1;
	}
	return 0;
}

/* ---- the loop ---- */

/*
 * Fill one batch from the input: up to --batch items and IMP_MAX_BODY
 * bytes. Lines refused here become rejected slots. *end is set at the end
 * of the input. 0, or -1 on a read error.
 */
static int
fill_batch(struct ctx *c, int *end)
{
	struct batch *b = &c->b;
	struct rec    x;
	struct slot  *s;
	size_t        before;

	*end = 0;
	while (b->nitems < (size_t)c->o.batch && !g_stop) {
		next_record(c, &x);
		switch (x.kind) {
		case REC_END:
			*end = 1;
			return 0;
		case REC_STOP:
			return 0;
		case REC_ERROR:
			return -1;
		case REC_BLANK:
			rd_take(&c->rd, &x);
			continue;
		case REC_BAD:
			s = batch_slot(b, x.line, x.text ? x.text : "",
			    x.text ? x.tlen : 0);
			s->st = SL_REJECTED;
			s->rej = x.rej;
			if (x.used > 0)
				rd_take(&c->rd, &x);
			continue;
		case REC_DATA:
			break;
		}
		before = b->items.len;
		s = NULL;
		{
			struct imp_reject rej;
			int               rc = c->csv ?
			    imp_csv_item(&c->map, &c->crec, &b->items, &rej) :
			    imp_ndjson_item(x.text, x.tlen, c->o.source,
			    c->o.event_type, &b->items, &rej);
			size_t            ilen = b->items.len - before;

			if (rc == 0 && ilen > IMP_MAX_BODY - 64) {
				b->items.len = before;
				rc = -1;
				snprintf(rej.code, sizeof(rej.code),
				    "payload_too_large");
				snprintf(rej.msg, sizeof(rej.msg), "the event is"
				    " larger than a batch may be");
			}
			if (rc == 0 && b->nitems > 0 &&
			    before + ilen + b->nitems + 64 > IMP_MAX_BODY) {
				/* does not fit: it opens the next batch */
				b->items.len = before;
				return 0;
			}
			s = batch_slot(b, x.line, x.text, x.tlen);
			if (rc != 0) {
				s->st = SL_REJECTED;
				s->rej = rej;
			} else {
				s->item_off = before;
				s->item_len = ilen;
				b->nitems++;
			}
		}
		rd_take(&c->rd, &x);
	}
	return 0;
}

/* Count the answered batch, write its errors and the state. 0 or -1. */
static int
finish_batch(struct ctx *c)
{
	struct batch *b = &c->b;
	size_t        i;
	off_t         esz;

	if (b->n > 0 && write_errors(c) != 0)
		return -1;
	for (i = 0; i < b->n; i++) {
		switch (b->s[i].st) {
		case SL_ACCEPTED:  c->st.accepted++; break;
		case SL_DUPLICATE: c->st.duplicate++; break;
		default:           c->st.rejected++; break;
		}
	}
	c->st.lines += b->n;
	c->run_lines += b->n;
	c->run_bytes = c->rd.off - c->start_off;
	c->st.offset = c->rd.off;
	c->st.line = c->rd.line;
	if ((esz = ftello(c->errf)) >= 0)
		c->st.errors_size = (uint64_t)esz;
	if (c->keep_state && write_state(c) != 0)
		return -1;
	c->batches++;
	return 0;
}

/* Everything after the options: 0, 1, 2 or 128 + signal. */
static int
run(struct ctx *c)
{
	struct stat  sb;
	char        *abspath = NULL;
	const char  *key;
	int          rc = 1, end = 0, stdin_in;
	double       secs;
	enum send_rc sr = SEND_OK;
	char         err[512];

	stdin_in = strcmp(c->o.file, "-") == 0;
	if (imp_url_parse(c->o.url ? c->o.url : IMP_DEFAULT_URL, &c->http.url,
	    err, sizeof(err)) != 0) {
		say(NULL, "--url: %s", err);
		return 2;
	}
	if (c->o.url == NULL)
		c->o.url = IMP_DEFAULT_URL;
	key = c->o.key ? c->o.key : getenv("RFEVENTS_KEY");
	if (key == NULL || *key == '\0') {
		say(NULL, "no API key: give --key KEY or set RFEVENTS_KEY");
		return 2;
	}
	if (strlen(key) > 512 || key[strspn(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-._~+/=")] != '\0') {
		say(NULL, "the API key has characters a key cannot have");
		return 2;
	}
	c->http.auth = ev_xrealloc(NULL, strlen(key) + 32);
	sprintf(c->http.auth, "Authorization: Bearer %s\r\n", key);
	c->http.fd = -1;
	c->http.timeout_ms = (int)c->o.timeout * 1000;
	c->csv = c->o.format ? strcmp(c->o.format, "csv") == 0 :
	    (strlen(c->o.file) > 4 &&
	    strcasecmp(c->o.file + strlen(c->o.file) - 4, ".csv") == 0);

	if (stdin_in) {
		c->rd.fd = 0;
		c->errors_path = ev_xstrdup(c->o.errors ? c->o.errors :
		    "stdin.errors");
		memset(&sb, 0, sizeof(sb));
		abspath = ev_xstrdup("-");
	} else {
		if ((c->rd.fd = open(c->o.file, O_RDONLY | O_CLOEXEC)) < 0) {
			say(NULL, "%s: %s", c->o.file, strerror(errno));
			return 1;
		}
		if (fstat(c->rd.fd, &sb) != 0 ||
		    (abspath = realpath(c->o.file, NULL)) == NULL) {
			say(NULL, "%s: %s", c->o.file, strerror(errno));
			goto out;
		}
		c->keep_state = S_ISREG(sb.st_mode);
		if (c->keep_state)
			c->total = (uint64_t)sb.st_size;
		if (strchr(abspath, '\n') != NULL ||
		    strlen(abspath) >= sizeof(c->st.path)) {
			say(NULL, "%s: the path cannot be kept in a state file",
			    c->o.file);
			c->keep_state = 0;
		}
		if (flock(c->rd.fd, LOCK_EX | LOCK_NB) != 0) {
			say(NULL, "%s: another import of this file is running",
			    c->o.file);
			goto out;
		}
		c->errors_path = ev_xrealloc(NULL, strlen(c->o.file) + 8);
		sprintf(c->errors_path, "%s.errors", c->o.file);
		if (c->o.errors != NULL) {
			free(c->errors_path);
			c->errors_path = ev_xstrdup(c->o.errors);
		}
		c->state_path = ev_xrealloc(NULL, strlen(c->o.file) + 8);
		sprintf(c->state_path, "%s.state", c->o.file);
		if (c->o.state != NULL) {
			free(c->state_path);
			c->state_path = ev_xstrdup(c->o.state);
		}
	}
	if ((rc = resume_or_start(c, &sb, abspath)) != 0)
		goto out;
	rc = 1;
	c->rd.cap = 1u << 20;
	c->rd.buf = ev_xrealloc(NULL, c->rd.cap);
	c->rd.line = 1;
	if (c->csv) {
		if ((rc = csv_header(c)) != 0)
			goto out;
		rc = 1;
	} else if (c->st.offset > 0) {
		if (lseek(c->rd.fd, (off_t)c->st.offset, SEEK_SET) < 0) {
			say(c, "%s: %s", c->o.file, strerror(errno));
			goto out;
		}
		c->rd.off = c->st.offset;
		c->rd.line = c->st.line;
	}
	c->start_off = c->rd.off;
	c->t0 = now_ms();
	c->tty = isatty(2);
	c->last_progress = c->t0;

	while (!end && !g_stop) {
		batch_reset(&c->b);
		if (fill_batch(c, &end) != 0)
			goto out;
		if (c->b.n == 0)
			continue;
		if ((sr = send_batch(c)) != SEND_OK)
			break;
		if (finish_batch(c) != 0)
			goto out;
		progress(c, 0);
	}
	if (sr == SEND_FATAL)
		goto out;
	secs = (double)(now_ms() - c->t0) / 1000.0;
	clear_progress(c);
	if (end && sr == SEND_OK) {         /* everything answered */
		if (c->keep_state)
			unlink(c->state_path);
		rc = 0;
	} else {
		say(c, "interrupted; line %" PRIu64 " is the next to send%s",
		    c->st.line,
		    c->keep_state ? "; run the same command again to go on" :
		    " (stdin cannot be resumed)");
		rc = 128 + (g_stop_now ? (int)g_stop_now : (int)g_stop);
	}
	if (c->st.rejected == 0 && rc == 0)
		unlink(c->errors_path);
	printf("imported %" PRIu64 " lines: %" PRIu64 " accepted, %" PRIu64
	    " duplicate, %" PRIu64 " rejected (%s%s) in %.1f s, %.0f"
	    " events/s\n", c->st.lines, c->st.accepted, c->st.duplicate,
	    c->st.rejected, c->st.rejected ? "errors in " : "no errors",
	    c->st.rejected ? c->errors_path : "", secs,
	    secs > 0 ? (double)c->run_lines / secs : 0.0);
	fflush(stdout);
out:
	/* input, errors file, path strings; the rest goes in import_main() */
	if (rc == 1)
		clear_progress(c);
	if (!stdin_in && c->rd.fd >= 0)
		close(c->rd.fd);
	if (c->errf != NULL)
		fclose(c->errf);
	free(abspath);
	return rc;
}

int
import_main(int argc, char **argv)
{
	struct ctx       c;
	struct sigaction sa, old_int, old_term, old_pipe;
	int              rc;

	memset(&c, 0, sizeof(c));
	c.rd.fd = -1;
	c.http.fd = -1;
	if ((rc = parse_opts(argc, argv, &c.o)) != 0) {
		usage();
		free(c.o.maps);
		return rc < 0 ? 0 : rc;
	}
	g_stop = g_stop_now = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;     /* no SA_RESTART: poll() wakes up */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, &old_pipe);

	rc = run(&c);

	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGPIPE, &old_pipe, NULL);
	/* everything run() left: connection, buffers, mapping, names */
	http_close(&c.http);
	if (c.http.auth != NULL) {
		explicit_bzero(c.http.auth, strlen(c.http.auth));
		free(c.http.auth);
	}
	ev_buf_free(&c.http.req);
	ev_buf_free(&c.http.in);
	ev_buf_free(&c.http.body);
	ev_buf_free(&c.b.items);
	ev_buf_free(&c.b.orig);
	ev_buf_free(&c.b.body);
	ev_buf_free(&c.longhead);
	free(c.b.s);
	free(c.b.sent);
	free(c.rd.buf);
	imp_csv_free(&c.crec);
	if (c.have_map)
		imp_map_free(&c.map);
	free(c.errors_path);
	free(c.state_path);
	free(c.o.maps);
	return rc;
}
