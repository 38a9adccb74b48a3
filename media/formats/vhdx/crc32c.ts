/**
 * CRC-32C (Castagnoli): the checksum of every VHDX header, region table and log entry.
 * Reflected polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF. Table driven,
 * eight bytes per step (slicing by 8): the largest thing checksummed at open is a 64 KiB table.
 */

const POLY = 0x82f63b78;
const TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = [];
  const t0 = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t0[n] = c >>> 0;
  }
  t.push(t0);
  for (let s = 1; s < 8; s++) {
    const prev = t[s - 1]!;
    const cur = new Uint32Array(256);
    for (let n = 0; n < 256; n++) cur[n] = (prev[n]! >>> 8) ^ t0[prev[n]! & 0xff]!;
    t.push(cur);
  }
  return t;
})();

/** Continue a CRC-32C over `data` (pass the previous result as `crc` to chain; 0 to start). */
export function crc32c(data: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let c = ~crc >>> 0;
  let i = 0;
  const n = data.length;
  for (; i + 8 <= n; i += 8) {
    const a = (c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0;
    c =
      t7[a & 0xff]! ^ t6[(a >>> 8) & 0xff]! ^ t5[(a >>> 16) & 0xff]! ^ t4[a >>> 24]! ^
      t3[data[i + 4]!]! ^ t2[data[i + 5]!]! ^ t1[data[i + 6]!]! ^ t0[data[i + 7]!]!;
  }
  for (; i < n; i++) c = (c >>> 8) ^ t0[(c ^ data[i]!) & 0xff]!;
  return ~c >>> 0;
}

/**
 * The checksum VHDX stores in a structure: CRC-32C of `bytes` with the 4-byte checksum field at
 * `at` taken as zero (the buffer is not modified).
 */
export function vhdxChecksum(bytes: Uint8Array, at = 4): number {
  let c = crc32c(bytes.subarray(0, at));
  c = crc32c(new Uint8Array(4), c);
  return crc32c(bytes.subarray(at + 4), c);
}
