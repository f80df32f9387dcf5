/*
 * Unit tests for the pure parts of `rfevents import` (fcgi/import.h): the
 * RFC 4180 CSV parser, field specs and the column mapping to event JSON,
 * NDJSON line checks, the URL, HTTP response head, chunked body and
 * Retry-After parsers, and the resume state file.
 */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "fcgi/import.h"
#include "tests/unit/t.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------- CSV */

struct csv_case {
	int              line;
	const char      *in;
	int              eof;
	enum imp_csv_rc  rc;
	const char      *fields;   /* joined by '|', quoted ones start "q:" */
	size_t           used;
	size_t           lines;
};

static const struct csv_case csv_cases[] = {
	{ __LINE__, "a,b,c\n", 0, IMP_CSV_OK, "a|b|c", 6, 1 },
	{ __LINE__, "a,b,c\r\nd", 0, IMP_CSV_OK, "a|b|c", 7, 1 },
	{ __LINE__, "a,b,c", 0, IMP_CSV_MORE, NULL, 0, 0 },
	{ __LINE__, "a,b,c", 1, IMP_CSV_OK, "a|b|c", 5, 0 },
	{ __LINE__, "a,b,c\r", 0, IMP_CSV_MORE, NULL, 0, 0 },
	{ __LINE__, "a,b,c\r", 1, IMP_CSV_OK, "a|b|c", 6, 0 },
	{ __LINE__, "", 1, IMP_CSV_END, NULL, 0, 0 },
	{ __LINE__, "", 0, IMP_CSV_MORE, NULL, 0, 0 },
	{ __LINE__, ",,\n", 0, IMP_CSV_OK, "||", 3, 1 },
	{ __LINE__, "a,\n", 0, IMP_CSV_OK, "a|", 3, 1 },
	{ __LINE__, "a,", 1, IMP_CSV_OK, "a|", 2, 0 },
	{ __LINE__, "\n", 0, IMP_CSV_OK, "", 1, 1 },
	{ __LINE__, "\r\n", 0, IMP_CSV_OK, "", 2, 1 },
	/* quoted fields: commas, doubled quotes, line breaks inside */
	{ __LINE__, "\"x\"\"y\",z\n", 0, IMP_CSV_OK, "q:x\"y|z", 9, 1 },
	{ __LINE__, "\"a,b\",c\r\n", 0, IMP_CSV_OK, "q:a,b|c", 9, 1 },
	{ __LINE__, "\"multi\r\nline\",2\r\nnext", 0, IMP_CSV_OK,
	    "q:multi\r\nline|2", 17, 2 },
	{ __LINE__, "1,\"a\nb\nc\"\n", 0, IMP_CSV_OK, "1|q:a\nb\nc", 10, 3 },
	{ __LINE__, "\"\"\n", 0, IMP_CSV_OK, "q:", 3, 1 },
	{ __LINE__, "x,\"\"\"\"\n", 0, IMP_CSV_OK, "x|q:\"", 7, 1 },
	{ __LINE__, "a,\"b\"\r\n", 0, IMP_CSV_OK, "a|q:b", 7, 1 },
	{ __LINE__, "\"a\"", 0, IMP_CSV_MORE, NULL, 0, 0 },  /* "" may follow */
	{ __LINE__, "\"a\"", 1, IMP_CSV_OK, "q:a", 3, 0 },
	{ __LINE__, "\"a\"\r", 0, IMP_CSV_MORE, NULL, 0, 0 },
	{ __LINE__, "\"open", 0, IMP_CSV_MORE, NULL, 0, 0 },
	{ __LINE__, "\"open,\nrest\n", 0, IMP_CSV_MORE, NULL, 0, 0 },
	/* lenient: a quote inside an unquoted field, a lone CR are data */
	{ __LINE__, "a\"b,c\n", 0, IMP_CSV_OK, "a\"b|c", 6, 1 },
	{ __LINE__, "a\rb,c\n", 0, IMP_CSV_OK, "a\rb|c", 6, 1 },
	{ __LINE__, "\xC3\xA9,\xC3\xBC\n", 0, IMP_CSV_OK, "\xC3\xA9|\xC3\xBC",
	    6, 1 },
	/* malformed: go on after the line that holds the problem */
	{ __LINE__, "\"open\nrest\nmore", 1, IMP_CSV_BAD, NULL, 6, 1 },
	{ __LINE__, "1,2,\"open", 1, IMP_CSV_BAD, NULL, 9, 0 },
	{ __LINE__, "\"ab\"x,c\nnext\n", 0, IMP_CSV_BAD, NULL, 8, 1 },
	{ __LINE__, "\"a\nb\"x\nc\n", 0, IMP_CSV_BAD, NULL, 7, 2 },
	{ __LINE__, "\"ab\" ,c\n", 0, IMP_CSV_BAD, NULL, 8, 1 },
};

/* The fields of r as "a|q:b|c". */
static void
join_fields(const struct imp_csv_rec *r, char *out, size_t outlen)
{
	size_t i, k = 0;

	out[0] = '\0';
	for (i = 0; i < r->nf && k < outlen; i++)
		k += (size_t)snprintf(out + k, outlen - k, "%s%s%s",
		    i ? "|" : "", r->quoted[i] ? "q:" : "",
		    r->data.p + r->off[i]);
}

