// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * A C program built outside the tree against the installed library, with
 * `pkg-config --cflags --libs oci_registry` alone: it opens a blob and
 * writes it to stdout (the caller hashes it), the size the library reports
 * and its digest to stderr.
 *
 * usage: installed REF OPTIONS
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <oci_registry.h>

int main(int argc, char *argv[])
{
	struct erofs_vfile vf;
	char buf[65536];
	long long total = 0;
	ssize_t n;
	int err, ret = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: %s REF OPTIONS\n", argv[0]);
		return 2;
	}
	err = oci_registry_open(&vf, argv[1], argv[2]);
	if (err) {
		fprintf(stderr, "open: %s: %s\n", strerror(-err),
			oci_registry_last_error());
		return 1;
	}
	while ((n = oci_registry_read(&vf, buf, sizeof(buf))) > 0) {
		if (fwrite(buf, 1, n, stdout) != (size_t)n)
			goto out;
		total += n;
	}
	if (n < 0) {
		fprintf(stderr, "read: %s: %s\n", strerror((int)-n),
			oci_registry_last_error());
		goto out;
	}
	fprintf(stderr, "size=%lld reported=%lld digest=%s abi=%d\n", total,
		(long long)oci_registry_blob_size(&vf),
		oci_registry_blob_digest(&vf), oci_registry_erofs_abi());
	ret = 0;
out:
	oci_registry_close(&vf);
	return ret;
}
