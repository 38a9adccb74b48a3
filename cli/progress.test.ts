import { describe, expect, it } from "vitest";
import { progress, type ProgressStream } from "./progress.js";

function sink(isTTY: boolean): ProgressStream & { text: string } {
  return {
    text: "",
    isTTY,
    columns: 120,
    write(t: string) {
      this.text += t;
      return true;
    },
  };
}

describe("progress", () => {
  it("prints nothing for work quicker than the delay", () => {
    let t = 0;
    for (const tty of [false, true]) {
      const s = sink(tty);
      const p = progress("Compacting", { stream: s, now: () => t, delayMs: 1000, enabled: true });
      for (let i = 1; i <= 100; i++) {
        t += 5;
        p.update(i, 100, "reading blocks");
      }
      p.finish();
      expect(s.text).toBe("");
    }
  });

  it("without a terminal: one line per 10% step once the delay is over, per phase", () => {
    let t = 0;
    const s = sink(false);
    const p = progress("Compacting", { stream: s, now: () => t, delayMs: 1000, enabled: true });
    for (let i = 1; i <= 1000; i++) {
      t += 2; // 2 s in all: the first half is quiet
      p.update(i, 1000, "reading blocks");
    }
    for (let i = 1; i <= 3; i++) p.update(i, 3, "moving blocks");
    p.finish();
    const lines = s.text.trim().split("\n");
    expect(lines[0]).toBe("Compacting: reading blocks  50% (500/1000)");
    expect(lines.slice(0, 6).map((l) => l.match(/(\d+)%/)![1])).toEqual(["50", "60", "70", "80", "90", "100"]);
    expect(lines.slice(6)).toEqual(["Compacting: moving blocks  33% (1/3)", "Compacting: moving blocks  66% (2/3)", "Compacting: moving blocks 100% (3/3)"]);
    expect(s.text).not.toContain("\r");
  });

  it("on a terminal: one line redrawn with \\r at most every 100 ms, cleared at the end", () => {
    let t = 0;
    const s = sink(true);
    const p = progress("Resizing", { stream: s, now: () => t, delayMs: 0, enabled: true });
    for (let i = 1; i <= 100; i++) {
      t += 10;
      p.update(i, 100, "moving blocks");
    }
    expect(s.text).not.toContain("\n");
    const draws = s.text.split("\r").filter(Boolean);
    expect(draws.length).toBeGreaterThanOrEqual(9);
    expect(draws.length).toBeLessThanOrEqual(12);
    expect(draws.at(-1)).toBe(`Resizing: moving blocks [${"#".repeat(30)}] 100% (100/100)`);
    p.finish();
    expect(s.text.endsWith(`\r${" ".repeat(draws.at(-1)!.length)}\r`)).toBe(true);
  });

  it("can be turned off", () => {
    const s = sink(false);
    const p = progress("Compacting", { stream: s, delayMs: 0, enabled: false });
    p.update(1, 1, "reading blocks");
    p.finish();
    expect(s.text).toBe("");
  });
});