static void
run_csv(void)
{
	struct imp_csv_rec r;
	char               got[256];
	size_t             i, used, lines;
	const char        *why;
	enum imp_csv_rc    rc;

	memset(&r, 0, sizeof(r));
	for (i = 0; i < N(csv_cases); i++) {
		const struct csv_case *c = &csv_cases[i];

		rc = imp_csv_parse(c->in, strlen(c->in), c->eof, &r, &used,
		    &lines, &why);
		T_CHECK(c->line, rc == c->rc, "rc %d, want %d", rc, c->rc);
		if (rc == IMP_CSV_BAD)
			T_CHECK(c->line, why != NULL && *why != '\0',
			    "no reason given");
		if (rc != IMP_CSV_OK && rc != IMP_CSV_BAD)
			continue;
		T_CHECK(c->line, used == c->used, "used %zu, want %zu", used,
		    c->used);
		T_CHECK(c->line, lines == c->lines, "lines %zu, want %zu",
		    lines, c->lines);
		if (c->fields == NULL)
			continue;
		join_fields(&r, got, sizeof(got));
		T_CHECK(c->line, strcmp(got, c->fields) == 0,
		    "fields \"%s\", want \"%s\"", got, c->fields);
	}
	imp_csv_free(&r);
}

/* A record cut at every byte: MORE until the whole record is there, then
 * the same fields as in one piece (the reader hands over growing
 * windows). */
static void
run_csv_split(void)
{
	static const char  text[] = "id,\"a \"\"b\"\"\r\nc\",x\r\nnext,1\r\n";
	struct imp_csv_rec r;
	char               got[256];
	size_t             n, used, lines, full = 19;
	const char        *why;
	enum imp_csv_rc    rc;
	int                bad = 0;

	memset(&r, 0, sizeof(r));
	for (n = 0; n < sizeof(text) - 1; n++) {
		rc = imp_csv_parse(text, n, 0, &r, &used, &lines, &why);
		if (n < full && rc != IMP_CSV_MORE)
			bad++;
		if (n >= full) {
			join_fields(&r, got, sizeof(got));
			if (rc != IMP_CSV_OK || used != full || lines != 2 ||
			    strcmp(got, "id|q:a \"b\"\r\nc|x") != 0)
				bad++;
		}
	}
	T_OK(bad == 0, "%d prefixes parsed wrongly", bad);
	imp_csv_free(&r);
}

/* ---------------------------------------------------------------- field specs */

struct target_case {
	int             line;
	const char     *spec;
	int             rc;
	enum imp_field  field;
	int             ident;
	enum imp_type   type;
	const char     *prop;
};

static const struct target_case target_cases[] = {
	{ __LINE__, "source", 0, IMP_F_SOURCE, 0, IMP_T_STRING, NULL },
	{ __LINE__, "externalEventId", 0, IMP_F_EXT_ID, 0, IMP_T_STRING, NULL },
	{ __LINE__, "eventType", 0, IMP_F_TYPE, 0, IMP_T_STRING, NULL },
	{ __LINE__, "occurredAt", 0, IMP_F_OCCURRED, 0, IMP_T_STRING, NULL },
	{ __LINE__, "identity.externalUserId", 0, IMP_F_IDENT, IDENT_EXTERNAL,
	    IMP_T_STRING, NULL },
	{ __LINE__, "identity.email", 0, IMP_F_IDENT, IDENT_EMAIL, IMP_T_STRING,
	    NULL },
	{ __LINE__, "identity.phone", 0, IMP_F_IDENT, IDENT_PHONE, IMP_T_STRING,
	    NULL },
	{ __LINE__, "identity.deviceKey", 0, IMP_F_IDENT, IDENT_DEVICE_KEY,
	    IMP_T_STRING, NULL },
	{ __LINE__, "properties.amount:number", 0, IMP_F_PROP, 0, IMP_T_NUMBER,
	    "amount" },
	{ __LINE__, "properties.n:integer", 0, IMP_F_PROP, 0, IMP_T_INTEGER,
	    "n" },
	{ __LINE__, "properties.ok:boolean", 0, IMP_F_PROP, 0, IMP_T_BOOLEAN,
	    "ok" },
	{ __LINE__, "properties.s:string", 0, IMP_F_PROP, 0, IMP_T_STRING, "s" },
	{ __LINE__, "properties.store_id", 0, IMP_F_PROP, 0, IMP_T_STRING,
	    "store_id" },
	{ __LINE__, "properties.a:b:integer", 0, IMP_F_PROP, 0, IMP_T_INTEGER,
	    "a:b" },
	{ __LINE__, "properties.x:float", -1, 0, 0, 0, NULL },
	{ __LINE__, "properties.", -1, 0, 0, 0, NULL },
	{ __LINE__, "properties.:number", -1, 0, 0, 0, NULL },
	{ __LINE__, "identity.nope", -1, 0, 0, 0, NULL },
	{ __LINE__, "identity.", -1, 0, 0, 0, NULL },
	{ __LINE__, "source:number", -1, 0, 0, 0, NULL },
	{ __LINE__, "email", -1, 0, 0, 0, NULL },
	{ __LINE__, "Source", -1, 0, 0, 0, NULL },
	{ __LINE__, "", -1, 0, 0, 0, NULL },
};

