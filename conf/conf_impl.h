/*
 * conf/ internals shared by the .c files of conf/ (yaml.c: YAML bytes to a small tree;
 * tenant.c: the tenant and server schemas of CONF.md; conf.c: files,
 * directories and the reload cache). Nothing outside conf/ includes this.
 */
#ifndef CONF_IMPL_H
#define CONF_IMPL_H

#include <stdarg.h>
#include <stddef.h>

#include "conf/conf.h"

#define CONF_MAX_FILE    (1024 * 1024)  /* bytes of one YAML file */
#define CONF_MAX_DEPTH   16             /* nested mappings/sequences */
#define CONF_MAX_RULES   1000
#define CONF_MAX_TYPES   200
#define CONF_MAX_PROPS   200            /* per event type */
#define CONF_MAX_TIERS   100
#define CONF_MAX_ENUM    1000           /* values of one enum */
#define CONF_MAX_SETS    100            /* variables of one rule's set: */
#define CONF_MAX_NAME    64             /* identifiers, ids, slugs, tiers */
#define CONF_MAX_ERRORS  50             /* reported per file */

/* Out of memory is decided once (STYLE.md): these log and abort. */
void *conf_xmalloc(size_t n);
void *conf_xcalloc(size_t n, size_t size);
void *conf_xrealloc(void *p, size_t n);
char *conf_xstrndup(const char *s, size_t n);
char *conf_xstrdup(const char *s);

/*
 * Where the errors of one file go: appended to the caller's growable
 * array *errs / *nerrs as "file:line:col: msg". `count` is how many this
 * file produced; past CONF_MAX_ERRORS one last "too many errors" is added
 * and the rest dropped.
 */
struct conf_diag {
	const char         *file;
	struct conf_error **errs;
	size_t             *nerrs;
	size_t              count;
};

void conf_diag_add(struct conf_diag *d, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void conf_diag_vadd(struct conf_diag *d, int line, int col, const char *fmt,
    va_list ap) __attribute__((format(printf, 4, 0)));

/* One YAML node, positions 1-based (libyaml start marks + 1). */
enum conf_ykind {
	CONF_Y_SCALAR,
	CONF_Y_SEQ,
	CONF_Y_MAP,
	CONF_Y__MAX
};

struct conf_ynode {
	enum conf_ykind      kind;
	int                  line, col;
	int                  plain;    /* scalar written without quotes or | > */
	int                  quoted;   /* single- or double-quoted scalar */
	int                  exact;    /* text maps 1:1 onto the source line */
	char                *text;     /* scalar bytes, NUL-terminated */
	size_t               len;
	struct conf_ynode  **kids;     /* SEQ: items; MAP: key, value, key, ... */
	size_t               nkids;
};

/*
 * Parse buf[0..len) (one YAML document, or none) into a tree. Rejects
 * anchors, aliases, tags, more than one document, non-scalar mapping keys,
 * duplicate keys and nesting beyond CONF_MAX_DEPTH. Returns the root
 * (caller frees with conf_ynode_free()), or NULL with *empty = 1 when the
 * stream holds no document, or NULL with *empty = 0 after adding errors.
 */
struct conf_ynode *conf_yaml_parse(const char *buf, size_t len,
    struct conf_diag *d, int *empty);
void conf_ynode_free(struct conf_ynode *n);

/* qsort() comparator over `const struct conf_ynode *` scalars: by text,
 * then by position. */
int conf_ynode_cmp(const void *a, const void *b);

/*
 * Build a tenant from the tree of one file (NULL: empty file). `slug` and
 * `path` are copied. Returns the tenant with one reference (caller frees
 * with conf_tenant_free()) or NULL after adding errors to d.
 */
struct conf_tenant *conf_tenant_build(const char *path, const char *slug,
    const struct conf_ynode *root, struct conf_diag *d);

/*
 * Fill *out from the tree of rfevents.yaml (NULL: empty file, defaults).
 * Returns 0, or -1 after adding errors to d (*out then undefined).
 */
int conf_server_build(const struct conf_ynode *root, struct conf_server *out,
    struct conf_diag *d);

/* 1 if s[0..len) is a tenant slug: [a-z0-9][a-z0-9_-]{0,63}. */
int conf_slug_ok(const char *s, size_t len);

#endif /* CONF_IMPL_H */
