# Block-level incrementals (backup --pgdata --type incr): after a small change
# an incremental reads only the chunks that hold changed blocks; under a churn
# workload --verify-blocks re-reads everything and finds no page WAL changed
# that the summaries missed, and the restored incremental dumps the same as
# its source; a page changed behind WAL's back is caught; a damaged summary is
# rebuilt; a gap in the WAL makes it read by size and mtime and say so; a
# timeline switch is followed through the history. PostgreSQL 17 is in
# block_incr17.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
. "$(dirname "$0")/mnt.sh" # wait_for
PORT=54440
R=$T/repo
CONN="host=127.0.0.1 port=$PORT user=postgres"

dump_all() { # dump_all PORT: every database but the templates, as pg_dump 15 writes them
	local db
	for db in postgres d_wal d_copy; do
		as_pg "$PGCLI/pg_dump" -h 127.0.0.1 -p "$1" -U postgres "$db" | grep -v '^\\\(un\)\?restrict'
	done
}

pgbakfs init --repo "$R" >/dev/null
pg_own "$R"
pg_init "$T/data" $PORT
cat >>"$T/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = '$PGBAKFS wal-push %p --repo $R'
autovacuum = off
min_wal_size = 32MB
max_wal_size = 64MB
CONF
pg_start "$T/data"
mkdir -p "$T/ts" && chown postgres "$T/ts"
as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $PORT -U postgres -i -s 5 -q postgres >/dev/null 2>&1
pg_sql $PORT "create tablespace ts location '$T/ts'"
for t in t_drop t_trunc t_vf t_cl t_ts t_shrink t_hint; do
	pg_sql $PORT "create table $t as select g as id, md5(g::text) as v from generate_series(1, 20000) g"
done
pg_sql $PORT "create index t_cl_v on t_cl(v)"
pg_sql $PORT "create unlogged table t_unlogged as select g as id from generate_series(1, 20000) g"
pg_sql $PORT "create database d_drop"
pg_sql $PORT "checkpoint"
ok "full" pgbakfs backup -d "$CONN" --pgdata "$T/data" --repo "$R" -j 2 --no-progress >/dev/null
pg_own "$R"
FULL=$(snap_json latest "$R" 'd["id"]')
ok "a full says so" test "$(snap_json "$FULL" "$R" 'd["method"]')" = full
FULL_READ=$(snap_json "$FULL" "$R" 'd["read_bytes"]')

# one tuple on every 100th page of pgbench_accounts: ~1% of its pages
pg_sql $PORT "update pgbench_accounts set abalance = abalance + 1 where ctid = any(array(select format('(%s,1)', p)::tid from generate_series(0, pg_relation_size('pgbench_accounts') / 8192 - 1, 100) p))"
ok "incr after a 1% change" pg_local_incr "$R" "$T/data" "$CONN" "$T/i1.out"
I1=$(snap_json latest "$R" 'd["id"]')
ok "it went by blocks" test "$(snap_json "$I1" "$R" 'd["method"]')" = blocks
ok "the output says so" grep -q "(incr of $FULL, blocks)" "$T/i1.out"
ok "it read at most a fifth of a full" python3 -c "import sys; r=$(snap_json "$I1" "$R" 'd["read_bytes"]')/$FULL_READ; print('read ratio', round(r, 3), file=sys.stderr); assert r <= 0.2, r"

