# A stopped PostgreSQL 15 data directory backed up with --from-dir restores
# byte-identical and PostgreSQL starts on the restored copy with the same data;
# a tablespace comes along and goes where --tablespace-map sends it.
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
pg_stop "$T/restored"

# ---- a tree that changes while it is read: warnings as GNU tar gives them ----
# The root is listed first; then a/big (read for a while) is open when a watcher
# appends to it and removes zzz-gone, listed but not read yet: a/big "changed as
# we read it", zzz-gone "removed before we read it". Status "warning", exit 0.
L=$T/live
mkdir -p "$L/a" "$L/b"
head -c 64M /dev/urandom >"$T/chunk64"
for _ in 1 2 3 4 5 6; do cat "$T/chunk64"; done >"$L/a/big"
rm "$T/chunk64"
echo quiet >"$L/b/quiet"
echo gone >"$L/zzz-gone"
ok "a quiet tree: status ok, no warning" bash -c "'$PGBAKFS' backup --repo '$R' --from-dir '$L' --no-progress >/dev/null 2>'$T/quiet.err' && ! grep -q warning '$T/quiet.err'"
ok "its status is ok" test "$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["status"])')" = ok
"$PGBAKFS" backup --repo "$R" --from-dir "$L" --no-progress -j 1 >"$T/live.out" 2>"$T/live.err" &
bk=$!
watched=no
for _ in $(seq 1 3000); do # up to 30 s for the backup to open a/big
	if ls -l /proc/$bk/fd 2>/dev/null | grep -- "$L/a/big\$" >/dev/null; then
		echo appended >>"$L/a/big"
		rm "$L/zzz-gone"
		watched=yes
		break
	fi
	kill -0 $bk 2>/dev/null || break
	sleep 0.01
done
rc=0
wait $bk || rc=$?
ok "the watcher caught a/big open" test $watched = yes
ok "the backup completes (exit 0)" test $rc = 0
ok "one warning for the file that changed" test "$(grep -c "^pgbakfs: warning: \"$L/a/big\": file changed as we read it\$" "$T/live.err")" = 1
ok "one warning for the file that vanished" test "$(grep -c "^pgbakfs: warning: \"$L/zzz-gone\": file removed before we read it\$" "$T/live.err")" = 1
ok "no warning for the quiet files" bash -c "! grep -q 'quiet' '$T/live.err'"
ok "the status is said once at the end" test "$(grep -c 'the snapshot.s status is "warning"' "$T/live.err")" = 1
ok "the snapshot's status is warning" test "$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["status"])')" = warning
ok "the snapshot restores" pgbakfs restore latest "$T/live-restored" --repo "$R" --no-progress >/dev/null
ok "with the quiet file as it was" cmp "$L/b/quiet" "$T/live-restored/b/quiet"
ok "and without the file that vanished" test ! -e "$T/live-restored/zzz-gone"
# ---- a data directory with a tablespace: the tablespace comes along, not only its link ----
P2=$((PORT + 2))
pg_init "$T/ts-data" $P2
mkdir "$T/ts"
chown postgres "$T/ts"
pg_start "$T/ts-data"
pg_sql $P2 "create tablespace ts location '$T/ts'"
pg_sql $P2 "create table tt tablespace ts as select g as id, md5(g::text) as v from generate_series(1, 20000) g"
TS_OID=$(pg_sql $P2 "select oid from pg_tablespace where spcname = 'ts'")
want=$(pg_sql $P2 "select count(*), md5(string_agg(v, ',' order by id)) from tt")
pg_stop "$T/ts-data"
ok "backup of a data directory with a tablespace" pgbakfs backup --repo "$R" --from-dir "$T/ts-data" --no-progress >/dev/null
ok "restore, the tablespace sent elsewhere" pgbakfs restore latest "$T/ts-restored" --repo "$R" \
	--tablespace-map "$T/ts=$T/ts-moved" --no-progress >/dev/null
ok "the tablespace's files are at the new location" same_tree "$T/ts" "$T/ts-moved"
ok "the link leads there" test "$(readlink "$T/ts-restored/pg_tblspc/$TS_OID")" = "$T/ts-moved"
sed -i "s/^port = $P2/port = $((P2 + 1))/" "$T/ts-restored/postgresql.conf"
pg_start "$T/ts-restored"
ok "the table in the tablespace reads the same" test "$(pg_sql $((P2 + 1)) "select count(*), md5(string_agg(v, ',' order by id)) from tt")" = "$want"
pg_stop "$T/ts-restored"
finish
