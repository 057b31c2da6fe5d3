/*
 * heapwork: drives libpmemobj's allocator so that poolsync's heap walker can
 * be checked against the real thing.
 *
 * The tests of crates/header and `cargo xtask fixtures` compile it with
 * `cc heapwork.c -lpmemobj` and run it on pools made by `pmempool create`.
 *
 * Usage:
 *   heapwork <pool> session <seed> <nsmall> <nlarge> <free-every> <bytes>
 *       Open the pool, allocate <nsmall> objects of assorted run sizes
 *       (default classes and three custom ones: no header, 4 KiB aligned,
 *       legacy header) and <nlarge> large objects (a run's or several
 *       chunks), write a persisted pattern into the first <bytes> bytes of
 *       each new object (0 = all of it), run a transaction whose undo log
 *       needs an extension, then free every <free-every>-th object of the
 *       pool (0 = none) and close. Nothing is allocated after the frees;
 *       each freed object prints "freed <offset> <usable size>".
 *   heapwork <pool> list
 *       Print "obj <offset> <usable size>" for every object that
 *       pmemobj_first/pmemobj_next visit, and "root <offset> <size>".
 *
 * <pool> is a pool file or a pool set file. Offsets are pool offsets
 * (PMEMoid.off) in decimal. Every write to pool memory is persisted, so
 * all replicas of a pool set receive it. Exit status: 0 success, 1 failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpmemobj.h>

#define LAYOUT "heapwork"
#define ROOT_BYTES 16384
#define TX_BYTES 6000

struct root {
	uint64_t counter;
	unsigned char data[ROOT_BYTES];
};

/* Custom allocation classes; ids are assigned by libpmemobj at run time. */
static unsigned Class_none;
static unsigned Class_aligned;
static unsigned Class_legacy;

static int
add_class(PMEMobjpool *pop, size_t unit, size_t align, unsigned units,
	enum pobj_header_type htype, unsigned *id)
{
	struct pobj_alloc_class_desc d;
	memset(&d, 0, sizeof(d));
	d.unit_size = unit;
	d.alignment = align;
	d.units_per_block = units;
	d.header_type = htype;
	if (pmemobj_ctl_set(pop, "heap.alloc_class.new.desc", &d) != 0) {
		fprintf(stderr, "alloc class %zu: %s\n", unit,
			pmemobj_errormsg());
		return -1;
	}
	*id = d.class_id;
	return 0;
}

static unsigned char
pattern(uint64_t seed, uint64_t off, size_t i)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ULL + off + i * 31;
	x ^= x >> 29;
	return (unsigned char)(x | 1);
}

static int
fill(PMEMobjpool *pop, PMEMoid oid, uint64_t seed, size_t limit)
{
	unsigned char *p = pmemobj_direct(oid);
	size_t n = pmemobj_alloc_usable_size(oid);
	if (limit != 0 && limit < n)
		n = limit;
	for (size_t i = 0; i < n; i++)
		p[i] = pattern(seed, oid.off, i);
	pmemobj_persist(pop, p, n);
	return 0;
}

