import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { BLOCK_FREE, BLOCK_ZERO, parseBlockMap, serializeBlockMap } from "./block-map.js";
import {
  DEFAULT_BLOCK_SIZE,
  HEADER_V1_SIZE,
  HEADER_V1PLUS_SIZE,
  PRE_HEADER_SIZE,
  VDI_SIGNATURE,
  VdiImageType,
  checkHeaderAgainstFile,
  newHeader,
  parseHeader,
  serializeHeader,
  type VdiHeader,
} from "./header.js";
import { uuidCounter } from "./test-support.js";

const next = uuidCounter(7);
const base = (o: Partial<Parameters<typeof newHeader>[0]> = {}): VdiHeader =>
  newHeader({ diskSize: 64 << 20, type: VdiImageType.normal, uuid: next(), modifyUuid: next(), ...o });

/** A header as qemu writes it: v1 (0x180), map at 0x200, data 512-aligned after it. */
function qemuStyle(diskSize: number): Uint8Array {
  const h = base({ diskSize, dataAlign: 512 });
  const v1 = { ...h, headerSize: HEADER_V1_SIZE, lchsGeometry: null, blockMapOffset: 0x200 };
  v1.dataOffset = 0x200 + Math.ceil((4 * v1.blockCount) / 512) * 512;
  const out = new Uint8Array(0x200);
  out.set(serializeHeader(v1));
  return out;
}

function put32(bytes: Uint8Array, at: number, v: number): Uint8Array {
  const b = bytes.slice();
  new DataView(b.buffer).setUint32(at, v >>> 0, true);
  return b;
}

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

