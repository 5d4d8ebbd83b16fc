// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * cycles: open, read a little and close one blob N times; neither the
 * resident memory nor the open file descriptors may grow.
 *
 *   cycles REF OPTIONS N
 *
 * Both are measured after a warm-up of N/10 cycles (caches, allocator
 * pools and libcurl's one-time state settle there) and at the end.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "oci_registry.h"

static long rss_kib(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = -1;
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the directory itself */
}

static int cycle(const char *ref, const char *opts)
{
	struct erofs_vfile vf;
	char buf[4096];
	ssize_t n;
	int ret;

	ret = oci_registry_open(&vf, ref, opts);
	if (ret) {
		printf("FAIL open: %s (%d)\n", oci_registry_last_error(), ret);
		return -1;
	}
	n = oci_registry_read(&vf, buf, sizeof(buf));
	oci_registry_close(&vf);
	if (n <= 0) {
		printf("FAIL read: %s (%zd)\n", oci_registry_last_error(), n);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	long n, i, warm, rss0 = 0, rss1;
	int fd0 = 0, fd1, passed = 0, failed = 0;

	if (argc < 4) {
		fprintf(stderr, "usage: cycles REF OPTIONS N\n");
		return 2;
	}
	n = atol(argv[3]);
	warm = n / 10;
	for (i = 0; i < n; i++) {
		if (i == warm) {
			rss0 = rss_kib();
			fd0 = open_fds();
		}
		if (cycle(argv[1], argv[2][0] ? argv[2] : NULL)) {
			failed++;
			goto out;
		}
	}
	rss1 = rss_kib();
	fd1 = open_fds();
	printf("%s %ld cycles: rss %ld -> %ld KiB, fds %d -> %d\n",
	       rss1 - rss0 <= 2048 ? "ok  " : "FAIL", n, rss0, rss1, fd0, fd1);
	if (rss1 - rss0 <= 2048)
		passed++;
	else
		failed++;
	printf("%s open file descriptors did not grow\n",
	       fd1 <= fd0 ? "ok  " : "FAIL");
	if (fd1 <= fd0)
		passed++;
	else
		failed++;
out:
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
