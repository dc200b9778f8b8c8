/*
 * WAL spools: local directories that let wal-fetch and wal-push work ahead of
 * PostgreSQL, which asks for one WAL file at a time (pgBackRest's
 * archive-get/archive-push async). Repository-independent file handling; the
 * callers (tools/cmd_wal.c) decide what goes in and when it may come out.
 *
 *  - A fetch spool holds segments fetched (and verified against their
 *    archived checksum) before PostgreSQL asked for them: one file per
 *    segment, named as the segment, its bytes followed by a 64-byte trailer
 *    (magic, format, CRC-32C of the bytes, their length, the name), so that
 *    a torn or damaged spool file is never served (-EBADMSG, and removed).
 *  - A push spool holds records "NAME.done" of files archived ahead of
 *    PostgreSQL's request: length and a fasthash128 of the bytes that were
 *    archived, so a request for NAME can be answered without the repository
 *    when pg_wal/NAME still holds exactly those bytes.
 *
 * A spool is one directory (created 0700), held by one process at a time:
 * walspool_open() takes an exclusive flock on DIR/lock and waits for it, so
 * concurrent wal-fetch or wal-push runs of one spool follow each other.
 * Entries appear by rename, so a reader (or a crash) never sees half of one.
 * Nothing in a spool is fsync'ed: a lost entry is fetched or pushed again.
 *
 * Errors: 0 or -errno. walspool_put(), walspool_mark_done() and
 * walspool_run() may be called from several threads at once on one spool;
 * the other functions only by the thread that opened it.
 */
#pragma once

#include "store/wal.h"

typedef struct WalSpool WalSpool;

/* mkdir -p dir (0700), then wait for the exclusive lock on dir/lock. */
int walspool_open(const char *dir, WalSpool **ret);
/* Release the lock; accepts and returns NULL. */
WalSpool *walspool_free(WalSpool *s);
const char *walspool_dir(const WalSpool *s);

/* ---- fetch spool ---- */

/*
 * Store len bytes as the entry for name (a temporary file renamed into
 * place). -ENOSPC and friends as the file system says; nothing is left
 * behind on failure. Thread-safe.
 */
int walspool_put(WalSpool *s, const char *name, const void *buf, size_t len);
/* Is there an entry for name? (Its bytes are checked only when taken.) */
bool walspool_has(WalSpool *s, const char *name);
/*
 * Take the entry for name: *ret_buf (malloc'd) and *ret_len, checked
 * against its trailer. The entry is removed in every case but a read error:
 * consumed, or damaged (-EBADMSG). -ENOENT when there is none.
 */
int walspool_take(WalSpool *s, const char *name, void **ret_buf, size_t *ret_len);
/*
 * Keep only the entries that may still be asked for: segments of want's
 * timeline whose number (for the entry's own segment size) is in
 * (want, want + window); every other entry, and stray temporary files, are
 * removed. want NULL (a timeline history file was asked for: recovery may
 * change timelines) removes them all. *ret_n_kept (may be NULL): entries left.
 */
int walspool_trim(WalSpool *s, const WalName *want, uint64_t window, size_t *ret_n_kept);

/* ---- push spool ---- */

/* Record that name was archived with these len bytes. Thread-safe. */
int walspool_mark_done(WalSpool *s, const char *name, const void *buf, size_t len);
/*
 * 1 when a record says name was archived with exactly these bytes (the record
 * is then removed: PostgreSQL marks the file done and never asks again), 0
 * when there is no such record (a record for other bytes is removed).
 */
int walspool_take_done(WalSpool *s, const char *name, const void *buf, size_t len);
/*
 * Remove the records for which keep(name, userdata) is false (files
 * PostgreSQL no longer has ready to archive).
 */
int walspool_prune_done(WalSpool *s, bool (*keep)(const char *name, void *userdata),
			void *userdata);

/* ---- parallel work ---- */

/* What a job returns: 0 or -errno, or WALSPOOL_STOP to start no later job. */
#define WALSPOOL_STOP 1

/*
 * Run job(i, userdata) for i = 0 .. n-1 on up to n_threads threads (the
 * calling one included; at most 64), started in order of i. Once job i
 * returned WALSPOOL_STOP, no job after i is started (those running finish).
 * When threads cannot be started, the calling thread runs every job. The
 * jobs record their own results. Returns when every started job ended.
 */
void walspool_run(size_t n, unsigned n_threads, int (*job)(size_t i, void *userdata),
		 void *userdata);