describe("VDI header codec", () => {
  it("writes what VirtualBox writes for a new image", () => {
    const h = base();
    const bytes = serializeHeader(h);
    const v = new DataView(bytes.buffer);
    expect(bytes.length).toBe(PRE_HEADER_SIZE + HEADER_V1PLUS_SIZE);
    expect(new TextDecoder().decode(bytes.subarray(0, 40))).toBe("<<< Oracle VM VirtualBox Disk Image >>>\n");
    expect(v.getUint32(0x40, true)).toBe(VDI_SIGNATURE);
    expect(v.getUint32(0x44, true)).toBe(0x00010001);
    expect(v.getUint32(0x48, true)).toBe(0x190);
    expect(v.getUint32(0x154, true)).toBe(1 << 20); // block map at 1 MiB
    expect(v.getUint32(0x158, true)).toBe(2 << 20); // data at 2 MiB
    expect(v.getUint32(0x168, true)).toBe(512);
    expect(v.getUint32(0x170, true)).toBe(64 << 20);
    expect(v.getUint32(0x178, true)).toBe(DEFAULT_BLOCK_SIZE);
    expect(v.getUint32(0x180, true)).toBe(64);
    expect(v.getUint32(0x184, true)).toBe(0);
  });

  it("stores UUIDs in GUID byte order (first three fields little-endian)", () => {
    const h = base({ uuid: "01020304-0506-0708-090a-0b0c0d0e0f10" });
    const bytes = serializeHeader(h);
    expect(Array.from(bytes.subarray(0x188, 0x198))).toEqual([4, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16]);
    expect(parseHeader(bytes).uuid).toBe("01020304-0506-0708-090a-0b0c0d0e0f10");
  });

  it("round-trips new headers of every type, with the parent link of a diff", () => {
    for (const type of [VdiImageType.normal, VdiImageType.fixed, VdiImageType.diff]) {
      const h = base({ type, parentUuid: type === VdiImageType.diff ? next() : undefined, parentModifyUuid: type === VdiImageType.diff ? next() : undefined, comment: "snapshot ✓" });
      expect(parseHeader(serializeHeader(h))).toEqual(h);
    }
  });

  it("parses a qemu-style v1 header (0x180 bytes, no LCHS geometry)", () => {
    const h = parseHeader(qemuStyle(64 << 20));
    expect(h.headerSize).toBe(0x180);
    expect(h.lchsGeometry).toBeNull();
    expect(h.blockMapOffset).toBe(0x200);
    expect(h.dataOffset).toBe(0x400);
    expect(serializeHeader(h).length).toBe(PRE_HEADER_SIZE + HEADER_V1_SIZE);
  });

  // One row per check: the field, how to break it, the kind, and what the message must name.
  const broken: [string, (b: Uint8Array) => Uint8Array, string, RegExp][] = [
    ["signature", (b) => put32(b, 0x40, 0x12345678), "invalid-format", /signature 0x12345678/],
    ["version 0.2 (v0 header)", (b) => put32(b, 0x44, 0x00000002), "unsupported", /version 0\.2/],
    ["version 1.2", (b) => put32(b, 0x44, 0x00010002), "unsupported", /version 1\.2/],
    ["header size", (b) => put32(b, 0x48, 0x100), "corrupt", /header size 0x100/],
    ["image type", (b) => put32(b, 0x4c, 9), "corrupt", /image type 9/],
    ["flags", (b) => put32(b, 0x50, 0x10), "unsupported", /flags 0x10/],
    ["block map offset", (b) => put32(b, 0x154, 0x100), "corrupt", /block map offset 0x100/],
    ["data offset", (b) => put32(b, 0x158, 0x100000), "corrupt", /data offset 0x100000/],
    ["sector size", (b) => put32(b, 0x168, 4096), "unsupported", /sector size 4096/],
    ["LCHS sector size", (b) => put32(b, 0x1d4, 1), "corrupt", /LCHS .*sector size 1/],
    ["disk size 0", (b) => put32(put32(b, 0x170, 0), 0x174, 0), "corrupt", /disk size is 0/],
    ["disk size >= 2^53", (b) => put32(b, 0x174, 0x00200000), "unsupported", /disk size 0x200000/],
    ["block size not a power of two", (b) => put32(b, 0x178, 3 << 19), "corrupt", /block size 1572864/],
    ["block size below a sector", (b) => put32(b, 0x178, 256), "corrupt", /block size 256/],
    ["block size too large", (b) => put32(b, 0x178, 1 << 30), "unsupported", /block size 1073741824/],
    ["extra block data", (b) => put32(b, 0x17c, 3), "corrupt", /extra block data size 3/],
    ["block count", (b) => put32(b, 0x180, 65), "corrupt", /block count 65 .*64 blocks/],
    ["blocks allocated", (b) => put32(b, 0x184, 65), "corrupt", /blocks allocated 65/],
    ["null UUID", (b) => b.fill(0, 0x188, 0x198), "corrupt", /image UUID is null/],
    ["null modify UUID", (b) => b.fill(0, 0x198, 0x1a8), "corrupt", /modification UUID is null/],
    ["diff without parent", (b) => put32(b, 0x4c, 4), "corrupt", /null parent UUID/],
  ];
  for (const [name, breakIt, kind, text] of broken) {
    it(`refuses a bad ${name} (${kind})`, () => {
      const good = serializeHeader(base());
      expect(() => parseHeader(good)).not.toThrow();
      expectKind(() => parseHeader(breakIt(good.slice())), kind, text);
    });
  }

  it("refuses truncated input with the right kind", () => {
    const good = serializeHeader(base());
    expectKind(() => parseHeader(good.subarray(0, 40)), "invalid-format", /too small/);
    expectKind(() => parseHeader(good.subarray(0, 300)), "corrupt", /truncated VDI header/);
    expectKind(() => parseHeader(good.subarray(0, 460)), "corrupt", /truncated VDI header/);
  });

  it("refuses a block map that does not fit the file", () => {
    const h = base();
    expectKind(() => checkHeaderAgainstFile(h, (1 << 20) + 100), "corrupt", /block map ends at 0x100100/);
    expect(() => checkHeaderAgainstFile(h, 2 << 20)).not.toThrow();
  });

  it("puts the error's offset at the bad field", () => {
    const bad = put32(serializeHeader(base()), 0x178, 1000);
    try {
      parseHeader(bad, { path: "/x.vdi" });
    } catch (e) {
      expect((e as MediumError).offset).toBe(0x178);
      expect((e as MediumError).path).toBe("/x.vdi");
      expect((e as MediumError).message).toMatch(/^\/x\.vdi: /);
    }
  });
});

describe("VDI block map codec", () => {
  const h = { ...base({ diskSize: 8 << 20 }), blocksAllocated: 3 };
  const fileSize = h.dataOffset + 3 * h.blockSize;
  const mapOf = (...e: number[]) => serializeBlockMap(Uint32Array.from(e));

  it("reads slots, free and zero entries", () => {
    const m = parseBlockMap(mapOf(2, BLOCK_FREE, 0, BLOCK_ZERO, 1, BLOCK_FREE, BLOCK_FREE, BLOCK_FREE), h, fileSize);
    expect(Array.from(m.subarray(0, 5))).toEqual([2, BLOCK_FREE, 0, BLOCK_ZERO, 1]);
  });

  it("refuses an entry at or above blocks allocated", () => {
    expectKind(() => parseBlockMap(mapOf(0, 3, ...Array(6).fill(BLOCK_FREE)), h, fileSize + (1 << 20)), "corrupt", /entry 1 is 3, not below blocks allocated \(3\)/);
  });

  it("refuses two blocks sharing a slot", () => {
    expectKind(() => parseBlockMap(mapOf(1, BLOCK_FREE, 1, ...Array(5).fill(BLOCK_FREE)), h, fileSize), "corrupt", /entries 0 and 2 both point at data block 1/);
  });

  it("refuses an entry whose data is past the end of the file", () => {
    expectKind(() => parseBlockMap(mapOf(2, ...Array(7).fill(BLOCK_FREE)), h, fileSize - 512), "corrupt", /entry 0 is 2, .*past the end of the file/);
  });

  it("refuses a short map", () => {
    expectKind(() => parseBlockMap(new Uint8Array(12), h, fileSize), "corrupt", /truncated VDI block map/);
  });
});

