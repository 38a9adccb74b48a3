/**
 * IDENTIFY DEVICE and IDENTIFY PACKET DEVICE data (ATA/ATAPI-7 7.16/7.17, ACS-2 7.12/7.13).
 *
 * Rule: never claim what the core does not implement — libata and Windows probe what is claimed
 * (HPA, security, READ LOG DMA EXT, NCQ send/receive, DIPM ... are all left out).
 */
import { MWDMA_MAX, PIO_MAX, type DriveSettings, type ResolvedConfig } from "./config.js";

/** Largest LBA28 capacity reported in words 60-61. */
export const LBA28_LIMIT = 0x0fffffff;

/** Words 80: ATA/ATAPI-4 .. -7. Major version 7 is what libata needs for TRIM (ata_id_has_trim). */
const MAJOR_VERSIONS = 0x00f0;

/** An ATA string: padded with spaces, two characters per word, first character in the high byte. */
export function putString(words: Uint16Array, first: number, chars: number, text: string): void {
  for (let i = 0; i < chars; i += 2) {
    const a = charAt(text, i);
    const b = charAt(text, i + 1);
    words[first + i / 2] = a << 8 | b;
  }
}

function charAt(text: string, i: number): number {
  const c = i < text.length ? text.charCodeAt(i) : 0x20;
  return c >= 0x20 && c < 0x7f ? c : 0x20;
}

/** Read back an ATA string (trailing spaces removed). */
export function getString(words: Uint16Array, first: number, chars: number): string {
  let s = "";
  for (let i = 0; i < chars / 2; i++) {
    const w = words[first + i]!;
    s += String.fromCharCode(w >> 8, w & 0xff);
  }
  return s.replace(/ +$/, "");
}

/** Word 255: signature A5h in the low byte, checksum so that all 512 bytes sum to 0 (mod 256). */
export function putChecksum(words: Uint16Array): void {
  words[255] = 0x00a5;
  let sum = 0;
  for (let i = 0; i < 255; i++) sum += (words[i]! & 0xff) + (words[i]! >> 8);
  sum += 0xa5;
  words[255] = ((-sum & 0xff) << 8) | 0xa5;
}

/** The 256 words as the 512 bytes the host reads (little-endian). */
export function wordsToBytes(words: Uint16Array): Uint8Array {
  const out = new Uint8Array(512);
  for (let i = 0; i < 256; i++) {
    out[2 * i] = words[i]! & 0xff;
    out[2 * i + 1] = words[i]! >> 8;
  }
  return out;
}

export function bytesToWords(bytes: Uint8Array): Uint16Array {
  const w = new Uint16Array(256);
  for (let i = 0; i < 256; i++) w[i] = bytes[2 * i]! | bytes[2 * i + 1]! << 8;
  return w;
}

/** Words 49-53, 62-68, 88, 93 and the SATA words, shared by both IDENTIFY flavours. */
function putTransport(w: Uint16Array, cfg: ResolvedConfig, s: DriveSettings): void {
  w[49] = 1 << 11 | 1 << 9 | 1 << 8; // IORDY, LBA, DMA
  w[50] = 1 << 14; // no standby timer minimum
  w[51] = 0x0200; // PIO cycle timing mode 2 (obsolete)
  w[52] = 0x0200;
  w[53] |= 1 << 1 | 1 << 2; // words 64-70 and 88 valid
  const mw = s.dmaMode?.kind === "mwdma" ? 1 << (8 + s.dmaMode.mode) : 0;
  w[63] = (1 << (MWDMA_MAX + 1)) - 1 | mw;
  w[64] = (1 << (PIO_MAX - 2)) - 1; // PIO 3 and 4 (0-2 are implied)
  w[65] = 120;
  w[66] = 120;
  w[67] = 120;
  w[68] = 120;
  if (cfg.udmaMax >= 0) {
    const ud = s.dmaMode?.kind === "udma" ? 1 << (8 + s.dmaMode.mode) : 0;
    w[88] = (1 << (cfg.udmaMax + 1)) - 1 | ud;
  }
  if (cfg.sata) {
    w[76] = 1 << 1 | 1 << 2 | (cfg.ncq ? 1 << 8 : 0); // Gen1, Gen2, NCQ
    if (cfg.ncq) w[75] = cfg.ncqDepth - 1;
  } else {
    // Hardware reset result: this device's number, how it was determined (jumper), diagnostics
    // passed, and whether the other device answered (device 0: PDIAG-/DASP- seen, or "device 0
    // responds for device 1" when there is none); plus CBLID.
    const device0 = cfg.peerPresent ? 1 << 3 | 1 << 4 | 1 << 5 : 1 << 3 | 1 << 6;
    const bits = cfg.deviceNumber === 0 ? 1 | 1 << 1 | device0 : (1 | 1 << 1 | 1 << 3) << 8;
    w[93] = bits | 1 << 14 | (cfg.cable80 ? 1 << 13 : 0);
  }
}

