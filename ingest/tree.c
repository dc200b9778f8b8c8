#include "ingest/tree.h"
#include "ingest/pgpage.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* open-addressing map: path -> ino, for directories and every other entry */
typedef struct Slot {
	char *path;
	uint64_t ino; /* 0 for non-directories */
} Slot;

struct Tree {
	SnapWriter *w;
	Slot *slots;
	size_t cap, n;
	bool root_done;
	uint32_t root_uid, root_gid;
	bool verify;
	uint64_t start_lsn;
	uint64_t n_bad;
	TreeDivert divert;
	bool has_divert;
};

struct TreeFile {
	Tree *tree;
	SnapFile *sf;
	char *path;
	bool verify;
	PageCheck pc;
	void *divert_state; /* a diverted file: no sf, no path */
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ULL;
	return h;
}

static Slot *map_find(Tree *t, const char *path)
{
	if (!t->cap)
		return NULL;
	for (size_t i = hash_str(path) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (!t->slots[i].path)
			return NULL;
		if (!strcmp(t->slots[i].path, path))
			return &t->slots[i];
	}
}

static int map_put(Tree *t, const char *path, uint64_t ino)
{
	if ((t->n + 1) * 2 > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 256;
		Slot *v = calloc(cap, sizeof(*v));
		if (!v)
			return -ENOMEM;
		for (size_t i = 0; i < t->cap; i++) {
			if (!t->slots[i].path)
				continue;
			size_t j = hash_str(t->slots[i].path) & (cap - 1);
			while (v[j].path)
				j = (j + 1) & (cap - 1);
			v[j] = t->slots[i];
		}
		free(t->slots);
		t->slots = v;
		t->cap = cap;
	}
	size_t i = hash_str(path) & (t->cap - 1);
	while (t->slots[i].path)
		i = (i + 1) & (t->cap - 1);
	t->slots[i].path = strdup(path);
	if (!t->slots[i].path)
		return -ENOMEM;
	t->slots[i].ino = ino;
	t->n++;
	return 0;
}

int tree_new(SnapWriter *w, Tree **ret)
{
	Tree *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->w = w;
	*ret = t;
	return 0;
}

Tree *tree_free(Tree *t)
{
	if (!t)
		return NULL;
	for (size_t i = 0; i < t->cap; i++)
		free(t->slots[i].path);
	free(t->slots);
	free(t);
	return NULL;
}

void tree_verify_pages(Tree *t, uint64_t start_lsn)
{
	t->verify = true;
	t->start_lsn = start_lsn;
}

uint64_t tree_bad_pages(const Tree *t) { return t->n_bad; }

bool tree_exists(Tree *t, const char *path)
{
	return map_find(t, path) != NULL;
}

int tree_ensure_root(Tree *t, const TreeMeta *m)
{
	uint64_t ino;
	int r;
	if (t->root_done)
		return 0;
	SnapEntry e = {.parent = 0, .name = "", .mode = S_IFDIR | 0700, .uid = m->uid,
		       .gid = m->gid, .mtime_ns = m->mtime_ns};
	r = snapwriter_add_dir(t->w, &e, &ino);
	if (r == 0) {
		t->root_done = true;
		t->root_uid = m->uid;
		t->root_gid = m->gid;
	}
	return r;
}

void tree_root_owner(const Tree *t, uint32_t *ret_uid, uint32_t *ret_gid)
{
	*ret_uid = t->root_uid;
	*ret_gid = t->root_gid;
}

