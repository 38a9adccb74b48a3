/**
 * The parts of the npm v86 build's internals that V86Host uses, typed, and a start-up check that
 * each one exists. None of this is public v86 API (v86.d.ts exposes none of it); the package is
 * pinned to an exact version, and a build that lacks anything fails here with its name.
 */

export interface V86IoEntry {
  read8(port: number): number;
  read16(port: number): number;
  read32(port: number): number;
  write8(value: number): void;
  write16(value: number): void;
  write32(value: number): void;
  device: unknown;
}

export interface V86Io {
  ports: V86IoEntry[];
  create_empty_entry(): V86IoEntry;
  mmap_register(
    addr: number,
    size: number,
    read8: (addr: number) => number,
    write8: (addr: number, value: number) => void,
    read32: (addr: number) => number,
    write32: (addr: number, value: number) => void,
  ): void;
}

export interface V86PciDevice {
  pci_id: number;
  pci_space: number[];
  pci_bars: unknown[];
  name: string;
}

export interface V86Pci {
  devices: (V86PciDevice | undefined)[];
  device_spaces: (Int32Array | undefined)[];
  isa_bridge_space8: Uint8Array;
  register_device(device: V86PciDevice): Int32Array;
  pci_write8(address: number, value: number): void;
  pci_write16(address: number, value: number): void;
  pci_write32(address: number, value: number): void;
  pci_query(): void;
}

export interface V86Cpu {
  io: V86Io;
  devices: { pci: V86Pci; [name: string]: unknown };
  memory_size: Uint32Array | Int32Array;
  device_raise_irq(irq: number): void;
  device_lower_irq(irq: number): void;
  read_blob(offset: number, length: number): Uint8Array;
  write_blob(data: Uint8Array, offset: number): void;
  read32s(addr: number): number;
  write32(addr: number, value: number): void;
  run_hardware_timers(acpiEnabled: boolean, now: number): number;
  reboot_internal(): void;
  get_state(): unknown[];
  set_state(state: unknown[]): void;
}

/** The public V86 object, as far as we touch it. */
export interface V86Emulator {
  v86?: { cpu: V86Cpu };
  add_listener(event: string, fn: (...args: unknown[]) => void): void;
}

export class V86CompatibilityError extends Error {
  constructor(missing: string) {
    super(
      `vstor: the v86 build in use lacks '${missing}', which the vstor host adapter needs. ` +
        `vstor is tested against the v86 version pinned in package.json; install exactly that one.`,
    );
    this.name = "V86CompatibilityError";
  }
}

const CPU_METHODS = [
  "device_raise_irq",
  "device_lower_irq",
  "read_blob",
  "write_blob",
  "read32s",
  "write32",
  "run_hardware_timers",
  "reboot_internal",
  "get_state",
  "set_state",
] as const;
const IO_METHODS = ["create_empty_entry", "mmap_register"] as const;
const PCI_METHODS = ["register_device", "pci_write8", "pci_write16", "pci_write32", "pci_query"] as const;

/** Check every internal V86Host relies on; throw naming the first one missing. */
export function checkInternals(emulator: V86Emulator): V86Cpu {
  const cpu = emulator.v86?.cpu as V86Cpu | undefined;
  if (!cpu) throw new V86CompatibilityError("emulator.v86.cpu");
  for (const m of CPU_METHODS) if (typeof cpu[m] !== "function") throw new V86CompatibilityError(`cpu.${m}()`);
  if (!cpu.memory_size || typeof cpu.memory_size[0] !== "number") throw new V86CompatibilityError("cpu.memory_size");
  const io = cpu.io;
  if (!io || !Array.isArray(io.ports) || io.ports.length < 0x10000) throw new V86CompatibilityError("cpu.io.ports");
  for (const m of IO_METHODS) if (typeof io[m] !== "function") throw new V86CompatibilityError(`cpu.io.${m}()`);
  const pci = cpu.devices?.pci;
  if (!pci) throw new V86CompatibilityError("cpu.devices.pci");
  for (const m of PCI_METHODS) if (typeof pci[m] !== "function") throw new V86CompatibilityError(`pci.${m}()`);
  if (!Array.isArray(pci.devices)) throw new V86CompatibilityError("pci.devices");
  if (!Array.isArray(pci.device_spaces)) throw new V86CompatibilityError("pci.device_spaces");
  if (!(pci.isa_bridge_space8 instanceof Uint8Array)) throw new V86CompatibilityError("pci.isa_bridge_space8");
  return cpu;
}
