# Memory stays bounded whatever the file size: peak RSS for a 1 GiB file is
# close to that for a 10 MiB file, and well under 256 MiB.
. "$(dirname "$0")/lib.sh"
command -v /usr/bin/time >/dev/null || skip "/usr/bin/time is missing (apt-get install time)"
R=$T/repo
pgbakfs init --repo "$R" >/dev/null
gen() { # BYTES SEED: incompressible, not deduplicable, fast (openssl dies of SIGPIPE)
	{ openssl enc -aes-128-ctr -nosalt -pass pass:"$2" -pbkdf2 -in /dev/zero 2>/dev/null || true; } | head -c "$1"
}
mkdir -p "$T/small" "$T/big"
gen 10485760 a >"$T/small/f"
gen 1073741824 b >"$T/big/f"
rss() { /usr/bin/time -f %M "$PGBAKFS" backup --repo "$R" --from-dir "$1" -j 2 --no-progress 2>&1 >/dev/null | tail -1; }
small=$(rss "$T/small")
big=$(rss "$T/big")
echo "peak RSS: 10 MiB file ${small} KiB, 1 GiB file ${big} KiB"
ok "1 GiB file needs < small + 96 MiB" test "$big" -lt $((small + 98304))
ok "peak RSS < 256 MiB" test "$big" -lt 262144
sum=$(sha256sum <"$T/big/f")
rm -rf "$T/big"
# on a terminal (script(1) gives it one), as a person running restore sees it
ok "restore the big file" script -qec "'$PGBAKFS' restore latest '$T/out' --repo '$R' --progress >/dev/null" /dev/null >"$T/progress.err"
ok "--progress shows bytes, total, rate and ETA" grep -Eq "restore: [0-9.]+ [KMG]iB of 1.0 GiB \([0-9]+%\), [0-9.]+ [KMG]?i?B/s, ETA [0-9]+:[0-9]{2}" "$T/progress.err"
ok "big file restored identical" test "$(sha256sum <"$T/out/f")" = "$sum"
finish
