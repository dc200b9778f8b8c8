# Encrypted repositories (init --encrypt), in a directory and in a bucket:
# no plaintext (file contents, file names, WAL) anywhere in the repository;
# restore, mount, check --read-data, wal-push/wal-fetch work with the
# passphrase; a missing or wrong passphrase, or a passphrase file readable by
# others, is one clear error and writes nothing; key change rewraps the master
# key without touching data; a tampered chunk is caught; no output holds the
# passphrase.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mnt.sh"
. "$(dirname "$0")/s3lib.sh"
R=$T/repo
O=$T/out
mkdir -p "$O"
export XDG_CACHE_HOME=$T/cache
unset PGBAKFS_PASSPHRASE PGBAKFS_NEW_PASSPHRASE
printf '%s\n' "$TEST_PASSPHRASE" >"$T/pass" && chmod 600 "$T/pass"
printf '%s\n' "$TEST_PASSPHRASE2" >"$T/pass2" && chmod 600 "$T/pass2"
cp "$T/pass" "$T/pass-open" && chmod 644 "$T/pass-open"
run() { # run NAME ARGS...: outputs kept for the secret check
	local name=$1; shift
	"$PGBAKFS" "$@" >"$O/$name.out" 2>"$O/$name.err"
}
# state of a repository directory: names, sizes and contents
repo_state() { (cd "$1" && find . -type f -printf '%p %s\n' | LC_ALL=C sort && find . -type f -exec sha256sum {} + | LC_ALL=C sort); }
MARK=pgbakfs-plaintext-marker-Qx81

# ---- bad passphrases at init ----
expect_error 2 "needs a passphrase" pgbakfs init --repo "$R" --encrypt
expect_error 1 "readable only by its owner" pgbakfs init --repo "$R" --encrypt --passphrase-file "$T/pass-open"
ok "nothing created by the failed inits" test ! -e "$R"
ok "init --encrypt" run init init --repo "$R" --encrypt --passphrase-file "$T/pass"
ok "init says encrypted" grep -q "created encrypted repository" "$O/init.out"
ok "config records the encryption" grep -qx "encryption = aes-256-gcm" "$R/config"

# ---- data in, no plaintext at rest ----
make_tree "$T/src"
mkdir -p "$T/src/secret-named-dir-$MARK"
for i in $(seq 1 200); do echo "row $i $MARK"; done >"$T/src/secret-named-dir-$MARK/table-$MARK.txt"
export PGBAKFS_PASSPHRASE=$TEST_PASSPHRASE
ok "backup" run bk backup --repo "$R" --from-dir "$T/src"
S=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
python3 "$PGBAKFS_SRC/tests/integration/mkwal.py" "$T/000000010000000000000001" --size 0x100000 --text "WAL bytes $MARK"
ok "wal-push" run wp wal-push "$T/000000010000000000000001" --repo "$R"
ok "no file content, file name or WAL in the clear in the repository" bash -c "! grep -rqa -e '$MARK' -e 'row 1 ' '$R'"
ok "the catalog is not a plain SQLite file in the repository" bash -c "! grep -rqa 'SQLite format 3' '$R'"
ok "the working catalog lives in the cache, not the repository" test ! -e "$R/catalog.db"
ok "restore" run rs restore "$S" "$T/r1" --repo "$R"
ok "restored identical" same_tree "$T/src" "$T/r1"
ok "wal-fetch" run wf wal-fetch 000000010000000000000001 "$T/wal.back" --repo "$R"
ok "fetched WAL identical" cmp "$T/000000010000000000000001" "$T/wal.back"
ok "check --read-data" run chk check --read-data --repo "$R"
ok "a second backup deduplicates" run bk2 backup --repo "$R" --from-dir "$T/src"
ok "nothing new stored" grep -q " 0 B new in the repository" "$O/bk2.out"

# ---- wrong or missing passphrase: one error, nothing written ----
before=$(repo_state "$R")
expect_error 1 "wrong passphrase" env PGBAKFS_PASSPHRASE="not-$TEST_PASSPHRASE" "$PGBAKFS" list --repo "$R" --cache-dir "$T/cacheX"
expect_error 1 "wrong passphrase" env PGBAKFS_PASSPHRASE="not-$TEST_PASSPHRASE" "$PGBAKFS" backup --repo "$R" --from-dir "$T/src" --cache-dir "$T/cacheX"
expect_error 1 "no passphrase was given" env -u PGBAKFS_PASSPHRASE "$PGBAKFS" restore "$S" "$T/r2" --repo "$R" --cache-dir "$T/cacheX"
expect_error 1 "readable only by its owner" env -u PGBAKFS_PASSPHRASE "$PGBAKFS" list --repo "$R" --passphrase-file "$T/pass-open"
ok "the repository is unchanged" test "$(repo_state "$R")" = "$before"
ok "no cache was created" test ! -e "$T/cacheX"
ok "no restore target was created" test ! -e "$T/r2"
ok "the passphrase file works" bash -c "env -u PGBAKFS_PASSPHRASE '$PGBAKFS' list --repo '$R' --passphrase-file '$T/pass' >'$O/lst.out' 2>'$O/lst.err'"

