/*
 * conf/yaml.c — YAML bytes to a small tree of scalars, sequences and
 * mappings with 1-based positions, using libyaml's event API (YAML 1.1 as
 * libyaml implements it). The subset kept is what CONF.md needs: no
 * anchors or aliases (so no "billion laughs"), no tags, one document,
 * scalar keys, no duplicate keys, nesting at most CONF_MAX_DEPTH.
 * Also the error sink (conf_diag) and the allocation helpers of conf/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "conf/conf_impl.h"

/* ---- allocation: abort on out of memory (STYLE.md) ---- */

static void
oom(size_t n)
{
	fprintf(stderr, "rfevents: conf: out of memory (%zu bytes)\n", n);
	abort();
}

void *
conf_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		oom(n);
	return p;
}

void *
conf_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (p == NULL)
		oom(n);
	return p;
}

void *
conf_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		oom(n);
	return q;
}

char *
conf_xstrndup(const char *s, size_t n)
{
	char *p = conf_xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *
conf_xstrdup(const char *s)
{
	return conf_xstrndup(s, strlen(s));
}

/* ---- errors ---- */

/*
 * Append one error for d->file at line:col (0: unknown) to the caller's
 * array. The message is formatted with vsnprintf and copied; the array and
 * its strings are freed by conf_errors_free().
 */
void
conf_diag_vadd(struct conf_diag *d, int line, int col, const char *fmt,
    va_list ap)
{
	char msg[512];
	struct conf_error *e;

	if (d->count > CONF_MAX_ERRORS)
		return;
	if (d->count++ == CONF_MAX_ERRORS) {
		snprintf(msg, sizeof(msg), "too many errors, stopped after %d",
		    CONF_MAX_ERRORS);
		line = col = 0;
	} else
		vsnprintf(msg, sizeof(msg), fmt, ap);
	*d->errs = conf_xrealloc(*d->errs, (*d->nerrs + 1) * sizeof(**d->errs));
	e = &(*d->errs)[(*d->nerrs)++];
	e->file = conf_xstrdup(d->file);
	e->line = line;
	e->col = col;
	e->msg = conf_xstrdup(msg);
}

void
conf_diag_add(struct conf_diag *d, int line, int col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_diag_vadd(d, line, col, fmt, ap);
	va_end(ap);
}

/* ---- the tree ---- */

/* Free a node and everything below it; accepts NULL. Depth is bounded by
 * CONF_MAX_DEPTH, so the recursion is too. */
void
conf_ynode_free(struct conf_ynode *n)
{
	size_t i;

	if (n == NULL)
		return;
	for (i = 0; i < n->nkids; i++)
		conf_ynode_free(n->kids[i]);
	free(n->kids);
	free(n->text);
	free(n);
}

/* An open collection while events stream in. */
struct frame {
	struct conf_ynode *node;
	size_t             cap;
};

struct builder {
	struct conf_diag  *d;
	struct frame       stack[CONF_MAX_DEPTH];
	size_t             depth;
	struct conf_ynode *root;
	int                bad;    /* an error was reported: no tree */
};

static struct conf_ynode *
node_new(enum conf_ykind kind, const yaml_mark_t *start)
{
	struct conf_ynode *n = conf_xcalloc(1, sizeof(*n));

	n->kind = kind;
	/* libyaml marks are 0-based and far below INT_MAX (1 MiB files). */
	n->line = (int)start->line + 1;
	n->col = (int)start->column + 1;
	return n;
}

/* Report an error at a libyaml mark. */
static void __attribute__((format(printf, 3, 4)))
mark_err(struct builder *b, const yaml_mark_t *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_diag_vadd(b->d, (int)m->line + 1, (int)m->column + 1, fmt, ap);
	va_end(ap);
	b->bad = 1;
}

/* Anchors (and so aliases) and tags are outside the subset: report the
 * ones a node carries. */
static void
no_props(struct builder *b, const yaml_mark_t *m, const yaml_char_t *anchor,
    const yaml_char_t *tag)
{
	if (anchor != NULL)
		mark_err(b, m, "anchors and aliases are not supported (&%s)",
		    (const char *)anchor);
	if (tag != NULL)
		mark_err(b, m, "tags are not supported (%s)", (const char *)tag);
}

/* Hand a finished node to its parent (or make it the root); the builder
 * owns it from here. Mapping keys must be scalars. */
static void
attach(struct builder *b, struct conf_ynode *n)
{
	struct frame *f;

	if (b->depth == 0) {
		b->root = n;
		return;
	}
	f = &b->stack[b->depth - 1];
	if (f->node->kind == CONF_Y_MAP && f->node->nkids % 2 == 0 &&
	    n->kind != CONF_Y_SCALAR) {
		conf_diag_add(b->d, n->line, n->col,
		    "mapping keys must be scalars");
		b->bad = 1;
	}
	if (f->node->nkids == f->cap) {
		f->cap = f->cap ? f->cap * 2 : 8;
		f->node->kids = conf_xrealloc(f->node->kids,
		    f->cap * sizeof(*f->node->kids));
	}
	f->node->kids[f->node->nkids++] = n;
}

/* qsort order of scalar nodes (given as pointers to node pointers): text,
 * then position, so that equal texts sit together, earliest first. */
int
conf_ynode_cmp(const void *a, const void *b)
{
	const struct conf_ynode *x = *(const struct conf_ynode *const *)a;
	const struct conf_ynode *y = *(const struct conf_ynode *const *)b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->text, y->text, n);

	if (c != 0)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return (x->col > y->col) - (x->col < y->col);
}

