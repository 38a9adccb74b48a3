/** Parallels header and BAT codec: round trips and refusals, without files. */
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import {
  HEADER_SIZE,
  INUSE_MAGIC,
  dataOffset,
  isParallels,
  newHeader,
  parseBat,
  parseHeader,
  serializeHeader,
  type ParallelsHeader,
} from "./header.js";

function kind(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return e instanceof MediumError ? e.kind : String(e);
  }
  return "ok";
}

describe("Parallels header", () => {
  it("round-trips both forms, every field", () => {
    for (const form of ["legacy", "ext"] as const) {
      const h: ParallelsHeader = { ...newHeader({ size: 100 << 20, clusterSize: 64 << 10, form }), inUse: INUSE_MAGIC, flags: 1 };
      const bytes = serializeHeader(h);
      expect(bytes.length).toBe(HEADER_SIZE);
      expect(isParallels(bytes)).toBe(true);
      expect(parseHeader(bytes)).toEqual(h);
    }
  });

  it("lays a new image out as qemu does: 16 heads, data area on a cluster boundary", () => {
    const h = newHeader({ size: 64 << 20, form: "ext" });
    expect(h).toMatchObject({ heads: 16, cylinders: 256, tracks: 2048, batEntries: 64, sectors: 131072, dataOffsetSectors: 2048 });
    expect(dataOffset(newHeader({ size: 10 << 20, clusterSize: 4096 }))).toBe(12288);
  });

  it("ignores the high word of the sector count in the legacy form, uses it in the ext form", () => {
    const bytes = serializeHeader(newHeader({ size: 1 << 20, clusterSize: 4096 }));
    new DataView(bytes.buffer).setUint32(40, 7, true);
    expect(parseHeader(bytes).sectors).toBe(2048);
    bytes.set(new TextEncoder().encode("WithouFreSpacExt"));
    expect(kind(() => parseHeader(bytes))).toBe("corrupt"); // 7 * 2^32 sectors need more BAT entries
  });

  it("treats a data offset of 0 as the end of the BAT, rounded up to a sector", () => {
    const h = { ...newHeader({ size: 1 << 20, clusterSize: 63 * 512 }), dataOffsetSectors: 0 };
    expect(dataOffset(h)).toBe(512); // 64 + 4 * 33 bytes
  });

  it("refuses what it cannot be", () => {
    const good = serializeHeader(newHeader({ size: 1 << 20, clusterSize: 4096 }));
    const edit = (fn: (v: DataView, b: Uint8Array) => void) => {
      const b = good.slice();
      fn(new DataView(b.buffer), b);
      return () => parseHeader(b);
    };
    expect(kind(edit((_, b) => (b[0] = 0x77)))).toBe("invalid-format");
    expect(kind(edit((v) => v.setUint32(16, 3, true)))).toBe("invalid-format");
    expect(kind(edit((v) => v.setUint32(28, 0, true)))).toBe("corrupt");
    expect(kind(edit((v) => v.setUint32(28, 0x7fffffff, true)))).toBe("unsupported");
    expect(kind(edit((v) => v.setUint32(32, 1, true)))).toBe("corrupt");
    expect(kind(edit((v) => v.setUint32(48, 1, true)))).toBe("corrupt");
    expect(kind(edit((v) => v.setUint32(32, 0xffffffff, true)))).toBe("unsupported");
    expect(kind(() => parseHeader(good.subarray(0, 40)))).toBe("corrupt");
    expect(isParallels(new Uint8Array(64))).toBe(false);
  });

  it("validates the BAT: inside the data area and the file, no sharing", () => {
    const h = newHeader({ size: 1 << 20, clusterSize: 4096, form: "ext" }); // 256 entries, data at 4096
    const bat = (entries: number[]) => {
      const b = new Uint8Array(4 * h.batEntries);
      entries.forEach((e, i) => new DataView(b.buffer).setUint32(4 * i, e, true));
      return b;
    };
    expect(Array.from(parseBat(bat([0, 1, 2]), h, 3 * 4096).subarray(0, 3))).toEqual([0, 4096, 8192]);
    expect(kind(() => parseBat(bat([3]), h, 3 * 4096))).toBe("corrupt");
    expect(kind(() => parseBat(bat([1, 1]), h, 3 * 4096))).toBe("corrupt");
    expect(kind(() => parseBat(bat([0]), h, 3 * 4096).length)).toBe("ok");
    expect(kind(() => parseBat(new Uint8Array(10), h, 3 * 4096))).toBe("corrupt");
    const legacy = newHeader({ size: 1 << 20, clusterSize: 4096 });
    expect(kind(() => parseBat(bat([8, 9]), legacy, 4 * 4096))).toBe("corrupt"); // sector 9 overlaps the cluster at sector 8
  });
});
