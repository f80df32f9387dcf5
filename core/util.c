/*
 * core/util.c — random bytes, the base-32 alphabet of public ids and API
 * keys, public ids, SHA-256, constant-time comparison (OpenSSL libcrypto
 * and the kernel's getrandom()) and the decoding of one UTF-8 sequence.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

/* SHA256_Init() and its siblings are deprecated since OpenSSL 3.0, not
 * removed; see ev_sha256() for why they are used. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "core/core.h"

/* A public id after its prefix: 22 characters of 5 bits each, the first
 * PUBLIC_ID_TIME of them the creation time, the other 12 random (60 bits). */
#define PUBLIC_ID_CHARS 22
#define PUBLIC_ID_TIME  10

/* See core.h. Crockford-like: digits and lower-case letters without
 * i, l, o, u; NUL-terminated. */
const char ev_b32_alphabet[33] = "0123456789abcdefghjkmnpqrstvwxyz";
_Static_assert(sizeof(ev_b32_alphabet) == 33, "ev_b32_alphabet");

/*
 * See core.h. A table indexed by the byte: the same time for every input
 * (the characters checked are the caller's own, not a secret), and a
 * constant cost per character of a key on every request.
 */
int
ev_b32_value(int c)
{
	static signed char value[256];
	static int         ready;
	int                i;

	if (!ready) {
		for (i = 0; i < 256; i++)
			value[i] = -1;
		for (i = 0; i < 32; i++)
			value[(unsigned char)ev_b32_alphabet[i]] = (signed char)i;
		ready = 1;
	}
	if (c < 0 || c > 255)
		return -1;
	return value[c];
}

/*
 * See core.h. Reads from getrandom(2) (blocking only until the kernel's
 * pool is first initialised), looping over short reads and EINTR.
 * Returns 0, or -1 (buf contents then undefined).
 */
int
ev_random(unsigned char *buf, size_t n)
{
	size_t  got = 0;
	ssize_t r;

	while (got < n) {
		r = getrandom(buf + got, n - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)r;
	}
	return 0;
}

/*
 * See core.h. The pool is a page of its own, wiped in a forked child
 * (MADV_WIPEONFORK, Linux 4.14): the child finds it empty and fills it
 * anew, so that two processes never hand out the same bytes. Where the
 * page or the flag is not to be had, every call reads getrandom(). A
 * byte handed out is cleared from the pool.
 */
struct rpool {
	size_t        left;     /* bytes not handed out, at the end of b */
	unsigned char b[4096 - sizeof(size_t)];
};

int
ev_random_pool(unsigned char *buf, size_t n)
{
	static struct rpool *pool;
	static int           state;     /* 0 not set up, 1 pooled, -1 not */
	unsigned char       *from;

	if (state == 0) {
		void *m = mmap(NULL, sizeof(*pool), PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		state = -1;
		if (m != MAP_FAILED && madvise(m, sizeof(*pool), MADV_WIPEONFORK) == 0) {
			pool = m;
			state = 1;
		} else if (m != MAP_FAILED)
			munmap(m, sizeof(*pool));
	}
	if (state < 0 || n > sizeof(pool->b) / 4)
		return ev_random(buf, n);
	if (pool->left < n) {
		if (ev_random(pool->b, sizeof(pool->b)) != 0)
			return -1;
		pool->left = sizeof(pool->b);
	}
	from = pool->b + sizeof(pool->b) - pool->left;
	memcpy(buf, from, n);
	memset(from, 0, n);
	pool->left -= n;
	return 0;
}

/*
 * See core.h. The time part is the wall clock in milliseconds, most
 * significant character first (50 bits: until the year 37,000), so ids
 * made later sort after earlier ones: a new row's entry in a unique index
 * on public_id lands at the index's right-hand end, on a page already in
 * memory, instead of on a random page of an index that outgrew the buffer
 * pool. Each random character takes the low 5 bits of one random byte
 * (256 is a multiple of 32, so every character is uniform); 60 random
 * bits within one millisecond make a collision (caught by the unique key
 * anyway) negligible. Returns 0, or -1 when prefix is NULL or too long
 * (more than 32 - 22 - 1 = 9 bytes) or no randomness is available (out is
 * then "").
 */
int
ev_public_id(const char *prefix, char out[32])
{
	unsigned char   rnd[PUBLIC_ID_CHARS - PUBLIC_ID_TIME];
	struct timespec ts;
	uint64_t        ms = 0;
	size_t          plen, i;

	out[0] = '\0';
	if (prefix == NULL)
		return -1;
	plen = strlen(prefix);
	if (plen > 32 - 1 - PUBLIC_ID_CHARS)
		return -1;
	if (ev_random_pool(rnd, sizeof(rnd)) != 0)
		return -1;
	if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && ts.tv_sec > 0)
		ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	memcpy(out, prefix, plen);
	for (i = 0; i < PUBLIC_ID_TIME; i++)
		out[plen + i] = ev_b32_alphabet[(ms >> (5 * (PUBLIC_ID_TIME - 1 - i))) & 31];
	for (i = 0; i < sizeof(rnd); i++)
		out[plen + PUBLIC_ID_TIME + i] = ev_b32_alphabet[rnd[i] & 31];
	out[plen + PUBLIC_ID_CHARS] = '\0';
	return 0;
}

