# wal-fetch as PostgreSQL 15's restore_command: only "not archived" may end
# recovery. A damaged archived segment, or one the server may not read, makes
# wal-fetch exit 126, so the startup process stops with FATAL instead of
# promoting without the rest of the WAL (committed data lost). Recovery with
# a target and recovery to the end of the archive are both tried; then the
# exit statuses of wal-fetch one by one. The archiver runs wal-push
# --parallel, and the last recovery wal-fetch --prefetch.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
PORT=54300
PORT2=54301
R=$T/repo
CONN="host=127.0.0.1 port=$PORT user=postgres"
pgb() { as_pg "$PGBAKFS" "$@"; }
mkdir -p "$R" "$T/work" "$T/cache" && chown postgres "$R" "$T/work" "$T/cache"

pgb init --repo "$R" >/dev/null
pg_init "$T/data" $PORT
cat >>"$T/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = '"$PGBAKFS" wal-push %p --repo "$R" --parallel 4 --cache-dir "$T/cache"'
CONF
pg_start "$T/data"
switch_wal() { pg_sql $PORT "select pg_walfile_name(pg_switch_wal())"; }
archived() { test "$(pg_sql $PORT "select coalesce(last_archived_wal, '') >= '$1' and failed_count = 0 from pg_stat_archiver")" = t; }
wait_for() { # wait_for SECONDS COMMAND...
	local n=$(($1 * 5)); shift
	for _ in $(seq 1 $n); do "$@" && return 0; sleep 0.2; done
	return 1
}

pg_sql $PORT "create table events(batch int, filler text)"
ok "backup" pgb backup -d "$CONN" --repo "$R" --no-progress >/dev/null
# three batches, each committed in a segment of its own
segs=()
for b in 1 2 3; do
	pg_sql $PORT "insert into events select $b, repeat('x', 100) from generate_series(1, 1000)"
	[ $b = 3 ] && pg_sql $PORT "select pg_create_restore_point('after3')" >/dev/null
	segs+=("$(switch_wal)")
done
ok "three segments archived (${segs[*]})" wait_for 60 archived "${segs[2]}"
ok "three distinct segments" test "$(printf '%s\n' "${segs[@]}" | sort -u | wc -l)" = 3
cp "$T/data/pg_wal/${segs[1]}" "$T/work/" && chown postgres "$T/work/${segs[1]}" # for the repair
pg_stop "$T/data"

# flip one byte in the middle of the second batch's archived object
obj="$R/wal/00000001/${segs[1]}"
size=$(stat -c %s "$obj")
flip_byte "$obj" $((size / 2))

# restore_pitr DIR ARGS...: restore the snapshot into DIR for a second server
restore_pitr() {
	local dir=$1; shift
	"$PGBAKFS" restore latest "$dir" --repo "$R" --no-progress "$@" >/dev/null
	chown -R postgres "$dir"
	at_exit "as_pg '$PGBIN/pg_ctl' -D '$dir' -m immediate stop >/dev/null 2>&1"
	sed -i "s/^port = $PORT/port = $PORT2/; s/^archive_mode = on/archive_mode = off/" "$dir/postgresql.conf"
}
server_down() { ! as_pg "$PGBIN/pg_ctl" -D "$1" status >/dev/null 2>&1; }
# try_start DIR: start the server and wait until recovery is over: "down" when
# the startup process failed, else what the promoted server holds (pg_ctl -w
# alone cannot tell: it returns once hot standby accepts connections). Runs in
# a command substitution: restore_pitr registers the teardown.
try_start() {
	local dir=$1 log="$T/pglog/$(basename "$1").log"
	as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$log" -W start >/dev/null 2>&1 || true
	wait_for 30 test -s "$dir/postmaster.pid" || true
	for _ in $(seq 1 300); do
		if server_down "$dir"; then
			echo down
			return
		fi
		if [ "$(pg_sql $PORT2 "select pg_is_in_recovery()" 2>/dev/null)" = f ]; then
			pg_sql $PORT2 "select 'up recovery=' || pg_is_in_recovery() || ' batches=' || string_agg(distinct batch::text, ',' order by batch::text) from events"
			as_pg "$PGBIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
			return
		fi
		sleep 0.2
	done
	echo "still in recovery after 60 s"
}

