// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * make demo: the library's main job, shown on a local registry.
 *
 *   demo tar REF OPTIONS     list an uncompressed tar layer, skipping file
 *                            bodies with lseek(SEEK_CUR)
 *   demo stream REF OPTIONS  stream a layer to the end: time to first
 *                            byte, throughput, peak RSS (the library
 *                            verifies the digest as it streams)
 *   demo url URL             the same through the original 2024 entry
 *                            point, open_oci_registry()
 *   demo layers REF OPTIONS  an image's layers: digest, size, media type
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include "oci_registry.h"

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long peak_rss_kib(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

static unsigned long long octal(const char *p, int n)
{
	unsigned long long v = 0;

	while (n-- > 0 && *p == ' ')
		p++, n--;
	for (; n > 0 && *p >= '0' && *p <= '7'; p++, n--)
		v = v * 8 + (unsigned long long)(*p - '0');
	return v;
}

/* read exactly len bytes through the ops table; 0 at a clean EOF */
static int read_full(struct erofs_vfile *vf, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = vf->ops->read(vf, buf + got, len - got);

		if (n < 0)
			return (int)n;
		if (!n)
			return got ? -EIO : 0;
		got += (size_t)n;
	}
	return 1;
}

static int list_tar(struct erofs_vfile *vf)
{
	char hdr[512];
	unsigned int entries = 0;
	int ret;

	while ((ret = read_full(vf, hdr, sizeof(hdr))) > 0) {
		unsigned long long size, skip;
		char name[101];

		if (!hdr[0])
			break;
		memcpy(name, hdr, 100);
		name[100] = '\0';
		size = octal(hdr + 124, 12);
		printf("  %c %10llu  %s\n", hdr[156] ? hdr[156] : '0',
		       size, name);
		entries++;
		skip = (size + 511) / 512 * 512;
		if (skip && vf->ops->lseek(vf, skip, SEEK_CUR) < 0) {
			ret = -EIO;
			break;
		}
	}
	if (ret < 0) {
		fprintf(stderr, "demo: tar: %s (%d)\n",
			oci_registry_last_error(), ret);
		return 1;
	}
	printf("  %u entries\n", entries);
	return 0;
}

static int stream(struct erofs_vfile *vf, double t0, double t_open)
{
	static char buf[1 << 20];
	unsigned long long total = 0;
	double t_first = 0, t_end;
	ssize_t n;

	while ((n = vf->ops->read(vf, buf, sizeof(buf))) > 0) {
		if (!total)
			t_first = now_ms();
		total += (unsigned long long)n;
	}
	t_end = now_ms();
	if (n < 0) {
		fprintf(stderr, "demo: read: %s (%zd)\n",
			oci_registry_last_error(), n);
		return 1;
	}
	printf("  blob        %s\n", oci_registry_blob_digest(vf));
	printf("  media type  %s\n", oci_registry_blob_media_type(vf));
	printf("  bytes       %llu (digest verified while streaming)\n",
	       total);
	printf("  open        %.1f ms\n", t_open - t0);
	printf("  first byte  %.1f ms after open() was called\n",
	       t_first - t0);
	printf("  throughput  %.1f MiB/s\n",
	       total / 1048576.0 / ((t_end - t0) / 1e3));
	printf("  peak RSS    %.1f MiB\n", peak_rss_kib() / 1024.0);
	return 0;
}

int main(int argc, char **argv)
{
	struct erofs_vfile vfs, *vf = &vfs;
	double t0, t_open;
	int ret;

	if (argc < 3) {
		fprintf(stderr, "usage: demo tar|stream REF [OPTIONS] | demo url URL\n");
		return 2;
	}
	if (!strcmp(argv[1], "layers")) {
		struct oci_registry_layer *layers;
		size_t i, count;

		ret = oci_registry_list_layers(argv[2], argc > 3 ? argv[3] : NULL,
					       &layers, &count);
		if (ret) {
			fprintf(stderr, "demo: list_layers: %s (%d)\n",
				oci_registry_last_error(), ret);
			return 1;
		}
		for (i = 0; i < count; i++)
			printf("  layer %zu  %s  %10llu bytes  %s\n", i,
			       layers[i].digest,
			       (unsigned long long)layers[i].size,
			       layers[i].media_type);
		oci_registry_free_layers(layers, count);
		return 0;
	}
	t0 = now_ms();
	if (!strcmp(argv[1], "url")) {
		vf = open_oci_registry(argv[2]);
		if (!vf) {
			fprintf(stderr, "demo: open_oci_registry: %s (errno %d)\n",
				oci_registry_last_error(), errno);
			return 1;
		}
	} else {
		ret = oci_registry_open(vf, argv[2], argc > 3 ? argv[3] : NULL);
		if (ret) {
			fprintf(stderr, "demo: oci_registry_open: %s (%d)\n",
				oci_registry_last_error(), ret);
			return 1;
		}
	}
	t_open = now_ms();
	if (!strcmp(argv[1], "tar"))
		ret = list_tar(vf);
	else
		ret = stream(vf, t0, t_open);
	if (vf == &vfs)
		oci_registry_close(vf);
	else
		close_oci_registry(vf);
	return ret;
}
