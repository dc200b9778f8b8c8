# Chunk-id lists as shared id blocks (repository format 2), and manifests
# that carry each directory and chunk list once (format 3):
# - a one-page change in a 64 MiB file adds < 64 KiB of metadata (catalog
#   growth + manifest bytes) per snapshot, and restores byte-identical; the
#   incremental's manifest carries only its new directories, list and block;
# - the parent deleted and collected, its blocks, lists and directories move
#   to the child's manifest: repair --rebuild-catalog still restores the
#   child, with the same tree digests; a manifest missing: the snapshots
#   naming what it carried are kept failed and named; a damaged id block is
#   named by check, refused by restore, rebuilt by repair;
# - a format-1 repository (made by the previous release when
#   PGBAKFS_FORMAT1 names its binary, else an init'ed one set to format 1)
#   keeps backing up and restoring in format 1; upgrade converts it, the
#   previous release refuses it, and it restores and rebuilds after; an
#   upgrade cut short leaves a repository that opens, and upgrade again
#   finishes it; an encrypted repository upgrades under the writer lock;
# - format 4 writes 62-id blocks named by delta varints (contents.blocks 2),
#   and a one-page change grows the catalog by less than two pages; a
#   format-3 repository (made by the format-3 release when PGBAKFS_FORMAT3
#   names its binary, else an init'ed one set to format 3) keeps 256-id
#   blocks, which that release reads, until upgrade; after it both kinds
#   restore and rebuild, and the format-3 release refuses it in one line.
. "$(dirname "$0")/lib.sh"
OLD=${PGBAKFS_FORMAT1:-/tmp/pgbakfs-main/pgbakfs}
OLD3=${PGBAKFS_FORMAT3:-}
MIB=64
mkdir -p "$T/src"
head -c $((MIB << 20)) /dev/urandom >"$T/src/big"
echo small >"$T/src/small"

# one 8 KiB page of the big file rewritten in place, at page $1 (of ${2:-src})
touch_page() {
	head -c 8192 /dev/urandom | dd of="$T/${2:-src}/big" bs=8192 seek="$1" conv=notrunc status=none
}
snap_ids() { pgbakfs list --repo "$1" --json | jq -r '.[].id'; }
cat_bytes() { stat -c %s "$1/catalog.db"; }
# the SQLite image of manifest $1 (after the small-object header: a zstd frame) into $2
manifest_db() { rm -f "$2"; tail -c +25 "$1" | zstd -dq -o "$2"; }
rows() { sqlite3 "$1" "SELECT count(*) FROM $2"; }
digests() { sqlite3 "$1/catalog.db" "SELECT name, hex(tree_digest) FROM snapshots ORDER BY name"; }
restores() { # restores REPO SNAP EXPECTED_DIR
	rm -rf "$T/out"
	pgbakfs restore "$2" "$T/out" --repo "$1" >/dev/null && cmp -s "$T/out/big" "$3/big"
}

# ---- 1. metadata per one-page change ----
R=$T/repo
pgbakfs init --repo "$R" >/dev/null
ok "init writes format 5" grep -qx 'format = 5' "$R/config"
pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null
cp "$T/src/big" "$T/big.1"
for i in 1 2 3; do
	touch_page $((i * 1000))
	# the catalog checkpointed: its file holds everything committed
	before=$(cat_bytes "$R")
	pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null
	after=$(cat_bytes "$R")
	name=$(snap_ids "$R" | tail -1)
	man=$(stat -c %s "$R/snapshots/$name")
	echo "one-page change in a $MIB MiB file: catalog +$((after - before)) B, manifest $man B"
	ok "snapshot $i: catalog growth + manifest < 64 KiB" test $((after - before + man)) -lt 65536
	# a 256-id block alone took two overflow pages (8 KiB); a 62-id block is half a page
	ok "snapshot $i: catalog growth < 8 KiB" test $((after - before)) -lt 8192
