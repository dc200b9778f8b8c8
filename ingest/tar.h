/*
 * Streaming ustar reader: archive bytes in, tree entries out, without
 * staging anything. Entry paths get a prefix ("pg_tblspc/16384" for a
 * tablespace archive). Regular files, directories and symlinks; anything
 * else is an error (-EPROTO), as is an archive that ends inside an entry.
 */
#pragma once

#include "ingest/tree.h"

typedef struct TarReader TarReader;

int tar_reader_new(Tree *tree, const char *prefix, TarReader **ret);
int tar_reader_feed(TarReader *t, const void *data, size_t len);
/* The archive is complete: -EPROTO if it stopped inside an entry. */
int tar_reader_finish(TarReader *t);
TarReader *tar_reader_free(TarReader *t);
