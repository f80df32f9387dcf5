/*
 * conf/conf.c — files and folders of $RFEVENTS_CONF (CONF.md): reading a
 * file once (size limit, SHA-256 version of the exact bytes), loading a
 * tenant or rfevents.yaml, loading a whole folder, and the per-process
 * reload cache behind conf_current().
 *
 * Reload cache. For every file it keeps the stat data of the bytes last
 * read (device, inode, size, mtime and ctime with nanoseconds), the SHA-256
 * of the bytes last parsed, the last good version (a tenant or the server
 * settings) and the errors of the last attempt. At most once per second
 * conf_current() lists the folder and, for each file:
 *   - stat unchanged, loaded fine and not "racy": nothing is read;
 *   - otherwise the bytes are read and hashed; the same bytes as last
 *     parsed change nothing; other bytes are parsed and, when they load,
 *     replace the last good version; when they don't, the old version
 *     stays and the errors are listed in ->errors.
 * "Racy" (as in git's racy-clean index entries): a file modified less than
 * 2 s before it was read could be rewritten within the same timestamp
 * granule with the same size, leaving stat unchanged; such a file is read
 * again (and hashed) at each check until its mtime is 2 s older than the
 * read. A file that failed is read again at each check too.
 *
 * Snapshots. When anything changed, a new struct conf is built: it holds a
 * reference to each current tenant (conf_tenant.refs) and copies of the
 * errors. The previous snapshot is released by that call (its pointer is
 * valid until the next conf_current(), as conf.h promises); a tenant is
 * freed when neither the cache nor a snapshot holds it. Not thread-safe:
 * one cache per process, used by one thread.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "conf/conf_impl.h"

#define SERVER_FILE  "rfevents.yaml"
#define TENANTS_DIR  "tenants"
#define YAML_SUFFIX  ".yaml"
#define RACY_SECONDS 2

/* What stat() says about one file. */
struct fstamp {
	dev_t           dev;
	ino_t           ino;
	off_t           size;
	struct timespec mtim, ctim;
};

/* The bytes of one file as read by read_file(). */
struct fdata {
	char            *buf;        /* NUL-terminated copy; caller frees */
	size_t           len;
	struct fstamp    st;
	struct timespec  read_at;    /* CLOCK_REALTIME just before reading */
	unsigned char    hash[32];   /* SHA-256 of buf[0..len) */
};

static void
stamp_of(const struct stat *sb, struct fstamp *st)
{
	memset(st, 0, sizeof(*st));
	st->dev = sb->st_dev;
	st->ino = sb->st_ino;
	st->size = sb->st_size;
	st->mtim = sb->st_mtim;
	st->ctim = sb->st_ctim;
}

static int
stamp_eq(const struct fstamp *a, const struct fstamp *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	    a->mtim.tv_sec == b->mtim.tv_sec &&
	    a->mtim.tv_nsec == b->mtim.tv_nsec &&
	    a->ctim.tv_sec == b->ctim.tv_sec &&
	    a->ctim.tv_nsec == b->ctim.tv_nsec;
}

/* 1 when the file was modified less than RACY_SECONDS before read_at. */
static int
stamp_racy(const struct fstamp *st, const struct timespec *read_at)
{
	time_t d = read_at->tv_sec - st->mtim.tv_sec;

	if (d != RACY_SECONDS)
		return d < RACY_SECONDS;
	return read_at->tv_nsec < st->mtim.tv_nsec;
}

/* "a/b" in a new string (caller frees). */
static char *
path_join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = conf_xmalloc(la + lb + 2);

	memcpy(p, a, la);
	p[la] = '/';
	memcpy(p + la + 1, b, lb + 1);
	return p;
}

/*
 * Read the whole regular file `path` (at most CONF_MAX_FILE bytes) once
 * into f->buf, with the stat data of exactly those bytes and their SHA-256.
 * The file is fstat'ed before and after reading and read again (3 tries)
 * when it changed meanwhile. Returns 0 (caller frees f->buf) or -1 after
 * adding an error to d. Frees, at `out`: the descriptor, and on error the
 * buffer.
 */
