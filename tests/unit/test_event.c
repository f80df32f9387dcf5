/*
 * Table-driven tests of the request JSON -> event parser and validator
 * (core/event.c, API.md §2.1, CONF.md property types) and of the
 * fingerprint's canonical form ("same payload").
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/core.h"
#include "tests/unit/t.h"

static const char tenant_yaml[] =
    "settings:\n"
    "  default_country_code: \"1\"\n"
    "  unknown_properties: reject\n"
    "event_types:\n"
    "  purchase_completed:\n"
    "    properties:\n"
    "      order_id: { type: string, required: true, max_length: 10 }\n"
    "      amount:   { type: number, required: true, min: 0, max: 1000000 }\n"
    "      currency: { type: string, required: true, enum: [USD, EUR] }\n"
    "      qty:      { type: integer, min: 1 }\n"
    "      gift:     { type: boolean }\n"
    "      at:       { type: timestamp }\n"
    "  signup:\n"
    "    properties: {}\n";

/* 2026-05-20T12:45:00Z */
#define NOW_US 1779281100000000LL
#define NOW_TEXT "2026-05-20T12:45:00Z"   /* NOW_US as ts_format() writes it */

#define OK_PROPS "\"properties\":{\"order_id\":\"o1\",\"amount\":12.5,\"currency\":\"USD\"}"
#define HEAD "{\"source\":\"brand.pos\",\"externalEventId\":\"e1\",\"eventType\":\"purchase_completed\","
#define ID "\"identity\":{\"externalUserId\":\"L-1\"}"

