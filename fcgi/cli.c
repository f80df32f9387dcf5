/*
 * bin/rfevents — the operator command line (API.md §6):
 *   rfevents check [CONF]
 *   rfevents key create --tenant SLUG [--scopes s,...] [--sources s,...] [--name N]
 *   rfevents key list --tenant SLUG
 *   rfevents key revoke KEY_ID
 *   rfevents migrate
 *   rfevents import [options] FILE     (fcgi/import.c)
 * RFEVENTS_DB defaults to the private database of `make run` (var/db.env
 * next to the binary's bin/), RFEVENTS_CONF to conf/.
 */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "core/core.h"
#include "db/db.h"
#include "fcgi/fcgi.h"

static char topdir[PATH_MAX];   /* the checkout: parent of bin/ */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: rfevents check [CONF]\n"
	    "       rfevents key create --tenant SLUG [--scopes s,...] [--sources s,...] [--name N]\n"
	    "       rfevents key list --tenant SLUG\n"
	    "       rfevents key revoke KEY_ID\n"
	    "       rfevents migrate\n"
	    "       rfevents import [--url URL] [--key KEY] [--format ndjson|csv] [--map COL=FIELD,...]\n"
	    "                       [--source S] [--event-type T] [--batch N] [--errors FILE]\n"
	    "                       [--state FILE] [--restart] [--max-retries N] [--timeout S] FILE\n");
	exit(2);
}

/* Find the checkout from /proc/self/exe (bin/rfevents -> ..). */
static void
find_topdir(void)
{
	char    exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0) {
		snprintf(topdir, sizeof(topdir), ".");
		return;
	}
	exe[n] = '\0';
	/* dirname() works in place: ".../bin/rfevents" -> ".../bin" -> "..." */
	snprintf(topdir, sizeof(topdir), "%s", dirname(dirname(exe)));
}

/* RFEVENTS_DB, or the RFEVENTS_DB= line of var/db.env. Caller frees. */
static char *
db_url(void)
{
	const char *env = getenv("RFEVENTS_DB");
	char        path[PATH_MAX + 32], line[2048];
	FILE       *f;

	if (env != NULL && *env != '\0')
		return strdup(env);
	if ((env = getenv("RFEVENTS_DB_FILE")) != NULL && *env != '\0')
		snprintf(path, sizeof(path), "%s", env);
	else
		snprintf(path, sizeof(path), "%s/var/db.env", topdir);
	if ((f = fopen(path, "r")) == NULL)
		return NULL;
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, "RFEVENTS_DB=", 12) == 0) {
			fclose(f);
			return strdup(line + 12);
		}
		if (strncmp(line, "mariadb://", 10) == 0) {
			fclose(f);
			return strdup(line);
		}
	}
	fclose(f);
	return NULL;
}

static struct db *
open_db(void)
{
	char       err[256];
	char      *url = db_url();
	struct db *db;

	if (url == NULL) {
		fprintf(stderr, "rfevents: RFEVENTS_DB is not set and %s/var/db.env"
		    " does not exist (run `make run` first)\n", topdir);
		exit(1);
	}
	db = db_open(url, err, sizeof(err));
	free(url);
	if (db == NULL) {
		fprintf(stderr, "rfevents: %s\n", err);
		exit(1);
	}
	if (db_connect(db) != DB_OK) {
		fprintf(stderr, "rfevents: cannot connect to the database: %s\n",
		    db_last_error(db));
		db_close(db);
		exit(1);
	}
	return db;
}

static int
cmd_check(int argc, char **argv)
{
	const char  *dir = argc > 0 ? argv[0] : getenv("RFEVENTS_CONF");
	char         def[PATH_MAX + 8];
	struct conf *c;
	size_t       i;
	int          ret;

	if (dir == NULL || *dir == '\0') {
		snprintf(def, sizeof(def), "%s/conf", topdir);
		dir = def;
	}
	if ((c = conf_load(dir)) == NULL) {
		fprintf(stderr, "rfevents: out of memory\n");
		return 1;
	}
	for (i = 0; i < c->nerrors; i++) {
		char line[2048];
		conf_error_fmt(&c->errors[i], line, sizeof(line));
		printf("%s\n", line);
	}
	ret = c->nerrors > 0 ? 1 : 0;
	if (ret == 0)
		fprintf(stderr, "%s: ok, %zu tenant(s)\n", dir, c->ntenants);
	conf_free(c);
	return ret;
}

/* Value of --name VALUE in argv, or NULL. */
static const char *
opt(int argc, char **argv, const char *name)
{
	int i;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], name) == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "rfevents: %s needs a value\n", name);
				exit(2);
			}
			return argv[i + 1];
		}
		if (strncmp(argv[i], name, strlen(name)) == 0 &&
		    argv[i][strlen(name)] == '=')
			return argv[i] + strlen(name) + 1;
	}
	return NULL;
}