done
FIRST=$(snap_ids "$R" | head -1)
LAST=$(snap_ids "$R" | tail -1)
ok "the last snapshot restores byte-identical" restores "$R" "$LAST" "$T/src"
mkdir -p "$T/first" && mv "$T/big.1" "$T/first/big"
ok "the first snapshot restores byte-identical" restores "$R" "$FIRST" "$T/first"
ok "check passes" pgbakfs check --repo "$R"
# what each manifest carries: the full all of it, an incremental only what is new
# (the forest and the root, whose entry for big changed; big's list; one block)
manifest_db "$R/snapshots/$FIRST" "$T/m-first.db"
manifest_db "$R/snapshots/$LAST" "$T/m-last.db"
ok "manifests are format 3" test "$(sqlite3 "$T/m-last.db" "SELECT value FROM meta WHERE key = 'manifest_format'")" = 3
ok "the full carries its 2 directories, 2 lists and 17 blocks of 62 ids" \
	test "$(rows "$T/m-first.db" dirs) $(rows "$T/m-first.db" contents) $(rows "$T/m-first.db" idblocks)" = "2 2 17"
ok "lists are 62-id blocks named by delta varints" test \
	"$(sqlite3 "$R/catalog.db" "SELECT group_concat(DISTINCT blocks), max(length(list)) < 40 FROM contents WHERE n = 1024") $(sqlite3 "$R/catalog.db" 'SELECT max(n) FROM idblocks')" = "2|1 62"
ok "manifests carry the list's form" test "$(sqlite3 "$T/m-last.db" 'SELECT blocks FROM contents')" = 2
ok "the incremental carries 2 directories, 1 list, 1 block, no file rows" \
	test "$(rows "$T/m-last.db" dirs) $(rows "$T/m-last.db" contents) $(rows "$T/m-last.db" idblocks) $(rows "$T/m-last.db" files)" = "2 1 1 0"
digests "$R" >"$T/digests.before"

# ---- 2. the parent goes: its blocks, lists and directories move to the child's manifest ----
pgbakfs delete "$FIRST" --repo "$R" >/dev/null
pgbakfs gc --repo "$R" >/dev/null
ok "the first manifest is gone" test ! -e "$R/snapshots/$FIRST"
SECOND=$(snap_ids "$R" | head -1)
manifest_db "$R/snapshots/$SECOND" "$T/m-second.db"
ok "the child's manifest now carries small's list too" test "$(rows "$T/m-second.db" contents)" = 2
pgbakfs repair --rebuild-catalog --repo "$R" >"$T/repair.out" 2>&1
only_rebuilt() { ! grep -v '^repair: rebuilt' "$1"; }
ok "repair rebuilds with no warning" only_rebuilt "$T/repair.out"
ok "repair makes shared trees" test "$(rows "$R/catalog.db" files)" = 0
ok "the tree digests are those from before" \
	bash -c "grep -v '^$FIRST|' '$T/digests.before' | cmp -s - <(sqlite3 '$R/catalog.db' \"SELECT name, hex(tree_digest) FROM snapshots ORDER BY name\")"
ok "the child restores after the rebuild" restores "$R" "$LAST" "$T/src"
ok "check --read-data passes after the rebuild" pgbakfs check --read-data --repo "$R"

# a manifest missing: what only it carried is gone, so the snapshots naming it are failed
mv "$R/snapshots/$SECOND" "$T/second.manifest"
rc=0; pgbakfs repair --rebuild-catalog --repo "$R" >/dev/null 2>"$T/repair-missing.err" || rc=$?
ok "repair exits 1 without the carrier's manifest" test "$rc" = 1
ok "repair names the dependent snapshot" \
	grep_or_show "snapshot \"$LAST\" names .* that no manifest holds): kept as failed" "$T/repair-missing.err"
