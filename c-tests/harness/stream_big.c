// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * stream_big.c - stream a big blob through both entry points
 *
 * usage: stream_big REF URL DIGEST SIZE [CHUNK]
 *
 * For oci_registry_open(REF) and open_oci_registry(URL): time the open,
 * the first byte and a full sequential ops->read in CHUNK pieces (default
 * 1 MiB), hashing with sha256; the digest and the size must match.  The
 * peak RSS of the process must stay below the default cache_mem (64 MiB)
 * plus 16 MiB (code, libcurl, TLS, stacks): the library streams the
 * 105 MiB blob and holds at most cache_mem of it, however far the
 * parallel readahead gets ahead of a slow reader.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>

#include "oci_registry.h"

#define MIB		(1024 * 1024)
#define RSS_LIMIT_KIB	((64L + 16) * 1024)
#define DIGEST_LEN	(7 + 64)

static unsigned int nr_passed, nr_failed;

enum entry {
	ENTRY_OPEN,		/* oci_registry_open(), caller's vfile */
	ENTRY_URL,		/* open_oci_registry(), library's vfile */
};

static const struct entry_point {
	const char *name;
	enum entry kind;
} entries[] = {
	{ "oci_registry_open", ENTRY_OPEN },
	{ "open_oci_registry", ENTRY_URL },
};

struct args {
	const char *ref, *url, *digest;
	uint64_t size;
	size_t chunk;
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return (errno || end == s || *end || s[0] == '-') ? -EINVAL : 0;
}

static void digest_hex(const unsigned char *md, unsigned int len,
		       char out[DIGEST_LEN + 1])
{
	unsigned int i;

	strcpy(out, "sha256:");
	for (i = 0; i < len && i < 32; i++)
		sprintf(out + 7 + 2 * i, "%02x", md[i]);
}

/* Open one way, stream it all, report; returns true when it matched. */
static bool stream_one(const struct entry_point *e, const struct args *a,
		       unsigned char *buf)
{
	struct erofs_vfile vf, *vfp = NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	char got[DIGEST_LEN + 1] = "";
	double t0, t_open, t_first = -1, t_end;
	unsigned int mdlen = 0;
	uint64_t total = 0;
	EVP_MD_CTX *ctx;
	ssize_t r = 0;
	int err = 0;
	bool ok;

	ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		printf("entry=%s: cannot set up sha256\n", e->name);
		EVP_MD_CTX_free(ctx);
		return false;
	}

	t0 = now_ms();
	if (e->kind == ENTRY_OPEN) {
		err = oci_registry_open(&vf, a->ref, NULL);
		if (!err)
			vfp = &vf;
	} else {
		errno = 0;
		vfp = open_oci_registry(a->url);
		if (!vfp)
			err = -errno;
	}
	t_open = now_ms();
	if (!vfp) {
		printf("entry=%s open failed: %d (%s)\n"
		       "     last_error: \"%s\"\n", e->name, err,
		       strerror(-err), oci_registry_last_error());
		EVP_MD_CTX_free(ctx);
		return false;
	}

	for (;;) {
		r = vfp->ops->read(vfp, buf, a->chunk);
		if (r <= 0)
			break;
		if (t_first < 0)
			t_first = now_ms();
		EVP_DigestUpdate(ctx, buf, r);
		total += r;
		if (total > a->size)
			break;
	}
	t_end = now_ms();
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32)
		digest_hex(md, mdlen, got);
	EVP_MD_CTX_free(ctx);

	ok = r == 0 && total == a->size && !strcmp(got, a->digest);
	printf("entry=%s open_ms=%.1f ttfb_ms=%.1f total_ms=%.1f MiB/s=%.1f "
	       "%s\n", e->name, t_open - t0, t_first < 0 ? -1 : t_first - t0,
	       t_end - t0, total / (double)MIB / ((t_end - t0) / 1e3 + 1e-9),
	       ok ? "ok" : "MISMATCH");
	if (!ok)
		printf("     got %" PRIu64 " bytes %s, last read %zd (%s); "
		       "expected %" PRIu64 " bytes %s then 0\n"
		       "     last_error: \"%s\"\n", total, got, r,
		       r < 0 ? strerror(-r) : "-", a->size, a->digest,
		       oci_registry_last_error());

	if (e->kind == ENTRY_OPEN)
		oci_registry_close(vfp);
	else
		close_oci_registry(vfp);
	return ok;
}

int main(int argc, char **argv)
{
	struct rusage ru;
	struct args a;
	uint64_t v;
	unsigned char *buf;
	size_t i;

	if (argc < 5 || argc > 6) {
		fprintf(stderr, "usage: %s REF URL DIGEST SIZE [CHUNK]\n",
			argv[0]);
		return 2;
	}
	a.ref = argv[1];
	a.url = argv[2];
	a.digest = argv[3];
	a.chunk = MIB;
	if (parse_u64(argv[4], &a.size) ||
	    (argc == 6 && (parse_u64(argv[5], &v) || !v || v > 64 * MIB))) {
		fprintf(stderr, "%s: bad SIZE or CHUNK\n", argv[0]);
		return 2;
	}
	if (argc == 6)
		a.chunk = v;

	buf = malloc(a.chunk);
	if (!buf) {
		fprintf(stderr, "%s: out of memory\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 0; i < sizeof(entries) / sizeof(entries[0]); i++) {
		if (stream_one(&entries[i], &a, buf))
			nr_passed++;
		else
			nr_failed++;
	}
	free(buf);

	/* ru_maxrss is in KiB on Linux */
	getrusage(RUSAGE_SELF, &ru);
	printf("peak_rss_kib=%ld\n", ru.ru_maxrss);
	if (ru.ru_maxrss < RSS_LIMIT_KIB) {
		nr_passed++;
	} else {
		printf("FAIL peak RSS %ld KiB, expected below %ld KiB\n",
		       ru.ru_maxrss, RSS_LIMIT_KIB);
		nr_failed++;
	}
	printf("%u passed, %u failed\n", nr_passed, nr_failed);
	return nr_failed ? 1 : 0;
}
