import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { BLOCK_UNUSED, bitmapRuns, isFull, parseBat, serializeBat, setBits } from "./bat.js";
import {
  HEADER_SIZE,
  LocatorCode,
  bitmapSize,
  decodeLocator,
  noLocators,
  parentLocators,
  parseDynamicHeader,
  serializeDynamicHeader,
  type VhdDynamicHeader,
} from "./dynamic-header.js";
import { relativePath } from "../paths.js";
import {
  FOOTER_SIZE,
  VhdDiskType,
  chsGeometry,
  parseFooter,
  serializeFooter,
  timestampToken,
  tokenTimestamp,
  vhdChecksum,
  vhdTimestamp,
  type VhdFooter,
} from "./footer.js";
import { isVhd } from "./vhd-metadata.js";

const footer = (o: Partial<VhdFooter> = {}): VhdFooter => ({
  features: 2,
  version: 0x00010000,
  dataOffset: 512,
  timestamp: 0x2c3a4b5c,
  creatorApp: "vbox",
  creatorVersion: 0x07000000,
  creatorOs: 0x5769326b,
  originalSize: 64 << 20,
  currentSize: 64 << 20,
  geometry: chsGeometry(64 << 20),
  diskType: VhdDiskType.dynamic,
  checksum: 0,
  uuid: "0e3d0f1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5",
  savedState: 0,
  ...o,
});

const header = (o: Partial<VhdDynamicHeader> = {}): VhdDynamicHeader => ({
  tableOffset: 1536,
  headerVersion: 0x00010000,
  maxTableEntries: 32,
  blockSize: 2 << 20,
  checksum: 0,
  parentUuid: "00000000-0000-0000-0000-000000000000",
  parentTimestamp: 0,
  parentName: "",
  locators: noLocators(),
  ...o,
});

function expectKind(fn: () => unknown, kind: string, text?: RegExp): void {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(MediumError);
    expect((e as MediumError).kind).toBe(kind);
    if (text) expect((e as MediumError).message).toMatch(text);
    return;
  }
  throw new Error(`expected a MediumError of kind ${kind}`);
}

const put32 = (b: Uint8Array, at: number, v: number): Uint8Array => {
  const c = b.slice();
  new DataView(c.buffer).setUint32(at, v >>> 0);
  return c;
};
/** Set a field and fix the checksum at `sumAt`, so only the field's own check can refuse it. */
const put32Sum = (b: Uint8Array, at: number, v: number, sumAt: number): Uint8Array => {
  const c = put32(b, at, v);
  return put32(c, sumAt, vhdChecksum(c, sumAt));
};

