# backup and gc at the same time never lose a chunk: snapshots are deleted
# and gc runs in a loop while backups reuse the very chunks gc wants to drop.
. "$(dirname "$0")/lib.sh"
R=$T/repo
mkdir -p "$T/src"
for i in $(seq 1 8); do head -c 3000000 /dev/urandom >"$T/src/f$i"; done
pgbakfs init --repo "$R" --pack-size 1M >/dev/null

for round in $(seq 1 6); do
	pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null
	old=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))')
	# every chunk of src is now referenced only by the snapshots we delete next
	for id in $old; do pgbakfs delete "$id" --repo "$R" >/dev/null; done
	head -c 3000000 /dev/urandom >"$T/src/f$(( round % 8 + 1 ))"
	"$PGBAKFS" backup --repo "$R" --from-dir "$T/src" -j 2 --no-progress >/dev/null &
	bpid=$!
	gc_runs=0
	while kill -0 "$bpid" 2>/dev/null; do
		"$PGBAKFS" gc --repo "$R" >/dev/null 2>&1 || true
		gc_runs=$((gc_runs + 1))
	done
	ok "round $round: backup succeeded beside $gc_runs gc runs" wait "$bpid"
	ok "round $round: a gc after the backup" pgbakfs gc --repo "$R" >/dev/null
	ok "round $round: check --read-data" pgbakfs check --repo "$R" --read-data >/dev/null
	rm -rf "$T/out"
	ok "round $round: restore" pgbakfs restore latest "$T/out" --repo "$R" --no-progress >/dev/null
	ok "round $round: identical" same_tree "$T/src" "$T/out"
done
finish
