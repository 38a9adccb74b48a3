/**
 * IDE benchmark in a real Linux guest: our IdeController (ICH6, raw image through NodeFileOpener)
 * against v86's own built-in IDE with the same 256 MiB image, same kernel and initrd, in the same
 * run. Every boot is a fresh process with --v8-pool-size=1 (bench/ide-child.ts); configurations
 * are interleaved, medians of BENCH_RUNS (default 3) boots each. MB = 10^6 bytes.
 *
 * In the guest (boot script; guest clock from /proc/timer_list, which follows host time in v86):
 *   seq read   dd if=/dev/sda of=/dev/null bs=1M count=200 iflag=direct
 *   seq write  dd if=/dev/zero of=/dev/sda bs=1M count=200 oflag=direct
 *   rand read  vstor-io --op randread --bs 4096 --qd 1 --count N (its own IOPS figure)
 * Peers: v86 with the image in an ArrayBuffer (`hda: { buffer }`, its fastest mode) and v86's
 * async file mode (`hda: { url, async: true, size }`; writes stay in v86's memory). Neither peer
 * has any vstor code in the emulator (no V86Host).
 *
 * Beside the rates, per workload: block-layer requests and IRQ 14 interrupts (from the guest's
 * /sys/block/sda/stat and /proc/interrupts), guest instructions (v86's counter) and host CPU
 * seconds between the workload's bracket lines: where the time goes when one side is slower.
 * The request size of the sequential runs is the guest's choice per boot (512 KiB or 1 MiB,
 * depending on whether dd's buffer pages happen to be physically contiguous enough to merge into
 * 64 KiB segments; max_segments is 128), and a guest request costs about the same number of guest
 * instructions at either size: compare "wall ms per request" at equal request sizes too.
 *
 * BENCH_IDE_PEERS=buffer skips the async peer; BENCH_IDE_RANDCOUNT sets N (default 3000);
 * BENCH_IDE_TRACE=1 adds v86 main-loop, port I/O, thread and medium-latency counters (see
 * ide-child.ts; they wrap v86 internals, so leave it off for the headline figures);
 * BENCH_VERBOSE=1 prints each boot's figures as it finishes.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { bundleForNode } from "../guest-tests/support/bundle.js";
import type { ChildResult, WorkloadSample } from "./ide-child.js";

const MiB = 1 << 20;
const IMAGE_BYTES = 256 * MiB;
const NODE_FLAGS = ["--v8-pool-size=1"];

/** Busy and total CPU seconds of the whole machine so far (/proc/stat), to see other processes' load. */
function machineCpu(): { busy: number; wall: number } | undefined {
  try {
    const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const hz = 100; // USER_HZ on Linux
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { busy: (f.reduce((a, b) => a + b, 0) - idle) / hz, wall: performance.now() / 1000 };
  } catch {
    return undefined;
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** A 256 MiB raw image with non-zero data everywhere, left in the page cache. */
function makeImage(file: string): void {
  const chunk = new Uint8Array(MiB);
  const fd = fs.openSync(file, "w");
  try {
    for (let pos = 0; pos < IMAGE_BYTES; pos += MiB) {
      for (let i = 0; i < chunk.length; i += 4) chunk[i] = ((pos >> 20) + i) & 0xff || 1;
      fs.writeSync(fd, chunk, 0, MiB, pos);
    }
  } finally {
    fs.closeSync(fd);
  }
}

interface Config {
  key: string;
  name: string;
  mode: string;
}

const WORKLOADS = [
  { key: "seqread", name: "seq read direct, 1 MiB", unit: "MB/s" },
  { key: "seqwrite", name: "seq write direct, 1 MiB", unit: "MB/s" },
  { key: "randread", name: "4 KiB random read QD1", unit: "IOPS" },
] as const;

export async function ideBench(runs = Number(process.env.BENCH_RUNS ?? 3)): Promise<string> {
  const child = await bundleForNode("bench/ide-child.ts");
  const randCount = Number(process.env.BENCH_IDE_RANDCOUNT ?? 3000);
  const configs: Config[] = [
    { key: "vstor", name: "vstor IDE (ICH6), raw file", mode: "vstor" },
    { key: "v86", name: "v86 IDE, ArrayBuffer", mode: "v86-buffer" },
  ];
  if (process.env.BENCH_IDE_PEERS !== "buffer") configs.push({ key: "v86async", name: "v86 IDE, async file", mode: "v86-async" });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-idebench-"));
  const image = path.join(dir, "disk.raw");
  const results = new Map<string, ChildResult[]>();
  /** Cores kept busy by other processes during each child, per configuration. */
  const otherLoad = new Map<string, number[]>();
  try {
    makeImage(image);
    // Interleave configurations so machine noise spreads evenly.
    for (let i = 0; i < runs; i++) {
      for (const c of configs) {
        const before = machineCpu();
        const r = spawnSync(process.execPath, [...NODE_FLAGS, child, c.mode, image, String(randCount)], {
          encoding: "utf8",
          env: process.env,
          timeout: 900_000,
          maxBuffer: 64 * MiB,
        });
        if (r.status !== 0) throw new Error(`ide bench child failed (${c.name}, status ${r.status}):\n${r.stderr}\n${r.stdout.slice(-4000)}`);
        const res = JSON.parse(r.stdout.trim().split("\n").pop()!) as ChildResult;
        results.set(c.key, [...(results.get(c.key) ?? []), res]);
        const after = machineCpu();
        if (before && after) otherLoad.set(c.key, [...(otherLoad.get(c.key) ?? []), (after.busy - before.busy - res.cpuSeconds) / (after.wall - before.wall)]);
        if (process.env.BENCH_VERBOSE) {
          const load = otherLoad.get(c.key)?.at(-1)?.toFixed(2) ?? "?";
          console.error(`${c.name} run ${i + 1}: ` + WORKLOADS.map((w) => `${w.key} ${res.workloads[w.key]!.rate.toFixed(0)}`).join(", ") + `; other processes ${load} cores`);
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  const all = (key: string) => results.get(key)!;
  const med = (key: string, f: (r: ChildResult) => number) => median(all(key).map(f));
  const range = (key: string, f: (r: ChildResult) => number) => {
    const xs = all(key).map(f);
    return [Math.min(...xs), Math.max(...xs)];
  };
  const w = (k: string) => (r: ChildResult) => r.workloads[k]!;
  const fmtRate = (v: number) => v.toFixed(0);

  const lines: string[] = [];
  lines.push(`IDE in a Linux guest, 256 MiB raw image, node ${NODE_FLAGS.join(" ")}, median of ${runs} interleaved boots [min-max]; MB = 10^6 bytes`);
  const col = 24;
  lines.push(`  ${"".padEnd(28)}${configs.map((c) => c.name.padStart(col + 2)).join("")}   vstor/v86${configs.length > 2 ? "   vstor/v86 async" : ""}`);
  const row = (label: string, f: (r: ChildResult) => number, fmt: (v: number) => string, ratio = true) => {
    const cells = configs.map((c) => {
      const [lo, hi] = range(c.key, f);
      return `${fmt(med(c.key, f))} [${fmt(lo!)}-${fmt(hi!)}]`.padStart(col + 2);
    });
    let tail = "";
    if (ratio) {
      tail = `   ${(med("vstor", f) / med("v86", f)).toFixed(2).padStart(8)}x`;
      if (configs.length > 2) tail += `   ${(med("vstor", f) / med("v86async", f)).toFixed(2).padStart(14)}x`;
    }
    lines.push(`  ${label.padEnd(28)}${cells.join("")}${tail}`);
  };
  for (const wl of WORKLOADS) row(`${wl.name}, ${wl.unit}`, (r) => w(wl.key)(r).rate, fmtRate);
  row("boot to /init, s", (r) => r.booted, (v) => v.toFixed(1), false);
  row("boot to modules loaded, s", (r) => r.ready, (v) => v.toFixed(1), false);
  row("Node peak RSS, MiB", (r) => r.maxRssMiB, (v) => v.toFixed(0), false);
  if (otherLoad.size) {
    const cells = configs.map((c) => (otherLoad.get(c.key) ?? []).map((x) => x.toFixed(2)).join(" ").padStart(col + 2));
    lines.push(`  ${"other processes, cores".padEnd(28)}${cells.join("")}   (per boot; noise from the rest of the machine)`);
  }

  // Where the time goes, per workload (medians).
  lines.push("");
  lines.push("  per workload (medians)          " + configs.map((c) => c.key.padStart(12)).join(""));
  const per = (label: string, f: (s: WorkloadSample) => number, fmt: (v: number) => string) => {
    for (const wl of WORKLOADS) {
      lines.push(`  ${`${wl.key} ${label}`.padEnd(32)}${configs.map((c) => fmt(med(c.key, (r) => f(w(wl.key)(r)))).padStart(12)).join("")}`);
    }
  };
  per("block requests", (s) => s.ios, (v) => v.toFixed(0));
  per("KiB per request", (s) => (s.sectors * 512) / 1024 / Math.max(1, s.ios), (v) => v.toFixed(1));
  per("IRQ 14 per request", (s) => s.irqs / Math.max(1, s.ios), (v) => v.toFixed(2));
  per("host wall ms per request", (s) => (1000 * s.hostWall) / Math.max(1, s.ios), (v) => v.toFixed(2));
  per("guest Minstr per request", (s) => s.instructions / 1e6 / Math.max(1, s.ios), (v) => v.toFixed(3));
  per("guest MIPS", (s) => s.instructions / 1e6 / s.hostWall, (v) => v.toFixed(0));
  per("host page faults per request", (s) => s.pageFaults / Math.max(1, s.ios), (v) => v.toFixed(0));
  per("host CPU cores busy", (s) => s.hostCpu / s.hostWall, (v) => v.toFixed(2));
  if (all("vstor")[0]!.workloads.seqread!.trace) {
    const t = (k: string) => (s: WorkloadSample) => s.trace?.[k] ?? NaN;
    per("v86 main_loop ms per request", (s) => t("loopMs")(s) / Math.max(1, s.ios), (v) => v.toFixed(2));
    per("host ms outside main_loop/req", (s) => (s.hostWall * 1000 - t("loopMs")(s)) / Math.max(1, s.ios), (v) => v.toFixed(2));
    per("main_loop slices per request", (s) => t("loops")(s) / Math.max(1, s.ios), (v) => v.toFixed(1));
    per("guest halts per request", (s) => t("halts")(s) / Math.max(1, s.ios), (v) => v.toFixed(2));
    per("  of which next timer < 1 ms", (s) => t("haltsShort")(s) / Math.max(1, s.ios), (v) => v.toFixed(2));
    per("ms halted per request", (s) => t("haltGapMs")(s) / Math.max(1, s.ios), (v) => v.toFixed(3));
    per("port I/O per request", (s) => t("portIo")(s) / Math.max(1, s.ios), (v) => v.toFixed(1));
    per("us in port handlers/request", (s) => (1000 * t("portMs")(s)) / Math.max(1, s.ios), (v) => v.toFixed(1));
    per("event loop utilization", t("elu"), (v) => v.toFixed(2));
    per("main thread preempted/request", (s) => t("mainPreempted")(s) / Math.max(1, s.ios), (v) => v.toFixed(2));
    per("other threads, cores", (s) => Object.entries(s.trace ?? {}).reduce((a, [k, v]) => (k.startsWith("thr_") && k !== "thr_main" ? a + v : a), 0) / s.hostWall, (v) => v.toFixed(2));
    per("medium op latency ms (vstor)", (s) => (t("readMs")(s) + t("writeMs")(s)) / (t("reads")(s) + t("writes")(s)), (v) => (Number.isFinite(v) ? v.toFixed(2) : "-"));
    per("medium read submit us (vstor)", (s) => (1000 * t("readSubmitMs")(s)) / t("reads")(s), (v) => (Number.isFinite(v) ? v.toFixed(1) : "-"));
    per("fs.read/write call us (vstor)", (s) => (1000 * (t("fs_read_submitMs")(s) || 0) + 1000 * (t("fs_write_submitMs")(s) || 0)) / ((t("fs_read_calls")(s) || 0) + (t("fs_write_calls")(s) || 0)), (v) => (Number.isFinite(v) ? v.toFixed(1) : "-"));
    // The port handlers that took the most time, per request, in each configuration's first boot.
    for (const wl of WORKLOADS) {
      for (const c of configs) {
        const s = all(c.key)[0]!.workloads[wl.key]!;
        const ports = Object.entries(s.trace ?? {})
          .filter(([k]) => k.startsWith("portms_"))
          .sort((a, b) => b[1] - a[1])
          .slice(0, 5)
          .map(([k, ms]) => `${k[7] === "w" ? "out" : "in"} ${k.slice(8)}h ${((1000 * ms) / Math.max(1, s.ios)).toFixed(1)}us`);
        lines.push(`  ${`${wl.key} port time/req ${c.key}`.padEnd(32)}${ports.join("  ")}`);
      }
    }
  }
  const q = (key: string) => all(key)[0]!.queue;
  lines.push(`  guest queue limits (max_sectors_kb / max_hw_sectors_kb / max_segments / xfer):`);
  for (const c of configs) {
    const x = q(c.key);
    lines.push(`    ${c.name.padEnd(28)} ${x.max_sectors_kb} / ${x.max_hw_sectors_kb} / ${x.max_segments} / ${x.xfer} (${x.ata_drivers?.trim()})`);
  }
  return lines.join("\n");
}
