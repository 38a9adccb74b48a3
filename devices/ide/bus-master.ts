/**
 * The bus master IDE engine of one channel (SFF-8038i "Programming Interface for Bus Master IDE
 * Controller"; PIIX3/PIIX4/ICH datasheets): eight I/O ports in BAR4 (primary at +0, secondary at
 * +8) and the PRD walker that moves a command's data between the ATA core and guest memory.
 *
 *   +0 BMICX command    bit 0 start/stop (SSBM), bit 3 direction: 1 = bus master writes memory
 *   +2 BMISX status     bit 0 active (RO), 1 error (W1C), 2 interrupt (W1C), 5/6 drive 0/1 DMA
 *                       capable (RW, software's), 7 simplex only (RO, 0: both channels at once)
 *   +4 BMIDTP           PRD table pointer, bits 31:2
 *
 * A PRD entry is 8 bytes: a 32-bit physical address, then a 16-bit byte count (bit 0 ignored,
 * 0 means 64 KiB) with end-of-table (EOT) in bit 31 of the second dword.
 *
 * Semantics, as real parts and QEMU/VirtualBox behave:
 *  - Writing start 0→1 sets active and starts a run at the PRD table pointer (the pointer is
 *    latched then, so it may be written before or after the command). Start 1→0 clears active;
 *    a transfer the device is waiting to make waits for the next 0→1.
 *  - A run serves one command: the ATA core's transfers for that command continue where the last
 *    one stopped; when the command completes the run ends, and the next DMA command waits for a
 *    new start (a guest leaving start set does not carry a stale position into the next command).
 *  - Active clears when the entry marked EOT has been used up. A command that needed less data than
 *    the table describes leaves active set (interrupt + active: "PRD larger than the transfer").
 *  - The walk is bounded: at most MAX_PRD_ENTRIES entries per run (a 64 KiB table's worth), so a
 *    table without EOT cannot keep us walking memory. A table that ends (EOT, or the bound) before
 *    the command's data does gives a short transfer; the core ends the command with ABRT.
 *  - A PRD table or data region outside guest RAM, a transfer with bus mastering disabled in the
 *    PCI command register, or a direction bit that contradicts the command is a bus fault: nothing
 *    moves, error is set, active clears, and the core aborts the command.
 */
import type { GuestMemory, SgSegment } from "../../host-adapter/host.js";
import type { DataDirection, DmaOutcome } from "../ata/transport.js";

/** Register offsets within a channel's eight BM ports. */
export const BM_REG = { COMMAND: 0, STATUS: 2, PRD_TABLE: 4 } as const;

export const BM_CMD = { START: 0x01, WRITE_TO_MEMORY: 0x08 } as const;

export const BM_STATUS = {
  ACTIVE: 0x01,
  ERROR: 0x02,
  INTERRUPT: 0x04,
  DRIVE0_DMA: 0x20,
  DRIVE1_DMA: 0x40,
  SIMPLEX: 0x80,
} as const;

/** Entries one run may use: 8192 entries of 8 bytes fill the 64 KiB a PRD table may span. */
export const MAX_PRD_ENTRIES = 8192;

/** What the engine needs from its controller. */
export interface BusMasterEnv {
  readonly memory: GuestMemory;
  /** PCI command register bit 2. */
  busMasterEnabled(): boolean;
  /** Run work after the current register access (a transfer the start bit releases). */
  defer(fn: () => void): void;
  trace(message: string): void;
}

/** Position of a run in the PRD table. */
interface Run {
  /** Address of the next PRD entry to fetch. */
  next: number;
  /** Entries fetched so far. */
  entries: number;
  /** What is left of the current entry. */
  addr: number;
  left: number;
  eot: boolean;
  /** The table is used up (EOT consumed, bound reached, or a fault stopped the engine). */
  done: boolean;
}

interface Waiting {
  direction: DataDirection;
  buf: Uint8Array;
  done: (o: DmaOutcome) => void;
}

export interface BusMasterState {
  command: number;
  status: number;
  prdTable: number;
  /** A run was open (start written, no command has used it yet). */
  runOpen: boolean;
}

