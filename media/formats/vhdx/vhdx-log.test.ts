/**
 * Log replay in memory: hand-built logs (log-test-support.ts) over hand-built images whose file
 * still holds the old contents. Reads show the replayed contents; the file never changes; torn
 * entries after a valid sequence are left out; a damaged active sequence is refused.
 */
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import { firstDiff, pattern } from "../vdi/test-support.js";
import { uuidToGuidBytes } from "../uuid.js";
import { PayloadState, encodeEntry, payloadIndex } from "./bat.js";
import { crc32c } from "./crc32c.js";
import { LOG_SECTOR } from "./log.js";
import { encodeLogEntry, putLogEntry, sectorAt, setHeader, type LogEntrySpec } from "./log-test-support.js";
import { BAT_REGION_GUID, METADATA_REGION_GUID, MiB, REGION_TABLE1_OFFSET, serializeRegionTable } from "./structures.js";
import { BAT_OFFSET, LOG_OFFSET, METADATA_OFFSET, buildVhdx, type Fixture } from "./test-support.js";
import { openVhdx } from "./vhdx-image.js";

const KiB = 1024;
const LOG = { offset: LOG_OFFSET, length: MiB };
const LOG_GUID = "a0a0a0a0-b1b1-c2c2-d3d3-e4e4e4e4e4e4";
const NEW_PAGE83 = "5e5e5e5e-0000-4000-8000-000000000083";
const fill = (n: number, v: number) => new Uint8Array(n).fill(v);

/** Blocks 0, 2, 3, 5 stored (0xa1, 0xb2, 0xc3, 0xe5 at 4, 5, 6, 7 MiB), 1 not present, 4 zero. */
function oldImage(): Fixture {
  return buildVhdx({
    size: 6 * MiB,
    blocks: new Map<number, Uint8Array | number>([
      [0, fill(MiB, 0xa1)],
      [2, fill(MiB, 0xb2)],
      [3, fill(MiB, 0xc3)],
      [4, PayloadState.zero],
      [5, fill(MiB, 0xe5)],
    ]),
    header: { logGuid: LOG_GUID },
  });
}

const P1 = pattern(0, LOG_SECTOR, 7);
const P2 = pattern(0, LOG_SECTOR, 9);

/**
 * Three entries, A at 1 MiB - 12 KiB, B wrapping around the end of the log, C at 8 KiB:
 * A rewrites the BAT (block 0 zero, block 1 at 8 MiB, past the end of the 8 MiB file: its
 * LastFileOffset grows the file to 9 MiB); B writes a payload sector of block 2 and the first
 * sector of the new block 1; C zeroes 8 KiB of block 3 and changes the page 83 GUID.
 */
function threeEntries(f: Fixture): LogEntrySpec[] {
  const bat = sectorAt(f.bytes, BAT_OFFSET);
  const v = new DataView(bat.buffer);
  encodeEntry(v, payloadIndex(0, 4096), PayloadState.zero, 0);
  encodeEntry(v, payloadIndex(1, 4096), PayloadState.fullyPresent, 8 * MiB);
  // Page 83 is the third metadata item: 16 bytes into the sector after the table.
  const meta = sectorAt(f.bytes, METADATA_OFFSET + 64 * KiB);
  uuidToGuidBytes(NEW_PAGE83, meta, 16);
  const common = { logGuid: LOG_GUID, flushedFileOffset: 8 * MiB, lastFileOffset: 9 * MiB };
  const tail = MiB - 12 * KiB;
  return [
    { ...common, sequence: 1000, tail, writes: [{ at: BAT_OFFSET, data: bat }] },
    { ...common, sequence: 1001, tail, writes: [{ at: 5 * MiB + 4 * KiB, data: P2 }, { at: 8 * MiB, data: P1 }] },
    { ...common, sequence: 1002, tail, writes: [{ at: 6 * MiB + 8 * KiB, zero: 8 * KiB }, { at: METADATA_OFFSET + 64 * KiB, data: meta }] },
  ];
}

const AT = [MiB - 12 * KiB, MiB - 4 * KiB, 8 * KiB];

function withLog(f: Fixture, specs: LogEntrySpec[], at = AT, tamper?: (entries: Uint8Array[]) => void): Uint8Array {
  const b = f.bytes.slice();
  const entries = specs.map(encodeLogEntry);
  tamper?.(entries);
  entries.forEach((e, i) => putLogEntry(b, LOG, at[i]!, e));
  return b;
}

