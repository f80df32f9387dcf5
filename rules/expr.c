/*
 * rules/expr.c — the expression language of CONF.md "Expressions": a
 * precedence-climbing parser into a compiled tree with static types, and
 * the evaluator over exact rationals. Semantics are documented in rules.h
 * (rule_expr_compile, rule_expr_eval).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

/* Static types: the set of value types a node may produce. */
#define T_NULL 1u
#define T_BOOL 2u
#define T_NUM  4u
#define T_STR  8u
#define T_ANY  (T_NULL | T_BOOL | T_NUM | T_STR)

enum nkind {
	N_LIT,    /* lit */
	N_PATH,   /* pk, name */
	N_NEG,    /* -a */
	N_NOT,    /* !a */
	N_BIN,    /* a op b, op is enum bop */
	N_AND,    /* a && b */
	N_OR,     /* a || b */
	N_COND,   /* a ? b : c */
	N_IN,     /* a in [args] */
	N_CALL,   /* op(args), op is enum fn */
	N__MAX
};

enum bop {
	B_ADD, B_SUB, B_MUL, B_DIV, B_MOD,
	B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE,
	B__MAX
};

enum fn {
	F_MIN, F_MAX, F_FLOOR, F_CEIL, F_ROUND, F_ABS, F_HAS, F_COALESCE,
	F_LOWER, F_UPPER,
	F__MAX
};

enum pkind {
	P_PROP,        /* properties.NAME */
	P_EV_TYPE,     /* event.type */
	P_EV_SOURCE,   /* event.source */
	P_EV_OCCURRED, /* event.occurred_at */
	P_TIER,        /* profile.tier */
	P_BALANCE,     /* profile.balance.NAME */
	P_LIFETIME,    /* profile.lifetime.NAME */
	P_VAR,         /* profile.vars.NAME */
	P__MAX
};

/* BINARY OPERATOR NAMES, indexed by enum bop */
static const char *const bop_names[B__MAX] = {
	"+",   /* B_ADD */
	"-",   /* B_SUB */
	"*",   /* B_MUL */
	"/",   /* B_DIV */
	"%",   /* B_MOD */
	"==",  /* B_EQ */
	"!=",  /* B_NE */
	"<",   /* B_LT */
	"<=",  /* B_LE */
	">",   /* B_GT */
	">=",  /* B_GE */
};
_Static_assert(sizeof(bop_names) / sizeof(bop_names[0]) == B__MAX,
    "bop_names must cover enum bop");

/* FUNCTIONS, indexed by enum fn: name and arity (maxargs 0: variadic) */
static const struct fninfo {
	const char *name;
	size_t      minargs, maxargs;
} fns[F__MAX] = {
	{ "min",      1, 0 },  /* F_MIN */
	{ "max",      1, 0 },  /* F_MAX */
	{ "floor",    1, 1 },  /* F_FLOOR */
	{ "ceil",     1, 1 },  /* F_CEIL */
	{ "round",    1, 1 },  /* F_ROUND */
	{ "abs",      1, 1 },  /* F_ABS */
	{ "has",      1, 1 },  /* F_HAS */
	{ "coalesce", 1, 0 },  /* F_COALESCE */
	{ "lower",    1, 1 },  /* F_LOWER */
	{ "upper",    1, 1 },  /* F_UPPER */
};
_Static_assert(sizeof(fns) / sizeof(fns[0]) == F__MAX,
    "fns must cover enum fn");

/* PATH NAMES for messages, indexed by enum pkind */
static const char *const path_names[P__MAX] = {
	"properties",         /* P_PROP */
	"event.type",         /* P_EV_TYPE */
	"event.source",       /* P_EV_SOURCE */
	"event.occurred_at",  /* P_EV_OCCURRED */
	"profile.tier",       /* P_TIER */
	"profile.balance",    /* P_BALANCE */
	"profile.lifetime",   /* P_LIFETIME */
	"profile.vars",       /* P_VAR */
};
_Static_assert(sizeof(path_names) / sizeof(path_names[0]) == P__MAX,
    "path_names must cover enum pkind");

struct node {
	enum nkind         kind;
	int                op;       /* enum bop (N_BIN) or enum fn (N_CALL) */
	unsigned           types;    /* static type set, T_* */
	unsigned           col;
	unsigned           height;   /* 1 for a leaf */
	struct rule_value  lit;      /* N_LIT */
	enum pkind         pk;       /* N_PATH */
	char              *name;     /* N_PATH: NAME, or NULL */
	struct node       *a, *b, *c;
	struct node      **args;     /* N_CALL arguments, N_IN list */
	size_t             nargs;
	struct node       *next;     /* every node of the tree, for freeing */
};

struct prop_ref {
	const char *name;            /* owned by a node */
	unsigned    col;
};

struct rule_expr {
	struct node     *root;
	struct node     *nodes;
	enum rule_want   want;
	struct prop_ref *props;
	size_t           nprops, capprops;
};

/* ==== values ==== */

void
rule_value_clear(struct rule_value *v)
{
	if (v == NULL)
		return;
	if (v->type == RULE_V_NUM)
		mpq_clear(v->num);
	free(v->str);
	memset(v, 0, sizeof(*v));
}

static void
v_null(struct rule_value *v)
{
	memset(v, 0, sizeof(*v));
}

static void
v_bool(struct rule_value *v, int b)
{
	memset(v, 0, sizeof(*v));
	v->type = RULE_V_BOOL;
	v->b = b != 0;
}

/* Make v a number (0) with num initialised. */
static void
v_num(struct rule_value *v)
{
	memset(v, 0, sizeof(*v));
	v->type = RULE_V_NUM;
	mpq_init(v->num);
}

/* Make v a string holding a copy of s[0..len). */
static void
v_str(struct rule_value *v, const char *s, size_t len)
{
	memset(v, 0, sizeof(*v));
	v->type = RULE_V_STR;
	v->str = rule__xmalloc(len + 1);
	if (len > 0)
		memcpy(v->str, s, len);
	v->str[len] = '\0';
	v->len = len;
}

