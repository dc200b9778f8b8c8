# Restore and verify you can trust, on an encrypted repository with a real
# PostgreSQL 15:
# - verify and dump take --passphrase-file/--cache-dir like every command and
#   pass them to their clone's mount; the throwaway server's environment holds
#   no passphrase and no AWS secret (its restore_command reads them from 0600
#   files in the private directory, removed afterwards); what verify keeps is 0600
# - the restore_command written by restore carries the options wal-fetch needs,
#   no secret, and passes wal-fetch's exit status through unchanged
# - a restore holds its snapshot: delete + gc meanwhile do not break it
# - global/pg_control is written last: a failed restore leaves none
# - restore --delta keeps a pg_wal symlink
# - bad --tablespace-map / --target-* values are refused before anything is written
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
. "$(dirname "$0")/mnt.sh"
. "$(dirname "$0")/s3lib.sh"
[ "$(id -u)" = 0 ] || { echo "FAIL: restore_trust needs root (mounts for the postgres user)"; exit 1; }
PORT=54305
R=$T/repo
CONN="host=127.0.0.1 port=$PORT user=postgres"
unset PGBAKFS_PASSPHRASE PGBAKFS_NEW_PASSPHRASE PGBAKFS_CONFIG AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN
export XDG_CACHE_HOME=$T/xdg
printf '%s\n' "$TEST_PASSPHRASE" >"$T/pass" && chmod 600 "$T/pass"
# the server's archive_command runs as postgres: its own copy, its own cache
cp "$T/pass" "$T/pass.pg" && chown postgres "$T/pass.pg" && chmod 600 "$T/pass.pg"
mkdir -p "$T/pgcache" "$T/vtmp" "$T/envs" && chown postgres "$T/pgcache" "$T/envs"
chmod 755 "$T/vtmp"
PGOPTS="--passphrase-file $T/pass.pg --cache-dir $T/pgcache"
ROOTOPTS=(--repo "$R" --passphrase-file "$T/pass" --cache-dir "$T/cache")

