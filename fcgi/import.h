/*
 * fcgi/import.h — the pure parts of `rfevents import` (fcgi/import.c), for
 * the unit tests (tests/unit/test_import.c): the RFC 4180 CSV record parser,
 * the mapping of CSV columns to event fields, the NDJSON line check, the URL
 * and HTTP/1.1 response parsers and the resume state file. Nothing here does
 * I/O. Names carry the imp_ prefix; the command itself is import_main()
 * (fcgi/fcgi.h).
 */
#ifndef FCGI_IMPORT_H
#define FCGI_IMPORT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/core.h"

/* Buffers are struct ev_buf (core/core.h). */

/* ---- CSV (RFC 4180) ---- */

/* One CSV record: field i is data.p + off[i], flen[i] bytes (quotes removed,
 * doubled quotes undone, NUL-terminated); quoted[i] says it was quoted. */
struct imp_csv_rec {
	struct ev_buf  data;
	size_t         *off;
	size_t         *flen;
	unsigned char  *quoted;
	size_t          nf;
	size_t          fcap;
};

enum imp_csv_rc {
	IMP_CSV_OK,      /* one record in *r, *used bytes taken */
	IMP_CSV_MORE,    /* the record does not end in s[0..n): read more */
	IMP_CSV_END,     /* n == 0 at the end of the input */
	IMP_CSV_BAD,     /* malformed: *why; skip *used bytes (to the next line) */
	IMP_CSV__MAX
};

/*
 * Parse the CSV record at the start of s[0..n) (RFC 4180 §2): fields
 * separated by commas, records ended by CRLF or LF (or the end of the input
 * when eof), fields in double quotes may hold commas, line breaks and
 * doubled quotes. Lenient where RFC 4180 is silent: a quote inside an
 * unquoted field and a CR not followed by LF are data. Strict where data
 * would be lost: text after a closing quote, a quote never closed.
 * *used: bytes of the record with its line break (or, on IMP_CSV_BAD, up to
 * and with the line break that follows the problem); *lines: LF bytes in
 * those *used bytes. Fields go to *r (reused from call to call, free with
 * imp_csv_free()). With eof == 0 a record that reaches the end of s is
 * incomplete (IMP_CSV_MORE): the caller reads more and calls again.
 */
enum imp_csv_rc imp_csv_parse(const char *s, size_t n, int eof,
    struct imp_csv_rec *r, size_t *used, size_t *lines, const char **why);
void imp_csv_free(struct imp_csv_rec *r);

/* ---- mapping CSV columns to event fields ---- */

enum imp_field {
	IMP_F_IGNORE,       /* column not used */
	IMP_F_SOURCE,
	IMP_F_EXT_ID,
	IMP_F_TYPE,
	IMP_F_OCCURRED,
	IMP_F_IDENT,        /* identity.<ident_json_key[ident]> */
	IMP_F_PROP,         /* properties.<prop> */
	IMP_F__MAX
};

enum imp_type {
	IMP_T_STRING,
	IMP_T_NUMBER,       /* JSON number, sent with its exact text */
	IMP_T_INTEGER,
	IMP_T_BOOLEAN,
	IMP_T__MAX
};

struct imp_target {
	enum imp_field  field;
	int             ident;      /* enum ident_type when IMP_F_IDENT */
	enum imp_type   type;       /* IMP_T_STRING unless IMP_F_PROP */
	char           *prop;       /* IMP_F_PROP: the property name (owned) */
};

/*
 * Parse a field spec: source, externalEventId, eventType, occurredAt,
 * identity.externalUserId|email|phone|deviceKey, or properties.NAME with an
 * optional type suffix :string :number :integer :boolean. Returns 0 (t->prop
 * malloc'd for properties: free with imp_target_free()) or -1 with err.
 */
int  imp_target_parse(const char *spec, struct imp_target *t, char *err,
    size_t errlen);
void imp_target_free(struct imp_target *t);

/* How the columns of one CSV file become events. */
struct imp_map {
	size_t             ncols;
	char             **names;       /* header names, trimmed (owned) */
	struct imp_target *cols;        /* per column */
	long               col_of[IMP_F__MAX];   /* first column per field, -1 */
	long               col_ident[4];         /* per enum ident_type, -1 */
	const char        *source;      /* --source: default source (not owned) */
	const char        *event_type;  /* --event-type: default type (not owned) */
	size_t             nignored;    /* columns with IMP_F_IGNORE */
};

