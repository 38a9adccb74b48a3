/** The test machine (TestHost) and the test-side driver library. */
export { TestHost, MMIO_WINDOW_BASE, type TestHostOptions, type TestHostState, type TraceEntry } from "./test-host.js";
export { TestGuestMemory } from "./guest-ram.js";
export { VirtualClock } from "./virtual-clock.js";
export { ISA_IRQ_COUNT, PIRQ_TO_ISA_IRQ, pciIntxIsaIrq, type IrqEdge } from "./interrupts.js";
export {
  BarAccess,
  GuestAllocator,
  IoSpaceAllocator,
  PciDriver,
  ioAllocatorFor,
  readBytes,
  readU8,
  readU16,
  readU32,
  waitIrq,
  writeBytes,
  writeU8,
  writeU16,
  writeU32,
  type BarInfo,
  type BarKind,
  type EnableBits,
  type HasRam,
  type WaitIrqOptions,
} from "./driver.js";
