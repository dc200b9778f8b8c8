#include "fs/snaptree.h"

#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

/* what malloc adds to each allocation, roughly (glibc: 8 to 16 bytes) */
#define MALLOC_OVERHEAD 16

typedef struct ChunkList {
	ChunkId *ids;
	size_t n;
	unsigned refs;
} ChunkList;

struct SnapTree {
	int64_t rowid;
	SnapNode *nodes; /* by ino; ino 0 and gaps have ino == 0 */
	uint32_t n_nodes;
	ChunkList *lists; /* by ino */
	size_t bytes;     /* heap held by the tree, chunk lists aside */
	pthread_mutex_t lock;
};

typedef struct LoadCtx {
	SnapTree *t;
	uint32_t cap;
} LoadCtx;

static int grow_nodes(LoadCtx *ctx, uint64_t ino)
{
	SnapTree *t = ctx->t;
	if (ino >= UINT32_MAX)
		return -EOVERFLOW;
	if (ino < ctx->cap)
		return 0;
	uint32_t cap = (uint32_t)MAX(ino + 1, (uint64_t)ctx->cap * 2);
	SnapNode *v = realloc(t->nodes, (size_t)cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	memset(v + ctx->cap, 0, (size_t)(cap - ctx->cap) * sizeof(*v));
	t->nodes = v;
	ctx->cap = cap;
	return 0;
}

static int add_child(SnapNode *dir, uint32_t ino)
{
	/* capacity 4, then doubling at powers of two */
	uint32_t n = dir->n_children;
	if ((n & (n - 1)) == 0 && (n == 0 || n >= 4)) {
		uint32_t *v = realloc(dir->children, (size_t)(n ? n * 2 : 4) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		dir->children = v;
	}
	dir->children[dir->n_children++] = ino;
	return 0;
}

static int load_one(const FileRow *f, void *userdata)
{
	LoadCtx *ctx = userdata;
	SnapTree *t = ctx->t;
	int r;

	/* extra roots (parent 0 besides the root) and what lies under them stay out */
	if (f->ino != 1 && (f->parent == 0 || f->parent >= ctx->cap || !t->nodes[f->parent].ino))
		return 0;
	r = grow_nodes(ctx, f->ino);
	if (r < 0)
		return r;
	SnapNode *n = &t->nodes[f->ino];
	*n = (SnapNode){.ino = (uint32_t)f->ino,
			.parent = f->ino == 1 ? 1 : (uint32_t)f->parent,
			.mode = f->mode,
			.mtime_ns = f->mtime_ns,
			.size = f->size,
			.content = f->content,
			.nlink = S_ISDIR(f->mode) ? 2 : 1};
	n->name = strdup(f->name ? f->name : "");
	if (!n->name)
		return -ENOMEM;
	t->bytes += strlen(n->name) + 1 + MALLOC_OVERHEAD;
	if (f->target) {
		n->target = strdup(f->target);
		if (!n->target)
			return -ENOMEM;
		t->bytes += strlen(n->target) + 1 + MALLOC_OVERHEAD;
	}
	if (f->ino == 1)
		return 0;
	SnapNode *dir = &t->nodes[f->parent];
	if (!S_ISDIR(dir->mode))
		return -EBADMSG;
	if (S_ISDIR(f->mode))
		dir->nlink++;
	return add_child(dir, n->ino);
}

/* qsort has no context argument: the node array for the comparison, per thread */
static _Thread_local const SnapNode *sort_nodes;

static int child_cmp(const void *a, const void *b)
{
	return strcmp(sort_nodes[*(const uint32_t *)a].name, sort_nodes[*(const uint32_t *)b].name);
}

int snaptree_load(Catalog *c, int64_t rowid, SnapTree **ret)
{
	SnapTree *t = calloc(1, sizeof(*t));
	LoadCtx ctx = {.t = t};
	int r;

	if (!t)
		return -ENOMEM;
	t->rowid = rowid;
	pthread_mutex_init(&t->lock, NULL);
	r = catalog_file_foreach(c, rowid, load_one, &ctx);
	if (r == 0 && (ctx.cap < 2 || !S_ISDIR(t->nodes[1].mode)))
		r = -EBADMSG; /* no root directory */
	if (r == 0) {
		t->n_nodes = ctx.cap;
		t->lists = calloc(t->n_nodes, sizeof(*t->lists));
		if (!t->lists)
			r = -ENOMEM;
	}
	if (r < 0) {
		t->n_nodes = ctx.cap;
		snaptree_free(t);
		return r;
	}
	sort_nodes = t->nodes;
	t->bytes += sizeof(*t) + (size_t)t->n_nodes * (sizeof(SnapNode) + sizeof(ChunkList));
	for (uint32_t i = 1; i < t->n_nodes; i++) {
		uint32_t n = t->nodes[i].n_children;
		if (n > 1)
			qsort(t->nodes[i].children, n, sizeof(uint32_t), child_cmp);
		if (n > 0)
			t->bytes += (n <= 4 ? 4 : (size_t)1 << (32 - __builtin_clz(n - 1))) *
					    sizeof(uint32_t) + MALLOC_OVERHEAD;
	}
	*ret = t;
	return 0;
}

SnapTree *snaptree_free(SnapTree *t)
{
	if (!t)
		return NULL;
	for (uint32_t i = 0; i < t->n_nodes; i++) {
		free((char *)t->nodes[i].name);
		free((char *)t->nodes[i].target);
		free(t->nodes[i].children);
		if (t->lists)
			free(t->lists[i].ids);
	}
	free(t->nodes);
	free(t->lists);
	pthread_mutex_destroy(&t->lock);
	free(t);
	return NULL;
}

const SnapNode *snaptree_node(const SnapTree *t, uint64_t ino)
{
	if (ino == 0 || ino >= t->n_nodes || t->nodes[ino].ino == 0)
		return NULL;
	return &t->nodes[ino];
}

uint32_t snaptree_max_ino(const SnapTree *t) { return t->n_nodes ? t->n_nodes - 1 : 0; }

size_t snaptree_bytes(const SnapTree *t) { return t->bytes; }

const SnapNode *snaptree_lookup(const SnapTree *t, const SnapNode *dir, const char *name)
{
	size_t lo = 0, hi = dir->n_children;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const SnapNode *n = &t->nodes[dir->children[mid]];
		int c = strcmp(name, n->name);
		if (c == 0)
			return n;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

int snaptree_chunks(SnapTree *t, SnapContentLoader load, void *userdata, const SnapNode *n,
		    SnapChunks *ret)
{
	ChunkList *l = &t->lists[n->ino];
	int r = 0;

	pthread_mutex_lock(&t->lock);
	if (l->refs == 0 && n->content) {
		/* the catalog read is short; holding the lock keeps one load per file */
		r = load(userdata, n->content, &l->ids, &l->n);
	}
	if (r == 0) {
		l->refs++;
		*ret = (SnapChunks){.ids = l->ids, .n = l->n};
	}
	pthread_mutex_unlock(&t->lock);
	return r;
}

void snaptree_chunks_put(SnapTree *t, const SnapNode *n)
{
	ChunkList *l = &t->lists[n->ino];
	pthread_mutex_lock(&t->lock);
	PGBAKFS_CHECK(l->refs > 0);
	if (--l->refs == 0) {
		free(l->ids);
		*l = (ChunkList){0};
	}
	pthread_mutex_unlock(&t->lock);
}
