# Retention: expire (keep-last, keep-within, pins, per instance, failed
# snapshots, the newest ok one, saved policy, backup --expire, WAL archive),
# pin/unpin/note in list and show, bad input, then gc and check --read-data.
# Snapshots are --from-dir backups of small trees; their times, statuses, LSNs
# and timelines are set with sqlite3 on the catalog (this test only).
. "$(dirname "$0")/lib.sh"

NOW=$(date +%s)
DAY=86400

sql() { # sql REPO STATEMENT
	sqlite3 -cmd '.timeout 10000' "$1/catalog.db" "$2"
}

# snap REPO INSTANCE LABEL: a snapshot with data of its own (so gc has something to reclaim)
snap() {
	rm -rf "$T/src"
	mkdir -p "$T/src/base"
	head -c 300000 /dev/urandom >"$T/src/base/data"
	echo "$3" >"$T/src/label"
	pgbakfs backup --repo "$1" --from-dir "$T/src" --instance "$2" --label "$3" >/dev/null
}

# set_age REPO LABEL SECONDS_AGO: start time in the past
set_age() {
	sql "$1" "UPDATE snapshots SET start_time = ($NOW - $3) * 1000000000,
	          stop_time = ($NOW - $3 + 1) * 1000000000 WHERE label = '$2'"
}

# labels REPO: labels of the visible snapshots, sorted, space separated
labels() {
	pgbakfs list --repo "$1" --json | jq -r '.[].label' | sort | tr '\n' ' ' | sed 's/ $//'
}

expect_labels() { # expect_labels WHAT REPO "L1 L2 ..."
	local got
	got=$(labels "$2")
	if [ "$got" = "$3" ]; then pass; else fail "$1: expected snapshots \"$3\", have \"$got\""; fi
}

id_of() { # id_of REPO LABEL
	pgbakfs list --repo "$1" --json | jq -r ".[] | select(.label == \"$2\") | .id"
}

# ---------------------------------------------------------------- bad input
R=$T/r
pgbakfs init --repo "$R" >/dev/null
snap "$R" main m1
expect_error 2 "no retention policy" pgbakfs expire --repo "$R"
expect_error 2 "no retention policy" pgbakfs expire --repo "$R" --dry-run
for n in -1 0 abc 1x "" " 3" 1.5 99999999999999999999 1000001; do
	expect_error 2 "invalid --keep-last" pgbakfs expire --repo "$R" --keep-last "$n"
done
for d in -1d abc 0 0d 5y 1dd "" 7D 10000000000w; do
	expect_error 2 "invalid --keep-within" pgbakfs expire --repo "$R" --keep-within "$d"
done
expect_error 2 "invalid instance name" pgbakfs expire --repo "$R" --keep-last 1 --instance ""
expect_error 2 "unexpected argument" pgbakfs expire --repo "$R" --keep-last 1 extra
expect_error 2 "invalid option" pgbakfs expire --repo "$R" --keep-first 1
expect_error 1 'snapshot "20000101T000000Z" not found' pgbakfs pin 20000101T000000Z --repo "$R" --ttl 1d
expect_error 2 "missing snapshot ID" pgbakfs pin --repo "$R" --ttl 1d
expect_error 2 "missing --ttl DURATION, --unpin or --note" pgbakfs pin latest --repo "$R"
expect_error 2 "either --ttl or --unpin" pgbakfs pin latest --repo "$R" --ttl 1d --unpin
for d in -1d abc 0 1y 99999999999w; do
	expect_error 2 "invalid --ttl" pgbakfs pin latest --repo "$R" --ttl "$d"
done
expect_error 2 "unexpected argument" pgbakfs pin latest other --repo "$R" --ttl 1d
# backup --expire without a saved policy is refused before anything is backed up
expect_error 2 "no retention policy\|has none" pgbakfs backup --repo "$R" --from-dir "$T/src" --expire
ok "refused backup --expire took no snapshot" test "$(labels "$R")" = "m1"
ok "expire --help" pgbakfs expire --help >/dev/null
ok "pin --help" pgbakfs pin --help >/dev/null
expect_error 1 "does not exist" pgbakfs expire --repo "$T/missing" --keep-last 1

