/*
 * libFuzzer target for json_parse_strict() (core/json.c).
 * Whatever parses must serialise (json-c) to text that parses again and
 * serialises to the same text; anything else aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const int         flags = JSON_C_TO_STRING_PLAIN;
	struct json_perr  e;
	json_object      *o, *o2;
	const char       *txt;
	char             *copy;
	size_t            n;

	o = json_parse_strict((const char *)data, size, JSON_MAX_DEPTH, &e);
	if (o == NULL) {
		if (e.msg == NULL || e.offset > size)
			abort();
		return 0;
	}
	txt = json_object_to_json_string_ext(o, flags);
	n = strlen(txt);
	/* A key that held U+0000 is kept as C0 80 and is not meant to
	 * serialise back (the service refuses such keys): skip the round trip. */
	if (memchr(txt, 0xC0, n) != NULL) {
		json_object_put(o);
		return 0;
	}
	/* Own copy: json-c reuses the buffer of o for the next call. */
	if ((copy = malloc(n + 1)) == NULL)
		abort();
	memcpy(copy, txt, n + 1);
	o2 = json_parse_strict(copy, n, JSON_MAX_DEPTH, &e);
	if (o2 == NULL)
		abort();
	if (strcmp(json_object_to_json_string_ext(o2, flags), copy) != 0)
		abort();
	json_object_put(o2);
	json_object_put(o);
	free(copy);
	return 0;
}
