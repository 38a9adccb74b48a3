/*
 * vstor-dmajit: proves that a device's DMA into guest memory is seen by the guest even where the
 * emulator has already compiled the bytes as code (v86's JIT must forget them).
 *
 * It runs a tiny function until it is hot, asks the vstor test fixture (PCI 1234:7573, BAR1 mapped
 * through sysfs) to DMA-copy new machine code over that function's physical page, waits for the
 * DMA to finish, and calls the function again. Exit 0 when the new code ran, 1 when the old one
 * did, 2 on setup errors.
 *
 * `fill` mode starts a slow fill DMA (DELAY_US before it completes) into a locked page, waits for
 * it and checks every byte: the host can save the machine while it is in flight and restore it in
 * another process, where the transfer must still complete.
 *
 * usage: vstor-dmajit code RESOURCE1
 *        vstor-dmajit fill RESOURCE1 DELAY_US
 * RESOURCE1 is /sys/bus/pci/devices/0000:00:NN.0/resource1 of the fixture.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { REG_MAGIC = 0x00, REG_DMA_SRC = 0x0c, REG_DMA_DST = 0x10, REG_DMA_LEN = 0x14, REG_DMA_FILL = 0x18,
       REG_DMA_DELAY_US = 0x1c, REG_DMA_CMD = 0x20, REG_DMA_STATUS = 0x24 };
#define FIXTURE_MAGIC 0x76737472u
#define STATUS_BUSY 1u
#define STATUS_DONE 2u
#define STATUS_ERROR 4u

static volatile uint32_t *regs;

static uint32_t rd(int off) { return regs[off / 4]; }
static void wr(int off, uint32_t v) { regs[off / 4] = v; }

/* Physical address of a locked page of ours, from /proc/self/pagemap (needs root). */
static uint64_t phys_of(void *p) {
    long page = sysconf(_SC_PAGESIZE);
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) { perror("pagemap"); exit(2); }
    uint64_t entry = 0;
    off_t at = (off_t)((uintptr_t)p / page) * 8;
    if (pread(fd, &entry, 8, at) != 8) { perror("pagemap read"); exit(2); }
    close(fd);
    if (!(entry >> 63)) { fprintf(stderr, "page not present\n"); exit(2); }
    uint64_t pfn = entry & ((1ull << 55) - 1);
    if (!pfn) { fprintf(stderr, "pagemap hides PFNs (not root?)\n"); exit(2); }
    return pfn * page + ((uintptr_t)p % page);
}

static uint32_t wait_dma(void) {
    uint32_t st;
    for (long spins = 0; ((st = rd(REG_DMA_STATUS)) & STATUS_BUSY); spins++) {
        if (spins > 400000000) { fprintf(stderr, "DMA never finished\n"); exit(2); }
    }
    if (st & STATUS_ERROR) { fprintf(stderr, "DMA error, status %x\n", st); exit(2); }
    return st;
}

static int fill_mode(uint32_t delay_us) {
    long page = sysconf(_SC_PAGESIZE);
    uint8_t *buf = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) { perror("mmap"); return 2; }
    memset(buf, 0, page);
    if (mlock(buf, page)) { perror("mlock"); return 2; }
    uint64_t phys = phys_of(buf);
    wr(REG_DMA_DST, (uint32_t)phys);
    wr(REG_DMA_LEN, page);
    wr(REG_DMA_FILL, 0x5a);
    wr(REG_DMA_DELAY_US, delay_us);
    wr(REG_DMA_CMD, 1 | 2); /* start, fill */
    printf("STARTED %#llx\n", (unsigned long long)phys);
    fflush(stdout);
    wait_dma();
    for (long i = 0; i < page; i++) {
        if (buf[i] != 0x5a) { printf("RESULT bad at %ld: %02x\n", i, buf[i]); return 1; }
    }
    printf("RESULT ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s code|fill RESOURCE1 [DELAY_US]\n", argv[0]); return 2; }
    int fd = open(argv[2], O_RDWR | O_SYNC);
    if (fd < 0) { perror(argv[2]); return 2; }
    regs = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (regs == MAP_FAILED) { perror("mmap BAR"); return 2; }
    if (rd(REG_MAGIC) != FIXTURE_MAGIC) { fprintf(stderr, "no fixture: magic %08x\n", rd(REG_MAGIC)); return 2; }
    if (!strcmp(argv[1], "fill")) return fill_mode(argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 0) : 0);
    if (strcmp(argv[1], "code")) { fprintf(stderr, "unknown mode %s\n", argv[1]); return 2; }

    long page = sysconf(_SC_PAGESIZE);
    uint8_t *code = mmap(NULL, page, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *src = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED || src == MAP_FAILED) { perror("mmap"); return 2; }
    static const uint8_t old_code[] = { 0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3 }; /* mov eax, 1; ret */
    static const uint8_t new_code[] = { 0xb8, 0x02, 0x00, 0x00, 0x00, 0xc3 }; /* mov eax, 2; ret */
    memcpy(code, old_code, sizeof old_code);
    memcpy(src, new_code, sizeof new_code);
    if (mlock(code, page) || mlock(src, page)) { perror("mlock"); return 2; }
    int (*fn)(void) = (int (*)(void))code;

    /* Hot enough for v86 to compile the page. */
    long sum = 0;
    for (int i = 0; i < 200000; i++) sum += fn();
    if (sum != 200000) { fprintf(stderr, "warm-up returned %ld\n", sum); return 2; }

    uint64_t code_phys = phys_of(code), src_phys = phys_of(src);
    if (code_phys >> 32 || src_phys >> 32) { fprintf(stderr, "memory above 4 GiB\n"); return 2; }
    wr(REG_DMA_SRC, (uint32_t)src_phys);
    wr(REG_DMA_DST, (uint32_t)code_phys);
    wr(REG_DMA_LEN, sizeof new_code);
    wr(REG_DMA_DELAY_US, 0);
    wr(REG_DMA_CMD, 1);
    wait_dma();

    int after = 0;
    for (int i = 0; i < 1000; i++) after = fn();
    printf("vstor-dmajit: code %#llx src %#llx before=1 after=%d\n",
           (unsigned long long)code_phys, (unsigned long long)src_phys, after);
    return after == 2 ? 0 : 1;
}
