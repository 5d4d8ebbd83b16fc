// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * abi_erofs.c - the erofs_vfile / erofs_vfops layout as erofs-utils'
 * own <erofs/io.h> declares it, then oci_registry.h included after it.
 *
 * Build with -I <erofs-utils source>/include.  erofs-utils' headers expect
 * its config.h and GNU C; the few things they need are set here, so no
 * extra flags are needed with -std=c99.
 */
/* what erofs-utils' configure finds on Linux with glibc */
#define HAVE_LINUX_TYPES_H 1
#define HAVE_ENDIAN_H 1
/* a GNU C keyword in erofs' inline helpers; not one under -std=c99 */
#define typeof __typeof__

#include <errno.h>		/* EIO in erofs_pread() (1.9) */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>		/* struct stat, before io.h (1.8) */

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"	/* erofs_pread() (1.9) */
#include <erofs/io.h>
#pragma GCC diagnostic pop

#include "oci_registry.h"	/* after io.h: uses erofs' definitions */

#ifndef __EROFS_IO_H
#error "<erofs/io.h> was not the erofs-utils one"
#endif

/* the member list of each layout, with the type erofs-utils gives it */
#if OCI_REGISTRY_EROFS_ABI >= 109
#define VFOPS_MEMBERS(X)						\
	X(pread, ssize_t (*)(struct erofs_vfile *, void *, size_t,	\
			     uint64_t))					\
	X(pwrite, ssize_t (*)(struct erofs_vfile *, const void *,	\
			      uint64_t, size_t))			\
	X(pwritev, ssize_t (*)(struct erofs_vfile *,			\
			       const struct iovec *, int, uint64_t))	\
	X(fsync, int (*)(struct erofs_vfile *))				\
	X(fallocate, int (*)(struct erofs_vfile *, uint64_t, size_t,	\
			     bool))					\
	X(ftruncate, int (*)(struct erofs_vfile *, uint64_t))		\
	X(read, ssize_t (*)(struct erofs_vfile *, void *, size_t))	\
	X(write, ssize_t (*)(struct erofs_vfile *, void *, size_t))	\
	X(lseek, off_t (*)(struct erofs_vfile *, uint64_t, int))	\
	X(fstat, int (*)(struct erofs_vfile *, struct stat *))		\
	X(sendfile, ssize_t (*)(struct erofs_vfile *,			\
				struct erofs_vfile *, off_t *, size_t))	\
	X(xcopy, int (*)(struct erofs_vfile *, off_t,			\
			 struct erofs_vfile *, unsigned int, bool))	\
	X(close, void (*)(struct erofs_vfile *))
#else
#define VFOPS_MEMBERS(X)						\
	X(pread, ssize_t (*)(struct erofs_vfile *, void *, uint64_t,	\
			     size_t))					\
	X(pwrite, ssize_t (*)(struct erofs_vfile *, const void *,	\
			      uint64_t, size_t))			\
	X(fsync, int (*)(struct erofs_vfile *))				\
	X(fallocate, int (*)(struct erofs_vfile *, uint64_t, size_t,	\
			     bool))					\
	X(ftruncate, int (*)(struct erofs_vfile *, uint64_t))		\
	X(read, ssize_t (*)(struct erofs_vfile *, void *, size_t))	\
	X(lseek, off_t (*)(struct erofs_vfile *, uint64_t, int))	\
	X(fstat, int (*)(struct erofs_vfile *, struct stat *))		\
	X(xcopy, int (*)(struct erofs_vfile *, off_t,			\
			 struct erofs_vfile *, unsigned int, bool))
#endif

#define VFILE_MEMBERS(X)						\
	X(ops, struct erofs_vfops *)					\
	X(offset, uint64_t)						\
	X(fd, int)							\
	X(payload, uint8_t[16])

/* name, offset, size, the expected type and whether the member has it */
#define ROW(s, m, t) {							\
	#s "." #m, offsetof(struct s, m), sizeof(((struct s *)0)->m),	\
	#t, __builtin_types_compatible_p(__typeof__(((struct s *)0)->m), t) }
#define VFILE_ROW(m, t)	ROW(erofs_vfile, m, t),
#define VFOPS_ROW(m, t)	ROW(erofs_vfops, m, t),

static const struct {
	const char *name;
	size_t offset, size;
	const char *type;
	int type_ok;
} rows[] = {
	{ "sizeof(struct erofs_vfile)", 0, sizeof(struct erofs_vfile), "",
	  1 },
	VFILE_MEMBERS(VFILE_ROW)
	{ "sizeof(struct erofs_vfops)", 0, sizeof(struct erofs_vfops), "",
	  1 },
	VFOPS_MEMBERS(VFOPS_ROW)
};

