# One flipped byte in a pack: check --read-data exits 1 naming the affected
# snapshot and file; restore fails instead of writing wrong bytes; other
# snapshots stay readable.
. "$(dirname "$0")/lib.sh"
R=$T/repo
mkdir -p "$T/a" "$T/b"
head -c 400000 /dev/urandom >"$T/a/only_in_a"
seq 1 100000 >"$T/b/only_in_b"
pgbakfs init --repo "$R" --pack-size 1M >/dev/null
pgbakfs backup --repo "$R" --from-dir "$T/a" --label a --no-progress >/dev/null
pgbakfs backup --repo "$R" --from-dir "$T/b" --label b --no-progress >/dev/null
SNAP_A=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
SNAP_B=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[1]["id"])')
ok "clean check" pgbakfs check --repo "$R" --read-data >/dev/null

# the pack of snapshot a is the oldest pack; flip one byte in its chunk data
PACK=$(ls -tr $(find "$R/packs" -name '*.pack') | head -1)
python3 - "$PACK" <<'PY'
import sys
p = sys.argv[1]
with open(p, "r+b") as f:
    f.seek(100000)
    b = f.read(1)
    f.seek(100000)
    f.write(bytes([b[0] ^ 0x40]))
PY
rc=0; pgbakfs check --repo "$R" --read-data >"$T/check.out" 2>"$T/check.err" || rc=$?
ok "check --read-data exits 1" test "$rc" = 1
ok "check names the damaged snapshot" grep -q "damaged snapshots: \"$SNAP_A\"" "$T/check.err"
ok "check names the damaged file" grep -q "snapshot \"$SNAP_A\": file \"only_in_a\" is damaged" "$T/check.err"
ok "check does not blame the other snapshot" bash -c "! grep -q '$SNAP_B' '$T/check.err'"
expect_error 1 "is damaged" pgbakfs restore "$SNAP_A" "$T/out_a" --repo "$R" --no-progress
# restore checks the CRC-32C recorded at backup; without one, the SHA-256 id
sqlite3 "$R/catalog.db" "create table crc_saved as select k, crc from chunks; update chunks set crc = null"
expect_error 1 "is damaged" pgbakfs restore "$SNAP_A" "$T/out_a_sha" --repo "$R" --no-progress
sqlite3 "$R/catalog.db" "update chunks set crc = (select crc from crc_saved where crc_saved.k = chunks.k); drop table crc_saved"
# nothing wrong was written: the file is either short of the bad chunk or zero there, never different bytes
ok "restore wrote no wrong bytes" python3 - "$T/a/only_in_a" "$T/out_a/only_in_a" <<'PY'
import sys, os
src = open(sys.argv[1], "rb").read()
dst = open(sys.argv[2], "rb").read() if os.path.exists(sys.argv[2]) else b""
for i in range(min(len(src), len(dst))):
    assert dst[i] == src[i] or dst[i] == 0, i
PY
ok "other snapshot restores" pgbakfs restore "$SNAP_B" "$T/out_b" --repo "$R" --no-progress >/dev/null
ok "other snapshot intact" same_tree "$T/b" "$T/out_b"

# a truncated pack and a missing pack are reported too
cp "$PACK" "$T/pack.bak"
truncate -s 50000 "$PACK"
rc=0; pgbakfs check --repo "$R" >/dev/null 2>"$T/check2.err" || rc=$?
ok "truncated pack: check exits 1" test "$rc" = 1
ok "truncated pack reported" grep -q "has 50000 bytes" "$T/check2.err"
rm "$PACK"
rc=0; pgbakfs check --repo "$R" >/dev/null 2>"$T/check3.err" || rc=$?
ok "missing pack: check exits 1" test "$rc" = 1
ok "missing pack reported with its snapshot" grep -q "is missing" "$T/check3.err"
ok "missing pack names snapshot" grep -q "damaged snapshots: \"$SNAP_A\"" "$T/check3.err"
finish
