/*
 * core/ — the event model: strict JSON, RFC 3339 timestamps, identity
 * normalisation, validation against the registry, fingerprints, public ids
 * and the ingest pipeline. No I/O of its own besides calls into db/.
 * Public names carry ev_, json_, ts_ or ident_ prefixes.
 */
#ifndef CORE_H
#define CORE_H

#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

/* ---- errors: one enum for the application, see ev_err_*() ---- */
enum ev_err {
	EV_OK,
	EV_MALFORMED_JSON,        /* 400 */
	EV_UNAUTHORIZED,          /* 401 */
	EV_FORBIDDEN,             /* 403 */
	EV_NOT_FOUND,             /* 404 */
	EV_IDENTITY_NOT_FOUND,    /* 404 */
	EV_METHOD_NOT_ALLOWED,    /* 405 */
	EV_CONFLICT,              /* 409 */
	EV_PAYLOAD_TOO_LARGE,     /* 413 */
	EV_UNSUPPORTED_MEDIA,     /* 415 */
	EV_VALIDATION_FAILED,     /* 422 */
	EV_INVALID_IDENTITY,      /* 422 */
	EV_UNKNOWN_EVENT_TYPE,    /* 422 */
	EV_BATCH_TOO_LARGE,       /* 422 */
	EV_RATE_LIMITED,          /* 429 */
	EV_INTERNAL,              /* 500 */
	EV_UNAVAILABLE,           /* 503 */
	EV_ERR__MAX
};
int         ev_err_status(enum ev_err e);   /* HTTP status */
const char *ev_err_code(enum ev_err e);     /* "malformed_json", ... */

/* ---- strict JSON (RFC 8259) ---- */

#define JSON_MAX_DEPTH 64

struct json_perr {
	size_t      offset;   /* byte offset of the problem */
	const char *msg;      /* static string, e.g. "invalid UTF-8" */
};

/*
 * Parse exactly one JSON text (RFC 8259) from buf[0..len): only the four
 * whitespace bytes, no BOM, no trailing data, strict number grammar, valid
 * UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF), valid escapes
 * with paired surrogates, control characters escaped, nesting at most
 * max_depth. json-c keys are C strings, so U+0000 inside an object key is
 * stored as the bytes C0 80 (never valid UTF-8: callers reject such keys
 * before storing or echoing them); U+0000 inside string values is kept
 * (json_object_get_string_len() tells the length). A bare top-level `null`
 * is refused (NULL is this function's error value). Out of memory aborts.
 * Every number becomes a json-c double built with json_object_new_double_s()
 * so that json_object_get_string() returns its exact original text.
 * Duplicate keys: the last one wins (as json-c and ECMAScript do).
 * Returns a new tree (caller frees with json_object_put()) or NULL with *err.
 */
json_object *json_parse_strict(const char *buf, size_t len, unsigned max_depth,
    struct json_perr *err);

/* 1 if `o` is a number produced by json_parse_strict() (a json-c double). */
int json_is_number(const json_object *o);

/* ---- RFC 3339 timestamps ---- */

/*
 * Parse an RFC 3339 date-time (§5.6): YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm);
 * 'T'/'Z' may be lower case; fraction of 1 or more digits (kept to
 * microseconds, truncated; callers bound the text's length); seconds 00-59 (a leap second 60 is rejected); year 0001-9999;
 * day checked against the month and leap years; offset at most ±23:59.
 * Returns 0 and microseconds since the Unix epoch (UTC) in *us, or -1.
 */
int ts_parse(const char *s, size_t len, int64_t *us);

/* Format microseconds since the epoch as "YYYY-MM-DDTHH:MM:SS.ffffffZ"
 * (fraction omitted when 0). out needs 32 bytes. Returns out. */
char *ts_format(int64_t us, char out[32]);

/* Current time in microseconds since the epoch. */
int64_t ts_now(void);

/* ---- identities (API.md §3) ---- */

