/*
 * libFuzzer target for ts_parse() / ts_format() (core/ts.c).
 * A parsed time must be inside years 0001-9999 (UTC) and survive
 * ts_format() -> ts_parse() unchanged; anything else aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int64_t us, back;
	char    out[32];

	if (ts_parse((const char *)data, size, &us) != 0)
		return 0;
	/* 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z */
	if (us < INT64_C(-62135596800000000) ||
	    us > INT64_C(253402300799999999))
		abort();
	ts_format(us, out);
	if (ts_parse(out, strlen(out), &back) != 0 || back != us)
		abort();
	return 0;
}
