/*
 * The FUSE mount of a repository: MOUNTPOINT/<id>/ is the data directory of
 * each snapshot, MOUNTPOINT/latest (and latest-<instance> when there are
 * several instances) a symlink to the newest. Read-only by default; with
 * writable set, each snapshot directory is a copy-on-write clone kept in
 * scratch/<id>/ (see fs/clone.h) and the repository still never changes.
 *
 * A snapshot's file tree is loaded from the catalog when something inside it
 * is used (listing the mount point or a stat of MOUNTPOINT/<id> loads none)
 * and let go when unused (see max_trees); the root's extended attribute
 * user.pgbakfs.trees says how many are loaded.
 *
 * Snapshots committed or deleted after mounting appear and disappear without
 * a remount. A snapshot the mount has opened is held in the catalog (a
 * "mount" session), so gc keeps its data while the mount serves it, even
 * after delete; the hold goes once it is deleted and no file of it is open.
 */
#pragma once

#include "store/repo.h"

#include <sys/types.h>

#define MOUNT_POLL_INTERVAL_DEFAULT 15

typedef struct MountOptions {
	const char *mountpoint;
	bool writable;
	const char *scratch; /* writable: where clones live */
	bool allow_other;
	uid_t uid; /* owner shown for every file */
	gid_t gid;
	uint64_t cache_size; /* bytes of decompressed chunks */
	/*
	 * snapshot file trees kept in memory while nothing uses them (also
	 * bounded by 256 MiB, and let go after 60 s unused); 0: none
	 */
	unsigned max_trees;
	/*
	 * writable: appended to postgresql.auto.conf of each fresh clone, which
	 * also gets recovery.signal (recovery to a target); NULL: none
	 */
	const char *recovery_conf;
	/*
	 * object storage: seconds between looks at the bucket for catalog
	 * generations other machines published (a request each); 0: the
	 * default, MOUNT_POLL_INTERVAL_DEFAULT; negative: never (the mount shows
	 * what it opened with, and what this machine publishes)
	 */
	int poll_interval;
	/* called once the filesystem is mounted, before requests are served */
	void (*ready)(void *userdata);
	void *userdata;
} MountOptions;

/*
 * Mount and serve until unmounted (fusermount3 -u, umount) or SIGTERM/SIGINT;
 * 0 on a clean unmount, -errno when mounting failed.
 */
int mount_run(Repo *repo, const MountOptions *o);