/* Refuse options we do not know, so a typo never creates a wrong key. */
static void
known_opts(int argc, char **argv, const char *const *known)
{
	int i, j;

	for (i = 0; i < argc; i++) {
		if (strncmp(argv[i], "--", 2) != 0)
			continue;
		for (j = 0; known[j] != NULL; j++) {
			size_t n = strlen(known[j]);
			if (strncmp(argv[i], known[j], n) == 0 &&
			    (argv[i][n] == '\0' || argv[i][n] == '='))
				break;
		}
		if (known[j] == NULL) {
			fprintf(stderr, "rfevents: unknown option %s\n", argv[i]);
			exit(2);
		}
	}
}

static int
cmd_key(int argc, char **argv)
{
	static const char *const create_opts[] =
	    { "--tenant", "--scopes", "--sources", "--name", NULL };
	static const char *const list_opts[] = { "--tenant", NULL };
	struct db *db;
	int        ret = 1;

	if (argc < 1)
		usage();
	if (strcmp(argv[0], "create") == 0) {
		const char *tenant, *scopes, *sources, *name;
		char        key[128], err[256];
		known_opts(argc - 1, argv + 1, create_opts);
		tenant = opt(argc - 1, argv + 1, "--tenant");
		scopes = opt(argc - 1, argv + 1, "--scopes");
		sources = opt(argc - 1, argv + 1, "--sources");
		name = opt(argc - 1, argv + 1, "--name");
		if (tenant == NULL || *tenant == '\0')
			usage();
		db = open_db();
		if (ev_key_create(db, tenant, scopes ? scopes : "events:write",
		    sources, name, key, sizeof(key), err, sizeof(err)) != 0) {
			fprintf(stderr, "rfevents: %s\n", err);
		} else {
			printf("%s\n", key);
			memset(key, 0, sizeof(key));
			ret = 0;
		}
		db_close(db);
		return ret;
	}
	if (strcmp(argv[0], "list") == 0) {
		const char     *tenant;
		struct db_param p;
		struct db_res   r;
		size_t          i;
		known_opts(argc - 1, argv + 1, list_opts);
		if ((tenant = opt(argc - 1, argv + 1, "--tenant")) == NULL)
			usage();
		db = open_db();
		p = DBP_CSTR(tenant);
		if (db_exec(db, DB_KEY_LIST, &p, 1, &r, NULL, NULL) != DB_OK) {
			fprintf(stderr, "rfevents: %s\n", db_last_error(db));
			db_close(db);
			return 1;
		}
		/* KEY_ID prefix scopes sources name created revoked */
		for (i = 0; i < r.nrows; i++)
			printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			    DB_CELL(&r, i, 0)->v, DB_CELL(&r, i, 1)->v,
			    DB_CELL(&r, i, 2)->v,
			    DB_CELL(&r, i, 3)->v ? DB_CELL(&r, i, 3)->v : "*",
			    DB_CELL(&r, i, 4)->v && DB_CELL(&r, i, 4)->v[0] ?
			    DB_CELL(&r, i, 4)->v : "-",
			    DB_CELL(&r, i, 5)->v ? DB_CELL(&r, i, 5)->v : "-",
			    DB_CELL(&r, i, 6)->v ? DB_CELL(&r, i, 6)->v : "-");
		db_res_free(&r);
		db_close(db);
		return 0;
	}
	if (strcmp(argv[0], "revoke") == 0) {
		struct db_param p;
		uint64_t        n = 0;
		if (argc != 2)
			usage();
		db = open_db();
		p = DBP_CSTR(argv[1]);
		if (db_exec(db, DB_KEY_REVOKE, &p, 1, NULL, &n, NULL) != DB_OK)
			fprintf(stderr, "rfevents: %s\n", db_last_error(db));
		else if (n == 0)
			fprintf(stderr, "rfevents: no active key %s\n", argv[1]);
		else {
			printf("revoked %s\n", argv[1]);
			ret = 0;
		}
		db_close(db);
		return ret;
	}
	usage();
	return 2;
}

static int
cmd_migrate(void)
{
	const char *dir = getenv("RFEVENTS_MIGRATIONS");
	char        def[PATH_MAX + 32];
	struct db  *db = open_db();
	int         ret;

	if (dir == NULL || *dir == '\0') {
		snprintf(def, sizeof(def), "%s/db/migrations", topdir);
		dir = def;
	}
	ret = db_migrate(db, dir) == 0 ? 0 : 1;
	db_close(db);
	return ret;
}

int
main(int argc, char **argv)
{
	find_topdir();
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "check") == 0)
		return cmd_check(argc - 2, argv + 2);
	if (strcmp(argv[1], "key") == 0)
		return cmd_key(argc - 2, argv + 2);
	if (strcmp(argv[1], "migrate") == 0)
		return cmd_migrate();
	if (strcmp(argv[1], "import") == 0)
		return import_main(argc - 2, argv + 2);
	usage();
	return 2;
}