/** The virtual disk after all three entries. */
function replayed(): Uint8Array {
  const want = new Uint8Array(6 * MiB);
  want.set(P1, 1 * MiB);
  want.fill(0xb2, 2 * MiB, 3 * MiB);
  want.set(P2, 2 * MiB + 4 * KiB);
  want.fill(0xc3, 3 * MiB, 4 * MiB);
  want.fill(0, 3 * MiB + 8 * KiB, 3 * MiB + 16 * KiB);
  want.fill(0xe5, 5 * MiB);
  return want;
}

async function put(bytes: Uint8Array): Promise<MemoryFileOpener> {
  const opener = new MemoryFileOpener();
  const f = await opener.open("a.vhdx", { create: true });
  await f.write(0, bytes);
  await f.close();
  return opener;
}

async function readAll(bytes: Uint8Array) {
  const opener = await put(bytes);
  const img = await openVhdx(opener, "a.vhdx");
  const got = new Uint8Array(img.size);
  await img.read(0, got);
  const sync = new Uint8Array(img.size);
  expect(img.readSync(0, sync)).toBe(true);
  expect(firstDiff(sync, got)).toBe(-1);
  const info = { uuid: img.uuid, replay: img.logReplay, extents: await img.allocatedExtents() };
  await img.close();
  expect(Buffer.from(opener.file("a.vhdx").bytes()).equals(bytes)).toBe(true); // never written
  return { got, ...info };
}

async function refused(bytes: Uint8Array, message: RegExp): Promise<void> {
  const opener = await put(bytes);
  const err = await openVhdx(opener, "a.vhdx").catch((e: unknown) => e);
  expect(err).toBeInstanceOf(MediumError);
  expect((err as MediumError).kind).toBe("corrupt");
  expect((err as MediumError).message).toMatch(message);
  expect(Buffer.from(opener.file("a.vhdx").bytes()).equals(bytes)).toBe(true);
}

