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

# the check itself must catch a violation
mkdir -p "$T/fake/store"
printf '#include "tools/cli.h"\n' >"$T/fake/store/x.c"
(cd "$T/fake" && ! check_layer store 2>/dev/null) && pass || fail "layer check misses an upward include"
finish
