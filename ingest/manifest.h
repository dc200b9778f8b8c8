/*
 * backup_manifest in PostgreSQL's format (version 1), as pg_verifybackup
 * reads it: one entry per file with size, modification time and a CRC-32C
 * (or no checksum, for files reused unread by an incremental backup), the WAL
 * range, and a SHA-256 over everything before the checksum line.
 * Thread-safe: reader threads add entries concurrently.
 */
#pragma once

#include <stdio.h>

#include "common/crc32c.h"

#include "common/common.h"

typedef struct Manifest Manifest;

#define CRC32C_INIT 0xFFFFFFFFu
#define CRC32C_FINISH(c) ((c) ^ 0xFFFFFFFFu)

int manifest_new(Manifest **ret);
Manifest *manifest_free(Manifest *m);
int manifest_add(Manifest *m, const char *path, uint64_t size, int64_t mtime_ns, bool has_crc,
		 uint32_t crc);
/* The whole manifest text (malloc'd): entries sorted by path, then the WAL range. */
int manifest_render(Manifest *m, uint32_t timeline, const char *start_lsn, const char *end_lsn,
		    char **ret, size_t *ret_len);

/* s as a JSON string, the way backup_manifest writes paths. */
void manifest_put_json_string(FILE *f, const char *s);