# ---------------------------------------------- keep-last, instances, failed
R=$T/a
pgbakfs init --repo "$R" >/dev/null
for i in 1 2 3 4; do snap "$R" main m$i; done
for i in 1 2 3; do snap "$R" other o$i; done
age=100
for l in m1 m2 m3 m4 o1 o2 o3; do set_age "$R" $l $((age * DAY)); age=$((age - 1)); done
sql "$R" "UPDATE snapshots SET status = 'failed' WHERE label = 'm4'"
M1=$(id_of "$R" m1) M4=$(id_of "$R" m4) O1=$(id_of "$R" o1)
ALL="m1 m2 m3 m4 o1 o2 o3"

# dry run: lists exactly m1, m4 (failed, outside the policy) and o1; changes nothing
pgbakfs expire --repo "$R" --keep-last 2 --dry-run >"$T/out"
ok "dry run lists m1" grep -q "would delete snapshot \"$M1\" (instance \"main\", ok" "$T/out"
ok "dry run lists the failed m4" grep -q "would delete snapshot \"$M4\" (instance \"main\", failed" "$T/out"
ok "dry run lists o1" grep -q "would delete snapshot \"$O1\" (instance \"other\"" "$T/out"
ok "dry run lists three" test "$(grep -c 'would delete snapshot' "$T/out")" -eq 3
ok "dry run summary" grep -q "3 snapshot(s) would be deleted, 4 kept" "$T/out"
expect_labels "dry run deletes nothing" "$R" "$ALL"
expect_error 2 "no retention policy" pgbakfs expire --repo "$R"  # dry run saved no policy

# --instance: only that instance is judged
pgbakfs expire --repo "$R" --keep-last 2 --instance other --dry-run >"$T/out"
ok "--instance other judges only other" test "$(grep -c 'would delete snapshot' "$T/out")" -eq 1

pgbakfs stats --repo "$R" --json >"$T/stats_before"
pgbakfs expire --repo "$R" --keep-last 2 >"$T/out"
expect_labels "keep-last 2 per instance, failed one deleted" "$R" "m2 m3 o2 o3"
ok "one line per deleted snapshot" test "$(grep -c '^expire: deleted snapshot' "$T/out")" -eq 3
ok "summary" grep -q "3 snapshot(s) deleted, 4 kept" "$T/out"
ok "gc hint" grep -q 'run "pgbakfs gc"' "$T/out"

# the saved policy is reused by a bare expire; nothing more to delete
pgbakfs expire --repo "$R" >"$T/out"
ok "bare expire uses the saved policy" grep -q "policy (saved in the repository): keep-last 2" "$T/out"
ok "nothing more to delete" grep -q "0 snapshot(s) deleted, 4 kept" "$T/out"
ok "no gc hint when nothing was deleted" bash -c "! grep -q 'pgbakfs gc' '$T/out'"

# gc reclaims what only the deleted snapshots used; every byte still checks
pgbakfs gc --repo "$R" >"$T/out"
ok "gc reclaimed space" bash -c "! grep -q 'reclaimed 0 B' '$T/out'"
ok "stored size went down" test "$(pgbakfs stats --repo "$R" --json | jq .stored_bytes)" -lt \
	"$(jq .stored_bytes "$T/stats_before")"
ok "check --read-data after expire and gc" pgbakfs check --repo "$R" --read-data
pgbakfs restore --repo "$R" "$(id_of "$R" m3)" "$T/restored" >/dev/null
ok "a kept snapshot restores" test "$(cat "$T/restored/label")" = m3
rm -rf "$T/restored"

