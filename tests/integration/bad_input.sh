# Bad input: one clear error line, exit 1, and the repository still passes check.
. "$(dirname "$0")/lib.sh"
R=$T/repo
make_tree "$T/src"
pgbakfs init --repo "$R" >/dev/null
pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null
check_ok() { ok "check passes after: $1" pgbakfs check --repo "$R" --read-data >/dev/null; }

mkdir -p "$T/nonempty" && touch "$T/nonempty/file"
expect_error 1 'target directory ".*" is not empty' pgbakfs restore latest "$T/nonempty" --repo "$R"
ok "non-empty target untouched" test "$(ls "$T/nonempty")" = file
check_ok "non-empty target"

expect_error 1 'snapshot "20990101T000000Z" not found' pgbakfs restore 20990101T000000Z "$T/o1" --repo "$R"
expect_error 1 'not found' pgbakfs show nosuchid --repo "$R"
expect_error 1 'not found' pgbakfs delete nosuchid --repo "$R"
check_ok "unknown id"

mkdir -p "$T/notrepo" && touch "$T/notrepo/somefile"
expect_error 1 'is not a pgbakfs repository' pgbakfs list --repo "$T/notrepo"
expect_error 1 'does not exist' pgbakfs list --repo "$T/missing"
expect_error 1 'is not empty' pgbakfs init --repo "$T/notrepo"
expect_error 1 'could not open directory' pgbakfs backup --repo "$R" --from-dir "$T/missing"

cp -a "$R" "$T/newer"
sed -i 's/^format = .*/format = 99/' "$T/newer/config"
expect_error 1 'newer format' pgbakfs list --repo "$T/newer"
expect_error 1 'newer format' pgbakfs backup --repo "$T/newer" --from-dir "$T/src"
sed -i 's/^chunk_size = .*/chunk_size = banana/; s/^format = .*/format = 1/' "$T/newer/config"
expect_error 1 'is damaged' pgbakfs list --repo "$T/newer"

# an unreadable source file (the test runs as root, so read as an unprivileged user)
NR=$T/nobody_repo
mkdir -p "$NR" "$T/usrc/sub" && chown nobody "$NR"
head -c 200000 /dev/urandom >"$T/usrc/readable"
echo secret >"$T/usrc/sub/locked" && chmod 000 "$T/usrc/sub/locked"
chmod -R a+rX "$T/usrc" 2>/dev/null; chmod 000 "$T/usrc/sub/locked"
runuser -u nobody -- "$PGBAKFS" init --repo "$NR" >/dev/null
expect_error 1 'could not read ".*locked": Permission denied' runuser -u nobody -- "$PGBAKFS" backup --repo "$NR" --from-dir "$T/usrc" --no-progress
ok "no snapshot after unreadable file" test "$(runuser -u nobody -- "$PGBAKFS" list --repo "$NR" --json)" = "[]"
ok "check passes after unreadable file" runuser -u nobody -- "$PGBAKFS" check --repo "$NR" --read-data >/dev/null

# a full disk: a repository on a 4 MiB tmpfs, a backup of ~12 MiB of random data
mkdir -p "$T/small"
mount -t tmpfs -o size=4m tmpfs "$T/small"
at_exit "umount '$T/small'"
SR=$T/small/repo
pgbakfs init --repo "$SR" --pack-size 1M >/dev/null
mkdir -p "$T/fsrc" && head -c 1000000 /dev/urandom >"$T/fsrc/a"
ok "small backup fits" pgbakfs backup --repo "$SR" --from-dir "$T/fsrc" --no-progress >/dev/null
head -c 12000000 /dev/urandom >"$T/fsrc/b"
expect_error 1 'out of space\|No space left' pgbakfs backup --repo "$SR" --from-dir "$T/fsrc" --no-progress
ok "only the first snapshot is visible" test "$(pgbakfs list --repo "$SR" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1
ok "check passes on the full disk" pgbakfs check --repo "$SR" --read-data >/dev/null
ok "gc frees the leftovers" pgbakfs gc --repo "$SR" >/dev/null
rm "$T/fsrc/b"
ok "restore still works" pgbakfs restore latest "$T/fout" --repo "$SR" --no-progress >/dev/null
ok "restored equal" same_tree "$T/fsrc" "$T/fout"
# full target disk on restore: clear error, exit 1
mkdir -p "$T/small/target"
head -c 6000000 /dev/urandom >"$T/fsrc/c"
ok "backup into big repo" pgbakfs backup --repo "$R" --from-dir "$T/fsrc" --no-progress >/dev/null
rm -rf "$T/small/repo"
expect_error 1 'No space left' pgbakfs restore latest "$T/small/target" --repo "$R" --no-progress
check_ok "full restore target"

