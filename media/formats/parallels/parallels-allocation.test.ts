/**
 * New clusters in a Parallels image: a whole cluster is written from the caller's buffer, a part
 * of one completed with zeros in a reused scratch buffer; data before the BAT entry, so a crash
 * at any point leaves a clean image reading as before or with the write. Reads take one request
 * per run of clusters adjacent in the file.
 */
import { describe, expect, it } from "vitest";
import { FaultControl, HeldFileIo, MemoryFile, MemoryFileIo } from "../../io/fault-io.js";
import { loggedFile, sameBytes, type LoggedWrite } from "../../testing/write-log.js";
import { allZero, cloneMemoryFile, firstDiff, pattern } from "../vdi/test-support.js";
import { crashAtEveryRequest, expectWrittenOrZero } from "../../testing/crash.js";
import { HEADER_SIZE } from "./header.js";
import { checkParallels } from "./parallels-check.js";
import { ParallelsImage } from "./parallels-image.js";

const KiB = 1024;
const CS = 64 * KiB;
const SIZE = 32 * CS;

async function logged(clusterSize = CS) {
  const file = new MemoryFile();
  const log: LoggedWrite[] = [];
  const img = await ParallelsImage.create(loggedFile(new MemoryFileIo(file, "/a.hdd"), log), { size: SIZE, clusterSize });
  return { file, log, img };
}

async function readAt(img: ParallelsImage, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  await img.read(offset, out);
  return out;
}

describe("Parallels: new clusters", () => {
  it("a whole cluster is written from the caller's buffer, then its BAT entry; a stored one in place", async () => {
    const { log, img } = await logged();
    await img.write(0, pattern(0, 512, 9)); // the session's in-use mark, out of the way
    log.length = 0;
    const data = pattern(3 * CS, CS, 1);
    await img.write(3 * CS, data);
    expect(log.map((w) => [w.pos, w.data.length])).toEqual([
      [log[0]!.pos, CS],
      [HEADER_SIZE + 4 * 3, 4],
    ]);
    expect(sameBytes(log[0]!.data, data)).toBe(true);
    log.length = 0;
    const again = pattern(3 * CS, CS, 2);
    await img.write(3 * CS, again);
    expect(log.map((w) => w.data.length)).toEqual([CS]);
    expect(sameBytes(log[0]!.data, again)).toBe(true);
    expect(firstDiff(await readAt(img, 3 * CS, CS), again)).toBe(-1);
    await img.close();
  });

  it("partial writes fill the rest of each new cluster with zeros, through one reused buffer", async () => {
    const { log, img } = await logged();
    const parts = [
      { at: 1 * CS + 512, data: pattern(0, 4 * KiB, 1) },
      { at: 2 * CS + 40 * KiB, data: pattern(0, 8 * KiB, 2) },
      { at: 5 * CS, data: pattern(0, 512, 3) },
    ];
    for (const p of parts) await img.write(p.at, p.data);
    const clusters = log.filter((w) => w.data.length === CS);
    expect(clusters).toHaveLength(3);
    expect(clusters[1]!.data === clusters[0]!.data).toBe(true);
    expect(clusters[2]!.data === clusters[0]!.data).toBe(true);
    for (const p of parts) {
      const start = Math.floor(p.at / CS) * CS;
      const got = await readAt(img, start, CS);
      const off = p.at - start;
      expect(firstDiff(got.subarray(off, off + p.data.length), p.data)).toBe(-1);
      expect(allZero(got.subarray(0, off)) && allZero(got.subarray(off + p.data.length))).toBe(true);
    }
    await img.close();
  });

  it("63-sector clusters (VirtualBox's): a 1 MiB write spans partial and whole clusters, read back in one request", async () => {
    const cs = 63 * 512;
    const file = new MemoryFile();
    const control = new FaultControl();
    const img = await ParallelsImage.create(new HeldFileIo(new MemoryFileIo(file, "/v.hdd"), control), { size: 64 * cs, clusterSize: cs });
    const data = pattern(1000 * 512, 1 << 20, 4);
    await img.write(1000 * 512, data);
    const reads = control.counts.read;
    expect(firstDiff(await readAt(img, 1000 * 512, 1 << 20), data)).toBe(-1);
    expect(control.counts.read - reads).toBe(1); // every cluster in file order, adjacent
    const head = await readAt(img, 15 * cs, 1000 * 512 - 15 * cs);
    expect(allZero(head)).toBe(true);
    await img.close();
    expect((await checkParallels(new MemoryFileIo(file, "/v.hdd", true))).corruption).toBeNull();
  });

  it("a crash at any request of a write of whole and partial clusters leaves a clean image, reading as before or with the write", async () => {
    const base = new MemoryFile();
    const img = await ParallelsImage.create(new MemoryFileIo(base, "/a.hdd"), { size: SIZE, clusterSize: CS });
    await img.write(0, pattern(0, CS, 1));
    await img.close();
    const at = 4 * CS + 32 * KiB;
    const data = pattern(at, 2 * CS, 2); // half of cluster 4, all of 5, half of 6
    await crashAtEveryRequest({
      requests: 10,
      fresh: () => cloneMemoryFile(base),
      open: (f, control) => ParallelsImage.open(new HeldFileIo(new MemoryFileIo(f, "/a.hdd"), control)),
      write: (open) => open.write(at, data),
      verify: async (f, wrote) => {
        expect((await checkParallels(new MemoryFileIo(f, "/a.hdd", true))).corruption).toBeNull();
        const after = await ParallelsImage.open(new MemoryFileIo(f, "/a.hdd", true), { readOnly: true });
        expect(firstDiff(await readAt(after, 0, CS), pattern(0, CS, 1))).toBe(-1);
        const got = await readAt(after, at, data.length);
        // Each cluster's part reads zeros (not stored) or the new data, never anything else.
        for (const [from, to] of [
          [0, 32 * KiB],
          [32 * KiB, 32 * KiB + CS],
          [32 * KiB + CS, 2 * CS],
        ] as const) {
          expectWrittenOrZero(got.subarray(from, to), data.subarray(from, to), wrote);
        }
        await after.close();
      },
    });
  });
});
