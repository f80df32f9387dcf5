/*
 * fcgi/ — the HTTP front: one request in (FastCGI or CGI), one JSON
 * response out. Routing, limits, authentication and the handlers that call
 * into core/. Public names carry the fcgi_ prefix.
 */
#ifndef FCGI_H
#define FCGI_H

#include <stddef.h>
#include <stdint.h>

struct db;

/* How to reach one request's environment and streams. */
struct fcgi_io {
	void        *ctx;
	const char *(*getenv)(void *ctx, const char *name);
	/* read up to n bytes; bytes read, 0 at end, -1 on error */
	long        (*read)(void *ctx, char *buf, size_t n);
	/* write n bytes; 0 or -1 */
	int         (*write)(void *ctx, const char *buf, size_t n);
	/* the answer is complete: send it and end the request now, before
	 * the worker serves the others taken with it (may be NULL) */
	void        (*done)(void *ctx);
};

/* Per-process state shared by every request. */
struct fcgi_app {
	struct db  *db;          /* NULL when RFEVENTS_DB is unusable */
	char        db_err[256]; /* why db is NULL */
	const char *conf_dir;
	uint64_t    requests;
	int         trim_due;    /* a large request left memory to give back */
	int         last_big;    /* the last request was such a one */
};

/* Set up the process: read RFEVENTS_DB / RFEVENTS_CONF. 0 or -1. */
int  fcgi_app_init(struct fcgi_app *app);
void fcgi_app_free(struct fcgi_app *app);
/*
 * After a request's answer was sent (FCGX_Finish_r): 1 when it left a
 * read transaction open that the next request may continue
 * (db_read_kept(), at most FCGI_READ_KEEP_US old); the caller must then
 * call fcgi_app_release() unless a request arrives within FCGI_IDLE_MS.
 * 0 when nothing is left open.
 */
#define FCGI_READ_KEEP_US 50000
#define FCGI_IDLE_MS      20
int  fcgi_app_idle(struct fcgi_app *app);
/* End what the last request left open (db_release()): the worker is
 * about to wait for work with no transaction (no metadata lock) open. */
void fcgi_app_release(struct fcgi_app *app);

/*
 * A large request (a batch) leaves megabytes behind: the client library's
 * binds of the large prepared statements and freed heap. They are given
 * back (fcgi_app_trim()) after the next request that is not large, or
 * once the worker has waited FCGI_TRIM_MS without a request; not after
 * every large one: under a stream of batches each would prepare its large
 * statements again (the server parses them anew) and fault its heap in
 * again.
 */
#define FCGI_TRIM_MS 500
void fcgi_app_trim(struct fcgi_app *app);

/* Serve one request completely (response written through io). */
void fcgi_handle(struct fcgi_app *app, const struct fcgi_io *io);

/*
 * Single events that arrive together share a transaction. A worker that
 * has accepted a single event (fcgi_groupable()) and finds more
 * connections already waiting takes them too, up to the group size
 * (RFEVENTS_GROUP, at most FCGI_GROUP_MAX; fcgi/main.c), and serves them
 * with fcgi_handle_many(): the single events of one tenant among them are
 * applied by one ev_ingest() call, as the items of a batch are, each
 * answered as if sent alone, with one commit for all instead of one each.
 * A request that arrives when the worker is idle is served at once: no
 * request ever waits for others to arrive.
 */
#define FCGI_GROUP_MAX 16
/* Is the request behind io a single event (POST /v1/cdp/events)? Read
 * off its parameters only: its body is not read. */
int  fcgi_groupable(const struct fcgi_io *io);
/* Serve n (at most FCGI_GROUP_MAX) requests completely: the answers of
 * the single events applied together first, then each other one. */
void fcgi_handle_many(struct fcgi_app *app, const struct fcgi_io *const *ios,
    size_t n);

/* ---- metrics (fcgi/metrics.c): shared by all workers of a deployment ---- */

#define FCGI_METRIC_ROUTES 16   /* routes + one for "unmatched" */

/* Map the shared counters (RFEVENTS_METRICS path, "off", or a default
 * under /dev/shm derived from the database URL). */
void  fcgi_metrics_init(const char *db_url);
/* Count one request: route index, status, total and database time. */
void  fcgi_metrics_request(size_t route, int status, uint64_t req_us,
    uint64_t db_us);
/* Count one event result (enum ev_status) and its transaction retries. */
void  fcgi_metrics_event(int st, unsigned retries, int from_memory);
/* Count one transaction that applied the single events of `events`
 * requests (fcgi_handle_many(); fewer than 2 are not counted). */
void  fcgi_metrics_group(size_t events);
/* Prometheus text exposition; caller frees. */
char *fcgi_metrics_text(const char *const *route_names, size_t nroutes);

int   import_main(int argc, char **argv);  /* rfevents import (fcgi/import.c) */
#endif /* FCGI_H */
