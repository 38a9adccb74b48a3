/**
 * The harness the qemu interop tests share: running qemu-img / qemu-io, a temp dir per test file,
 * and the usual assertions (check is clean, qemu reads what we expect).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, expect } from "vitest";

export type QemuTool = "qemu-img" | "qemu-io";

export const hasQemu = spawnSync("qemu-img", ["--version"]).status === 0 && spawnSync("qemu-io", ["--version"]).status === 0;

/** Runs a qemu tool and reports its exit status and its stdout and stderr together; never throws. */
export function qemuTool(tool: QemuTool, ...args: string[]): { status: number; out: string } {
  const r = spawnSync(tool, args, { encoding: "utf8" });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** Runs a qemu tool that must succeed (throws with its output otherwise) and returns its stdout. */
export function qemu(tool: QemuTool, ...args: string[]): string {
  const r = spawnSync(tool, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${tool} ${args.join(" ")}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** qemu-io on `p` with one `-c` per command. */
export function qemuIo(p: string, format: string, ...commands: string[]): void {
  qemu("qemu-io", "-f", format, ...commands.flatMap((c) => ["-c", c]), p);
}

/**
 * How an image is named to qemu-img: a format name (`-f format path`), or for `--image-opts`
 * the option string for a path (e.g. a vpc driver told how to size the disk).
 */
export type QemuFormat = string | { imageOpts: (p: string) => string };

function source(p: string, format: QemuFormat | undefined): string[] {
  if (format === undefined) return [p];
  return typeof format === "string" ? ["-f", format, p] : ["--image-opts", format.imageOpts(p)];
}

/** `qemu-img <command> --output=json ...args`, parsed. */
export function qemuJson<T = Record<string, any>>(command: "info" | "map", ...args: string[]): T {
  return JSON.parse(qemu("qemu-img", command, "--output=json", ...args)) as T;
}

/** `qemu-img info` of an image, format probed unless given. */
export function qemuInfo(p: string, format?: QemuFormat): Record<string, any> {
  return qemuJson("info", ...source(p, format));
}

/** `qemu-img check` finds no errors and no leaks (exit 0). */
export function expectQemuCheckClean(p: string, format: string): void {
  const r = qemuTool("qemu-img", "check", "-f", format, p);
  expect(r.out).toMatch(/No errors were found on the image/);
  expect(r.out).not.toMatch(/leaked/);
  expect(r.status).toBe(0);
}

/** The disk as qemu reads it (following backing files), via a raw file next to the image. */
export function qemuRaw(p: string, format: QemuFormat): Uint8Array {
  const out = `${p}.raw`;
  const [first, ...rest] = source(p, format);
  // --image-opts is a flag: the option string takes the filename's place, after -O.
  if (first === "--image-opts") qemu("qemu-img", "convert", first, "-O", "raw", ...rest, out);
  else qemu("qemu-img", "convert", first!, ...rest, "-O", "raw", out);
  const bytes = new Uint8Array(fs.readFileSync(out));
  fs.rmSync(out);
  return bytes;
}

/** `qemu-img compare ...args` says the two images are identical. */
export function expectQemuIdentical(...args: string[]): void {
  const r = qemuTool("qemu-img", "compare", ...args);
  expect(r.out).toMatch(/Images are identical/);
  expect(r.status).toBe(0);
}

/** The bytes a disk should hold: all of them, or `size` bytes with `pieces` (offset, bytes) and zeros elsewhere. */
export type ExpectedDisk = Uint8Array | { size: number; pieces: [number, Uint8Array][] };

/** qemu reads `p` as `expected`: qemu-img compare against it written as a (sparse) raw file. */
export function expectQemuSees(p: string, format: QemuFormat, expected: ExpectedDisk): void {
  const raw = `${p}.expected.raw`;
  if (expected instanceof Uint8Array) fs.writeFileSync(raw, expected);
  else {
    const fd = fs.openSync(raw, "w");
    for (const [at, bytes] of expected.pieces) fs.writeSync(fd, bytes, 0, bytes.length, at);
    fs.ftruncateSync(fd, expected.size);
    fs.closeSync(fd);
  }
  try {
    if (typeof format === "string") expectQemuIdentical("-f", format, "-F", "raw", p, raw);
    else expectQemuIdentical("--image-opts", format.imageOpts(p), `driver=raw,file.filename=${raw}`);
  } finally {
    fs.rmSync(raw);
  }
}

/** A temp dir made before this file's tests and removed after them; returns a path maker inside it. */
export function tempFiles(prefix: string): (name: string) => string {
  let dir = "";
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  });
  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });
  return (name) => path.join(dir, name);
}