ok "it is listed as failed" test "$(pgbakfs list --repo "$R" --json | jq -r ".[] | select(.id == \"$LAST\") | .status")" = failed
rm -rf "$T/out"
expect_error 1 "damaged" pgbakfs restore "$LAST" "$T/out" --repo "$R"
mv "$T/second.manifest" "$R/snapshots/$SECOND"
pgbakfs repair --rebuild-catalog --repo "$R" >"$T/repair-back.out" 2>&1
ok "with the manifest back, repair is clean again" only_rebuilt "$T/repair-back.out"
ok "and the child restores" restores "$R" "$LAST" "$T/src"

# a damaged id block: check names it, restore refuses, repair rebuilds it from its manifest
sqlite3 "$R/catalog.db" "UPDATE idblocks SET ids = zeroblob(length(ids)) WHERE id =
	(SELECT min(id) FROM idblocks WHERE carrier = (SELECT id FROM snapshots WHERE name = '$LAST'))"
pgbakfs check --repo "$R" >/dev/null 2>"$T/check-bad.err" && fail "check missed a damaged id block" || pass
ok "check names the damaged id block" grep_or_show 'catalog is damaged: id block [0-9a-f]* does not match its hash' "$T/check-bad.err"
rm -rf "$T/out"
expect_error 1 "is damaged in the catalog" pgbakfs restore "$LAST" "$T/out" --repo "$R"
pgbakfs repair --rebuild-catalog --repo "$R" >/dev/null
ok "the rebuilt id block restores" restores "$R" "$LAST" "$T/src"

# ---- 3. format 1: kept, then upgraded ----
# a smaller file (320 chunks: two blocks) keeps the many restores below cheap
F=$T/f1
mkdir -p "$T/f1src"
head -c $((20 << 20)) /dev/urandom >"$T/f1src/big"
if [ -x "$OLD" ]; then
	"$OLD" init --repo "$F" >/dev/null
	"$OLD" backup --repo "$F" --from-dir "$T/f1src" --no-progress >/dev/null
else
	echo "note: no previous release at $OLD (PGBAKFS_FORMAT1): a format-1 repository is simulated"
	pgbakfs init --repo "$F" >/dev/null
	sed -i 's/^format = .*$/format = 1/' "$F/config"
	pgbakfs backup --repo "$F" --from-dir "$T/f1src" --no-progress >/dev/null
fi
mkdir -p "$T/v1" && cp "$T/f1src/big" "$T/v1/big"
touch_page 5 f1src
pgbakfs backup --repo "$F" --from-dir "$T/f1src" --no-progress >/dev/null
ok "a format-1 repository stays format 1" grep -qx 'format = 1' "$F/config"
ok "no list in it is stored as blocks" test "$(sqlite3 "$F/catalog.db" 'SELECT count(*) FROM idblocks')" = 0
V1=$(snap_ids "$F" | head -1)
V2=$(snap_ids "$F" | tail -1)
ok "the new binary's format-1 snapshot restores" restores "$F" "$V2" "$T/f1src"
if [ -x "$OLD" ]; then
	ok "the previous release still reads the new binary's snapshot" \
		bash -c "'$OLD' restore '$V2' '$T/old-out' --repo '$F' >/dev/null && cmp -s '$T/old-out/big' '$T/f1src/big'"
	ok "and its check passes" "$OLD" check --repo "$F"
	cp -a "$F" "$T/f1rep"
	pgbakfs repair --rebuild-catalog --repo "$T/f1rep" >/dev/null 2>&1
	ok "and it reads the catalog this binary rebuilt" "$OLD" list --repo "$T/f1rep"
fi
# an upgrade cut short: its config write fails (nothing changes), or its first
# manifest write fails (format 4, lists converted, manifests pending): the
# repository opens and restores, and upgrade again finishes it
cp -a "$F" "$T/f1cut"
PGBAKFS_TEST_FAULTS="put:1=EIO" "$PGBAKFS" upgrade --repo "$T/f1cut" >/dev/null 2>"$T/cut1.err" &&
	fail "a failed config write went unnoticed" || pass