int abi_erofs_header_abi(void);
const char *abi_erofs_row(unsigned int i, size_t *offset, size_t *size,
			  const char **type, int *type_ok);
int abi_erofs_probe(const char *ref, const char *options, char *why,
		    size_t whylen);

int abi_erofs_header_abi(void)
{
	return OCI_REGISTRY_EROFS_ABI;
}

/* the i-th row of the layout table; NULL past its end */
const char *abi_erofs_row(unsigned int i, size_t *offset, size_t *size,
			  const char **type, int *type_ok)
{
	if (i >= sizeof(rows) / sizeof(rows[0]))
		return NULL;
	*offset = rows[i].offset;
	*size = rows[i].size;
	*type = rows[i].type;
	*type_ok = rows[i].type_ok;
	return rows[i].name;
}

#define PROBE_LEN	64

/*
 * Open a blob into erofs-utils' own struct erofs_vfile and use it through
 * erofs-utils' struct erofs_vfops.  Return 0, or the number of failed
 * steps with the first one described in @why.
 */
int abi_erofs_probe(const char *ref, const char *options, char *why,
		    size_t whylen)
{
	/*
	 * Compile-time check: the library's functions have the types of
	 * erofs-utils' members (-Werror makes a mismatch a build failure).
	 * 1.8's pread takes (offset, len): the library fills it with a shim.
	 */
	const struct erofs_vfops lib = {
#if OCI_REGISTRY_EROFS_ABI >= 109
		.pread = oci_registry_pread,
		.close = oci_registry_close,
#endif
		.read = oci_registry_read,
		.lseek = oci_registry_lseek,
	};
	unsigned char a[PROBE_LEN], b[PROBE_LEN];
	struct erofs_vfile vf;
	struct stat st;
	int err, bad = 0;
	ssize_t r, r2;
	off_t o;

	*why = '\0';
	err = oci_registry_open(&vf, ref, options);
	if (err) {
		snprintf(why, whylen, "open %s: %d (%s)", ref, err,
			 oci_registry_last_error());
		return 1;
	}

#define FAIL_IF(cond, ...)						\
	do {								\
		if ((cond) && !bad++)					\
			snprintf(why, whylen, __VA_ARGS__);		\
	} while (0)

	r = vf.ops->read(&vf, a, PROBE_LEN);
#if OCI_REGISTRY_EROFS_ABI >= 109
	r2 = vf.ops->pread(&vf, b, PROBE_LEN, 0);
#else
	r2 = vf.ops->pread(&vf, b, 0, PROBE_LEN);
#endif
	FAIL_IF(r != PROBE_LEN || r2 != PROBE_LEN || memcmp(a, b, PROBE_LEN),
		"ops->read %zd, ops->pread at 0 %zd, or bytes differ", r, r2);
	o = vf.ops->lseek(&vf, 0, SEEK_CUR);
	FAIL_IF(o != PROBE_LEN, "ops->lseek(0, SEEK_CUR) = %lld, expected %d",
		(long long)o, PROBE_LEN);

	/* the library's exports, called through erofs-typed pointers */
	r = lib.read(&vf, a, PROBE_LEN);
#if OCI_REGISTRY_EROFS_ABI >= 109
	r2 = lib.pread(&vf, b, PROBE_LEN, PROBE_LEN);
#else
	r2 = oci_registry_pread(&vf, b, PROBE_LEN, PROBE_LEN);
#endif
	FAIL_IF(r != PROBE_LEN || r2 != PROBE_LEN || memcmp(a, b, PROBE_LEN),
		"oci_registry_read %zd, oci_registry_pread at %d %zd, or "
		"bytes differ", r, PROBE_LEN, r2);
	o = lib.lseek(&vf, 0, SEEK_SET);
	FAIL_IF(o != 0, "oci_registry_lseek(0, SEEK_SET) = %lld",
		(long long)o);

	memset(&st, 0, sizeof(st));
	err = vf.ops->fstat(&vf, &st);
	FAIL_IF(err || !S_ISREG(st.st_mode) ||
		st.st_size != oci_registry_blob_size(&vf),
		"ops->fstat = %d, st_size %lld, blob_size %lld", err,
		(long long)st.st_size, (long long)oci_registry_blob_size(&vf));

#if OCI_REGISTRY_EROFS_ABI >= 109
	/* what erofs_io_close() does */
	vf.ops->close(&vf);
	r = lib.read(&vf, a, PROBE_LEN);
	FAIL_IF(r != -EBADF, "read after ops->close = %zd, expected -EBADF",
		r);
	lib.close(&vf);			/* a second close: a no-op */
#else
	oci_registry_close(&vf);
#endif
#undef FAIL_IF
	return bad;
}
