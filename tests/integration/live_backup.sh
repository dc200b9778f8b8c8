# backup -d of a running PostgreSQL 15 while pgbench writes and tables are
# dropped, truncated and created: the snapshot restores, passes
# pg_verifybackup and starts; rows committed before the backup are there;
# tablespaces, unlogged tables, multi-segment relations and bad page checksums
# are handled; an instance refuses another cluster.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
PORT=54331
R=$T/repo
CONN="host=127.0.0.1 port=$PORT user=postgres"
pg_init "$T/data" $PORT
echo "max_wal_senders = 10" >>"$T/data/postgresql.conf"
pg_start "$T/data"
mkdir -p "$T/ts" && chown postgres "$T/ts"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -i -s 4 -q postgres >/dev/null 2>&1
pg_sql $PORT "create tablespace ts location '$T/ts'"
pg_sql $PORT "create table in_ts tablespace ts as select g as id, md5(g::text) as v from generate_series(1, 20000) g"
pg_sql $PORT "create unlogged table scratch as select g from generate_series(1, 10000) g"
pg_sql $PORT "create table quiet as select g as id, md5(g::text) as v from generate_series(1, 50000) g"
# a relation larger than one 1 GiB segment (mostly one repeated value: quick to make)
pg_sql $PORT "create table big (id int, pad text); alter table big alter column pad set storage plain; alter table big set (autovacuum_enabled = off)"
pg_sql $PORT "insert into big select g, repeat('x', 1900) from generate_series(1, 560000) g"
ok "big has two segments" test -n "$(pg_sql $PORT "select pg_relation_filepath('big')").1"
relpath=$(pg_sql $PORT "select pg_relation_filepath('big')")
ok "big spans a second segment file" test -f "$T/data/$relpath.1"
pg_sql $PORT "checkpoint"
want_quiet=$(pg_sql $PORT "select md5(string_agg(v, ',' order by id)) from quiet")
want_ts=$(pg_sql $PORT "select md5(string_agg(v, ',' order by id)) from in_ts")
want_big=$(pg_sql $PORT "select count(*), sum(id) from big")

pgbakfs init --repo "$R" >/dev/null
# load while the backup runs: pgbench, plus DDL that makes files vanish, shrink and appear
# (own process groups: runuser does not pass signals on, so the group is killed)
setsid runuser -u postgres -- "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -c 2 -T 60 postgres >/dev/null 2>&1 &
bench_pid=$!
setsid bash -c '
	sql() { runuser -u postgres -- "$1/psql" -h 127.0.0.1 -p "$2" -U postgres -XAtq -c "$3"; }
	for i in $(seq 1 200); do
		sql "$0" "$1" "create table churn_$i as select g from generate_series(1, 20000) g" || true
		sql "$0" "$1" "delete from churn_$i where g > 100; vacuum churn_$i" || true
		[ $((i % 3)) -eq 0 ] && sql "$0" "$1" "drop table churn_$((i - 1))" || true
		[ $((i % 20)) -eq 0 ] && sql "$0" "$1" "create database during_$i" || true
	done' "$PGBIN" "$PORT" >/dev/null 2>&1 &
ddl_pid=$!
# at exit only if still running: a group gone may have left its id to another test's server
at_exit '[ -z "$bench_pid" ] || kill -- -$bench_pid -$ddl_pid 2>/dev/null'
sleep 2
ok "backup -d under load" pgbakfs backup -d "$CONN" --repo "$R" --label live --no-progress
kill -- -$bench_pid -$ddl_pid 2>/dev/null || true
wait $bench_pid $ddl_pid 2>/dev/null || true
bench_pid=

