/*
 * API keys (API.md §1). A key looks like "rfe_" + 8 prefix characters + "_"
 * + 40 secret characters, all base-32. Only its SHA-256 digest is stored,
 * found by the prefix (not secret: `key list` shows it) and compared in
 * constant time. Successful look-ups are cached per process for at most one
 * second, so a revocation takes effect everywhere within two.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "db/db.h"
#include "core/core.h"

#define KEY_PREFIX_LEN  12    /* "rfe_" + 8 */
#define KEY_LEN         (KEY_PREFIX_LEN + 1 + 40)
#define KEY_CACHE_US    1000000LL
#define KEY_CACHE_SLOTS 16

const char *const ev_scope_name[EV_SCOPE__MAX] = {
	"events:write",     /* EV_SCOPE_EVENTS_WRITE */
	"events:read",      /* EV_SCOPE_EVENTS_READ */
	"profiles:read",    /* EV_SCOPE_PROFILES_READ */
	"admin",            /* EV_SCOPE_ADMIN */
};

/* One cached verification: digest of the key, the row it matched, when. */
struct key_cache {
	unsigned char  digest[32];
	int64_t        at_us;
	int64_t        tenant_id;
	char           tenant[65];
	char           key_id[32];
	char          *scopes;
	char          *sources;      /* NULL: all sources */
};
static struct key_cache cache[KEY_CACHE_SLOTS];

void
ev_key_clear(struct ev_key *k)
{
	if (k == NULL)
		return;
	free(k->sources_buf);
	memset(k, 0, sizeof(*k));
}

int
ev_key_has_scope(const struct ev_key *k, enum ev_scope s)
{
	return (k->scopes & (1u << EV_SCOPE_ADMIN)) || (k->scopes & (1u << s));
}

int
ev_key_allows_source(const struct ev_key *k, const char *source)
{
	size_t i;

	if (k->all_sources)
		return 1;
	for (i = 0; i < k->nsources; i++)
		if (strcmp(k->sources[i], source) == 0)
			return 1;
	return 0;
}

/* Parse a comma-separated scope list into bits; -1 on an unknown scope. */
static int
parse_scopes(const char *s, unsigned *bits)
{
	const char *p = s;

	*bits = 0;
	while (*p != '\0') {
		const char *e = strchr(p, ',');
		size_t      n = e ? (size_t)(e - p) : strlen(p), i;
		for (i = 0; i < EV_SCOPE__MAX; i++)
			if (strlen(ev_scope_name[i]) == n &&
			    strncmp(ev_scope_name[i], p, n) == 0)
				break;
		if (i == EV_SCOPE__MAX)
			return -1;
		*bits |= 1u << i;
		if (e == NULL)
			break;
		p = e + 1;
	}
	return 0;
}

/* Fill k from the cached or fetched key row. Returns EV_OK or EV_INTERNAL. */
static enum ev_err
key_fill(struct ev_key *k, const struct key_cache *c)
{
	char *p;

	memset(k, 0, sizeof(*k));
	k->tenant_id = c->tenant_id;
	snprintf(k->tenant, sizeof(k->tenant), "%s", c->tenant);
	snprintf(k->key_id, sizeof(k->key_id), "%s", c->key_id);
	if (parse_scopes(c->scopes, &k->scopes) != 0)
		k->scopes = 0;       /* an unknown scope grants nothing */
	if (c->sources == NULL || c->sources[0] == '\0') {
		k->all_sources = 1;
		return EV_OK;
	}
	if ((k->sources_buf = strdup(c->sources)) == NULL)
		return EV_INTERNAL;
	for (p = k->sources_buf; p != NULL && k->nsources < EV_KEY_MAX_SOURCES;) {
		char *e = strchr(p, ',');
		if (e != NULL)
			*e++ = '\0';
		if (*p != '\0')
			k->sources[k->nsources++] = p;
		p = e;
	}
	return EV_OK;
}

static void
cache_entry_clear(struct key_cache *c)
{
	free(c->scopes);
	free(c->sources);
	memset(c, 0, sizeof(*c));
}

