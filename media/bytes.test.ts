import { describe, expect, it } from "vitest";
import { isZero } from "./bytes.js";

describe("isZero", () => {
  it("finds a single non-zero byte anywhere, at any alignment and length", () => {
    const backing = new Uint8Array(400);
    for (let off = 0; off < 8; off++) {
      for (let len = 0; len <= 300; len += len < 80 ? 1 : 37) {
        const b = backing.subarray(off, off + len);
        expect(isZero(b)).toBe(true);
        for (let p = 0; p < len; p++) {
          b[p] = p % 2 ? 0x80 : 1;
          if (isZero(b)) throw new Error(`missed byte ${p} of ${len} at offset ${off}`);
          b[p] = 0;
        }
      }
    }
  });

  it("looks only inside the view", () => {
    const backing = new Uint8Array(256).fill(7);
    backing.fill(0, 3, 133);
    expect(isZero(backing.subarray(3, 133))).toBe(true);
    expect(isZero(backing.subarray(2, 133))).toBe(false);
    expect(isZero(backing.subarray(3, 134))).toBe(false);
  });

  it("handles large buffers (the 64-byte steps and the word tail)", () => {
    const b = new Uint8Array((1 << 20) + 12);
    expect(isZero(b)).toBe(true);
    for (const p of [0, 63, 64, 1 << 19, (1 << 20) + 3, (1 << 20) + 11]) {
      b[p] = 0xff;
      expect(isZero(b)).toBe(false);
      b[p] = 0;
    }
  });
});