/*
 * Set up m from the header record and the --map arguments (each "COL=FIELD"
 * or several joined by commas). A column named by --map gets that field; any
 * other column whose header is itself a field spec ("identity.email",
 * "properties.amount:number") maps to it; the rest are ignored. Refuses
 * (-1 with err) a --map naming no column or an ambiguous one, a bad spec,
 * two columns for one field, and a mapping that cannot make an event: no
 * externalEventId, no source or eventType (column or constant), no identity.
 * Free with imp_map_free() either way.
 */
int  imp_map_init(struct imp_map *m, const struct imp_csv_rec *header,
    char *const *maps, size_t nmaps, const char *source,
    const char *event_type, char *err, size_t errlen);
void imp_map_free(struct imp_map *m);

/* Why a line was refused before (or by) the service. */
struct imp_reject {
	char code[48];
	char msg[1024];
};

/*
 * One CSV record to the JSON text of one event (API.md §2.1), appended to
 * out. An empty unquoted cell leaves its field out; "" (quoted) is an empty
 * string for string fields. Typed properties: number keeps its exact text
 * (RFC 8259 number grammar), integer is -?(0|[1-9][0-9]*) within int64,
 * boolean is true/false/1/0/yes/no (any case); surrounding blanks are
 * ignored for typed values. Strings must be UTF-8 (RFC 3629).
 * Returns 0, or -1 with *rej (csv_field_count, invalid_value) and out as
 * it was.
 */
int imp_csv_item(const struct imp_map *m, const struct imp_csv_rec *r,
    struct ev_buf *out, struct imp_reject *rej);

/*
 * One NDJSON line to the JSON text of one event, appended to out: the line
 * must be one strict JSON object (RFC 8259, as the service parses it, and
 * nested so that it still fits the service's depth limit inside a batch);
 * it is sent as written (blanks around it dropped), with "source" or
 * "eventType" set to source / event_type (may be NULL) when it has none.
 * Returns 0, or -1 with *rej (malformed_json) and out as it was.
 */
int imp_ndjson_item(const char *line, size_t len, const char *source,
    const char *event_type, struct ev_buf *out, struct imp_reject *rej);

/* ---- HTTP ---- */

struct imp_url {
	char host[256];         /* without the brackets of an IPv6 literal */
	char port[8];
	char hostport[272];     /* for the Host header */
	char prefix[1024];      /* path before /v1/..., no trailing slash */
};

/* Parse http://host[:port][/prefix]. 0, or -1 with err (https and user
 * info are not supported). */
int imp_url_parse(const char *url, struct imp_url *u, char *err,
    size_t errlen);

/* The head of an HTTP/1.x response (RFC 9112). */
struct imp_head {
	int      status;
	int64_t  clen;          /* Content-Length, -1 when absent */
	int      chunked;       /* Transfer-Encoding: chunked */
	int      close;         /* the server closes the connection after it */
	long     retry_after;   /* seconds, -1 when absent or unusable */
	size_t   hlen;          /* bytes of the head with its empty line */
};

/* Parse the response head at the start of s[0..n): 1 done, 0 incomplete
 * (read more), -1 malformed or longer than 64 KiB. */
int imp_head_parse(const char *s, size_t n, time_t now, struct imp_head *h);

/*
 * A chunked body (RFC 9112 §7.1) at the start of s[0..n): 1 when the last
 * chunk and the trailers are complete (*used bytes; with out != NULL the
 * data appended to out), 0 incomplete, -1 malformed or over max bytes of
 * data.
 */
int imp_chunked(const char *s, size_t n, size_t max, struct ev_buf *out,
    size_t *used);

/* Retry-After (RFC 9110 §10.2.3): delay-seconds or an IMF-fixdate, as
 * seconds from now (0 for a date in the past); -1 when unusable. */
long imp_retry_after(const char *v, size_t len, time_t now);

/* ---- resume state ---- */

struct imp_state {
	char      path[4096];   /* absolute path of the input */
	uint64_t  size;
	int64_t   mtime_sec;
	long      mtime_nsec;
	char      options[65];  /* SHA-256 hex of the options that shape events */
	uint64_t  offset;       /* byte offset of the next unsent line */
	uint64_t  line;         /* its line number (1-based) */
	uint64_t  lines;        /* lines done: accepted + duplicate + rejected */
	uint64_t  accepted;
	uint64_t  duplicate;
	uint64_t  rejected;
	uint64_t  errors_size;  /* bytes of the errors file that belong to them */
};

/* The state as text (appended to out). */
void imp_state_format(const struct imp_state *st, struct ev_buf *out);

/* Parse what imp_state_format() wrote: 0, or -1 with err. */
int  imp_state_parse(const char *s, size_t n, struct imp_state *st,
    char *err, size_t errlen);

#endif /* FCGI_IMPORT_H */
