/** Timing helpers shared by the benchmarks that measure a peer process in the same run. */
import { spawnSync } from "node:child_process";
import type { FileIo, FileOpener, OpenOptions } from "../media/io/file-io.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const now = (): bigint => process.hrtime.bigint();
/** Seconds since `t0` (from now()). */
export const since = (t0: bigint): number => Number(now() - t0) / 1e9;
/** MB/s (MB = 10^6 bytes) for `bytes` moved in `seconds`. */
export const mbps = (bytes: number, seconds: number): number => bytes / 1e6 / seconds;

/** Wall time of a command, in seconds, as a spawned process (start, work, exit); throws if it fails. */
export function timed(cmd: string, args: string[]): number {
  const t0 = now();
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  const s = since(t0);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr}`);
  return s;
}

/** Whether qemu-img can be run here. */
export const hasQemuImg = (): boolean => spawnSync("qemu-img", ["--version"]).status === 0;

/** Node files whose flushes (fdatasync) are timed: `synced` seconds in all. */
export class SyncTimingOpener implements FileOpener {
  synced = 0;
  readonly #inner = new NodeFileOpener();

  async open(p: string, options?: OpenOptions): Promise<FileIo> {
    const file = await this.#inner.open(p, options);
    const flush = file.flush.bind(file);
    file.flush = async () => {
      const t0 = now();
      try {
        await flush();
      } finally {
        this.synced += since(t0);
      }
    };
    return file;
  }
  exists(p: string): Promise<boolean> {
    return this.#inner.exists(p);
  }
  remove(p: string): Promise<void> {
    return this.#inner.remove(p);
  }
  rename(from: string, to: string): Promise<void> {
    return this.#inner.rename(from, to);
  }
}
