// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * fetch: one open-and-read through the library, for the fault tests.
 *
 *   fetch REF OPTIONS seq [CHUNK]       read() to the end, print the sha256
 *   fetch REF OPTIONS fork [CHUNK]      read 64 KiB, fork(), then the child
 *                                       reads on to the end (the parent
 *                                       waits): the vfile survives fork()
 *   fetch REF OPTIONS cat               read() to the end, bytes to stdout
 *                                       (errors on stderr)
 *   fetch REF OPTIONS random FILE [N]   N random preads (default 64),
 *                                       each compared with FILE
 *                                       ($FETCH_DELAY_MS apart)
 *   fetch REF OPTIONS at OFF LEN...     one pread per OFF LEN pair
 *   fetch REF OPTIONS fetched OFF LEN   one pread, then the vfile's stats
 *   fetch REF OPTIONS together OFF LEN...
 *                                       one thread per OFF LEN pair, the
 *                                       Nth starting N * $FETCH_DELAY_MS
 *                                       (default 300) ms after the first,
 *                                       all on the one vfile; printed as
 *                                       at, in the order given
 *
 * Prints one line: "ok sha256:<hex> <bytes>" (seq), "ok random <n>"
 * (random), "ok at <n>:<sha256 hex> ..." (at, together: the bytes
 * each pread returned), "ok fetched=<bytes> requests=<n>" (fetched), or
 * "error <errno> <message>"; exit status 0 only for ok.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include <openssl/evp.h>
#include "oci_registry.h"

static int fail(int err)
{
	printf("error %d %s\n", -err, oci_registry_last_error());
	return 1;
}

