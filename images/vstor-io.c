/*
 * vstor-io: block I/O load and data-integrity checker for the vstor guest.
 *
 * Reads or writes a block device (or file) with O_DIRECT at a given queue
 * depth, using Linux native AIO through raw syscalls so that --qd requests are
 * really in flight at once (no libaio in the guest). Written data follows a
 * deterministic pattern derived from (seed, LBA), so a later run can verify it
 * and misplaced sectors are detected (each 512-byte sector carries its LBA).
 *
 * Built static for i386: gcc -m32 -static -O2 -o vstor-io vstor-io.c
 *
 * Sector pattern (little-endian 32-bit words w[0..127], LBA = byte offset/512):
 *   w[0] = LBA low 32 bits, w[1] = LBA high 32 bits, w[2] = seed,
 *   w[3] = 0x52545356 ("VSTR"), w[4..127] = xorshift32 stream started at
 *   x = fmix32(seed ^ fmix32(lba_lo ^ fmix32(lba_hi + 0x9e3779b9))) (x=1 if 0).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* i386 syscall numbers, in case the headers lack them. */
#ifndef SYS_io_setup
#define SYS_io_setup 245
#define SYS_io_destroy 246
#define SYS_io_getevents 247
#define SYS_io_submit 248
#endif

#define SECTOR 512
#define MAGIC 0x52545356u
#define MAX_QD 1024

/* Kernel AIO ABI (linux/aio_abi.h), declared here to need no kernel headers. */
typedef unsigned long aio_context_t;
enum { IOCB_CMD_PREAD = 0, IOCB_CMD_PWRITE = 1 };
struct iocb {
	uint64_t aio_data;
	uint32_t aio_key;      /* little-endian order: key, then rw_flags */
	uint32_t aio_rw_flags;
	uint16_t aio_lio_opcode;
	int16_t aio_reqprio;
	uint32_t aio_fildes;
	uint64_t aio_buf;
	uint64_t aio_nbytes;
	int64_t aio_offset;
	uint64_t aio_reserved2;
	uint32_t aio_flags;
	uint32_t aio_resfd;
};
struct io_event {
	uint64_t data;
	uint64_t obj;
	int64_t res;
	int64_t res2;
};
_Static_assert(sizeof(struct iocb) == 64, "iocb ABI");
_Static_assert(sizeof(struct io_event) == 32, "io_event ABI");

enum op { OP_READ, OP_WRITE, OP_VERIFY, OP_RANDREAD, OP_RANDWRITE };
static const char *op_names[] = { "read", "write", "verify", "randread", "randwrite" };

struct slot {
	struct iocb cb;
	unsigned char *buf;
	uint64_t offset;
};

static const char *dev;
static enum op op = OP_READ;
static uint32_t bs = 4096, qd = 1, seed = 1;
static uint64_t count, offset, size;
static int have_count, have_size, buffered, do_fsync, check;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("vstor-io: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(2);
}

static void usage(FILE *f)
{
	fputs("usage: vstor-io --dev PATH --op read|write|verify|randread|randwrite\n"
	      "         [--bs N] [--count N] [--qd N] [--seed S] [--offset O] [--size S]\n"
	      "         [--verify] [--fsync] [--buffered]\n"
	      "  --bs      I/O size in bytes, multiple of 512 (default 4096)\n"
	      "  --count   number of I/Os (default: size / bs)\n"
	      "  --qd      requests in flight, 1..1024 (default 1)\n"
	      "  --seed    pattern seed, 32-bit (default 1)\n"
	      "  --offset  start of the region in bytes (default 0)\n"
	      "  --size    length of the region (default: device size - offset)\n"
	      "  --verify  check the pattern on read/randread (verify always does)\n"
	      "  --fsync   fdatasync after writing (included in the timing)\n"
	      "  --buffered  no O_DIRECT (e.g. for files on tmpfs)\n"
	      "Sizes accept k/m/g/t suffixes (powers of 1024).\n"
	      "Exit: 0 ok, 1 I/O error or data mismatch, 2 usage/setup error.\n",
	      f);
}

static uint64_t parse_size(const char *opt, const char *s)
{
	char *end;
	errno = 0;
	uint64_t v = strtoull(s, &end, 0);
	if (errno || end == s)
		die("bad value for %s: %s", opt, s);
	switch (*end) {
	case 't': case 'T': v <<= 10; /* fall through */
	case 'g': case 'G': v <<= 10; /* fall through */
	case 'm': case 'M': v <<= 10; /* fall through */
	case 'k': case 'K': v <<= 10; end++; break;
	case '\0': break;
	default: die("bad value for %s: %s", opt, s);
	}
	if (*end)
		die("bad value for %s: %s", opt, s);
	return v;
}

