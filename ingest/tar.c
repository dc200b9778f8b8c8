#include "ingest/tar.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define TAR_BLOCK 512

typedef enum { TAR_HEADER, TAR_DATA, TAR_PAD, TAR_END } TarState;

struct TarReader {
	Tree *tree;
	char *prefix;
	TarState state;
	uint8_t header[TAR_BLOCK];
	size_t header_fill;
	uint64_t remaining; /* data bytes of the current entry */
	uint64_t pad;       /* padding bytes after it */
	TreeFile *file;     /* NULL when the data is skipped */
	bool in_file;
	unsigned zero_blocks;
};

int tar_reader_new(Tree *tree, const char *prefix, TarReader **ret)
{
	TarReader *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->tree = tree;
	t->prefix = strdup(prefix ? prefix : "");
	if (!t->prefix) {
		free(t);
		return -ENOMEM;
	}
	*ret = t;
	return 0;
}

TarReader *tar_reader_free(TarReader *t)
{
	if (!t)
		return NULL;
	if (t->file)
		tree_file_end(t->tree, t->file);
	free(t->prefix);
	free(t);
	return NULL;
}

/* Octal field, or base-256 when the high bit of the first byte is set. */
static int parse_number(const uint8_t *f, size_t len, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i = 0;
	if (f[0] & 0x80) {
		v = f[0] & 0x7f;
		for (i = 1; i < len; i++)
			v = v << 8 | f[i];
		*ret = v;
		return 0;
	}
	while (i < len && f[i] == ' ')
		i++;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++)
		v = v * 8 + (uint64_t)(f[i] - '0');
	if (i < len && f[i] != ' ' && f[i] != '\0')
		return -EPROTO;
	*ret = v;
	return 0;
}

static bool header_checksum_ok(const uint8_t *h)
{
	uint64_t want;
	unsigned sum = 0;
	if (parse_number(h + 148, 8, &want) < 0)
		return false;
	for (int i = 0; i < TAR_BLOCK; i++)
		sum += (i >= 148 && i < 156) ? ' ' : h[i];
	return sum == want;
}

static void field_string(const uint8_t *f, size_t len, char *out)
{
	size_t n = strnlen((const char *)f, len);
	memcpy(out, f, n);
	out[n] = '\0';
}

static int entry_path(TarReader *t, const uint8_t *h, char *out, size_t len)
{
	char name[101], prefix[156], joined[300];
	size_t n;
	field_string(h, 100, name);
	field_string(h + 345, 155, prefix);
	if (memcmp(h + 257, "ustar", 5) == 0 && prefix[0])
		snprintf(joined, sizeof(joined), "%s/%s", prefix, name);
	else
		snprintf(joined, sizeof(joined), "%s", name);
	n = strlen(joined);
	while (n > 0 && joined[n - 1] == '/')
		joined[--n] = '\0';
	const char *rel = joined;
	while (!strncmp(rel, "./", 2))
		rel += 2;
	if (!strcmp(rel, "."))
		rel++; /* "./" (GNU tar's first entry): the archive's root */
	if (*t->prefix)
		n = (size_t)snprintf(out, len, "%s%s%s", t->prefix, *rel ? "/" : "", rel);
	else
		n = (size_t)snprintf(out, len, "%s", rel);
	return n >= len ? -ENAMETOOLONG : 0;
}

static int start_entry(TarReader *t)
{
	const uint8_t *h = t->header;
	uint64_t mode, uid, gid, size, mtime;
	char path[400], target[101];
	TreeMeta m;
	int r;

	if (!header_checksum_ok(h))
		return -EPROTO;
	if (parse_number(h + 100, 8, &mode) < 0 || parse_number(h + 108, 8, &uid) < 0 ||
	    parse_number(h + 116, 8, &gid) < 0 || parse_number(h + 124, 12, &size) < 0 ||
	    parse_number(h + 136, 12, &mtime) < 0)
		return -EPROTO;
	r = entry_path(t, h, path, sizeof(path));
	if (r < 0)
		return r;
	m = (TreeMeta){.mode = (uint32_t)mode, .uid = (uint32_t)uid, .gid = (uint32_t)gid,
		       .mtime_ns = (int64_t)mtime * 1000000000};
	t->remaining = 0;
	t->file = NULL;
	t->in_file = false;
	switch (h[156]) {
	case '0':
	case '\0':
		r = tree_file_begin(t->tree, path, &m, &t->file);
		t->in_file = true;
		t->remaining = size;
		break;
	case '5':
		if (!path[0]) /* "./": the archive's root */
			return tree_ensure_root(t->tree, &m);
		r = tree_add_dir(t->tree, path, &m);
		break;
	case '2':
		field_string(h + 157, 100, target);
		r = tree_add_symlink(t->tree, path, &m, target);
		break;
	default:
		return -EPROTO;
	}
	if (r < 0)
		return r;
	t->pad = (TAR_BLOCK - t->remaining % TAR_BLOCK) % TAR_BLOCK;
	return 0;
}

static int end_entry(TarReader *t)
{
	int r = 0;
	if (t->file)
		r = tree_file_end(t->tree, t->file);
	t->file = NULL;
	t->in_file = false;
	t->state = t->pad ? TAR_PAD : TAR_HEADER;
	return r;
}

int tar_reader_feed(TarReader *t, const void *data, size_t len)
{
	const uint8_t *p = data;
	int r;
	while (len > 0) {
		switch (t->state) {
		case TAR_END:
			return 0; /* trailing zero blocks after the end marker */
		case TAR_HEADER: {
			size_t n = MIN(len, TAR_BLOCK - t->header_fill);
			memcpy(t->header + t->header_fill, p, n);
			t->header_fill += n;
			p += n;
			len -= n;
			if (t->header_fill < TAR_BLOCK)
				break;
			t->header_fill = 0;
			bool zero = true;
			for (int i = 0; i < TAR_BLOCK && zero; i++)
				zero = t->header[i] == 0;
			if (zero) {
				if (++t->zero_blocks == 2)
					t->state = TAR_END;
				break;
			}
			t->zero_blocks = 0;
			r = start_entry(t);
			if (r < 0)
				return r;
			t->state = TAR_DATA;
			if (t->remaining == 0) {
				r = end_entry(t);
				if (r < 0)
					return r;
			}
			break;
		}
		case TAR_DATA: {
			size_t n = (size_t)MIN((uint64_t)len, t->remaining);
			if (t->file) {
				r = tree_file_write(t->tree, t->file, p, n);
				if (r < 0)
					return r;
			}
			p += n;
			len -= n;
			t->remaining -= n;
			if (t->remaining == 0) {
				r = end_entry(t);
				if (r < 0)
					return r;
			}
			break;
		}
		case TAR_PAD: {
			size_t n = (size_t)MIN((uint64_t)len, t->pad);
			p += n;
			len -= n;
			t->pad -= n;
			if (t->pad == 0)
				t->state = TAR_HEADER;
			break;
		}
		}
	}
	return 0;
}

int tar_reader_finish(TarReader *t)
{
	/* PostgreSQL's archives end with the two zero blocks; some streams omit them */
	if (t->state == TAR_END || (t->state == TAR_HEADER && t->header_fill == 0))
		return 0;
	return -EPROTO;
}