static int
read_file(const char *path, struct fdata *f, struct conf_diag *d)
{
	struct stat a, b;
	size_t cap;
	ssize_t n;
	int fd, tries, rc = -1;

	memset(f, 0, sizeof(*f));
	clock_gettime(CLOCK_REALTIME, &f->read_at);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1) {
		conf_diag_add(d, 0, 0, "cannot open: %s", strerror(errno));
		return -1;
	}
	for (tries = 0;; tries++) {
		if (fstat(fd, &a) == -1) {
			conf_diag_add(d, 0, 0, "cannot stat: %s", strerror(errno));
			goto out;
		}
		if (!S_ISREG(a.st_mode)) {
			conf_diag_add(d, 0, 0, "not a regular file");
			goto out;
		}
		if (a.st_size > CONF_MAX_FILE)
			goto too_big;
		if (lseek(fd, 0, SEEK_SET) == -1) {
			conf_diag_add(d, 0, 0, "cannot seek: %s", strerror(errno));
			goto out;
		}
		/* Room for one byte more than stat said, to see growth. */
		cap = (size_t)a.st_size + 1;
		f->buf = conf_xrealloc(f->buf, cap + 1);
		f->len = 0;
		for (;;) {
			n = read(fd, f->buf + f->len, cap - f->len);
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1) {
				conf_diag_add(d, 0, 0, "cannot read: %s",
				    strerror(errno));
				goto out;
			}
			if (n == 0)
				break;
			f->len += (size_t)n;
			if (f->len < cap)
				continue;
			if (cap > CONF_MAX_FILE)
				goto too_big;
			cap = cap > CONF_MAX_FILE / 2 ? CONF_MAX_FILE + 1 : cap * 2;
			f->buf = conf_xrealloc(f->buf, cap + 1);
		}
		if (fstat(fd, &b) == -1) {
			conf_diag_add(d, 0, 0, "cannot stat: %s", strerror(errno));
			goto out;
		}
		stamp_of(&a, &f->st);
		if ((off_t)f->len == b.st_size && b.st_size == a.st_size &&
		    b.st_mtim.tv_sec == a.st_mtim.tv_sec &&
		    b.st_mtim.tv_nsec == a.st_mtim.tv_nsec)
			break;
		if (tries == 2) {
			conf_diag_add(d, 0, 0, "file keeps changing while "
			    "being read");
			goto out;
		}
	}
	f->buf[f->len] = '\0';
	if (!EVP_Digest(f->buf, f->len, f->hash, NULL, EVP_sha256(), NULL)) {
		conf_diag_add(d, 0, 0, "SHA-256 failed");
		goto out;
	}
	rc = 0;
	goto out;
too_big:
	conf_diag_add(d, 0, 0, "file larger than %d bytes", CONF_MAX_FILE);
out:
	close(fd);
	if (rc == -1) {
		free(f->buf);
		f->buf = NULL;
	}
	return rc;
}

/*
 * Build a tenant from bytes already read from `path`: slug from the file
 * name (SLUG.yaml), YAML tree, schema, version = hex SHA-256. Returns the
 * tenant (one reference; caller frees with conf_tenant_free()) or NULL
 * after adding errors to d. Frees, before returning: the tree.
 */