static uint32_t fmix32(uint32_t h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

static void fill_sector(uint32_t *w, uint64_t lba)
{
	uint32_t lo = (uint32_t)lba, hi = (uint32_t)(lba >> 32);
	uint32_t x = fmix32(seed ^ fmix32(lo ^ fmix32(hi + 0x9e3779b9u)));
	if (!x)
		x = 1;
	w[0] = lo;
	w[1] = hi;
	w[2] = seed;
	w[3] = MAGIC;
	for (int i = 4; i < SECTOR / 4; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		w[i] = x;
	}
}

static void fill_block(unsigned char *buf, uint64_t off)
{
	for (uint32_t s = 0; s < bs; s += SECTOR)
		fill_sector((uint32_t *)(buf + s), (off + s) / SECTOR);
}

static void hex(char *out, const unsigned char *p, int n)
{
	for (int i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

/* Returns 0 if the block holds the expected pattern, else reports and returns 1. */
static int check_block(const unsigned char *buf, uint64_t off)
{
	uint32_t want[SECTOR / 4];
	for (uint32_t s = 0; s < bs; s += SECTOR) {
		const unsigned char *got = buf + s;
		fill_sector(want, (off + s) / SECTOR);
		if (!memcmp(got, want, SECTOR))
			continue;
		int i = 0;
		while (got[i] == ((unsigned char *)want)[i])
			i++;
		int n = SECTOR - i < 8 ? SECTOR - i : 8;
		char e[17], g[17];
		hex(e, (unsigned char *)want + i, n);
		hex(g, got + i, n);
		const uint32_t *gw = (const uint32_t *)got;
		uint64_t got_lba = gw[0] | (uint64_t)gw[1] << 32;
		printf("vstor-io: MISMATCH offset=%" PRIu64 " lba=%" PRIu64 " expected=%s got=%s"
		       " sector_lba=%" PRIu64 " sector_seed=%" PRIu32 " sector_magic=%s\n",
		       off + s + i, (off + s) / SECTOR, e, g, got_lba, gw[2],
		       gw[3] == MAGIC ? "ok" : "bad");
		return 1;
	}
	return 0;
}

/* xorshift64* for random block selection. */
static uint64_t rng_state;
static uint64_t rng_next(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		} else if (!strcmp(a, "--verify")) {
			check = 1;
		} else if (!strcmp(a, "--fsync")) {
			do_fsync = 1;
		} else if (!strcmp(a, "--buffered")) {
			buffered = 1;
		} else if (i + 1 < argc && a[0] == '-' && a[1] == '-') {
			const char *v = argv[++i];
			if (!strcmp(a, "--dev")) {
				dev = v;
			} else if (!strcmp(a, "--op")) {
				int k;
				for (k = 0; k < 5 && strcmp(v, op_names[k]); k++)
					;
				if (k == 5)
					die("unknown --op %s", v);
				op = (enum op)k;
			} else if (!strcmp(a, "--bs")) {
				uint64_t b = parse_size(a, v);
				if (!b || b % SECTOR || b > (64u << 20))
					die("--bs must be a multiple of 512, at most 64M");
				bs = (uint32_t)b;
			} else if (!strcmp(a, "--count")) {
				count = parse_size(a, v);
				have_count = 1;
			} else if (!strcmp(a, "--qd")) {
				uint64_t q = parse_size(a, v);
				if (q < 1 || q > MAX_QD)
					die("--qd must be 1..%d", MAX_QD);
				qd = (uint32_t)q;
			} else if (!strcmp(a, "--seed")) {
				seed = (uint32_t)parse_size(a, v);
			} else if (!strcmp(a, "--offset")) {
				offset = parse_size(a, v);
			} else if (!strcmp(a, "--size")) {
				size = parse_size(a, v);
				have_size = 1;
			} else {
				die("unknown option %s (see --help)", a);
			}
		} else {
			usage(stderr);
			exit(2);
		}
	}
	if (!dev)
		die("--dev is required (see --help)");
	if (offset % SECTOR)
		die("--offset must be a multiple of 512");
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);

	int writing = op == OP_WRITE || op == OP_RANDWRITE;
	int rnd = op == OP_RANDREAD || op == OP_RANDWRITE;
	int verifying = op == OP_VERIFY || (check && !writing);

	int flags = (writing ? O_RDWR : O_RDONLY) | (buffered ? 0 : O_DIRECT) | O_LARGEFILE;
	struct stat st;
	int fd = open(dev, flags | (writing && stat(dev, &st) ? O_CREAT : 0), 0644);
	if (fd < 0)
		die("open %s: %s%s", dev, strerror(errno),
		    errno == EINVAL && !buffered ? " (O_DIRECT unsupported here? try --buffered)" : "");
	if (fstat(fd, &st))
		die("fstat %s: %s", dev, strerror(errno));

	uint64_t devsize = (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &devsize))
			die("BLKGETSIZE64 %s: %s", dev, strerror(errno));
		int lbs = 0;
		if (!buffered && !ioctl(fd, BLKSSZGET, &lbs) && lbs > 0 && (bs % lbs || offset % lbs))
			die("--bs and --offset must be multiples of the device's %d-byte logical blocks", lbs);
	}
	if (!have_size) {
		if (offset > devsize)
			die("--offset beyond the end of %s (%" PRIu64 " bytes)", dev, devsize);
		size = devsize - offset;
	}
	uint64_t nblocks = size / bs;
	if (!have_count)
		count = nblocks;
	if (!nblocks || !count)
		die("nothing to do: region of %" PRIu64 " bytes, bs %" PRIu32 ", count %" PRIu64, size, bs, count);
	if (!rnd && count > nblocks)
		die("--count %" PRIu64 " exceeds the region (%" PRIu64 " blocks)", count, nblocks);
	if (qd > count)
		qd = (uint32_t)count;

	aio_context_t ctx = 0;
	if (syscall(SYS_io_setup, qd, &ctx))
		die("io_setup(%u): %s", qd, strerror(errno));

	struct slot *slots = calloc(qd, sizeof(*slots));
	uint32_t *free_list = calloc(qd, sizeof(*free_list));
	struct iocb **batch = calloc(qd, sizeof(*batch));
	struct io_event *events = calloc(qd, sizeof(*events));
	if (!slots || !free_list || !batch || !events)
		die("out of memory");
	for (uint32_t i = 0; i < qd; i++) {
		if (posix_memalign((void **)&slots[i].buf, 4096, bs))
			die("out of memory for %u buffers of %u bytes", qd, bs);
		free_list[i] = i;
	}
	uint32_t nfree = qd;

	rng_state = 0x9e3779b97f4a7c15ull ^ ((uint64_t)seed << 1 | 1);
	uint64_t issued = 0, completed = 0, inflight = 0;
	int failed = 0;
	double t0 = now_ms();

	while (completed < count && !failed) {
		/* Fill the queue up to qd. */
		uint32_t nb = 0;
		while (nfree && issued + nb < count) {
			struct slot *s = &slots[free_list[--nfree]];
			uint64_t blk = rnd ? rng_next() % nblocks : issued + nb;
			s->offset = offset + blk * bs;
			if (writing)
				fill_block(s->buf, s->offset);
			memset(&s->cb, 0, sizeof(s->cb));
			s->cb.aio_data = (uint64_t)(s - slots);
			s->cb.aio_lio_opcode = writing ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
			s->cb.aio_fildes = (uint32_t)fd;
			s->cb.aio_buf = (uint64_t)(uintptr_t)s->buf;
			s->cb.aio_nbytes = bs;
			s->cb.aio_offset = (int64_t)s->offset;
			batch[nb++] = &s->cb;
		}
		uint32_t done = 0;
		while (done < nb) {
			long r = syscall(SYS_io_submit, ctx, (long)(nb - done), batch + done);
			if (r > 0) {
				done += (uint32_t)r;
				inflight += (uint64_t)r;
			} else if (r < 0 && errno == EINTR) {
				continue;
			} else if (r < 0 && errno == EAGAIN && inflight) {
				break; /* reap first; the rest is resubmitted below */
			} else {
				die("io_submit: %s", r ? strerror(errno) : "submitted nothing");
			}
		}
		issued += done;
		for (uint32_t i = done; i < nb; i++) /* give back unsubmitted slots */
			free_list[nfree++] = (uint32_t)(batch[i]->aio_data);

		long n = syscall(SYS_io_getevents, ctx, 1L, (long)qd, events, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("io_getevents: %s", strerror(errno));
		}
		for (long i = 0; i < n; i++) {
			struct slot *s = &slots[events[i].data];
			inflight--;
			completed++;
			free_list[nfree++] = (uint32_t)events[i].data;
			if (events[i].res != (int64_t)bs) {
				if (events[i].res < 0)
					printf("vstor-io: IO-ERROR op=%s offset=%" PRIu64 " error=%s\n", op_names[op],
					       s->offset, strerror((int)-events[i].res));
				else
					printf("vstor-io: SHORT-IO op=%s offset=%" PRIu64 " bytes=%" PRId64 " expected=%u\n",
					       op_names[op], s->offset, events[i].res, bs);
				failed = 1;
			} else if (verifying && check_block(s->buf, s->offset)) {
				failed = 1;
			}
		}
	}
	if (!failed && writing && do_fsync && fdatasync(fd)) {
		printf("vstor-io: IO-ERROR op=fsync error=%s\n", strerror(errno));
		failed = 1;
	}
	double ms = now_ms() - t0;
	syscall(SYS_io_destroy, ctx); /* waits for anything still in flight */
	close(fd);
	if (failed)
		return 1;

	uint64_t bytes = completed * bs;
	double secs = ms > 0 ? ms / 1000.0 : 1e-9;
	printf("vstor-io: op=%s bytes=%" PRIu64 " ios=%" PRIu64 " bs=%u qd=%u elapsed_ms=%.1f MBps=%.2f iops=%.0f%s\n",
	       op_names[op], bytes, completed, bs, qd, ms, bytes / secs / 1e6, completed / secs,
	       verifying ? " verified=yes" : "");
	return 0;
}
