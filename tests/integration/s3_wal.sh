# The WAL archive in S3-compatible storage (s3rver behind tests/s3/proxy.js,
# which gives it AWS's If-None-Match semantics on PUT): two machines (two
# cache directories) pushing one name at once with different content: exactly
# one wins, and the object is the winner's bytes; with the same content both
# succeed. wal-fetch: a body damaged on the way is read again; transient
# errors are retried by the driver; damage, access denied, a failing or
# unreachable store exit 126; a missing file exits 1.
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
finish
