/**
 * Image formats benchmark: converting 256 MiB to and from each format, ours against qemu-img, in
 * the same run, on files in the page cache (no O_DIRECT) under os.tmpdir().
 *   read:  an image holding 256 MiB of random (incompressible, non-zero) data -> RAW;
 *   write: a 256 MiB raw file of the same data -> a new image of the format.
 * Ours is the clonemedium path: the source opened through FORMATS[fmt].open, then clone.ts's
 * cloneToNew (IMAGE_CREATORS[target] makes the image, copyMedium copies and flushes, the target
 * is closed). qemu's is `qemu-img convert -f <fmt> -O <fmt>` in its default cache mode
 * ("unsafe": no flush of the target, where copyMedium ends with one and our creates and closes
 * sync too). That flush is most of our time: it writes the 256 MiB the copy left in the page
 * cache to the disk (about 170-200 ms on the 2-core machine, more than qemu-img's whole run),
 * where qemu-img's output is removed before the kernel ever writes it. So both are shown: the
 * time our run spent in fdatasync ("sync", summed over the target's flushes), and qemu-img's
 * run followed by one fdatasync of its output, timed apart, for a durable copy on both sides.
 * "-t writeback" is not used to even that out: qemu's vmdk and vpc drivers then flush after
 * every metadata update (thousands of fdatasyncs for 256 MiB of VMDK), which we never do. Every
 * source image is made once by qemu-img convert from the raw file, so both sides read the same
 * file. VHDX is read only (vstor cannot create it).
 *
 * Both sides are timed as a whole operation by the wall clock: ours in-process from before the
 * source is opened until both images are closed; qemu-img as a spawned process (start, open,
 * work, exit; its bare start-up, `qemu-img --version`, is printed apart). Medians of interleaved
 * runs; MB = 10^6 bytes. Each run's output is checked once against the raw file (qemu-img
 * compare) before timing, and removed after each run, outside the timed part.
 */
import { spawnSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cloneToNew, type ImageFormat } from "../media/clone.js";
import { FORMATS, type MediumFormat } from "../media/formats.js";
import { hasQemuImg, mbps, median, now, since, SyncTimingOpener, timed } from "./timing.js";

const SIZE = 256 << 20;
const CHUNK = 1 << 20;

interface FormatCase {
  name: MediumFormat;
  /** qemu-img's driver name. */
  qemu: string;
  /** qemu-img create options giving the variant we compare with (-o). */
  options: string;
  /** vstor can create it (IMAGE_CREATORS): measure the write direction too. */
  writable: boolean;
}

const CASES: FormatCase[] = [
  { name: "VDI", qemu: "vdi", options: "static=off", writable: true },
  { name: "VMDK", qemu: "vmdk", options: "subformat=monolithicSparse", writable: true },
  // force_size: the size as given, not rounded to a CHS geometry.
  { name: "VHD", qemu: "vpc", options: "subformat=dynamic,force_size=on", writable: true },
  { name: "HDD", qemu: "parallels", options: "", writable: true },
  { name: "QCOW2", qemu: "qcow2", options: "", writable: true },
  { name: "VHDX", qemu: "vhdx", options: "subformat=dynamic", writable: false },
];

/** -o OPTIONS for qemu-img, or nothing. */
const opts = (o: string): string[] => (o ? ["-o", o] : []);

/**
 * The same contents, as qemu sees them (a benchmark of wrong answers is no use). Our VHDs say
 * "vbox" as creator, for which qemu takes the size from the CHS geometry (a little less than
 * 256 MiB) unless told to use the footer's size, as vhd-qemu.test.ts does too.
 */
