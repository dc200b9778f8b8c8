# Large directories as content-defined entry blocks (repository format 5):
# - a database directory of 1,500 files: one changed file adds < 64 KiB of
#   metadata (catalog pages in use + manifest) and the incremental's
#   manifest carries one block and the list; it restores identical, check
#   passes, the mount lists it;
# - gc after deleting snapshots keeps the blocks the rest use and drops the
#   others; repair --rebuild-catalog rebuilds lists and blocks, with the same
#   tree digests; an encrypted repository's catalog deltas carry them;
# - a format-4 repository (made by the format-4 release when PGBAKFS_FORMAT4
#   names its binary, else an init'ed one set to format 4) keeps single-row
#   directories, which that release reads, until upgrade; after it both
#   forms restore and rebuild, and the format-4 release refuses it in one
#   line (and its repair refuses a format-5 manifest's lists instead of
#   misreading them).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mnt.sh"
OLD4=${PGBAKFS_FORMAT4:-}
N=1500
mkdir -p "$T/src/base/5" "$T/src/global"
python3 - "$T/src/base/5" "$N" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, str(16384 + i)), "wb") as f:
        f.write(os.urandom(16) + bytes(8192 - 16))
PY
echo 15 >"$T/src/PG_VERSION"
echo control >"$T/src/global/pg_control"

snap_ids() { pgbakfs list --repo "$1" --json | jq -r '.[].id'; }
# catalog bytes in use (pages not on the free list), after a checkpoint
used_bytes() {
	sqlite3 "$1/catalog.db" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
	sqlite3 "$1/catalog.db" "SELECT ((SELECT page_count FROM pragma_page_count) -
		(SELECT freelist_count FROM pragma_freelist_count)) * (SELECT page_size FROM pragma_page_size)"
}
file_bytes() { stat -c %s "$1/catalog.db"; }
manifest_db() { rm -f "$2"; tail -c +25 "$1" | zstd -dq -o "$2"; }
sql() { sqlite3 "$1/catalog.db" "$2"; }
LISTS="SELECT count(*) FROM dirs WHERE substr(entries, 1, 1) = x'02'"
BLOCKS="SELECT count(*) FROM dirs WHERE substr(entries, 1, 1) = x'03'"
change() { printf '%s' "$2" | dd of="$T/${3:-src}/base/5/$1" bs=1 seek=100 conv=notrunc status=none; }
backup() { pgbakfs backup --repo "$1" --from-dir "$T/${2:-src}" --no-progress >/dev/null; }
restores() { # restores REPO SNAP EXPECTED_DIR
	rm -rf "$T/out"
	pgbakfs restore "$2" "$T/out" --repo "$1" >/dev/null && same_tree "$T/out" "$3"
}
digests() { sql "$1" "SELECT name, hex(tree_digest) FROM snapshots ORDER BY name"; }

# ---- 1. metadata per changed file ----
START=$SECONDS
R=$T/repo
pgbakfs init --repo "$R" >/dev/null
ok "init writes format 5" grep -qx 'format = 5' "$R/config"
backup "$R"
S1=$(snap_ids "$R")
cp -a "$T/src" "$T/v1"
B0=$(sql "$R" "$BLOCKS")
echo "base/5: $B0 blocks"
ok "base/5 is a list of blocks of ~64 entries" test "$(sql "$R" "$LISTS")" = 1 -a "$B0" -gt 10 -a "$B0" -lt 50
for k in 300 1200; do
	change $((16384 + k)) "$k"
	used=$(used_bytes "$R") size=$(file_bytes "$R")
	backup "$R"
	grew=$(($(used_bytes "$R") - used)) fgrew=$(($(file_bytes "$R") - size))
	name=$(snap_ids "$R" | tail -1)
	man=$(stat -c %s "$R/snapshots/$name")
	echo "one changed file of $N: catalog +$grew B in use (+$fgrew B file), manifest $man B"
	ok "file $k changed: catalog growth + manifest < 64 KiB" test $((grew + man)) -lt 65536
	ok "file $k changed: catalog file growth + manifest < 64 KiB" test $((fgrew + man)) -lt 65536
done
S2=$(snap_ids "$R" | sed -n 2p)
S3=$(snap_ids "$R" | tail -1)
manifest_db "$R/snapshots/$S3" "$T/m3.db"
ok "the incremental carries the forest, the root, base, the list and one block" \
	test "$(sqlite3 "$T/m3.db" "SELECT count(*), sum(substr(entries, 1, 1) = x'02'), sum(substr(entries, 1, 1) = x'03') FROM dirs")" = "5|1|1"
ok "the last snapshot restores identical" restores "$R" "$S3" "$T/src"
ok "check passes" pgbakfs check --repo "$R"
mount_fg "$T/mnt" "$T/mount.log" --repo "$R"
ok "the mount lists base/5" test "$(ls "$T/mnt/$S3/base/5" | wc -l)" = "$N"
ok "and reads a changed file" cmp -s "$T/mnt/$S3/base/5/$((16384 + 300))" "$T/src/base/5/$((16384 + 300))"
ok "unmount" unmount_fg "$T/mnt"

# ---- 2. gc: the blocks the rest use stay, the others go ----
ok "3 lists, 2 blocks more than the full" test "$(sql "$R" "$LISTS") $(sql "$R" "$BLOCKS")" = "3 $((B0 + 2))"
digests "$R" >"$T/digests.before"
pgbakfs delete "$S1" --repo "$R" >/dev/null
pgbakfs delete "$S2" --repo "$R" >/dev/null
pgbakfs gc --repo "$R" >/dev/null
ok "gc leaves 1 list and as many blocks as the full had" \
	test "$(sql "$R" "$LISTS") $(sql "$R" "$BLOCKS")" = "1 $B0"
