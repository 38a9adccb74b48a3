/**
 * Golden streamOptimized VMDK, laid out as VMware and VirtualBox write it (qemu cannot make this
 * layout: it puts the grain directory up front and writes no metadata markers):
 *
 *   sector 0      sparse extent header, gdOffset = GD_AT_END (the real one is the footer)
 *   sector 1..    embedded descriptor, createType="streamOptimized"
 *   overHead..    per grain: grain marker (u64 LBA, u32 compressed size) + zlib stream, padded
 *                 to 512; after the last grain of a grain table's range: GT marker + the GT
 *                 (512 u32 entries = 4 sectors); grain tables with no grains are not written
 *                 (GD entry 0), as VMware does and VirtualBox copies
 *   end           GD marker + GD, FOOTER marker + footer (the header with the real gdOffset),
 *                 EOS marker
 *
 * GT entries hold the sector of a grain's marker. All-zero grains are simply absent (GTE 0).
 *
 * A disk whose size is not a whole number of grains has a final partial grain. VirtualBox (the
 * writer here) rounds the header capacity up to the grain, keeps the exact size in the
 * descriptor's extent line, and compresses the last grain padded with zeros to a full grain
 * ("padded"). qemu's reader also accepts a last grain that inflates to only the bytes inside the
 * disk when the header capacity itself is exact ("short"); VirtualBox would refuse that one.
 *
 * Facts from the VMDK 5.0 technote and /work/shared/ref/media-formats.md section 2; none of our
 * VMDK code is used.
 */
import { deflateSync } from "node:zlib";
import { alignUp, Bytes, concat, fillSectors, fillText, SECTOR, type GoldenDisk } from "./shared.js";

const MAGIC = 0x564d444b; // "KDMV" on disk
const GD_AT_END = 0xffffffffffffffffn;
const FLAG_NEWLINE_TEST = 1 << 0;
const FLAG_COMPRESSED = 1 << 16;
const FLAG_MARKERS = 1 << 17;
const COMPRESS_DEFLATE = 1;
const GTES_PER_GT = 512;
const MARKER_EOS = 0;
const MARKER_GT = 1;
const MARKER_GD = 2;
const MARKER_FOOTER = 3;

export interface StreamVmdkOptions {
  /** File name, also written into the descriptor's extent line. */
  name: string;
  /** Virtual disk content; its length is the disk size (whole sectors). */
  content: Uint8Array;
  /** Grain size in sectors (128 = 64 KiB, what VMware and VirtualBox use). */
  grainSectors?: number;
  /** How a final partial grain is stored (see the file comment). */
  lastGrain?: "padded" | "short";
  /** Extent access in the descriptor: VirtualBox writes RDONLY for stream images, VMware RW. */
  access?: "RDONLY" | "RW";
}

export interface StreamVmdkLayout {
  /** Sector of each grain's marker, by grain index (absent grains are not listed). */
  grainSector: Map<number, number>;
  /** The grain directory as written (0 = no grain table). */
  gd: number[];
  /** Sector of the GD (as the footer says). */
  gdSector: number;
  capacity: number;
}

function marker(numSectors: number, type: number): Uint8Array {
  const m = new Uint8Array(SECTOR);
  new Bytes(m).u64le(0, numSectors).u32le(8, 0).u32le(12, type);
  return m;
}

/** The 512-byte sparse extent header (also the footer, with the real gdOffset). */
function header(o: { capacity: number; grainSectors: number; descSectors: number; overHead: number; gdOffset: bigint }): Uint8Array {
  const h = new Uint8Array(SECTOR);
  new Bytes(h)
    .u32le(0, MAGIC)
    .u32le(4, 3) // version 3: streamOptimized
    .u32le(8, FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS)
    .u64le(12, o.capacity)
    .u64le(20, o.grainSectors)
    .u64le(28, 1) // descriptorOffset
    .u64le(36, o.descSectors)
    .u32le(44, GTES_PER_GT)
    .u64le(48, 0) // rgdOffset: no redundant GD in stream images
    .u64le(56, o.gdOffset)
    .u64le(64, o.overHead)
    .u8(72, 0) // uncleanShutdown
    .ascii(73, "\n \r\n")
    .u16le(77, COMPRESS_DEFLATE);
  return h;
}