/* The ino of path's parent directory, creating missing ones. */
static int parent_ino(Tree *t, const char *path, const TreeMeta *m, uint64_t *ret, const char **ret_name)
{
	const char *slash = strrchr(path, '/');
	char dir[4096];
	Slot *s;
	int r = tree_ensure_root(t, m);
	if (r < 0)
		return r;
	if (!slash) {
		*ret = 1;
		*ret_name = path;
		return 0;
	}
	if ((size_t)(slash - path) >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	s = map_find(t, dir);
	if (!s) {
		TreeMeta dm = {.mode = S_IFDIR | 0700, .uid = m->uid, .gid = m->gid, .mtime_ns = m->mtime_ns};
		r = tree_add_dir(t, dir, &dm);
		if (r < 0)
			return r;
		s = map_find(t, dir);
	}
	if (!s || !s->ino)
		return -ENOTDIR;
	*ret = s->ino;
	*ret_name = slash + 1;
	return 0;
}

static bool path_ok(const char *path)
{
	/* never a path that climbs out of the snapshot or names nothing */
	if (!*path || path[0] == '/' || strstr(path, "//"))
		return false;
	for (const char *p = path; p; p = strchr(p, '/')) {
		if (*p == '/')
			p++;
		if (!strncmp(p, "..", 2) && (p[2] == '/' || !p[2]))
			return false;
		if (p[0] == '.' && (p[1] == '/' || !p[1]))
			return false;
	}
	return true;
}

int tree_add_dir(Tree *t, const char *path, const TreeMeta *m)
{
	uint64_t parent, ino;
	const char *name;
	int r;
	if (!path_ok(path))
		return -EBADMSG;
	if (map_find(t, path))
		return 0;
	r = parent_ino(t, path, m, &parent, &name);
	if (r < 0)
		return r;
	SnapEntry e = {.parent = parent, .name = name, .mode = S_IFDIR | (m->mode & 07777),
		       .uid = m->uid, .gid = m->gid, .mtime_ns = m->mtime_ns};
	r = snapwriter_add_dir(t->w, &e, &ino);
	return r < 0 ? r : map_put(t, path, ino);
}

int tree_add_symlink(Tree *t, const char *path, const TreeMeta *m, const char *target)
{
	uint64_t parent;
	const char *name;
	int r;
	if (!path_ok(path))
		return -EBADMSG;
	if (map_find(t, path))
		return 0;
	r = parent_ino(t, path, m, &parent, &name);
	if (r < 0)
		return r;
	SnapEntry e = {.parent = parent, .name = name, .mode = S_IFLNK | 0777, .uid = m->uid,
		       .gid = m->gid, .mtime_ns = m->mtime_ns};
	r = snapwriter_add_symlink(t->w, &e, target);
	return r < 0 ? r : map_put(t, path, 0);
}

static int divert_file(Tree *t, void *state, TreeFile **ret)
{
	TreeFile *f = calloc(1, sizeof(*f));
	if (!f) {
		t->divert.end(t->divert.userdata, state);
		return -ENOMEM;
	}
	f->tree = t;
	f->divert_state = state;
	*ret = f;
	return 0;
}

int tree_file_begin(Tree *t, const char *path, const TreeMeta *m, TreeFile **ret)
{
	uint64_t parent;
	const char *name;
	TreeFile *f;
	int r;

	*ret = NULL;
	if (!path_ok(path))
		return -EBADMSG;
	if (map_find(t, path))
		return 0;
	if (t->has_divert) {
		void *state = NULL;
		r = t->divert.begin(t->divert.userdata, path, m, &state);
		if (r < 0)
			return r;
		if (r > 0)
			return divert_file(t, state, ret);
	}
	r = parent_ino(t, path, m, &parent, &name);
	if (r < 0)
		return r;
	f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(path))) {
		free(f);
		return -ENOMEM;
	}
	uint32_t segno = 0;
	f->tree = t;
	f->verify = t->verify && pg_path_is_relation(path, &segno);
	page_check_init(&f->pc, segno, t->start_lsn);
	SnapEntry e = {.parent = parent, .name = name, .mode = S_IFREG | (m->mode & 07777),
		       .uid = m->uid, .gid = m->gid, .mtime_ns = m->mtime_ns};
	r = snapwriter_file_begin(t->w, &e, &f->sf);
	if (r == 0)
		r = map_put(t, path, 0);
	if (r < 0) {
		if (f->sf)
			snapwriter_file_end(t->w, f->sf);
		free(f->path);
		free(f);
		return r;
	}
	*ret = f;
	return 0;
}

static int report_bad(uint64_t block, void *userdata)
{
	TreeFile *f = userdata;
	f->tree->n_bad++;
	return snapwriter_add_bad_block(f->tree->w, f->path, block);
}

int tree_file_write(Tree *t, TreeFile *f, const void *buf, size_t len)
{
	if (f->divert_state)
		return t->divert.write(t->divert.userdata, f->divert_state, buf, len);
	if (f->verify) {
		int r = page_check_feed(&f->pc, buf, len, report_bad, f);
		if (r < 0)
			return r;
	}
	return snapwriter_file_write(t->w, f->sf, buf, len);
}

int tree_file_end(Tree *t, TreeFile *f)
{
	int r = f->divert_state ? t->divert.end(t->divert.userdata, f->divert_state)
				: snapwriter_file_end(t->w, f->sf);
	free(f->path);
	free(f);
	return r;
}

void tree_set_divert(Tree *t, const TreeDivert *d)
{
	t->divert = *d;
	t->has_divert = true;
}

int tree_file_write_ids(Tree *t, TreeFile *f, const ChunkId *ids, uint64_t n, uint64_t len)
{
	if (f->divert_state)
		return -EINVAL;
	if (f->verify) {
		/* the page checker skips them: they were checked when first stored */
		if (f->pc.fill)
			return -EINVAL;
		f->pc.offset += len;
	}
	return snapwriter_file_write_ids(t->w, f->sf, ids, n, len);
}
