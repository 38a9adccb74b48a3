/**
 * qcow2 table entries: L1 and L2 entries, and refcounts of any width. Pure codec over byte
 * arrays (big-endian, as on disk). Offsets are kept as JS numbers: every offset we accept is
 * below 2^53 (the open refuses larger ones).
 *
 * L1 entry: bits 9-55 the L2 table's offset, bit 63 "copied" (refcount 1).
 * L2 entry, standard cluster: bit 0 "reads as zeros" (version 3), bits 9-55 the data's offset,
 * bit 62 clear, bit 63 "copied". Compressed cluster (bit 62 set): with x = 62 - (clusterBits - 8),
 * bits 0..x-1 the byte offset of the compressed data, bits x..61 the count of 512-byte sectors it
 * occupies beyond the first one.
 */

export const COPIED = 0x80000000;
const COMPRESSED = 0x40000000;
const OFFSET_HI_MASK = 0x00ffffff;
const OFFSET_LO_MASK = 0xfffffe00;

/** Where one virtual cluster lives in this image. */
export type ClusterMapping =
  | { kind: "unallocated" }
  /** Reads as zeros; `host` is a preallocated cluster (0 if none). */
  | { kind: "zero"; host: number }
  | { kind: "data"; host: number; copied: boolean }
  | { kind: "compressed"; host: number; length: number };

export const UNALLOCATED: ClusterMapping = { kind: "unallocated" };

/** Bits 9-55 of a 64-bit entry given as its two 32-bit halves. */
export function offsetOf(hi: number, lo: number): number {
  return (hi & OFFSET_HI_MASK) * 2 ** 32 + ((lo & OFFSET_LO_MASK) >>> 0);
}

export function readL1(table: DataView, i: number): number {
  return offsetOf(table.getUint32(8 * i), table.getUint32(8 * i + 4));
}

/** An L1 or standard L2 entry pointing at `host` (0: none), with the copied flag. */
export function writeEntry(table: DataView, i: number, host: number, flags = 0): void {
  if (host === 0 && flags === 0) {
    table.setUint32(8 * i, 0);
    table.setUint32(8 * i + 4, 0);
    return;
  }
  table.setUint32(8 * i, ((host === 0 ? 0 : COPIED) | (flags & 0x7f000000) | Math.floor(host / 2 ** 32)) >>> 0);
  table.setUint32(8 * i + 4, ((host % 2 ** 32) | (flags & 1)) >>> 0);
}

/** Zero flag for writeEntry's flags (version 3 only). */
export const ZERO_FLAG = 1;

/** Decode L2 entry `i`. `zeroFlag`: the image is version 3 (bit 0 means "reads as zeros"). */
export function readL2(table: DataView, i: number, clusterBits: number, zeroFlag: boolean): ClusterMapping {
  const hi = table.getUint32(8 * i);
  const lo = table.getUint32(8 * i + 4);
  if (hi & COMPRESSED) {
    const e = (BigInt(hi) << 32n) | BigInt(lo);
    const x = BigInt(62 - (clusterBits - 8));
    const host = Number(e & ((1n << x) - 1n));
    const sectors = Number((e >> x) & ((1n << (62n - x)) - 1n));
    return { kind: "compressed", host, length: (sectors + 1) * 512 - (host % 512) };
  }
  const host = offsetOf(hi, lo);
  if (zeroFlag && lo & 1) return { kind: "zero", host };
  if (host === 0) return UNALLOCATED;
  return { kind: "data", host, copied: (hi & COPIED) !== 0 };
}

/** Host clusters (by index) that a compressed cluster's bytes touch. */
export function compressedClusters(m: { host: number; length: number }, clusterBits: number): [number, number] {
  const first = Math.floor(m.host / 2 ** clusterBits);
  const last = Math.floor((m.host + m.length - 1) / 2 ** clusterBits);
  return [first, last];
}

/** Refcount `i` of a refcount block with 2^order-bit entries. Sub-byte entries fill a byte from its low bits. */
export function getRefcount(block: DataView, i: number, order: number): number {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const per = 8 / bits;
      return (block.getUint8(Math.floor(i / per)) >> ((i % per) * bits)) & ((1 << bits) - 1);
    }
    case 3:
      return block.getUint8(i);
    case 4:
      return block.getUint16(2 * i);
    case 5:
      return block.getUint32(4 * i);
    default:
      return block.getUint32(8 * i) * 2 ** 32 + block.getUint32(8 * i + 4);
  }
}

export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1;
}

export function setRefcount(block: DataView, i: number, order: number, value: number): void {
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const bits = 1 << order;
      const per = 8 / bits;
      const at = Math.floor(i / per);
      const shift = (i % per) * bits;
      const mask = ((1 << bits) - 1) << shift;
      block.setUint8(at, (block.getUint8(at) & ~mask) | ((value << shift) & mask));
      return;
    }
    case 3:
      return block.setUint8(i, value);
    case 4:
      return block.setUint16(2 * i, value);
    case 5:
      return block.setUint32(4 * i, value);
    default:
      block.setUint32(8 * i, Math.floor(value / 2 ** 32));
      block.setUint32(8 * i + 4, value % 2 ** 32);
  }
}