enum ident_type {
	IDENT_EXTERNAL,   /* externalUserId, highest precedence */
	IDENT_EMAIL,
	IDENT_PHONE,
	IDENT_DEVICE_KEY,
	IDENT__MAX
};
extern const char *const ident_type_name[IDENT__MAX];  /* "EXTERNAL", ... */
extern const char *const ident_json_key[IDENT__MAX];   /* "externalUserId", ... */

#define IDENT_MAX_CHARS 255

/*
 * Normalise one identity value. All return a malloc'd NUL-terminated string
 * (caller frees) or NULL when the value is invalid, with *why set to a static
 * message. Input is valid UTF-8 of `len` bytes (may contain U+0000: invalid).
 *  - ident_norm_text: externalUserId, deviceKey. Trim ASCII whitespace
 *    (space, \t, \n, \r, \f, \v) at both ends, keep case; 1-255 code points.
 *  - ident_norm_email: trim as above, lower-case ASCII letters; 1-255 code
 *    points; one '@' with something on both sides; no whitespace or control
 *    characters inside.
 *  - ident_norm_phone: drop spaces, '-', '.', '(', ')'; a leading "00"
 *    becomes '+'; without '+', prefix '+' and default_cc (digits, may be
 *    NULL or "" meaning none); result must be '+' then 8-15 digits (E.164).
 */
char *ident_norm_text(const char *s, size_t len, const char **why);
char *ident_norm_email(const char *s, size_t len, const char **why);
char *ident_norm_phone(const char *s, size_t len, const char *default_cc,
    const char **why);

/* Number of Unicode code points in valid UTF-8 s[0..len). */
size_t utf8_count(const char *s, size_t len);

/* ---- misc ---- */

/* Fill buf with n cryptographically random bytes; 0 or -1. */
int ev_random(unsigned char *buf, size_t n);

/* The same, taken from a per-process pool that one getrandom() call
 * refills 4 KiB at a time (a request takes about 60 bytes, for its id,
 * its attempt token and an event's id: three system calls before): for
 * ids and tokens that must be unpredictable and unique. Secrets (API
 * keys) take ev_random(): the pool keeps the next bytes in memory. */
int ev_random_pool(unsigned char *buf, size_t n);

/* New public id: prefix ("evt_", "prf_", "key_") then 22 base-32
 * characters [0-9a-z without i,l,o,u]: 10 of the creation time in
 * milliseconds (ids sort by it), 12 random. out needs 32 bytes. */
int ev_public_id(const char *prefix, char out[32]);

/* The base-32 alphabet of public ids and API keys: 32 symbols
 * [0-9a-z without i,l,o,u] in value order, then NUL. Symbol v encodes the
 * 5-bit value v (ids and keys take it from the low 5 bits of a random
 * byte). */
extern const char ev_b32_alphabet[33];

/* Value 0-31 of base-32 symbol c (as an unsigned char, or EOF), or -1 when
 * c is not one (upper case, i, l, o, u, NUL, ...). One table look-up: the
 * same time for every c. */
int ev_b32_value(int c);

/*
 * Decode the UTF-8 sequence at s[0..n) into *cp (RFC 3629: no overlongs,
 * no surrogates D800-DFFF, nothing above U+10FFFF). Returns its length,
 * 1-4 (1 for any byte below 0x80, U+0000 included: callers decide), or 0
 * when it is not well formed: lead byte 80-C1 or F5-FF, a continuation
 * byte out of range, or fewer than the needed bytes in n (also n == 0).
 * *cp is set only on success. Only the first sequence is looked at.
 */
size_t ev_utf8_decode(const unsigned char *s, size_t n, unsigned *cp);

/* Allocation that aborts (after a message) when memory is out: calloc of
 * n * size (at least 1 byte), realloc to n bytes, strdup (NULL gives
 * NULL). */
void *ev_xcalloc(size_t n, size_t size);
void *ev_xrealloc(void *p, size_t n);
char *ev_xstrdup(const char *s);

/* A growing byte buffer, NUL-terminated once anything was added (aborts
 * when out of memory, as the ev_x allocators): JSON written directly where
 * a json-c tree would only be serialised once, request bodies, CSV
 * records. Start zeroed; ev_buf_free(). ev_buf_room() makes room for n
 * more bytes and the NUL. */