# churn: every way a relation file changes that WAL records per block or not at all
pg_sql $PORT "create database d_wal strategy wal_log"
pg_sql $PORT "create database d_copy strategy file_copy"
pg_sql $PORT "create table d_marker(x int)" >/dev/null
as_pg "$PGCLI/psql" -h 127.0.0.1 -p $PORT -U postgres -d d_wal -XAtq -c "create table w as select g from generate_series(1, 5000) g"
as_pg "$PGCLI/psql" -h 127.0.0.1 -p $PORT -U postgres -d d_copy -XAtq -c "create table c as select g from generate_series(1, 5000) g"
pg_sql $PORT "drop database d_drop"
pg_sql $PORT "drop table t_drop"
pg_sql $PORT "truncate t_trunc"
pg_sql $PORT "insert into t_trunc select g, 'after' from generate_series(1, 100) g"
pg_sql $PORT "delete from t_vf where id % 2 = 0"
pg_sql $PORT "vacuum full t_vf"
pg_sql $PORT "cluster t_cl using t_cl_v"
pg_sql $PORT "alter table t_ts set tablespace ts"
pg_sql $PORT "alter table t_unlogged set logged"
pg_sql $PORT "create index on pgbench_accounts(abalance)"
pg_sql $PORT "delete from t_shrink where id > 1000"
pg_sql $PORT "vacuum t_shrink" # truncates the relation's tail
pg_sql $PORT "select count(*) from t_hint" >/dev/null # hint bits: logged as full pages with checksums on
pg_sql $PORT "insert into pgbench_history select 1, 1, 1, 1, now(), 'x' from generate_series(1, 20000)"
as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $PORT -U postgres -t 200 postgres >/dev/null 2>&1
pg_sql $PORT "checkpoint"
ok "incr --verify-blocks under churn" pg_local_incr "$R" "$T/data" "$CONN" "$T/i2.out" --verify-blocks
cat "$T/i2.out" >&2
I2=$(snap_json latest "$R" 'd["id"]')
ok "by blocks again" test "$(snap_json "$I2" "$R" 'd["method"]')" = blocks
ok "verify-blocks reports what it re-read" grep -q "verify-blocks: [1-9][0-9]* chunks taken unread from the parent were read: none changed by WAL, 0 differ without WAL" "$T/i2.out"
dump_all $PORT >"$T/source.sql"
ok "restore the incremental" pgbakfs restore "$I2" "$T/ri" --tablespace-map "$T/ts=$T/tsi" --repo "$R" --no-progress >/dev/null
chown -R postgres "$T/ri" "$T/tsi"
sed -i "s/^port = $PORT/port = $((PORT + 1))/; s/^archive_mode = on/archive_mode = off/" "$T/ri/postgresql.conf"
pg_start "$T/ri"
dump_all $((PORT + 1)) >"$T/restored.sql"
ok "the restored incremental dumps as its source" cmp -s "$T/source.sql" "$T/restored.sql"
pg_stop "$T/ri"

# a page changed behind WAL's back (its LSN in the range, its block in no summary): caught
F=$T/data/$(pg_sql $PORT "select pg_relation_filepath('t_hint')")
pg_stop "$T/data"
ok "t_hint's file found" test -f "$F"
START=$(snap_json "$I2" "$R" 'd["start_lsn"]')
python3 - "$F" "$START" <<'PY'
import struct, sys
f, lsn = sys.argv[1], sys.argv[2]
hi, lo = (int(x, 16) for x in lsn.split("/"))
v = (hi << 32 | lo) + 8
with open(f, "r+b") as fh:
    fh.seek(8192 * 3)  # page 3: its pd_lsn after the last backup's start
    fh.write(struct.pack("<II", v >> 32, v & 0xffffffff))
PY
pg_start "$T/data"
pg_sql $PORT "insert into d_marker values (1)"
expect_error 1 "block 3 of \".*/$(basename "$F")\" changed at .* but the WAL summary does not list it" pgbakfs backup -d "$CONN" --pgdata "$T/data" --type incr --repo "$R" --no-progress --verify-blocks
pg_own "$R"
ok "no snapshot from it" test "$(snap_json latest "$R" 'd["id"]')" = "$I2"
pg_sql $PORT "drop table t_hint" # the tampered file goes, unread

# a damaged summary is summarized again from the segment
pg_sql $PORT "insert into d_marker values (2)"
SEG=$(pg_switch $PORT)
ok "segment archived" wait_for 60 pg_archived $PORT "$SEG"
SUM=$R/walsum/00000001/$SEG
ok "its summary is kept beside it" test -s "$SUM"
flip_byte "$SUM" 200
ok "incr with a damaged summary" pg_local_incr "$R" "$T/data" "$CONN" "$T/i4.out"
ok "it warned" grep -q "the summary of WAL segment $SEG is damaged: summarizing the segment again" "$T/i4.out"
ok "and still went by blocks" test "$(snap_json latest "$R" 'd["method"]')" = blocks

