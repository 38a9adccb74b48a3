/**
 * VDI benchmark: our VdiImage backend against qemu-img, in the same run, on files in the page
 * cache. 256 MiB, 1 MiB requests, 8 in flight:
 *   (a) sequential read of a dynamic VDI holding 256 MiB of data (made by us, written
 *       sequentially in 1 MiB chunks) - vs `qemu-img convert -f vdi` into qemu's null-co driver
 *       (reads everything, writes nowhere; /dev/null is refused as a target);
 *   (b) writing 256 MiB into a new, empty dynamic VDI - vs `qemu-img convert -f raw -O vdi` of a
 *       256 MiB raw file. Neither side flushes (convert's default cache mode is "unsafe").
 * qemu-img convert is timed as a process (start, open, work, exit: the start-up is printed
 * apart); `qemu-img bench` with the same request size and depth is shown too, timed by qemu
 * itself (work only). Ours is timed in-process: open and reads for (a), the writes after create
 * for (b). Medians of interleaved runs; MB = 10^6 bytes.
 *
 * What limits (b) here: each new block's map entry is a 4-byte write, and metadata writes are
 * serialized (vdi-store.ts), each waiting for a libuv thread behind the 1 MiB data writes.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { createVdi, openVdi, type VdiImage } from "../media/formats/vdi/vdi-image.js";
import { hasQemuImg, mbps as rate, median, now, since, timed } from "./timing.js";

const SIZE = 256 << 20;
const CHUNK = 1 << 20;
const DEPTH = 8;

const mbps = (seconds: number): number => rate(SIZE, seconds);

/** Run `op` on every 1 MiB offset in order, DEPTH at a time, each worker with its own buffer. */
async function sequential(op: (pos: number, buf: Uint8Array) => Promise<void>, buffers: Uint8Array[]): Promise<void> {
  let next = 0;
  await Promise.all(
    buffers.slice(0, DEPTH).map(async (buf) => {
      while (next < SIZE) {
        const pos = next;
        next += CHUNK;
        await op(pos, buf);
      }
    }),
  );
}

/** `qemu-img bench`'s own timing of its run, in seconds. */
function qemuBench(args: string[]): number {
  const r = spawnSync("qemu-img", ["bench", ...args], { encoding: "utf8" });
  const m = /Run completed in ([\d.]+) seconds/.exec(r.stdout);
  if (r.status !== 0 || !m) throw new Error(`qemu-img bench ${args.join(" ")} failed: ${r.stdout}${r.stderr}`);
  return Number(m[1]);
}

function fill(buf: Uint8Array, seed: number): Uint8Array {
  for (let i = 0; i < buf.length; i++) buf[i] = (i * 131 + seed * 7 + 1) & 0xff || 1;
  return buf;
}

