/**
 * One IDE benchmark boot, in its own process (ide.bench.ts runs it with --v8-pool-size=1).
 * usage: node ide-child.mjs vstor|v86-buffer|v86-async IMAGE [COUNT_RANDREAD]
 *   vstor:      V86Host installed, our IdeController (ICH6) with IMAGE (raw, NodeFileOpener)
 *               on the primary master; v86's built-in IDE is replaced.
 *   v86-buffer: plain v86 (no vstor code in the emulator), IMAGE read into an ArrayBuffer as hda.
 *   v86-async:  plain v86, IMAGE as hda in v86's async file mode ({ url, async: true, size }).
 * The guest runs the workloads from a boot script and brackets each with "@@BENCH" lines; the
 * host notes guest instructions and its own CPU time at each bracket. Prints one JSON line.
 * BENCH_IDE_PROFILE=DIR: a V8 CPU profile of each workload (bracket to bracket), DIR/MODE-NAME.cpuprofile.
 * BENCH_IDE_TRACE=1: also count, per workload, v86's main_loop slices (time inside; returns with the
 * CPU halted, and the time until the next slice), port I/O per port (count, time in the handler),
 * CPU time per thread and the main thread's context switches, the event loop's utilization and,
 * for vstor, the medium's reads and writes (synchronous submission time, latency) and the
 * synchronous part of each fs.read / fs.write call (the libuv thread-pool submission). This wraps
 * v86 internals (cpu.main_loop, cpu.io.port_*) in every mode; leave it off for the headline figures.
 */
import { openSync, closeSync, fstatSync, writeFileSync, readdirSync, readFileSync } from "node:fs";
import { Session } from "node:inspector";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { join } from "node:path";
import { bootGuest } from "../machine/guest-session.js";
import { IdeController } from "../devices/ide/controller.js";
import { readImageBuffer, startPlainV86 } from "./v86-peer.js";
import { openRaw, type RawBackend } from "../media/formats/raw/raw.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";

const mode = process.argv[2] ?? "vstor";
const image = process.argv[3]!;
const randCount = Number(process.argv[4] ?? 3000);
const MiB = 1 << 20;

export interface WorkloadSample {
  /** Guest-side figures: elapsed seconds (guest clock), requests and sectors from /sys/block/sda/stat, IRQ 14 count. */
  guestSeconds: number;
  rate: number;
  ios: number;
  sectors: number;
  irqs: number;
  /** Host-side, between the bracket lines: guest instructions, host CPU seconds (user+sys), wall seconds, minor page faults. */
  instructions: number;
  pageFaults: number;
  hostCpu: number;
  hostWall: number;
  /** BENCH_IDE_TRACE=1: counter deltas over the workload, and the event loop's utilization. */
  trace?: Record<string, number>;
}

export interface ChildResult {
  mode: string;
  booted: number;
  ready: number;
  workloads: Record<string, WorkloadSample>;
  queue: Record<string, string>;
  maxRssMiB: number;
  /** Host CPU seconds of the whole child (user + system), to tell its load from other processes'. */
  cpuSeconds: number;
  output: string;
}

/*
 * Guest script. The guest clock (which follows host time in v86) is read from /proc/timer_list's
 * "now at N nsecs" (busybox `date` has no %N), with /proc/uptime (10 ms) as the fallback. For each
 * workload: /sys/block/sda/stat (reads: fields 1 and 3, writes: 5 and 7) and the IRQ 14 line of
 * /proc/interrupts before and after.
 */
