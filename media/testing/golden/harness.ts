/**
 * Test-side plumbing for the golden images: temp files, reading a whole medium in requests of
 * varying size, describing the first difference, and asking qemu-img for its opinion.
 * Only the public API of the media layer is used (detectFormat / FORMATS / ImageChain).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { BlockBackend } from "../../block.js";
import { SECTOR, type GoldenFile } from "./shared.js";

export const hasQemuImg = spawnSync("qemu-img", ["--version"]).status === 0;

export function writeFiles(dir: string, files: readonly GoldenFile[]): string[] {
  return files.map((f) => {
    const p = path.join(dir, f.name);
    fs.writeFileSync(p, f.bytes);
    return p;
  });
}

/**
 * Read every byte of `b`, in requests whose sizes cycle through `sizes` (sectors), so that reads
 * start and end inside grains, blocks and clusters as well as on their edges.
 */
export async function readAll(b: BlockBackend, sizes: readonly number[] = [2048]): Promise<Uint8Array> {
  const out = new Uint8Array(b.size);
  let at = 0;
  for (let i = 0; at < b.size; i++) {
    const n = Math.min(sizes[i % sizes.length]! * SECTOR, b.size - at);
    await b.read(at, out.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** null if equal, else where and how they first differ (sector tags make misplaced data obvious). */
export function firstDifference(actual: Uint8Array, expected: Uint8Array): string | null {
  if (actual.length !== expected.length) return `length ${actual.length} != ${expected.length}`;
  if (Buffer.compare(Buffer.from(actual.buffer, actual.byteOffset, actual.length), Buffer.from(expected.buffer, expected.byteOffset, expected.length)) === 0) return null;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  const s = Math.floor(i / SECTOR) * SECTOR;
  const show = (b: Uint8Array) => JSON.stringify(Buffer.from(b.subarray(s, s + 12)).toString("latin1"));
  return `first difference at byte ${i} (sector ${s / SECTOR}): got ${show(actual)} want ${show(expected)}`;
}

/** Write `content` as a sparse raw file (all-zero 64 KiB pieces are left as holes). */
export function writeSparseRaw(p: string, content: Uint8Array): void {
  const fd = fs.openSync(p, "w");
  try {
    const step = 64 * 1024;
    for (let at = 0; at < content.length; at += step) {
      const piece = content.subarray(at, Math.min(at + step, content.length));
      if (piece.some((x) => x !== 0)) fs.writeSync(fd, piece, 0, piece.length, at);
    }
    fs.ftruncateSync(fd, content.length);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * `qemu-img compare` of an image (in qemu's format `qemuFormat`) with the raw `content`: checks
 * the generator against an independent reader. Returns qemu's exit status and output.
 */
export function qemuCompare(image: string, qemuFormat: string, content: Uint8Array): { status: number; out: string } {
  const raw = `${image}.expected.raw`;
  writeSparseRaw(raw, content);
  try {
    const r = spawnSync("qemu-img", ["compare", "-f", qemuFormat, "-F", "raw", image, raw], { encoding: "utf8" });
    return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
  } finally {
    fs.rmSync(raw, { force: true });
  }
}

/** Sectors of `expected` that hold non-zero bytes but lie in no "data" extent (should be none). */
export function dataOutsideExtents(expected: Uint8Array, extents: readonly { offset: number; length: number; state: string }[]): number[] {
  const covered = new Uint8Array(Math.ceil(expected.length / SECTOR));
  for (const e of extents) if (e.state === "data") covered.fill(1, e.offset / SECTOR, (e.offset + e.length) / SECTOR);
  const bad: number[] = [];
  for (let s = 0; s < covered.length && bad.length < 8; s++) {
    if (covered[s]) continue;
    const sec = expected.subarray(s * SECTOR, (s + 1) * SECTOR);
    if (sec.some((x) => x !== 0)) bad.push(s);
  }
  return bad;
}
