/**
 * Checking a qcow2 file without opening it for I/O: read-only, never writes. As `qemu-img check`
 * does, findings are kept apart:
 * - corruption: whatever an open refuses (the same code runs: readQcow2Metadata), and clusters in
 *   use whose stored refcount is below the number of references (a write could free or reuse them);
 * - leaks: clusters whose refcount is above their references (what a crash between reserving a
 *   cluster and pointing at it leaves; harmless).
 * References counted: header, L1 table, refcount table and blocks, L2 tables, data clusters
 * (including preallocated zero clusters) and the clusters compressed data touches. Images with
 * internal snapshots or bitmaps have references we do not follow: their refcounts are not
 * compared (refcountsChecked: false).
 */
import { MediumError, type MediumErrorKind } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { readQcow2Metadata } from "./qcow2-metadata.js";
import { compressedClusters, readL2 } from "./tables.js";

export interface Qcow2Corruption {
  kind: MediumErrorKind;
  message: string;
  offset?: number;
}

export interface Qcow2CheckReport {
  path: string;
  fileSize: number;
  version: 2 | 3 | null;
  clusterSize: number;
  backingFile: string | null;
  backingFormat: string | null;
  corruptions: Qcow2Corruption[];
  /** Clusters counted by a refcount above their references. */
  leakedClusters: number;
  refcountsChecked: boolean;
}

const EXT_BITMAPS = 0x23852875;

export async function checkQcow2(file: FileIo): Promise<Qcow2CheckReport> {
  const report: Qcow2CheckReport = {
    path: file.path,
    fileSize: await file.size(),
    version: null,
    clusterSize: 0,
    backingFile: null,
    backingFormat: null,
    corruptions: [],
    leakedClusters: 0,
    refcountsChecked: false,
  };
  let meta;
  try {
    meta = await readQcow2Metadata(file);
  } catch (e) {
    if (!(e instanceof MediumError)) throw e;
    report.corruptions.push({ kind: e.kind, message: e.message, offset: e.offset });
    return report;
  }
  const s = meta.store;
  const h = s.header;
  Object.assign(report, { version: h.version, clusterSize: s.cs, backingFile: h.backingFile, backingFormat: h.backingFormat });
  if (h.nbSnapshots > 0 || h.extensions.some((e) => e.type === EXT_BITMAPS)) return report;
  report.refcountsChecked = true;

  const refs = new Map<number, number>();
  const ref = (cluster: number) => refs.set(cluster, (refs.get(cluster) ?? 0) + 1);
  const refRange = (offset: number, bytes: number) => {
    for (let c = Math.floor(offset / s.cs); c < Math.ceil((offset + bytes) / s.cs); c++) ref(c);
  };
  refRange(0, 1);
  if (h.l1Size > 0) refRange(h.l1TableOffset, h.l1Size * 8);
  refRange(h.refcountTableOffset, h.refcountTableClusters * s.cs);
  for (const at of s.reftable) if (at) ref(at / s.cs);
  for (const [li, table] of s.l2) {
    ref(s.l1[li]! / s.cs);
    for (let j = 0; j < s.l2Entries; j++) {
      const m = readL2(table, j, s.clusterBits, h.version === 3);
      if (m.kind === "compressed") {
        const [first, last] = compressedClusters(m, s.clusterBits);
        for (let c = first; c <= last; c++) ref(c);
      } else if ((m.kind === "data" || m.kind === "zero") && m.host !== 0) ref(m.host / s.cs);
    }
  }
  for (const [cluster, count] of refs) {
    const stored = s.refcount(cluster);
    if (stored < count) {
      report.corruptions.push({
        kind: "corrupt",
        message: `${file.path}: cluster ${cluster} (at ${cluster * s.cs}) has refcount ${stored} but ${count} references`,
        offset: cluster * s.cs,
      });
    } else if (stored > count) report.leakedClusters++;
  }
  for (const [t] of s.refBlocks) {
    for (let i = 0; i < s.perRefBlock; i++) {
      const cluster = t * s.perRefBlock + i;
      if (!refs.has(cluster) && s.refcount(cluster) > 0) report.leakedClusters++;
    }
  }
  return report;
}
