// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * abi_check.c - compare the erofs_vfile / erofs_vfops layout of our header
 * (abi_ours.c) with erofs-utils' <erofs/io.h> (abi_erofs.c), member by
 * member: offset, size and type.
 *
 * usage: abi_check [FIXTURES_TXT]
 *
 * With FIXTURES_TXT, also open its first layer into erofs-utils' own
 * struct erofs_vfile and use it through erofs-utils' struct erofs_vfops.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

int abi_ours_header_abi(void);
int abi_ours_library_abi(void);
const char *abi_ours_row(unsigned int i, size_t *offset, size_t *size,
			 const char **type, int *type_ok);
int abi_erofs_header_abi(void);
const char *abi_erofs_row(unsigned int i, size_t *offset, size_t *size,
			  const char **type, int *type_ok);
int abi_erofs_probe(const char *ref, const char *options, char *why,
		    size_t whylen);

static unsigned int nr_passed, nr_failed;

__attribute__((format(printf, 2, 3)))
static bool check(bool ok, const char *fmt, ...)
{
	va_list ap;

	fputs(ok ? "ok   " : "FAIL ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	if (ok)
		nr_passed++;
	else
		nr_failed++;
	return ok;
}

struct row {
	const char *name, *type;
	size_t offset, size;
	int type_ok;
};

static void compare_layouts(void)
{
	struct row o, e;
	unsigned int i;

	for (i = 0;; i++) {
		o.name = abi_ours_row(i, &o.offset, &o.size, &o.type,
				      &o.type_ok);
		e.name = abi_erofs_row(i, &e.offset, &e.size, &e.type,
				       &e.type_ok);
		if (!o.name || !e.name)
			break;
		if (strcmp(o.name, e.name)) {
			check(false, "row %u: ours is %s, erofs-utils' is %s",
			      i, o.name, e.name);
			return;
		}
		check(o.offset == e.offset && o.size == e.size,
		      "%s: offset %zu size %zu, erofs-utils: offset %zu "
		      "size %zu", o.name, o.offset, o.size, e.offset, e.size);
		if (!*o.type)	/* a whole-struct sizeof */
			continue;
		check(o.type_ok && e.type_ok && !strcmp(o.type, e.type),
		      "%s: type %s (ours %s, erofs-utils' %s)", o.name,
		      o.type, o.type_ok ? "has it" : "DIFFERS",
		      e.type_ok ? "has it" : "DIFFERS");
	}
	check(!o.name && !e.name, "same number of members (%u): ours %s, "
	      "erofs-utils %s", i, o.name ? "has more" : "ends",
	      e.name ? "has more" : "ends");
}

/* the first layer line: "layer <ref> <platform> <index> ..." */
static int first_layer(const char *path, char *ref, size_t reflen,
		       char *options, size_t optlen)
{
	char line[1024], r[512], plat[128];
	unsigned int index;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "layer %511s %127s %u", r, plat, &index) != 3)
			continue;
		fclose(f);
		snprintf(ref, reflen, "%s", r);
		snprintf(options, optlen, "platform=%s,layer=%u", plat, index);
		return 0;
	}
	fclose(f);
	return -1;
}

int main(int argc, char **argv)
{
	char ref[512], options[160], why[256];
	int bad;

	if (argc > 2) {
		fprintf(stderr, "usage: %s [FIXTURES_TXT]\n", argv[0]);
		return 2;
	}
	check(abi_ours_header_abi() == abi_erofs_header_abi() &&
	      abi_ours_header_abi() == abi_ours_library_abi(),
	      "OCI_REGISTRY_EROFS_ABI %d (after erofs/io.h: %d), library "
	      "%d", abi_ours_header_abi(), abi_erofs_header_abi(),
	      abi_ours_library_abi());
	compare_layouts();

	if (argc == 2) {
		if (check(!first_layer(argv[1], ref, sizeof(ref), options,
				       sizeof(options)),
			  "%s has a layer line", argv[1])) {
			bad = abi_erofs_probe(ref, options, why, sizeof(why));
			check(!bad, "through erofs-utils' struct erofs_vfops: "
			      "%s [%s]: %d bad %s", ref, options, bad, why);
		}
	} else {
		printf("skip the erofs-utils typed run: no FIXTURES_TXT\n");
	}
	printf("%u passed, %u failed\n", nr_passed, nr_failed);
	return nr_failed ? 1 : 0;
}