/*
 * Report every key of mapping m that repeats an earlier one, at the later
 * occurrence. Sorting a copy keeps this O(n log n) for huge mappings.
 */
static void
check_dup_keys(struct builder *b, const struct conf_ynode *m)
{
	const struct conf_ynode **keys;
	size_t i, n = 0;

	if (m->nkids < 4)
		return;
	keys = conf_xmalloc(m->nkids / 2 * sizeof(*keys));
	for (i = 0; i + 1 < m->nkids; i += 2)
		if (m->kids[i]->kind == CONF_Y_SCALAR)
			keys[n++] = m->kids[i];
	qsort(keys, n, sizeof(*keys), conf_ynode_cmp);
	for (i = 1; i < n; i++) {
		if (keys[i]->len != keys[i - 1]->len ||
		    memcmp(keys[i]->text, keys[i - 1]->text, keys[i]->len) != 0)
			continue;
		conf_diag_add(b->d, keys[i]->line, keys[i]->col,
		    "duplicate key '%.*s'", (int)(keys[i]->len > 64 ? 64 :
		    keys[i]->len), keys[i]->text);
		b->bad = 1;
	}
	free(keys);
}

/* Line and column (1-based, bytes) of byte offset off in buf. */
static void
offset_pos(const char *buf, size_t len, size_t off, int *line, int *col)
{
	size_t i, bol = 0;
	int l = 1;

	if (off > len)
		off = len;
	for (i = 0; i < off; i++)
		if (buf[i] == '\n') {
			l++;
			bol = i + 1;
		}
	*line = l;
	*col = (int)(off - bol) + 1;
}

/* Turn libyaml's error state into one diagnostic. */
static void
parser_err(struct builder *b, const yaml_parser_t *p, const char *buf,
    size_t len)
{
	const char *problem = p->problem ? p->problem : "invalid YAML";
	const char *hint = "";
	int line, col;

	if (strcmp(problem, "mapping values are not allowed in this context") == 0)
		hint = " (quote a value that contains ': ')";
	if (p->error == YAML_READER_ERROR) {
		offset_pos(buf, len, p->problem_offset, &line, &col);
		conf_diag_add(b->d, line, col, "%s", problem);
	} else if (p->context != NULL)
		conf_diag_add(b->d, (int)p->problem_mark.line + 1,
		    (int)p->problem_mark.column + 1, "%s%s (%s at line %d)",
		    problem, hint, p->context, (int)p->context_mark.line + 1);
	else
		conf_diag_add(b->d, (int)p->problem_mark.line + 1,
		    (int)p->problem_mark.column + 1, "%s%s", problem, hint);
	b->bad = 1;
}

/* A scalar event to a node; fills the flags used to place expression
 * errors (quoted; exact: on one line, without escapes or folding, so that
 * character i of the value is at column col + quoted + i). */