struct ev_buf {
	char   *p;
	size_t  len, cap;
};
void ev_buf_room(struct ev_buf *b, size_t n);
void ev_buf_put(struct ev_buf *b, const void *s, size_t n);
void ev_buf_free(struct ev_buf *b);
void ev_buf_str(struct ev_buf *b, const char *s);
void ev_buf_i64(struct ev_buf *b, int64_t v);
/* s as a JSON string literal, escaped as json-c does with
 * JSON_C_TO_STRING_NOSLASHESCAPE; NULL as null. ev_buf_json_strn: len
 * bytes, U+0000 included. */
void ev_buf_json_str(struct ev_buf *b, const char *s);
void ev_buf_json_strn(struct ev_buf *b, const char *s, size_t len);
/* s[0..len) as a JSON string literal: short escapes (\n, \", ...) as
 * json-c writes them when short_esc, else every escaped byte as \u00XX
 * (the fingerprint's canonical form). */
void ev_buf_json_esc(struct ev_buf *b, const char *s, size_t len, int short_esc);
/* The length of the longest prefix of s[0..len) that a JSON string takes
 * as is: no byte below 0x20, no '"', no '\\'. */
size_t ev_json_plain(const char *s, size_t len);
/* v as JSON text, byte for byte what json-c writes with
 * JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE (NULL: null) */
void ev_buf_json(struct ev_buf *b, json_object *v);
/* v as JSON text in a style: strings (and keys) through str(), numbers
 * through num(), object members sorted by key bytes or as stored.
 * ev_buf_json() is json-c's style; the fingerprint's canonical form
 * (core/event.c) another. */
struct ev_json_style {
	void (*str)(struct ev_buf *b, const char *s, size_t len);
	void (*num)(struct ev_buf *b, json_object *v);
	int   sorted;
};
void ev_buf_json_as(struct ev_buf *b, json_object *v, const struct ev_json_style *st);

/* SHA-256 of data (NULL: empty), and as 64 lower-case hex characters +
 * NUL. Never fails, never allocates. */
void ev_sha256(const void *data, size_t len, unsigned char out[32]);
void ev_sha256_hex(const void *data, size_t len, char out[65]);

/* Constant-time comparison of n bytes: 1 equal, 0 not. */
int ev_ct_equal(const void *a, const void *b, size_t n);


/* ---- events: parse + validate (API.md §2.1) ---- */

struct conf_tenant;
struct db;

#define EV_MAX_PROBLEMS 32

/* One validation problem, for the `details` array of an error body. */
struct ev_problem {
	char        field[160];   /* "properties.amount" */
	const char *problem;      /* static: "required", "type", "max_length", ... */
};

/* Why an event or request was refused: an error code, a message and details. */
struct ev_verr {
	enum ev_err        err;
	char               msg[256];
	struct ev_problem  probs[EV_MAX_PROBLEMS];
	size_t             nprobs;
};

/* A validated event, all strings NUL-terminated and checked. */
struct ev_event {
	char          *source;                 /* [A-Za-z0-9_.:-]{1,64} */
	char          *ext_id;                 /* 1-255 code points, as given */
	size_t         ext_id_len;
	char          *type;                   /* registered event type */
	int            occurred_given;
	int64_t        occurred_us;            /* UTC microseconds */
	char          *occurred_text;          /* as given, or formatted default */
	int64_t        received_us;
	char          *ident[IDENT__MAX];      /* normalised; NULL when absent */
	json_object   *properties;             /* object (owned reference) */
	unsigned char  fingerprint[32];
	const char    *request_id;             /* the id of the HTTP request that
	                                          sent it, when events of several
	                                          requests share one ev_ingest()
	                                          (not owned); NULL: its
	                                          request_id */
};

/*
 * Turn one parsed JSON value into a validated event for tenant t (may be NULL
 * when the tenant has no loaded configuration: every event type is then
 * unknown). now_us is the receipt time. Returns EV_OK with *ev filled (free
 * with ev_event_free()), or an error in *verr (EV_VALIDATION_FAILED,
 * EV_UNKNOWN_EVENT_TYPE, EV_INVALID_IDENTITY, EV_MALFORMED_JSON when not an
 * object) and *ev left empty.
 */