ok "check passes after gc" pgbakfs check --repo "$R"
pgbakfs repair --rebuild-catalog --repo "$R" >"$T/repair.out" 2>&1
ok "repair rebuilds with no warning" bash -c "! grep -v '^repair: rebuilt' '$T/repair.out'"
ok "lists and blocks come back" test "$(sql "$R" "$LISTS") $(sql "$R" "$BLOCKS")" = "1 $B0"
ok "the tree digest is the one from before" test "$(digests "$R")" = "$(grep "^$S3|" "$T/digests.before")"
ok "it restores after the rebuild" restores "$R" "$S3" "$T/src"

# an encrypted repository publishes its catalog as deltas: blocks travel as rows
E=$T/enc
export PGBAKFS_PASSPHRASE="dirblocks test passphrase"
pgbakfs init --repo "$E" --encrypt >/dev/null
pgbakfs backup --repo "$E" --from-dir "$T/v1" --no-progress --cache-dir "$T/cacheA" >/dev/null
pgbakfs backup --repo "$E" --from-dir "$T/src" --no-progress --cache-dir "$T/cacheA" >/dev/null
rm -rf "$T/out"
pgbakfs restore latest "$T/out" --repo "$E" --cache-dir "$T/cacheB" >/dev/null
ok "an empty cache of an encrypted repository restores its blocks" same_tree "$T/out" "$T/src"
ok "with them as lists and blocks" test \
	"$(sqlite3 "$(echo "$T"/cacheB/*/catalog.db)" "$LISTS")" = 2
unset PGBAKFS_PASSPHRASE
echo "part 1-2: $((SECONDS - START)) s"

# ---- 3. format 4: single rows, kept until upgrade ----
F=$T/f4
cp -a "$T/v1" "$T/f4src"
if [ -x "$OLD4" ]; then
	"$OLD4" init --repo "$F" >/dev/null
	"$OLD4" backup --repo "$F" --from-dir "$T/f4src" --no-progress >/dev/null
else
	echo "note: no format-4 release (PGBAKFS_FORMAT4): a format-4 repository is simulated"
	pgbakfs init --repo "$F" >/dev/null
	sed -i 's/^format = .*$/format = 4/' "$F/config"
	backup "$F" f4src
fi
change $((16384 + 10)) a f4src
backup "$F" f4src
ok "a format-4 repository stays format 4" grep -qx 'format = 4' "$F/config"
ok "its directories stay single rows" test "$(sql "$F" "$LISTS") $(sql "$F" "$BLOCKS")" = "0 0"
G1=$(snap_ids "$F" | head -1)
G2=$(snap_ids "$F" | tail -1)
ok "the new binary's format-4 snapshot restores" restores "$F" "$G2" "$T/f4src"
if [ -x "$OLD4" ]; then
	ok "the format-4 release restores the new binary's snapshot" \
		bash -c "rm -rf '$T/old-out'; '$OLD4' restore '$G2' '$T/old-out' --repo '$F' >/dev/null && cmp -s '$T/old-out/base/5/16394' '$T/f4src/base/5/16394'"
	ok "and its check passes" "$OLD4" check --repo "$F"
	# a format-5 repository's manifests, under a config that lies: refused, not misread
	cp -a "$R" "$T/liar"
	sed -i 's/^format = .*$/format = 4/' "$T/liar/config"
	"$OLD4" repair --rebuild-catalog --repo "$T/liar" >/dev/null 2>"$T/liar.err" &&
		fail "the format-4 repair took a format-5 manifest" || pass
	rm -rf "$T/out"
	"$OLD4" restore "$S3" "$T/out" --repo "$T/liar" >/dev/null 2>&1 &&
		fail "the format-4 release restored a tree it cannot read" || pass
fi
pgbakfs upgrade --repo "$F" >"$T/upgrade.out"
ok "upgrade says what it did" grep_or_show 'upgraded from format 4 to format 5' "$T/upgrade.out"
ok "upgrade writes format 5" grep -qx 'format = 5' "$F/config"
if [ -x "$OLD4" ]; then
	expect_error 1 "newer format" "$OLD4" list --repo "$F"
fi
ok "upgrade leaves the single rows as they are" test "$(sql "$F" "$LISTS")" = 0
change $((16384 + 20)) b f4src
backup "$F" f4src
G3=$(snap_ids "$F" | tail -1)
ok "a snapshot after the upgrade writes base/5 as blocks" test "$(sql "$F" "$LISTS")" = 1
ok "a single-row snapshot restores after the upgrade" restores "$F" "$G1" "$T/v1"
pgbakfs repair --rebuild-catalog --repo "$F" >/dev/null 2>"$T/repair4.err"
ok "both forms rebuild without warnings" test ! -s "$T/repair4.err"
ok "both forms come back in their form" test "$(sql "$F" "$LISTS") $(sql "$F" "SELECT count(*) FROM dirs WHERE n >= $N AND substr(entries, 1, 1) = x'01'")" = "1 2"
ok "the block snapshot restores after the rebuild" restores "$F" "$G3" "$T/f4src"
ok "check passes after the rebuild" pgbakfs check --repo "$F"
finish
