/**
 * VirtualBox's "access a host disk directly": a VMDK descriptor whose FLAT extents point at a
 * host disk (createmedium --variant RawDisk --property RawDrive=DEV [--property Partitions=1,3]).
 *
 *   whole disk:      createType "fullDevice", one FLAT extent over the device.
 *   some partitions: createType "partitionedDevice"; the sectors before the first partition (MBR,
 *                    boot loader gap) come from a side file NAME-pt.vmdk holding a copy of them, as
 *                    VirtualBox does, so the guest can never rewrite the host's partition table;
 *                    the chosen partitions are FLAT extents at their offsets on the device; every
 *                    other range is a ZERO extent: it reads as zeros and writes to it are refused.
 *
 * Only MBR primary partitions (1-4) can be chosen; a GPT disk (protective MBR) and logical
 * partitions are refused with "unsupported". The device's size comes from the caller (a block
 * device's stat size is 0; the CLI asks /sys for it).
 */
import { MediumError } from "../../block.js";
import type { FileOpener } from "../../io/file-io.js";
import { NULL_UUID, randomUuid } from "../uuid.js";
import { encodeUtf8 } from "../text-codec.js";
import { VmdkDescriptor, defaultGeometry, type ExtentLine } from "./descriptor.js";
import { SECTOR } from "./sparse-header.js";
import { baseName, dirOf } from "./util.js";

export interface RawDiskOptions {
  /** The host disk (or a file standing in for it), as the extents will name it. */
  device: string;
  /** Its size in bytes. */
  deviceSize: number;
  /** MBR primary partition numbers (1-4) to give the guest; absent: the whole disk. */
  partitions?: readonly number[];
}

interface MbrPartition {
  number: number;
  type: number;
  start: number;
  sectors: number;
}

/** The four primary entries of an MBR (empty ones left out). */
export function parseMbr(sector0: Uint8Array, device: string): MbrPartition[] {
  if (sector0[510] !== 0x55 || sector0[511] !== 0xaa) throw new MediumError("invalid-format", "no MBR partition table (55AAh) in sector 0", { path: device });
  const v = new DataView(sector0.buffer, sector0.byteOffset, 512);
  const parts: MbrPartition[] = [];
  for (let i = 0; i < 4; i++) {
    const e = 446 + 16 * i;
    const type = sector0[e + 4]!;
    const start = v.getUint32(e + 8, true);
    const sectors = v.getUint32(e + 12, true);
    if (type === 0xee) throw new MediumError("unsupported", "the disk has a GPT (protective MBR); only MBR partitions can be chosen", { path: device });
    if (type !== 0 && sectors > 0) parts.push({ number: i + 1, type, start, sectors });
  }
  return parts;
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
      const mbr = new Uint8Array(SECTOR);
      await dev.read(0, mbr);
      const parts = parseMbr(mbr, o.device).sort((a, b) => a.start - b.start);
      for (const n of o.partitions) {
        if (!Number.isInteger(n) || n < 1) throw new MediumError("unsupported", `partition ${n}: only primary partitions 1-4 can be chosen`, { path: o.device });
        if (!parts.some((p) => p.number === n)) throw new MediumError("not-found", `the disk has no partition ${n}`, { path: o.device });
      }
      for (let i = 0; i < parts.length; i++) {
        const p = parts[i]!;
        if (p.start + p.sectors > total || (i > 0 && p.start < parts[i - 1]!.start + parts[i - 1]!.sectors) || p.start === 0) {
          throw new MediumError("corrupt", `partition ${p.number} (${p.start}+${p.sectors}) overlaps another or lies outside the disk`, { path: o.device });
        }
      }
      // Sectors before the first partition: a copy in the side file.
      const head = parts[0]!.start;
      const data = new Uint8Array(head * SECTOR);
      await dev.read(0, data);
      sideFile = { name: `${stem}-pt.vmdk`, data };
      lines.push({ access: "RW", sectors: head, type: "FLAT", file: sideFile.name, offset: 0 });
      let at = head;
      for (const p of parts) {
        if (p.start > at) lines.push({ access: "RW", sectors: p.start - at, type: "ZERO", offset: 0 });
        const chosen = o.partitions.includes(p.number);
        lines.push(chosen ? { access: "RW", sectors: p.sectors, type: "FLAT", file: o.device, offset: p.start } : { access: "RW", sectors: p.sectors, type: "ZERO", offset: 0 });
        at = p.start + p.sectors;
      }
      if (at < total) lines.push({ access: "RW", sectors: total - at, type: "ZERO", offset: 0 });
    } finally {
      await dev.close();
    }
  }
  const d = VmdkDescriptor.create({ cid: parseInt(randomUuid().slice(0, 8), 16) >>> 0, createType: o.partitions?.length ? "partitionedDevice" : "fullDevice" });
  d.extents = lines;
  const geo = defaultGeometry(o.deviceSize);
  d.set("ddb.virtualHWVersion", "4");
  d.set("ddb.adapterType", "ide");
  d.setUuid("image", randomUuid());
  d.setUuid("parent", NULL_UUID);
  d.setUuid("modification", randomUuid());
  d.setUuid("parentmodification", NULL_UUID);
  d.set("ddb.geometry.cylinders", String(geo.cylinders));
  d.set("ddb.geometry.heads", String(geo.heads));
  d.set("ddb.geometry.sectors", String(geo.sectors));

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