# ---- paths no restore could write: refused at backup, naming them ----
# deep ROOT RELLEN: 18 directories of 200 bytes, then a file whose path inside
# ROOT is RELLEN bytes (built with dir fds: the whole path may pass PATH_MAX)
deep() {
	python3 - "$1" "$2" <<'PY'
import os, sys
root, rel = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
fd = os.open(root, os.O_RDONLY)
for _ in range(18):
    os.mkdir("d" * 200, dir_fd=fd)
    sub = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = sub
name = "f" * (rel - 18 * 201)
os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
print(name)
PY
}
n_snap() { pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
n0=$(n_snap)
long_name=$(deep "$T/deep-long" 3840)
expect_error 1 "path \"$T/deep-long/d.*/$long_name\" is too long to restore: 3840 bytes inside the snapshot, at most 3839 are kept" \
	pgbakfs backup --repo "$R" --from-dir "$T/deep-long" --no-progress
ok "no snapshot from a tree with a path too long" test "$(n_snap)" = "$n0"
deep "$T/deep-ok" 3839 >/dev/null
ok "a path of 3839 bytes is kept" pgbakfs backup --repo "$R" --from-dir "$T/deep-ok" --no-progress >/dev/null
ok "and restores" pgbakfs restore latest "$T/deep-out" --repo "$R" --no-progress >/dev/null
ok "restored the same" same_tree "$T/deep-ok" "$T/deep-out"
rm -rf "$T/deep-out"
# --from-dir itself longer than PATH_MAX
expect_error 1 'could not open directory ".*": File name too long' pgbakfs backup --repo "$R" --from-dir "$T/$(printf 'x%.0s' $(seq 1 4100))"
check_ok "paths too long"

# ---- names and labels that are not text: refused at backup; JSON output stays valid ----
n_before=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
expect_error 2 'the instance name must be UTF-8 text' pgbakfs backup --repo "$R" --from-dir "$T/src" --instance $'\xff'
expect_error 2 'the instance name must be UTF-8 text' pgbakfs backup --repo "$R" --from-dir "$T/src" --instance $'a\xc3'
expect_error 2 'the instance name must be UTF-8 text' pgbakfs backup --repo "$R" --from-dir "$T/src" --instance $'a\x1bb'
expect_error 2 'the label must be UTF-8 text' pgbakfs backup --repo "$R" --from-dir "$T/src" --label $'bad\xc0\xafslash'
expect_error 2 'the label must be UTF-8 text' pgbakfs backup --repo "$R" --from-dir "$T/src" --label $'two\nlines'
expect_error 2 'the note must be UTF-8 text' pgbakfs backup --repo "$R" --from-dir "$T/src" --note $'\xed\xa0\x80'
expect_error 2 'the label must be UTF-8 text' pgbakfs backup --repo "$R" -d "host=127.0.0.1 port=1" --label $'\x7f'
ok "no snapshot from refused names" test "$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = "$n_before"
ok "UTF-8 names are accepted" pgbakfs backup --repo "$R" --from-dir "$T/src" --instance $'\xc3\xa9t\xc3\xa9' --label $'caf\xc3\xa9 \xe2\x82\xac' --no-progress >/dev/null
# a catalog that holds such bytes anyway (an older version let them in)
sqlite3 "$R/catalog.db" "update snapshots set instance = cast(x'ff6d61696e' as text), label = cast(x'61c3' as text), note = cast(x'c0af0a' as text), source = cast(x'6469723aeda080' as text) where id = (select max(id) from snapshots)"
pgbakfs list --repo "$R" --json >"$T/list.json"
ok "list --json is valid JSON (UTF-8) with bytes that are not" python3 -c '
import json, sys
l = json.loads(open(sys.argv[1], "rb").read().decode("utf-8", "strict"))
s = l[-1]
assert s["instance"] == "\ufffdmain" and s["label"] == "a\ufffd" and s["note"] == "\ufffd\ufffd\n", s
assert s["source"] == "dir:\ufffd\ufffd\ufffd", s' "$T/list.json"
id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[-1]["id"])' "$T/list.json")
pgbakfs show "$id" --repo "$R" --json >"$T/show.json"
ok "show --json is valid JSON too" python3 -c '
import json, sys; json.loads(open(sys.argv[1], "rb").read().decode("utf-8", "strict"))' "$T/show.json"
ok "jq reads list --json" jq -e 'length > 0' "$T/list.json" >/dev/null
finish
