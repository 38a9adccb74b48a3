/**
 * Boot benchmark: time from start to the guest's init, to modules loaded and to a script's end,
 * median of several runs each in a fresh process, for
 *   - vstor (V86Host installed) against plain v86 with the same guest (the peer), and
 *   - the Node flags `vstor startvm` uses against Node's defaults.
 */
import { spawnSync } from "node:child_process";
import { bundleForNode } from "../guest-tests/support/bundle.js";

interface Timings {
  booted: number;
  ready: number;
  scriptEnd: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function bootBench(runs = Number(process.env.BENCH_RUNS ?? 3)): Promise<string> {
  const child = await bundleForNode("bench/boot-child.ts");
  const configs = [
    { name: "vstor, --v8-pool-size=1", mode: "vstor", flags: ["--v8-pool-size=1"] },
    { name: "plain v86, --v8-pool-size=1", mode: "plain", flags: ["--v8-pool-size=1"] },
    { name: "vstor, Node defaults", mode: "vstor", flags: [] },
    { name: "plain v86, Node defaults", mode: "plain", flags: [] },
  ];
  const results = new Map<string, Timings[]>();
  // Interleave configurations so machine noise spreads evenly.
  for (let i = 0; i < runs; i++) {
    for (const c of configs) {
      const r = spawnSync(process.execPath, [...c.flags, child, c.mode], { encoding: "utf8", timeout: 600_000 });
      if (r.status !== 0) throw new Error(`boot bench child failed (${c.name}): ${r.stderr}`);
      const t = JSON.parse(r.stdout.trim().split("\n").pop()!) as Timings;
      results.set(c.name, [...(results.get(c.name) ?? []), t]);
    }
  }
  const med = (name: string, k: keyof Timings) => median(results.get(name)!.map((t) => t[k]));
  const lines = ["boot (seconds, median of " + runs + ")        init    ready   script end"];
  for (const c of configs) {
    lines.push(`  ${c.name.padEnd(30)} ${med(c.name, "booted").toFixed(2).padStart(6)}  ${med(c.name, "ready").toFixed(2).padStart(6)}  ${med(c.name, "scriptEnd").toFixed(2).padStart(6)}`);
  }
  const ratio = med(configs[0].name, "scriptEnd") / med(configs[1].name, "scriptEnd");
  const flagRatio = med(configs[0].name, "scriptEnd") / med(configs[2].name, "scriptEnd");
  lines.push(`  vstor / plain v86 (script end):                ${ratio.toFixed(2)}x`);
  lines.push(`  --v8-pool-size=1 / Node defaults (vstor):      ${flagRatio.toFixed(2)}x`);
  return lines.join("\n");
}
