/**
 * File I/O benchmark: our raw backend (NodeFileOpener -> request queue -> RawBackend) against
 * plain positioned `fs.read` / `fs.write` on a descriptor, in the same run, on a 256 MiB file in
 * the page cache: 1 MiB sequential read and write and 4 KiB random read at queue depths 1, 4 and
 * 16. Then the queue's maxInFlight at 4, 8 and 16 under a queue depth of 16 (how its default was
 * chosen). Medians of interleaved runs; MB = 10^6 bytes.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { openRaw, type RawBackend } from "../media/formats/raw/raw.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { DEFAULT_MAX_IN_FLIGHT } from "../media/io/request-queue.js";

const FILE_SIZE = 256 << 20;
const SEQ = 1 << 20;
const RAND = 4096;

interface Target {
  read(pos: number, buf: Uint8Array): Promise<unknown>;
  write(pos: number, buf: Uint8Array): Promise<unknown>;
}

function fsTarget(fd: number): Target {
  return {
    read: (pos, buf) => new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, pos, (err, n) => (err ? reject(err) : resolve(n)))),
    write: (pos, buf) => new Promise((resolve, reject) => fs.write(fd, buf, 0, buf.length, pos, (err, n) => (err ? reject(err) : resolve(n)))),
  };
}

const backendTarget = (b: RawBackend): Target => b;

interface Workload {
  name: string;
  unit: "MB/s" | "IOPS";
  size: number;
  op: "read" | "write";
  /** Offsets in order of submission. */
  offsets: number[];
}

/** Run `offsets` with `depth` requests in flight; seconds elapsed. */
async function run(target: Target, w: Workload, depth: number, buffers: Uint8Array[]): Promise<number> {
  let next = 0;
  const t0 = process.hrtime.bigint();
  const worker = async (buf: Uint8Array) => {
    while (next < w.offsets.length) {
      const pos = w.offsets[next++];
      await (w.op === "read" ? target.read(pos, buf) : target.write(pos, buf));
    }
  };
  await Promise.all(buffers.slice(0, depth).map((b) => worker(b.subarray(0, w.size))));
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Seeded xorshift, so every contender gets the same random offsets. */
function randomOffsets(count: number, size: number, block: number, seed = 0x9e3779b9): number[] {
  let x = seed >>> 0;
  const blocks = size / block;
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.push((x % blocks) * block);
  }
  return out;
}

function rate(w: Workload, seconds: number): number {
  return w.unit === "MB/s" ? (w.offsets.length * w.size) / 1e6 / seconds : w.offsets.length / seconds;
}

const fmt = (v: number, unit: string) => (unit === "MB/s" ? `${v.toFixed(0)} MB/s` : `${(v / 1000).toFixed(1)} k IOPS`);

export async function ioBench(runs = Number(process.env.BENCH_RUNS ?? 5)): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-iobench-"));
  const file = path.join(dir, "disk.raw");
  const opener = new NodeFileOpener();
  const backends: RawBackend[] = [];
  let fd = -1;
  try {
    // The file, written once and read once so it sits in the page cache.
    const fill = new Uint8Array(SEQ);
    for (let i = 0; i < fill.length; i++) fill[i] = (i * 131) & 0xff;
    fd = fs.openSync(file, "w+");
    for (let pos = 0; pos < FILE_SIZE; pos += SEQ) fs.writeSync(fd, fill, 0, SEQ, pos);
    for (let pos = 0; pos < FILE_SIZE; pos += SEQ) fs.readSync(fd, fill, 0, SEQ, pos);

    // Touched buffers, one per request in flight (fresh memory costs page faults, not I/O).
    const buffers = Array.from({ length: 16 }, () => new Uint8Array(SEQ).fill(0x5a));
    const seq = Array.from({ length: FILE_SIZE / SEQ }, (_, i) => i * SEQ);
    const workloads: Workload[] = [
      { name: "1 MiB sequential read", unit: "MB/s", size: SEQ, op: "read", offsets: seq },
      { name: "1 MiB sequential write", unit: "MB/s", size: SEQ, op: "write", offsets: seq },
      { name: "4 KiB random read", unit: "IOPS", size: RAND, op: "read", offsets: randomOffsets(20000, FILE_SIZE, RAND) },
    ];
    const ours = await openRaw(opener, file);
    backends.push(ours);
    const plain = fsTarget(fd);

    const lines = [`file I/O, 256 MiB file in the page cache, median of ${runs} interleaved runs (queue maxInFlight ${DEFAULT_MAX_IN_FLIGHT})`];
    lines.push(`  ${"workload".padEnd(26)} ${"QD".padStart(3)} ${"vstor raw".padStart(14)} ${"plain fs".padStart(14)}  ours/fs`);
    for (const w of workloads) {
      for (const depth of [1, 4, 16]) {
        const a: number[] = [];
        const b: number[] = [];
        await run(backendTarget(ours), w, depth, buffers); // warm up both paths
        await run(plain, w, depth, buffers);
        for (let i = 0; i < runs; i++) {
          // Alternate which goes first, so neither always runs on a cache the other warmed.
          if (i % 2 === 0) a.push(rate(w, await run(backendTarget(ours), w, depth, buffers)));
          b.push(rate(w, await run(plain, w, depth, buffers)));
          if (i % 2 === 1) a.push(rate(w, await run(backendTarget(ours), w, depth, buffers)));
        }
        const ma = median(a);
        const mb = median(b);
        lines.push(`  ${w.name.padEnd(26)} ${String(depth).padStart(3)} ${fmt(ma, w.unit).padStart(14)} ${fmt(mb, w.unit).padStart(14)}  ${(ma / mb).toFixed(2)}x`);
      }
    }

    // The queue's bound, under more offered load than any bound tried.
    const bounds = [4, 8, 16];
    const bounded = await Promise.all(bounds.map((m) => openRaw(opener, file, { maxInFlight: m })));
    backends.push(...bounded);
    lines.push(`  queue maxInFlight, QD 16 offered  ${bounds.map((m) => `max ${m}`.padStart(14)).join(" ")}`);
    for (const w of [workloads[2], workloads[0]]) {
      const results = bounds.map(() => [] as number[]);
      for (const b of bounded) await run(backendTarget(b), w, 16, buffers);
      for (let i = 0; i < runs; i++) {
        for (let k = 0; k < bounds.length; k++) results[k].push(rate(w, await run(backendTarget(bounded[k]), w, 16, buffers)));
      }
      lines.push(`  ${w.name.padEnd(33)} ${results.map((r) => fmt(median(r), w.unit).padStart(14)).join(" ")}`);
    }
    return lines.join("\n");
  } finally {
    for (const b of backends) await b.close().catch(() => {});
    if (fd >= 0) fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
