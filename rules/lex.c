/*
 * rules/lex.c — the lexer of the expression language (CONF.md
 * "Expressions"). Input is UTF-8 (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF); outside string literals only ASCII and the
 * multiplication sign U+00D7 are allowed. Columns count characters.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

/* TOKEN NAMES, indexed by enum rule__tok */
static const char *const tok_names[TK__MAX] = {
	"end of expression",  /* TK_EOF */
	"number",             /* TK_NUM */
	"string",             /* TK_STR */
	"name",               /* TK_IDENT */
	"'('",                /* TK_LPAREN */
	"')'",                /* TK_RPAREN */
	"'['",                /* TK_LBRACK */
	"']'",                /* TK_RBRACK */
	"','",                /* TK_COMMA */
	"'.'",                /* TK_DOT */
	"'?'",                /* TK_QUEST */
	"':'",                /* TK_COLON */
	"'||'",               /* TK_OR */
	"'&&'",               /* TK_AND */
	"'=='",               /* TK_EQ */
	"'!='",               /* TK_NE */
	"'<'",                /* TK_LT */
	"'<='",               /* TK_LE */
	"'>'",                /* TK_GT */
	"'>='",               /* TK_GE */
	"'+'",                /* TK_PLUS */
	"'-'",                /* TK_MINUS */
	"'*'",                /* TK_MUL */
	"'/'",                /* TK_DIV */
	"'%'",                /* TK_MOD */
	"'!'",                /* TK_NOT */
};
_Static_assert(sizeof(tok_names) / sizeof(tok_names[0]) == TK__MAX,
    "tok_names must cover enum rule__tok");

const char *
rule__tok_name(enum rule__tok k)
{
	return (unsigned)k < TK__MAX ? tok_names[k] : "token";
}

void
rule__lex_init(struct rule__lexer *lx, const char *src, size_t len)
{
	memset(lx, 0, sizeof(*lx));
	lx->src = src;
	lx->len = len;
	lx->ccol = 1;
}

/*
 * Column of byte offset off: 1 + the characters before it, counting every
 * byte that is not a UTF-8 continuation byte. Walks forward from the last
 * answer, so a whole expression costs O(len).
 */
unsigned
rule__lex_col(struct rule__lexer *lx, size_t off)
{
	if (off > lx->len)
		off = lx->len;
	if (off < lx->cpos) {
		lx->cpos = 0;
		lx->ccol = 1;
	}
	while (lx->cpos < off) {
		if (((unsigned char)lx->src[lx->cpos] & 0xC0) != 0x80)
			lx->ccol++;
		lx->cpos++;
	}
	return lx->ccol;
}

static int
lex_fail(struct rule__lexer *lx, size_t off, struct rule_err *err,
    const char *msg)
{
	err->col = rule__lex_col(lx, off);
	snprintf(err->msg, sizeof(err->msg), "%s", msg);
	return -1;
}

/*
 * Decode one UTF-8 sequence (RFC 3629 §4) at s[0..n). Returns its length
 * (1-4) with the code point in *cp, or 0 when it is not valid UTF-8.
 */