# ---- key change: rewrap only ----
packs_before=$(cd "$R" && find packs catalog wal -type f -exec sha256sum {} + | LC_ALL=C sort)
ok "key change" run kc key change --repo "$R" --new-passphrase-file "$T/pass2"
ok "no pack, catalog or WAL object rewritten" test "$(cd "$R" && find packs catalog wal -type f -exec sha256sum {} + | LC_ALL=C sort)" = "$packs_before"
expect_error 1 "wrong passphrase" pgbakfs list --repo "$R" --cache-dir "$T/cacheY"
export PGBAKFS_PASSPHRASE=$TEST_PASSPHRASE2
ok "the new passphrase opens it (empty cache)" run lst2 list --repo "$R" --cache-dir "$T/cacheY"
ok "and restores" run rs3 restore "$S" "$T/r3" --repo "$R" --cache-dir "$T/cacheY"
ok "restored identical after key change" same_tree "$T/src" "$T/r3"
expect_error 1 "wrong passphrase" env PGBAKFS_NEW_PASSPHRASE=x "$PGBAKFS" key change --repo "$R" --passphrase-file "$T/pass"

# ---- mount ----
if [ "$(id -u)" = 0 ]; then
	mount_fg "$T/mnt" "$O/mount.log" --repo "$R"
	ok "cp -a out of an encrypted mount" cp -a "$T/mnt/$S" "$T/cp"
	ok "copied tree identical" same_tree_noowner "$T/src" "$T/cp"
	ok "unmount" unmount_fg "$T/mnt"
fi

# ---- the catalog lost: rebuilt from sealed packs and manifests ----
pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; [print(s["id"], s["stored_bytes"]) for s in json.load(sys.stdin)]' >"$T/list.before"
rm -rf "$R/catalog" "$T/cache"
expect_error 1 "damaged" pgbakfs list --repo "$R"
expect_error 1 "wrong passphrase" env PGBAKFS_PASSPHRASE=nope "$PGBAKFS" repair --rebuild-catalog --repo "$R"
ok "repair --rebuild-catalog of an encrypted repository" run rep repair --rebuild-catalog --repo "$R"
pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; [print(s["id"], s["stored_bytes"]) for s in json.load(sys.stdin)]' >"$T/list.after"
ok "same snapshots after the rebuild" diff "$T/list.before" "$T/list.after"
ok "restore after the rebuild" run rs6 restore "$S" "$T/r6" --repo "$R"
ok "identical after the rebuild" same_tree "$T/src" "$T/r6"

# a plain directory repository: catalog.db deleted
RP=$T/plain
ok "plain repository" run pinit init --repo "$RP"
ok "backup into it" run pbk backup --repo "$RP" --from-dir "$T/src"
ok "a pin, kept by the manifest" run ppin pin latest --ttl 1d --repo "$RP"
pgbakfs list --repo "$RP" >"$T/plist.before"
rm -f "$RP"/catalog.db*
ok "repair --rebuild-catalog of a directory repository" run prep repair --rebuild-catalog --repo "$RP"
pgbakfs list --repo "$RP" >"$T/plist.after"
ok "same list, pin included" diff "$T/plist.before" "$T/plist.after"
ok "restore after the rebuild" run prs restore latest "$T/r7" --repo "$RP"
ok "identical" same_tree "$T/src" "$T/r7"

# ---- a sealed WAL object copied to another name, header edited to match ----
python3 "$PGBAKFS_SRC/tests/integration/mkwal.py" "$T/000000010000000000000002" --size 0x100000 --text "other WAL $MARK"
ok "wal-push a second segment" run wp2 wal-push "$T/000000010000000000000002" --repo "$R"
python3 - "$R/wal/00000001" <<'PY'
import sys, os
d = sys.argv[1]
a = open(os.path.join(d, "000000010000000000000001"), "rb").read()
name_b = b"000000010000000000000002"
forged = a[:64] + name_b + a[64 + len(name_b):]   # the header's name field is at offset 64
open(os.path.join(d, "000000010000000000000002"), "wb").write(forged)
PY
# damage, not absence: 126, so that PostgreSQL stops recovery instead of ending it
expect_error 126 "000000010000000000000002" pgbakfs wal-fetch 000000010000000000000002 "$T/forged" --repo "$R"
ok "the forged WAL was not written" test ! -e "$T/forged"

