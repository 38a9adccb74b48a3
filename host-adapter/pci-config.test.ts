import { describe, expect, it } from "vitest";
import type { PciFunctionSpec, RegionHandler } from "./host.js";
import {
  CMD_BUS_MASTER,
  CMD_INTX_DISABLE,
  CMD_IO,
  CMD_MEMORY,
  CMD_PARITY,
  CMD_SERR,
  PCI_BAR0,
  PCI_CAP_PTR,
  PCI_COMMAND,
  PCI_HEADER_TYPE,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_STATUS,
  PciConfigSpace,
  STATUS_CAP_LIST,
  STATUS_INTERRUPT,
} from "./pci-config.js";

const regs: RegionHandler = { read: () => 0, write: () => {} };
const MEM_BASE = 0xf000_0000;

function spec(extra: Partial<PciFunctionSpec> = {}): PciFunctionSpec {
  return {
    name: "t",
    vendorId: 0x8086,
    deviceId: 0x2922,
    classCode: 0x010601,
    revision: 0x02,
    interruptPin: 1,
    bars: [
      { kind: "io", size: 32, handler: regs },
      { kind: "memory", size: 4096, handler: regs },
      undefined,
      { kind: "memory", size: 8, handler: regs },
    ],
    ...extra,
  };
}

function make(extra: Partial<PciFunctionSpec> = {}): PciConfigSpace {
  return new PciConfigSpace(spec(extra), [undefined, MEM_BASE, undefined, MEM_BASE + 0x1000]);
}

describe("PciConfigSpace identity and header", () => {
  it("builds the header from the spec", () => {
    const c = make({ subsystemId: 0x1100, multifunction: true });
    expect(c.read(0x00, 4)).toBe(0x2922_8086);
    expect(c.read(0x08, 4)).toBe(0x0106_0102);
    expect(c.read(PCI_HEADER_TYPE, 1)).toBe(0x80);
    expect(c.read(0x2c, 4)).toBe(0x1100_8086);
    expect(c.read(PCI_INTERRUPT_PIN, 1)).toBe(1);
  });

  it("keeps IDs, class, revision, header type, subsystem and pin read-only", () => {
    const c = make();
    const before = [0x00, 0x08, 0x0c, 0x2c, 0x3c].map((o) => c.read(o, 4));
    for (const off of [0x00, 0x08, 0x2c]) c.write(off, 4, 0xffff_ffff);
    c.write(PCI_HEADER_TYPE, 1, 0xff);
    c.write(PCI_INTERRUPT_PIN, 1, 0x04);
    expect(c.read(0x00, 4)).toBe(before[0]);
    expect(c.read(0x08, 4)).toBe(before[1]);
    expect(c.read(PCI_HEADER_TYPE, 1)).toBe(0);
    expect(c.read(0x2c, 4)).toBe(before[3]);
    expect(c.read(PCI_INTERRUPT_PIN, 1)).toBe(1);
  });

  it("lets the guest write cache line, latency timer and interrupt line", () => {
    const c = make();
    c.write(0x0c, 2, 0x4010);
    c.write(PCI_INTERRUPT_LINE, 1, 11);
    expect(c.read(0x0c, 2)).toBe(0x4010);
    expect(c.read(PCI_INTERRUPT_LINE, 1)).toBe(11);
  });

  it("reads all-ones outside the 256 bytes and ignores writes there", () => {
    const c = make();
    expect(c.read(0xfe, 4)).toBe(0xffff_ffff);
    expect(c.read(0x100, 2)).toBe(0xffff);
    expect(c.read(-1, 1)).toBe(0xff);
    expect(c.write(0xfe, 4, 0)).toEqual({ barsChanged: [], commandChanged: false });
  });
});

