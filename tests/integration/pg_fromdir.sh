# A stopped PostgreSQL 15 data directory backed up with --from-dir restores
# byte-identical and PostgreSQL starts on the restored copy with the same data.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
PORT=54321
R=$T/repo
pg_init "$T/data" $PORT
pg_start "$T/data"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -i -s 2 -q postgres >/dev/null 2>&1
pg_sql $PORT "create table rnd as select g as id, md5(random()::text) as t from generate_series(1, 50000) g"
want=$(pg_sql $PORT "select count(*), sum(abalance), (select md5(string_agg(t, ',' order by id)) from rnd) from pgbench_accounts")
pg_stop "$T/data"

pgbakfs init --repo "$R" >/dev/null
ok "backup data directory" pgbakfs backup --repo "$R" --from-dir "$T/data" --no-progress >/dev/null
ok "restore" pgbakfs restore latest "$T/restored" --repo "$R" --no-progress >/dev/null
ok "restored data directory identical" same_tree "$T/data" "$T/restored"
ok "mode 0700 kept" test "$(stat -c %a "$T/restored")" = 700
ok "owner kept" test "$(stat -c %U "$T/restored/PG_VERSION")" = postgres
sed -i "s/^port = $PORT/port = $((PORT + 1))/" "$T/restored/postgresql.conf"
pg_start "$T/restored"
got=$(pg_sql $((PORT + 1)) "select count(*), sum(abalance), (select md5(string_agg(t, ',' order by id)) from rnd) from pgbench_accounts")
ok "same data in the restored cluster" test "$got" = "$want"
ok "pg_checksums-clean pages: amcheck-free read of every table" pg_sql $((PORT + 1)) "select count(*) from pgbench_history, pgbench_tellers, pgbench_branches"
finish
