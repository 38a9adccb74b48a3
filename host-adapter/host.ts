/**
 * The Host interface: everything a vstor device may ask of the emulator that hosts it.
 *
 * Devices (devices/) import only this file from host-adapter/. V86Host implements it over the
 * npm `v86` build; TestHost implements it over plain memory with a virtual clock for unit tests.
 * Nothing here knows about files, sockets or any particular emulator.
 */

/** Access width in bytes. */
export type AccessSize = 1 | 2 | 4;

/**
 * Handler for a block of I/O ports or an MMIO region. `offset` is relative to the start of the
 * region, so a device never cares where the BIOS or the guest placed it. Reads return an unsigned
 * value of the access width; writes receive an unsigned value of that width.
 */
export interface RegionHandler {
  read(offset: number, size: AccessSize): number;
  write(offset: number, size: AccessSize, value: number): void;
}

/** A PCI base address register. I/O BARs are relocatable by the BIOS/guest; memory BARs stay at
 *  a fixed address chosen by the host (see V86Host: the npm v86 build cannot move them). */
export interface BarSpec {
  kind: "io" | "memory";
  /** Power of two. I/O: 4..256 bytes. Memory: at least 16 bytes (the host may round up). */
  size: number;
  handler: RegionHandler;
}

/** A PCI function as the device describes it; the host owns the config space built from it. */
export interface PciFunctionSpec {
  /** For logs and error messages. */
  name: string;
  vendorId: number;
  deviceId: number;
  /** class << 16 | subclass << 8 | programming interface */
  classCode: number;
  revision?: number;
  subsystemVendorId?: number;
  subsystemId?: number;
  /** 0 = no interrupt, 1..4 = INTA..INTD */
  interruptPin: 0 | 1 | 2 | 3 | 4;
  /** Up to six BARs, by index; holes allowed. */
  bars: (BarSpec | undefined)[];
  /** Preferred device number on bus 0; the host picks a free one when absent or taken. */
  slot?: number;
  /** Function number (0..7). Function 0 of a multi-function device sets `multifunction`. */
  fn?: number;
  multifunction?: boolean;
  /**
   * Device-specific registers at 0x40..0xFF (e.g. IDE timing, capability lists). `initial` holds
   * their reset values, `writeMask` the bits the guest may change (0 = read-only), `w1cMask` the
   * bits that a 1 clears. Offsets below 0x40 are the host's (standard header).
   */
  extraConfig?: {
    offset: number;
    initial: Uint8Array;
    writeMask?: Uint8Array;
    w1cMask?: Uint8Array;
    /** Offset of the first capability in `initial`'s range; sets 0x34 and the status bit. */
    capabilityPointer?: number;
  };
  /** Called after the guest wrote config space (after masks were applied). */
  onConfigWrite?(offset: number, size: AccessSize, value: number): void;
  /** Called when a BAR moves or its decoding is switched on/off (I/O BARs only on v86). */
  onBarChange?(index: number, base: number | undefined): void;
}

/** Level-triggered interrupt line. Shared lines are wired-OR: the line is up while any sharer asserts it. */
export interface IrqLine {
  set(level: boolean): void;
  readonly level: boolean;
}


/** The live view of a registered PCI function. */
export interface PciFunction {
  readonly spec: PciFunctionSpec;
  /** devfn on bus 0 = slot << 3 | fn */
  readonly devfn: number;
  /** INTx of this function (no-op if interruptPin is 0). */
  readonly irq: IrqLine;
  /** Current base address of each BAR, undefined when unassigned or decoding is off. */
  barBase(index: number): number | undefined;
  /** PCI command register bits the device cares about. */
  readonly busMasterEnabled: boolean;
  readonly ioEnabled: boolean;
  readonly memoryEnabled: boolean;
  /** Read config space as the guest would see it (for device-specific registers). */
  configRead(offset: number, size: AccessSize): number;
  /** Set config bits from the device side, bypassing the guest write masks (e.g. status bits). */
  configSet(offset: number, size: AccessSize, value: number): void;
}

/** A scatter-gather segment in guest-physical memory. */
export interface SgSegment {
  addr: number;
  len: number;
}

/**
 * Guest memory as a bus master sees it. Every access is bounds-checked against guest RAM: an
 * access that is not wholly inside RAM moves nothing and returns false, so a device can turn it
 * into hardware status (a hostile guest must never crash the emulator). Writes keep the emulator's
 * code caches coherent (a DMA over code the guest has run is seen by the guest).
 */
export interface GuestMemory {
  readonly size: number;
  read(addr: number, dst: Uint8Array): boolean;
  write(addr: number, src: Uint8Array): boolean;
  /** Gather guest segments into `dst` (in order, until dst or the list is exhausted). */
  readSg(sg: readonly SgSegment[], dst: Uint8Array): boolean;
  /** Scatter `src` into guest segments. */
  writeSg(sg: readonly SgSegment[], src: Uint8Array): boolean;
  /** Little-endian helpers for descriptors (PRDs, FISes, mailboxes). undefined when out of RAM. */
  read32(addr: number): number | undefined;
  write32(addr: number, value: number): boolean;
}

export interface TimerHandle {
  cancel(): void;
}

/** Guest-visible time. On v86 it follows host time; on TestHost it is virtual and advanced by the test. */
export interface Clock {
  nowNs(): number;
  /** Run `fn` once, `delayNs` from now, at a point where the device may raise interrupts and do DMA. */
  setTimer(delayNs: number, fn: () => void): TimerHandle;
}

/**
 * A device's saveable state. `save` returns JSON-compatible data plus optional binary blobs;
 * `restore` receives them back in a fresh process with the same devices registered.
 */
export interface StateHooks {
  save(): DeviceState;
  restore(state: DeviceState): void;
}
export interface DeviceState {
  version: number;
  data: unknown;
  blobs?: Uint8Array[];
}

export interface Host {
  /** Register a PCI function. Call before the guest starts (V86Host: inside its setup callback). */
  registerPciFunction(spec: PciFunctionSpec): PciFunction;
  /** Fixed legacy I/O ports below 0x1000 (0x1F0, 0x170, 0x3F6, 0x376, ISA SCSI ports ...). */
  registerIoPorts(base: number, length: number, handler: RegionHandler): void;
  /** Legacy ISA interrupt (IDE compatibility mode: 14/15). The PIC latches its rising edge. */
  isaIrq(irq: number): IrqLine;
  readonly memory: GuestMemory;
  readonly clock: Clock;
  /**
   * Run `fn` after the current register access returns, at a safe point (no guest code on the
   * stack). Work triggered by an MMIO write — DMA, interrupts — goes through here.
   */
  defer(fn: () => void): void;
  /** Machine reset (guest reboot, CF9, keyboard-controller reset, emulator restart). */
  onReset(fn: () => void): void;
  /** Save/restore a device with the machine, under a stable id. */
  registerState(id: string, hooks: StateHooks): void;
  /** Diagnostics: guest mistakes are counted and traced, never thrown. */
  trace(device: string, message: string): void;
}
