# Shared helpers for the integration tests. Each test sources this file.
set -euo pipefail

: "${PGBAKFS:?PGBAKFS must point at the pgbakfs binary (run through ctest)}"
TEST_NAME=$(basename "$0" .sh)
T=$(mktemp -d "/tmp/pgbakfs-test-$TEST_NAME.XXXXXX")
chmod 755 "$T"
# python3 (tools/deps installs it) without a version manager's shim in front:
# pyenv's is a bash script that forks a dozen processes (0.6 s of CPU per call,
# seconds on a loaded machine), more than most checks that call python3 cost.
# The first python3 in PATH that is not a script goes first, for child
# processes too.
for _py3 in $(type -ap python3); do
	[ "$(head -c 2 "$_py3")" != '#!' ] || continue
	if [ "$_py3" != "$(type -p python3)" ]; then
		mkdir -p "$T/.bin" && ln -s "$_py3" "$T/.bin/python3"
		PATH=$T/.bin:$PATH
	fi
	break
done
unset _py3
N_PASS=0
N_FAIL=0
CLEANUPS=()

cleanup() {
	local rc=$?
	for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do eval "${CLEANUPS[$i]}" || true; done
	rm -rf "$T"
	exit $rc
}
[ -n "${KEEP_T:-}" ] || trap cleanup EXIT
trap 'echo "FAIL: $TEST_NAME aborted at line $LINENO: $BASH_COMMAND" >&2' ERR
at_exit() { CLEANUPS+=("$1"); }

pass() { N_PASS=$((N_PASS + 1)); }
fail() { N_FAIL=$((N_FAIL + 1)); echo "FAIL: $*" >&2; }
ok() { # ok DESCRIPTION COMMAND...: the command must succeed
	local what=$1; shift
	if "$@"; then pass; else fail "$what"; fi
}

# grep_or_show PATTERN FILE: the file has a line matching PATTERN; if not, it
# goes to stderr (for ok, whose failure shows only its description)
grep_or_show() {
	grep -q -- "$1" "$2" && return 0
	echo "--- $2:" >&2
	cat "$2" >&2
	return 1
}

# A missing optional tool (node and s3rver, tests/pg's PostgreSQL majors, groff,
# systemd-analyze, /usr/bin/time) is never a pass: the test exits 77, which ctest
# reports as skipped (SKIP_RETURN_CODE in tests/CMakeLists.txt), after a line
# "skipped: WHY". A check that already failed still fails the test.
# skip WHY: the rest of the test needs the tool; stop here.
skip() {
	echo "skipped: $*"
	echo "$N_PASS passed, $N_FAIL failed"
	[ "$N_FAIL" -eq 0 ] || exit 1
	exit 77
}
# skip_part WHY: a part of the test needs it; the rest runs, and finish exits 77.
SKIPPED=()
skip_part() {
	SKIPPED+=("$*")
	echo "skipped: $*"
}

finish() {
	echo "$N_PASS passed, $N_FAIL failed"
	[ "$N_FAIL" -eq 0 ] || return 1
	[ "${#SKIPPED[@]}" -eq 0 ] || { printf 'skipped: %s\n' "${SKIPPED[@]}"; exit 77; }
}

pgbakfs() { "$PGBAKFS" "$@"; }

# expect_error EXIT_CODE PATTERN COMMAND...: exit code, exactly one "error:" line
# on stderr matching PATTERN, nothing on stdout.
expect_error() {
	local want=$1 pattern=$2; shift 2
	local out err rc=0
	out=$("$@" 2>"$T/.stderr") || rc=$?
	err=$(cat "$T/.stderr")
	if [ "$rc" -ne "$want" ]; then
		fail "expected exit $want, got $rc from: $* (stderr: $err)"; return
	fi
	if [ "$(grep -c '^pgbakfs: error:' "$T/.stderr")" -ne 1 ]; then
		fail "expected exactly one error line from: $* (stderr: $err)"; return
	fi
	if ! grep -q -- "$pattern" "$T/.stderr"; then
		fail "stderr of '$*' does not match '$pattern': $err"; return
	fi
	pass
}

