# The catalog and the manifests vouch for themselves, and repair keeps every
# acknowledged backup:
# - repair --rebuild-catalog refuses while anything has the repository open
#   (a backup beside it used to commit into the replaced catalog and vanish);
# - a repair killed at any file operation leaves a catalog that opens;
# - a snapshot's files carry a tree digest: an edited catalog row is found by
#   check, refused by restore and by the mount; a manifest whose rows do not
#   give its digest is not imported; repair exits 1 for a snapshot whose
#   chunks no pack holds (a deleted snapshot's leftover manifest);
# - names from the catalog never lead outside the target (an extra root "/..").
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mnt.sh"
R=$T/repo
mkdir -p "$T/src/base/5" "$T/src/global" "$T/big"
seq 1 100000 >"$T/src/base/5/3079"
head -c 300000 /dev/urandom >"$T/src/base/5/3079_fsm"
echo control >"$T/src/global/pg_control"
head -c 400000000 /dev/urandom >"$T/big/data"
pgbakfs init --repo "$R" --pack-size 4M >/dev/null
pgbakfs backup --repo "$R" --from-dir "$T/src" --label first --no-progress >/dev/null
SNAP=$(pgbakfs list --repo "$R" --json | jq -r '.[0].id')
n_snaps() { pgbakfs list --repo "$R" --json | jq length; }

# ---- 1. repair beside a backup ----
"$PGBAKFS" backup --repo "$R" --from-dir "$T/big" -j 1 --label big --no-progress >"$T/big.out" 2>&1 &
BPID=$!
# the backup has the catalog open once its session lock exists
wait_for 30 bash -c "ls '$R/locks' | grep -q '\.lock$'"
running=0; kill -0 $BPID 2>/dev/null && running=1
expect_error 1 "is in use" pgbakfs repair --rebuild-catalog --repo "$R"
brc=0; wait $BPID || brc=$?
ok "the backup was still running when repair was refused" test "$running" = 1
ok "the backup beside repair succeeds" test "$brc" = 0
ok "the backup beside repair is listed" test "$(n_snaps)" = 2
ok "check passes after it" pgbakfs check --repo "$R" >/dev/null
BIG=$(pgbakfs list --repo "$R" --json | jq -r '.[] | select(.label == "big") | .id')
pgbakfs delete "$BIG" --repo "$R" >/dev/null
pgbakfs gc --repo "$R" >/dev/null
rm -rf "$T/big"

# while repair runs, nothing else opens the repository (this shell's flock on a
# descriptor of its own stands in for it)
exec {LOCKFD}<"$R/locks/in-use"
flock -x -n $LOCKFD
ok "the stand-in holds the lock" bash -c "! flock -n -s '$R/locks/in-use' true"
expect_error 1 "is being repaired" pgbakfs list --repo "$R"
flock -u $LOCKFD && exec {LOCKFD}<&-

# the archiver (the repository's owner) is kept out too, though root made the lock file
if id postgres >/dev/null 2>&1; then
	chown -R postgres "$R"
	pgbakfs list --repo "$R" >/dev/null # root opens it: the lock file goes to postgres
	ok "the lock file belongs to the repository's owner" test "$(stat -c %U "$R/locks/in-use")" = postgres
	exec {LOCKFD}<"$R/locks/in-use"
	flock -x -n $LOCKFD
	ok "the stand-in holds the lock again" bash -c "! flock -n -s '$R/locks/in-use' true"
	expect_error 1 "is being repaired" runuser -u postgres -- "$PGBAKFS" list --repo "$R"
	flock -u $LOCKFD && exec {LOCKFD}<&-
	chown -R root "$R"
fi

# a mount holds the repository open too
mount_fg "$T/mnt" "$T/mount.log" --repo "$R"
expect_error 1 "is in use" pgbakfs repair --rebuild-catalog --repo "$R"
ok "the mount serves on" test -s "$T/mnt/$SNAP/base/5/3079"
unmount_fg "$T/mnt" || fail "unmount"

# ---- 2. a repair killed at any file operation leaves a catalog ----
for call in link unlink rename; do
	for n in 1 2 3 4 5; do
		rc=0
		(strace -f -qq -o /dev/null -e trace="$call" -e inject="$call":signal=KILL:when=$n \
			"$PGBAKFS" repair --rebuild-catalog --repo "$R") >/dev/null 2>&1 || rc=$?
		ok "repair killed at $call #$n: the catalog opens and lists the snapshot" \
			test "$(n_snaps)" = 1
	done
done
ok "check passes after the killed repairs" pgbakfs check --repo "$R" >/dev/null
ok "a whole repair" pgbakfs repair --rebuild-catalog --repo "$R" >/dev/null
ok "the old catalog is kept beside it" test -s "$R/catalog.db.old"

