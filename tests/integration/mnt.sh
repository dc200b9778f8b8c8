# Helpers for tests that mount a repository with FUSE. Source after lib.sh.

# wait_for SECONDS COMMAND...: poll until the command succeeds.
wait_for() {
	local deadline=$((SECONDS + $1)); shift
	until "$@" 2>/dev/null; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.1
	done
}

# Unmount (lazily if busy) and wait for the daemon, whatever state it is in.
unmount_quiet() { # MNT
	if mountpoint -q "$1"; then
		fusermount3 -u "$1" 2>/dev/null || fusermount3 -u -z "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
	fi
}

# mount_fg MNT LOG ARGS...: run "pgbakfs mount MNT --foreground ARGS" in the
# background with stderr in LOG; sets MOUNT_PID once mounted. Teardown unmounts.
mount_fg() {
	local mnt=$1 log=$2; shift 2
	mkdir -p "$mnt"
	"$PGBAKFS" mount "$mnt" --foreground "$@" 2>"$log" &
	MOUNT_PID=$!
	at_exit "unmount_quiet '$mnt'; kill $MOUNT_PID 2>/dev/null; wait $MOUNT_PID 2>/dev/null"
	if ! wait_for 20 mountpoint -q "$mnt"; then
		echo "mount of $mnt did not come up: $(cat "$log")" >&2
		return 1
	fi
}

# Stop a foreground mount cleanly; its exit status. A process that just exited
# may still hold the mount for a moment (its files are released asynchronously):
# retry a busy unmount for a few seconds.
unmount_fg() { # MNT
	local rc=0
	wait_for 10 fusermount3 -u "$1" || { fusermount3 -u "$1"; return 1; }
	wait "$MOUNT_PID" || rc=$?
	return $rc
}

# Manifest without owners: a mount shows every file as its owner.
tree_manifest_noowner() {
	tree_manifest "$1" | awk '{ $6 = "-"; print }'
}

same_tree_noowner() { # A B
	diff <(tree_manifest_noowner "$1") <(tree_manifest_noowner "$2") >"$T/.treediff" || {
		head -20 "$T/.treediff" >&2
		return 1
	}
}
