# backup -d --pgdata on the database host: exclusions, tablespaces, unlogged
# tables, manifest accepted by pg_verifybackup, startup; --type incr reads
# only changed files, guards files modified in the second the parent
# started, and restores to the same database as a full taken right after.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
PORT=54351
R=$T/repo
CONN="host=127.0.0.1 port=$PORT user=postgres"
pg_init "$T/data" $PORT
echo "autovacuum = off" >>"$T/data/postgresql.conf"
pg_start "$T/data"
mkdir -p "$T/ts" && chown postgres "$T/ts"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -i -s 3 -q postgres >/dev/null 2>&1
pg_sql $PORT "create tablespace ts location '$T/ts'"
pg_sql $PORT "create table in_ts tablespace ts as select g as id, md5(g::text) as v from generate_series(1, 20000) g"
pg_sql $PORT "create unlogged table scratch as select g from generate_series(1, 10000) g"
pg_sql $PORT "select pg_create_physical_replication_slot('keep_me_out')" >/dev/null
# things pg_basebackup leaves out
mkdir -p "$T/data/base/pgsql_tmp" && echo junk >"$T/data/base/pgsql_tmp/pgsql_tmp123.0"
echo junk >"$T/data/pg_stat_tmp/leftover"
# a sparse file: its holes are not read, and read back as zeros (the manifest's CRC covers them)
truncate -s 64M "$T/data/sparse.bin" && printf head | dd of="$T/data/sparse.bin" conv=notrunc status=none
printf middle | dd of="$T/data/sparse.bin" bs=1M seek=40 conv=notrunc status=none
chown -R postgres "$T/data"
pgbakfs init --repo "$R" >/dev/null

expect_error 1 "is not the data directory of the server" pgbakfs backup -d "$CONN" --pgdata "$T/ts" --repo "$R" --no-progress
expect_error 2 "needs -d CONNINFO" pgbakfs backup --from-dir "$T/data" --type incr --repo "$R"
ok "incr without a parent falls back to full" bash -c "'$PGBAKFS' backup -d '$CONN' --pgdata '$T/data' --type incr --repo '$R' -j 2 --no-progress 2>&1 | grep -q 'took a full backup'"
ok "full" pgbakfs backup -d "$CONN" --pgdata "$T/data" --type full --repo "$R" -j 2 --no-progress >/dev/null
ok "restore" pgbakfs restore latest "$T/r1" --tablespace-map "$T/ts=$T/ts1" --repo "$R" --no-progress >/dev/null
for gone in postmaster.pid postmaster.opts base/pgsql_tmp/pgsql_tmp123.0 pg_stat_tmp/leftover pg_replslot/keep_me_out; do
	ok "left out: $gone" test ! -e "$T/r1/$gone"
done
scratch=$(pg_sql $PORT "select pg_relation_filepath('scratch')")
ok "unlogged main fork left out" test ! -e "$T/r1/$scratch"
ok "unlogged init fork kept" test -e "$T/r1/${scratch}_init"
ok "backup_label written" grep -q "START WAL LOCATION" "$T/r1/backup_label"
ok "sparse file restored with its bytes" cmp "$T/data/sparse.bin" "$T/r1/sparse.bin"
ok "and its holes" test "$(du -k "$T/r1/sparse.bin" | cut -f1)" -lt 1024
ok "its holes were not read" python3 -c "assert $(snap_json latest "$R" 'd["logical_bytes"] - d["read_bytes"]') >= 60 << 20"
ok "pg_verifybackup passes" as_pg "$PGBIN/pg_verifybackup" -q "$T/r1"
sed -i "s/^port = $PORT/port = $((PORT + 1))/" "$T/r1/postgresql.conf"
pg_start "$T/r1"
ok "restored cluster answers" test "$(pg_sql $((PORT + 1)) "select count(*) from in_ts")" = 20000
ok "unlogged table empty" test "$(pg_sql $((PORT + 1)) "select count(*) from scratch")" = 0
pg_stop "$T/r1"