ok "a failed config write leaves format 1" grep -qx 'format = 1' "$T/f1cut/config"
PGBAKFS_TEST_FAULTS="put:2=EIO" "$PGBAKFS" upgrade --repo "$T/f1cut" >/dev/null 2>"$T/cut2.err" &&
	fail "a failed manifest write went unnoticed" || pass
ok "the cut-short upgrade says to run it again" grep_or_show 'run "pgbakfs upgrade" again' "$T/cut2.err"
ok "it left format 5" grep -qx 'format = 5' "$T/f1cut/config"
ok "the cut-short repository restores" restores "$T/f1cut" "$V1" "$T/v1"
cp -a "$T/f1cut" "$T/f1cut-repair"
pgbakfs repair --rebuild-catalog --repo "$T/f1cut-repair" >/dev/null 2>"$T/cut-repair.err"
ok "it rebuilds from its manifests (old and new) without warnings" test ! -s "$T/cut-repair.err"
ok "and restores after the rebuild" restores "$T/f1cut-repair" "$V2" "$T/f1src"
pgbakfs upgrade --repo "$T/f1cut" >"$T/cut3.out"
ok "upgrade again finishes it" grep_or_show 'already format 5' "$T/cut3.out"
ok "every manifest is written again then" test \
	"$(sqlite3 "$T/f1cut/catalog.db" 'SELECT count(*) FROM manifest_state')" = 2

pgbakfs upgrade --repo "$F" >"$T/upgrade.out"
ok "upgrade says what it did" grep_or_show 'upgraded from format 1 to format 5: 2 chunk list(s)' "$T/upgrade.out"
ok "upgrade writes format 5" grep -qx 'format = 5' "$F/config"
ok "upgrade output is one line" test "$(wc -l <"$T/upgrade.out")" = 1
pgbakfs upgrade --repo "$F" >"$T/upgrade2.out"
ok "a second upgrade is a no-op" grep_or_show 'is already format 5' "$T/upgrade2.out"
if [ -x "$OLD" ]; then
	expect_error 1 "newer format" "$OLD" list --repo "$F"
fi
ok "snapshot 1 restores after upgrade" restores "$F" "$V1" "$T/v1"
ok "snapshot 2 restores after upgrade" restores "$F" "$V2" "$T/f1src"
ok "lists are blocks now" test "$(sqlite3 "$F/catalog.db" 'SELECT count(*) FROM contents WHERE blocks = 0 AND n > 256')" = 0
pgbakfs repair --rebuild-catalog --repo "$F" >/dev/null 2>"$T/repair2.err"
ok "repair rebuilds the upgraded repository without warnings" test ! -s "$T/repair2.err"
ok "snapshot 1 restores after its rebuild" restores "$F" "$V1" "$T/v1"
ok "snapshot 2 restores after its rebuild" restores "$F" "$V2" "$T/f1src"
ok "check passes after the rebuild" pgbakfs check --repo "$F"
expect_error 2 "unexpected argument" pgbakfs upgrade extra --repo "$F"

# ---- 4. a published catalog (encrypted): upgrade under the writer lock ----
E=$T/enc
export XDG_CACHE_HOME=$T/cache PGBAKFS_PASSPHRASE="idblocks test passphrase"
pgbakfs init --repo "$E" --encrypt >/dev/null
sed -i 's/^format = .*$/format = 1/' "$E/config" # as an earlier release made it
pgbakfs backup --repo "$E" --from-dir "$T/f1src" --no-progress >/dev/null
EV=$(snap_ids "$E")
pgbakfs upgrade --repo "$E" >"$T/upgrade-enc.out"
ok "the encrypted repository upgrades" grep_or_show 'upgraded from format 1 to format 5: 1 chunk list(s)' "$T/upgrade-enc.out"
touch_page 7 f1src
pgbakfs backup --repo "$E" --from-dir "$T/f1src" --no-progress >/dev/null
EV2=$(snap_ids "$E" | tail -1)
ok "its new snapshot restores" restores "$E" "$EV2" "$T/f1src"
pgbakfs repair --rebuild-catalog --repo "$E" >/dev/null 2>"$T/repair-enc.err"
ok "it rebuilds without warnings" test ! -s "$T/repair-enc.err"
ok "its new snapshot restores after the rebuild" restores "$E" "$EV2" "$T/f1src"
ok "its first snapshot is still there" test "$(snap_ids "$E" | head -1)" = "$EV"
unset XDG_CACHE_HOME PGBAKFS_PASSPHRASE