static void
run_targets(void)
{
	struct imp_target t;
	char              err[256];
	size_t            i;
	int               rc;

	for (i = 0; i < N(target_cases); i++) {
		const struct target_case *c = &target_cases[i];

		err[0] = '\0';
		rc = imp_target_parse(c->spec, &t, err, sizeof(err));
		T_CHECK(c->line, rc == c->rc, "rc %d, want %d (%s)", rc, c->rc,
		    err);
		if (rc != 0) {
			T_CHECK(c->line, err[0] != '\0', "no message");
			continue;
		}
		T_CHECK(c->line, t.field == c->field, "field %d, want %d",
		    t.field, c->field);
		if (c->field == IMP_F_IDENT)
			T_CHECK(c->line, t.ident == c->ident, "ident %d", t.ident);
		T_CHECK(c->line, t.type == c->type, "type %d, want %d", t.type,
		    c->type);
		T_CHECK(c->line, c->prop == NULL ? t.prop == NULL :
		    t.prop != NULL && strcmp(t.prop, c->prop) == 0,
		    "prop %s, want %s", t.prop ? t.prop : "(null)",
		    c->prop ? c->prop : "(null)");
		imp_target_free(&t);
	}
}

/* ---------------------------------------------------------------- mapping */

#define H_PURCHASE "id,email,amount,currency,paid,qty,note"
#define M_PURCHASE "id=externalEventId,email=identity.email," \
	"amount=properties.amount:number,currency=properties.currency," \
	"paid=properties.paid:boolean,qty=properties.qty:integer," \
	"note=properties.note"
#define J_HEAD "{\"source\":\"pos\",\"externalEventId\":\"e1\"," \
	"\"eventType\":\"purchase_completed\",\"identity\":{\"email\":\"a@b.c\"}"

struct map_case {
	int         line;
	const char *header;     /* CSV text of the header record */
	const char *map;        /* one --map argument, or NULL */
	const char *source;     /* --source */
	const char *etype;      /* --event-type */
	int         init_rc;
	const char *row;        /* CSV text of one record */
	const char *want;       /* JSON text, or the reject code */
};

