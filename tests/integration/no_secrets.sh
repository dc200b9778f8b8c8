# Runs after every other test (ctest DEPENDS): the whole suite's output, as
# ctest recorded it in Testing/Temporary/LastTest.log, must not hold the test
# S3 secret key, the session token or the test passphrase.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3lib.sh"
: "${PGBAKFS_BUILD:?PGBAKFS_BUILD must point at the build directory (run through ctest)}"
LOG=$PGBAKFS_BUILD/Testing/Temporary/LastTest.log
ok "ctest's log exists" test -s "$LOG"
# the log must really hold the suite's output, or this test proves nothing
ok "the log holds the S3 test's output" grep -q "s3.sh" "$LOG"
ok "the log holds the encryption test's output" grep -q "encryption.sh" "$LOG"
for s in "$S3_SECRET" "$S3_TOKEN" "$TEST_PASSPHRASE" "$TEST_PASSPHRASE2"; do
	ok "no output holds ${s:0:14}..." bash -c "! grep -n -F -- '$s' '$LOG' | head -3 | grep ."
done
finish
