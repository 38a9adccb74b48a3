/**
 * SATA (AHCI) in a real Linux guest against IDE and v86's built-in IDE, same 256 MiB raw image,
 * same run: every boot a fresh process (bench/sata-child.ts) with --v8-pool-size=1,
 * configurations interleaved, medians of BENCH_RUNS (default 3). Workloads are vstor-io with
 * O_DIRECT in the guest: 4 KiB random reads at queue depth 1 and 32 (NCQ only helps AHCI),
 * 1 MiB sequential reads and writes at depth 4. Ratios are against v86's in-memory IDE.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { bundleForNode } from "../guest-tests/support/bundle.js";

const MiB = 1 << 20;
const WORKLOADS = [
  { key: "rand4k-qd1", name: "4 KiB random read QD1", unit: "IOPS", iops: true },
  { key: "rand4k-qd32", name: "4 KiB random read QD32", unit: "IOPS", iops: true },
  { key: "seqread-1m-qd4", name: "seq read 1 MiB QD4", unit: "MB/s", iops: false },
  { key: "seqwrite-1m-qd4", name: "seq write 1 MiB QD4", unit: "MB/s", iops: false },
] as const;
const CONFIGS = [
  { mode: "ahci", name: "vstor AHCI, cached" },
  { mode: "ahci-nocache", name: "vstor AHCI, O_DIRECT" },
  { mode: "ide", name: "vstor IDE" },
  { mode: "v86-buffer", name: "v86 IDE, memory" },
];

type Result = { mode: string; results: Record<string, { mbps: number; iops: number }> };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function sataBench(runs = Number(process.env.BENCH_RUNS ?? 3)): Promise<string> {
  const child = await bundleForNode("bench/sata-child.ts");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-satabench-"));
  const image = path.join(dir, "disk.raw");
  const all = new Map<string, Result[]>();
  try {
    const chunk = new Uint8Array(MiB);
    const fd = fs.openSync(image, "w");
    for (let pos = 0; pos < 256 * MiB; pos += MiB) {
      for (let i = 0; i < MiB; i += 512) chunk[i] = (pos / MiB + i) & 0xff || 1;
      fs.writeSync(fd, chunk, 0, MiB, pos);
    }
    fs.closeSync(fd);
    for (let i = 0; i < runs; i++) {
      for (const c of CONFIGS) {
        const r = spawnSync(process.execPath, ["--v8-pool-size=1", child, c.mode, image], { encoding: "utf8", timeout: 900_000, maxBuffer: 64 * MiB });
        if (r.status !== 0) throw new Error(`sata bench child failed (${c.mode}):\n${r.stderr}\n${r.stdout.slice(-3000)}`);
        all.set(c.mode, [...(all.get(c.mode) ?? []), JSON.parse(r.stdout.trim().split("\n").pop()!) as Result]);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const fig = (mode: string, w: (typeof WORKLOADS)[number]) => median(all.get(mode)!.map((r) => (w.iops ? r.results[w.key]!.iops : r.results[w.key]!.mbps)));
  const col = 22;
  const lines = [
    `SATA (AHCI) in a Linux guest, 256 MiB raw image, vstor-io O_DIRECT in the guest, median of ${runs} interleaved boots; MB = 10^6 bytes`,
    `  ${"".padEnd(26)}${CONFIGS.map((c) => c.name.padStart(col)).join("")}   AHCI/v86   AHCI O_DIRECT/v86`,
  ];
  for (const w of WORKLOADS) {
    const v = CONFIGS.map((c) => fig(c.mode, w));
    const peer = v[3]!;
    lines.push(`  ${`${w.name}, ${w.unit}`.padEnd(26)}${v.map((x) => x.toFixed(w.iops ? 0 : 1).padStart(col)).join("")}   ${(v[0]! / peer).toFixed(2)}x${(v[1]! / peer).toFixed(2).padStart(13)}x`);
  }
  return lines.join("\n");
}
