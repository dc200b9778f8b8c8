/* Minimal JSON writer for --json output. Not thread-safe per writer. */
#pragma once

#include "common/common.h"

#include <stdio.h>

typedef struct JsonWriter {
	FILE *f;
	int depth;
	bool need_comma[32];
	bool after_key; /* next value follows a key: no comma */
} JsonWriter;

void json_init(JsonWriter *w, FILE *f);
void json_begin_object(JsonWriter *w);
void json_end_object(JsonWriter *w);
void json_begin_array(JsonWriter *w);
void json_end_array(JsonWriter *w);
/* Inside an object: write the key; the next value call is its value. */
void json_key(JsonWriter *w, const char *key);
void json_string(JsonWriter *w, const char *s); /* NULL writes null */
void json_int(JsonWriter *w, int64_t v);
void json_uint(JsonWriter *w, uint64_t v);
void json_double(JsonWriter *w, double v);
void json_bool(JsonWriter *w, bool v);
void json_null(JsonWriter *w);
/*
 * Escape s as a JSON string literal (with quotes) to f: always valid JSON,
 * whatever s holds; a byte that is not part of well-formed UTF-8 becomes
 * \ufffd (the replacement character), one per byte.
 */
void json_write_escaped(FILE *f, const char *s);
/*
 * True when s is well-formed UTF-8 without control characters (C0, DEL, C1):
 * text a user gives a name or label, safe in JSON and on a terminal.
 */
bool json_text_is_clean(const char *s);