static const struct {
	int          line;
	const char  *body;
	enum ev_err  want;
	const char  *field;     /* first problem's field, or NULL */
	const char  *problem;   /* first problem, or NULL */
} cases[] = {
	{ __LINE__, HEAD ID "," OK_PROPS "}", EV_OK, NULL, NULL },
	{ __LINE__, "[]", EV_MALFORMED_JSON, NULL, NULL },
	{ __LINE__, "{}", EV_VALIDATION_FAILED, "source", "required" },
	/* source */
	{ __LINE__, "{\"source\":\"\",\"externalEventId\":\"e\",\"eventType\":\"signup\"," ID "}",
	  EV_VALIDATION_FAILED, "source", "length" },
	{ __LINE__, "{\"source\":\"a b\",\"externalEventId\":\"e\",\"eventType\":\"signup\"," ID "}",
	  EV_VALIDATION_FAILED, "source", "pattern" },
	{ __LINE__, "{\"source\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
	  "\"externalEventId\":\"e\",\"eventType\":\"signup\"," ID "}",
	  EV_VALIDATION_FAILED, "source", "length" },
	{ __LINE__, "{\"source\":7,\"externalEventId\":\"e\",\"eventType\":\"signup\"," ID "}",
	  EV_VALIDATION_FAILED, "source", "type" },
	{ __LINE__, "{\"source\":\"a:b.c-d_e\",\"externalEventId\":\"e\",\"eventType\":\"signup\"," ID "}",
	  EV_OK, NULL, NULL },
	/* externalEventId */
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"\",\"eventType\":\"signup\"," ID "}",
	  EV_VALIDATION_FAILED, "externalEventId", "length" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"a\\u0000b\",\"eventType\":\"signup\"," ID "}",
	  EV_VALIDATION_FAILED, "externalEventId", "contains_nul" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\" spaced \",\"eventType\":\"signup\"," ID "}",
	  EV_OK, NULL, NULL },
	/* eventType */
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"nope\"," ID "}",
	  EV_UNKNOWN_EVENT_TYPE, "eventType", "unknown_event_type" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\"," ID "}",
	  EV_VALIDATION_FAILED, "eventType", "required" },
	/* occurredAt */
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"occurredAt\":\"2026-05-20\"," ID "}", EV_VALIDATION_FAILED, "occurredAt", "timestamp" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"occurredAt\":\"2026-05-21T12:45:00Z\"," ID "}", EV_OK, NULL, NULL },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"occurredAt\":\"2026-05-21T12:45:00.000001Z\"," ID "}",
	  EV_VALIDATION_FAILED, "occurredAt", "too_far_in_future" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"occurredAt\":\"1899-12-31T23:59:59Z\"," ID "}",
	  EV_VALIDATION_FAILED, "occurredAt", "too_far_in_past" },
	/* identity */
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\"}",
	  EV_VALIDATION_FAILED, "identity", "required" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\",\"identity\":{}}",
	  EV_VALIDATION_FAILED, "identity", "required" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\",\"identity\":[]}",
	  EV_VALIDATION_FAILED, "identity", "type" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"identity\":{\"email\":5}}", EV_VALIDATION_FAILED, "identity.email", "type" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"identity\":{\"userId\":\"x\"}}", EV_VALIDATION_FAILED, "identity.userId", "unknown_field" },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"identity\":{\"phone\":\"12\"}}", EV_INVALID_IDENTITY, "identity.phone", NULL },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"identity\":{\"email\":\"no-at-sign\"}}", EV_INVALID_IDENTITY, "identity.email", NULL },
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"identity\":{\"phone\":\"(555) 123-4567\",\"deviceKey\":\"d\"}}", EV_OK, NULL, NULL },
	/* unknown top-level field */
	{ __LINE__, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	  "\"occuredAt\":\"2026-05-20T00:00:00Z\"," ID "}",
	  EV_VALIDATION_FAILED, "occuredAt", "unknown_field" },
	/* properties */
	{ __LINE__, HEAD ID ",\"properties\":[]}", EV_VALIDATION_FAILED, "properties", "type" },
	{ __LINE__, HEAD ID ",\"properties\":{\"amount\":1,\"currency\":\"USD\"}}",
	  EV_VALIDATION_FAILED, "properties.order_id", "required" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":null,\"amount\":1,\"currency\":\"USD\"}}",
	  EV_VALIDATION_FAILED, "properties.order_id", "required" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":\"1\",\"currency\":\"USD\"}}",
	  EV_VALIDATION_FAILED, "properties.amount", "type" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":-0.01,\"currency\":\"USD\"}}",
	  EV_VALIDATION_FAILED, "properties.amount", "min" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1000000.01,\"currency\":\"USD\"}}",
	  EV_VALIDATION_FAILED, "properties.amount", "max" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":-0,\"currency\":\"USD\"}}",
	  EV_OK, NULL, NULL },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1e400,\"currency\":\"USD\"}}",
	  EV_VALIDATION_FAILED, "properties.amount", "out_of_range" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1,\"currency\":\"JPY\"}}",
	  EV_VALIDATION_FAILED, "properties.currency", "enum" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"12345678901\",\"amount\":1,\"currency\":\"USD\"}}",
	  EV_VALIDATION_FAILED, "properties.order_id", "max_length" },
	/* max_length counts code points: ten 4-byte emoji fit in 10 */
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80"
	  "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"
	  "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\",\"amount\":1,\"currency\":\"USD\"}}",
	  EV_OK, NULL, NULL },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1,\"currency\":\"USD\",\"qty\":5.0}}",
	  EV_OK, NULL, NULL },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1,\"currency\":\"USD\",\"qty\":5.5}}",
	  EV_VALIDATION_FAILED, "properties.qty", "integer" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1,\"currency\":\"USD\",\"qty\":0}}",
	  EV_VALIDATION_FAILED, "properties.qty", "min" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1,\"currency\":\"USD\",\"gift\":1}}",
	  EV_VALIDATION_FAILED, "properties.gift", "type" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1,\"currency\":\"USD\","
	  "\"at\":\"2026-01-01T00:00:00+01:00\"}}", EV_OK, NULL, NULL },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1,\"currency\":\"USD\","
	  "\"at\":\"yesterday\"}}", EV_VALIDATION_FAILED, "properties.at", "timestamp" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1,\"currency\":\"USD\","
	  "\"colour\":\"red\"}}", EV_VALIDATION_FAILED, "properties.colour", "unknown_property" },
	{ __LINE__, HEAD ID ",\"properties\":{\"order_id\":\"o\",\"amount\":1,\"currency\":\"USD\","
	  "\"nested\":{\"a\\u0000\":1}}}", EV_VALIDATION_FAILED, "properties", "key_contains_nul" },
};