static size_t
utf8_decode(const unsigned char *s, size_t n, unsigned long *cp)
{
	unsigned long c;
	size_t        need, i;

	if (n == 0)
		return 0;
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	} else if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		need = 2;
		c = s[0] & 0x1F;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		need = 3;
		c = s[0] & 0x0F;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		need = 4;
		c = s[0] & 0x07;
	} else
		return 0;
	if (n < need)
		return 0;
	for (i = 1; i < need; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if ((need == 3 && c < 0x800) || (need == 4 && c < 0x10000) ||
	    c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp = c;
	return need;
}

/* Append code point cp as UTF-8 to buf at *o (room for 4 bytes). */
static void
utf8_put(char *buf, size_t *o, unsigned long cp)
{
	if (cp < 0x80)
		buf[(*o)++] = (char)cp;
	else if (cp < 0x800) {
		buf[(*o)++] = (char)(0xC0 | (cp >> 6));
		buf[(*o)++] = (char)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		buf[(*o)++] = (char)(0xE0 | (cp >> 12));
		buf[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
		buf[(*o)++] = (char)(0x80 | (cp & 0x3F));
	} else {
		buf[(*o)++] = (char)(0xF0 | (cp >> 18));
		buf[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
		buf[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
		buf[(*o)++] = (char)(0x80 | (cp & 0x3F));
	}
}

/* Four hex digits at s[0..4) into *v. Returns 0 or -1. */
static int
hex4(const char *s, unsigned long *v)
{
	int i;

	*v = 0;
	for (i = 0; i < 4; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -1;
		*v = (*v << 4) | d;
	}
	return 0;
}

/*
 * A string literal starting at the '"' at lx->pos, with the escapes of
 * RFC 8259 §7 (\" \\ \/ \b \f \n \r \t \uXXXX, surrogates paired); raw
 * control characters and invalid UTF-8 are errors. The decoded text is
 * never longer than the source, so one buffer of that size suffices.
 * Fills t->str (malloc'd, owned by the token) and t->slen.
 */
static int
lex_string(struct rule__lexer *lx, struct rule__token *t, struct rule_err *err)
{
	const char *s = lx->src;
	size_t      i = lx->pos + 1, o = 0;
	char       *buf = rule__xmalloc(lx->len - lx->pos + 1);

	for (;;) {
		unsigned char c;

		if (i >= lx->len) {
			free(buf);
			return lex_fail(lx, lx->pos, err,
			    "unterminated string");
		}
		c = (unsigned char)s[i];
		if (c == '"') {
			i++;
			break;
		}
		if (c < 0x20) {
			free(buf);
			return lex_fail(lx, i, err,
			    "control character in string (use an escape)");
		}
		if (c >= 0x80) {
			unsigned long cp;
			size_t        n = utf8_decode((const unsigned char *)s + i,
			    lx->len - i, &cp);

			if (n == 0) {
				free(buf);
				return lex_fail(lx, i, err, "invalid UTF-8");
			}
			memcpy(buf + o, s + i, n);
			o += n;
			i += n;
			continue;
		}
		if (c != '\\') {
			buf[o++] = (char)c;
			i++;
			continue;
		}
		if (i + 1 >= lx->len) {
			free(buf);
			return lex_fail(lx, lx->pos, err,
			    "unterminated string");
		}
		switch (s[i + 1]) {
		case '"':  buf[o++] = '"';  i += 2; continue;
		case '\\': buf[o++] = '\\'; i += 2; continue;
		case '/':  buf[o++] = '/';  i += 2; continue;
		case 'b':  buf[o++] = '\b'; i += 2; continue;
		case 'f':  buf[o++] = '\f'; i += 2; continue;
		case 'n':  buf[o++] = '\n'; i += 2; continue;
		case 'r':  buf[o++] = '\r'; i += 2; continue;
		case 't':  buf[o++] = '\t'; i += 2; continue;
		case 'u':  break;
		default:
			free(buf);
			return lex_fail(lx, i, err, "unknown escape in string");
		}
		{
			unsigned long cp, lo;

			if (lx->len - i < 6 || hex4(s + i + 2, &cp) == -1) {
				free(buf);
				return lex_fail(lx, i, err,
				    "\\u needs four hex digits");
			}
			if (cp >= 0xDC00 && cp <= 0xDFFF) {
				free(buf);
				return lex_fail(lx, i, err,
				    "unpaired surrogate in \\u escape");
			}
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				if (lx->len - i < 12 || s[i + 6] != '\\' ||
				    s[i + 7] != 'u' ||
				    hex4(s + i + 8, &lo) == -1 ||
				    lo < 0xDC00 || lo > 0xDFFF) {
					free(buf);
					return lex_fail(lx, i, err,
					    "unpaired surrogate in \\u escape");
				}
				cp = 0x10000 + ((cp - 0xD800) << 10) +
				    (lo - 0xDC00);
				i += 6;
			}
			/* \uXXXX is 6 bytes and yields at most 3; a pair is
			 * 12 bytes and yields 4: never longer than source */
			utf8_put(buf, &o, cp);
			i += 6;
		}
	}
	buf[o] = '\0';
	t->kind = TK_STR;
	t->str = buf;
	t->slen = o;
	t->len = i - lx->pos;
	lx->pos = i;
	return 0;
}

static int
isdigit_(char c)
{
	return c >= '0' && c <= '9';
}

static int
isidstart(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int
isidchar(char c)
{
	return isidstart(c) || isdigit_(c);
}

/*
 * A number literal at lx->pos: the RFC 8259 §6 grammar without the sign.
 * The text is checked here; the parser converts it with rule_dec_parse().
 */
static int
lex_number(struct rule__lexer *lx, struct rule__token *t, struct rule_err *err)
{
	const char *s = lx->src;
	size_t      i = lx->pos, n = lx->len;

	if (s[i] == '0') {
		i++;
		if (i < n && isdigit_(s[i]))
			return lex_fail(lx, lx->pos, err,
			    "number with a leading zero");
	} else
		while (i < n && isdigit_(s[i]))
			i++;
	if (i < n && s[i] == '.') {
		i++;
		if (i >= n || !isdigit_(s[i]))
			return lex_fail(lx, i, err, "digit expected after '.'");
		while (i < n && isdigit_(s[i]))
			i++;
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		if (i >= n || !isdigit_(s[i]))
			return lex_fail(lx, i, err,
			    "digit expected in exponent");
		while (i < n && isdigit_(s[i]))
			i++;
	}
	if (i < n && (isidchar(s[i]) || s[i] == '.'))
		return lex_fail(lx, i, err, "malformed number");
	t->kind = TK_NUM;
	t->len = i - lx->pos;
	lx->pos = i;
	return 0;
}

/* Scan the next token; see rules_int.h. */
int
rule__lex(struct rule__lexer *lx, struct rule__token *t, struct rule_err *err)
{
	const char *s = lx->src;
	size_t      n = lx->len;
	char        c, d;

	memset(t, 0, sizeof(*t));
	while (lx->pos < n && (s[lx->pos] == ' ' || s[lx->pos] == '\t' ||
	    s[lx->pos] == '\n' || s[lx->pos] == '\r'))
		lx->pos++;
	t->off = lx->pos;
	t->col = rule__lex_col(lx, lx->pos);
	if (lx->pos >= n) {
		t->kind = TK_EOF;
		return 0;
	}
	c = s[lx->pos];
	d = lx->pos + 1 < n ? s[lx->pos + 1] : '\0';
	if (c == '"')
		return lex_string(lx, t, err);
	if (isdigit_(c))
		return lex_number(lx, t, err);
	if (isidstart(c)) {
		size_t i = lx->pos;

		while (i < n && isidchar(s[i]))
			i++;
		t->kind = TK_IDENT;
		t->len = i - lx->pos;
		lx->pos = i;
		return 0;
	}
	t->len = 1;
	switch (c) {
	case '(': t->kind = TK_LPAREN; break;
	case ')': t->kind = TK_RPAREN; break;
	case '[': t->kind = TK_LBRACK; break;
	case ']': t->kind = TK_RBRACK; break;
	case ',': t->kind = TK_COMMA; break;
	case '.': t->kind = TK_DOT; break;
	case '?': t->kind = TK_QUEST; break;
	case ':': t->kind = TK_COLON; break;
	case '+': t->kind = TK_PLUS; break;
	case '-': t->kind = TK_MINUS; break;
	case '*': t->kind = TK_MUL; break;
	case '/': t->kind = TK_DIV; break;
	case '%': t->kind = TK_MOD; break;
	case '|':
		if (d != '|')
			return lex_fail(lx, lx->pos, err,
			    "unexpected '|' (did you mean '||'?)");
		t->kind = TK_OR;
		t->len = 2;
		break;
	case '&':
		if (d != '&')
			return lex_fail(lx, lx->pos, err,
			    "unexpected '&' (did you mean '&&'?)");
		t->kind = TK_AND;
		t->len = 2;
		break;
	case '=':
		if (d != '=')
			return lex_fail(lx, lx->pos, err,
			    "unexpected '=' (did you mean '=='?)");
		t->kind = TK_EQ;
		t->len = 2;
		break;
	case '!':
		if (d == '=') {
			t->kind = TK_NE;
			t->len = 2;
		} else
			t->kind = TK_NOT;
		break;
	case '<':
		if (d == '=') {
			t->kind = TK_LE;
			t->len = 2;
		} else
			t->kind = TK_LT;
		break;
	case '>':
		if (d == '=') {
			t->kind = TK_GE;
			t->len = 2;
		} else
			t->kind = TK_GT;
		break;
	case '\xC3':
		/* U+00D7 MULTIPLICATION SIGN, UTF-8 C3 97 */
		if (d == '\x97') {
			t->kind = TK_MUL;
			t->len = 2;
			break;
		}
		return lex_fail(lx, lx->pos, err, "unexpected character");
	default:
		if ((unsigned char)c >= 0x80) {
			unsigned long cp;

			if (utf8_decode((const unsigned char *)s + lx->pos,
			    n - lx->pos, &cp) == 0)
				return lex_fail(lx, lx->pos, err,
				    "invalid UTF-8");
		}
		return lex_fail(lx, lx->pos, err, "unexpected character");
	}
	lx->pos += t->len;
	return 0;
}
