# backup -d --type incr without --pgdata on PostgreSQL 17 (summarize_wal on):
# UPLOAD_MANIFEST + incremental BASE_BACKUP, INCREMENTAL files materialized
# against the parent. A full, an incr under pgbench with a truncate, a drop
# and a create, an incr on top of it: each incr receives less than the full,
# the last restores, passes a pg_verifybackup-style manifest check (sizes,
# CRC-32C, Manifest-Checksum) and starts with the source's data. A parent
# lacking a file the server sends as changed blocks fails cleanly; a manifest
# the server refuses (UPLOAD_MANIFEST) or cannot use (BASE_BACKUP), and
# summarize_wal off, give a full backup that says why; so does PostgreSQL 15.
# PostgreSQL 18 runs a shorter chain (full, incr, incr, restore, check, start).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pg.sh"
PORT=54430
R=$T/repo
CONN="host=127.0.0.1 port=$PORT user=postgres"
pg_use_major 17
pg_init "$T/d17" $PORT
cat >>"$T/d17/postgresql.conf" <<CONF
summarize_wal = on
max_wal_senders = 10
autovacuum = off
CONF
pg_start "$T/d17"
as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $PORT -U postgres -i -s 2 -q postgres >/dev/null 2>&1
pg_sql $PORT "create table quiet as select g as id, md5(g::text) as v from generate_series(1, 40000) g"
pg_sql $PORT "create table shrinks as select g as id, md5(g::text) as v from generate_series(1, 40000) g"
pg_sql $PORT "create table to_truncate as select g as id from generate_series(1, 30000) g"
pg_sql $PORT "create table to_drop as select g as id from generate_series(1, 30000) g"
pgbakfs init --repo "$R" >/dev/null