# ---- recovery to the end of the archive (no target): the data-loss case ----
restore_pitr "$T/pitr1" --target-name after3
sed -i '/^recovery_target_name/d' "$T/pitr1/postgresql.auto.conf"
state=$(try_start "$T/pitr1")
ok "no target: the server does not come up without batches 2 and 3 ($state)" test "$state" = down
ok "no target: the server is not running" server_down "$T/pitr1"
log1=$T/pglog/pitr1.log
ok "no target: the startup process stops with FATAL on the damaged segment" \
	grep -q "FATAL:  could not restore file \"${segs[1]}\" from archive" "$log1"
ok "no target: wal-fetch's line in the server log names it" \
	grep -q "pgbakfs: error: archived WAL file \"${segs[1]}\" is damaged" "$log1"
ok "no target: batch 1's segment was restored before" grep -q "restored log file \"${segs[0]}\" from archive" "$log1"

# ---- recovery with a target past the three batches ----
restore_pitr "$T/pitr2" --target-name after3 --target-action promote
state=$(try_start "$T/pitr2")
ok "target: the server does not come up ($state)" test "$state" = down
ok "target: the server is not running" server_down "$T/pitr2"
ok "target: FATAL names the damaged segment" \
	grep -q "FATAL:  could not restore file \"${segs[1]}\" from archive" "$T/pglog/pitr2.log"

# ---- the repaired archive recovers everything ----
ok "re-push of the real segment repairs the archive" pgb wal-push "$T/work/${segs[1]}" --repo "$R" 2>/dev/null
rm -rf "$T/pitr2"
restore_pitr "$T/pitr2" --target-name after3 --target-action promote
# fetched ahead: every segment after the first comes from the spool
sed -i "s|^\(restore_command = '.*\)'\$|\1 --prefetch 4 --cache-dir $T/cache --log-level debug'|" "$T/pitr2/postgresql.auto.conf"
ok "restore_command with --prefetch" grep -q -- "--prefetch 4" "$T/pitr2/postgresql.auto.conf"
state=$(try_start "$T/pitr2")
ok "after the repair: promoted with all three batches ($state)" test "$state" = "up recovery=false batches=1,2,3"
ok "... segments were served from the prefetch spool" grep_or_show "WAL file \"${segs[2]}\" served from the spool" "$T/pglog/pitr2.log"

# ---- wal-fetch exit statuses ----
# missing: 1, quiet
rc=0
pgb wal-fetch 0000000100000000000000F0 "$T/work/x" --repo "$R" >"$T/out" 2>"$T/err" || rc=$?
ok "missing: exit 1 ($rc)" test $rc -eq 1
ok "missing: nothing on stdout or stderr" test ! -s "$T/out" -a ! -s "$T/err"
# damaged: 126 (more than 125: PostgreSQL aborts recovery), one error line, no DEST
obj="$R/wal/00000001/${segs[2]}"
flip_byte "$obj" $(($(stat -c %s "$obj") / 2))
expect_error 126 "archived WAL file \"${segs[2]}\" is damaged" \
	pgb wal-fetch "${segs[2]}" "$T/work/x" --repo "$R"
ok "damaged: no DEST" test ! -e "$T/work/x"
# permission denied on the object: 126
obj0="$R/wal/00000001/${segs[0]}"
chmod 000 "$obj0"
expect_error 126 "could not fetch WAL file \"${segs[0]}\"" \
	pgb wal-fetch "${segs[0]}" "$T/work/x" --repo "$R"
chmod 600 "$obj0"
ok "readable again: exit 0" pgb wal-fetch "${segs[0]}" "$T/work/x" --repo "$R"
rm -f "$T/work/x"
# the repository cannot be opened (gone, or not readable by the server): 126
expect_error 126 "" pgb wal-fetch "${segs[0]}" "$T/work/x" --repo "$T/no-such-repo"
chmod 000 "$R"
expect_error 126 "" pgb wal-fetch "${segs[0]}" "$T/work/x" --repo "$R"
chmod 700 "$R"
# DEST cannot be written: 126
expect_error 126 'could not write file' pgb wal-fetch "${segs[0]}" "$T/work/no-such-dir/x" --repo "$R"
finish