function compare(fmt: string, file: string, raw: string): void {
  const extra = fmt === "vpc" ? ",force_size_calc=current_size" : "";
  const args = ["compare", "--image-opts", `driver=${fmt}${extra},file.filename=${file}`, `driver=raw,file.filename=${raw}`];
  const r = spawnSync("qemu-img", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(" ")}: ${r.stdout}${r.stderr}`);
}

/** Read a file once so it sits in the page cache. */
function warm(file: string): void {
  const fd = fs.openSync(file, "r");
  const buf = Buffer.allocUnsafe(CHUNK);
  try {
    while (fs.readSync(fd, buf, 0, CHUNK, null) > 0);
  } finally {
    fs.closeSync(fd);
  }
}

/** Seconds to fdatasync a file another process wrote. */
function syncTime(file: string): number {
  const t0 = now();
  const fd = fs.openSync(file, "r");
  try {
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return since(t0);
}

/** A side's wall time, and the part of it (ours) or after it (qemu-img) spent in fdatasync; seconds. */
interface Timing {
  s: number;
  sync: number;
}

/** One row's two sides; each makes `out`. */
interface Row {
  format: MediumFormat;
  direction: "read" | "write";
  ours: (out: string) => Promise<Timing>;
  qemu: (out: string) => Timing;
  /** qemu-img's name of the output's format, for the check. */
  outFormat: string;
}

export async function formatsBench(runs = Number(process.env.BENCH_RUNS ?? 3)): Promise<string> {
  if (!hasQemuImg()) return "formats: skipped (qemu-img is not installed)";
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-formatsbench-"));
  const opener = new SyncTimingOpener();
  try {
    // The data: 256 MiB of random bytes (no zero chunk to skip, nothing compresses).
    const raw = path.join(dir, "src.raw");
    const fd = fs.openSync(raw, "w");
    const buf = new Uint8Array(CHUNK);
    for (let pos = 0; pos < SIZE; pos += CHUNK) fs.writeSync(fd, randomFillSync(buf), 0, CHUNK, pos);
    fs.closeSync(fd);
    warm(raw);

    /** Ours: open `src` as `from`, clone into a new `to` image at `out`; the whole of it timed. */
    const clone = async (from: MediumFormat, src: string, to: ImageFormat, out: string): Promise<Timing> => {
      opener.synced = 0;
      const t0 = now();
      const img = await FORMATS[from].open(opener, src, { readOnly: true });
      try {
        await cloneToNew(img, { opener, path: out, format: to });
      } finally {
        await img.close();
      }
      return { s: since(t0), sync: opener.synced };
    };
    const convert = (from: string, src: string, to: string, out: string, o = ""): Timing => {
      const s = timed("qemu-img", ["convert", "-f", from, "-O", to, ...opts(o), src, out]);
      return { s, sync: syncTime(out) };
    };

    const rows: Row[] = [];
    for (const c of CASES) {
      // The source image to read, made by qemu-img from the raw file, in the page cache.
      const image = path.join(dir, `src.${c.qemu}`);
      timed("qemu-img", ["convert", "-f", "raw", "-O", c.qemu, ...opts(c.options), raw, image]);
      compare(c.qemu, image, raw);
      warm(image);
      rows.push({
        format: c.name,
        direction: "read",
        ours: (out) => clone(c.name, image, "RAW", out),
        qemu: (out) => convert(c.qemu, image, "raw", out),
        outFormat: "raw",
      });
      if (!c.writable) continue;
      const to = c.name as ImageFormat;
      rows.push({
        format: c.name,
        direction: "write",
        ours: (out) => clone("RAW", raw, to, out),
        qemu: (out) => convert("raw", raw, c.qemu, out, c.options),
        outFormat: c.qemu,
      });
    }

    let n = 0;
    const target = (): string => path.join(dir, `out-${n++}`);
    /** One timed run of a side; its output checked if asked, then removed. */
    const once = async (side: () => Timing | Promise<Timing>, out: string, check?: string): Promise<Timing> => {
      try {
        const s = await side();
        if (check) compare(check, out, raw);
        return s;
      } finally {
        fs.rmSync(out, { force: true });
      }
    };

    const results: { row: Row; ours: Timing; qemu: Timing }[] = [];
    for (const row of rows) {
      // Warm-up of both sides, which also checks what each wrote.
      let out = target();
      await once(() => row.ours(out), out, row.outFormat);
      out = target();
      await once(() => row.qemu(out), out, row.outFormat);
      const ours: Timing[] = [];
      const qemu: Timing[] = [];
      for (let i = 0; i < runs; i++) {
        const o1 = target();
        const o2 = target();
        // Interleaved, and which side goes first alternates.
        if (i % 2 === 0) ours.push(await once(() => row.ours(o1), o1));
        qemu.push(await once(() => row.qemu(o2), o2));
        if (i % 2 === 1) ours.push(await once(() => row.ours(o1), o1));
      }
      const med = (ts: Timing[]): Timing => ({ s: median(ts.map((t) => t.s)), sync: median(ts.map((t) => t.sync)) });
      results.push({ row, ours: med(ours), qemu: med(qemu) });
    }
    const startup = median(Array.from({ length: Math.max(runs, 5) }, () => timed("qemu-img", ["--version"])));

    const lines = [
      `Image formats, 256 MiB of random data converted to RAW (read) and from RAW (write), files in the page cache,`,
      `vstor clone path (FORMATS open + cloneToNew) vs qemu-img convert, whole operation, median of ${runs} interleaved runs (MB = 10^6 bytes);`,
      `"sync": ms of vstor's run spent in fdatasync (qemu-img has none), and of one fdatasync of qemu-img's output after it`,
      `  ${"format".padEnd(7)} ${"direction".padEnd(9)} ${"vstor".padStart(9)} ${"sync".padStart(6)} ${"qemu-img".padStart(9)} ${"vstor/qemu-img".padStart(15)}` +
        ` ${"+sync".padStart(6)} ${"both durable".padStart(13)} ${"both w/o sync".padStart(14)}`,
    ];
    const ms = (s: number) => `${(s * 1000).toFixed(0)}`.padStart(6);
    const rate = (s: number) => `${mbps(SIZE, s).toFixed(0)} MB/s`.padStart(9);
    for (const { row, ours, qemu } of results) {
      const ratio = (a: number, b: number) => `${(b / a).toFixed(2)}x`;
      lines.push(
        `  ${row.format.padEnd(7)} ${row.direction.padEnd(9)} ${rate(ours.s)} ${ms(ours.sync)} ${rate(qemu.s)} ${ratio(ours.s, qemu.s).padStart(15)}` +
          ` ${ms(qemu.sync)} ${ratio(ours.s, qemu.s + qemu.sync).padStart(13)} ${ratio(ours.s - ours.sync, qemu.s).padStart(14)}`,
      );
    }
    lines.push(`  qemu-img start-up (qemu-img --version): ${(startup * 1000).toFixed(0)} ms, inside every qemu-img figure`);
    return lines.join("\n");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
