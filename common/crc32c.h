/*
 * CRC-32C (Castagnoli), hardware-accelerated where the CPU allows: the
 * checksum of PostgreSQL's backup_manifest, and the fast check a mount makes
 * of each chunk it serves.
 */
#pragma once

#include "common/common.h"

/* Raw update (no pre- or post-inversion): crc32c_update(~0, ...) then ~ gives the CRC. */
uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len);
/* The CRC-32C of buf. */
uint32_t crc32c(const void *buf, size_t len);
