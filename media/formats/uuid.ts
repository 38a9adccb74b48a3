/**
 * UUIDs as image formats store them. VirtualBox writes an IPRT `RTUUID` as raw bytes in the
 * Microsoft GUID layout: the first three fields (u32, u16, u16) little-endian, the last eight
 * bytes as they are. We keep UUIDs as canonical lower-case strings ("0e3d...-...") in memory,
 * the same text VBoxManage prints, and convert only at the byte boundary.
 */

export const NULL_UUID = "00000000-0000-0000-0000-000000000000";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isUuid(text: string): boolean {
  return UUID_RE.test(text);
}

export function isNullUuid(text: string): boolean {
  return text === NULL_UUID;
}

const hex2 = (b: number): string => b.toString(16).padStart(2, "0");

/** Canonical text of the 16 GUID-layout bytes at `bytes[offset..offset+16)`. */
export function uuidFromGuidBytes(bytes: Uint8Array, offset = 0): string {
  const b = (i: number): string => hex2(bytes[offset + i]!);
  return (
    b(3) + b(2) + b(1) + b(0) + "-" + b(5) + b(4) + "-" + b(7) + b(6) + "-" +
    b(8) + b(9) + "-" + b(10) + b(11) + b(12) + b(13) + b(14) + b(15)
  );
}

/** Write `uuid` into `out[offset..offset+16)` in GUID layout. Throws on malformed text. */
export function uuidToGuidBytes(uuid: string, out: Uint8Array, offset = 0): void {
  if (!isUuid(uuid)) throw new TypeError(`not a UUID: ${JSON.stringify(uuid)}`);
  const h = uuid.replace(/-/g, "");
  const byte = (i: number): number => parseInt(h.slice(2 * i, 2 * i + 2), 16);
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  for (let i = 0; i < 16; i++) out[offset + i] = byte(order[i]!);
}

type RandomSource = { getRandomValues(array: Uint8Array): Uint8Array };

/** A random (version 4) UUID from the platform's CSPRNG (Web Crypto, present in Node and browsers). */
export function randomUuid(): string {
  const source = (globalThis as unknown as { crypto?: RandomSource }).crypto;
  if (!source) throw new Error("no crypto.getRandomValues on this platform");
  const r = source.getRandomValues(new Uint8Array(16));
  r[6] = (r[6]! & 0x0f) | 0x40;
  r[8] = (r[8]! & 0x3f) | 0x80;
  const h = Array.from(r, hex2).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