export class BusMaster {
  command = 0;
  status = 0;
  /** BMIDTP as written (bits 1:0 read back as 0). */
  prdTable = 0;
  /** Runs that ended because they were at the entry bound (for tests and traces). */
  boundHits = 0;
  private run: Run | undefined;
  private waiting: Waiting | undefined;

  constructor(private readonly env: BusMasterEnv) {}

  /** Power-on values; `drives` sets the drive-DMA-capable bits for the drives present. */
  powerOn(drives: readonly boolean[]): void {
    this.cancel();
    this.command = 0;
    this.prdTable = 0;
    this.status = (drives[0] ? BM_STATUS.DRIVE0_DMA : 0) | (drives[1] ? BM_STATUS.DRIVE1_DMA : 0);
  }

  // ---- registers -------------------------------------------------------------------------------

  read(offset: number, size: number): number {
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.readByte((offset + i) & 7) << (8 * i);
    return v >>> 0;
  }

  write(offset: number, size: number, value: number): void {
    for (let i = 0; i < size; i++) this.writeByte((offset + i) & 7, (value >>> (8 * i)) & 0xff);
  }

  private readByte(offset: number): number {
    switch (offset) {
      case BM_REG.COMMAND:
        return this.command;
      case BM_REG.STATUS:
        return this.status;
      case 4:
      case 5:
      case 6:
      case 7:
        return ((this.prdTable & ~3) >>> (8 * (offset - 4))) & 0xff;
      default:
        return 0; // reserved
    }
  }

  private writeByte(offset: number, v: number): void {
    switch (offset) {
      case BM_REG.COMMAND:
        this.writeCommand(v);
        return;
      case BM_REG.STATUS:
        this.status =
          (v & (BM_STATUS.DRIVE0_DMA | BM_STATUS.DRIVE1_DMA)) |
          (this.status & BM_STATUS.ACTIVE) |
          (this.status & ~v & (BM_STATUS.ERROR | BM_STATUS.INTERRUPT));
        return;
      case 4:
      case 5:
      case 6:
      case 7: {
        const shift = 8 * (offset - 4);
        this.prdTable = ((this.prdTable & ~(0xff << shift)) | (v << shift)) >>> 0;
        return;
      }
      default:
        return; // reserved
    }
  }

  private writeCommand(v: number): void {
    const wasStarted = (this.command & BM_CMD.START) !== 0;
    this.command = v & (BM_CMD.START | BM_CMD.WRITE_TO_MEMORY);
    const started = (v & BM_CMD.START) !== 0;
    if (started && !wasStarted) {
      this.status |= BM_STATUS.ACTIVE;
      this.openRun();
      // A waiting transfer moves now, inside the guest's port write (what a synchronous command
      // completion needs; port handlers may touch memory and interrupts).
      if (this.waiting) this.pump();
    } else if (!started && wasStarted) {
      // Stopping the engine: a transfer in progress would be cut short; ours are atomic, so
      // whatever the device still wants waits for the next start.
      this.status &= ~BM_STATUS.ACTIVE;
      this.run = undefined;
    }
  }

  private openRun(): void {
    this.run = { next: (this.prdTable & ~3) >>> 0, entries: 0, addr: 0, left: 0, eot: false, done: false };
  }

  // ---- the device side ---------------------------------------------------------------------------

  /** Move `buf` for the current command (AtaTransport.dmaTransfer); see transferNow. */
  transfer(direction: DataDirection, buf: Uint8Array): Promise<DmaOutcome> {
    return new Promise((resolve) => this.transferNow(direction, buf, resolve));
  }

  /**
   * Move `buf` for the current command (AtaTransport.dmaTransferNow): `done` runs inside this call
   * when the engine is started, else inside the guest's write that starts it, or with nothing
   * moved on a reset.
   */
  transferNow(direction: DataDirection, buf: Uint8Array, done: (o: DmaOutcome) => void): void {
    if (this.waiting) {
      // The core never has two transfers outstanding; a second one means a reset was missed.
      this.env.trace("DMA transfer requested while another is waiting; the old one is dropped");
      this.cancel();
    }
    if (this.ready()) done(this.move(direction, buf));
    else this.waiting = { direction, buf, done };
  }

