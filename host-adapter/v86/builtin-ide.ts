/**
 * Removing v86's built-in IDE controller from the guest's view, so one of ours can take its PCI
 * identity, legacy ports and IRQs 14/15. v86 always creates it (the secondary channel with its
 * ATAPI CD exists even with no disks) and offers no option to switch it off.
 */
import type { V86Cpu } from "./internals.js";

/** v86 registers its IDE at 00:1e.0. */
export const BUILTIN_IDE_DEVFN = 0x1e << 3;
/** Legacy task-file and control ports of both channels, and its bus-master block at its original base. */
const BUILTIN_IDE_PORTS: [number, number][] = [
  [0x1f0, 8],
  [0x3f6, 1],
  [0x170, 8],
  [0x376, 1],
  [0xb400, 16],
];

export function removeBuiltinIde(cpu: V86Cpu): void {
  const pci = cpu.devices.pci;
  // Before the BIOS runs: SeaBIOS and Linux then never see a second class-0101 function.
  pci.devices[BUILTIN_IDE_DEVFN] = undefined;
  pci.device_spaces[BUILTIN_IDE_DEVFN] = undefined;
  const io = cpu.io;
  for (const [base, count] of BUILTIN_IDE_PORTS) {
    for (let p = base; p < base + count; p++) io.ports[p] = io.create_empty_entry();
  }
}
