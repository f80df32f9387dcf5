/*
 * rfevents.fcgi — the FastCGI application (libfcgi), also usable as plain
 * CGI: when stdin is not a FastCGI listening socket it serves the one
 * request described by its environment and exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <fastcgi.h>
#include <fcgiapp.h>

#include "fcgi/fcgi.h"

/* ---- FastCGI streams ---- */

static const char *
fcgx_getenv(void *ctx, const char *name)
{
	return FCGX_GetParam(name, ((FCGX_Request *)ctx)->envp);
}

static long
fcgx_read(void *ctx, char *buf, size_t n)
{
	int chunk = n > 1 << 20 ? 1 << 20 : (int)n;

	return FCGX_GetStr(buf, chunk, ((FCGX_Request *)ctx)->in);
}

static int
fcgx_write(void *ctx, const char *buf, size_t n)
{
	FCGX_Request *r = ctx;

	while (n > 0) {
		int chunk = n > 1 << 20 ? 1 << 20 : (int)n;
		if (FCGX_PutStr(buf, chunk, r->out) != chunk)
			return -1;
		buf += chunk;
		n -= (size_t)chunk;
	}
	return 0;
}

/* ---- plain CGI ---- */

static const char *
cgi_getenv(void *ctx, const char *name)
{
	(void)ctx;
	return getenv(name);
}

static long
cgi_read(void *ctx, char *buf, size_t n)
{
	(void)ctx;
	return (long)fread(buf, 1, n, stdin);
}

static int
cgi_write(void *ctx, const char *buf, size_t n)
{
	(void)ctx;
	return fwrite(buf, 1, n, stdout) == n ? 0 : -1;
}

static volatile sig_atomic_t stopping;

/* SIGTERM/SIGINT from the web server: finish the current request, leave
 * the accept loop and exit normally (so leak checkers can report). */
static void
on_term(int sig)
{
	(void)sig;
	stopping = 1;
	FCGX_ShutdownPending();
}

/*
 * libfcgi ends a connection with shutdown(), then waits for the web server
 * to close its end, reading what it still sends, so that TCP does not
 * answer late input with a reset that would discard the response. On a
 * unix socket a reset does not exist: what was written stays readable
 * after close(). There the wait (a poll() and a read(), often a sleep
 * until the server has read the answer) is skipped when nothing unread is
 * queued, as after every request whose input was read to its end.
 */
static int
close_at_once(const FCGX_Request *req, int unix_socket)
{
	int unread = 0;

	return unix_socket && ioctl(req->ipcFd, FIONREAD, &unread) == 0 &&
	    unread == 0;
}

static int listen_unix;      /* the listening socket is a unix one */

/* The answer is complete: end the request (fcgi_io.done). */
static void
fcgx_done(void *ctx)
{
	FCGX_Request *req = ctx;

	if (close_at_once(req, listen_unix))
		(void)FCGX_Detach(req);
	FCGX_Finish_r(req);
}

/* A connection waits on the listening socket (FastCGI passes it as fd 0)
 * within ms milliseconds (-1: however long it takes). */
static int
request_waiting(int ms)
{
	struct pollfd p = { FCGI_LISTENSOCK_FILENO, POLLIN, 0 };

	return poll(&p, 1, ms) > 0 && (p.revents & POLLIN) != 0;
}

/* RFEVENTS_GROUP: how many waiting requests a worker serves together
 * (fcgi.h fcgi_handle_many()); 1 turns that off. */
static size_t
group_size(const char *v)
{
	char         *end;
	unsigned long n;

	if (v == NULL || *v == '\0')
		return FCGI_GROUP_MAX;
	n = strtoul(v, &end, 10);
	if (*end != '\0' || n < 1 || n > FCGI_GROUP_MAX) {
		fprintf(stderr, "rfevents: RFEVENTS_GROUP must be 1 to %d; using %d\n",
		    FCGI_GROUP_MAX, FCGI_GROUP_MAX);
		return FCGI_GROUP_MAX;
	}
	return n;
}

