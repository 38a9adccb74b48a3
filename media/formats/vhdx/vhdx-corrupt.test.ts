/** Hand-built VHDX files: good ones read as built; damaged ones are refused with the right kind, untouched. */
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import { PayloadState, encodeEntry } from "./bat.js";
import { crc32c } from "./crc32c.js";
import { HEADER1_OFFSET, HEADER2_OFFSET, MiB, REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET, serializeHeader } from "./structures.js";
import { BAT_OFFSET, LOG_OFFSET, METADATA_OFFSET, buildVhdx } from "./test-support.js";
import { openVhdx } from "./vhdx-image.js";

async function put(bytes: Uint8Array): Promise<MemoryFileOpener> {
  const opener = new MemoryFileOpener();
  const f = await opener.open("a.vhdx", { create: true });
  await f.write(0, bytes);
  await f.close();
  return opener;
}

async function refused(bytes: Uint8Array, kind: string, message?: RegExp): Promise<void> {
  const opener = await put(bytes);
  const copy = bytes.slice();
  let err: unknown;
  try {
    await openVhdx(opener, "a.vhdx");
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(MediumError);
  expect((err as MediumError).kind).toBe(kind);
  if (message) expect((err as MediumError).message).toMatch(message);
  expect(Buffer.from(opener.file("a.vhdx").bytes()).equals(copy)).toBe(true);
}

const fill = (n: number, v: number) => new Uint8Array(n).fill(v);
const good = () =>
  buildVhdx({
    size: 5 * MiB + 512 * 3,
    blocks: new Map<number, Uint8Array | number>([
      [0, fill(MiB, 0xa1)],
      [1, PayloadState.zero],
      [2, PayloadState.unmapped],
      [3, fill(MiB, 0xb2)],
      [5, fill(MiB, 0xc3)],
    ]),
  });

describe("hand-built VHDX", () => {
  it("reads what was built, reports extents, and writes nothing", async () => {
    const f = good();
    const opener = await put(f.bytes);
    const img = await openVhdx(opener, "a.vhdx");
    expect(img.size).toBe(5 * MiB + 1536);
    expect(img.uuid).toBe(f.params.page83);
    expect(img.dataWriteGuid).toBe(f.header.dataWriteGuid);
    const all = new Uint8Array(img.size);
    await img.read(0, all);
    const want = new Uint8Array(img.size);
    want.fill(0xa1, 0, MiB);
    want.fill(0xb2, 3 * MiB, 4 * MiB);
    want.fill(0xc3, 5 * MiB);
    expect(Buffer.from(all).equals(want)).toBe(true);
    const sync = new Uint8Array(2 * MiB);
    expect(img.readSync(MiB - 512 + 2 * MiB, sync.subarray(0, MiB + 1024))).toBe(true);
    expect(Buffer.from(sync.subarray(0, MiB + 1024)).equals(want.subarray(3 * MiB - 512, 4 * MiB + 512))).toBe(true);
    expect(await img.allocatedExtents()).toEqual([
      { offset: 0, length: MiB, state: "data" },
      { offset: MiB, length: MiB, state: "zero" },
      { offset: 3 * MiB, length: MiB, state: "data" },
      { offset: 5 * MiB, length: 1536, state: "data" },
    ]);
    await expect(img.read(img.size, new Uint8Array(512))).rejects.toMatchObject({ kind: "out-of-bounds" });
    await expect(img.write(0, new Uint8Array(512))).rejects.toMatchObject({ kind: "read-only" });
    await img.close();
    await expect(img.read(0, new Uint8Array(512))).rejects.toMatchObject({ kind: "closed" });
    expect(Buffer.from(opener.file("a.vhdx").bytes()).equals(f.bytes)).toBe(true);
    await expect(openVhdx(opener, "a.vhdx", { readOnly: false })).rejects.toMatchObject({ kind: "read-only" });
  });

  it("uses the second header when it has the higher sequence number, or when the first is bad", async () => {
    const f = good();
    const b = f.bytes.slice();
    b.set(serializeHeader({ ...f.header, sequenceNumber: 99, dataWriteGuid: "abcdefab-0000-0000-0000-000000000000" }), HEADER2_OFFSET);
    let img = await openVhdx(await put(b), "a.vhdx");
    expect(img.dataWriteGuid).toBe("abcdefab-0000-0000-0000-000000000000");
    await img.close();
    const c = f.bytes.slice();
    c[HEADER1_OFFSET + 200] ^= 1;
    img = await openVhdx(await put(c), "a.vhdx");
    expect(img.size).toBe(f.params.virtualDiskSize);
    await img.close();
    // One damaged region table: the other copy is used.
    const d = f.bytes.slice();
    d[REGION_TABLE1_OFFSET + 20] ^= 1;
    img = await openVhdx(await put(d), "a.vhdx");
    await img.close();
  });

  it("refuses a bad signature as invalid-format", async () => {
    const b = good().bytes;
    b[0] = 0x56;
    await refused(b, "invalid-format");
    await refused(new Uint8Array(4096), "invalid-format");
  });

  it("refuses both headers bad, or both region tables bad, as corrupt", async () => {
    const b = good().bytes;
    b[HEADER1_OFFSET + 8] ^= 1;
    b[HEADER2_OFFSET + 8] ^= 1;
    await refused(b, "corrupt", /both VHDX headers/);
    const c = good().bytes;
    c[REGION_TABLE1_OFFSET + 4] ^= 1;
    c[REGION_TABLE2_OFFSET + 4] ^= 1;
    await refused(c, "corrupt", /region tables/);
  });

  it("refuses a BAT entry beyond the file, into the metadata, or in a reserved state", async () => {
    for (const [state, offset, msg] of [
      [PayloadState.fullyPresent, 64 * MiB, /beyond the end/],
      [PayloadState.fullyPresent, 2 ** 50, /beyond the end/],
      [PayloadState.fullyPresent, METADATA_OFFSET, /overlaps the metadata/],
      [PayloadState.fullyPresent, 0, /header section/],
      [4, 0, /reserved state/],
      [PayloadState.partiallyPresent, 5 * MiB, /partially present/],
    ] as const) {
      const b = good().bytes;
      encodeEntry(new DataView(b.buffer, BAT_OFFSET), 4, state, offset);
      await refused(b, "corrupt", msg);
    }
  });

  it("refuses absurd sizes and parameters", async () => {
    const cases: [Parameters<typeof buildVhdx>[0]["params"], string][] = [
      [{ virtualDiskSize: 2 ** 47 }, "corrupt"],
      [{ virtualDiskSize: 1000 }, "corrupt"],
      [{ blockSize: 3 * MiB }, "corrupt"],
      [{ blockSize: 512 * 1024 }, "corrupt"],
      [{ physicalSectorSize: 1024 }, "corrupt"],
      [{ logicalSectorSize: 4096 }, "unsupported"],
      [{ hasParent: true }, "corrupt"], // without a parent locator
    ];
    for (const [params, kind] of cases) {
      const size = params?.virtualDiskSize ?? 4 * MiB;
      // Build geometry for a sane disk, then patch the metadata values in.
      const f = buildVhdx({ size: 4 * MiB, params: { ...params, virtualDiskSize: size > 2 ** 40 ? 4 * MiB : size, blockSize: MiB } });
      const patched = buildVhdx({ size: 4 * MiB, params: { ...params, virtualDiskSize: size } , blockSize: params?.blockSize ?? MiB }).bytes.subarray(METADATA_OFFSET, METADATA_OFFSET + MiB);
      f.bytes.set(patched, METADATA_OFFSET);
      await refused(f.bytes, kind);
    }
  });

  it("refuses truncated files", async () => {
    const f = good();
    await refused(f.bytes.subarray(0, f.blockOffsets.get(5)! + 1024), "corrupt", /beyond the end/);
    await refused(f.bytes.subarray(0, BAT_OFFSET + 4096), "corrupt", /beyond the end/);
    await refused(f.bytes.subarray(0, MiB - 1), "corrupt");
  });

  it("refuses a lone log entry whose tail points nowhere; opens one with a log GUID but no valid entries", async () => {
    const logGuid = "a0a0a0a0-b1b1-c2c2-d3d3-e4e4e4e4e4e4";
    const f = buildVhdx({ size: 4 * MiB, header: { logGuid } });
    let img = await openVhdx(await put(f.bytes), "a.vhdx");
    expect(img.logReplay).toBeNull();
    await img.close();
    // A valid 4 KiB entry at the log's second sector whose tail (0) names no entry.
    const e = new Uint8Array(4096);
    const v = new DataView(e.buffer);
    e.set([0x6c, 0x6f, 0x67, 0x65], 0); // "loge"
    v.setUint32(8, 4096, true);
    v.setUint32(16, 7, true);
    const { uuidToGuidBytes } = await import("../uuid.js");
    uuidToGuidBytes(logGuid, e, 32);
    v.setUint32(4, crc32c(e), true);
    const b = f.bytes.slice();
    b.set(e, LOG_OFFSET + 4096);
    await refused(b, "corrupt", /log's newest entry.*missing or damaged/);
    // Its own tail: an empty entry, replayed (nothing changes).
    v.setUint32(12, 4096, true);
    v.setUint32(4, 0, true);
    v.setUint32(4, crc32c(e), true);
    b.set(e, LOG_OFFSET + 4096);
    img = await openVhdx(await put(b), "a.vhdx");
    expect(img.logReplay).toEqual({ entries: 1, firstSequence: 7n, lastSequence: 7n });
    await img.close();
    // The same entry under another log GUID is stale: nothing to replay.
    const c = b.slice();
    c.set(serializeHeader({ ...f.header, logGuid: "99999999-b1b1-c2c2-d3d3-e4e4e4e4e4e4", sequenceNumber: 50 }), HEADER1_OFFSET);
    img = await openVhdx(await put(c), "a.vhdx");
    expect(img.logReplay).toBeNull();
    await img.close();
  });
});