/* Pairs of bodies that must have the same fingerprint (same = 1) or not. */
static const struct {
	int         line;
	const char *a, *b;
	int         same;
} fps[] = {
	{ __LINE__, HEAD ID "," OK_PROPS "}",
	  "{\"properties\":{\"currency\":\"USD\",\"amount\":12.50,\"order_id\":\"o1\"},"
	  "\"identity\":{\"externalUserId\":\"  L-1 \"},\"eventType\":\"purchase_completed\","
	  "\"externalEventId\":\"e1\",\"source\":\"brand.pos\"}", 1 },
	{ __LINE__, HEAD ID "," OK_PROPS "}",
	  HEAD ID ",\"properties\":{\"order_id\":\"o1\",\"amount\":1.25e1,\"currency\":\"USD\"}}", 1 },
	{ __LINE__, HEAD ID "," OK_PROPS "}",
	  HEAD ID ",\"properties\":{\"order_id\":\"o1\",\"amount\":12.51,\"currency\":\"USD\"}}", 0 },
	{ __LINE__, HEAD ID "," OK_PROPS "}",
	  HEAD "\"identity\":{\"externalUserId\":\"l-1\"}," OK_PROPS "}", 0 },
	/* the same instant in another zone is the same payload */
	{ __LINE__, HEAD "\"occurredAt\":\"2026-05-20T12:00:00Z\"," ID "," OK_PROPS "}",
	  HEAD "\"occurredAt\":\"2026-05-20T14:00:00.000+02:00\"," ID "," OK_PROPS "}", 1 },
	/* a defaulted occurredAt does not count: given vs not given differ */
	{ __LINE__, HEAD "\"occurredAt\":\"2026-05-20T12:00:00Z\"," ID "," OK_PROPS "}",
	  HEAD ID "," OK_PROPS "}", 0 },
	/* email normalised before hashing */
	{ __LINE__, HEAD "\"identity\":{\"email\":\" A@B.example\"}," OK_PROPS "}",
	  HEAD "\"identity\":{\"email\":\"a@b.example\"}," OK_PROPS "}", 1 },
	/* phone normalised before hashing */
	{ __LINE__, HEAD "\"identity\":{\"phone\":\"(555) 123-4567\"}," OK_PROPS "}",
	  HEAD "\"identity\":{\"phone\":\"+15551234567\"}," OK_PROPS "}", 1 },
	/* the id is the key, not part of the payload */
	{ __LINE__, HEAD ID "," OK_PROPS "}",
	  "{\"source\":\"brand.pos\",\"externalEventId\":\"e2\",\"eventType\":\"purchase_completed\","
	  ID "," OK_PROPS "}", 1 },
};

static struct conf_tenant *
load_tenant(void)
{
	char                dir[] = "/tmp/rfevents-test-event-XXXXXX", path[128];
	struct conf_error  *errs = NULL;
	size_t              nerrs = 0;
	struct conf_tenant *t;
	FILE               *f;

	if (mkdtemp(dir) == NULL)
		return NULL;
	snprintf(path, sizeof(path), "%s/acme.yaml", dir);
	if ((f = fopen(path, "w")) == NULL)
		return NULL;
	fputs(tenant_yaml, f);
	fclose(f);
	t = conf_tenant_load(path, &errs, &nerrs);
	conf_errors_free(errs, nerrs);
	unlink(path);
	rmdir(dir);
	return t;
}

