/*
 * objclient: a tiny libpmemobj client used by poolsync's interop tests.
 *
 * It proves that pools made or touched by poolsync are usable by the real
 * libpmemobj, and it can hold locks the way a running PMDK application does.
 * The test helper compiles it once per test run with `cc ... -lpmemobj`.
 *
 * Usage:
 *   objclient write <pool> <layout|-> <bytes>     store <bytes> in the root object
 *   objclient read  <pool> <layout|-> <bytes>     exit 0 iff the root holds <bytes>
 *   objclient hold  <pool> <layout|-> <seconds>   keep the pool open (and locked)
 *   objclient lock  <file> <seconds>              flock(LOCK_EX) one file
 *   objclient fill  <pool> <layout|-> <nbytes> <seed>
 *                                  store a <nbytes> pattern made from <seed>
 *   objclient verify <pool> <layout|-> <nbytes> <seed>
 *                                  exit 0 iff the root holds that pattern
 *
 * <layout> '-' means "no layout" (pmemobj_open with NULL). <bytes> is text,
 * or hex when it starts with "hex:" (e.g. hex:00ff10). The root object is
 * { uint64_t len; unsigned char data[len]; }.
 *
 * "fill" and "verify" use the same root object; the pattern is a
 * deterministic function of <seed> and the byte index (pattern_byte), so
 * big roots that span several part files can be checked without passing
 * their bytes on the command line. "fill" prints
 * "filled <nbytes> bytes at offset <off>" where <off> is the pool offset of
 * the first data byte.
 *
 * Exit status: 0 success, 1 any failure (open failure, mismatch, bad usage).
 * Every libpmemobj failure prints pmemobj_errormsg() to stderr; "hold" and
 * "lock" print "ready" on stdout (flushed) once the pool/file is held.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <libpmemobj.h>

struct root {
	uint64_t len;
	unsigned char data[];
};

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes the <bytes> argument into a fresh buffer; returns 0 on success. */
static int
decode_bytes(const char *arg, unsigned char **out, size_t *len)
{
	if (strncmp(arg, "hex:", 4) == 0) {
		const char *h = arg + 4;
		size_t n = strlen(h);
		if (n % 2 != 0) {
			fprintf(stderr, "objclient: odd number of hex digits\n");
			return -1;
		}
		unsigned char *buf = malloc(n / 2 + 1);
		if (buf == NULL)
			return -1;
		for (size_t i = 0; i < n / 2; i++) {
			int hi = hexval(h[2 * i]);
			int lo = hexval(h[2 * i + 1]);
			if (hi < 0 || lo < 0) {
				fprintf(stderr, "objclient: bad hex digit\n");
				free(buf);
				return -1;
			}
			buf[i] = (unsigned char)(hi * 16 + lo);
		}
		*out = buf;
		*len = n / 2;
		return 0;
	}
	size_t n = strlen(arg);
	unsigned char *buf = malloc(n + 1);
	if (buf == NULL)
		return -1;
	memcpy(buf, arg, n);
	*out = buf;
	*len = n;
	return 0;
}

static PMEMobjpool *
open_pool(const char *path, const char *layout)
{
	const char *l = strcmp(layout, "-") == 0 ? NULL : layout;
	PMEMobjpool *pop = pmemobj_open(path, l);
	if (pop == NULL)
		fprintf(stderr, "objclient: pmemobj_open(%s, %s) failed: %s\n",
			path, l == NULL ? "NULL" : l, pmemobj_errormsg());
	return pop;
}

static int
cmd_write(const char *path, const char *layout, const char *arg)
{
	unsigned char *bytes;
	size_t len;
	if (decode_bytes(arg, &bytes, &len) != 0)
		return 1;
	PMEMobjpool *pop = open_pool(path, layout);
	if (pop == NULL) {
		free(bytes);
		return 1;
	}
	PMEMoid oid = pmemobj_root(pop, sizeof(struct root) + len);
	if (OID_IS_NULL(oid)) {
		fprintf(stderr, "objclient: pmemobj_root failed: %s\n",
			pmemobj_errormsg());
		pmemobj_close(pop);
		free(bytes);
		return 1;
	}
	struct root *r = pmemobj_direct(oid);
	pmemobj_memcpy_persist(pop, r->data, bytes, len);
	r->len = len;
	pmemobj_persist(pop, &r->len, sizeof(r->len));
	pmemobj_close(pop);
	free(bytes);
	printf("wrote %zu bytes\n", len);
	return 0;
}

static int
cmd_read(const char *path, const char *layout, const char *arg)
{
	unsigned char *want;
	size_t len;
	if (decode_bytes(arg, &want, &len) != 0)
		return 1;
	PMEMobjpool *pop = open_pool(path, layout);
	if (pop == NULL) {
		free(want);
		return 1;
	}
	size_t rsize = pmemobj_root_size(pop);
	if (rsize < sizeof(struct root)) {
		fprintf(stderr, "objclient: no root object (root size %zu)\n",
			rsize);
		pmemobj_close(pop);
		free(want);
		return 1;
	}
	struct root *r = pmemobj_direct(pmemobj_root(pop, rsize));
	int equal = r->len == len && r->len <= rsize - sizeof(struct root) &&
		memcmp(r->data, want, len) == 0;
	if (!equal) {
		uint64_t shown = r->len;
		if (shown > rsize - sizeof(struct root))
			shown = rsize - sizeof(struct root);
		fprintf(stderr, "objclient: root holds %llu bytes: hex:",
			(unsigned long long)r->len);
		for (uint64_t i = 0; i < shown && i < 256; i++)
			fprintf(stderr, "%02x", r->data[i]);
		fprintf(stderr, "\n");
	} else {
		printf("read %zu matching bytes\n", len);
	}
	pmemobj_close(pop);
	free(want);
	return equal ? 0 : 1;
}

