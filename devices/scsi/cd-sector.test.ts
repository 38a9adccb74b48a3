/**
 * The raw Mode 1 sector generator against a slow reference written separately from ECMA-130:
 * the EDC as a bit-serial division by the generator polynomial as the standard writes it, the
 * P/Q parity by brute-force search for the two parity bytes that make both syndromes of each
 * vector zero, with GF(2^8) products done by shift-and-add. Neither shares a table or a formula
 * with cd-sector.ts.
 */
import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { edc, encodeMode1Sector, lbaToMsf, MAX_MSF_LBA, mode1Sector, msfToLba, OFFSET, RAW_SECTOR_SIZE, toBcd } from "./cd-sector.js";

// ---- reference ---------------------------------------------------------------------------------

/** ECMA-130 14.3: P(x) = (x^16 + x^15 + x^2 + 1)(x^16 + x^2 + x + 1), written out. */
const EDC_EXPONENTS = [32, 31, 16, 15, 4, 3, 1, 0];

/**
 * Bit-serial EDC: the bits enter least significant bit of each byte first, the register shifts
 * left (the x^31 end out), the result's bit for x^31 is stored in bit 0 of the first EDC byte.
 */
function edcReference(data: Uint8Array): number {
  const low = EDC_EXPONENTS.filter((e) => e < 32).reduce((m, e) => (m | 1 << e) >>> 0, 0);
  let reg = 0;
  for (const byte of data) {
    for (let bit = 0; bit < 8; bit++) {
      const top = (reg >>> 31 ^ byte >> bit) & 1;
      reg = reg << 1 >>> 0;
      if (top) reg = (reg ^ low) >>> 0;
    }
  }
  let out = 0;
  for (let i = 0; i < 32; i++) if (reg >>> i & 1) out |= 1 << (31 - i);
  return out >>> 0;
}

/** GF(2^8) product modulo x^8 + x^4 + x^3 + x^2 + 1, by shift and add. */
function gfMul(a: number, b: number): number {
  let r = 0;
  for (let i = 0; i < 8; i++) {
    if (b >> i & 1) r ^= a;
    a <<= 1;
    if (a & 0x100) a ^= 0x11d;
  }
  return r & 0xff;
}

function alphaPow(k: number): number {
  let r = 1;
  for (let i = 0; i < k; i++) r = gfMul(r, 2);
  return r;
}

/** The byte positions of one vector: `words` are ECMA-130 word numbers S(n), n counted from the header. */
function positions(words: number[], plane: number): number[] {
  return words.map((w) => 12 + 2 * w + plane);
}

function pVectors(): number[][] {
  const out: number[][] = [];
  for (let plane = 0; plane < 2; plane++) {
    for (let np = 0; np < 43; np++) out.push(positions(Array.from({ length: 26 }, (_, k) => 43 * k + np), plane));
  }
  return out;
}

function qVectors(): number[][] {
  const out: number[][] = [];
  for (let plane = 0; plane < 2; plane++) {
    for (let nq = 0; nq < 26; nq++) {
      const words = Array.from({ length: 43 }, (_, mq) => (44 * mq + 43 * nq) % 1118);
      words.push(43 * 26 + nq, 44 * 26 + nq);
      out.push(positions(words, plane));
    }
  }
  return out;
}

/** Both syndromes of a vector: Σ v_i and Σ α^(n-1-i) v_i. */
function syndromes(sector: Uint8Array, vector: number[]): [number, number] {
  const n = vector.length;
  let s0 = 0;
  let s1 = 0;
  vector.forEach((pos, i) => {
    s0 ^= sector[pos]!;
    s1 ^= gfMul(alphaPow(n - 1 - i), sector[pos]!);
  });
  return [s0, s1];
}

/** Find the last two bytes of the vector by trying every value of the first parity byte. */
function solveParity(sector: Uint8Array, vector: number[]): void {
  const [p0pos, p1pos] = [vector[vector.length - 2]!, vector[vector.length - 1]!];
  for (let p0 = 0; p0 < 256; p0++) {
    sector[p0pos] = p0;
    sector[p1pos] = 0;
    const [s0] = syndromes(sector, vector);
    sector[p1pos] = s0; // makes Σ v_i zero
    if (syndromes(sector, vector)[1] === 0) return;
  }
  throw new Error("no parity solves this vector");
}

function referenceSector(lba: number, user: Uint8Array): Uint8Array {
  const s = new Uint8Array(RAW_SECTOR_SIZE);
  s.set([0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00], 0);
  const t = lba + 150;
  const bcd = (n: number): number => Number.parseInt(String(n), 16);
  s.set([bcd(Math.floor(t / 4500)), bcd(Math.floor(t / 75) % 60), bcd(t % 75), 1], 12);
  s.set(user, 16);
  const e = edcReference(s.subarray(0, 2064));
  s.set([e & 0xff, e >>> 8 & 0xff, e >>> 16 & 0xff, e >>> 24 & 0xff], 2064);
  for (const v of pVectors()) solveParity(s, v);
  for (const v of qVectors()) solveParity(s, v);
  return s;
}

