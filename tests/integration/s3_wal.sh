# The WAL archive in S3-compatible storage (s3rver behind tests/s3/proxy.js,
# which gives it AWS's If-None-Match semantics on PUT): two machines (two
# cache directories) pushing one name at once with different content: exactly
# one wins, and the object is the winner's bytes; with the same content both
# succeed; a damaged archived copy is replaced. wal-fetch: three requests
# and no catalog on a new machine; a body damaged on the way is read again; transient
# errors are retried by the driver; damage, access denied, a failing or
# unreachable store exit 126; a missing file exits 1.
# wal-fetch --prefetch: later segments served from the spool without a
# request, the end of the archive, a timeline history file clearing the spool,
# an out-of-order request, a damaged spool file, damage and faults on the way
# during a prefetch, another cluster's data directory, a full spool disk.
# wal-push --parallel: ready files pushed at once, later calls answered
# without a request, a file pushed ahead that failed is pushed by its own
# call, a changed file is not taken for the archived one.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3lib.sh"
s3_start
R=s3://$S3_BUCKET/w
export PGBAKFS_REPO=$R XDG_CACHE_HOME=$T/cache0 PGBAKFS_S3_ENDPOINT=$S3_PROXY
mkwal() { python3 "$PGBAKFS_SRC/tests/integration/mkwal.py" "$@"; }
mkdir -p "$T/a" "$T/b" "$T/same" "$T/work"

ok "init" pgbakfs init >/dev/null

# ---- the race: 12 pairs, different content, two machines ----
n_one=0
n_bad=0
for i in $(seq 1 12); do
	name=0000000100000000000000$(printf %02X $i)
	mkwal "$T/a/$name" --size 0x100000 --seed $((2 * i))
	mkwal "$T/b/$name" --size 0x100000 --seed $((2 * i + 1))
	"$PGBAKFS" wal-push "$T/a/$name" --cache-dir "$T/cacheA" >"$T/a.out" 2>"$T/a.err" &
	pa=$!
	"$PGBAKFS" wal-push "$T/b/$name" --cache-dir "$T/cacheB" >"$T/b.out" 2>"$T/b.err" &
	pb=$!
	ra=0; rb=0; wait $pa || ra=$?; wait $pb || rb=$?
	"$PGBAKFS" wal-fetch "$name" "$T/work/$name" --cache-dir "$T/cacheC"
	if [ "$ra$rb" = 01 ] && cmp -s "$T/work/$name" "$T/a/$name" &&
		grep -q "already archived with different content" "$T/b.err"; then
		n_one=$((n_one + 1))
	elif [ "$ra$rb" = 10 ] && cmp -s "$T/work/$name" "$T/b/$name" &&
		grep -q "already archived with different content" "$T/a.err"; then
		n_one=$((n_one + 1))
	else
		n_bad=$((n_bad + 1))
		echo "race $i: exit $ra and $rb, archived copy $(cmp -s "$T/work/$name" "$T/a/$name" && echo A ||
			(cmp -s "$T/work/$name" "$T/b/$name" && echo B || echo neither))" >&2
	fi
done
ok "12 races, each with exactly one winner whose bytes are archived ($n_bad bad)" test $n_one -eq 12

# ---- the same content from both machines: both succeed (idempotent) ----
n_bad=0
for i in $(seq 32 35); do
	name=0000000100000000000000$(printf %02X $i)
	mkwal "$T/same/$name" --size 0x100000 --seed $i
	"$PGBAKFS" wal-push "$T/same/$name" --cache-dir "$T/cacheA" 2>"$T/a.err" &
	pa=$!
	"$PGBAKFS" wal-push "$T/same/$name" --cache-dir "$T/cacheB" 2>"$T/b.err" &
	pb=$!
	ra=0; rb=0; wait $pa || ra=$?; wait $pb || rb=$?
	[ "$ra$rb" = 00 ] || { n_bad=$((n_bad + 1)); cat "$T/a.err" "$T/b.err" >&2; }