describe("VHDX log replay (in memory)", () => {
  it("shows the replayed BAT, payload, zeroed run and metadata; the file stays byte-identical", async () => {
    const f = oldImage();
    const bytes = withLog(f, threeEntries(f));
    const { got, uuid, replay, extents } = await readAll(bytes);
    expect(firstDiff(got, replayed())).toBe(-1);
    expect(uuid).toBe(NEW_PAGE83);
    expect(replay).toEqual({ entries: 3, firstSequence: 1000n, lastSequence: 1002n });
    expect(extents).toEqual([
      { offset: 0, length: MiB, state: "zero" },
      { offset: MiB, length: 3 * MiB, state: "data" },
      { offset: 4 * MiB, length: MiB, state: "zero" },
      { offset: 5 * MiB, length: MiB, state: "data" },
    ]);
  });

  it("reads the file as it is when the header's log GUID is another one or null", async () => {
    const f = oldImage();
    const stale = withLog(f, threeEntries(f));
    setHeader(stale, { ...f.header, logGuid: "99999999-b1b1-c2c2-d3d3-e4e4e4e4e4e4", sequenceNumber: 40 });
    const want = new Uint8Array(6 * MiB);
    want.fill(0xa1, 0, MiB).fill(0xb2, 2 * MiB, 3 * MiB).fill(0xc3, 3 * MiB, 4 * MiB).fill(0xe5, 5 * MiB);
    let r = await readAll(stale);
    expect(firstDiff(r.got, want)).toBe(-1);
    expect(r.replay).toBeNull();
    setHeader(stale, { ...f.header, logGuid: "00000000-0000-0000-0000-000000000000", sequenceNumber: 41 });
    r = await readAll(stale);
    expect(firstDiff(r.got, want)).toBe(-1);
    // A log GUID with an empty (all zero) log: nothing to replay.
    r = await readAll(f.bytes);
    expect(firstDiff(r.got, want)).toBe(-1);
    expect(r.replay).toBeNull();
  });

  it("replays a log that moves the BAT through the region table", async () => {
    const f = oldImage();
    // A second BAT at 8 MiB (the file grows by 1 MiB for it) in which block 5 is zero.
    const b = new Uint8Array(f.bytes.length + MiB);
    b.set(f.bytes);
    b.set(f.bytes.subarray(BAT_OFFSET, BAT_OFFSET + MiB), 8 * MiB);
    encodeEntry(new DataView(b.buffer, 8 * MiB), payloadIndex(5, 4096), PayloadState.zero, 0);
    const rt = serializeRegionTable([
      { guid: BAT_REGION_GUID, fileOffset: 8 * MiB, length: MiB, required: true },
      { guid: METADATA_REGION_GUID, fileOffset: METADATA_OFFSET, length: MiB, required: true },
    ]);
    const entry = { sequence: 5, tail: 0, logGuid: LOG_GUID, flushedFileOffset: 9 * MiB, lastFileOffset: 9 * MiB };
    const bytes = withLog({ ...f, bytes: b }, [{ ...entry, writes: [{ at: REGION_TABLE1_OFFSET, data: rt.subarray(0, LOG_SECTOR) }] }], [0]);
    const { got } = await readAll(bytes);
    const want = new Uint8Array(6 * MiB);
    want.fill(0xa1, 0, MiB).fill(0xb2, 2 * MiB, 3 * MiB).fill(0xc3, 3 * MiB, 4 * MiB);
    expect(firstDiff(got, want)).toBe(-1);
  });

  it("leaves out a torn entry after the valid sequence, and ignores entries of other logs", async () => {
    const f = oldImage();
    const specs = threeEntries(f);
    specs.push({ ...specs[2]!, sequence: 1003, logGuid: "77777777-b1b1-c2c2-d3d3-e4e4e4e4e4e4", writes: [{ at: 5 * MiB, zero: MiB }] });
    // C (the newest) torn: one of its data bytes never reached the disk.
    const bytes = withLog(f, specs, [...AT, 64 * KiB], (e) => void (e[2]![LOG_SECTOR + 100] ^= 0xff));
    const { got, uuid, replay } = await readAll(bytes);
    const want = replayed();
    want.fill(0xc3, 3 * MiB + 8 * KiB, 3 * MiB + 16 * KiB); // C's zeroing is not applied
    expect(firstDiff(got, want)).toBe(-1);
    expect(uuid).toBe(f.params.page83);
    expect(replay).toEqual({ entries: 2, firstSequence: 1000n, lastSequence: 1001n });
  });

  it("refuses an active sequence with a damaged entry, or that cannot be applied", async () => {
    const f = oldImage();
    // B damaged under an intact C.
    await refused(
      withLog(f, threeEntries(f), AT, (e) => void (e[1]![200] ^= 1)),
      /newest entry \(sequence 1002.*entry at 1044480 in its sequence is missing or damaged/,
    );
    // A gap in the sequence numbers.
    const gap = threeEntries(f);
    gap[2]!.sequence = 1003;
    await refused(withLog(f, gap), /entry at 8192 has sequence 1003, not 1002/);
    // A tail that points at nothing.
    const lone = (writes: LogEntrySpec["writes"], more: Partial<LogEntrySpec> = {}): Uint8Array =>
      withLog(f, [{ sequence: 9, tail: 0, logGuid: LOG_GUID, flushedFileOffset: 8 * MiB, lastFileOffset: 8 * MiB, writes, ...more }], [0]);
    await refused(lone([], { tail: 64 * KiB }), /entry at 65536 in its sequence is missing/);
    // Writes outside the file (after replay), into the headers, into the log itself.
    await refused(lone([{ at: 8 * MiB, data: P1 }]), /outside the file/);
    await refused(lone([{ at: 7 * MiB, zero: 2 * MiB }]), /outside the file/);
    await refused(lone([{ at: 2 ** 60, data: P1 }]), /not a 4 KiB boundary|outside the file/);
    await refused(lone([{ at: 64 * KiB, data: P1 }]), /file identifier or headers/);
    await refused(lone([{ at: LOG_OFFSET + 512 * KiB, data: P1 }]), /into the log itself/);
    // A file shorter than the log says it was flushed to: truncated.
    await refused(lone([], { flushedFileOffset: 16 * MiB }), /truncated/);
    // Well checksummed but malformed: a descriptor of another sequence, a misaligned target.
    await refused(lone([{ at: 5 * MiB, data: P1 }], { badDescriptorSequence: 0 }), /another sequence number/);
    await refused(lone([{ at: 5 * MiB + 512, zero: 4096 }]), /not a 4 KiB boundary/);
  });

  it("refuses a data sector that does not belong to its descriptor", async () => {
    const f = oldImage();
    const spec: LogEntrySpec = { sequence: 9, tail: 0, logGuid: LOG_GUID, flushedFileOffset: 8 * MiB, lastFileOffset: 8 * MiB, writes: [{ at: 5 * MiB, data: P1 }] };
    const bytes = withLog(f, [spec], [0], ([e]) => {
      const v = new DataView(e!.buffer);
      v.setUint32(LOG_SECTOR + 4, 1, true); // the data sector's high sequence half
      v.setUint32(4, 0, true);
      v.setUint32(4, crc32c(e!), true);
    });
    await refused(bytes, /data sector 1 is not the one descriptor 0 needs/);
  });
});