function hexOf(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// ---- tests -------------------------------------------------------------------------------------

describe("MSF and BCD", () => {
  it("puts LBA 0 at 00:02:00 and converts both ways", () => {
    expect(lbaToMsf(0)).toEqual({ m: 0, s: 2, f: 0 });
    expect(lbaToMsf(16)).toEqual({ m: 0, s: 2, f: 16 });
    expect(lbaToMsf(4350)).toEqual({ m: 1, s: 0, f: 0 });
    expect(msfToLba(0, 2, 0)).toBe(0);
    expect(msfToLba(99, 59, 74)).toBe(MAX_MSF_LBA);
    for (const lba of [0, 1, 74, 75, 4499, 359_999, MAX_MSF_LBA]) {
      const t = lbaToMsf(lba);
      expect(msfToLba(t.m, t.s, t.f)).toBe(lba);
    }
    expect(toBcd(59)).toBe(0x59);
    expect(toBcd(7)).toBe(0x07);
  });
});

describe("EDC", () => {
  it("matches the bit-serial division by the ECMA-130 polynomial", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), (data) => {
        expect(edc(data)).toBe(edcReference(data));
      }),
      { numRuns: 200 },
    );
  });

  it("leaves a zero remainder when appended least significant byte first", () => {
    const data = new Uint8Array(2064).map((_, i) => i * 7 + 3);
    const e = edc(data);
    const withEdc = new Uint8Array(2068);
    withEdc.set(data);
    withEdc.set([e & 0xff, e >>> 8 & 0xff, e >>> 16 & 0xff, e >>> 24 & 0xff], 2064);
    expect(edc(withEdc)).toBe(0);
    expect(edc(new Uint8Array(100))).toBe(0); // linear, no initial or final inversion
  });
});

describe("raw Mode 1 sector", () => {
  it("has the sync pattern, BCD header and user data at their offsets", () => {
    const user = new Uint8Array(2048).map((_, i) => i & 0xff);
    const s = mode1Sector(4500 - 150 + 75 * 12 + 34, user); // 01:12:34
    expect(Array.from(s.subarray(0, 12))).toEqual([0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0]);
    expect(Array.from(s.subarray(12, 16))).toEqual([0x01, 0x12, 0x34, 0x01]);
    expect(s.subarray(16, 2064)).toEqual(user);
    expect(Array.from(s.subarray(OFFSET.ZERO, OFFSET.P_PARITY))).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it("equals the slow reference for zero data at 00:02:00 (and that vector is pinned)", () => {
    const s = mode1Sector(0, new Uint8Array(2048));
    const ref = referenceSector(0, new Uint8Array(2048));
    expect(hexOf(s)).toBe(hexOf(ref));
    // Pinned from the reference above, so a change in either shows up here.
    expect(hexOf(s.subarray(OFFSET.HEADER, OFFSET.HEADER + 4))).toBe("00020001");
    expect(hexOf(s.subarray(OFFSET.EDC, OFFSET.EDC + 4))).toBe(PINNED.edc);
    expect(hexOf(s.subarray(OFFSET.P_PARITY, OFFSET.P_PARITY + 8))).toBe(PINNED.p);
    expect(hexOf(s.subarray(OFFSET.Q_PARITY, OFFSET.Q_PARITY + 8))).toBe(PINNED.q);
    expect(createHash("sha256").update(s).digest("hex")).toBe(PINNED.sha256);
  });

  it("equals the slow reference for random data at random addresses", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX_MSF_LBA }), fc.uint8Array({ minLength: 2048, maxLength: 2048 }), (lba, user) => {
        expect(hexOf(mode1Sector(lba, user))).toBe(hexOf(referenceSector(lba, user)));
      }),
      { numRuns: 6 },
    );
  });

  it("has zero syndromes on every P and Q vector, and a corrupted byte breaks them", () => {
    const s = mode1Sector(12345, new Uint8Array(2048).map((_, i) => i * 31 + 5));
    for (const v of [...pVectors(), ...qVectors()]) expect(syndromes(s, v)).toEqual([0, 0]);
    s[1000] ^= 0x40;
    const broken = [...pVectors(), ...qVectors()].filter((v) => syndromes(s, v)[0] !== 0 || syndromes(s, v)[1] !== 0);
    expect(broken.length).toBe(2); // the byte sits in one P vector and one Q vector
  });

  it("refuses addresses a header cannot carry", () => {
    const out = new Uint8Array(RAW_SECTOR_SIZE);
    expect(() => encodeMode1Sector(MAX_MSF_LBA + 1, new Uint8Array(2048), out)).toThrow(RangeError);
    expect(() => encodeMode1Sector(-1, new Uint8Array(2048), out)).toThrow(RangeError);
  });
});

/**
 * Zero user data at 00:02:00, computed by the reference above and, separately, by a third
 * formulation (the byte-stride loops of the ECM tools, in Python) while writing this test.
 */
const PINNED = {
  edc: "c513682b",
  p: "00f700f500000000",
  q: "0041000000000000",
  sha256: "b4f18ab66709c9b3fdef2721cc323e031b6728f3ca6c57b7c435c96189222250",
};
