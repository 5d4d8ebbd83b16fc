// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * harness.c - C tests of liboci_registry through the erofs_vfile ops
 *
 * usage: harness FIXTURES_TXT WORKDIR
 *
 * FIXTURES_TXT is written by push_fixtures.py and names a live registry;
 * WORKDIR/blobs/sha256/<hex> holds a copy of every blob pushed there.
 * Builds against either header layout (OCI_REGISTRY_EROFS_ABI 109 or 108)
 * and calls the library the way erofs-utils does: through vf->ops.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "oci_registry.h"

#if OCI_REGISTRY_EROFS_ABI != 109 && OCI_REGISTRY_EROFS_ABI != 108
#error "unknown OCI_REGISTRY_EROFS_ABI"
#endif

#define KIB		1024ULL
#define MIB		(1024ULL * KIB)
/* blobs above this are only read at both ends here: stream_big reads all */
#define FULL_READ_MAX	(16 * MIB)
#define EDGE_LEN	(1 * MIB)
#define SMALL_LAYER	(64 * KIB)	/* 1-byte reads only below this */
#define MAX_PREAD	(256 * KIB)
#define NR_RANDOM	56		/* plus the edge cases: ~64 preads */
#define NR_THREADS	4
#define THREAD_PREADS	50
#define DIGEST_LEN	(7 + 64)	/* "sha256:" + hex */

#define Z64 "0000000000000000000000000000000000000000000000000000000000000000"
#define A64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ */
/* reporting */

static unsigned int nr_passed, nr_failed;

static const char *last_error(void)
{
	const char *s = oci_registry_last_error();

	return s ? s : "(NULL)";
}

static const struct {
	int err;
	const char *name;
} errno_names[] = {
	{ 0, "0" },
	{ EINVAL, "EINVAL" },
	{ ENOENT, "ENOENT" },
	{ ERANGE, "ERANGE" },
	{ EACCES, "EACCES" },
	{ ECONNREFUSED, "ECONNREFUSED" },
	{ EBADF, "EBADF" },
	{ EBADMSG, "EBADMSG" },
	{ ENXIO, "ENXIO" },
	{ EIO, "EIO" },
	{ ENOMEM, "ENOMEM" },
	{ ETIMEDOUT, "ETIMEDOUT" },
	{ EHOSTUNREACH, "EHOSTUNREACH" },
	{ EPROTO, "EPROTO" },
};

/* "EINVAL" for 22 or -22; "?" for what the table lacks */
static const char *errname(long long err)
{
	size_t i;

	if (err < 0)
		err = -err;
	for (i = 0; i < ARRAY_SIZE(errno_names); i++)
		if (errno_names[i].err == err)
			return errno_names[i].name;
	return "?";
}

__attribute__((format(printf, 2, 3)))
static bool check(bool ok, const char *fmt, ...)
{
	va_list ap;

	fputs(ok ? "ok   " : "FAIL ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (ok)
		nr_passed++;
	else
		nr_failed++;
	if (!ok)
		printf("\n     last_error: \"%s\"", last_error());
	putchar('\n');
	fflush(stdout);
	return ok;
}

/* ------------------------------------------------------------------ */
/* calling through the ops table, as erofs-utils does */

static ssize_t vf_read(struct erofs_vfile *vf, void *buf, size_t len)
{
	return vf->ops->read(vf, buf, len);
}

static ssize_t vf_pread(struct erofs_vfile *vf, void *buf, size_t len,
			uint64_t offset)
{
#if OCI_REGISTRY_EROFS_ABI >= 109
	return vf->ops->pread(vf, buf, len, offset);
#else
	return vf->ops->pread(vf, buf, offset, len);
#endif
}

static off_t vf_lseek(struct erofs_vfile *vf, int64_t offset, int whence)
{
	return vf->ops->lseek(vf, (uint64_t)offset, whence);
}

static off_t vf_tell(struct erofs_vfile *vf)
{
	return vf_lseek(vf, 0, SEEK_CUR);
}

/* ------------------------------------------------------------------ */
/* helpers: sha256, random numbers, strings */

struct hasher {
	EVP_MD_CTX *ctx;
};

static int hasher_init(struct hasher *h)
{
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx)
		return -ENOMEM;
	if (EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(h->ctx);
		h->ctx = NULL;
		return -EIO;
	}
	return 0;
}

static void hasher_update(struct hasher *h, const void *buf, size_t len)
{
	EVP_DigestUpdate(h->ctx, buf, len);
}

