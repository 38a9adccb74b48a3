import { describe, expect, it } from "vitest";
import { checkInternals, V86CompatibilityError, type V86Emulator } from "./internals.js";

/** The smallest object that looks like the npm v86 build's internals to checkInternals. */
function fakeEmulator(): { emulator: V86Emulator; cpu: Record<string, unknown> } {
  const fn = () => 0;
  const pci = {
    register_device: fn, pci_write8: fn, pci_write16: fn, pci_write32: fn, pci_query: fn,
    devices: [], device_spaces: [], isa_bridge_space8: new Uint8Array(256),
  };
  const io = { ports: new Array(0x10000).fill({}), create_empty_entry: fn, mmap_register: fn };
  const cpu: Record<string, unknown> = {
    io, devices: { pci }, memory_size: new Uint32Array([128 << 20]),
    device_raise_irq: fn, device_lower_irq: fn, read_blob: fn, write_blob: fn, read32s: fn, write32: fn,
    run_hardware_timers: fn, reboot_internal: fn, get_state: fn, set_state: fn,
  };
  return { emulator: { v86: { cpu: cpu as never }, add_listener: fn }, cpu };
}

describe("checkInternals", () => {
  it("accepts a build that has everything", () => {
    const { emulator } = fakeEmulator();
    expect(() => checkInternals(emulator)).not.toThrow();
  });

  it.each(["write_blob", "run_hardware_timers", "reboot_internal", "get_state"])("names a missing cpu.%s", (name) => {
    const { emulator, cpu } = fakeEmulator();
    delete cpu[name];
    expect(() => checkInternals(emulator)).toThrow(V86CompatibilityError);
    expect(() => checkInternals(emulator)).toThrow(`cpu.${name}()`);
  });

  it("names missing PCI and I/O internals", () => {
    const a = fakeEmulator();
    delete ((a.cpu.devices as { pci: Record<string, unknown> }).pci).isa_bridge_space8;
    expect(() => checkInternals(a.emulator)).toThrow("pci.isa_bridge_space8");
    const b = fakeEmulator();
    delete (b.cpu.io as Record<string, unknown>).mmap_register;
    expect(() => checkInternals(b.emulator)).toThrow("cpu.io.mmap_register()");
    expect(() => checkInternals({ add_listener: () => 0 })).toThrow("emulator.v86.cpu");
  });
});
