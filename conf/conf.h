/*
 * conf/ — loading of $RFEVENTS_CONF (CONF.md): rfevents.yaml and
 * tenants/SLUG.yaml, with file:line:col errors, and reload on change.
 * Public names carry the conf_ prefix.
 */
#ifndef CONF_H
#define CONF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include <gmp.h>

struct rule_expr;

/* Server-wide settings from rfevents.yaml (all optional). */
struct conf_server {
	size_t max_body_single;   /* bytes, default 65536 */
	size_t max_body_batch;    /* bytes, default 8388608 */
	size_t max_batch_items;   /* default 1000 */
	int    log_level;         /* 0 error, 1 warn, 2 info (default), 3 debug */
};

enum conf_ptype {
	CONF_PT_STRING,
	CONF_PT_NUMBER,
	CONF_PT_INTEGER,
	CONF_PT_BOOLEAN,
	CONF_PT_TIMESTAMP,
	CONF_PT__MAX
};
extern const char *const conf_ptype_name[CONF_PT__MAX]; /* "string", ... */

struct conf_prop {
	char            *name;
	enum conf_ptype  type;
	int              required;
	int              has_min, has_max;
	mpq_t            min, max;        /* initialised only when has_min/has_max */
	long             max_length;      /* code points; -1 when not set */
	char           **enum_vals;       /* NULL when no enum; strings as written */
	size_t           nenum;
	char            *description;     /* may be NULL */
	int              filterable, derivable;
};

struct conf_event_type {
	char             *name;
	char             *description;    /* may be NULL */
	struct conf_prop *props;
	size_t            nprops;
};

struct conf_tier {
	char  *name;
	mpq_t  min_lifetime;
	mpq_t  multiplier;
};

struct conf_set {
	char             *name;           /* variable name */
	char             *src;            /* expression text */
	struct rule_expr *expr;           /* compiled */
};

struct conf_rule {
	char             *id;
	char             *event;          /* event type name */
	char             *when_src;   struct rule_expr *when;    /* NULL: always */
	char             *points_src; struct rule_expr *points;  /* NULL: none */
	char             *balance;        /* NULL unless `balance:` */
	char             *amount_src; struct rule_expr *amount;  /* with balance */
	struct conf_set  *sets;
	size_t            nsets;
	long              per_profile, per_day, per_month;  /* 0: no limit */
	int               stop;
	int               tier_multiplier;
};

enum conf_rounding { CONF_ROUND_FLOOR, CONF_ROUND_ROUND, CONF_ROUND_CEIL, CONF_ROUND__MAX };

struct conf_tenant {
	char                   *slug;            /* file name without .yaml */
	char                   *path;            /* file it was loaded from */
	char                    version[65];     /* SHA-256 hex of the file bytes */
	int                     auto_create_profiles;  /* default 1 */
	char                    default_cc[8];   /* digits; "" when not set */
	int                     allow_unknown_props;   /* unknown_properties: allow */
	enum conf_rounding      rounding;        /* default floor */
	struct conf_event_type *types;  size_t ntypes;
	struct conf_tier       *tiers;  size_t ntiers;   /* sorted by min_lifetime */
	struct conf_rule       *rules;  size_t nrules;   /* file order */
	unsigned                refs;   /* references: conf_tenant_load() and
	                                 * each struct conf holding it; dropped
	                                 * by conf_tenant_free() / conf_free() */
};

/* One problem found while loading: "file:line:col: message". */
struct conf_error {
	char *file;
	int   line, col;   /* 1-based; 0 when not known */
	char *msg;
};

/* A loaded configuration. Tenants sorted by slug. */
struct conf {
	char                *dir;
	struct conf_server   server;
	struct conf_tenant **tenants;  size_t ntenants;
	struct conf_error   *errors;   size_t nerrors;   /* files that failed */
};

/*
 * Load one tenant file. Returns the tenant (caller frees with
 * conf_tenant_free()) or NULL after appending at least one error to
 * *errs, *nerrs (a growable array the caller frees with conf_errors_free()).
 * Unknown keys, wrong types, bad expressions (rule_expr_compile) are errors
 * with the file position of the offending node (libyaml marks are 0-based;
 * reported 1-based; for an expression the column inside it is added).
 */
struct conf_tenant *conf_tenant_load(const char *path, struct conf_error **errs,
    size_t *nerrs);
/* Drops one reference (tenants are shared between struct conf snapshots of
 * conf_current()); frees at the last. Accepts NULL. */
void conf_tenant_free(struct conf_tenant *t);
void conf_errors_free(struct conf_error *errs, size_t n);

/* Write "file:line:col: msg" ("file: msg" when line is 0) into buf like
 * snprintf; returns what snprintf returns. */
int conf_error_fmt(const struct conf_error *e, char *buf, size_t size);

/* Fill s with the defaults of rfevents.yaml. */
void conf_server_default(struct conf_server *s);

/* Load a whole directory once (for `rfevents check` and at start).
 * Never NULL except out of memory; look at ->nerrors. Free with conf_free(). */
struct conf *conf_load(const char *dir);
void conf_free(struct conf *c);

/*
 * The per-process cached configuration with reload (CONF.md "Reload").
 * conf_current() re-checks the directory at most once per second (mtime,
 * size, inode of every file, files added or removed); a changed file is
 * parsed into a fresh tenant and swapped in only if it loads; a failing file
 * keeps its previous version (if any) and is listed in ->errors until fixed.
 * The returned pointer stays valid until the next conf_current() call.
 */
const struct conf *conf_current(const char *dir, time_t now);
void conf_current_free(void);

const struct conf_tenant *conf_tenant_find(const struct conf *c, const char *slug);
const struct conf_event_type *conf_type_find(const struct conf_tenant *t,
    const char *name);

#endif /* CONF_H */
