# PostgreSQL helpers for integration tests: each test gets its own cluster,
# run as the postgres OS user on 127.0.0.1 and a port of its own.
# PGBIN: the server's binaries (initdb, pg_ctl, postgres); PGCLI: the client
# tools (psql, pgbench, pg_waldump...), Debian's 15 whatever the server's major
PGCLI=${PGCLI:-/usr/lib/postgresql/15/bin}
PGBIN=${PGBIN:-$PGCLI}
[ -x "$PGBIN/postgres" ] || { echo "FAIL: PostgreSQL 15 not found in $PGBIN (apt-get install postgresql-15)" >&2; exit 1; }

# pg_use_major N: run servers of PostgreSQL N (14, 16, 17, 18 from tests/pg's
# npm packages, installed by tools/test; 15 is Debian's). Clients stay Debian's 15.
pg_use_major() {
	if [ "$1" = 15 ]; then
		PGBIN=$PGCLI
	else
		PGBIN=$PGBAKFS_SRC/tests/pg/node_modules/pg$1/native/bin
	fi
	[ -x "$PGBIN/postgres" ] || skip "PostgreSQL $1 not found in $PGBIN (run tools/test, or npm ci --prefix tests/pg)"
}
id postgres >/dev/null 2>&1 || { echo "FAIL: no postgres OS user" >&2; exit 1; }

as_pg() { runuser -u postgres -- "$@"; }

# pg_init DIR PORT: initdb with checksums (PG_CHECKSUMS=off: without) and a
# socket dir inside the test dir
pg_init() {
	local dir=$1 port=$2 sums=--data-checksums
	[ "${PG_CHECKSUMS:-on}" = on ] || sums=--no-data-checksums
	[ "$sums" = --data-checksums ] || "$PGBIN/initdb" --help | grep -- --no-data-checksums >/dev/null || sums=
	mkdir -p "$dir" "$T/sock" "$T/pglog"
	chown postgres "$dir" "$T/sock" "$T/pglog"
	as_pg "$PGBIN/initdb" -D "$dir" $sums --no-sync -A trust -U postgres >/dev/null
	cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$T/sock'
fsync = off
shared_buffers = 32MB
CONF
}

pg_start() { # DIR
	local log="$T/pglog/$(basename "$1").log"
	at_exit "as_pg '$PGBIN/pg_ctl' -D '$1' -m immediate stop >/dev/null 2>&1"
	if ! as_pg "$PGBIN/pg_ctl" -D "$1" -l "$log" -w -t 120 start >/dev/null; then
		echo "FAIL: PostgreSQL did not start on $1; its log ends:" >&2
		tail -15 "$log" >&2
		return 1
	fi
	# if the data directory is gone before teardown, pg_ctl cannot stop it: kill by pid
	at_exit "pg_kill_postmaster '$1' $(head -1 "$1/postmaster.pid")"
}

# pg_kill_postmaster DIR PID: kill -9 PID if it is still DIR's postmaster. A
# server stopped long before teardown has left its pid to be handed out again
# (pid_max is 32768 here, and the suite forks far more): a blind kill -9 could
# hit any process of a test running beside this one.
pg_kill_postmaster() {
	local cmd
	cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$2/cmdline") || return 0
	case "$cmd" in
	*postgres*" -D $1 "* | *postgres*" -D $1") kill -9 "$2" 2>/dev/null || true ;;
	esac
}
pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null; }
pg_sql() { # PORT SQL
	as_pg "$PGCLI/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$2"
}

# pg_two_batches PORT: 100 rows of batch 1 then, 2.4 s later, 100 of batch 2
# into table events; sets MID (a time between the two) and LAST (the WAL file
# holding batch 2, switched so that it gets archived).
pg_two_batches() {
	pg_sql "$1" "insert into events(batch) select 1 from generate_series(1, 100)"
	sleep 1.2
	MID=$(pg_sql "$1" "select clock_timestamp()")
	sleep 1.2
	pg_sql "$1" "insert into events(batch) select 2 from generate_series(1, 100)"
	# the segment the switch completed (current - 1 can already be in the next one)
	LAST=$(pg_sql "$1" "select pg_walfile_name(pg_switch_wal())")
}

# pg_batches_are PORT "N1,N2": table events holds N1 rows of batch 1 and N2 of
# batch 2 (one try, for wait_for: the query runs at every try)
pg_batches_are() {
	[ "$(pg_sql "$1" "select count(*) filter (where batch = 1) || ',' || count(*) filter (where batch = 2) from events" 2>/dev/null)" = "$2" ]
}

# pg_switch PORT: complete the current WAL segment and print its name. A row
# is written first: pg_switch_wal() does nothing when only unimportant records
# (running-xacts, a checkpoint) follow the last switch, and its segment would
# then never be archived.
pg_switch() {
	pg_sql "$1" "set client_min_messages = warning; create table if not exists pgbakfs_test_ping(x int); insert into pgbakfs_test_ping values (1)"
	pg_sql "$1" "select pg_walfile_name(pg_switch_wal())"
}

# pg_archived PORT WALFILE [COND]: the archiver has archived WALFILE (and COND,
# SQL over pg_stat_archiver, holds); one try, for wait_for.
pg_archived() {
	# a reload wakes the archiver: left alone it can sleep up to a minute
	# before it sees a segment just completed
	pg_sql "$1" "select pg_reload_conf()" >/dev/null
	[ "$(pg_sql "$1" "select last_archived_wal >= '$2' and (${3:-true}) from pg_stat_archiver")" = t ]
}

# pg_archive_failures DIR: the archiver's failures in the server log of DIR
# (pg_start's), each with the lines before it (archive_command's stderr), for
# a failure message: reloads by pg_archived fill the log's tail
pg_archive_failures() {
	grep -B4 -A1 "archive command failed\|archive command was terminated\|archiving write-ahead log file .* failed" \
		"$T/pglog/$(basename "$1").log" | grep -v "received SIGHUP" | tail -40 || true
}

# pg_own PATH...: chown -R to postgres. The archiver may create and remove a
# temporary file in a repository meanwhile (chown -R then fails on it): retry.
pg_own() {
	local i
	for i in 1 2 3 4 5; do
		chown -R postgres "$@" 2>/dev/null && return 0
		sleep 0.2
	done
	chown -R postgres "$@"
}

# Block-level incremental tests (block_incr, block_incr17):
snap_json() { # snap_json SNAPSHOT REPO EXPR: a field of show --json
	pgbakfs show "$1" --repo "$2" --json | python3 -c "import json,sys; d=json.load(sys.stdin); print($3)"
}
pg_local_incr() { # pg_local_incr REPO PGDATA CONN OUT [options]: a local incremental, its output in OUT
	local repo=$1 data=$2 conn=$3 out=$4
	shift 4
	pgbakfs backup -d "$conn" --pgdata "$data" --type incr --repo "$repo" -j 2 --no-progress "$@" >"$out" 2>&1
	local rc=$?
	pg_own "$repo"
	return $rc
}
