/*
 * Unit tests for core/util.c: ev_random, ev_public_id (format,
 * uniqueness, the time part and the order it gives), the base-32 alphabet and ev_b32_value (also through the key
 * format check of ev_key_check), ev_sha256_hex (FIPS 180-2 / NIST
 * vectors), ev_ct_equal, ev_utf8_decode (RFC 3629, Unicode table 3-7),
 * struct ev_buf (JSON string escaping: a table, every byte, and the Big
 * List of Naughty Strings against json-c's own output).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json.h>

#include "core/core.h"
#include "tests/unit/t.h"

#define NIDS 1000
#define NROWS(a) (sizeof(a) / sizeof((a)[0]))

/* The specification, written out independently of core/util.c. */
static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";

static int
cmp_str(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

struct pcase {
	int         line;
	const char *prefix;
	int         rc;
};

static const struct pcase pcases[] = {
	{ __LINE__, "evt_", 0 },
	{ __LINE__, "prf_", 0 },
	{ __LINE__, "key_", 0 },
	{ __LINE__, "", 0 },
	{ __LINE__, "123456789", 0 },     /* 9 + 22 + NUL = 32 */
	{ __LINE__, "1234567890", -1 },   /* one too many */
	{ __LINE__, NULL, -1 },
};

/* Format: prefix, then 22 characters of the alphabet, then NUL. */
static void
run_public_id_format(void)
{
	char   out[32];
	size_t i, pl;
	int    rc;

	for (i = 0; i < sizeof(pcases) / sizeof(pcases[0]); i++) {
		const struct pcase *c = &pcases[i];

		memset(out, 'X', sizeof(out));
		rc = ev_public_id(c->prefix, out);
		T_CHECK(c->line, rc == c->rc, "rc %d, want %d", rc, c->rc);
		if (rc != 0)
			continue;
		pl = strlen(c->prefix);
		T_CHECK(c->line, strlen(out) == pl + 22, "length %zu",
		    strlen(out));
		T_CHECK(c->line, strncmp(out, c->prefix, pl) == 0,
		    "prefix of %s", out);
		T_CHECK(c->line, strspn(out + pl, alphabet) == 22,
		    "bad character in %s", out);
	}
}

/* 1000 ids: all well formed, all distinct, every character of the
 * random part used. */
static void
run_public_id_unique(void)
{
	static char ids[NIDS][32];
	int         seen[256] = { 0 }, i, j, dups = 0, bad = 0, unused = 0;

	for (i = 0; i < NIDS; i++) {
		if (ev_public_id("evt_", ids[i]) != 0 ||
		    strlen(ids[i]) != 26 || strncmp(ids[i], "evt_", 4) != 0 ||
		    strspn(ids[i] + 4, alphabet) != 22)
			bad++;
		for (j = 4 + 10; ids[i][j] != '\0'; j++)
			seen[(unsigned char)ids[i][j]]++;
	}
	T_OK(bad == 0, "%d malformed ids", bad);
	qsort(ids, NIDS, sizeof(ids[0]), cmp_str);
	for (i = 1; i < NIDS; i++)
		if (strcmp(ids[i - 1], ids[i]) == 0)
			dups++;
	T_OK(dups == 0, "%d duplicate ids", dups);
	/* 12000 random characters over 32 symbols: each appears (375
	 * expected, standard deviation 19). */
	for (i = 0; alphabet[i] != '\0'; i++)
		if (seen[(unsigned char)alphabet[i]] < 250)
			unused++;
	T_OK(unused == 0, "%d symbols (almost) never used", unused);
	T_OK(seen['i'] == 0 && seen['l'] == 0 && seen['o'] == 0 &&
	    seen['u'] == 0, "excluded letters used");
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The 10 characters after the prefix as a number: -1 on a bad character. */
static int64_t
time_part(const char *id)
{
	int64_t v = 0;
	int     i;

	for (i = 0; i < 10; i++) {
		const char *c = id[i] ? strchr(alphabet, id[i]) : NULL;
		if (c == NULL)
			return -1;
		v = v * 32 + (c - alphabet);
	}
	return v;
}

/* The time part is the clock in milliseconds when the id was made, so ids
 * made in later milliseconds sort after earlier ones (the unique index on
 * public_id grows at its end). */
static void
run_public_id_time(void)
{
	char     ids[3][32];
	uint64_t before, after;
	int64_t  t;
	int      i;

	before = now_ms();
	T_OK(ev_public_id("prf_", ids[0]) == 0, "ev_public_id failed");
	after = now_ms();
	t = time_part(ids[0] + 4);
	T_OK(t >= 0 && (uint64_t)t >= before && (uint64_t)t <= after,
	    "time part %lld of %s outside [%llu, %llu]", (long long)t, ids[0],
	    (unsigned long long)before, (unsigned long long)after);
	for (i = 1; i < 3; i++) {
		struct timespec pause = { 0, 3 * 1000 * 1000 };
		nanosleep(&pause, NULL);
		T_OK(ev_public_id("prf_", ids[i]) == 0, "ev_public_id failed");
		T_OK(strcmp(ids[i - 1], ids[i]) < 0, "%s made 3 ms after %s sorts"
		    " before it", ids[i], ids[i - 1]);
		T_OK(time_part(ids[i] + 4) - time_part(ids[i - 1] + 4) >= 3,
		    "time parts %s and %s less than 3 ms apart", ids[i - 1],
		    ids[i]);
	}
	/* the same millisecond: the random part still differs */
	T_OK(ev_public_id("evt_", ids[0]) == 0 && ev_public_id("evt_", ids[1]) == 0 &&
	    strcmp(ids[0] + 14, ids[1] + 14) != 0, "random parts equal: %s %s",
	    ids[0], ids[1]);
}

/* ---- base 32 ---- */

struct bcase {
	int line;
	int c;
	int want;     /* value, or -1 */
};

static const struct bcase bcases[] = {
	{ __LINE__, '0', 0 },
	{ __LINE__, '9', 9 },
	{ __LINE__, 'a', 10 },
	{ __LINE__, 'h', 17 },
	{ __LINE__, 'j', 18 },    /* after the missing i */
	{ __LINE__, 'k', 19 },
	{ __LINE__, 'm', 20 },    /* after the missing l */
	{ __LINE__, 'n', 21 },
	{ __LINE__, 'p', 22 },    /* after the missing o */
	{ __LINE__, 't', 26 },
	{ __LINE__, 'v', 27 },    /* after the missing u */
	{ __LINE__, 'z', 31 },
	{ __LINE__, 'i', -1 },
	{ __LINE__, 'l', -1 },
	{ __LINE__, 'o', -1 },
	{ __LINE__, 'u', -1 },
	{ __LINE__, 'A', -1 },    /* case matters */
	{ __LINE__, 'Z', -1 },
	{ __LINE__, 'H', -1 },
	{ __LINE__, '\0', -1 },   /* the terminator is no symbol */
	{ __LINE__, '_', -1 },
	{ __LINE__, '-', -1 },
	{ __LINE__, ' ', -1 },
	{ __LINE__, '/', -1 },    /* neighbours of the ranges */
	{ __LINE__, ':', -1 },
	{ __LINE__, '`', -1 },
	{ __LINE__, '{', -1 },
	{ __LINE__, 0x80, -1 },
	{ __LINE__, 0xE0, -1 },   /* 'a' | 0x80 */
	{ __LINE__, 0xFF, -1 },
	{ __LINE__, -1, -1 },     /* EOF */
	{ __LINE__, 256 + '0', -1 },
};

/* The alphabet as the ids and keys use it, and ev_b32_value. */
static void
run_b32(void)
{
	size_t i;
	int    c, v, n = 0, bad = 0;

	T_OK(sizeof(ev_b32_alphabet) == 33 && strlen(ev_b32_alphabet) == 32,
	    "alphabet length %zu", strlen(ev_b32_alphabet));
	T_OK(strcmp(ev_b32_alphabet, alphabet) == 0, "alphabet %s",
	    ev_b32_alphabet);
	for (i = 0; i < NROWS(bcases); i++) {
		v = ev_b32_value(bcases[i].c);
		T_CHECK(bcases[i].line, v == bcases[i].want, "'%c' (%d): %d, want %d",
		    bcases[i].c > 0x20 && bcases[i].c < 0x7F ? bcases[i].c : '?',
		    bcases[i].c, v, bcases[i].want);
	}
	/* Round trip of the encoding: byte b becomes symbol b & 31 (ids) or
	 * b % 32 (keys), which decodes back to those 5 bits. */
	for (c = 0; c < 256; c++)
		if ((c & 31) != c % 32 ||
		    ev_b32_value((unsigned char)ev_b32_alphabet[c & 31]) != (c & 31))
			bad++;
	T_OK(bad == 0, "%d bytes do not round-trip", bad);
	/* Exactly the 32 symbols are accepted, and each is distinct. */
	for (c = 0; c < 256; c++) {
		v = ev_b32_value(c);
		if (v >= 0) {
			n++;
			if (ev_b32_alphabet[v] != c)
				bad++;
		}
	}
	T_OK(n == 32 && bad == 0, "%d symbols accepted, %d mismatched", n, bad);
}

struct kcase {
	int         line;
	const char *authz;
};

/*
 * Malformed keys are refused by ev_key_check() before it looks anything up
 * (the database handle is NULL here): "rfe_" + 8 + "_" + 40 base-32.
 * A well-formed key would go to the database, so none is listed.
 */
#define K8  "abcd0123"
#define K40 "0123456789abcdefghjkmnpqrstvwxyz01234567"
static const struct kcase kcases[] = {
	{ __LINE__, "Bearer rfe_" "abcd012i" "_" K40 },   /* i in the prefix */
	{ __LINE__, "Bearer rfe_" "Abcd0123" "_" K40 },   /* upper case */
	{ __LINE__, "Bearer rfe_" K8 "_" "l123456789abcdefghjkmnpqrstvwxyz01234567" },
	{ __LINE__, "Bearer rfe_" K8 "_" "0123456789abcdefghjkmnpqrstvwxyz0123456o" },
	{ __LINE__, "Bearer rfe_" K8 "_" "0123456789abcdefghjkmnpqrstvwxyz012345u7" },
	{ __LINE__, "Bearer rfe_" K8 "_" "0123456789ABCDEFGHJKMNPQRSTVWXYZ01234567" },
	{ __LINE__, "Bearer rfe_" K8 "_" "0123456789abcdefghjkmnpqrstvwxyz0123456_" },
	{ __LINE__, "Bearer rfe_" K8 "_" "0123456789abcdefghjkmnpqrstvwxyz0123456\x80" },
	{ __LINE__, "Bearer rfe_" K8 "-" K40 },           /* separator */
	{ __LINE__, "Bearer rfe_" K8 "a" K40 },           /* separator */
	{ __LINE__, "Bearer rfe_" K8 "_" K40 "0" },       /* one too long */
	{ __LINE__, "Bearer rfe_" K8 "_" "0123456789abcdefghjkmnpqrstvwxyz0123456" },
	{ __LINE__, "Bearer rfx_" K8 "_" K40 },
	{ __LINE__, "Bearer " },
	{ __LINE__, "Basic rfe_" K8 "_" K40 },
	{ __LINE__, NULL },
};

static void
run_key_format(void)
{
	struct ev_key k;
	size_t        i;
	enum ev_err   e;

	for (i = 0; i < NROWS(kcases); i++) {
		e = ev_key_check(NULL, kcases[i].authz, &k, 0);
		T_CHECK(kcases[i].line, e == EV_UNAUTHORIZED, "got %s",
		    ev_err_code(e));
		ev_key_clear(&k);
	}
}

static void
run_random(void)
{
	unsigned char a[64], b[64], z[64] = { 0 };

	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	T_OK(ev_random(a, sizeof(a)) == 0, "ev_random failed");
	T_OK(ev_random(b, sizeof(b)) == 0, "ev_random failed");
	T_OK(memcmp(a, z, sizeof(a)) != 0, "all zero");
	T_OK(memcmp(a, b, sizeof(a)) != 0, "two draws equal");
	T_OK(ev_random(a, 0) == 0, "n = 0 fails");
}

/* ev_random_pool(): distinct draws across several refills of the pool,
 * the large-request path, and a forked child that does not repeat its
 * parent's next bytes (the pool's page is wiped in the child). */
static void
run_random_pool(void)
{
	enum { N = 1000, W = 22 };
	static unsigned char d[N][W];
	unsigned char        z[W] = { 0 }, big[3000], mine[16], theirs[16];
	size_t               i, j, same = 0, zero = 0, failed = 0;
	int                  fds[2], status = 0;
	pid_t                pid;

	for (i = 0; i < N; i++)
		failed += ev_random_pool(d[i], W) != 0;
	T_OK(failed == 0, "%zu of %d draws failed", failed, N);
	for (i = 0; i < N; i++) {
		zero += memcmp(d[i], z, W) == 0;
		for (j = i + 1; j < N; j++)
			same += memcmp(d[i], d[j], W) == 0;
	}
	T_OK(zero == 0 && same == 0, "%zu of %d draws all zero, %zu pairs equal",
	    zero, N, same);
	memset(big, 0, sizeof(big));
	T_OK(ev_random_pool(big, sizeof(big)) == 0 &&
	    memcmp(big + sizeof(big) - W, z, W) != 0, "a draw of 3000 bytes");

	T_OK(pipe(fds) == 0, "pipe");
	fflush(NULL);
	if ((pid = fork()) == 0) {
		unsigned char c[16];
		close(fds[0]);
		_exit(ev_random_pool(c, sizeof(c)) == 0 &&
		    write(fds[1], c, sizeof(c)) == (ssize_t)sizeof(c) ? 0 : 1);
	}
	close(fds[1]);
	T_OK(pid > 0, "fork");
	memset(theirs, 0, sizeof(theirs));
	T_OK(ev_random_pool(mine, sizeof(mine)) == 0, "parent's draw");
	T_OK(read(fds[0], theirs, sizeof(theirs)) == (ssize_t)sizeof(theirs),
	    "the child's draw did not arrive");
	close(fds[0]);
	if (pid > 0)
		waitpid(pid, &status, 0);
	T_OK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
	T_OK(memcmp(mine, theirs, sizeof(mine)) != 0,
	    "parent and forked child drew the same bytes");
}

struct hcase {
	int         line;
	const char *in;
	size_t      len;
	const char *hex;
};

static const struct hcase hcases[] = {
	{ __LINE__, "", 0,
	  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
	{ __LINE__, "abc", 3,
	  "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
	{ __LINE__, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
	  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
	{ __LINE__, "a\0b", 3, NULL },   /* differs from "a" */
};

static void
run_sha256(void)
{
	char   out[65], other[65];
	size_t i;

	for (i = 0; i < sizeof(hcases) / sizeof(hcases[0]); i++) {
		const struct hcase *c = &hcases[i];

		memset(out, 'X', sizeof(out));
		ev_sha256_hex(c->in, c->len, out);
		T_CHECK(c->line, strlen(out) == 64 &&
		    strspn(out, "0123456789abcdef") == 64, "format %s", out);
		if (c->hex != NULL)
			T_CHECK(c->line, strcmp(out, c->hex) == 0, "got %s", out);
		else {
			ev_sha256_hex("a", 1, other);
			T_CHECK(c->line, strcmp(out, other) != 0,
			    "length ignored");
		}
	}
	/* One million 'a' (FIPS 180-2 appendix B.3). */
	{
		char *m = malloc(1000000);

		memset(m, 'a', 1000000);
		ev_sha256_hex(m, 1000000, out);
		T_OK(strcmp(out, "cdc76e5c9914fb9281a1c7e284d73e67"
		    "f1809a48a497200e046d39ccc7112cd0") == 0, "1M a: %s", out);
		free(m);
	}
}

struct ccase {
	int         line;
	const char *a, *b;
	size_t      n;
	int         want;
};

static const struct ccase ccases[] = {
	{ __LINE__, "abc", "abc", 3, 1 },
	{ __LINE__, "abc", "abd", 3, 0 },
	{ __LINE__, "abc", "xbc", 3, 0 },
	{ __LINE__, "abc", "abd", 2, 1 },
	{ __LINE__, "", "", 0, 1 },
	{ __LINE__, "x", "y", 0, 1 },
	{ __LINE__, "a\0c", "a\0d", 3, 0 },
	{ __LINE__, "a\0c", "a\0c", 3, 1 },
	{ __LINE__, "\x80", "\x00", 1, 0 },
	{ __LINE__, "\xff\xff", "\xff\xfe", 2, 0 },
};

static void
run_ct_equal(void)
{
	size_t i;
	int    r;

	for (i = 0; i < sizeof(ccases) / sizeof(ccases[0]); i++) {
		r = ev_ct_equal(ccases[i].a, ccases[i].b, ccases[i].n);
		T_CHECK(ccases[i].line, r == ccases[i].want, "got %d", r);
	}
}

/* ---- UTF-8 ---- */

struct ucase {
	int         line;
	const char *s;
	size_t      n;
	size_t      want;      /* length, or 0: not well formed */
	unsigned    cp;        /* when want > 0 */
};

#define U(lit) lit, sizeof(lit) - 1

static const struct ucase ucases[] = {
	/* 1 byte */
	{ __LINE__, U("A"), 1, 0x41 },
	{ __LINE__, "\0", 1, 1, 0 },              /* U+0000: callers decide */
	{ __LINE__, U("\x7f"), 1, 0x7F },
	{ __LINE__, U("a\x80"), 1, 'a' },         /* only the first one */
	/* 2 bytes */
	{ __LINE__, U("\xc2\x80"), 2, 0x80 },
	{ __LINE__, U("\xc3\xa9"), 2, 0xE9 },
	{ __LINE__, U("\xdf\xbf"), 2, 0x7FF },
	{ __LINE__, U("\xc3\xa9\xff"), 2, 0xE9 },
	/* 3 bytes */
	{ __LINE__, U("\xe0\xa0\x80"), 3, 0x800 },
	{ __LINE__, U("\xe2\x82\xac"), 3, 0x20AC },
	{ __LINE__, U("\xed\x9f\xbf"), 3, 0xD7FF },   /* below the surrogates */
	{ __LINE__, U("\xee\x80\x80"), 3, 0xE000 },   /* above them */
	{ __LINE__, U("\xef\xbb\xbf"), 3, 0xFEFF },   /* BOM: well formed */
	{ __LINE__, U("\xef\xbf\xbf"), 3, 0xFFFF },
	/* 4 bytes */
	{ __LINE__, U("\xf0\x90\x80\x80"), 4, 0x10000 },
	{ __LINE__, U("\xf0\x9f\x98\x80"), 4, 0x1F600 },
	{ __LINE__, U("\xf3\xbf\xbf\xbf"), 4, 0xFFFFF },
	{ __LINE__, U("\xf4\x80\x80\x80"), 4, 0x100000 },
	{ __LINE__, U("\xf4\x8f\xbf\xbf"), 4, 0x10FFFF },
	/* overlongs */
	{ __LINE__, U("\xc0\x80"), 0, 0 },
	{ __LINE__, U("\xc0\xaf"), 0, 0 },
	{ __LINE__, U("\xc1\xbf"), 0, 0 },
	{ __LINE__, U("\xe0\x80\x80"), 0, 0 },
	{ __LINE__, U("\xe0\x80\xaf"), 0, 0 },
	{ __LINE__, U("\xe0\x9f\xbf"), 0, 0 },
	{ __LINE__, U("\xf0\x80\x80\x80"), 0, 0 },
	{ __LINE__, U("\xf0\x80\x80\xaf"), 0, 0 },
	{ __LINE__, U("\xf0\x8f\xbf\xbf"), 0, 0 },
	/* surrogates D800-DFFF */
	{ __LINE__, U("\xed\xa0\x80"), 0, 0 },
	{ __LINE__, U("\xed\xad\xbf"), 0, 0 },
	{ __LINE__, U("\xed\xae\x80"), 0, 0 },
	{ __LINE__, U("\xed\xaf\xbf"), 0, 0 },
	{ __LINE__, U("\xed\xb0\x80"), 0, 0 },
	{ __LINE__, U("\xed\xbf\xbf"), 0, 0 },
	{ __LINE__, U("\xed\xa0\x80\xed\xb0\x80"), 0, 0 },   /* CESU pair */
	/* above U+10FFFF */
	{ __LINE__, U("\xf4\x90\x80\x80"), 0, 0 },
	{ __LINE__, U("\xf4\xbf\xbf\xbf"), 0, 0 },
	/* lead bytes F5-FF */
	{ __LINE__, U("\xf5\x80\x80\x80"), 0, 0 },
	{ __LINE__, U("\xf7\xbf\xbf\xbf"), 0, 0 },
	{ __LINE__, U("\xf8\x88\x80\x80\x80"), 0, 0 },
	{ __LINE__, U("\xfb\xbf\xbf\xbf\xbf"), 0, 0 },
	{ __LINE__, U("\xfc\x84\x80\x80\x80\x80"), 0, 0 },
	{ __LINE__, U("\xfd\xbf\xbf\xbf\xbf\xbf"), 0, 0 },
	{ __LINE__, U("\xfe"), 0, 0 },
	{ __LINE__, U("\xff"), 0, 0 },
	/* lone continuation bytes */
	{ __LINE__, U("\x80"), 0, 0 },
	{ __LINE__, U("\xbf"), 0, 0 },
	{ __LINE__, U("\x80\x80"), 0, 0 },
	{ __LINE__, U("\xbf\x41"), 0, 0 },
	/* a continuation byte out of range */
	{ __LINE__, U("\xc3\x28"), 0, 0 },
	{ __LINE__, U("\xc3\xc0"), 0, 0 },
	{ __LINE__, U("\xe2\x28\xa1"), 0, 0 },
	{ __LINE__, U("\xe2\x82\x28"), 0, 0 },
	{ __LINE__, U("\xe2\x82\xc0"), 0, 0 },
	{ __LINE__, U("\xf0\x28\x8c\xbc"), 0, 0 },
	{ __LINE__, U("\xf0\x90\x28\xbc"), 0, 0 },
	{ __LINE__, U("\xf0\x90\x8c\x28"), 0, 0 },
	{ __LINE__, U("\xf4\x8f\xbf\xc0"), 0, 0 },
	/* truncated at the end of the buffer */
	{ __LINE__, "A", 0, 0, 0 },               /* n == 0: nothing read */
	{ __LINE__, U("\xc3"), 0, 0 },
	{ __LINE__, U("\xe2"), 0, 0 },
	{ __LINE__, U("\xe2\x82"), 0, 0 },
	{ __LINE__, U("\xed\x9f"), 0, 0 },
	{ __LINE__, U("\xf0"), 0, 0 },
	{ __LINE__, U("\xf0\x9f"), 0, 0 },
	{ __LINE__, U("\xf0\x9f\x98"), 0, 0 },
	{ __LINE__, U("\xf4\x8f\xbf"), 0, 0 },
	/* n shorter than what follows in memory: only n bytes count */
	{ __LINE__, "\xc3\xa9", 1, 0, 0 },
	{ __LINE__, "\xe2\x82\xac", 2, 0, 0 },
	{ __LINE__, "\xf0\x9f\x98\x80", 3, 0, 0 },
};

/*
 * Reference encoder for the exhaustive check (cp a scalar value): the
 * continuation bytes from the end, 6 bits each, then the lead byte.
 */
static size_t
enc_utf8(unsigned cp, unsigned char out[4])
{
	static const unsigned char lead[5] = { 0, 0x00, 0xC0, 0xE0, 0xF0 };
	size_t n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4, i;

	for (i = n - 1; i > 0; i--, cp >>= 6)
		out[i] = (unsigned char)(0x80 | (cp & 0x3F));
	out[0] = (unsigned char)(lead[n] | cp);
	return n;
}

static void
run_utf8(void)
{
	unsigned char *buf, b[4];
	unsigned       cp, c, x;
	size_t         i, k, n;
	int            bad = 0, ok2 = 0;

	for (i = 0; i < NROWS(ucases); i++) {
		const struct ucase *u = &ucases[i];

		/* A heap copy of exactly n bytes: reading past it is an
		 * error under ASan (n == 0: one byte, "A", not to be read). */
		buf = malloc(u->n ? u->n : 1);
		memcpy(buf, u->s, u->n ? u->n : 1);
		cp = 0xDEADBEEF;
		k = ev_utf8_decode(buf, u->n, &cp);
		T_CHECK(u->line, k == u->want, "length %zu, want %zu", k, u->want);
		if (u->want > 0)
			T_CHECK(u->line, cp == u->cp, "U+%04X, want U+%04X", cp,
			    u->cp);
		else
			T_CHECK(u->line, cp == 0xDEADBEEF, "*cp set on failure");
		free(buf);
	}
	/* Every lead byte F5-FF and 80-C1, whatever follows. */
	for (c = 0x80; c <= 0xFF; c++) {
		if (c >= 0xC2 && c <= 0xF4)
			continue;
		b[0] = (unsigned char)c;
		b[1] = b[2] = b[3] = 0x80;
		for (n = 1; n <= 4; n++)
			if (ev_utf8_decode(b, n, &cp) != 0)
				bad++;
	}
	T_OK(bad == 0, "%d bad lead bytes accepted", bad);
	/* Every scalar value encodes and decodes back, every surrogate's
	 * 3-byte form is refused, and so is every proper prefix. */
	bad = 0;
	for (x = 0; x <= 0x10FFFF; x++) {
		n = enc_utf8(x, b);
		k = ev_utf8_decode(b, n, &cp);
		if (x >= 0xD800 && x <= 0xDFFF) {
			if (k != 0)
				bad++;
		} else if (k != n || cp != x)
			bad++;
		for (i = 1; i < n; i++)
			if (ev_utf8_decode(b, i, &cp) != 0)
				bad++;
	}
	T_OK(bad == 0, "%d code points wrong", bad);
	/* All 65536 two-byte inputs: exactly C2-DF then 80-BF, and the
	 * ASCII leads, decode. */
	bad = 0;
	for (x = 0; x < 0x10000; x++) {
		b[0] = (unsigned char)(x >> 8);
		b[1] = (unsigned char)x;
		k = ev_utf8_decode(b, 2, &cp);
		if (b[0] < 0x80)
			bad += k != 1 || cp != b[0];
		else if (b[0] >= 0xC2 && b[0] <= 0xDF && b[1] >= 0x80 &&
		    b[1] <= 0xBF) {
			bad += k != 2 || cp != ((b[0] & 0x1Fu) << 6 | (b[1] & 0x3Fu));
			ok2++;
		} else
			bad += k != 0;
	}
	T_OK(bad == 0 && ok2 == 30 * 64, "%d of the 2-byte inputs wrong (%d)",
	    bad, ok2);
}

/* ---- struct ev_buf ---- */

struct jcase {
	int         line;
	const char *in;         /* NULL: null */
	const char *want;
};

/* Escapes written from RFC 8259 section 7 and json-c's choices: the short
 * forms for \b \f \n \r \t, \u00XX (lower-case hex) for the other
 * control characters, '/' and DEL and UTF-8 as they are. */
static const struct jcase jcases[] = {
	{ __LINE__, "", "\"\"" },
	{ __LINE__, NULL, "null" },
	{ __LINE__, "points", "\"points\"" },
	{ __LINE__, "a\"b", "\"a\\\"b\"" },
	{ __LINE__, "back\\slash", "\"back\\\\slash\"" },
	{ __LINE__, "a/b", "\"a/b\"" },
	{ __LINE__, "\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\"" },
	{ __LINE__, "\x01", "\"\\u0001\"" },
	{ __LINE__, "x\x1fy", "\"x\\u001fy\"" },
	{ __LINE__, "\x0b", "\"\\u000b\"" },
	{ __LINE__, "\x7f", "\"\x7f\"" },
	{ __LINE__, "caf\xc3\xa9 \xf0\x9f\x98\x80", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"" },
	{ __LINE__, "\"\"", "\"\\\"\\\"\"" },
};

struct icase {
	int         line;
	int64_t     v;
	const char *want;
};

static const struct icase icases[] = {
	{ __LINE__, 0, "0" },
	{ __LINE__, 7, "7" },
	{ __LINE__, -1, "-1" },
	{ __LINE__, 1234567890, "1234567890" },
	{ __LINE__, -1000, "-1000" },
	{ __LINE__, INT64_MAX, "9223372036854775807" },
	{ __LINE__, INT64_MIN, "-9223372036854775808" },
};

/* s as json-c writes it (JSON_C_TO_STRING_PLAIN | NOSLASHESCAPE). */
static int
same_as_json_c(const char *s, size_t len)
{
	json_object  *o = json_object_new_string_len(s, (int)len);
	struct ev_buf b = { NULL, 0, 0 };
	int           same;

	ev_buf_json_str(&b, s);
	same = strcmp(b.p, json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)) == 0;
	json_object_put(o);
	free(b.p);
	return same;
}

/* JSON texts whose json-c tree ev_buf_json() must write as json-c does:
 * every type, nesting, key order as given, numbers with their text. */
static const struct {
	int         line;
	const char *in;
} vcases[] = {
	{ __LINE__, "{}" },
	{ __LINE__, "[]" },
	{ __LINE__, "[null,true,false]" },
	{ __LINE__, "{\"b\":1,\"a\":2}" },
	{ __LINE__, "{\"z\":{\"y\":{\"x\":[1,[2,[3,{}]]]}}}" },
	{ __LINE__, "[0,-0,1.50,-12.3e+10,1E-7,123456789012345678901234567890]" },
	{ __LINE__, "{\"s\":\"tab\\there \\\"q\\\" \\\\ / \\u0001 \\u00e9 \\ud83d\\ude00\"}" },
	{ __LINE__, "{\"\\u00e9t\\u00e9\":\"\\u2028\\u2029\",\"\":\"\"}" },
	{ __LINE__, "{\"amount\":120.50,\"items\":[{\"sku\":\"A-1\",\"qty\":2}],\"gift\":false,\"note\":null}" },
	{ __LINE__, "\"a lone string\"" },
	{ __LINE__, "42.000" },
};

static void
run_buf_value(void)
{
	struct json_perr e;
	size_t           i;

	for (i = 0; i < NROWS(vcases); i++) {
		json_object  *o = json_parse_strict(vcases[i].in, strlen(vcases[i].in),
		    JSON_MAX_DEPTH, &e);
		struct ev_buf w = { NULL, 0, 0 };
		const char   *want;

		T_CHECK(vcases[i].line, o != NULL, "does not parse: %s", vcases[i].in);
		if (o == NULL)
			continue;
		want = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
		    JSON_C_TO_STRING_NOSLASHESCAPE);
		ev_buf_json(&w, o);
		T_CHECK(vcases[i].line, strcmp(w.p, want) == 0 && w.len == strlen(want),
		    "wrote %s, json-c %s", w.p, want);
		free(w.p);
		json_object_put(o);
	}
	{
		/* NULL is null; a string with U+0000 keeps it, escaped */
		struct ev_buf w = { NULL, 0, 0 };
		ev_buf_json(&w, NULL);
		ev_buf_put(&w, " ", 1);
		ev_buf_json_strn(&w, "a\0b\x01", 4);
		T_OK(strcmp(w.p, "null \"a\\u0000b\\u0001\"") == 0, "got %s", w.p);
		free(w.p);
	}
}

/* ev_json_plain() against a byte-by-byte reading: every byte value at
 * every position of strings up to 24 bytes (the 8-byte steps and the
 * tail), after plain bytes of both halves (ASCII, UTF-8). */
static void
run_json_plain(void)
{
	char   s[24];
	size_t len, pos, bad = 0, checks = 0;
	int    c, fill;

	for (fill = 0; fill < 2; fill++)
		for (len = 0; len <= sizeof(s); len++)
			for (pos = 0; pos < (len ? len : 1); pos++)
				for (c = 0; c < 256; c++) {
					size_t want, i;
					memset(s, fill ? 0xc3 : 'a', sizeof(s));
					if (len > 0)
						s[pos] = (char)c;
					for (want = 0; want < len; want++) {
						unsigned char u = (unsigned char)s[want];
						if (u < 0x20 || u == '"' || u == '\\')
							break;
					}
					i = ev_json_plain(s, len);
					bad += i != want;
					checks++;
				}
	T_OK(bad == 0 && checks > 100000, "ev_json_plain: %zu of %zu wrong", bad, checks);
	{
		/* escapes after long plain runs, as json-c writes them */
		char  buf[64];
		size_t k, wrong = 0;
		for (k = 0; k < 40; k++) {
			memset(buf, 'x', sizeof(buf));
			buf[k] = '"';
			buf[k + 9] = '\n';
			buf[k + 17] = '\\';
			buf[k + 23] = 0x1f;
			buf[63] = '\0';
			wrong += !same_as_json_c(buf, 63);
		}
		T_OK(wrong == 0, "%zu strings with escapes after plain runs unlike json-c", wrong);
	}
}

static void
run_buf(void)
{
	struct ev_buf b = { NULL, 0, 0 };
	const char   *env = getenv("RFEVENTS_TESTDATA");
	char          path[1024], one[2] = { 0, 0 };
	json_object  *arr;
	size_t        i, n, bad = 0;

	for (i = 0; i < NROWS(jcases); i++) {
		b.len = 0;
		ev_buf_json_str(&b, jcases[i].in);
		T_CHECK(jcases[i].line, strcmp(b.p, jcases[i].want) == 0 &&
		    b.len == strlen(jcases[i].want), "got %s, want %s", b.p,
		    jcases[i].want);
	}
	for (i = 0; i < NROWS(icases); i++) {
		b.len = 0;
		ev_buf_i64(&b, icases[i].v);
		T_CHECK(icases[i].line, strcmp(b.p, icases[i].want) == 0,
		    "got %s, want %s", b.p, icases[i].want);
	}
	/* every single byte, as json-c escapes it */
	for (i = 1; i < 256; i++) {
		one[0] = (char)i;
		bad += !same_as_json_c(one, 1);
	}
	T_OK(bad == 0, "%zu single bytes escaped unlike json-c", bad);
	/* growth past many doublings keeps every byte */
	b.len = 0;
	for (i = 0; i < 100000; i++)
		ev_buf_put(&b, i % 2 ? "ab" : "c", i % 2 ? 2 : 1);
	T_OK(b.len == 150000 && strlen(b.p) == 150000 && b.cap > b.len &&
	    memcmp(b.p, "cabcab", 6) == 0 && strcmp(b.p + b.len - 3, "cab") == 0,
	    "after 100000 appends: length %zu", b.len);
	free(b.p);
	/* the Big List of Naughty Strings */
	snprintf(path, sizeof(path), "%s/naughty-strings/blns.json",
	    env ? env : "../shared/testdata");
	arr = json_object_from_file(path);
	T_OK(arr != NULL && json_object_is_type(arr, json_type_array) &&
	    json_object_array_length(arr) > 400, "cannot read %s", path);
	if (arr == NULL)
		return;
	n = json_object_array_length(arr);
	for (i = 0, bad = 0; i < n; i++) {
		json_object *v = json_object_array_get_idx(arr, i);
		const char  *s = json_object_get_string(v);
		/* strings with a NUL are cut there, as C strings */
		bad += !same_as_json_c(s, strlen(s));
	}
	T_OK(bad == 0, "%zu of %zu naughty strings escaped unlike json-c", bad, n);
	json_object_put(arr);
}

int
main(void)
{
	t_file = "test_util";
	run_buf();
	run_buf_value();
	run_json_plain();
	run_public_id_format();
	run_public_id_unique();
	run_public_id_time();
	run_b32();
	run_key_format();
	run_random();
	run_random_pool();
	run_sha256();
	run_ct_equal();
	run_utf8();
	return t_done();
}