function uuidText(seed: number): string {
  const h = (n: number, w: number) => ((seed * 0x9e3779b1 + n * 0x85ebca6b) >>> 0).toString(16).padStart(8, "0").slice(0, w);
  return `${h(1, 8)}-${h(2, 4)}-4${h(3, 3)}-8${h(4, 3)}-${h(5, 8)}${h(6, 4)}`;
}

function descriptor(name: string, sectors: number, access: string): string {
  const cyl = Math.min(16383, Math.floor(sectors / (16 * 63)));
  return [
    "# Disk DescriptorFile",
    "version=1",
    "CID=5e1f9a27",
    "parentCID=ffffffff",
    'createType="streamOptimized"',
    "",
    "# Extent description",
    `${access} ${sectors} SPARSE "${name}"`,
    "",
    "# The disk Data Base",
    "#DDB",
    "",
    'ddb.virtualHWVersion = "4"',
    'ddb.adapterType="ide"',
    `ddb.geometry.cylinders="${cyl}"`,
    'ddb.geometry.heads="16"',
    'ddb.geometry.sectors="63"',
    `ddb.uuid.image="${uuidText(7)}"`,
    'ddb.uuid.parent="00000000-0000-0000-0000-000000000000"',
    'ddb.uuid.modification="00000000-0000-0000-0000-000000000000"',
    'ddb.uuid.parentmodification="00000000-0000-0000-0000-000000000000"',
    "",
  ].join("\n");
}

const isZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

/** Build the stream VMDK file for `content`. */
export function buildStreamVmdk(o: StreamVmdkOptions): { bytes: Uint8Array; layout: StreamVmdkLayout } {
  const grainSectors = o.grainSectors ?? 128;
  const grainBytes = grainSectors * SECTOR;
  const sectors = o.content.length / SECTOR;
  if (!Number.isInteger(sectors)) throw new RangeError("content must be whole sectors");
  const capacity = o.lastGrain === "short" ? sectors : alignUp(sectors, grainSectors);
  const grains = Math.ceil(sectors / grainSectors);
  const gdEntries = Math.ceil(capacity / (GTES_PER_GT * grainSectors));

  const descText = new TextEncoder().encode(descriptor(o.name, sectors, o.access ?? "RDONLY"));
  const descSectors = Math.ceil((descText.length + 1) / SECTOR);
  const overHead = 1 + descSectors;

  const parts: Uint8Array[] = [];
  let at = 0; // sectors written so far
  const push = (b: Uint8Array): number => {
    const start = at;
    const padded = new Uint8Array(alignUp(b.length, SECTOR));
    padded.set(b);
    parts.push(padded);
    at += padded.length / SECTOR;
    return start;
  };

  push(header({ capacity, grainSectors, descSectors, overHead, gdOffset: GD_AT_END }));
  const desc = new Uint8Array(descSectors * SECTOR);
  desc.set(descText);
  push(desc);

  const gd = new Array<number>(gdEntries).fill(0);
  const grainSector = new Map<number, number>();
  let gt: Uint32Array | null = null;
  let gtIndex = -1;
  const flushGt = (): void => {
    if (!gt || gt.every((e) => e === 0)) return; // empty grain tables are not written
    push(marker((GTES_PER_GT * 4) / SECTOR, MARKER_GT));
    const table = new Uint8Array(GTES_PER_GT * 4);
    const w = new Bytes(table);
    gt.forEach((e, i) => w.u32le(i * 4, e));
    gd[gtIndex] = push(table);
  };

  for (let g = 0; g < grains; g++) {
    const start = g * grainBytes;
    const inDisk = o.content.subarray(start, Math.min(start + grainBytes, o.content.length));
    if (isZero(inDisk)) continue; // zero grains are absent
    const dir = Math.floor(g / GTES_PER_GT);
    if (dir !== gtIndex) {
      flushGt();
      gt = new Uint32Array(GTES_PER_GT);
      gtIndex = dir;
    }
    // The last grain: padded to a full grain (VirtualBox), or only the bytes inside the disk.
    let raw = inDisk;
    if (inDisk.length < grainBytes && o.lastGrain !== "short") {
      raw = new Uint8Array(grainBytes);
      raw.set(inDisk);
    }
    const z = deflateSync(raw);
    const m = new Uint8Array(12 + z.length);
    new Bytes(m).u64le(0, g * grainSectors).u32le(8, z.length).set(12, z);
    const s = push(m);
    gt![g % GTES_PER_GT] = s;
    grainSector.set(g, s);
  }
  flushGt();

  push(marker(Math.ceil((gdEntries * 4) / SECTOR), MARKER_GD));
  const gdBytes = new Uint8Array(gdEntries * 4);
  const gdw = new Bytes(gdBytes);
  gd.forEach((e, i) => gdw.u32le(i * 4, e));
  const gdSector = push(gdBytes);
  push(marker(1, MARKER_FOOTER));
  push(header({ capacity, grainSectors, descSectors, overHead, gdOffset: BigInt(gdSector) }));
  push(marker(0, MARKER_EOS));

  return { bytes: concat(parts), layout: { grainSector, gd, gdSector, capacity } };
}

