/** The pure VHDX codecs: CRC-32C vectors, and header / region / metadata round trips. */
import { describe, expect, it } from "vitest";
import { batGeometry, decodeEntry, encodeEntry, payloadIndex, sectorBitmapIndex } from "./bat.js";
import { crc32c, vhdxChecksum } from "./crc32c.js";
import {
  BAT_REGION_GUID,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  HEADER_SIZE,
  METADATA_REGION_GUID,
  MiB,
  REGION_TABLE1_OFFSET,
  REGION_TABLE_SIZE,
  encodeSystemItems,
  isVhdx,
  parseCreator,
  parseHeader,
  parseMetadataRegion,
  parseRegionTable,
  pickHeader,
  serializeFileIdentifier,
  serializeHeader,
  serializeRegionTable,
} from "./structures.js";
import { METADATA_OFFSET, buildVhdx } from "./test-support.js";

const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

describe("CRC-32C", () => {
  it("matches the known vectors", () => {
    expect(crc32c(ascii("123456789"))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });
  it("chains, and agrees with the bytewise loop at every length and alignment", () => {
    const data = Uint8Array.from({ length: 300 }, (_, i) => (i * 131 + 7) & 0xff);
    const slow = (b: Uint8Array): number => {
      let c = 0xffffffff;
      for (const x of b) {
        c ^= x;
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      }
      return ~c >>> 0;
    };
    for (let s = 0; s < 9; s++) for (let n = 0; n + s <= 300; n += 37) expect(crc32c(data.subarray(s, s + n))).toBe(slow(data.subarray(s, s + n)));
    expect(crc32c(data.subarray(100), crc32c(data.subarray(0, 100)))).toBe(crc32c(data));
  });
  it("vhdxChecksum treats the checksum field as zero", () => {
    const b = Uint8Array.from({ length: 64 }, (_, i) => i);
    const z = b.slice();
    z.fill(0, 4, 8);
    expect(vhdxChecksum(b)).toBe(crc32c(z));
  });
});

describe("VHDX structures", () => {
  const header = {
    sequenceNumber: 2 ** 40 + 3,
    fileWriteGuid: "01234567-89ab-cdef-0123-456789abcdef",
    dataWriteGuid: "fedcba98-7654-3210-fedc-ba9876543210",
    logGuid: "00000000-0000-0000-0000-000000000000",
    logVersion: 0,
    version: 1,
    logLength: MiB,
    logOffset: 5 * MiB,
  };

  it("file identifier round trip", () => {
    const id = serializeFileIdentifier("vstor 1.0");
    expect(isVhdx(id)).toBe(true);
    expect(parseCreator(id)).toBe("vstor 1.0");
    expect(isVhdx(ascii("vhdxfilf"))).toBe(false);
  });

  it("header round trip, checksum checked, the higher sequence number wins", () => {
    const a = serializeHeader(header);
    expect(a.length).toBe(HEADER_SIZE);
    expect(parseHeader(a)).toEqual(header);
    const b = serializeHeader({ ...header, sequenceNumber: header.sequenceNumber + 1 });
    expect(pickHeader(a, b)).toMatchObject({ which: 2 });
    expect(pickHeader(b, a)).toMatchObject({ which: 1 });
    const bad = b.slice();
    bad[100] ^= 1;
    expect(parseHeader(bad)).toBeNull();
    expect(pickHeader(a, bad)).toMatchObject({ which: 1, header });
    expect(() => pickHeader(bad, bad)).toThrow(/both VHDX headers/);
    expect(() => pickHeader(new Uint8Array(HEADER_SIZE), new Uint8Array(HEADER_SIZE))).toThrow(/signature/);
    expect(() => pickHeader(serializeHeader({ ...header, version: 2 }), a)).toThrow(/version 2/);
  });

  it("region table round trip", () => {
    const regions = [
      { guid: BAT_REGION_GUID, fileOffset: 3 * MiB, length: MiB, required: true },
      { guid: METADATA_REGION_GUID, fileOffset: 2 * MiB, length: MiB, required: true },
      { guid: "12345678-1234-1234-1234-123456789abc", fileOffset: 9 * MiB, length: MiB, required: false },
    ];
    const t = serializeRegionTable(regions);
    expect(t.length).toBe(REGION_TABLE_SIZE);
    expect(parseRegionTable(t)).toEqual(regions);
    t[40] ^= 0x80;
    expect(parseRegionTable(t)).toBeNull();
  });

  it("metadata region round trip (through a built file)", () => {
    const f = buildVhdx({ size: 40 * MiB, params: { leaveBlocksAllocated: true, physicalSectorSize: 512 } });
    const region = f.bytes.subarray(METADATA_OFFSET, METADATA_OFFSET + MiB);
    expect(parseMetadataRegion(region).params).toEqual(f.params);
    expect(parseRegionTable(f.bytes.subarray(REGION_TABLE1_OFFSET))).toHaveLength(2);
    expect(pickHeader(f.bytes.subarray(HEADER1_OFFSET), f.bytes.subarray(HEADER2_OFFSET)).header).toEqual(f.header);
    expect(encodeSystemItems(f.params).size).toBe(5);
  });

  it("BAT geometry, interleaving and entries", () => {
    // 512-byte sectors: chunk ratio 2^32 / block size.
    expect(batGeometry(40 * MiB, MiB, 512, false)).toEqual({ chunkRatio: 4096, payloadBlocks: 40, sectorBitmapBlocks: 1, totalEntries: 40 });
    const g = batGeometry(64 * 2 ** 40, 32 * MiB, 512, false);
    expect(g.chunkRatio).toBe(128);
    expect(g.totalEntries).toBe(g.payloadBlocks + g.payloadBlocks / 128 - 1);
    expect(batGeometry(100 * MiB, 32 * MiB, 512, true).totalEntries).toBe(129);
    expect(payloadIndex(127, 128)).toBe(127);
    expect(payloadIndex(128, 128)).toBe(129);
    expect(sectorBitmapIndex(0, 128)).toBe(128);
    const bat = new DataView(new ArrayBuffer(16));
    encodeEntry(bat, 1, 6, 2 ** 40 + 7 * MiB);
    expect(decodeEntry(bat, 1)).toEqual({ state: 6, offset: 2 ** 40 + 7 * MiB });
  });
});
