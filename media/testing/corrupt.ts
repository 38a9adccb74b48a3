/**
 * What the corrupt-image tests of every format ask: a damaged image is refused with the right
 * kind, and refusing it (even read-write) never changes the file.
 */
import * as fs from "node:fs";
import fc from "fast-check";
import { expect } from "vitest";
import { MediumError } from "../block.js";
import type { FileIo } from "../io/file-io.js";
import { HeldFileIo, MemoryFile, MemoryFileIo, MemoryFileOpener } from "../io/fault-io.js";

interface Closable {
  close(): Promise<void>;
}

/** What opening came to: "ok" (the image closed again), a MediumError's kind, or what else was thrown. */
export async function kindOf(open: Promise<Closable>): Promise<string> {
  try {
    await (await open).close();
  } catch (e) {
    return e instanceof MediumError ? e.kind : `not a MediumError: ${e}`;
  }
  return "ok";
}

/** A memory opener holding `bytes` as file `name`. */
export async function onMemory(bytes: Uint8Array, name: string): Promise<MemoryFileOpener> {
  const opener = new MemoryFileOpener();
  const f = await opener.open(name, { create: true });
  await f.write(0, bytes);
  await f.close();
  return opener;
}

/** `open` on `opener` comes to `kind` (see kindOf), and no file of the opener changes. */
export async function expectOpenLeavesFiles(opener: MemoryFileOpener, open: (o: MemoryFileOpener) => Promise<Closable>, kind: string, label?: string): Promise<void> {
  const before = new Map([...opener.files].map(([k, f]) => [k, f.bytes()]));
  expect(await kindOf(open(opener)), label).toBe(kind);
  for (const [k, b] of before) expect(Buffer.compare(opener.file(k).bytes(), b), `${label ? `${label}: ` : ""}${k} unchanged`).toBe(0);
}

/**
 * The image file at `p` is refused read-write and read-only with `kind`, in a message matching
 * `text` that names the file; `also` (e.g. a checker) runs next; the file's bytes and mtime
 * stay as they were.
 */
export async function expectFileRefusedUnchanged(
  p: string,
  open: (readOnly: boolean) => Promise<unknown>,
  want: { kind: string; text: RegExp },
  also?: () => Promise<void>,
): Promise<void> {
  const before = fs.readFileSync(p);
  const mtime = fs.statSync(p).mtimeMs;
  for (const readOnly of [false, true]) {
    const err = await open(readOnly).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MediumError);
    expect((err as MediumError).kind).toBe(want.kind);
    expect((err as MediumError).message).toMatch(want.text);
    expect((err as MediumError).message).toContain(p);
  }
  await also?.();
  expect(Buffer.compare(fs.readFileSync(p), before)).toBe(0);
  expect(fs.statSync(p).mtimeMs).toBe(mtime);
}

interface Readable extends Closable {
  size: number;
  read(offset: number, buf: Uint8Array): Promise<void>;
}

/**
 * Fuzzed damage: `original` with up to six bytes changed (at offsets from `at`) and maybe cut
 * short is either refused with a MediumError or opens and reads (MediumErrors allowed); either
 * way nothing is written. `after` sees each damaged file once that is shown.
 */
export async function fuzzOpenRefusedOrReadable(options: {
  original: Uint8Array;
  at: fc.Arbitrary<number>;
  name: string;
  open: (io: FileIo) => Promise<Readable>;
  numRuns: number;
  after?: (f: MemoryFile) => Promise<void>;
}): Promise<void> {
  const { original, name } = options;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(options.at, fc.nat(255)), { minLength: 1, maxLength: 6 }),
      fc.option(fc.nat(original.length), { nil: undefined }),
      async (flips, cut) => {
        const bytes = original.slice(0, cut ?? original.length);
        for (const [at, v] of flips) if (at < bytes.length) bytes[at] = v;
        const f = new MemoryFile();
        f.write(0, bytes);
        const io = new HeldFileIo(new MemoryFileIo(f, name));
        let opened: Readable | null = null;
        try {
          opened = await options.open(io);
        } catch (e) {
          if (!(e instanceof MediumError)) throw e;
        }
        expect(io.counts.write + io.counts.truncate).toBe(0);
        if (opened) {
          // Whatever opened must read without throwing anything but MediumError.
          await opened.read(0, new Uint8Array(opened.size)).catch((e) => {
            if (!(e instanceof MediumError)) throw e;
          });
          await opened.close();
          expect(io.counts.write + io.counts.truncate).toBe(0);
        }
        expect(Buffer.compare(f.bytes(), bytes)).toBe(0);
        await options.after?.(f);
      },
    ),
    { numRuns: options.numRuns },
  );
}
