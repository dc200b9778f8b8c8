# check --archive with a real PostgreSQL 15: archiving into this repository
# passes (twice in a row on an idle server, where only the restore point makes
# the switch complete a new segment); a root-owned 0700 repository
# (archive_command: "Permission denied") fails within --archive-timeout with
# one line naming the segment and the archiver's last failure; a server that
# archives elsewhere, an empty archive_command, archive_mode = off, no server
# and usage errors each give one line.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
PORT=54460
R=$T/repo
R2=$T/elsewhere
CONN="host=127.0.0.1 port=$PORT user=postgres"
SEG='[0-9A-F]\{24\}'

# ---- usage ----
expect_error 2 "needs -d CONNINFO" pgbakfs check --archive --repo "$R"
expect_error 2 "needs --archive" pgbakfs check -d "$CONN" --repo "$R"
expect_error 2 "needs --archive" pgbakfs check --archive-timeout 5 --repo "$R"
expect_error 2 "invalid archive timeout \"0\"" pgbakfs check --archive -d "$CONN" --archive-timeout 0 --repo "$R"
expect_error 2 "invalid archive timeout \"5x\"" pgbakfs check --archive -d "$CONN" --archive-timeout 5x --repo "$R"
expect_error 2 "separate checks" pgbakfs check --archive --read-data -d "$CONN" --repo "$R"
ok "check --help shows --archive" sh -c '"$PGBAKFS" check --help | grep -q -- "--archive -d CONNINFO"'

# ---- archiving into this repository ----
mkdir -p "$R" "$R2" && chown postgres "$R" "$R2"
as_pg "$PGBAKFS" init --repo "$R" >/dev/null
as_pg "$PGBAKFS" init --repo "$R2" >/dev/null
pg_init "$T/data" $PORT
cat >>"$T/data/postgresql.conf" <<CONF
archive_mode = on
archive_command = '"$PGBAKFS" wal-push %p --repo "$R"'
CONF
pg_start "$T/data"
expect_error 1 "could not connect to the server" \
	pgbakfs check --archive -d "host=127.0.0.1 port=$((PORT + 1)) user=postgres connect_timeout=5" --repo "$R"

check_passes() { # check_passes WHAT: one line naming a segment now in the repository
	local out
	if ! out=$(pgbakfs check --archive -d "$CONN" --repo "$R" 2>"$T/err"); then
		fail "$1: check --archive failed: $(cat "$T/err")"; return
	fi
	local seg=${out#archive: WAL segment }; seg=${seg%% *}
	if ! grep -qx "archive: WAL segment $SEG archived in [0-9]*\.[0-9] s" <<<"$out" || [ -s "$T/err" ]; then
		fail "$1: unexpected output: $out / $(cat "$T/err")"; return
	fi
	if ! pgbakfs wal-fetch "$seg" "$T/fetched" --repo "$R" || ! cmp -s "$T/fetched" "$T/data/pg_wal/$seg"; then
		fail "$1: segment $seg is not in the repository as the server wrote it"; return
	fi
	rm -f "$T/fetched"
	echo "$seg"
}
first=$(check_passes "first check")
ok "first check passed" test -n "$first"
# nothing written since the first check's switch: the restore point makes the
# second switch complete a new segment, not name the one already archived
second=$(check_passes "check on an idle server")
ok "idle check passed on a new segment ($first, then $second)" test -n "$second" -a "$second" \> "$first"
# the repository and the conninfo from the config file's only instance
printf 'repo = %s\n[db]\nconninfo = %s\n' "$R" "$CONN" >"$T/pgbakfs.conf"
ok "check --archive with the config file's instance" pgbakfs --config "$T/pgbakfs.conf" check --archive >"$T/cfg.out"
ok "it named a segment" grep -q "^archive: WAL segment $SEG archived" "$T/cfg.out"
expect_error 2 'no instance "other" in the config file' pgbakfs --config "$T/pgbakfs.conf" check --archive --instance other

# ---- archive_command fails: the repository is root-owned 0700 ----
chown -R root "$R" && chmod 0700 "$R"
t0=$(date +%s)
expect_error 1 "WAL segment $SEG was not archived within 5 s: archive_command last failed on $SEG at 20[0-9-]*T[0-9:]*Z; see the server log" \
	pgbakfs check --archive --archive-timeout 5 -d "$CONN" --repo "$R"
named=$(sed -n 's/.*WAL segment \([0-9A-F]*\) was not.*last failed on \([0-9A-F]*\) .*/\1 \2/p' "$T/.stderr")
ok "the failure names a segment after the last good one ($named)" test "${named%% *}" \> "$second"
ok "the last failure is that segment ($named)" test "${named%% *}" = "${named##* }"
ok "the failing check gave up in time ($(($(date +%s) - t0)) s)" test $(($(date +%s) - t0)) -le 10
ok "the server log says why" grep -q "Permission denied" "$T/pglog/data.log"
ok "a failed check wrote nothing" test -z "$(find "$R/wal" -type f 2>/dev/null | grep "${named%% *}")"

# ---- the server archives into another repository ----
pg_sql $PORT "alter system set archive_command = '\"$PGBAKFS\" wal-push %p --repo \"$R2\"'" >/dev/null
pg_sql $PORT "select pg_reload_conf()" >/dev/null
wait_setting() { # wait_setting NAME VALUE: new sessions see it (the reload is asynchronous)
	for _ in $(seq 1 50); do
		[ "$(pg_sql $PORT "show $1")" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}
wait_setting archive_command "\"$PGBAKFS\" wal-push %p --repo \"$R2\""
# the previous segment was never archived anywhere: let it through first
caught_up=no
for _ in $(seq 1 50); do
	if pg_archived $PORT "${named%% *}"; then caught_up=yes; break; fi
	sleep 0.2
done
ok "the archiver catches up into the other repository" test $caught_up = yes
expect_error 1 "was not archived within 3 s: the server archived it, but not into repository \"$R\"" \
	pgbakfs check --archive --archive-timeout 3 -d "$CONN" --repo "$R"

# ---- nothing to archive with ----
pg_sql $PORT "alter system set archive_command = ''" >/dev/null
pg_sql $PORT "select pg_reload_conf()" >/dev/null
wait_setting archive_command ""
expect_error 1 "archive_command is empty on the server" pgbakfs check --archive -d "$CONN" --repo "$R"
pg_sql $PORT "alter system set archive_mode = off" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$T/data" -m fast -w restart -l "$T/pglog/data.log" >/dev/null
expect_error 1 "archive_mode is off on the server" pgbakfs check --archive -d "$CONN" --repo "$R"
ok "the archive_mode error has a hint" grep -q "^hint: set archive_mode = on" "$T/.stderr"

# ---- without --archive, check is the repository check ----
ok "plain check still checks the repository" sh -c '"$PGBAKFS" check --repo "$0" | grep -q "is consistent"' "$R"
finish