const script = `
dev=/dev/sda
irq14() { awk '$1=="14:" {s=0; for (i=2;i<=NF;i++) if ($i ~ /^[0-9]+$/) s+=$i; print s}' /proc/interrupts; }
now() { sed -n 's/^now at \\([0-9]*\\) nsecs.*/\\1/p;3q' /proc/timer_list 2>/dev/null; }
snap() { echo "@@SNAP $1 $(now) $(cut -d' ' -f1 /proc/uptime) $(cat /sys/block/sda/stat | tr -s ' ' | sed 's/^ //') irq $(irq14)"; }
for f in max_sectors_kb max_hw_sectors_kb max_segments max_segment_size nr_requests scheduler; do
  echo "@@QUEUE $f $(cat /sys/block/sda/queue/$f 2>/dev/null | tr ' ' '_')"
done
echo "@@QUEUE size_sectors $(cat /sys/block/sda/size)"
echo "@@QUEUE xfer $(cat /sys/class/ata_device/dev1.0/xfer_mode 2>/dev/null)"
echo "@@QUEUE path $(readlink -f /sys/block/sda | cut -d/ -f4-6)"
echo "@@QUEUE ata_drivers $(cd /sys/bus/pci/drivers && ls -d ata*/0000:* 2>/dev/null | tr '\\n' ' ')"
run() { name=$1; shift; sync; echo "@@BENCH BEGIN $name"; snap "$name-a"; "$@" > /tmp/$name.out 2>&1; st=$?; snap "$name-b"; echo "@@BENCH END $name"; echo "@@STATUS $name $st"; cat /tmp/$name.out; }
run seqread dd if=$dev of=/dev/null bs=1M count=200 iflag=direct
run seqwrite dd if=/dev/zero of=$dev bs=1M count=200 oflag=direct
run randread vstor-io --dev $dev --op randread --bs 4096 --qd 1 --count ${randCount}
`;

const t0 = performance.now();
const since = () => (performance.now() - t0) / 1000;

interface Emu {
  get_instruction_counter(): number;
}
let emu: Emu | undefined;

// Guest instructions: a 32-bit counter in v86, accumulated here so wraps are not lost.
let instrTotal = 0;
let instrLast = 0;
const sampleInstructions = () => {
  if (!emu) return instrTotal;
  const c = emu.get_instruction_counter() >>> 0;
  instrTotal += (c - instrLast + 2 ** 32) % 2 ** 32;
  instrLast = c;
  return instrTotal;
};
const sampler = setInterval(sampleInstructions, 200);

// Optional CPU profile of each workload, started and stopped at its bracket lines.
const profileDir = process.env.BENCH_IDE_PROFILE;
const inspector = profileDir ? new Session() : undefined;
const post = (method: string, params?: object) =>
  new Promise<{ profile?: object }>((resolve, reject) => inspector!.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res as { profile?: object }))));
if (inspector) {
  inspector.connect();
  await post("Profiler.enable");
  await post("Profiler.setSamplingInterval", { interval: 100 });
}
const profiling: Promise<void>[] = [];
const profileBracket = (name: string, edge: string) => {
  if (!inspector) return;
  if (edge === "BEGIN") profiling.push(post("Profiler.start").then(() => undefined));
  else profiling.push(post("Profiler.stop").then((r) => writeFileSync(join(profileDir!, `${mode}-${name}.cpuprofile`), JSON.stringify(r.profile))));
};