export interface StreamScenario extends GoldenDisk {
  layout: StreamVmdkLayout;
  grainSectors: number;
}

/**
 * The golden stream VMDK of the tests: 3 grain tables' worth of 64 KiB grains plus a final grain
 * in a 4th table: a whole grain ("whole", the size VMware's spec asks for), or 40 sectors of a
 * partial grain stored "padded" (VirtualBox) or "short" (qemu accepts it).
 *
 * - grains 0..3 at the start: text (compresses well), noise (does not: the compressed grain is
 *   bigger than the grain), and a grain with zero sectors inside it;
 * - grains 505..520: data crossing the first grain-table boundary (grain 512);
 * - grain 900 alone in the second table; everything else there is absent (zeros);
 * - the third table's range (grains 1024..1535) is all zeros: no grain table at all;
 * - the final grain 1536 (whole, or 40 sectors inside the disk).
 */
export function streamScenario(name: string, last: "whole" | "padded" | "short"): StreamScenario {
  const grainSectors = 128;
  const grainBytes = grainSectors * SECTOR;
  const sectors = 3 * GTES_PER_GT * grainSectors + (last === "whole" ? grainSectors : 40);
  const content = new Uint8Array(sectors * SECTOR);
  const grain = (g: number, n = 1) => content.subarray(g * grainBytes, Math.min((g + n) * grainBytes, content.length));
  fillText(grain(0), 0, "VMDt");
  fillSectors(grain(1, 2), grainBytes, "VMDn");
  fillSectors(grain(3).subarray(0, 16 * SECTOR), 3 * grainBytes, "VMDh");
  fillSectors(grain(3).subarray(100 * SECTOR), 3 * grainBytes + 100 * SECTOR, "VMDh");
  for (let g = 505; g <= 520; g++) (g % 3 ? fillSectors : fillText)(grain(g), g * grainBytes, "VMDx");
  fillText(grain(900), 900 * grainBytes, "VMDm");
  fillSectors(grain(1536), 1536 * grainBytes, "VMDe");
  const lastGrain = last === "short" ? "short" : "padded";
  // VMware writes its extents RW; VirtualBox writes RDONLY for the stream images it makes.
  const access = last === "whole" ? "RW" : "RDONLY";
  const { bytes, layout } = buildStreamVmdk({ name, content, grainSectors, lastGrain, access });
  return { files: [{ name, bytes }], size: content.length, expected: content, layout, grainSectors };
}
