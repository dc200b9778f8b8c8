/*
 * Restore a snapshot into a local directory, in parallel: byte-identical
 * files, holes left sparse, modes, mtimes, symlinks, and ownership when run
 * as root. Every chunk is checked before it is written, against the CRC-32C
 * of its plain bytes recorded at backup (its SHA-256 id when the catalog has
 * no CRC; "check --read-data" audits every SHA-256); a damaged chunk fails
 * the restore (the partial target is left for the caller to remove).
 * Durable (syncfs of every file system written) before success.
 */
#pragma once

#include "common/progress.h"
#include "store/repo.h"

#include <limits.h>

typedef struct RestoreMapping {
	const char *from, *to;
} RestoreMapping;

/*
 * What PostgreSQL changed in a delta's target since it was restored, from its
 * WAL (tools give ingest/targetwal.c; store cannot read WAL). All three are
 * called on the restore's main thread.
 */
typedef struct RestoreWal {
	/*
	 * Before anything is written: the target's changes since lsn (the last
	 * restore record's; written_ns: when it was saved). 0: known (file may
	 * be asked), 1: not known (it says why), -errno fails the restore.
	 */
	int (*open)(void *ud, const char *target, uint64_t lsn, int64_t written_ns, char *why,
		    size_t why_len);
	/*
	 * For path (relative to the target) of nblocks 8 KiB blocks: 0 with
	 * changed (nblocks bits) the blocks PostgreSQL may have written since;
	 * 1: the whole file must be read.
	 */
	int (*file)(void *ud, const char *path, uint64_t nblocks, uint8_t *changed);
	/* Once every file is written: the LSN this restore's record holds (0: none). */
	uint64_t (*record_lsn)(void *ud, const char *target);
	void *ud;
} RestoreWal;

typedef struct RestoreOptions {
	int jobs; /* 0: number of CPUs */
	Progress *progress;
	/* where linked directories (tablespaces) go instead of their original target */
	const RestoreMapping *maps;
	size_t n_maps;
	/*
	 * Delta: target may hold an older or diverged copy; only chunks whose bytes
	 * differ are written, and what the snapshot does not have is removed.
	 */
	bool delta;
	/*
	 * Where restore records are kept (store/restrec.h; NULL: none): a restore
	 * writes one for its target, and a delta trusts the files it vouches for
	 * (unchanged since, by inode, size, mtime and ctime) without reading them.
	 */
	const char *record_dir;
	/*
	 * How often the record of the files finished so far is made durable
	 * (syncfs, then saved) during a restore, so that an interrupted one is
	 * resumed by --delta without reading them again. 0: every 60 s.
	 */
	int64_t record_every_ns;
	/*
	 * NULL: no LSN in the record, and a delta reads every file changed since
	 * the record (by ctime) as before. Else a delta reads of a file PostgreSQL
	 * wrote since (same inode and size) only the chunks its WAL names.
	 */
	const RestoreWal *wal;
} RestoreOptions;

typedef struct RestoreResult {
	uint64_t n_files, bytes;
	uint64_t bytes_written; /* delta: of bytes, those that differed and were rewritten */
	uint64_t n_removed;     /* delta: entries of target the snapshot does not have */
	uint64_t n_unchanged;   /* delta: files whose bytes were all in place already */
	uint64_t bytes_sha256;  /* delta: bytes in place checked by SHA-256 (chunks without an fh) */
	uint64_t n_known;       /* delta: files the restore record showed in place, not read */
	uint64_t bytes_known;   /* delta: bytes the record showed in place (in any file), not read */
	uint64_t n_wal;         /* delta: files PostgreSQL wrote, read only where its WAL says */
	char wal_note[256];     /* delta: why PostgreSQL's WAL was not asked, if it was not */
	bool recorded;          /* a restore record was written for the target */
	/* on failure: the file and offset that could not be restored, if any */
	char failed_path[PATH_MAX];
	uint64_t failed_offset;
} RestoreResult;

/*
 * With o->record_dir, the restore keeps a record of the files it finished
 * (store/restrec.h): saved every o->record_every_ns, when it fails, and at
 * the end; a delta trusts the files it vouches for without reading them.
 *
 * target must be missing or an empty directory (-ENOTEMPTY otherwise), unless
 * o->delta: then every file is checked in place, chunk by chunk: a chunk whose
 * bytes match (the 128-bit fast hash recorded at backup, or SHA-256 for a
 * chunk without one; all zero for a hole) is left alone, of the others only
 * the 4 KiB pages that differ are written; entries of target (and of
 * tablespace locations) that the snapshot lacks are removed; TARGET.extra is
 * updated but not swept. A
 * directory the source reached through a symlink (a tablespace) is written at
 * its original target, or where a mapping sends it, and linked back; those
 * locations must be missing or empty too (-ENOTEMPTY, failed_path says which),
 * checked before anything is written. Extra roots (directories kept beside
 * the main tree) are restored under "TARGET.extra/<their original path>",
 * which must be missing or empty too.
 *
 * Before anything is written, the snapshot's files must match its tree
 * digest (store/treedigest.h): -EUCLEAN when they do not, or when the
 * catalog's rows are not a valid tree.
 */
int restore_snapshot(Repo *repo, const SnapshotInfo *snap, const char *target,
		     const RestoreOptions *o, RestoreResult *ret);