/*
 * See core.h. Through the low-level functions, not EVP: the first EVP
 * digest loads libcrypto's default provider, which built tables and
 * touched about 700 kB of a worker's resident memory (one process, one
 * hash, measured with VmRSS) for a hash that never changes. The state
 * is on the stack: nothing to allocate, nothing that fails.
 */
void
ev_sha256(const void *data, size_t len, unsigned char out[32])
{
	SHA256_CTX c;

	if (data == NULL)
		data = "";
	SHA256_Init(&c);
	SHA256_Update(&c, data, len);
	SHA256_Final(out, &c);
	OPENSSL_cleanse(&c, sizeof(c));
}

void
ev_sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char     md[32];
	unsigned int      i;

	ev_sha256(data, len, md);
	for (i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
}

/* See core.h. OpenSSL's CRYPTO_memcmp does not stop at the first difference. */
int
ev_ct_equal(const void *a, const void *b, size_t n)
{
	if (n == 0)
		return 1;
	return CRYPTO_memcmp(a, b, n) == 0;
}

/*
 * See core.h (RFC 3629 §4, table 3-7 of Unicode: the second byte's range
 * depends on the lead byte, which rules out overlongs, surrogates and code
 * points above U+10FFFF; later bytes are 80-BF).
 */
size_t
ev_utf8_decode(const unsigned char *s, size_t n, unsigned *cp)
{
	unsigned char c, lo = 0x80, hi = 0xBF;
	size_t        need, i;
	unsigned      v;

	if (n == 0)
		return 0;
	c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		need = 2;
		v = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 3;
		v = c & 0x0F;
		if (c == 0xE0)
			lo = 0xA0;          /* overlong below U+0800 */
		else if (c == 0xED)
			hi = 0x9F;          /* surrogates D800-DFFF */
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 4;
		v = c & 0x07;
		if (c == 0xF0)
			lo = 0x90;          /* overlong below U+10000 */
		else if (c == 0xF4)
			hi = 0x8F;          /* above U+10FFFF */
	} else
		return 0;               /* 80-C1 (continuation, overlong), F5-FF */
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	v = v << 6 | (s[1] & 0x3F);
	for (i = 2; i < need; i++) {
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
		v = v << 6 | (s[i] & 0x3F);
	}
	*cp = v;
	return need;
}

/* Out of memory is decided once: say so and abort (the web server starts
 * the worker again; the CLI ends). */
static _Noreturn void
out_of_memory(void)
{
	static const char msg[] = "rfevents: out of memory\n";

	fwrite(msg, 1, sizeof(msg) - 1, stderr);
	abort();
}

void *
ev_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		out_of_memory();
	return p;
}

void *
ev_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		out_of_memory();
	return q;
}

void
ev_buf_room(struct ev_buf *b, size_t n)
{
	size_t nc;

	if (b->p != NULL && n < b->cap - b->len)
		return;
	if (n > SIZE_MAX / 4 - b->len)
		out_of_memory();
	nc = b->cap ? b->cap : 256;
	while (n >= nc - b->len)
		nc *= 2;
	b->p = ev_xrealloc(b->p, nc);
	b->cap = nc;
}