int
main(void)
{
	struct fcgi_app app;
	FCGX_Request    req[FCGI_GROUP_MAX];
	struct fcgi_io  io[FCGI_GROUP_MAX];
	const struct fcgi_io *iop[FCGI_GROUP_MAX];
	unsigned long   max_requests = 0;
	int             keep = 0, nonblock, fl;
	size_t          group, k, j;
	struct sockaddr_storage sa_listen;
	socklen_t       sa_len = sizeof(sa_listen);
	const char     *mr = getenv("RFEVENTS_MAX_REQUESTS");

	struct sigaction sa;

	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;      /* no SA_RESTART: interrupt accept() */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	fcgi_app_init(&app);
	if (mr != NULL)
		max_requests = strtoul(mr, NULL, 10);

	if (FCGX_IsCGI()) {
		struct fcgi_io cgi = { NULL, cgi_getenv, cgi_read, cgi_write, NULL };
		fcgi_handle(&app, &cgi);
		fflush(stdout);
		fcgi_app_free(&app);
		return 0;
	}
	group = group_size(getenv("RFEVENTS_GROUP"));
	if (FCGX_Init() != 0) {
		fprintf(stderr, "rfevents: cannot initialise FastCGI\n");
		return 1;
	}
	for (j = 0; j < group; j++) {
		if (FCGX_InitRequest(&req[j], 0, 0) != 0) {
			fprintf(stderr, "rfevents: cannot initialise FastCGI\n");
			return 1;
		}
		io[j] = (struct fcgi_io){ &req[j], fcgx_getenv, fcgx_read, fcgx_write,
		    fcgx_done };
		iop[j] = &io[j];
	}
	/*
	 * The worker waits in poll(), never in accept(): the listening socket
	 * does not block. Where several processes share it (spawn-fcgi) all
	 * of them wake for a connection and one takes it; the others get
	 * EAGAIN and wait again, rather than sit in accept() with a read
	 * transaction open. Where the flag cannot be set, accept() blocks and
	 * the server's idle_readonly_transaction_timeout (db/db.c) ends such
	 * a transaction after 10 s; requests are then served one by one.
	 */
	listen_unix = getsockname(FCGI_LISTENSOCK_FILENO,
	    (struct sockaddr *)&sa_listen, &sa_len) == 0 &&
	    sa_listen.ss_family == AF_UNIX;
	nonblock = (fl = fcntl(FCGI_LISTENSOCK_FILENO, F_GETFL)) != -1 &&
	    fcntl(FCGI_LISTENSOCK_FILENO, F_SETFL, fl | O_NONBLOCK) != -1;
	while (!stopping) {
		int rc;
		/* a read transaction is kept only while requests follow one
		 * another; before the worker waits, it is ended */
		if (keep && !request_waiting(FCGI_IDLE_MS)) {
			fcgi_app_release(&app);
			keep = 0;
		}
		/* what large requests left behind is given back when no
		 * request follows soon (FastCGI workers live for days) */
		if (app.trim_due && !keep && !request_waiting(FCGI_TRIM_MS))
			fcgi_app_trim(&app);
		if (nonblock && !keep)
			(void)request_waiting(-1);
		if (stopping)
			break;
		if ((rc = FCGX_Accept_r(&req[0])) < 0) {
			if (nonblock && (rc == -EAGAIN || rc == -EWOULDBLOCK))
				continue;       /* another process took it */
			break;
		}
		/* single events already waiting join this one (fcgi.h); the
		 * first request of another kind ends the group */
		k = 1;
		if (nonblock && fcgi_groupable(&io[0]))
			while (k < group && !stopping && FCGX_Accept_r(&req[k]) >= 0)
				if (!fcgi_groupable(&io[k++]))
					break;
		/* (each request is ended by fcgx_done() once answered) */
		if (k == 1)
			fcgi_handle(&app, &io[0]);
		else {
			fcgi_handle_many(&app, iop, k);
			/* a group held up to 16 requests at once (libfcgi's
			 * 16 KiB of buffers each, their bodies): the pages
			 * they freed go back now. Kept, they let later
			 * allocations spread over ever more pages: one
			 * worker's VmHWM after 100,000 grouped events was
			 * 8,400 kB without this, 7,976 kB with it, for 0.3 %
			 * of its CPU (perf: malloc_trim, madvise and the
			 * faults that zero the pages again). */
			malloc_trim(0);
		}
		keep = fcgi_app_idle(&app);
		if (app.trim_due && !app.last_big)
			fcgi_app_trim(&app);
		/* RFEVENTS_MAX_REQUESTS: exit after that many (leak checks) */
		if (max_requests != 0 && app.requests >= max_requests)
			break;
	}
	for (j = 0; j < group; j++)
		FCGX_Free(&req[j], 1);
	fcgi_app_free(&app);
	return 0;
}