static struct conf_ynode *
scalar_node(const yaml_event_t *ev)
{
	struct conf_ynode *n = node_new(CONF_Y_SCALAR, &ev->start_mark);
	yaml_scalar_style_t st = ev->data.scalar.style;
	size_t i, chars = 0;

	/* Marks count characters: compare with the code points of the value
	 * (UTF-8 bytes that are not continuation bytes 10xxxxxx). */
	for (i = 0; i < ev->data.scalar.length; i++)
		chars += (ev->data.scalar.value[i] & 0xc0) != 0x80;

	n->text = conf_xstrndup((const char *)ev->data.scalar.value,
	    ev->data.scalar.length);
	n->len = ev->data.scalar.length;
	n->plain = st == YAML_PLAIN_SCALAR_STYLE;
	n->quoted = st == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
	    st == YAML_DOUBLE_QUOTED_SCALAR_STYLE;
	n->exact = (n->plain || n->quoted) &&
	    ev->start_mark.line == ev->end_mark.line &&
	    ev->end_mark.index - ev->start_mark.index ==
	    chars + (n->quoted ? 2 : 0);
	return n;
}

/*
 * Feed libyaml's events into the builder until the stream ends or an error
 * stops it. Returns 0 at the end of the stream, -1 when parsing stopped.
 */
static int
run_events(struct builder *b, yaml_parser_t *p, const char *buf, size_t len)
{
	yaml_event_t ev;
	struct conf_ynode *n;
	int docs = 0, rc = -1;

	for (;;) {
		if (!yaml_parser_parse(p, &ev)) {
			parser_err(b, p, buf, len);
			return -1;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			rc = 0;
			goto out;
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1) {
				mark_err(b, &ev.start_mark,
				    "only one YAML document per file");
				goto out;
			}
			break;
		case YAML_ALIAS_EVENT:
			mark_err(b, &ev.start_mark,
			    "aliases are not supported (*%s)",
			    (const char *)ev.data.alias.anchor);
			/* A placeholder, so that the tree stays well formed
			 * while the rest of the file is checked. */
			n = node_new(CONF_Y_SCALAR, &ev.start_mark);
			n->text = conf_xstrdup("");
			attach(b, n);
			break;
		case YAML_SCALAR_EVENT:
			no_props(b, &ev.start_mark, ev.data.scalar.anchor,
			    ev.data.scalar.tag);
			attach(b, scalar_node(&ev));
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (b->depth == CONF_MAX_DEPTH) {
				mark_err(b, &ev.start_mark,
				    "nesting deeper than %d levels",
				    CONF_MAX_DEPTH);
				goto out;
			}
			if (ev.type == YAML_MAPPING_START_EVENT)
				no_props(b, &ev.start_mark,
				    ev.data.mapping_start.anchor,
				    ev.data.mapping_start.tag);
			else
				no_props(b, &ev.start_mark,
				    ev.data.sequence_start.anchor,
				    ev.data.sequence_start.tag);
			n = node_new(ev.type == YAML_MAPPING_START_EVENT ?
			    CONF_Y_MAP : CONF_Y_SEQ, &ev.start_mark);
			b->stack[b->depth].node = n;
			b->stack[b->depth].cap = 0;
			b->depth++;
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			/* libyaml balances start and end events. */
			n = b->stack[--b->depth].node;
			if (n->kind == CONF_Y_MAP)
				check_dup_keys(b, n);
			attach(b, n);
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
out:
	yaml_event_delete(&ev);
	return rc;
}

/*
 * See conf_impl.h. Frees, at `out`: the libyaml parser, and on error the
 * partly built tree (open frames and root).
 */
struct conf_ynode *
conf_yaml_parse(const char *buf, size_t len, struct conf_diag *d, int *empty)
{
	yaml_parser_t p;
	struct builder b;
	struct conf_ynode *root = NULL;

	memset(&b, 0, sizeof(b));
	b.d = d;
	*empty = 0;
	if (!yaml_parser_initialize(&p))
		oom(sizeof(p));
	yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
	if (run_events(&b, &p, buf, len) == -1 || b.bad)
		goto out;
	root = b.root;
	b.root = NULL;
	*empty = root == NULL;
out:
	while (b.depth > 0)
		conf_ynode_free(b.stack[--b.depth].node);
	conf_ynode_free(b.root);
	yaml_parser_delete(&p);
	return root;
}
