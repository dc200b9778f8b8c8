#include "ingest/manifest.h"
#include "common/util.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- manifest ---- */

typedef struct Entry {
	char *path;
	uint64_t size;
	int64_t mtime_ns;
	bool has_crc;
	uint32_t crc;
} Entry;

struct Manifest {
	pthread_mutex_t lock; /* guards v, n, cap */
	Entry *v;
	size_t n, cap;
};

int manifest_new(Manifest **ret)
{
	Manifest *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	*ret = m;
	return 0;
}

Manifest *manifest_free(Manifest *m)
{
	if (!m)
		return NULL;
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].path);
	free(m->v);
	pthread_mutex_destroy(&m->lock);
	free(m);
	return NULL;
}

int manifest_add(Manifest *m, const char *path, uint64_t size, int64_t mtime_ns, bool has_crc,
		 uint32_t crc)
{
	char *p = strdup(path);
	int r = 0;
	if (!p)
		return -ENOMEM;
	pthread_mutex_lock(&m->lock);
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 1024;
		Entry *v = realloc(m->v, cap * sizeof(*v));
		if (v) {
			m->v = v;
			m->cap = cap;
		} else {
			r = -ENOMEM;
		}
	}
	if (r == 0)
		m->v[m->n++] = (Entry){.path = p, .size = size, .mtime_ns = mtime_ns, .has_crc = has_crc, .crc = crc};
	pthread_mutex_unlock(&m->lock);
	if (r < 0)
		free(p);
	return r;
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const Entry *)a)->path, ((const Entry *)b)->path);
}

/* A growing text buffer; any failure sticks and is reported at the end. */
typedef struct Text {
	FILE *f;
	char *buf;
	size_t len;
} Text;

void manifest_put_json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

int manifest_render(Manifest *m, uint32_t timeline, const char *start_lsn, const char *end_lsn,
		    char **ret, size_t *ret_len)
{
	Text t = {0};
	unsigned char digest[32];
	char hex[65], when[40];
	size_t body_len;

	t.f = open_memstream(&t.buf, &t.len);
	if (!t.f)
		return -ENOMEM;
	if (m->n > 1)
		qsort(m->v, m->n, sizeof(Entry), entry_cmp);
	fputs("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [", t.f);
	for (size_t i = 0; i < m->n; i++) {
		const Entry *e = &m->v[i];
		time_t secs = (time_t)(e->mtime_ns / 1000000000);
		struct tm tm;
		gmtime_r(&secs, &tm);
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S GMT", &tm);
		fputs(i ? ",\n" : "\n", t.f);
		fputs("{ \"Path\": ", t.f);
		manifest_put_json_string(t.f, e->path);
		fprintf(t.f, ", \"Size\": %llu, \"Last-Modified\": \"%s\"", (unsigned long long)e->size, when);
		if (e->has_crc)
			fprintf(t.f, ", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"%02x%02x%02x%02x\"",
				e->crc & 0xff, (e->crc >> 8) & 0xff, (e->crc >> 16) & 0xff, e->crc >> 24);
		fputs(" }", t.f);
	}
	fprintf(t.f, " ],\n\"WAL-Ranges\": [\n{ \"Timeline\": %u, \"Start-LSN\": \"%s\", "
		     "\"End-LSN\": \"%s\" }\n],\n", timeline, start_lsn, end_lsn);
	if (fflush(t.f) != 0) {
		fclose(t.f);
		free(t.buf);
		return -ENOMEM;
	}
	/* the checksum covers everything up to and including the newline before its line */
	body_len = t.len;
	unsigned int n = 0;
	PGBAKFS_CHECK(EVP_Digest(t.buf, body_len, digest, &n, EVP_sha256(), NULL) == 1);
	hex_encode(digest, sizeof(digest), hex);
	fprintf(t.f, "\"Manifest-Checksum\": \"%s\"}\n", hex);
	if (fclose(t.f) != 0) {
		free(t.buf);
		return -ENOMEM;
	}
	*ret = t.buf;
	*ret_len = t.len;
	return 0;
}
