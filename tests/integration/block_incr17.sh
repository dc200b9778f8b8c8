# Block-level incrementals on PostgreSQL 17 (see block_incr for 15): with
# summarize_wal = on the incremental takes the server's summaries, and
# pgbakfs's own (wal-summary) equal them for every summary's range; without,
# pgbakfs's own, refusing a summary of another system or of another segment;
# hint bits without data checksums differ without WAL and are tolerated; no
# page is called damaged on a cluster without checksums (local or BASE_BACKUP).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
. "$(dirname "$0")/mnt.sh" # wait_for
PORT=54440

# PostgreSQL 17: the server's summaries, and ours equal to them
pg_use_major 17
R17=$T/repo17
P17=$((PORT + 5))
C17="host=127.0.0.1 port=$P17 user=postgres"
pgbakfs init --repo "$R17" >/dev/null
pg_own "$R17"
PG_CHECKSUMS=off pg_init "$T/d17" $P17
cat >>"$T/d17/postgresql.conf" <<CONF
archive_mode = on
archive_command = '$PGBAKFS wal-push %p --repo $R17'
autovacuum = off
summarize_wal = on
CONF
pg_start "$T/d17"
pg_sql $P17 "create table t as select g as id, md5(g::text) as v from generate_series(1, 100000) g"
pg_sql $P17 "create table h as select g as id from generate_series(1, 20000) g"
pg_sql $P17 "checkpoint"
ok "17: full" pgbakfs backup -d "$C17" --pgdata "$T/d17" --repo "$R17" --no-progress >/dev/null
pg_own "$R17"
ok "17: no page is called damaged without data checksums" test "$(snap_json latest "$R17" 'd["status"]')" = ok
ok "17: remote backup" pgbakfs backup -d "$C17" --repo "$R17" --no-progress >/dev/null
ok "17: nor over BASE_BACKUP" test "$(snap_json latest "$R17" 'd["status"]')" = ok
pg_own "$R17"
pg_sql $P17 "update t set v = 'x' where id % 500 = 0"
pg_sql $P17 "create database d17"
pg_sql $P17 "truncate h"
pg_sql $P17 "select count(*) from t" >/dev/null # hint bits, not logged without checksums
pg_sql $P17 "checkpoint"
ok "17: incr --verify-blocks" pg_local_incr "$R17" "$T/d17" "$C17" "$T/i17.out" --verify-blocks
cat "$T/i17.out" >&2
ok "17: from the server's summaries" test "$(snap_json latest "$R17" 'd["method_note"]')" = "blocks from the server's WAL summaries"
ok "17: hint-bit-only pages seen and tolerated" grep -q "none changed by WAL, [1-9][0-9]* differ without WAL" "$T/i17.out"
sum17() { pg_sql $P17 "select format('TS %s, DB %s, REL %s, FORK %s: %s %s', reltablespace, reldatabase, relfilenode, (array['main','fsm','vm','init'])[relforknumber + 1], case when is_limit_block then 'limit' else 'block' end, relblocknumber) from pg_wal_summary_contents($1, '$2', '$3')" | sort; }
LAST=$(pg_switch $P17)
ok "17: archive caught up" wait_for 60 pg_archived $P17 "$LAST"
n=0
while IFS='|' read -r tli s e; do
	pgbakfs wal-summary --timeline "$tli" --from "$s" --to "$e" --repo "$R17" | sort >"$T/ours.txt" 2>"$T/ours.err" || continue
	sum17 "$tli" "$s" "$e" >"$T/theirs.txt"
	ok "17: our summary of $s..$e equals the server's" cmp -s "$T/ours.txt" "$T/theirs.txt" || diff "$T/ours.txt" "$T/theirs.txt" | head -5 >&2
	n=$((n + 1))
done < <(pg_sql $P17 "select tli, start_lsn, end_lsn from pg_available_wal_summaries() order by start_lsn")
ok "17: summaries compared" test $n -ge 2
pg_sql $P17 "alter system set summarize_wal = off"
pg_sql $P17 "select pg_reload_conf()" >/dev/null
pg_sql $P17 "update t set v = 'y' where id % 700 = 0"
SEG17=$(pg_switch $P17)
ok "17: archived" wait_for 60 pg_archived $P17 "$SEG17"
# another system's summary passed off as this segment's: initdb writes a first segment
mkdir -p "$T/other" && chown postgres "$T/other"
as_pg "$PGBIN/initdb" -D "$T/other/d" --no-sync -A trust -U postgres >/dev/null
pgbakfs init --repo "$T/other/r" >/dev/null
pgbakfs wal-push "$T/other/d/pg_wal/000000010000000000000001" --repo "$T/other/r"
pass_off() { # pass_off SUMMARY_OBJECT: stored as SEG17's summary (its header's name field rewritten)
	python3 - "$1" "$R17/walsum/00000001/$SEG17" "$SEG17" <<'PY'
import sys
src, dst, name = sys.argv[1:]
obj = bytearray(open(src, "rb").read())
obj[64:112] = (name + ".sum").encode().ljust(48, b"\0")
open(dst, "wb").write(obj)
PY
}
pass_off "$T/other/r/walsum/00000001/000000010000000000000001"
ok "17: incr without the server's summaries" pg_local_incr "$R17" "$T/d17" "$C17" "$T/i17b.out" --verify-blocks
ok "17: the other system's summary is not used" grep_or_show "the summary of WAL segment $SEG17 is of system [0-9]*, not [0-9]*: summarizing the segment again" "$T/i17b.out"
# this system's summary of another segment passed off: not used either
pg_sql $P17 "update t set v = 'z' where id % 900 = 0"
SEG17=$(pg_switch $P17)
ok "17: archived again" wait_for 60 pg_archived $P17 "$SEG17"
pass_off "$R17/walsum/00000001/000000010000000000000003"
ok "17: incr after another segment's summary" pg_local_incr "$R17" "$T/d17" "$C17" "$T/i17c.out" --verify-blocks
ok "17: another segment's summary is not used" grep_or_show "the summary of WAL segment $SEG17 is of the segment at 0/3000000: summarizing the segment again" "$T/i17c.out"
ok "17: and it still went by blocks" test "$(snap_json latest "$R17" 'd["method"]')" = blocks
ok "17: from pgbakfs's own" bash -c "test \"\$('$PGBAKFS' show latest --repo '$R17' --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[\"method\"], d[\"method_note\"].startswith(\"blocks from WAL summaries\"))')\" = 'blocks True'"
Q="select md5(string_agg(id || v, ',' order by id)) from t"
WANT=$(pg_sql $P17 "$Q")
ok "17: restore" pgbakfs restore latest "$T/r17" --repo "$R17" --no-progress >/dev/null
chown -R postgres "$T/r17"
sed -i "s/^port = $P17/port = $((P17 + 1))/; s/^archive_mode = on/archive_mode = off/" "$T/r17/postgresql.conf"
pg_start "$T/r17"
ok "17: the restored incremental has the data" test "$(pg_sql $((P17 + 1)) "$Q")" = "$WANT"
finish
