/*
 * The restore record (store/restrec.c): what a restore left in its target,
 * so that the next `restore --delta` into it need not read back the files
 * nobody has touched since.
 *
 * For each regular file it wrote, a restore records the file's identity and
 * state right after it was finished (device, inode, size, mtime, ctime) and
 * its content: the catalog's content row and a hash of its chunk-id list. A
 * later delta trusts an entry only if all five still match: a write, a
 * truncate, `touch -d`, chmod or chown all move the ctime, which no user can
 * set back (`cp -p`, rsync -t and restores from elsewhere make new inodes).
 * Entries whose ctime was within RESTREC_RACY_NS of the record's writing
 * are left out, as git leaves "racily clean" entries: a write in the same
 * clock tick would not move a coarse ctime.
 *
 * Kept outside the target (it must stay byte-identical to the snapshot), in
 * the cache directory, named by the target directory's device and inode.
 * Little-endian: "PGBKRRC1" | u32 version | u32 0 | repository id (32
 * chars) | u64 chunk size | i64 written at (ns) | u64 entries | u16 target
 * length | target (its absolute path) | entries | u64 LSN (version 2) |
 * CRC-32C of all before it. Entry: u16 path length | path | u64 dev | u64 ino
 * | u64 size | i64 mtime_ns | i64 ctime_ns | i64 content | 16-byte key.
 * Version 1 (no LSN) still loads, with LSN 0.
 *
 * The LSN is where the recorded files' PostgreSQL changes start (the
 * snapshot's redo point): a file PostgreSQL has written since (same device
 * and inode, another ctime) holds the recorded content except the blocks
 * its WAL names from there on (ingest/targetwal.h). An entry carried over
 * from an older record brings its older LSN: the record keeps the lowest.
 */
#pragma once

#include "common/common.h"
#include "store/chunk.h"

#include <sys/stat.h>

#define RESTREC_KEY_LEN 16
#define RESTREC_RACY_NS (50 * 1000000LL) /* several ticks of a coarse clock */

typedef struct RestRecEntry {
	char *path; /* relative to the target, or absolute (tablespaces, extra roots) */
	uint64_t dev, ino, size;
	int64_t mtime_ns, ctime_ns;
	int64_t content; /* the catalog's content row (0: an empty file) */
	uint8_t key[RESTREC_KEY_LEN];
	bool taken; /* restrec_take: not carried into the next record by restrec_save's also */
} RestRecEntry;

typedef struct RestoreRecord RestoreRecord;

/* An empty record for a repository (its config id), chunk size and target directory. */
int restrec_new(const char *repo_id, uint64_t chunk_size, const char *target,
		RestoreRecord **ret);
RestoreRecord *restrec_free(RestoreRecord *r); /* accepts and returns NULL */

/*
 * The record at path, if it was written for this repository and chunk size:
 * -ENOENT when there is none, -ESTALE when it belongs to another repository
 * or chunk size, -EBADMSG when it is damaged or truncated, -ENOMEM.
 */
int restrec_load(const char *path, const char *repo_id, uint64_t chunk_size,
		 RestoreRecord **ret);

/* Add a finished file (st: fstat right after its last change). Thread-safe. */
int restrec_add(RestoreRecord *r, const char *path, const struct stat *st, int64_t content,
		const uint8_t key[RESTREC_KEY_LEN]);

/*
 * Write r's first upto entries (SIZE_MAX: all) to path atomically and
 * durably, once the newest of them has a ctime RESTREC_RACY_NS old: it waits
 * that long at most, and leaves out entries still newer (a clock set back).
 * With also (may be NULL: an older record), its entries not taken are
 * written too: an entry stays true for as long as its file matches it, so a
 * restore that stops early keeps what it did not reach. Thread-safe for r
 * (entries may be added meanwhile); also is the caller's alone.
 */
int restrec_save(RestoreRecord *r, const char *path, size_t upto, const RestoreRecord *also);

/* The entry for path (as added), or NULL. Sorts r on first use: not while adding. */
const RestRecEntry *restrec_find(RestoreRecord *r, const char *path);
/* restrec_find, and the entry is marked taken (a restore reached its file). */
RestRecEntry *restrec_take(RestoreRecord *r, const char *path);

/* The LSN of the record (0: unknown), set before it is saved; when a loaded one was saved. */
void restrec_set_lsn(RestoreRecord *r, uint64_t lsn);
uint64_t restrec_lsn(const RestoreRecord *r);
int64_t restrec_written_ns(const RestoreRecord *r);

/* Whether st is the file e recorded, written since or not (see the LSN). */
bool restrec_same_inode(const RestRecEntry *e, const struct stat *st);

/* Whether st (an fstat of the file at e's path) is still the file e recorded. */
bool restrec_matches(const RestRecEntry *e, const struct stat *st);

/*
 * Remove the records in dir whose target directory is gone (or is another
 * directory now, or that do not name one). Best effort.
 */
void restrec_prune(const char *dir);

/* The hash of n chunk ids that an entry's key holds. */
void restrec_key(const ChunkId *ids, size_t n, uint8_t out[RESTREC_KEY_LEN]);

/* Entries held (after load, or added so far). Thread-safe. */
size_t restrec_count(RestoreRecord *r);
