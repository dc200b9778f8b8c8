/*
 * Tree digests. Every field goes in with a fixed width or a length in front,
 * so no two different trees serialize to the same bytes.
 */
#include "store/treedigest.h"
#include "common/util.h"

#include <openssl/evp.h>
#include <string.h>

/* a new serialization gets a new tag, never new meaning under the old one */
static const char digest_tag[] = "pgbakfs tree digest 1";

typedef struct Digester {
	Catalog *c;
	EVP_MD_CTX *md;
} Digester;

static void add_bytes(Digester *d, const void *buf, size_t len)
{
	PGBAKFS_CHECK(EVP_DigestUpdate(d->md, buf, len) == 1);
}

static void add_u64(Digester *d, uint64_t v)
{
	uint8_t b[8];
	put_le64(b, v);
	add_bytes(d, b, sizeof(b));
}

/* A string with its length in front; NULL differs from "". */
static void add_str(Digester *d, const char *s)
{
	add_u64(d, s ? strlen(s) + 1 : 0);
	if (s)
		add_bytes(d, s, strlen(s));
}

static int add_file(const FileRow *f, void *userdata)
{
	Digester *d = userdata;
	_cleanup_free_ ChunkId *ids = NULL;
	size_t n = 0;

	if (f->content) {
		int r = catalog_content_get(d->c, f->content, &ids, &n);
		if (r < 0)
			return r == -ENOENT ? -EBADMSG : r; /* a file naming a list that is not there */
	}
	add_u64(d, f->ino);
	add_u64(d, f->parent);
	add_str(d, f->name);
	add_u64(d, f->mode);
	add_u64(d, f->uid);
	add_u64(d, f->gid);
	add_u64(d, (uint64_t)f->mtime_ns);
	add_u64(d, f->size);
	add_str(d, f->target);
	add_u64(d, f->content ? n + 1 : 0);
	if (n)
		add_bytes(d, ids, n * sizeof(*ids));
	return 0;
}

static int add_link(const char *path, const char *target, void *userdata)
{
	Digester *d = userdata;
	add_str(d, path);
	add_str(d, target);
	return 0;
}

int tree_digest_compute(Catalog *c, int64_t snap_rowid, ChunkId *ret)
{
	Digester d = {.c = c, .md = EVP_MD_CTX_new()};
	unsigned len = 0;
	int r;

	if (!d.md)
		return -ENOMEM;
	PGBAKFS_CHECK(EVP_DigestInit_ex(d.md, EVP_sha256(), NULL) == 1);
	add_bytes(&d, digest_tag, sizeof(digest_tag));
	r = catalog_file_foreach(c, snap_rowid, add_file, &d);
	if (r == 0) {
		add_u64(&d, UINT64_MAX); /* files end, links begin */
		r = catalog_link_foreach(c, snap_rowid, add_link, &d);
	}
	if (r == 0)
		PGBAKFS_CHECK(EVP_DigestFinal_ex(d.md, ret->b, &len) == 1 && len == sizeof(ret->b));
	EVP_MD_CTX_free(d.md);
	return r;
}

static int no_file(const FileRow *f _unused_, void *userdata _unused_)
{
	return 0;
}

int tree_digest_verify(Catalog *c, const SnapshotInfo *s)
{
	ChunkId got;
	int r;

	if (!s->has_tree_digest) /* an older version's: at least the tree's shape */
		return catalog_file_foreach(c, s->rowid, no_file, NULL);
	r = tree_digest_compute(c, s->rowid, &got);
	if (r == 0 && memcmp(got.b, s->tree_digest.b, sizeof(got.b)) != 0)
		r = -EBADMSG;
	return r;
}