// Optional trace counters (BENCH_IDE_TRACE=1), cumulative; snapshotted at the bracket lines.
const tracing = process.env.BENCH_IDE_TRACE === "1";
const counters: Record<string, number> = { loops: 0, loopMs: 0, halts: 0, haltsShort: 0, haltGapMs: 0, sleeps: 0, sleepMs: 0, reads: 0, readMs: 0, readSubmitMs: 0, readBytes: 0, writes: 0, writeMs: 0, portIo: 0, portMs: 0 };
type Counters = Record<string, number>;
const bump = (k: string, v = 1) => (counters[k] = (counters[k] ?? 0) + v);
interface TracedCpu {
  main_loop: () => number;
  in_hlt: Uint8Array;
  io: Record<string, (...a: number[]) => number | void>;
}
function traceEmulator(e: unknown): void {
  const cpu = (e as { v86: { cpu: TracedCpu } }).v86.cpu;
  const inner = cpu.main_loop;
  let haltedAt = -1;
  cpu.main_loop = () => {
    const t = performance.now();
    if (haltedAt >= 0) counters.haltGapMs! += t - haltedAt;
    const r = inner();
    const end = performance.now();
    counters.loops!++;
    counters.loopMs! += end - t;
    haltedAt = -1;
    if (cpu.in_hlt[0]) {
      counters.halts!++;
      haltedAt = end;
      if (r < 1) counters.haltsShort!++;
    }
    if (r >= 1) {
      counters.sleeps!++;
      counters.sleepMs! += r;
    }
    return r;
  };
  // Port I/O: every access counted per port, time spent in handlers summed (all ports but the UART's).
  for (const m of ["port_read8", "port_read16", "port_read32", "port_write8", "port_write16", "port_write32"]) {
    const orig = cpu.io[m]!.bind(cpu.io);
    cpu.io[m] = (port: number, value?: number) => {
      if (port >= 0x3f8 && port <= 0x3ff) return orig(port, value!);
      const t = performance.now();
      const r = orig(port, value!);
      const dt = performance.now() - t;
      counters.portMs! += dt;
      counters.portIo!++;
      bump(`port_${port.toString(16)}`);
      bump(`portms_${m.startsWith("port_read") ? "r" : "w"}${port.toString(16)}`, dt);
      return r;
    };
  }
}
/** Time the synchronous part of every fs.read / fs.write call (the thread-pool submission). */
function traceFsSubmit(): void {
  const nodeFs = createRequire(import.meta.url)("node:fs") as Record<string, (...a: unknown[]) => unknown>;
  for (const name of ["read", "write"]) {
    const orig = nodeFs[name]!;
    nodeFs[name] = function (this: unknown, ...args: unknown[]) {
      const t = performance.now();
      try {
        return orig.apply(this, args);
      } finally {
        bump(`fs_${name}_calls`);
        bump(`fs_${name}_submitMs`, performance.now() - t);
      }
    };
  }
  syncBuiltinESMExports();
}
function traceMedium(m: RawBackend): void {
  const read = m.read.bind(m);
  const write = m.write.bind(m);
  m.read = async (pos, buf) => {
    const t = performance.now();
    const p = read(pos, buf);
    counters.readSubmitMs! += performance.now() - t;
    try {
      return await p;
    } finally {
      counters.reads!++;
      counters.readBytes! += buf.length;
      counters.readMs! += performance.now() - t;
    }
  };
  m.write = async (pos, buf) => {
    const t = performance.now();
    try {
      return await write(pos, buf);
    } finally {
      counters.writes!++;
      counters.writeMs! += performance.now() - t;
    }
  };
}
/** Per-thread CPU seconds by thread name, and the main thread's context switches (Linux /proc). */
function threadCounters(): Counters {
  const out: Counters = {};
  try {
    for (const tid of readdirSync("/proc/self/task")) {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")).replace(/[^A-Za-z0-9]+/g, "_");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const cpu = (Number(f[11]) + Number(f[12])) / 100; // utime + stime, USER_HZ ticks
      const key = tid === String(process.pid) ? "thr_main" : `thr_${comm}`;
      out[key] = (out[key] ?? 0) + cpu;
    }
    const st = readFileSync(`/proc/self/task/${process.pid}/status`, "utf8");
    out.mainVoluntaryCs = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(st)?.[1] ?? NaN);
    out.mainPreempted = Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(st)?.[1] ?? NaN);
  } catch {
    // not Linux
  }
  return out;
}
const elu = new Map<string, ReturnType<typeof performance.eventLoopUtilization>>();

const brackets = new Map<string, { instructions: number; cpu: number; wall: number; faults: number; trace?: Counters }>();
const lines: string[] = [];
const onLine = (line: string) => {
  lines.push(line);
  const m = /@@BENCH (BEGIN|END) (\S+)/.exec(line);
  if (m) {
    const u = process.cpuUsage();
    const faults = process.resourceUsage().minorPageFault;
    brackets.set(`${m[2]}-${m[1]}`, { instructions: sampleInstructions(), cpu: (u.user + u.system) / 1e6, wall: since(), faults, trace: tracing ? { ...counters, ...threadCounters() } : undefined });
    if (tracing) elu.set(`${m[2]}-${m[1]}`, performance.eventLoopUtilization());
    profileBracket(m[2]!, m[1]!);
  }
};

let booted = NaN;
let ready = NaN;
let output: string;
let medium: RawBackend | undefined;

