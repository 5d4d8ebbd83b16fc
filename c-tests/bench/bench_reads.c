// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * bench_reads - our side of `make bench`: open one blob with
 * oci_registry_open() and read it through the erofs_vfile's ops, timing
 * the reads, as c-tests/bench/erofs-ref-driver.c does with erofs-utils 1.9's
 * own OCI reader.  The modes, their offsets and their checksums are the
 * reference driver's, so the two can be compared byte for byte.
 *
 * usage: bench_reads MODE REF OPTIONS [args]
 *
 *   seq REF OPTIONS CHUNK
 *	read the whole blob with ops->read() in CHUNK-byte calls; print
 *	open_secs (oci_registry_open()), ttfb_secs (the first read call,
 *	from its start to its return), secs (all read calls, from the
 *	start of the first to the return of the one that returns 0),
 *	MiB/s, the sha256 of the bytes and whether it is the blob's digest
 *   random REF OPTIONS N LEN SEED
 *	N ops->pread()s of LEN bytes at the offsets below; print secs and
 *	the sha256 of the N buffers concatenated in read order
 *   threads REF OPTIONS T N LEN SEED
 *	the same N preads shared by T pthreads on ONE vfile: thread t does
 *	reads t, t+T, t+2T, ...  The buffers are hashed in read order
 *	afterwards, so a correct run prints the sha256 of `random`.
 *
 * OPTIONS is the oci_registry_open() options string; "" or "-" passes
 * NULL (all defaults: digest verification on, 64 MiB cache).
 *
 * BENCH_READS_HASH=0 makes `seq` skip its own sha256 (sha256=skipped,
 * verified=skipped): on a small machine hashing every byte a second time
 * in the reading thread takes a third of the time of a whole read, which
 * is the driver's work, not the library's.  With the default
 * verification the library itself still fails the last read on a digest
 * mismatch (err=-74, EBADMSG).  hash_secs is the time the driver spent
 * hashing, included in secs.
 *
 * Offsets of `random` and `threads` (the reference driver's), for SIZE
 * the blob size, with 64-bit arithmetic mod 2^64 (Knuth's MMIX LCG):
 *
 *	x = SEED
 *	for i in 0 .. N-1:
 *		x = x * 6364136223846793005 + 1442695040888963407
 *		offset[i] = (x >> 11) % (SIZE - LEN + 1)
 *
 * Output: one line of key=value fields on stdout, e.g.
 *   mode=random n=2000 len=4096 seed=1 options=- size=... first_off=...
 *   open_secs=0.010 secs=0.300 reads_s=6666.7 sha256=... errors=0 ...
 * Every mode ends the line with cpu_secs= (user + system time of the
 * whole process: open, reads, every thread), peak_rss_kib= (getrusage(),
 * the whole process) and, when the header offers oci_registry_stats()
 * (OCI_REGISTRY_HAS_STATS), the vfile's counters; otherwise stats=none.
 *
 * Exit codes, as the reference driver's: 0 done without errors; 1 read
 * errors (seq, random); 2 usage; 3 oci_registry_open() failed; 4 threads
 * mode had errors, or a crash or a timeout (BENCH_READS_TIMEOUT seconds,
 * default 300), when the line ends with result=crash signal=... or
 * result=timeout.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "oci_registry.h"

#define BENCH_PROG		"bench_reads"
#define BENCH_TIMEOUT_ENV	"BENCH_READS_TIMEOUT"
#include "bench_util.h"

#define MIB		1048576.0

/* erofs-utils 1.8 had pread(vf, buf, offset, len), 1.9 pread(vf, buf, len, offset) */
#if OCI_REGISTRY_EROFS_ABI >= 109
#define vf_pread(vf, buf, len, off)	((vf)->ops->pread((vf), (buf), (len), (off)))
#else
#define vf_pread(vf, buf, len, off)	((vf)->ops->pread((vf), (buf), (off), (len)))
#endif
#define vf_read(vf, buf, len)		((vf)->ops->read((vf), (buf), (len)))

static long peak_rss_kib(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return -1;
	return ru.ru_maxrss;	/* KiB on Linux */
}

/* CPU time of the whole process so far (every thread), user + system */
static double cpu_secs(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru))
		return -1;
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* The line's tail: peak RSS and, when the library has them, its counters. */
static void print_tail(struct erofs_vfile *vf)
{
#ifdef OCI_REGISTRY_HAS_STATS
	struct oci_registry_stats st;
	int err;

	memset(&st, 0, sizeof(st));
	err = oci_registry_stats(vf, &st);
	if (err) {
		printf(" cpu_secs=%.3f peak_rss_kib=%ld stats=error:%d\n",
		       cpu_secs(), peak_rss_kib(), err);
		return;
	}
	printf(" cpu_secs=%.3f peak_rss_kib=%ld requests=%" PRIu64
	       " bytes_fetched=%" PRIu64 " retries=%" PRIu64
	       " cache_hits=%" PRIu64 " cache_misses=%" PRIu64
	       " bytes_served=%" PRIu64 "\n", cpu_secs(),
	       peak_rss_kib(), st.requests, st.bytes_fetched, st.retries,
	       st.cache_hits, st.cache_misses, st.bytes_served);
#else
	(void)vf;
	printf(" cpu_secs=%.3f peak_rss_kib=%ld stats=none\n", cpu_secs(),
	       peak_rss_kib());
#endif
}

static void usage(void)
{
	fprintf(stderr,
		"usage: bench_reads MODE REF OPTIONS [args]\n"
		"  seq REF OPTIONS CHUNK\n"
		"  random REF OPTIONS N LEN SEED\n"
		"  threads REF OPTIONS T N LEN SEED\n"
		"OPTIONS \"\" or \"-\" for the defaults\n");
}

/* ---- the blob ---- */

struct blob {
	struct erofs_vfile vf;
	const char *digest;
	uint64_t size;
	double open_secs;
};

static int open_blob(struct blob *b, const char *ref, const char *options)
{
	double t0;
	int64_t size;
	int err;

	if (options && (!*options || !strcmp(options, "-")))
		options = NULL;
	memset(b, 0, sizeof(*b));
	t0 = now();
	err = oci_registry_open(&b->vf, ref, options);
	b->open_secs = now() - t0;
	if (err) {
		fprintf(stderr, "bench_reads: oci_registry_open(%s, %s): %s: %s\n",
			ref, options ? options : "NULL", strerror(-err),
			oci_registry_last_error());
		printf("%s result=open-failed err=%d open_secs=%.3f\n",
		       line_prefix, err, b->open_secs);
		return err;
	}
	size = oci_registry_blob_size(&b->vf);
	b->digest = oci_registry_blob_digest(&b->vf);
	if (size < 0 || !b->digest) {
		fprintf(stderr, "bench_reads: no size or digest: %s\n",
			oci_registry_last_error());
		printf("%s result=open-failed err=%d open_secs=%.3f\n",
		       line_prefix, size < 0 ? (int)size : -EIO, b->open_secs);
		oci_registry_close(&b->vf);
		return size < 0 ? (int)size : -EIO;
	}
	b->size = size;
	return 0;
}

/* ---- seq ---- */

static int run_seq(struct blob *b, size_t chunk, bool hash)
{
	EVP_MD_CTX *sha = NULL;
	char *buf = NULL;
	uint64_t bytes = 0, calls = 0;
	double t0, t, ttfb = -1, secs, hash_secs = 0;
	long long err = 0;
	char out[65];
	ssize_t n;
	int ret = 1;

	if (hash)
		sha = sha_new();
	buf = malloc(chunk);
	if (!buf) {
		fprintf(stderr, "bench_reads: out of memory\n");
		goto cleanup;
	}
	t0 = now();
	for (;;) {
		n = vf_read(&b->vf, buf, chunk);
		calls++;
		if (ttfb < 0)
			ttfb = now() - t0;
		if (n < 0) {
			err = n;
			break;
		}
		if (!n)
			break;
		if (sha) {
			t = now();
			EVP_DigestUpdate(sha, buf, n);
			hash_secs += now() - t;
		}
		bytes += n;
		if (bytes > b->size) {	/* more than the manifest says */
			err = -EFBIG;
			break;
		}
	}
	secs = now() - t0;
	if (sha) {
		sha_done(sha, out);
		sha = NULL;
	} else {
		strcpy(out, "skipped");
	}
	if (err)
		fprintf(stderr, "bench_reads: read at %" PRIu64 ": %s: %s\n",
			bytes, strerror((int)-err), oci_registry_last_error());
	printf("%s size=%" PRIu64 " bytes=%" PRIu64 " calls=%" PRIu64
	       " open_secs=%.4f ttfb_secs=%.4f secs=%.4f hash_secs=%.4f"
	       " mib_s=%.1f sha256=%s digest=%s verified=%s errors=%d err=%lld",
	       line_prefix, b->size, bytes, calls, b->open_secs, ttfb, secs,
	       hash_secs, secs > 0 ? bytes / MIB / secs : 0.0, out, b->digest,
	       !hash ? "skipped" :
	       !strncmp(b->digest, "sha256:", 7) && !strcmp(b->digest + 7, out)
	       ? "yes" : "no", err ? 1 : 0, err);
	print_tail(&b->vf);
	ret = err || bytes != b->size ? 1 : 0;
cleanup:
	if (sha)
		EVP_MD_CTX_free(sha);
	free(buf);
	return ret;
}

/* ---- random and threads ---- */

static int run_random(struct blob *b, size_t n, size_t len, uint64_t seed)
{
	uint64_t *off = NULL;
	EVP_MD_CTX *sha = NULL;
	char *buf = NULL;
	unsigned long errors = 0, shorts = 0;
	long long first_err = 0;
	double t0, secs;
	char out[65];
	size_t i;
	ssize_t r;
	int ret = 1;

	if (len > b->size) {
		fprintf(stderr, "bench_reads: LEN %zu > blob size %" PRIu64 "\n",
			len, b->size);
		return 2;
	}
	off = make_offsets(seed, n, len, b->size);
	sha = sha_new();
	buf = malloc(len ? len : 1);
	if (!buf) {
		fprintf(stderr, "bench_reads: out of memory\n");
		goto cleanup;
	}
	t0 = now();
	for (i = 0; i < n; i++) {
		r = vf_pread(&b->vf, buf, len, off[i]);
		if (r < 0) {
			if (!first_err) {
				first_err = r;
				fprintf(stderr, "bench_reads: pread %zu at %" PRIu64
					": %s: %s\n", i, off[i], strerror((int)-r),
					oci_registry_last_error());
			}
			errors++;
			continue;
		}
		if ((size_t)r != len)
			shorts++;
		EVP_DigestUpdate(sha, buf, r);
	}
	secs = now() - t0;
	sha_done(sha, out);
	sha = NULL;
	printf("%s size=%" PRIu64 " first_off=%" PRIu64 " open_secs=%.4f"
	       " secs=%.4f reads_s=%.1f sha256=%s errors=%lu short=%lu err=%lld",
	       line_prefix, b->size, n ? off[0] : 0, b->open_secs, secs,
	       secs > 0 ? n / secs : 0.0, out, errors + shorts, shorts,
	       first_err);
	print_tail(&b->vf);
	ret = errors + shorts ? 1 : 0;
cleanup:
	if (sha)
		EVP_MD_CTX_free(sha);
	free(off);
	free(buf);
	return ret;
}

struct tjob {
	struct blob *b;
	const uint64_t *off;
	char *data;		/* n * len bytes, read i at i * len */
	ssize_t *ret;		/* per read */
	size_t n, len, t, nthreads;
	pthread_barrier_t *go;
};

static void *thread_main(void *arg)
{
	struct tjob *j = arg;
	size_t i;

	pthread_barrier_wait(j->go);
	for (i = j->t; i < j->n; i += j->nthreads)
		j->ret[i] = vf_pread(&j->b->vf, j->data + i * j->len, j->len,
				     j->off[i]);
	return NULL;
}

static int run_threads(struct blob *b, size_t nthreads, size_t n, size_t len,
		       uint64_t seed)
{
	uint64_t *off = NULL;
	char *data = NULL;
	ssize_t *rets = NULL;
	struct tjob *jobs = NULL;
	pthread_t *tids = NULL;
	pthread_barrier_t go;
	unsigned long errors = 0, shorts = 0;
	long long first_err = 0;
	EVP_MD_CTX *sha = NULL;
	size_t i, started = 0;
	double t0, secs;
	char out[65];
	int ret = 4;

	if (len > b->size) {
		fprintf(stderr, "bench_reads: LEN %zu > blob size %" PRIu64 "\n",
			len, b->size);
		return 2;
	}
	if (!nthreads || nthreads > 1024 || (len && n > (1ULL << 30) / len)) {
		fprintf(stderr, "bench_reads: need 1 <= T <= 1024 and N*LEN <= 1 GiB\n");
		return 2;
	}
	off = make_offsets(seed, n, len, b->size);
	data = malloc(n && len ? n * len : 1);
	rets = calloc(n ? n : 1, sizeof(*rets));
	jobs = calloc(nthreads, sizeof(*jobs));
	tids = calloc(nthreads, sizeof(*tids));
	sha = sha_new();
	if (!data || !rets || !jobs || !tids) {
		fprintf(stderr, "bench_reads: out of memory\n");
		goto cleanup;
	}
	if (pthread_barrier_init(&go, NULL, nthreads + 1)) {
		fprintf(stderr, "bench_reads: pthread_barrier_init failed\n");
		goto cleanup;
	}
	for (i = 0; i < nthreads; i++) {
		jobs[i] = (struct tjob){ .b = b, .off = off, .data = data,
			.ret = rets, .n = n, .len = len, .t = i,
			.nthreads = nthreads, .go = &go };
		if (pthread_create(&tids[i], NULL, thread_main, &jobs[i])) {
			/* the barrier would never open: nothing to recover */
			fprintf(stderr, "bench_reads: pthread_create failed\n");
			exit(1);
		}
		started++;
	}
	t0 = now();
	pthread_barrier_wait(&go);
	for (i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	secs = now() - t0;
	pthread_barrier_destroy(&go);

	for (i = 0; i < n; i++) {
		if (rets[i] < 0) {
			if (!first_err) {
				first_err = rets[i];
				fprintf(stderr, "bench_reads: pread %zu at %" PRIu64
					": %s\n", i, off[i],
					strerror((int)-rets[i]));
			}
			errors++;
			continue;
		}
		if ((size_t)rets[i] != len)
			shorts++;
		EVP_DigestUpdate(sha, data + i * len, rets[i]);
	}
	sha_done(sha, out);
	sha = NULL;
	printf("%s size=%" PRIu64 " first_off=%" PRIu64 " open_secs=%.4f"
	       " secs=%.4f reads_s=%.1f sha256=%s errors=%lu short=%lu err=%lld"
	       " result=%s",
	       line_prefix, b->size, n ? off[0] : 0, b->open_secs, secs,
	       secs > 0 ? n / secs : 0.0, out, errors + shorts, shorts,
	       first_err, errors + shorts ? "errors" : "ok");
	print_tail(&b->vf);
	ret = errors + shorts ? 4 : 0;
cleanup:
	if (sha)
		EVP_MD_CTX_free(sha);
	free(off);
	free(data);
	free(rets);
	free(jobs);
	free(tids);
	return ret;
}

int main(int argc, char **argv)
{
	unsigned long long v[4];
	const char *mode, *opts, *h = getenv("BENCH_READS_HASH");
	struct blob b;
	int rc;

	if (argc < 4) {
		usage();
		return 2;
	}
	mode = argv[1];
	opts = *argv[3] ? argv[3] : "-";

	if (!strcmp(mode, "seq") && argc == 5) {
		if (parse_num(argv[4], "CHUNK", &v[0]) || !v[0] ||
		    v[0] > (1ULL << 30)) {
			usage();
			return 2;
		}
		set_prefix("mode=seq chunk=%llu options=%s", v[0], opts);
		arm_watchdog();
		rc = open_blob(&b, argv[2], argv[3]);
		if (rc)
			return 3;
		rc = run_seq(&b, v[0], !(h && !strcmp(h, "0")));
	} else if (!strcmp(mode, "random") && argc == 7) {
		if (parse_num(argv[4], "N", &v[0]) ||
		    parse_num(argv[5], "LEN", &v[1]) ||
		    parse_num(argv[6], "SEED", &v[2]) || v[1] > (1ULL << 30)) {
			usage();
			return 2;
		}
		set_prefix("mode=random n=%llu len=%llu seed=%llu options=%s",
			   v[0], v[1], v[2], opts);
		arm_watchdog();
		rc = open_blob(&b, argv[2], argv[3]);
		if (rc)
			return 3;
		rc = run_random(&b, v[0], v[1], v[2]);
	} else if (!strcmp(mode, "threads") && argc == 8) {
		if (parse_num(argv[4], "T", &v[0]) ||
		    parse_num(argv[5], "N", &v[1]) ||
		    parse_num(argv[6], "LEN", &v[2]) ||
		    parse_num(argv[7], "SEED", &v[3])) {
			usage();
			return 2;
		}
		set_prefix("mode=threads t=%llu n=%llu len=%llu seed=%llu options=%s",
			   v[0], v[1], v[2], v[3], opts);
		arm_watchdog();
		rc = open_blob(&b, argv[2], argv[3]);
		if (rc)
			return 3;
		rc = run_threads(&b, v[0], v[1], v[2], v[3]);
	} else {
		usage();
		return 2;
	}
	fflush(stdout);
	line_done = 1;
	alarm(0);
	oci_registry_close(&b.vf);
	return rc;
}