describe("VHD footer codec", () => {
  it("writes the fields big-endian where the spec puts them, with a checksum qemu and VirtualBox accept", () => {
    const bytes = serializeFooter(footer());
    const v = new DataView(bytes.buffer);
    expect(bytes.length).toBe(FOOTER_SIZE);
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe("conectix");
    expect(v.getUint32(8)).toBe(2);
    expect(v.getUint32(12)).toBe(0x00010000);
    expect(v.getBigUint64(16)).toBe(512n);
    expect(new TextDecoder().decode(bytes.subarray(28, 32))).toBe("vbox");
    expect(v.getBigUint64(48)).toBe(BigInt(64 << 20));
    expect(v.getUint32(60)).toBe(3);
    // ~(sum of bytes with the checksum zeroed)
    let sum = 0;
    bytes.forEach((b, i) => (sum += i >= 64 && i < 68 ? 0 : b));
    expect(v.getUint32(64)).toBe(~sum >>> 0);
    // GUID layout, as VirtualBox stores RTUUID bytes
    expect(Array.from(bytes.subarray(68, 72))).toEqual([0x1e, 0x0f, 0x3d, 0x0e]);
  });

  it("round-trips any footer", () => {
    fc.assert(
      fc.property(fc.nat(0xffffffff), fc.integer({ min: 1, max: 1 << 30 }), fc.constantFrom(2, 3, 4), (ts, sectors, type) => {
        const f = footer({ timestamp: ts, currentSize: sectors * 512, diskType: type, dataOffset: type === 2 ? null : 512, geometry: chsGeometry(sectors * 512) });
        const back = parseFooter(serializeFooter(f));
        expect({ ...back, checksum: 0 }).toEqual(f);
      }),
    );
  });

  it("refuses a bad cookie, a bad checksum, another version or disk type, a huge size", () => {
    const good = serializeFooter(footer());
    expectKind(() => parseFooter(put32(good, 0, 0x636f6e66)), "invalid-format", /cookie/);
    expectKind(() => parseFooter(put32(good, 24, 1)), "corrupt", /checksum/);
    expectKind(() => parseFooter(put32Sum(good, 12, 0x00020000, 64)), "unsupported", /version/);
    expectKind(() => parseFooter(put32Sum(good, 60, 5, 64)), "unsupported", /disk type 5/);
    expectKind(() => parseFooter(put32Sum(good, 48, 0x10000, 64)), "unsupported", /2 TiB/);
    expectKind(() => parseFooter(good.subarray(0, 100)), "invalid-format");
  });

  it("computes CHS geometry as the spec (and VirtualBox) do", () => {
    expect(chsGeometry(64 << 20)).toEqual({ cylinders: 963, heads: 8, sectors: 17 });
    expect(chsGeometry(16 << 20)).toEqual({ cylinders: 481, heads: 4, sectors: 17 });
    expect(chsGeometry(1 << 30)).toEqual({ cylinders: 2080, heads: 16, sectors: 63 });
    expect(chsGeometry(127 * 1024 * (1 << 20) + (1 << 30))).toEqual({ cylinders: 65535, heads: 16, sectors: 255 });
    expect(chsGeometry(2 * 1024 * 1024 * (1 << 20))).toEqual({ cylinders: 65535, heads: 16, sectors: 255 });
    // Never more than the disk.
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 65535 * 16 * 255 }), (sectors) => {
        const g = chsGeometry(sectors * 512);
        expect(g.cylinders * g.heads * g.sectors).toBeLessThanOrEqual(sectors);
        expect(g.heads).toBeLessThanOrEqual(16);
      }),
    );
  });

  it("keeps timestamps in the VHD epoch, and their chain tokens reversible", () => {
    expect(vhdTimestamp(Date.UTC(2000, 0, 1))).toBe(0);
    expect(vhdTimestamp(Date.UTC(2000, 0, 1, 0, 1))).toBe(60);
    expect(tokenTimestamp(timestampToken(0x2c3a4b5c))).toBe(0x2c3a4b5c);
    expect(tokenTimestamp("0e3d0f1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5")).toBeNull();
  });
});

describe("VHD dynamic header codec", () => {
  it("round-trips, parent name in UTF-16BE and locators included", () => {
    const { entries } = parentLocators("/vm/child.vhd", "/vm/base/Pärent.vhd", 2048);
    const h = header({ parentUuid: "0e3d0f1e-2a3b-4c5d-8e9f-a0b1c2d3e4f5", parentTimestamp: 77, parentName: "Pärent.vhd", locators: entries });
    const bytes = serializeDynamicHeader(h);
    expect(bytes.length).toBe(HEADER_SIZE);
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe("cxsparse");
    expect(Array.from(bytes.subarray(64, 68))).toEqual([0, 0x50, 0, 0xe4]); // "Pä" big-endian
    const back = parseDynamicHeader(bytes);
    expect({ ...back, checksum: 0 }).toEqual(h);
    expect(back.locators[0]).toMatchObject({ code: LocatorCode.w2ku, dataSpace: 1024, dataOffset: 2048 });
    expect(back.locators[1]).toMatchObject({ code: LocatorCode.w2ru, dataSpace: 1024, dataOffset: 3072 });
  });

  it("refuses a bad cookie, checksum, block size or version", () => {
    const good = serializeDynamicHeader(header());
    expectKind(() => parseDynamicHeader(put32(good, 0, 0)), "corrupt", /cxsparse/);
    expectKind(() => parseDynamicHeader(put32(good, 40, 1)), "corrupt", /checksum/);
    expectKind(() => parseDynamicHeader(put32Sum(good, 32, 3 << 20, 36)), "corrupt", /power of two/);
    expectKind(() => parseDynamicHeader(put32Sum(good, 32, 256, 36)), "corrupt", /power of two/);
    expectKind(() => parseDynamicHeader(put32Sum(good, 24, 0x00020000, 36)), "unsupported", /version/);
    expectKind(() => parseDynamicHeader(good.subarray(0, 600)), "corrupt", /truncated/);
  });

  it("writes W2ku (absolute) and W2ru (relative) locators in UTF-16LE, as VirtualBox does", () => {
    const { entries, data } = parentLocators("/vm/snap/child.vhd", "/vm/base.vhd", 4096);
    expect(decodeLocator(entries[0]!.code, data.subarray(0, entries[0]!.dataLength))).toBe("/vm/base.vhd");
    expect(decodeLocator(entries[1]!.code, data.subarray(1024, 1024 + entries[1]!.dataLength))).toBe("../base.vhd");
    expect(data[0]).toBe(0x2f); // '/' little-endian
    expect(relativePath("/a/b/c.vhd", "/a/b/p.vhd")).toBe("./p.vhd");
    expect(relativePath("c.vhd", "p.vhd")).toBe("./p.vhd");
    expect(relativePath("/a/c.vhd", "p.vhd")).toBe("p.vhd");
  });

  it("sizes bitmaps to whole sectors", () => {
    expect(bitmapSize(2 << 20)).toBe(512);
    expect(bitmapSize(64 << 10)).toBe(512);
    expect(bitmapSize(4 << 20)).toBe(1024);
  });
});

