# A repository in S3-compatible storage (s3rver on 127.0.0.1), every command:
# init, backup (directory tree and live PostgreSQL 15), list, show, restore,
# mount, verify, dump, wal-push/wal-fetch with point-in-time recovery, expire,
# gc, check; a second machine with an empty cache opens the repository from
# the bucket alone; two concurrent backups from two machines both land; the
# writer lock waits, times out with one clear error, and takes over an expired
# lease; a backup through a fault-injecting proxy completes or fails cleanly
# and the repository passes check --read-data afterwards; a restore fetches
# each stored byte once, a GET per window of a pack, and through faults on
# those windows gives exact bytes or one clear error; a cold mount's random
# read fetches one chunk; an idle mount polls at --poll-interval (0: never);
# no output holds the secret key or session token.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
. "$(dirname "$0")/mnt.sh"
. "$(dirname "$0")/s3lib.sh"
[ "$(id -u)" = 0 ] || { echo "s3 needs root (mounts, and PostgreSQL as postgres)"; exit 1; }
s3_start
PORT=54381
R=s3://$S3_BUCKET/team/repo
CONN="host=127.0.0.1 port=$PORT user=postgres"
export PGBAKFS_REPO=$R XDG_CACHE_HOME=$T/cacheA
O=$T/out # every output of pgbakfs, for the secret check at the end
mkdir -p "$O"
run() { # run NAME ARGS...: pgbakfs with stdout and stderr kept in $O/NAME.{out,err}
	local name=$1; shift
	"$PGBAKFS" "$@" >"$O/$name.out" 2>"$O/$name.err"
}
n_snapshots() { "$PGBAKFS" list --json "$@" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
last_id() { "$PGBAKFS" list --json "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])'; }

# ---- init, backup, restore ----
ok "init in a bucket" run init init
ok "init names the URL" grep -q "created repository \"$R\"" "$O/init.out"
expect_error 1 "already exists" pgbakfs init
expect_error 1 "not empty" pgbakfs init --repo "s3://$S3_BUCKET/team"
expect_error 2 "invalid S3 repository" pgbakfs list --repo s3://x
expect_error 1 "no S3 credentials" env -u AWS_SECRET_ACCESS_KEY "$PGBAKFS" list
has_key() { s3_keys "$1" | grep -x "$2" >/dev/null; } # all of it read: no SIGPIPE for pipefail
ok "config in the bucket" has_key team/repo/ team/repo/config
ok "catalog generation 1 in the bucket" has_key team/repo/catalog/ 'team/repo/catalog/0*1'
make_tree "$T/src"
ok "backup of a tree" run bk1 backup --from-dir "$T/src" --label tree
S1=$(last_id)
ok "packs are in the bucket" test "$(s3_keys team/repo/packs/ | wc -l)" -ge 1
ok "catalog generation 2 published" has_key team/repo/catalog/ 'team/repo/catalog/0*2'
ok "restore" run rs1 restore "$S1" "$T/r1" -j 2
ok "restored tree is identical" same_tree "$T/src" "$T/r1"
ok "show" run show1 show "$S1" --json

# settings from a 0600 config file instead of the environment
printf 's3_endpoint = %s\naws_access_key_id = S3RVER\naws_secret_access_key = %s\n' "$S3_DIRECT" "$S3_SECRET" >"$T/pgbakfs.conf"
chmod 644 "$T/pgbakfs.conf"
noenv() { env -u PGBAKFS_S3_ENDPOINT -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN "$PGBAKFS" "$@"; }
expect_error 2 "holds a secret (aws-secret-access-key) and is readable by others" noenv list --config "$T/pgbakfs.conf"
chmod 600 "$T/pgbakfs.conf"
ok "S3 settings from a 0600 config file" bash -c "env -u PGBAKFS_S3_ENDPOINT -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN '$PGBAKFS' list --config '$T/pgbakfs.conf' >'$O/conf.out' 2>'$O/conf.err'"
ok "and it lists the snapshot" grep -q "$S1" "$O/conf.out"
printf 'no such setting = 1\n' >>"$T/pgbakfs.conf"
expect_error 2 'line 4: expected "key = value" or "\[instance\]"' noenv list --config "$T/pgbakfs.conf"

# another machine: an empty cache opens the repository from the bucket alone
ok "empty cache lists the snapshot" test "$(n_snapshots --cache-dir "$T/cacheB")" = 1
ok "empty cache restores" run rs2 restore "$S1" "$T/r2" --cache-dir "$T/cacheB"
ok "restored identical from the other cache" same_tree "$T/src" "$T/r2"

# ---- live PostgreSQL: WAL archived into the bucket, backup, PITR ----
mkdir -p "$T/pgcache" && chown postgres "$T/pgcache"
pg_init "$T/data" $PORT
cat >>"$T/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = '"$PGBAKFS" wal-push %p --cache-dir "$T/pgcache"'
CONF
pg_start "$T/data"
pg_sql $PORT "create table orders as select g as id, md5(g::text) as item from generate_series(1, 20000) g"
pg_sql $PORT "create table events(id serial, batch int)"
as_pg "$PGBIN/pg_dump" -h 127.0.0.1 -p $PORT -U postgres -t public.orders postgres | grep -v '^\\\(un\)\?restrict' >"$T/orders.source.sql"
ok "live backup into the bucket" run bk2 backup -d "$CONN" --no-progress
S2=$(last_id)
pg_sql $PORT "insert into events(batch) select 1 from generate_series(1, 100)"
ok "restore-point" run rp restore-point after1 -d "$CONN"
pg_sql $PORT "insert into events(batch) select 2 from generate_series(1, 100)"
pg_sql $PORT "select pg_switch_wal()" >/dev/null
pg_sql $PORT "insert into events(batch) select 3 from generate_series(1, 1)"
LAST=$(pg_sql $PORT "select pg_walfile_name(pg_switch_wal())")
archived() { test "$(pg_sql $PORT "select last_archived_wal >= '$1' and failed_count = 0 from pg_stat_archiver")" = t; }
ok "WAL archived into the bucket" wait_for 60 archived "$LAST"
ok "WAL objects in the bucket" test "$(s3_keys team/repo/wal/ | wc -l)" -ge 2
ok "wal-fetch of an archived segment" run wf wal-fetch "$LAST" "$T/seg"
ok "fetched segment is 16 MiB" test "$(stat -c %s "$T/seg")" = 16777216
rc=0; "$PGBAKFS" wal-fetch 0000000100000000000000FF "$T/none" >"$O/wf2.out" 2>"$O/wf2.err" || rc=$?
ok "wal-fetch of a missing segment: exit 1, quiet" test "$rc" = 1 -a ! -s "$O/wf2.err" -a ! -e "$T/none"

# restore_command runs as postgres with the server's environment: a cache it owns,
# given to restore, which passes it on
ok "PITR restore from the bucket" run rs3 restore "$S2" "$T/pitr" --target-name after1 --target-action promote --no-progress --cache-dir "$T/pgcache"
chown -R postgres "$T/pitr" "$T/pgcache"
sed -i "s/^port = $PORT/port = $((PORT + 1))/; s/^archive_mode = on/archive_mode = off/" "$T/pitr/postgresql.conf"
ok "restore_command names the bucket" grep -q "wal-fetch.*$R" "$T/pitr/postgresql.auto.conf"
ok "restore_command carries the cache directory" grep -qF -- "--cache-dir ''$T/pgcache''" "$T/pitr/postgresql.auto.conf"
ok "restore_command prefetches from the bucket" grep -qF -- "--prefetch 8" "$T/pitr/postgresql.auto.conf"
pg_start "$T/pitr"
batches() { test "$(pg_sql $((PORT + 1)) "select count(*) filter (where batch = 1) || ',' || count(*) filter (where batch = 2) from events" 2>/dev/null)" = "$1"; }
ok "PITR through WAL from the bucket: batch 1 only" wait_for 60 batches "100,0"
ok "recovery's wal-fetch used its spool" test -d "$T/pgcache/wal-spool"
pg_stop "$T/pitr" || tail -20 "$T/pglog/pitr.log" >&2

# ---- verify and dump read the bucket through a clone ----
ok "verify" run verify verify "$S2"
ok "verify passed" grep -q "startup: ok" "$O/verify.out"
ok "verify result published" bash -c "'$PGBAKFS' show '$S2' --json --cache-dir '$T/cacheB' | grep -q '\"ok\": *true'"
ok "dump one table" bash -c "'$PGBAKFS' dump '$S2' -- -t public.orders postgres 2>'$O/dump.err' | grep -v '^\\\\\\(un\\)\\?restrict' >'$T/orders.dump.sql'"
ok "dump equals pg_dump at backup time" diff -q "$T/orders.source.sql" "$T/orders.dump.sql"

# ---- mount: chunk reads by range ----
M=$T/mnt
mount_fg "$M" "$O/mount.log" --cache-dir "$T/cacheM" --disk-cache 16M
ok "mount shows both snapshots" test -d "$M/$S1" -a -d "$M/$S2"
ok "cp -a out of the mount equals the source" bash -c "cp -a '$M/$S1' '$T/cp1' && true"
ok "copied tree identical" same_tree_noowner "$T/src" "$T/cp1"
disk_cache_bytes() { find "$T/cacheM" -path '*/chunks/*' -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
ok "chunk ranges kept in the disk cache" test "$(disk_cache_bytes)" -gt 0
ok "the disk cache stays within --disk-cache" test "$(disk_cache_bytes)" -le $((16 * 1024 * 1024))
ok "PG_VERSION readable" grep -qx 15 "$M/$S2/PG_VERSION"
# another machine publishes a snapshot: the mount picks up the new generation
ok "backup from another machine while mounted" run bk3 backup --from-dir "$T/src" --label other --cache-dir "$T/cacheB"
S3ID=$(last_id --cache-dir "$T/cacheB")
ok "the mount shows it within 30 s" wait_for 30 test -d "$M/$S3ID"
ok "unmount" unmount_fg "$M"

# ---- concurrent writers: two machines back up at once, both land ----
head -c 5000000 /dev/urandom >"$T/src/extra1"
"$PGBAKFS" backup --from-dir "$T/src" --label a --cache-dir "$T/cacheA" >"$O/ca.out" 2>"$O/ca.err" &
PA=$!
"$PGBAKFS" backup --from-dir "$T/src" --label b --cache-dir "$T/cacheB" >"$O/cb.out" 2>"$O/cb.err" &
PB=$!
rca=0; rcb=0; wait $PA || rca=$?; wait $PB || rcb=$?
ok "both concurrent backups succeed" test "$rca$rcb" = 00 || cat "$O/ca.err" "$O/cb.err" >&2
ok "both are in the catalog" test "$("$PGBAKFS" list --json --cache-dir "$T/cacheC" | python3 -c 'import json,sys; print(sorted(s["label"] for s in json.load(sys.stdin) if s["label"] in ("a","b")))')" = "['a', 'b']"
ok "no writer lock left" test -z "$(s3_keys team/repo/locks/)"

# ---- the writer lock: live holder, timeout, expired lease ----
printf '# pgbakfs writer lock\nowner = feedface\nhost = otherhost\npid = 4242\nexpires = %s\n' $(($(date +%s) + 600)) >"$T/lock"
s3_put team/repo/locks/feedface "$T/lock"
expect_error 1 "busy: another writer (otherhost pid 4242)" env PGBAKFS_LOCK_WAIT=1 "$PGBAKFS" delete "$S1"
ok "readers are not blocked by the lock" test "$(n_snapshots)" -ge 4
printf '# pgbakfs writer lock\nowner = feedface\nhost = otherhost\npid = 4242\nexpires = %s\n' $(($(date +%s) - 10)) >"$T/lock"
s3_put team/repo/locks/feedface "$T/lock"
ok "an expired lease is taken over" run pin pin "$S1" --note "kept"
ok "the expired lock object is gone" test -z "$(s3_keys team/repo/locks/)"

# ---- faults between pgbakfs and the bucket ----
via_proxy() { env PGBAKFS_S3_ENDPOINT="$S3_PROXY" "$PGBAKFS" "$@"; }
head -c 8000000 /dev/urandom >"$T/src/extra2"
n0=$(n_snapshots)
c0=$(proxy_count)
proxy_plan "drop,500,pass,503,429,pass,cut,pass,drop,pass,500,pass,pass,503"
ok "backup through drops, 5xx, 429 and cut bodies completes" bash -c "env PGBAKFS_S3_ENDPOINT='$S3_PROXY' '$PGBAKFS' backup --from-dir '$T/src' --label faults >'$O/bkf.out' 2>'$O/bkf.err'"
ok "faults were really injected" test "$(($(proxy_count) - c0))" -gt 14
SF=$(last_id)
ok "restore through faults" bash -c "proxy_plan() { curl -fsS '$S3_PROXY/__fault?plan='\$1 >/dev/null; }; proxy_plan cut,drop,500,pass,503 && env PGBAKFS_S3_ENDPOINT='$S3_PROXY' '$PGBAKFS' restore '$SF' '$T/rf' -j 2 >'$O/rsf.out' 2>'$O/rsf.err'"
ok "restored identical after faults" same_tree "$T/src" "$T/rf"

# ---- restore's windows: every stored byte fetched once, a GET per window of a pack ----
# 48 files of 256 KiB (random: stored as they are) in 4 MiB packs, restored
# by two workers: per-chunk GETs would be 192, windows read ahead by each
# worker fetched the packs twice
RW=s3://$S3_BUCKET/team/windows
mkdir -p "$T/srcW"
for i in $(seq 1 48); do head -c 262144 /dev/urandom >"$T/srcW/f$i"; done
ok "init a repository of 4 MiB packs" run initw init --repo "$RW" --pack-size 4M --cache-dir "$T/cacheW"
ok "backup into it" run bkw backup --from-dir "$T/srcW" --repo "$RW" --cache-dir "$T/cacheW"
s3_bytes() { curl -fsS "$S3_DIRECT/$S3_BUCKET/?list-type=2&prefix=$1" | grep -o '<Size>[0-9]*</Size>' | tr -dc '0-9\n' | awk '{ s += $1 } END { print s + 0 }'; }
stored=$(s3_bytes team/windows/packs/)
gets() { curl -fsS "$S3_PROXY/__gets$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
gets '?reset=1' gets >/dev/null
runp() { local name=$1; shift; PGBAKFS_S3_ENDPOINT=$S3_PROXY run "$name" "$@"; }
ok "restore -j 2 through the proxy" runp rsw restore latest "$T/rw" --repo "$RW" --cache-dir "$T/cacheW" -j 2
ok "identical" same_tree "$T/srcW" "$T/rw"
n=$(gets '' gets) b=$(gets '' bytes)
ok "at most 2 GETs per 8 MiB stored, and 6 more ($n for $stored bytes)" test "$n" -le $((2 * (stored / 8388608 + 1) + 6))
ok "each stored byte fetched once ($b for $stored)" test "$b" -le $((stored + stored / 8 + 65536))
# faults on the packs' windows while two workers restore: exact bytes, or one clear error
pack_faults() { curl -fsS "$S3_PROXY/__fault?$1&only=/packs/" >/dev/null; }
pack_faults "plan=flip,cut,500,429,drop,pass,503"
ok "restore through faults on the windows" runp rswf restore latest "$T/rwf" --repo "$RW" --cache-dir "$T/cacheW" -j 2
ok "identical after the faults" same_tree "$T/srcW" "$T/rwf"
# restore --delta from the bucket compares the bytes in place, read from the target:
# a zero page and a zero chunk in the snapshot, other bytes in the target
{ head -c 61440 /dev/urandom; head -c 69632 /dev/zero; head -c 65536 /dev/urandom; } >"$T/srcW/fz"
ok "a file with a zero page and a zero chunk, backed up" run bkwz backup --from-dir "$T/srcW" --repo "$RW" --cache-dir "$T/cacheW"
cp -a "$T/rw" "$T/rwdelta"
head -c 196608 /dev/urandom >"$T/rwdelta/fz"
flip_byte "$T/rwdelta/f3" 1000
ok "restore --delta from the bucket" run rswdelta restore latest "$T/rwdelta" --repo "$RW" --cache-dir "$T/cacheW" -j 2 --delta
ok "identical after the delta" same_tree "$T/srcW" "$T/rwdelta"
pack_faults "always=flip"
rc=0; via_proxy restore latest "$T/rwd" --repo "$RW" --cache-dir "$T/cacheW" -j 2 >"$O/rwd.out" 2>"$O/rwd.err" || rc=$?
ok "every window damaged on the way: exit 1" test "$rc" = 1
ok "with one error line naming the damage" test "$(grep -c '^pgbakfs: error:.*damaged' "$O/rwd.err")" = 1 || cat "$O/rwd.err" >&2
proxy_plan pass

# ---- a cold mount reads only the chunks a random read needs; an idle mount polls at its interval ----
MW=$T/mntw
PGBAKFS_S3_ENDPOINT=$S3_PROXY mount_fg "$MW" "$O/mountw.log" --repo "$RW" --cache-dir "$T/cacheWM" --poll-interval 1
ok "the cold mount lists the snapshot" test -f "$MW/latest/f20"
gets '?reset=1' gets >/dev/null
ok "an 8 KiB read in the middle of a file" dd if="$MW/latest/f20" of="$T/piece" bs=8192 skip=13 count=1 status=none
ok "equals the source's bytes" cmp "$T/piece" <(dd if="$T/srcW/f20" bs=8192 skip=13 count=1 status=none)
b=$(gets '' bytes)
ok "fetching at most 256 KiB of $stored bytes stored ($b)" test "$b" -le 262144
c0=$(proxy_count); sleep 3; c1=$(proxy_count)
ok "--poll-interval 1: the idle mount looks at the bucket every second ($((c1 - c0)) in 3 s)" test $((c1 - c0)) -ge 2 -a $((c1 - c0)) -le 6
ok "unmount" unmount_fg "$MW"
printf 'poll-interval = 0\n' >"$T/poll.conf"
PGBAKFS_S3_ENDPOINT=$S3_PROXY mount_fg "$MW" "$O/mountw0.log" --repo "$RW" --cache-dir "$T/cacheWM" --config "$T/poll.conf"
ok "the mount with poll-interval = 0 (config file) lists the snapshot" test -f "$MW/latest/f20"
sleep 1; c0=$(proxy_count); sleep 3; c1=$(proxy_count)
ok "and makes no request while idle ($((c1 - c0)) in 3 s)" test "$c1" = "$c0"
ok "unmount" unmount_fg "$MW"
expect_error 2 'invalid poll interval "x"' pgbakfs mount "$MW" --poll-interval x
# a sequential reader of a cold mount gets read-ahead in few requests: a 32 MiB file of
# compressible pages backed up by two workers (its chunks nearly in order in the pack,
# neighbours swapped), read through a read-only mount and through a writable mount's
# clone (whose lower reads stream too): 9 and 10-11 GETs here, 191 and 512 before (runs of
# strictly adjacent chunks, prefetches dropped as stale, no read-ahead for a clone)
RS=s3://$S3_BUCKET/team/stream
mkdir -p "$T/srcS"
python3 -c '
import sys
with open(sys.argv[1], "wb") as f:
    for p in range(4096):
        f.write((p.to_bytes(8, "little") + b"pgbakfs stream page " * 409)[:8192])' "$T/srcS/big"
ok "a repository with a 32 MiB file" run inits init --repo "$RS" --cache-dir "$T/cacheS"
ok "backed up by two workers" run bks backup --from-dir "$T/srcS" --repo "$RS" --cache-dir "$T/cacheS" -j 2
for how in read-only writable; do
	extra=(); [ $how = writable ] && extra=(--writable --scratch "$T/scratchS")
	rm -rf "$T/cacheSM" "$T/scratchS"
	PGBAKFS_S3_ENDPOINT=$S3_PROXY mount_fg "$MW" "$O/mounts.log" --repo "$RS" --cache-dir "$T/cacheSM" --poll-interval 0 "${extra[@]}"
	S=$(basename "$(readlink -f "$MW/latest")")
	gets '?reset=1' gets >/dev/null
	ok "$how cold mount: a sequential read of the file" cmp "$MW/$S/big" "$T/srcS/big"
	n=$(gets '' gets)
	ok "... in at most 64 GETs ($n)" test "$n" -le 64
	ok "unmount" unmount_fg "$MW"
done
# two readers of a stream interleaved, as the threads serving the kernel's requests and its
# read-ahead can be: a clone reads chunk by chunk, and each read starts where the one before
# the last ended (2,0,3,1, 6,4,7,5, ...), never where the last did; read-ahead still
# starts (11 GETs here; 512, every chunk alone, when only the last read's end counted)
rm -rf "$T/cacheSM" "$T/scratchS"
PGBAKFS_S3_ENDPOINT=$S3_PROXY mount_fg "$MW" "$O/mounti.log" --repo "$RS" --cache-dir "$T/cacheSM" --poll-interval 0 --writable --scratch "$T/scratchS"
S=$(basename "$(readlink -f "$MW/latest")")
gets '?reset=1' gets >/dev/null
ok "interleaved direct reads of the clone's chunks" python3 - "$MW/$S/big" "$T/srcS/big" <<'PY'
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)  # one request per read, as issued
src = open(sys.argv[2], "rb").read()
buf = mmap.mmap(-1, 65536)  # aligned for O_DIRECT
n_chunks = (len(src) + 65535) // 65536
for q in range(0, n_chunks, 4):
    for c in (c for c in (q + 2, q, q + 3, q + 1) if c < n_chunks):
        want = src[c * 65536:(c + 1) * 65536]
        assert os.preadv(fd, [buf], c * 65536) == len(want) and buf[:len(want)] == want, c
PY
n=$(gets '' gets)
ok "... in at most 64 GETs ($n)" test "$n" -le 64
ok "unmount" unmount_fg "$MW"
# the store fails for good in the middle of a backup: a clean failure
cp -a "$T/src" "$T/srcF"
head -c 8000000 /dev/urandom >"$T/src/extra3"
proxy_plan "pass,pass,pass,pass,pass,pass,pass,pass,pass,pass$(printf ',500%.0s' $(seq 1 60))"
rc=0; via_proxy backup --from-dir "$T/src" --label doomed >"$O/bkd.out" 2>"$O/bkd.err" || rc=$?
ok "a backup against a failing store exits 1" test "$rc" = 1 || cat "$O/bkd.err" >&2
ok "with one error line" test "$(grep -c '^pgbakfs: error:' "$O/bkd.err")" = 1 || cat "$O/bkd.err" >&2
proxy_plan pass
ok "the failed backup is not listed" test "$(n_snapshots)" = $((n0 + 1))
# a store failing for good refuses the lock's release too: the lock stays until
# its lease (120 s) runs out; here an operator's shortcut: remove it
ok "the failed writer's lock names it" bash -c "curl -fsS '$S3_DIRECT/$S3_BUCKET/$(s3_keys team/repo/locks/ | head -1)' | grep -q '^pid = '"
for k in $(s3_keys team/repo/locks/); do s3_rm "$k"; done
ok "check --read-data passes after the faults" run chk1 check --read-data
ok "gc after the failure" run gc1 gc
ok "check --read-data passes after gc" run chk2 check --read-data

# ---- expire and gc ----
ok "expire --keep-last 2" run ex expire --keep-last 2
ok "two snapshots left" test "$(n_snapshots --cache-dir "$T/cacheB")" = 2
before=$(s3_keys team/repo/packs/ | wc -l)
ok "gc" run gc2 gc
ok "gc deleted packs from the bucket" test "$(s3_keys team/repo/packs/ | wc -l)" -lt "$before"
ok "check --read-data after expire and gc" run chk3 check --read-data
ok "newest snapshot still restores" run rs4 restore "$SF" "$T/r4" --cache-dir "$T/cacheD"
ok "identical" same_tree "$T/srcF" "$T/r4"
# kept: the newest whole catalog and the deltas after it, and the last four generations
pruned() {
	s3_keys team/repo/catalog/ | python3 -c '
import sys
g = [(int(k.split("/")[-1].split(".")[0]), k.endswith(".delta")) for k in sys.stdin.read().split()]
latest, base = max(n for n, _ in g), max(n for n, d in g if not d)
assert all(n >= min(base, latest - 3) for n, _ in g), g'
}
ok "old catalog generations pruned" pruned

# ---- the catalog lost: rebuilt from packs and snapshot manifests ----
"$PGBAKFS" list --json --cache-dir "$T/cacheB" | python3 -c 'import json,sys; [print(s["id"], s["label"], s["stored_bytes"], s["verified"] is not None) for s in json.load(sys.stdin)]' >"$T/list.before"
ok "manifests in the bucket, one per snapshot" test "$(s3_keys team/repo/snapshots/ | wc -l)" = "$(wc -l <"$T/list.before")"
for k in $(s3_keys team/repo/catalog/); do s3_rm "$k"; done
expect_error 1 "damaged" pgbakfs list --cache-dir "$T/cacheE"
ok "repair --rebuild-catalog" run repair repair --rebuild-catalog --cache-dir "$T/cacheE"
"$PGBAKFS" list --json --cache-dir "$T/cacheG" | python3 -c 'import json,sys; [print(s["id"], s["label"], s["stored_bytes"], s["verified"] is not None) for s in json.load(sys.stdin)]' >"$T/list.after"
ok "the rebuilt catalog lists the same snapshots (another empty cache)" diff "$T/list.before" "$T/list.after"
ok "restore after the rebuild" run rs5 restore "$SF" "$T/r5" --cache-dir "$T/cacheG"
ok "identical after the rebuild" same_tree "$T/srcF" "$T/r5"
ok "check --read-data after the rebuild" run chk4 check --read-data

# ---- newer generations vanishing: a machine that saw them refuses the older one ----
ok "a machine that publishes a newer generation" run pinx pin "$SF" --note "seen"
newest=$(s3_keys team/repo/catalog/ | sort | tail -1)
s3_rm "$newest"
expect_error 1 "older than one this machine has seen" pgbakfs list

# ---- a large file from S3 is written in runs past the page cache (O_DIRECT) ----
# 6 MiB and 100 bytes of random data (an unaligned tail) and 3 MiB of text: the
# same bytes back, and no more of them in the page cache than the tail's page
RB=s3://$S3_BUCKET/team/big
mkdir -p "$T/srcB"
head -c $((6 * 1048576 + 100)) /dev/urandom >"$T/srcB/random.bin"
head -c $((3 * 1048576)) < <(yes "pgbakfs restores past the page cache") >"$T/srcB/text"
ok "init for large files" run initb init --repo "$RB" --cache-dir "$T/cacheB2"
ok "backup of large files" run bkb backup --from-dir "$T/srcB" --repo "$RB" --cache-dir "$T/cacheB2"
ok "restore of large files -j 2" run rsb restore latest "$T/rb" --repo "$RB" --cache-dir "$T/cacheB3" -j 2
cached() { fincore --bytes --noheadings --output RES "$1" | tr -d ' '; }
if dd if=/dev/zero of="$T/direct-probe" bs=4096 count=1 oflag=direct 2>/dev/null; then
	# before anything reads them back
	ok "restored past the page cache ($(cached "$T/rb/random.bin") B cached)" test "$(cached "$T/rb/random.bin")" -le 65536
	ok "text restored past the page cache ($(cached "$T/rb/text") B cached)" test "$(cached "$T/rb/text")" -le 65536
fi
ok "large files identical" same_tree "$T/srcB" "$T/rb"
# chunks larger than a run (--chunk-size up to 8M): one chunk a run
RB2=s3://$S3_BUCKET/team/bigchunks
ok "init with 2 MiB chunks" run initb2 init --repo "$RB2" --chunk-size 2M --cache-dir "$T/cacheB4"
ok "backup with 2 MiB chunks" run bkb2 backup --from-dir "$T/srcB" --repo "$RB2" --cache-dir "$T/cacheB4"
ok "restore of 2 MiB chunks -j 2" run rsb2 restore latest "$T/rb2" --repo "$RB2" --cache-dir "$T/cacheB5" -j 2
ok "2 MiB chunks identical" same_tree "$T/srcB" "$T/rb2"

# ---- TLS: verification is on; a private CA is given with --ca-file ----
(cd "$T" && openssl req -x509 -newkey rsa:2048 -nodes -keyout tls.key -out tls.pem -days 2 \
	-subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null)
S3RVER_TLS_KEY=$T/tls.key S3RVER_TLS_CERT=$T/tls.pem node_helper server.js "$T/s3tls.out" 0 "$T/s3tls" tls-bucket
TLS=https://127.0.0.1:$(ready_port "$T/s3tls.out")
expect_error 1 "TLS certificate could not be verified" env PGBAKFS_S3_ENDPOINT="$TLS" "$PGBAKFS" init --repo s3://tls-bucket/r --cache-dir "$T/cacheT"
ok "init over TLS with --ca-file" bash -c "PGBAKFS_S3_ENDPOINT='$TLS' '$PGBAKFS' init --repo s3://tls-bucket/r --cache-dir '$T/cacheT' --ca-file '$T/tls.pem' >'$O/tlsinit.out' 2>'$O/tlsinit.err'"
ok "backup over TLS" bash -c "PGBAKFS_S3_ENDPOINT='$TLS' '$PGBAKFS' backup --from-dir '$T/srcF' --repo s3://tls-bucket/r --cache-dir '$T/cacheT' --ca-file '$T/tls.pem' >'$O/tlsbk.out' 2>'$O/tlsbk.err'"
ok "restore over TLS" bash -c "PGBAKFS_S3_ENDPOINT='$TLS' '$PGBAKFS' restore latest '$T/rtls' --repo s3://tls-bucket/r --cache-dir '$T/cacheT' --ca-file '$T/tls.pem' >'$O/tlsrs.out' 2>'$O/tlsrs.err'"
ok "identical over TLS" same_tree "$T/srcF" "$T/rtls"

# ---- no secret in any output ----
ok "no output holds the secret key or token" no_secret "$O"/* "$T"/pglog/* "$T"/s3*.out "$T"/pitr/postgresql.auto.conf
finish
