/**
 * One format's clone, alone, for profiling and tuning (not part of `make bench`):
 *   FORMAT=VDI DIRECTION=read|write RUNS=5 [CONFIGS=4x1048576,16x1048576] [PROFILE=name] \
 *     node --v8-pool-size=1 bench/run.mjs bench/clone-one.ts
 * Each round runs every config (inFlight x chunk bytes; "default" for copyMedium's own) and
 * qemu-img convert of the same files, interleaved. Prints the median and best of each phase:
 * open + create, copy (copyMedium without its final flush), sync (the final flush and close,
 * which flushes again where the format does) and the whole, beside qemu-img's whole run; and
 * the CPU time of the whole (user + system, every thread of the process): on a loaded machine a
 * steadier measure of the work done than the wall clock.
 * PROFILE=name writes a CPU profile of our runs only (name.<round>.<config>.cpuprofile).
 */
import { randomFillSync } from "node:crypto";
import * as fs from "node:fs";
import { Session } from "node:inspector/promises";
import * as os from "node:os";
import * as path from "node:path";
import type { BlockBackend } from "../media/block.js";
import { IMAGE_CREATORS, copyMedium, type CopyOptions, type ImageFormat } from "../media/clone.js";
import { FORMATS, type MediumFormat } from "../media/formats.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { median, now, since, timed } from "./timing.js";

const SIZE = 256 << 20;
const QEMU: Record<string, [string, string]> = {
  VDI: ["vdi", "static=off"],
  VMDK: ["vmdk", "subformat=monolithicSparse"],
  VHD: ["vpc", "subformat=dynamic,force_size=on"],
  HDD: ["parallels", ""],
  QCOW2: ["qcow2", ""],
  VHDX: ["vhdx", "subformat=dynamic"],
};
const fmt = (process.env.FORMAT ?? "VDI") as MediumFormat;
const direction = process.env.DIRECTION ?? "write";
const runs = Number(process.env.RUNS ?? 5);
const configs = (process.env.CONFIGS ?? "default").split(",");
const profileTo = process.env.PROFILE;

function copyOptions(config: string): CopyOptions {
  if (config === "default") return { fresh: true };
  const [inFlight, chunkSize] = config.split("x").map(Number);
  return { fresh: true, inFlight, chunkSize };
}

const session = profileTo ? new Session() : null;
if (session) {
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 200 });
}
const [qfmt, qopts] = QEMU[fmt]!;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-cloneone-"));
const opener = new NodeFileOpener();
try {
  const raw = path.join(dir, "src.raw");
  const fd = fs.openSync(raw, "w");
  const buf = new Uint8Array(1 << 20);
  for (let pos = 0; pos < SIZE; pos += buf.length) fs.writeSync(fd, randomFillSync(buf), 0, buf.length, pos);
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  const image = path.join(dir, `src.${qfmt}`);
  timed("qemu-img", ["convert", "-f", "raw", "-O", qfmt, ...(qopts ? ["-o", qopts] : []), raw, image]);
  const [from, src, to, qFrom, qTo, qo]: [MediumFormat, string, ImageFormat, string, string, string] =
    direction === "read" ? [fmt, image, "RAW", qfmt, "raw", ""] : ["RAW", raw, fmt as ImageFormat, "raw", qfmt, qopts];

  type Phases = Record<"open" | "copy" | "sync" | "total" | "cpu", number[]>;
  const results = new Map<string, Phases>(configs.map((c) => [c, { open: [], copy: [], sync: [], total: [], cpu: [] }]));
  const qemu: number[] = [];
  for (let i = 0; i < runs; i++) {
    for (const config of configs) {
      const ph = results.get(config)!;
      const out = path.join(dir, `out-${i}`);
      if (session) await session.post("Profiler.start");
      const t0 = now();
      const cpu0 = process.cpuUsage();
      const img = await FORMATS[from].open(opener, src, { readOnly: true });
      const target: BlockBackend = await IMAGE_CREATORS[to](opener, out, { size: img.size, variant: "Standard" });
      ph.open.push(since(t0));
      // The final flush is timed apart: copyMedium calls it once, at the end.
      const flush = target.flush.bind(target);
      let flushStart = 0n;
      target.flush = () => {
        flushStart = now();
        return flush();
      };
      const t1 = now();
      await copyMedium(img, target, copyOptions(config));
      ph.copy.push(Number(flushStart - t1) / 1e9);
      await target.close();
      await img.close();
      ph.sync.push(since(flushStart));
      ph.total.push(since(t0));
      const cpu = process.cpuUsage(cpu0);
      ph.cpu.push((cpu.user + cpu.system) / 1e6);
      if (session) {
        const { profile } = await session.post("Profiler.stop");
        fs.writeFileSync(`${profileTo}.${i}.${config}.cpuprofile`, JSON.stringify(profile));
      }
      fs.rmSync(out);
    }
    const q = path.join(dir, `q-${i}`);
    qemu.push(timed("qemu-img", ["convert", "-f", qFrom, "-O", qTo, ...(qo ? ["-o", qo] : []), src, q]));
    fs.rmSync(q);
  }
  const ms = (xs: number[]) => `${(median(xs) * 1000).toFixed(0)}/${(Math.min(...xs) * 1000).toFixed(0)}`.padStart(9);
  console.log(`${fmt} ${direction}, ms as median/best of ${runs}; qemu-img ${ms(qemu)}`);
  for (const [config, ph] of results) {
    const ratio = median(qemu) / median(ph.total);
    console.log(
      `  ${config.padEnd(12)} open ${ms(ph.open)}  copy ${ms(ph.copy)}  sync ${ms(ph.sync)}  total ${ms(ph.total)}  cpu ${ms(ph.cpu)}  ` +
        `qemu/total ${ratio.toFixed(2)}x  qemu/(total-sync) ${(median(qemu) / (median(ph.total) - median(ph.sync))).toFixed(2)}x`,
    );
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
