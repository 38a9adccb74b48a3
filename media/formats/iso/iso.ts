/**
 * ISO 9660 images as read-only CD/DVD media: 2048-byte sectors, the primary volume descriptor
 * ("CD001") at sector 16. Hybrid images (El Torito, MBR up front) and UDF bridge images carry the
 * same descriptor and are accepted too.
 */
import { MediumError } from "../../block.js";
import type { FileOpener } from "../../io/file-io.js";
import { openRaw, type RawBackend } from "../raw/raw.js";

export const ISO_SECTOR = 2048;
const PVD_SECTOR = 16;

export interface IsoInfo {
  /** The primary volume descriptor's volume identifier, trailing spaces removed. */
  volumeId: string;
  sectors: number;
}

/** Parse the primary volume descriptor sector (pure). */
export function parsePrimaryVolumeDescriptor(sector: Uint8Array, path?: string): { volumeId: string } {
  const magic = String.fromCharCode(...sector.subarray(1, 6));
  if (sector.length < ISO_SECTOR || magic !== "CD001") {
    throw new MediumError("invalid-format", `no ISO 9660 volume descriptor ("CD001") at sector 16`, { path, offset: PVD_SECTOR * ISO_SECTOR });
  }
  if (sector[0] !== 1) throw new MediumError("corrupt", `the descriptor at sector 16 has type ${sector[0]}, not 1 (primary)`, { path });
  const volumeId = String.fromCharCode(...sector.subarray(40, 72)).replace(/[\s\0]+$/, "");
  return { volumeId };
}

/** Open an ISO image read-only, after checking its size and volume descriptor. */
export async function openIso(opener: FileOpener, path: string): Promise<{ medium: RawBackend; info: IsoInfo }> {
  const file = await opener.open(path, { readOnly: true });
  let info: IsoInfo;
  try {
    const size = await file.size();
    if (size % ISO_SECTOR) throw new MediumError("corrupt", `size ${size} is not a multiple of ${ISO_SECTOR}-byte sectors`, { path });
    if (size < (PVD_SECTOR + 1) * ISO_SECTOR) throw new MediumError("invalid-format", `too small for an ISO 9660 image (${size} bytes)`, { path });
    const pvd = new Uint8Array(ISO_SECTOR);
    await file.read(PVD_SECTOR * ISO_SECTOR, pvd);
    info = { ...parsePrimaryVolumeDescriptor(pvd, path), sectors: size / ISO_SECTOR };
  } finally {
    await file.close();
  }
  const medium = await openRaw(opener, path, { readOnly: true, sectorSize: ISO_SECTOR });
  return { medium, info };
}