static int
cmd_hold(const char *path, const char *layout, const char *secs)
{
	PMEMobjpool *pop = open_pool(path, layout);
	if (pop == NULL)
		return 1;
	printf("ready\n");
	fflush(stdout);
	sleep((unsigned)atoi(secs));
	pmemobj_close(pop);
	return 0;
}

static int
cmd_lock(const char *path, const char *secs)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "objclient: open %s: %s\n", path,
			strerror(errno));
		return 1;
	}
	if (flock(fd, LOCK_EX) != 0) {
		fprintf(stderr, "objclient: flock %s: %s\n", path,
			strerror(errno));
		close(fd);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	sleep((unsigned)atoi(secs));
	close(fd);
	return 0;
}

/* Byte <i> of the fill pattern for <seed>: splitmix64 of the 8-byte word index. */
static unsigned char
pattern_byte(uint64_t seed, uint64_t i)
{
	uint64_t z = seed * 0x9E3779B97F4A7C15ULL + (i / 8) + 1;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	z ^= z >> 31;
	return (unsigned char)(z >> (8 * (i % 8)));
}

/* Parses a decimal unsigned argument; returns 0 on success. */
static int
parse_u64(const char *arg, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || arg[0] == '-') {
		fprintf(stderr, "objclient: not a number: %s\n", arg);
		return -1;
	}
	*out = v;
	return 0;
}

static int
cmd_fill(const char *path, const char *layout, const char *nbytes,
	const char *seedarg)
{
	uint64_t len, seed;
	if (parse_u64(nbytes, &len) != 0 || parse_u64(seedarg, &seed) != 0)
		return 1;
	PMEMobjpool *pop = open_pool(path, layout);
	if (pop == NULL)
		return 1;
	PMEMoid oid = pmemobj_root(pop, sizeof(struct root) + len);
	if (OID_IS_NULL(oid)) {
		fprintf(stderr, "objclient: pmemobj_root failed: %s\n",
			pmemobj_errormsg());
		pmemobj_close(pop);
		return 1;
	}
	struct root *r = pmemobj_direct(oid);
	for (uint64_t i = 0; i < len; i++)
		r->data[i] = pattern_byte(seed, i);
	/* The persist is what libpmemobj replicates to the other replicas. */
	pmemobj_persist(pop, r->data, len);
	r->len = len;
	pmemobj_persist(pop, &r->len, sizeof(r->len));
	unsigned long long off =
		(unsigned long long)(oid.off + offsetof(struct root, data));
	pmemobj_close(pop);
	printf("filled %llu bytes at offset %llu\n", (unsigned long long)len,
		off);
	return 0;
}

static int
cmd_verify(const char *path, const char *layout, const char *nbytes,
	const char *seedarg)
{
	uint64_t len, seed;
	if (parse_u64(nbytes, &len) != 0 || parse_u64(seedarg, &seed) != 0)
		return 1;
	PMEMobjpool *pop = open_pool(path, layout);
	if (pop == NULL)
		return 1;
	size_t rsize = pmemobj_root_size(pop);
	if (rsize < sizeof(struct root) || len > rsize - sizeof(struct root)) {
		fprintf(stderr, "objclient: root object too small (%zu bytes)\n",
			rsize);
		pmemobj_close(pop);
		return 1;
	}
	struct root *r = pmemobj_direct(pmemobj_root(pop, rsize));
	int ok = 1;
	if (r->len != len) {
		fprintf(stderr, "objclient: root holds %llu bytes, not %llu\n",
			(unsigned long long)r->len, (unsigned long long)len);
		ok = 0;
	}
	for (uint64_t i = 0; ok && i < len; i++) {
		if (r->data[i] != pattern_byte(seed, i)) {
			fprintf(stderr,
				"objclient: pattern mismatch at data byte %llu: "
				"0x%02x, expected 0x%02x\n",
				(unsigned long long)i, r->data[i],
				pattern_byte(seed, i));
			ok = 0;
		}
	}
	pmemobj_close(pop);
	if (ok)
		printf("verified %llu bytes\n", (unsigned long long)len);
	return ok ? 0 : 1;
}

static int
usage(void)
{
	fprintf(stderr,
		"usage: objclient write|read|hold <pool> <layout|-> <arg>\n"
		"       objclient fill|verify <pool> <layout|-> <nbytes> <seed>\n"
		"       objclient lock <file> <seconds>\n");
	return 1;
}

int
main(int argc, char *argv[])
{
	if (argc == 4 && strcmp(argv[1], "lock") == 0)
		return cmd_lock(argv[2], argv[3]);
	if (argc == 6 && strcmp(argv[1], "fill") == 0)
		return cmd_fill(argv[2], argv[3], argv[4], argv[5]);
	if (argc == 6 && strcmp(argv[1], "verify") == 0)
		return cmd_verify(argv[2], argv[3], argv[4], argv[5]);
	if (argc != 5)
		return usage();
	if (strcmp(argv[1], "write") == 0)
		return cmd_write(argv[2], argv[3], argv[4]);
	if (strcmp(argv[1], "read") == 0)
		return cmd_read(argv[2], argv[3], argv[4]);
	if (strcmp(argv[1], "hold") == 0)
		return cmd_hold(argv[2], argv[3], argv[4]);
	return usage();
}
