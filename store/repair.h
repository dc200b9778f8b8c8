/*
 * Rebuilding the catalog from the repository's objects alone: every pack
 * lists its chunks in its trailer (store/pack.h), and every committed
 * snapshot is also stored as a manifest (store/manifest.h).
 */
#pragma once

#include "store/backend.h"
#include "store/catalog.h"

typedef struct RepairStats {
	uint64_t packs;         /* pack objects recorded */
	uint64_t chunks;        /* chunk rows in the rebuilt catalog */
	uint64_t snapshots;     /* manifests imported */
	uint64_t bad_packs;     /* pack objects skipped: damaged trailer, unusable name */
	uint64_t bad_manifests; /* manifests skipped: unreadable, not importable, tree digest wrong */
	uint64_t incomplete;    /* snapshots imported as "failed": chunks no pack holds */
} RepairStats;

/*
 * Called for each manifest object name: its plain bytes (decrypted and
 * decompressed; malloc'd, the caller of the callback frees them) or -errno.
 */
typedef int (*RepairManifestFn)(const char *name, void **ret_buf, size_t *ret_len, void *ud);

/*
 * Fill the empty catalog c (no packs, chunks, contents or snapshots:
 * -ENOTEMPTY otherwise) from backend b.
 *
 * Every object under "packs/" is read through its footer and entries and
 * recorded as a pack in state "ok" with its chunks (no CRCs: packs do not
 * carry them). Packs go in name order; a chunk found in two packs keeps the
 * first. An object whose trailer is damaged, or that is shorter than a
 * footer, or whose name does not fit a catalog pack name, counts in
 * bad_packs, is named in a log_warning and skipped.
 *
 * Then every object under manifest_prefix (e.g. "snapshots/"), in name order,
 * is fetched through get_manifest twice: first for the id blocks it carries
 * (manifest_import_idblocks: a list may name a block another manifest
 * carries), then imported (manifest_import), which also restores the chunks'
 * CRCs and makes each block's first importer its carrier. A manifest that cannot be read (any error but
 * -ENOMEM) or is not a manifest (-EBADMSG, -EPROTONOSUPPORT) counts in
 * bad_manifests, is named in a log_warning and skipped; one whose snapshot
 * is already there (-EEXIST: a copy) is skipped silently. A manifest whose
 * rows do not give its recorded tree digest is damaged (-EBADMSG above).
 *
 * Last, every imported snapshot's chunks must be in some pack and its id
 * blocks in some manifest: one that names chunks no pack holds, or blocks no
 * manifest carries, (a damaged pack, or the leftover manifest of a
 * snapshot deleted and collected while the manifest's removal was cut short)
 * is kept with status "failed", counted in incomplete and named in a
 * log_warning: its other chunks stay referenced, so gc keeps them.
 *
 * Commits along the way are not synced one by one; the catalog is
 * checkpointed before a 0 return. Returns 0 with bad objects counted, or
 * -errno for errors of the backend (other than a short pack) or of the
 * catalog. After an error the catalog holds part of a rebuild: throw it away,
 * and never run gc on it (a pack row may be left "pending" without a session,
 * which gc takes for an abandoned pack and deletes).
 *
 * Note for callers: chunks used only by snapshots whose manifests were bad
 * are unreferenced in the rebuilt catalog, and gc deletes them.
 */
int repair_rebuild_catalog(StoreBackend *b, Catalog *c, const char *manifest_prefix,
			   RepairManifestFn get_manifest, void *ud, RepairStats *ret);