pgbakfs init --repo "$R" --encrypt --passphrase-file "$T/pass" >/dev/null
pg_init "$T/data" $PORT
cat >>"$T/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = '$PGBAKFS wal-push %p --repo $R $PGOPTS'
CONF
pg_own "$R"
pg_start "$T/data"
mkdir -p "$T/ts" && chown postgres "$T/ts"
pg_sql $PORT "create tablespace ts location '$T/ts'"
pg_sql $PORT "create table orders tablespace ts as select g as id, md5(g::text) as item from generate_series(1, 20000) g"
pg_sql $PORT "create table events(id serial, at timestamptz default clock_timestamp(), batch int)"
# enough data that a restore with -j 1 takes a moment (test 5)
pg_sql $PORT "create table filler as select g, md5(g::text) || md5((g + 1)::text) as v from generate_series(1, 1200000) g"
ok "backup" pgbakfs backup -d "$CONN" --pgdata "$T/data" "${ROOTOPTS[@]}" --no-progress >/dev/null
pg_own "$R"
S=$(pgbakfs list "${ROOTOPTS[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
# the same cluster in a bucket, S3 keys in our environment only (s3_start exports them)
s3_start
RS=s3://$S3_BUCKET/trust
S3OPTS=(--repo "$RS" --cache-dir "$T/s3cache")
pgbakfs init "${S3OPTS[@]}" >/dev/null
# the bucket's snapshot starts in this segment or a later one: its PITR needs no earlier WAL
FIRST_SEG=$(pg_sql $PORT "select pg_walfile_name(pg_current_wal_lsn())")
ok "backup into a bucket" pgbakfs backup -d "$CONN" --pgdata "$T/data" "${S3OPTS[@]}" --no-progress >/dev/null
SS=$(pgbakfs list "${S3OPTS[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
pg_two_batches $PORT
ok "WAL archived through wal-push" wait_for 60 pg_archived $PORT "$LAST"
pg_own "$R"
# the archive from the bucket's snapshot on copied into the bucket
mkdir -p "$T/walcopy"
for seg in $(ls "$R/wal/00000001" | grep -E '^[0-9A-F]{24}$'); do
	[[ ! "$seg" < "$FIRST_SEG" ]] || continue
	pgbakfs wal-fetch "$seg" "$T/walcopy/$seg" "${ROOTOPTS[@]}"
	pgbakfs wal-push "$T/walcopy/$seg" "${S3OPTS[@]}" >/dev/null
done

# PostgreSQL binaries whose client programs first record the environment of
# the server they talk to (its postmaster's /proc/PID/environ, the PID from
# the socket's lock file)
mkdir -p "$T/pgbin"
ln -s "$PGBIN"/* "$T/pgbin/"
for prog in pg_amcheck pg_dump; do
	rm "$T/pgbin/$prog"
	cat >"$T/pgbin/$prog" <<SH
#!/bin/bash
pid=\$(head -1 "\$2/.s.PGSQL.\$4.lock")
tr '\0' '\n' </proc/\$pid/environ >"$T/envs/$prog.\$pid"
exec "$PGBIN/$prog" "\$@"
SH
	chmod 755 "$T/pgbin/$prog"
done
server_env() { # PROGRAM: the environment recorded by the latest run of PROGRAM
	local f
	f=$(ls -t "$T/envs/$1".* 2>/dev/null | head -1)
	[ -n "$f" ] && cat "$f"
}
no_secret_env() { # PROGRAM
	local e
	e=$(server_env "$1") || return 1
	grep -q '^PATH=' <<<"$e" || { echo "no environment recorded for $1" >&2; return 1; }
	if grep -E '^(PGBAKFS_PASSPHRASE|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN)=' <<<"$e" ||
		grep -F -e "$TEST_PASSPHRASE" -e "$S3_SECRET" -e "$S3_TOKEN" <<<"$e"; then
		echo "the scratch server's environment holds a secret" >&2
		return 1
	fi
}
verified_ok() { # ID: verify recorded ok
	"$PGBAKFS" show "$1" "${ROOTOPTS[@]}" --json | python3 -c '
import json, sys
v = json.load(sys.stdin)["verified"]
assert v and v["ok"] is True, v'
}

# ---- 1: verify and dump with --passphrase-file; no secret in the server's environment ----
ok "verify --passphrase-file" env -u PGBAKFS_PASSPHRASE AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
	AWS_SESSION_TOKEN="$S3_TOKEN" TMPDIR="$T/vtmp" "$PGBAKFS" verify "$S" "${ROOTOPTS[@]}" \
	--pg-bin "$T/pgbin" >"$T/verify1.out" 2>"$T/verify1.err" || cat "$T/verify1.err" >&2
ok "verify says ok" grep -q "verified snapshot \"$S\": startup: ok; amcheck: ok" "$T/verify1.out"
ok "verify recorded ok" verified_ok "$S"
ok "verify's server: no AWS secret in its environment" no_secret_env pg_amcheck
rm -f "$T"/envs/*
ok "verify, passphrase in the environment only" env PGBAKFS_PASSPHRASE="$TEST_PASSPHRASE" \
	AWS_SECRET_ACCESS_KEY="$S3_SECRET" TMPDIR="$T/vtmp" "$PGBAKFS" verify "$S" --repo "$R" \
	--cache-dir "$T/cache" --pg-bin "$T/pgbin" --keep-scratch >"$T/verify2.out" 2>"$T/verify2.err" ||
	cat "$T/verify2.err" >&2
ok "verify's server: no passphrase in its environment" no_secret_env pg_amcheck
KEPT=$(sed -n 's/.*kept in "\(.*\)"$/\1/p' "$T/verify2.err")
ok "the kept directory is named" test -n "$KEPT" -a -d "$KEPT"
ok "checks.log kept 0600" test "$(stat -c %a "$KEPT/checks.log" 2>/dev/null)" = 600
ok "nothing kept readable by others" test -z "$(find "$KEPT" -maxdepth 2 -type f -perm /044)"
ok "no passphrase file left in the kept directory" bash -c "! grep -rlqF -- '$TEST_PASSPHRASE' '$KEPT'"
rm -rf "$KEPT"
ok "dump --passphrase-file" bash -c "env -u PGBAKFS_PASSPHRASE TMPDIR='$T/vtmp' '$PGBAKFS' dump '$S' ${ROOTOPTS[*]} --pg-bin '$T/pgbin' -- -t public.orders postgres >'$T/dump1.sql'"
ok "dump wrote the table" grep -q "CREATE TABLE public.orders" "$T/dump1.sql"
ok "dump's server: no secret in its environment" no_secret_env pg_dump
# a recovery target: the server's restore_command (wal-fetch, as postgres)
# needs the passphrase given only in our environment, and a cache it may write
# (it reads the repository as postgres: verify recorded its outcomes as root)
rm -f "$T"/envs/*
pg_own "$R"
ok "dump at a point in time, passphrase in the environment only" bash -c "env PGBAKFS_PASSPHRASE='$TEST_PASSPHRASE' AWS_SECRET_ACCESS_KEY='$S3_SECRET' TMPDIR='$T/vtmp' '$PGBAKFS' dump '$S' --repo '$R' --cache-dir '$T/cache' --target-time '$MID' --target-action promote --pg-bin '$T/pgbin' -- -t public.events --data-only --inserts postgres >'$T/dump2.sql'" 
ok "dump PITR: only the first batch" test "$(grep -c ', 1);$' "$T/dump2.sql"),$(grep -c ', 2);$' "$T/dump2.sql")" = "100,0"
ok "dump PITR's server: no secret in its environment" no_secret_env pg_dump
# the same from a bucket: restore_command reads the S3 keys from a 0600 config file
rm -f "$T"/envs/*
ok "dump at a point in time from a bucket" bash -c "TMPDIR='$T/vtmp' '$PGBAKFS' dump '$SS' ${S3OPTS[*]} --target-time '$MID' --target-action promote --pg-bin '$T/pgbin' -- -t public.events --data-only --inserts postgres >'$T/dump3.sql'"
ok "dump PITR from a bucket: only the first batch" test "$(grep -c ', 1);$' "$T/dump3.sql"),$(grep -c ', 2);$' "$T/dump3.sql")" = "100,0"
ok "its server: no S3 secret in its environment" no_secret_env pg_dump
ok "verify leaves no mount, no server" bash -c "! grep -q '$T/vtm[p]' /proc/mounts && ! pgrep -f '$T/vtm[p]' >/dev/null"
ok "and no private directory" test -z "$(ls -A "$T/vtmp")"

# ---- 7: restore's restore_command: the options wal-fetch needs, no secret, exit status unchanged ----
ok "restore to a point in time" pgbakfs restore "$S" "$T/pitr" --tablespace-map "$T/ts=$T/ts-pitr" \
	--repo "$R" --passphrase-file "$T/pass.pg" --cache-dir "$T/pgcache" --target-time "$MID" \
	--target-action promote --no-progress >/dev/null
RC=$(sed -n "s/^restore_command = '\(.*\)'$/\1/p" "$T/pitr/postgresql.auto.conf" | sed "s/''/'/g")
ok "restore_command carries --passphrase-file and --cache-dir" bash -c "grep -qF -- \"--passphrase-file '$T/pass.pg'\" <<<\"\$1\" && grep -qF -- \"--cache-dir '$T/pgcache'\" <<<\"\$1\"" _ "$RC"
ok "restore_command is one wal-fetch, no shell around it" bash -c "grep -q ' wal-fetch %f %p ' <<<\"\$1\" && ! grep -q '[;&|]' <<<\"\$1\"" _ "$RC"
ok "no passphrase in postgresql.auto.conf" bash -c "! grep -qF -- '$TEST_PASSPHRASE' '$T/pitr/postgresql.auto.conf'"
pg_own "$T/pitr" "$T/ts-pitr" "$R" "$T/pgcache"
sed -i "s/^port = $PORT/port = $((PORT + 1))/; s/^archive_mode = on/archive_mode = off/" "$T/pitr/postgresql.conf"
pg_start "$T/pitr"
ok "PITR: only the first batch" wait_for 60 pg_batches_are $((PORT + 1)) "100,0"
pg_stop "$T/pitr"
run_rc() { # the restore_command for NAME DEST, as PostgreSQL runs it: its exit status
	local cmd=${RC//%f/$1}
	cmd=${cmd//%p/$2}
	local rc=0
	runuser -u postgres -- sh -c "$cmd" 2>/dev/null || rc=$?
	echo $rc
}
fetch_rc() { # wal-fetch NAME DEST directly: its exit status
	local rc=0
	runuser -u postgres -- "$PGBAKFS" wal-fetch "$1" "$2" --repo "$R" $PGOPTS 2>/dev/null || rc=$?
	echo $rc
}
ok "a missing WAL file: restore_command exits 1" test "$(run_rc 0000000100000000000000F0 "$T/pgcache/x")" = 1
SEG=$(find "$R/wal" -type f -name '0000000100000000000000*' | LC_ALL=C sort | tail -1)
python3 - "$SEG" <<'PY'
import os, sys
p = sys.argv[1]
n = os.path.getsize(p)
with open(p, "r+b") as f:
    f.seek(n // 2); b = f.read(1); f.seek(n // 2); f.write(bytes([b[0] ^ 0xff]))
PY
want=$(fetch_rc "$(basename "$SEG")" "$T/pgcache/y")
ok "a damaged WAL file: wal-fetch fails ($want)" test "$want" -ne 0
ok "and restore_command exits with the same status" test "$(run_rc "$(basename "$SEG")" "$T/pgcache/y")" = "$want"

# ---- 3: bad input, refused before anything is written ----
expect_error 2 "\"/no/such/tablespace\"" pgbakfs restore "$S" "$T/bad1" "${ROOTOPTS[@]}" --tablespace-map "$T/ts=$T/ts-bad" --tablespace-map /no/such/tablespace=/tmp/x
ok "nothing written for an unknown tablespace" test ! -e "$T/bad1" -a ! -e "$T/ts-bad"
for t in garbage 2025-13-01 "2025-01-32 10:00" "2025-01-01 25:00:00" "2025-01-01 10:00:00 +" "yesterday-ish"; do
	expect_error 2 "invalid --target-time \"$t\"" pgbakfs restore "$S" "$T/bad2" "${ROOTOPTS[@]}" --target-time "$t" --tablespace-map "$T/ts=$T/ts-bad"
done
ok "nothing written for a bad --target-time" test ! -e "$T/bad2"
mkdir -p "$T/nonempty" && touch "$T/nonempty/x"
for t in "2025-01-31" "2025-01-31 14:05" "2025-01-31 14:05:00" "2025-01-31T14:05:00Z" \
	"2025-01-31 14:05:00.123456+00" "2025-01-31 14:05:00+05:30" "2025-01-31 14:05:00 UTC" \
	"2025-01-31 14:05:00.5 Europe/Berlin" "2025-01-31T14:05:00-0800" "$MID"; do
	# accepted: the restore gets as far as the target directory
	expect_error 1 "is not empty" pgbakfs restore "$S" "$T/nonempty" "${ROOTOPTS[@]}" --target-time "$t"
done
for l in nonsense 0/XYZ -1/0 0x1/0 " 1/0" 1/ /1 1/123456789; do
	expect_error 2 "invalid --target-lsn" pgbakfs restore "$S" "$T/bad3" "${ROOTOPTS[@]}" --target-lsn "$l" --tablespace-map "$T/ts=$T/ts-bad"
done
expect_error 1 "is not empty" pgbakfs restore "$S" "$T/nonempty" "${ROOTOPTS[@]}" --target-lsn 1A/FF0012AB
for x in 12a -5 "" 99999999999999999999999; do
	expect_error 2 "invalid --target-xid" pgbakfs restore "$S" "$T/bad3" "${ROOTOPTS[@]}" --target-xid "$x" --tablespace-map "$T/ts=$T/ts-bad"
done
ok "nothing written for a bad target" test ! -e "$T/bad3" -a ! -e "$T/ts-bad"

# ---- 5: global/pg_control is written last: an interrupted restore leaves none ----
# Files are created as their chunks are queued, ahead of the workers, in the
# snapshot's order (base/, global/, pg_wal/): once pg_wal has a file, every
# file before it in that order exists. Freeze the restore there, look, kill it.
"$PGBAKFS" restore "$S" "$T/torn" "${ROOTOPTS[@]}" -j 1 --tablespace-map "$T/ts=$T/ts-torn" \
	--no-progress >"$T/torn.out" 2>&1 &
RPID=$!
wait_for 60 bash -c "[ -n \"\$(ls -A '$T/torn/pg_wal' 2>/dev/null)\" ]" || true
kill -STOP $RPID 2>/dev/null || true
ok "the restore is frozen midway" bash -c "[ -d /proc/$RPID ] && ! grep -q restored '$T/torn.out'"
ok "no global/pg_control while the rest is being written" test ! -e "$T/torn/global/pg_control"
kill -KILL $RPID 2>/dev/null || true
wait $RPID 2>/dev/null || true
ok "killed midway: still no global/pg_control" test ! -e "$T/torn/global/pg_control"
chown -R postgres "$T/torn"
# (its configuration files may be unwritten too: emptied, they say nothing; and so
# may PG_VERSION, the first thing PostgreSQL checks: its pack may come late)
: >"$T/torn/postgresql.conf" && : >"$T/torn/postgresql.auto.conf"
cp "$T/data/PG_VERSION" "$T/torn/PG_VERSION"
rc=0; timeout 30 runuser -u postgres -- "$PGBIN/postgres" -D "$T/torn" \
	-p $((PORT + 2)) -c listen_addresses= -c unix_socket_directories="$T/sock" >"$T/torn.pg.log" 2>&1 || rc=$?
ok "PostgreSQL refuses to start there ($rc)" bash -c "[ $rc != 0 ] && [ $rc != 124 ] && grep -q 'global/pg_control' '$T/torn.pg.log' || { cat '$T/torn.pg.log' >&2; false; }"
# durable before pg_control: the file system of the tablespace location is synced too (here
# another one than the target's: a tmpfs), seen as a syncfs on a descriptor of that directory
# (or of its parent, the location being made by the restore)
# (LeakSanitizer does not run under ptrace: no leak check for this one run)
OTHERFS=$(mktemp -d /dev/shm/pgbakfs-test.XXXXXX)
at_exit "rm -rf '$OTHERFS'"
ok "another file system for it" test "$(stat -c %d "$OTHERFS")" != "$(stat -c %d "$T")"
ok "a complete restore has it" env ASAN_OPTIONS=detect_leaks=0 strace -f -y -e trace=openat,pwrite64,syncfs -o "$T/full.strace" "$PGBAKFS" restore "$S" "$T/full" "${ROOTOPTS[@]}" --tablespace-map "$T/ts=$OTHERFS/ts-full" --no-progress >/dev/null
ok "and synced the tablespace location's file system" grep_or_show "syncfs([0-9]*<$OTHERFS\(/ts-full\)\?>) = 0" "$T/full.strace"
ok "and the target's" grep_or_show "syncfs([0-9]*<$T\(/full\)\?>) = 0" "$T/full.strace"
# syncfs reports a file system's writeback errors since its descriptor was opened: every
# descriptor synced was opened before the restore wrote anything (one opened just before its
# syncfs missed the errors of the writes through the page cache before)
synced_late() { # STRACE DIR: each syncfs whose descriptor was opened after the first pwrite64 into DIR
	awk -v dir="$2/" 'index($0, "pwrite64(") && index($0, "<" dir) && !w { w = NR }
	     /openat\(|openat resumed/ && match($0, /= [0-9]+<[^>]*>$/) { at[substr($0, RSTART + 2)] = NR }
	     /syncfs\(/ && match($0, /\([0-9]+<[^>]*>/) { n++; d = substr($0, RSTART + 1, RLENGTH - 1)
	         if (!(d in at) || at[d] > w) print "late: " $0 }
	     END { if (!w || !n) print "no pwrite64 or no syncfs" }' "$1"
}
ok "each synced file system's descriptor was opened before the first write" test -z "$(synced_late "$T/full.strace" "$T/full" | tee /dev/stderr)"
ok "a second one" pgbakfs restore "$S" "$T/full2" "${ROOTOPTS[@]}" --tablespace-map "$T/ts=$T/ts-full2" --no-progress >/dev/null
ok "pg_control restored" test -s "$T/full/global/pg_control"
ok "identical restores" diff <(tree_manifest "$T/full" | grep -v '^\./pg_tblspc/') <(tree_manifest "$T/full2" | grep -v '^\./pg_tblspc/')

# ---- 6: restore --delta keeps a pg_wal symlink ----
# (to another file system, which is made durable too)
WALDIR=$OTHERFS/wal-elsewhere
mv "$T/full2/pg_wal" "$WALDIR"
ln -s "$WALDIR" "$T/full2/pg_wal"
touch "$WALDIR/stray" && mkdir -p "$WALDIR/archive_status/junk"
echo garbage >"$T/full2/global/pg_control"
ok "restore --delta onto a data directory with a linked pg_wal" env ASAN_OPTIONS=detect_leaks=0 strace -f -y -e trace=syncfs -o "$T/wal.strace" "$PGBAKFS" restore "$S" "$T/full2" "${ROOTOPTS[@]}" --tablespace-map "$T/ts=$T/ts-full2" --delta --no-progress >/dev/null
ok "pg_wal is still the link" test "$(readlink "$T/full2/pg_wal")" = "$WALDIR"
ok "the link's target holds the snapshot's pg_wal" same_tree "$T/full/pg_wal" "$WALDIR"
ok "and its file system was synced" grep_or_show "syncfs([0-9]*<$WALDIR>) = 0" "$T/wal.strace"
ok "the rest is the snapshot" diff <(tree_manifest "$T/full" | grep -v -e '^\./pg_wal[ /]' -e '^\./pg_tblspc/') <(tree_manifest "$T/full2" | grep -v -e '^\./pg_wal[ /]' -e '^\./pg_tblspc/')

# ---- 2: a restore holds its snapshot: delete + gc meanwhile do not break it ----
R3=$T/repo3
pgbakfs init --repo "$R3" >/dev/null
mkdir -p "$T/big"
for i in $(seq 1 32); do head -c 8M /dev/urandom >"$T/big/f$i"; done
ok "backup of a big tree" pgbakfs backup --repo "$R3" --from-dir "$T/big" --no-progress >/dev/null
"$PGBAKFS" restore latest "$T/big.out" --repo "$R3" -j 1 --no-progress >"$T/hold.out" 2>"$T/hold.err" &
RPID=$!
# freeze it as soon as it writes (files appear as their chunks are queued)
deadline=$((SECONDS + 30))
until [ -n "$(ls -A "$T/big.out" 2>/dev/null)" ] || [ $SECONDS -gt $deadline ]; do :; done
kill -STOP $RPID
ok "delete during the restore" pgbakfs delete latest --repo "$R3" >/dev/null
ok "gc during the restore" pgbakfs gc --repo "$R3" >/dev/null
ok "packs kept for the restore" test "$(n_pack_files "$R3")" -gt 0
ok "the restore was frozen midway" test ! -s "$T/hold.out"
kill -CONT $RPID
rc=0; wait $RPID || rc=$?
ok "the restore completes" test "$rc" = 0 || cat "$T/hold.err" >&2
ok "byte-identical" same_tree "$T/big" "$T/big.out"
ok "gc after the restore" pgbakfs gc --repo "$R3" >/dev/null
ok "the released snapshot's packs are gone" test "$(n_pack_files "$R3")" = 0
finish
