/*
 * Unit tests for core/util.c: ev_random, ev_public_id (format and
 * uniqueness), ev_sha256_hex (FIPS 180-2 / NIST vectors), ev_ct_equal.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "tests/unit/t.h"

#define NIDS 1000

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

/* 1000 ids: all well formed, all distinct, every character used. */
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
		for (j = 4; ids[i][j] != '\0'; j++)
			seen[(unsigned char)ids[i][j]]++;
	}
	T_OK(bad == 0, "%d malformed ids", bad);
	qsort(ids, NIDS, sizeof(ids[0]), cmp_str);
	for (i = 1; i < NIDS; i++)
		if (strcmp(ids[i - 1], ids[i]) == 0)
			dups++;
	T_OK(dups == 0, "%d duplicate ids", dups);
	/* 22000 characters over 32 symbols: each appears (~687 expected). */
	for (i = 0; alphabet[i] != '\0'; i++)
		if (seen[(unsigned char)alphabet[i]] < 300)
			unused++;
	T_OK(unused == 0, "%d symbols (almost) never used", unused);
	T_OK(seen['i'] == 0 && seen['l'] == 0 && seen['o'] == 0 &&
	    seen['u'] == 0, "excluded letters used");
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

int
main(void)
{
	t_file = "test_util";
	run_public_id_format();
	run_public_id_unique();
	run_random();
	run_sha256();
	run_ct_equal();
	return t_done();
}
