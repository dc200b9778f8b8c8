# restore --delta into a target PostgreSQL 17 or 18 ran on since it was
# restored (summarize_wal = on): of the files PostgreSQL wrote, only the
# chunks holding blocks its WAL summaries name are read, and the target ends
# identical to a fresh restore: snapshots of a stopped cluster and of a live
# one, a table grown and one truncated, after a timeline switch, and on 18
# with wal_log_hints instead of checksums. When the summaries cannot answer
# (a crash, a summary removed or damaged, neither checksums nor
# wal_log_hints, --no-wal-summaries) every such file is read, and the target
# still ends identical; --no-wal-summaries puts right a change made outside
# PostgreSQL.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
export XDG_CACHE_HOME=$T/cache
PORT=54480
R=$T/repo # the repository of the cluster at hand
CONN="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
UPDATE_1PCT="WITH t AS (SELECT (SELECT min(a.ctid) FROM pgbench_accounts a
	WHERE a.ctid >= format('(%s,0)', p)::tid AND a.ctid < format('(%s,0)', p + 1)::tid) AS c
	FROM generate_series(0, pg_relation_size('pgbench_accounts') / 8192 - 1, 100) p)
	UPDATE pgbench_accounts SET abalance = abalance + 1
	WHERE ctid = ANY (ARRAY(SELECT c FROM t WHERE c IS NOT NULL))"

# change DIR [crash|switch]: PostgreSQL on it updates a tuple on every 100th
# page of pgbench_accounts, grows a table and truncates one, and stops
# (cleanly, or killed; switch: moves to new WAL segments, so that pg_wal no
# longer holds the WAL since the restore once it is summarized)
change() {
	pg_start "$1"
	pg_sql $PORT "$UPDATE_1PCT"
	if [ "${2:-}" = switch ]; then
		for i in 1 2 3; do
			pg_sql $PORT "select pg_switch_wal()" >/dev/null
			pg_sql $PORT "create table s$i as select 1 as x; checkpoint"
		done
	fi
	pg_sql $PORT "insert into grow select g, md5(g::text) from generate_series(1, 3000) g"
	pg_sql $PORT "delete from shrink where id > 2000"
	pg_sql $PORT "vacuum shrink" # gives its empty tail back: a truncation in WAL
	[ -z "${EXTRA_SQL:-}" ] || pg_sql $PORT "$EXTRA_SQL"
	pg_sql $PORT "checkpoint"
	if [ "${2:-}" = crash ]; then
		as_pg "$PGBIN/pg_ctl" -D "$1" -m immediate -w stop >/dev/null
	else
		pg_stop "$1"
	fi
}
# delta SNAP DIR [OPTION...]: restore --delta with debug logging into $T/delta.out
delta() {
	local snap=$1 dir=$2
	shift 2
	pgbakfs restore "$snap" "$dir" --repo "$R" --delta --no-progress --log-level debug "$@" \
		>"$T/delta.out" 2>&1
}
# wal_used [FILE]: PostgreSQL's WAL answered for FILE (pgbench_accounts'): some of its
# blocks, under 1 in 20
wal_used() {
	local k m f=${1:-$ACC}
	read -r k m < <(sed -n "s|.*delta: $f: \([0-9]*\) of \([0-9]*\) blocks written since.*|\1 \2|p" "$T/delta.out")
	[ -n "$k" ] && [ "$k" -gt 0 ] && [ $((k * 20)) -lt "$m" ] && grep -q "PostgreSQL wrote since the last restore read only" "$T/delta.out" && return 0
	echo "--- the WAL did not answer for $f:" >&2
	grep -v 'debug: delta: .*blocks written since' "$T/delta.out" | tail -20 >&2
	return 1
}
# wal_unused WHY: the summaries were not used, for that reason, and no file was answered for
wal_unused() {
	grep -q "^delta: PostgreSQL's WAL summaries not used: .*$1" "$T/delta.out" &&
		! grep -q "blocks written since" "$T/delta.out" && return 0
	echo "--- expected the WAL summaries unused ($1):" >&2
	grep '^delta' "$T/delta.out" >&2
	return 1
}
# answered WHAT SNAP DIR [FILE]: PostgreSQL changes DIR (leaving FILE there), a delta of
# SNAP reads of pgbench_accounts only what the WAL names, and DIR ends as a fresh restore
answered() {
	local what=$1 snap=$2 dir=$3
	change "$dir"
	[ -z "${4:-}" ] || ok "$what: PostgreSQL left $4" test -e "$dir/$4"
	ok "$what: delta" delta "$snap" "$dir"
	ok "$what: the WAL answers" wal_used
	ok "$what: as a fresh restore" identical "$snap" "$dir"
}
# identical SNAP DIR: as a fresh restore of SNAP
identical() {
	local fresh=$T/fresh-$1
	[ -d "$fresh" ] || pgbakfs restore "$1" "$fresh" --repo "$R" --no-progress >/dev/null
	same_tree "$fresh" "$2"
}