if (mode === "vstor") {
  medium = await openRaw(new NodeFileOpener(), image);
  if (tracing) {
    traceMedium(medium);
    traceFsSubmit();
  }
  const s = await bootGuest({
    script,
    mode: "agent",
    onLine,
    bootTimeoutMs: 300_000,
    setup: (host) => {
      new IdeController(host, {
        chipset: "ich6",
        primary: { master: { kind: "ata", medium: medium!, serial: "VSTOR-BENCH-0001", model: "VSTOR BENCH DISK" } },
      });
    },
  });
  emu = s.vm.emulator as unknown as Emu;
  if (tracing) traceEmulator(emu);
  instrLast = emu.get_instruction_counter() >>> 0; // counted from here (boot not included)
  booted = s.timings.booted;
  ready = s.timings.ready;
  const r = await s.console.result("0", 600_000);
  output = r.output;
  await s.stop();
  await medium.close();
} else {
  let hda: Record<string, unknown>;
  if (mode === "v86-buffer") {
    hda = { buffer: readImageBuffer(image) };
  } else if (mode === "v86-async") {
    const fd = openSync(image, "r");
    const size = fstatSync(fd).size;
    closeSync(fd);
    hda = { url: image, async: true, size };
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  const { emulator, console: c } = startPlainV86(script, { hda });
  emu = emulator;
  c.onLine = onLine;
  await c.waitFor("@@VSTOR BOOTED", 300_000);
  booted = since();
  await c.waitFor("@@VSTOR READY", 300_000);
  ready = since();
  if (tracing) traceEmulator(emu);
  const r = await c.result("0", 600_000);
  output = r.output;
  await emulator.stop();
  await emulator.destroy();
}
clearInterval(sampler);
await Promise.all(profiling);

// Parse the guest's snapshots.
const snaps = new Map<string, { time: number; stat: number[]; irq: number }>();
const queue: Record<string, string> = {};
for (const line of output.split("\n")) {
  const s = /@@SNAP (\S+) (\d*) ?([0-9.]+) ([0-9 ]+) irq (\d+)/.exec(line);
  if (s) snaps.set(s[1]!, { time: s[2] ? Number(s[2]) / 1e9 : Number(s[3]), stat: s[4]!.trim().split(/\s+/).map(Number), irq: Number(s[5]) });
  const q = /@@QUEUE (\S+) ?(.*)$/.exec(line.trim());
  if (q) queue[q[1]!] = q[2]!;
  const st = /@@STATUS (\S+) (\d+)/.exec(line);
  if (st && st[2] !== "0") throw new Error(`guest workload ${st[1]} failed (${st[2]}):\n${output}`);
}

const workloads: Record<string, WorkloadSample> = {};
for (const name of ["seqread", "seqwrite", "randread"]) {
  const a = snaps.get(`${name}-a`);
  const b = snaps.get(`${name}-b`);
  const ba = brackets.get(`${name}-BEGIN`);
  const be = brackets.get(`${name}-END`);
  if (!a || !b || !ba || !be) throw new Error(`missing figures for ${name}:\n${output}`);
  const isWrite = name === "seqwrite";
  const ios = isWrite ? b.stat[4]! - a.stat[4]! : b.stat[0]! - a.stat[0]!;
  const sectors = isWrite ? b.stat[6]! - a.stat[6]! : b.stat[2]! - a.stat[2]!;
  const guestSeconds = b.time - a.time;
  let rate: number;
  if (name === "randread") {
    // vstor-io's own figure (timed around its I/O loop only).
    const m = /op=randread .*iops=(\d+)/.exec(output);
    if (!m) throw new Error(`no vstor-io result:\n${output}`);
    rate = Number(m[1]);
  } else {
    rate = (200 * MiB) / 1e6 / guestSeconds;
  }
  workloads[name] = {
    guestSeconds,
    rate,
    ios,
    sectors,
    irqs: b.irq - a.irq,
    instructions: be.instructions - ba.instructions,
    pageFaults: be.faults - ba.faults,
    hostCpu: be.cpu - ba.cpu,
    hostWall: be.wall - ba.wall,
  };
  if (ba.trace && be.trace) {
    const d: Record<string, number> = {};
    for (const k of Object.keys(be.trace)) d[k] = be.trace[k]! - (ba.trace[k] ?? 0);
    d.elu = performance.eventLoopUtilization(elu.get(`${name}-END`)!, elu.get(`${name}-BEGIN`)!).utilization;
    workloads[name]!.trace = d;
  }
}

const result: ChildResult = { mode, booted, ready, workloads, queue, maxRssMiB: process.resourceUsage().maxRSS / 1024, cpuSeconds: (process.cpuUsage().user + process.cpuUsage().system) / 1e6, output };
console.log(JSON.stringify(result));
process.exit(0);
