/*
 * Snapshot manifests: one committed snapshot as a self-contained byte image,
 * so the catalog can be rebuilt from the repository's objects (packs describe
 * their chunks; manifests describe snapshots). This module only turns catalog
 * rows into bytes and back; naming, compressing, encrypting and storing the
 * bytes is the caller's.
 *
 * The image is a SQLite database (sqlite3_serialize of an in-memory one):
 *
 *   meta(key, value)          manifest_format = 1
 *   snapshots                 the snapshot's row: every column of the catalog's
 *                             snapshots table, by name (session always NULL)
 *   files(ino, parent, name, mode, uid, gid, mtime, size, content, target)
 *   contents(id, n, list, crcs)  the chunk lists the files use; crcs holds the
 *                             CRC-32C of each list position as 5-byte records
 *                             (1 = known, then the CRC little-endian; 0 = none),
 *                             or NULL when no chunk of the list has one
 *   links(path, target), bad_blocks(path, block)
 *
 * Both functions use the catalog connection from the calling thread only.
 */
#pragma once

#include "store/catalog.h"

#define PGBAKFS_MANIFEST_FORMAT 1

/*
 * Serialize the snapshot with catalog rowid snap_rowid. *ret_buf is malloc'd
 * (free() it). Reads in one read transaction (or in the caller's, if one is
 * open). -ENOENT: no such snapshot; -EINVAL: it is still running (a
 * "deleted" one is exported as it is); -EBADMSG: the catalog is inconsistent
 * (a file refers to a chunk list it does not have).
 */
int manifest_export(Catalog *c, int64_t snap_rowid, void **ret_buf, size_t *ret_len);

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
