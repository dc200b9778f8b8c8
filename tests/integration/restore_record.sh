# The restore record: a restore leaves one for its target (under the cache
# directory), and the next restore --delta into it does not read the files
# nobody touched since; a file changed in any way (bytes with size and mtime
# put back included) is read and put right; a damaged or foreign record is
# ignored; a failed restore leaves none; records of removed targets go.
. "$(dirname "$0")/lib.sh"
export XDG_CACHE_HOME=$T/cache
R=$T/repo
RECS=$XDG_CACHE_HOME/pgbakfs/restored
mkdir -p "$T/src/sub"
head -c $((8 * 1048576)) /dev/urandom >"$T/src/big"          # 128 chunks of 64 KiB
head -c 100000 /dev/urandom >"$T/src/sub/small"
echo 15 >"$T/src/PG_VERSION"
: >"$T/src/empty"
truncate -s 4M "$T/src/sparse"
printf 'x' | dd of="$T/src/sparse" bs=1 seek=3000000 conv=notrunc status=none
pgbakfs init --repo "$R" >/dev/null
pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null
A=$(pgbakfs show latest --repo "$R" --json | jq -r .id)

record_of() { printf '%s/%x-%x' "$RECS" $(stat -c '%d %i' "$1"); }
# delta TARGET SNAP [REPO [OPTION...]]: restore --delta, its output in $T/delta.out
delta() { pgbakfs restore "$2" "$1" --repo ${3:-$R} --delta --no-progress >"$T/delta.out" 2>&1; }
# the bytes the last delta says it did not read, and the files it did not read at all
not_read() {
	python3 - "$T/delta.out" <<'PY'
import re, sys
m = re.search(r"([0-9.]+) (B|KiB|MiB|GiB) not read \((\d+) file", open(sys.argv[1]).read())
if not m:
    sys.exit("no 'not read' in the delta's output")
unit = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m[2]]
print(round(float(m[1]) * unit), unit, m[3])
PY
}
# expect_not_read BYTES FILES: what the last delta did not read (bytes as printed: to 0.05 of
# the unit)
expect_not_read() {
	local b u f
	read -r b u f < <(not_read)
	python3 -c 'import sys; b, u, f, wb, wf = map(int, sys.argv[1:]); sys.exit(not (abs(b - wb) <= u / 20 and f == wf))' \
		"$b" "$u" "$f" "$1" "$2" && return 0
	echo "delta did not read $b B in $f whole files, expected $1 B in $2:" >&2
	cat "$T/delta.out" >&2
	return 1
}
TOTAL=$((8 * 1048576 + 100000 + 3 + 4 * 1048576))

ok "restore" pgbakfs restore "$A" "$T/out" --repo "$R" --no-progress >/dev/null
ok "the restore left a record for its target" test -s "$(record_of "$T/out")"
ok "and nothing in the target" same_tree "$T/src" "$T/out"

ok "delta onto the untouched restore" delta "$T/out" "$A"
ok "reads none of it" expect_not_read $TOTAL 5
ok "result identical" same_tree "$T/src" "$T/out"

# bytes changed with size and mtime put back: its ctime moved, so it is read and put right
change_keep_mtime "$T/out/big" 70000
ok "delta after a change hidden from size and mtime" delta "$T/out" "$A"
ok "puts the changed byte back" cmp "$T/src/big" "$T/out/big"
ok "reads the changed file alone" expect_not_read $((TOTAL - 8 * 1048576)) 4
ok "writes one page" grep_or_show "^delta: 4.0 KiB rewritten" "$T/delta.out"
# a chmod to the same mode moves the ctime too: read again, and nothing to write
chmod "$(stat -c %a "$T/out/sub/small")" "$T/out/sub/small"
ok "delta after a chmod" delta "$T/out" "$A"
ok "reads that file" expect_not_read $((TOTAL - 100000)) 4

# a newer snapshot, one chunk of big changed: the record's chunk list says which chunks
# are in place already, so only the changed chunk is read
flip_byte "$T/src/big" $((5 * 65536 + 7))
pgbakfs backup --repo "$R" --from-dir "$T/src" --no-progress >/dev/null
B=$(pgbakfs show latest --repo "$R" --json | jq -r .id)
ok "delta to the newer snapshot" delta "$T/out" "$B"
ok "result identical to it" same_tree "$T/src" "$T/out"
ok "reads the changed chunk alone" expect_not_read $((TOTAL - 65536)) 4

