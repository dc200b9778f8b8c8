# backup --from-dir -> restore gives an identical tree; dedup, list/show, latest,
# delete and gc behave as documented.
. "$(dirname "$0")/lib.sh"
R=$T/repo
make_tree "$T/src"

ok "init" pgbakfs init --repo "$R" >/dev/null
ok "repository dir is 0700" test "$(stat -c %a "$R")" = 700
ok "config is 0600" test "$(stat -c %a "$R/config")" = 600
ok "catalog is 0600" test "$(stat -c %a "$R/catalog.db")" = 600

ok "first backup" pgbakfs backup --repo "$R" --from-dir "$T/src" --label first -j 2 --no-progress >/dev/null
ok "pack files are 0600" test -z "$(find "$R/packs" -type f ! -perm 600)"
ok "pack dirs are 0700" test -z "$(find "$R/packs" -type d ! -perm 700)"
ok "restore latest" pgbakfs restore latest "$T/out1" --repo "$R" -j 3 --no-progress >/dev/null
ok "restored tree identical (content, modes, mtimes, owners, links)" same_tree "$T/src" "$T/out1"
# holes stay holes: 20 MiB sparse file with two small extents uses far less than 20 MiB
ok "sparse file restored sparse" test "$(du -k "$T/out1/sparse" | cut -f1)" -lt 1024
# a fresh file written past the cache (1 MiB and up) gets its blocks before any chunk is
# written (from S3 they come in the packs' order), its holes none; a delta allocates nothing
fa() { grep -c "^[0-9]* *fallocate([0-9]*<$T/out1f/$1>, 0, $2, $3) = 0" "$T/fa.strace"; }
ok "restore (strace)" env ASAN_OPTIONS=detect_leaks=0 strace -f -y -e trace=fallocate -o "$T/fa.strace" "$PGBAKFS" restore latest "$T/out1f" --repo "$R" --no-progress >/dev/null
ok "... allocated the random file's blocks at once" test "$(fa base/1/random 0 3000000)" = 1
ok "... and the sparse file's two data chunks, not its holes" test "$(fa sparse 6946816 65536)$(fa sparse 20905984 65536)$(grep -c "<$T/out1f/sparse>" "$T/fa.strace")" = 112
ok "... and it is identical" same_tree "$T/src" "$T/out1f"
ok "... and sparse" test "$(du -k "$T/out1f/sparse" | cut -f1)" -lt 1024
ok "a delta (strace)" env ASAN_OPTIONS=detect_leaks=0 strace -f -e trace=fallocate -o "$T/fa.strace" "$PGBAKFS" restore latest "$T/out1f" --repo "$R" --delta --no-progress >/dev/null
ok "... allocated nothing" test "$(grep -c fallocate "$T/fa.strace")" = 0
# runs of consecutive chunks are written at once, 8 MiB at most, shorter with many jobs (all
# workers' runs stay within 128 MiB): at -j 200, 640 KiB (10 chunks) at a time
ok "restore -j 200 (strace)" env ASAN_OPTIONS=detect_leaks=0 strace -f -y -e trace=pwrite64 -o "$T/runs.strace" "$PGBAKFS" restore latest "$T/out1j" --repo "$R" -j 200 --no-progress >/dev/null
ok "... identical" same_tree "$T/src" "$T/out1j"
ok "... the random file in runs of 640 KiB" test "$(grep -c "^[0-9]* *pwrite64([0-9]*<$T/out1j/base/1/random>, .*, 655360, [0-9]*[) ]" "$T/runs.strace")" = 4

# a second backup of the same tree adds nothing
ok "second backup" pgbakfs backup --repo "$R" --from-dir "$T/src" --label second --no-progress >/dev/null
pgbakfs list --repo "$R" --json >"$T/list.json"
ok "two snapshots listed" test "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$T/list.json")" = 2
ok "second backup stored 0 bytes" test "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[1]["stored_bytes"])' "$T/list.json")" = 0
ok "list json has the contract fields" python3 - "$T/list.json" <<'PY'
import json, sys
for s in json.load(open(sys.argv[1])):
    for k in ("id","instance","type","parent","label","start_time","stop_time","start_lsn",
              "stop_lsn","timeline","pg_version","system_id","logical_bytes","stored_bytes",
              "status","verified"):
        assert k in s, k
    assert s["status"] == "ok" and s["instance"] == "main" and s["type"] == "full"
    assert s["start_time"].endswith("Z") and s["verified"] is None
    assert s["logical_bytes"] > 20 * 1024 * 1024