# backup --expire applies the saved policy to the instance it backed up, after the backup
snap "$R" main m5 # plain backup first: now main has m2 m3 m5
rm -rf "$T/src"; mkdir -p "$T/src"; echo m6 >"$T/src/label"
pgbakfs backup --repo "$R" --from-dir "$T/src" --label m6 --expire >"$T/out"
ok "backup --expire reports the backup" grep -q '^backup "' "$T/out"
ok "backup --expire reports the expiry" grep -q "2 snapshot(s) deleted" "$T/out"
expect_labels "backup --expire kept 2 of main, other untouched" "$R" "m5 m6 o2 o3"
rm -rf "$T/src"; mkdir -p "$T/src"; echo o4 >"$T/src/label"
pgbakfs backup --repo "$R" --from-dir "$T/src" --label o4 --instance other --expire >/dev/null
expect_labels "backup --expire --instance other" "$R" "m5 m6 o3 o4"

# expire waits for nobody: a running gc (the maintenance lock) makes it fail clearly
mkdir -p "$R/locks"
# (this shell holds it, on a descriptor of its own: no process to wait for)
exec {LOCKFD}>>"$R/locks/maintenance"
flock -n $LOCKFD
expect_error 1 "busy: a gc or expire is running" pgbakfs expire --repo "$R" --keep-last 1
flock -u $LOCKFD && exec {LOCKFD}>&-
expect_labels "busy expire deleted nothing" "$R" "m5 m6 o3 o4"

# ------------------------------------- keep-within, newest ok, pin and unpin
R=$T/b
pgbakfs init --repo "$R" >/dev/null
for l in w1 w2 w3 w4; do snap "$R" main $l; done
set_age "$R" w1 $((30 * DAY))
set_age "$R" w2 $((20 * DAY))
set_age "$R" w3 $((10 * DAY))
set_age "$R" w4 $((2 * DAY))
sql "$R" "UPDATE snapshots SET status = 'failed' WHERE label = 'w4'"
W1=$(id_of "$R" w1) W3=$(id_of "$R" w3)

