/*
 * Minimal table-driven test helper. Each test binary includes this once,
 * records checks with T_CHECK(line, cond, fmt, ...) — `line` is the
 * __LINE__ of the table row, so a failure names its row — and ends main()
 * with `return t_done();`, which prints "N passed, N failed" and returns
 * non-zero when anything failed.
 */
#ifndef T_H
#define T_H

#include <stdio.h>
#include <stdarg.h>

static int t_pass, t_fail;
static const char *t_file = "";

static void
t_check(const char *file, int line, int ok, const char *fmt, ...)
{
	va_list ap;

	if (ok) {
		t_pass++;
		return;
	}
	t_fail++;
	fprintf(stderr, "FAIL %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

#define T_CHECK(line, cond, ...) t_check(__FILE__, (line), !!(cond), __VA_ARGS__)
#define T_OK(cond, ...) t_check(__FILE__, __LINE__, !!(cond), __VA_ARGS__)

static int
t_done(void)
{
	printf("%s: %d passed, %d failed\n", t_file, t_pass, t_fail);
	return t_fail ? 1 : 0;
}

#endif /* T_H */