static const struct map_case map_cases[] = {
	/* exact number text, typed values, empty cells left out */
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,12.50,USD,true,3,hi",
	    J_HEAD ",\"properties\":{\"amount\":12.50,\"currency\":\"USD\","
	    "\"paid\":true,\"qty\":3,\"note\":\"hi\"}}" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,0.10,,,,",
	    J_HEAD ",\"properties\":{\"amount\":0.10}}" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,1E+400,,NO,-9223372036854775808,",
	    J_HEAD ",\"properties\":{\"amount\":1E+400,\"paid\":false,"
	    "\"qty\":-9223372036854775808}}" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c, -0.000 ,,Yes, 7 ,",
	    J_HEAD ",\"properties\":{\"amount\":-0.000,\"paid\":true,"
	    "\"qty\":7}}" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,,", J_HEAD "}" },
	/* "" is an empty string; an unquoted empty cell is no value */
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,\"\",,,\"\"",
	    J_HEAD ",\"properties\":{\"currency\":\"\",\"note\":\"\"}}" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,\"\",,,\"  \",", J_HEAD "}" },
	/* JSON escaping of strings; no escaped slashes */
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,,\"q\"\"b\\\\s/x\ty\r\nz\x01\"",
	    J_HEAD ",\"properties\":{\"note\":\"q\\\"b\\\\\\\\s/x\\ty\\r\\nz"
	    "\\u0001\"}}" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,,\xE2\x82\xAC",
	    J_HEAD ",\"properties\":{\"note\":\"\xE2\x82\xAC\"}}" },
	/* values that do not fit their mapping */
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,\"12,5\",,,,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,007,,,,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,1.,,,,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,.5,,,,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,NaN,,,,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,+1,,,,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,maybe,,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,4.0,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,1e3,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,9223372036854775808,", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,,\xC3\x28", "invalid_value" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,,\xED\xA0\x80", "invalid_value" },   /* surrogate */
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,", "csv_field_count" },
	{ __LINE__, H_PURCHASE, M_PURCHASE, "pos", "purchase_completed", 0,
	    "e1,a@b.c,,,,,,", "csv_field_count" },
	/* headers that are field specs map themselves; others are ignored */
	{ __LINE__, "externalEventId,identity.externalUserId,"
	    "properties.n:integer,extra", NULL, "s", "t", 0, "x,u1,5,zzz",
	    "{\"source\":\"s\",\"externalEventId\":\"x\",\"eventType\":\"t\","
	    "\"identity\":{\"externalUserId\":\"u1\"},\"properties\":{\"n\":5}}" },
	/* a UTF-8 byte order mark and blanks around header names */
	{ __LINE__, "\xEF\xBB\xBF" "externalEventId , identity.phone", NULL,
	    "s", "t", 0, "x,555 123",
	    "{\"source\":\"s\",\"externalEventId\":\"x\",\"eventType\":\"t\","
	    "\"identity\":{\"phone\":\"555 123\"}}" },
	/* a source/eventType column wins; the constant fills empty cells */
	{ __LINE__, "src,id,type,who,when", "src=source,id=externalEventId,"
	    "type=eventType,who=identity.deviceKey,when=occurredAt", "dflt", "T",
	    0, "brand.pos,x,,d1,2024-01-02T03:04:05Z",
	    "{\"source\":\"brand.pos\",\"externalEventId\":\"x\","
	    "\"eventType\":\"T\",\"occurredAt\":\"2024-01-02T03:04:05Z\","
	    "\"identity\":{\"deviceKey\":\"d1\"}}" },
	{ __LINE__, "src,id,type,who", "src=source,id=externalEventId,"
	    "type=eventType,who=identity.deviceKey", "dflt", NULL, 0,
	    ",x,signup,d1",
	    "{\"source\":\"dflt\",\"externalEventId\":\"x\","
	    "\"eventType\":\"signup\",\"identity\":{\"deviceKey\":\"d1\"}}" },
	/* identities in precedence order, whatever the column order */
	{ __LINE__, "d,p,e,x,id", "d=identity.deviceKey,p=identity.phone,"
	    "e=identity.email,x=identity.externalUserId,id=externalEventId",
	    "s", "t", 0, "D,P,E,X,1",
	    "{\"source\":\"s\",\"externalEventId\":\"1\",\"eventType\":\"t\","
	    "\"identity\":{\"externalUserId\":\"X\",\"email\":\"E\","
	    "\"phone\":\"P\",\"deviceKey\":\"D\"}}" },
	/* mappings that cannot work */
	{ __LINE__, "id,email", "id=externalEventId,nope=identity.email", "s",
	    "t", -1, NULL, NULL },
	{ __LINE__, "id,email", "id=externalEventId,email=identity.mail", "s",
	    "t", -1, NULL, NULL },
	{ __LINE__, "id,email", "id=externalEventId,id=identity.email", "s",
	    "t", -1, NULL, NULL },
	{ __LINE__, "id,email", "id=externalEventId,email=", "s", "t", -1,
	    NULL, NULL },
	{ __LINE__, "id,email", "id", "s", "t", -1, NULL, NULL },
	{ __LINE__, "id,email", "id=externalEventId", "s", "t", -1, NULL,
	    NULL },                                     /* no identity */
	{ __LINE__, "id,email", "email=identity.email", "s", "t", -1, NULL,
	    NULL },                                     /* no externalEventId */
	{ __LINE__, "id,email", "id=externalEventId,email=identity.email", NULL,
	    "t", -1, NULL, NULL },                      /* no source */
	{ __LINE__, "id,email", "id=externalEventId,email=identity.email", "s",
	    NULL, -1, NULL, NULL },                     /* no eventType */
	{ __LINE__, "id,identity.email,e2", "id=externalEventId,"
	    "e2=identity.email", "s", "t", -1, NULL, NULL },  /* twice */
	{ __LINE__, "id,x,x", "id=externalEventId,x=identity.email", "s", "t",
	    -1, NULL, NULL },                           /* ambiguous column */
};

static void
parse_one(const char *text, struct imp_csv_rec *r)
{
	size_t      used, lines;
	const char *why;

	imp_csv_parse(text, strlen(text), 1, r, &used, &lines, &why);
}

static void
run_map(void)
{
	struct imp_csv_rec h, r;
	struct imp_map     m;
	struct ev_buf     out = { 0 };
	struct imp_reject  rej;
	char              *maps[1], err[512];
	size_t             i;
	int                rc;

	memset(&h, 0, sizeof(h));
	memset(&r, 0, sizeof(r));
	for (i = 0; i < N(map_cases); i++) {
		const struct map_case *c = &map_cases[i];

		parse_one(c->header, &h);
		maps[0] = (char *)c->map;
		err[0] = '\0';
		rc = imp_map_init(&m, &h, maps, c->map ? 1 : 0, c->source,
		    c->etype, err, sizeof(err));
		T_CHECK(c->line, rc == c->init_rc, "init rc %d, want %d (%s)",
		    rc, c->init_rc, err);
		if (rc != 0)
			T_CHECK(c->line, err[0] != '\0', "no message");
		if (rc == 0 && c->row != NULL) {
			parse_one(c->row, &r);
			out.len = 0;
			ev_buf_put(&out, "", 0);
			memset(&rej, 0, sizeof(rej));
			rc = imp_csv_item(&m, &r, &out, &rej);
			if (c->want[0] == '{') {
				T_CHECK(c->line, rc == 0, "rejected: %s %s",
				    rej.code, rej.msg);
				T_CHECK(c->line, rc != 0 ||
				    strcmp(out.p, c->want) == 0,
				    "got  %s\nwant %s", out.p, c->want);
			} else {
				T_CHECK(c->line, rc == -1 &&
				    strcmp(rej.code, c->want) == 0 &&
				    rej.msg[0] != '\0' && out.len == 0,
				    "rc %d code %s, want %s", rc, rej.code, c->want);
			}
		}
		imp_map_free(&m);
	}
	ev_buf_free(&out);
	imp_csv_free(&h);
	imp_csv_free(&r);
}

