# cmake --install: the binary, the man page (its command list is --help's),
# bash completion (driven by --help), systemd units that systemd accepts,
# and an example config file that pgbakfs reads.
. "$(dirname "$0")/lib.sh"
BUILD=$(dirname "$PGBAKFS")
D=$T/dest
ok "cmake --install into DESTDIR" sh -c 'DESTDIR="$1" cmake --install "$2" >"$3/install.log"' _ "$D" "$BUILD" "$T"
PREFIX=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$BUILD/CMakeCache.txt")
P=$D$PREFIX
for f in bin/pgbakfs share/man/man1/pgbakfs.1 share/bash-completion/completions/pgbakfs \
	share/doc/pgbakfs/pgbakfs.conf.example lib/systemd/system/pgbakfs-backup@.service \
	lib/systemd/system/pgbakfs-backup@.timer lib/systemd/system/pgbakfs-verify@.service \
	lib/systemd/system/pgbakfs-verify@.timer lib/systemd/system/pgbakfs-maintenance.service \
	lib/systemd/system/pgbakfs-maintenance.timer; do
	ok "installed $f" test -s "$P/$f"
done
ok "installed binary runs" "$P/bin/pgbakfs" -V

# the man page lists exactly the commands of --help, in the same order
ok "man page commands = --help commands" python3 - "$P/share/man/man1/pgbakfs.1" "$PGBAKFS" <<'PY'
import re, subprocess, sys
man = open(sys.argv[1]).read()
section = man.split(".SH COMMANDS\n")[1].split("\n.SH ")[0]
in_man = [n.replace("\\-", "-") for n in re.findall(r"^\.TP\n\.B (\S+)$", section, re.M)]
out = subprocess.check_output([sys.argv[2], "--help"], text=True)
in_help = re.findall(r"^  (\S+)", out.split("Commands:\n")[1].split("\n\n")[0], re.M)
assert in_man == in_help, (in_man, in_help)
PY
if command -v groff >/dev/null; then
	ok "man page renders without warnings" sh -c 'test -z "$(groff -man -ww -z "$1" 2>&1)"' _ "$P/share/man/man1/pgbakfs.1"
else
	skip_part "groff is not installed (apt-get install groff): the man page was not rendered"
fi

# the units: the binary they run is the installed one; systemd accepts them
ok "units run \$prefix/bin/pgbakfs" grep -q "^ExecStart=$PREFIX/bin/pgbakfs --config " "$P/lib/systemd/system/pgbakfs-backup@.service"
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$T/units"
	for u in "$P"/lib/systemd/system/pgbakfs-*; do
		sed "s|$PREFIX/bin/pgbakfs|$PGBAKFS|" "$u" >"$T/units/$(basename "$u")"
	done
	ok "systemd-analyze verify accepts the units" sh -c 'cd "$1" && systemd-analyze verify --man=no \
		"$1/pgbakfs-backup@main.service" "$1/pgbakfs-backup@main.timer" \
		"$1/pgbakfs-verify@main.service" "$1/pgbakfs-verify@main.timer" \
		"$1/pgbakfs-maintenance.service" "$1/pgbakfs-maintenance.timer" 2>&1 >/dev/null | \
		{ ! grep .; }' _ "$T/units"
else
	skip_part "systemd-analyze is not installed (apt-get install systemd): the units were not verified"
fi

# bash completion: commands, and a command's options, from --help
mkdir -p "$T/bin" && ln -s "$PGBAKFS" "$T/bin/pgbakfs"
complete_words() { # complete_words WORD...: the completions of the last word
	PATH="$T/bin:$PATH" bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _pgbakfs; printf "%s\n" "${COMPREPLY[@]}"' \
		_ "$P/share/bash-completion/completions/pgbakfs" pgbakfs "$@" | sort | tr '\n' ' '
}
ok "completes commands" test "$(complete_words sta)" = "stats status "
ok "completes after leading options" test "$(complete_words --repo /r --instance main me)" = "metrics "
ok "completes a command's options" test "$(complete_words backup --ins)" = "--instance "
ok "completes status's options" test "$(complete_words status --max)" = "--max-age "

# the example config file is one pgbakfs reads
pgbakfs init --repo "$T/r" >/dev/null
cp "$P/share/doc/pgbakfs/pgbakfs.conf.example" "$T/example.conf"
ok "the example config parses" pgbakfs --config "$T/example.conf" --repo "$T/r" status
finish
