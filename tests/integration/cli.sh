# Every command answers --help; wrong usage exits 2 with one error line.
. "$(dirname "$0")/lib.sh"

for cmd in init backup list show restore delete gc check stats mount verify dump expire pin \
	wal-push wal-fetch restore-point; do
	ok "$cmd --help" pgbakfs $cmd --help >/dev/null
	# wal-fetch is restore_command: any failure but "not archived" stops recovery (126)
	want=2; [ "$cmd" = wal-fetch ] && want=126
	expect_error $want "invalid option" pgbakfs $cmd --no-such-option
done
ok "pgbakfs --help" pgbakfs --help >/dev/null
expect_error 2 'unknown command "frobnicate"' pgbakfs frobnicate
expect_error 2 "no repository given" env -u PGBAKFS_REPO "$PGBAKFS" list
expect_error 2 "missing -d CONNINFO or --from-dir DIR" pgbakfs backup --repo "$T/r"
expect_error 2 "either -d or --from-dir" pgbakfs backup --repo "$T/r" -d x --from-dir y
expect_error 2 "expected ID and TARGET" pgbakfs restore latest
expect_error 2 "missing snapshot ID" pgbakfs show --repo "$T/r"
expect_error 2 "invalid number of jobs" pgbakfs restore -j 0 latest "$T/x"
expect_error 2 "invalid chunk size" pgbakfs init --repo "$T/r" --chunk-size 12K
expect_error 2 "invalid chunk size" pgbakfs init --repo "$T/r" --chunk-size 4K
expect_error 2 "expected MOUNTPOINT" pgbakfs mount
expect_error 2 "expected one snapshot ID" pgbakfs verify
expect_error 2 "expected one snapshot ID" pgbakfs dump -- -t x

# PGBAKFS_REPO works like --repo
ok "init via PGBAKFS_REPO" env PGBAKFS_REPO="$T/r" "$PGBAKFS" init >/dev/null
ok "list via PGBAKFS_REPO" env PGBAKFS_REPO="$T/r" "$PGBAKFS" list >/dev/null
expect_error 1 "already exists" pgbakfs init --repo "$T/r"
finish
