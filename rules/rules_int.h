/*
 * rules/ internals shared by dec.c, lex.c, expr.c and engine.c. Not for
 * other folders: use rules.h.
 */
#ifndef RULES_INT_H
#define RULES_INT_H

#include <stddef.h>
#include <stdint.h>
#include <gmp.h>

#include "rules.h"

/* malloc/realloc that abort on out of memory (STYLE.md: decided once). */
void *rule__xmalloc(size_t n);
void *rule__xrealloc(void *p, size_t n);
void *rule__xcalloc(size_t n, size_t size);

/* Grow arr (of *cap elements of `size` bytes) to hold at least need
 * elements; returns the (maybe moved) array, which the caller owns.
 * Aborts on overflow or out of memory. */
void *rule__grow(void *arr, size_t *cap, size_t need, size_t size);

/* int64 <-> GMP, independent of the width of long. */
void rule__z_set_i64(mpz_t z, int64_t v);
int  rule__z_get_i64(const mpz_t z, int64_t *v);   /* 0, or -1: out of range */
void rule__q_set_i64(mpq_t q, int64_t v);
/* rule_dec_parse() always the big-number way (for tests: both ways must
 * give the same value) */
int  rule__dec_parse_big(const char *s, size_t len, mpq_t out);

/* Checked int64 addition: 0 and *r = a + b, or -1 on overflow. */
int rule__add_i64(int64_t a, int64_t b, int64_t *r);

/* snprintf into why[0..whysz) when whysz > 0. */
void rule__why(char *why, size_t whysz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- lexer (lex.c) ---- */

enum rule__tok {
	TK_EOF,
	TK_NUM,       /* text in src[off..off+len) */
	TK_STR,       /* decoded bytes in str/slen */
	TK_IDENT,     /* [A-Za-z_][A-Za-z0-9_]*, keywords included */
	TK_LPAREN, TK_RPAREN, TK_LBRACK, TK_RBRACK, TK_COMMA, TK_DOT,
	TK_QUEST, TK_COLON,
	TK_OR, TK_AND, TK_EQ, TK_NE, TK_LT, TK_LE, TK_GT, TK_GE,
	TK_PLUS, TK_MINUS, TK_MUL, TK_DIV, TK_MOD, TK_NOT,
	TK__MAX
};

struct rule__token {
	enum rule__tok kind;
	size_t         off, len;   /* bytes of the source text */
	unsigned       col;        /* 1-based, in characters */
	char          *str;        /* TK_STR: malloc'd, NUL-terminated */
	size_t         slen;
};

struct rule__lexer {
	const char *src;
	size_t      len, pos;
	size_t      cpos;          /* column cache: byte offset ... */
	unsigned    ccol;          /* ... and its column */
};

void     rule__lex_init(struct rule__lexer *lx, const char *src, size_t len);
/* Next token into *t (t->str is owned by *t: free it or take it). Returns
 * 0, or -1 with *err set on a lexical error. */
int      rule__lex(struct rule__lexer *lx, struct rule__token *t,
    struct rule_err *err);
/* Column (1-based, characters) of byte offset off; offsets must not go
 * backwards between calls. */
unsigned rule__lex_col(struct rule__lexer *lx, size_t off);
/* Printable name of a token kind for messages: "')'", "number", ... */
const char *rule__tok_name(enum rule__tok k);

#endif /* RULES_INT_H */