void
rule_value_copy(struct rule_value *dst, const struct rule_value *src)
{
	switch (src->type) {
	case RULE_V_BOOL:
		v_bool(dst, src->b);
		break;
	case RULE_V_NUM:
		v_num(dst);
		mpq_set(dst->num, src->num);
		break;
	case RULE_V_STR:
		v_str(dst, src->str, src->len);
		break;
	default:
		v_null(dst);
		break;
	}
}

int
rule_value_equal(const struct rule_value *a, const struct rule_value *b)
{
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case RULE_V_BOOL:
		return a->b == b->b;
	case RULE_V_NUM:
		return mpq_equal(a->num, b->num) != 0;
	case RULE_V_STR:
		return a->len == b->len &&
		    (a->len == 0 || memcmp(a->str, b->str, a->len) == 0);
	default:
		return 1;
	}
}

/* Order of two strings, bytewise (UTF-8 byte order is code point order):
 * <0, 0, >0. */
static int
str_cmp(const struct rule_value *a, const struct rule_value *b)
{
	size_t n = a->len < b->len ? a->len : b->len;
	int    r = n ? memcmp(a->str, b->str, n) : 0;

	if (r != 0)
		return r;
	return a->len < b->len ? -1 : a->len > b->len;
}

/* Convert a json-c value; see rules.h. */
int
rule_value_from_json(json_object *o, struct rule_value *out, char *why,
    size_t whysz)
{
	const char *txt;

	v_null(out);
	switch (json_object_get_type(o)) {
	case json_type_null:
		return 0;
	case json_type_boolean:
		v_bool(out, json_object_get_boolean(o));
		return 0;
	case json_type_string:
		v_str(out, json_object_get_string(o),
		    (size_t)json_object_get_string_len(o));
		return 0;
	case json_type_double:
	case json_type_int:
		txt = json_object_get_string(o);
		v_num(out);
		if (txt == NULL ||
		    rule_dec_parse(txt, strlen(txt), out->num) == -1) {
			rule_value_clear(out);
			rule__why(why, whysz, "number %.40s is not usable "
			    "(not finite or exponent beyond %d)",
			    txt ? txt : "?", RULE_DEC_MAX_EXP);
			return -1;
		}
		return 0;
	case json_type_object:
		rule__why(why, whysz, "is an object");
		return -1;
	case json_type_array:
		rule__why(why, whysz, "is an array");
		return -1;
	default:
		rule__why(why, whysz, "has an unknown type");
		return -1;
	}
}

/* New json-c value; see rules.h. Caller puts it. */
json_object *
rule_value_to_json(const struct rule_value *v, unsigned maxfrac)
{
	json_object *o;
	char        *txt;

	switch (v->type) {
	case RULE_V_BOOL:
		return json_object_new_boolean(v->b);
	case RULE_V_STR:
		return json_object_new_string_len(v->str, (int)v->len);
	case RULE_V_NUM:
		txt = rule_dec_to_text(v->num, maxfrac);
		o = json_object_new_double_s(mpq_get_d(v->num), txt);
		free(txt);
		return o;
	default:
		return NULL;
	}
}

/* ==== parser ==== */

struct parser {
	struct rule__lexer  lx;
	struct rule__token  tok;     /* lookahead; tok.str owned here */
	struct rule_expr   *e;
	struct rule_err    *err;
	unsigned            depth;   /* recursion of the parser */
	int                 failed;
};