/* The stored document of ev is JSON, and exactly the text json-c makes
 * of it (what the stored documents were before they were written
 * directly). */
static void
doc_is_json_c_text(int line, const struct ev_event *ev)
{
	struct json_perr perr;
	char            *doc = ev_event_doc(ev);
	json_object     *o = json_parse_strict(doc, strlen(doc), JSON_MAX_DEPTH + 2, &perr);

	T_CHECK(line, o != NULL && strcmp(json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), doc) == 0,
	    "stored document %s: %s", o ? "differs from json-c's text" : "not JSON", doc);
	if (o != NULL)
		json_object_put(o);
	free(doc);
}

static int
parse(const struct conf_tenant *t, const char *body, struct ev_event *ev,
    struct ev_verr *verr)
{
	struct json_perr perr;
	json_object     *o = json_parse_strict(body, strlen(body), JSON_MAX_DEPTH, &perr);
	enum ev_err      e;

	if (o == NULL) {
		verr->err = EV_MALFORMED_JSON;
		verr->nprobs = 0;
		return EV_MALFORMED_JSON;
	}
	e = ev_parse(o, t, NOW_US, ev, verr);
	json_object_put(o);
	return e;
}

/* ---- the table of events found stored lately (core/ingest.c) ---- */

/* A deterministic stored event k: key "dup-<k>", fingerprint and public
 * id made from k, so any answer can be checked against k. */
static void
recent_event(struct ev_event *ev, char *ext, size_t extsz, size_t k)
{
	size_t i;

	ev->ext_id_len = (size_t)snprintf(ext, extsz, "dup-33e90e7f-%zu", k);
	for (i = 0; i < 32; i++)
		ev->fingerprint[i] = (unsigned char)(k * 31 + i * 7);
}

static void
recent_id(size_t k, char id[32])
{
	static const char b32[] = "0123456789abcdefghjkmnpqrstvwxyz";
	size_t            i, x = k * 2654435761u + 12345;

	memcpy(id, "evt_", 4);
	for (i = 0; i < 22; i++, x = x * 6364136223846793005u + 1442695040888963407u)
		id[4 + i] = b32[(x >> 33) % 32];
	id[26] = '\0';
}

/* Readers against writers of other processes on one shared table of one
 * set: an answer is never another entry's id (a torn read). Without the
 * sequence number's checks this failed 5 runs of 5, with 2 to 7 torn
 * answers in about 40,000. */
