/*
 * A snapshot's tree digest: SHA-256 over its file tree, so a damaged or
 * edited catalog or manifest row is found before it names, places or fills a
 * file wrongly. It covers every file row in ino order (ino, parent, name,
 * mode, uid, gid, mtime, size, symlink target, and the chunk ids of its
 * content, not the content's row id) and every link (path, target) in path
 * order.
 *
 * Recorded when a snapshot is committed (snapshots.tree_digest, so its
 * manifest carries it too); check, restore, the mount and repair recompute
 * it. Snapshots committed by versions before it have none: only the shape of
 * their tree is checked (catalog_file_foreach), and check says how many
 * there are.
 *
 * Both functions read through the calling thread's catalog connection.
 */
#pragma once

#include "store/catalog.h"

/* -EBADMSG when the rows are not a valid tree (catalog_file_foreach). */
int tree_digest_compute(Catalog *c, int64_t snap_rowid, ChunkId *ret);
/*
 * 0 when s's recorded digest matches its rows; -EBADMSG when it does not, or
 * when the rows are not a valid tree (the only check for a snapshot without
 * a digest); other -errno from the catalog.
 */
int tree_digest_verify(Catalog *c, const SnapshotInfo *s);