ok "show: LSNs, timeline, system id, version" bash -c "'$PGBAKFS' show latest --repo '$R' --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d[\"start_lsn\"] and d[\"stop_lsn\"] and d[\"timeline\"]==1 and d[\"pg_version\"]==15, d
assert d[\"system_id\"] and d[\"status\"]==\"ok\" and d[\"bad_pages\"]==[], d'"
expect_error 1 "directory \"$T/ts\" is not empty" pgbakfs restore latest "$T/restored" --repo "$R" --no-progress
ok "nothing written when a tablespace target is taken" test ! -e "$T/restored"
ok "restore with --tablespace-map" pgbakfs restore latest "$T/restored" --tablespace-map "$T/ts=$T/ts2" --repo "$R" --no-progress >/dev/null
ok "backup_manifest in the snapshot" test -s "$T/restored/backup_manifest"
ok "WAL in the snapshot's pg_wal" test -n "$(ls "$T/restored/pg_wal" | grep -E '^[0-9A-F]{24}$')"
TSOID=$(pg_sql $PORT "select oid from pg_tablespace where spcname='ts'")
ok "tablespace linked to its mapped directory" test "$(readlink "$T/restored/pg_tblspc/$TSOID")" = "$T/ts2"
ok "tablespace contents restored there" test -d "$T/ts2/$(ls "$T/ts")"
ok "pg_verifybackup passes" as_pg "$PGBIN/pg_verifybackup" -q "$T/restored"
sed -i "s/^port = $PORT/port = $((PORT + 1))/" "$T/restored/postgresql.conf"
pg_start "$T/restored"
P2=$((PORT + 1))
ok "quiesced table identical" test "$(pg_sql $P2 "select md5(string_agg(v, ',' order by id)) from quiet")" = "$want_quiet"
ok "table in a tablespace identical" test "$(pg_sql $P2 "select md5(string_agg(v, ',' order by id)) from in_ts")" = "$want_ts"
ok "two-segment relation identical" test "$(pg_sql $P2 "select count(*), sum(id) from big")" = "$want_big"
ok "unlogged table is empty after recovery" test "$(pg_sql $P2 "select count(*) from scratch")" = 0
ok "pgbench tables readable" pg_sql $P2 "select count(*) from pgbench_accounts, pgbench_branches where pgbench_branches.bid = 1" >/dev/null
ok "amcheck-free full scan of every table" pg_sql $P2 "select sum(pg_relation_size(c.oid)) from pg_class c where relkind = 'r'" >/dev/null
pg_stop "$T/restored"
ok "no slot left on the server" test "$(pg_sql $PORT "select count(*) from pg_replication_slots")" = 0

# once the cluster is idle, another backup stores little: chunks are shared
pg_sql $PORT "alter system set autovacuum = off" && pg_sql $PORT "select pg_reload_conf()" >/dev/null
pg_sql $PORT "vacuum" && pg_sql $PORT "checkpoint"
ok "second backup" pgbakfs backup -d "$CONN" --repo "$R" --no-progress >/dev/null
ok "third backup" pgbakfs backup -d "$CONN" --repo "$R" --no-progress >/dev/null
second=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["stored_bytes"])')
first=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stored_bytes"])')
ok "an idle cluster's next backup stores < 10% of the first ($second vs $first)" test "$second" -lt $((first / 10))

# a bad page checksum: flip a byte in an old page of "quiet" while the server is down
qpath=$(pg_sql $PORT "select pg_relation_filepath('quiet')")
pg_stop "$T/data"
python3 - "$T/data/$qpath" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(8192 * 3 + 4000)
    b = f.read(1)
    f.seek(8192 * 3 + 4000)
    f.write(bytes([b[0] ^ 0xff]))
PY
as_pg "$PGBIN/pg_ctl" -D "$T/data" -l "$T/pglog/data2.log" -w start >/dev/null
ok "backup with a bad page still completes" pgbakfs backup -d "$CONN" --repo "$R" --no-progress >/dev/null 2>"$T/warn.err"
ok "a warning names the bad pages" grep -q "failed checksum verification" "$T/warn.err"
ok "status is warning and show lists file and block" bash -c "'$PGBAKFS' show latest --repo '$R' --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d[\"status\"]==\"warning\", d[\"status\"]
assert d[\"bad_pages\"]==[{\"path\": \"$qpath\", \"block\": 3}], d[\"bad_pages\"]'"
ok "list shows the warning" bash -c "'$PGBAKFS' list --repo '$R' | tail -1 | grep -q warning"

# another cluster into the same instance is refused; into its own instance it is fine
pg_init "$T/other" $((PORT + 2))
pg_start "$T/other"
expect_error 1 "holds backups of the cluster with system identifier" pgbakfs backup -d "host=127.0.0.1 port=$((PORT + 2)) user=postgres" --repo "$R" --no-progress
ok "another instance takes it" pgbakfs backup -d "host=127.0.0.1 port=$((PORT + 2)) user=postgres" --repo "$R" --instance other --no-progress >/dev/null
ok "check --read-data" pgbakfs check --repo "$R" --read-data >/dev/null
finish