# new_cluster DIR SCALE [SETTING...]: a cluster summarizing its WAL, left running, in
# a repository $R of its own; ACC: pgbench_accounts' file
new_cluster() {
	local dir=$1 scale=$2
	shift 2
	pgbakfs init --repo "$R" >/dev/null
	pg_init "$dir" $PORT
	printf '%s\n' "summarize_wal = on" "autovacuum = off" "$@" >>"$dir/postgresql.conf"
	pg_start "$dir"
	as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $PORT -U postgres -i -s "$scale" -q postgres >/dev/null 2>&1
	pg_sql $PORT "create table grow (id int, v text); create table shrink as select g as id, md5(g::text) as v from generate_series(1, 20000) g"
	ACC=$(pg_sql $PORT "select pg_relation_filepath('pgbench_accounts')")
	pg_sql $PORT "checkpoint"
}

pg_use_major 17
new_cluster "$T/src" 2
pgbakfs backup -d "$CONN" --repo "$R" --no-progress >/dev/null
LIVE=$(snap_json latest "$R" 'd["id"]')
pg_stop "$T/src"
pgbakfs backup --from-dir "$T/src" --repo "$R" --no-progress >/dev/null
D=$(snap_json latest "$R" 'd["id"]')

expect_error 2 "--no-wal-summaries is an option of --delta" \
	pgbakfs restore "$D" "$T/x" --repo "$R" --no-wal-summaries