/** IDENTIFY DEVICE for a disk of `capacity` sectors. */
export function identifyDevice(cfg: ResolvedConfig, s: DriveSettings, capacity: number): Uint8Array {
  const w = new Uint16Array(256);
  const g = cfg.geometry;
  w[0] = 0x0040; // fixed device
  w[1] = Math.min(g.cylinders, 16383);
  w[3] = g.heads;
  w[6] = g.sectors;
  putString(w, 10, 20, cfg.serial);
  putString(w, 23, 8, cfg.firmware);
  putString(w, 27, 40, cfg.model);
  w[47] = 0x8000 | cfg.maxMultiple;
  w[53] = 1; // words 54-58 valid
  const c = s.chs;
  w[54] = Math.min(c.cylinders, 0xffff);
  w[55] = c.heads;
  w[56] = c.sectors;
  const chsCapacity = Math.min(w[54] * c.heads * c.sectors, 0xffffffff);
  w[57] = chsCapacity & 0xffff;
  w[58] = chsCapacity >>> 16;
  w[59] = s.multipleCount > 0 ? 0x0100 | s.multipleCount : 0;
  const lba28 = Math.min(capacity, LBA28_LIMIT);
  w[60] = lba28 & 0xffff;
  w[61] = lba28 >>> 16;
  putTransport(w, cfg, s);
  if (cfg.discard) w[69] = 1 << 14 | (cfg.discardZeroes ? 1 << 5 : 0); // deterministic (zeroed) read after TRIM
  w[80] = MAJOR_VERSIONS;
  w[81] = 0;
  // 82/85: SMART, power management, write cache, look-ahead, NOP (which always aborts, as specified)
  w[82] = 1 << 0 | 1 << 3 | 1 << 5 | 1 << 6 | 1 << 14;
  w[85] = (s.smartEnabled ? 1 << 0 : 0) | 1 << 3 | (s.writeCache ? 1 << 5 : 0) | (s.lookAhead ? 1 << 6 : 0) | 1 << 14;
  // 83/86: LBA48, FLUSH CACHE, FLUSH CACHE EXT
  w[83] = 1 << 14 | 1 << 13 | 1 << 12 | 1 << 10;
  w[86] = 1 << 13 | 1 << 12 | 1 << 10;
  // 84/87: general purpose logging (READ LOG EXT with the log directory)
  w[84] = 1 << 14 | 1 << 5;
  w[87] = 1 << 14 | 1 << 5;
  w[100] = capacity & 0xffff;
  w[101] = Math.floor(capacity / 0x10000) & 0xffff;
  w[102] = Math.floor(capacity / 0x100000000) & 0xffff;
  w[103] = Math.floor(capacity / 0x1000000000000) & 0xffff;
  if (cfg.discard) {
    w[105] = cfg.maxDsmBlocks;
    w[169] = 1; // DATA SET MANAGEMENT / TRIM
  }
  w[217] = cfg.nonRotational ? 1 : cfg.rotationRate;
  putChecksum(w);
  return wordsToBytes(w);
}

/** IDENTIFY PACKET DEVICE for a CD/DVD drive. */
export function identifyPacketDevice(cfg: ResolvedConfig, s: DriveSettings): Uint8Array {
  const w = new Uint16Array(256);
  // ATAPI, CD/DVD (type 05h), removable, DRQ within 50 µs of PACKET, 12-byte packets
  w[0] = 2 << 14 | 5 << 8 | 1 << 7 | 2 << 5;
  putString(w, 10, 20, cfg.serial);
  putString(w, 23, 8, cfg.firmware);
  putString(w, 27, 40, cfg.model);
  putTransport(w, cfg, s);
  w[80] = MAJOR_VERSIONS;
  // 82/85: power management, PACKET, DEVICE RESET, NOP
  w[82] = 1 << 3 | 1 << 4 | 1 << 9 | 1 << 14;
  w[85] = w[82];
  w[83] = 1 << 14;
  w[84] = 1 << 14;
  w[87] = 1 << 14;
  putChecksum(w);
  return wordsToBytes(w);
}
