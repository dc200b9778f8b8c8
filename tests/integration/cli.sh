# Every command answers --help; wrong usage exits 2 with one error line.
. "$(dirname "$0")/lib.sh"

for cmd in init backup list show restore delete gc check stats mount verify dump expire pin \
	wal-push wal-fetch restore-point; do
	ok "$cmd --help" pgbakfs $cmd --help >/dev/null
	# wal-fetch is restore_command: any failure but "not archived" stops recovery (126)
	want=2; [ "$cmd" = wal-fetch ] && want=126
	expect_error $want "invalid option" pgbakfs $cmd --no-such-option
done
ok "pgbakfs --help" pgbakfs --help >/dev/null
expect_error 2 'unknown command "frobnicate"' pgbakfs frobnicate
expect_error 2 "no repository given" env -u PGBAKFS_REPO "$PGBAKFS" list
expect_error 2 "missing -d CONNINFO or --from-dir DIR" pgbakfs backup --repo "$T/r"
expect_error 2 "either -d or --from-dir" pgbakfs backup --repo "$T/r" -d x --from-dir y
expect_error 2 "expected ID and TARGET" pgbakfs restore latest
expect_error 2 "missing snapshot ID" pgbakfs show --repo "$T/r"
expect_error 2 "invalid number of jobs" pgbakfs restore -j 0 latest "$T/x"
expect_error 2 "invalid chunk size" pgbakfs init --repo "$T/r" --chunk-size 12K
expect_error 2 "invalid chunk size" pgbakfs init --repo "$T/r" --chunk-size 4K
expect_error 2 "expected MOUNTPOINT" pgbakfs mount
expect_error 2 "expected one snapshot ID" pgbakfs verify
expect_error 2 "expected one snapshot ID" pgbakfs dump -- -t x

# The shared parser (tools/opts.c): the same bad input, the same words, in every command
expect_error 2 'invalid number of jobs "0"' pgbakfs check --repo "$T/r" -j 0
expect_error 2 'invalid number of jobs "257" (1-256)' pgbakfs backup --from-dir "$T" --jobs 257
expect_error 2 "invalid option" pgbakfs restore latest "$T/x" --jobs # no value
expect_error 2 "invalid option" pgbakfs list --repo "$T/r" --progress # not list's
expect_error 2 "no repository given" env -u PGBAKFS_REPO "$PGBAKFS" gc
for cmd in "show a" "restore a b" "restore-point a -d x"; do
	expect_error 2 'unexpected argument "extra"' pgbakfs $cmd extra --repo "$T/r"
done
expect_error 2 'invalid instance name "a b"' pgbakfs expire --repo "$T/r" --instance "a b"
expect_error 2 "the instance name must be UTF-8 text" pgbakfs pin latest --unpin --repo "$T/r" \
	--instance $'a\x01'
help=$("$PGBAKFS" check -j 2 --repo "$T/r" --help) && [[ $help == "Usage: pgbakfs check"* ]] &&
	pass || fail "check -j 2 --help: $help"

# PGBAKFS_REPO works like --repo
ok "init via PGBAKFS_REPO" env PGBAKFS_REPO="$T/r" "$PGBAKFS" init >/dev/null
ok "list via PGBAKFS_REPO" env PGBAKFS_REPO="$T/r" "$PGBAKFS" list >/dev/null
expect_error 1 "already exists" pgbakfs init --repo "$T/r"

# Options before the command name are the same as after it (restic, borg, pgBackRest habits)
same_output() { # same_output DESCRIPTION "ARGS A" "ARGS B": both succeed, same stdout
	local what=$1 a b
	a=$(eval "\"\$PGBAKFS\" $2") || { fail "$what: pgbakfs $2 failed"; return; }
	b=$(eval "\"\$PGBAKFS\" $3") || { fail "$what: pgbakfs $3 failed"; return; }
	if [ "$a" = "$b" ] && [ -n "$a" ]; then pass; else fail "$what: outputs differ or are empty"; fi
}
mkdir -p "$T/tree/sub"
echo hello >"$T/tree/sub/f"
ok "backup --from-dir" pgbakfs backup --repo "$T/r" --from-dir "$T/tree" --instance one >/dev/null
R=$(printf %q "$T/r")
same_output "--repo before list" "--repo $R list" "list --repo $R"
same_output "--repo= before list" "--repo=$R list" "list --repo $R"
same_output "--repo and --instance before list --json" \
	"--repo $R --instance one --json list" "list --json --instance=one --repo=$R"