static void
run_recent_shared(void)
{
	static struct ev_recent_head head;
	size_t                 nslots = EV_RECENT_WAYS, k, found = 0, wrong = 0, tries = 0;
	struct ev_recent_slot *tab = mmap(NULL, nslots * sizeof(*tab),
	    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct ev_event        ev;
	char                   ext[64], id[32], want[32];
	pid_t                  kids[2];
	int                    c, st;

	T_OK(tab != MAP_FAILED, "mmap");
	if (tab == MAP_FAILED)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.source = (char *)"brand.pos";
	ev.ext_id = ext;
	ev_recent_attach(tab, nslots, &head);
	for (c = 0; c < 2; c++) {
		if ((kids[c] = fork()) == 0) {
			/* 200,000 writes of 24 keys into 8 slots */
			for (k = 0; k < 200000; k++) {
				size_t key = (k * 7 + (size_t)c * 3) % 24;
				recent_event(&ev, ext, sizeof(ext), key);
				recent_id(key, id);
				ev_recent_put(9, 5, &ev, ev.fingerprint, id, 1);
			}
			_exit(0);
		}
		T_OK(kids[c] > 0, "fork");
	}
	for (;;) {
		pid_t done = waitpid(-1, &st, WNOHANG);
		for (k = 0; k < 24; k++, tries++) {
			recent_event(&ev, ext, sizeof(ext), k);
			if (ev_recent_find(9, 5, &ev, id)) {
				found++;
				recent_id(k, want);
				wrong += strcmp(id, want) != 0;
			}
		}
		if (done > 0 && waitpid(-1, &st, 0) > 0)
			break;
		if (done < 0)
			break;
	}
	T_OK(wrong == 0, "%zu of %zu answers were another entry's id", wrong, found);
	T_OK(found > 0, "no answer in %zu look-ups while two processes wrote", tries);
	ev_recent_attach(NULL, 0, NULL);
	munmap(tab, nslots * sizeof(*tab));
}

static void
run_recent(void)
{
	static struct ev_recent_slot slots[16384];   /* fcgi/metrics.c RECENT_KEYS */
	struct ev_recent_slot        one_set[EV_RECENT_WAYS];
	struct ev_recent_head        head;
	struct ev_event              ev, other;
	char                         ext[64], id[32], want[32];
	size_t                       k, found = 0, wrong = 0, miss = 0, used = 0;
	uint64_t                     key, key2;

	memset(&ev, 0, sizeof(ev));
	memset(&head, 0, sizeof(head));
	ev.source = (char *)"brand.pos";
	ev.ext_id = ext;
	ev_recent_attach(slots, 16384, &head);
	T_OK(ev_recent_on(), "a table attached is not on");
	/* the bench's 10,000 replayed events: nearly all stay, each with its
	 * id (2048 sets of 8, 4.9 events each on average: in one set per
	 * event 9742 stayed, with a second set to overflow into 9978) */
	for (k = 0; k < 10000; k++) {
		recent_event(&ev, ext, sizeof(ext), k);
		recent_id(k, id);
		ev_recent_put(7, 2, &ev, ev.fingerprint, id, 1);
	}
	for (k = 0; k < 10000; k++) {
		recent_event(&ev, ext, sizeof(ext), k);
		if (ev_recent_find(7, 2, &ev, id)) {
			found++;
			recent_id(k, want);
			wrong += strcmp(id, want) != 0;
		}
		/* another database, tenant, source; another payload (a conflict) */
		miss += ev_recent_find(8, 2, &ev, id);
		miss += ev_recent_find(7, 3, &ev, id);
		ev.source = (char *)"brand.web";
		miss += ev_recent_find(7, 2, &ev, id);
		ev.source = (char *)"brand.pos";
		ev.fingerprint[31] ^= 1;
		miss += ev_recent_find(7, 2, &ev, id);
		/* a key never put */
		ev.ext_id_len = (size_t)snprintf(ext, sizeof(ext), "new-33e90e7f-%zu", k);
		miss += ev_recent_find(7, 2, &ev, id);
	}
	T_OK(found >= 9950, "%zu of 10000 events kept in 16384 slots", found);
	T_OK(wrong == 0, "%zu events answered with another event's id", wrong);
	T_OK(miss == 0, "%zu look-ups matched what was never put", miss);

	/* the key's parts cannot be shifted into one another, nor be cut at a NUL */
	memset(&other, 0, sizeof(other));
	memcpy(other.fingerprint, ev.fingerprint, 32);
	ev.source = (char *)"ab";
	ev.ext_id_len = 1;
	memcpy(ext, "c", 2);
	recent_id(1, id);
	ev_recent_put(7, 2, &ev, ev.fingerprint, id, 1);
	T_OK(ev_recent_find(7, 2, &ev, want) == 1 && strcmp(want, id) == 0,
	    "an event just put was not found");
	other.source = (char *)"a";
	other.ext_id = (char *)"bc";
	other.ext_id_len = 2;
	T_OK(ev_recent_find(7, 2, &other, want) == 0, "source a + bc found as ab + c");
	ev.source = (char *)"s";
	memcpy(ext, "a\0b", 4);
	ev.ext_id_len = 3;
	ev_recent_put(7, 2, &ev, ev.fingerprint, id, 1);
	memcpy(ext, "a\0c", 4);
	T_OK(ev_recent_find(7, 2, &ev, want) == 0, "an id differing after a NUL found");
	ev.ext_id_len = 1;
	T_OK(ev_recent_find(7, 2, &ev, want) == 0, "an id cut at its NUL found");

	/* what is not an event's public id, or no database, is not kept */
	ev.source = (char *)"brand.pos";
	ev.ext_id_len = (size_t)snprintf(ext, sizeof(ext), "odd-ids");
	ev_recent_put(7, 2, &ev, ev.fingerprint, "prf_0123456789abcdefghjkmn", 1);
	ev_recent_put(7, 2, &ev, ev.fingerprint, "evt_0123456789abcdefghjkm", 1);
	ev_recent_put(7, 2, &ev, ev.fingerprint, "evt_0123456789abcdefghjkmi", 1);
	ev_recent_put(0, 2, &ev, ev.fingerprint, "evt_0123456789abcdefghjkmn", 1);
	T_OK(ev_recent_find(7, 2, &ev, want) == 0, "an odd public id was kept: %s", want);
	T_OK(ev_recent_find(0, 2, &ev, want) == 0, "found without a database");

	/* a slot being written (odd sequence number) is a miss, then a hit */
	memset(slots, 0, sizeof(slots));
	ev_recent_put(7, 2, &ev, ev.fingerprint, "evt_0123456789abcdefghjkmn", 1);
	for (k = 0; k < 16384; k++)
		if (atomic_load(&slots[k].w[0]) != 0) {
			used++;
			atomic_fetch_add(&slots[k].w[0], 1);
			T_OK(ev_recent_find(7, 2, &ev, want) == 0, "a slot being written was read");
			atomic_fetch_add(&slots[k].w[0], 1);
		}
	T_OK(used == 1, "one entry took %zu slots", used);
	T_OK(ev_recent_find(7, 2, &ev, want) == 1 &&
	    strcmp(want, "evt_0123456789abcdefghjkmn") == 0, "the entry came back as %s",
	    want);

	/* the name of a database as it is now: a growing highest event id
	 * keeps it, a lower one (a backup restored) makes a new one under
	 * which nothing put before is found */
	key = ev_recent_key(7, 100);
	T_OK(key != 0 && key == ev_recent_key(7, 0) && key == ev_recent_key(7, 150) &&
	    key == ev_recent_key(7, 150), "the name changed while the database grew");
	T_OK(ev_recent_key(8, 0) != key && ev_recent_key(0, 150) == 0,
	    "another database (or none) has the same name");
	recent_event(&ev, ext, sizeof(ext), 42);
	recent_id(42, id);
	ev_recent_put(key, 2, &ev, ev.fingerprint, id, 1);
	T_OK(ev_recent_find(key, 2, &ev, want) == 1, "an entry under a name not found");
	key2 = ev_recent_key(7, 120);
	T_OK(key2 != key && key2 != 0, "a database gone back kept its name");
	T_OK(ev_recent_find(key2, 2, &ev, want) == 0,
	    "an entry made before the database went back found");
	T_OK(ev_recent_key(7, 0) == key2 && ev_recent_key(7, 130) == key2,
	    "the new name did not stay");
	ev_recent_put(key2, 2, &ev, ev.fingerprint, id, 1);
	T_OK(ev_recent_find(key2, 2, &ev, want) == 1 && strcmp(want, id) == 0,
	    "an entry under the new name not found");

	/* a remembered event newer than the last read of the highest id:
	 * a read that no longer has it (it was deleted) starts a new name */
	recent_event(&ev, ext, sizeof(ext), 43);
	recent_id(43, id);
	ev_recent_put(key2, 2, &ev, ev.fingerprint, id, 499);
	T_OK(ev_recent_key(7, 0) == key2, "an entry changed the name");
	key = ev_recent_key(7, 450);
	T_OK(key != key2 && ev_recent_find(key, 2, &ev, want) == 0,
	    "the newest remembered event's loss went unnoticed");

	/* the slots of a name no longer in use are free: a table that an
	 * earlier database (or the database before it went back) left full
	 * keeps the next one's 10,000 events as an empty table does */
	memset(slots, 0, sizeof(slots));
	for (k = 0; k < 40000; k++) {
		recent_event(&ev, ext, sizeof(ext), 100000 + k);
		recent_id(k, id);
		ev_recent_put(key, 2, &ev, ev.fingerprint, id, 1);
	}
	for (k = 0, used = 0; k < 16384; k++)
		used += atomic_load(&slots[k].w[0]) != 0;
	T_OK(used > 16000, "40,000 entries filled %zu of 16384 slots", used);
	key2 = ev_recent_key(7, 440);
	for (k = 0; k < 10000; k++) {
		recent_event(&ev, ext, sizeof(ext), k);
		recent_id(k, id);
		ev_recent_put(key2, 2, &ev, ev.fingerprint, id, 1);
	}
	for (k = 0, found = 0, wrong = 0; k < 10000; k++) {
		recent_event(&ev, ext, sizeof(ext), k);
		if (ev_recent_find(key2, 2, &ev, id)) {
			found++;
			recent_id(k, want);
			wrong += strcmp(id, want) != 0;
		}
	}
	T_OK(found >= 9950 && wrong == 0,
	    "%zu of 10000 events kept over a full table of another name (%zu wrong)",
	    found, wrong);

	/* one set: eight of nine events are kept, the newest among them */
	memset(one_set, 0, sizeof(one_set));
	ev_recent_attach(one_set, EV_RECENT_WAYS, &head);
	for (k = 0; k < 9; k++) {
		recent_event(&ev, ext, sizeof(ext), k);
		recent_id(k, id);
		ev_recent_put(7, 2, &ev, ev.fingerprint, id, 1);
	}
	T_OK(ev_recent_find(7, 2, &ev, want) == 1, "the newest event of a full set was lost");
	for (k = 0, found = 0; k < 9; k++) {
		recent_event(&ev, ext, sizeof(ext), k);
		found += ev_recent_find(7, 2, &ev, want) == 1;
	}
	T_OK(found == 8, "a set of 8 holds %zu of 9 events", found);

	/* no table: nothing is remembered, nothing breaks */
	ev_recent_attach(NULL, 0, NULL);
	T_OK(!ev_recent_on() && ev_recent_key(7, 10) == 0, "no table, but on");
	ev_recent_put(7, 2, &ev, ev.fingerprint, id, 1);
	T_OK(ev_recent_find(7, 2, &ev, want) == 0, "an event found without a table");
	run_recent_shared();
}

int
main(void)
{
	struct conf_tenant *t;
	struct ev_event     ev, ev2;
	struct ev_verr      verr, verr2;
	size_t              i;

	t_file = "test_event";
	run_recent();
	t = load_tenant();
	T_OK(t != NULL, "tenant did not load");
	if (t == NULL)
		return t_done();

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum ev_err e = parse(t, cases[i].body, &ev, &verr);
		T_CHECK(cases[i].line, e == cases[i].want, "got %s, want %s (%s)",
		    ev_err_code(e), ev_err_code(cases[i].want), verr.msg);
		if (cases[i].field != NULL)
			T_CHECK(cases[i].line, verr.nprobs > 0 &&
			    strcmp(verr.probs[0].field, cases[i].field) == 0,
			    "field %s, want %s", verr.nprobs ? verr.probs[0].field : "-",
			    cases[i].field);
		if (cases[i].problem != NULL)
			T_CHECK(cases[i].line, verr.nprobs > 0 &&
			    strcmp(verr.probs[0].problem, cases[i].problem) == 0,
			    "problem %s, want %s", verr.nprobs ? verr.probs[0].problem : "-",
			    cases[i].problem);
		if (e == EV_OK) {
			doc_is_json_c_text(cases[i].line, &ev);
			ev_event_free(&ev);
		}
	}

	/* what a valid event holds after parsing */
	T_OK(parse(t, "{\"source\":\"s\",\"externalEventId\":\"e\",\"eventType\":\"signup\","
	    "\"identity\":{\"email\":\" Jo@Example.COM \",\"phone\":\"555.123.4567\"}}",
	    &ev, &verr) == EV_OK, "valid signup refused");
	T_OK(ev.ident[IDENT_EMAIL] && strcmp(ev.ident[IDENT_EMAIL], "jo@example.com") == 0,
	    "email not normalised");
	T_OK(ev.ident[IDENT_PHONE] && strcmp(ev.ident[IDENT_PHONE], "+15551234567") == 0,
	    "phone not normalised");
	T_OK(!ev.occurred_given && ev.occurred_us == NOW_US, "occurredAt not defaulted");
	T_OK(json_object_is_type(ev.properties, json_type_object), "no properties object");
	ev_event_free(&ev);

	for (i = 0; i < sizeof(fps) / sizeof(fps[0]); i++) {
		int ea = parse(t, fps[i].a, &ev, &verr);
		int eb = parse(t, fps[i].b, &ev2, &verr2);
		T_CHECK(fps[i].line, ea == EV_OK && eb == EV_OK, "bodies refused: %s / %s",
		    verr.msg, verr2.msg);
		if (ea == EV_OK && eb == EV_OK)
			T_CHECK(fps[i].line, (memcmp(ev.fingerprint, ev2.fingerprint, 32) == 0)
			    == fps[i].same, "fingerprints %s", fps[i].same ? "differ" :
			    "are equal");
		if (ea == EV_OK)
			ev_event_free(&ev);
		if (eb == EV_OK)
			ev_event_free(&ev2);
	}

	/* the canonical form itself: keys sorted, numbers canonical */
	T_OK(parse(t, HEAD ID ",\"properties\":{\"order_id\":\"o1\",\"currency\":\"USD\","
	    "\"amount\":120.50}}", &ev, &verr) == EV_OK, "canonical: refused");
	{
		char *c = ev_canonical(&ev);
		T_OK(c != NULL && strcmp(c, "{\"eventType\":\"purchase_completed\","
		    "\"identity\":{\"EXTERNAL\":\"L-1\"},\"occurredAt\":null,"
		    "\"properties\":{\"amount\":1205e-1,\"currency\":\"USD\",\"order_id\":\"o1\"}}") == 0,
		    "canonical form: %s", c ? c : "(null)");
		free(c);
		/* the stored document: the fields in API.md's order, the
		 * properties as given (order, number text) */
		c = ev_event_doc(&ev);
		T_OK(c != NULL && strcmp(c, "{\"source\":\"brand.pos\",\"externalEventId\":\"e1\","
		    "\"eventType\":\"purchase_completed\",\"occurredAt\":\"" NOW_TEXT "\","
		    "\"occurredAtUtc\":\"" NOW_TEXT "\",\"receivedAt\":\"" NOW_TEXT "\","
		    "\"identity\":{\"externalUserId\":\"L-1\"},"
		    "\"properties\":{\"order_id\":\"o1\",\"currency\":\"USD\",\"amount\":120.50}}") == 0,
		    "stored document: %s", c ? c : "(null)");
		free(c);
	}
	ev_event_free(&ev);

	/* no tenant configuration: every type is unknown */
	T_OK(parse(NULL, HEAD ID "," OK_PROPS "}", &ev, &verr) == EV_UNKNOWN_EVENT_TYPE,
	    "no tenant: %s", ev_err_code(verr.err));

	conf_tenant_free(t);
	return t_done();
}