describe("VDI codec fuzzing", () => {
  /** The parser may refuse anything, but only ever with a MediumError. */
  function onlyMediumErrors(bytes: Uint8Array, fileSize: number): void {
    try {
      const h = parseHeader(bytes);
      checkHeaderAgainstFile(h, fileSize);
      const mapBytes = new Uint8Array(Math.min(4 * h.blockCount, 1 << 16));
      mapBytes.set(bytes.subarray(0, Math.min(bytes.length, mapBytes.length)));
      parseBlockMap(mapBytes, h, fileSize);
    } catch (e) {
      if (!(e instanceof MediumError)) throw e;
    }
  }

  it("arbitrary bytes never throw anything but MediumError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.nat(), (bytes, fileSize) => onlyMediumErrors(bytes, fileSize)),
      { numRuns: 3000 },
    );
  });

  it("arbitrary bytes with a VDI signature and version never throw anything but MediumError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 600 }), fc.nat(), (bytes, fileSize) => {
        const b = new Uint8Array(Math.max(bytes.length, 0x48));
        b.set(bytes);
        const v = new DataView(b.buffer);
        v.setUint32(0x40, VDI_SIGNATURE, true);
        v.setUint32(0x44, 0x00010001, true);
        onlyMediumErrors(b, fileSize);
      }),
      { numRuns: 3000 },
    );
  });

  const fieldOffsets = [0x48, 0x4c, 0x50, 0x154, 0x158, 0x15c, 0x168, 0x170, 0x174, 0x178, 0x17c, 0x180, 0x184, 0x188, 0x1a8, 0x1c8, 0x1d4];
  it("valid headers with mutated fields and flipped bytes never throw anything but MediumError", () => {
    const seeds = [serializeHeader(base()), qemuStyle(100 << 20), serializeHeader(base({ type: VdiImageType.fixed, diskSize: 3 << 20 }))];
    fc.assert(
      fc.property(
        fc.constantFrom(...seeds),
        fc.array(fc.tuple(fc.constantFrom(...fieldOffsets), fc.oneof(fc.nat(), fc.constantFrom(0, 1, 511, 512, 0xffffffff, 0x7fffffff, 0x80000000))), { maxLength: 4 }),
        fc.array(fc.tuple(fc.nat(511), fc.nat(255)), { maxLength: 8 }),
        fc.nat(600),
        fc.nat(),
        (seed, fields, flips, cut, fileSize) => {
          let b: Uint8Array = seed.slice();
          for (const [at, value] of fields) b = put32(b, at, value);
          for (const [at, value] of flips) if (at < b.length) b[at] = value;
          onlyMediumErrors(b.subarray(0, Math.min(b.length, cut + 72)), fileSize);
        },
      ),
      { numRuns: 5000 },
    );
  });

  it("valid header structures round-trip through bytes", () => {
    const uuid = fc.uuid({ version: 4 });
    fc.assert(
      fc.property(
        fc.record({
          blockShift: fc.integer({ min: 9, max: 27 }),
          sectors: fc.integer({ min: 1, max: 1 << 22 }),
          type: fc.constantFrom(VdiImageType.normal, VdiImageType.fixed, VdiImageType.diff),
          align: fc.constantFrom(512, 4096, 1 << 20),
          uuids: fc.tuple(uuid, uuid, uuid, uuid),
          comment: fc.string({ maxLength: 80 }),
        }),
        (r) => {
          const blockSize = 1 << r.blockShift;
          const diskSize = r.sectors * 512;
          if (Math.ceil(diskSize / blockSize) > 4096) return;
          const diff = r.type === VdiImageType.diff;
          const h = newHeader({
            diskSize,
            type: r.type,
            blockSize,
            dataAlign: r.align,
            uuid: r.uuids[0],
            modifyUuid: r.uuids[1],
            parentUuid: diff ? r.uuids[2] : undefined,
            parentModifyUuid: diff ? r.uuids[3] : undefined,
            comment: r.comment,
          });
          const bytes = serializeHeader(h);
          expect(parseHeader(bytes)).toEqual(h);
          expect(serializeHeader(parseHeader(bytes))).toEqual(bytes);
          const map = new Uint32Array(h.blockCount).fill(BLOCK_FREE);
          expect(parseBlockMap(serializeBlockMap(map), h, h.dataOffset)).toEqual(map);
        },
      ),
      { numRuns: 500 },
    );
  });
});