static struct conf_tenant *
tenant_from(const char *path, const struct fdata *f, struct conf_diag *d)
{
	static const char hex[] = "0123456789abcdef";
	struct conf_tenant *t = NULL;
	struct conf_ynode *root;
	const char *base = strrchr(path, '/');
	char slug[CONF_MAX_NAME + 1] = "";
	size_t len, i;
	int empty, bad_name = 0;

	base = base ? base + 1 : path;
	len = strlen(base);
	if (len > strlen(YAML_SUFFIX) &&
	    strcmp(base + len - strlen(YAML_SUFFIX), YAML_SUFFIX) == 0 &&
	    conf_slug_ok(base, len - strlen(YAML_SUFFIX))) {
		memcpy(slug, base, len - strlen(YAML_SUFFIX));
		slug[len - strlen(YAML_SUFFIX)] = '\0';
	} else {
		conf_diag_add(d, 0, 0, "bad file name: a tenant file is named "
		    "SLUG.yaml, SLUG matching [a-z0-9][a-z0-9_-]{0,63}");
		bad_name = 1;
	}
	root = conf_yaml_parse(f->buf, f->len, d, &empty);
	if (root != NULL || empty)
		t = conf_tenant_build(path, slug, root, d);
	conf_ynode_free(root);
	if (t == NULL)
		return NULL;
	if (bad_name) {
		conf_tenant_free(t);
		return NULL;
	}
	for (i = 0; i < sizeof(f->hash); i++) {
		t->version[2 * i] = hex[f->hash[i] >> 4];
		t->version[2 * i + 1] = hex[f->hash[i] & 15];
	}
	t->version[64] = '\0';
	return t;
}

/* Settings from the bytes of rfevents.yaml. Returns 0 or -1 (errors in d). */
static int
server_from(const struct fdata *f, struct conf_server *out,
    struct conf_diag *d)
{
	struct conf_ynode *root;
	int empty, rc = -1;

	root = conf_yaml_parse(f->buf, f->len, d, &empty);
	if (root != NULL || empty)
		rc = conf_server_build(root, out, d);
	conf_ynode_free(root);
	return rc;
}

/* See conf.h. Frees, before returning: the file's bytes. */
struct conf_tenant *
conf_tenant_load(const char *path, struct conf_error **errs, size_t *nerrs)
{
	struct conf_diag d = { path, errs, nerrs, 0 };
	struct conf_tenant *t;
	struct fdata f;

	if (read_file(path, &f, &d) == -1)
		return NULL;
	t = tenant_from(path, &f, &d);
	free(f.buf);
	return t;
}

void
conf_errors_free(struct conf_error *errs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(errs[i].file);
		free(errs[i].msg);
	}
	free(errs);
}

int
conf_error_fmt(const struct conf_error *e, char *buf, size_t size)
{
	if (e->line > 0)
		return snprintf(buf, size, "%s:%d:%d: %s", e->file, e->line,
		    e->col, e->msg);
	return snprintf(buf, size, "%s: %s", e->file, e->msg);
}

/* Append copies of errs[0..n) to the array *to / *nto. */
static void
errors_append(struct conf_error **to, size_t *nto, const struct conf_error *errs,
    size_t n)
{
	size_t i;

	if (n == 0)
		return;
	*to = conf_xrealloc(*to, (*nto + n) * sizeof(**to));
	for (i = 0; i < n; i++) {
		(*to)[*nto].file = conf_xstrdup(errs[i].file);
		(*to)[*nto].line = errs[i].line;
		(*to)[*nto].col = errs[i].col;
		(*to)[*nto].msg = conf_xstrdup(errs[i].msg);
		(*nto)++;
	}
}

static int
errors_eq(const struct conf_error *a, size_t na, const struct conf_error *b,
    size_t nb)
{
	size_t i;

	if (na != nb)
		return 0;
	for (i = 0; i < na; i++)
		if (a[i].line != b[i].line || a[i].col != b[i].col ||
		    strcmp(a[i].msg, b[i].msg) != 0 ||
		    strcmp(a[i].file, b[i].file) != 0)
			return 0;
	return 1;
}

static int
strp_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
tenantp_cmp(const void *a, const void *b)
{
	return strcmp((*(struct conf_tenant *const *)a)->slug,
	    (*(struct conf_tenant *const *)b)->slug);
}

/*
 * Names of the candidate tenant files in folder `tdir`: NAME.yaml, not
 * hidden (editor swap files, backups like x.yaml~ and other files are
 * skipped; a bad slug is reported when the file is loaded). Returns 0 with
 * a sorted array in *names / *n (caller frees each and the array), or -1
 * after an error in d.
 */
static int
list_tenant_files(const char *tdir, char ***names, size_t *n,
    struct conf_diag *d)
{
	DIR *dp;
	struct dirent *de;
	size_t len, cap = 0;