/* finish into "sha256:<hex>" and free the context */
static void hasher_final(struct hasher *h, char out[DIGEST_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;

	strcpy(out, "sha256:");
	if (EVP_DigestFinal_ex(h->ctx, md, &mdlen) != 1 || mdlen != 32)
		strcpy(out, "sha256:<hash failed>");
	else
		for (i = 0; i < mdlen; i++)
			sprintf(out + 7 + 2 * i, "%02x", md[i]);
	EVP_MD_CTX_free(h->ctx);
	h->ctx = NULL;
}

/* xorshift64*: fixed seeds make every run use the same offsets */
static uint64_t rng_next(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static const char *str_or_null(const char *s)
{
	return s ? s : "(NULL)";
}

/*
 * A credential in a URL looks like "user:secret@host": a ':' and then an
 * '@' with no '/' or blank in between.
 */
static bool has_userinfo(const char *s)
{
	const char *p;

	for (p = strchr(s, ':'); p; p = strchr(p + 1, ':'))
		if (p[1 + strcspn(p + 1, "@/ \t")] == '@')
			return true;
	return false;
}

/* "R/..." and "scheme://R/..." name the fixture registry */
static char *expand(const char *tmpl, const char *registry)
{
	const char *at;
	char *out;
	size_t n;

	if (!tmpl)
		return NULL;
	if (!strncmp(tmpl, "R/", 2))
		at = tmpl;
	else if ((at = strstr(tmpl, "://R/")))
		at += 3;
	else
		return strdup(tmpl);
	n = strlen(tmpl) + strlen(registry);
	out = malloc(n);
	if (out)
		sprintf(out, "%.*s%s%s", (int)(at - tmpl), tmpl, registry,
			at + 1);
	return out;
}

/* ------------------------------------------------------------------ */
/* fixtures.txt */

struct layer_fx {
	const char *ref, *platform, *digest, *media_type;
	int index;
	uint64_t size;
};

struct url_fx {
	const char *url, *digest;	/* url is the ref on the big line */
	uint64_t size;
};

struct fixtures {
	const char *registry;
	const char *workdir;
	struct layer_fx *layers;
	size_t nr_layers;
	struct url_fx *urls;
	size_t nr_urls;
	struct url_fx big;
	char **lines;		/* every field points into one of these */
	size_t nr_lines;
};

/* room for element @n of an array of @n: double at each power of two */
static void *grow(void *p, size_t n, size_t size)
{
	if (n & (n - 1))
		return p;
	return realloc(p, (n ? 2 * n : 1) * size);
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return (errno || end == s || *end) ? -EINVAL : 0;
}

static void free_fixtures(struct fixtures *fx)
{
	size_t i;

	for (i = 0; i < fx->nr_lines; i++)
		free(fx->lines[i]);
	free(fx->lines);
	free(fx->layers);
	free(fx->urls);
	memset(fx, 0, sizeof(*fx));
}

static int parse_line(struct fixtures *fx, char *line, unsigned int lineno)
{
	char *f[8], *save = NULL, *tok;
	unsigned int n = 0;
	uint64_t v;

	for (tok = strtok_r(line, " ", &save); tok && n < ARRAY_SIZE(f);
	     tok = strtok_r(NULL, " ", &save))
		f[n++] = tok;
	if (!n)
		return 0;

	if (!strcmp(f[0], "registry") && n == 2) {
		fx->registry = f[1];
	} else if (!strcmp(f[0], "layer") && n == 7) {
		struct layer_fx *l;

		fx->layers = grow(fx->layers, fx->nr_layers, sizeof(*l));
		if (!fx->layers)
			return -ENOMEM;
		l = &fx->layers[fx->nr_layers];
		l->ref = f[1];
		l->platform = f[2];
		if (parse_u64(f[3], &v) || v > INT_MAX)
			goto bad;
		l->index = (int)v;
		l->digest = f[4];
		if (parse_u64(f[5], &l->size))
			goto bad;
		l->media_type = f[6];
		fx->nr_layers++;
	} else if (!strcmp(f[0], "url") && n == 4) {
		struct url_fx *u;

		fx->urls = grow(fx->urls, fx->nr_urls, sizeof(*u));
		if (!fx->urls)
			return -ENOMEM;
		u = &fx->urls[fx->nr_urls];
		u->url = f[1];
		u->digest = f[2];
		if (parse_u64(f[3], &u->size))
			goto bad;
		fx->nr_urls++;
	} else if (!strcmp(f[0], "big") && n == 4) {
		fx->big.url = f[1];
		fx->big.digest = f[2];
		if (parse_u64(f[3], &fx->big.size))
			goto bad;
	} else if (strcmp(f[0], "manifest") && strcmp(f[0], "index")) {
		goto bad;
	}
	return 0;
bad:
	fprintf(stderr, "fixtures line %u: cannot parse\n", lineno);
	return -EINVAL;
}

static int load_fixtures(struct fixtures *fx, const char *path)
{
	unsigned int lineno = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	FILE *f;
	int err = 0;

	f = fopen(path, "r");
	if (!f) {
		err = -errno;
		fprintf(stderr, "%s: %s\n", path, strerror(-err));
		return err;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (len && line[len - 1] == '\n')
			line[--len] = '\0';
		if (!len || line[0] == '#')
			continue;
		fx->lines = grow(fx->lines, fx->nr_lines, sizeof(char *));
		if (!fx->lines) {
			err = -ENOMEM;
			break;
		}
		fx->lines[fx->nr_lines++] = line;
		err = parse_line(fx, line, lineno);
		line = NULL;
		cap = 0;
		if (err)
			break;
	}
	free(line);
	fclose(f);
	if (!err && (!fx->registry || !fx->nr_layers || !fx->nr_urls ||
		     !fx->big.url)) {
		fprintf(stderr, "%s: registry, layer, url or big missing\n",
			path);
		err = -EINVAL;
	}
	return err;
}

static const struct layer_fx *find_layer(const struct fixtures *fx,
					 const char *digest)
{
	size_t i;

	for (i = 0; i < fx->nr_layers; i++)
		if (!strcmp(fx->layers[i].digest, digest))
			return &fx->layers[i];
	return NULL;
}

/* ------------------------------------------------------------------ */
/* the saved copy of a blob: what every read is compared with */

struct blobfile {
	int fd;
	uint64_t size;
	char path[PATH_MAX];
};

static int blobfile_open(struct blobfile *bf, const char *workdir,
			 const char *digest)
{
	struct stat st;

	bf->fd = -1;
	if (strncmp(digest, "sha256:", 7))
		return -EINVAL;
	snprintf(bf->path, sizeof(bf->path), "%s/blobs/sha256/%s", workdir,
		 digest + 7);
	bf->fd = open(bf->path, O_RDONLY | O_CLOEXEC);
	if (bf->fd < 0 || fstat(bf->fd, &st)) {
		int err = -errno;

		fprintf(stderr, "%s: %s\n", bf->path, strerror(errno));
		if (bf->fd >= 0)
			close(bf->fd);
		bf->fd = -1;
		return err;
	}
	bf->size = st.st_size;
	return 0;
}

static void blobfile_close(struct blobfile *bf)
{
	if (bf->fd >= 0)
		close(bf->fd);
	bf->fd = -1;
}

/* what read(len) at @off must return */
static size_t expect_len(uint64_t size, uint64_t off, size_t len)
{
	if (off >= size)
		return 0;
	return size - off < len ? (size_t)(size - off) : len;
}

static int file_read_at(const struct blobfile *bf, void *buf, size_t len,
			uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t r = pread(bf->fd, (char *)buf + done, len - done,
				  (off_t)(off + done));

		if (r <= 0)
			return r ? -errno : -EIO;
		done += r;
	}
	return 0;
}

/*
 * Compare @got (@n bytes, what the library returned for @off) with the
 * saved blob; describe the first difference in @why.
 */
static bool same_bytes(const struct blobfile *bf, const void *got, size_t n,
		       uint64_t off, void *scratch, char *why, size_t whylen)
{
	const unsigned char *a = got, *b = scratch;
	size_t i;

	if (!n)
		return true;
	if (file_read_at(bf, scratch, n, off)) {
		snprintf(why, whylen, "cannot read %s", bf->path);
		return false;
	}
	if (!memcmp(a, b, n))
		return true;
	for (i = 0; i < n && a[i] == b[i]; i++)
		;
	snprintf(why, whylen, "byte %" PRIu64 " is 0x%02x, expected 0x%02x",
		 off + i, a[i], b[i]);
	return false;
}

/*
 * One pread through the ops, checked against the file: count, bytes, and
 * that the read offset did not move from @cur.
 */
static bool pread_ok(struct erofs_vfile *vf, const struct blobfile *bf,
		     uint64_t off, size_t len, off_t cur, unsigned char *buf,
		     unsigned char *scratch, char *why, size_t whylen)
{
	size_t want = expect_len(bf->size, off, len);
	ssize_t got = vf_pread(vf, buf, len, off);
	off_t now;

	if (got < 0 || (size_t)got != want) {
		snprintf(why, whylen, "returned %zd (%s), expected %zu", got,
			 got < 0 ? errname(got) : "count", want);
		return false;
	}
	if (!same_bytes(bf, buf, want, off, scratch, why, whylen))
		return false;
	now = vf_tell(vf);
	if (now != cur) {
		snprintf(why, whylen, "read offset moved from %lld to %lld",
			 (long long)cur, (long long)now);
		return false;
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* opening */

static void layer_options(char *buf, size_t len, const struct layer_fx *l,
			  bool by_blob)
{
	if (by_blob)	/* plain http: no TLS probe first */
		snprintf(buf, len, "blob=%s,insecure", l->digest);
	else
		snprintf(buf, len, "platform=%s,layer=%d", l->platform,
			 l->index);
}

static bool open_checked(struct erofs_vfile *vf, const char *ref,
			 const char *options)
{
	int err;

	memset(vf, 0, sizeof(*vf));
	err = oci_registry_open(vf, ref, options);
	return check(!err, "open %s [%s]: got %d (%s), expected 0", ref,
		     str_or_null(options), err, errname(err));
}

static void check_getters(const struct erofs_vfile *vf, const char *what,
			  const char *digest, uint64_t size,
			  const char *media_type)
{
	int64_t gsize = oci_registry_blob_size(vf);
	const char *gdigest = oci_registry_blob_digest(vf);
	const char *gmt = oci_registry_blob_media_type(vf);

	check(gsize >= 0 && (uint64_t)gsize == size,
	      "%s: blob_size %" PRId64 ", expected %" PRIu64, what, gsize,
	      size);
	check(gdigest && !strcmp(gdigest, digest),
	      "%s: blob_digest %s, expected %s", what, str_or_null(gdigest),
	      digest);
	if (media_type)
		check(gmt && !strcmp(gmt, media_type),
		      "%s: blob_media_type \"%s\", expected \"%s\"", what,
		      str_or_null(gmt), media_type);
	else
		check(gmt != NULL, "%s: blob_media_type \"%s\" (not NULL)",
		      what, str_or_null(gmt));
}

/* ------------------------------------------------------------------ */
/* sequential reads */

/* read all of a blob with ops->read in @chunk pieces; hash and count */
static void check_full_read(struct erofs_vfile *vf, const char *what,
			    const char *digest, uint64_t size, size_t chunk)
{
	unsigned long long short_reads = 0;
	char got_digest[DIGEST_LEN + 1];
	struct hasher h;
	uint64_t total = 0;
	unsigned char *buf;
	ssize_t r = 0, last;

	buf = malloc(chunk);
	if (!buf || hasher_init(&h)) {
		check(false, "%s: out of memory", what);
		free(buf);
		return;
	}
	for (;;) {
		r = vf_read(vf, buf, chunk);
		if (r <= 0)
			break;
		hasher_update(&h, buf, r);
		total += r;
		/* short only at the end of the blob */
		if ((size_t)r < chunk && total < size)
			short_reads++;
		if (total > size)
			break;
	}
	hasher_final(&h, got_digest);
	check(r == 0 && total == size,
	      "%s: read %zu-byte chunks: %" PRIu64 " bytes, last read %zd "
	      "(%s); expected %" PRIu64 " bytes then 0", what, chunk, total,
	      r, errname(r < 0 ? r : 0), size);
	check(!strcmp(got_digest, digest), "%s: sha256 of the bytes %s, "
	      "expected %s", what, got_digest, digest);
	check(!short_reads, "%s: %llu short reads before the end, expected 0",
	      what, short_reads);
	last = vf_read(vf, buf, chunk);
	check(last == 0, "%s: one more read returns %zd (%s), expected 0",
	      what, last, errname(last));
	free(buf);
}

/* read @len bytes from the current offset in @chunk pieces; compare */
static bool read_compare(struct erofs_vfile *vf, const struct blobfile *bf,
			 uint64_t len, size_t chunk, unsigned char *buf,
			 unsigned char *scratch, char *why, size_t whylen)
{
	off_t pos = vf_tell(vf);
	uint64_t done = 0;

	if (pos < 0) {
		snprintf(why, whylen, "lseek(0, SEEK_CUR) = %lld (%s)",
			 (long long)pos, errname(pos));
		return false;
	}
	while (done < len) {
		size_t want = expect_len(len, done, chunk);
		ssize_t r = vf_read(vf, buf, want);

		if (r < 0 || (size_t)r != want) {
			snprintf(why, whylen, "read at %" PRIu64 " returned "
				 "%zd (%s), expected %zu", pos + done, r,
				 errname(r < 0 ? r : 0), want);
			return false;
		}
		if (!same_bytes(bf, buf, r, pos + done, scratch, why, whylen))
			return false;
		done += r;
	}
	return true;
}

/*
 * For a blob too big to stream here: the first and the last EDGE_LEN
 * bytes through ops->read, then EOF.
 */
static void check_edges(struct erofs_vfile *vf, const char *what,
			const struct fixtures *fx, const char *digest,
			uint64_t size, size_t chunk)
{
	unsigned char *buf = malloc(chunk), *scratch = malloc(chunk);
	struct blobfile bf;
	char why[256] = "";
	off_t pos;
	ssize_t r;

	if (!buf || !scratch || blobfile_open(&bf, fx->workdir, digest)) {
		check(false, "%s: cannot set up (memory or saved blob)", what);
		goto out;
	}
	check(bf.size == size, "%s: saved blob is %" PRIu64 " bytes, "
	      "expected %" PRIu64, what, bf.size, size);
	check(read_compare(vf, &bf, EDGE_LEN, chunk, buf, scratch, why,
			   sizeof(why)),
	      "%s: first %llu bytes in %zu-byte reads %s%s", what, EDGE_LEN,
	      chunk, *why ? "differ: " : "match the saved blob", why);
	pos = vf_lseek(vf, -(int64_t)EDGE_LEN, SEEK_END);
	check(pos >= 0 && (uint64_t)pos == size - EDGE_LEN,
	      "%s: lseek(-%llu, SEEK_END) = %lld, expected %llu", what,
	      EDGE_LEN, (long long)pos, size - EDGE_LEN);
	*why = '\0';
	check(read_compare(vf, &bf, EDGE_LEN, chunk, buf, scratch, why,
			   sizeof(why)),
	      "%s: last %llu bytes %s%s (full read: stream_big)", what,
	      EDGE_LEN, *why ? "differ: " : "match the saved blob", why);
	r = vf_read(vf, buf, chunk);
	check(r == 0, "%s: read at the end returns %zd (%s), expected 0",
	      what, r, errname(r));
	blobfile_close(&bf);
out:
	free(buf);
	free(scratch);
}

static void check_contents(struct erofs_vfile *vf, const char *what,
			   const struct fixtures *fx, const char *digest,
			   uint64_t size, size_t chunk)
{
	if (size <= FULL_READ_MAX)
		check_full_read(vf, what, digest, size, chunk);
	else
		check_edges(vf, what, fx, digest, size, chunk);
}

static const size_t small_chunks[] = { 1, 7777, 4096, 32768 };
static const size_t large_chunks[] = { 4096, 32768, 1 << 20, 7777 };

static void test_layers(const struct fixtures *fx)
{
	unsigned int nsmall = 0, nlarge = 0;
	size_t i;

	for (i = 0; i < fx->nr_layers; i++) {
		const struct layer_fx *l = &fx->layers[i];
		/* blob=<digest> too for a few layers */
		bool blob_too = i % 5 == 2;
		unsigned int pass;

		for (pass = 0; pass < (blob_too ? 2u : 1u); pass++) {
			struct erofs_vfile vf;
			char opts[160], what[512];
			size_t chunk;

			if (l->size <= SMALL_LAYER)
				chunk = small_chunks[nsmall++ %
						     ARRAY_SIZE(small_chunks)];
			else
				chunk = large_chunks[nlarge++ %
						     ARRAY_SIZE(large_chunks)];
			layer_options(opts, sizeof(opts), l, pass);
			snprintf(what, sizeof(what), "%s [%s]", l->ref, opts);
			if (!open_checked(&vf, l->ref, opts))
				continue;
			check_getters(&vf, what, l->digest, l->size,
				      pass ? "" : l->media_type);
			check_contents(&vf, what, fx, l->digest, l->size,
				       chunk);
			oci_registry_close(&vf);
		}
	}
}

static void test_urls(const struct fixtures *fx)
{
	size_t i;

	for (i = 0; i < fx->nr_urls; i++) {
		const struct url_fx *u = &fx->urls[i];
		struct erofs_vfile *vf;

		errno = 0;
		vf = open_oci_registry(u->url);
		if (!check(vf != NULL, "open_oci_registry(%s): %p, errno %d "
			   "(%s)", u->url, (void *)vf, errno, errname(errno)))
			continue;
		check_getters(vf, u->url, u->digest, u->size, NULL);
		check_contents(vf, u->url, fx, u->digest, u->size,
			       i % 2 ? 32768 : 1 << 20);
		close_oci_registry(vf);
	}
}

/* ------------------------------------------------------------------ */
/* random access */

enum base {
	FROM_START,
	FROM_MID,
	FROM_END,
	FROM_CUR,
};

static uint64_t base_value(enum base b, uint64_t size, uint64_t cur)
{
	switch (b) {
	case FROM_MID:
		return size / 2;
	case FROM_END:
		return size;
	case FROM_CUR:
		return cur;
	default:
		return 0;
	}
}

static const struct pread_case {
	const char *what;
	enum base base;
	int64_t delta;
	size_t len;
} pread_cases[] = {
	{ "offset 0", FROM_START, 0, 4096 },
	{ "offset 0, 1 byte", FROM_START, 0, 1 },
	{ "middle", FROM_MID, -77, 65536 },
	{ "the last byte", FROM_END, -1, 1 },
	{ "from the last byte, long", FROM_END, -1, 4096 },
	{ "across EOF: short count", FROM_END, -1000, 65536 },
	{ "ending exactly at EOF", FROM_END, -4096, 4096 },
	{ "offset == size", FROM_END, 0, 100 },
	{ "offset == size + 1", FROM_END, 1, 100 },
	{ "offset > size by 1 GiB", FROM_END, 1 << 30, 4096 },
	{ "zero length", FROM_MID, 0, 0 },
	/* offset + len overflows 64 bits */
	{ "offset 2^63", FROM_START, INT64_MIN, 4096 },
	{ "offset 2^64 - 1", FROM_START, -1, 4096 },
};

static void test_random_access(struct erofs_vfile *vf, const char *what,
			       const struct blobfile *bf, uint64_t seed)
{
	unsigned char *buf = malloc(MAX_PREAD), *scratch = malloc(MAX_PREAD);
	unsigned int i, bad = 0;
	char why[256];
	uint64_t rng = seed;
	off_t cur;

	if (!buf || !scratch) {
		check(false, "%s: out of memory", what);
		goto out;
	}
	/* a read first, so that the offset pread must not move is not 0 */
	cur = vf_lseek(vf, 0, SEEK_SET);
	*why = '\0';
	check(cur == 0 && read_compare(vf, bf, 1000, 1000, buf, scratch, why,
				       sizeof(why)),
	      "%s: rewind and read 1000 bytes %s", what, why);
	cur = vf_tell(vf);

	for (i = 0; i < ARRAY_SIZE(pread_cases); i++) {
		const struct pread_case *c = &pread_cases[i];
		uint64_t off = base_value(c->base, bf->size, 0) + c->delta;

		*why = '\0';
		check(pread_ok(vf, bf, off, c->len, cur, buf, scratch, why,
			       sizeof(why)),
		      "%s: pread %s (offset %" PRIu64 ", len %zu) -> %zu %s",
		      what, c->what, off, c->len,
		      expect_len(bf->size, off, c->len), why);
	}

	for (i = 0; i < NR_RANDOM; i++) {
		uint64_t off = rng_next(&rng) % (bf->size + 1);
		size_t len = 1 + rng_next(&rng) % MAX_PREAD;

		/* every 8th one ends near EOF */
		if (i % 8 == 7)
			off = bf->size - rng_next(&rng) % (bf->size < len ?
							   bf->size : len);
		if (pread_ok(vf, bf, off, len, cur, buf, scratch, why,
			     sizeof(why)))
			continue;
		if (++bad <= 5)
			printf("     pread(offset %" PRIu64 ", len %zu): %s\n",
			       off, len, why);
	}
	check(!bad, "%s: %u random preads (seed %#" PRIx64 ") match the saved "
	      "blob: %u bad", what, NR_RANDOM, seed, bad);

	/* the exported function agrees with the op */
	{
		ssize_t r = oci_registry_pread(vf, buf, 512, bf->size / 3);

		check(r == (ssize_t)expect_len(bf->size, bf->size / 3, 512) &&
		      same_bytes(bf, buf, r, bf->size / 3, scratch, why,
				 sizeof(why)),
		      "%s: oci_registry_pread(512 at %" PRIu64 ") = %zd (%s)",
		      what, bf->size / 3, r, errname(r < 0 ? r : 0));
	}
out:
	free(buf);
	free(scratch);
}

/* ------------------------------------------------------------------ */
/* reads and preads mixed: read() continues where it was */

static const struct mixed_step {
	bool pread;
	int64_t offset;		/* pread only; negative: from the end */
	size_t len;
} mixed_steps[] = {
	{ false, 0,		10000 },
	{ false, 0,		7777 },
	{ true,  300000,	5000 },
	{ false, 0,		4096 },
	{ true,  0,		100 },
	{ true,  -10,		4096 },
	{ false, 0,		32768 },
	{ true,  17777,		1 },
	{ true,  1 << 20,	1 << 18 },
	{ false, 0,		1 },
	{ false, 0,		65536 },
};

static void test_mixed(struct erofs_vfile *vf, const char *what,
		       const struct blobfile *bf)
{
	unsigned char *buf = malloc(MAX_PREAD), *scratch = malloc(MAX_PREAD);
	uint64_t pos = 0;
	char why[256];
	size_t i;

	if (!buf || !scratch) {
		check(false, "%s: out of memory", what);
		goto out;
	}
	*why = '\0';
	check(vf_lseek(vf, 0, SEEK_SET) == 0, "%s: mixed: rewind", what);
	for (i = 0; i < ARRAY_SIZE(mixed_steps); i++) {
		const struct mixed_step *s = &mixed_steps[i];
		bool ok;

		*why = '\0';
		if (s->pread) {
			uint64_t off = s->offset < 0 ? bf->size + s->offset :
				       (uint64_t)s->offset;

			ok = pread_ok(vf, bf, off, s->len, pos, buf, scratch,
				      why, sizeof(why));
			check(ok, "%s: mixed step %zu: pread %zu at %" PRIu64
			      " %s", what, i, s->len, off, why);
		} else {
			uint64_t n = expect_len(bf->size, pos, s->len);

			ok = read_compare(vf, bf, n, s->len, buf, scratch,
					  why, sizeof(why));
			check(ok, "%s: mixed step %zu: read %zu continues at "
			      "%" PRIu64 " %s", what, i, s->len, pos, why);
			pos += n;
		}
	}
out:
	free(buf);
	free(scratch);
}

/* ------------------------------------------------------------------ */
/* several threads preading one vfile */

struct thread_ctx {
	struct erofs_vfile *vf;
	const struct blobfile *bf;
	uint64_t rng;
	off_t cur;
	unsigned int done, bad;
	char first_bad[400];
};

static void *pread_thread(void *arg)
{
	struct thread_ctx *t = arg;
	unsigned char *buf = malloc(MAX_PREAD), *scratch = malloc(MAX_PREAD);
	char why[256];
	unsigned int i;

	if (!buf || !scratch) {
		snprintf(t->first_bad, sizeof(t->first_bad), "no memory");
		t->bad++;
		goto out;
	}
	for (i = 0; i < THREAD_PREADS; i++) {
		uint64_t off = rng_next(&t->rng) % t->bf->size;
		size_t len = 1 + rng_next(&t->rng) % MAX_PREAD;

		t->done++;
		if (pread_ok(t->vf, t->bf, off, len, t->cur, buf, scratch, why,
			     sizeof(why)))
			continue;
		if (!t->bad++)
			snprintf(t->first_bad, sizeof(t->first_bad),
				 "pread(offset %" PRIu64 ", len %zu): %s",
				 off, len, why);
	}
out:
	free(buf);
	free(scratch);
	return NULL;
}

static void test_threads(struct erofs_vfile *vf, const char *what,
			 const struct blobfile *bf)
{
	struct thread_ctx ctx[NR_THREADS];
	pthread_t tid[NR_THREADS];
	bool started[NR_THREADS];
	off_t cur = vf_tell(vf);
	unsigned int i;

	for (i = 0; i < NR_THREADS; i++) {
		memset(&ctx[i], 0, sizeof(ctx[i]));
		ctx[i].vf = vf;
		ctx[i].bf = bf;
		ctx[i].rng = 0x5eed0000ULL + i;
		ctx[i].cur = cur;
		started[i] = !pthread_create(&tid[i], NULL, pread_thread,
					     &ctx[i]);
	}
	for (i = 0; i < NR_THREADS; i++) {
		if (started[i])
			pthread_join(tid[i], NULL);
		check(started[i] && ctx[i].done == THREAD_PREADS &&
		      !ctx[i].bad,
		      "%s: thread %u: %u/%u concurrent preads, %u bad %s",
		      what, i, ctx[i].done, THREAD_PREADS, ctx[i].bad,
		      started[i] ? ctx[i].first_bad : "(not started)");
	}
	check(vf_tell(vf) == cur, "%s: offset still %lld after the threads",
	      what, (long long)cur);
}

/* ------------------------------------------------------------------ */
/* lseek */

static const struct seek_case {
	const char *what;
	int whence;
	enum base base;		/* SEEK_SET, SEEK_DATA, SEEK_HOLE, 42 */
	int64_t delta;		/* offset (from base) or delta */
	int err;		/* expected errno, or 0 */
	size_t rdlen;		/* read this much afterwards */
} seek_cases[] = {
	{ "SEEK_SET 0", SEEK_SET, FROM_START, 0, 0, 100 },
	{ "SEEK_SET mid", SEEK_SET, FROM_MID, 0, 0, 4096 },
	{ "SEEK_CUR +n", SEEK_CUR, FROM_CUR, 1000, 0, 7777 },
	{ "SEEK_CUR -n", SEEK_CUR, FROM_CUR, -5000, 0, 100 },
	{ "SEEK_CUR 0", SEEK_CUR, FROM_CUR, 0, 0, 10 },
	{ "SEEK_END 0", SEEK_END, FROM_END, 0, 0, 100 },
	{ "SEEK_END -n", SEEK_END, FROM_END, -100, 0, 4096 },
	{ "SEEK_SET past end", SEEK_SET, FROM_END, 1000, 0, 100 },
	{ "SEEK_CUR back in", SEEK_CUR, FROM_CUR, -1200, 0, 4096 },
	{ "SEEK_SET 12345", SEEK_SET, FROM_START, 12345, 0, 10 },
	{ "SEEK_CUR below 0", SEEK_CUR, FROM_CUR, -(1LL << 40), EINVAL, 10 },
	{ "SEEK_SET 0 again", SEEK_SET, FROM_START, 0, 0, 0 },
	{ "SEEK_SET -1", SEEK_SET, FROM_START, -1, EINVAL, 0 },
	{ "SEEK_CUR -1 at 0", SEEK_CUR, FROM_CUR, -1, EINVAL, 10 },
	{ "SEEK_END below 0", SEEK_END, FROM_END, -(1LL << 40), EINVAL, 10 },
	{ "whence 42", 42, FROM_START, 0, EINVAL, 10 },
	{ "SEEK_DATA 0", SEEK_DATA, FROM_START, 0, 0, 10 },
	{ "SEEK_HOLE mid", SEEK_HOLE, FROM_MID, 0, 0, 10 },
	{ "SEEK_DATA at end", SEEK_DATA, FROM_END, 0, ENXIO, 10 },
	{ "SEEK_SET 1", SEEK_SET, FROM_START, 1, 0, 4095 },
};

static void test_lseek(struct erofs_vfile *vf, const char *what,
		       const struct blobfile *bf)
{
	unsigned char *buf = malloc(MAX_PREAD), *scratch = malloc(MAX_PREAD);
	uint64_t size = bf->size, cur;
	char why[256];
	size_t i;

	if (!buf || !scratch) {
		check(false, "%s: out of memory", what);
		goto out;
	}
	cur = vf_tell(vf);
	for (i = 0; i < ARRAY_SIZE(seek_cases); i++) {
		const struct seek_case *c = &seek_cases[i];
		uint64_t base = base_value(c->base, size, cur);
		int64_t arg, want;
		off_t got, now;
		bool ok = true;

		switch (c->whence) {
		case SEEK_CUR:
			arg = c->delta;
			want = (int64_t)cur + c->delta;
			break;
		case SEEK_END:
			arg = c->delta;
			want = (int64_t)size + c->delta;
			break;
		case SEEK_HOLE:
			arg = (int64_t)base + c->delta;
			want = size;
			break;
		default:	/* SEEK_SET, SEEK_DATA, bad whence */
			arg = (int64_t)base + c->delta;
			want = arg;
			break;
		}
		if (c->err)
			want = -c->err;

		*why = '\0';
		got = vf->ops->lseek(vf, (uint64_t)arg, c->whence);
		now = vf_tell(vf);
		if (got != want) {
			snprintf(why, sizeof(why), "returned %lld (%s)",
				 (long long)got, errname(got < 0 ? got : 0));
			ok = false;
		} else if (c->err && now >= 0 && (uint64_t)now != cur) {
			snprintf(why, sizeof(why), "failed, but the offset "
				 "moved from %" PRIu64 " to %lld", cur,
				 (long long)now);
			ok = false;
		} else if (!c->err && now != want) {
			snprintf(why, sizeof(why), "then SEEK_CUR says %lld",
				 (long long)now);
			ok = false;
		}
		if (!c->err)
			cur = want;
		if (ok) {
			uint64_t n = expect_len(size, cur, c->rdlen);
			ssize_t r;

			ok = read_compare(vf, bf, n, c->rdlen, buf, scratch,
					  why, sizeof(why));
			if (ok && n < c->rdlen) {
				/* the read that returns 0 at or past EOF */
				r = vf_read(vf, buf, c->rdlen);
				if (r) {
					snprintf(why, sizeof(why), "read at "
						 "%" PRIu64 " returned %zd, "
						 "expected 0", cur + n, r);
					ok = false;
				}
			}
			cur += n;
		}
		check(ok, "%s: lseek(%lld, %s) = %lld, expected %lld; read %zu "
		      "there %s", what, (long long)arg, c->what,
		      (long long)got, (long long)want, c->rdlen, why);
		if (!ok) {	/* resync with the library */
			now = vf_tell(vf);
			cur = now < 0 ? 0 : (uint64_t)now;
		}
	}
out:
	free(buf);
	free(scratch);
}

static void test_fstat(struct erofs_vfile *vf, const char *what,
		       uint64_t size)
{
	struct stat st;
	int err;

	memset(&st, 0, sizeof(st));
	err = vf->ops->fstat(vf, &st);
	check(!err && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size,
	      "%s: fstat = %d (%s), st_size %lld (expected %" PRIu64 "), "
	      "mode %#o (expected a regular file)", what, err, errname(err),
	      (long long)st.st_size, size, (unsigned int)st.st_mode);
}

/* the random access, mixed, lseek and fstat tests on one blob */
static void test_blob_access(const struct fixtures *fx, const char *ref,
			     const char *digest, bool big)
{
	struct erofs_vfile vf;
	struct blobfile bf;
	char opts[128], what[256];

	snprintf(opts, sizeof(opts), "blob=%s", digest);
	snprintf(what, sizeof(what), "%s%.19s", big ? "big " : "", digest);
	if (blobfile_open(&bf, fx->workdir, digest)) {
		check(false, "%s: saved blob missing", what);
		return;
	}
	if (!open_checked(&vf, ref, opts))
		goto out;
	check(oci_registry_blob_size(&vf) == (int64_t)bf.size,
	      "%s: blob_size %" PRId64 " == saved file size %" PRIu64, what,
	      oci_registry_blob_size(&vf), bf.size);
	test_random_access(&vf, what, &bf, 0x0c1f00dULL ^ bf.size);
	if (big) {
		test_threads(&vf, what, &bf);
	} else {
		test_mixed(&vf, what, &bf);
		test_lseek(&vf, what, &bf);
	}
	test_fstat(&vf, what, bf.size);
	oci_registry_close(&vf);
out:
	blobfile_close(&bf);
}

/*
 * A blob three times the memory cache: blocks evicted from memory go to
 * the spill file and come back from there, the background fill brings the
 * rest; every byte still right, from several threads.
 */
static const struct spill_case {
	const char *opts;
	bool spill;	/* reads served from the spill file expected */
} spill_cases[] = {
	{ "block=64K,cache_mem=1M,readahead=256K", true },
	{ "block=64K,cache_mem=1M,readahead=256K,fill=none", true },
	{ "block=64K,cache_mem=1M,readahead=256K,spill=none", false },
};

static void test_spill(const struct fixtures *fx, const struct layer_fx *l)
{
	struct erofs_vfile vf;
	struct blobfile bf;
	struct oci_registry_stats st;
	char opts[256], what[320];
	size_t i;
	int err;

	if (blobfile_open(&bf, fx->workdir, l->digest)) {
		check(false, "spill: saved blob %s missing", l->digest);
		return;
	}
	for (i = 0; i < ARRAY_SIZE(spill_cases); i++) {
		const struct spill_case *c = &spill_cases[i];

		snprintf(opts, sizeof(opts), "blob=%s,%s", l->digest, c->opts);
		snprintf(what, sizeof(what), "%.19s [%s]", l->digest, c->opts);
		if (!open_checked(&vf, l->ref, opts))
			continue;
		test_threads(&vf, what, &bf);
		test_random_access(&vf, what, &bf, 0x5b111ULL + i);
		err = oci_registry_stats(&vf, &st);
		check(!err && (st.disk_hits > 0) == c->spill,
		      "%s: stats %d, %" PRIu64 " reads from the spill file "
		      "(expected %s)", what, err, st.disk_hits,
		      c->spill ? "some" : "none");
		oci_registry_close(&vf);
	}
	blobfile_close(&bf);
}

static void test_access(const struct fixtures *fx)
{
	const struct layer_fx *small = NULL, *larger = NULL;
	size_t i;

	/* the first layer of 128 KiB..1 MiB, the largest one below 16 MiB */
	for (i = 0; i < fx->nr_layers; i++) {
		const struct layer_fx *l = &fx->layers[i];

		if (!small && l->size >= 128 * KIB && l->size < MIB)
			small = l;
		if (l->size <= FULL_READ_MAX &&
		    (!larger || l->size > larger->size))
			larger = l;
	}
	if (!check(small && larger && larger->size > 2 * MIB,
		   "fixtures have a small and a ~3 MiB layer"))
		return;
	test_blob_access(fx, small->ref, small->digest, false);
	test_blob_access(fx, larger->ref, larger->digest, false);
	test_blob_access(fx, fx->big.url, fx->big.digest, true);
	test_spill(fx, larger);
}

/* ------------------------------------------------------------------ */
/* errors */

static const struct open_error_case {
	const char *what;
	const char *ref;	/* "R/": the fixture registry */
	const char *options;
	int err;
	const char *needle;	/* the message contains this */
} open_error_cases[] = {
	{ "unknown repository", "R/nosuch/repo:v1", NULL,
	  ENOENT, "MANIFEST_UNKNOWN" },
	{ "unknown tag", "R/plain/nomt:nosuchtag", NULL, ENOENT, NULL },
	{ "unknown manifest digest", "R/plain/nomt@sha256:" Z64, NULL,
	  ENOENT, NULL },
	{ "unknown blob", "R/plain/nomt:v1", "blob=sha256:" Z64,
	  ENOENT, NULL },
	{ "no matching platform", "R/multi/index:v1",
	  "platform=linux/riscv64", ENOENT, "platform" },
	{ "layer out of range", "R/plain/nomt:v1", "layer=3",
	  ERANGE, "out of range" },
	{ "empty reference", "", NULL, EINVAL, NULL },
	{ "blank in reference", "R/a b", NULL, EINVAL, NULL },
	{ "upper case repository", "R/UPPER:v1", NULL, EINVAL, NULL },
	{ "bad tag", "R/x:-bad", NULL, EINVAL, NULL },
	{ "short digest", "R/x@sha256:123", NULL, EINVAL, NULL },
	{ "unknown option", "R/plain/nomt:v1", "frob=1", EINVAL, "frob" },
	{ "layer not a number", "R/plain/nomt:v1", "layer=x", EINVAL, NULL },
	{ "platform without arch", "R/plain/nomt:v1", "platform=linux",
	  EINVAL, NULL },
	{ "layer and blob", "R/plain/nomt:v1", "layer=1,blob=sha256:" A64,
	  EINVAL, NULL },
	{ "nothing listening", "127.0.0.1:1/x/y:z", NULL,
	  ECONNREFUSED, NULL },
	{ "NULL reference", NULL, NULL, EINVAL, NULL },
};

static void check_message(const char *what, const char *needle)
{
	const char *msg = last_error();

	check(*msg && !has_userinfo(msg) && (!needle || strstr(msg, needle)),
	      "%s: message \"%s\" is non-empty, has no user:secret@ and "
	      "contains \"%s\"", what, msg, needle ? needle : "");
}

static void test_open_errors(const struct fixtures *fx)
{
	struct erofs_vfile vf, pattern;
	size_t i;
	int err;

	memset(&pattern, 0xa5, sizeof(pattern));
	for (i = 0; i < ARRAY_SIZE(open_error_cases); i++) {
		const struct open_error_case *c = &open_error_cases[i];
		char *ref = expand(c->ref, fx->registry);

		if (c->ref && !ref) {
			check(false, "%s: out of memory", c->what);
			continue;
		}
		memset(&vf, 0xa5, sizeof(vf));
		err = oci_registry_open(&vf, ref, c->options);
		check(err == -c->err, "open error: %s: open(\"%s\", %s) = %d "
		      "(%s), expected -%s", c->what, str_or_null(ref),
		      str_or_null(c->options), err, errname(err),
		      errname(c->err));
		check(!memcmp(&vf, &pattern, sizeof(vf)),
		      "open error: %s: the caller's vfile is untouched",
		      c->what);
		if (err < 0)
			check_message(c->what, c->needle);
		if (!err)	/* should not happen, but do not leak */
			oci_registry_close(&vf);
		free(ref);
	}

	err = oci_registry_open(NULL, fx->layers[0].ref, NULL);
	check(err == -EINVAL, "open error: NULL vfile: %d (%s), expected "
	      "-EINVAL", err, errname(err));
	check_message("NULL vfile", NULL);
}

static const struct url_error_case {
	const char *url;	/* "://R/": the fixture registry */
	int err;
} url_error_cases[] = {
	{ "ftp://h/v2/library/x/",			EINVAL },
	{ "http://R/v2/x/",				EINVAL },
	{ "http://R/v2/library/hello/digest-0",		EINVAL },
	{ "http://R/v2/library/hello/bogus",		EINVAL },
	{ NULL,						EINVAL },
	{ "http://R/v2/library/nosuch/",		ENOENT },
};

static void test_url_errors(const struct fixtures *fx)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(url_error_cases); i++) {
		const struct url_error_case *c = &url_error_cases[i];
		char *url = expand(c->url, fx->registry);
		struct erofs_vfile *vf;
		int e;

		if (c->url && !url) {
			check(false, "%s: out of memory", c->url);
			continue;
		}
		errno = 0;
		vf = open_oci_registry(url);
		e = errno;
		check(!vf && e == c->err, "url error: open_oci_registry(%s) = "
		      "%p, errno %d (%s), expected NULL and %s",
		      str_or_null(url), (void *)vf, e, errname(e),
		      errname(c->err));
		check_message(str_or_null(url), NULL);
		close_oci_registry(vf);
		free(url);
	}
}

/* ------------------------------------------------------------------ */
/* boundaries */

static void test_boundaries(const struct fixtures *fx)
{
	const struct layer_fx *l = &fx->layers[0];
	struct erofs_vfops other;
	struct erofs_vfile vf, fake, *owned;
	char opts[160], buf[16];
	ssize_t r;
	off_t o;

	oci_registry_close(NULL);
	close_oci_registry(NULL);
	check(true, "oci_registry_close(NULL), close_oci_registry(NULL) are "
	      "no-ops");
	check(oci_registry_blob_size(NULL) == -EINVAL,
	      "blob_size(NULL) = %" PRId64 ", expected -EINVAL",
	      oci_registry_blob_size(NULL));
	check(!oci_registry_blob_digest(NULL) &&
	      !oci_registry_blob_media_type(NULL),
	      "blob_digest(NULL) and blob_media_type(NULL) are NULL");

	layer_options(opts, sizeof(opts), l, false);
	if (!open_checked(&vf, l->ref, opts))
		return;

	/* a vfile that is not ours: a copy pointing to another table */
	memset(&other, 0, sizeof(other));
	fake = vf;
	fake.ops = &other;
	r = oci_registry_read(&fake, buf, sizeof(buf));
	check(r == -EINVAL, "read on a vfile with foreign ops = %zd (%s), "
	      "expected -EINVAL", r, errname(r));
	r = oci_registry_pread(&fake, buf, sizeof(buf), 0);
	check(r == -EINVAL, "pread on a vfile with foreign ops = %zd (%s), "
	      "expected -EINVAL", r, errname(r));
	r = vf_read(&vf, buf, sizeof(buf));
	check(r == (ssize_t)sizeof(buf), "the real vfile is still readable: "
	      "read = %zd (%s)", r, errname(r < 0 ? r : 0));

	r = vf_read(&vf, NULL, 10);
	check(r == -EINVAL, "read(NULL, 10) = %zd (%s), expected -EINVAL", r,
	      errname(r));
	r = vf_pread(&vf, NULL, 10, 0);
	check(r == -EINVAL, "pread(NULL, 10) = %zd (%s), expected -EINVAL", r,
	      errname(r));
	r = vf_read(&vf, NULL, 0);
	check(r == 0 || r == -EINVAL, "read(NULL, 0) = %zd (%s): 0 or "
	      "-EINVAL", r, errname(r));

	oci_registry_close(&vf);
	r = vf_read(&vf, buf, sizeof(buf));
	check(r == -EBADF, "read after close = %zd (%s), expected -EBADF", r,
	      errname(r));
	r = vf_pread(&vf, buf, sizeof(buf), 0);
	check(r == -EBADF, "pread after close = %zd (%s), expected -EBADF", r,
	      errname(r));
	o = vf_tell(&vf);
	check(o == -EBADF, "lseek after close = %lld (%s), expected -EBADF",
	      (long long)o, errname(o));
	check(oci_registry_blob_size(&vf) == -EBADF,
	      "blob_size after close = %" PRId64 ", expected -EBADF",
	      oci_registry_blob_size(&vf));
	oci_registry_close(&vf);
	check(true, "a second oci_registry_close() is a no-op");

#if OCI_REGISTRY_EROFS_ABI >= 109
	/* erofs_io_close() calls vf->ops->close */
	if (open_checked(&vf, l->ref, opts)) {
		check(vf.ops->close != NULL, "ops->close is set");
		if (vf.ops->close)
			vf.ops->close(&vf);
		r = vf_read(&vf, buf, sizeof(buf));
		check(r == -EBADF, "read after ops->close = %zd (%s), "
		      "expected -EBADF", r, errname(r));
		oci_registry_close(&vf);
	}
	errno = 0;
	owned = open_oci_registry(fx->urls[0].url);
	if (check(owned != NULL, "open_oci_registry(%s) for ops->close: "
		  "errno %d (%s)", fx->urls[0].url, errno, errname(errno))) {
		r = vf_read(owned, buf, sizeof(buf));
		check(r == (ssize_t)sizeof(buf), "read = %zd", r);
		check(owned->ops->close != NULL, "ops->close of an "
		      "open_oci_registry() vfile is set");
		if (owned->ops->close)
			owned->ops->close(owned);	/* frees it */
		else
			close_oci_registry(owned);
	}
#else
	(void)owned;
#endif
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct fixtures fx;
	const char *msg;

	if (argc != 3) {
		fprintf(stderr, "usage: %s FIXTURES_TXT WORKDIR\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(&fx, 0, sizeof(fx));
	fx.workdir = argv[2];
	if (load_fixtures(&fx, argv[1])) {
		free_fixtures(&fx);
		return 2;
	}

	msg = oci_registry_last_error();
	check(msg && !*msg, "last_error is empty before any failure: \"%s\"",
	      str_or_null(msg));
	if (!check(oci_registry_erofs_abi() == OCI_REGISTRY_EROFS_ABI,
		   "oci_registry_erofs_abi() = %d, header says %d",
		   oci_registry_erofs_abi(), OCI_REGISTRY_EROFS_ABI)) {
		/* the ops tables have another layout: calls would crash */
		printf("     built against the wrong library: stopping\n");
		goto out;
	}
	check(find_layer(&fx, fx.big.digest) != NULL,
	      "the big blob is a layer of the fixtures");

	test_layers(&fx);
	test_urls(&fx);
	test_access(&fx);
	test_open_errors(&fx);
	test_url_errors(&fx);
	test_boundaries(&fx);
out:
	free_fixtures(&fx);
	printf("%u passed, %u failed\n", nr_passed, nr_failed);
	return nr_failed ? 1 : 0;
}