# A manifest of a tree: type, mode, size, mtime (ns), owner, sha256 / link target.
tree_manifest() { # one line per entry: path type mode size mtime uid:gid sha256 link (one process)
	python3 - "$1" <<'PY'
import hashlib, os, stat, sys
top = sys.argv[1]
types = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFBLK: "b",
         stat.S_IFCHR: "c", stat.S_IFIFO: "p", stat.S_IFSOCK: "s"}
lines = []
for root, dirs, files in os.walk(top):
    for name in dirs + files:
        path = os.path.join(root, name)
        st = os.lstat(path)
        y = types.get(stat.S_IFMT(st.st_mode), "?")
        size = "-" if y == "d" else str(st.st_size)
        ns = st.st_mtime_ns
        h, link = "-", b""
        if y == "f":
            d = hashlib.sha256()
            with open(path, "rb") as f:
                for b in iter(lambda: f.read(1 << 20), b""):
                    d.update(b)
            h = d.hexdigest()
        elif y == "l":
            link = os.fsencode(os.readlink(path))
        rel = b"./" + os.fsencode(os.path.relpath(path, top))
        lines.append(rel + (" %s %o %s %d.%09d0 %d:%d %s " % (y, st.st_mode & 0o7777, size,
                     ns // 10**9, ns % 10**9, st.st_uid, st.st_gid, h)).encode() + link)
sys.stdout.buffer.write(b"".join(l + b"\n" for l in sorted(lines)))
PY
}

same_tree() { # same_tree A B
	diff <(tree_manifest "$1") <(tree_manifest "$2") >"$T/.treediff" || {
		head -20 "$T/.treediff" >&2
		return 1
	}
}

# A varied tree: text, random, empty, sparse, big multi-chunk, symlinks, modes, mtimes.
make_tree() {
	local d=$1
	mkdir -p "$d/base/1" "$d/empty_dir" "$d/deep/a/b/c"
	seq 1 200000 >"$d/base/1/text"
	head -c 3000000 /dev/urandom >"$d/base/1/random"
	: >"$d/empty"
	truncate -s 20M "$d/sparse"
	printf 'middle' | dd of="$d/sparse" bs=1 seek=7000000 conv=notrunc status=none
	printf 'tail' | dd of="$d/sparse" bs=1 seek=$((20 * 1024 * 1024 - 4)) conv=notrunc status=none
	head -c 100 /dev/urandom >"$d/deep/a/b/c/small"
	ln -s ../base/1/text "$d/deep/rel_link"
	ln -s /nonexistent/target "$d/dangling"
	chmod 600 "$d/base/1/random"
	chmod 751 "$d/deep/a"
	chmod 4755 "$d/deep/a/b/c/small"
	chown 1234:5678 "$d/base/1/text"
	touch -d '2001-02-03 04:05:06.123456789' "$d/base/1/text"
	touch -h -d '2002-01-01 00:00:00' "$d/deep/rel_link"
	touch -d '2003-03-03 03:03:03' "$d/deep/a"
}

# Number of pack objects in a local repository.
n_pack_files() { find "$1/packs" -name '*.pack' | wc -l; }

# flip_byte FILE OFFSET: the byte at OFFSET inverted, so it always changes (writing a fixed
# byte over random data leaves the file as it was once in 256 runs)
flip_byte() {
	python3 - "$1" "$2" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0xff]))
PY
}

# change_keep_mtime FILE OFFSET: one byte inverted, size and mtime (ns) put back as they
# were (what touch -d, cp -p or rsync -t can leave behind; only the ctime moves)
change_keep_mtime() {
	local atime mtime
	read -r atime mtime < <(stat -c '%.9X %.9Y' "$1")
	flip_byte "$1" "$2"
	touch -a -d "@$atime" "$1" && touch -m -d "@$mtime" "$1"
}

