/*
 * Snapshot manifests: one committed snapshot as a self-contained byte image,
 * so the catalog can be rebuilt from the repository's objects (packs describe
 * their chunks; manifests describe snapshots). This module only turns catalog
 * rows into bytes and back; naming, compressing, encrypting and storing the
 * bytes is the caller's.
 *
 * The image is a SQLite database (sqlite3_serialize of an in-memory one):
 *
 *   meta(key, value)          manifest_format = 1, or 2 (below)
 *   snapshots                 the snapshot's row: every column of the catalog's
 *                             snapshots table, by name (session always NULL)
 *   files(ino, parent, name, mode, uid, gid, mtime, size, content, target)
 *   contents(id, n, list, crcs)  the chunk lists the files use; crcs holds the
 *                             CRC-32C of each list position as 5-byte records
 *                             (1 = known, then the CRC little-endian; 0 = none),
 *                             or NULL when no chunk of the list has one
 *   links(path, target), bad_blocks(path, block)
 *
 * Format 2 (a repository of format 2, whose catalog stores long lists as id
 * blocks, catalog.h): contents also has blocks (1: list holds the hashes of
 * the list's id blocks, 32 bytes each, and crcs is NULL; 0: the ids, as in
 * format 1) and hash (of the whole list); and
 *   idblocks(hash, n, ids, crcs)  the blocks this snapshot carries (each block
 *                             is carried by exactly one committed snapshot,
 *                             catalog_idblocks_assign_carriers), crcs as above
 * A block a list names may be carried by another snapshot's manifest: a
 * rebuild imports the blocks of every manifest first (manifest_import_idblocks).
 *
 * Format 3 (a repository of format 3): a snapshot kept as a shared tree
 * (snapshots.tree) has no files rows; instead
 *   meta 'tree'               the portable hash of its forest (catalog.h,
 *                             catalog_tree_export)
 *   dirs(hash, n, entries)    the directories it carries, in portable form
 *   contents                  only the lists it carries (contents.carrier)
 * Each directory and list is carried by one committed snapshot, as id blocks
 * are; one that has no carrier yet is in every manifest that uses it. A
 * snapshot kept as files rows is exported as in format 2 (every list).
 *
 * Both functions use the catalog connection from the calling thread only.
 */
#pragma once

#include "store/catalog.h"

#define PGBAKFS_MANIFEST_FORMAT 3

/*
 * The snapshot with catalog rowid snap_rowid as a manifest image, built in a
 * new file at path (it must not exist; its bytes are the image), not in
 * memory: what a full of millions of chunks needs (~37 bytes per chunk)
 * stays on disk. Reads in one read transaction (or in the caller's, if one
 * is open). -ENOENT: no such snapshot; -EINVAL: it is still running (a
 * "deleted" one is exported as it is); -EBADMSG: the catalog is
 * inconsistent (a file refers to a chunk list it does not have, a block it
 * carries is damaged). Format 2 when the catalog has id blocks on, else
 * format 1. The file is removed on error.
 */
int manifest_export_file(Catalog *c, int64_t snap_rowid, const char *path);

/*
 * Add the snapshot in buf to catalog c, in one transaction of its own: a new
 * snapshots row with the manifest's name and columns (the catalog's columns
 * the manifest lacks get their defaults; manifest columns the catalog lacks
 * are ignored), its files under the new rowid, chunk lists inserted or
 * matched by their hash, links, bad blocks, and each known CRC-32C set on the
 * chunk row when that row exists and has none. Chunks the lists name need not
 * be in the catalog (check reports them). buf stays the caller's.
 *
 * -EEXIST: a snapshot of that name exists (nothing changed). -EBADMSG: buf is
 * not a manifest, or a damaged one. -EPROTONOSUPPORT: a newer manifest format
 * than this build knows. -EINVAL: called inside a transaction. Other -errno:
 * catalog errors. *ret_rowid (may be NULL) is the new snapshot's rowid.
 */
int manifest_import(Catalog *c, const void *buf, size_t len, int64_t *ret_rowid);
/*
 * manifest_import, and *ret_missing (may be NULL): how many directories and
 * chunk lists its tree names that neither it nor a manifest imported before
 * carries (format 3). With any, the snapshot is imported with status
 * "failed", a missing directory as an empty one and a missing list as a
 * placeholder that reads as damaged (catalog_content_find_or_missing), and
 * its tree digest is not checked.
 */
int manifest_import_counted(Catalog *c, const void *buf, size_t len, int64_t *ret_rowid,
			    size_t *ret_missing);
/*
 * A format-2 manifest's id blocks alone (no carrier set), in a transaction of
 * their own; nothing for format 1. Format 3: also its chunk lists (no
 * carrier set) and its directories (staged on this connection for the trees
 * of later imports, catalog_tree_stage). Errors as manifest_import. In
 * manifest_import, a list naming a block the catalog still lacks is
 * recorded with a placeholder (catalog_content_put_blocks), the tree digest
 * is not checked, and catalog_check_references reports the block missing.
 */
int manifest_import_idblocks(Catalog *c, const void *buf, size_t len);
