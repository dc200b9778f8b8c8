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

/*
 * Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), its code point in *ret_cp;
 * 0 when p does not start one.
 */
static size_t utf8_seq(const unsigned char *p, uint32_t *ret_cp)
{
	uint32_t cp;
	size_t n;

	if (p[0] < 0x80) {
		*ret_cp = p[0];
		return 1;
	}
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, cp = p[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret_cp = cp;
	return n;
}

bool json_text_is_clean(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		uint32_t cp;
		size_t n = utf8_seq(p, &cp);
		if (n == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
			return false;
		p += n;
	}
	return true;
}

void json_write_escaped(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		uint32_t cp;
		size_t n;
		if (*p >= 0x80) {
			/* JSON text is UTF-8: a byte that starts no character becomes U+FFFD */
			n = utf8_seq(p, &cp);
			if (n == 0) {
				fputs("\\ufffd", f);
			} else {
				fwrite(p, 1, n, f);
				p += n - 1;
			}
			continue;
		}
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