same_output "--repo before show" "--repo $R show latest" "show latest --repo $R"
same_output "--repo before stats" "--repo $R stats --json" "stats --json --repo $R"
same_output "-j before check" "-j 2 --repo $R check" "check -j2 --repo $R"
same_output "-j2 before check" "-j2 --repo=$R check" "check --repo $R -j 2"
same_output "--config before list" "--config /dev/null --repo $R list" "list --repo $R"
same_output "-- ends the leading options" "--repo $R -- list" "list --repo $R"
expect_error 1 'config file "/nonexistent/c"' pgbakfs --config /nonexistent/c --repo s3://bucket/prefix list
expect_error 1 'config file "/nonexistent/c"' pgbakfs --config /nonexistent/c --repo "$T/r" list

# the config file: read for every repository kind; command line > environment > file
C=$T/pgbakfs.conf
printf '# comment\nrepo = %s\njobs = 2\n[one]\nconninfo = host=127.0.0.1 port=1 connect_timeout=3\n' "$T/r" >"$C"
chmod 644 "$C" # no secret in it: others may read it
same_output "repo from the config file" "--config $(printf %q "$C") list --json" "list --json --repo $R"
ok "PGBAKFS_REPO wins over the file" sh -c 'PGBAKFS_REPO=/nonexistent/r "$PGBAKFS" --config "$1" list 2>&1 | grep -q "/nonexistent/r"' _ "$C"
PGBAKFS_CONFIG=$C same_output "PGBAKFS_CONFIG" "list --json" "list --json --repo $R"
expect_error 2 'no instance "two" in the config file ".*" (it has: one)' pgbakfs --config "$C" backup --instance two
printf '[two]\nconninfo = host=127.0.0.1 port=1\n' >>"$C"
expect_error 2 'several instances are configured (one, two): pass --instance NAME' pgbakfs --config "$C" backup
expect_error 1 'could not connect to the server' pgbakfs --config "$C" backup --instance one --no-progress
ok "a failed backup from the config file left no snapshot" test "$(pgbakfs --config "$C" list --json)" = "$(pgbakfs list --json --repo "$T/r")"
printf '[one]\n' >>"$C"
expect_error 2 'line 8: instance configured twice: "one"' pgbakfs --config "$C" list
printf 'repo = /a\nrepo = /b\n' >"$C"
expect_error 2 'line 2: setting given twice: "repo"' pgbakfs --config "$C" list
printf 'repo = /a\nfrobnicate = 1\n' >"$C"
expect_error 2 'line 2: unknown setting "frobnicate"' pgbakfs --config "$C" list
printf 'pgdata = /a\n' >"$C"
expect_error 2 'line 1: an instance setting outside an instance section: "pgdata"' pgbakfs --config "$C" list
printf '[x]\njobs = 2\n' >"$C"
expect_error 2 'line 2: a top-level setting inside an instance section: "jobs"' pgbakfs --config "$C" list
printf 'jobs = many\n' >"$C"
expect_error 2 'line 1: invalid number of jobs' pgbakfs --config "$C" list
printf '[bad name]\n' >"$C"
expect_error 2 'line 1: invalid instance name "bad name"' pgbakfs --config "$C" list
printf 'repo = %s\naws_secret_access_key = s3cr3t\n' "$T/r" >"$C"
expect_error 2 'holds a secret (aws-secret-access-key) and is readable by others' pgbakfs --config "$C" list
printf 'repo = %s\n[p]\nconninfo = host=x password=s3cr3t\n' "$T/r" >"$C"
expect_error 2 'holds a secret (conninfo with a password)' pgbakfs --config "$C" list
chmod 600 "$C"
ok "the same file at 0600" pgbakfs --config "$C" list >/dev/null
ok "help needs no config file" sh -c '"$PGBAKFS" --config /nonexistent/c list --help >/dev/null'
if [ "$(id -u)" = 0 ]; then # HOME another user's (runuser keeps it): its config is not ours to read
	mkdir -p "$T/home/.config/pgbakfs" && echo 'repo = /x' >"$T/home/.config/pgbakfs/pgbakfs.conf"
	chmod 700 "$T/home"
	ok "an unreadable default config file counts as none" sh -c 'runuser -u nobody -- env HOME="$1" "$2" list --repo /nonexistent/r 2>&1 | grep -q "repository \"/nonexistent/r\" does not exist"' _ "$T/home" "$PGBAKFS"
fi

# retention in the config file: an instance's section, else the top level, else the saved policy
RR=$T/rr
pgbakfs init --repo "$RR" >/dev/null
mkdir -p "$T/src" && echo data >"$T/src/f"
# one backup of an instance at a time (flock(1) stands in for a running one); others go on
printf 'pid 4242, started 2026-01-01T00:00:00Z\n' >"$RR/locks/backup-a"
# (this shell holds it, on a descriptor of its own: a flock(1) process would leave
# its child behind, and ctest waits for whatever holds the test's output)
exec {LOCKFD}<"$RR/locks/backup-a"
flock -n $LOCKFD
ok "the stand-in holds the lock" sh -c '! flock -n "$1" true' _ "$RR/locks/backup-a"
expect_error 1 'a backup of instance "a" is already running (pid 4242, started 2026-01-01T00:00:00Z)' \
	pgbakfs backup -d "host=127.0.0.1 port=1 connect_timeout=3" --instance a --repo "$RR" --no-progress