# ---- 5. format 3: 256-id blocks kept, then upgraded to 62-id blocks ----
G=$T/f3
if [ -x "$OLD3" ]; then
	"$OLD3" init --repo "$G" >/dev/null
	"$OLD3" backup --repo "$G" --from-dir "$T/f1src" --no-progress >/dev/null
else
	echo "note: no format-3 release (PGBAKFS_FORMAT3): a format-3 repository is simulated"
	pgbakfs init --repo "$G" >/dev/null
	sed -i 's/^format = .*$/format = 3/' "$G/config"
	pgbakfs backup --repo "$G" --from-dir "$T/f1src" --no-progress >/dev/null
fi
cp "$T/f1src/big" "$T/v3.big"
touch_page 9 f1src
pgbakfs backup --repo "$G" --from-dir "$T/f1src" --no-progress >/dev/null
G2=$(snap_ids "$G" | tail -1)
ok "a format-3 repository stays format 3" grep -qx 'format = 3' "$G/config"
ok "its lists stay 256-id blocks" test \
	"$(sqlite3 "$G/catalog.db" "SELECT group_concat(DISTINCT blocks) FROM contents WHERE n > 256") $(sqlite3 "$G/catalog.db" 'SELECT max(n) FROM idblocks')" = "1 256"
if [ -x "$OLD3" ]; then
	ok "the format-3 release restores the new binary's snapshot" \
		bash -c "rm -rf '$T/old3-out'; '$OLD3' restore '$G2' '$T/old3-out' --repo '$G' >/dev/null && cmp -s '$T/old3-out/big' '$T/f1src/big'"
	ok "and its check passes" "$OLD3" check --repo "$G"
fi
pgbakfs upgrade --repo "$G" >"$T/upgrade3.out"
ok "upgrade from format 3 converts nothing" grep_or_show 'upgraded from format 3 to format 5: 0 chunk list(s)' "$T/upgrade3.out"
if [ -x "$OLD3" ]; then
	expect_error 1 "newer format" "$OLD3" list --repo "$G"
fi
touch_page 11 f1src
pgbakfs backup --repo "$G" --from-dir "$T/f1src" --no-progress >/dev/null
G3=$(snap_ids "$G" | tail -1)
ok "lists written after the upgrade are 62-id blocks" test \
	"$(sqlite3 "$G/catalog.db" "SELECT group_concat(blocks, ',') FROM (SELECT blocks FROM contents WHERE n > 256 ORDER BY id)")" = "1,1,2"
mkdir -p "$T/v3" && mv "$T/v3.big" "$T/v3/big"
ok "a 256-id-block snapshot restores after the upgrade" restores "$G" "$(snap_ids "$G" | head -1)" "$T/v3"
ok "a 62-id-block snapshot restores" restores "$G" "$G3" "$T/f1src"
pgbakfs repair --rebuild-catalog --repo "$G" >/dev/null 2>"$T/repair3.err"
ok "both kinds rebuild without warnings" test ! -s "$T/repair3.err"
ok "both kinds come back in their form" test \
	"$(sqlite3 "$G/catalog.db" "SELECT group_concat(DISTINCT blocks) FROM (SELECT blocks FROM contents WHERE n > 256 ORDER BY blocks)")" = "1,2"
ok "the last snapshot restores after the rebuild" restores "$G" "$G3" "$T/f1src"
ok "check --read-data passes after the rebuild" pgbakfs check --read-data --repo "$G"
finish
