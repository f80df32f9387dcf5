/*
 * Prometheus metrics shared by every worker of a deployment.
 *
 * FastCGI workers are separate processes and a scrape reaches just one of
 * them, so the counters live in a small file mapped MAP_SHARED by all of
 * them (default under /dev/shm, named after a digest of RFEVENTS_DB so two
 * deployments on one host do not mix) and are updated with lock-free C11
 * atomics. When the file cannot be mapped the counters are per process,
 * which is still correct for plain CGI's one-shot processes to ignore.
 *
 * The same file carries the table of events found stored lately
 * (ev_recent_attach(), core/ingest.c): once one worker has found an event
 * stored, any worker answers the next duplicate of it from memory.
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "db/db.h"
#include "fcgi/fcgi.h"

#define METRICS_MAGIC   0x72666d35u   /* "rfm5" */
#define RECENT_KEYS     16384         /* 512 KiB of stored events */

static const int statuses[] = {
	200, 201, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503
};
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]) + 1)  /* + other */

/* Bucket bounds in microseconds for the database time histogram. */
static const uint64_t bounds_us[] = {
	500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
	1000000, 2500000, 5000000
};
#define NBUCKETS (sizeof(bounds_us) / sizeof(bounds_us[0]) + 1)  /* + +Inf */

struct shm {
	atomic_uint         magic;
	atomic_uint_fast64_t requests[FCGI_METRIC_ROUTES][NSTATUS];
	atomic_uint_fast64_t events[EV_ST__MAX];
	atomic_uint_fast64_t retries;
	atomic_uint_fast64_t dup_memory;
	atomic_uint_fast64_t groups;          /* transactions shared by requests */
	atomic_uint_fast64_t grouped;         /* the events of those */
	atomic_uint_fast64_t db_bucket[NBUCKETS];
	atomic_uint_fast64_t db_sum_us;
	atomic_uint_fast64_t db_count;
	atomic_uint_fast64_t req_bucket[NBUCKETS];
	atomic_uint_fast64_t req_sum_us;
	struct ev_recent_head recent_head;
	_Alignas(64) struct ev_recent_slot recent_keys[RECENT_KEYS];   /* sets of 8 */
};

static struct shm *m;

/* Map (or create) the shared file; fall back to private memory. */
void
fcgi_metrics_init(const char *db_url)
{
	const char *path = getenv("RFEVENTS_METRICS");
	char        def[128], hex[65];
	int         fd = -1;
	void       *p = MAP_FAILED;

	if (m != NULL)
		return;
	if (path == NULL || *path == '\0') {
		char who[64];
		snprintf(who, sizeof(who), "%lu:", (unsigned long)getuid());
		ev_sha256_hex(db_url ? db_url : who, db_url ? strlen(db_url) : strlen(who),
		    hex);
		snprintf(def, sizeof(def), "/dev/shm/rfevents-%lu-%.16s",
		    (unsigned long)getuid(), hex);
		path = def;
	}
	if (strcmp(path, "off") != 0 &&
	    (fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) >= 0) {
		struct stat st;
		if (fstat(fd, &st) == 0 && (st.st_size == (off_t)sizeof(struct shm) ||
		    ftruncate(fd, (off_t)sizeof(struct shm)) == 0))
			p = mmap(NULL, sizeof(struct shm), PROT_READ | PROT_WRITE,
			    MAP_SHARED, fd, 0);
		close(fd);
	}
	if (p == MAP_FAILED) {
		/* aligned as the type wants: a set of the table starts a cache line */
		if ((p = aligned_alloc(_Alignof(struct shm), sizeof(struct shm))) == NULL)
			abort();
		memset(p, 0, sizeof(struct shm));
	}
	m = p;
	/* A file of another layout (an older build) is zeroed once. */
	if (atomic_load(&m->magic) != METRICS_MAGIC) {
		unsigned expected = atomic_load(&m->magic);
		if (atomic_compare_exchange_strong(&m->magic, &expected, 0)) {
			memset((char *)m + sizeof(m->magic), 0,
			    sizeof(*m) - sizeof(m->magic));
			atomic_store(&m->magic, METRICS_MAGIC);
		}
	}
	ev_recent_attach(m->recent_keys, RECENT_KEYS, &m->recent_head);
}

static size_t
bucket(uint64_t us)
{
	size_t i;

	for (i = 0; i < NBUCKETS - 1; i++)
		if (us <= bounds_us[i])
			return i;
	return NBUCKETS - 1;
}

void
fcgi_metrics_request(size_t route, int status, uint64_t req_us, uint64_t db_us)
{
	size_t s;

	if (m == NULL)
		return;
	if (route >= FCGI_METRIC_ROUTES)
		route = FCGI_METRIC_ROUTES - 1;
	for (s = 0; s < NSTATUS - 1; s++)
		if (statuses[s] == status)
			break;
	atomic_fetch_add(&m->requests[route][s], 1);
	atomic_fetch_add(&m->req_bucket[bucket(req_us)], 1);
	atomic_fetch_add(&m->req_sum_us, req_us);
	if (db_us > 0) {
		atomic_fetch_add(&m->db_bucket[bucket(db_us)], 1);
		atomic_fetch_add(&m->db_sum_us, db_us);
		atomic_fetch_add(&m->db_count, 1);
	}
}