void
ev_buf_put(struct ev_buf *b, const void *s, size_t n)
{
	ev_buf_room(b, n);
	if (n > 0)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
ev_buf_free(struct ev_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

void
ev_buf_str(struct ev_buf *b, const char *s)
{
	ev_buf_put(b, s, strlen(s));
}

void
ev_buf_i64(struct ev_buf *b, int64_t v)
{
	char     tmp[24], *e = tmp + sizeof(tmp), *q = e;
	uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

	do
		*--q = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (v < 0)
		*--q = '-';
	ev_buf_put(b, q, (size_t)(e - q));
}

void
ev_buf_json_str(struct ev_buf *b, const char *s)
{
	if (s == NULL)
		ev_buf_put(b, "null", 4);
	else
		ev_buf_json_strn(b, s, strlen(s));
}

size_t
ev_json_plain(const char *s, size_t len)
{
	const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
	size_t         i = 0;

	/* eight bytes at a time: is any below 0x20, '"' or '\\'? (exact
	 * tests, "hasless" and "haszero"; the word is then looked at byte by
	 * byte) */
	for (; i + 8 <= len; i += 8) {
		uint64_t x, q, bs;
		memcpy(&x, s + i, 8);
		q = x ^ (ones * '"');
		bs = x ^ (ones * '\\');
		if ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) |
		    ((bs - ones) & ~bs)) & highs)
			break;
	}
	for (; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == '"' || c == '\\')
			break;
	}
	return i;
}

void
ev_buf_json_esc(struct ev_buf *b, const char *s, size_t len, int short_esc)
{
	static const char hex[] = "0123456789abcdef";

	ev_buf_put(b, "\"", 1);
	for (;;) {
		size_t        n = ev_json_plain(s, len);
		unsigned char c;
		char          esc[6] = { '\\', 'u', '0', '0', 0, 0 };
		size_t        m = 2;

		ev_buf_put(b, s, n);
		if (n == len)
			break;
		c = (unsigned char)s[n];
		s += n + 1;
		len -= n + 1;
		switch (short_esc ? c : 0) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			m = 6;
		}
		ev_buf_put(b, esc, m);
	}
	ev_buf_put(b, "\"", 1);
}

void
ev_buf_json_strn(struct ev_buf *b, const char *s, size_t len)
{
	ev_buf_json_esc(b, s, len, 1);
}

/* json-c's number text: a parsed number keeps its original one */
static void
num_json_c(struct ev_buf *b, json_object *v)
{
	ev_buf_str(b, json_object_to_json_string_ext(v,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static const struct ev_json_style json_c_style = { ev_buf_json_strn, num_json_c, 0 };

void
ev_buf_json(struct ev_buf *b, json_object *v)
{
	ev_buf_json_as(b, v, &json_c_style);
}

static int
cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void
ev_buf_json_as(struct ev_buf *b, json_object *v, const struct ev_json_style *st)
{
	const char **keys;
	size_t       i, n;

	switch (json_object_get_type(v)) {
	case json_type_null:
		ev_buf_put(b, "null", 4);
		break;
	case json_type_boolean:
		ev_buf_str(b, json_object_get_boolean(v) ? "true" : "false");
		break;
	case json_type_double:
	case json_type_int:
		st->num(b, v);
		break;
	case json_type_string:
		st->str(b, json_object_get_string(v),
		    (size_t)json_object_get_string_len(v));
		break;
	case json_type_array:
		ev_buf_put(b, "[", 1);
		n = json_object_array_length(v);
		for (i = 0; i < n; i++) {
			if (i > 0)
				ev_buf_put(b, ",", 1);
			ev_buf_json_as(b, json_object_array_get_idx(v, i), st);
		}
		ev_buf_put(b, "]", 1);
		break;
	case json_type_object:
		n = (size_t)json_object_object_length(v);
		keys = ev_xcalloc(n ? n : 1, sizeof(*keys));
		i = 0;
		json_object_object_foreach(v, k, val) {
			(void)val;
			keys[i++] = k;
		}
		if (st->sorted)
			qsort(keys, n, sizeof(*keys), cmp_keys);
		ev_buf_put(b, "{", 1);
		for (i = 0; i < n; i++) {
			if (i > 0)
				ev_buf_put(b, ",", 1);
			st->str(b, keys[i], strlen(keys[i]));
			ev_buf_put(b, ":", 1);
			ev_buf_json_as(b, json_object_object_get(v, keys[i]), st);
		}
		ev_buf_put(b, "}", 1);
		free(keys);
		break;
	}
}

char *
ev_xstrdup(const char *s)
{
	size_t n;

	if (s == NULL)
		return NULL;
	n = strlen(s) + 1;
	return memcpy(ev_xrealloc(NULL, n), s, n);
}
