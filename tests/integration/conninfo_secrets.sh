# backup -d with a password in the conninfo (key=value and URI): the
# password, the sslpassword and the rest of what libpq marks as secret are
# nowhere in the repository (catalog.db, its WAL, snapshot manifests,
# catalog generations, decompressed), the cache, or any output (show, list
# --json); the source keeps the rest of the conninfo. A repository where an
# older version recorded a password (planted here with sqlite3 and published
# by a writer, so manifests and generations hold it too) is scrubbed by the
# next backup, in a directory, in S3 and encrypted; the old catalog
# generations in the bucket go within three more writes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
. "$(dirname "$0")/s3lib.sh"
[ "$(id -u)" = 0 ] || { echo "conninfo_secrets needs root (PostgreSQL as postgres)"; exit 1; }
PORT=54315
PW=Sekr1tPw-Ab12
SSLPW=SslSekr1t-Cd34
URIPW=UriSekr1t-Ef56
CONN="host=127.0.0.1 port=$PORT user=postgres password=$PW sslpassword='$SSLPW x' sslmode=disable application_name='my app'"
URI="postgresql://postgres:$URIPW@127.0.0.1:$PORT/postgres?sslmode=disable"
O=$T/out
mkdir -p "$O"
export XDG_CACHE_HOME=$T/cache-default
unset PGBAKFS_PASSPHRASE PGBAKFS_REPO
printf '%s\n' "$TEST_PASSPHRASE" >"$T/pass" && chmod 600 "$T/pass"
pg_init "$T/data" $PORT
pg_start "$T/data"
s3_start
mkdir -p "$T/tree" && seq 1 1000 >"$T/tree/f"