describe("PciConfigSpace command and status", () => {
  it("stores only the implemented command bits", () => {
    const c = make();
    const writable = CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | CMD_PARITY | CMD_SERR | CMD_INTX_DISABLE;
    expect(c.write(PCI_COMMAND, 2, 0xffff).commandChanged).toBe(true);
    expect(c.read(PCI_COMMAND, 2)).toBe(writable);
    expect(c.intxDisabled).toBe(true);
    c.write(PCI_COMMAND, 1, 0x00); // low byte only
    expect(c.read(PCI_COMMAND, 2)).toBe(writable & 0xff00);
    expect(c.write(PCI_COMMAND, 2, writable & 0xff00).commandChanged).toBe(false);
  });

  it("clears error status bits by writing 1, and only those", () => {
    const c = make();
    c.set(PCI_STATUS, 2, 0xf900 | STATUS_CAP_LIST);
    c.setInterruptStatus(true);
    c.write(PCI_STATUS, 2, 0); // writing 0 changes nothing
    expect(c.read(PCI_STATUS, 2)).toBe(0xf900 | STATUS_CAP_LIST | STATUS_INTERRUPT);
    c.write(PCI_STATUS, 2, 0x2100); // clear received master abort and master data parity error
    expect(c.read(PCI_STATUS, 2)).toBe(0xd800 | STATUS_CAP_LIST | STATUS_INTERRUPT);
    c.write(PCI_STATUS, 2, 0xffff); // interrupt status and capability list are read-only
    expect(c.read(PCI_STATUS, 2)).toBe(STATUS_CAP_LIST | STATUS_INTERRUPT);
  });

  it("applies W1C on a dword write that covers command and status", () => {
    const c = make();
    c.set(PCI_STATUS, 2, 0x2000);
    c.write(PCI_COMMAND, 4, 0x2000_0000 | CMD_IO);
    expect(c.read(PCI_COMMAND, 4)).toBe(CMD_IO);
  });

  it("mirrors the INTx level in status bit 3 without touching other bits", () => {
    const c = make();
    c.set(PCI_STATUS, 2, 0x0100);
    c.setInterruptStatus(true);
    expect(c.read(PCI_STATUS, 2)).toBe(0x0100 | STATUS_INTERRUPT);
    c.setInterruptStatus(false);
    expect(c.read(PCI_STATUS, 2)).toBe(0x0100);
  });
});

describe("PciConfigSpace BARs", () => {
  it("answers the sizing write with ~(size-1) | type", () => {
    const c = make();
    for (let i = 0; i < 6; i++) c.write(PCI_BAR0 + 4 * i, 4, 0xffff_ffff);
    expect(c.read(PCI_BAR0, 4)).toBe(0xffff_ffe1); // 32-byte I/O
    expect(c.read(PCI_BAR0 + 4, 4)).toBe(0xffff_f000); // 4 KiB memory
    expect(c.read(PCI_BAR0 + 8, 4)).toBe(0); // not implemented
    expect(c.read(PCI_BAR0 + 12, 4)).toBe(0xffff_fff0); // 8 bytes rounded up to 16
    expect(c.read(PCI_BAR0 + 16, 4)).toBe(0);
  });

  it("relocates an I/O BAR and decodes it only with I/O enabled", () => {
    const c = make();
    expect(c.read(PCI_BAR0, 4)).toBe(1);
    expect(c.barBase(0)).toBeUndefined(); // unassigned
    expect(c.write(PCI_BAR0, 4, 0xc01f).barsChanged).toEqual([0]); // low bits below the size are dropped
    expect(c.read(PCI_BAR0, 4)).toBe(0xc001);
    expect(c.barBase(0)).toBeUndefined(); // I/O decoding off
    c.write(PCI_COMMAND, 2, CMD_IO);
    expect(c.barBase(0)).toBe(0xc000);
    c.write(PCI_BAR0, 2, 0xd000); // 16-bit write moves it too
    expect(c.barBase(0)).toBe(0xd000);
    c.write(PCI_BAR0, 4, 0xffff_ffff);
    expect(c.barBase(0)).toBeUndefined(); // sizing pattern
    c.write(PCI_BAR0, 4, 0xffe0); // the last 32 ports: still inside I/O space
    expect(c.barBase(0)).toBe(0xffe0);
    c.write(PCI_BAR0, 4, 0x1_0000); // beyond 64 KiB of I/O space
    expect(c.barBase(0)).toBeUndefined();
  });

  it("reverts any memory BAR write but the sizing pattern to the fixed base", () => {
    const c = make();
    const off = PCI_BAR0 + 4;
    expect(c.read(off, 4)).toBe(MEM_BASE);
    expect(c.write(off, 4, 0xfebf_0000).barsChanged).toEqual([]);
    expect(c.read(off, 4)).toBe(MEM_BASE);
    c.write(PCI_COMMAND, 2, CMD_MEMORY);
    expect(c.barBase(1)).toBe(MEM_BASE);
    c.write(off, 4, 0xffff_ffff);
    expect(c.read(off, 4)).toBe(0xffff_f000);
    expect(c.barBase(1)).toBeUndefined(); // holds the sizing pattern: not decoded at the fixed base
    c.write(PCI_COMMAND, 2, CMD_MEMORY | CMD_IO); // unrelated write keeps the sizing pattern
    expect(c.read(off, 4)).toBe(0xffff_f000);
    expect(c.write(off, 4, 0).barsChanged).toEqual([1]);
    expect(c.read(off, 4)).toBe(MEM_BASE);
    expect(c.barBase(1)).toBe(MEM_BASE);
    c.write(PCI_COMMAND, 2, 0);
    expect(c.barBase(1)).toBeUndefined();
  });

  it("rejects a BAR size that is not a power of two and a misaligned memory base", () => {
    expect(() => new PciConfigSpace(spec({ bars: [{ kind: "io", size: 24, handler: regs }] }), [])).toThrow(/power of two/);
    expect(() => new PciConfigSpace(spec({ bars: [{ kind: "memory", size: 0x2000, handler: regs }] }), [MEM_BASE + 0x1000])).toThrow(
      /aligned/,
    );
    expect(() => new PciConfigSpace(spec({ bars: [{ kind: "memory", size: 0x2000, handler: regs }] }), [])).toThrow(/aligned/);
  });
});