static int
session(PMEMobjpool *pop, uint64_t seed, unsigned nsmall, unsigned nlarge,
	unsigned every, size_t bytes)
{
	static const size_t small[] = {1, 40, 100, 128, 300, 1000, 2000,
		5000, 20000};
	static const size_t large[] = {600000, 2800000, 4000000};

	if (add_class(pop, 200, 0, 500, POBJ_HEADER_NONE, &Class_none) ||
	    add_class(pop, 4096, 4096, 64, POBJ_HEADER_COMPACT,
		&Class_aligned) ||
	    add_class(pop, 256, 0, 300, POBJ_HEADER_LEGACY, &Class_legacy))
		return 1;

	PMEMoid root = pmemobj_root(pop, sizeof(struct root));
	if (OID_IS_NULL(root)) {
		fprintf(stderr, "root: %s\n", pmemobj_errormsg());
		return 1;
	}

	for (unsigned i = 0; i < nsmall; i++) {
		PMEMoid oid;
		int ret;
		size_t size = small[(i + seed) % (sizeof(small) /
			sizeof(small[0]))];
		switch (i % 7) {
		case 4:
			ret = pmemobj_xalloc(pop, &oid, 150, 2,
				POBJ_CLASS_ID(Class_none), NULL, NULL);
			break;
		case 5:
			ret = pmemobj_xalloc(pop, &oid, 100 + i % 3000, 3,
				POBJ_CLASS_ID(Class_aligned), NULL, NULL);
			break;
		case 6:
			ret = pmemobj_xalloc(pop, &oid, 200 + i % 700, 4,
				POBJ_CLASS_ID(Class_legacy), NULL, NULL);
			break;
		default:
			ret = pmemobj_alloc(pop, &oid, size, 1, NULL, NULL);
		}
		if (ret != 0) {
			fprintf(stderr, "alloc %u: %s\n", i,
				pmemobj_errormsg());
			return 1;
		}
		fill(pop, oid, seed, bytes);
	}
	for (unsigned i = 0; i < nlarge; i++) {
		PMEMoid oid;
		size_t size = large[(i + seed) % (sizeof(large) /
			sizeof(large[0]))];
		if (pmemobj_alloc(pop, &oid, size, 5, NULL, NULL) != 0) {
			fprintf(stderr, "alloc large %u: %s\n", i,
				pmemobj_errormsg());
			return 1;
		}
		fill(pop, oid, seed, bytes);
	}

	/* A snapshot bigger than the lane's undo log forces an extension. */
	struct root *r = pmemobj_direct(root);
	int failed = 0;
	TX_BEGIN(pop) {
		pmemobj_tx_add_range(root, 0, sizeof(uint64_t) + TX_BYTES);
		r->counter += 1;
		for (size_t i = 0; i < TX_BYTES; i++)
			r->data[i] = pattern(seed + 7, i, r->counter);
	} TX_ONABORT {
		failed = 1;
	} TX_END
	if (failed) {
		fprintf(stderr, "transaction: %s\n", pmemobj_errormsg());
		return 1;
	}

	if (every != 0) {
		unsigned n = 0;
		PMEMoid oid = pmemobj_first(pop);
		while (!OID_IS_NULL(oid)) {
			PMEMoid next = pmemobj_next(oid);
			if (++n % every == 0) {
				printf("freed %llu %zu\n",
					(unsigned long long)oid.off,
					pmemobj_alloc_usable_size(oid));
				pmemobj_free(&oid);
			}
			oid = next;
		}
	}

	return 0;
}

static int
list(PMEMobjpool *pop)
{
	PMEMoid oid = pmemobj_first(pop);
	while (!OID_IS_NULL(oid)) {
		printf("obj %llu %zu\n", (unsigned long long)oid.off,
			pmemobj_alloc_usable_size(oid));
		oid = pmemobj_next(oid);
	}
	size_t rsize = pmemobj_root_size(pop);
	if (rsize != 0) {
		PMEMoid root = pmemobj_root(pop, rsize);
		printf("root %llu %zu\n", (unsigned long long)root.off,
			pmemobj_alloc_usable_size(root));
	}
	return 0;
}

int
main(int argc, char *argv[])
{
	if (argc < 3) {
		fprintf(stderr, "usage: heapwork <pool> session|list ...\n");
		return 1;
	}
	PMEMobjpool *pop = pmemobj_open(argv[1], LAYOUT);
	if (pop == NULL) {
		fprintf(stderr, "open %s: %s\n", argv[1], pmemobj_errormsg());
		return 1;
	}
	int ret;
	if (strcmp(argv[2], "session") == 0 && argc == 8) {
		ret = session(pop, strtoull(argv[3], NULL, 10),
			(unsigned)strtoul(argv[4], NULL, 10),
			(unsigned)strtoul(argv[5], NULL, 10),
			(unsigned)strtoul(argv[6], NULL, 10),
			(size_t)strtoull(argv[7], NULL, 10));
	} else if (strcmp(argv[2], "list") == 0 && argc == 3) {
		ret = list(pop);
	} else {
		fprintf(stderr, "usage: heapwork <pool> session|list ...\n");
		ret = 1;
	}
	pmemobj_close(pop);
	return ret;
}
