/**
 * Golden Parallels HDD v2 images ("expandable": header, BAT, data area), in both signatures:
 *
 *   0    header (64 bytes, LE): magic, version 2, heads, cylinders, tracks (= cluster size in
 *        sectors), BAT entries, nb_sectors, in_use, data_off (sectors), flags, ext_off (sectors)
 *   64   BAT: u32 per cluster, 0 = not allocated (zeros)
 *   data_off  clusters, in any order
 *
 * "WithoutFreeSpace" (what VirtualBox writes): BAT entries count sectors, only the low 32 bits
 * of nb_sectors count, data_off may be 0 (= end of the BAT rounded up to a sector), clusters of
 * 63 sectors (VirtualBox uses the PCHS sectors per track, not a power of two).
 * "WithouFreSpacExt" (what qemu and Parallels write now): BAT entries count clusters, data_off is
 * cluster aligned, and ext_off may point at a Format Extension cluster: magic
 * 0xAB234CEF23DCEA87, the MD5 of the cluster's bytes from offset 24 on, then feature sections
 * ending with an all-zero "end of features" one.
 *
 * Facts from qemu's docs/interop/parallels.txt and /work/shared/ref/media-formats.md section 4;
 * none of our Parallels code is used.
 */
import { createHash } from "node:crypto";
import { alignUp, Bytes, fillSectors, fillText, SECTOR, type GoldenDisk } from "./shared.js";

export const MAGIC_LEGACY = "WithoutFreeSpace";
export const MAGIC_EXT = "WithouFreSpacExt";
const HEADER_SIZE = 64;
const IN_USE_CLOSED = 0x312e3276;
const EXT_MAGIC = 0xab234cef23dcea87n;

export interface ParallelsOptions {
  magic: typeof MAGIC_LEGACY | typeof MAGIC_EXT;
  clusterSectors: number;
  /** Virtual size in sectors (need not be whole clusters). */
  sectors: number;
  /** By cluster index: its content (a whole cluster) or null (not allocated). */
  clusters: (Uint8Array | null)[];
  /** Order of the allocated clusters in the data area. */
  fileOrder: number[];
  /** Data offset in sectors; 0 = the legacy "end of BAT rounded up to a sector". */
  dataOff: number;
  /** Write a Format Extension cluster (Ext only) after the data clusters. */
  formatExtension?: boolean;
  inUse: number;
}

export function buildParallels(o: ParallelsOptions): Uint8Array {
  const cluster = o.clusterSectors * SECTOR;
  const batEntries = o.clusters.length;
  if (batEntries !== Math.ceil(o.sectors / o.clusterSectors)) throw new Error("BAT size does not match the disk size");
  const ext = o.magic === MAGIC_EXT;
  if (ext && (o.dataOff === 0 || o.dataOff % o.clusterSectors)) throw new Error("Ext images need a cluster-aligned data_off");
  const dataStart = o.dataOff ? o.dataOff * SECTOR : alignUp(HEADER_SIZE + 4 * batEntries, SECTOR);
  if (dataStart < HEADER_SIZE + 4 * batEntries) throw new Error("data_off overlaps the BAT");
  const extCluster = o.formatExtension ? o.fileOrder.length : -1;
  const used = o.fileOrder.length + (o.formatExtension ? 1 : 0);
  const file = new Uint8Array(dataStart + used * cluster);
  const w = new Bytes(file)
    .ascii(0, o.magic)
    .u32le(16, 2)
    .u32le(20, 16) // heads
    .u32le(24, Math.ceil(o.sectors / (16 * 63))) // cylinders
    .u32le(28, o.clusterSectors) // "tracks": the cluster size
    .u32le(32, batEntries)
    .u64le(36, o.sectors)
    .u32le(44, o.inUse)
    .u32le(48, o.dataOff)
    .u32le(52, 0) // flags
    .u64le(56, o.formatExtension ? (dataStart + extCluster * cluster) / SECTOR : 0);
  const slot = new Map(o.fileOrder.map((c, i) => [c, i]));
  o.clusters.forEach((c, i) => {
    const n = slot.get(i);
    if (!c) {
      if (n !== undefined) throw new Error(`cluster ${i} is not allocated but in fileOrder`);
      return;
    }
    if (n === undefined) throw new Error(`cluster ${i} is allocated but not in fileOrder`);
    const at = dataStart + n * cluster;
    w.u32le(HEADER_SIZE + 4 * i, ext ? at / cluster : at / SECTOR).set(at, c);
  });
  if (o.formatExtension) {
    const at = dataStart + extCluster * cluster;
    // Magic, checksum, then only the all-zero "end of features" section (already zeros).
    w.u64le(at, EXT_MAGIC);
    const md5 = createHash("md5").update(file.subarray(at + 24, at + cluster)).digest();
    w.set(at + 8, new Uint8Array(md5));
  }
  return file;
}

export interface ParallelsScenario extends GoldenDisk {
  clusterSectors: number;
}

/**
 * "WithoutFreeSpace" as VirtualBox makes it: 10000 sectors in 63-sector clusters (159 clusters,
 * the last with 46 sectors inside the disk), data_off 0, in_use 0 (older software); clusters
 * 0-2, 50, 100-103 and the last allocated, in shuffled file order; the rest unallocated.
 */
export function legacyScenario(name: string): ParallelsScenario {
  const clusterSectors = 63;
  const sectors = 10000;
  const allocated = [0, 1, 2, 50, 100, 101, 102, 103, 158];
  return scenario(name, {
    magic: MAGIC_LEGACY,
    clusterSectors,
    sectors,
    allocated,
    fileOrder: [158, 2, 0, 100, 1, 50, 101, 103, 102],
    dataOff: 0,
    inUse: 0,
  });
}

/**
 * "WithouFreSpacExt" with 256 KiB clusters (one of the sizes Parallels used): 4196 sectors
 * (9 clusters, the last with 100 sectors inside the disk), data_off one cluster, clusters 0, 3, 4
 * and 8 allocated, with or without a Format Extension cluster.
 */
export function extScenario(name: string, formatExtension: boolean): ParallelsScenario {
  const clusterSectors = 512;
  return scenario(name, {
    magic: MAGIC_EXT,
    clusterSectors,
    sectors: 8 * clusterSectors + 100,
    allocated: [0, 3, 4, 8],
    fileOrder: [8, 3, 0, 4],
    dataOff: clusterSectors,
    formatExtension,
    inUse: IN_USE_CLOSED,
  });
}

function scenario(
  name: string,
  s: Omit<ParallelsOptions, "clusters"> & { allocated: number[] },
): ParallelsScenario {
  const cluster = s.clusterSectors * SECTOR;
  const size = s.sectors * SECTOR;
  const clusters: (Uint8Array | null)[] = new Array(Math.ceil(s.sectors / s.clusterSectors)).fill(null);
  const expected = new Uint8Array(size);
  for (const i of s.allocated) {
    const c = new Uint8Array(cluster);
    const inDisk = Math.min(cluster, size - i * cluster);
    // Alternate noise and text; zeros past the end of the disk in the last cluster.
    (i % 2 ? fillText : fillSectors)(c.subarray(0, inDisk), i * cluster, s.magic === MAGIC_EXT ? "PRLx" : "PRLv");
    clusters[i] = c;
    expected.set(c.subarray(0, inDisk), i * cluster);
  }
  const { allocated: _allocated, ...rest } = s;
  const bytes = buildParallels({ ...rest, clusters });
  return { files: [{ name, bytes }], size, expected, clusterSectors: s.clusterSectors };
}