describe("PciConfigSpace device registers", () => {
  const extra = {
    offset: 0x40,
    initial: Uint8Array.of(0x50, 0x00, 0xa5, 0x0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00),
    writeMask: Uint8Array.of(0x00, 0x00, 0xf0, 0x00),
    w1cMask: Uint8Array.of(0x00, 0x00, 0x00, 0x0f),
    capabilityPointer: 0x50,
  };

  it("applies the device's write and W1C masks and announces the capability list", () => {
    const c = make({ extraConfig: extra });
    expect(c.read(PCI_CAP_PTR, 1)).toBe(0x50);
    expect(c.read(PCI_STATUS, 2) & STATUS_CAP_LIST).toBe(STATUS_CAP_LIST);
    c.write(0x40, 4, 0x005a_ffff);
    expect(c.read(0x40, 4)).toBe(0x0f55_0050); // only the high nibble of 0x42 changed
    c.write(0x43, 1, 0x05);
    expect(c.read(0x43, 1)).toBe(0x0a);
    c.write(PCI_CAP_PTR, 1, 0x60);
    expect(c.read(PCI_CAP_PTR, 1)).toBe(0x50);
  });

  it("refuses device registers inside the standard header", () => {
    expect(() => make({ extraConfig: { offset: 0x3c, initial: new Uint8Array(4) } })).toThrow(/0x40/);
    expect(() => make({ extraConfig: { offset: 0xfe, initial: new Uint8Array(4) } })).toThrow(/0x40/);
  });
});

describe("PciConfigSpace reset", () => {
  it("returns every register to its power-on value", () => {
    const c = make({ extraConfig: { offset: 0x40, initial: Uint8Array.of(1, 2), writeMask: Uint8Array.of(0xff, 0xff) } });
    const powerOn = c.bytes.slice();
    c.write(PCI_COMMAND, 2, 0xffff);
    c.write(PCI_BAR0, 4, 0xc000);
    c.write(PCI_BAR0 + 4, 4, 0xffff_ffff);
    c.write(PCI_INTERRUPT_LINE, 1, 10);
    c.write(0x40, 2, 0xbeef);
    c.set(PCI_STATUS, 2, 0x8000);
    c.setInterruptStatus(true);
    c.reset();
    expect(c.bytes).toEqual(powerOn);
    expect(c.barBase(0)).toBeUndefined();
    expect(c.intxDisabled).toBe(false);
  });
});
