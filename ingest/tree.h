/*
 * Building a snapshot's tree from paths ("base/1/1259", "pg_wal"), as
 * archive streams name their entries, on top of the snapshot writer's
 * parent-ino interface. The root and missing parent directories are created
 * on demand (mode 0700, the owner of the entry that needed them); an entry
 * whose path already exists is skipped (a tablespace directory beats the
 * pg_tblspc symlink that pointed at it).
 *
 * With page verification on, every full page of a relation file is checked
 * against its checksum as it passes; bad pages go to the snapshot writer.
 */
#pragma once

#include "store/snapwriter.h"

typedef struct Tree Tree;

typedef struct TreeMeta {
	uint32_t mode, uid, gid;
	int64_t mtime_ns;
} TreeMeta;

typedef struct TreeFile TreeFile;

int tree_new(SnapWriter *w, Tree **ret);
Tree *tree_free(Tree *t);
/* Check page checksums of relation files; pages at/after start_lsn are skipped. */
void tree_verify_pages(Tree *t, uint64_t start_lsn);
uint64_t tree_bad_pages(const Tree *t);

bool tree_exists(Tree *t, const char *path);
int tree_add_dir(Tree *t, const char *path, const TreeMeta *m);
int tree_add_symlink(Tree *t, const char *path, const TreeMeta *m, const char *target);
/* *ret is NULL when the path already exists (the data is then ignored). */
int tree_file_begin(Tree *t, const char *path, const TreeMeta *m, TreeFile **ret);
int tree_file_write(Tree *t, TreeFile *f, const void *buf, size_t len);
int tree_file_end(Tree *t, TreeFile *f);
/* Owner of the root (that of the first entry), for entries made up by the caller. */
void tree_root_owner(const Tree *t, uint32_t *ret_uid, uint32_t *ret_gid);
/* Make sure the root exists (an archive with no entries). */
int tree_ensure_root(Tree *t, const TreeMeta *m);

/*
 * A diverter takes files over (remote incremental backups: INCREMENTAL.*
 * files become the files they stand for). begin() sees every regular file
 * first; when it returns 1 and sets *ret_state, the file's bytes go to
 * write() and tree_file_end() calls end() (exactly once, also when the
 * caller gives up on an error) instead of reaching the snapshot. The
 * diverter may add files to the tree itself. 0: not taken; < 0: failure.
 */
typedef struct TreeDivert {
	int (*begin)(void *userdata, const char *path, const TreeMeta *m, void **ret_state);
	int (*write)(void *userdata, void *state, const void *buf, size_t len);
	int (*end)(void *userdata, void *state);
	void *userdata;
} TreeDivert;

void tree_set_divert(Tree *t, const TreeDivert *d);
/*
 * n chunks already stored, by id, appended to f (snapwriter_file_write_ids:
 * at a chunk boundary; all but the last whole chunks). Their pages are not
 * checked again.
 */
int tree_file_write_ids(Tree *t, TreeFile *f, const ChunkId *ids, uint64_t n, uint64_t len);
