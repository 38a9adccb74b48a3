/**
 * Where vstor keeps its persistent state, and how it writes it: JSON under VSTOR_HOME
 * (default ~/.config/vstor), written atomically (write a temp file, then rename) so a crash
 * never leaves half a file; read-modify-write cycles across processes go through a lock.
 */
import { mkdirSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";

export function vstorHome(): string {
  return process.env.VSTOR_HOME ?? join(homedir(), ".config", "vstor");
}

export function writeJsonAtomic(path: string, value: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + "\n");
  renameSync(tmp, path);
}

const STALE_LOCK_MS = 30_000;

/**
 * Run `fn` holding a lock directory next to `path` (mkdir is atomic). A lock older than 30 s is
 * taken to be left by a crashed process and broken.
 */
export function withFileLock<T>(path: string, fn: () => T): T {
  const lock = `${path}.lock`;
  mkdirSync(dirname(path), { recursive: true });
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      try {
        if (Date.now() - statSync(lock).mtimeMs > STALE_LOCK_MS) rmSync(lock, { recursive: true, force: true });
      } catch {
        // gone meanwhile
      }
      if (Date.now() > deadline) throw new Error(`vstor: ${path} stays locked by another vstor process (${lock})`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
