# The operator's daily loop with a real PostgreSQL 15: WAL archived with
# wal-push; point-in-time recovery by restore --target-time and through a
# writable mount with a target; verify passes on a good snapshot and fails
# (exit 1, recorded) on a damaged one; dump of one table equals pg_dump of it at
# backup time; restore --delta onto a diverged copy ends identical to a fresh
# restore and writes far fewer bytes, also when bytes changed under the
# snapshot's size and mtime, for chunks without a recorded fast hash
# (SHA-256), pages changed across a large file's reads with -j 3, and files
# shrunk, grown or with a wrong mode; restore refuses a running server.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
. "$(dirname "$0")/mnt.sh"
[ "$(id -u)" = 0 ] || { echo "daily needs root (mounts for the postgres user)"; exit 1; }
PORT=54391
R=$T/repo M=$T/mnt
CONN="host=127.0.0.1 port=$PORT user=postgres"
pgbakfs init --repo "$R" >/dev/null
pg_own "$R" # the server's archive_command writes WAL into it
pg_init "$T/data" $PORT
cat >>"$T/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = '$PGBAKFS wal-push %p --repo $R'
CONF
pg_start "$T/data"
pg_sql $PORT "create table orders as select g as id, md5(g::text) as item from generate_series(1, 20000) g"
pg_sql $PORT "create table events(id serial, at timestamptz default clock_timestamp(), batch int)"
pg_sql $PORT "create index on orders(item)"
as_pg "$PGBIN/pg_dump" -h 127.0.0.1 -p $PORT -U postgres -t public.orders postgres | grep -v '^\\\(un\)\?restrict' >"$T/orders.source.sql"
# root's backup beside the archiver (postgres), with no chown after: what root makes is postgres's
ok "backup" pgbakfs backup -d "$CONN" --pgdata "$T/data" --repo "$R" --no-progress >/dev/null
S=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')

# rows at known times, WAL archived
pg_two_batches $PORT
ok "WAL archived through wal-push" wait_for 60 pg_archived $PORT "$LAST" "failed_count = 0"


# point in time: restore --target-time between the batches
ok "restore to a point in time" pgbakfs restore "$S" "$T/pitr" --repo "$R" --target-time "$MID" --target-action promote --no-progress >/dev/null
ok "recovery.signal written" test -f "$T/pitr/recovery.signal"
ok "restore_command is wal-fetch" grep -q "wal-fetch %f %p" "$T/pitr/postgresql.auto.conf"
chown -R postgres "$T/pitr"
sed -i "s/^port = $PORT/port = $((PORT + 1))/; s/^archive_mode = on/archive_mode = off/" "$T/pitr/postgresql.conf"
pg_start "$T/pitr" # restore_command (wal-fetch) runs as the server's user
ok "PITR: only the first batch" wait_for 60 pg_batches_are $((PORT + 1)) "100,0" || tail -20 "$T/pglog/pitr.log" >&2
pg_stop "$T/pitr" || tail -20 "$T/pglog/pitr.log" >&2

# the same point in time through a writable mount, without restoring anything
mount_fg "$M" "$T/mount.log" --repo "$R" --writable --scratch "$T/scratch" --owner postgres --allow-other --target-time "$MID" --target-action promote
ok "clone starts at the target" as_pg "$PGBIN/pg_ctl" -D "$M/$S" -l "$T/pglog/clone.log" -o "-p $((PORT + 2)) -c archive_mode=off" -w -t 120 start >/dev/null
at_exit "as_pg '$PGBIN/pg_ctl' -D '$M/$S' -m immediate stop >/dev/null 2>&1"
ok "mount PITR: only the first batch" wait_for 60 pg_batches_are $((PORT + 2)) "100,0"
as_pg "$PGBIN/pg_ctl" -D "$M/$S" -m fast -w stop >/dev/null
ok "unmount" unmount_fg "$M"