# incr after pgbench: only changed files are read; the result equals a full taken right after
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -t 300 postgres >/dev/null 2>&1
pg_sql $PORT "checkpoint"
ok "incr" pgbakfs backup -d "$CONN" --pgdata "$T/data" --type incr --repo "$R" -j 2 --no-progress >"$T/incr.out"
ok "incr read only some files" python3 - "$T/incr.out" <<'PY'
import re, sys
m = re.search(r"\((\d+) read, (\d+) by changed blocks, (\d+) unchanged\)", open(sys.argv[1]).read())
assert m and int(m.group(3)) > int(m.group(1)) > 0, m and m.groups()
PY
INCR=$(pgbakfs show latest --repo "$R" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["type"]=="incr" and d["parent"]; print(d["id"])')
ok "full right after" pgbakfs backup -d "$CONN" --pgdata "$T/data" --repo "$R" -j 2 --no-progress >/dev/null
ok "restore incr" pgbakfs restore "$INCR" "$T/ri" --tablespace-map "$T/ts=$T/tsi" --repo "$R" --no-progress >/dev/null
ok "restore full" pgbakfs restore latest "$T/rf" --tablespace-map "$T/ts=$T/tsf" --repo "$R" --no-progress >/dev/null
ok "pg_verifybackup on incr" as_pg "$PGBIN/pg_verifybackup" -q "$T/ri"
sed -i "s/^port = $PORT/port = $((PORT + 2))/" "$T/ri/postgresql.conf"
sed -i "s/^port = $PORT/port = $((PORT + 3))/" "$T/rf/postgresql.conf"
pg_start "$T/ri"
pg_start "$T/rf"
# (15.14+ writes a random \restrict key per dump: not part of the data)
dump() { as_pg "$PGBIN/pg_dump" -h 127.0.0.1 -p "$1" -U postgres postgres | grep -v "^\\\\\(un\)\?restrict "; }
ok "incr and full restore to the same database (pg_dump)" diff <(dump $((PORT + 2))) <(dump $((PORT + 3)))
pg_stop "$T/ri"
pg_stop "$T/rf"

# an incr whose parent came over BASE_BACKUP (mtimes to the second) still reuses files
ok "backup -d (any host)" pgbakfs backup -d "$CONN" --repo "$R" --no-progress >/dev/null
ok "incr on top of it" pgbakfs backup -d "$CONN" --pgdata "$T/data" --type incr --repo "$R" --no-progress >"$T/incr2.out"
ok "most files unchanged" python3 - "$T/incr2.out" <<'PY'
import re, sys
m = re.search(r"\((\d+) read, (\d+) by changed blocks, (\d+) unchanged\)", open(sys.argv[1]).read())
assert m and int(m.group(3)) > int(m.group(1)) + int(m.group(2)), m and m.groups()
PY

# the same-second guard: a file whose mtime is not clearly before the parent
# started is read again even when size and mtime match (here the mtime is set
# a minute ahead, so the check does not depend on how long the backup takes)
printf 'aaaa\n' >"$T/data/guard.conf" && chown postgres "$T/data/guard.conf"
ahead=$(date -d '+1 minute' '+%Y-%m-%d %H:%M:%S')
touch -d "$ahead" "$T/data/guard.conf"
ok "full with a fresh file" pgbakfs backup -d "$CONN" --pgdata "$T/data" --repo "$R" --no-progress >/dev/null
printf 'bbbb\n' >"$T/data/guard.conf" && touch -d "$ahead" "$T/data/guard.conf"
ok "incr after a same-size change with the mtime put back" pgbakfs backup -d "$CONN" --pgdata "$T/data" --type incr --repo "$R" --no-progress >/dev/null
ok "restore it" pgbakfs restore latest "$T/rg" --tablespace-map "$T/ts=$T/tsg" --repo "$R" --no-progress >/dev/null
ok "the guard made incr read the file" test "$(cat "$T/rg/guard.conf")" = bbbb
# --extra-dir: configuration outside the data directory, restored beside it
mkdir -p "$T/etc/pg/conf.d" && echo "shared_buffers = 64MB" >"$T/etc/pg/conf.d/x.conf"
echo "port = 5432" >"$T/etc/pg/postgresql.conf" && touch -d '2020-05-05' "$T/etc/pg/postgresql.conf"
expect_error 2 "needs --pgdata" pgbakfs backup -d "$CONN" --extra-dir "$T/etc/pg" --repo "$R"
expect_error 1 "inside the data directory" pgbakfs backup -d "$CONN" --pgdata "$T/data" --extra-dir "$T/data/base" --repo "$R" --no-progress
ok "backup with --extra-dir" pgbakfs backup -d "$CONN" --pgdata "$T/data" --extra-dir "$T/etc/pg" --repo "$R" --no-progress >/dev/null
ok "restore with extras" pgbakfs restore latest "$T/rx" --tablespace-map "$T/ts=$T/tsx" --repo "$R" --no-progress >/dev/null
ok "extra dir restored beside the data directory" same_tree "$T/etc/pg" "$T/rx.extra$T/etc/pg"
ok "data directory holds no extra files" test ! -e "$T/rx/conf.d"
ok "pg_verifybackup still passes" as_pg "$PGBIN/pg_verifybackup" -q "$T/rx"
ok "incr keeps the extra dir" pgbakfs backup -d "$CONN" --pgdata "$T/data" --type incr --extra-dir "$T/etc/pg" --repo "$R" --no-progress >/dev/null
# the same backup described once in a config file: repository, conninfo, pgdata, extra-dir
cat >"$T/pgbakfs.conf" <<CONF
# one instance: "pgbakfs backup" needs no -d
repo = $R
jobs = 2
[db1]
conninfo = $CONN
pgdata = $T/data
extra-dir = $T/etc/pg
CONF
ok "backup from the config file" pgbakfs backup --config "$T/pgbakfs.conf" --type incr --no-progress >/dev/null
ok "listed under the instance's name" test "$(pgbakfs list --config "$T/pgbakfs.conf" --instance db1 --json)" != "[]"
ok "it kept the extra dir" sh -c '"$PGBAKFS" restore latest "$1/rc" --instance db1 --tablespace-map "$1/ts=$1/tsc" --config "$1/pgbakfs.conf" --no-progress >/dev/null && test -f "$1/rc.extra$1/etc/pg/conf.d/x.conf"' _ "$T"
mkdir -p "$T/ry.extra" && touch "$T/ry.extra/x"
expect_error 1 "directory \"$T/ry.extra\" is not empty" pgbakfs restore latest "$T/ry" --tablespace-map "$T/ts=$T/tsy" --repo "$R" --no-progress
# a bad page checksum is found by the local reader too
ipath=$(pg_sql $PORT "select pg_relation_filepath('pgbench_branches')")
pg_stop "$T/data"
python3 - "$T/data/$ipath" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(7000)
    b = f.read(1)
    f.seek(7000)
    f.write(bytes([b[0] ^ 0x55]))
PY
as_pg "$PGBIN/pg_ctl" -D "$T/data" -l "$T/pglog/data-2.log" -w start >/dev/null
ok "local backup with a bad page" pgbakfs backup -d "$CONN" --pgdata "$T/data" --repo "$R" --no-progress >/dev/null 2>&1
ok "local reader reports file and block" bash -c "'$PGBAKFS' show latest --repo '$R' --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d[\"status\"]==\"warning\" and d[\"bad_pages\"]==[{\"path\": \"$ipath\", \"block\": 0}], d[\"bad_pages\"]'"
ok "no slot of ours left" test "$(pg_sql $PORT "select count(*) from pg_replication_slots where slot_name <> 'keep_me_out'")" = 0
ok "check --read-data" pgbakfs check --repo "$R" --read-data >/dev/null
finish
