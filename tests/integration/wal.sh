# The WAL archive with a real PostgreSQL 15: archive_command = wal-push under
# pgbench, every archived segment fetched back byte for byte, idempotent
# re-push, a conflicting push refused, quiet miss, all four kinds of names,
# bad names, concurrent pushes, damage detected without touching DEST,
# stats/show coverage and gaps, and restore-point.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
PORT=54371
R=$T/repo
CONN="host=127.0.0.1 port=$PORT user=postgres"
# everything runs as postgres, as the archiver does: one owner for the repository
pgb() { as_pg "$PGBAKFS" "$@"; }
mkwal() { python3 "$PGBAKFS_SRC/tests/integration/mkwal.py" "$@"; } # a well-formed synthetic segment
mkdir -p "$T/work" "$R" "$T/timing" && chown postgres "$T/work" "$R" "$T/timing"

pgb init --repo "$R" >/dev/null
pg_init "$T/data" $PORT
cat >>"$T/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = '"$PGBAKFS" wal-push %p --repo "$R"'
checkpoint_timeout = 1h
max_wal_size = 4GB
min_wal_size = 2GB
CONF
pg_start "$T/data"

# wait_archived SEGMENT: the archiver reached SEGMENT without a failure
wait_archived() {
	for _ in $(seq 1 300); do
		local st
		st=$(pg_sql $PORT "select coalesce(last_archived_wal, '') >= '$1', failed_count from pg_stat_archiver")
		[ "${st#*|}" = 0 ] || { fail "archive_command failed: $st"; tail -5 "$T/pglog/data.log" >&2; return 1; }
		[ "${st%|*}" = t ] && return 0
		sleep 0.2
	done
	fail "segment $1 was not archived in 60 s"
	return 1
}
switch_wal() { pg_sql $PORT "select pg_walfile_name(pg_switch_wal())"; }

# ---- archive under pgbench ----
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -i -s 2 -q postgres >/dev/null 2>&1
ok "backup before the load" pgb backup -d "$CONN" --repo "$R" --no-progress >/dev/null
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -c 2 -T 5 postgres >/dev/null 2>&1
LOAD_END=$(pg_sql $PORT "select pg_current_wal_insert_lsn()") # where the last record ends
# two more segments whatever pgbench managed on a loaded machine: the gap check
# below deletes one between the backup's start and the last (each switch after
# a write, or it does nothing)
for _ in 1 2; do
	pg_sql $PORT "insert into pgbench_history select 1, 1, 1, 1, now(), 'x' from generate_series(1, 1000)"
	last=$(switch_wal)
done
wait_archived "$last"
SYSID=$(pg_sql $PORT "select system_identifier from pg_control_system()")
all_archived=$(cd "$T/data/pg_wal/archive_status" && ls | sed -n 's/\.done$//p' | sort)
archived=$(echo "$all_archived" | grep -xE '[0-9A-F]{24}')
n_archived=$(echo "$archived" | wc -l)
ok "several segments archived ($n_archived)" test "$n_archived" -ge 4
ok "the archiver reports no failure" test "$(pg_sql $PORT "select failed_count from pg_stat_archiver")" = 0
n_bad=0
for s in $all_archived; do
	rm -f "$T/work/fetched"
	if ! pgb wal-fetch "$s" "$T/work/fetched" --repo "$R" || ! cmp -s "$T/work/fetched" "$T/data/pg_wal/$s"; then
		n_bad=$((n_bad + 1))
		echo "segment $s does not fetch back identical" >&2
	fi
done
ok "every archived file fetches back identical" test $n_bad -eq 0
ok "the backup's .backup file was archived too" test -n "$(echo "$all_archived" | grep '\.backup$')"
ok "objects are compressed" test "$(du -sb "$R/wal" | cut -f1)" -lt $((n_archived * 16 * 1024 * 1024 / 2))
ok "stored under wal/<timeline>/" test -f "$R/wal/00000001/$last"