# verify: passes, recorded (its clone under $T/vtmp: other tests run verify at the same time)
mkdir -p "$T/vtmp" && chmod 755 "$T/vtmp"
ok "verify passes" env TMPDIR="$T/vtmp" "$PGBAKFS" verify "$S" --repo "$R" >"$T/verify.out"
ok "verify says ok" grep -q "verified snapshot \"$S\": startup: ok; amcheck: ok" "$T/verify.out"
ok "verify recorded in list --json" python3 -c "
import json, subprocess, sys
s = [x for x in json.loads(subprocess.check_output(['$PGBAKFS', 'list', '--repo', '$R', '--json'])) if x['id'] == '$S'][0]
assert s['verified'] and s['verified']['ok'] is True, s['verified']"
ok "status: last backup, verify ok, WAL continuous from it" python3 -c "
import json, subprocess
st = json.loads(subprocess.check_output(['$PGBAKFS', 'status', '--repo', '$R', '--json']))
i = [x for x in st['instances'] if x['instance'] == 'main'][0]
assert i['last_backup']['name'] == '$S' and i['last_verify']['ok'] is True, i
assert i['wal']['continuous'] is True and i['wal']['last_segment'], i['wal']
assert i['last_failure'] is None and i['failures_since_success'] == 0, i"
ok "metrics: verify and WAL" sh -c '"$PGBAKFS" metrics --repo "$1" >"$2" && grep -qx "pgbakfs_verify_last_success{instance=\"main\"} 1" "$2" && grep -qx "pgbakfs_wal_continuous{instance=\"main\"} 1" "$2"' _ "$R" "$T/metrics"
ok "verify leaves no mount and no server" bash -c "! grep -q '$T/vtm[p]' /proc/mounts && ! pgrep -f '$T/vtm[p]' >/dev/null"
# (and that is where its clone lives: the check above looks in the right place)
ok "verify's clone lives under TMPDIR" bash -c "TMPDIR='$T/vtmp' '$PGBAKFS' verify '$S' --repo '$R' --keep-scratch 2>&1 >/dev/null | grep -q 'kept in \"$T/vtmp/'"

# dump of one table equals pg_dump of it at backup time
ok "dump one table" bash -c "'$PGBAKFS' dump '$S' --repo '$R' -- -t public.orders postgres >'$T/orders.dump.sql'"
ok "dump equals the source's pg_dump at backup time" diff <(grep -v '^\\\(un\)\?restrict' "$T/orders.dump.sql") "$T/orders.source.sql"

# restore --delta onto a diverged copy: identical to a fresh restore, far fewer bytes written
pgbakfs restore "$S" "$T/fresh" --repo "$R" --no-progress >/dev/null
pgbakfs restore "$S" "$T/diverged" --repo "$R" --no-progress >/dev/null
chown -R postgres "$T/diverged"
sed -i "s/^port = $PORT/port = $((PORT + 3))/; s/^archive_mode = on/archive_mode = off/" "$T/diverged/postgresql.conf"
pg_start "$T/diverged"
pg_sql $((PORT + 3)) "insert into events(batch) select 9 from generate_series(1, 1000); create table stray as select 1 as x; update orders set item = 'x' where id < 50"
expect_error 1 "PostgreSQL is running" pgbakfs restore "$S" "$T/diverged" --delta --repo "$R" --no-progress
pg_stop "$T/diverged"
ok "restore --delta" python3 - "$PGBAKFS" "$S" "$T/diverged" "$R" "$T/delta.bytes" <<'PY'
import os, sys
exe, snap, target, repo, out = sys.argv[1:]
pid = os.fork()
if pid == 0:
    os.execv(exe, [exe, "restore", snap, target, "--delta", "--repo", repo, "--no-progress"])
_, status, ru = os.wait4(pid, 0)
open(out, "w").write(str(ru.ru_oublock * 512))
sys.exit(os.waitstatus_to_exitcode(status))
PY
ok "delta result identical to a fresh restore" same_tree "$T/fresh" "$T/diverged"
TOTAL=$(du -sb "$T/fresh" | cut -f1)
ok "delta wrote far fewer bytes ($(cat "$T/delta.bytes") of $TOTAL)" test "$(cat "$T/delta.bytes")" -lt $((TOTAL / 4))
ok "restore into a non-empty directory without --delta still refused" bash -c "! '$PGBAKFS' restore '$S' '$T/diverged' --repo '$R' 2>/dev/null"

