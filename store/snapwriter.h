/*
 * Writing a snapshot: a producer pushes a file tree (directories, symlinks,
 * and files as byte streams); the writer cuts files into offset-aligned
 * chunks, hashes and compresses them on worker threads, appends new chunks
 * to packs on a writer thread, and writes packs durably on a flusher thread,
 * so reading, hashing/compressing and pack writing overlap. Memory is
 * bounded: a fixed pool of chunk buffers and three pack buffers, whatever the
 * size of a file or of the repository.
 *
 * The snapshot is visible only after snapwriter_commit() returns 0. Freeing
 * an uncommitted writer removes the partial snapshot; a crash leaves it to gc.
 *
 * Entries must come parents first; the root directory (parent 0, name "")
 * is the first entry and gets ino 1. An extra root (a directory kept beside
 * the main tree, e.g. configuration outside the data directory) is a later
 * directory with parent 0, named by its absolute path. Directories and symlinks are added by
 * one thread; files may be produced by several threads at once, each file by
 * one thread (begin, write..., end).
 */
#pragma once

#include "common/progress.h"
#include "store/repo.h"

typedef struct SnapWriterOptions {
	const char *instance; /* default "main" */
	const char *type;     /* "full" (default) or "incr" */
	const char *parent;
	const char *label;
	const char *note;
	const char *source; /* where it came from, e.g. "dir:/path" */
	int jobs;           /* worker threads; 0: number of CPUs */
	Progress *progress; /* optional; bytes read are added to it */
	/* what the source says of itself (PostgreSQL: LSN, system id, ...); optional */
	const char *start_lsn;
	const char *system_id;
	int64_t timeline;
	int64_t pg_version;
} SnapWriterOptions;

typedef struct SnapEntry {
	uint64_t parent; /* ino of the parent directory; 0 for the root */
	const char *name;
	uint32_t mode, uid, gid;
	int64_t mtime_ns;
} SnapEntry;

typedef struct SnapWriter SnapWriter;
typedef struct SnapFile SnapFile;

int snapwriter_new(Repo *repo, const SnapWriterOptions *o, SnapWriter **ret);
/* Frees; if not committed, aborts and removes the partial snapshot. */
SnapWriter *snapwriter_free(SnapWriter *w);

int snapwriter_add_dir(SnapWriter *w, const SnapEntry *e, uint64_t *ret_ino);
int snapwriter_add_symlink(SnapWriter *w, const SnapEntry *e, const char *target);

/*
 * A file unchanged since an earlier snapshot: its content is reused without
 * reading it (incremental backups). content is that snapshot's content id.
 */
int snapwriter_add_file_reuse(SnapWriter *w, const SnapEntry *e, uint64_t size, int64_t content);

/* A regular file: begin, write its bytes in order, end. Size = bytes written. */
int snapwriter_file_begin(SnapWriter *w, const SnapEntry *e, SnapFile **ret);
int snapwriter_file_write(SnapWriter *w, SnapFile *f, const void *buf, size_t len);
/* len bytes of zeros without passing them: whole chunks become holes cheaply. */
int snapwriter_file_write_zeros(SnapWriter *w, SnapFile *f, uint64_t len);
/*
 * n chunks already stored, by id (e.g. from the parent snapshot's chunk list:
 * a block-level incremental takes the chunks it did not read from there),
 * appended at a chunk boundary (nothing written since the last whole chunk).
 * len is their plain length: all but the last are whole chunks. The ids are
 * not looked up: the caller found them in the catalog during this session,
 * which gc honours (see "sessions" in docs/design.md). chunk_id_hole is a hole.
 */
int snapwriter_file_write_ids(SnapWriter *w, SnapFile *f, const ChunkId *ids, uint64_t n,
			      uint64_t len);
/* f belongs to the writer afterwards, whatever the result. */
int snapwriter_file_end(SnapWriter *w, SnapFile *f);

/*
 * A damaged block found by the producer (e.g. a page checksum failure): kept
 * with the snapshot, whose status becomes "warning".
 */
int snapwriter_add_bad_block(SnapWriter *w, const char *path, uint64_t block);
/*
 * Something the producer warned about (a file that changed while it was
 * read): the snapshot's status becomes "warning". Thread-safe.
 */
int snapwriter_add_warning(SnapWriter *w);
/* The directory at path was reached through a symlink to target in the source. */
int snapwriter_add_link(SnapWriter *w, const char *path, const char *target);
/* Set before commit: where the source's consistent state ends. */
int snapwriter_set_stop_lsn(SnapWriter *w, const char *lsn);
/* Set before commit: how it was taken (SnapshotInfo.method), and the bytes read. */
int snapwriter_set_method(SnapWriter *w, const char *method, const char *note, uint64_t read_bytes);
/* The snapshot's name (valid from snapwriter_new on). */
const char *snapwriter_name(const SnapWriter *w);

typedef struct SnapWriterResult {
	char name[64];
	uint64_t n_files, logical_bytes, stored_bytes, new_chunks, reused_chunks, hole_chunks;
	uint64_t bad_blocks, reused_bytes;
	char status[16];
} SnapWriterResult;

/* Wait for the pipeline, then make the snapshot visible (status ok). */
int snapwriter_commit(SnapWriter *w, SnapWriterResult *ret);
