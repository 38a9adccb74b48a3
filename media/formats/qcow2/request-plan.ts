/**
 * How one read or write request on a qcow2 image splits into file I/O: clusters that follow each
 * other in the image and on the host too are one read or one write, not one per cluster (a 1 MiB
 * request over 64 KiB clusters is one pread or pwrite, not 16). Pure: the image supplies the
 * mappings and the rules. Offsets `start`/`end` are into the request's buffer.
 */
import type { ClusterMapping } from "./tables.js";

export type ReadPart =
  /** Stored bytes at `host`, in one read. */
  | { kind: "stored"; host: number; start: number; end: number }
  /** Part of one cluster that is not plain stored data (zeros, unallocated, compressed). */
  | { kind: "cluster"; mapping: ClusterMapping; inCluster: number; start: number; end: number };

export function planRead(offset: number, length: number, cs: number, lookup: (index: number) => ClusterMapping): ReadPart[] {
  const parts: ReadPart[] = [];
  forEachCluster(offset, length, cs, (index, inCluster, start, end) => {
    const m = lookup(index);
    if (m.kind !== "data") {
      parts.push({ kind: "cluster", mapping: m, inCluster, start, end });
      return;
    }
    const host = m.host + inCluster;
    const last = parts[parts.length - 1];
    if (last?.kind === "stored" && last.host + (last.end - last.start) === host) last.end = end;
    else parts.push({ kind: "stored", host, start, end });
  });
  return parts;
}

export type WritePart =
  /** Written where it is stored, at `host`, in one write. */
  | { kind: "in-place"; host: number; start: number; end: number }
  /** Whole clusters from `first` on (one per `old` entry: their mappings now), for one contiguous run of new storage. */
  | { kind: "fresh"; first: number; old: ClusterMapping[]; start: number; end: number }
  /** Part of one cluster, written on its own (copy-on-write, zeros, an allocation under way...). */
  | { kind: "cluster"; index: number; inCluster: number; start: number; end: number };

export interface WriteRules {
  lookup(index: number): ClusterMapping;
  /** Where a write into this cluster goes in place (the host offset of its start), or null. */
  storedAt(m: ClusterMapping): number | null;
  /** Whether a whole cluster not written in place joins a run of new storage (`data`: its new bytes). */
  fresh(index: number, m: ClusterMapping, data: Uint8Array): boolean;
}

export function planWrite(offset: number, buf: Uint8Array, cs: number, rules: WriteRules): WritePart[] {
  const parts: WritePart[] = [];
  forEachCluster(offset, buf.length, cs, (index, inCluster, start, end) => {
    const m = rules.lookup(index);
    const last = parts[parts.length - 1];
    const stored = rules.storedAt(m);
    if (stored !== null) {
      const host = stored + inCluster;
      if (last?.kind === "in-place" && last.host + (last.end - last.start) === host) last.end = end;
      else parts.push({ kind: "in-place", host, start, end });
    } else if (end - start === cs && rules.fresh(index, m, buf.subarray(start, end))) {
      // The previous part ends where this cluster starts: a fresh one just before continues.
      if (last?.kind === "fresh") {
        last.old.push(m);
        last.end = end;
      } else parts.push({ kind: "fresh", first: index, old: [m], start, end });
    } else {
      parts.push({ kind: "cluster", index, inCluster, start, end });
    }
  });
  return parts;
}

function forEachCluster(offset: number, length: number, cs: number, each: (index: number, inCluster: number, start: number, end: number) => void): void {
  for (let done = 0; done < length; ) {
    const abs = offset + done;
    const index = Math.floor(abs / cs);
    const inCluster = abs - index * cs;
    const end = done + Math.min(cs - inCluster, length - done);
    each(index, inCluster, done, end);
    done = end;
  }
}
