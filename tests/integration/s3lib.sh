# Helpers for tests against a local S3-compatible server. Source after lib.sh.
# s3_start: s3rver (tests/s3/server.js) on 127.0.0.1 with bucket "pgbakfs-test",
# and our fault-injecting proxy (tests/s3/proxy.js) in front of it. Exports the
# settings pgbakfs reads; S3_DIRECT / S3_PROXY are the two endpoints.
S3_DIR="$PGBAKFS_SRC/tests/s3"
S3_BUCKET=pgbakfs-test
# distinctive values: no log or error output of the suite may contain them
S3_SECRET=pgbakfs-secret-Zq7x9Lw2Vb
S3_TOKEN=pgbakfs-token-Kp4m8Rt1Qd

# node_helper NAME OUTFILE ARGS...: start tests/s3/NAME in the background, wait for
# "ready PORT" in OUTFILE. Not in a command substitution: the teardown that kills it
# must be registered in the test's own shell.
node_helper() {
	local js=$1 out=$2; shift 2
	node --openssl-legacy-provider "$S3_DIR/$js" "$@" >"$out" 2>&1 &
	at_exit "kill $! 2>/dev/null"
	for _ in $(seq 1 100); do
		grep -q '^ready ' "$out" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "FAIL: $js did not start: $(cat "$out")" >&2
	return 1
}
ready_port() { awk '/^ready /{print $2}' "$1"; }

s3_start() {
	command -v node >/dev/null || skip "node is not installed (tools/deps installs it)"
	[ -d "$S3_DIR/node_modules/s3rver" ] || skip "s3rver is not installed: npm ci --prefix tests/s3 (tools/test does)"
	mkdir -p "$T/s3data"
	local sport pport
	node_helper server.js "$T/s3server.out" 0 "$T/s3data" "$S3_BUCKET"
	sport=$(ready_port "$T/s3server.out")
	node_helper proxy.js "$T/s3proxy.out" "$sport"
	pport=$(ready_port "$T/s3proxy.out")
	S3_DIRECT=http://127.0.0.1:$sport
	S3_PROXY=http://127.0.0.1:$pport
	export PGBAKFS_S3_ENDPOINT=$S3_DIRECT AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=$S3_SECRET
	export AWS_SESSION_TOKEN=$S3_TOKEN AWS_REGION=us-east-1
	unset PGBAKFS_S3_URI_STYLE PGBAKFS_CONFIG
}

# proxy_plan FAULTS: the next requests through the proxy get these faults (comma-separated)
proxy_plan() { curl -fsS "$S3_PROXY/__fault?plan=$1" >/dev/null; }
proxy_always() { curl -fsS "$S3_PROXY/__fault?always=$1" >/dev/null; }
proxy_count() { curl -fsS "$S3_PROXY/__count"; }

# s3_put KEY FILE / s3_get KEY: raw object access (s3rver does not check signatures)
s3_put() { curl -fsS -X PUT --data-binary "@$2" "$S3_DIRECT/$S3_BUCKET/$1" >/dev/null; }
s3_keys() { # PREFIX: keys under it
	curl -fsS "$S3_DIRECT/$S3_BUCKET/?list-type=2&prefix=$1" | grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g'
}
s3_rm() { curl -fsS -X DELETE "$S3_DIRECT/$S3_BUCKET/$1" >/dev/null; }

# no_secret FILE...: none of the files holds the secret key or the session token
no_secret() { ! grep -l -e "$S3_SECRET" -e "$S3_TOKEN" "$@" 2>/dev/null; }
# passphrases of the encryption tests (also never printed)
TEST_PASSPHRASE=pgbakfs-pass-Hy5u2Nc8Xe
TEST_PASSPHRASE2=pgbakfs-pass-Wm3k7Jd4Ta
