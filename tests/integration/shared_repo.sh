# Root and the archiver share a directory repository: the archiver runs as
# the repository's owner (postgres), backups and maintenance often as root.
# Whatever root makes in it (init into postgres's empty directory, wal-push,
# backup, repair --rebuild-catalog) is postgres's from the moment it has its
# name, so postgres's wal-push can take every lock stripe, read every object
# and write into every directory root made. And root opening the catalog
# never makes the archiver fail: SQLite makes its -wal and -shm as root and
# gives them away after, so pgbakfs makes them first, already given
# (shim/slow_fchown.so holds SQLite's giving back 3 s, the window the
# archiver's wal-push fell into, exit 1, counted by PostgreSQL as a failure).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mnt.sh"
[ "$(id -u)" = 0 ] || skip "needs root (files made as root for another user)"
id postgres >/dev/null 2>&1 || { echo "FAIL: no postgres OS user" >&2; exit 1; }
mkwal() { python3 "$PGBAKFS_SRC/tests/integration/mkwal.py" "$@"; }
as_pg() { runuser -u postgres -- "$@"; }
R=$T/repo
W=$T/pg_wal # postgres's WAL files, pushed by postgres
mkdir -p "$R" "$W" "$T/root_wal" "$T/src"
chown postgres "$R" "$W"

# not_owned: what in the repository is not postgres's (empty: nothing)
not_owned() { find "$R" ! -user postgres -printf '%P\n' | head -5 | tr '\n' ' ' | sed 's/ $//'; }
# seg TLI N: a segment name
seg() { printf '%08X%08X%08X' "$1" 0 "$2"; }

ok "init as root into postgres's empty directory" pgbakfs init --repo "$R"
ok "... all of it is postgres's" test -z "$(not_owned)"

# root pushes segments of timelines 1 and 2 (a directory each, 24 names over the
# 64 lock stripes), then backs up a tree; 1 MiB segments
for i in $(seq 1 24); do mkwal "$T/root_wal/$(seg 1 $i)" --size 0x100000 --text "segment $i"; done
mkwal "$T/root_wal/$(seg 2 30)" --size 0x100000 --tli 2 --text "timeline 2"
ok "root pushes 25 WAL files" bash -c 'for f in "$1"/*; do "$2" wal-push "$f" --repo "$3" || exit 1; done' _ "$T/root_wal" "$PGBAKFS" "$R"
head -c 3000000 /dev/urandom >"$T/src/data"
ok "root backs up a tree" pgbakfs backup --from-dir "$T/src" --repo "$R" --no-progress
ok "what root made is postgres's (nothing else: $(not_owned))" test -z "$(not_owned)"

# postgres (the archiver) pushes the same files: each compared with root's copy, under root's stripes
cp "$T"/root_wal/* "$W/" && chown postgres "$W"/*
ok "postgres pushes root's 25 files again (each archived already)" as_pg bash -c 'for f in "$1"/*; do "$2" wal-push "$f" --repo "$3" || exit 1; done' _ "$W" "$PGBAKFS" "$R"
mkwal "$W/$(seg 2 31)" --size 0x100000 --tli 2 --text "postgres on timeline 2"
chown postgres "$W/$(seg 2 31)"
ok "postgres pushes into timeline 2's directory, which root made" as_pg "$PGBAKFS" wal-push "$W/$(seg 2 31)" --repo "$R"
ok "postgres fetches what root pushed" as_pg "$PGBAKFS" wal-fetch "$(seg 1 7)" "$W/fetched" --repo "$R"
ok "... the same bytes" cmp "$W/fetched" "$T/root_wal/$(seg 1 7)"
rm -f "$W/fetched"

ok "root rebuilds the catalog" pgbakfs repair --rebuild-catalog --repo "$R"
ok "... the new catalog is postgres's ($(not_owned))" test -z "$(not_owned)"
mkwal "$W/$(seg 1 40)" --size 0x100000 --text "after the repair"
chown postgres "$W/$(seg 1 40)"
ok "postgres pushes after root's repair" as_pg "$PGBAKFS" wal-push "$W/$(seg 1 40)" --repo "$R"

# root opens the catalog (list) while nobody has it open: SQLite makes and gives
# its -wal and -shm, the shim holds the giving back 3 s; postgres pushes meanwhile
rm -f "$R/catalog.db-wal" "$R/catalog.db-shm"
mkwal "$W/$(seg 1 41)" --size 0x100000 --text "while root opens the catalog"
chown postgres "$W/$(seg 1 41)"
env LD_PRELOAD="$PGBAKFS_SLOW_FCHOWN" PGBAKFS_SLOW_FCHOWN_MS=3000 \
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" \
	"$PGBAKFS" list --repo "$R" >"$T/list.out" 2>&1 &
LIST=$!
ok "root's list has the catalog's -wal" wait_for 20 test -e "$R/catalog.db-wal"
ok "postgres pushes while root's list opens the catalog" as_pg "$PGBAKFS" wal-push "$W/$(seg 1 41)" --repo "$R"
ok "root's list succeeds" wait "$LIST"
ok "... and lists the backup" grep_or_show "$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')" "$T/list.out"
ok "nothing in the repository is root's ($(not_owned))" test -z "$(not_owned)"
ok "check passes" pgbakfs check --repo "$R"
finish