/* The JSON made from a CSV row is what the service's strict parser
 * takes, with the number text intact. */
static void
run_map_strict(void)
{
	struct imp_csv_rec h, r;
	struct imp_map     m;
	struct ev_buf     out = { 0 };
	struct imp_reject  rej;
	struct json_perr   perr;
	char              *maps[1] = { M_PURCHASE }, err[256];
	json_object       *o, *p, *a;

	memset(&h, 0, sizeof(h));
	memset(&r, 0, sizeof(r));
	parse_one(H_PURCHASE, &h);
	T_OK(imp_map_init(&m, &h, maps, 1, "pos", "purchase_completed", err,
	    sizeof(err)) == 0, "init: %s", err);
	parse_one("e1,a@b.c,120.50,USD,,,\"line\nbreak \"\"q\"\" \xF0\x9F\x98\x80\"",
	    &r);
	T_OK(imp_csv_item(&m, &r, &out, &rej) == 0, "item: %s", rej.msg);
	o = json_parse_strict(out.p, out.len, JSON_MAX_DEPTH, &perr);
	T_OK(o != NULL, "strict parse of %s: %s", out.p, o ? "" : perr.msg);
	T_OK(o && json_object_object_get_ex(o, "properties", &p) &&
	    json_object_object_get_ex(p, "amount", &a) &&
	    strcmp(json_object_get_string(a), "120.50") == 0,
	    "amount text in %s", out.p);
	json_object_put(o);
	imp_map_free(&m);
	ev_buf_free(&out);
	imp_csv_free(&h);
	imp_csv_free(&r);
}

/* ---------------------------------------------------------------- NDJSON */

struct nd_case {
	int         line;
	const char *in;
	const char *source;
	const char *etype;
	const char *want;       /* text sent, or NULL: malformed_json */
};

static const struct nd_case nd_cases[] = {
	{ __LINE__, "{\"a\":1}", NULL, NULL, "{\"a\":1}" },
	{ __LINE__, "  {\"a\":1.50} \t\r", NULL, NULL, "{\"a\":1.50}" },
	{ __LINE__, "{\"a\" : [1, 2.0e0]}", NULL, NULL, "{\"a\" : [1, 2.0e0]}" },
	{ __LINE__, "{}", "s", NULL, "{\"source\":\"s\"}" },
	{ __LINE__, "{}", "s", "t", "{\"source\":\"s\",\"eventType\":\"t\"}" },
	{ __LINE__, "{\"x\":1}", "s", "t",
	    "{\"source\":\"s\",\"eventType\":\"t\",\"x\":1}" },
	{ __LINE__, "{\"x\":1}", NULL, "t", "{\"eventType\":\"t\",\"x\":1}" },
	{ __LINE__, "{\"source\":\"z\",\"eventType\":\"y\"}", "s", "t",
	    "{\"source\":\"z\",\"eventType\":\"y\"}" },
	{ __LINE__, "{\"source\":\"z\"}", "s", "t",
	    "{\"eventType\":\"t\",\"source\":\"z\"}" },
	{ __LINE__, "{\"x\":1}", "a\"b/c", NULL,
	    "{\"source\":\"a\\\"b/c\",\"x\":1}" },
	{ __LINE__, "[1]", NULL, NULL, NULL },
	{ __LINE__, "\"s\"", NULL, NULL, NULL },
	{ __LINE__, "null", NULL, NULL, NULL },
	{ __LINE__, "{\"a\":}", NULL, NULL, NULL },
	{ __LINE__, "{\"a\":1} x", NULL, NULL, NULL },
	{ __LINE__, "{\"a\":1}{}", NULL, NULL, NULL },
	{ __LINE__, "{'a':1}", NULL, NULL, NULL },
	{ __LINE__, "{\"a\":NaN}", NULL, NULL, NULL },
	{ __LINE__, "{\"a\":01}", NULL, NULL, NULL },
	{ __LINE__, "{\"a\":\"\xFF\"}", NULL, NULL, NULL },
	{ __LINE__, "{\"a\":\"\\ud800\"}", NULL, NULL, NULL },
	{ __LINE__, "{\"a\":1,}", NULL, NULL, NULL },
	{ __LINE__, "{\"a\":1} // c", NULL, NULL, NULL },
	{ __LINE__, "", NULL, NULL, NULL },
};

static void
run_ndjson(void)
{
	struct ev_buf    out = { 0 };
	struct imp_reject rej;
	size_t            i;
	int               rc;

	for (i = 0; i < N(nd_cases); i++) {
		const struct nd_case *c = &nd_cases[i];

		out.len = 0;
		ev_buf_put(&out, "", 0);
		memset(&rej, 0, sizeof(rej));
		rc = imp_ndjson_item(c->in, strlen(c->in), c->source, c->etype,
		    &out, &rej);
		if (c->want != NULL) {
			T_CHECK(c->line, rc == 0 && strcmp(out.p, c->want) == 0,
			    "rc %d got %s, want %s (%s)", rc, out.p, c->want,
			    rej.msg);
		} else {
			T_CHECK(c->line, rc == -1 && out.len == 0 &&
			    strcmp(rej.code, "malformed_json") == 0 &&
			    rej.msg[0] != '\0', "rc %d code %s", rc, rej.code);
		}
	}
	ev_buf_free(&out);
}

