# PostgreSQL helpers for integration tests: each test gets its own cluster,
# run as the postgres OS user on 127.0.0.1 and a port of its own.
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$PGBIN/postgres" ] || { echo "FAIL: PostgreSQL 15 not found in $PGBIN (apt-get install postgresql-15)" >&2; exit 1; }
id postgres >/dev/null 2>&1 || { echo "FAIL: no postgres OS user" >&2; exit 1; }

as_pg() { runuser -u postgres -- "$@"; }

# pg_init DIR PORT: initdb with checksums and a socket dir inside the test dir
pg_init() {
	local dir=$1 port=$2
	mkdir -p "$dir" "$T/sock" "$T/pglog"
	chown postgres "$dir" "$T/sock" "$T/pglog"
	as_pg "$PGBIN/initdb" -D "$dir" --data-checksums -A trust -U postgres >/dev/null
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
	at_exit "kill -9 $(head -1 "$1/postmaster.pid") 2>/dev/null"
}
pg_stop() { as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null; }
pg_sql() { # PORT SQL
	as_pg "$PGBIN/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$2"
}
