/**
 * VirtualBox's "access a host disk directly": a VMDK descriptor whose FLAT extents point at a
 * host disk (createmedium --variant RawDisk --property RawDrive=DEV [--property Partitions=1,5]).
 *
 *   whole disk:      createType "fullDevice", one FLAT extent over the device.
 *   some partitions: createType "partitionedDevice". Partitions are numbered as Linux and
 *                    VirtualBox do: MBR primaries 1-4, logical partitions 5, 6, ... in EBR chain
 *                    order, GPT entry index + 1 (partition-table.ts reads and checks the table).
 *                    Every partition-table sector (MBR, each EBR, primary GPT header and entries,
 *                    backup GPT entries and header) and the sectors before the first partition
 *                    (boot loader gap) come from copies in one side file NAME-pt.vmdk, at
 *                    successive offsets, as VirtualBox does: the guest sees the host's tables but
 *                    can never rewrite them. The chosen partitions are FLAT extents at their
 *                    offsets on the device; every other range (unchosen partitions, gaps) is a
 *                    ZERO extent: it reads as zeros and writes to it are refused.
 *
 * An MBR extended partition cannot be chosen itself (its EBRs would become writable): choose its
 * logical partitions. The device's size comes from the caller (a block device's stat size is 0;
 * the CLI asks /sys for it).
 */
import { MediumError } from "../../block.js";
import type { FileOpener } from "../../io/file-io.js";
import { randomUuid } from "../uuid.js";
import { encodeUtf8 } from "../text-codec.js";
import { VmdkDescriptor, type ExtentLine } from "./descriptor.js";
import { readPartitionTable, type SectorRange } from "./partition-table.js";
import { SECTOR } from "./sparse-header.js";
import { readFully } from "./util.js";
import { baseName, dirOf } from "../paths.js";

export interface RawDiskOptions {
  /** The host disk (or a file standing in for it), as the extents will name it. */
  device: string;
  /** Its size in bytes. */
  deviceSize: number;
  /** Partition numbers (MBR 1-4 and logical 5..., or GPT) to give the guest; absent: the whole disk. */
  partitions?: readonly number[];
}

/** Write the descriptor (and for partitions the side file). The files must not exist. */
export async function createRawDiskVmdk(opener: FileOpener, path: string, o: RawDiskOptions): Promise<void> {
  if (!Number.isSafeInteger(o.deviceSize) || o.deviceSize <= 0 || o.deviceSize % SECTOR) {
    throw new MediumError("invalid-format", `device size ${o.deviceSize} is not a positive multiple of ${SECTOR}`, { path: o.device });
  }
  const total = o.deviceSize / SECTOR;
  const stem = baseName(path).replace(/\.vmdk$/i, "");
  const lines: ExtentLine[] = [];
  let sideFile: { name: string; data: Uint8Array } | undefined;
  if (!o.partitions || o.partitions.length === 0) {
    lines.push({ access: "RW", sectors: total, type: "FLAT", file: o.device, offset: 0 });
  } else {
    const dev = await opener.open(o.device, { readOnly: true });
    try {
      const table = await readPartitionTable(dev, total);
      const chosen = new Set(o.partitions);
      for (const n of chosen) {
        if (table.extended.includes(n)) throw new MediumError("unsupported", `partition ${n} is an extended partition: choose the logical partitions in it (5, 6, ...)`, { path: o.device });
        if (!table.partitions.some((p) => p.number === n)) {
          throw new MediumError("not-found", `the disk has no partition ${n} (it has ${table.partitions.map((p) => p.number).join(", ") || "none"})`, { path: o.device });
        }
      }
      // The tables plus everything before the first partition (boot loader gap): copies.
      const copies = mergeRanges([{ start: 0, sectors: table.partitions[0]!.start }, ...table.tables]);
      const data = new Uint8Array(copies.reduce((n, r) => n + r.sectors, 0) * SECTOR);
      sideFile = { name: `${stem}-pt.vmdk`, data };
      const pieces = [
        ...copies.map((r) => ({ ...r, kind: "copy" as const })),
        ...table.partitions.map((p) => ({ start: p.start, sectors: p.sectors, kind: chosen.has(p.number) ? ("device" as const) : ("zero" as const) })),
      ].sort((x, y) => x.start - y.start);
      const zero = (sectors: number): void => {
        const last = lines[lines.length - 1];
        if (last?.type === "ZERO") last.sectors += sectors;
        else lines.push({ access: "RW", sectors, type: "ZERO", offset: 0 });
      };
      let at = 0;
      let side = 0;
      for (const p of pieces) {
        if (p.start > at) zero(p.start - at);
        if (p.kind === "copy") {
          const bytes = data.subarray(side * SECTOR, (side + p.sectors) * SECTOR);
          if ((await readFully(dev, p.start * SECTOR, bytes)) < bytes.length) throw new MediumError("corrupt", `the device ends before sector ${p.start + p.sectors}`, { path: o.device });
          lines.push({ access: "RW", sectors: p.sectors, type: "FLAT", file: sideFile.name, offset: side });
          side += p.sectors;
        } else if (p.kind === "device") lines.push({ access: "RW", sectors: p.sectors, type: "FLAT", file: o.device, offset: p.start });
        else zero(p.sectors);
        at = p.start + p.sectors;
      }
      if (at < total) zero(total - at);
    } finally {
      await dev.close();
    }
  }
  const d = VmdkDescriptor.create({ cid: parseInt(randomUuid().slice(0, 8), 16) >>> 0, createType: o.partitions?.length ? "partitionedDevice" : "fullDevice" });
  d.extents = lines;
  d.setDiskDatabase({ size: o.deviceSize, adapterType: "ide", uuid: randomUuid(), modification: randomUuid() });

  const made: string[] = [];
  const write = async (p: string, bytes: Uint8Array): Promise<void> => {
    const f = await opener.open(p, { create: true });
    made.push(p);
    try {
      await f.write(0, bytes);
      await f.flush();
    } finally {
      await f.close();
    }
  };
  try {
    if (sideFile) await write(dirOf(path) + sideFile.name, sideFile.data);
    await write(path, encodeUtf8(d.toString()));
  } catch (e) {
    for (const p of made) await opener.remove(p).catch(() => undefined);
    throw e;
  }
}

/** Sorted, overlapping and touching ranges joined. */
function mergeRanges(ranges: SectorRange[]): SectorRange[] {
  const out: SectorRange[] = [];
  for (const r of [...ranges].filter((x) => x.sectors > 0).sort((a, b) => a.start - b.start)) {
    const last = out[out.length - 1];
    if (last && r.start <= last.start + last.sectors) last.sectors = Math.max(last.sectors, r.start + r.sectors - last.start);
    else out.push({ ...r });
  }
  return out;
}
