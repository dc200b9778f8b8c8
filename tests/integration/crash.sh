# A backup killed with SIGKILL at many points leaves a repository that passes
# check, lists no partial snapshot, and whose leftovers gc removes. A torn pack
# write (fault driver) is handled the same way.
. "$(dirname "$0")/lib.sh"
R=$T/repo
mkdir -p "$T/src"
for i in $(seq 1 12); do head -c 2500000 /dev/urandom >"$T/src/f$i"; done
seq 1 500000 >"$T/src/text"
pgbakfs init --repo "$R" --pack-size 1M >/dev/null

db() { python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$R/catalog.db" "$1"; }
newest_bytes() { pgbakfs show latest --repo "$R" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["logical_bytes"], d["files"])'; }
n_snapshots() { pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

start=$(date +%s%N)
pgbakfs backup --repo "$R" --from-dir "$T/src" -j 2 --no-progress >/dev/null
full_ms=$(( ($(date +%s%N) - start) / 1000000 ))
expected=1
src_bytes="$(cat "$T"/src/* | wc -c) 14"
echo "one backup takes ${full_ms} ms"

for i in $(seq 1 20); do
	# change part of the data so each run writes new packs
	head -c 2500000 /dev/urandom >"$T/src/f$(( i % 12 + 1 ))"
	delay_ms=$(( (RANDOM % (full_ms + 50)) ))
	"$PGBAKFS" backup --repo "$R" --from-dir "$T/src" -j 2 --no-progress >/dev/null 2>&1 &
	pid=$!
	sleep "$(printf '0.%03d' "$delay_ms")"
	kill -9 "$pid" 2>/dev/null || true
	rc=0; wait "$pid" || rc=$?
	got=$(n_snapshots)
	# exit 0: it completed; killed: it may still have committed just before the kill
	if [ "$rc" -eq 0 ] && [ "$got" -ne $((expected + 1)) ]; then
		fail "iteration $i: completed backup not listed"
	elif [ "$got" -ne "$expected" ] && [ "$got" -ne $((expected + 1)) ]; then
		fail "iteration $i: $got snapshots listed, expected $expected or $((expected + 1))"
	fi
	expected=$got
	# whatever is listed is complete: the newest snapshot has every byte of the source
	ok "iteration $i: newest snapshot is complete" test "$(newest_bytes)" = "$src_bytes"
	ok "check passes after kill at ${delay_ms} ms" pgbakfs check --repo "$R" >/dev/null
done
ok "check --read-data after all kills" pgbakfs check --repo "$R" --read-data >/dev/null

# a torn pack object and a failed put, from the fault-injecting driver
head -c 5000000 /dev/urandom >"$T/src/f1"
PGBAKFS_TEST_FAULTS="put:3=crash" "$PGBAKFS" backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null 2>&1 && fail "torn write went unnoticed" || pass
head -c 5000000 /dev/urandom >"$T/src/f2"
PGBAKFS_TEST_FAULTS="put:2=EIO" "$PGBAKFS" backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null 2>&1 && fail "EIO went unnoticed" || pass
ok "no partial snapshot after faults" test "$(n_snapshots)" = "$expected"
ok "check passes after faults" pgbakfs check --repo "$R" --read-data >/dev/null

ok "gc" pgbakfs gc --repo "$R" >"$T/gc.out"
cat "$T/gc.out"
ok "no sessions left" test "$(db 'select count(*) from sessions')" = 0
ok "no running snapshots left" test "$(db "select count(*) from snapshots where status='running'")" = 0
ok "no pending packs left" test "$(db "select count(*) from packs where state='pending'")" = 0
ok "pack objects match the catalog" test "$(n_pack_files "$R")" = "$(db 'select count(*) from packs')"
ok "no temporary files left" test -z "$(find "$R/packs" -name '.tmp-*')"
ok "no unreferenced chunks left" test "$(db 'select count(*) from chunks where condemned is not null')" = 0
ok "check --read-data after gc" pgbakfs check --repo "$R" --read-data >/dev/null
ok "latest restores" pgbakfs restore latest "$T/out" --repo "$R" --no-progress >/dev/null
finish