PY
FIRST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' "$T/list.json")
SECOND=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[1]["id"])' "$T/list.json")
ok "show latest is the second" test "$(pgbakfs show latest --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')" = "$SECOND"
ok "show text" bash -c "'$PGBAKFS' show '$FIRST' --repo '$R' | grep -q 'label: *first'"

# change 1 of ~50 chunks in the random file: the third backup adds about one chunk
flip_byte "$T/src/base/1/random" 1000000
ok "third backup" pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null
STORED3=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["stored_bytes"])')
ok "one changed chunk stores about one chunk ($STORED3 bytes)" test "$STORED3" -gt 0 -a "$STORED3" -lt 200000
ok "restore third" pgbakfs restore latest "$T/out3" --repo "$R" --no-progress >/dev/null
ok "third restore identical" same_tree "$T/src" "$T/out3"

# delete + gc: older snapshots go, the newest still restores, space comes back
ok "delete first" pgbakfs delete "$FIRST" --repo "$R" >/dev/null
ok "delete second" pgbakfs delete "$SECOND" --repo "$R" >/dev/null
expect_error 1 "not found" pgbakfs show "$FIRST" --repo "$R"
ok "gc" pgbakfs gc --repo "$R" >"$T/gc.out"
ok "check --read-data after gc" pgbakfs check --repo "$R" --read-data >/dev/null
rm -rf "$T/out3"
ok "restore after gc" pgbakfs restore latest "$T/out3" --repo "$R" --no-progress >/dev/null
ok "identical after gc" same_tree "$T/src" "$T/out3"
ok "stats json" bash -c "'$PGBAKFS' stats --repo '$R' --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"snapshots\"]==1 and d[\"stored_bytes\"]>0'"

# restore --delta writes the changed pages alone: reading the target left it in the page cache in
# large folios (ext4 on Linux 6.x, up to 2 MiB), and a 4 KiB write into one used to make writeback
# write the whole folio (32 MiB of writes for 16 pages here)
mkdir -p "$T/dsrc"
head -c $((32 * 1048576 + 1000)) /dev/urandom >"$T/dsrc/rel" # a tail shorter than a page
pgbakfs backup --repo "$R" --from-dir "$T/dsrc" --instance d --no-progress >/dev/null
pgbakfs restore latest "$T/dout" --instance d --repo "$R" --no-progress >/dev/null
for i in $(seq 0 15); do
	head -c 4096 /dev/urandom | dd of="$T/dout/rel" bs=4096 seek=$((i * 512 + 3)) conv=notrunc status=none
done
head -c 1000 /dev/urandom | dd of="$T/dout/rel" bs=1000 seek=$((32 * 1048576 / 1000)) conv=notrunc status=none
sync "$T/dout/rel"
dd if="$T/dout/rel" iflag=nocache count=0 status=none # out of the page cache: the delta reads it cold
# bytes the restore process wrote (getrusage's output blocks of 512 bytes)
written=$(python3 -c 'import os,sys; p=os.fork()
if p == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1); os.execvp(sys.argv[1], sys.argv[1:])
_, st, ru = os.wait4(p, 0); print(ru.ru_oublock * 512 if st == 0 else -1)' \
	"$PGBAKFS" restore latest "$T/dout" --instance d --repo "$R" --delta --no-progress)
ok "restore --delta puts 16 changed pages and the tail back" cmp "$T/dsrc/rel" "$T/dout/rel"
ok "restore --delta wrote under 1 MiB for 64 KiB of changes ($written B)" test "$written" -ge 0 -a "$written" -lt 1048576
pgbakfs delete "$(pgbakfs list --repo "$R" --instance d --json | jq -r ".[0].id")" --repo "$R" >/dev/null

# deleting everything and gc leaves no pack behind
LAST=$(pgbakfs show latest --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
ok "delete last" pgbakfs delete "$LAST" --repo "$R" >/dev/null
ok "gc all" pgbakfs gc --repo "$R" >/dev/null
ok "no packs left" test "$(n_pack_files "$R")" = 0
ok "check empty repo" pgbakfs check --repo "$R" >/dev/null

# instances and latest per instance
ok "backup instance a" pgbakfs backup --repo "$R" --from-dir "$T/src/deep" --instance a --no-progress >/dev/null
ok "backup instance b" pgbakfs backup --repo "$R" --from-dir "$T/src/base" --instance b --no-progress >/dev/null
ok "latest of instance a" pgbakfs restore latest "$T/outa" --instance a --repo "$R" --no-progress >/dev/null
ok "instance a restored" same_tree "$T/src/deep" "$T/outa"
ok "list --instance" test "$(pgbakfs list --repo "$R" --instance b --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 1
finish
