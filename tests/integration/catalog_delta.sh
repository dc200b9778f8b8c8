# An S3 repository (format 2) publishes each write as a small catalog delta,
# not a whole catalog: a one-page change in a 64 MiB file, a pin, a delete
# and gc each put less than 256 KiB of catalog objects (printed). A second
# machine that follows only deltas holds exactly the writer's catalog, table
# by table, lists and restores the same; a reader at G applies only G+1..N.
# A truncated delta and a missing one are one clear error, never a partly
# applied catalog; after the threshold a whole catalog is published again
# and an empty cache needs it plus the deltas after it; a format-1 repository
# keeps publishing whole generations, and once its config says 2 the next
# write is a delta on top of them. A writer killed (-9) during publication,
# or whose delta put fails, leaves a repository that opens at a consistent
# state.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3lib.sh"
s3_start
R=s3://$S3_BUCKET/d
export PGBAKFS_REPO=$R
O=$T/out
mkdir -p "$O" "$T/src"
A=$T/cacheA B=$T/cacheB
pa() { "$PGBAKFS" "$@" --cache-dir "$A"; } # the writer's machine
pb() { "$PGBAKFS" "$@" --cache-dir "$B"; } # a reader's machine

# s3_sizes PREFIX: "key size" of every object under it
s3_sizes() {
	curl -fsS "$S3_DIRECT/$S3_BUCKET/?list-type=2&prefix=$1" |
		sed 's/<Contents>/\n/g' | sed -n 's|.*<Key>\([^<]*\)</Key>.*<Size>\([0-9]*\)</Size>.*|\1 \2|p'
}
snap_objects() { s3_sizes d/ | grep -v -e '^d/packs/' -e '^d/locks/' | sort >"$T/objs.$1"; }
# put_since BEFORE AFTER: catalog objects new since BEFORE as "kind bytes" lines
# (kind delta or base), and manifest bytes (snapshots/) on a line of their own
put_since() {
	awk 'NR == FNR { old[$1] = $2; next }
		old[$1] != $2 && $1 ~ /^d\/catalog\// { print ($1 ~ /\.delta$/ ? "delta" : "base"), $2 }
		old[$1] != $2 && $1 ~ /^d\/snapshots\// { m += $2 }
		END { print "manifests", m + 0 }' "$T/objs.$1" "$T/objs.$2"
}
# write NAME CMD...: run a writer, report what it put; sets LAST_PUT
write() {
	local name=$1; shift
	snap_objects before
	"$@" >"$O/$name.out" 2>"$O/$name.err" || { cat "$O/$name.err"; return 1; }
	snap_objects after
	LAST_PUT=$(put_since before after)
	echo "$name: catalog objects put: $(echo "$LAST_PUT" | grep -v manifests | tr '\n' ' ')($(echo "$LAST_PUT" | grep manifests) bytes)"
}
# (here-strings, not echo | grep -q: bash's echo writes a line at a time, and a
# grep -q that exits at its first match leaves it a SIGPIPE, which pipefail reports)
only_small_deltas() { # the last write put deltas only, each < 256 KiB
	grep -q '^delta ' <<<"$LAST_PUT" &&
		! grep -q '^base ' <<<"$LAST_PUT" &&
		awk '$1 == "delta" && $2 >= 262144 { exit 1 }' <<<"$LAST_PUT"
}
# same_catalog DB1 DB2: every table, every row, the same
same_catalog() {
	sqlite3 "$1" .dump >"$T/dump1" && sqlite3 "$2" .dump >"$T/dump2" && cmp -s "$T/dump1" "$T/dump2" ||
		{ diff "$T/dump1" "$T/dump2" | head -5 >&2; return 1; }
}
catalog_in() { find "$1" -name catalog.db | head -1; }

ok "init" pa init
head -c $((64 << 20)) /dev/urandom >"$T/src/big"
seq 1 20000 >"$T/src/text"
ok "full backup" write full pa backup --from-dir "$T/src" --no-progress
ok "a reader opens the repository" pb list
G=$(cat "$(dirname "$(catalog_in "$B")")/catalog.gen")

