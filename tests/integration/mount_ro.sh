# The read-only mount: layout, cp -a identical to restore, EROFS, holes,
# xattrs, ENAMETOOLONG, live view (snapshots appear and go), a deleted
# snapshot stays readable while a file of it is open (gc keeps its data),
# damaged chunks give EIO to their readers only (reads spanning them too), reads
# at odd offsets, across chunks and holes and from 4 threads at once compared
# byte for byte (also a file of old and new packs, located in batches),
# SIGKILL + fusermount3 -u,
# daemon mode.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mnt.sh"
R=$T/repo M=$T/mnt

# readcheck MOUNTED SOURCE [damaged]: O_DIRECT reads (each reaches the daemon as
# it is: no page cache rounding) at chunk boundaries, odd offsets and lengths and
# the tail, then 4 threads reading the same file at random, compared byte for byte
# with SOURCE. With "damaged": the 64 KiB chunks a one-chunk read gets EIO for are
# found first (there must be some); every read touching them must fail with EIO,
# every other read must be right.
readcheck() {
	python3 - "$@" <<'PY'
import errno, os, random, sys, threading
mnt, src = sys.argv[1], sys.argv[2]
want = open(src, "rb").read()
size, cs = len(want), 65536
fd = os.open(mnt, os.O_RDONLY | os.O_DIRECT)
bad = set()
if len(sys.argv) > 3:
    for k in range((size + cs - 1) // cs):
        try:
            assert os.pread(fd, cs, k * cs) == want[k * cs:(k + 1) * cs], k
        except OSError as e:
            assert e.errno == errno.EIO, e
            bad.add(k)
    assert bad, "no damaged chunk found"
def check(f, off, n):
    end = min(off + n, size)
    hits_bad = off < size and any(k in bad for k in range(off // cs, (end - 1) // cs + 1))
    try:
        got = os.pread(f, n, off)
    except OSError as e:
        assert hits_bad and e.errno == errno.EIO, (off, n, e)
        return
    assert not hits_bad, ("damaged range served", off, n)
    assert got == want[off:off + n], ("differs", off, n, len(got))
for off, n in [(0, 1), (cs - 1, 2), (cs - 7, cs + 13), (3 * cs + 5, 2 * cs + 11), (cs, 1 << 20),
               (12345, (1 << 20) + 3), (size - 1, 1), (size - 3, 100), (size - 12345, 99999),
               (size, 10), (size + 5, 10), (size // 2 | 1, 131073)]:
    check(fd, max(off, 0), n)
def reader(seed):
    rnd, f = random.Random(seed), os.open(mnt, os.O_RDONLY | os.O_DIRECT)
    for _ in range(40):
        check(f, rnd.randrange(size + 100), rnd.choice([1, 511, 4097, cs + 3, 3 * cs - 1, 1 << 20]))
    os.close(f)
ts = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
for t in ts:
    t.start()
for t in ts:
    t.join()
PY
}
make_tree "$T/src"
mkdir -p "$T/src2"
head -c 400000 /dev/urandom >"$T/src2/only_in_2"
seq 1 100000 >"$T/src2/text2"

pgbakfs init --repo "$R" --pack-size 1M >/dev/null
pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null
S1=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
pgbakfs restore "$S1" "$T/restored" --repo "$R" --no-progress >/dev/null

mount_fg "$M" "$T/mount.log" --repo "$R"
ok "snapshot directory listed" test -d "$M/$S1"
ok "latest links to it" test "$(readlink "$M/latest")" = "$S1"
ok "no latest-<instance> with one instance" bash -c "! ls '$M' | grep -q '^latest-'"
ok "files show the mounting user" test "$(stat -c %u:%g "$M/$S1/base/1/text")" = "$(id -u):$(id -g)"

# cp -a out of the mount equals restore (content, modes, mtimes, symlinks)
ok "cp -a out of the mount" cp -a "$M/$S1/." "$T/copied"
ok "cp -a tree identical to restore" same_tree_noowner "$T/restored" "$T/copied"
# the daemon's threads say what they do (top -H, perf): its read-ahead and its catalog poll
ok "the daemon's threads are named: its catalog poll" grep -qx mount-poll /proc/$MOUNT_PID/task/*/comm
ok "and its read-ahead" grep -qx mount-prefetch /proc/$MOUNT_PID/task/*/comm
ok "same through latest" cmp "$M/latest/base/1/random" "$T/src/base/1/random"
# reads as the daemon answers them: from pinned cache entries, across chunks, holes and tails
for f in base/1/random sparse; do
	ok "odd, spanning and concurrent reads of $f" readcheck "$M/$S1/$f" "$T/src/$f"
done

# read-only: every modification fails with EROFS
ok "create fails" bash -c "! touch '$M/$S1/newfile' 2>&1 | grep -q . || ! test -e '$M/$S1/newfile'"
for op in "touch $M/$S1/newfile" "mkdir $M/$S1/d" "rm $M/$S1/empty" "chmod 700 $M/$S1/empty" \
	"mv $M/$S1/empty $M/$S1/e2" "ln -s x $M/$S1/l2" "truncate -s 0 $M/$S1/base/1/text"; do
	ok "EROFS: $op" bash -c "$op 2>&1 | grep -q 'Read-only file system'"
done
ok "open for writing fails with EROFS" python3 - "$M/$S1/base/1/text" <<'PY'
import errno, os, sys
try:
    os.open(sys.argv[1], os.O_WRONLY)
except OSError as e:
    assert e.errno == errno.EROFS, e
else:
    raise SystemExit("opened for writing")
PY

# holes: SEEK_DATA/SEEK_HOLE, getxattr ENODATA, statfs
ok "SEEK_DATA and SEEK_HOLE" python3 - "$M/$S1/sparse" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
data = os.lseek(fd, 0, os.SEEK_DATA)
assert 0 < data <= 7000000, data
os.lseek(fd, 7000000, os.SEEK_SET)
assert os.read(fd, 6) == b"middle"
hole = os.lseek(fd, data, os.SEEK_HOLE)
assert data < hole < size, (data, hole)
assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
try:
    os.lseek(fd, size, os.SEEK_DATA)
    raise SystemExit("SEEK_DATA at EOF must fail")
except OSError as e:
    assert e.errno == 6  # ENXIO
PY
ok "getxattr gives ENODATA" python3 -c "
import errno, os, sys
try:
    os.getxattr('$M/$S1/base/1/text', 'user.x'); sys.exit(1)
except OSError as e:
    sys.exit(0 if e.errno == errno.ENODATA else 1)"
ok "listxattr is empty" python3 -c "import os; assert os.listxattr('$M/$S1/base/1/text') == []"
ok "the root's user.pgbakfs.trees: its length, ERANGE for a short buffer, EROFS to set" \
	python3 - "$M" <<'PY'
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
path, name = sys.argv[1].encode(), b"user.pgbakfs.trees"
n = libc.getxattr(path, name, None, 0)
value = os.getxattr(sys.argv[1], name)
assert n == len(value) and value.startswith(b"loaded "), (n, value)
assert libc.getxattr(path, name, ctypes.create_string_buffer(4), 4) == -1
assert ctypes.get_errno() == errno.ERANGE, ctypes.get_errno()
assert libc.listxattr(path, None, 0) == len(name) + 1
assert libc.listxattr(path, ctypes.create_string_buffer(4), 4) == -1
assert ctypes.get_errno() == errno.ERANGE, ctypes.get_errno()
try:
    os.setxattr(sys.argv[1], "user.x", b"1")
    raise SystemExit("set an attribute on a read-only mount")
except OSError as e:
    assert e.errno == errno.EROFS, e
PY
ok "statfs" stat -f "$M/$S1" >/dev/null
# a name longer than NAME_MAX (255 bytes): ENAMETOOLONG, not ENOENT, wherever it is looked up
LONG=$(printf 'a%.0s' {1..300}) MAX=$(printf 'm%.0s' {1..255})
ok "ENAMETOOLONG in a snapshot directory" bash -c "stat '$M/$S1/$LONG' 2>&1 | grep -q 'File name too long'"
ok "ENAMETOOLONG in a subdirectory" bash -c "stat '$M/$S1/base/1/$LONG' 2>&1 | grep -q 'File name too long'"
ok "ENAMETOOLONG in the root" bash -c "stat '$M/$LONG' 2>&1 | grep -q 'File name too long'"
ok "ENAMETOOLONG for mkdir" bash -c "mkdir '$M/$S1/$LONG' 2>&1 | grep -q 'File name too long'"
ok "a 255-byte name is looked up: ENOENT" bash -c "stat '$M/$S1/$MAX' 2>&1 | grep -q 'No such file'"

# live view: a new snapshot appears, latest follows, a deleted one goes
pgbakfs backup --repo "$R" --from-dir "$T/src2" --no-progress >/dev/null
S2=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
ok "new snapshot appears without remount" wait_for 5 test -f "$M/$S2/text2"
ok "latest follows" wait_for 5 test "$(readlink "$M/latest")" = "$S2"
ok "new snapshot reads right" cmp "$M/$S2/only_in_2" "$T/src2/only_in_2"

# a deleted snapshot stays readable while a file of it is open, even across gc
exec 7<"$M/$S2/only_in_2"
head -c 1000 <&7 >/dev/null
pgbakfs delete "$S2" --repo "$R" >"$T/delete.out"
ok "delete says a mount still serves it" grep -q "mount still serves it" "$T/delete.out"
ok "deleted snapshot disappears from the mount" wait_for 5 test ! -e "$M/$S2"
ok "and from list" bash -c "! '$PGBAKFS' list --repo '$R' | grep -q '$S2'"
pgbakfs gc --repo "$R" >/dev/null
ok "gc keeps what the mount serves: check passes" pgbakfs check --repo "$R" --read-data >/dev/null
# read the rest through the open descriptor (no page-cache help: skip what was read)
ok "open file still reads right after delete + gc" python3 - "$T/src2/only_in_2" <<'PY'
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
BEFORE=$(pgbakfs stats --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
exec 7<&-
# once closed, the mount lets go; gc then reclaims the snapshot's data
ok "gc purges it once the mount let go" wait_for 10 bash -c "'$PGBAKFS' gc --repo '$R' | grep -q 'released by mounts purged'"
AFTER=$(pgbakfs stats --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stored_bytes"])')
ok "space reclaimed ($BEFORE -> $AFTER)" test "$AFTER" -lt "$BEFORE"
ok "check after purge" pgbakfs check --repo "$R" --read-data >/dev/null
ok "clean unmount" unmount_fg "$M"

# a damaged chunk: EIO for its readers, logged once, everything else still served
pgbakfs backup --repo "$R" --from-dir "$T/src2" --no-progress >/dev/null
S3=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
PACK=$(ls -t $(find "$R/packs" -name '*.pack') | head -1)
python3 - "$PACK" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(100000)
    b = f.read(1)
    f.seek(100000)
    f.write(bytes([b[0] ^ 0x40]))
PY
mount_fg "$M" "$T/mount2.log" --repo "$R"
for i in 1 2; do
	ok "damaged file gives EIO (read $i)" bash -c "cat '$M/$S3/only_in_2' 2>&1 >/dev/null | grep -q 'Input/output error'"
done
ok "reads touching the damaged chunk get EIO, the others the right bytes" readcheck "$M/$S3/only_in_2" "$T/src2/only_in_2" damaged
ok "damage logged once, with file and offset" test "$(grep -c "snapshot \"$S3\": file \"only_in_2\": cannot read .* at offset [0-9]*: damaged" "$T/mount2.log")" = 1
ok "undamaged file of the same snapshot reads" cmp "$M/$S3/text2" "$T/src2/text2"
ok "other snapshot still reads" cmp "$M/$S1/base/1/random" "$T/src/base/1/random"
ok "daemon still alive" kill -0 "$MOUNT_PID"
ok "unmount" unmount_fg "$M"
# without the CRC-32C the backup recorded, the mount checks the SHA-256 id instead
sqlite3 "$R/catalog.db" "update chunks set crc = null"
mount_fg "$M" "$T/mount2b.log" --repo "$R"
ok "no CRC: damage still gives EIO" bash -c "cat '$M/$S3/only_in_2' 2>&1 >/dev/null | grep -q 'Input/output error'"
ok "no CRC: undamaged files read right" cmp "$M/$S1/base/1/random" "$T/src/base/1/random"

# SIGKILL: fusermount3 -u cleans up and a remount works
kill -9 "$MOUNT_PID"
wait "$MOUNT_PID" 2>/dev/null || true
ok "fusermount3 -u after SIGKILL" fusermount3 -u "$M"
ok "mount point released" bash -c "! mountpoint -q '$M'"
mount_fg "$M" "$T/mount3.log" --repo "$R"
ok "remount after SIGKILL serves" cmp "$M/$S1/base/1/text" "$T/src/base/1/text"

# SIGTERM with a file still open: clean exit, the mount goes away
exec 8<"$M/$S1/base/1/text"
kill -TERM "$MOUNT_PID"
rc=0; wait "$MOUNT_PID" || rc=$?
ok "SIGTERM exits 0 with a file open" test "$rc" = 0
ok "SIGTERM unmounted" bash -c "! mountpoint -q '$M'"
exec 8<&-
ok "gc reaps nothing left by the mounts" bash -c "'$PGBAKFS' gc --repo '$R' >/dev/null"

# daemon mode: returns once mounted; fusermount3 -u ends the daemon
ok "daemon mount" pgbakfs mount "$M" --repo "$R" --log-file "$T/daemon.log" --log-level debug
at_exit "unmount_quiet '$M'"
ok "daemon serves" cmp "$M/$S1/base/1/text" "$T/src/base/1/text"
DPID=$(pgrep -f "pgbakfs mount $M" | head -1)
ok "fusermount3 -u" fusermount3 -u "$M"
ok "daemon exits after unmount" wait_for 10 bash -c "! kill -0 $DPID"
# --log-file: the daemon's messages go there (not to syslog), timestamped
ok "the daemon logged its mount" grep -Eq "^20[0-9-]{8}T[0-9:.]{12}Z \[[0-9]+\] info: mounted on \"$M\"$" "$T/daemon.log"
ok "the daemon logged at debug level after detaching" grep -q "\] debug: chunk cache: " "$T/daemon.log"
ok "and its unmount" grep -q "info: unmounted \"$M\"" "$T/daemon.log"

# a small random read decompresses only its chunk; a streaming read prefetches
PGBAKFS_DEBUG=1 mount_fg "$M" "$T/mount5.log" --repo "$R"
ok "one 8 KiB read in the middle of a 3 MB file" python3 - "$M/$S1/base/1/random" "$T/src/base/1/random" <<'PY'
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)  # no kernel readahead
buf = mmap.mmap(-1, 8192)
assert os.preadv(fd, [buf], 1048576 + 16384) == 8192
with open(sys.argv[2], "rb") as f:
    f.seek(1048576 + 16384)
    assert buf[:] == f.read(8192)
PY
ok "unmount" unmount_fg "$M"
ok "random read: one chunk read, nothing prefetched" grep -q "chunk cache: 0 hits, 1 misses, 0 prefetched" "$T/mount5.log"
# sequential reads, of a file large enough (24 MiB, 384 chunks) that the four
# prefetch threads are not all outrun by the reader's own requests however
# loaded the machine (3 MB, 48 chunks, once were: ctest -j 3, a core taken)
mkdir -p "$T/seq"
head -c $((24 << 20)) /dev/urandom >"$T/seq/big"
pgbakfs backup --repo "$R" --from-dir "$T/seq" --no-progress >/dev/null
S6=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
PGBAKFS_DEBUG=1 mount_fg "$M" "$T/mount6.log" --repo "$R"
ok "sequential read" cmp "$M/$S6/big" "$T/seq/big"
ok "unmount" unmount_fg "$M"
ok "sequential read: chunks prefetched" grep -Eq "chunk cache: .* [1-9][0-9]* prefetched" "$T/mount6.log"
# served to their end, they left the cache at once; prefetched in runs, one fetch each
ok "sequential read: chunks dropped behind the reader" \
	grep -Eq "chunk cache: .* 0 evicted, [1-9][0-9]* dropped behind" "$T/mount6.log"
ok "sequential read: runs of chunks fetched at once" \
	grep -Eq "chunk cache: .* [1-9][0-9]* runs fetched at once" "$T/mount6.log"

# batched lookups: a file whose chunks are half shared with S1's base/1/random
# (older packs) and half new (newer packs), interleaved every 192 KiB, read
# sequentially and at odd offsets: right bytes, and every chunk loaded where
# its batch located it (a wrong batched location is found again: "relocated")
mkdir -p "$T/mix"
python3 - "$T/src/base/1/random" "$T/mix/mix" <<'PY'
import os, sys
old, cs = open(sys.argv[1], "rb").read(), 65536
with open(sys.argv[2], "wb") as f:
    for k in range(0, len(old) // cs - 2, 3):
        f.write(old[k * cs:(k + 3) * cs] + os.urandom(3 * cs - 7))
PY
pgbakfs backup --repo "$R" --from-dir "$T/mix" --no-progress >/dev/null
S5=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
PGBAKFS_DEBUG=1 mount_fg "$M" "$T/mount8.log" --repo "$R"
ok "file of old and new packs reads right" cmp "$M/$S5/mix" "$T/mix/mix"
ok "and at odd offsets" readcheck "$M/$S5/mix" "$T/mix/mix"
ok "unmount" unmount_fg "$M"
ok "its chunks were located in batches, none relocated" \
	grep -Eq "chunk cache: .* [1-9][0-9]* located in batches, 0 relocated" "$T/mount8.log"

# the cache's bound counts whole chunk buffers: 400 files of 8 KiB through a
# 1 MiB cache (16 shards of one 64 KiB buffer) leave at most 16 entries
mkdir -p "$T/small"
python3 -c "import os, sys; [open(f'{sys.argv[1]}/{i}', 'wb').write(os.urandom(8192)) for i in range(400)]" "$T/small"
pgbakfs backup --repo "$R" --from-dir "$T/small" --no-progress >/dev/null
S4=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
PGBAKFS_DEBUG=1 mount_fg "$M" "$T/mount7.log" --repo "$R" --cache-size 1MiB
ok "400 small files read" bash -c "cat '$M/$S4'/* | cmp - <(cat '$T/small'/*)"
ok "unmount" unmount_fg "$M"
ok "small chunks cost a whole buffer: at most 16 cached" python3 - "$T/mount7.log" <<'PY'
import re, sys
m = re.search(r"chunk cache: (\d+) hits, (\d+) misses, \d+ prefetched, (\d+) evicted", open(sys.argv[1]).read())
hits, misses, evicted = map(int, m.groups())
assert misses >= 400 and misses - evicted <= 16, (hits, misses, evicted)
PY

# --owner (root only) and bad input
if [ "$(id -u)" = 0 ]; then
	mount_fg "$M" "$T/mount4.log" --repo "$R" --owner nobody --allow-other
	ok "--owner shows files as that user" test "$(stat -c %U "$M/$S1/base/1/text")" = nobody
	ok "the owner reads through allow_other" runuser -u nobody -- cat "$M/$S1/deep/a/b/c/small" >/dev/null
	ok "unmount" unmount_fg "$M"
fi
expect_error 1 "not a directory" pgbakfs mount "$T/src/empty" --repo "$R"
expect_error 1 "mount point" pgbakfs mount "$T/nonexistent" --repo "$R"
expect_error 1 "not a pgbakfs repository\|no repository\|repository" pgbakfs mount "$M" --repo "$T/src"
expect_error 2 "needs --writable" pgbakfs mount "$M" --repo "$R" --scratch "$T/s"
expect_error 2 "cache-size" pgbakfs mount "$M" --repo "$R" --cache-size 10
finish