done
ok "same content pushed at once from two machines: both succeed" test $n_bad -eq 0
# a put retried after its first try went through (the answer lost) is no conflict
name=000000010000000000000040
mkwal "$T/same/$name" --size 0x100000 --seed 40
proxy_plan "lose&only=PUT%20/$S3_BUCKET/w/wal/00000001/$name"
ok "a push whose answer was lost, retried, succeeds" pgbakfs wal-push "$T/same/$name" 2>"$T/err"
proxy_plan pass
ok "... and fetches back" pgbakfs wal-fetch "$name" "$T/work/$name"
ok "... identical" cmp -s "$T/work/$name" "$T/same/$name"
# a damaged archived copy is replaced by the file pushed
name=000000010000000000000041
mkwal "$T/same/$name" --size 0x100000 --seed 41
s3_put "w/wal/00000001/$name" "$T/a/$(ls "$T/a" | head -1)"
ok "a push over a damaged archived copy succeeds" pgbakfs wal-push "$T/same/$name" --no-summary 2>"$T/err"
ok "... replacing it" grep_or_show "archived copy of WAL file \"$name\" was damaged and has been replaced" "$T/err"
ok "... which fetches back identical" pgbakfs wal-fetch "$name" "$T/work/$name"
ok "... identical" cmp -s "$T/work/$name" "$T/same/$name"

# ---- wal-fetch ----
name=000000010000000000000001
good=$(cmp -s "$T/work/$name" "$T/a/$name" && echo "$T/a/$name" || echo "$T/b/$name")
get_only="only=GET%20/$S3_BUCKET/w/wal/00000001/$name"
rm -f "$T/work/x"
proxy_plan "flip&$get_only"
ok "a body damaged on the way is read again" pgbakfs wal-fetch "$name" "$T/work/x" 2>"$T/err"
ok "... and the file is right" cmp -s "$T/work/x" "$good"
rm -f "$T/work/x"
proxy_plan "flip,flip&$get_only"
expect_error 126 "archived WAL file \"$name\" is damaged" pgbakfs wal-fetch "$name" "$T/work/x"
ok "damaged twice: no DEST" test ! -e "$T/work/x"
proxy_plan "503,500,429,drop&$get_only"
ok "transient errors are retried by the driver" pgbakfs wal-fetch "$name" "$T/work/x" 2>"$T/err"
ok "... and the file is right" cmp -s "$T/work/x" "$good"
rm -f "$T/work/x"
# a restore_command on a new machine: three requests (the config, whether a key file
# exists, the file), no HEAD before a GET, and no catalog listed or downloaded
c0=$(proxy_count)
ok "wal-fetch with an empty cache directory" pgbakfs wal-fetch "$name" "$T/work/x" --cache-dir "$T/cacheF"
ok "... in 3 requests ($(($(proxy_count) - c0)))" test $(($(proxy_count) - c0)) = 3
ok "... without the catalog" test -z "$(find "$T/cacheF" -name 'catalog*')"
ok "... right" cmp -s "$T/work/x" "$good"
rm -f "$T/work/x"
proxy_plan "403&$get_only"
expect_error 126 "could not fetch WAL file \"$name\"" pgbakfs wal-fetch "$name" "$T/work/x"
proxy_always "503&$get_only"
expect_error 126 "could not fetch WAL file \"$name\"" pgbakfs wal-fetch "$name" "$T/work/x"
proxy_plan pass
ok "a store failing for good: no DEST" test ! -e "$T/work/x"
expect_error 126 "" env PGBAKFS_S3_ENDPOINT=http://127.0.0.1:1 "$PGBAKFS" wal-fetch "$name" "$T/work/x" --cache-dir "$T/cacheD"
rc=0
pgbakfs wal-fetch 0000000100000000000000F0 "$T/work/x" >"$T/out" 2>"$T/err" || rc=$?
ok "missing: exit 1, quiet" test $rc -eq 1 -a ! -s "$T/out" -a ! -s "$T/err"
# ---- wal-fetch --prefetch ----
# a data directory for DEST (pg_wal/RECOVERYXLOG, as %p): its pg_control's system identifier
D=$T/datadir
mkdir -p "$D/pg_wal" "$D/global" "$T/pf"
pg_control() { # SYSID: the first 8 bytes of pg_control (little-endian), then zeros
	local v=$1 b=""
	for _ in 1 2 3 4 5 6 7 8; do b+=$(printf '\\x%02x' $((v & 255))); v=$((v >> 8)); done
	{ printf "$b"; head -c 8184 /dev/zero; } >"$D/global/pg_control"
}
pg_control 7000000000000000001 # mkwal's default
seg() { printf '0000000100000000000000%02X' "$1"; }
mkwal $(for i in $(seq 80 85); do echo "$T/pf/$(seg $i)"; done) --size 0x100000 --seed 80
for i in $(seq 80 85); do pgbakfs wal-push "$T/pf/$(seg $i)" --no-summary; done
SPOOLC=$T/spoolcache
# pf N [ARGS...]: wal-fetch segment N into $D/pg_wal/RECOVERYXLOG with --prefetch 4;
# sets rc and n_req (requests through the proxy)
pf() {
	local n=$1 c0; shift
	rm -f "$D/pg_wal/RECOVERYXLOG"
	c0=$(proxy_count)
	rc=0
	"$PGBAKFS" wal-fetch "$(seg $n)" "$D/pg_wal/RECOVERYXLOG" --prefetch 4 --cache-dir "$SPOOLC" "$@" 2>"$T/pf.err" || rc=$?
	n_req=$(($(proxy_count) - c0))
}
same() { cmp -s "$D/pg_wal/RECOVERYXLOG" "$T/pf/$(seg $1)"; }
spooled() { ls "$SPOOLC"/wal-spool/fetch-*/ | grep -E '^[0-9A-F]{24}$' | tr '\n' ' '; }
pf 80
ok "prefetch: the segment asked for ($n_req requests)" test $rc = 0 -a $n_req -gt 0
ok "... right" same 80
ok "... and the next three spooled ($(spooled))" test "$(spooled)" = "$(seg 81) $(seg 82) $(seg 83) "
n_bad=0
for i in 81 82; do
	pf $i
	[ $rc = 0 ] && [ $n_req = 0 ] && same $i || { n_bad=$((n_bad + 1)); echo "segment $i: exit $rc, $n_req requests" >&2; }
