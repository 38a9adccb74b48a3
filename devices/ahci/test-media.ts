/**
 * Test support, imported by the AHCI tests only: a raw disk image in memory files whose requests
 * a test can hold and release in any order (media/io/fault-io.ts), an ISO image for the CD drive,
 * and guest buffers filled with a sentinel.
 */
import { MemoryFileOpener, FaultControl, HeldFileOpener } from "../../media/io/fault-io.js";
import { createRaw, openRaw, type RawBackend } from "../../media/formats/raw/raw.js";
import { openIso } from "../../media/formats/iso/iso.js";
import { MemoryDisk } from "../ata/test-support.js";
import { cdPattern } from "../scsi/test-support.js";

export interface HeldDisk {
  files: MemoryFileOpener;
  control: FaultControl;
  medium: RawBackend;
  /** The disk's initial content (MemoryDisk's pattern: sector s starts with s). */
  pattern: Uint8Array;
  /** Open the same image again, without the fault wrapper (a restored machine). */
  reopen(): Promise<RawBackend>;
  /** Current bytes of sectors [lba, lba + count). */
  sectors(lba: number, count: number): Uint8Array;
}

/** A raw image of `sectors` sectors in memory files, opened through a HeldFileOpener. */
export async function heldDisk(sectors = 8192): Promise<HeldDisk> {
  const files = new MemoryFileOpener();
  const control = new FaultControl();
  const created = await createRaw(files, "disk.raw", sectors * 512);
  await created.close();
  const pattern = new MemoryDisk(sectors).fillPattern().data;
  files.file("disk.raw").write(0, pattern);
  // 64 in flight so all 32 queued commands of a port reach the file at once
  const medium = await openRaw(new HeldFileOpener(files, control), "disk.raw", { maxInFlight: 64 });
  return {
    files,
    control,
    medium,
    pattern,
    reopen: () => openRaw(files, "disk.raw", { maxInFlight: 64 }),
    sectors: (lba, count) => {
      const out = new Uint8Array(count * 512);
      files.file("disk.raw").read(lba * 512, out);
      return out;
    },
  };
}

/** An ISO 9660 image of `sectors` 2048-byte sectors (cdPattern data, a primary volume descriptor at 16). */
export async function isoImage(sectors = 64) {
  const files = new MemoryFileOpener();
  const data = new Uint8Array(sectors * 2048);
  for (let s = 0; s < sectors; s++) data.set(cdPattern(s), s * 2048);
  const pvd = new Uint8Array(2048);
  pvd[0] = 1;
  pvd.set([..."CD001"].map((c) => c.charCodeAt(0)), 1);
  pvd[6] = 1;
  pvd.set([..."VSTOR_TEST".padEnd(32)].map((c) => c.charCodeAt(0)), 40);
  data.set(pvd, 16 * 2048);
  const f = await files.open("cd.iso", { create: true });
  await f.write(0, data);
  await f.close();
  return openIso(files, "cd.iso");
}

/** Guest RAM filled with a sentinel, for buffers that must stay untouched. */
export function sentinel(ram: Uint8Array, at: number, bytes: number, value = 0xcc): void {
  ram.fill(value, at, at + bytes);
}

export function untouched(ram: Uint8Array, at: number, bytes: number, value = 0xcc): boolean {
  for (let i = at; i < at + bytes; i++) if (ram[i] !== value) return false;
  return true;
}
