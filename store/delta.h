/*
 * Catalog deltas (store/delta.c): the change between two catalog files as an
 * SQLite patchset (session extension), framed with the generations it joins
 * and its SHA-256, so a published catalog grows by what a write changed
 * instead of being uploaded whole. See docs/design.md, "Published catalogs".
 *
 * No function here takes a lock or touches a backend; callers (store/repo_publish.c)
 * hold the cache lock of the files they name. Not thread-safe on one handle.
 */
#pragma once

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The patchset that turns the database at base_path into the one at
 * cur_path: every table of cur_path. Both must have the same schema (open
 * each with catalog_open first, which migrates). -ENOTSUP when some table
 * cannot travel in a changeset (no primary key, absent or different in the
 * base, a table dropped since), -EFBIG when cur_path holds more than
 * max_growth bytes of pages in use more than base_path (the diff holds every
 * row it finds in memory, ~1.5 times the growth): the caller publishes a
 * whole catalog instead. *ret is malloc'd (may be empty: nothing changed).
 */
int delta_diff(const char *cur_path, const char *base_path, uint64_t max_growth, void **ret,
	       size_t *ret_len);

/*
 * Apply n patchsets, in order, to db inside one transaction of its own:
 * all or nothing. -EBADMSG when a changeset names a table db lacks or has
 * with other columns, when a change conflicts (a row it inserts exists, one
 * it updates or deletes is not as it expects), or is malformed; -EBUSY etc.
 * from SQLite otherwise. Rows the changesets do not touch (a machine's own
 * sessions and holds) are left alone.
 */
int delta_apply(sqlite3 *db, const void *const *cs, const size_t *lens, size_t n);

/* The payload of a delta object: "PGBKDLT1" | from u64 | to u64 | length u64 | SHA-256 | patchset */
#define DELTA_HEADER_LEN 64

/* Frame a patchset that turns generation from into to. *ret is malloc'd. */
int delta_frame(uint64_t from, uint64_t to, const void *cs, size_t len, void **ret,
		size_t *ret_len);
/*
 * Check a framed delta: -EBADMSG unless it says from -> to, its length is
 * whole and its SHA-256 matches. *ret_cs points into buf.
 */
int delta_unframe(const void *buf, size_t len, uint64_t from, uint64_t to, const void **ret_cs,
		  size_t *ret_cs_len);
