/*
 * libFuzzer target for tenant files (conf/: libyaml events, the tree, the
 * schema of CONF.md, expressions compiled by rules/). Each input is written
 * to one temporary file, made once per process, and loaded with
 * conf_tenant_load(). A tenant must come without errors and with a 64-digit
 * version; a failure must come with at least one well-formed error.
 * Anything else aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char path[128];

static void
cleanup(void)
{
	unlink(path);
	rmdir(dir);
}

/* The temporary file, made on the first call. */
static const char *
fuzz_path(void)
{
	if (path[0] != '\0')
		return path;
	snprintf(dir, sizeof(dir), "/tmp/fuzz_yaml.XXXXXX");
	if (mkdtemp(dir) == NULL)
		abort();
	snprintf(path, sizeof(path), "%s/fuzz.yaml", dir);
	atexit(cleanup);
	return path;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf_error *errs = NULL;
	struct conf_tenant *t;
	size_t i, n = 0;
	FILE *f;

	if ((f = fopen(fuzz_path(), "wb")) == NULL)
		abort();
	if (size > 0 && fwrite(data, 1, size, f) != size)
		abort();
	if (fclose(f) != 0)
		abort();
	t = conf_tenant_load(path, &errs, &n);
	if (t != NULL && (n != 0 || strlen(t->version) != 64 ||
	    strcmp(t->slug, "fuzz") != 0))
		abort();
	if (t == NULL && n == 0)
		abort();
	for (i = 0; i < n; i++)
		if (errs[i].file == NULL || errs[i].msg == NULL ||
		    errs[i].line < 0 || errs[i].col < 0 ||
		    (errs[i].line == 0) != (errs[i].col == 0))
			abort();
	conf_tenant_free(t);
	conf_errors_free(errs, n);
	return 0;
}
