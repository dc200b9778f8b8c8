#include "common/lsn.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* exactly n (1 to 8) hex digits; lower case only where lower is true */
static bool hex32(const char *s, size_t n, bool lower, uint32_t *ret)
{
	uint32_t v = 0;
	if (n < 1 || n > 8)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		uint32_t d;
		if (c >= '0' && c <= '9')
			d = (uint32_t)(c - '0');
		else if (c >= 'A' && c <= 'F')
			d = (uint32_t)(c - 'A' + 10);
		else if (lower && c >= 'a' && c <= 'f')
			d = (uint32_t)(c - 'a' + 10);
		else
			return false;
		v = v << 4 | d;
	}
	*ret = v;
	return true;
}

int lsn_parse(const char *s, uint64_t *ret)
{
	const char *slash = s ? strchr(s, '/') : NULL;
	uint32_t hi, lo;

	if (!slash || !hex32(s, (size_t)(slash - s), true, &hi) ||
	    !hex32(slash + 1, strlen(slash + 1), true, &lo))
		return -EINVAL;
	*ret = (uint64_t)hi << 32 | lo;
	return 0;
}

void lsn_format(uint64_t lsn, char out[LSN_FORMAT_LEN])
{
	snprintf(out, LSN_FORMAT_LEN, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}

void wal_segno_to_name(uint32_t timeline, uint64_t segno, uint32_t seg_size,
		       char out[WAL_SEGMENT_NAME_LEN])
{
	uint64_t per_id = 0x100000000ULL / seg_size;
	snprintf(out, WAL_SEGMENT_NAME_LEN, "%08X%08X%08X", timeline, (unsigned)(segno / per_id),
		 (unsigned)(segno % per_id));
}

uint64_t wal_segno_of(uint32_t log, uint32_t seg, uint32_t seg_size)
{
	return (uint64_t)log * (0x100000000ULL / seg_size) + seg;
}

int wal_segment_name_parse(const char *name, uint32_t *ret_timeline, uint32_t *ret_log,
			   uint32_t *ret_seg)
{
	uint32_t t, l, s;

	if (!name || strnlen(name, 24) < 24 || !hex32(name, 8, false, &t) || t == 0 ||
	    !hex32(name + 8, 8, false, &l) || !hex32(name + 16, 8, false, &s))
		return -EINVAL;
	*ret_timeline = t;
	*ret_log = l;
	*ret_seg = s;
	return 0;
}