# a damaged record is ignored, with a warning: every file is read, the result is right
REC=$(record_of "$T/out")
flip_byte "$REC" 60
change_keep_mtime "$T/out/sub/small" 500
ok "delta with a damaged record" delta "$T/out" "$B"
ok "warns of it" grep_or_show "ignoring restore record" "$T/delta.out"
ok "reads every file" expect_not_read 0 0
ok "result identical" same_tree "$T/src" "$T/out"

# another repository's record (same target): not trusted
pgbakfs init --repo "$T/repo2" >/dev/null
pgbakfs backup --repo "$T/repo2" --from-dir "$T/src" --no-progress >/dev/null
ok "delta from another repository" delta "$T/out" latest "$T/repo2"
ok "reads every file" expect_not_read 0 0
ok "a record for the target, of that repository now" test -s "$(record_of "$T/out")"

# a delta that fails keeps the record of the files it finished, not of the one it failed on
cp -a "$R" "$T/repo-bad"
find "$T/repo-bad/packs" -name '*.pack' -exec python3 -c '
import sys
for p in sys.argv[1:]:
    with open(p, "r+b") as f:
        data = bytearray(f.read())
        for i in range(4096, len(data), 1000): # every chunk
            data[i] ^= 0xff
        f.seek(0); f.write(data)' {} +
change_keep_mtime "$T/out/big" 200000
expect_error 1 "big\" at offset 196608" pgbakfs restore "$B" "$T/out" --repo "$T/repo-bad" --delta --no-progress
ok "the next delta ends right" delta "$T/out" "$B"
ok "  (identical)" same_tree "$T/src" "$T/out"
read -r NR _ _ < <(not_read)
ok "  and reads the file the failed one could not put right ($NR B not read)" test "$NR" -le $((TOTAL - 8 * 1048576 + 52429))

# a restore killed midway is resumed by --delta without reading the files it finished:
# the record of those is saved as it goes (every millisecond here, every minute by default)
mkdir -p "$T/many"
for i in $(seq 1 300); do head -c 1048576 /dev/urandom >"$T/many/f$i"; done
pgbakfs backup --repo "$R" --from-dir "$T/many" --instance many --no-progress >/dev/null
PGBAKFS_RECORD_EVERY_MS=1 "$PGBAKFS" restore latest "$T/killed" --instance many --repo "$R" -j 1 --no-progress >/dev/null &
PID=$!
# the entries a record holds (0 while there is none)
record_entries() {
	python3 -c 'import struct, sys
try:
    print(struct.unpack_from("<Q", open(sys.argv[1], "rb").read(), 64)[0])
except (OSError, struct.error):
    print(0)' "$1"
}
for _ in $(seq 1 2000); do [ -d "$T/killed" ] && [ "$(record_entries "$(record_of "$T/killed")")" -gt 0 ] && break; sleep 0.005; done
kill -STOP $PID 2>/dev/null || true
ok "the restore was still running when its first record was there" kill -9 $PID
wait $PID 2>/dev/null || true
ok "resuming it with --delta" delta "$T/killed" latest "$R --instance many"
ok "  (identical)" same_tree "$T/many" "$T/killed"
read -r NR _ NF < <(not_read)
ok "  did not read the files finished before the kill ($NF files, $NR B)" test "$NF" -ge 1 -a "$NR" -ge 1048576
ok "  and read the rest" test "$NR" -lt $((300 * 1048576))

# records of targets that are gone are removed by the next restore
ok "a second target" pgbakfs restore "$B" "$T/out2" --repo "$R" --no-progress >/dev/null
REC2=$(record_of "$T/out2")
ok "has its record" test -s "$REC2"
mkdir "$T/out3" # before out2 goes: it must not get out2's inode (and record name)
rm -rf "$T/out2"
ok "another restore" pgbakfs restore "$B" "$T/out3" --repo "$R" --no-progress >/dev/null
ok "removed the record of the target that is gone" test ! -e "$REC2"
ok "kept the record of the one still there" test -s "$(record_of "$T/out")"
finish