enum ev_err ev_parse(const json_object *o, const struct conf_tenant *t,
    int64_t now_us, struct ev_event *ev, struct ev_verr *verr);
void ev_event_free(struct ev_event *ev);

/* The stored document of an event (API.md §4 "event" minus outcome) as
 * JSON text, written directly (the text json-c would make of the same
 * object, which costs five times the instructions); caller frees. */
char *ev_event_doc(const struct ev_event *ev);

/* Canonical text used for the fingerprint (keys sorted, numbers
 * normalised); caller frees. Exposed for tests. */
char *ev_canonical(const struct ev_event *ev);

/* Append a problem to verr (ignored beyond EV_MAX_PROBLEMS). */
void ev_problem_add(struct ev_verr *verr, const char *field, const char *problem);

/* ---- ingest (core/ingest.c) ---- */

enum ev_status {
	EV_ST_ACCEPTED,
	EV_ST_DUPLICATE,
	EV_ST_CONFLICT,
	EV_ST_DRY_RUN,
	EV_ST_ERROR,
	EV_ST__MAX
};

/* Result of one event. `body` is the JSON answer for this event (the
 * response body of a single ingest, one element of a batch), built by
 * ev_ingest*(); caller puts it. */
struct ev_result {
	enum ev_status  st;
	enum ev_err     err;                   /* when st == EV_ST_ERROR (the
	                                          details are in body) */
	char            event_id[32];
	json_object    *body;
	char           *text;                  /* or the body as JSON text
	                                          (owned; an accepted event) */
	int             from_memory;           /* a duplicate answered by the
	                                          table of stored events */
};

/* Who is asking: the tenant of the key and its settings. */
struct ev_tenant {
	int64_t                   id;          /* tenants.id */
	const char               *slug;
	const struct conf_tenant *conf;        /* NULL if not configured */
};

/*
 * Ingest events into the database: each at most once per (tenant, source,
 * externalEventId). `evs[i]` NULL means the item already failed (its
 * res[i] was filled by the caller). With dry_run nothing is written.
 * One transaction for all items with a savepoint per item. Returns EV_OK
 * (then every res[i] is filled), or EV_UNAVAILABLE when the database could
 * not commit (nothing applied), or EV_INTERNAL.
 * `retries` (may be NULL) gets the number of transaction retries.
 */
/* The table of events found stored lately (core/ingest.c): n slots of
 * 32 bytes in sets of EV_RECENT_WAYS, zeroed or kept from before, shared
 * by processes when mapped so; NULL: none. */
#define EV_RECENT_WAYS 8
struct ev_recent_slot { _Atomic uint64_t w[4]; };
struct ev_recent_head {
	_Atomic uint64_t gen;       /* entries of an older one do not match */
	_Atomic uint64_t hwm;       /* highest events.id + 1 seen */
};
void ev_recent_attach(struct ev_recent_slot *slots, size_t n,
    struct ev_recent_head *head);
int  ev_recent_on(void);
/* The name under which entries are put and found for database inst
 * (db_instance(); 0: none) as it is now: max_event, when not 0, is its
 * highest events.id + 1 read just now; lower than seen before, the
 * database went back (a backup restored, events deleted) and every entry
 * made before stops matching. 0: do not use the table. */
uint64_t ev_recent_key(uint64_t inst, uint64_t max_event);
/* Remember that the event stored under ev's key (tenant, source,
 * externalEventId) in database inst (ev_recent_key()) has fingerprint fp,
 * public id public_id ("evt_" + 22 characters) and events.id row_id. Is
 * ev, with its own fingerprint, such an event? Then 1 and its public id
 * in public_id. */
void ev_recent_put(uint64_t inst, int64_t tenant, const struct ev_event *ev,
    const unsigned char fp[32], const char *public_id, uint64_t row_id);
int  ev_recent_find(uint64_t inst, int64_t tenant, const struct ev_event *ev,
    char public_id[32]);

enum ev_err ev_ingest(struct db *db, const struct ev_tenant *t,
    struct ev_event **evs, struct ev_result *res, size_t n, int dry_run,
    const char *request_id, unsigned *retries);

