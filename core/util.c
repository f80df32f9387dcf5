/*
 * core/util.c — random bytes, public ids, SHA-256 and constant-time
 * comparison (OpenSSL libcrypto and the kernel's getrandom()).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/core.h"

/* Random part of a public id: 22 characters of 5 bits each (110 bits). */
#define PUBLIC_ID_CHARS 22

/* Crockford-like base 32: digits and lower-case letters without i, l, o, u. */
static const char b32[32] = "0123456789abcdefghjkmnpqrstvwxyz";

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
 * See core.h. Each character takes the low 5 bits of one random byte
 * (256 is a multiple of 32, so every character is uniform).
 * Returns 0, or -1 when prefix is NULL or too long (more than
 * 32 - 22 - 1 = 9 bytes) or no randomness is available (out is then "").
 */
int
ev_public_id(const char *prefix, char out[32])
{
	unsigned char rnd[PUBLIC_ID_CHARS];
	size_t        plen, i;

	out[0] = '\0';
	if (prefix == NULL)
		return -1;
	plen = strlen(prefix);
	if (plen > 32 - 1 - PUBLIC_ID_CHARS)
		return -1;
	if (ev_random(rnd, sizeof(rnd)) != 0)
		return -1;
	memcpy(out, prefix, plen);
	for (i = 0; i < PUBLIC_ID_CHARS; i++)
		out[plen + i] = b32[rnd[i] & 31];
	out[plen + PUBLIC_ID_CHARS] = '\0';
	return 0;
}

/*
 * See core.h. EVP_Digest only fails when out of memory, which (like
 * xmalloc) logs and aborts.
 */
void
ev_sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char     md[EVP_MAX_MD_SIZE];
	unsigned int      mdlen = 0, i;

	if (data == NULL)
		data = "";
	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != 32) {
		fputs("rfevents: SHA-256 failed\n", stderr);
		abort();
	}
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