describe("VHD BAT and sector bitmaps", () => {
  const layout = { tableOffset: 1536, blockSize: 2 << 20, bitmapSize: 512, dataStart: 2048, dataEnd: 2048 + 3 * (512 + (2 << 20)) };
  const stride = 512 + (2 << 20);

  it("round-trips and accepts blocks inside the data area", () => {
    const bat = new Uint32Array([4, BLOCK_UNUSED, 4 + stride / 512, 4 + (2 * stride) / 512]);
    expect(Array.from(parseBat(serializeBat(bat), 4, layout))).toEqual(Array.from(bat));
  });

  it("refuses entries inside the metadata, past the footer, or overlapping", () => {
    expectKind(() => parseBat(serializeBat(new Uint32Array([3])), 1, layout), "corrupt", /inside the image's metadata/);
    expectKind(() => parseBat(serializeBat(new Uint32Array([4 + (3 * stride) / 512])), 1, layout), "corrupt", /past the end/);
    expectKind(() => parseBat(serializeBat(new Uint32Array([4, 5])), 2, layout), "corrupt", /entries 0 and 1 overlap/);
    expectKind(() => parseBat(serializeBat(new Uint32Array([4, 4])), 2, layout), "corrupt", /overlap/);
    expectKind(() => parseBat(new Uint8Array(3), 1, layout), "corrupt", /truncated/);
  });

  it("reads bitmaps MSB first and splits a range into stored and missing runs", () => {
    const bm = new Uint8Array(512);
    setBits(bm, 1, 2); // sectors 1 and 2
    expect(bm[0]).toBe(0b0110_0000);
    expect(bitmapRuns(bm, 0, 4 * 512)).toEqual([
      { length: 512, stored: false },
      { length: 1024, stored: true },
      { length: 512, stored: false },
    ]);
    expect(bitmapRuns(null, 512, 4096)).toEqual([{ length: 4096, stored: true }]);
    expect(isFull(new Uint8Array(512).fill(0xff), 4096)).toBe(true);
    expect(isFull(bm, 4096)).toBe(false);
  });
});

describe("VHD signature probe", () => {
  it("finds the cookie at the end (every VHD) or at offset 0 (dynamic), and nothing else", () => {
    const f = serializeFooter(footer());
    const fixedFile = new Uint8Array(4096 + 512);
    fixedFile.set(f, 4096);
    expect(isVhd(fixedFile)).toBe(true);
    const dynHead = new Uint8Array(1024);
    dynHead.set(f);
    expect(isVhd(dynHead, new Uint8Array(512))).toBe(true);
    expect(isVhd(new Uint8Array(4096))).toBe(false);
    expect(isVhd(new Uint8Array(3))).toBe(false);
  });
});

describe("VHD codecs on arbitrary bytes", () => {
  it("throw only MediumError", () => {
    const only = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        if (!(e instanceof MediumError)) throw e;
      }
    };
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 1100 }), fc.boolean(), (bytes, cookies) => {
        const b = bytes.slice();
        if (cookies && b.length >= 8) b.set(new TextEncoder().encode("conectix"));
        only(() => parseFooter(b));
        if (cookies && b.length >= 8) b.set(new TextEncoder().encode("cxsparse"));
        only(() => parseDynamicHeader(b));
        only(() => parseBat(b, Math.floor(b.length / 4), { tableOffset: 1536, blockSize: 4096, bitmapSize: 512, dataStart: 2048, dataEnd: 1 << 20 }));
      }),
      { numRuns: 500 },
    );
  });
});