# ---- 3. an edited catalog row: the tree digest ----
# repair (format-3 manifests) rebuilt the snapshot as shared directories: a name
# edited inside a directory row, the row given the hash of its new bytes, is
# found by the tree digest
dir_rename() { # dir_rename CATALOG OLD NEW (names of one length)
	local id hex h
	id=$(sqlite3 "$1" "select id from dirs where instr(hex(entries), hex('$2')) > 0")
	hex=$(sqlite3 "$1" "select replace(hex(entries), hex('$2'), hex('$3')) from dirs where id = $id")
	h=$(printf %s "$hex" | xxd -r -p | sha256sum | cut -c1-64)
	sqlite3 "$1" "update dirs set entries = x'$hex', hash = x'$h' where id = $id"
}
ok "repair made a shared tree" test "$(sqlite3 "$R/catalog.db" "select count(*) from files")" = 0
ok "clean check" pgbakfs check --repo "$R" >/dev/null
dir_rename "$R/catalog.db" 3079_fsm 3079_fso
rc=0; pgbakfs check --repo "$R" >/dev/null 2>"$T/check.err" || rc=$?
ok "check exits 1 on a renamed file" test "$rc" = 1
ok "check names the snapshot and the digest" grep -q "snapshot \"$SNAP\": its files in the catalog do not match its tree digest" "$T/check.err"
expect_error 1 "damaged in the catalog" pgbakfs restore "$SNAP" "$T/out1" --repo "$R" --no-progress
ok "restore wrote nothing" test ! -e "$T/out1/base"
mount_fg "$T/mnt" "$T/mount.log" --repo "$R"
ok "the mount refuses the snapshot" bash -c "! ls '$T/mnt/$SNAP/' >/dev/null 2>&1"
ok "the mount says why" grep -q "do not match its tree digest" "$T/mount.log"
unmount_fg "$T/mnt" || fail "unmount"
dir_rename "$R/catalog.db" 3079_fso 3079_fsm
ok "check passes once the row is back" pgbakfs check --repo "$R" >/dev/null
dir_rename "$R/catalog.db" 3079_fsm 3079_fso
# repair rebuilds the catalog from the manifest: the right names come back
ok "repair of a damaged catalog" pgbakfs repair --rebuild-catalog --repo "$R" >/dev/null
ok "check passes after repair" pgbakfs check --repo "$R" >/dev/null
ok "restore after repair" pgbakfs restore "$SNAP" "$T/out3" --repo "$R" --no-progress >/dev/null
ok "restored tree is the source" same_tree "$T/src" "$T/out3"

# ---- 4. a deleted snapshot's leftover manifest without its data ----
mkdir -p "$T/gone"
head -c 2000000 /dev/urandom >"$T/gone/unique"
pgbakfs backup --repo "$R" --from-dir "$T/gone" --label gone --no-progress >/dev/null
GONE=$(pgbakfs list --repo "$R" --json | jq -r '.[] | select(.label == "gone") | .id')
cp "$R/snapshots/$GONE" "$T/manifest.bak"
pgbakfs delete "$GONE" --repo "$R" >/dev/null
pgbakfs gc --repo "$R" >/dev/null
cp "$T/manifest.bak" "$R/snapshots/$GONE" # as if the delete was killed before the manifest went
rc=0; pgbakfs repair --rebuild-catalog --repo "$R" >/dev/null 2>"$T/repair.err" || rc=$?
ok "repair exits 1 on a snapshot without its chunks" test "$rc" = 1
ok "repair names it" grep -q "snapshot \"$GONE\" names .* chunk(s) that no pack holds" "$T/repair.err"
ok "it is listed as failed" test "$(pgbakfs list --repo "$R" --json | jq -r ".[] | select(.id == \"$GONE\") | .status")" = failed
ok "the good snapshot is ok" test "$(pgbakfs list --repo "$R" --json | jq -r ".[] | select(.id == \"$SNAP\") | .status")" = ok
pgbakfs delete "$GONE" --repo "$R" >/dev/null

# ---- 5. names that lead outside the target ----
# in files rows: those of a snapshot repaired from a format-2 manifest (an
# earlier release's repository)
R=$T/repo2
pgbakfs init --repo "$R" >/dev/null
sed -i 's/^format = .*/format = 2/' "$R/config"
pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null
SNAP=$(pgbakfs list --repo "$R" --json | jq -r '.[0].id')
pgbakfs repair --rebuild-catalog --repo "$R" >/dev/null
ok "repair of a format-2 manifest keeps files rows" test "$(sqlite3 "$R/catalog.db" "select count(*) from files")" -gt 0
ROW=$(sqlite3 "$R/catalog.db" "select id from snapshots where name = '$SNAP'")
MAXINO=$(sqlite3 "$R/catalog.db" "select max(ino) from files where snap = $ROW")
X=$((MAXINO + 1))
sqlite3 "$R/catalog.db" "insert into files values($ROW, $X, $X, '/..', 16877, 0, 0, 0, 0, null, null);
	insert into files values($ROW, $((X + 1)), $X, 'escaped', 33188, 0, 0, 0, 0, null, null)"
mkdir -p "$T/delta/target"
expect_error 1 "damaged in the catalog" pgbakfs restore "$SNAP" "$T/delta/target" --delta --repo "$R" --no-progress
# an older version's snapshot has no digest: the names alone must stop it
sqlite3 "$R/catalog.db" "update snapshots set tree_digest = null where id = $ROW"
expect_error 1 "damaged in the catalog" pgbakfs restore "$SNAP" "$T/delta/target" --delta --repo "$R" --no-progress
ok "nothing was written outside the target" test -z "$(find "$T/delta" -name escaped)"
ok "nothing was written beside the target" test "$(ls "$T/delta")" = target
rc=0; pgbakfs check --repo "$R" >/dev/null 2>"$T/check5.err" || rc=$?
ok "check exits 1 on a crafted name" test "$rc" = 1
ok "check says the tree is not valid" grep -q "do not form a valid tree" "$T/check5.err"
sqlite3 "$R/catalog.db" "delete from files where snap = $ROW and ino >= $X"
ok "check passes on an older version's snapshot" pgbakfs check --repo "$R" >/dev/null
ok "check says it has no digest" bash -c "'$PGBAKFS' check --repo '$R' 2>&1 | grep -q 'have no tree digest'"
finish