pgbakfs pin "$W1" --repo "$R" --ttl 1d --note "before the upgrade" >"$T/out"
ok "pin says until when" grep -q "pinned snapshot \"$W1\" until 20" "$T/out"
ok "pin says the note" grep -q "note of snapshot \"$W1\" set" "$T/out"
pgbakfs list --repo "$R" --json | jq -e ".[] | select(.id == \"$W1\") |
	(.pinned_until | test(\"^20[0-9-]{8}T[0-9:]{8}Z$\")) and .note == \"before the upgrade\"" >/dev/null
ok "list --json has pinned_until and note" test $? -eq 0
pgbakfs show "$W1" --repo "$R" --json | jq -e '(.pinned_until | type) == "string" and
	.note == "before the upgrade" and has("id") and has("start_time") and has("status") and
	has("verified") and has("bad_pages")' >/dev/null
ok "show --json has pinned_until and note, old keys kept" test $? -eq 0
ok "show text has pinned until" bash -c "'$PGBAKFS' show '$W1' --repo '$R' | grep -q '^pinned until:  20'"
ok "show text has the note" bash -c "'$PGBAKFS' show '$W1' --repo '$R' | grep -q '^note:          before the upgrade'"
ok "list text has the pin and note" bash -c "'$PGBAKFS' list --repo '$R' | grep '$W1' | grep -q 'Z  *w1  (note: before the upgrade)'"
ok "list text header" bash -c "'$PGBAKFS' list --repo '$R' | head -1 | grep -q 'PINNED UNTIL'"

# keep-within 7d: w1 pinned, w2 expired, w3 the newest ok (outside the window), w4 failed but recent
pgbakfs expire --repo "$R" --keep-within 7d >"$T/out"
expect_labels "keep-within keeps pinned, newest ok and recent" "$R" "w1 w3 w4"
ok "policy printed" grep -q "policy: keep-within 1w" "$T/out"

# pin ID --note alone changes only the note
pgbakfs pin "$W1" --repo "$R" --note "still needed" >/dev/null
ok "note alone keeps the pin" test "$(pgbakfs show "$W1" --repo "$R" --json | jq -r '.pinned_until | type')" = string
ok "note changed" test "$(pgbakfs show "$W1" --repo "$R" --json | jq -r .note)" = "still needed"

# unpin: the next expire (saved policy) deletes it
pgbakfs pin "$W1" --repo "$R" --unpin >"$T/out"
ok "unpin says so" grep -q "unpinned snapshot \"$W1\"" "$T/out"
ok "unpinned: pinned_until is null" test "$(pgbakfs show "$W1" --repo "$R" --json | jq -r .pinned_until)" = null
ok "unpinned: list --json null" test "$(pgbakfs list --repo "$R" --json | jq -r ".[] | select(.id == \"$W1\") | .pinned_until")" = null
pgbakfs pin "$W1" --repo "$R" --note "" >/dev/null
ok "empty note clears it" test "$(pgbakfs show "$W1" --repo "$R" --json | jq -r .note)" = null
pgbakfs expire --repo "$R" >/dev/null
expect_labels "unpinned snapshot expires" "$R" "w3 w4"
# the newest ok snapshot stays under the tightest policy
pgbakfs expire --repo "$R" --keep-within 1s --keep-last 1 >/dev/null
expect_labels "newest ok never deleted" "$R" "w3"
ok "check --read-data" pgbakfs check --repo "$R" --read-data
# a pin that has run out no longer protects
pgbakfs pin "$W3" --repo "$R" --ttl 1d >/dev/null
snap "$R" main w5
sql "$R" "UPDATE snapshots SET pinned_until = ($NOW - 10) * 1000000000 WHERE label = 'w3'"
ok "show marks an expired pin" bash -c "'$PGBAKFS' show '$W3' --repo '$R' | grep -q '(expired)'"
pgbakfs expire --repo "$R" >/dev/null
expect_labels "expired pin does not protect" "$R" "w5"

# ------------------------------------------------------------- WAL archive
R=$T/w
pgbakfs init --repo "$R" >/dev/null
mkdir -p "$T/wal"
WAL_NAMES="000000010000000000000001 000000010000000000000002 000000010000000000000003
000000010000000000000004 000000010000000000000005 000000010000000000000006
000000010000000000000002.00000028.backup 000000010000000000000004.partial
00000002.history 000000020000000000000005 000000020000000000000006 000000020000000000000007
000000030000000000000001"
wal_file() { # wal_file PATH: a well-formed WAL file (wal-push checks) of that name, contents of its own
	local n=${1##*/}
	case $n in
	*.history) printf '1\t0/5000090\tat %s\n' "$RANDOM" >"$1" ;;
	*.backup) printf 'START WAL LOCATION: 0/28 (file %s)\nLABEL: %s\n' "${n:0:24}" "$RANDOM" >"$1" ;;
	*) python3 "$PGBAKFS_SRC/tests/integration/mkwal.py" "$1" --text "$RANDOM$RANDOM" ;;
	esac
}
for n in $WAL_NAMES; do
	wal_file "$T/wal/$n"
	pgbakfs wal-push "$T/wal/$n" --repo "$R"
done
archived() { # archived NAME: 0 when wal-fetch finds it
	pgbakfs wal-fetch "$1" "$T/fetched" --repo "$R" >/dev/null 2>&1
}
expect_wal() { # expect_wal WHAT "kept names" "gone names"
	local n bad=""
	for n in $2; do archived "$n" || bad="$bad kept:$n"; done
	for n in $3; do ! archived "$n" || bad="$bad gone:$n"; done
	if [ -z "$bad" ]; then pass; else fail "$1: WAL not as expected:$bad"; fi
}
for l in a b c; do snap "$R" main $l; done
set_age "$R" a $((3 * DAY)); set_age "$R" b $((2 * DAY)); set_age "$R" c $((1 * DAY))
sql "$R" "UPDATE snapshots SET timeline = 1, start_lsn = '0/3000028' WHERE label = 'a';
          UPDATE snapshots SET timeline = 1, start_lsn = '0/5000028' WHERE label = 'b';
          UPDATE snapshots SET timeline = 2, start_lsn = '0/6000028' WHERE label = 'c'"

