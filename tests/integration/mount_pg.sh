# The mount with a real PostgreSQL 15: pg_verifybackup on the mounted
# live-cluster snapshot; cp -a out of it starts; a writable mount starts,
# recovers, takes writes that survive a restart and a remount with the same
# scratch directory, while another scratch directory is a fresh clone; the
# snapshot itself never changes; a full scratch disk gives ENOSPC, not a crash,
# and every write it accepted fsyncs; names past NAME_MAX give ENAMETOOLONG.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
. "$(dirname "$0")/mnt.sh"
[ "$(id -u)" = 0 ] || { echo "mount_pg needs root (a mount for the postgres user)"; exit 1; }
PORT=54361
R=$T/repo M=$T/mnt M2=$T/mnt2
CONN="host=127.0.0.1 port=$PORT user=postgres"
pg_init "$T/data" $PORT
pg_start "$T/data"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -i -s 2 -q postgres >/dev/null 2>&1
pg_sql $PORT "create table words as select g as id, md5(g::text) as w from generate_series(1, 50000) g"
# frozen: reading it sets no hint bits, so only pages the clone changes are written
pg_sql $PORT "vacuum freeze words"
WORDS=$(pg_sql $PORT "select pg_relation_filepath('words')")
pgbakfs init --repo "$R" >/dev/null
# a write load while the backup runs: the snapshot needs its WAL replayed
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -T 4 -c 2 postgres >/dev/null 2>&1 &
LOAD=$!
pgbakfs backup -d "$CONN" --pgdata "$T/data" --repo "$R" -j 2 --no-progress >/dev/null
wait $LOAD
S=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
pg_stop "$T/data"
pgbakfs restore "$S" "$T/restored" --repo "$R" --no-progress >/dev/null
tree_manifest_noowner "$T/restored" >"$T/before.manifest"

# read-only: pg_verifybackup on the mount; cp -a out of it equals restore and starts
mount_fg "$M" "$T/ro.log" --repo "$R" --owner postgres --allow-other
ok "data directory owned by postgres" test "$(stat -c %U "$M/$S")" = postgres
ok "pg_verifybackup on the mount" as_pg "$PGBIN/pg_verifybackup" -q "$M/$S"
ok "cp -a out of the mount" cp -a "$M/$S/." "$T/copy"
ok "cp -a identical to restore" same_tree_noowner "$T/restored" "$T/copy"
ok "unmount" unmount_fg "$M"
chown -R postgres "$T/copy"
sed -i "s/^port = $PORT/port = $((PORT + 1))/" "$T/copy/postgresql.conf"
pg_start "$T/copy"
ok "copy starts and answers" test "$(pg_sql $((PORT + 1)) "select count(*) from words")" = 50000
pg_stop "$T/copy"

# writable: PostgreSQL starts on the mount itself (fsync on: the clone must honour it)
start_on() { # DIR PORT
	local log="$T/pglog/clone-$2.log"
	at_exit "as_pg '$PGBIN/pg_ctl' -D '$1' -m immediate stop >/dev/null 2>&1"
	as_pg "$PGBIN/pg_ctl" -D "$1" -l "$log" -w -t 120 -o "-p $2 -c fsync=on" start >/dev/null ||
		{ tail -20 "$log" >&2; return 1; }
}
stop_on() { as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w -t 120 stop >/dev/null; }

mount_fg "$M" "$T/rw.log" --repo "$R" --owner postgres --allow-other --writable --scratch "$T/scratch1"
ok "writable mount: PostgreSQL starts and recovers" start_on "$M/$S" $((PORT + 2))
ok "clone answers" test "$(pg_sql $((PORT + 2)) "select count(*) from words")" = 50000
ok "create table and insert 100k rows" pg_sql $((PORT + 2)) "create table t_clone as select g, md5(g::text) from generate_series(1, 100000) g"
ok "update the snapshot's own table" pg_sql $((PORT + 2)) "update words set w = 'x' where id <= 1000"
stat -c %i "$M/$S/$WORDS" >"$T/ino"
ok "checkpoint" pg_sql $((PORT + 2)) "checkpoint"
ok "stop" stop_on "$M/$S"
ok "restart" start_on "$M/$S" $((PORT + 2))
ok "writes survive a restart" test "$(pg_sql $((PORT + 2)) "select count(*) from t_clone")" = 100000
ok "updates survive a restart" test "$(pg_sql $((PORT + 2)) "select count(*) from words where w = 'x'")" = 1000

# a second writable mount of the same snapshot with another scratch directory sees none of it
mount_fg "$M2" "$T/rw2.log" --repo "$R" --owner postgres --allow-other --writable --scratch "$T/scratch2"
ok "second clone starts" start_on "$M2/$S" $((PORT + 3))
ok "second clone does not see the table" test "$(pg_sql $((PORT + 3)) "select count(*) from pg_class where relname = 't_clone'")" = 0
ok "second clone has the original rows" test "$(pg_sql $((PORT + 3)) "select count(*) from words where w = 'x'")" = 0
ok "stop second" stop_on "$M2/$S"
ok "unmount second" unmount_fg "$M2"

ok "stop first" stop_on "$M/$S"
ok "unmount first" unmount_fg "$M"

