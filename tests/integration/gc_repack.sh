# gc gives space back: gc --repack rewrites packs mostly made of dead chunks
# (the old packs stay while a mount from before the move lives), a pack with
# a damaged chunk is reported and kept, the catalog file shrinks after many
# snapshots go; the same repack on S3 (s3rver).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/mnt.sh"
. "$(dirname "$0")/s3lib.sh"

sql() { sqlite3 -cmd '.timeout 10000' "$1/catalog.db" "$2"; }
repo_bytes() { du -sb --exclude=catalog.db-wal --exclude=catalog.db-shm "$1" | cut -f1; }
id_of() { pgbakfs list --repo "$1" --json | jq -r ".[] | select(.label == \"$2\") | .id"; }

# half DIR_A DIR_B: B is A with every other 64 KiB chunk of every file replaced
half() {
	python3 - "$1" "$2" <<'EOF'
import os, sys
a, b = sys.argv[1], sys.argv[2]
os.makedirs(b, exist_ok=True)
for name in os.listdir(a):
    d = bytearray(open(os.path.join(a, name), 'rb').read())
    for i in range(0, len(d) // 65536, 2):
        d[i * 65536:(i + 1) * 65536] = os.urandom(65536)
    open(os.path.join(b, name), 'wb').write(d)
EOF
}

# A (random) and B (half of A replaced); A deleted and gc'ed: A's packs are half dead
two_backups() { # REPO SIZE_MIB
	mkdir -p "$T/a-$2"
	[ -f "$T/a-$2/f" ] || head -c $(($2 << 20)) /dev/urandom >"$T/a-$2/f"
	[ -d "$T/b-$2" ] || half "$T/a-$2" "$T/b-$2"
	pgbakfs backup --repo "$1" --from-dir "$T/a-$2" --label A --no-progress >/dev/null
	pgbakfs backup --repo "$1" --from-dir "$T/b-$2" --label B --no-progress >/dev/null
	pgbakfs delete --repo "$1" "$(id_of "$1" A)" >/dev/null
	pgbakfs gc --repo "$1" >"$T/gc0.out"
}

# ---------------------------------------------------------------- bad input
R=$T/r
pgbakfs init --repo "$R" --pack-size 8M >/dev/null
for p in 0 100 -5 abc 50x ""; do
	expect_error 2 "invalid --repack" pgbakfs gc --repo "$R" --repack="$p"
done
expect_error 2 "unexpected argument" pgbakfs gc --repo "$R" --repack 50
ok "gc --help tells of --repack" bash -c "'$PGBAKFS' gc --help | grep -q -- '--repack\[=PCT\]'"

# ---------------------------------------------------------------- repack beside a mount
two_backups "$R" 40
B=$(id_of "$R" B)
ok "gc dropped A's own chunks" grep_or_show " 320 chunk(s) " "$T/gc0.out"
n_before=$(n_pack_files "$R")
bytes_before=$(repo_bytes "$R")
# a mount from before the move: it may have located a chunk in an old pack
mount_fg "$T/mnt" "$T/mount.log" --repo "$R"
ok "B through the mount before repacking" cmp "$T/mnt/$B/f" "$T/b-40/f"
# and a restore that runs meanwhile (a session too)
pgbakfs restore "$B" "$T/out-during" --repo "$R" --no-progress >/dev/null 2>"$T/restore-during.err" &
restore_pid=$!
# workers hand chunks to the pack writer a little out of order: a pack of A
# keeps about half its chunks, not exactly; 60% takes every one of them (80%
# for the 16-chunk packs below)
t0=$(date +%s.%N)
ok "gc --repack" bash -c "'$PGBAKFS' gc --repo '$R' --repack=60 >'$T/repack.out'"
t1=$(date +%s.%N)
ok "a restore running meanwhile succeeds" wait $restore_pid
ok "... and is exact" cmp "$T/out-during/f" "$T/b-40/f"
ok "5 half-dead packs repacked" grep_or_show "repack: 5 pack(s) repacked into [23], 20.0 MiB copied, 0 B given back, 5 old pack(s) kept" "$T/repack.out"
retired=$(sql "$R" "SELECT name FROM packs WHERE state = 'retired'")
ok "5 packs retired" test "$(echo "$retired" | wc -l)" = 5
ok "retired packs are kept while the mount lives" bash -c "[ -n '$(echo $retired)' ] && cd '$R' && ls $(echo $retired) >/dev/null"
ok "reads through the mount stay exact" cmp "$T/mnt/$B/f" "$T/b-40/f"
pgbakfs gc --repo "$R" >"$T/gc1.out"
ok "a plain gc keeps them too" test "$(n_pack_files "$R")" = $((n_before + $(sql "$R" "SELECT count(*) FROM packs WHERE state = 'ok'") - 3))
ok "unmount" unmount_fg "$T/mnt"
pgbakfs gc --repo "$R" >"$T/gc2.out"
ok "once the mount is gone, gc deletes the 5 old packs" grep_or_show "reclaimed 40.0 MiB: 5 pack(s)" "$T/gc2.out"
ok "no retired pack left" test "$(sql "$R" "SELECT count(*) FROM packs WHERE state <> 'ok'")" = 0
bytes_after=$(repo_bytes "$R")
freed=$((bytes_before - bytes_after))
ok "repository shrank by the dead 20 MiB (freed $freed bytes)" test $freed -gt $((19 << 20)) -a $freed -lt $((21 << 20))
echo "repack beside a mount: repository $bytes_before -> $bytes_after bytes; gc --repack copied 20 MiB in $(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s" >&2
ok "B restores byte-identical" bash -c "'$PGBAKFS' restore '$B' '$T/out' --repo '$R' --no-progress >/dev/null && cmp '$T/out/f' '$T/b-40/f'"
ok "check --read-data clean" pgbakfs check --repo "$R" --read-data
pgbakfs gc --repo "$R" --repack=60 >"$T/repack2.out"
ok "a second gc --repack does nothing" grep_or_show "repack: 0 pack(s) repacked into 0, 0 B copied" "$T/repack2.out"

# ---------------------------------------------------------------- a damaged chunk
R3=$T/r3
pgbakfs init --repo "$R3" --pack-size 1M >/dev/null
two_backups "$R3" 4
B3=$(id_of "$R3" B)
b3=$(repo_bytes "$R3")
pgbakfs gc --repo "$R3" --repack=20 >"$T/repack20.out"
ok "below 20% no pack qualifies" grep_or_show "repack: 0 pack(s)" "$T/repack20.out"
# the put of a new pack is torn: gc fails, no chunk moved, the leftover is gc's next
ok "a torn put fails gc --repack" bash -c "! PGBAKFS_TEST_FAULTS=put:1=crash '$PGBAKFS' gc --repo '$R3' --repack=80 >/dev/null 2>&1"
ok "... leaving one pending pack" test "$(sql "$R3" "SELECT count(*) FROM packs WHERE state = 'pending'")" = 1
ok "... and no chunk moved" test "$(sql "$R3" "SELECT count(*) FROM packs WHERE state = 'retired'")" = 0
ok "check --read-data clean after it" pgbakfs check --repo "$R3" --read-data
# the first live chunk of the first (half dead) pack
read -r pid pname poff < <(sql "$R3" "SELECT p.id, p.name, c.offset FROM chunks c JOIN packs p ON p.id = c.pack
	WHERE p.id = (SELECT min(id) FROM packs) ORDER BY c.offset LIMIT 1" | tr '|' ' ')
n_live=$(sql "$R3" "SELECT count(*) FROM chunks WHERE pack = $pid")
flip() { # FILE OFFSET: invert one byte
	python3 -c 'import sys; f = open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); b = f.read(1); f.seek(int(sys.argv[2])); f.write(bytes([b[0] ^ 0xff]))' "$1" "$2"
}
flip "$R3/$pname" $((poff + 100))
rc=0
pgbakfs gc --repo "$R3" --repack=80 >"$T/dmg.out" 2>"$T/dmg.err" || rc=$?
ok "gc --repack fails on the damage (exit 1)" test $rc = 1
ok "one error line" test "$(grep -c '^pgbakfs: error: 1 pack(s) with 1 damaged chunk(s) were not repacked' "$T/dmg.err")" = 1 -a "$(grep -c 'error:' "$T/dmg.err")" = 1
ok "the damaged chunk is named" grep_or_show "warning: chunk [0-9a-f]* in pack \"$pname\" is damaged" "$T/dmg.err"
ok "its pack is kept" test -f "$R3/$pname"
ok "its chunks stay where they were" test "$(sql "$R3" "SELECT count(*) FROM chunks WHERE pack = $pid")" = "$n_live"
ok "its pack is not retired" test "$(sql "$R3" "SELECT state FROM packs WHERE id = $pid")" = ok
# no session: the old packs go at once
ok "the other half-dead packs were repacked" grep_or_show "repack: 3 pack(s) repacked into [12], 1\.[0-9] MiB copied, 1\.[0-9] MiB given back$" "$T/dmg.out"
ok "... and deleted" test "$(sql "$R3" "SELECT count(*) FROM packs WHERE state <> 'ok'")" = 0
ok "pack objects match the catalog (the torn put's leftover went)" test "$(n_pack_files "$R3")" = "$(sql "$R3" "SELECT count(*) FROM packs")"
ok "repository shrank" test "$(repo_bytes "$R3")" -lt $((b3 - (1 << 20)))
ok "check --read-data finds the damaged chunk in the kept pack" bash -c "! '$PGBAKFS' check --repo '$R3' --read-data 2>'$T/chk3.err' >/dev/null"
ok "... and names it" grep_or_show "error: pack \"$pname\": chunk .* is damaged" "$T/chk3.err"
flip "$R3/$pname" $((poff + 100))
ok "repaired by hand: check --read-data clean" pgbakfs check --repo "$R3" --read-data
# a byte damaged on the way (the first read): that chunk is fetched again alone
ok "gc --repack past a byte flipped in transit" bash -c "PGBAKFS_TEST_FAULTS=get:1=flip '$PGBAKFS' gc --repo '$R3' --repack=80 >'$T/dmg2.out'"
ok "now that pack is repacked too" grep_or_show "repack: 1 pack(s) repacked" "$T/dmg2.out"
ok "check --read-data clean" pgbakfs check --repo "$R3" --read-data
ok "B restores byte-identical" bash -c "'$PGBAKFS' restore '$B3' '$T/out3' --repo '$R3' --no-progress >/dev/null && cmp '$T/out3/f' '$T/b-4/f'"

# ---------------------------------------------------------------- the catalog file shrinks
R4=$T/r4
pgbakfs init --repo "$R4" >/dev/null
mkdir -p "$T/many"
for i in $(seq 1 15); do mkdir -p "$T/many/d$i"; for j in $(seq 1 100); do : >"$T/many/d$i/file-$i-with-a-longish-name-$j"; done; done
for i in 1 2 3; do
	# new mtimes: three trees that share no directory (format 2 shares unchanged ones)
	find "$T/many" -type f -exec touch -d "@$((1700000000 + i))" {} +
	pgbakfs backup --repo "$R4" --from-dir "$T/many" --label "m$i" --no-progress >/dev/null
done
pgbakfs gc --repo "$R4" >/dev/null
cat_before=$(stat -c %s "$R4/catalog.db")
for i in 1 2; do pgbakfs delete --repo "$R4" "$(id_of "$R4" "m$i")" >/dev/null; done
pgbakfs gc --repo "$R4" >"$T/gc4.out"
cat_after=$(stat -c %s "$R4/catalog.db")
ok "gc says the catalog was compacted" grep_or_show "catalog compacted by" "$T/gc4.out"
ok "catalog.db shrank ($cat_before -> $cat_after bytes)" test "$cat_after" -lt $((cat_before * 6 / 10))
echo "catalog after deleting 2 of 3 snapshots of 1500 files: $cat_before -> $cat_after bytes" >&2
ok "the kept snapshot restores" pgbakfs restore "$(id_of "$R4" m3)" "$T/out4" --repo "$R4" --no-progress
ok "check clean after VACUUM" pgbakfs check --repo "$R4"

# ---------------------------------------------------------------- S3
s3_start
S=s3://$S3_BUCKET/repack
export PGBAKFS_LOCK_WAIT=30
pgbakfs init --repo "$S" --pack-size 1M --cache-dir "$T/cache" >/dev/null
for l in A B; do
	d=$T/a-4; [ $l = B ] && d=$T/b-4
	pgbakfs backup --repo "$S" --cache-dir "$T/cache" --from-dir "$d" --label $l --no-progress >/dev/null
done
pgbakfs delete --repo "$S" --cache-dir "$T/cache" "$(pgbakfs list --repo "$S" --cache-dir "$T/cache" --json | jq -r '.[0].id')" >/dev/null
pgbakfs gc --repo "$S" --cache-dir "$T/cache" >/dev/null
n_s3=$(s3_keys repack/packs/ | wc -l)
pgbakfs gc --repo "$S" --cache-dir "$T/cache" --repack=80 >"$T/s3repack.out"
ok "S3: 4 packs repacked" grep_or_show "repack: 4 pack(s) repacked into [23], 2.0 MiB copied, 2.0 MiB given back" "$T/s3repack.out"
into=$(sed -n 's/^repack: .* repacked into \([0-9]*\),.*/\1/p' "$T/s3repack.out")
ok "S3: the 4 old pack objects are gone" test "$(s3_keys repack/packs/ | wc -l)" = $((n_s3 - 4 + into))
ok "S3: check clean" pgbakfs check --repo "$S" --cache-dir "$T/cache2"
ok "S3: B restores byte-identical from a fresh cache" bash -c "'$PGBAKFS' restore latest '$T/out5' --repo '$S' --cache-dir '$T/cache3' --no-progress >/dev/null && cmp '$T/out5/f' '$T/b-4/f'"

finish
