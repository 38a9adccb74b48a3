/**
 * The CLI as a user runs it, for tests: `node dist/vstor.mjs` (built by `node build.mjs`) with
 * VSTOR_HOME in a temporary folder of the test's own.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "vitest";

export const cliPath = join(process.cwd(), "dist", "vstor.mjs");

export function cliSandbox(prefix: string, timeoutMs = 300_000) {
  const work = mkdtempSync(join(tmpdir(), `vstor-${prefix}-`));
  const home = join(work, "home");
  const env = { ...process.env, VSTOR_HOME: home, VSTOR_PROGRESS: "0" };
  const vstor = (...args: string[]) => {
    const r = spawnSync(process.execPath, [cliPath, ...args], { env, encoding: "utf8", timeout: timeoutMs });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const ok = (...args: string[]): string => {
    const r = vstor(...args);
    expect(r.status, `${args.join(" ")}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  return {
    work,
    home,
    env,
    file: (name: string) => join(work, name),
    vstor,
    ok,
    json: <T = Record<string, unknown>>(...args: string[]): T => JSON.parse(ok(...args, "--json")) as T,
    /** A verb that must fail with exit 1; its stderr. */
    refused: (...args: string[]): string => {
      const r = vstor(...args);
      expect(r.status, `${args.join(" ")} should be refused: ${r.stdout}${r.stderr}`).toBe(1);
      return r.stderr;
    },
    cleanup: () => rmSync(work, { recursive: true, force: true }),
  };
}