# the same scratch directory again: the clone's state is back
mount_fg "$M" "$T/rw3.log" --repo "$R" --owner postgres --allow-other --writable --scratch "$T/scratch1"
ok "remounted clone starts" start_on "$M/$S" $((PORT + 2))
ok "remounted clone kept its table" test "$(pg_sql $((PORT + 2)) "select count(*) from t_clone")" = 100000
ok "stop remounted" stop_on "$M/$S"
ok "unmount remounted" unmount_fg "$M"
ok "copy-on-write: the updated table's upper file holds only the chunks written" python3 - "$T/scratch1" "$T/restored/$WORDS" "$T/ino" <<'PY'
import glob, os, sys
scratch, relation, ino_file = sys.argv[1:]
ino = int(open(ino_file).read()) & 0xffffffff
upper = glob.glob(os.path.join(scratch, "*", "upper", str(ino)))
assert len(upper) == 1, upper
used = os.stat(upper[0]).st_blocks * 512
size = os.path.getsize(relation)
print(f"upper {used} of {size} bytes", file=sys.stderr)
assert 0 < used < size / 4, (used, size)
PY

# the repository never changed: the snapshot restores byte-identical to before
ok "check --read-data" pgbakfs check --repo "$R" --read-data >/dev/null
ok "restore again" pgbakfs restore "$S" "$T/restored2" --repo "$R" --no-progress >/dev/null
ok "snapshot unchanged" diff "$T/before.manifest" <(tree_manifest_noowner "$T/restored2")

# a full scratch disk: ENOSPC to the writer, the daemon keeps serving
mkdir -p "$T/small"
mount -t tmpfs -o size=4m tmpfs "$T/small"
at_exit "umount -l '$T/small'"
mount_fg "$M" "$T/rw4.log" --repo "$R" --writable --scratch "$T/small"
ok "ENOSPC on a full scratch disk" bash -c "dd if=/dev/urandom of='$M/$S/big' bs=1M count=16 2>&1 | grep -q 'No space left on device'"
ok "daemon alive after ENOSPC" kill -0 "$MOUNT_PID"
ok "still serves reads" cmp "$M/$S/PG_VERSION" "$T/restored/PG_VERSION"
ok "removing the file frees the space" rm "$M/$S/big"
ok "writes work again" bash -c "echo ok >'$M/$S/after' && test \"\$(cat '$M/$S/after')\" = ok"
# the handlers that create and remove names: mkdir, mknod (a regular file; a FIFO is
# refused: clone.h), rmdir, unlink
ok "mkdir, mknod, rmdir and rm in a clone" python3 - "$M/$S" <<'PY'
import errno, os, stat, sys
d = sys.argv[1]
os.mkdir(os.path.join(d, "newdir"), 0o700)
os.mknod(os.path.join(d, "newfile"), stat.S_IFREG | 0o600)
for name, want in (("newdir", stat.S_IFDIR | 0o700), ("newfile", stat.S_IFREG | 0o600)):
    st = os.stat(os.path.join(d, name))
    assert st.st_mode == want, (name, oct(st.st_mode))
try:
    os.mkfifo(os.path.join(d, "newfifo"), 0o600)
    sys.exit("a FIFO was created")
except OSError as e:
    assert e.errno == errno.EPERM, e
os.rmdir(os.path.join(d, "newdir"))
os.unlink(os.path.join(d, "newfile"))
assert not os.path.exists(os.path.join(d, "newdir")) and not os.path.exists(os.path.join(d, "newfile"))
PY
# names longer than NAME_MAX: ENAMETOOLONG for every call that takes one
LONG=$(printf 'a%.0s' {1..300})
for op in "stat $M/$S/$LONG" "touch $M/$S/$LONG" "mkdir $M/$S/$LONG" "ln -s x $M/$S/$LONG" \
	"ln $M/$S/after $M/$S/$LONG" "mv $M/$S/after $M/$S/$LONG" "rm $M/$S/$LONG" "rmdir $M/$S/$LONG" \
	"stat $M/$S/global/$LONG"; do
	ok "ENAMETOOLONG: ${op//$LONG/<300 bytes>}" bash -c "$op 2>&1 | grep -q 'File name too long'"
done
# a full disk again: each write it accepted must fsync, and so must the directory
ok "writes accepted on a full scratch disk fsync and read back" python3 - "$M/$S" "$WORDS" <<'PY'
import errno, os, sys
d, words = sys.argv[1:]
# a copy-up of a snapshot file made while there is room, flushed only after the disk is full
w = os.open(os.path.join(d, words), os.O_RDWR)
assert os.pwrite(w, b"copied-up", 100) == 9
f = os.open(os.path.join(d, "fill"), os.O_RDWR | os.O_CREAT, 0o600)
written = bytearray()
# smaller and smaller writes, until not even a page is left
for size in (65536, 4096, 100):
    while True:
        block = os.urandom(size)
        try:
            n = os.write(f, block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            break
        written += block[:n]
assert len(written) > 0
# the directory first: its fsync answers for its entries, not for the files' pending data
dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
os.fsync(dfd)
os.close(dfd)
os.fsync(f)
os.fsync(w)
assert os.pread(f, len(written) + 10, 0) == bytes(written)
assert os.pread(w, 9, 100) == b"copied-up"
os.close(f)
os.close(w)
print(f"{len(written)} bytes written and synced", file=sys.stderr)
PY
ok "removing it frees the space" rm "$M/$S/fill"
ok "unmount" unmount_fg "$M"
finish
