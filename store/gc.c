#include "store/gc.h"
#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

typedef struct NameSet {
	char **v;
	size_t n;
} NameSet;

static void name_set_clear(NameSet *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	*s = (NameSet){0};
}

static int name_set_add(NameSet *s, const char *name)
{
	char **v = realloc(s->v, (s->n + 1) * sizeof(char *));
	if (!v)
		return -ENOMEM;
	s->v = v;
	v[s->n] = strdup(name);
	if (!v[s->n])
		return -ENOMEM;
	s->n++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int collect_known(int64_t id _unused_, const char *name, const char *state _unused_,
			 uint64_t size _unused_, void *userdata)
{
	return name_set_add(userdata, name);
}

typedef struct ObjectList {
	NameSet names;
	uint64_t *sizes;
} ObjectList;

static int collect_object(const char *name, uint64_t size, void *userdata)
{
	ObjectList *l = userdata;
	uint64_t *v = realloc(l->sizes, (l->names.n + 1) * sizeof(uint64_t));
	if (!v)
		return -ENOMEM;
	l->sizes = v;
	v[l->names.n] = size;
	return name_set_add(&l->names, name);
}

/*
 * Objects under packs/ that the catalog does not know. A live session adds its
 * pending pack row before it writes the object, so an unknown object is never
 * a live backup's: the list of objects is taken first, the catalog second.
 */
static int gc_orphans(Repo *repo, GcResult *res)
{
	ObjectList objs = {0};
	NameSet known = {0};
	int r = store_list(repo_backend(repo), "packs/", collect_object, &objs);
	if (r == 0)
		r = catalog_pack_foreach(repo_catalog(repo), collect_known, &known);
	if (r == 0 && known.n)
		qsort(known.v, known.n, sizeof(char *), cmp_str);
	for (size_t i = 0; r == 0 && i < objs.names.n; i++) {
		if (known.n && bsearch(&objs.names.v[i], known.v, known.n, sizeof(char *), cmp_str))
			continue;
		r = store_delete(repo_backend(repo), objs.names.v[i]);
		if (r == 0) {
			res->orphans_deleted++;
			res->bytes_reclaimed += objs.sizes[i];
		}
	}
	name_set_clear(&objs.names);
	free(objs.sizes);
	name_set_clear(&known);
	return r;
}

static int count_session(const char *id _unused_, const char *kind _unused_, int64_t pid _unused_,
			 int64_t started _unused_, void *userdata)
{
	(*(uint64_t *)userdata)++;
	return 0;
}

/*
 * Temporary files of interrupted puts and staging directories of interrupted
 * backups (local driver). Listed first; removed only if no session is alive
 * afterwards: a session registers before it creates any, so what is listed
 * belongs to a dead one.
 */
static int gc_local_tmp(Repo *repo, GcResult *res)
{
	NameSet tmp = {0};
	char dir[PATH_MAX];
	uint64_t n_sessions = 0;
	DIR *top, *sub;
	struct dirent *de, *se;
	int r = 0;

	if (!repo_objects_dir(repo))
		return 0;
	snprintf(dir, sizeof(dir), "%s/packs", repo_objects_dir(repo));
	top = opendir(dir);
	if (!top)
		return errno == ENOENT ? 0 : -errno;
	while (r == 0 && (de = readdir(top))) {
		char path[PATH_MAX * 2];
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (!(sub = opendir(path)))
			continue;
		while (r == 0 && (se = readdir(sub))) {
			char full[PATH_MAX * 3];
			if (strncmp(se->d_name, ".tmp-", 5) != 0)
				continue;
			snprintf(full, sizeof(full), "%s/%s", path, se->d_name);
			r = name_set_add(&tmp, full);
		}
		closedir(sub);
	}
	closedir(top);
	/* staging directories of interrupted backups (WAL segments): tmp/NAME */
	snprintf(dir, sizeof(dir), "%s/tmp", repo_workdir(repo));
	if (r == 0 && (top = opendir(dir))) {
		while (r == 0 && (de = readdir(top))) {
			char full[PATH_MAX * 2];
			if (de->d_name[0] == '.')
				continue;
			snprintf(full, sizeof(full), "%s/%s", dir, de->d_name);
			r = name_set_add(&tmp, full);
		}
		closedir(top);
	}
	if (r == 0)
		r = catalog_session_foreach(repo_catalog(repo), count_session, &n_sessions);
	for (size_t i = 0; r == 0 && n_sessions == 0 && i < tmp.n; i++) {
		if (rm_rf(tmp.v[i]) == 0)
			res->orphans_deleted++;
	}
	name_set_clear(&tmp);
	return r;
}

int repo_gc(Repo *repo, GcResult *ret)
{
	GcResult res = {0};
	CatalogGcResult cres = {0};
	_cleanup_close_ int lock_fd = -1;
	int r = repo_lock_maintenance(repo, &lock_fd);

	if (r == 0)
		r = repo_reap_dead_sessions(repo, &res.sessions_reaped, &res.snapshots_reaped);
	if (r == 0)
		r = catalog_gc(repo_catalog(repo), &cres);
	if (r < 0)
		return r;
	res.snapshots_purged = cres.snapshots_purged;
	res.contents_deleted = cres.contents_deleted;
	res.chunks_deleted = cres.chunks_deleted;
	res.chunks_waiting = cres.chunks_waiting;
	/* a published catalog must stop naming the packs before they go: publish it
	 * now (the writer keeps its lock), and only while the lock is still ours */
	if (repo_is_remote(repo))
		r = repo_write_publish(repo);
	if (r == 0)
		r = repo_write_check(repo);
	/* the catalog no longer points into these packs: deleting them is safe */
	for (size_t i = 0; r == 0 && i < cres.n_dead_packs; i++) {
		uint64_t size = 0;
		if (store_size(repo_backend(repo), cres.dead_packs[i], &size) < 0)
			size = 0;
		r = store_delete(repo_backend(repo), cres.dead_packs[i]);
		if (r == 0) {
			res.packs_deleted++;
			res.bytes_reclaimed += size;
		}
	}
	catalog_gc_result_clear(&cres);
	if (r == 0)
		r = repo_write_check(repo);
	if (r == 0)
		r = gc_orphans(repo, &res);
	if (r == 0)
		r = gc_local_tmp(repo, &res);
	if (r < 0)
		return r;
	*ret = res;
	return 0;
}
