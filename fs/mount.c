/*
 * The FUSE session of a mount: options, the table of handlers (each file
 * of fs/mount_*.c adds its own), the poller that keeps the snapshot list
 * live, and the lifecycle from mount_run to unmount. Inode numbers, locks
 * and what the files share: fs/mount_int.h.
 */
#define FUSE_USE_VERSION 312

#include "fs/mount_int.h"

#include "common/log.h"
#include "common/util.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void raise_readahead(const char *mountpoint);

/*
 * Poller: every POLL_INTERVAL_MS, the live view of the local catalog (no
 * request); every o->poll_interval seconds (object storage), a look at the
 * bucket for a newer catalog generation: the only request an idle mount makes.
 */
static void *poller_main(void *userdata)
{
	Mount *m = userdata;
	thread_name("mount-poll");
	long wait_ms = 100; /* the first round comes soon: after the kernel's INIT */
	bool raised = false;
	int64_t interval_ns = (int64_t)(m->o->poll_interval ? m->o->poll_interval
							     : MOUNT_POLL_INTERVAL_DEFAULT) * 1000000000;
	int64_t next_look = mono_ns() + interval_ns;
	int refresh_error = 0;
	pthread_mutex_lock(&m->stop_lock);
	while (!m->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += wait_ms * 1000000L;
		wait_ms = POLL_INTERVAL_MS;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		pthread_cond_timedwait(&m->stop_cond, &m->stop_lock, &ts);
		if (m->stopping)
			break;
		pthread_mutex_unlock(&m->stop_lock);
		if (!raised) {
			/* the INIT reply sets the readahead: raise it after that */
			raise_readahead(m->o->mountpoint);
			raised = true;
		}
		/* object storage: other machines publish catalog generations */
		if (repo_is_remote(m->repo) && interval_ns > 0 && mono_ns() >= next_look) {
			next_look = mono_ns() + interval_ns;
			int e = repo_refresh(m->repo);
			if (e < 0 && e != refresh_error)
				log_warning("could not mount_refresh the catalog from the bucket: %s", strerror(-e));
			refresh_error = e;
		}
		mount_refresh(m);
		mount_retire_gone(m);
		mount_trees_trim(m, true);
		pthread_mutex_lock(&m->stop_lock);
	}
	pthread_mutex_unlock(&m->stop_lock);
	return NULL;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	Mount *m = userdata;
	conn->max_write = MAX_IO;
	conn->max_read = MAX_IO; /* must match the max_read mount option */
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_READDIRPLUS) {
		conn->want |= FUSE_CAP_READDIRPLUS;
		conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	}
	if (!ro(m) && (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC))
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE; /* fsync must reach the clone */
}

/* Every handler the mount answers, from the files that implement them. */
static void mount_ops(struct fuse_lowlevel_ops *ops)
{
	*ops = (struct fuse_lowlevel_ops){.init = op_init};
	mount_ro_ops(ops);
	mount_read_ops(ops);
	mount_rw_ops(ops);
}

/* ---- the session ---- */

/*
 * Raise the kernel's readahead for this mount (root only), so sequential
 * reads arrive as large requests. The device number comes from mountinfo:
 * a stat() of the mount point would wait for this very process to answer.
 */
static void raise_readahead(const char *mountpoint)
{
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	unsigned maj = 0, min = 0;
	bool found = false;
	FILE *f;

	if (geteuid() != 0 || !(f = fopen("/proc/self/mountinfo", "re")))
		return;
	while (!found && getline(&line, &cap, f) > 0) {
		char mp[PATH_MAX];
		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ..." (no escapes in our paths) */
		found = sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, mp) == 3 &&
			strcmp(mp, mountpoint) == 0;
	}
	fclose(f);
	if (!found)
		return;
	char path[128];
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0 && write(fd, "4096", 4) < 0)
		log_debug("cannot raise readahead in \"%s\": %m", path);
}

static int mount_args(const MountOptions *o, struct fuse_args *args)
{
	char opts[256];
	snprintf(opts, sizeof(opts), "fsname=pgbakfs,subtype=pgbakfs,default_permissions,max_read=%d,%s%s",
		 MAX_IO,
		 o->writable ? "rw" : "ro", o->allow_other ? ",allow_other" : "");
	if (fuse_opt_add_arg(args, "pgbakfs") < 0 || fuse_opt_add_arg(args, "-o") < 0 ||
	    fuse_opt_add_arg(args, opts) < 0)
		return -ENOMEM;
	return 0;
}

static void log_cache_stats(Mount *m)
{
	ChunkCacheStats st;
	if (!m->cache)
		return;
	chunk_cache_stats(m->cache, &st);
	log_debug("chunk cache: %" PRIu64 " hits, %" PRIu64 " misses, %" PRIu64 " prefetched, %" PRIu64
		  " evicted, %" PRIu64 " dropped behind streaming readers, %" PRIu64
		  " located in batches, %" PRIu64 " relocated, %" PRIu64 " runs fetched at once",
		  st.hits, st.misses, st.prefetched, st.evicted, st.dropped, st.located, st.relocated,
		  st.runs);
}

