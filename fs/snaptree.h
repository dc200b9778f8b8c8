/*
 * One snapshot's file tree in memory, for the mount: nodes indexed by their
 * catalog ino (dense, root 1), each directory's children sorted by name so a
 * lookup is a binary search. Loaded from the catalog; immutable after,
 * except each regular file's chunk list, which is loaded on first open and
 * shared by every handle (snaptree_chunks / snaptree_chunks_put).
 *
 * Extra roots (directories kept beside the data directory) are not part of
 * the tree: the mount shows the data directory itself.
 */
#pragma once

#include "store/catalog.h"

typedef struct SnapNode {
	uint32_t ino, parent;
	const char *name;
	uint32_t mode;
	int64_t mtime_ns;
	uint64_t size;
	int64_t content;    /* 0: none */
	const char *target; /* symlinks */
	uint32_t *children; /* directories: child inos sorted by name */
	uint32_t n_children;
	uint32_t nlink;
} SnapNode;

typedef struct SnapTree SnapTree;

/* A regular file's chunk ids (fixed chunk size: chunk k covers [k*cs, (k+1)*cs)). */
typedef struct SnapChunks {
	const ChunkId *ids;
	size_t n;
} SnapChunks;

/* Load the files of snapshot rowid (which the caller holds, so it cannot vanish). */
int snaptree_load(Catalog *c, int64_t rowid, SnapTree **ret);
SnapTree *snaptree_free(SnapTree *t);

/* NULL when ino is not a node of the tree. */
const SnapNode *snaptree_node(const SnapTree *t, uint64_t ino);
uint32_t snaptree_max_ino(const SnapTree *t);
/* The memory the tree holds (nodes, names, listings; not its chunk lists), roughly. */
size_t snaptree_bytes(const SnapTree *t);
/* The child called name of directory dir, or NULL. */
const SnapNode *snaptree_lookup(const SnapTree *t, const SnapNode *dir, const char *name);

/* Fetch the chunk list of a content id (the mount reads it from its catalog). */
typedef int (*SnapContentLoader)(void *userdata, int64_t content, ChunkId **ret, size_t *ret_n);

/*
 * The chunk list of a regular file, loaded through load on first use; each
 * call takes a reference that snaptree_chunks_put drops (the list is freed
 * with the last one). Thread-safe; load runs under the tree's lock.
 */
int snaptree_chunks(SnapTree *t, SnapContentLoader load, void *userdata, const SnapNode *n,
		    SnapChunks *ret);
void snaptree_chunks_put(SnapTree *t, const SnapNode *n);