# no silent skip: bytes changed with size and mtime put back (touch -d) are rewritten
ORDERS=$(pg_sql $PORT "select pg_relation_filepath('orders')")
change_keep_mtime "$T/diverged/$ORDERS" 70000
pgbakfs restore "$S" "$T/diverged" --delta --repo "$R" --no-progress >"$T/delta2.out"
ok "delta rewrites bytes changed under the snapshot's size and mtime" same_tree "$T/fresh" "$T/diverged"
ok "only the changed 4 KiB page was written" grep -q "^delta: 4.0 KiB rewritten" "$T/delta2.out" || cat "$T/delta2.out" >&2
# chunks without a recorded fast hash (older backups, a rebuilt catalog): SHA-256, still correct
cp -a "$R" "$T/repo-nofh"
# half of them: a file's chunk list mixes looked-up fh values and SHA-256 checks
sqlite3 "$T/repo-nofh/catalog.db" "update chunks set fh = null where rowid % 2 = 0"
change_keep_mtime "$T/diverged/$ORDERS" 9000
pgbakfs restore "$S" "$T/diverged" --delta --repo "$T/repo-nofh" --no-progress >"$T/delta3.out"
ok "delta over chunks without fh rewrites the changed bytes" same_tree "$T/fresh" "$T/diverged"
ok "and says they were checked by SHA-256" grep -q "checked by SHA-256" "$T/delta3.out" || cat "$T/delta3.out" >&2
# pages changed across the 1 MiB reads of a 16 MiB WAL segment, -j 3: only those pages
# written; a file whose bytes, mode, owner and mtime are right is left alone (its ctime stays)
WALSEG=$(cd "$T/diverged/pg_wal" && ls -S | grep -m1 '^[0-9A-F]\{24\}$')
# one byte in four of its 1 MiB reads: a page written where the chunk has data, the whole
# 64 KiB punched again where the snapshot has a hole (all zero); EXPECT: what that writes
read -r EXPECT OFFS < <(python3 - "$T/diverged/pg_wal/$WALSEG" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
offs = [m << 20 for m in (0, 5, 10, 15)]
n = sum(4096 if any(data[o:o + 65536]) else 65536 for o in offs)
print("%.1f" % (n / 1024), " ".join(str(o + 5000) for o in offs))
PY
)
for off in $OFFS; do change_keep_mtime "$T/diverged/pg_wal/$WALSEG" $off; done
ctime_ns() { python3 -c 'import os, sys; print(os.stat(sys.argv[1]).st_ctime_ns)' "$1"; }
CT=$(ctime_ns "$T/diverged/PG_VERSION")
pgbakfs restore "$S" "$T/diverged" --delta -j 3 --repo "$R" --no-progress >"$T/delta4.out"
ok "delta rewrites pages changed across a large file's reads" same_tree "$T/fresh" "$T/diverged"
ok "only the changed pages and holes were written ($EXPECT KiB)" grep -q "^delta: $EXPECT KiB rewritten" "$T/delta4.out" || cat "$T/delta4.out" >&2
ok "an unchanged file's inode is not rewritten" test "$(ctime_ns "$T/diverged/PG_VERSION")" = "$CT"
# a file shrunk, one grown, one with a wrong mode only
truncate -s 100000 "$T/diverged/$ORDERS"
head -c 70000 /dev/urandom >>"$T/diverged/pg_wal/$WALSEG"
chmod 0604 "$T/diverged/PG_VERSION"
pgbakfs restore "$S" "$T/diverged" --delta -j 3 --repo "$R" --no-progress >"$T/delta5.out"
ok "delta restores shrunk and grown files and a mode" same_tree "$T/fresh" "$T/diverged"

# verify fails on a damaged snapshot: exit 1, named, recorded
R2=$T/repo2
pgbakfs init --repo "$R2" --pack-size 1M >/dev/null
pgbakfs backup -d "$CONN" --pgdata "$T/data" --repo "$R2" --no-progress >/dev/null
S2=$(pgbakfs list --repo "$R2" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
python3 - "$R2" <<'PY'
import glob, os, sys
# damage the middle of every pack: some relation, catalog or WAL chunk is hit
for p in glob.glob(os.path.join(sys.argv[1], "packs", "*", "*.pack")):
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0xff]))
PY
rc=0; pgbakfs verify "$S2" --repo "$R2" >/dev/null 2>"$T/verify2.err" || rc=$?
ok "verify of a damaged snapshot exits 1" test "$rc" = 1
ok "one error line naming the failing check" bash -c "[ \$(grep -c '^pgbakfs: error:' '$T/verify2.err') = 1 ] && grep -Eq 'failed: (startup|amcheck)' '$T/verify2.err'"
ok "failure recorded" python3 -c "
import json, subprocess
s = json.loads(subprocess.check_output(['$PGBAKFS', 'show', '$S2', '--repo', '$R2', '--json']))
assert s['verified'] and s['verified']['ok'] is False, s['verified']"

ok "metrics: the failed verify" sh -c '"$PGBAKFS" metrics --repo "$1" | grep -qx "pgbakfs_verify_last_success{instance=\"main\"} 0"' _ "$R2"

# bad input
expect_error 2 "invalid --target-lsn" pgbakfs restore "$S" "$T/x" --repo "$R" --target-lsn nonsense
expect_error 2 "only one recovery target" pgbakfs restore "$S" "$T/x" --repo "$R" --target-xid 5 --target-name a
expect_error 2 "needs a recovery target" pgbakfs restore "$S" "$T/x" --repo "$R" --target-action promote
expect_error 2 "needs --writable" pgbakfs mount "$M" --repo "$R" --target-name a
finish
