/** qcow2 header codec and table entries: round trips and refusals, without files. */
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { EXT_FEATURE_TABLE, featureNames, isQcow2, l1EntriesFor, newHeader, parseHeader, serializeHeader, type Qcow2Header } from "./header.js";
import { getRefcount, readL2, setRefcount, writeEntry, ZERO_FLAG } from "./tables.js";

function kind(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof MediumError ? e.kind : String(e);
  }
  return "ok";
}

function filled(h: Qcow2Header): Qcow2Header {
  return { ...h, l1TableOffset: 3 * 65536, refcountTableOffset: 65536, refcountTableClusters: 1 };
}

/** A header cluster as bytes (padded to 4 KiB so extension walking has room). */
function bytesOf(h: Qcow2Header): Uint8Array {
  const out = new Uint8Array(4096);
  out.set(serializeHeader({ ...h }));
  return out;
}

describe("qcow2 header", () => {
  it("round-trips v2 and v3 headers with a backing file, its format and other extensions", () => {
    for (const version of [2, 3] as const) {
      const h = filled(newHeader({ size: 100 << 20, version, backingFile: "../base image.qcow2", backingFormat: "qcow2" }));
      h.extensions = [{ type: 0x12345678, data: new Uint8Array([1, 2, 3]) }];
      if (version === 3) h.compatible = 1n;
      const back = parseHeader(bytesOf(h));
      expect(back).toMatchObject({ ...h, backingFileOffset: expect.any(Number), backingFileSize: 19 });
      expect(back.backingFile).toBe("../base image.qcow2");
      expect(back.backingFormat).toBe("qcow2");
      expect(back.extensions).toEqual(h.extensions);
      expect(isQcow2(bytesOf(h))).toBe(true);
    }
  });

  it("sizes the L1 table as qemu does", () => {
    expect(l1EntriesFor(64 << 20, 16)).toBe(1);
    expect(l1EntriesFor((512 << 20) + 512, 16)).toBe(2);
    expect(l1EntriesFor(1 << 20, 9)).toBe(32); // an L2 table of 512 bytes maps 32 KiB
  });

  it("refuses what it cannot be, naming unknown incompatible features from the feature table", () => {
    const good = bytesOf(filled(newHeader({ size: 1 << 20 })));
    const edit = (fn: (v: DataView) => void) => {
      const b = good.slice();
      fn(new DataView(b.buffer));
      return () => parseHeader(b);
    };
    expect(kind(edit((v) => v.setUint32(0, 0x514649fc)))).toBe("invalid-format");
    expect(kind(edit((v) => v.setUint32(4, 1)))).toBe("invalid-format");
    expect(kind(edit((v) => v.setUint32(4, 4)))).toBe("invalid-format");
    expect(kind(edit((v) => v.setUint32(20, 8)))).toBe("unsupported");
    expect(kind(edit((v) => v.setUint32(20, 22)))).toBe("unsupported");
    expect(kind(edit((v) => v.setUint32(32, 1)))).toBe("unsupported"); // AES
    expect(kind(edit((v) => v.setUint32(36, 0)))).toBe("corrupt"); // L1 too small for the size
    expect(kind(edit((v) => v.setUint32(36, 0x1000000)))).toBe("unsupported");
    expect(kind(edit((v) => v.setUint32(44, 4097)))).toBe("corrupt"); // L1 not aligned
    expect(kind(edit((v) => v.setUint32(56, 0)))).toBe("corrupt");
    expect(kind(edit((v) => v.setUint32(24, 0x7fffffff)))).toBe("unsupported"); // size past 2^52
    expect(kind(edit((v) => v.setUint32(96, 7)))).toBe("corrupt");
    expect(kind(edit((v) => v.setUint32(100, 100)))).toBe("corrupt");
    expect(kind(edit((v) => v.setUint8(104, 1)))).toBe("unsupported"); // zstd
    expect(kind(edit((v) => v.setUint32(76, 1 << 2)))).toBe("unsupported"); // external data file
    expect(kind(edit((v) => v.setUint32(76, 1 << 0)))).toBe("ok"); // dirty: the open decides
    expect(kind(() => parseHeader(good.subarray(0, 50)))).toBe("corrupt");
    expect(kind(() => parseHeader(new Uint8Array(100)))).toBe("invalid-format");

    const h = filled(newHeader({ size: 1 << 20 }));
    const table = new Uint8Array(48);
    table[0] = 0; // incompatible
    table[1] = 9;
    table.set(new TextEncoder().encode("teleportation"), 2);
    h.extensions = [{ type: EXT_FEATURE_TABLE, data: table }];
    h.incompatible = 1n << 9n;
    expect(featureNames(h).get("incompatible:9")).toBe("teleportation");
    expect(() => parseHeader(bytesOf(h))).toThrow(/teleportation/);
  });

  it("refuses extensions and backing names that run out of the header cluster", () => {
    const h = filled(newHeader({ size: 1 << 20, clusterSize: 512 }));
    h.extensions = [{ type: 0x1234, data: new Uint8Array(300) }];
    const b = new Uint8Array(512);
    b.set(serializeHeader({ ...h }));
    new DataView(b.buffer).setUint32(112 + 4, 1000); // extension length past the cluster
    expect(kind(() => parseHeader(b))).toBe("corrupt");
    expect(kind(() => serializeHeader({ ...h, backingFile: "x".repeat(400) }))).toBe("unsupported");
  });
});

describe("qcow2 table entries", () => {
  it("encodes and decodes standard, zero and compressed L2 entries", () => {
    const v = new DataView(new ArrayBuffer(32));
    writeEntry(v, 0, 0x123450000);
    expect(readL2(v, 0, 16, true)).toEqual({ kind: "data", host: 0x123450000, copied: true });
    writeEntry(v, 1, 0, ZERO_FLAG);
    expect(readL2(v, 1, 16, true)).toEqual({ kind: "zero", host: 0 });
    expect(readL2(v, 1, 16, false)).toEqual({ kind: "unallocated" });
    // Compressed, 64 KiB clusters: offset in bits 0..53, extra sectors in bits 54..61.
    const e = (1n << 62n) | (3n << 54n) | 0x12345n;
    v.setBigUint64(16, e);
    expect(readL2(v, 2, 16, true)).toEqual({ kind: "compressed", host: 0x12345, length: 4 * 512 - 0x145 });
  });

  it("reads and writes refcounts of every width", () => {
    for (let order = 0; order <= 6; order++) {
      const v = new DataView(new ArrayBuffer(512));
      const max = order >= 5 ? 1000 : 2 ** (1 << order) - 1;
      setRefcount(v, 5, order, max);
      setRefcount(v, 6, order, 1);
      expect([getRefcount(v, 4, order), getRefcount(v, 5, order), getRefcount(v, 6, order), getRefcount(v, 7, order)]).toEqual([0, max, 1, 0]);
    }
  });
});
