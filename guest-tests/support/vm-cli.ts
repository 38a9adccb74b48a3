/**
 * Guest tests through the CLI as a user drives it: `vstor startvm NAME --agent` in the
 * background, scripts run in the guest with `controlvm NAME runscript`, everything else with
 * the verbs themselves. Each test file has its own VSTOR_HOME.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect } from "vitest";

export const cli = join(process.cwd(), "dist", "vstor.mjs");

export interface VmCli {
  home: string;
  work: string;
  vstor(...args: string[]): { status: number | null; out: string; stdout: string };
  ok(...args: string[]): string;
  /** Start a machine in the background with its agent; resolves once it runs. */
  start(name: string): Promise<RunningVm>;
  /** Run a shell script in a running machine's guest. */
  run(name: string, script: string): { status: number | null; out: string };
  /** Run a script that must succeed; its output. */
  runOk(name: string, script: string): string;
  /** Kill every machine this test started that still runs (after a failure). */
  stopAll(): void;
}

export interface RunningVm {
  process: ChildProcess;
  exited: Promise<number | null>;
  output: () => string;
}

/**
 * A sandbox for one test file: dist/vstor.mjs is rebuilt before its tests, and machines left
 * running by a failed test are killed after them.
 */
export function vmCli(prefix: string): VmCli {
  beforeAll(() => {
    const b = spawnSync(process.execPath, ["build.mjs"], { encoding: "utf8" });
    expect(b.status, b.stderr).toBe(0);
  });
  afterAll(() => sandbox.stopAll());
  const work = mkdtempSync(join(tmpdir(), `vstor-${prefix}-`));
  const home = join(work, "home");
  const env = { ...process.env, VSTOR_HOME: home, VSTOR_PROGRESS: "0" };
  let scripts = 0;
  const children: ChildProcess[] = [];
  const vstor = (...args: string[]) => {
    const r = spawnSync(process.execPath, [cli, ...args], { env, encoding: "utf8", timeout: 900_000 });
    return { status: r.status, out: `${r.stdout}${r.stderr}`, stdout: r.stdout };
  };
  const ok = (...args: string[]) => {
    const r = vstor(...args);
    expect(r.status, `vstor ${args.join(" ")}: ${r.out}`).toBe(0);
    return r.stdout;
  };
  const run = (name: string, script: string) => {
    const file = join(work, `script-${++scripts}.sh`);
    writeFileSync(file, script);
    return vstor("controlvm", name, "runscript", file);
  };
  const sandbox: VmCli = {
    home,
    work,
    vstor,
    ok,
    run,
    runOk(name, script) {
      const r = run(name, script);
      expect(r.status, `script in '${name}':\n${script}\n${r.out}`).toBe(0);
      return r.out;
    },
    stopAll() {
      // startvm re-executes itself with the emulator's flags: the machine runs in that child,
      // whose pid its session file names.
      for (const m of existsSync(join(home, "machines")) ? readdirSync(join(home, "machines")) : []) {
        const session = join(home, "machines", m, "session.json");
        if (!existsSync(session)) continue;
        try {
          process.kill((JSON.parse(readFileSync(session, "utf8")) as { pid: number }).pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    },
    async start(name) {
      const child = spawn(process.execPath, [cli, "startvm", name, "--agent"], { env });
      children.push(child);
      let text = "";
      child.stdout!.on("data", (d: Buffer) => (text += d.toString()));
      child.stderr!.on("data", (d: Buffer) => (text += d.toString()));
      const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      const started = await Promise.race([
        new Promise<boolean>((resolve) => {
          const timer = setInterval(() => {
            if (/is running \(pid \d+\)/.test(text)) {
              clearInterval(timer);
              resolve(true);
            }
          }, 200);
          void exited.then(() => {
            clearInterval(timer);
            resolve(false);
          });
        }),
      ]);
      expect(started, `startvm ${name}: ${text}`).toBe(true);
      return { process: child, exited, output: () => text };
    },
  };
  return sandbox;
}

/** Guest shell: write a pattern (vstor-io, O_DIRECT) to a disk region. */
export const mark = (dev: string, seed: number, offset = "1m") => `vstor-io --dev ${dev} --op write --seed ${seed} --offset ${offset} --size 64k --fsync >/dev/null`;
/** Guest shell: print "DEV:SEED:yes|no" for whether the pattern is there. */
export const probe = (dev: string, seed: number, offset = "1m") =>
  `if vstor-io --dev ${dev} --op verify --seed ${seed} --offset ${offset} --size 64k >/dev/null 2>&1; then echo ${dev}:${seed}:yes; else echo ${dev}:${seed}:no; fi`;
