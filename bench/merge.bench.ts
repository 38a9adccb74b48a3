/**
 * Snapshot deletion benchmark: a differencing image merged into its 256 MiB base, ours against
 * qemu-img commit, in the same run, on files in the page cache (no O_DIRECT) under os.tmpdir().
 * The child holds 64 MiB in 64 scattered 1 MiB runs over a base full of data.
 *   QCOW2: base and overlay made by qemu-img and qemu-io (both sides merge the same files);
 *   VDI:   base and child made through MediumManager (create, then writes; the same layout). qemu
 *          cannot merge VDI chains, so its figure there is the QCOW2 files' commit again: us
 *          against qemu's best case on the same amount of data, not the same format.
 * Ours is what `vstor snapshot delete` runs: the chain opened by MediumManager with the base
 * writable, mergeChildIntoParent, then flush and close. qemu's is `qemu-img commit` in its default
 * cache mode ("writeback", unlike convert's "unsafe"): it fdatasyncs the base itself, then empties
 * the overlay (more fdatasyncs and a truncate; -d would skip that). So it is durable as measured;
 * one fdatasync of its base after it ("+sync") shows that. `qemu-img commit -t unsafe` (no flush
 * at all) is measured too, beside our run without the time it spent in fdatasync.
 *
 * Every run merges fresh copies of files made once; the copies are synced before timing, so no
 * side pays for writing back the set-up's data. Ours is timed in-process from before the chain is
 * opened until it is closed; qemu-img as a spawned process (start, open, work, exit; its bare
 * start-up is printed apart). Medians of interleaved runs; MB = 10^6 bytes of the 64 MiB merged.
 * Every run's merged base is checked against qemu's (qemu-img compare), outside the timed part.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ImageChain, mergeChildIntoParent } from "../media/chain.js";
import { MediumManager } from "../media/medium-manager.js";
import { MediaRegistry } from "../media/registry.js";
import { hasQemuImg, mbps, median, now, since, SyncTimingOpener, timed } from "./timing.js";

const SIZE = 256 << 20;
const RUN = 1 << 20;
const RUNS_IN_CHILD = 64;
const MERGED = RUNS_IN_CHILD * RUN;
const BASE_BYTE = 0x11;
const CHILD_BYTE = 0x22;

/** The child's 1 MiB runs: distinct slots (odd multiplier: a permutation mod 256), in order. */
const SLOTS = Array.from({ length: RUNS_IN_CHILD }, (_, i) => (i * 97 + 13) % (SIZE / RUN)).sort((a, b) => a - b);

/** Seconds one fdatasync of `file` takes (what another process left dirty). */
function fdatasyncTime(file: string): number {
  const fd = fs.openSync(file, "r");
  try {
    const t0 = now();
    fs.fdatasyncSync(fd);
    return since(t0);
  } finally {
    fs.closeSync(fd);
  }
}