LOCAL=$T/repo
S3=s3://$S3_BUCKET/sec
ENC=$T/enc
pb() { # pb KIND ARGS...: pgbakfs on that kind's repository
	local kind=$1; shift
	case $kind in
	local) "$PGBAKFS" "$@" --repo "$LOCAL" ;;
	s3) "$PGBAKFS" "$@" --repo "$S3" --cache-dir "$T/cache-s3" ;;
	enc) "$PGBAKFS" "$@" --repo "$ENC" --cache-dir "$T/cache-enc" --passphrase-file "$T/pass" ;;
	esac
}
run() { # run NAME KIND ARGS...: outputs kept for the final check
	local name=$1; shift
	pb "$@" >"$O/$name.out" 2>"$O/$name.err"
}
catalog_of() { # the working catalog.db (in the cache for S3 and encrypted)
	case $1 in
	local) echo "$LOCAL/catalog.db" ;;
	*) find "$T/cache-$1" -name catalog.db | head -1 ;;
	esac
}
# (grep reads whole files: a grep -q at the end of a pipe would SIGPIPE the writer)
has_secret() { grep -qa -e "$PW" -e "$SSLPW" -e "$URIPW" "$@"; }
# files under the directories that hold a secret, raw or (objects) decompressed
# (one process for them all: a few per file made this the test's longest part)
secret_files() {
	python3 - "$PW" "$SSLPW" "$URIPW" "$@" <<'PY'
import os, stat, subprocess, sys
secrets = [s.encode() for s in sys.argv[1:4]]
def has_secret(data):
    return any(s in data for s in secrets)
def regular(path):
    return stat.S_ISREG(os.lstat(path).st_mode)
def files(top):  # find TOP -type f
    if not os.path.isdir(top):
        if os.path.lexists(top) and regular(top):
            yield top
        return
    for root, _, names in os.walk(top):
        for name in names:
            path = os.path.join(root, name)
            if regular(path):
                yield path
for top in sys.argv[4:]:
    for path in files(top):
        with open(path, "rb") as f:
            data = f.read()
        if has_secret(data):
            print(path)
        elif data[:8] == b"PGBKOBJ1" and len(data) > 8 and data[8] == 1:
            # a compressed object: its payload after the 24-byte header
            z = subprocess.run(["zstd", "-dcq"], input=data[24:], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
            if z.returncode != 0:
                print(path + " (does not decompress)")
            if has_secret(z.stdout):
                print(path + " (decompressed)")
PY
}
no_secret_in() { # no_secret_in WHAT DIR...
	local what=$1 hits; shift
	hits=$(secret_files "$@")
	if [ -n "$hits" ]; then fail "$what: a secret in $(echo "$hits" | tr '\n' ' ')"; else pass; fi
}
dump_clean() { sqlite3 "$1" .dump >"$T/.dump" && ! has_secret "$T/.dump"; }
dump_dirty() { sqlite3 "$1" .dump >"$T/.dump" && has_secret "$T/.dump"; }
# catalog generations in the bucket holding a secret
s3_secret_gens() { secret_files "$T/s3data" | grep -c '/catalog/' || true; }
# rebuild_dump KIND NAME: a catalog rebuilt from a copy of the repository's
# objects (manifests, packs) alone, dumped to $T/dumps/NAME
rebuild_dump() {
	local kind=$1 name=$2 db
	mkdir -p "$T/dumps"
	rm -rf "$T/$name" && cp -a "$([ "$kind" = enc ] && echo "$ENC" || echo "$LOCAL")" "$T/$name"
	if [ "$kind" = enc ]; then
		"$PGBAKFS" repair --rebuild-catalog --repo "$T/$name" --cache-dir "$T/cache-$name" \
			--passphrase-file "$T/pass" >"$O/$name.out" 2>"$O/$name.err" || return 1
		db=$(find "$T/cache-$name" -name catalog.db | head -1)
	else
		"$PGBAKFS" repair --rebuild-catalog --repo "$T/$name" >"$O/$name.out" 2>"$O/$name.err" || return 1
		db=$T/$name/catalog.db
	fi
	sqlite3 "$db" .dump >"$T/dumps/$name" && grep -q "port=$PORT" "$T/dumps/$name"
}
manifests_clean() { rebuild_dump "$@" && ! has_secret "$T/dumps/$2"; }
manifests_dirty() { rebuild_dump "$@" && has_secret "$T/dumps/$2"; }
shows_secret() { pb "$1" show latest >"$T/.show" && has_secret "$T/.show"; }

ok "init local" run i1 local init
ok "init s3" run i2 s3 init
ok "init encrypted" run i3 enc init --encrypt

# ---- new backups record no secret ----
for kind in local s3 enc; do
	ok "$kind: backup -d with password and sslpassword" run "$kind-bk1" $kind backup -d "$CONN" --no-progress
	id1=$(pb $kind list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
	ok "$kind: backup -d with a URI holding a password" run "$kind-bk2" $kind backup -d "$URI" --no-progress
	run "$kind-show1" $kind show "$id1" --json
	run "$kind-show2" $kind show latest
	run "$kind-list" $kind list --json
	ok "$kind: the source keeps the rest of the conninfo" python3 -c '
import json, shlex, sys
src = json.load(open(sys.argv[1]))["source"]
assert src.startswith("pg:"), src
kv = dict(w.split("=", 1) for w in shlex.split(src[3:]))
assert kv == {"user": "postgres", "host": "127.0.0.1", "port": sys.argv[2], "sslmode": "disable",
              "application_name": "my app"}, kv' "$O/$kind-show1.out" $PORT
	ok "$kind: a URI becomes key=value without the password" grep -q "^source: *pg:user=postgres dbname=postgres host=127.0.0.1 port=$PORT sslmode=disable$" "$O/$kind-show2.out"
	ok "$kind: list --json is valid and has both sources" python3 -c '
import json, sys; l = json.load(open(sys.argv[1])); assert len(l) == 2 and all(s["source"].startswith("pg:") for s in l), l' "$O/$kind-list.out"
	ok "$kind: no secret in the dump of the catalog" dump_clean "$(catalog_of $kind)"
done
no_secret_in "the local repository" "$LOCAL"
no_secret_in "the encrypted repository" "$ENC"
no_secret_in "the bucket" "$T/s3data"
no_secret_in "the caches (catalog copies)" "$T"/cache-*
for kind in local enc; do
	ok "$kind: a catalog rebuilt from the manifests holds no secret" manifests_clean $kind rb-$kind
done

# ---- a password an older version recorded: the next backup removes it ----
OLD="pg:host=127.0.0.1 port=$PORT user=postgres password=$PW sslpassword=$SSLPW"
OLD_URI="pg:postgresql://postgres:$URIPW@127.0.0.1:$PORT/postgres"
for kind in local s3 enc; do
	# the rows edited in the working catalog, then a writer (pin) publishes the
	# change: the manifests and (S3, encrypted) a catalog generation hold it too
	sqlite3 "$(catalog_of $kind)" "update snapshots set source = '$OLD' where id = (select min(id) from snapshots);
		update snapshots set source = '$OLD_URI' where id = (select max(id) from snapshots)"
	ok "$kind: a writer publishes the planted rows" run "$kind-pin" $kind pin latest --ttl 1d
	ok "$kind: the fixture holds the secrets" dump_dirty "$(catalog_of $kind)"
	ok "$kind: show prints the planted secret (fixture)" shows_secret $kind
done
ok "local: the fixture's manifests hold the secret" test -n "$(secret_files "$LOCAL/snapshots")"
ok "s3: the fixture's manifests hold the secret" test -n "$(secret_files "$T/s3data" | grep /snapshots/)"
ok "s3: the fixture's newest catalog generation holds the secret" test "$(s3_secret_gens)" -ge 1
ok "encrypted: the fixture's manifests hold the secret" manifests_dirty enc rb-fix
s3_gens_before=$(s3_secret_gens)

for kind in local s3 enc; do
	ok "$kind: the next backup (--from-dir) scrubs" run "$kind-scrub" $kind backup --from-dir "$T/tree" --no-progress
	ok "$kind: it says so once" grep -q "removed the password an older version recorded with the source of 2 snapshot(s)" "$O/$kind-scrub.err"
	ok "$kind: the catalog's rows are clean" dump_clean "$(catalog_of $kind)"
	no_secret_in "$kind: the catalog file (free pages, WAL)" "$(dirname "$(catalog_of $kind)")"
	run "$kind-list2" $kind list --json
	ok "$kind: the sources keep what is not secret" python3 -c '
import json, sys; l = json.load(open(sys.argv[1]))
assert l[0]["source"] == "pg:user=postgres host=127.0.0.1 port=%s" % sys.argv[2], l[0]["source"]
assert l[1]["source"] == "pg:user=postgres dbname=postgres host=127.0.0.1 port=%s" % sys.argv[2], l[1]["source"]
assert l[2]["source"].startswith("dir:"), l[2]' "$O/$kind-list2.out" $PORT
	ok "$kind: a second backup has nothing to scrub" run "$kind-scrub2" $kind backup --from-dir "$T/tree" --no-progress
	ok "$kind: and says nothing of it" bash -c "! grep -q removed '$O/$kind-scrub2.err'"
done
no_secret_in "local: the repository after the scrub" "$LOCAL"
no_secret_in "the caches after the scrub" "$T/cache-s3" "$T/cache-enc"
ok "local: the manifests are clean after the scrub" manifests_clean local rb-local-after
ok "encrypted: the manifests are clean after the scrub" manifests_clean enc rb-after
ok "s3: the manifests are clean after the scrub" test -z "$(secret_files "$T/s3data" | grep /snapshots/)"
newest=$(find "$T/s3data" -path '*sec/catalog/*' -type f | LC_ALL=C sort | tail -1)
ok "s3: the newest generation ($newest) holds no secret" test -z "$(secret_files "$newest")"
# the generations published before the scrub stay (readers may be fetching them)
# until three more writes prune them
echo "s3: generations holding a secret: $s3_gens_before before the scrub, $(s3_secret_gens) after"
for i in 1 2 3; do run "s3-pin$i" s3 pin latest --ttl ${i}d; done
ok "s3: three writes later no generation holds the secret" test "$(s3_secret_gens)" = 0
no_secret_in "the bucket, finally" "$T/s3data"
no_secret_in "command output" "$O"
finish
