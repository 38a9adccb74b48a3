/**
 * Checking a Parallels file without opening it for I/O: read-only, never writes. Findings kept
 * apart as `qemu-img check` keeps them:
 * - corruption: whatever an open refuses (the same code runs: readParallelsMetadata);
 * - unclean: the in-use mark is set (qemu calls this an error and clears it on repair; an open
 *   read-write refuses it);
 * - leaks: bytes past the end of the last cluster in use, and unreferenced clusters between the
 *   data area's start and that end (harmless: reads never see them).
 */
import { MediumError, type MediumErrorKind } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { INUSE_MAGIC, clusterSize, dataOffset, virtualSize } from "./header.js";
import { readParallelsMetadata } from "./parallels-image.js";

export interface ParallelsCheckReport {
  path: string;
  fileSize: number;
  corruption: { kind: MediumErrorKind; message: string; offset?: number } | null;
  form: "legacy" | "ext" | null;
  size: number;
  clusterSize: number;
  allocatedClusters: number;
  /** The in-use mark is set. */
  unclean: boolean;
  /** Bytes in the data area and past it that no BAT entry uses. */
  leakedBytes: number;
}

export async function checkParallels(file: FileIo): Promise<ParallelsCheckReport> {
  const report: ParallelsCheckReport = {
    path: file.path,
    fileSize: await file.size(),
    corruption: null,
    form: null,
    size: 0,
    clusterSize: 0,
    allocatedClusters: 0,
    unclean: false,
    leakedBytes: 0,
  };
  let m;
  try {
    m = await readParallelsMetadata(file);
  } catch (e) {
    if (!(e instanceof MediumError)) throw e;
    report.corruption = { kind: e.kind, message: e.message, offset: e.offset };
    return report;
  }
  const h = m.header;
  const cs = clusterSize(h);
  let end = dataOffset(h);
  let used = 0;
  for (const p of m.bat) {
    if (p === 0) continue;
    used++;
    end = Math.max(end, p + cs);
  }
  Object.assign(report, {
    form: h.form,
    size: virtualSize(h),
    clusterSize: cs,
    allocatedClusters: used,
    unclean: h.inUse === INUSE_MAGIC,
    // BAT entries never share a cluster (the open refuses that), so what they do not cover is unused.
    leakedBytes: Math.max(0, m.fileSize - end) + Math.max(0, Math.min(end, m.fileSize) - dataOffset(h) - used * cs),
  });
  return report;
}