# one 8 KiB page of the 64 MiB file changes
head -c 8192 /dev/urandom | dd of="$T/src/big" bs=8192 seek=2000 conv=notrunc status=none
ok "one-page change" write incr pa backup --from-dir "$T/src" --no-progress
ok "the one-page change put only a delta below 256 KiB" only_small_deltas
ok "pin" write pin pa pin latest --ttl 1d --note kept
ok "the pin put only a small delta" only_small_deltas
FIRST=$(pa list --json | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
ok "delete" write delete pa delete "$FIRST"
ok "the delete put only a small delta" only_small_deltas
ok "gc" write gc pa gc
ok "gc put only small deltas" only_small_deltas

# the reader follows the deltas, and only those after its generation
N=$(cat "$(dirname "$(catalog_in "$A")")/catalog.gen")
PGBAKFS_DEBUG=1 pb list --json >"$O/rlist.json" 2>"$O/rlist.err"
ok "the reader at $G applied only the deltas $((G + 1))..$N" grep -q "applied catalog deltas $((G + 1))..$N (" "$O/rlist.err"
ok "and fetched no whole catalog" bash -c "! grep -q 'fetching catalog generation' '$O/rlist.err'"
pa list --json >"$O/wlist.json"
ok "the reader lists what the writer lists" cmp "$O/wlist.json" "$O/rlist.json"
ok "every table of the reader's catalog is the writer's" same_catalog "$(catalog_in "$A")" "$(catalog_in "$B")"
ok "the reader restores the changed snapshot" pb restore latest "$T/r1" --no-progress
ok "byte for byte" cmp "$T/src/big" "$T/r1/big"

# a truncated delta: one clear error, the reader's catalog untouched
ok "another pin" write pin2 pa pin latest --ttl 2d
D=$(s3_keys d/catalog/ | grep '\.delta$' | sort | tail -1)
s3_get() { curl -fsS "$S3_DIRECT/$S3_BUCKET/$1" -o "$2"; }
s3_get "$D" "$T/good.delta"
head -c $(($(stat -c %s "$T/good.delta") / 2)) "$T/good.delta" >"$T/cut.delta"
s3_put "$D" "$T/cut.delta"
cp "$(catalog_in "$B")" "$T/reader-before.db"
expect_error 1 "catalog delta \"${D#d/}\" is damaged" pb list
ok "the reader's catalog is as it was" same_catalog "$T/reader-before.db" "$(catalog_in "$B")"
expect_error 1 "is damaged" "$PGBAKFS" list --cache-dir "$T/cacheC"
s3_put "$D" "$T/good.delta"
ok "with the delta whole again the reader catches up" pb list
# a missing delta in the middle of the chain an empty cache needs
M=$(s3_keys d/catalog/ | grep '\.delta$' | sort | tail -2 | head -1)
s3_get "$M" "$T/mid.delta"
s3_rm "$M"
expect_error 1 "catalog delta [0-9]* is missing" "$PGBAKFS" list --cache-dir "$T/cacheD"
s3_put "$M" "$T/mid.delta"
ok "with it back an empty cache opens" "$PGBAKFS" list --cache-dir "$T/cacheD"

# compaction: past the threshold a whole catalog again, plus its delta
for i in 1 2 3 4; do
	write "cpin$i" env PGBAKFS_CATALOG_DELTAS_MAX=2 "$PGBAKFS" pin latest --ttl ${i}h --cache-dir "$A"
	echo "$LAST_PUT" >"$T/cpin$i"
done
ok "past the threshold a whole catalog (and its delta)" grep -q '^base ' "$T/cpin1"
ok "then deltas" bash -c "! grep -q '^base ' '$T/cpin2' '$T/cpin3' && grep -q '^delta ' '$T/cpin3'"
ok "then a whole catalog again" bash -c "grep -q '^base ' '$T/cpin4' && grep -q '^delta ' '$T/cpin4'"
ok "one more pin" write pin3 pa pin latest --ttl 3h
ok "after it a delta again" only_small_deltas
NB=$(s3_keys d/catalog/ | grep -v '\.delta$' | sort | tail -1 | sed 's|.*/0*||')
PGBAKFS_DEBUG=1 "$PGBAKFS" list --cache-dir "$T/cacheE" >/dev/null 2>"$O/empty.err"
ok "an empty cache fetches the whole catalog $NB" grep -q "fetching catalog generation $NB and the deltas after it" "$O/empty.err"
ok "and the delta after it" grep -q "applied catalog deltas $((NB + 1))..$((NB + 1)) (" "$O/empty.err"
ok "older objects are pruned" test "$(s3_keys d/catalog/ | grep -vc '\.delta$')" -le 2
ok "the empty cache's catalog is the writer's" same_catalog "$(catalog_in "$A")" "$(catalog_in "$T/cacheE")"
ok "the reader at an older generation catches up" same_catalog "$(catalog_in "$A")" "$(pb list >/dev/null; catalog_in "$B")"

# a failed delta put: nothing published, the next write works
snap_objects before
PGBAKFS_TEST_FAULTS=put:3=EIO "$PGBAKFS" pin latest --ttl 5h --cache-dir "$A" >"$O/fpin.out" 2>"$O/fpin.err" && fail "a failed put went unnoticed" || pass
snap_objects after
ok "no catalog object from the failed pin" test -z "$(put_since before after | grep -v manifests)"
ok "the writer's machine opens at the published state" test "$(pa list --json | grep -o '"pinned_until":null' | wc -l)" = "$(pb list --json | grep -o '"pinned_until":null' | wc -l)"

# kill -9 of a writer while its delta is on the way (the proxy holds the put);
# that machine reaches the bucket through the proxy (its own cache directory)
K=$T/cacheK
pk() { PGBAKFS_S3_ENDPOINT=$S3_PROXY "$PGBAKFS" "$@" --cache-dir "$K"; }
ok "a third machine opens the repository" pk list
curl -fsS "$S3_PROXY/__fault?plan=stall&only=PUT%20/$S3_BUCKET/d/catalog/" >/dev/null
snap_objects before
PGBAKFS_S3_ENDPOINT=$S3_PROXY "$PGBAKFS" pin latest --ttl 6h --cache-dir "$K" >/dev/null 2>&1 &
pid=$!
# stalled once the proxy sees no more requests while the pin still runs
last=-1
for _ in $(seq 1 40); do
	now=$(proxy_count)
	[ "$now" = "$last" ] && break
	last=$now
	sleep 0.5
done
kill -9 $pid 2>/dev/null && pass || fail "the pin ended before it was killed"
wait $pid 2>/dev/null || true
for l in $(s3_keys d/locks/); do s3_rm "$l"; done
snap_objects after
ok "the killed publication left no catalog object" test -z "$(put_since before after | grep -v manifests)"
ok "the killed writer's machine opens at the state before it" same_catalog "$(pk list >/dev/null; catalog_in "$K")" "$(pb list >/dev/null; catalog_in "$B")"
ok "and its next write publishes" pk pin latest --ttl 7h
ok "which the writer's machine sees" same_catalog "$(pa list >/dev/null; catalog_in "$A")" "$(pk list >/dev/null; catalog_in "$K")"

# kill -9 of a writer at random points of a backup
for i in 1 2 3; do
	seq $i 30000 >"$T/src/text"
	"$PGBAKFS" backup --from-dir "$T/src" --no-progress --cache-dir "$A" >/dev/null 2>&1 &
	pid=$!
	sleep "0.$((RANDOM % 9 + 1))"
	kill -9 $pid 2>/dev/null || true
	wait $pid 2>/dev/null || true
	# its lock would expire in 120 s: the operator's shortcut
	for l in $(s3_keys d/locks/); do s3_rm "$l"; done
	ok "after a kill ($i) the writer's machine opens" pa list >/dev/null
	ok "and a reader sees the same catalog" same_catalog "$(catalog_in "$A")" "$(pb list >/dev/null; catalog_in "$B")"
done
ok "a backup after the kills" pa backup --from-dir "$T/src" --no-progress
ok "check" pb check

# format 1: whole generations, as before; then 2: a delta on top of them
F=s3://$S3_BUCKET/f1
ok "init a second repository" "$PGBAKFS" init --repo "$F" --cache-dir "$A"
curl -fsS "$S3_DIRECT/$S3_BUCKET/f1/config" | sed 's/^format = .*/format = 1/' >"$T/config1"
s3_put f1/config "$T/config1"
ok "format 1: backup" "$PGBAKFS" backup --repo "$F" --from-dir "$T/src" --no-progress --cache-dir "$A"
ok "format 1: pin" "$PGBAKFS" pin latest --ttl 1d --repo "$F" --cache-dir "$A"
ok "format 1: whole generations only" test -z "$(s3_keys f1/catalog/ | grep '\.delta$')"
ok "format 1: three of them" test "$(s3_keys f1/catalog/ | wc -l)" = 3
sed 's/^format = .*/format = 2/' "$T/config1" >"$T/config2"
s3_put f1/config "$T/config2"
ok "format 2: pin" "$PGBAKFS" pin latest --ttl 2d --repo "$F" --cache-dir "$A"
ok "format 2: the pin is a delta on the whole generation 3" test "$(s3_keys f1/catalog/ | grep '\.delta$')" = "f1/catalog/00000000000000000004.delta"
ok "format 2: a new reader sees it" test "$("$PGBAKFS" list --json --repo "$F" --cache-dir "$T/cacheF" | grep -o '"pinned_until":null' | wc -l)" = 0

# metadata objects past 4 GiB go in pieces, fetched in ranges (PGBAKFS_META_PIECES: past 8 KiB here)
P=s3://$S3_BUCKET/p
magic() { curl -fsS -r 0-7 "$S3_DIRECT/$S3_BUCKET/$1"; }
ok "pieces: init" "$PGBAKFS" init --repo "$P" --cache-dir "$A"
ok "pieces: backup" env PGBAKFS_META_PIECES=8192 "$PGBAKFS" backup --repo "$P" --from-dir "$T/src" --no-progress --cache-dir "$A"
ok "pieces: the whole catalog is in pieces" test "$(magic p/catalog/00000000000000000002)" = PGBKOBJ2
ok "pieces: the manifest too" test "$(magic "$(s3_keys p/snapshots/ | head -1)")" = PGBKOBJ2
"$PGBAKFS" list --json --repo "$P" --cache-dir "$A" >"$O/pw.json"
ok "pieces: a new reader lists it" bash -c '"$0" list --json --repo "$1" --cache-dir "$2" >"$3"' "$PGBAKFS" "$P" "$T/cacheP" "$O/pr.json"
ok "pieces: as the writer does" cmp "$O/pw.json" "$O/pr.json"
ok "pieces: and restores" "$PGBAKFS" restore latest "$T/rp" --repo "$P" --no-progress --cache-dir "$T/cacheP"
ok "pieces: byte for byte" cmp "$T/src/big" "$T/rp/big"
finish
