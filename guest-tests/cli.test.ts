/**
 * The machine verbs end to end, as a user runs them: createvm, list, showvminfo, startvm with a
 * script (exit status passed through), startvm on an interactive console (a real pty), controlvm
 * reset and poweroff from another process, unregistervm --delete.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as pty from "node-pty";
import { waitForText } from "./support/pty-wait.js";
import { beforeAll, describe, expect, it } from "vitest";

const home = mkdtempSync(join(tmpdir(), "vstor-home-"));
const env = { ...process.env, VSTOR_HOME: home };
const cli = join(process.cwd(), "dist", "vstor.mjs");

function vstor(...args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { env, encoding: "utf8", timeout: 300_000 });
}


beforeAll(() => {
  const b = spawnSync(process.execPath, ["build.mjs"], { encoding: "utf8" });
  expect(b.status, b.stderr).toBe(0);
});

describe("vstor machine verbs", () => {
  it("creates, lists and shows a machine", () => {
    expect(vstor("createvm", "--name", "alpha", "--register").status).toBe(0);
    const again = vstor("createvm", "--name", "alpha", "--register");
    expect(again.status).toBe(1);
    expect(again.stderr).toContain("already registered");
    expect(vstor("list", "vms").stdout).toMatch(/^"alpha" \{[0-9a-f-]{36}\}$/m);
    const info = JSON.parse(vstor("showvminfo", "alpha", "--json").stdout) as { state: string; memoryMiB: number };
    expect(info.state).toBe("powered off");
    expect(info.memoryMiB).toBe(128);
  });

  it("runs a script in the guest and exits with its status", () => {
    const script = join(home, "s.sh");
    writeFileSync(script, 'echo "hello from $(uname -m)"\nexit 7\n');
    const r = vstor("startvm", "alpha", "--type", "headless", "--script", script, "--timeout", "240");
    expect(r.stdout).toContain("hello from i686");
    expect(r.status, r.stderr).toBe(7);
  });

  it("gives an interactive shell; controlvm reset reboots it and poweroff stops it from another process", async () => {
    const term = pty.spawn(process.execPath, [cli, "startvm", "alpha"], { env, cols: 120, rows: 40 });
    let screen = "";
    term.onData((d) => (screen += d));
    const exited = new Promise<number>((resolve) => term.onExit((e) => resolve(e.exitCode)));
    await waitForText(() => screen, "@@VSTOR READY", 240_000);
    await new Promise((r) => setTimeout(r, 1000));
    term.write("echo $((6*7))-answer\r");
    await waitForText(() => screen, "42-answer", 60_000);

    const info = JSON.parse(vstor("showvminfo", "alpha", "--json").stdout) as { state: string };
    expect(info.state).toBe("running");

    const mark = screen.length;
    expect(vstor("controlvm", "alpha", "reset").status).toBe(0);
    await waitForText(() => screen.slice(mark), "@@VSTOR BOOTED", 240_000);

    const off = vstor("controlvm", "alpha", "poweroff");
    expect(off.status, off.stderr).toBe(0);
    expect(await exited).toBe(0);
    expect(JSON.parse(vstor("showvminfo", "alpha", "--json").stdout).state).toBe("powered off");
  });

  it("refuses controlvm on a machine that is not running", () => {
    const r = vstor("controlvm", "alpha", "poweroff");
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("not running");
  });

  it("unregisters and deletes a machine", () => {
    expect(vstor("unregistervm", "alpha", "--delete").status).toBe(0);
    expect(vstor("list", "vms").stdout).not.toContain("alpha");
    expect(existsSync(join(home, "machines", "alpha"))).toBe(false);
  });
});

