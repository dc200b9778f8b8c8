# The operator's loop on PostgreSQL 14, 16, 17 and 18 (15 is every other
# test's): servers from tests/pg's npm packages (tests/pg/package-lock.json),
# Debian's 15 client tools. On each major, one server at a time, with a table
# in a tablespace: WAL archived through wal-push (the segment's xlp_magic is
# the one store/wal.c knows); backup -d (BASE_BACKUP); backup --pgdata full,
# then --type incr; restore of the incr starts with every change; a writable
# mount of the BASE_BACKUP snapshot starts; restore --target-time between two
# batches keeps only the first. On 14: dump --pg-bin starts its clone (in-place
# tablespace allowed since 14.5). On 17: verify without that major's server
# says in one line which programs are missing and how to point at them (not
# recorded as a failed verify), and works with --pg-bin (pg_amcheck from 15);
# dump says pg_dump 17 is missing before it starts anything.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
. "$(dirname "$0")/mnt.sh"
[ "$(id -u)" = 0 ] || { echo "FAIL: pg_versions needs root (mounts for the postgres user)"; exit 1; }
BASE_PORT=54410 # 54410-54429: four ports per major

# xlp_magic each major writes (src/include/access/xlog_internal.h, XLOG_PAGE_MAGIC)
declare -A MAGIC=([14]=d10d [16]=d113 [17]=d116 [18]=d118)

# count_of PORT SQL: the answer, or empty while the server is not there yet
count_of() { pg_sql "$1" "$2" 2>/dev/null || true; }

# ok_log LOG DESCRIPTION COMMAND...: ok, with the end of the server's LOG on failure
ok_log() {
	local log=$1; shift
	local n=$N_FAIL
	ok "$@"
	[ "$N_FAIL" = "$n" ] || tail -8 "$log" >&2
}

# promoted PORT: out of recovery (one try, for wait_for)
promoted() { test "$(count_of "$1" "select not pg_is_in_recovery()")" = t; }

# batches_are PORT "N1,N2": the rows of batch 1 and 2 in events
batches_are() {
	test "$(count_of "$1" "select count(*) filter (where batch = 1) || ',' || count(*) filter (where batch = 2) from events")" = "$2"
}

# start_copy DIR PORT: a restored data directory started on PORT, archiving nothing
start_copy() {
	chown -R postgres "$1"
	sed -i "s/^port = .*/port = $2/; s/^archive_mode = on/archive_mode = off/" "$1/postgresql.conf"
	pg_start "$1"
}

