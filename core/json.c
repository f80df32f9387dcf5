/*
 * core/json.c — strict JSON parser (RFC 8259) that builds a json-c tree.
 *
 * json-c's own tokener is lenient (it takes comments, single quotes, NaN,
 * trailing commas, invalid UTF-8 ...), so request bodies go through this
 * parser instead. It is iterative: containers sit on an explicit stack, so
 * the C stack depth does not depend on the input, and the nesting is capped
 * at max_depth before anything is allocated for a deeper level.
 *
 * Every byte is looked at once; strings without escapes are handed to
 * json-c straight from the input, strings with escapes are decoded into a
 * scratch buffer that is reused for the whole parse.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/*
 * Out of memory is not a parse error: like xmalloc elsewhere, log and
 * abort (the web server restarts the worker).
 */
static _Noreturn void
oom(void)
{
	static const char msg[] = "rfevents: json: out of memory\n";

	fwrite(msg, 1, sizeof(msg) - 1, stderr);
	abort();
}

/* A growable byte buffer, reused for every string/number of one parse. */
struct jbuf {
	char   *p;
	size_t  len;
	size_t  cap;
};

/* Parser state; `pos` is the offset of the next unread byte. */
struct jparser {
	const unsigned char *s;
	size_t               len;
	size_t               pos;
	struct json_perr    *err;
	struct jbuf          scratch;  /* decoded string values, number text */
	struct jbuf          key;      /* the pending object key, NUL-terminated */
};

/* The explicit container stack: frames are the open arrays/objects. */
#define JSTACK_INLINE 32

struct jstack {
	json_object  *inl[JSTACK_INLINE];
	json_object **v;
	size_t        n;
	size_t        cap;
};

/*
 * Record an error at byte offset `off` with static message `msg`.
 * Returns 0 so callers can write `return jfail(...)`.
 */
static int
jfail(struct jparser *p, size_t off, const char *msg)
{
	p->err->offset = off;
	p->err->msg = msg;
	return 0;
}

/* Make room for `extra` more bytes in b (growth by doubling; aborts on OOM). */
static void
jbuf_reserve(struct jbuf *b, size_t extra)
{
	size_t  ncap;
	char   *np;

	if (extra <= b->cap - b->len)
		return;
	if (extra > SIZE_MAX / 2 - b->len)
		oom();
	ncap = b->cap ? b->cap : 64;
	while (ncap - b->len < extra)
		ncap *= 2;
	if ((np = realloc(b->p, ncap)) == NULL)
		oom();
	b->p = np;
	b->cap = ncap;
}

/* Append n bytes (room must have been reserved). */
static void
jbuf_put(struct jbuf *b, const void *src, size_t n)
{
	if (n == 0)
		return;
	memcpy(b->p + b->len, src, n);
	b->len += n;
}

static int
is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void
skip_ws(struct jparser *p)
{
	while (p->pos < p->len && is_ws(p->s[p->pos]))
		p->pos++;
}

/* Value of one hex digit, or -1. */
static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Read the 4 hex digits of a \u escape at s[at..at+4) into *cp.
 * Returns 1, or 0 (truncated or not hex).
 */
static int
read_hex4(const struct jparser *p, size_t at, unsigned *cp)
{
	unsigned v = 0;
	size_t   i;
	int      h;

	if (p->len - at < 4)
		return 0;
	for (i = 0; i < 4; i++) {
		if ((h = hexval(p->s[at + i])) < 0)
			return 0;
		v = v << 4 | (unsigned)h;
	}
	*cp = v;
	return 1;
}