static void mount_clear(Mount *m)
{
	log_cache_stats(m);
	/* still open at unmount: their chunk lists and clone files go with their snapshots */
	while (m->handles) {
		Handle *h = m->handles;
		m->handles = h->next;
		free(h);
	}
	for (size_t i = 0; i < m->n_snaps; i++)
		mount_snap_free(m, m->snaps[i]);
	free(m->snaps);
	for (size_t i = 0; i < m->n_instances; i++)
		free(m->instances[i]);
	free(m->instances);
	free(m->bad);
	chunk_cache_free(m->cache);
	catalog_free(m->meta);
	repo_session_end(m->repo, m->session);
	pthread_rwlock_destroy(&m->lock);
	pthread_mutex_destroy(&m->meta_lock);
	pthread_mutex_destroy(&m->trees_lock);
	pthread_mutex_destroy(&m->bad_lock);
	pthread_mutex_destroy(&m->handles_lock);
	pthread_mutex_destroy(&m->stop_lock);
	pthread_cond_destroy(&m->stop_cond);
}

static int mount_prepare(Mount *m, Repo *repo, const MountOptions *o)
{
	*m = (Mount){.repo = repo, .o = o, .chunk_size = repo_config(repo)->chunk_size,
		     .max_trees = o->max_trees, .max_tree_bytes = MAX_TREE_BYTES,
		     .tree_idle_ns = TREE_IDLE_NS};
	clock_gettime(CLOCK_REALTIME, &m->started);
	pthread_rwlock_init(&m->lock, NULL);
	pthread_mutex_init(&m->meta_lock, NULL);
	pthread_mutex_init(&m->trees_lock, NULL);
	pthread_mutex_init(&m->bad_lock, NULL);
	pthread_mutex_init(&m->handles_lock, NULL);
	pthread_mutex_init(&m->stop_lock, NULL);
	pthread_cond_init(&m->stop_cond, NULL);
	int r = repo_session_begin(repo, "mount", &m->session);
	if (r == 0)
		r = repo_catalog_open(repo, &m->meta);
	if (r == 0)
		r = chunk_cache_new(repo, o->cache_size,
				    repo_is_local_backend(repo) ? PREFETCH_THREADS : PREFETCH_THREADS_REMOTE,
				    &m->cache);
	if (r == 0)
		r = mount_refresh(m);
	return r;
}

static int serve(Mount *m)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int r;
	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	/*
	 * Threads are kept once started: one leaving when more than the idle
	 * count waited took its 1 MiB request buffer with it, and the next one
	 * malloc'd and faulted in a new one (sysmalloc was 3-5% of the daemon's
	 * CPU on a sequential read). At most 16 MiB of buffers.
	 */
	fuse_loop_cfg_set_max_threads(cfg, MAX_THREADS);
	fuse_loop_cfg_set_idle_threads(cfg, MAX_THREADS);
	r = -pthread_create(&m->poller, NULL, poller_main, m);
	if (r == 0) {
		m->poller_running = true;
		r = fuse_session_loop_mt(m->se, cfg);
		r = r < 0 ? r : 0; /* > 0: ended by a signal, a clean exit */
	}
	pthread_mutex_lock(&m->stop_lock);
	m->stopping = true;
	pthread_cond_broadcast(&m->stop_cond);
	pthread_mutex_unlock(&m->stop_lock);
	if (m->poller_running)
		pthread_join(m->poller, NULL);
	fuse_loop_cfg_destroy(cfg);
	return r;
}

int mount_run(Repo *repo, const MountOptions *o)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_lowlevel_ops ops;
	Mount m;
	int r = mount_prepare(&m, repo, o);

	mount_ops(&ops);
	if (r == 0)
		r = mount_args(o, &args);
	if (r == 0) {
		m.se = fuse_session_new(&args, &ops, sizeof(ops), &m);
		if (!m.se)
			r = -EINVAL;
	}
	if (r == 0 && fuse_set_signal_handlers(m.se) < 0)
		r = -EIO;
	if (r == 0 && fuse_session_mount(m.se, o->mountpoint) != 0) {
		fuse_remove_signal_handlers(m.se);
		r = -EPERM;
	}
	if (r == 0) {
		if (o->ready)
			o->ready(o->userdata);
		r = serve(&m);
		fuse_session_unmount(m.se);
		fuse_remove_signal_handlers(m.se);
	}
	if (m.se)
		fuse_session_destroy(m.se);
	fuse_opt_free_args(&args);
	mount_clear(&m);
	return r;
}