done
ok "spooled segments are served without a request" test $n_bad = 0
# out of order: 81 was consumed; asked again, it is fetched, and what is behind it stays
pf 81
ok "out of order: fetched again ($n_req requests)" test $rc = 0 -a $n_req -gt 0
ok "... right" same 81
# a damaged spool file is not served: fetched again
f=$(ls -d "$SPOOLC"/wal-spool/fetch-*)/$(seg 83)
flip_byte "$f" 4000
pf 83
ok "a damaged spool file is fetched again ($n_req requests)" test $rc = 0 -a $n_req -gt 0
ok "... right" same 83
ok "... with a warning" grep_or_show "spooled WAL file \"$(seg 83)\" .* is damaged" "$T/pf.err"
# the end of the archive: 84, 85 there, 86 and 87 not: no error, 86 exits 1 quietly
pf 84
ok "end of the archive: the segment is served" test $rc = 0
ok "... right" same 84
ok "... the next one spooled, nothing after it" test "$(spooled)" = "$(seg 85) "
# a timeline history file clears the spool (recovery may switch timelines)
rc=0
"$PGBAKFS" wal-fetch 00000002.history "$D/pg_wal/RECOVERYHISTORY" --prefetch 4 --cache-dir "$SPOOLC" || rc=$?
ok "a history file asked for: exit 1 (not archived)" test $rc = 1
ok "... and the spool is empty" test -z "$(spooled)"
pf 86
ok "past the end: exit 1, quiet" test $rc = 1 -a ! -s "$T/pf.err" -a ! -e "$D/pg_wal/RECOVERYXLOG"
# damage on the way during a prefetch: read again (one flip), or never spooled (two)
only="only=GET%20/$S3_BUCKET/w/wal/00000001/"
proxy_plan "flip&$only$(seg 81)"
pf 80
proxy_plan pass
ok "a prefetched body damaged once is read again" test $rc = 0 -a "$(spooled)" = "$(seg 81) $(seg 82) $(seg 83) "
pf 81
ok "... and served right from the spool" test $rc = 0 -a $n_req = 0
ok "... right" same 81
"$PGBAKFS" wal-fetch 00000002.history "$D/pg_wal/RECOVERYHISTORY" --prefetch 4 --cache-dir "$SPOOLC" || true
proxy_plan "flip,flip&$only$(seg 83)"
pf 82
proxy_plan pass
ok "a prefetched body damaged twice is not spooled ($(spooled))" test $rc = 0 -a "$(spooled)" = "$(seg 84) $(seg 85) "
pf 83
ok "... its own call fetches it ($n_req requests)" test $rc = 0 -a $n_req -gt 0
ok "... right" same 83
# transient faults during a prefetch: retried by the driver, exact bytes
"$PGBAKFS" wal-fetch 00000002.history "$D/pg_wal/RECOVERYHISTORY" --prefetch 4 --cache-dir "$SPOOLC" || true
proxy_plan "503,cut,drop&$only$(seg 85)"
pf 84
proxy_plan pass
pf 85
ok "faults during a prefetch: retried, then served from the spool" test $rc = 0 -a $n_req = 0
ok "... right" same 85
# another cluster's data directory: nothing spooled is served to it
pf 80
pg_control 7000000000000000002
pf 81
ok "another system identifier: the spool is not served ($n_req requests)" test $rc = 0 -a $n_req -gt 0
ok "... the file asked for is" same 81
ok "... and nothing of the other cluster is spooled for it" test -z "$(spooled)"
pg_control 7000000000000000001
# a full spool disk: the file asked for is served, a warning says why nothing was spooled
mkdir -p "$T/small"
if mount -t tmpfs -o size=1m tmpfs "$T/small" 2>/dev/null; then
	at_exit "umount '$T/small'"
	SPOOLC=$T/small pf 80
	ok "full spool disk: the segment asked for is served" test $rc = 0
	ok "... right" same 80
	ok "... with a warning" grep_or_show "could not spool prefetched WAL files in .*No space left on device" "$T/pf.err"
	ok "... nothing half-written left" test -z "$(ls "$T"/small/wal-spool/fetch-*/ | grep -v -e '^lock$' -e '^segsize$' -e '^sysid$')"