/* Encode code point cp (valid scalar value) as UTF-8 into out; returns length. */
static size_t
utf8_put(unsigned cp, unsigned char out[4])
{
	if (cp < 0x80) {
		out[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (unsigned char)(0xC0 | cp >> 6);
		out[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (unsigned char)(0xE0 | cp >> 12);
		out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		out[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (unsigned char)(0xF0 | cp >> 18);
	out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
	out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
	out[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

/*
 * Decode one escape sequence whose backslash is at p->pos, appending the
 * bytes to b (RFC 8259 §7; \uXXXX surrogates must form a high+low pair).
 * Sets *has_nul when the escape produced U+0000. Advances p->pos past it.
 * Returns 1, or 0 with the error recorded.
 */
static int
decode_escape(struct jparser *p, struct jbuf *b, int *has_nul)
{
	unsigned char enc[4];
	unsigned      cp, lo;
	size_t        at = p->pos;
	char          c;

	if (p->len - at < 2)
		return jfail(p, at, "unexpected end of input");
	switch (p->s[at + 1]) {
	case '"':  c = '"';  break;
	case '\\': c = '\\'; break;
	case '/':  c = '/';  break;
	case 'b':  c = '\b'; break;
	case 'f':  c = '\f'; break;
	case 'n':  c = '\n'; break;
	case 'r':  c = '\r'; break;
	case 't':  c = '\t'; break;
	case 'u':
		if (!read_hex4(p, at + 2, &cp))
			return jfail(p, at, "invalid \\u escape");
		p->pos = at + 6;
		if (cp >= 0xDC00 && cp <= 0xDFFF)
			return jfail(p, at, "lone low surrogate");
		if (cp >= 0xD800 && cp <= 0xDBFF) {
			if (p->len - p->pos < 6 || p->s[p->pos] != '\\' ||
			    p->s[p->pos + 1] != 'u' ||
			    !read_hex4(p, p->pos + 2, &lo) ||
			    lo < 0xDC00 || lo > 0xDFFF)
				return jfail(p, at, "lone high surrogate");
			cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			p->pos += 6;
		}
		if (cp == 0)
			*has_nul = 1;
		jbuf_reserve(b, 4);
		jbuf_put(b, enc, utf8_put(cp, enc));
		return 1;
	default:
		return jfail(p, at, "invalid escape");
	}
	jbuf_reserve(b, 1);
	jbuf_put(b, &c, 1);
	p->pos = at + 2;
	return 1;
}

/*
 * Parse the string whose opening quote is at p->pos (RFC 8259 §7).
 * Raw bytes must be valid UTF-8 and >= 0x20. Without escapes the result
 * points into the input; with escapes (or when `to_buf` is set) it is
 * decoded into b, which is first emptied. On success *out and *outlen describe
 * the decoded bytes (not NUL-terminated), *has_nul says whether it holds
 * U+0000, and p->pos is past the closing quote. Returns 1, or 0 with error.
 */
static int
parse_string(struct jparser *p, struct jbuf *b, int to_buf,
    const char **out, size_t *outlen, int *has_nul)
{
	const unsigned char *s = p->s;
	size_t               start = p->pos + 1, i = start, run, k;
	int                  escaped = 0;
	unsigned char        c;
	unsigned             cp;      /* decoded, unused: only validated */

	*has_nul = 0;
	b->len = 0;
	for (;;) {
		/* Fast scan over a run of bytes that need no decoding. */
		while (i < p->len) {
			c = s[i];
			if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\')
				i++;
			else if (c >= 0x80) {
				/* RFC 3629: no overlongs, surrogates,
				 * > U+10FFFF or truncation. */
				if ((k = ev_utf8_decode(s + i, p->len - i, &cp)) == 0)
					return jfail(p, i, "invalid UTF-8");
				i += k;
			} else
				break;
		}
		if (i >= p->len)
			return jfail(p, i, "unterminated string");
		c = s[i];
		if (c < 0x20)
			return jfail(p, i, "control character in string");
		if (escaped || to_buf || c == '\\') {
			/* Copy the pending run into the buffer. */
			run = i - start;
			jbuf_reserve(b, run);
			jbuf_put(b, s + start, run);
			escaped = 1;
		}
		if (c == '"')
			break;
		/* c == '\\' */
		p->pos = i;
		if (!decode_escape(p, b, has_nul))
			return 0;
		i = start = p->pos;
	}
	if (escaped) {
		*out = b->p ? b->p : "";
		*outlen = b->len;
	} else {
		*out = (const char *)s + start;
		*outlen = i - start;
	}
	p->pos = i + 1;
	return 1;
}

/*
 * Parse a number at p->pos with the RFC 8259 §6 grammar
 *   [ "-" ] ( "0" / 1-9 *DIGIT ) [ "." 1*DIGIT ] [ ("e"/"E") ["+"/"-"] 1*DIGIT ]
 * into a json-c double that keeps the exact source text (values that
 * overflow a double become ±HUGE_VAL but keep their text).
 * Returns the new object, or NULL with the error recorded.
 */
static json_object *
parse_number(struct jparser *p)
{
	const unsigned char *s = p->s;
	size_t               start = p->pos, i = start, n;
	json_object         *o;
	double               d;
	int                  saved;

	if (i < p->len && s[i] == '-')
		i++;
	if (i >= p->len || s[i] < '0' || s[i] > '9')
		return jfail(p, i, "invalid number"), NULL;
	if (s[i] == '0')
		i++;
	else
		while (i < p->len && s[i] >= '0' && s[i] <= '9')
			i++;
	if (i < p->len && s[i] == '.') {
		i++;
		if (i >= p->len || s[i] < '0' || s[i] > '9')
			return jfail(p, i, "invalid number"), NULL;
		while (i < p->len && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < p->len && (s[i] == '+' || s[i] == '-'))
			i++;
		if (i >= p->len || s[i] < '0' || s[i] > '9')
			return jfail(p, i, "invalid number"), NULL;
		while (i < p->len && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	n = i - start;
	p->scratch.len = 0;
	jbuf_reserve(&p->scratch, n + 1);
	jbuf_put(&p->scratch, s + start, n);
	p->scratch.p[n] = '\0';
	saved = errno;
	d = strtod(p->scratch.p, NULL);
	errno = saved;
	if ((o = json_object_new_double_s(d, p->scratch.p)) == NULL)
		oom();
	p->pos = i;
	return o;
}

/*
 * Match the literal `lit` (true/false/null) at p->pos.
 * Returns 1 and advances, or 0 with the error recorded.
 */
static int
match_lit(struct jparser *p, const char *lit)
{
	size_t n = strlen(lit);

	if (p->len - p->pos < n || memcmp(p->s + p->pos, lit, n) != 0)
		return jfail(p, p->pos, "unexpected character");
	p->pos += n;
	return 1;
}

/*
 * Parse a scalar (string, number, literal) at p->pos.
 * Returns a new object; `*is_null` is set for the literal null (json-c
 * represents it as a NULL pointer). NULL without is_null means error.
 */
static json_object *
parse_scalar(struct jparser *p, int *is_null)
{
	const char  *str;
	size_t       slen;
	json_object *o;
	int          has_nul;
	size_t       at = p->pos;

	*is_null = 0;
	switch (p->s[at]) {
	case '"':
		if (!parse_string(p, &p->scratch, 0, &str, &slen, &has_nul))
			return NULL;
		if (slen > INT_MAX)
			return jfail(p, at, "string too long"), NULL;
		if ((o = json_object_new_string_len(str, (int)slen)) == NULL)
			oom();
		return o;
	case 't':
	case 'f':
		if (!match_lit(p, p->s[at] == 't' ? "true" : "false"))
			return NULL;
		if ((o = json_object_new_boolean(p->s[at] == 't')) == NULL)
			oom();
		return o;
	case 'n':
		if (match_lit(p, "null"))
			*is_null = 1;
		return NULL;
	case '-': case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		return parse_number(p);
	default:
		return jfail(p, at, "unexpected character"), NULL;
	}
}

/*
 * Parse an object key at p->pos (must be a string), then the ':' after it.
 * The key is left NUL-terminated in p->key. json-c keys are C strings, so
 * a U+0000 inside a key is stored as the two bytes C0 80 (never valid
 * UTF-8, so it cannot collide with another key); callers reject such keys
 * where they matter (JSON_NUL_IN_KEY). Returns 1, or 0 with error.
 */
static int
parse_key(struct jparser *p)
{
	const char *str;
	size_t      slen, at;
	int         has_nul;

	skip_ws(p);
	at = p->pos;
	if (at >= p->len)
		return jfail(p, at, "unexpected end of input");
	if (p->s[at] != '"')
		return jfail(p, at, "expected string key");
	if (!parse_string(p, &p->key, 1, &str, &slen, &has_nul))
		return 0;
	if (has_nul) {
		size_t i, n = p->key.len, nuls = 0, extra;
		for (i = 0; i < n; i++)
			nuls += p->key.p[i] == '\0';
		jbuf_reserve(&p->key, nuls);
		/* widen from the end: each NUL becomes C0 80 */
		for (i = n, extra = nuls; i-- > 0;) {
			if (p->key.p[i] == '\0') {
				extra--;
				p->key.p[i + extra] = (char)0xC0;
				p->key.p[i + extra + 1] = (char)0x80;
			} else
				p->key.p[i + extra] = p->key.p[i];
		}
		p->key.len = n + nuls;
	}
	jbuf_reserve(&p->key, 1);
	p->key.p[p->key.len] = '\0';
	skip_ws(p);
	if (p->pos >= p->len)
		return jfail(p, p->pos, "unexpected end of input");
	if (p->s[p->pos] != ':')
		return jfail(p, p->pos, "expected ':'");
	p->pos++;
	return 1;
}

/* Push container o (aborts on OOM). */
static void
jstack_push(struct jstack *st, json_object *o)
{
	json_object **nv;
	size_t        ncap;

	if (st->n == st->cap) {
		if (st->cap > SIZE_MAX / 2 / sizeof(*nv))
			oom();
		ncap = st->cap * 2;
		if (st->v == st->inl) {
			if ((nv = malloc(ncap * sizeof(*nv))) == NULL)
				oom();
			memcpy(nv, st->inl, st->n * sizeof(*nv));
		} else if ((nv = realloc(st->v, ncap * sizeof(*nv))) == NULL)
			oom();
		st->v = nv;
		st->cap = ncap;
	}
	st->v[st->n++] = o;
}

/*
 * Attach value v (may be NULL for JSON null) to the innermost open
 * container, using the pending key for an object, or make it the root.
 * The parent (or *root) takes ownership; json-c only fails on OOM.
 */
static void
attach(struct jparser *p, struct jstack *st, json_object **root,
    json_object *v)
{
	json_object *top;
	int          rc;

	if (st->n == 0) {
		*root = v;
		return;
	}
	top = st->v[st->n - 1];
	if (json_object_is_type(top, json_type_object))
		rc = json_object_object_add(top, p->key.p, v);
	else
		rc = json_object_array_add(top, v);
	if (rc != 0)
		oom();
}

/*
 * See core.h. The parse loop alternates between "expect a value" and
 * "after a value" (expect ',' or the closing bracket of the innermost open
 * container). Every value is attached to its parent as soon as it is
 * created, so on error releasing the root frees everything built so far.
 * Scratch buffers and the stack are freed at `out`.
 */
json_object *
json_parse_strict(const char *buf, size_t len, unsigned max_depth,
    struct json_perr *err)
{
	struct json_perr  dummy;
	struct jparser    p;
	struct jstack     st;
	json_object      *root = NULL, *v, *top;
	int               ok = 0, is_null, is_obj;
	unsigned char     c;
	size_t            at;

	memset(&p, 0, sizeof(p));
	p.s = (const unsigned char *)buf;
	p.len = buf ? len : 0;
	p.err = err ? err : &dummy;
	p.err->offset = 0;
	p.err->msg = NULL;
	st.v = st.inl;
	st.n = 0;
	st.cap = JSTACK_INLINE;

	if (p.len >= 3 && memcmp(p.s, "\xEF\xBB\xBF", 3) == 0) {
		jfail(&p, 0, "byte order mark not allowed");
		goto out;
	}

value:
	skip_ws(&p);
	at = p.pos;
	if (at >= p.len) {
		jfail(&p, at, "unexpected end of input");
		goto out;
	}
	c = p.s[at];
	if (c == '{' || c == '[') {
		if (st.n >= max_depth) {
			jfail(&p, at, "nesting too deep");
			goto out;
		}
		v = c == '{' ? json_object_new_object() : json_object_new_array();
		if (v == NULL)
			oom();
		attach(&p, &st, &root, v);
		jstack_push(&st, v);
		p.pos++;
		skip_ws(&p);
		if (p.pos < p.len && p.s[p.pos] == (c == '{' ? '}' : ']')) {
			p.pos++;
			st.n--;
			goto after;
		}
		if (c == '{' && !parse_key(&p))
			goto out;
		goto value;
	}
	v = parse_scalar(&p, &is_null);
	if (v == NULL && !is_null)
		goto out;
	attach(&p, &st, &root, v);

after:
	skip_ws(&p);
	if (st.n == 0) {
		if (p.pos != p.len) {
			jfail(&p, p.pos, "trailing data after JSON text");
			goto out;
		}
		ok = 1;
		goto out;
	}
	if (p.pos >= p.len) {
		jfail(&p, p.pos, "unexpected end of input");
		goto out;
	}
	top = st.v[st.n - 1];
	is_obj = json_object_is_type(top, json_type_object);
	c = p.s[p.pos];
	if (c == ',') {
		p.pos++;
		if (is_obj && !parse_key(&p))
			goto out;
		goto value;
	}
	if (c == (is_obj ? '}' : ']')) {
		p.pos++;
		st.n--;
		goto after;
	}
	jfail(&p, p.pos, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");

out:	/* frees: scratch buffers, a heap stack, and the tree on error */
	free(p.scratch.p);
	free(p.key.p);
	if (st.v != st.inl)
		free(st.v);
	if (!ok) {
		json_object_put(root);
		return NULL;
	}
	/*
	 * A bare `null` text is valid JSON, but json-c represents null as a
	 * NULL pointer, which this API reserves for errors: it is reported as
	 * an error with its own message.
	 */
	if (root == NULL) {
		jfail(&p, 0, "top-level null not supported");
		return NULL;
	}
	return root;
}

/* See core.h. */
int
json_is_number(const json_object *o)
{
	return o != NULL && json_object_is_type(o, json_type_double);
}