/* Fill res as an error result with body {"status":"error",...}. */
void ev_result_error(struct ev_result *res, const struct ev_verr *verr);

/* Error body {"status":"error","error_code","message"[,"details"]}; new
 * object, caller puts it. */
json_object *ev_error_body(const struct ev_verr *verr);

/* Set verr to err with a printf-style message and no details. */
void ev_verr_set(struct ev_verr *verr, enum ev_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* GET /v1/cdp/events/{id}: the event document with profile, outcome and
 * rules version, or NULL with *err (EV_NOT_FOUND, EV_UNAVAILABLE, ...). */
json_object *ev_event_get(struct db *db, const struct ev_tenant *t,
    const char *public_id, enum ev_err *err);

/* ---- profiles (core/profile.c, API.md §4) ---- */

/* GET /v1/cdp/profiles/{id}: identities, balances, tier, variables; NULL
 * with *err (EV_NOT_FOUND, EV_UNAVAILABLE, EV_INTERNAL). Caller puts. */
json_object *ev_profile_get(struct db *db, const struct ev_tenant *t,
    const char *public_id, enum ev_err *err);

/* The profile a normalised identity is bound to; as ev_profile_get(). */
json_object *ev_profile_find(struct db *db, const struct ev_tenant *t,
    enum ident_type type, const char *value, enum ev_err *err);

/* History (newest first by occurredAt, ties newest ingested first) and
 * ledger (newest first), `limit` 1-200 (default 50) and an opaque cursor
 * from a previous page's next_cursor. NULL with *verr on error. */
json_object *ev_profile_events(struct db *db, const struct ev_tenant *t,
    const char *public_id, const char *limit, const char *cursor,
    struct ev_verr *verr);
json_object *ev_profile_ledger(struct db *db, const struct ev_tenant *t,
    const char *public_id, const char *limit, const char *cursor,
    struct ev_verr *verr);

/* ---- API keys (core/keys.c) ---- */

enum ev_scope {
	EV_SCOPE_EVENTS_WRITE,
	EV_SCOPE_EVENTS_READ,
	EV_SCOPE_PROFILES_READ,
	EV_SCOPE_ADMIN,
	EV_SCOPE__MAX
};
extern const char *const ev_scope_name[EV_SCOPE__MAX];

#define EV_KEY_MAX_SOURCES 64

/* An authenticated key. */
struct ev_key {
	int64_t   tenant_id;
	char      tenant[65];
	char      key_id[32];
	unsigned  scopes;                       /* bit per enum ev_scope */
	int       all_sources;                  /* no allow-list */
	char     *sources[EV_KEY_MAX_SOURCES];  /* allow-list */
	size_t    nsources;
	char     *sources_buf;
};
void ev_key_clear(struct ev_key *k);

/* 1 if the key carries scope s (admin carries all). */
int ev_key_has_scope(const struct ev_key *k, enum ev_scope s);
/* 1 if the key may ingest events of this source. */
int ev_key_allows_source(const struct ev_key *k, const char *source);

/*
 * Check an Authorization header value ("Bearer <key>"). Returns EV_OK with
 * *k filled (free with ev_key_clear()), EV_UNAUTHORIZED (missing, malformed,
 * unknown, revoked) or EV_UNAVAILABLE (database). Digests are compared in
 * constant time; the key itself is never logged or stored.
 */
enum ev_err ev_key_check(struct db *db, const char *authz, struct ev_key *k,
    int64_t now_us);

/*
 * Create a key for tenant slug (the tenant row is created when missing).
 * scopes/sources are comma-separated (sources may be NULL). Returns 0 and
 * the key in out (shown once; caller wipes it), or -1 with a message.
 */
int ev_key_create(struct db *db, const char *slug, const char *scopes,
    const char *sources, const char *name, char *out, size_t outsz,
    char *err, size_t errsz);

/* Look the tenant row up (creating it when `create`); 0 and *id, or -1. */
int ev_tenant_id(struct db *db, const char *slug, int create, int64_t *id);

#endif /* CORE_H */
