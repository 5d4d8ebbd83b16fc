/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * What the two sides of make bench share: c-tests/bench/bench_reads.c (reads
 * through liboci_registry) and c-tests/bench/erofs-ref-driver.c (the same reads
 * through erofs-utils 1.9's own OCI reader).  One copy of the offsets of
 * the random modes, so that both sides read the same bytes, of the sha256
 * in hex they print, of the clock, of number parsing, and of the result
 * line that a crash or the watchdog still completes.
 *
 * Before including it, a program defines BENCH_PROG (its name, for
 * messages) and BENCH_TIMEOUT_ENV (the environment variable with the
 * watchdog's seconds, default 300, 0 for none).  Everything here is
 * static: each program gets its own copy.
 */
#ifndef __BENCH_UTIL_H
#define __BENCH_UTIL_H

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

/* Knuth's MMIX LCG, for the offsets of the random modes. */
#define LCG_MUL		6364136223846793005ULL
#define LCG_ADD		1442695040888963407ULL

/* The start of the result line, ready for the signal handlers. */
static char line_prefix[512];
static size_t line_prefix_len;
/* Set once the result line is out: a later crash must not print another. */
static volatile sig_atomic_t line_done;
/* Where the result line goes (a program may point it elsewhere). */
static int out_fd = STDOUT_FILENO;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set_prefix(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static void set_prefix(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line_prefix, sizeof(line_prefix), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(line_prefix))
		n = sizeof(line_prefix) - 1;
	line_prefix_len = n;
}

static void put(const char *s)
{
	ssize_t r = write(out_fd, s, strlen(s));

	(void)r;
}

static const char *signame(int sig)
{
	switch (sig) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGABRT: return "SIGABRT";
	case SIGFPE: return "SIGFPE";
	case SIGILL: return "SIGILL";
	case SIGPIPE: return "SIGPIPE";
	default: return "other";
	}
}

/* Async-signal-safe: report and leave at once, whatever state we are in. */
static void on_fatal(int sig)
{
	ssize_t r;

	if (line_done) {
		static const char msg[] = BENCH_PROG ": died in cleanup\n";

		r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
		(void)r;
		_exit(4);
	}
	r = write(out_fd, line_prefix, line_prefix_len);
	(void)r;
	if (sig == SIGALRM) {
		put(" result=timeout\n");
	} else {
		put(" result=crash signal=");
		put(signame(sig));
		put("\n");
	}
	_exit(4);
}

/* A crash or BENCH_TIMEOUT_ENV seconds end the line with result=. */
static void arm_watchdog(void)
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL,
				    SIGALRM };
	const char *t = getenv(BENCH_TIMEOUT_ENV);
	unsigned int secs = t && *t ? (unsigned int)strtoul(t, NULL, 10) : 300;
	struct sigaction sa;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fatal;
	sa.sa_flags = SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	/* a dead peer must surface as an error, not kill us silently */
	signal(SIGPIPE, SIG_IGN);
	if (secs)
		alarm(secs);
}

static void hex(const unsigned char *md, unsigned int n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	unsigned int i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[md[i] >> 4];
		out[2 * i + 1] = digits[md[i] & 15];
	}
	out[2 * n] = '\0';
}

/* A sha256 context; a bench without one cannot go on. */
static EVP_MD_CTX *sha_new(void)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) {
		fprintf(stderr, BENCH_PROG ": EVP sha256 init failed\n");
		exit(1);
	}
	return c;
}

/* The digest in hex ("error" if it failed), and the context freed. */
static void sha_done(EVP_MD_CTX *c, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (EVP_DigestFinal_ex(c, md, &n) != 1 || n != 32)
		strcpy(out, "error");
	else
		hex(md, n, out);
	EVP_MD_CTX_free(c);
}

/* A whole non-negative number (decimal, 0x hex or 0 octal), or -EINVAL. */
static int parse_num(const char *s, const char *what, unsigned long long *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	if (errno || end == s || *end || *s == '-') {
		fprintf(stderr, BENCH_PROG ": bad %s: %s\n", what, s);
		return -EINVAL;
	}
	return 0;
}

/*
 * The offsets of the random modes, for a blob of SIZE bytes (LEN <= SIZE):
 *	x = SEED
 *	for i in 0 .. N-1:
 *		x = x * LCG_MUL + LCG_ADD	(mod 2^64)
 *		offset[i] = (x >> 11) % (SIZE - LEN + 1)
 */
static uint64_t *make_offsets(uint64_t seed, size_t n, size_t len,
			      uint64_t size)
{
	uint64_t *off = malloc((n ? n : 1) * sizeof(*off));
	uint64_t x = seed, span = size - len + 1;
	size_t i;

	if (!off) {
		fprintf(stderr, BENCH_PROG ": out of memory\n");
		exit(1);
	}
	for (i = 0; i < n; i++) {
		x = x * LCG_MUL + LCG_ADD;
		off[i] = (x >> 11) % span;
	}
	return off;
}

#endif