enum ev_err
ev_key_check(struct db *db, const char *authz, struct ev_key *k, int64_t now_us)
{
	const char      *key;
	size_t           len, i;
	unsigned char    digest[32];
	struct db_param  p;
	struct db_res    r;
	enum db_rc       rc;
	struct key_cache *slot;
	enum ev_err      ret = EV_UNAUTHORIZED;

	memset(k, 0, sizeof(*k));
	if (authz == NULL)
		return EV_UNAUTHORIZED;
	if (strncasecmp(authz, "Bearer", 6) != 0 || (authz[6] != ' ' && authz[6] != '\t'))
		return EV_UNAUTHORIZED;
	key = authz + 6;
	while (*key == ' ' || *key == '\t')
		key++;
	len = strlen(key);
	while (len > 0 && (key[len - 1] == ' ' || key[len - 1] == '\t'))
		len--;
	if (len != KEY_LEN || strncmp(key, "rfe_", 4) != 0)
		return EV_UNAUTHORIZED;
	for (i = 4; i < len; i++)
		if (i != KEY_PREFIX_LEN &&
		    ev_b32_value((unsigned char)key[i]) < 0)
			return EV_UNAUTHORIZED;
	if (key[KEY_PREFIX_LEN] != '_')
		return EV_UNAUTHORIZED;

	ev_sha256(key, len, digest);

	/* a fresh cache hit skips the database */
	slot = &cache[digest[0] % KEY_CACHE_SLOTS];
	if (slot->scopes != NULL && now_us - slot->at_us < KEY_CACHE_US &&
	    now_us >= slot->at_us && ev_ct_equal(slot->digest, digest, 32))
		return key_fill(k, slot);

	p = DBP_STR(key, KEY_PREFIX_LEN);
	rc = db_exec(db, DB_KEY_BY_PREFIX, &p, 1, &r, NULL, NULL);
	if (rc != DB_OK)
		return rc == DB_ERROR ? EV_INTERNAL : EV_UNAVAILABLE;
	/* columns: id, key_id, tenant_id, slug, digest, scopes, sources, revoked */
	if (r.nrows == 1 && DB_CELL(&r, 0, 4)->len == 32 &&
	    ev_ct_equal(DB_CELL(&r, 0, 4)->v, digest, 32) &&
	    db_cell_i64(DB_CELL(&r, 0, 7)) == 0) {
		cache_entry_clear(slot);
		memcpy(slot->digest, digest, 32);
		slot->at_us = now_us;
		slot->tenant_id = db_cell_i64(DB_CELL(&r, 0, 2));
		snprintf(slot->tenant, sizeof(slot->tenant), "%s",
		    DB_CELL(&r, 0, 3)->v ? DB_CELL(&r, 0, 3)->v : "");
		snprintf(slot->key_id, sizeof(slot->key_id), "%s",
		    DB_CELL(&r, 0, 1)->v ? DB_CELL(&r, 0, 1)->v : "");
		slot->scopes = strdup(DB_CELL(&r, 0, 5)->v ? DB_CELL(&r, 0, 5)->v : "");
		slot->sources = DB_CELL(&r, 0, 6)->v ? strdup(DB_CELL(&r, 0, 6)->v) : NULL;
		if (slot->scopes == NULL)
			ret = EV_INTERNAL;
		else
			ret = key_fill(k, slot);
	}
	db_res_free(&r);
	OPENSSL_cleanse(digest, sizeof(digest));
	return ret;
}

int
ev_tenant_id(struct db *db, const char *slug, int create, int64_t *id)
{
	struct db_param p = DBP_CSTR(slug);
	struct db_res   r;

	if (create &&
	    db_exec(db, DB_TENANT_INSERT, &p, 1, NULL, NULL, NULL) != DB_OK)
		return -1;
	if (db_exec(db, DB_TENANT_BY_SLUG, &p, 1, &r, NULL, NULL) != DB_OK)
		return -1;
	if (r.nrows == 0) {
		db_res_free(&r);
		return -1;
	}
	*id = db_cell_i64(DB_CELL(&r, 0, 0));
	db_res_free(&r);
	return 0;
}

/* Check a comma-separated source allow-list: each entry a valid source. */
static int
sources_ok(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++) {
		if (*s == ',') {
			if (n == 0)
				return 0;
			n = 0;
			continue;
		}
		if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '.' ||
		    *s == ':' || *s == '-') || ++n > 64)
			return 0;
	}
	return n > 0;
}

int
ev_key_create(struct db *db, const char *slug, const char *scopes,
    const char *sources, const char *name, char *out, size_t outsz,
    char *err, size_t errsz)
{
	unsigned char   rnd[48], digest[32];
	unsigned        bits;
	char            key[KEY_LEN + 1], key_id[32];
	struct db_param p[7];
	int64_t         tid;
	size_t          i;
	int             attempt;

	if (parse_scopes(scopes, &bits) != 0 || bits == 0) {
		snprintf(err, errsz, "unknown scope in '%s' (known: events:write,"
		    " events:read, profiles:read, admin)", scopes);
		return -1;
	}
	if (sources != NULL && !sources_ok(sources)) {
		snprintf(err, errsz, "bad --sources list: comma-separated sources"
		    " of [A-Za-z0-9_.:-], 1-64 characters each");
		return -1;
	}
	if (outsz <= KEY_LEN) {
		snprintf(err, errsz, "buffer too small");
		return -1;
	}
	if (ev_tenant_id(db, slug, 1, &tid) != 0) {
		snprintf(err, errsz, "database: %s", db_last_error(db));
		return -1;
	}
	for (attempt = 0; attempt < 4; attempt++) {
		enum db_rc rc;
		if (ev_random(rnd, sizeof(rnd)) != 0 ||
		    ev_public_id("key_", key_id) != 0) {
			snprintf(err, errsz, "no randomness");
			return -1;
		}
		memcpy(key, "rfe_", 4);
		for (i = 0; i < 8; i++)
			key[4 + i] = ev_b32_alphabet[rnd[i] % 32];
		key[KEY_PREFIX_LEN] = '_';
		for (i = 0; i < 40; i++)
			key[KEY_PREFIX_LEN + 1 + i] =
			    ev_b32_alphabet[rnd[8 + i] % 32];
		key[KEY_LEN] = '\0';
		ev_sha256(key, KEY_LEN, digest);
		p[0] = DBP_CSTR(key_id);
		p[1] = DBP_I64(tid);
		p[2] = DBP_STR(key, KEY_PREFIX_LEN);
		p[3] = DBP_STR((const char *)digest, 32);
		p[4] = DBP_CSTR(scopes);
		p[5] = sources != NULL ? DBP_CSTR(sources) : DBP_NULL;
		p[6] = DBP_CSTR(name != NULL ? name : "");
		rc = db_exec(db, DB_KEY_INSERT, p, 7, NULL, NULL, NULL);
		if (rc == DB_DUPKEY)
			continue;    /* prefix or id collision: draw again */
		if (rc != DB_OK) {
			snprintf(err, errsz, "database: %s", db_last_error(db));
			OPENSSL_cleanse(key, sizeof(key));
			return -1;
		}
		memcpy(out, key, KEY_LEN + 1);
		OPENSSL_cleanse(key, sizeof(key));
		OPENSSL_cleanse(rnd, sizeof(rnd));
		return 0;
	}
	snprintf(err, errsz, "could not draw a unique key");
	return -1;
}