# a gap: a segment neither archived nor in pg_wal any more
PARENT_SEG=$(pg_sql $PORT "select pg_walfile_name(pg_current_wal_lsn())")
for i in 1 2 3 4 5 6; do
	pg_sql $PORT "insert into d_marker select g from generate_series(1, 1000) g; select pg_switch_wal()" >/dev/null
done
pg_sql $PORT "checkpoint"
pg_sql $PORT "checkpoint"
LAST=$(pg_switch $PORT)
ok "archive caught up" wait_for 60 pg_archived $PORT "$LAST"
ok "the old segment left pg_wal" test ! -e "$T/data/pg_wal/$PARENT_SEG"
rm -f "$R/wal/00000001/$PARENT_SEG" "$R/walsum/00000001/$PARENT_SEG"
ok "incr across the gap" pg_local_incr "$R" "$T/data" "$CONN" "$T/i5.out"
ok "it read by size and mtime" test "$(snap_json latest "$R" 'd["method"]')" = files
ok "and said why" grep -q "files by size and mtime: WAL segment $PARENT_SEG is neither archived nor in pg_wal" "$T/i5.out"
ok "show says why too" bash -c "'$PGBAKFS' show latest --repo '$R' --json | grep -q 'neither archived nor in pg_wal'"

# a timeline switch: a copy recovered to a point and promoted continues the instance on timeline 2
pg_sql $PORT "insert into d_marker values (5003)"
TLSN=$(pg_sql $PORT "select pg_current_wal_lsn()")
pg_sql $PORT "insert into d_marker values (5004)"
LAST=$(pg_switch $PORT)
ok "archived past the target" wait_for 60 pg_archived $PORT "$LAST"
pg_stop "$T/data"
P2=$((PORT + 3))
C2="host=127.0.0.1 port=$P2 user=postgres"
ok "restore to a point, promoted" pgbakfs restore latest "$T/tl2" --tablespace-map "$T/ts=$T/ts2" --repo "$R" --target-lsn "$TLSN" --target-action promote --no-progress >/dev/null
chown -R postgres "$T/tl2" "$T/ts2"
sed -i "s/^port = $PORT/port = $P2/" "$T/tl2/postgresql.conf" # it archives into the same repository
pg_start "$T/tl2"
on_tl2() { [ "$(pg_sql $P2 "select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")" = 00000002 ]; }
ok "promoted onto timeline 2" wait_for 60 on_tl2
ok "up to the target" test "$(pg_sql $P2 "select string_agg(x::text, ',' order by x) from d_marker where x > 5000")" = 5003
pg_sql $P2 "update pgbench_accounts set abalance = abalance + 1 where aid % 1000 = 0"
ok "incr across the timeline switch" pg_local_incr "$R" "$T/tl2" "$C2" "$T/i6.out" --verify-blocks
ok "by blocks along the history" grep_or_show "(incr of .*, blocks)" "$T/i6.out"
# the old timeline goes on too: a backup of it is on no history that leads to timeline 2
pg_start "$T/data"
pg_sql $PORT "insert into d_marker values (5)"
ok "a backup of the old timeline" pgbakfs backup -d "$CONN" --pgdata "$T/data" --repo "$R" --no-progress >/dev/null
pg_own "$R"
pg_stop "$T/data"
ok "incr of timeline 2 after it" pg_local_incr "$R" "$T/tl2" "$C2" "$T/i7.out"
ok "reads by size and mtime" test "$(snap_json latest "$R" 'd["method"]')" = files
ok "and says the parent is on another branch" grep -q "is not on the history of timeline 2" "$T/i7.out"
pg_stop "$T/tl2"

finish