  /** The command that used this run completed: the run ends (see the file comment). */
  endCommand(): void {
    this.run = undefined;
    if (this.waiting) this.cancel();
  }

  /** Reset of the channel or the machine: a waiting transfer is released with nothing moved. */
  cancel(): void {
    const w = this.waiting;
    this.waiting = undefined;
    this.run = undefined;
    w?.done({ bytes: 0 });
  }

  /** A transfer is waiting for the guest to start the engine. */
  get transferWaiting(): boolean {
    return this.waiting !== undefined;
  }

  private ready(): boolean {
    return (this.command & BM_CMD.START) !== 0 && this.run !== undefined;
  }

  private pump(): void {
    const w = this.waiting;
    if (!w || !this.ready()) return;
    this.waiting = undefined;
    w.done(this.move(w.direction, w.buf));
  }

  private move(direction: DataDirection, buf: Uint8Array): DmaOutcome {
    const run = this.run!;
    if (!this.env.busMasterEnabled()) return this.fault(run, "bus mastering is disabled in the PCI command register");
    const toMemory = (this.command & BM_CMD.WRITE_TO_MEMORY) !== 0;
    if (toMemory !== (direction === "in")) {
      return this.fault(run, `direction bit says ${toMemory ? "write to" : "read from"} memory, the command moves data ${direction === "in" ? "to" : "from"} memory`);
    }
    const sg: SgSegment[] = [];
    let need = buf.length;
    while (need > 0) {
      if (run.left === 0) {
        if (run.done) break;
        if (run.entries >= MAX_PRD_ENTRIES) {
          this.boundHits++;
          this.env.trace(`PRD table has no EOT within ${MAX_PRD_ENTRIES} entries; transfer cut short`);
          run.done = true;
          break;
        }
        const at = run.next;
        const base = this.env.memory.read32(at);
        const count = at + 4 <= 0xffffffff ? this.env.memory.read32(at + 4) : undefined;
        if (base === undefined || count === undefined) return this.fault(run, `PRD entry at ${hex(at)} is outside guest RAM`);
        run.next = at + 8;
        run.entries++;
        run.addr = base;
        run.left = count & 0xfffe || 0x10000;
        run.eot = (count & 0x80000000) !== 0;
      }
      const n = Math.min(run.left, need);
      const last = sg[sg.length - 1];
      if (last && last.addr + last.len === run.addr) last.len += n;
      else sg.push({ addr: run.addr, len: n });
      run.addr += n;
      run.left -= n;
      need -= n;
      if (run.left === 0 && run.eot) run.done = true;
    }
    const bytes = buf.length - need;
    if (bytes > 0) {
      const data = buf.subarray(0, bytes);
      const ok = direction === "in" ? this.env.memory.writeSg(sg, data) : this.env.memory.readSg(sg, data);
      if (!ok) return this.fault(run, `data region outside guest RAM (${describeSg(sg)})`);
    }
    if (run.done) this.status &= ~BM_STATUS.ACTIVE;
    return { bytes };
  }

  private fault(run: Run, why: string): DmaOutcome {
    this.env.trace(`bus master fault: ${why}`);
    run.done = true;
    run.left = 0;
    this.status = (this.status & ~BM_STATUS.ACTIVE) | BM_STATUS.ERROR;
    return { bytes: 0, fault: true };
  }

  // ---- save / restore (between commands) --------------------------------------------------------

  save(): BusMasterState {
    return { command: this.command, status: this.status, prdTable: this.prdTable, runOpen: this.run !== undefined };
  }

  restore(s: BusMasterState): void {
    this.cancel();
    this.command = s.command & (BM_CMD.START | BM_CMD.WRITE_TO_MEMORY);
    this.status = s.status & 0x67;
    this.prdTable = s.prdTable >>> 0;
    if (s.runOpen && this.command & BM_CMD.START) this.openRun();
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function describeSg(sg: readonly SgSegment[]): string {
  const shown = sg.slice(0, 4).map((s) => `${hex(s.addr)}+${s.len}`);
  return sg.length > 4 ? `${shown.join(", ")}, ... ${sg.length} segments` : shown.join(", ");
}