# a stopped cluster's snapshot: the WAL answers; again after the delta
ok "restore" pgbakfs restore "$D" "$T/t" --repo "$R" --no-progress >/dev/null
FIRST_SEG=$(ls "$T/t/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | head -1)
answered "after PostgreSQL ran" "$D" "$T/t"
answered "again" "$D" "$T/t"

# the summaries cannot answer: every file PostgreSQL wrote is read
change "$T/t" crash
ok "delta after a crash" delta "$D" "$T/t"
ok "does not ask the WAL of a cluster not shut down cleanly" wal_unused "not shut down cleanly"
ok "identical after the crash" identical "$D" "$T/t"
change "$T/t" switch
ok "the WAL since the restore has left pg_wal" test ! -e "$T/t/pg_wal/$FIRST_SEG"
rm -f "$T/t/pg_wal/summaries/"*.summary
ok "delta without the summaries" delta "$D" "$T/t"
ok "reads what PostgreSQL wrote" wal_unused "not in pg_wal"
ok "identical without the summaries" identical "$D" "$T/t"
change "$T/t"
NEWEST=$(ls "$T/t/pg_wal/summaries/" | sort | tail -1)
change_keep_mtime "$T/t/pg_wal/summaries/$NEWEST" 30
ok "delta with a damaged summary" delta "$D" "$T/t"
ok "does not trust it" wal_unused "damaged"
ok "identical with a damaged summary" identical "$D" "$T/t"

# a block changed outside PostgreSQL (block 7: no tuple of it updated) is no WAL's business
change "$T/t"
change_keep_mtime "$T/t/$ACC" $((7 * 8192 + 300))
ok "delta --no-wal-summaries" delta "$D" "$T/t" --no-wal-summaries
ok "does not ask" wal_unused "not asked (--no-wal-summaries)"
ok "puts a change outside PostgreSQL right" identical "$D" "$T/t"

# a file cut short outside PostgreSQL: what is gone is written again, WAL or not
change "$T/t"
python3 -c 'import os, sys; st = os.stat(sys.argv[1]); os.truncate(sys.argv[1], st.st_size - 131072); os.utime(sys.argv[1], ns=(st.st_atime_ns, st.st_mtime_ns))' "$T/t/$ACC"
ok "delta after a file was cut short" delta "$D" "$T/t"
ok "the WAL answers for the rest" wal_used
ok "what was cut is back" identical "$D" "$T/t"

# a newer snapshot of the source into a target that diverged from the older
# one: where the two snapshots differ the bytes in place are read and compared
pg_start "$T/src"
pg_sql $PORT "update pgbench_accounts set abalance = abalance - 1 where aid % 700 = 0"
pg_sql $PORT "insert into grow select g, 'newer' from generate_series(1, 5000) g"
pg_stop "$T/src"
pgbakfs backup --from-dir "$T/src" --repo "$R" --no-progress >/dev/null
D2=$(snap_json latest "$R" 'd["id"]')
ok "restore the older snapshot" pgbakfs restore "$D" "$T/n" --repo "$R" --no-progress >/dev/null
answered "the newer snapshot" "$D2" "$T/n"

# a live snapshot (recovery from its backup_label), and a timeline switch
ok "restore a live snapshot" pgbakfs restore "$LIVE" "$T/l" --repo "$R" --no-progress >/dev/null
answered "a live snapshot's target (from the backup's start)" "$LIVE" "$T/l"
ok "restore for a timeline switch" pgbakfs restore "$D" "$T/p" --repo "$R" --no-progress >/dev/null
as_pg touch "$T/p/recovery.signal"
echo "restore_command = 'false'" | as_pg tee -a "$T/p/postgresql.auto.conf" >/dev/null
answered "across a timeline switch" "$D" "$T/p" pg_wal/00000002.history

# a tablespace (a backup on the database host; restored at its location, the source
# gone): its files are answered for as those under base/
R=$T/repo-ts
new_cluster "$T/srcts" 1
mkdir "$T/ts"
chown postgres "$T/ts"
pg_sql $PORT "create tablespace ts location '$T/ts'"
pg_sql $PORT "create table tst tablespace ts as select g as id, md5(g::text) as v from generate_series(1, 100000) g"
pg_sql $PORT "vacuum freeze tst" # its hint bits set now, not by the change's scan (a WAL-logged write of every page)
TSF=$(pg_sql $PORT "select pg_relation_filepath('tst')")
pgbakfs backup -d "$CONN" --pgdata "$T/srcts" --repo "$R" --no-progress >/dev/null
DTS=$(snap_json latest "$R" 'd["id"]')
pg_stop "$T/srcts"
rm -rf "$T/srcts" "$T/ts"
ok "restore with a tablespace" pgbakfs restore "$DTS" "$T/tt" --repo "$R" --no-progress >/dev/null
EXTRA_SQL="update tst set v = 'x' where id % 5000 = 0" change "$T/tt"
ok "delta with a tablespace" delta "$DTS" "$T/tt"
ok "the WAL answers for the tablespace's file" wal_used "$TSF"
mv "$T/tt" "$T/tt.delta"
mv "$T/ts" "$T/ts.delta"
pgbakfs restore "$DTS" "$T/tt" --repo "$R" --no-progress >/dev/null
# (a tablespace's link gets the restore's time as its mtime, not the snapshot's: left out)
ok "the target as a fresh restore" diff <(tree_manifest "$T/tt" | grep -v '^\./pg_tblspc/[0-9]* l ') \
	<(tree_manifest "$T/tt.delta" | grep -v '^\./pg_tblspc/[0-9]* l ')
ok "the tablespace as a fresh restore" same_tree "$T/ts" "$T/ts.delta"

# PostgreSQL 18, without data checksums: wal_log_hints does, then turned off it does not
pg_use_major 18
R=$T/repo18
PG_CHECKSUMS=off new_cluster "$T/src18" 1 "wal_log_hints = on"
pg_stop "$T/src18"
pgbakfs backup --from-dir "$T/src18" --repo "$R" --no-progress >/dev/null
D18=$(snap_json latest "$R" 'd["id"]')
ok "18: restore" pgbakfs restore "$D18" "$T/t18" --repo "$R" --no-progress >/dev/null
answered "18, wal_log_hints without checksums" "$D18" "$T/t18"
echo "wal_log_hints = off" | as_pg tee -a "$T/t18/postgresql.auto.conf" >/dev/null
change "$T/t18"
ok "18: delta without wal_log_hints" delta "$D18" "$T/t18"
ok "18: hint bits change pages without WAL: not asked" wal_unused "neither data checksums nor wal_log_hints"
ok "18: identical without wal_log_hints" identical "$D18" "$T/t18"
finish