	*names = NULL;
	*n = 0;
	if ((dp = opendir(tdir)) == NULL) {
		conf_diag_add(d, 0, 0, "cannot read folder: %s", strerror(errno));
		return -1;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(dp)) == NULL)
			break;
		len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len <= strlen(YAML_SUFFIX) ||
		    strcmp(de->d_name + len - strlen(YAML_SUFFIX),
		    YAML_SUFFIX) != 0)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 16;
			*names = conf_xrealloc(*names, cap * sizeof(**names));
		}
		(*names)[(*n)++] = conf_xstrdup(de->d_name);
	}
	if (errno != 0) {
		conf_diag_add(d, 0, 0, "cannot read folder: %s", strerror(errno));
		closedir(dp);
		while (*n > 0)
			free((*names)[--*n]);
		free(*names);
		*names = NULL;
		return -1;
	}
	closedir(dp);
	if (*n > 1)
		qsort(*names, *n, sizeof(**names), strp_cmp);
	return 0;
}

static void
names_free(char **names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/*
 * See conf.h. Frees, before returning: paths, name lists and file bytes;
 * the struct conf and what it holds go to the caller (conf_free()).
 */
struct conf *
conf_load(const char *dir)
{
	struct conf *c = conf_xcalloc(1, sizeof(*c));
	struct conf_diag d = { NULL, &c->errors, &c->nerrors, 0 };
	struct conf_tenant *t;
	struct conf_server s;
	struct fdata f;
	struct stat sb;
	char *path, *tdir, **names;
	size_t i, n;

	c->dir = conf_xstrdup(dir);
	conf_server_default(&c->server);
	path = path_join(dir, SERVER_FILE);
	d.file = path;
	if (stat(path, &sb) == 0 || errno != ENOENT) {
		if (read_file(path, &f, &d) == 0) {
			if (server_from(&f, &s, &d) == 0)
				c->server = s;
			free(f.buf);
		}
	}
	free(path);
	tdir = path_join(dir, TENANTS_DIR);
	d.file = tdir;
	d.count = 0;
	if (list_tenant_files(tdir, &names, &n, &d) == 0) {
		c->tenants = conf_xcalloc(n, sizeof(*c->tenants));
		for (i = 0; i < n; i++) {
			path = path_join(tdir, names[i]);
			t = conf_tenant_load(path, &c->errors, &c->nerrors);
			if (t != NULL)
				c->tenants[c->ntenants++] = t;
			free(path);
		}
		qsort(c->tenants, c->ntenants, sizeof(*c->tenants), tenantp_cmp);
		names_free(names, n);
	}
	free(tdir);
	return c;
}

/* Release a struct conf: its strings, errors and one reference to each
 * tenant. Accepts NULL. */
void
conf_free(struct conf *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < c->ntenants; i++)
		conf_tenant_free(c->tenants[i]);
	free(c->tenants);
	conf_errors_free(c->errors, c->nerrors);
	free(c->dir);
	free(c);
}