static int seq(struct erofs_vfile *vf, size_t chunk)
{
	struct oci_registry_stats st;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned long long total = 0;
	unsigned int mdlen, i;
	EVP_MD_CTX *ctx;
	char *buf;
	ssize_t n;
	int ret = 1;

	buf = malloc(chunk);
	ctx = EVP_MD_CTX_new();
	if (!buf || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
		goto out;
	while ((n = vf->ops->read(vf, buf, chunk)) > 0) {
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		total += (unsigned long long)n;
	}
	if (n < 0) {
		ret = fail((int)n);
		goto out;
	}
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	printf("ok sha256:");
	for (i = 0; i < mdlen; i++)
		printf("%02x", md[i]);
	if (!oci_registry_stats(vf, &st))
		printf(" %llu fetched=%llu requests=%llu\n", total,
		       (unsigned long long)st.bytes_fetched,
		       (unsigned long long)st.requests);
	else
		printf(" %llu\n", total);
	ret = 0;
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	return ret;
}

static int cat(struct erofs_vfile *vf)
{
	static char buf[1 << 16];
	ssize_t n;

	while ((n = vf->ops->read(vf, buf, sizeof(buf))) > 0)
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
			return 1;
	if (n < 0) {
		fprintf(stderr, "error %d %s\n", (int)-n,
			oci_registry_last_error());
		return 1;
	}
	return fflush(stdout) ? 1 : 0;
}

static ssize_t do_pread(struct erofs_vfile *vf, void *buf, size_t len,
			unsigned long long off)
{
#if OCI_REGISTRY_EROFS_ABI >= 109
	return vf->ops->pread(vf, buf, len, off);
#else
	return vf->ops->pread(vf, buf, off, len);
#endif
}

static int random_reads(struct erofs_vfile *vf, const char *path, int count)
{
	const char *delay = getenv("FETCH_DELAY_MS");
	long delay_ms = delay ? atol(delay) : 0;
	unsigned long long size, off, seed = 42;
	char *want = NULL, *got = NULL;
	FILE *f = fopen(path, "rb");
	int i, ret = 1;

	if (!f) {
		printf("error 0 cannot open %s\n", path);
		return 1;
	}
	fseek(f, 0, SEEK_END);
	size = (unsigned long long)ftell(f);
	want = malloc(1 << 20);
	got = malloc(1 << 20);
	if (!want || !got || !size)
		goto out;
	for (i = 0; i < count; i++) {
		size_t len, exp;
		ssize_t n;

		if (delay_ms && i)
			usleep((useconds_t)delay_ms * 1000);
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		off = (seed >> 11) % size;
		len = (size_t)((seed >> 40) % (256 << 10)) + 1;
		exp = off + len > size ? (size_t)(size - off) : len;
		n = do_pread(vf, got, len, off);
		if (n < 0) {
			ret = fail((int)n);
			goto out;
		}
		fseek(f, (long)off, SEEK_SET);
		if ((size_t)n != exp || fread(want, 1, exp, f) != exp ||
		    memcmp(want, got, exp)) {
			printf("error 0 mismatch at %llu+%zu (got %zd)\n",
			       off, len, n);
			goto out;
		}
	}
	printf("ok random %d\n", count);
	ret = 0;
out:
	free(want);
	free(got);
	fclose(f);
	return ret;
}

static void hex_sha256(const void *buf, size_t len, char *out)
{
	unsigned char md[32];
	unsigned int mdlen = 0, i;

	EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL);
	for (i = 0; i < mdlen; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

/* A pread's LEN argument, at most 1 MiB (the buffers' size). */
static size_t arg_len(const char *s)
{
	size_t len = (size_t)strtoull(s, NULL, 0);

	return len > 1 << 20 ? 1 << 20 : len;
}

/* one pread per OFF LEN pair of @args */
static int preads_at(struct erofs_vfile *vf, int n, char **args)
{
	char *buf, hex[65];
	int i, ret = 0;

	buf = malloc(1 << 20);
	if (!buf)
		return fail(-ENOMEM);
	printf("ok at");
	for (i = 0; i + 1 < n; i += 2) {
		unsigned long long off = strtoull(args[i], NULL, 0);
		size_t len = arg_len(args[i + 1]);
		ssize_t got;

		got = do_pread(vf, buf, len, off);
		if (got < 0) {
			printf("\n");
			ret = fail((int)got);
			break;
		}
		hex_sha256(buf, (size_t)got, hex);
		printf(" %zd:%s", got, hex);
	}
	if (!ret)
		printf("\n");
	free(buf);
	return ret;
}

/* One pread of LEN bytes at OFF, then what the vfile fetched for it. */
static int fetched_by(struct erofs_vfile *vf, const char *off_s,
		      const char *len_s)
{
	unsigned long long off = strtoull(off_s, NULL, 0);
	size_t len = arg_len(len_s);
	struct oci_registry_stats st;
	ssize_t got;
	char *buf;
	int ret = 0;

	buf = malloc(len ? len : 1);
	if (!buf)
		return fail(-ENOMEM);
	got = do_pread(vf, buf, len, off);
	if (got < 0)
		ret = fail((int)got);
	else if (oci_registry_stats(vf, &st))
		ret = fail(-EINVAL);
	else
		printf("ok fetched=%llu requests=%llu\n",
		       (unsigned long long)st.bytes_fetched,
		       (unsigned long long)st.requests);
	free(buf);
	return ret;
}

struct together_job {
	struct erofs_vfile *vf;
	unsigned long long off;
	size_t len;
	long delay_ms;
	char *buf;
	ssize_t got;
};

static void *together_read(void *arg)
{
	struct together_job *j = arg;
	struct timespec ts = {
		.tv_sec = j->delay_ms / 1000,
		.tv_nsec = (j->delay_ms % 1000) * 1000000L,
	};

	nanosleep(&ts, NULL);
	j->got = do_pread(j->vf, j->buf, j->len, j->off);
	return NULL;
}

/* Several readers' preads at once, started a little apart in the order
 * given: each is in flight when the next begins. */
static int preads_together(struct erofs_vfile *vf, int n, char **args)
{
	const char *d = getenv("FETCH_DELAY_MS");
	long delay = d ? atol(d) : 300;
	struct together_job *jobs;
	pthread_t *tids;
	int i, started = 0, ret = 0;
	char hex[65];

	n /= 2;
	jobs = calloc(n ? n : 1, sizeof(*jobs));
	tids = calloc(n ? n : 1, sizeof(*tids));
	if (!jobs || !tids) {
		ret = fail(-ENOMEM);
		goto out;
	}
	for (i = 0; i < n; i++) {
		jobs[i] = (struct together_job){
			.vf = vf, .off = strtoull(args[2 * i], NULL, 0),
			.len = arg_len(args[2 * i + 1]),
			.delay_ms = i * delay,
		};
		jobs[i].buf = malloc(jobs[i].len ? jobs[i].len : 1);
		if (!jobs[i].buf) {
			ret = fail(-ENOMEM);
			goto join;
		}
	}
	for (; started < n; started++)
		if (pthread_create(&tids[started], NULL, together_read,
				   &jobs[started])) {
			ret = fail(-EAGAIN);
			break;
		}
join:
	for (i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	if (ret)
		goto out;
	for (i = 0; i < n; i++)
		if (jobs[i].got < 0) {
			ret = fail((int)jobs[i].got);
			goto out;
		}
	printf("ok at");
	for (i = 0; i < n; i++) {
		hex_sha256(jobs[i].buf, (size_t)jobs[i].got, hex);
		printf(" %zd:%s", jobs[i].got, hex);
	}
	printf("\n");
out:
	for (i = 0; jobs && i < n; i++)
		free(jobs[i].buf);
	free(jobs);
	free(tids);
	return ret;
}

int main(int argc, char **argv)
{
	struct erofs_vfile vf;
	int ret;

	if (argc < 4) {
		fprintf(stderr, "usage: fetch REF OPTIONS seq [CHUNK]"
			" | random FILE [N] | at OFF LEN... | fetched OFF LEN"
			" | together OFF LEN...\n");
		return 2;
	}
	ret = oci_registry_open(&vf, argv[1], argv[2][0] ? argv[2] : NULL);
	if (ret) {
		if (!strcmp(argv[3], "cat")) {
			fprintf(stderr, "error %d %s\n", -ret,
				oci_registry_last_error());
			return 1;
		}
		return fail(ret);
	}
	if (!strcmp(argv[3], "fork")) {
		char head[65536];
		ssize_t n = vf.ops->read(&vf, head, sizeof(head));
		int status = 0;
		pid_t pid;

		if (n != (ssize_t)sizeof(head)) {
			ret = fail(n < 0 ? (int)n : -EIO);
			goto close;
		}
		fflush(stdout);
		pid = fork();
		if (!pid) {
			/* rewind: the child hashes the whole blob */
			vf.ops->lseek(&vf, 0, SEEK_SET);
			ret = seq(&vf, argc > 4 ? (size_t)atol(argv[4]) : 65536);
			oci_registry_close(&vf);
			fflush(stdout);
			_exit(ret);
		}
		ret = pid < 0 || waitpid(pid, &status, 0) != pid ||
		      !WIFEXITED(status) || WEXITSTATUS(status);
		goto close;
	}
	if (!strcmp(argv[3], "cat"))
		ret = cat(&vf);
	else if (!strcmp(argv[3], "fetched") && argc == 6)
		ret = fetched_by(&vf, argv[4], argv[5]);
	else if (!strcmp(argv[3], "at"))
		ret = preads_at(&vf, argc - 4, argv + 4);
	else if (!strcmp(argv[3], "together"))
		ret = preads_together(&vf, argc - 4, argv + 4);
	else if (!strcmp(argv[3], "random") && argc > 4)
		ret = random_reads(&vf, argv[4], argc > 5 ? atoi(argv[5]) : 64);
	else
		ret = seq(&vf, argc > 4 ? (size_t)atol(argv[4]) : 65536);
close:
	oci_registry_close(&vf);
	return ret;
}
