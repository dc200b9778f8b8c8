# backup -d failures: one clear error line, exit 1, no visible partial
# snapshot, a repository that passes check, and nothing left on the server
# (no replication slot, no backup in progress).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
PORT=54341
R=$T/repo
pg_init "$T/data" $PORT
cat >>"$T/data/postgresql.conf" <<CONF
max_wal_senders = 3
password_encryption = 'scram-sha-256'
CONF
# password auth for role "pw", before initdb's trust lines
sed -i '1i host all pw 127.0.0.1/32 scram-sha-256\nhost replication pw 127.0.0.1/32 scram-sha-256' "$T/data/pg_hba.conf"
pg_start "$T/data"
pg_sql $PORT "create role pw login replication password 'secret'; create role norepl login"
as_pg "$PGBIN/pgbench" -h 127.0.0.1 -p $PORT -U postgres -i -s 10 -q postgres >/dev/null 2>&1
pg_sql $PORT "create table noise as select g, md5(random()::text) || md5(random()::text) as t from generate_series(1, 1500000) g"
pgbakfs init --repo "$R" >/dev/null

n_snapshots() { pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
server_clean() { # no slot and no base backup left on the server
	local i
	for i in $(seq 1 50); do
		[ "$(pg_sql $PORT "select (select count(*) from pg_replication_slots) + (select count(*) from pg_stat_progress_basebackup)")" = 0 ] && return 0
		sleep 0.2
	done
	return 1
}
freeze_when_streaming() { # PID: stop the backup process once the server is sending files
	local i
	for i in $(seq 1 500); do
		if [ "$(pg_sql $PORT "select count(*) from pg_stat_progress_basebackup")" = 1 ]; then
			kill -STOP "$1"
			return 0
		fi
	done
	cat "$T/kill.err" >&2
	return 1
}
after() {
	ok "$1: no snapshot listed" test "$(n_snapshots)" = 0
	ok "$1: check passes" pgbakfs check --repo "$R" >/dev/null
	ok "$1: nothing left on the server" server_clean
}

expect_error 1 "could not connect to the server: .*127.0.0.1.*port 1" pgbakfs backup -d "host=127.0.0.1 port=1 user=postgres connect_timeout=5" --repo "$R" --no-progress
after "wrong port"
expect_error 1 'password authentication failed for user "pw"' pgbakfs backup -d "host=127.0.0.1 port=$PORT user=pw password=wrong" --repo "$R" --no-progress
after "wrong password"
expect_error 1 "must be superuser or replication role" pgbakfs backup -d "host=127.0.0.1 port=$PORT user=norepl" --repo "$R" --no-progress
after "role without REPLICATION"

# WAL senders exhausted: two are taken by pg_receivewal streams, our two do not fit
mkdir -p "$T/rw1" "$T/rw2" && chown postgres "$T/rw1" "$T/rw2"
as_pg "$PGBIN/pg_receivewal" -h 127.0.0.1 -p $PORT -U postgres -D "$T/rw1" --no-loop >/dev/null 2>&1 &
rw1=$!
as_pg "$PGBIN/pg_receivewal" -h 127.0.0.1 -p $PORT -U postgres -D "$T/rw2" --no-loop >/dev/null 2>&1 &
rw2=$!
at_exit "pkill -f 'pg_receivewal.*$T/rw'"
for i in $(seq 1 50); do [ "$(pg_sql $PORT "select count(*) from pg_stat_replication")" = 2 ] && break; sleep 0.1; done
expect_error 1 "exceeds max_wal_senders" pgbakfs backup -d "host=127.0.0.1 port=$PORT user=postgres" --repo "$R" --no-progress
# runuser does not pass signals on: stop pg_receivewal itself
pkill -f "pg_receivewal.*$T/rw" || true
wait $rw1 $rw2 2>/dev/null || true
for i in $(seq 1 50); do [ "$(pg_sql $PORT "select count(*) from pg_stat_replication")" = 0 ] && break; sleep 0.1; done
after "max_wal_senders exhausted"

# wal_level=minimal: no WAL senders at all
pg_init "$T/minimal" $((PORT + 1))
printf "wal_level = minimal\nmax_wal_senders = 0\n" >>"$T/minimal/postgresql.conf"
pg_start "$T/minimal"
expect_error 1 "max_wal_senders" pgbakfs backup -d "host=127.0.0.1 port=$((PORT + 1)) user=postgres" --repo "$R" --no-progress
after "wal_level=minimal"

# the backup process killed: the server aborts the backup and drops the slot
"$PGBAKFS" backup -d "host=127.0.0.1 port=$PORT user=postgres" --repo "$R" --no-progress >/dev/null 2>"$T/kill.err" &
bpid=$!
ok "backup caught in the middle" freeze_when_streaming $bpid
ok "the server shows it in progress" test "$(pg_sql $PORT "select count(*) from pg_stat_progress_basebackup")" = 1
kill -9 $bpid; wait $bpid 2>/dev/null || true
after "backup killed"
ok "the killed backup left a WAL staging directory" test -n "$(ls "$R/tmp")"
ok "gc after the kill" pgbakfs gc --repo "$R" >/dev/null
ok "gc removed the staging directory" test -z "$(ls "$R/tmp")"

# the server shut down in the middle of the backup
"$PGBAKFS" backup -d "host=127.0.0.1 port=$PORT user=postgres" --repo "$R" --no-progress >/dev/null 2>"$T/shut.err" &
bpid=$!
ok "backup caught in the middle" freeze_when_streaming $bpid
as_pg "$PGBIN/pg_ctl" -D "$T/data" -m fast -w stop >/dev/null
kill -CONT $bpid
rc=0; wait $bpid || rc=$?
ok "server shutdown: exit 1" test "$rc" = 1
ok "server shutdown: one error line" test "$(grep -c '^pgbakfs: error:' "$T/shut.err")" = 1
as_pg "$PGBIN/pg_ctl" -D "$T/data" -l "$T/pglog/data-again.log" -w start >/dev/null
after "server shutdown"

# the repository's disk fills up
mkdir -p "$T/small" && mount -t tmpfs -o size=24m tmpfs "$T/small"
at_exit "umount '$T/small'"
pgbakfs init --repo "$T/small/repo" --pack-size 4M >/dev/null
expect_error 1 "out of space" pgbakfs backup -d "host=127.0.0.1 port=$PORT user=postgres" --repo "$T/small/repo" --no-progress
ok "full disk: no snapshot" test "$(pgbakfs list --repo "$T/small/repo" --json)" = "[]"
ok "full disk: check passes" pgbakfs check --repo "$T/small/repo" >/dev/null
ok "full disk: nothing left on the server" server_clean
finish