void
fcgi_metrics_event(int st, unsigned retries, int from_memory)
{
	if (m == NULL || st < 0 || st >= EV_ST__MAX)
		return;
	atomic_fetch_add(&m->events[st], 1);
	if (from_memory)
		atomic_fetch_add(&m->dup_memory, 1);
	if (retries > 0)
		atomic_fetch_add(&m->retries, retries);
}

void
fcgi_metrics_group(size_t events)
{
	if (m == NULL || events < 2)
		return;
	atomic_fetch_add(&m->groups, 1);
	atomic_fetch_add(&m->grouped, events);
}

/* Append printf output to a growing buffer; aborts on out of memory. */
static void
put(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
put(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
	va_list ap;
	int     n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
		va_end(ap);
		if (n < 0)
			abort();
		if ((size_t)n < *cap - *len) {
			*len += (size_t)n;
			return;
		}
		*cap = (*cap + (size_t)n) * 2;
		if ((*buf = realloc(*buf, *cap)) == NULL)
			abort();
	}
}

static void
histogram(char **b, size_t *l, size_t *c, const char *name,
    atomic_uint_fast64_t *buckets, uint64_t sum_us, uint64_t count)
{
	uint64_t acc = 0;
	size_t   i;

	put(b, l, c, "# TYPE %s histogram\n", name);
	for (i = 0; i < NBUCKETS; i++) {
		acc += atomic_load(&buckets[i]);
		if (i < NBUCKETS - 1)
			put(b, l, c, "%s_bucket{le=\"%g\"} %llu\n", name,
			    (double)bounds_us[i] / 1e6, (unsigned long long)acc);
		else
			put(b, l, c, "%s_bucket{le=\"+Inf\"} %llu\n", name,
			    (unsigned long long)acc);
	}
	put(b, l, c, "%s_sum %.6f\n%s_count %llu\n", name, (double)sum_us / 1e6,
	    name, (unsigned long long)count);
}

char *
fcgi_metrics_text(const char *const *route_names, size_t nroutes)
{
	static const char *const outcome[EV_ST__MAX] = {
		"accepted", "duplicate", "conflict", "dry_run", "error"
	};
	char    *b;
	size_t   l = 0, c = 4096, r, s;
	uint64_t reqs = 0;

	if ((b = malloc(c)) == NULL)
		abort();
	b[0] = '\0';
	if (m == NULL)
		return b;
	put(&b, &l, &c, "# HELP rfevents_requests_total HTTP requests by route"
	    " and status.\n# TYPE rfevents_requests_total counter\n");
	for (r = 0; r < FCGI_METRIC_ROUTES; r++)
		for (s = 0; s < NSTATUS; s++) {
			uint64_t v = atomic_load(&m->requests[r][s]);
			char     st[8];
			reqs += v;
			if (v == 0)
				continue;
			if (s < NSTATUS - 1)
				snprintf(st, sizeof(st), "%d", statuses[s]);
			else
				snprintf(st, sizeof(st), "other");
			put(&b, &l, &c, "rfevents_requests_total{route=\"%s\","
			    "status=\"%s\"} %llu\n", r < nroutes ? route_names[r] :
			    "unmatched", st, (unsigned long long)v);
		}
	put(&b, &l, &c, "# HELP rfevents_events_total Ingested events by"
	    " outcome.\n# TYPE rfevents_events_total counter\n");
	for (s = 0; s < EV_ST__MAX; s++)
		put(&b, &l, &c, "rfevents_events_total{outcome=\"%s\"} %llu\n",
		    outcome[s], (unsigned long long)atomic_load(&m->events[s]));
	put(&b, &l, &c, "# HELP rfevents_txn_retries_total Transactions run again"
	    " after a deadlock, lock wait or certification failure.\n"
	    "# TYPE rfevents_txn_retries_total counter\n"
	    "rfevents_txn_retries_total %llu\n",
	    (unsigned long long)atomic_load(&m->retries));
	put(&b, &l, &c, "# HELP rfevents_duplicates_from_memory_total Duplicates"
	    " answered from the table of events found stored lately, without a"
	    " statement.\n# TYPE rfevents_duplicates_from_memory_total counter\n"
	    "rfevents_duplicates_from_memory_total %llu\n",
	    (unsigned long long)atomic_load(&m->dup_memory));
	put(&b, &l, &c, "# HELP rfevents_event_groups_total Transactions that"
	    " stored the single events of several requests that arrived together."
	    "\n# TYPE rfevents_event_groups_total counter\n"
	    "rfevents_event_groups_total %llu\n"
	    "# HELP rfevents_grouped_events_total Single events applied in such"
	    " shared transactions.\n# TYPE rfevents_grouped_events_total counter\n"
	    "rfevents_grouped_events_total %llu\n",
	    (unsigned long long)atomic_load(&m->groups),
	    (unsigned long long)atomic_load(&m->grouped));
	put(&b, &l, &c, "# HELP rfevents_db_seconds Database time per request.\n");
	histogram(&b, &l, &c, "rfevents_db_seconds", m->db_bucket,
	    atomic_load(&m->db_sum_us), atomic_load(&m->db_count));
	put(&b, &l, &c, "# HELP rfevents_request_seconds Time per request.\n");
	histogram(&b, &l, &c, "rfevents_request_seconds", m->req_bucket,
	    atomic_load(&m->req_sum_us), reqs);
	return b;
}