# keep-last 2: a goes; timeline 1 is cut below b's segment 5 (16 MiB segments:
# the pushed segments are 16 MiB); timeline 2 is kept whole
# while timeline 1 has a snapshot; timeline 3 has none
TL1_GONE="000000010000000000000001 000000010000000000000002 000000010000000000000003
000000010000000000000004 000000010000000000000002.00000028.backup 000000010000000000000004.partial"
pgbakfs expire --repo "$R" --keep-last 2 --dry-run >"$T/out"
for n in $TL1_GONE; do
	ok "dry run lists WAL $n" grep -q "would delete WAL \"$n\"" "$T/out"
done
ok "dry run lists 6 WAL files" test "$(grep -c 'would delete WAL' "$T/out")" -eq 6
ok "dry run summary for timeline 1" grep -q "timeline 1: would delete 6 WAL file(s)" "$T/out"
ok "timeline 2 kept, says why" grep -q "WAL of timeline 2 kept: recovery from a snapshot on an earlier timeline" "$T/out"
ok "timeline 3 kept, says why" grep -q "WAL of timeline 3 kept: no snapshot on that timeline" "$T/out"
expect_wal "dry run deletes no WAL" "$WAL_NAMES" ""

pgbakfs expire --repo "$R" --keep-last 2 >"$T/out"
expect_labels "WAL repo: a expired" "$R" "b c"
ok "timeline 1 summary" grep -q "timeline 1: deleted 6 WAL file(s)" "$T/out"
expect_wal "WAL before b's start expired" \
	"000000010000000000000005 000000010000000000000006 00000002.history 000000020000000000000005
	 000000020000000000000006 000000020000000000000007 000000030000000000000001" "$TL1_GONE"

# keep-last 1: b goes; timeline 1 has no snapshot left (kept), timeline 2 cut below c
pgbakfs expire --repo "$R" --keep-last 1 >"$T/out"
expect_labels "WAL repo: b expired" "$R" "c"
ok "timeline 1 kept, says why" grep -q "WAL of timeline 1 kept: no snapshot on that timeline" "$T/out"
expect_wal "timeline 2 cut below c" \
	"000000010000000000000005 000000010000000000000006 00000002.history 000000020000000000000006
	 000000020000000000000007 000000030000000000000001" "000000020000000000000005"

# a snapshot whose pg_wal holds 64 MiB segments: the bound follows that size
R=$T/w64
pgbakfs init --repo "$R" >/dev/null
for n in 000000010000000000000000 000000010000000000000001 000000010000000000000002 000000010000000000000007; do
	wal_file "$T/wal/$n" # 16 MiB segments: the archive's own size is not the snapshot's
	pgbakfs wal-push "$T/wal/$n" --repo "$R"
done
rm -rf "$T/src"; mkdir -p "$T/src/pg_wal"
truncate -s 64M "$T/src/pg_wal/000000010000000000000002"
pgbakfs backup --repo "$R" --from-dir "$T/src" --label s64 >/dev/null
sql "$R" "UPDATE snapshots SET timeline = 1, start_lsn = '0/8000028'"
pgbakfs expire --repo "$R" --keep-last 1 >/dev/null
expect_wal "64 MiB segments: 0 and 1 end before 0/8000028" \
	"000000010000000000000002 000000010000000000000007" \
	"000000010000000000000000 000000010000000000000001"

# a remaining snapshot with a timeline but no usable start LSN: the archive is kept whole
sql "$R" "UPDATE snapshots SET start_lsn = 'junk'"
pgbakfs expire --repo "$R" --keep-last 1 >"$T/out"
ok "unusable LSN keeps the WAL archive" grep -q "WAL archive kept whole" "$T/out"
expect_wal "nothing deleted with an unusable LSN" "000000010000000000000002 000000010000000000000007" ""
ok "check --read-data on the WAL repository" pgbakfs check --repo "$R" --read-data

finish
