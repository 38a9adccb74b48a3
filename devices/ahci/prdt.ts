/**
 * Walking a command's physical region descriptor table (AHCI 4.2.3.3). A cursor remembers where
 * the previous transfer of the same command stopped, so the ATA core can hand data over in
 * pieces (PIO blocks, DMA chunks) and each piece continues through the PRDT.
 *
 * Hostile tables stay bounded: at most PRDTL (16 bits) entries are ever looked at, each read once
 * in batches; every entry describes 2 B .. 4 MiB (DBC bit 0 is forced to 1, so counts are even);
 * DBA bit 0 is reserved and ignored; a table or data block outside RAM moves nothing and reports a
 * fault. Nothing here loops without consuming an entry or a byte.
 */
import type { GuestMemory, SgSegment } from "../../host-adapter/host.js";
import type { DataDirection, DmaOutcome } from "../ata/transport.js";
import { CMD_TABLE, MAX_PRDT_ENTRIES, PRD_DBC_MASK, PRD_I, PRD_SIZE } from "./registers.js";

/** Entries read from guest memory at a time. */
const BATCH = 256;

export interface PrdtMove extends DmaOutcome {
  /** An entry with the I bit set was used up by this transfer (PxIS.DPS). */
  interrupt: boolean;
}

interface Entry {
  addr: number;
  len: number;
  interrupt: boolean;
}

export class PrdtCursor {
  /** Bytes moved so far: the header's PRDBC. */
  moved = 0;
  private index = 0;
  private offset = 0;
  private batch: DataView | undefined;
  private batchFirst = 0;
  private batchCount = 0;
  private readonly table: number;
  readonly entries: number;

  constructor(
    private readonly memory: GuestMemory,
    /** The command table's base (the PRDT is at +80h). */
    ctba: number,
    entries: number,
  ) {
    this.table = ctba + CMD_TABLE.PRDT;
    this.entries = Math.max(0, Math.min(MAX_PRDT_ENTRIES, Math.trunc(entries)));
  }

  /** Move `buf` to ("in") or from ("out") guest memory, continuing where the last move ended. */
  move(direction: DataDirection, buf: Uint8Array): PrdtMove {
    const segments: SgSegment[] = [];
    let need = buf.length;
    let index = this.index;
    let offset = this.offset;
    let interrupt = false;
    while (need > 0 && index < this.entries) {
      const e = this.entry(index);
      if (!e) return { bytes: 0, fault: true, interrupt: false };
      const n = Math.min(e.len - offset, need);
      segments.push({ addr: e.addr + offset, len: n });
      need -= n;
      offset += n;
      if (offset >= e.len) {
        if (e.interrupt) interrupt = true;
        index++;
        offset = 0;
      }
    }
    const bytes = buf.length - need;
    if (bytes > 0) {
      const data = bytes === buf.length ? buf : buf.subarray(0, bytes);
      const ok = direction === "in" ? this.memory.writeSg(segments, data) : this.memory.readSg(segments, data);
      if (!ok) return { bytes: 0, fault: true, interrupt: false };
    }
    this.index = index;
    this.offset = offset;
    this.moved += bytes;
    return { bytes, interrupt };
  }

  private entry(i: number): Entry | undefined {
    if (!this.batch || i < this.batchFirst || i >= this.batchFirst + this.batchCount) {
      if (!this.load(i)) return undefined;
    }
    const at = (i - this.batchFirst) * PRD_SIZE;
    const v = this.batch!;
    const dw3 = v.getUint32(at + 12, true);
    return {
      addr: (v.getUint32(at, true) & ~1) >>> 0,
      len: ((dw3 & PRD_DBC_MASK) | 1) + 1,
      interrupt: (dw3 & PRD_I) !== 0,
    };
  }

  /** Read a batch of entries starting at `first`; a table running out of RAM falls back to one. */
  private load(first: number): boolean {
    for (const count of [Math.min(BATCH, this.entries - first), 1]) {
      const b = new Uint8Array(count * PRD_SIZE);
      if (this.memory.read(this.table + first * PRD_SIZE, b)) {
        this.batch = new DataView(b.buffer);
        this.batchFirst = first;
        this.batchCount = count;
        return true;
      }
    }
    return false;
  }
}
