// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * abi_ours.c - the erofs_vfile / erofs_vfops layout as oci_registry.h alone
 * declares it; abi_check.c compares it with abi_erofs.c's.
 *
 * Includes nothing but our header: it must be self-contained.
 */
#include "oci_registry.h"

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

int abi_ours_header_abi(void);
int abi_ours_library_abi(void);
const char *abi_ours_row(unsigned int i, size_t *offset, size_t *size,
			 const char **type, int *type_ok);

int abi_ours_header_abi(void)
{
	return OCI_REGISTRY_EROFS_ABI;
}

int abi_ours_library_abi(void)
{
	return oci_registry_erofs_abi();
}

/* the i-th row of the layout table; NULL past its end */
const char *abi_ours_row(unsigned int i, size_t *offset, size_t *size,
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