one_major() { # MAJOR INDEX
	local v=$1 P=$((BASE_PORT + 4 * $2))
	local R=$T/repo$v D=$T/data$v M=$T/mnt$v
	local CONN="host=127.0.0.1 port=$P user=postgres"
	local t0=$SECONDS S_REMOTE S_INCR
	pg_use_major "$v"
	pgbakfs init --repo "$R" >/dev/null
	pg_own "$R"
	pg_init "$D" $P
	cat >>"$D/postgresql.conf" <<CONF
archive_mode = on
archive_command = '$PGBAKFS wal-push %p --repo $R'
CONF
	pg_start "$D"
	ok "$v: server is PostgreSQL $v" test "$(pg_sql $P "show server_version_num")" -ge $((v * 10000))
	as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $P -U postgres -i -s 1 -q postgres >/dev/null 2>&1
	pg_sql $P "create table marker(step text); insert into marker values ('before')"
	pg_sql $P "create table events(id serial, at timestamptz default clock_timestamp(), batch int)"
	# a tablespace: local backup walks its PG_<major>_ directory, BASE_BACKUP sends its tar
	mkdir -p "$T/ts$v" && chown postgres "$T/ts$v"
	pg_sql $P "create tablespace ts location '$T/ts$v'"
	pg_sql $P "create table in_ts tablespace ts as select g from generate_series(1, 1000) g"

	# backups: remote, local full, local incr
	ok "$v: backup -d (BASE_BACKUP)" pgbakfs backup -d "$CONN" --repo "$R" --no-progress >/dev/null
	S_REMOTE=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
	ok "$v: local full" pgbakfs backup -d "$CONN" --pgdata "$D" --repo "$R" --no-progress >/dev/null
	pg_sql $P "insert into marker values ('after full'); update pgbench_accounts set abalance = 1 where aid <= 5000; insert into in_ts select g from generate_series(1001, 1500) g"
	# block-level on every major: its WAL summarized (page magic, record layout), re-read to be sure
	ok "$v: local incr" pgbakfs backup -d "$CONN" --pgdata "$D" --type incr --repo "$R" --no-progress --verify-blocks >"$T/incr$v.out"
	ok "$v: the incr went by changed blocks" grep_or_show "(incr of .*, blocks)" "$T/incr$v.out"
	ok "$v: and the WAL left nothing out" grep -q "none changed by WAL" "$T/incr$v.out"
	S_INCR=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
	ok "$v: full, full, incr of the second, each of PostgreSQL $v" python3 -c "
import json, subprocess, sys
s = json.loads(subprocess.check_output(['$PGBAKFS', 'list', '--repo', '$R', '--json']))
got = [(x['type'], x['parent'], x['pg_version']) for x in s]
assert got == [('full', None, $v), ('full', None, $v), ('incr', s[1]['id'], $v)], got"

	# two batches for PITR, archived through wal-push; the magic of a segment this major wrote
	pg_two_batches $P
	# 120 s: once under load (ASan build, 18) the archiver took ~60 s, its own wake-up
	# interval, with no failure logged; the diagnostics below say more if it recurs
	if wait_for 120 pg_archived $P "$LAST" "failed_count = 0"; then
		pass
	else
		fail "$v: WAL up to $LAST archived through wal-push (pg_stat_archiver: $(pg_sql $P "select * from pg_stat_archiver"); ready: $(ls "$D/pg_wal/archive_status" | grep ready | tr '\n' ' '))"
		pg_archive_failures "$D" >&2
	fi
	local magic
	magic=$(od -An -tx2 -N2 "$D/pg_wal/$LAST" | tr -d ' ')
	echo "PostgreSQL $v: xlp_magic 0x${magic^^}"
	ok "$v: xlp_magic is 0x${MAGIC[$v]^^} (got 0x${magic^^})" test "$magic" = "${MAGIC[$v]}"
	pg_stop "$D"
	pg_own "$R" # restore_command (wal-fetch) runs as the server's user

	# restore of the incr starts with every change
	ok "$v: restore the incr" pgbakfs restore "$S_INCR" "$T/incr$v" --tablespace-map "$T/ts$v=$T/tsi$v" --repo "$R" --no-progress >/dev/null
	chown -R postgres "$T/tsi$v"
	start_copy "$T/incr$v" $((P + 1))
	ok "$v: restored incr has the tablespace's rows" test "$(count_of $((P + 1)) "select count(*) from in_ts")" = 1500
	ok "$v: restored incr has both markers" test "$(count_of $((P + 1)) "select string_agg(step, ',' order by step) from marker")" = "after full,before"
	ok "$v: restored incr has the update" test "$(count_of $((P + 1)) "select count(*) from pgbench_accounts where abalance = 1")" = 5000
	pg_stop "$T/incr$v"

	# writable mount of the BASE_BACKUP snapshot: PostgreSQL starts on the clone
	# (its tablespace is a directory in pg_tblspc, which 15, and 14 from 14.5, refuse without
	# allow_in_place_tablespaces)
	mount_fg "$M" "$T/mount$v.log" --repo "$R" --writable --scratch "$T/scratch$v" --owner postgres --allow-other
	ok_log "$T/pglog/clone$v.log" "$v: clone of the BASE_BACKUP snapshot starts" as_pg "$PGBIN/pg_ctl" -D "$M/$S_REMOTE" -l "$T/pglog/clone$v.log" \
		-o "-p $((P + 2)) -c archive_mode=off -c allow_in_place_tablespaces=on" -w -t 120 start >/dev/null
	at_exit "as_pg '$PGBIN/pg_ctl' -D '$M/$S_REMOTE' -m immediate stop >/dev/null 2>&1"
	ok "$v: clone answers" test "$(count_of $((P + 2)) "select count(*) from pgbench_accounts")" = 100000
	ok "$v: clone is the BASE_BACKUP moment" test "$(count_of $((P + 2)) "select string_agg(step, ',') from marker")" = before
	ok "$v: clone reads the tablespace" test "$(count_of $((P + 2)) "select count(*) from in_ts")" = 1000
	as_pg "$PGBIN/pg_ctl" -D "$M/$S_REMOTE" -m fast -w stop >/dev/null || true
	ok "$v: unmount" unmount_fg "$M"

	# PITR: restore --target-time between the batches keeps only the first
	ok "$v: restore to a point in time" pgbakfs restore "$S_INCR" "$T/pitr$v" --tablespace-map "$T/ts$v=$T/tsp$v" --repo "$R" --target-time "$MID" \
		--target-action promote --no-progress >/dev/null
	chown -R postgres "$T/tsp$v"
	start_copy "$T/pitr$v" $((P + 3))
	ok_log "$T/pglog/pitr$v.log" "$v: PITR: recovery reached the target and promoted" wait_for 60 promoted $((P + 3))
	ok "$v: PITR: only the first batch" batches_are $((P + 3)) "100,0"
	pg_stop "$T/pitr$v"

	# dump starts a server on a clone, which shows the tablespace in place:
	# 14 refuses that since 14.5, unless allowed as on 15 and later
	if [ "$v" = 14 ]; then
		mkdir -p "$T/vtmp" && chmod 755 "$T/vtmp"
		ok "$v: dump --pg-bin, a table in a tablespace" bash -c "TMPDIR='$T/vtmp' '$PGBAKFS' dump '$S_INCR' --repo '$R' --pg-bin '$PGBIN' -- -t in_ts --data-only postgres >'$T/dump$v.sql'"
		ok "$v: dump has the tablespace's rows" test "$(grep -cE '^[0-9]+$' "$T/dump$v.sql")" = 1500
	fi

	# verify needs this major's server: said in one line without it, works with --pg-bin
	if [ "$v" = 17 ]; then
		mkdir -p "$T/vtmp" && chmod 755 "$T/vtmp"
		expect_error 1 "needs a PostgreSQL 17 server, and \"/usr/lib/postgresql/17/bin\" has no postgres, pg_ctl .*--pg-bin DIR" env TMPDIR="$T/vtmp" "$PGBAKFS" verify "$S_INCR" --repo "$R"
		ok "$v: a verify that could not run is not recorded as failed" python3 -c "
import json, subprocess
s = json.loads(subprocess.check_output(['$PGBAKFS', 'show', '$S_INCR', '--repo', '$R', '--json']))
assert s['verified'] is None, s['verified']"
		ok "$v: verify --pg-bin" env TMPDIR="$T/vtmp" "$PGBAKFS" verify "$S_INCR" --repo "$R" --pg-bin "$PGBIN" >"$T/verify$v.out"
		ok "$v: verify says ok" grep -q "verified snapshot \"$S_INCR\": startup: ok; amcheck: ok" "$T/verify$v.out"
		# pg_dump 15 refuses a 17 server: said before anything starts
		expect_error 1 "needs pg_dump of PostgreSQL 17 or later.*--pg-bin DIR" env TMPDIR="$T/vtmp" "$PGBAKFS" dump "$S_INCR" --repo "$R" --pg-bin "$PGBIN" -- -t marker postgres
	fi
	echo "PostgreSQL $v: $((SECONDS - t0)) s"
}

# PG_VERSIONS="17" runs only some (by hand); the port block stays each major's
declare -A INDEX=([14]=0 [16]=1 [17]=2 [18]=3)
for v in ${PG_VERSIONS:-14 16 17 18}; do
	one_major "$v" "${INDEX[$v]}"
done
finish