/* Binary search: tenants are sorted by slug. */
const struct conf_tenant *
conf_tenant_find(const struct conf *c, const char *slug)
{
	size_t lo = 0, hi, mid;
	int cmp;

	if (c == NULL || slug == NULL)
		return NULL;
	hi = c->ntenants;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		cmp = strcmp(slug, c->tenants[mid]->slug);
		if (cmp == 0)
			return c->tenants[mid];
		if (cmp < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Linear: at most CONF_MAX_TYPES types, in file order. */
const struct conf_event_type *
conf_type_find(const struct conf_tenant *t, const char *name)
{
	size_t i;

	if (t == NULL || name == NULL)
		return NULL;
	for (i = 0; i < t->ntypes; i++)
		if (t->types[i].name != NULL && strcmp(t->types[i].name, name) == 0)
			return &t->types[i];
	return NULL;
}

/* ---- the reload cache ---- */

/* One watched file (see the comment at the top). */
struct cfile {
	char               *name;       /* "acme.yaml"; NULL for rfevents.yaml */
	char               *path;
	int                 have_st;    /* st, read_at: of the last read */
	struct fstamp       st;
	struct timespec     read_at;
	int                 have_hash;  /* hash: of the last bytes parsed */
	unsigned char       hash[32];
	struct conf_error  *errs;       /* of the last attempt; none: fine */
	size_t              nerrs;
	struct conf_tenant *t;          /* last good tenant (one reference) */
	int                 have_srv;   /* rfevents.yaml: srv is last good */
	struct conf_server  srv;
};

static struct {
	char              *dir;
	time_t             checked;     /* `now` of the last check */
	struct cfile       server;      /* dir/rfevents.yaml */
	char              *tdir;        /* dir/tenants */
	struct cfile      *files;       /* tenant files, sorted by name */
	size_t             nfiles;
	struct conf_error *dir_errs;    /* dir/tenants unreadable */
	size_t             ndir_errs;
	struct conf       *snap;        /* what conf_current() returns */
	char              *lg_dir;      /* last good copies; NULL: none */
	int                lg_tried;
} cache;

/*
 * Last good copies of tenant files, shared by every process of one
 * deployment. A process keeps the previous version of a file that fails to
 * load, but a worker the web server starts after the file broke has no
 * previous version of its own (mod_fcgid and plain CGI start processes on
 * demand); it loads the copy the others saved instead, so every process
 * keeps serving the same rules. The folder is $RFEVENTS_STATE ("off": no
 * copies), or
 * /dev/shm/rfevents-conf-UID-HASH (HASH of the configuration folder's path),
 * created 0700 and trusted only when it belongs to this user.
 */
static const char *
lastgood_dir(void)
{
	const char   *env = getenv("RFEVENTS_STATE");
	char          buf[4096], real[4096];
	unsigned char md[32];
	unsigned int  mdlen = 0;
	struct stat   sb;

	if (cache.lg_tried)
		return cache.lg_dir;
	cache.lg_tried = 1;
	if (env != NULL && strcmp(env, "off") == 0)
		return NULL;
	if (env != NULL && *env != '\0')
		snprintf(buf, sizeof(buf), "%s", env);
	else {
		const char *d = realpath(cache.dir, real) ? real : cache.dir;
		EVP_Digest(d, strlen(d), md, &mdlen, EVP_sha256(), NULL);
		snprintf(buf, sizeof(buf), "/dev/shm/rfevents-conf-%lu-%02x%02x%02x%02x"
		    "%02x%02x%02x%02x", (unsigned long)getuid(), md[0], md[1], md[2],
		    md[3], md[4], md[5], md[6], md[7]);
	}
	if (mkdir(buf, 0700) == -1 && errno != EEXIST)
		return NULL;
	if (lstat(buf, &sb) == -1 || !S_ISDIR(sb.st_mode) || sb.st_uid != getuid() ||
	    (sb.st_mode & 077) != 0)
		return NULL;
	cache.lg_dir = conf_xstrdup(buf);
	return cache.lg_dir;
}

/* Save the bytes of a tenant file that loaded (write, then rename). */
static void
lastgood_save(const char *name, const struct fdata *fd)
{
	const char *dir = lastgood_dir();
	char        tmp[4200], path[4200];
	FILE       *f;

	if (dir == NULL || name == NULL)
		return;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.%ld", dir, name, (long)getpid());
	if ((f = fopen(tmp, "wb")) == NULL)
		return;
	if (fwrite(fd->buf, 1, fd->len, f) != fd->len || fclose(f) != 0) {
		unlink(tmp);
		return;
	}
	if (rename(tmp, path) == -1)
		unlink(tmp);
}

/* The tenant of the last good copy of f, or NULL (its errors dropped). */
static struct conf_tenant *
lastgood_load(const struct cfile *f)
{
	const char         *dir = lastgood_dir();
	char                path[4200];
	struct conf_error  *errs = NULL;
	size_t              nerrs = 0;
	struct conf_diag    d = { path, &errs, &nerrs, 0 };
	struct conf_tenant *t = NULL;
	struct fdata        fd;

	if (dir == NULL || f->name == NULL)
		return NULL;
	snprintf(path, sizeof(path), "%s/%s", dir, f->name);
	if (read_file(path, &fd, &d) == 0) {
		/* built under the real path: the slug comes from the file name */
		t = tenant_from(f->path, &fd, &d);
		free(fd.buf);
	}
	conf_errors_free(errs, nerrs);
	return t;
}

/* Free what one record holds (not the record itself). */
static void
cfile_clear(struct cfile *f)
{
	free(f->name);
	free(f->path);
	conf_errors_free(f->errs, f->nerrs);
	conf_tenant_free(f->t);
	memset(f, 0, sizeof(*f));
}

/* Replace f's errors by errs/n (taking them); returns 1 if they differ. */
static int
cfile_set_errors(struct cfile *f, struct conf_error *errs, size_t n)
{
	int changed = !errors_eq(f->errs, f->nerrs, errs, n);

	conf_errors_free(f->errs, f->nerrs);
	f->errs = errs;
	f->nerrs = n;
	return changed;
}

/*
 * Bring one watched file up to date (see the top comment). `server`: the
 * file is rfevents.yaml, whose absence means defaults. Returns 1 when what
 * a snapshot shows of it (version or errors) changed, else 0. Frees,
 * before returning: the bytes read; a replaced tenant loses the cache's
 * reference.
 */
static int
cfile_refresh(struct cfile *f, int server)
{
	struct conf_error *errs = NULL;
	size_t nerrs = 0;
	struct conf_diag d = { f->path, &errs, &nerrs, 0 };
	struct conf_tenant *t;
	struct conf_server s;
	struct fstamp now;
	struct fdata fd;
	struct stat sb;
	int changed;

	if (stat(f->path, &sb) == 0) {
		stamp_of(&sb, &now);
		if (f->have_st && f->nerrs == 0 && stamp_eq(&f->st, &now) &&
		    !stamp_racy(&f->st, &f->read_at))
			return 0;
	} else if (errno == ENOENT && server) {
		changed = f->have_srv || f->nerrs > 0;
		cfile_set_errors(f, NULL, 0);
		f->have_srv = f->have_st = f->have_hash = 0;
		return changed;
	}
	if (read_file(f->path, &fd, &d) == -1) {
		f->have_st = f->have_hash = 0;
		if (!server && f->t == NULL)
			f->t = lastgood_load(f);
		return cfile_set_errors(f, errs, nerrs);
	}
	f->st = fd.st;
	f->read_at = fd.read_at;
	f->have_st = 1;
	if (f->have_hash && memcmp(f->hash, fd.hash, sizeof(f->hash)) == 0) {
		free(fd.buf);
		return 0;   /* same bytes, same outcome */
	}
	memcpy(f->hash, fd.hash, sizeof(f->hash));
	f->have_hash = 1;
	if (server) {
		if (server_from(&fd, &s, &d) == 0) {
			f->srv = s;
			f->have_srv = 1;
		}
	} else if ((t = tenant_from(f->path, &fd, &d)) != NULL) {
		conf_tenant_free(f->t);
		f->t = t;
		lastgood_save(f->name, &fd);
	} else if (f->t == NULL)
		f->t = lastgood_load(f);
	free(fd.buf);
	cfile_set_errors(f, errs, nerrs);
	return 1;
}

/*
 * List dir/tenants and merge it with the records: vanished files drop
 * their tenant, new files are loaded, the others refreshed. When the folder
 * cannot be listed, every record stays as it is and the error is listed.
 * Returns 1 when a snapshot would change.
 */
static int
refresh_tenants(void)
{
	struct conf_error *errs = NULL;
	size_t nerrs = 0;
	struct conf_diag d = { cache.tdir, &errs, &nerrs, 0 };
	struct cfile *nf;
	char **names;
	size_t n, i = 0, j = 0, k = 0;
	int cmp, changed;

	if (list_tenant_files(cache.tdir, &names, &n, &d) == -1) {
		changed = !errors_eq(cache.dir_errs, cache.ndir_errs, errs, nerrs);
		conf_errors_free(cache.dir_errs, cache.ndir_errs);
		cache.dir_errs = errs;
		cache.ndir_errs = nerrs;
		return changed;
	}
	changed = cache.ndir_errs > 0;
	conf_errors_free(cache.dir_errs, cache.ndir_errs);
	cache.dir_errs = NULL;
	cache.ndir_errs = 0;
	nf = conf_xcalloc(n, sizeof(*nf));
	/* Merge two sorted lists: old records i, new names j, result k. */
	while (i < cache.nfiles || j < n) {
		if (i == cache.nfiles)
			cmp = 1;
		else if (j == n)
			cmp = -1;
		else
			cmp = strcmp(cache.files[i].name, names[j]);
		if (cmp < 0) {
			cfile_clear(&cache.files[i++]);   /* deleted */
			changed = 1;
			continue;
		}
		if (cmp == 0) {
			nf[k] = cache.files[i++];
			free(names[j++]);
		} else {
			nf[k].name = names[j++];
			nf[k].path = path_join(cache.tdir, nf[k].name);
			changed = 1;
		}
		changed |= cfile_refresh(&nf[k++], 0);
	}
	free(names);
	free(cache.files);
	cache.files = nf;
	cache.nfiles = k;
	return changed;
}

/* A new snapshot of the cache: references to the good tenants, copies of
 * the errors. Caller frees with conf_free(). */
static struct conf *
snapshot(void)
{
	struct conf *c = conf_xcalloc(1, sizeof(*c));
	size_t i;

	c->dir = conf_xstrdup(cache.dir);
	if (cache.server.have_srv)
		c->server = cache.server.srv;
	else
		conf_server_default(&c->server);
	errors_append(&c->errors, &c->nerrors, cache.server.errs,
	    cache.server.nerrs);
	errors_append(&c->errors, &c->nerrors, cache.dir_errs, cache.ndir_errs);
	c->tenants = conf_xcalloc(cache.nfiles, sizeof(*c->tenants));
	for (i = 0; i < cache.nfiles; i++) {
		errors_append(&c->errors, &c->nerrors, cache.files[i].errs,
		    cache.files[i].nerrs);
		if (cache.files[i].t == NULL)
			continue;
		cache.files[i].t->refs++;
		c->tenants[c->ntenants++] = cache.files[i].t;
	}
	qsort(c->tenants, c->ntenants, sizeof(*c->tenants), tenantp_cmp);
	return c;
}

/*
 * See conf.h and the top of this file. `now` only paces the checks (one
 * per distinct second); a different `dir` starts a new cache.
 */
const struct conf *
conf_current(const char *dir, time_t now)
{
	int changed = 0;

	if (cache.dir != NULL && strcmp(cache.dir, dir) != 0)
		conf_current_free();
	if (cache.snap != NULL && now == cache.checked)
		return cache.snap;
	if (cache.dir == NULL) {
		cache.dir = conf_xstrdup(dir);
		cache.server.path = path_join(dir, SERVER_FILE);
		cache.tdir = path_join(dir, TENANTS_DIR);
		changed = 1;
	}
	cache.checked = now;
	changed |= cfile_refresh(&cache.server, 1);
	changed |= refresh_tenants();
	if (changed || cache.snap == NULL) {
		conf_free(cache.snap);
		cache.snap = snapshot();
	}
	return cache.snap;
}

/* Free the cache and its snapshot (for clean exits under valgrind). */
void
conf_current_free(void)
{
	size_t i;

	conf_free(cache.snap);
	for (i = 0; i < cache.nfiles; i++)
		cfile_clear(&cache.files[i]);
	free(cache.files);
	cfile_clear(&cache.server);
	conf_errors_free(cache.dir_errs, cache.ndir_errs);
	free(cache.tdir);
	free(cache.dir);
	free(cache.lg_dir);
	memset(&cache, 0, sizeof(cache));
}
