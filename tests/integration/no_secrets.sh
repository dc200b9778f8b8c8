# Run by tools/test after a build's whole suite: every test's output, as ctest
# recorded it in Testing/Temporary/LastTest.log, must not hold the test S3
# secret key, the session token or the test passphrases.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3lib.sh"
: "${PGBAKFS_BUILD:?PGBAKFS_BUILD must point at the build directory (run through ctest)}"
LOG=$PGBAKFS_BUILD/Testing/Temporary/LastTest.log
ok "ctest's log exists" test -s "$LOG"
# the log must really hold the suite's output, or this test proves nothing
ok "the log holds the S3 test's output" grep -q "s3.sh" "$LOG"
ok "the log holds the encryption test's output" grep -q "encryption.sh" "$LOG"
ok "the log is the whole suite's (no_secrets runs last)" grep -q "unit_test_backend_s3" "$LOG"
n=0
for s in "$S3_SECRET" "$S3_TOKEN" "$TEST_PASSPHRASE" "$TEST_PASSPHRASE2"; do
	n=$((n + 1))
	# say where, never what
	if grep -q -F -- "$s" "$LOG"; then
		fail "a test's output holds test secret #$n, at lines: $(grep -n -F -- "$s" "$LOG" | cut -d: -f1 | head -5 | tr '\n' ' ')"
	else
		pass
	fi
done
finish
