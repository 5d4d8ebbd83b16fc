// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * erofs-ref-driver: the reference side of `make bench`. It opens one layer
 * blob of an image with erofs-utils 1.9's own OCI reader (ocierofs_io_open()
 * in lib/remotes/oci.c, built by c-tests/bench/erofs-ref.sh) and reads it through
 * the erofs_vfile it gets back, timing the reads.
 *
 * usage: erofs-ref-driver MODE REGISTRY REPO TAG_OR_DIGEST LAYER_INDEX [args]
 *
 *   seq CHUNK            read the whole blob with erofs_io_read() in
 *                        CHUNK-byte calls; print bytes, sha256 of the
 *                        bytes, whether that matches the layer digest, and
 *                        elapsed seconds
 *   random N LEN SEED    N erofs_io_pread()s of LEN bytes at the offsets
 *                        below; print elapsed seconds and the sha256 of the
 *                        N buffers concatenated in read order
 *   trace IDX ZINFO TRACE
 *                        the device of mount.erofs -o oci.tarindex=IDX,
 *                        oci.zinfo=ZINFO (built as its
 *                        erofsmount_tarindex_pread() builds it: the local
 *                        tar index, then the layer's tar inflated by
 *                        erofs_gzran_zinfo_open() over the blob's vfile)
 *                        read at the "OFF LEN" lines of TRACE, in order;
 *                        print reads, bytes, the bytes and preads the
 *                        blob's vfile served, secs and the sha256 of all
 *                        the bytes read
 *   threads T N LEN SEED the same N preads, shared by T pthreads on ONE
 *                        vfile: thread t does reads t, t+T, t+2T, ...
 *                        (N/T each). The buffers are hashed in read order
 *                        afterwards, so a correct run prints the same
 *                        sha256 as `random N LEN SEED`.
 *
 * Offsets of `random` and `threads`, for SIZE the blob size (from the
 * manifest): a 64-bit LCG (Knuth's MMIX constants), all arithmetic mod 2^64:
 *
 *     x = SEED
 *     for i in 0 .. N-1:
 *         x = x * 6364136223846793005 + 1442695040888963407
 *         offset[i] = (x >> 11) % (SIZE - LEN + 1)
 *
 * i.e. uniform in [0, SIZE-LEN] up to a modulo bias below 2^-20 for blobs
 * under 8 TiB. The first offset is printed as first_off= for cross-checks.
 *
 * REGISTRY is host:port, optionally prefixed by http:// or https://. With no
 * prefix, plain HTTP is used: ocierofs has no per-host policy, only the
 * config's `insecure` flag, which switches every URL it builds from
 * https:// to http://. TAG_OR_DIGEST is a tag or a manifest digest
 * (sha256:..., a leading '@' is dropped); it is passed as "REGISTRY/REPO:X",
 * the only form ocierofs parses (it splits the tag at the first ':' after
 * the registry, which also yields a digest). LAYER_INDEX is the index of the
 * layer in the manifest chosen for the platform (EROFS_REF_PLATFORM,
 * default linux/amd64).
 *
 * Output: one line of key=value fields on stdout, e.g.
 *   mode=random n=2000 len=4096 seed=1 size=... secs=17.8 sha256=... errors=0
 * secs counts the reads only; open_secs is ocierofs_io_open() (auth probe and
 * manifest requests). errors counts failed and short reads. stray_stdout is
 * the number of bytes that something else (libcurl) wrote to stdout, which
 * the driver diverts to keep its line clean; it is non-zero only when the
 * shared CURL handle went wrong (see capture_stdout()).
 *
 * Exit codes: 0 done without errors; 1 read errors (seq, random);
 * 2 usage; 3 ocierofs_io_open() failed; 4 threads mode had errors, or any
 * mode crashed (SIGSEGV, SIGABRT, ...) or ran past its timeout
 * (EROFS_REF_TIMEOUT seconds, default 300): then the line ends with
 * result=crash signal=... or result=timeout and the process exits at once.
 * EROFS_REF_DEBUG=N sets erofs-utils' message level (default 2, warnings).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "erofs/config.h"
#include "erofs/io.h"
#include "liberofs_oci.h"
#include "liberofs_gzran.h"
#include <fcntl.h>

#define BENCH_PROG		"erofs-ref-driver"
#define BENCH_TIMEOUT_ENV	"EROFS_REF_TIMEOUT"
#include "bench_util.h"

/*
 * capture_stdout() sends the result line (out_fd) to a copy of the original
 * stdout, and points file descriptor 1 at an unlinked temporary file: libcurl's
 * default write callback is fwrite(stdout), and when threads share
 * ocierofs' one CURL handle, one thread's curl_easy_reset() can drop
 * another's write callback mid-transfer, so blob bytes land on stdout.
 * Their count is reported as stray_stdout=.
 */
static int stray_fd = -1;

static void capture_stdout(void)
{
	char path[] = "/tmp/erofs-ref-stdout.XXXXXX";
	int fd;

	fflush(stdout);
	out_fd = dup(STDOUT_FILENO);
	fd = mkstemp(path);
	if (out_fd < 0 || fd < 0) {
		perror("erofs-ref-driver: capture stdout");
		exit(1);
	}
	unlink(path);
	if (dup2(fd, STDOUT_FILENO) < 0) {
		perror("erofs-ref-driver: dup2");
		exit(1);
	}
	stray_fd = fd;
}

/* Bytes something other than this driver wrote to stdout. */
static long long stray_bytes(void)
{
	struct stat st;

	fflush(stdout);
	if (stray_fd < 0 || fstat(stray_fd, &st))
		return -1;
	return st.st_size;
}

/* A number argument, else exit 2 (the usage error) */
static unsigned long long num_arg(const char *s, const char *what)
{
	unsigned long long v;

	if (parse_num(s, what, &v))
		exit(2);
	return v;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: erofs-ref-driver MODE REGISTRY REPO TAG_OR_DIGEST LAYER_INDEX [args]\n"
		"  seq CHUNK | random N LEN SEED | threads T N LEN SEED |\n"
		"  trace IDX ZINFO TRACE\n");
	exit(2);
}

/* ---- the blob ---- */

struct blob {
	struct erofs_vfile vf;
	struct ocierofs_ctx *ctx;
	const char *digest;
	uint64_t size;
	double open_secs;
};

static void open_blob(struct blob *b, const char *registry, const char *repo,
		      const char *ref, int layer)
{
	struct ocierofs_config cfg_oci;
	struct ocierofs_iostream *ios;
	const char *platform = getenv("EROFS_REF_PLATFORM");
	bool insecure = true;
	char *image;
	double t0;
	int err;

	if (!strncmp(registry, "http://", 7)) {
		registry += 7;
	} else if (!strncmp(registry, "https://", 8)) {
		registry += 8;
		insecure = false;
	}
	if (*ref == '@')
		ref++;
	if (asprintf(&image, "%s/%s:%s", registry, repo, ref) < 0)
		exit(1);

	memset(&cfg_oci, 0, sizeof(cfg_oci));
	cfg_oci.image_ref = image;
	cfg_oci.platform = (char *)(platform && *platform ? platform
							 : "linux/amd64");
	cfg_oci.layer_index = layer;
	cfg_oci.insecure = insecure;

	t0 = now();
	err = ocierofs_io_open(&b->vf, &cfg_oci);
	b->open_secs = now() - t0;
	if (err) {
		fprintf(stderr, "erofs-ref-driver: ocierofs_io_open(%s, %s, layer %d, %s): %s\n",
			image, cfg_oci.platform, layer,
			insecure ? "http" : "https", strerror(-err));
		dprintf(out_fd, "%s result=open-failed err=%d open_secs=%.3f\n",
		       line_prefix, err, b->open_secs);
		exit(3);
	}
	/*
	 * The vfile has no size operation; the size (as the manifest states
	 * it) is in the context behind the payload, which liberofs_oci.h
	 * exposes.
	 */
	ios = *(struct ocierofs_iostream **)b->vf.payload;
	b->ctx = ios->ctx;
	b->digest = b->ctx->blob_digest;
	b->size = b->ctx->layers[layer]->size;
	free(image);
}

/* ---- seq ---- */

static int run_seq(struct blob *b, size_t chunk)
{
	EVP_MD_CTX *sha = sha_new();
	char *buf = malloc(chunk);
	uint64_t bytes = 0, calls = 0;
	long long err = 0;
	char out[65];
	double t0, secs;
	ssize_t n;

	if (!buf)
		return 1;
	t0 = now();
	for (;;) {
		n = erofs_io_read(&b->vf, buf, chunk);
		calls++;
		if (n < 0) {
			err = n;
			break;
		}
		if (!n)
			break;
		EVP_DigestUpdate(sha, buf, n);
		bytes += n;
		if (bytes > b->size) {	/* more than the manifest says */
			err = -EFBIG;
			break;
		}
	}
	secs = now() - t0;
	sha_done(sha, out);
	free(buf);
	dprintf(out_fd, "%s size=%" PRIu64 " bytes=%" PRIu64 " calls=%" PRIu64
	       " open_secs=%.3f secs=%.3f mib_s=%.1f sha256=%s digest=%s"
	       " verified=%s errors=%d err=%lld stray_stdout=%lld\n",
	       line_prefix, b->size, bytes, calls, b->open_secs, secs,
	       secs > 0 ? bytes / 1048576.0 / secs : 0.0, out, b->digest,
	       !strncmp(b->digest, "sha256:", 7) && !strcmp(b->digest + 7, out)
	       ? "yes" : "no", err ? 1 : 0, err, stray_bytes());
	return err || bytes != b->size ? 1 : 0;
}

/* ---- trace ---- */

/* the blob's vfile, counting what it serves to the gzip reader */
struct counted {
	struct erofs_vfile *inner;
	uint64_t bytes, calls;
};

static ssize_t counted_pread(struct erofs_vfile *vf, void *buf, size_t len,
			     u64 off)
{
	struct counted *c = *(struct counted **)vf->payload;
	ssize_t r = erofs_io_pread(c->inner, buf, len, off);

	c->calls++;
	if (r > 0)
		c->bytes += r;
	return r;
}

static struct erofs_vfops counted_ops = { .pread = counted_pread };

static void *read_file(const char *path, size_t *len)
{
	struct stat st;
	void *buf = NULL;
	int fd = open(path, O_RDONLY);

	if (fd >= 0 && !fstat(fd, &st) && (buf = malloc(st.st_size + 1)) &&
	    pread(fd, buf, st.st_size, 0) == st.st_size)
		*len = st.st_size;
	else {
		free(buf);
		buf = NULL;
	}
	if (fd >= 0)
		close(fd);
	return buf;
}

static int run_trace(struct blob *b, const char *idx_path,
		     const char *zinfo_path, const char *trace)
{
	struct counted cnt = { .inner = &b->vf };
	struct erofs_vfile cvf = { .ops = &counted_ops }, *gz;
	EVP_MD_CTX *sha = sha_new();
	unsigned long long off, len;
	uint64_t reads = 0, bytes = 0;
	size_t zlen = 0, cap = 0;
	char *buf = NULL, out[65];
	long long err = 0;
	void *zinfo;
	struct stat st;
	double t0, secs;
	FILE *t;
	int idx;

	*(struct counted **)cvf.payload = &cnt;
	zinfo = read_file(zinfo_path, &zlen);
	idx = open(idx_path, O_RDONLY);
	t = fopen(trace, "r");
	if (!zinfo || idx < 0 || fstat(idx, &st) || !t) {
		fprintf(stderr, "erofs-ref-driver: cannot read %s, %s or %s\n",
			zinfo_path, idx_path, trace);
		return 2;
	}
	t0 = now();
	gz = erofs_gzran_zinfo_open(&cvf, zinfo, zlen);
	if (IS_ERR(gz)) {
		err = PTR_ERR(gz);
		goto out;
	}
	while (fscanf(t, "%llu %llu", &off, &len) == 2) {
		size_t done = 0;
		ssize_t r;

		if (len > cap) {
			free(buf);
			cap = len;
			buf = malloc(cap);
			if (!buf) {
				err = -ENOMEM;
				break;
			}
		}
		/* erofsmount_tarindex_pread(): the index, then the tar */
		if (off < (u64)st.st_size) {
			done = len < st.st_size - off ? len : st.st_size - off;
			if (pread(idx, buf, done, off) != (ssize_t)done) {
				err = -EIO;
				break;
			}
		}
		while (done < len) {
			r = erofs_io_pread(gz, buf + done, len - done,
					   off + done - st.st_size);
			if (r <= 0) {
				err = r;
				break;
			}
			done += r;
		}
		if (err)
			break;
		EVP_DigestUpdate(sha, buf, done);
		bytes += done;
		reads++;
	}
	erofs_io_close(gz);
out:
	secs = now() - t0;
	sha_done(sha, out);
	dprintf(out_fd, "%s reads=%" PRIu64 " bytes=%" PRIu64
		" bytes_fetched=%" PRIu64 " blob_preads=%" PRIu64
		" open_secs=%.3f secs=%.3f sha256=%s errors=%d err=%lld"
		" stray_stdout=%lld\n", line_prefix, reads, bytes, cnt.bytes,
		cnt.calls, b->open_secs, secs, out, err ? 1 : 0, err,
		stray_bytes());
	free(buf);
	free(zinfo);
	close(idx);
	fclose(t);
	return err ? 1 : 0;
}

/* ---- random and threads ---- */

static int run_random(struct blob *b, size_t n, size_t len, uint64_t seed)
{
	uint64_t *off;
	EVP_MD_CTX *sha = sha_new();
	char *buf = malloc(len ? len : 1);
	unsigned long errors = 0, shorts = 0;
	long long first_err = 0;
	char out[65];
	double t0, secs;
	size_t i;
	ssize_t r;

	if (len > b->size) {
		fprintf(stderr, "erofs-ref-driver: LEN %zu > blob size %" PRIu64 "\n",
			len, b->size);
		return 2;
	}
	off = make_offsets(seed, n, len, b->size);
	t0 = now();
	for (i = 0; i < n; i++) {
		r = erofs_io_pread(&b->vf, buf, len, off[i]);
		if (r < 0) {
			errors++;
			if (!first_err)
				first_err = r;
			continue;
		}
		if ((size_t)r != len)
			shorts++;
		EVP_DigestUpdate(sha, buf, r);
	}
	secs = now() - t0;
	sha_done(sha, out);
	dprintf(out_fd, "%s size=%" PRIu64 " first_off=%" PRIu64 " open_secs=%.3f"
	       " secs=%.3f reads_s=%.1f sha256=%s errors=%lu short=%lu err=%lld"
	       " stray_stdout=%lld\n",
	       line_prefix, b->size, n ? off[0] : 0, b->open_secs, secs,
	       secs > 0 ? n / secs : 0.0, out, errors + shorts, shorts,
	       first_err, stray_bytes());
	free(off);
	free(buf);
	return errors + shorts ? 1 : 0;
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
		j->ret[i] = erofs_io_pread(&j->b->vf, j->data + i * j->len,
					   j->len, j->off[i]);
	return NULL;
}

static int run_threads(struct blob *b, size_t nthreads, size_t n, size_t len,
		       uint64_t seed)
{
	uint64_t *off;
	char *data;
	ssize_t *ret;
	struct tjob *jobs;
	pthread_t *tids;
	pthread_barrier_t go;
	unsigned long errors = 0, shorts = 0;
	long long first_err = 0;
	EVP_MD_CTX *sha;
	char out[65];
	double t0, secs;
	size_t i;

	if (len > b->size) {
		fprintf(stderr, "erofs-ref-driver: LEN %zu > blob size %" PRIu64 "\n",
			len, b->size);
		return 2;
	}
	if (!nthreads || (len && n > (1ULL << 30) / len)) {
		fprintf(stderr, "erofs-ref-driver: need T >= 1 and N*LEN <= 1 GiB\n");
		return 2;
	}
	off = make_offsets(seed, n, len, b->size);
	data = malloc(n && len ? n * len : 1);
	ret = calloc(n ? n : 1, sizeof(*ret));
	jobs = calloc(nthreads, sizeof(*jobs));
	tids = calloc(nthreads, sizeof(*tids));
	if (!data || !ret || !jobs || !tids)
		return 1;
	pthread_barrier_init(&go, NULL, nthreads + 1);
	for (i = 0; i < nthreads; i++) {
		jobs[i] = (struct tjob){ .b = b, .off = off, .data = data,
			.ret = ret, .n = n, .len = len, .t = i,
			.nthreads = nthreads, .go = &go };
		if (pthread_create(&tids[i], NULL, thread_main, &jobs[i])) {
			fprintf(stderr, "erofs-ref-driver: pthread_create failed\n");
			exit(1);
		}
	}
	t0 = now();
	pthread_barrier_wait(&go);
	for (i = 0; i < nthreads; i++)
		pthread_join(tids[i], NULL);
	secs = now() - t0;
	pthread_barrier_destroy(&go);

	sha = sha_new();
	for (i = 0; i < n; i++) {
		if (ret[i] < 0) {
			errors++;
			if (!first_err)
				first_err = ret[i];
			continue;
		}
		if ((size_t)ret[i] != len)
			shorts++;
		EVP_DigestUpdate(sha, data + i * len, ret[i]);
	}
	sha_done(sha, out);
	dprintf(out_fd, "%s size=%" PRIu64 " first_off=%" PRIu64 " open_secs=%.3f"
	       " secs=%.3f reads_s=%.1f sha256=%s errors=%lu short=%lu err=%lld"
	       " stray_stdout=%lld result=%s\n",
	       line_prefix, b->size, n ? off[0] : 0, b->open_secs, secs,
	       secs > 0 ? n / secs : 0.0, out, errors + shorts, shorts,
	       first_err, stray_bytes(), errors + shorts ? "errors" : "ok");
	free(off);
	free(data);
	free(ret);
	free(jobs);
	free(tids);
	return errors + shorts ? 4 : 0;
}

int main(int argc, char **argv)
{
	struct blob b;
	const char *mode, *dbg;
	int layer, rc;

	if (argc < 6)
		usage();
	mode = argv[1];
	layer = (int)num_arg(argv[5], "LAYER_INDEX");

	capture_stdout();
	erofs_init_configure();
	dbg = getenv("EROFS_REF_DEBUG");
	if (dbg && *dbg)
		cfg.c_dbg_lvl = atoi(dbg);

	if (!strcmp(mode, "seq") && argc == 7) {
		size_t chunk = num_arg(argv[6], "CHUNK");

		if (!chunk)
			usage();
		set_prefix("mode=seq chunk=%zu", chunk);
		arm_watchdog();
		open_blob(&b, argv[2], argv[3], argv[4], layer);
		rc = run_seq(&b, chunk);
	} else if (!strcmp(mode, "random") && argc == 9) {
		size_t n = num_arg(argv[6], "N");
		size_t len = num_arg(argv[7], "LEN");
		uint64_t seed = num_arg(argv[8], "SEED");

		set_prefix("mode=random n=%zu len=%zu seed=%" PRIu64, n, len,
			   seed);
		arm_watchdog();
		open_blob(&b, argv[2], argv[3], argv[4], layer);
		rc = run_random(&b, n, len, seed);
	} else if (!strcmp(mode, "trace") && argc == 9) {
		set_prefix("mode=trace");
		arm_watchdog();
		open_blob(&b, argv[2], argv[3], argv[4], layer);
		rc = run_trace(&b, argv[6], argv[7], argv[8]);
	} else if (!strcmp(mode, "threads") && argc == 10) {
		size_t t = num_arg(argv[6], "T");
		size_t n = num_arg(argv[7], "N");
		size_t len = num_arg(argv[8], "LEN");
		uint64_t seed = num_arg(argv[9], "SEED");

		set_prefix("mode=threads t=%zu n=%zu len=%zu seed=%" PRIu64,
			   t, n, len, seed);
		arm_watchdog();
		open_blob(&b, argv[2], argv[3], argv[4], layer);
		rc = run_threads(&b, t, n, len, seed);
	} else {
		usage();
		return 2;
	}
	fflush(stdout);
	line_done = 1;
	/*
	 * After T threads shared the vfile its state is not to be trusted:
	 * leave it to exit(). Otherwise close it as a user would.
	 */
	if (strcmp(mode, "threads"))
		erofs_io_close(&b.vf);
	return rc;
}
