#include "common/json.h"

#include <inttypes.h>

void json_init(JsonWriter *w, FILE *f)
{
	*w = (JsonWriter){.f = f};
}

static void json_sep(JsonWriter *w)
{
	if (w->need_comma[w->depth])
		fputc(',', w->f);
	w->need_comma[w->depth] = true;
}

static void json_value_prefix(JsonWriter *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	json_sep(w);
}

void json_write_escaped(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		default:
			if (*p < 0x20)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
	}
	fputc('"', f);
}

void json_begin_object(JsonWriter *w)
{
	json_value_prefix(w);
	fputc('{', w->f);
	PGBAKFS_CHECK(w->depth + 1 < (int)ELEMENTSOF(w->need_comma));
	w->need_comma[++w->depth] = false;
}

void json_end_object(JsonWriter *w)
{
	w->depth--;
	fputc('}', w->f);
}

void json_begin_array(JsonWriter *w)
{
	json_value_prefix(w);
	fputc('[', w->f);
	PGBAKFS_CHECK(w->depth + 1 < (int)ELEMENTSOF(w->need_comma));
	w->need_comma[++w->depth] = false;
}

void json_end_array(JsonWriter *w)
{
	w->depth--;
	fputc(']', w->f);
}

void json_key(JsonWriter *w, const char *key)
{
	json_sep(w);
	json_write_escaped(w->f, key);
	fputc(':', w->f);
	w->after_key = true;
}

void json_string(JsonWriter *w, const char *s)
{
	json_value_prefix(w);
	if (s)
		json_write_escaped(w->f, s);
	else
		fputs("null", w->f);
}

void json_int(JsonWriter *w, int64_t v)
{
	json_value_prefix(w);
	fprintf(w->f, "%" PRId64, v);
}

void json_uint(JsonWriter *w, uint64_t v)
{
	json_value_prefix(w);
	fprintf(w->f, "%" PRIu64, v);
}

void json_double(JsonWriter *w, double v)
{
	json_value_prefix(w);
	fprintf(w->f, "%.4g", v);
}

void json_bool(JsonWriter *w, bool v)
{
	json_value_prefix(w);
	fputs(v ? "true" : "false", w->f);
}

void json_null(JsonWriter *w)
{
	json_value_prefix(w);
	fputs("null", w->f);
}