# ---- wal-push timing of one real 16 MiB segment into a fresh repository ----
seg=$(echo "$archived" | tail -2 | head -1)
cp "$T/data/pg_wal/$seg" "$T/work/$seg" && chown postgres "$T/work/$seg"
pgb init --repo "$T/timing" >/dev/null
t0=$(date +%s%N)
ok "wal-push of a real segment" pgb wal-push "$T/work/$seg" --repo "$T/timing"
t1=$(date +%s%N)
echo "wal-push of a 16 MiB segment: $(( (t1 - t0) / 1000000 )) ms (including process start and repository open)"
ok "wal-push keeps up (< 5 s per segment)" test $(( (t1 - t0) / 1000000 )) -lt 5000
ok "its block summary is kept beside it" test -s "$T/timing/walsum/00000001/$seg"
# the WAL of the load, from the backup's start (where a record ends) on, in pg_walsummary's lines
BK=$(echo "$all_archived" | grep '\.backup$' | head -1)
pgb wal-fetch "$BK" "$T/work/bk" --repo "$R"
FROM=$(sed -n 's/^START WAL LOCATION: \([0-9A-F/]*\) .*/\1/p' "$T/work/bk")
ok "wal-summary of the load's WAL" bash -c "'$PGBAKFS' wal-summary --from $FROM --to $LOAD_END --repo '$R' >'$T/sum.txt'"
ok "pgbench_accounts' blocks in pg_walsummary's lines" grep -q "^TS 1663, DB 5, REL $(pg_sql $PORT "select pg_relation_filenode('pgbench_accounts')"), FORK main: block [0-9]*$" "$T/sum.txt"
expect_error 1 "cannot summarize" pgbakfs wal-summary --from 7/0 --to 7/100 --repo "$R"
expect_error 2 "invalid LSN range" pgbakfs wal-summary --from 0/200 --to 0/100 --repo "$R"
mkdir -p "$T/nosum" && chown postgres "$T/nosum"
pgb init --repo "$T/nosum" >/dev/null
ok "wal-push --no-summary" pgb wal-push "$T/work/$seg" --repo "$T/nosum" --no-summary
ok "keeps the segment only" test -f "$T/nosum/wal/00000001/$seg" -a ! -e "$T/nosum/walsum/00000001/$seg"
expect_error 126 "invalid option" pgb wal-fetch "$seg" "$T/work/x" --repo "$T/nosum" --no-summary

# ---- idempotent, conflicting ----
ok "pushing the same file again succeeds" pgb wal-push "$T/data/pg_wal/$seg" --repo "$R"
inode=$(stat -c %i "$R/wal/00000001/$seg")
mkdir -p "$T/work/other" && chown postgres "$T/work/other"
cp "$T/work/$seg" "$T/work/other/$seg"
flip_byte "$T/work/other/$seg" 1000000
chown postgres "$T/work/other/$seg"
expect_error 1 "WAL file \"$seg\" is already archived with different content" \
	pgb wal-push "$T/work/other/$seg" --repo "$R"
ok "the archived copy is untouched" test "$(stat -c %i "$R/wal/00000001/$seg")" = "$inode"
rm -f "$T/work/fetched"
pgb wal-fetch "$seg" "$T/work/fetched" --repo "$R"
ok "the archive keeps the original" cmp -s "$T/work/fetched" "$T/work/$seg"

# ---- a missing file: exit 1, nothing on stdout or stderr ----
rc=0
pgb wal-fetch 00000009.history "$T/work/x" --repo "$R" >"$T/out" 2>"$T/err" || rc=$?
ok "missing: exit 1" test $rc -eq 1
ok "missing: quiet" test ! -s "$T/out" -a ! -s "$T/err"
ok "missing: no DEST" test ! -e "$T/work/x"
rc=0
pgb wal-fetch 0000000100000000000000FE "$T/work/x" --repo "$R" >"$T/out" 2>"$T/err" || rc=$?
ok "missing segment: exit 1, quiet" test $rc -eq 1 -a ! -s "$T/out" -a ! -s "$T/err"