/** Both merged bases hold the same disk, or the benchmark fails. */
function sameContents(ours: string, oursFormat: string, peer: string): void {
  const args = ["compare", "-f", oursFormat, "-F", "qcow2", ours, peer];
  const r = spawnSync("qemu-img", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(" ")}: merged bases differ: ${r.stdout}${r.stderr}`);
}

/** Copy `names` from `from` into a new folder `to`, synced, so a run starts from clean cached files. */
function freshCopy(from: string, to: string, names: string[]): void {
  fs.mkdirSync(to);
  for (const n of names) {
    fs.copyFileSync(path.join(from, n), path.join(to, n));
    fdatasyncTime(path.join(to, n));
  }
}

/** A side's wall time and the part of it (ours) or after it (qemu-img) spent in fdatasync; seconds. */
interface Timing {
  s: number;
  sync: number;
}

/** One table row: its files, our merge of them, and what the merged base is checked against. */
interface Row {
  label: string;
  /** The template folder and the base and child file names in it. */
  dir: string;
  base: string;
  child: string;
  /** qemu-img's name of our base's format, for the check. */
  format: string;
}

export async function mergeBench(runs = Number(process.env.BENCH_RUNS ?? 5)): Promise<string> {
  if (!hasQemuImg()) return "merge: skipped (qemu-img is not installed)";
  if (spawnSync("qemu-io", ["--version"]).status !== 0) return "merge: skipped (qemu-io is not installed)";
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-mergebench-"));
  const clock = new SyncTimingOpener();
  try {
    // QCOW2 template, made by qemu; the overlay names its base relatively, so copies stay paired.
    const q = path.join(dir, "qcow2");
    fs.mkdirSync(q);
    const qBase = path.join(q, "base.qcow2");
    const qTop = path.join(q, "top.qcow2");
    timed("qemu-img", ["create", "-q", "-f", "qcow2", qBase, String(SIZE)]);
    timed("qemu-io", ["-f", "qcow2", "-c", `write -P 0x${BASE_BYTE.toString(16)} 0 ${SIZE}`, qBase]);
    timed("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", qTop]);
    const writes = SLOTS.flatMap((s) => ["-c", `write -P 0x${CHILD_BYTE.toString(16)} ${s * RUN} ${RUN}`]);
    timed("qemu-io", ["-f", "qcow2", ...writes, qTop]);

    // VDI template, made by us as createmedium and a snapshot would.
    const v = path.join(dir, "vdi");
    fs.mkdirSync(v);
    const vBase = path.join(v, "base.vdi");
    const vTop = path.join(v, "top.vdi");
    {
      const mm = new MediumManager(new MediaRegistry(v));
      const base = await mm.create({ path: vBase, format: "VDI", size: SIZE });
      const buf = new Uint8Array(RUN).fill(BASE_BYTE);
      const img = await mm.open(base.uuid);
      try {
        for (let pos = 0; pos < SIZE; pos += RUN) await img.write(pos, buf);
        await img.flush();
      } finally {
        await img.close();
      }
      const child = await mm.create({ path: vTop, parent: base.uuid });
      const chain = await mm.open(child.uuid);
      try {
        buf.fill(CHILD_BYTE);
        for (const s of SLOTS) await chain.write(s * RUN, buf);
        await chain.flush();
      } finally {
        await chain.close();
      }
    }

    let n = 0;
    /** A fresh copy of a template in a new folder (its own registry home); returns the folder. */
    const fresh = (from: string, names: string[]): string => {
      const to = path.join(dir, `run-${n++}`);
      freshCopy(from, to, names);
      return to;
    };

    /** Ours: register the pair in a new registry, then open, merge, flush, close; the last four timed. */
    const ours = async (row: Row, at: string): Promise<Timing> => {
      const mm = new MediumManager(new MediaRegistry(at), clock);
      const base = await mm.register(path.join(at, row.base));
      const child = await mm.register(path.join(at, row.child));
      clock.synced = 0;
      const t0 = now();
      const img = await mm.open(child.uuid, { writableParents: [base.uuid] });
      try {
        if (!(img instanceof ImageChain)) throw new Error(`${row.child} opened without its parent`);
        await mergeChildIntoParent(img.layers, 0, { hasOtherChildren: () => false });
        await img.flush();
      } finally {
        await img.close();
      }
      return { s: since(t0), sync: clock.synced };
    };
    const commit = (at: string, unsafe: boolean): Timing => {
      const s = timed("qemu-img", ["commit", ...(unsafe ? ["-t", "unsafe"] : []), "-f", "qcow2", path.join(at, "top.qcow2")]);
      return { s, sync: unsafe ? 0 : fdatasyncTime(path.join(at, "base.qcow2")) };
    };

    const rows: Row[] = [
      { label: "QCOW2", dir: q, base: "base.qcow2", child: "top.qcow2", format: "qcow2" },
      { label: "VDI (qemu: QCOW2)", dir: v, base: "base.vdi", child: "top.vdi", format: "vdi" },
    ];
    const qNames = ["base.qcow2", "top.qcow2"];
    const results: { row: Row; ours: Timing; qemu: Timing; unsafe: Timing }[] = [];
    for (const row of rows) {
      const oursRuns: Timing[] = [];
      const qemuRuns: Timing[] = [];
      const unsafeRuns: Timing[] = [];
      // Run 0 is a warm-up; every run's results are checked, and its files removed.
      for (let i = 0; i <= runs; i++) {
        const mine = fresh(row.dir, [row.base, row.child]);
        const peer = fresh(q, qNames);
        const peerUnsafe = fresh(q, qNames);
        try {
          // Interleaved, and which side goes first alternates.
          const sides: [Timing[], () => Timing | Promise<Timing>][] = [
            [oursRuns, () => ours(row, mine)],
            [qemuRuns, () => commit(peer, false)],
            [unsafeRuns, () => commit(peerUnsafe, true)],
          ];
          if (i % 2 === 1) sides.reverse();
          for (const [into, side] of sides) {
            const t = await side();
            if (i > 0) into.push(t);
          }
          sameContents(path.join(mine, row.base), row.format, path.join(peer, "base.qcow2"));
          sameContents(path.join(peerUnsafe, "base.qcow2"), "qcow2", path.join(peer, "base.qcow2"));
        } finally {
          for (const d of [mine, peer, peerUnsafe]) fs.rmSync(d, { recursive: true, force: true });
        }
      }
      const med = (ts: Timing[]): Timing => ({ s: median(ts.map((t) => t.s)), sync: median(ts.map((t) => t.sync)) });
      results.push({ row, ours: med(oursRuns), qemu: med(qemuRuns), unsafe: med(unsafeRuns) });
    }
    const startup = median(Array.from({ length: Math.max(runs, 5) }, () => timed("qemu-img", ["--version"])));

    const lines = [
      `Snapshot merge, a child holding 64 MiB (64 scattered 1 MiB runs) merged into its 256 MiB base, files in the page cache,`,
      `vstor (MediumManager chain + mergeChildIntoParent, flush, close) vs qemu-img commit, whole operation, median of ${runs} interleaved runs`,
      `(MB = 10^6 bytes of the 64 MiB merged); qemu-img commit fdatasyncs the base itself ("+sync": ms of one more fdatasync after it);`,
      `"sync": ms of vstor's run spent in fdatasync; "unsafe": qemu-img commit -t unsafe (no flush), beside vstor's time without its sync`,
      `  ${"format".padEnd(18)} ${"vstor".padStart(9)} ${"ms".padStart(5)} ${"sync".padStart(5)} ${"qemu-img".padStart(9)} ${"ms".padStart(5)} ${"vstor/qemu-img".padStart(15)}` +
        ` ${"+sync".padStart(5)} ${"both durable".padStart(13)} ${"unsafe".padStart(9)} ${"both w/o sync".padStart(14)}`,
    ];
    const ms = (s: number) => `${(s * 1000).toFixed(0)}`.padStart(5);
    const rate = (s: number) => `${mbps(MERGED, s).toFixed(0)} MB/s`.padStart(9);
    const ratio = (a: number, b: number) => `${(b / a).toFixed(2)}x`;
    for (const { row, ours, qemu, unsafe } of results) {
      lines.push(
        `  ${row.label.padEnd(18)} ${rate(ours.s)} ${ms(ours.s)} ${ms(ours.sync)} ${rate(qemu.s)} ${ms(qemu.s)} ${ratio(ours.s, qemu.s).padStart(15)}` +
          ` ${ms(qemu.sync)} ${ratio(ours.s, qemu.s + qemu.sync).padStart(13)} ${rate(unsafe.s)} ${ratio(ours.s - ours.sync, unsafe.s).padStart(14)}`,
      );
    }
    lines.push(`  qemu-img start-up (qemu-img --version): ${(startup * 1000).toFixed(0)} ms, inside every qemu-img figure`);
    return lines.join("\n");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