export async function mediaBench(runs = Number(process.env.BENCH_RUNS ?? 5)): Promise<string> {
  if (!hasQemuImg()) return "media: skipped (qemu-img is not installed)";
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-mediabench-"));
  const opener = new NodeFileOpener();
  const open: VdiImage[] = [];
  try {
    const buffers = Array.from({ length: DEPTH }, (_, i) => fill(new Uint8Array(CHUNK), i));

    // The image to read: ours, written sequentially in 1 MiB chunks, then read once (page cache).
    const readImg = path.join(dir, "data.vdi");
    const made = await createVdi(opener, readImg, { size: SIZE });
    for (let pos = 0; pos < SIZE; pos += CHUNK) await made.write(pos, buffers[(pos / CHUNK) % DEPTH]!);
    await made.close();
    fs.readFileSync(readImg);
    // The raw source for qemu's write: the same bytes.
    const raw = path.join(dir, "src.raw");
    const fd = fs.openSync(raw, "w");
    for (let pos = 0; pos < SIZE; pos += CHUNK) fs.writeSync(fd, buffers[(pos / CHUNK) % DEPTH]!, 0, CHUNK, pos);
    fs.closeSync(fd);
    fs.readFileSync(raw);

    const oursRead = async (): Promise<number> => {
      const t0 = now();
      const img = await openVdi(opener, readImg, { readOnly: true });
      open.push(img);
      await sequential((pos, buf) => img.read(pos, buf), buffers);
      const s = since(t0);
      await img.close();
      return s;
    };
    const nullTarget = `driver=null-co,size=${SIZE}`;
    const qemuRead = (): number => timed("qemu-img", ["convert", "-n", "-f", "vdi", readImg, "--target-image-opts", nullTarget]);
    const qemuBenchRead = (): number => qemuBench(["-f", "vdi", "-c", String(SIZE / CHUNK), "-d", String(DEPTH), "-s", String(CHUNK), readImg]);

    let n = 0;
    const target = (): string => path.join(dir, `out-${n++}.vdi`);
    const oursWrite = async (): Promise<number> => {
      const p = target();
      // Timed from after create: create ends with an fsync, which convert (cache "unsafe") skips.
      const img = await createVdi(opener, p, { size: SIZE });
      open.push(img);
      const t0 = now();
      await sequential((pos, buf) => img.write(pos, buf), buffers);
      const s = since(t0);
      await img.close();
      fs.rmSync(p);
      return s;
    };
    const qemuWrite = (): number => {
      const p = target();
      const s = timed("qemu-img", ["convert", "-f", "raw", "-O", "vdi", raw, p]);
      fs.rmSync(p);
      return s;
    };
    const qemuBenchWrite = (): number => {
      const p = target();
      timed("qemu-img", ["create", "-q", "-f", "vdi", p, String(SIZE)]);
      const s = qemuBench(["-w", "-t", "unsafe", "-f", "vdi", "-c", String(SIZE / CHUNK), "-d", String(DEPTH), "-s", String(CHUNK), p]);
      fs.rmSync(p);
      return s;
    };
    const startup = (): number => timed("qemu-img", ["info", "-f", "vdi", readImg]);

    // What we wrote reads back the same through qemu (a benchmark of wrong answers is no use).
    const check = spawnSync("qemu-img", ["compare", "-f", "vdi", "-F", "raw", readImg, raw], { encoding: "utf8" });
    if (check.status !== 0) throw new Error(`qemu-img compare: ${check.stdout}${check.stderr}`);

    const rows = [
      { name: "(a) sequential read", ours: oursRead, convert: qemuRead, bench: qemuBenchRead },
      { name: "(b) write, empty dynamic", ours: oursWrite, convert: qemuWrite, bench: qemuBenchWrite },
    ];
    const lines = [
      `VDI, 256 MiB in 1 MiB requests, ${DEPTH} in flight, files in the page cache, median of ${runs} interleaved runs (MB = 10^6 bytes)`,
      `  ${"workload".padEnd(26)} ${"vstor VdiImage".padStart(14)} ${"qemu-img convert".padStart(17)} ${"ours/convert".padStart(13)} ${"qemu-img bench".padStart(15)} ${"ours/bench".padStart(11)}`,
    ];
    for (const row of rows) {
      const ours: number[] = [];
      const conv: number[] = [];
      const bench: number[] = [];
      await row.ours(); // warm up
      row.convert();
      for (let i = 0; i < runs; i++) {
        if (i % 2 === 0) ours.push(await row.ours());
        conv.push(row.convert());
        bench.push(row.bench());
        if (i % 2 === 1) ours.push(await row.ours());
      }
      const [o, c, b] = [mbps(median(ours)), mbps(median(conv)), mbps(median(bench))];
      lines.push(
        `  ${row.name.padEnd(26)} ${`${o.toFixed(0)} MB/s`.padStart(14)} ${`${c.toFixed(0)} MB/s`.padStart(17)} ${`${(o / c).toFixed(2)}x`.padStart(13)} ${`${b.toFixed(0)} MB/s`.padStart(15)} ${`${(o / b).toFixed(2)}x`.padStart(11)}`,
      );
    }
    const start = median(Array.from({ length: runs }, startup));
    lines.push(`  qemu-img start-up (qemu-img info on the image): ${(start * 1000).toFixed(0)} ms, inside every convert figure; bench figures are qemu's own timing of the requests`);
    return lines.join("\n");
  } finally {
    for (const img of open) await img.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
