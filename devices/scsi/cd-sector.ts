/**
 * CD-ROM sector arithmetic (ECMA-130): MSF addresses, and the 2352-byte Mode 1 sector a drive
 * would read off a pressed disc, synthesised from the 2048 bytes of user data an ISO image holds.
 *
 *   0x000  12  sync: 00 FF*10 00
 *   0x00C   4  header: minute, second, frame (BCD, absolute time), mode (01)
 *   0x010 2048 user data
 *   0x810   4  EDC: CRC-32 of bytes 0x000..0x80F, polynomial (x^16+x^15+x^2+1)(x^16+x^2+x+1),
 *              least significant bit first, stored least significant byte first (ECMA-130 14.3)
 *   0x814   8  zero
 *   0x81C 172  P parity  \  RSPC: Reed-Solomon product code over GF(2^8), field polynomial
 *   0x8C8 104  Q parity  /  x^8+x^4+x^3+x^2+1 (ECMA-130 annex A)
 *
 * For the parity, bytes 0x00C..0x92F are taken as 1170 16-bit words S(0..1169), each word split
 * into two independent byte planes. P: 43 columns per plane, each the vector S(43k + c) for
 * k = 0..25 — a (26,24) code whose parity words are rows 24 and 25. Q: 26 diagonals per plane,
 * S((44m + 43d) mod 1118) for m = 0..42 followed by S(1118 + d) and S(1144 + d) — a (45,43) code
 * over the header, data and P parity. Every vector V satisfies H·V = 0 with
 * H = [1 1 ... 1; α^(n-1) ... α 1], α the primitive element (x).
 */

/** Bytes of a raw CD sector. */
export const RAW_SECTOR_SIZE = 2352;
/** User data bytes of a Mode 1 (and Mode 2 Form 1) sector. */
export const USER_DATA_SIZE = 2048;
/** Frames (sectors) per second. */
export const FRAMES_PER_SECOND = 75;
/** LBA 0 is at MSF 00:02:00: the 2-second pregap of track 1. */
export const MSF_LBA_OFFSET = 150;
/** Highest LBA a header can address (99:59:74). */
export const MAX_MSF_LBA = (99 * 60 + 59) * FRAMES_PER_SECOND + 74 - MSF_LBA_OFFSET;

export const OFFSET = { SYNC: 0x000, HEADER: 0x00c, USER_DATA: 0x010, EDC: 0x810, ZERO: 0x814, P_PARITY: 0x81c, Q_PARITY: 0x8c8 } as const;

export interface Msf {
  m: number;
  s: number;
  f: number;
}

/** Absolute time of an LBA (binary fields, as MMC commands and responses carry them). */
export function lbaToMsf(lba: number): Msf {
  const t = Math.max(0, lba + MSF_LBA_OFFSET);
  return { m: Math.floor(t / (60 * FRAMES_PER_SECOND)), s: Math.floor(t / FRAMES_PER_SECOND) % 60, f: t % FRAMES_PER_SECOND };
}

export function msfToLba(m: number, s: number, f: number): number {
  return (m * 60 + s) * FRAMES_PER_SECOND + f - MSF_LBA_OFFSET;
}

export function toBcd(n: number): number {
  return Math.floor(n / 10) % 10 << 4 | n % 10;
}

// ---- EDC ------------------------------------------------------------------------------------

/** Carry-less product of two polynomials given as bit masks (bit i = coefficient of x^i). */
function polyMul(a: bigint, b: bigint): bigint {
  let r = 0n;
  for (let i = 0n; b >> i; i++) if (b >> i & 1n) r ^= a << i;
  return r;
}

/** The EDC generator x^32 + ... as the 32-bit reflected constant a right-shifting CRC uses. */
const EDC_POLY_REFLECTED = ((): number => {
  const p = polyMul(0x18005n /* x^16+x^15+x^2+1 */, 0x10007n /* x^16+x^2+x+1 */);
  let r = 0;
  for (let i = 0; i < 32; i++) if (p >> BigInt(i) & 1n) r |= 1 << (31 - i);
  return r >>> 0;
})();

const EDC_TABLE = ((): Uint32Array => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1 ^ EDC_POLY_REFLECTED) >>> 0 : c >>> 1;
    t[i] = c;
  }
  return t;
})();

/** The CD-ROM EDC of `data` (initial value 0, no final inversion). */
export function edc(data: Uint8Array): number {
  let c = 0;
  for (let i = 0; i < data.length; i++) c = (c >>> 8 ^ EDC_TABLE[(c ^ data[i]!) & 0xff]!) >>> 0;
  return c;
}

// ---- ECC (RSPC) -----------------------------------------------------------------------------

