# The mount loads a snapshot's file tree only when something inside it is
# used, and lets it go when nothing uses it: listing the root (ls -l) and a
# stat of a snapshot directory load no tree; walking every snapshot keeps at
# most --max-trees unused trees; a file of a released tree (cached inode or
# new lookup) reads the same bytes; an open file keeps its tree; each reload
# checks the tree digest again; the daemon's RSS after `ls -l` of the root is
# the same with 5 and 50 snapshots. The counts come from the mount root's
# extended attribute user.pgbakfs.trees, which operators can read too.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mnt.sh"
R=$T/repo M=$T/mnt
# ~1,000 files: a tree of some 200 KB in the daemon
for d in $(seq 1 20); do
	mkdir -p "$T/src/base/$d"
	for f in $(seq 1 50); do echo "$d $f" >"$T/src/base/$d/$f"; done
done
echo 15 >"$T/src/PG_VERSION"
head -c 300000 /dev/urandom >"$T/src/big"

# look_trees: read the attribute ("loaded N", "loads N", ...) into TREES; tree_stat KEY: a value
look_trees() { TREES=$(python3 -c 'import os, sys; print(os.getxattr(sys.argv[1], "user.pgbakfs.trees").decode())' "$M"); }
tree_stat() { awk -v k="$1" '$1 == k { print $2 }' <<<"$TREES"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$MOUNT_PID/status"; }
backup_n() { for _ in $(seq "$1"); do pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null; done; }
backups() { # N, in two streams: a backup mostly waits for fsync
	backup_n $(($1 / 2)) &
	local pid=$!
	backup_n $(($1 - $1 / 2))
	wait "$pid"
}
released() { grep -c "snapshot \"$1\": tree released" "$T/mount.log" || true; }

START=$SECONDS
N=50
# ASan's shadow memory makes RSS meaningless; fewer snapshots keep it quick
[ "${PGBAKFS_SANITIZE:-0}" = 1 ] && N=12

pgbakfs init --repo "$R" >/dev/null
backups 5
mount_fg "$M" "$T/mount5.log" --repo "$R"
ls -l "$M" >/dev/null
S1=$(ls "$M" | grep -v '^latest' | head -1)
stat "$M/$S1" "$M/latest/" >/dev/null
ok "a snapshot directory shows its root row: links, mode, mtime" \
	test "$(stat -c '%h %a %Y' "$M/$S1")" = "$(stat -c '%h %a %Y' "$T/src")"
look_trees
ok "5 snapshots: ls -l of the root and stat of snapshot directories load no tree" \
	test "$(tree_stat loads)" = 0
RSS5=$(rss_kb)
ok "unmount" unmount_fg "$M"

backups $((N - 5))
echo "$N backups: $((SECONDS - START)) s"
PGBAKFS_DEBUG=1 mount_fg "$M" "$T/mount.log" --repo "$R" --max-trees 2
ls -l "$M" >/dev/null
ls -l "$M" >/dev/null
look_trees
ok "$N snapshots: ls -l of the root loads no tree" test "$(tree_stat loads)" = 0
RSS50=$(rss_kb)
echo "daemon RSS after ls -l of the root: 5 snapshots ${RSS5} KiB, $N snapshots ${RSS50} KiB"
if [ "${PGBAKFS_SANITIZE:-0}" != 1 ]; then
	ok "RSS does not grow with the snapshots (${RSS5} -> ${RSS50} KiB)" test "$RSS50" -lt $((RSS5 + 4096))
fi

# a script walking every snapshot: each tree loaded once, at most 2 kept
for s in $(ls "$M" | grep -v "^latest"); do cat "$M/$s/PG_VERSION"; done >"$T/walk.out"
ok "every snapshot's file reads right" test "$(sort -u "$T/walk.out")" = 15
ok "one line per snapshot" test "$(wc -l <"$T/walk.out")" = "$N"
look_trees
ok "each tree loaded once" test "$(tree_stat loads)" = "$N"
ok "at most --max-trees stay loaded ($(tree_stat loaded))" test "$(tree_stat loaded)" -le 2
ok "the others were released" test "$(tree_stat releases)" -ge $((N - 2))
ok "the debug log says so" grep_or_show "snapshot \"$S1\": tree released (over the bound)" "$T/mount.log"

# the kernel still knows the inode of S1/PG_VERSION: opening it reloads the tree
LOADS=$(tree_stat loads)
ok "a cached inode of a released tree opens and reads" test "$(cat "$M/$S1/PG_VERSION")" = 15
look_trees
ok "its tree was loaded again" test "$(tree_stat loads)" = $((LOADS + 1))
ok "a file looked up after the release reads the same bytes" cmp "$M/$S1/big" "$T/src/big"
# a committed snapshot's inos: preorder, names in byte order, the root 1 (docs/design.md)
N_BIG=$(python3 - "$T/src" <<'PY'
import os, sys
def walk(p):
    yield p
    if os.path.isdir(p) and not os.path.islink(p):
        for n in sorted(os.listdir(p), key=os.fsencode):
            yield from walk(os.path.join(p, n))
print([q for q in walk(sys.argv[1])].index(os.path.join(sys.argv[1], "big")) + 1)
PY
)
INO=$(( $(sqlite3 "$R/catalog.db" "select id from snapshots where name = '$S1'") << 32 | N_BIG ))
ok "inode numbers stay (snapshot << 32) | ino across the reload" test "$(stat -c %i "$M/$S1/big")" = "$INO"

# an open file keeps its tree loaded, whatever else is walked
S2=$(ls "$M" | grep -v '^latest' | sed -n 2p)
exec 7<"$M/$S2/big"
head -c 1000 <&7 >/dev/null
BEFORE=$(released "$S2")
# (more snapshots than --max-trees: their trees are loaded and released around it)
for s in $(ls "$M" | grep -v "^latest" | head -8); do cat "$M/$s/base/1/1" >/dev/null; done
ok "the tree of an open file is not released" test "$(released "$S2")" = "$BEFORE"
ok "the open file reads on" python3 - "$T/src/big" <<'PY'
import os, sys
os.lseek(7, 0, os.SEEK_SET)
got = b""
while True:
    b = os.read(7, 65536)
    if not b:
        break
    got += b
assert got == open(sys.argv[1], "rb").read()
PY
exec 7<&-

# every load checks the tree digest: a row damaged after a release gives EIO
S3=$(ls "$M" | grep -v '^latest' | sed -n 3p)
ok "the tree of $S3 is released" test "$(released "$S3")" -ge 1
# (every snapshot here shares one tree: damage the digest S3's tree must match)
sqlite3 "$R/catalog.db" "update snapshots set tree_digest = zeroblob(32) where name = '$S3'"
ok "a damaged tree gives EIO on reload" bash -c "ls '$M/$S3/base' 2>&1 | grep -q 'Input/output error'"
ok "and is logged" grep_or_show "snapshot \"$S3\": its files in the catalog do not match its tree digest" "$T/mount.log"
ok "other snapshots still read" cmp "$M/latest/big" "$T/src/big"
ok "unmount" unmount_fg "$M"

# writable: listing the root opens no clone; a file opens one clone, on its tree
mount_fg "$M" "$T/mountw.log" --repo "$R" --writable --scratch "$T/scratch"
ls -l "$M" >/dev/null
look_trees
ok "writable: ls -l of the root loads no tree" test "$(tree_stat loads)" = 0
ok "writable: and opens no clone" test -z "$(ls "$T/scratch")"
ok "writable: a clone reads through its tree" cmp "$M/$S1/big" "$T/src/big"
look_trees
ok "writable: one clone, one tree" test "$(ls "$T/scratch")/$(tree_stat loaded)" = "$S1/1"
ok "unmount" unmount_fg "$M"

expect_error 2 "max-trees" pgbakfs mount "$M" --repo "$R" --max-trees -1
expect_error 2 "max-trees" pgbakfs mount "$M" --repo "$R" --max-trees 2x
finish