# ---- the other kinds of names round-trip ----
printf '1\t0/5000090\tno recovery target specified\n' >"$T/work/00000002.history"
printf 'START WAL LOCATION: 0/F0000028 (file 0000000100000000000000F0)\n' \
	>"$T/work/0000000100000000000000F0.00000028.backup"
# a .partial is a whole segment whose tail is unused
mkwal "$T/work/000000010000000000000077.partial" --sysid "$SYSID" --text "partial"
chown postgres "$T/work"/*
for f in 00000002.history 0000000100000000000000F0.00000028.backup 000000010000000000000077.partial; do
	ok "wal-push $f" pgb wal-push "$T/work/$f" --repo "$R"
	rm -f "$T/work/fetched"
	ok "wal-fetch $f" pgb wal-fetch "$f" "$T/work/fetched" --repo "$R"
	ok "$f round-trips" cmp -s "$T/work/fetched" "$T/work/$f"
done

# ---- bad names and usage ----
cp "$T/work/00000002.history" "$T/work/notwal" && chown postgres "$T/work/notwal"
expect_error 1 '"notwal" is not the name of a WAL file' pgb wal-push "$T/work/notwal" --repo "$R"
# wal-fetch %p %f (swapped): 126, so that PostgreSQL stops instead of ending recovery
expect_error 126 '"RECOVERYXLOG" is not the name of a WAL file' pgb wal-fetch RECOVERYXLOG "$T/work/x" --repo "$R"
expect_error 126 'is not the name of a WAL file' pgb wal-fetch 000000010000000000000002.partialx "$T/work/x" --repo "$R"
expect_error 1 'could not read file' pgb wal-push "$T/work/000000010000000000000066" --repo "$R"
for cmd in wal-push wal-fetch restore-point; do
	ok "$cmd --help" pgbakfs $cmd --help >/dev/null
	want=2; [ "$cmd" = wal-fetch ] && want=126
	expect_error $want "invalid option" pgbakfs $cmd --no-such-option
done
# restore_command = 'pgbakfs wal-fetch %f' (no %p): stop recovery, do not end it
expect_error 126 'missing argument' pgb wal-fetch "$seg" --repo "$R"
expect_error 2 'unexpected argument' pgb wal-push a b --repo "$R"
expect_error 2 'no repository given' env -u PGBAKFS_REPO "$PGBAKFS" wal-push "$T/work/$seg"
ok "PGBAKFS_REPO is honoured" as_pg env PGBAKFS_REPO="$R" "$PGBAKFS" wal-push "$T/work/00000002.history"

# ---- wal-push refuses what is not the WAL file its name says ----
mkdir -p "$T/work/bad" && chown postgres "$T/work/bad"
bad_push() { # bad_push NAME PATTERN [archived]: refused with one error line naming the file
	expect_error 1 "\"$T/work/bad/$1\" is not a .*WAL file.*$2" pgb wal-push "$T/work/bad/$1" --repo "$R"
	[ $# -gt 2 ] && return
	rc=0; pgb wal-fetch "$1" "$T/work/x" --repo "$R" 2>/dev/null || rc=$?
	ok "refused $1 is not archived" test $rc -eq 1
}
: >"$T/work/bad/000000010000000000000080"
cp /etc/passwd "$T/work/bad/000000010000000000000081"
head -c $((16 * 1024 * 1024)) /dev/urandom >"$T/work/bad/000000010000000000000082"
other=$(echo "$archived" | grep -vx "$seg" | tail -1)
cp "$T/data/pg_wal/$seg" "$T/work/bad/$other" # a real segment under another segment's name
cp "$T/data/pg_wal/$seg" "$T/work/bad/$(echo "$seg" | sed 's/^00000001/00000003/')"
mkwal "$T/work/bad/000000010000000000000083" --sysid 12345 # another cluster's
head -c 3000000 "$T/work/$seg" >"$T/work/bad/000000010000000000000084.partial"
cp /etc/passwd "$T/work/bad/00000009.history"
cp /etc/passwd "$T/work/bad/000000010000000000000085.00000028.backup"
chown -R postgres "$T/work/bad"
bad_push 000000010000000000000080 "the file is empty"
bad_push 000000010000000000000081 "is not a WAL segment size"
bad_push 000000010000000000000082 "no WAL page magic"
bad_push "$other" "xlp_pageaddr is" archived
ok "the real segment renamed kept the archived one" pgb wal-fetch "$other" "$T/work/x" --repo "$R"
ok "... identical to the server's" cmp -s "$T/work/x" "$T/data/pg_wal/$other"
rm -f "$T/work/x"
# the same segment number on a later timeline: the page says timeline 1, which may be a parent's
ok "a segment under a later timeline's name passes the header check" \
	pgb wal-push "$T/work/bad/$(echo "$seg" | sed 's/^00000001/00000003/')" --repo "$R"
bad_push 000000010000000000000083 "system identifier 12345 is not that of any cluster"
bad_push 000000010000000000000084.partial "is not a WAL segment size"
bad_push 00000009.history "line 1 is not"
bad_push 000000010000000000000085.00000028.backup "does not start with"

# ---- concurrency: 8 distinct files and 4 pushes of the same file at once ----
mkdir -p "$T/work/conc"
for i in $(seq 1 8); do # well-formed segments, each with content of its own
	mkwal "$T/work/conc/0000000500000000000000$(printf %02X $i)" --sysid "$SYSID" --text "segment $i"
done
mkwal "$T/work/conc/000000050000000000000010" --sysid "$SYSID" --seed 16
chown -R postgres "$T/work/conc"
pids=()
for f in "$T/work/conc"/*; do
	as_pg "$PGBAKFS" wal-push "$f" --repo "$R" &
	pids+=($!)
	if [ "$(basename "$f")" = 000000050000000000000010 ]; then
		for _ in 1 2 3; do as_pg "$PGBAKFS" wal-push "$f" --repo "$R" & pids+=($!); done
	fi
done
n_fail=0
for p in "${pids[@]}"; do wait "$p" || n_fail=$((n_fail + 1)); done
ok "12 concurrent pushes all succeed (${#pids[@]} started, $n_fail failed)" test $n_fail -eq 0 -a ${#pids[@]} -eq 12
n_bad=0
for f in "$T/work/conc"/*; do
	rm -f "$T/work/fetched"
	pgb wal-fetch "$(basename "$f")" "$T/work/fetched" --repo "$R" && cmp -s "$T/work/fetched" "$f" || n_bad=$((n_bad + 1))
done
ok "concurrently pushed files fetch back identical" test $n_bad -eq 0
ok "no temporary files left in the archive" test -z "$(find "$R/wal" -name '.tmp-*')"

# ---- damage: wal-fetch fails, DEST never written ----
obj="$R/wal/00000005/000000050000000000000003"
size=$(stat -c %s "$obj")
flip_byte "$obj" $((size / 2))
expect_error 126 'archived WAL file "000000050000000000000003" is damaged' \
	pgb wal-fetch 000000050000000000000003 "$T/work/dest" --repo "$R"
ok "damaged: DEST not written" test ! -e "$T/work/dest"
ok "damaged: no temporary file beside DEST" test -z "$(find "$T/work" -maxdepth 1 -name '.tmp-*')"
# the real file pushed again replaces the damaged copy
pgb wal-push "$T/work/conc/000000050000000000000003" --repo "$R" 2>"$T/err"
ok "re-push repairs a damaged copy" grep -q 'was damaged and has been replaced' "$T/err"
ok "repaired copy fetches" pgb wal-fetch 000000050000000000000003 "$T/work/dest" --repo "$R"
ok "repaired copy is identical" cmp -s "$T/work/dest" "$T/work/conc/000000050000000000000003"

# ---- show: the snapshot's WAL is archived without gaps ----
pgb show latest --repo "$R" --json >"$T/show.json"
start_seg=$(pg_sql $PORT "select pg_walfile_name('$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["start_lsn"])' "$T/show.json")')")
ok "show --json: wal from the start segment, continuous to the last archived" python3 - "$T/show.json" "$start_seg" "$last" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); w = d["wal"]
assert d["id"] and d["start_lsn"] and d["bad_pages"] == [], d   # existing fields kept
assert w["timeline"] == 1 and w["from"] == sys.argv[2] and w["to"] == sys.argv[3], w
assert w["continuous"] is True and w["end_lsn"], w
EOF
ok "show text: WAL line" bash -c "'$PGBAKFS' show latest --repo '$R' | grep -q '^WAL archived:  $start_seg .. $last (timeline 1, continuous)'"

# ---- stats: timelines, and a gap after one segment's object is deleted ----
ok "stats --json: no gap yet on timeline 1" bash -c "'$PGBAKFS' stats --repo '$R' --json | python3 -c '
import json,sys; d=json.load(sys.stdin); t={x[\"timeline\"]: x for x in d[\"wal\"]}
assert d[\"snapshots\"] == 1 and \"stored_bytes\" in d, d
assert t[1][\"gaps\"] == [] and t[1][\"last\"] == \"$last\" and t[1][\"segment_size\"] == 16777216, t[1]
assert t[2][\"files\"] == 1 and t[2][\"first\"] is None, t[2]
assert t[5][\"segments\"] == 9 and len(t[5][\"gaps\"]) == 1, t[5]'"
gap=$(echo "$archived" | grep -A100 -x "$start_seg" | sed -n 2p)
ok "a segment after the backup start to delete" test -n "$gap"
rm "$R/wal/00000001/$gap"
pgb stats --repo "$R" --json >"$T/stats.json"
ok "stats --json reports the gap" python3 - "$T/stats.json" "$gap" <<'EOF'
import json, sys
t = {x["timeline"]: x for x in json.load(open(sys.argv[1]))["wal"]}
assert t[1]["gaps"] == [{"from": sys.argv[2], "to": sys.argv[2]}], t[1]
EOF
ok "stats text reports the gap" bash -c "'$PGBAKFS' stats --repo '$R' | grep -q 'missing: $gap .. $gap'"
ok "show: no longer continuous" bash -c "'$PGBAKFS' show latest --repo '$R' --json | python3 -c '
import json,sys; w=json.load(sys.stdin)[\"wal\"]
assert w[\"continuous\"] is False and w[\"to\"] == \"$start_seg\", w'"

# ---- restore-point ----
pgb restore-point before_drop -d "$CONN" >"$T/rp" 2>"$T/err"
lsn=$(cat "$T/rp")
ok "restore-point prints an LSN ($lsn)" grep -qxE '[0-9A-F]+/[0-9A-F]+' "$T/rp"
rp_seg=$(pg_sql $PORT "select pg_walfile_name('$lsn')")
wait_archived "$(switch_wal)"
mkdir -p "$T/work/rp" && chown postgres "$T/work/rp"
ok "restore point's segment archived" pgb wal-fetch "$rp_seg" "$T/work/rp/$rp_seg" --repo "$R"
ok "the restore point is in the archived WAL" bash -c "'$PGBIN/pg_waldump' '$T/work/rp/$rp_seg' 2>/dev/null | grep -q 'RESTORE_POINT before_drop'"
expect_error 1 'could not connect to the server' pgbakfs restore-point x -d "host=127.0.0.1 port=1 connect_timeout=5"
expect_error 2 'missing -d CONNINFO' pgbakfs restore-point x
expect_error 1 'could not create restore point' pgbakfs restore-point "$(printf 'x%.0s' $(seq 1 100))" -d "$CONN"

finish
