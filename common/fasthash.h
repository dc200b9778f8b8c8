/*
 * fasthash128: a keyed 128-bit non-cryptographic hash of a buffer, several
 * GB/s per core on any x86-64 (no SHA or CRC instructions needed). It tells
 * whether bytes already in place are those a chunk had at backup: restore
 * --delta compares it with the value recorded beside each chunk
 * (chunks.fh), instead of computing the chunk's SHA-256 id again.
 *
 * Not a CRC (linear: every block that ends in its own CRC-32C has one
 * residue) and not collision-resistant against an adversary who knows the
 * key: the key only keeps the bytes of one chunk from passing as another's.
 * The value is part of the repository format: the constants and the
 * algorithm in fasthash.c must never change (tests/unit/test_fasthash.c
 * pins fixed vectors). Pure function, thread-safe.
 */
#pragma once

#include "common/common.h"

#define FASTHASH_LEN 16

/* out = fasthash128 of buf[0..len) under the 16-byte key (little-endian words k0, k1). */
void fasthash128(const void *key16, const void *buf, size_t len, uint8_t out[FASTHASH_LEN]);