# ---- a config edited to switch encryption off, or to name another cache ----
cp -a "$R" "$T/downgraded"
sed -i 's/^encryption = aes-256-gcm$/encryption = none/' "$T/downgraded/config"
expect_error 1 "has a key file but its config says it is not encrypted" pgbakfs backup --repo "$T/downgraded" --from-dir "$T/src" --cache-dir "$T/cacheD"
ok "nothing was written in the clear" bash -c "! grep -rqa -e '$MARK' '$T/downgraded'"
cp -a "$R" "$T/badid"
sed -i 's|^id = .*|id = ../../escape|' "$T/badid/config"
expect_error 1 "damaged" pgbakfs list --repo "$T/badid" --cache-dir "$T/cacheI/a/b"
ok "no directory made outside the cache" test ! -e "$T/cacheI/escape" -a ! -e "$T/escape"

# ---- tampering: a flipped byte inside a sealed chunk ----
cp -a "$R" "$T/tampered"
pack=$(find "$T/tampered/packs" -name '*.pack' | head -1)
flip_byte "$pack" 100
rc=0; "$PGBAKFS" check --read-data --repo "$T/tampered" --cache-dir "$T/cacheT" >"$O/chkt.out" 2>"$O/chkt.err" || rc=$?
ok "check --read-data catches a tampered sealed chunk" test "$rc" = 1
ok "and says so" grep -q "error:" "$O/chkt.err"

# ---- metadata objects past 4 GiB go in sealed pieces (PGBAKFS_META_PIECES: past 4 KiB here) ----
RM=$T/pieces
pieced() { test "$(head -c 8 "$1")" = PGBKOBJ2; }
ok "pieces: init" run minit init --repo "$RM" --encrypt
export PGBAKFS_META_PIECES=4096
ok "pieces: backup" run mbk backup --repo "$RM" --from-dir "$T/src" --cache-dir "$T/cacheM"
ok "pieces: pin" run mpin pin latest --ttl 1d --repo "$RM" --cache-dir "$T/cacheM"
ok "pieces: the backup's whole catalog is in pieces" pieced "$RM/catalog/00000000000000000002"
ok "pieces: and the snapshot's manifest" pieced "$(find "$RM/snapshots" -type f | head -1)"
ok "pieces: no plaintext" bash -c "! grep -rqa -e '$MARK' -e 'row 1 ' -e 'SQLite format 3' '$RM'"
unset PGBAKFS_META_PIECES
ok "pieces: a reader without the switch lists them (empty cache)" run mlst list --json --repo "$RM" --cache-dir "$T/cacheM2"
ok "pieces: the pin came through" grep -q '"pinned_until":"' "$O/mlst.out"
ok "pieces: restore (empty cache)" run mrs restore latest "$T/r8" --repo "$RM" --cache-dir "$T/cacheM3"
ok "pieces: identical" same_tree "$T/src" "$T/r8"
rm -rf "$RM/catalog"
ok "pieces: repair --rebuild-catalog from pieced manifests" run mrep repair --rebuild-catalog --repo "$RM" --cache-dir "$T/cacheM4"
ok "pieces: restore after the rebuild" run mrs2 restore latest "$T/r9" --repo "$RM" --cache-dir "$T/cacheM4"
ok "pieces: identical after the rebuild" same_tree "$T/src" "$T/r9"
M=$(find "$RM/snapshots" -type f | head -1)
python3 -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 1; open(p, "wb").write(b)' "$M"
rm -rf "$RM/catalog"
expect_error 1 "damaged" pgbakfs repair --rebuild-catalog --repo "$RM" --cache-dir "$T/cacheM5"

# ---- encrypted repository in a bucket ----
if command -v node >/dev/null && [ -d "$S3_DIR/node_modules/s3rver" ]; then
	s3_start
	RS=s3://$S3_BUCKET/enc
	ok "init --encrypt in a bucket" run s3init init --repo "$RS" --encrypt
	ok "backup into the bucket" run s3bk backup --repo "$RS" --from-dir "$T/src"
	ok "no plaintext in the bucket" bash -c "! grep -rqa -e '$MARK' -e 'row 1 ' -e 'SQLite format 3' '$T/s3data'"
	ok "restore from the bucket, empty cache" run s3rs restore latest "$T/r4" --repo "$RS" --cache-dir "$T/cacheZ"
	ok "identical" same_tree "$T/src" "$T/r4"
	expect_error 1 "wrong passphrase" env PGBAKFS_PASSPHRASE=nope "$PGBAKFS" list --repo "$RS" --cache-dir "$T/cacheW"
else
	skip_part "node or s3rver is not installed (tools/test installs them): no encrypted repository in a bucket"
fi

ok "no output holds a passphrase" bash -c "! grep -rl -F -e '$TEST_PASSPHRASE' -e '$TEST_PASSPHRASE2' '$O' '$T/s3server.out' 2>/dev/null | grep ."
finish