ok "the refusal is a failed attempt" sh -c '"$PGBAKFS" status --repo "$1" --instance a | grep -q "last failure: .*already running"' _ "$RR"
expect_error 1 'could not connect to the server' \
	pgbakfs backup -d "host=127.0.0.1 port=1 connect_timeout=3" --instance c --repo "$RR" --no-progress
ok "backups of directory trees take no guard" pgbakfs backup --from-dir "$T/src" --instance a --repo "$RR" --no-progress
flock -u $LOCKFD && exec {LOCKFD}<&-
ok "the lock is free again" flock -n "$RR/locks/backup-a" true
for i in 1 2 3; do
	[ $i = 3 ] || ok "backup a$i" pgbakfs backup --from-dir "$T/src" --instance a --repo "$RR" --no-progress >/dev/null
	ok "backup b$i" pgbakfs backup --from-dir "$T/src" --instance b --repo "$RR" --no-progress >/dev/null
	ok "backup c$i" pgbakfs backup --from-dir "$T/src" --instance c --repo "$RR" --no-progress >/dev/null
done
n_of() { pgbakfs list --repo "$RR" --instance "$1" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
printf 'repo = %s\n[b]\nkeep-last = 1\n[c]\nconninfo = x\n' "$RR" >"$T/ret.conf"
ok "expire with the file's policies" sh -c '"$PGBAKFS" --config "$1" expire >"$2" 2>"$3"' _ "$T/ret.conf" "$T/ret.out" "$T/ret.err"
ok "instance b: its section's keep-last 1" test "$(n_of b)" = 1
ok "instances without a policy keep everything" test "$(n_of a)$(n_of c)" = 33
ok "and say so" grep -q 'note: instance "a" has no retention policy' "$T/ret.err"
ok "the policy's source is named" grep -q 'policy of instance "b" (config file): keep-last 1' "$T/ret.out"
printf 'repo = %s\nkeep-last = 2\n[b]\nkeep-last = 1\n' "$RR" >"$T/ret.conf"
ok "top-level keep-last for the others" sh -c '"$PGBAKFS" --config "$1" expire >/dev/null' _ "$T/ret.conf"
ok "a and c keep 2, b 1" test "$(n_of a)$(n_of b)$(n_of c)" = 212
ok "backup --expire takes the file's policy" pgbakfs --config "$T/ret.conf" backup --from-dir "$T/src" --instance b --expire --no-progress
ok "b still keeps 1" test "$(n_of b)" = 1
printf 'repo = %s\n[b]\nkeep-within = soon\n' "$RR" >"$T/ret.conf"
expect_error 2 'line 3: invalid keep-within' pgbakfs --config "$T/ret.conf" expire
printf 'keep-last = 0\n' >"$T/ret.conf"
expect_error 2 'line 1: invalid keep-last' pgbakfs --config "$T/ret.conf" list

# logs: --log-file gets timestamped lines of what the command says; --log-level filters
expect_error 1 'does not exist' pgbakfs --log-file "$T/cmd.log" list --repo "$T/nonexistent"
ok "log file: started, the error line, exit" python3 - "$T/cmd.log" "$T/nonexistent" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
pat = r"^20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[\d+\] "
assert len(lines) == 3 and all(re.match(pat, l) for l in lines), lines
assert lines[0].endswith("info: list: started") and lines[2].endswith("info: list: exit 1"), lines
assert " error: " in lines[1] and sys.argv[2] in lines[1], lines
PY
expect_error 2 'invalid --log-level "loud"' pgbakfs --log-level loud list --repo "$T/r"
printf 'log-level = loud\n' >"$T/loglevel.conf"
expect_error 2 'line 1: invalid log-level' pgbakfs --config "$T/loglevel.conf" list --repo "$T/r"
expect_error 1 'could not open the log file "/nonexistent/l"' pgbakfs list --repo "$T/r" --log-file /nonexistent/l
printf 'repo = %s\nlog-file = %s\n' "$T/r" "$T/conf.log" >"$T/logfile.conf"
ok "log-file from the config file" pgbakfs --config "$T/logfile.conf" list
ok "it was written" grep -q "info: list: exit 0" "$T/conf.log"
# progress into a file: whole lines, no carriage returns or escape codes
mkdir -p "$T/psrc" && head -c 3000000 /dev/urandom >"$T/psrc/f"
ok "backup --progress into a file" sh -c '"$PGBAKFS" backup --from-dir "$1/psrc" --repo "$1/r" --progress >/dev/null 2>"$1/progress.err"' _ "$T"
ok "no terminal codes in it" python3 -c "import sys; d = open(sys.argv[1], 'rb').read(); assert b'\r' not in d and b'\x1b' not in d, d" "$T/progress.err"
# status and metrics: every backup attempt is recorded, failed ones too
RS=$T/rs
pgbakfs init --repo "$RS" >/dev/null
expect_error 1 'instance "main" has no successful backup' pgbakfs status --repo "$RS" --instance main --max-age 1d
mkdir -p "$T/src" && echo data >"$T/src/f"
ok "backup for status" pgbakfs backup --from-dir "$T/src" --repo "$RS" --no-progress >/dev/null
expect_error 1 "could not connect to the server" pgbakfs backup -d "host=127.0.0.1 port=1 connect_timeout=3" --repo "$RS" --no-progress
ok "status: last backup, the failure and its error line" python3 -c "
import json, subprocess
st = json.loads(subprocess.check_output(['$PGBAKFS', 'status', '--repo', '$RS', '--json']))
(i,) = st['instances']
assert i['instance'] == 'main' and i['snapshots'] == 1 and 0 <= i['last_backup']['age_seconds'] < 600, i
assert i['last_failure']['error'].startswith('could not connect to the server') and i['failures_since_success'] == 1, i
assert i['last_verify'] is None and i['wal'] is None and st['repository']['snapshots'] == 1, st"
ok "status --max-age passes when recent" sh -c '"$PGBAKFS" status --repo "$1" --max-age 1h >/dev/null' _ "$RS"
sleep 2.1
expect_error 1 'instance "main": the last successful backup is [0-9][0-9dhms]* old (--max-age 1s)' pgbakfs status --repo "$RS" --max-age 1s --json
expect_error 2 'invalid --max-age "soon"' pgbakfs status --repo "$RS" --max-age soon
ok "metrics in the text exposition format" sh -c '"$PGBAKFS" metrics --repo "$1" >"$2"' _ "$RS" "$T/m.prom"
ok "metrics: failures and the last success" python3 - "$T/m.prom" <<'PY'
import re, sys, time
text = open(sys.argv[1]).read()
families = re.findall(r"^# TYPE (pgbakfs_\w+) gauge$", text, re.M)
assert len(families) == len(set(families)) and len(families) >= 10, families
samples = dict(re.findall(r'^(pgbakfs_\w+(?:\{instance="main"\})?) (\S+)$', text, re.M))
assert samples['pgbakfs_backup_failures_since_success{instance="main"}'] == '1', samples
assert abs(float(samples['pgbakfs_backup_last_success_timestamp_seconds{instance="main"}']) - time.time()) < 600
assert samples['pgbakfs_snapshots{instance="main"}'] == '1' and float(samples['pgbakfs_repository_stored_bytes']) > 0
for line in text.splitlines():  # every line is a comment or a sample
    assert line.startswith('# ') or re.match(r'^pgbakfs_\w+(\{instance="[^"]*"\})? -?[0-9.]+$', line), line
PY
ok "backup after the failure" pgbakfs backup --from-dir "$T/src" --repo "$RS" --no-progress >/dev/null
mkdir -p "$T/textfile"
ok "metrics --textfile" pgbakfs metrics --repo "$RS" --textfile "$T/textfile"
ok "written whole, failures back to 0" grep -qx 'pgbakfs_backup_failures_since_success{instance="main"} 0' "$T/textfile/pgbakfs.prom"
ok "no temporary file left" test "$(ls -A "$T/textfile")" = pgbakfs.prom
expect_error 1 'could not write "/nonexistent/d/pgbakfs.prom"' pgbakfs metrics --repo "$RS" --textfile /nonexistent/d
expect_error 2 'unknown option "--frob" before the command' pgbakfs --frob --repo "$T/r" list
expect_error 2 'unknown option "-x" before the command' pgbakfs -x list
expect_error 2 "option --repo needs a value" pgbakfs --repo
expect_error 2 "no command given" pgbakfs --repo "$T/r"
expect_error 2 'unknown command "frob"' pgbakfs --repo "$T/r" frob
expect_error 2 "invalid number of jobs" pgbakfs -j 0 restore latest "$T/x"

# help COMMAND is COMMAND --help; -V is --version
for cmd in backup list restore wal-fetch; do
	same_output "help $cmd" "help $cmd" "$cmd --help"
done
same_output "help" "help" "--help"
expect_error 2 'unknown command "nosuch"' pgbakfs help nosuch
expect_error 2 "help takes one command" pgbakfs help list show
same_output "-V" "-V" "--version"
ok "-V exit 0" pgbakfs -V >/dev/null
finish