/** Multiplication by α in GF(2^8) mod x^8+x^4+x^3+x^2+1. */
const MUL_ALPHA = new Uint8Array(256);
/** Division by α+1: DIV_ALPHA1[x·(α+1)] = x. */
const DIV_ALPHA1 = new Uint8Array(256);
for (let x = 0; x < 256; x++) {
  const ax = (x << 1 ^ (x & 0x80 ? 0x11d : 0)) & 0xff;
  MUL_ALPHA[x] = ax;
  DIV_ALPHA1[ax ^ x] = x;
}

/** Offsets (from the sector start) of the data bytes of every P and Q vector, and of their two parity bytes. */
interface CodeLayout {
  vectors: number;
  dataLength: number;
  /** vectors × dataLength byte offsets. */
  data: Uint16Array;
  parity0: Uint16Array;
  parity1: Uint16Array;
}

const WORD_BASE = OFFSET.HEADER;

function layout(vectors: number, dataLength: number, dataWord: (v: number, k: number) => number, parityWord: (v: number, which: 0 | 1) => number): CodeLayout {
  const data = new Uint16Array(vectors * 2 * dataLength);
  const parity0 = new Uint16Array(vectors * 2);
  const parity1 = new Uint16Array(vectors * 2);
  let i = 0;
  for (let plane = 0; plane < 2; plane++) {
    for (let v = 0; v < vectors; v++) {
      const n = plane * vectors + v;
      for (let k = 0; k < dataLength; k++) data[i++] = WORD_BASE + 2 * dataWord(v, k) + plane;
      parity0[n] = WORD_BASE + 2 * parityWord(v, 0) + plane;
      parity1[n] = WORD_BASE + 2 * parityWord(v, 1) + plane;
    }
  }
  return { vectors: vectors * 2, dataLength, data, parity0, parity1 };
}

const P_LAYOUT = layout(43, 24, (c, k) => 43 * k + c, (c, which) => 43 * (24 + which) + c);
const Q_LAYOUT = layout(26, 43, (d, m) => (44 * m + 43 * d) % 1118, (d, which) => 1118 + 26 * which + d);

/**
 * Parity (p0, p1) of one vector with data d_0..d_{k-1}: from H·V = 0,
 *   p0 + p1 = A            where A = Σ d_i
 *   α·p0 + p1 = α²·Hk      where Hk = Σ α^(k-1-i) d_i (Horner)
 * so p0 = (A + α²·Hk) / (α + 1) and p1 = A + p0.
 */
function encode(sector: Uint8Array, code: CodeLayout): void {
  const { data, dataLength, parity0, parity1 } = code;
  let i = 0;
  for (let n = 0; n < code.vectors; n++) {
    let a = 0;
    let h = 0;
    for (let k = 0; k < dataLength; k++) {
      const d = sector[data[i++]!]!;
      a ^= d;
      h = MUL_ALPHA[h]! ^ d;
    }
    const p0 = DIV_ALPHA1[a ^ MUL_ALPHA[MUL_ALPHA[h]!]!]!;
    sector[parity0[n]!] = p0;
    sector[parity1[n]!] = a ^ p0;
  }
}

/** Fill in the P and Q parity of a raw sector whose header, data, EDC and zero fields are set. */
export function computeEcc(sector: Uint8Array): void {
  encode(sector, P_LAYOUT);
  encode(sector, Q_LAYOUT);
}

// ---- Mode 1 sector --------------------------------------------------------------------------

/**
 * Write the raw Mode 1 sector at `lba` (0..MAX_MSF_LBA) holding `user` (2048 bytes) into
 * `out` (2352 bytes).
 */
export function encodeMode1Sector(lba: number, user: Uint8Array, out: Uint8Array): void {
  if (out.length < RAW_SECTOR_SIZE || user.length < USER_DATA_SIZE) throw new RangeError("raw sector buffers too small");
  if (!Number.isInteger(lba) || lba < 0 || lba > MAX_MSF_LBA) throw new RangeError(`LBA ${lba} has no MSF header`);
  out.fill(0, 0, RAW_SECTOR_SIZE);
  out.fill(0xff, 1, 11);
  const { m, s, f } = lbaToMsf(lba);
  out[OFFSET.HEADER] = toBcd(m);
  out[OFFSET.HEADER + 1] = toBcd(s);
  out[OFFSET.HEADER + 2] = toBcd(f);
  out[OFFSET.HEADER + 3] = 0x01;
  out.set(user.subarray(0, USER_DATA_SIZE), OFFSET.USER_DATA);
  const e = edc(out.subarray(0, OFFSET.EDC));
  out[OFFSET.EDC] = e & 0xff;
  out[OFFSET.EDC + 1] = e >>> 8 & 0xff;
  out[OFFSET.EDC + 2] = e >>> 16 & 0xff;
  out[OFFSET.EDC + 3] = e >>> 24 & 0xff;
  computeEcc(out);
}

/** A fresh raw Mode 1 sector. */
export function mode1Sector(lba: number, user: Uint8Array): Uint8Array {
  const out = new Uint8Array(RAW_SECTOR_SIZE);
  encodeMode1Sector(lba, user, out);
  return out;
}