/* Nesting: a line is taken exactly when the batch body that carries it
 * still parses on the service's side ({"items":[line]}, JSON_MAX_DEPTH). */
static void
run_ndjson_depth(void)
{
	struct ev_buf    line = { 0 }, out = { 0 }, body = { 0 };
	struct imp_reject rej;
	struct json_perr  perr;
	json_object      *o;
	int               depth, k, mine, service, bad = 0, took = 0;

	for (depth = 55; depth <= 70; depth++) {
		line.len = body.len = out.len = 0;
		ev_buf_str(&line, "{\"a\":");
		for (k = 1; k < depth; k++)
			ev_buf_str(&line, "[");
		ev_buf_str(&line, "1");
		for (k = 1; k < depth; k++)
			ev_buf_str(&line, "]");
		ev_buf_str(&line, "}");
		mine = imp_ndjson_item(line.p, line.len, NULL, NULL, &out,
		    &rej) == 0;
		ev_buf_str(&body, "{\"items\":[");
		ev_buf_put(&body, line.p, line.len);
		ev_buf_str(&body, "]}");
		o = json_parse_strict(body.p, body.len, JSON_MAX_DEPTH, &perr);
		service = o != NULL;
		json_object_put(o);
		if (mine != service)
			bad++;
		took += mine;
	}
	T_OK(bad == 0, "%d depths judged unlike the service", bad);
	T_OK(took > 0 && took < 16, "took %d of 16 depths", took);
	ev_buf_free(&line);
	ev_buf_free(&out);
	ev_buf_free(&body);
}

/* ---------------------------------------------------------------- URL */

struct url_case {
	int         line;
	const char *url;
	int         rc;
	const char *host, *port, *hostport, *prefix;
};