/* Record the first error at col; returns NULL for `return perr(...)`. */
static struct node *
perr(struct parser *p, unsigned col, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static struct node *
perr(struct parser *p, unsigned col, const char *fmt, ...)
{
	va_list ap;

	if (p->failed)
		return NULL;
	p->failed = 1;
	p->err->col = col ? col : 1;
	va_start(ap, fmt);
	vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
	va_end(ap);
	return NULL;
}

/* Advance to the next token, dropping the current one. 0 or -1. */
static int
next(struct parser *p)
{
	free(p->tok.str);
	p->tok.str = NULL;
	if (rule__lex(&p->lx, &p->tok, p->err) == -1) {
		p->failed = 1;
		p->tok.kind = TK_EOF;
		return -1;
	}
	return 0;
}

/* 1 when the current token is the identifier `word`. */
static int
tok_is(const struct parser *p, const char *word)
{
	size_t n = strlen(word);

	return p->tok.kind == TK_IDENT && p->tok.len == n &&
	    memcmp(p->lx.src + p->tok.off, word, n) == 0;
}

/* Copy of the current token's text (caller frees). */
static char *
tok_text(const struct parser *p)
{
	char *s = rule__xmalloc(p->tok.len + 1);

	memcpy(s, p->lx.src + p->tok.off, p->tok.len);
	s[p->tok.len] = '\0';
	return s;
}

/* Complain about the current token. */
static struct node *
unexpected(struct parser *p, const char *wanted)
{
	if (p->tok.kind == TK_IDENT || p->tok.kind == TK_NUM)
		return perr(p, p->tok.col, "%s expected, found '%.*s'", wanted,
		    (int)(p->tok.len > 40 ? 40 : p->tok.len),
		    p->lx.src + p->tok.off);
	return perr(p, p->tok.col, "%s expected, found %s", wanted,
	    rule__tok_name(p->tok.kind));
}

/* Expect and consume a token of kind k. 0 or -1. */
static int
expect(struct parser *p, enum rule__tok k)
{
	if (p->tok.kind != k) {
		unexpected(p, rule__tok_name(k));
		return -1;
	}
	return next(p);
}

/* A new node of the tree, linked for freeing. */
static struct node *
new_node(struct parser *p, enum nkind kind, unsigned col)
{
	struct node *n = rule__xcalloc(1, sizeof(*n));

	n->kind = kind;
	n->col = col;
	n->height = 1;
	n->next = p->e->nodes;
	p->e->nodes = n;
	return n;
}

/* Set n's height from its children; fail when too deep. */
static struct node *
seal(struct parser *p, struct node *n)
{
	unsigned h = 0;
	size_t   i;

	if (n->a && n->a->height > h)
		h = n->a->height;
	if (n->b && n->b->height > h)
		h = n->b->height;
	if (n->c && n->c->height > h)
		h = n->c->height;
	for (i = 0; i < n->nargs; i++)
		if (n->args[i]->height > h)
			h = n->args[i]->height;
	n->height = h + 1;
	if (n->height > RULE_EXPR_MAX_DEPTH)
		return perr(p, n->col, "expression nested too deeply "
		    "(more than %d levels)", RULE_EXPR_MAX_DEPTH);
	return n;
}

/* Parser recursion guard: 0, or -1 after an error at col. */
static int
enter(struct parser *p, unsigned col)
{
	if (p->depth >= RULE_EXPR_MAX_DEPTH) {
		perr(p, col, "expression nested too deeply (more than %d "
		    "levels)", RULE_EXPR_MAX_DEPTH);
		return -1;
	}
	p->depth++;
	return 0;
}

/* Words for a static type set in messages: "a number or null". */
static const char *
types_desc(unsigned t, char *buf, size_t sz)
{
	static const struct { unsigned bit; const char *name; } tn[] = {
		{ T_BOOL, "a boolean" }, { T_NUM, "a number" },
		{ T_STR, "a string" }, { T_NULL, "null" },
	};
	size_t i, o = 0;
	int    first = 1;

	buf[0] = '\0';
	for (i = 0; i < sizeof(tn) / sizeof(tn[0]); i++) {
		int w;

		if (!(t & tn[i].bit))
			continue;
		w = snprintf(buf + o, sz - o, "%s%s", first ? "" : " or ",
		    tn[i].name);
		if (w < 0 || (size_t)w >= sz - o)
			break;
		o += (size_t)w;
		first = 0;
	}
	return buf;
}

/* Static check: operand x of operator `what` must be able to be of a type
 * in `ok` (null never is). NULL on error. */
static struct node *
need(struct parser *p, struct node *x, unsigned ok, const char *what,
    const char *wants, unsigned col)
{
	char buf[64];

	if ((x->types & ok) != 0)
		return x;
	return perr(p, col, "%s needs %s, not %s", what, wants,
	    types_desc(x->types, buf, sizeof(buf)));
}

static struct node *parse_cond(struct parser *p);

/* Remember a properties.NAME path for rule_expr_prop(). */
static void
note_prop(struct rule_expr *e, const char *name, unsigned col)
{
	size_t i;

	for (i = 0; i < e->nprops; i++)
		if (strcmp(e->props[i].name, name) == 0)
			return;
	e->props = rule__grow(e->props, &e->capprops, e->nprops + 1,
	    sizeof(e->props[0]));
	e->props[e->nprops].name = name;
	e->props[e->nprops].col = col;
	e->nprops++;
}

/* After a '.', a NAME: returns it (caller frees) or NULL on error. */
static char *
path_name(struct parser *p, const char *root)
{
	char *s;

	if (p->tok.kind != TK_DOT) {
		perr(p, p->tok.col, "'.' expected after %s", root);
		return NULL;
	}
	if (next(p) == -1)
		return NULL;
	if (p->tok.kind != TK_IDENT) {
		unexpected(p, "name");
		return NULL;
	}
	s = tok_text(p);
	if (next(p) == -1) {
		free(s);
		return NULL;
	}
	return s;
}

/*
 * A path (root word already consumed, current token is what follows):
 * properties.NAME | event.(type|source|occurred_at) | profile.tier |
 * profile.(balance|lifetime|vars).NAME. Resolved to (kind, name).
 */
static struct node *
parse_path(struct parser *p, const char *root, unsigned col)
{
	struct node *n;
	char        *a, *b = NULL;
	enum pkind   pk;

	if ((a = path_name(p, root)) == NULL)
		return NULL;
	if (strcmp(root, "properties") == 0) {
		pk = P_PROP;
		b = a;
		a = NULL;
	} else if (strcmp(root, "event") == 0) {
		if (strcmp(a, "type") == 0)
			pk = P_EV_TYPE;
		else if (strcmp(a, "source") == 0)
			pk = P_EV_SOURCE;
		else if (strcmp(a, "occurred_at") == 0)
			pk = P_EV_OCCURRED;
		else {
			perr(p, col, "unknown field event.%.40s (event.type, "
			    "event.source, event.occurred_at)", a);
			free(a);
			return NULL;
		}
	} else {
		if (strcmp(a, "tier") == 0)
			pk = P_TIER;
		else if (strcmp(a, "balance") == 0)
			pk = P_BALANCE;
		else if (strcmp(a, "lifetime") == 0)
			pk = P_LIFETIME;
		else if (strcmp(a, "vars") == 0)
			pk = P_VAR;
		else {
			perr(p, col, "unknown field profile.%.40s (profile.tier,"
			    " .balance, .lifetime, .vars)", a);
			free(a);
			return NULL;
		}
		if (pk != P_TIER) {
			b = path_name(p, path_names[pk]);
			if (b == NULL) {
				free(a);
				return NULL;
			}
		}
	}
	free(a);
	if (p->tok.kind == TK_DOT) {
		free(b);
		return perr(p, p->tok.col, "unexpected '.': %s has no fields",
		    path_names[pk]);
	}
	n = new_node(p, N_PATH, col);
	n->pk = pk;
	n->name = b;
	switch (pk) {
	case P_PROP:
	case P_VAR:
		n->types = T_ANY;
		break;
	case P_BALANCE:
	case P_LIFETIME:
		n->types = T_NUM;
		break;
	default:
		n->types = T_STR | T_NULL;
		break;
	}
	if (pk == P_PROP)
		note_prop(p->e, n->name, col);
	return n;
}

/* Static type check and result type of a call. NULL on error. */
static struct node *
type_call(struct parser *p, struct node *n)
{
	const char *name = fns[n->op].name;
	size_t      i;
	unsigned    t = 0;
	int         sure = 0;

	switch (n->op) {
	case F_MIN:
	case F_MAX:
	case F_FLOOR:
	case F_CEIL:
	case F_ROUND:
	case F_ABS:
		for (i = 0; i < n->nargs; i++)
			if (need(p, n->args[i], T_NUM, name, "numbers",
			    n->args[i]->col) == NULL)
				return NULL;
		n->types = T_NUM;
		break;
	case F_LOWER:
	case F_UPPER:
		if (need(p, n->args[0], T_STR, name, "a string",
		    n->args[0]->col) == NULL)
			return NULL;
		n->types = T_STR;
		break;
	case F_HAS:
		if (n->args[0]->kind != N_PATH || n->args[0]->pk != P_PROP)
			return perr(p, n->args[0]->col,
			    "has() takes a properties.NAME path");
		n->types = T_BOOL;
		break;
	case F_COALESCE:
		for (i = 0; i < n->nargs && !sure; i++) {
			t |= n->args[i]->types & ~T_NULL;
			sure = !(n->args[i]->types & T_NULL);
		}
		n->types = sure ? t : (t | T_NULL);
		break;
	default:
		return perr(p, n->col, "internal: bad function");
	}
	return n;
}

/* Comma-separated conditions into n->args, up to and including the
 * token `close` (the current token follows the opening one). 0 or -1. */
static int
parse_args(struct parser *p, struct node *n, enum rule__tok close)
{
	size_t cap = 0;

	if (p->tok.kind != close) {
		for (;;) {
			struct node *x = parse_cond(p);

			if (x == NULL)
				return -1;
			n->args = rule__grow(n->args, &cap, n->nargs + 1,
			    sizeof(n->args[0]));
			n->args[n->nargs++] = x;
			if (p->tok.kind != TK_COMMA)
				break;
			if (next(p) == -1)
				return -1;
		}
	}
	return expect(p, close);
}

/* NAME(args): NAME consumed, current token is '('. */
static struct node *
parse_call(struct parser *p, const char *name, unsigned col)
{
	struct node *n;
	int          f;

	for (f = 0; f < F__MAX; f++)
		if (strcmp(fns[f].name, name) == 0)
			break;
	if (f == F__MAX)
		return perr(p, col, "unknown function '%.40s'", name);
	if (next(p) == -1)
		return NULL;
	n = new_node(p, N_CALL, col);
	n->op = f;
	if (parse_args(p, n, TK_RPAREN) == -1)
		return NULL;
	if (n->nargs < fns[f].minargs ||
	    (fns[f].maxargs != 0 && n->nargs > fns[f].maxargs)) {
		if (fns[f].maxargs == 0)
			return perr(p, col, "%s() takes at least %zu "
			    "argument%s, not %zu", name, fns[f].minargs,
			    fns[f].minargs == 1 ? "" : "s", n->nargs);
		return perr(p, col, "%s() takes %zu argument%s, not %zu",
		    name, fns[f].minargs, fns[f].minargs == 1 ? "" : "s",
		    n->nargs);
	}
	if (seal(p, n) == NULL)
		return NULL;
	return type_call(p, n);
}

/* A literal, path, call or parenthesised expression. */
static struct node *
parse_primary(struct parser *p)
{
	struct node *n;
	unsigned     col = p->tok.col;
	char        *word;

	switch (p->tok.kind) {
	case TK_NUM:
		n = new_node(p, N_LIT, col);
		v_num(&n->lit);
		n->types = T_NUM;
		if (rule_dec_parse(p->lx.src + p->tok.off, p->tok.len,
		    n->lit.num) == -1)
			return perr(p, col, "number exponent beyond %d",
			    RULE_DEC_MAX_EXP);
		if (next(p) == -1)
			return NULL;
		return n;
	case TK_STR:
		n = new_node(p, N_LIT, col);
		n->lit.type = RULE_V_STR;
		n->lit.str = p->tok.str;
		n->lit.len = p->tok.slen;
		p->tok.str = NULL;
		n->types = T_STR;
		if (next(p) == -1)
			return NULL;
		return n;
	case TK_LPAREN:
		/* parse_cond() counts the nesting */
		if (next(p) == -1)
			return NULL;
		if ((n = parse_cond(p)) == NULL)
			return NULL;
		if (expect(p, TK_RPAREN) == -1)
			return NULL;
		return n;
	case TK_IDENT:
		break;
	default:
		return unexpected(p, "a value");
	}

	if (tok_is(p, "true") || tok_is(p, "false") || tok_is(p, "null")) {
		n = new_node(p, N_LIT, col);
		if (tok_is(p, "null"))
			n->types = T_NULL;
		else {
			v_bool(&n->lit, tok_is(p, "true"));
			n->types = T_BOOL;
		}
		if (next(p) == -1)
			return NULL;
		return n;
	}
	word = tok_text(p);
	if (next(p) == -1) {
		free(word);
		return NULL;
	}
	if (p->tok.kind == TK_LPAREN)
		n = parse_call(p, word, col);
	else if (strcmp(word, "properties") == 0 ||
	    strcmp(word, "event") == 0 || strcmp(word, "profile") == 0)
		n = parse_path(p, word, col);
	else
		n = perr(p, col, "unknown name '%.40s' (paths start with "
		    "properties., event. or profile.)", word);
	free(word);
	return n;
}

/* Prefix operators ! and - (right to left), then a primary. */
static struct node *
parse_unary(struct parser *p)
{
	struct node *n, *x;
	unsigned     col = p->tok.col;

	if (p->tok.kind != TK_NOT && p->tok.kind != TK_MINUS)
		return parse_primary(p);
	n = new_node(p, p->tok.kind == TK_NOT ? N_NOT : N_NEG, col);
	if (enter(p, col) == -1 || next(p) == -1)
		return NULL;
	if ((x = parse_unary(p)) == NULL)
		return NULL;
	p->depth--;
	n->a = x;
	if (seal(p, n) == NULL)
		return NULL;
	if (n->kind == N_NOT) {
		if (need(p, x, T_BOOL, "'!'", "a boolean", col) == NULL)
			return NULL;
		n->types = T_BOOL;
	} else {
		if (need(p, x, T_NUM, "unary '-'", "a number", col) == NULL)
			return NULL;
		n->types = T_NUM;
	}
	return n;
}

/* Binary operators: precedence (higher binds tighter), node kind, op. */
struct binop {
	int        prec;
	enum nkind kind;
	enum bop   op;
	const char *name;
};

/* The binary operator at the current token, or NULL. `in` is a word. */
static const struct binop *
binop_at(const struct parser *p)
{
	static const struct binop b_or = { 1, N_OR, B__MAX, "'||'" };
	static const struct binop b_and = { 2, N_AND, B__MAX, "'&&'" };
	static const struct binop b_in = { 4, N_IN, B__MAX, "'in'" };
	static const struct binop b_bin[B__MAX] = {
		{ 5, N_BIN, B_ADD, "'+'" },   /* B_ADD */
		{ 5, N_BIN, B_SUB, "'-'" },   /* B_SUB */
		{ 6, N_BIN, B_MUL, "'*'" },   /* B_MUL */
		{ 6, N_BIN, B_DIV, "'/'" },   /* B_DIV */
		{ 6, N_BIN, B_MOD, "'%'" },   /* B_MOD */
		{ 3, N_BIN, B_EQ, "'=='" },   /* B_EQ */
		{ 3, N_BIN, B_NE, "'!='" },   /* B_NE */
		{ 4, N_BIN, B_LT, "'<'" },    /* B_LT */
		{ 4, N_BIN, B_LE, "'<='" },   /* B_LE */
		{ 4, N_BIN, B_GT, "'>'" },    /* B_GT */
		{ 4, N_BIN, B_GE, "'>='" },   /* B_GE */
	};

	switch (p->tok.kind) {
	case TK_OR:    return &b_or;
	case TK_AND:   return &b_and;
	case TK_PLUS:  return &b_bin[B_ADD];
	case TK_MINUS: return &b_bin[B_SUB];
	case TK_MUL:   return &b_bin[B_MUL];
	case TK_DIV:   return &b_bin[B_DIV];
	case TK_MOD:   return &b_bin[B_MOD];
	case TK_EQ:    return &b_bin[B_EQ];
	case TK_NE:    return &b_bin[B_NE];
	case TK_LT:    return &b_bin[B_LT];
	case TK_LE:    return &b_bin[B_LE];
	case TK_GT:    return &b_bin[B_GT];
	case TK_GE:    return &b_bin[B_GE];
	case TK_IDENT: return tok_is(p, "in") ? &b_in : NULL;
	default:       return NULL;
	}
}

/* Static types of a binary node n (a op b). NULL on a certain error. */
static struct node *
type_binary(struct parser *p, struct node *n, const struct binop *bo)
{
	unsigned l = n->a->types, r = n->b ? n->b->types : 0;

	switch (n->kind) {
	case N_OR:
	case N_AND:
		if (need(p, n->a, T_BOOL, bo->name, "booleans", n->col) ==
		    NULL || need(p, n->b, T_BOOL, bo->name, "booleans",
		    n->col) == NULL)
			return NULL;
		n->types = T_BOOL;
		return n;
	case N_IN:
		if ((l & ~T_NULL) == 0)
			return perr(p, n->col, "'in' needs a value on its left,"
			    " not null");
		n->types = T_BOOL;
		return n;
	default:
		break;
	}
	switch (n->op) {
	case B_EQ:
	case B_NE:
		n->types = T_BOOL;
		return n;
	case B_ADD:
		n->types = l & r & (T_NUM | T_STR);
		if (n->types == 0) {
			char lb[64], rb[64];

			return perr(p, n->col, "'+' needs two numbers or two "
			    "strings, not %s and %s",
			    types_desc(l, lb, sizeof(lb)),
			    types_desc(r, rb, sizeof(rb)));
		}
		return n;
	case B_LT:
	case B_LE:
	case B_GT:
	case B_GE:
		if ((l & r & (T_NUM | T_STR)) == 0) {
			char lb[64], rb[64];

			return perr(p, n->col, "%s needs two numbers or two "
			    "strings, not %s and %s", bo->name,
			    types_desc(l, lb, sizeof(lb)),
			    types_desc(r, rb, sizeof(rb)));
		}
		n->types = T_BOOL;
		return n;
	default:
		if (need(p, n->a, T_NUM, bo->name, "numbers", n->col) ==
		    NULL || need(p, n->b, T_NUM, bo->name, "numbers",
		    n->col) == NULL)
			return NULL;
		n->types = T_NUM;
		return n;
	}
}

/* `[` expr, ... `]` after `in`, into n->args. */
static struct node *
parse_list(struct parser *p, struct node *n)
{
	if (p->tok.kind != TK_LBRACK)
		return unexpected(p, "'[' after 'in'");
	if (next(p) == -1)
		return NULL;
	if (parse_args(p, n, TK_RBRACK) == -1)
		return NULL;
	return n;
}

/*
 * Precedence climbing over the binary operators: parse a unary operand,
 * then while the next operator binds at least as tightly as min_prec,
 * take its right operand with min_prec = its precedence + 1 (left
 * associativity). The recursion is bounded by the number of precedence
 * levels times the nesting depth.
 */
static struct node *
parse_binary(struct parser *p, int min_prec)
{
	struct node        *lhs, *n, *rhs;
	const struct binop *bo;

	if ((lhs = parse_unary(p)) == NULL)
		return NULL;
	while ((bo = binop_at(p)) != NULL && bo->prec >= min_prec) {
		n = new_node(p, bo->kind, p->tok.col);
		n->op = bo->op;
		n->a = lhs;
		if (next(p) == -1)
			return NULL;
		if (bo->kind == N_IN) {
			if (parse_list(p, n) == NULL)
				return NULL;
		} else {
			if ((rhs = parse_binary(p, bo->prec + 1)) == NULL)
				return NULL;
			n->b = rhs;
		}
		if (seal(p, n) == NULL || type_binary(p, n, bo) == NULL)
			return NULL;
		lhs = n;
	}
	return lhs;
}

/* cond := binary [ '?' cond ':' cond ]   (right associative) */
static struct node *
parse_cond(struct parser *p)
{
	struct node *c, *n;
	unsigned     col = p->tok.col;

	if (enter(p, col) == -1)
		return NULL;
	if ((c = parse_binary(p, 1)) == NULL)
		return NULL;
	if (p->tok.kind == TK_QUEST) {
		n = new_node(p, N_COND, p->tok.col);
		n->a = c;
		if (next(p) == -1 || (n->b = parse_cond(p)) == NULL)
			return NULL;
		if (p->tok.kind != TK_COLON)
			return unexpected(p, "':' of '?:'");
		if (next(p) == -1 || (n->c = parse_cond(p)) == NULL)
			return NULL;
		if (seal(p, n) == NULL || need(p, c, T_BOOL, "condition of "
		    "'?:'", "a boolean", n->col) == NULL)
			return NULL;
		n->types = n->b->types | n->c->types;
		c = n;
	}
	p->depth--;
	return c;
}

/* Compile; see rules.h. */
struct rule_expr *
rule_expr_compile(const char *src, size_t len, enum rule_want want,
    struct rule_err *err)
{
	struct parser p;
	struct node  *root = NULL;
	char          buf[64];

	memset(err, 0, sizeof(*err));
	memset(&p, 0, sizeof(p));
	p.err = err;
	if (src == NULL || (unsigned)want >= RULE_WANT__MAX) {
		err->col = 1;
		snprintf(err->msg, sizeof(err->msg), "no expression");
		return NULL;
	}
	if (len > RULE_EXPR_MAX_LEN) {
		err->col = 1;
		snprintf(err->msg, sizeof(err->msg),
		    "expression longer than %d bytes", RULE_EXPR_MAX_LEN);
		return NULL;
	}
	p.e = rule__xcalloc(1, sizeof(*p.e));
	p.e->want = want;
	rule__lex_init(&p.lx, src, len);
	if (next(&p) == -1)
		goto out;
	if (p.tok.kind == TK_EOF) {
		perr(&p, p.tok.col, "empty expression");
		goto out;
	}
	if ((root = parse_cond(&p)) == NULL)
		goto out;
	if (p.tok.kind != TK_EOF) {
		unexpected(&p, "an operator or end of expression");
		goto out;
	}
	if (want == RULE_WANT_BOOL && !(root->types & T_BOOL))
		perr(&p, 1, "must be a boolean (a condition), not %s",
		    types_desc(root->types, buf, sizeof(buf)));
	else if (want == RULE_WANT_NUMBER && !(root->types & T_NUM))
		perr(&p, 1, "must be a number, not %s",
		    types_desc(root->types, buf, sizeof(buf)));
out:
	/* frees: the lookahead token's string; on error the whole tree */
	free(p.tok.str);
	if (p.failed || root == NULL) {
		rule_expr_free(p.e);
		return NULL;
	}
	p.e->root = root;
	return p.e;
}

/* Free every node through the allocation chain (no recursion). */
void
rule_expr_free(struct rule_expr *e)
{
	struct node *n, *nx;

	if (e == NULL)
		return;
	for (n = e->nodes; n != NULL; n = nx) {
		nx = n->next;
		rule_value_clear(&n->lit);
		free(n->name);
		free(n->args);
		free(n);
	}
	free(e->props);
	free(e);
}

int
rule_expr_reads_vars(const struct rule_expr *e)
{
	const struct node *n;

	for (n = e != NULL ? e->nodes : NULL; n != NULL; n = n->next)
		if (n->kind == N_PATH && n->pk == P_VAR)
			return 1;
	return 0;
}

size_t
rule_expr_nprops(const struct rule_expr *e)
{
	return e ? e->nprops : 0;
}

const char *
rule_expr_prop(const struct rule_expr *e, size_t i, unsigned *col)
{
	if (e == NULL || i >= e->nprops)
		return NULL;
	if (col)
		*col = e->props[i].col;
	return e->props[i].name;
}

/* ==== evaluator ==== */

struct ectx {
	const struct rule_env *env;
	char                  *why;
	size_t                 whysz;
};

/* Record why the evaluation fails; returns -1. */
static int
efail(struct ectx *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
efail(struct ectx *x, const char *fmt, ...)
{
	va_list ap;

	if (x->why != NULL && x->whysz > 0) {
		va_start(ap, fmt);
		vsnprintf(x->why, x->whysz, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static const char *
vt_name(enum rule_vtype t)
{
	switch (t) {
	case RULE_V_BOOL: return "a boolean";
	case RULE_V_NUM:  return "a number";
	case RULE_V_STR:  return "a string";
	default:          return "null";
	}
}

static int ev(const struct node *n, struct ectx *x, struct rule_value *out);

/* Read name from a JSON object of values (properties or vars). */
static int
ev_json_member(json_object *obj, const char *root, const char *name,
    struct ectx *x, struct rule_value *out)
{
	json_object *m = NULL;
	char         why[RULE_WHY_MAX];

	v_null(out);
	if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
	    !json_object_object_get_ex(obj, name, &m))
		return 0;
	if (rule_value_from_json(m, out, why, sizeof(why)) == -1)
		return efail(x, "%s.%.60s %s", root, name, why);
	return 0;
}

/* A path's value from the environment. */
static int
ev_path(const struct node *n, struct ectx *x, struct rule_value *out)
{
	const struct rule_env *env = x->env;
	const char            *s = NULL;
	size_t                 i;

	v_null(out);
	switch (n->pk) {
	case P_PROP:
		return ev_json_member(env->properties, "properties", n->name,
		    x, out);
	case P_VAR:
		return ev_json_member(env->vars, "profile.vars", n->name, x,
		    out);
	case P_BALANCE:
	case P_LIFETIME:
		v_num(out);
		for (i = 0; i < env->nbalances; i++) {
			const struct rule_balance *b = &env->balances[i];

			if (b->name == NULL || strcmp(b->name, n->name) != 0)
				continue;
			rule__q_set_i64(out->num, n->pk == P_BALANCE ?
			    b->balance : b->lifetime);
			break;
		}
		return 0;
	case P_EV_TYPE:
		s = env->event_type;
		break;
	case P_EV_SOURCE:
		s = env->event_source;
		break;
	case P_EV_OCCURRED:
		s = env->event_occurred_at;
		break;
	case P_TIER:
		s = env->tier;
		break;
	default:
		return efail(x, "internal: bad path");
	}
	if (s != NULL)
		v_str(out, s, strlen(s));
	return 0;
}

/* Arithmetic, comparison and equality on two evaluated operands. */
static int
ev_binop(int op, const struct rule_value *a, const struct rule_value *b,
    struct ectx *x, struct rule_value *out)
{
	int c;

	if (op == B_EQ || op == B_NE) {
		v_bool(out, rule_value_equal(a, b) == (op == B_EQ));
		return 0;
	}
	if (a->type == RULE_V_NULL || b->type == RULE_V_NULL)
		return efail(x, "null operand of '%s'", bop_names[op]);
	if (op == B_ADD && a->type == RULE_V_STR && b->type == RULE_V_STR) {
		if (a->len > RULE_STR_MAX || b->len > RULE_STR_MAX - a->len)
			return efail(x, "string longer than %d bytes",
			    RULE_STR_MAX);
		out->type = RULE_V_STR;
		out->str = rule__xmalloc(a->len + b->len + 1);
		if (a->len)
			memcpy(out->str, a->str, a->len);
		if (b->len)
			memcpy(out->str + a->len, b->str, b->len);
		out->len = a->len + b->len;
		out->str[out->len] = '\0';
		return 0;
	}
	if (op >= B_LT && a->type == RULE_V_STR && b->type == RULE_V_STR) {
		c = str_cmp(a, b);
		goto cmp;
	}
	if (a->type != RULE_V_NUM || b->type != RULE_V_NUM)
		return efail(x, "'%s' on %s and %s", bop_names[op],
		    vt_name(a->type), vt_name(b->type));
	if (op >= B_LT) {
		c = mpq_cmp(a->num, b->num);
		goto cmp;
	}
	if ((op == B_DIV || op == B_MOD) && mpq_sgn(b->num) == 0)
		return efail(x, op == B_DIV ? "division by zero" :
		    "modulo by zero");
	v_num(out);
	switch (op) {
	case B_ADD:
		mpq_add(out->num, a->num, b->num);
		break;
	case B_SUB:
		mpq_sub(out->num, a->num, b->num);
		break;
	case B_MUL:
		mpq_mul(out->num, a->num, b->num);
		break;
	case B_DIV:
		mpq_div(out->num, a->num, b->num);
		break;
	case B_MOD: {
		/* a - b × trunc(a / b) */
		mpz_t t;

		mpz_init(t);
		mpq_div(out->num, a->num, b->num);
		mpz_tdiv_q(t, mpq_numref(out->num), mpq_denref(out->num));
		mpq_set_z(out->num, t);
		mpq_mul(out->num, out->num, b->num);
		mpq_sub(out->num, a->num, out->num);
		mpz_clear(t);
		break;
	}
	default:
		rule_value_clear(out);
		return efail(x, "internal: bad operator");
	}
	return 0;
cmp:
	switch (op) {
	case B_LT: v_bool(out, c < 0); break;
	case B_LE: v_bool(out, c <= 0); break;
	case B_GT: v_bool(out, c > 0); break;
	default:   v_bool(out, c >= 0); break;
	}
	return 0;
}

/* Evaluate n to a boolean for `what`; 0/1 in *b, or -1. */
static int
ev_bool(const struct node *n, struct ectx *x, const char *what, int *b)
{
	struct rule_value v;

	if (ev(n, x, &v) == -1)
		return -1;
	if (v.type != RULE_V_BOOL) {
		enum rule_vtype t = v.type;

		rule_value_clear(&v);
		if (t == RULE_V_NULL)
			return efail(x, "%s is null", what);
		return efail(x, "%s needs a boolean, not %s", what, vt_name(t));
	}
	*b = v.b;
	return 0;
}

/* Evaluate n to a number into *out (initialised by ev), or -1. */
static int
ev_num(const struct node *n, struct ectx *x, const char *what,
    struct rule_value *out)
{
	if (ev(n, x, out) == -1)
		return -1;
	if (out->type != RULE_V_NUM) {
		enum rule_vtype t = out->type;

		rule_value_clear(out);
		if (t == RULE_V_NULL)
			return efail(x, "null argument of %s()", what);
		return efail(x, "%s() needs a number, not %s", what,
		    vt_name(t));
	}
	return 0;
}

/* A function call. */
static int
ev_call(const struct node *n, struct ectx *x, struct rule_value *out)
{
	const char       *name = fns[n->op].name;
	struct rule_value v;
	size_t            i;
	mpz_t             z;

	v_null(out);
	switch (n->op) {
	case F_MIN:
	case F_MAX:
		if (ev_num(n->args[0], x, name, out) == -1)
			return -1;
		for (i = 1; i < n->nargs; i++) {
			int c;

			if (ev_num(n->args[i], x, name, &v) == -1) {
				rule_value_clear(out);
				return -1;
			}
			c = mpq_cmp(v.num, out->num);
			if ((n->op == F_MIN && c < 0) ||
			    (n->op == F_MAX && c > 0))
				mpq_set(out->num, v.num);
			rule_value_clear(&v);
		}
		return 0;
	case F_FLOOR:
	case F_CEIL:
	case F_ROUND:
		if (ev_num(n->args[0], x, name, out) == -1)
			return -1;
		mpz_init(z);
		rule_dec_round(z, out->num, n->op == F_FLOOR ?
		    RULE_ROUND_FLOOR : n->op == F_CEIL ? RULE_ROUND_CEIL :
		    RULE_ROUND_HALF_AWAY);
		mpq_set_z(out->num, z);
		mpz_clear(z);
		return 0;
	case F_ABS:
		if (ev_num(n->args[0], x, name, out) == -1)
			return -1;
		mpq_abs(out->num, out->num);
		return 0;
	case F_HAS: {
		json_object *props = x->env->properties, *m = NULL;

		v_bool(out, props != NULL &&
		    json_object_is_type(props, json_type_object) &&
		    json_object_object_get_ex(props, n->args[0]->name, &m) &&
		    m != NULL);
		return 0;
	}
	case F_COALESCE:
		for (i = 0; i < n->nargs; i++) {
			if (ev(n->args[i], x, out) == -1)
				return -1;
			if (out->type != RULE_V_NULL)
				return 0;
		}
		return 0;
	case F_LOWER:
	case F_UPPER:
		if (ev(n->args[0], x, out) == -1)
			return -1;
		if (out->type != RULE_V_STR) {
			enum rule_vtype t = out->type;

			rule_value_clear(out);
			if (t == RULE_V_NULL)
				return efail(x, "null argument of %s()", name);
			return efail(x, "%s() needs a string, not %s", name,
			    vt_name(t));
		}
		for (i = 0; i < out->len; i++) {
			char c = out->str[i];

			if (n->op == F_LOWER && c >= 'A' && c <= 'Z')
				out->str[i] = (char)(c - 'A' + 'a');
			else if (n->op == F_UPPER && c >= 'a' && c <= 'z')
				out->str[i] = (char)(c - 'a' + 'A');
		}
		return 0;
	default:
		return efail(x, "internal: bad function");
	}
}

/*
 * Evaluate node n into *out (always written: null on failure). Recursion
 * depth equals the node's height, at most RULE_EXPR_MAX_DEPTH.
 */
static int
ev(const struct node *n, struct ectx *x, struct rule_value *out)
{
	struct rule_value a, b;
	size_t            i;
	int               bv, r;

	v_null(out);
	switch (n->kind) {
	case N_LIT:
		rule_value_copy(out, &n->lit);
		return 0;
	case N_PATH:
		return ev_path(n, x, out);
	case N_NOT:
		if (ev_bool(n->a, x, "operand of '!'", &bv) == -1)
			return -1;
		v_bool(out, !bv);
		return 0;
	case N_NEG:
		if (ev(n->a, x, out) == -1)
			return -1;
		if (out->type != RULE_V_NUM) {
			enum rule_vtype t = out->type;

			rule_value_clear(out);
			if (t == RULE_V_NULL)
				return efail(x, "null operand of unary '-'");
			return efail(x, "unary '-' on %s", vt_name(t));
		}
		mpq_neg(out->num, out->num);
		return 0;
	case N_AND:
	case N_OR:
		if (ev_bool(n->a, x, n->kind == N_AND ? "operand of '&&'" :
		    "operand of '||'", &bv) == -1)
			return -1;
		if (bv == (n->kind == N_OR)) {      /* short circuit */
			v_bool(out, bv);
			return 0;
		}
		if (ev_bool(n->b, x, n->kind == N_AND ? "operand of '&&'" :
		    "operand of '||'", &bv) == -1)
			return -1;
		v_bool(out, bv);
		return 0;
	case N_COND:
		if (ev_bool(n->a, x, "condition of '?:'", &bv) == -1)
			return -1;
		return ev(bv ? n->b : n->c, x, out);
	case N_IN:
		if (ev(n->a, x, &a) == -1)
			return -1;
		if (a.type == RULE_V_NULL)
			return efail(x, "null operand of 'in'");
		for (i = 0, r = 0; i < n->nargs && !r; i++) {
			if (ev(n->args[i], x, &b) == -1) {
				rule_value_clear(&a);
				return -1;
			}
			r = rule_value_equal(&a, &b);
			rule_value_clear(&b);
		}
		rule_value_clear(&a);
		v_bool(out, r);
		return 0;
	case N_BIN:
		if (ev(n->a, x, &a) == -1)
			return -1;
		if (ev(n->b, x, &b) == -1) {
			rule_value_clear(&a);
			return -1;
		}
		r = ev_binop(n->op, &a, &b, x, out);
		rule_value_clear(&a);
		rule_value_clear(&b);
		return r;
	case N_CALL:
		return ev_call(n, x, out);
	default:
		return efail(x, "internal: bad node");
	}
}

/* Evaluate; see rules.h. */
int
rule_expr_eval(const struct rule_expr *e, const struct rule_env *env,
    struct rule_value *out, char *why, size_t whysz)
{
	struct ectx             x;
	static const struct rule_env empty;
	enum rule_vtype         t;

	if (why != NULL && whysz > 0)
		why[0] = '\0';
	v_null(out);
	x.env = env ? env : &empty;
	x.why = why;
	x.whysz = whysz;
	if (e == NULL || e->root == NULL)
		return efail(&x, "no expression");
	if (ev(e->root, &x, out) == -1)
		return -1;
	t = out->type;
	if (e->want == RULE_WANT_BOOL && t != RULE_V_BOOL) {
		rule_value_clear(out);
		return efail(&x, "condition is %s, not a boolean", vt_name(t));
	}
	if (e->want == RULE_WANT_NUMBER && t != RULE_V_NUM) {
		rule_value_clear(out);
		return efail(&x, "result is %s, not a number", vt_name(t));
	}
	return 0;
}
