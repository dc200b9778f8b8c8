/*
 * Fault-injecting driver, after SQLite's test VFS: it wraps a real driver
 * and fails chosen calls, so tests can prove that every error path leaves a
 * consistent repository.
 */
#include "store/backend.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

enum { OP_PUT, OP_GET, OP_SIZE, OP_LIST, OP_DELETE, N_OPS };
static const char *const op_names[N_OPS] = {"put", "get", "size", "list", "delete"};

typedef struct FaultRule {
	int op;
	unsigned nth; /* 0 = every call */
	int err;      /* positive errno, -1 for a torn write ("crash"), FAULT_FLIP */
} FaultRule;

#define FAULT_FLIP (-2) /* get: succeed, with one byte of the body changed */

typedef struct FaultBackend {
	StoreBackend base;
	StoreBackend *inner;
	pthread_mutex_t lock; /* guards counts */
	unsigned counts[N_OPS];
	bool flip_pending[N_OPS]; /* the call just counted is to return damaged bytes */
	size_t n_rules;
	FaultRule rules[16];
} FaultBackend;

static int fault_hit(FaultBackend *fb, int op)
{
	unsigned n;
	pthread_mutex_lock(&fb->lock);
	n = ++fb->counts[op];
	pthread_mutex_unlock(&fb->lock);
	for (size_t i = 0; i < fb->n_rules; i++) {
		if (fb->rules[i].op != op || (fb->rules[i].nth != 0 && fb->rules[i].nth != n))
			continue;
		if (fb->rules[i].err != FAULT_FLIP)
			return fb->rules[i].err;
		pthread_mutex_lock(&fb->lock);
		fb->flip_pending[op] = true;
		pthread_mutex_unlock(&fb->lock);
	}
	return 0;
}

static int fault_put(StoreBackend *b, const char *name, const void *buf, size_t len)
{
	FaultBackend *fb = (FaultBackend *)b;
	int e = fault_hit(fb, OP_PUT);
	if (e == -1) {
		/* torn write: half an object under the final name */
		store_put(fb->inner, name, buf, len / 2);
		return -EIO;
	}
	if (e)
		return -e;
	return store_put(fb->inner, name, buf, len);
}

/* The rule for this call was "flip": the call succeeds with one byte changed. */
static bool fault_flips(FaultBackend *fb, int op)
{
	bool flip = false;
	pthread_mutex_lock(&fb->lock);
	flip = fb->flip_pending[op];
	fb->flip_pending[op] = false;
	pthread_mutex_unlock(&fb->lock);
	return flip;
}

static int fault_get_range(StoreBackend *b, const char *name, uint64_t off, size_t len, void *buf)
{
	FaultBackend *fb = (FaultBackend *)b;
	int e = fault_hit(fb, OP_GET);
	if (e > 0)
		return -e;
	e = store_get_range(fb->inner, name, off, len, buf);
	if (e == 0 && len && fault_flips(fb, OP_GET))
		((uint8_t *)buf)[len / 2] ^= 0x40; /* a body damaged on the way */
	return e;
}

static int fault_size(StoreBackend *b, const char *name, uint64_t *ret)
{
	FaultBackend *fb = (FaultBackend *)b;
	int e = fault_hit(fb, OP_SIZE);
	if (e > 0)
		return -e;
	return store_size(fb->inner, name, ret);
}

static int fault_list(StoreBackend *b, const char *prefix, StoreListFn cb, void *userdata)
{
	FaultBackend *fb = (FaultBackend *)b;
	int e = fault_hit(fb, OP_LIST);
	if (e > 0)
		return -e;
	return store_list(fb->inner, prefix, cb, userdata);
}

static int fault_delete(StoreBackend *b, const char *name)
{
	FaultBackend *fb = (FaultBackend *)b;
	int e = fault_hit(fb, OP_DELETE);
	if (e > 0)
		return -e;
	return store_delete(fb->inner, name);
}

static void fault_free(StoreBackend *b)
{
	FaultBackend *fb = (FaultBackend *)b;
	store_backend_free(fb->inner);
	pthread_mutex_destroy(&fb->lock);
	free(fb);
}

static const StoreBackendOps fault_ops = {
	.name = "fault",
	.put = fault_put,
	.get_range = fault_get_range,
	.size = fault_size,
	.list = fault_list,
	.delete = fault_delete,
	.free = fault_free,
};

static int parse_errno(const char *s)
{
	static const struct {
		const char *name;
		int err;
	} table[] = {{"EIO", EIO}, {"ENOSPC", ENOSPC}, {"ENOENT", ENOENT}, {"EACCES", EACCES},
		     {"ETIMEDOUT", ETIMEDOUT}, {"ECONNRESET", ECONNRESET}, {"crash", -1},
		     {"flip", FAULT_FLIP}};
	for (size_t i = 0; i < ELEMENTSOF(table); i++)
		if (strcmp(s, table[i].name) == 0)
			return table[i].err;
	return 0;
}

static int fault_parse(FaultBackend *fb, const char *script)
{
	char buf[512], *save = NULL;
	if (strlen(script) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, script);
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(tok, ':'), *eq = strchr(tok, '=');
		FaultRule rule = {.op = -1};
		if (!colon || !eq || eq < colon || fb->n_rules == ELEMENTSOF(fb->rules))
			return -EINVAL;
		*colon = *eq = '\0';
		for (int i = 0; i < N_OPS; i++)
			if (strcmp(tok, op_names[i]) == 0)
				rule.op = i;
		rule.nth = strcmp(colon + 1, "*") == 0 ? 0 : (unsigned)atoi(colon + 1);
		rule.err = parse_errno(eq + 1);
		if (rule.op < 0 || rule.err == 0 || (rule.nth == 0 && strcmp(colon + 1, "*")))
			return -EINVAL;
		fb->rules[fb->n_rules++] = rule;
	}
	return 0;
}

int store_fault_new(StoreBackend *inner, const char *script, StoreBackend **ret)
{
	FaultBackend *fb = calloc(1, sizeof(*fb));
	int r;
	if (!fb)
		return -ENOMEM;
	pthread_mutex_init(&fb->lock, NULL);
	r = fault_parse(fb, script);
	if (r < 0) {
		pthread_mutex_destroy(&fb->lock);
		free(fb);
		return r;
	}
	fb->inner = inner;
	store_backend_init(&fb->base, &fault_ops);
	*ret = &fb->base;
	return 0;
}

unsigned store_fault_count(StoreBackend *b, const char *op)
{
	FaultBackend *fb = (FaultBackend *)b;
	unsigned n = 0;
	PGBAKFS_CHECK(b->ops == &fault_ops);
	pthread_mutex_lock(&fb->lock);
	for (int i = 0; i < N_OPS; i++)
		if (strcmp(op, op_names[i]) == 0)
			n = fb->counts[i];
	pthread_mutex_unlock(&fb->lock);
	return n;
}
