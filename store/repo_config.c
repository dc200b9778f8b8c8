/*
 * The repository's config object: its text format, a new repository's
 * settings, and reading and writing it through a backend.
 */
#include "store/repo_int.h"

#include <stdio.h>
#include <string.h>

#define CONFIG_MAX_BYTES (64 * 1024)

static int config_format(const RepoConfig *c, char *buf, size_t len)
{
	int n = snprintf(buf, len,
			 "# pgbakfs repository: do not edit\n"
			 "format = %u\n"
			 "chunk_size = %llu\n"
			 "pack_size = %llu\n"
			 "compression = zstd\n"
			 "compression_level = %d\n"
			 "id = %s\n"
			 "encryption = %s\n",
			 c->format, (unsigned long long)c->chunk_size,
			 (unsigned long long)c->pack_size, c->compress_level, c->id,
			 c->encrypted ? "aes-256-gcm" : "none");
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : n;
}

static int config_parse(char *text, RepoConfig *ret)
{
	RepoConfig c = {0};
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char key[64], value[128];
		if (line[0] == '#' || !*line)
			continue;
		if (sscanf(line, " %63[a-z_] = %127s", key, value) != 2)
			return -EBADMSG;
		if (strcmp(key, "format") == 0)
			c.format = (uint32_t)strtoul(value, NULL, 10);
		else if (strcmp(key, "chunk_size") == 0)
			c.chunk_size = strtoull(value, NULL, 10);
		else if (strcmp(key, "pack_size") == 0)
			c.pack_size = strtoull(value, NULL, 10);
		else if (strcmp(key, "compression_level") == 0)
			c.compress_level = atoi(value);
		else if (strcmp(key, "id") == 0 && strlen(value) < sizeof(c.id))
			memcpy(c.id, value, strlen(value) + 1);
		else if (strcmp(key, "encryption") == 0) {
			if (strcmp(value, "aes-256-gcm") == 0)
				c.encrypted = true;
			else if (strcmp(value, "none") != 0)
				return -EPROTONOSUPPORT;
		}
	}
	if (c.format == 0)
		return -EBADMSG;
	if (c.format > PGBAKFS_REPO_FORMAT) {
		*ret = c;
		return -EPROTONOSUPPORT;
	}
	/* the id names the cache directory: exactly 32 hex digits, nothing else */
	if (!chunk_size_valid(c.chunk_size) || c.pack_size < c.chunk_size || strlen(c.id) != 32 ||
	    strspn(c.id, "0123456789abcdef") != 32)
		return -EBADMSG;
	*ret = c;
	return 0;
}

RepoConfig repo_config_new(const RepoInitOptions *o)
{
	return (RepoConfig){
		.format = PGBAKFS_REPO_FORMAT,
		.chunk_size = o && o->chunk_size ? o->chunk_size : PGBAKFS_DEFAULT_CHUNK_SIZE,
		.pack_size = o && o->pack_size ? o->pack_size : PGBAKFS_DEFAULT_PACK_SIZE,
		.compress_level = o && o->compress_level ? o->compress_level
							  : PGBAKFS_DEFAULT_COMPRESS_LEVEL,
	};
}

int repo_config_put(StoreBackend *b, const RepoConfig *c)
{
	char text[512];
	int n = config_format(c, text, sizeof(text));
	return n < 0 ? n : store_put(b, "config", text, (size_t)n);
}

int repo_config_get(StoreBackend *b, RepoConfig *ret)
{
	char *text = NULL;
	size_t len;
	int r = store_get_all(b, "config", CONFIG_MAX_BYTES, (void **)&text, &len);
	if (r == -ENOENT)
		return -ENOTDIR;
	if (r == -EFBIG)
		return -EBADMSG;
	if (r < 0)
		return r;
	char *z = realloc(text, len + 1);
	if (!z) {
		free(text);
		return -ENOMEM;
	}
	z[len] = 0;
	r = config_parse(z, ret);
	free(z);
	return r;
}