# the received size of a backup output line, in bytes
received() { python3 -c '
import re,sys
m = re.search(r"([0-9.]+) (B|KiB|MiB|GiB) received from the server", open(sys.argv[1]).read())
print(int(float(m.group(1)) * {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[m.group(2)]))' "$1"; }
snap_field() { # ID FIELD
	pgbakfs show "$1" --repo "$R" --json | python3 -c "import json,sys; print(json.load(sys.stdin)[\"$2\"])"
}

ok "full" pgbakfs backup -d "$CONN" --repo "$R" --no-progress >"$T/full.out"
ok "full says so" grep -q '(full)' "$T/full.out"
FULL=$(snap_field latest id)

# changes: pgbench while the incr runs, a truncate, a drop, a create, a table that shrinks
pg_sql $PORT "truncate to_truncate; insert into to_truncate values (1), (2)"
pg_sql $PORT "drop table to_drop"
pg_sql $PORT "create table created as select g as id, md5(g::text) as v from generate_series(1, 20000) g"
pg_sql $PORT "delete from shrinks where id > 10000"
pg_sql $PORT "vacuum shrinks"
as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $PORT -U postgres -t 300 -c 2 postgres >/dev/null 2>&1
setsid runuser -u postgres -- "$PGCLI/pgbench" -h 127.0.0.1 -p $PORT -U postgres -c 2 -T 30 postgres >/dev/null 2>&1 &
bench_pid=$!
# at exit only if still running: a group gone may have left its id to another test's server
at_exit '[ -z "$bench_pid" ] || kill -- -$bench_pid 2>/dev/null'
sleep 1
ok "incr under load" pgbakfs backup -d "$CONN" --type incr --repo "$R" --no-progress >"$T/incr1.out" 2>"$T/incr1.err"
kill -- -$bench_pid 2>/dev/null || true
wait $bench_pid 2>/dev/null || true
bench_pid=
ok "incr of the full ($(cat "$T/incr1.out"))" grep -q "(incr of $FULL): .* as changed blocks)" "$T/incr1.out"
ok "no note when incremental works" test ! -s "$T/incr1.err"
INCR1=$(snap_field latest id)
ok "show --json: type incr, parent the full" test "$(snap_field latest type) $(snap_field latest parent)" = "incr $FULL"
ok "show --json: by the server's changed blocks" test "$(snap_field latest method)" = blocks
ok "the incr received less than half of what the full did" test "$(received "$T/incr1.out")" -lt $(($(received "$T/full.out") / 2))

# more changes, quiet this time, then an incr on top of the incr
pg_sql $PORT "update quiet set v = 'changed' where id % 500 = 0"
pg_sql $PORT "insert into created select g, md5(g::text) from generate_series(20001, 25000) g"
as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $PORT -U postgres -t 200 -c 2 postgres >/dev/null 2>&1
ok "incr on top of the incr" pgbakfs backup -d "$CONN" --type incr --repo "$R" --no-progress >"$T/incr2.out"
ok "incr of the first incr" grep -q "(incr of $INCR1)" "$T/incr2.out"
ok "the second incr received less than half of what the full did" test "$(received "$T/incr2.out")" -lt $(($(received "$T/full.out") / 2))
INCR2=$(snap_field latest id)
Q="select md5(string_agg(aid || ':' || abalance, ',' order by aid)) from pgbench_accounts
   union all select md5(string_agg(id || ':' || v, ',' order by id)) from quiet
   union all select md5(string_agg(id || ':' || v, ',' order by id)) from shrinks
   union all select md5(string_agg(id || ':' || v, ',' order by id)) from created
   union all select md5(string_agg(id::text, ',' order by id)) from to_truncate
   union all select count(*)::text from pgbench_history
   union all select count(*)::text from pg_class where relname = 'to_drop'"
want=$(pg_sql $PORT "$Q")

ok "restore the last incr" pgbakfs restore latest "$T/r" --repo "$R" --no-progress >/dev/null
ok "no INCREMENTAL file in the restored directory" test -z "$(find "$T/r" -name 'INCREMENTAL.*')"
# pgbench -i vacuumed pgbench_accounts before the full: its visibility map came as changed
# blocks, which cannot be rebuilt (VM bits are cleared without WAL naming the VM page): left out
# (pgbench's updates clear its bits: no VM block in the summary, an empty INCREMENTAL file)
ACCTS=$(pg_sql $PORT "select pg_relation_filepath('pgbench_accounts')")
ok "the source has pgbench_accounts' visibility map" test -s "$T/d17/${ACCTS}_vm"
ok "restore the first incr" pgbakfs restore "$INCR1" "$T/r1" --repo "$R" --no-progress >/dev/null
ok "a visibility map sent as changed blocks is left out" test ! -e "$T/r1/${ACCTS}_vm"
ok "and comes back whole with the next incremental (not in its parent's manifest)" test -s "$T/r/${ACCTS}_vm"
ok "backup_label without INCREMENTAL FROM" bash -c "! grep -q INCREMENTAL '$T/r/backup_label'"
# pg_verifybackup's checks without pg_verifybackup 17: every listed file with its
# size and CRC-32C, no unlisted file outside pg_wal, the manifest's own SHA-256
cat >"$T/verify.py" <<'PY'
import hashlib, json, os, struct, sys
root = sys.argv[1]
POLY = 0x82F63B78
T = [[0] * 256 for _ in range(8)]
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    T[0][i] = c
for i in range(256):
    c = T[0][i]
    for k in range(1, 8):
        c = (c >> 8) ^ T[0][c & 0xff]
        T[k][i] = c
T0, T1, T2, T3, T4, T5, T6, T7 = T
def crc32c(data):
    crc = 0xFFFFFFFF
    n = len(data) // 8 * 8
    mv = memoryview(data)
    for (q,) in struct.iter_unpack('<Q', mv[:n]):
        q ^= crc
        crc = (T7[q & 0xff] ^ T6[(q >> 8) & 0xff] ^ T5[(q >> 16) & 0xff] ^ T4[(q >> 24) & 0xff] ^
               T3[(q >> 32) & 0xff] ^ T2[(q >> 40) & 0xff] ^ T1[(q >> 48) & 0xff] ^ T0[q >> 56])
    for b in mv[n:]:
        crc = (crc >> 8) ^ T0[(crc ^ b) & 0xff]
    return crc ^ 0xFFFFFFFF
raw = open(os.path.join(root, "backup_manifest"), "rb").read()
cut = raw.rindex(b'"Manifest-Checksum"')
m = json.loads(raw)
errors = []
if hashlib.sha256(raw[:cut]).hexdigest() != m["Manifest-Checksum"]:
    errors.append("manifest checksum mismatch")
if m["PostgreSQL-Backup-Manifest-Version"] != 2 or "System-Identifier" not in m or not m["WAL-Ranges"]:
    errors.append("manifest header")
listed = set()
for f in m["Files"]:
    p = f["Path"]
    listed.add(p)
    path = os.path.join(root, p)
    if not os.path.isfile(path):
        errors.append("missing " + p); continue
    data = open(path, "rb").read()
    if len(data) != f["Size"]:
        errors.append("size of %s: %d, manifest %d" % (p, len(data), f["Size"]))
    elif f.get("Checksum-Algorithm") != "CRC32C" or struct.pack("<I", crc32c(data)).hex() != f["Checksum"]:
        errors.append("checksum of " + p)
for d, _, files in os.walk(root):
    for n in files:
        p = os.path.relpath(os.path.join(d, n), root)
        if p.split("/")[0] not in ("pg_wal", "backup_manifest") and p not in listed:
            errors.append("not in the manifest: " + p)
print("\n".join(errors[:10]))
sys.exit(1 if errors else 0)
PY
ok "the manifest matches the materialized files" python3 "$T/verify.py" "$T/r"
ok "so does the first incr's, its visibility map left out" python3 "$T/verify.py" "$T/r1"
sed -i "s/^port = $PORT/port = $((PORT + 1))/" "$T/r/postgresql.conf"
pg_start "$T/r"
ok "the restored incr has the source's data" test "$(pg_sql $((PORT + 1)) "$Q")" = "$want"
ok "an index-only scan of it sees what the source sees" test "$(pg_sql $((PORT + 1)) "set enable_seqscan = off; select count(*) from pgbench_accounts where aid > 0")" = "$(pg_sql $PORT "select count(*) from pgbench_accounts where aid > 0")"
pg_stop "$T/r"

# a parent that lacks a file the server sends as changed blocks: the backup fails cleanly
qpath=$(pg_sql $PORT "select pg_relation_filepath('quiet')")
rm "$T/r/$qpath"
n_before=$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
ok "a parent without $qpath (from a directory)" pgbakfs backup --from-dir "$T/r" --repo "$R" --no-progress >/dev/null
expect_error 1 "parent snapshot .* has no file \"$qpath\"" pgbakfs backup -d "$CONN" --type incr --repo "$R" --no-progress
ok "no snapshot from the failed incr" test "$(pgbakfs list --repo "$R" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = $((n_before + 1))
ok "no backup left running on the server" test "$(pg_sql $PORT "select count(*) from pg_replication_slots")" = 0

# a manifest the server refuses, then one whose WAL it has no summaries for: full, and why
edit_manifest() { # DIR KEY VALUE: set a top-level value or the WAL range's Start-LSN, re-sign
	python3 - "$@" <<'PY'
import hashlib, re, sys
path = sys.argv[1] + "/backup_manifest"
raw = open(path, "rb").read()
raw = raw[:raw.rindex(b'"Manifest-Checksum"')]
raw = re.sub(rb'("%s": )"?[0-9A-F/]+"?' % sys.argv[2].encode(), lambda m: m.group(1) + sys.argv[3].encode(), raw, count=1)
open(path, "wb").write(raw + b'"Manifest-Checksum": "%s"}\n' % hashlib.sha256(raw).hexdigest().encode())
PY
}
pgbakfs restore "$INCR2" "$T/r2" --repo "$R" --no-progress >/dev/null
edit_manifest "$T/r2" System-Identifier 12345
ok "a parent with another system's manifest" pgbakfs backup --from-dir "$T/r2" --repo "$R" --no-progress >/dev/null
ok "refused manifest: a full backup" pgbakfs backup -d "$CONN" --type incr --repo "$R" --no-progress >"$T/ref.out" 2>"$T/ref.err"
ok "refused manifest: full, the note says why" bash -c "grep -q '(full)' '$T/ref.out' && grep -q 'refused the parent.s backup_manifest (.*system identifier' '$T/ref.err' && test \$(wc -l <'$T/ref.err') = 1"
ok "refused manifest: show says full" test "$(snap_field latest type) $(snap_field latest method)" = "full full"
edit_manifest "$T/r2" System-Identifier "$(snap_field "$INCR2" system_id)"
edit_manifest "$T/r2" Start-LSN '"0/100"'
ok "a parent whose WAL has no summaries" pgbakfs backup --from-dir "$T/r2" --repo "$R" --no-progress >/dev/null
ok "no summaries: a full backup" pgbakfs backup -d "$CONN" --type incr --repo "$R" --no-progress >"$T/nosum.out" 2>"$T/nosum.err"
ok "no summaries: full, the note says why" bash -c "grep -q '(full)' '$T/nosum.out' && grep -q 'cannot take an incremental backup (.*WAL summaries' '$T/nosum.err' && test \$(wc -l <'$T/nosum.err') = 1"
ok "after a full, incr works again" pgbakfs backup -d "$CONN" --type incr --repo "$R" --no-progress >"$T/again.out"
ok "incr again" grep -q "(incr of " "$T/again.out"

pg_sql $PORT "alter system set summarize_wal = off" && pg_sql $PORT "select pg_reload_conf()" >/dev/null
ok "summarize_wal off: a full backup" pgbakfs backup -d "$CONN" --type incr --repo "$R" --no-progress >"$T/off.out" 2>"$T/off.err"
ok "summarize_wal off: the note says so" bash -c "grep -q '(full)' '$T/off.out' && grep -q 'summarize_wal is off' '$T/off.err' && test \$(wc -l <'$T/off.err') = 1"

# PostgreSQL 18: the same INCREMENTAL format; a shorter chain
pg_use_major 18
P18=$((PORT + 4))
C18="host=127.0.0.1 port=$P18 user=postgres"
pg_init "$T/d18" $P18
printf "summarize_wal = on\nautovacuum = off\n" >>"$T/d18/postgresql.conf"
pg_start "$T/d18"
as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $P18 -U postgres -i -s 1 -q postgres >/dev/null 2>&1
ok "18: full" pgbakfs backup -d "$C18" --instance pg18 --repo "$R" --no-progress >/dev/null
pg_sql $P18 "create table created as select g as id from generate_series(1, 20000) g"
as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $P18 -U postgres -t 100 -c 2 postgres >/dev/null 2>&1
ok "18: incr" pgbakfs backup -d "$C18" --instance pg18 --type incr --repo "$R" --no-progress >"$T/18a.out"
pg_sql $P18 "delete from created where id > 5000"
pg_sql $P18 "vacuum created"
as_pg "$PGCLI/pgbench" -h 127.0.0.1 -p $P18 -U postgres -t 100 -c 2 postgres >/dev/null 2>&1
ok "18: incr on top" pgbakfs backup -d "$C18" --instance pg18 --type incr --repo "$R" --no-progress >"$T/18b.out"
ok "18: both incremental" bash -c "grep -q '(incr of ' '$T/18a.out' && grep -q '(incr of ' '$T/18b.out'"
Q18="select md5(string_agg(aid || ':' || abalance, ',' order by aid)) from pgbench_accounts
     union all select md5(string_agg(id::text, ',' order by id)) from created"
want18=$(pg_sql $P18 "$Q18")
LAST18=$(pgbakfs list --instance pg18 --repo "$R" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
ok "18: restore" pgbakfs restore "$LAST18" "$T/r18" --repo "$R" --no-progress >/dev/null
ok "18: the manifest matches the materialized files" python3 "$T/verify.py" "$T/r18"
sed -i "s/^port = $P18/port = $((P18 + 1))/" "$T/r18/postgresql.conf"
pg_start "$T/r18"
ok "18: the restored incr has the source's data" test "$(pg_sql $((P18 + 1)) "$Q18")" = "$want18"
pg_stop "$T/r18"
pg_stop "$T/d18"

# PostgreSQL 15 has no incremental BASE_BACKUP
pg_use_major 15
P15=$((PORT + 2))
pg_init "$T/d15" $P15
pg_start "$T/d15"
C15="host=127.0.0.1 port=$P15 user=postgres"
ok "15: full" pgbakfs backup -d "$C15" --instance pg15 --repo "$R" --no-progress >/dev/null
ok "15: incr asked for" pgbakfs backup -d "$C15" --instance pg15 --type incr --repo "$R" --no-progress >"$T/15.out" 2>"$T/15.err"
ok "15: it stays full and says so" bash -c "grep -q '(full)' '$T/15.out' && grep -q 'PostgreSQL 15 has no incremental BASE_BACKUP: taking a full backup (dedup stores only new chunks)' '$T/15.err' && test \$(wc -l <'$T/15.err') = 1"
ok "check --read-data" pgbakfs check --repo "$R" --read-data >/dev/null
finish