else
	fail "could not mount a 1 MiB tmpfs for the full-spool case (needs root)"
fi

# ---- wal-push --parallel ----
W=$T/pgwal
mkdir -p "$W/archive_status"
mkwal $(for i in $(seq 96 101); do echo "$W/$(seg $i)"; done) --size 0x100000 --seed 96
for i in $(seq 96 101); do touch "$W/archive_status/$(seg $i).ready"; done
# pp N: PostgreSQL's call for segment N; sets rc and n_req; marks it done on success
pp() {
	local c0
	c0=$(proxy_count)
	rc=0
	"$PGBAKFS" wal-push "$W/$(seg $1)" --parallel 4 --cache-dir "$SPOOLC" 2>"$T/pp.err" || rc=$?
	n_req=$(($(proxy_count) - c0))
	[ $rc != 0 ] || mv "$W/archive_status/$(seg $1).ready" "$W/archive_status/$(seg $1).done"
}
# the PUT of segment 99 fails for good: it must not be reported done later
proxy_always "403&only=PUT%20/$S3_BUCKET/w/wal/00000001/$(seg 99)"
pp 96
proxy_plan pass
ok "parallel push: the file asked for is archived" test $rc = 0
ok "... a file pushed ahead that failed is a warning" grep_or_show "could not archive WAL file \"$(seg 99)\" ahead" "$T/pp.err"
pp 97
ok "... a file pushed ahead is answered without a request" test $rc = 0 -a $n_req = 0
pp 98
ok "... another" test $rc = 0 -a $n_req = 0
pp 99
ok "... the failed one is pushed by its own call ($n_req requests)" test $rc = 0 -a $n_req -gt 0
# a file changed after it was pushed ahead is not taken for the archived one
pp 100 # pushes 100, 101 ahead
mkwal "$W/$(seg 101)" --size 0x100000 --seed 7
expect_error 1 "WAL file \"$(seg 101)\" is already archived with different content" \
	"$PGBAKFS" wal-push "$W/$(seg 101)" --parallel 4 --cache-dir "$SPOOLC"
n_bad=0
for i in $(seq 96 100); do
	rm -f "$T/work/x"
	pgbakfs wal-fetch "$(seg $i)" "$T/work/x" && cmp -s "$T/work/x" "$W/$(seg $i)" || { n_bad=$((n_bad + 1)); echo "segment $i" >&2; }
done
ok "every file pushed in parallel fetches back identical" test $n_bad = 0
finish
