# Layers only include downward: common <- store <- ingest, fs <- tools.
# store never includes libpq or FUSE headers; ingest and fs never include each other.
. "$(dirname "$0")/lib.sh"
cd "$PGBAKFS_SRC"

allowed() { # layer -> allowed include prefixes
	case $1 in
	common) echo "common" ;;
	store) echo "common store" ;;
	ingest) echo "common store ingest" ;;
	fs) echo "common store fs" ;;
	tools) echo "common store ingest fs tools" ;;
	esac
}

check_layer() {
	local layer=$1 bad=0
	[ -d "$layer" ] || return 0
	while IFS=: read -r file _ inc; do
		local target=${inc#*\"}; target=${target%%/*}
		if ! grep -qw -- "$target" <<<"$(allowed "$layer")"; then
			echo "layer violation: $file includes \"$inc\"" >&2; bad=1
		fi
	done < <(grep -Hn '^#include "' "$layer"/*.[ch] | sed 's/:\([0-9]*\):/:\1:/')
	if [ "$layer" = store ] || [ "$layer" = common ]; then
		if grep -n -E '^#include <(libpq-fe\.h|fuse)' "$layer"/*.[ch] >&2; then bad=1; fi
	fi
	return $bad
}

for layer in common store ingest fs tools; do
	ok "layer $layer includes only downward" check_layer "$layer"
done

# library code returns -ENOMEM: the exiting allocators of common/util.h are for tools/ and tests
no_exiting_alloc() {
	! grep -nE '\bx(malloc|calloc|realloc|strdup|strndup|asprintf)\b' "$@" >&2
}
for layer in store ingest fs; do
	ok "layer $layer calls no exiting allocator" no_exiting_alloc "$layer"/*.[ch]
done
# test switches are read by tools/ and passed down (RepoLocation.faults)
ok "store reads no PGBAKFS_TEST_ variable" bash -c '! grep -n "PGBAKFS_TEST_" store/*.c >&2'
# and struct Repo stays inside store/repo*.c
ok "only store/repo*.c include store/repo_int.h" \
	bash -c '! grep -ln "store/repo_int.h" common/*.[ch] store/*.[ch] ingest/*.[ch] fs/*.[ch] tools/*.[ch] | grep -v "^store/repo[_a-z]*\.[ch]$" >&2'

# the check itself must catch a violation
mkdir -p "$T/fake/store"
printf '#include "tools/cli.h"\n' >"$T/fake/store/x.c"
(cd "$T/fake" && ! check_layer store 2>/dev/null) && pass || fail "layer check misses an upward include"
printf 'char *p = xstrdup("a");\n' >"$T/fake/store/y.c"
! no_exiting_alloc "$T/fake/store/y.c" 2>/dev/null && pass || fail "allocator check misses xstrdup"
finish