static const struct url_case url_cases[] = {
	{ __LINE__, "http://127.0.0.1:8080", 0, "127.0.0.1", "8080",
	    "127.0.0.1:8080", "" },
	{ __LINE__, "http://example.com", 0, "example.com", "80", "example.com",
	    "" },
	{ __LINE__, "http://example.com/", 0, "example.com", "80",
	    "example.com", "" },
	{ __LINE__, "http://h:1/api/v2//", 0, "h", "1", "h:1", "/api/v2" },
	{ __LINE__, "HTTP://[::1]:9000/x", 0, "::1", "9000", "[::1]:9000",
	    "/x" },
	{ __LINE__, "http://[::1]", 0, "::1", "80", "[::1]", "" },
	{ __LINE__, "https://example.com", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "ftp://example.com", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "example.com:80", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://:80", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://a:", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://a:0", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://a:65536", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://a:80x", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://user:pw@a", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://a?x=1", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://a/p?x=1", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://a/p#f", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://[::1/x", -1, NULL, NULL, NULL, NULL },
	{ __LINE__, "http://[::1]x/", -1, NULL, NULL, NULL, NULL },
};

static void
run_url(void)
{
	struct imp_url u;
	char           err[256];
	size_t         i;
	int            rc;

	for (i = 0; i < N(url_cases); i++) {
		const struct url_case *c = &url_cases[i];

		err[0] = '\0';
		rc = imp_url_parse(c->url, &u, err, sizeof(err));
		T_CHECK(c->line, rc == c->rc, "rc %d, want %d (%s)", rc, c->rc,
		    err);
		if (rc != 0) {
			T_CHECK(c->line, err[0] != '\0', "no message");
			continue;
		}
		T_CHECK(c->line, strcmp(u.host, c->host) == 0 &&
		    strcmp(u.port, c->port) == 0 &&
		    strcmp(u.hostport, c->hostport) == 0 &&
		    strcmp(u.prefix, c->prefix) == 0,
		    "host %s port %s hostport %s prefix %s", u.host, u.port,
		    u.hostport, u.prefix);
	}
}

/* ---------------------------------------------------------------- HTTP */

struct head_case {
	int         line;
	const char *in;
	int         rc;
	int         status;
	long long   clen;
	int         chunked, close;
	long        retry_after;
	size_t      hlen;
};

#define OK200 "HTTP/1.1 200 OK\r\n"

static const struct head_case head_cases[] = {
	{ __LINE__, OK200 "Content-Length: 5\r\n\r\nhello", 1, 200, 5, 0, 0, -1,
	    38 },
	{ __LINE__, OK200 "content-length:2\r\nX-A: b\r\n\r\nok", 1, 200, 2, 0, 0,
	    -1, 45 },
	{ __LINE__, "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 1, 200, 2, 0, 0,
	    -1, 35 },
	{ __LINE__, OK200 "Content-Len", 0, 0, 0, 0, 0, 0, 0 },
	{ __LINE__, OK200 "Content-Length: 5\r\n", 0, 0, 0, 0, 0, 0, 0 },
	{ __LINE__, "HTTP/1.0 200 OK\r\n\r\n", 1, 200, -1, 0, 1, -1, 19 },
	{ __LINE__, "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n", 1, 200,
	    -1, 0, 0, -1, 43 },
	{ __LINE__, "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\n"
	    "Connection: close\r\n\r\n", 1, 503, -1, 0, 1, 7, 71 },
	{ __LINE__, OK200 "Connection: x, close\r\n\r\n", 1, 200, -1, 0, 1, -1,
	    41 },
	{ __LINE__, OK200 "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"
	    "\r\n", 1, 200, -1, 1, 0, -1, 66 },
	{ __LINE__, "HTTP/1.1 204\r\n\r\n", 1, 204, -1, 0, 0, -1, 16 },
	{ __LINE__, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", 1, 100,
	    -1, 0, 0, -1, 25 },
	{ __LINE__, OK200 " folded\r\n\r\n", 1, 200, -1, 0, 0, -1, 28 },
	{ __LINE__, OK200 "Transfer-Encoding: gzip\r\n\r\n", -1, 0, 0, 0, 0, 0,
	    0 },
	{ __LINE__, OK200 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", -1, 0,
	    0, 0, 0, 0, 0 },
	{ __LINE__, OK200 "Content-Length: -1\r\n\r\n", -1, 0, 0, 0, 0, 0, 0 },
	{ __LINE__, OK200 "Content-Length: 1x\r\n\r\n", -1, 0, 0, 0, 0, 0, 0 },
	{ __LINE__, OK200 "no colon\r\n\r\n", -1, 0, 0, 0, 0, 0, 0 },
	{ __LINE__, "HTTP/2 200\r\n\r\n", -1, 0, 0, 0, 0, 0, 0 },
	{ __LINE__, "HTTP/1.1 20\r\n\r\n", -1, 0, 0, 0, 0, 0, 0 },
	{ __LINE__, "HTTP/1.1 2000 OK\r\n\r\n", -1, 0, 0, 0, 0, 0, 0 },
	{ __LINE__, "<html>\r\n\r\n", -1, 0, 0, 0, 0, 0, 0 },
};

static void
run_head(void)
{
	struct imp_head h;
	size_t          i;
	int             rc;

	for (i = 0; i < N(head_cases); i++) {
		const struct head_case *c = &head_cases[i];

		rc = imp_head_parse(c->in, strlen(c->in), 0, &h);
		T_CHECK(c->line, rc == c->rc, "rc %d, want %d", rc, c->rc);
		if (rc != 1)
			continue;
		T_CHECK(c->line, h.status == c->status, "status %d", h.status);
		T_CHECK(c->line, h.clen == c->clen, "clen %lld", (long long)h.clen);
		T_CHECK(c->line, h.chunked == c->chunked, "chunked %d", h.chunked);
		T_CHECK(c->line, h.close == c->close, "close %d", h.close);
		T_CHECK(c->line, h.retry_after == c->retry_after,
		    "retry_after %ld", h.retry_after);
		T_CHECK(c->line, h.hlen == c->hlen, "hlen %zu, want %zu", h.hlen,
		    c->hlen);
	}
}

struct chunk_case {
	int         line;
	const char *in;
	size_t      max;
	int         rc;
	const char *data;
	size_t      used;
};

static const struct chunk_case chunk_cases[] = {
	{ __LINE__, "5\r\nhello\r\n0\r\n\r\n", 100, 1, "hello", 15 },
	{ __LINE__, "5\r\nhello\r\n0\r\n\r\nHTTP", 100, 1, "hello", 15 },
	{ __LINE__, "5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nT: x\r\n\r\n", 100, 1,
	    "hello world", 36 },
	{ __LINE__, "A\nabcdefghij\n0\n\n", 100, 1, "abcdefghij", 16 },
	{ __LINE__, "0\r\n\r\n", 100, 1, "", 5 },
	{ __LINE__, "5\r\nhel", 100, 0, NULL, 0 },
	{ __LINE__, "5\r\nhello\r\n", 100, 0, NULL, 0 },
	{ __LINE__, "0\r\n", 100, 0, NULL, 0 },
	{ __LINE__, "5", 100, 0, NULL, 0 },
	{ __LINE__, "z\r\n", 100, -1, NULL, 0 },
	{ __LINE__, "\r\n", 100, -1, NULL, 0 },
	{ __LINE__, "5\r\nhelloXX", 100, -1, NULL, 0 },
	{ __LINE__, "ffffff\r\n", 100, -1, NULL, 0 },
	{ __LINE__, "1111111111111111\r\n", SIZE_MAX, -1, NULL, 0 },
};

static void
run_chunked(void)
{
	struct ev_buf out = { 0 };
	size_t         i, used;
	int            rc;

	for (i = 0; i < N(chunk_cases); i++) {
		const struct chunk_case *c = &chunk_cases[i];

		out.len = 0;
		ev_buf_put(&out, "", 0);
		used = 0;
		rc = imp_chunked(c->in, strlen(c->in), c->max, &out, &used);
		T_CHECK(c->line, rc == c->rc, "rc %d, want %d", rc, c->rc);
		if (rc == 1)
			T_CHECK(c->line, strcmp(out.p, c->data) == 0 &&
			    used == c->used, "data \"%s\" used %zu", out.p, used);
	}
	ev_buf_free(&out);
}

struct ra_case {
	int         line;
	const char *in;
	long        want;
};

/* now = 784111777 - 10: Sun, 06 Nov 1994 08:49:27 GMT */
static const struct ra_case ra_cases[] = {
	{ __LINE__, "120", 120 },
	{ __LINE__, " 5 ", 5 },
	{ __LINE__, "0", 0 },
	{ __LINE__, "", -1 },
	{ __LINE__, "-1", -1 },
	{ __LINE__, "1.5", -1 },
	{ __LINE__, "soon", -1 },
	{ __LINE__, "Sun, 06 Nov 1994 08:49:37 GMT", 10 },
	{ __LINE__, "Sun, 06 Nov 1994 08:49:00 GMT", 0 },
	{ __LINE__, "Mon, 07 Nov 1994 08:49:27 GMT", 86400 },
	{ __LINE__, "Sun, 06 Nov 1994 08:49:37 UTC", -1 },
	{ __LINE__, "Sun, 06 Xyz 1994 08:49:37 GMT", -1 },
	{ __LINE__, "Sun, 06 Nov 1994 08:4x:37 GMT", -1 },
	{ __LINE__, "Sunday, 06-Nov-94 08:49:37 GMT", -1 },
};

static void
run_retry_after(void)
{
	size_t i;
	long   got;

	for (i = 0; i < N(ra_cases); i++) {
		got = imp_retry_after(ra_cases[i].in, strlen(ra_cases[i].in),
		    784111777 - 10);
		T_CHECK(ra_cases[i].line, got == ra_cases[i].want,
		    "got %ld, want %ld", got, ra_cases[i].want);
	}
}

/* ---------------------------------------------------------------- state */

static void
run_state(void)
{
	static const struct { int line; const char *text; } bad[] = {
		{ __LINE__, "" },
		{ __LINE__, "rfevents-import-state 2\n" },
		{ __LINE__, "rfevents-import-state 1\npath /x\n" },
		{ __LINE__, "rfevents-import-state 1\npath /x\nsize 1\n"
		    "mtime 5.000000001\noptions 0123456789abcdef0123456789abcdef"
		    "0123456789abcdef0123456789abcdef\noffset 1\nline 2\nlines 3\n"
		    "accepted 1\nduplicate 1\nrejected 0\nerrors_size 0\n" },
		{ __LINE__, "rfevents-import-state 1\npath /x\nsize x\n"
		    "mtime 5.000000001\noptions 0123456789abcdef0123456789abcdef"
		    "0123456789abcdef0123456789abcdef\noffset 1\nline 2\nlines 2\n"
		    "accepted 1\nduplicate 1\nrejected 0\nerrors_size 0\n" },
		{ __LINE__, "rfevents-import-state 1\npath /x\nsize 1\n"
		    "mtime 5.1\noptions 0123456789abcdef0123456789abcdef"
		    "0123456789abcdef0123456789abcdef\noffset 1\nline 2\nlines 2\n"
		    "accepted 1\nduplicate 1\nrejected 0\nerrors_size 0\n" },
		{ __LINE__, "rfevents-import-state 1\npath /x\nsize 1\n"
		    "mtime 5.000000001\noptions abc\noffset 1\nline 2\nlines 2\n"
		    "accepted 1\nduplicate 1\nrejected 0\nerrors_size 0\n" },
		{ __LINE__, "rfevents-import-state 1\npath /x\nsize 1\n"
		    "mtime 5.000000001\noptions 0123456789abcdef0123456789abcdef"
		    "0123456789abcdef0123456789abcdef\noffset 1\nline 2\nlines 2\n"
		    "accepted 1\nduplicate 1\nrejected 0\nerrors_size 0" },
	};
	struct imp_state st, back;
	struct ev_buf   t = { 0 };
	char             err[256];
	size_t           i;
	int              rc;

	memset(&st, 0, sizeof(st));
	strcpy(st.path, "/data/with space/events.ndjson");
	st.size = 123456789012ULL;
	st.mtime_sec = 1700000000;
	st.mtime_nsec = 5;
	strcpy(st.options, "0123456789abcdef0123456789abcdef"
	    "0123456789abcdef0123456789abcdef");
	st.offset = 99999;
	st.line = 1001;
	st.lines = 999;
	st.accepted = 990;
	st.duplicate = 4;
	st.rejected = 5;
	st.errors_size = 777;
	imp_state_format(&st, &t);
	ev_buf_str(&t, "future_key 1\n");     /* a later version's key */
	rc = imp_state_parse(t.p, t.len, &back, err, sizeof(err));
	T_OK(rc == 0, "parse: %s", err);
	T_OK(rc == 0 && memcmp(&st, &back, sizeof(st)) == 0,
	    "round trip differs:\n%s", t.p);
	for (i = 0; i < N(bad); i++) {
		err[0] = '\0';
		rc = imp_state_parse(bad[i].text, strlen(bad[i].text), &back,
		    err, sizeof(err));
		T_CHECK(bad[i].line, rc == -1 && err[0] != '\0', "rc %d", rc);
	}
	ev_buf_free(&t);
}

int
main(void)
{
	t_file = "test_import";
	run_csv();
	run_csv_split();
	run_targets();
	run_map();
	run_map_strict();
	run_ndjson();
	run_ndjson_depth();
	run_url();
	run_head();
	run_chunked();
	run_retry_after();
	run_state();
	return t_done();
}
