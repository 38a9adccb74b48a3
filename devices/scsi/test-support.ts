/**
 * Test doubles for SCSI targets: 2048-byte-sector media (the ATA core's MemoryDisk for CD-sized
 * images, a computed pattern for DVD-sized ones that do not fit in memory), and a ScsiIo that
 * records what moves. Plain ES2022: no Node, no timers.
 */
import { checkRequest, type BlockBackend, type Extent, type MediumErrorKind } from "../../media/block.js";
import { MemoryDisk } from "../ata/test-support.js";
import { parseSense, STATUS, type Sense } from "./sense.js";
import type { ScsiIo, ScsiResult, ScsiTarget } from "./target.js";

/** The recognisable content of CD sector `lba`: its LBA in the first 4 bytes (LE), then (lba*13 + i). */
export function cdPattern(lba: number): Uint8Array {
  const d = new Uint8Array(2048);
  fillPattern(d, 0, lba);
  return d;
}

function fillPattern(d: Uint8Array, o: number, lba: number): void {
  for (let i = 0; i < 2048; i++) d[o + i] = (lba * 13 + i) & 0xff;
  d[o] = lba & 0xff;
  d[o + 1] = lba >>> 8 & 0xff;
  d[o + 2] = lba >>> 16 & 0xff;
  d[o + 3] = lba >>> 24 & 0xff;
}

/** An ISO-like read-only medium of `sectors` 2048-byte sectors filled with cdPattern. */
export function cdImage(sectors: number): MemoryDisk {
  const disk = new MemoryDisk(sectors, { sectorSize: 2048, readOnly: true });
  for (let s = 0; s < sectors; s++) fillPattern(disk.data, s * 2048, s);
  return disk;
}

/** Make reads of CD sector `lba` fail with a MediumError (MemoryDisk counts 512-byte units). */
export function failReadAt(disk: MemoryDisk, lba: number, kind: MediumErrorKind = "io"): void {
  disk.errors.push({ op: "read", lba: lba * 4, kind });
}

/** A read-only medium of any size whose sectors read as cdPattern, computed on demand. */
export class PatternMedium implements BlockBackend {
  readonly sectorSize = 2048;
  readonly readOnly = true;
  constructor(readonly size: number) {}

  read(offset: number, buf: Uint8Array): Promise<void> {
    try {
      checkRequest(this, offset, buf.length);
    } catch (e) {
      return Promise.reject(e);
    }
    for (let i = 0; i < buf.length / 2048; i++) fillPattern(buf, i * 2048, offset / 2048 + i);
    return Promise.resolve();
  }

  write(): Promise<void> {
    return Promise.reject(new Error("read-only"));
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  discard(): Promise<void> {
    return Promise.resolve();
  }

  allocatedExtents(): Promise<Extent[]> {
    return Promise.resolve([{ offset: 0, length: this.size, state: "data" }]);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A ScsiIo that records data and completions. Data-out comes from `hostData`. */
export class RecordingIo implements ScsiIo {
  readonly chunks: Uint8Array[] = [];
  readonly completions: ScsiResult[] = [];
  hostData: Uint8Array = new Uint8Array(0);
  private hostOffset = 0;
  /** Answer dataIn/dataOut with false from this call on (0-based), as a transport that was reset. */
  stopAt = Infinity;
  private calls = 0;
  transferHint?: number;

  dataIn(data: Uint8Array): Promise<boolean> {
    if (this.calls++ >= this.stopAt) return Promise.resolve(false);
    this.chunks.push(data.slice());
    return Promise.resolve(true);
  }

  dataOut(buf: Uint8Array): Promise<boolean> {
    if (this.calls++ >= this.stopAt) return Promise.resolve(false);
    const n = Math.min(buf.length, this.hostData.length - this.hostOffset);
    buf.fill(0);
    if (n > 0) buf.set(this.hostData.subarray(this.hostOffset, this.hostOffset + n));
    this.hostOffset += buf.length;
    return Promise.resolve(true);
  }

  complete(result: ScsiResult): void {
    this.completions.push(result);
  }

  data(): Uint8Array {
    const out = new Uint8Array(this.chunks.reduce((n, c) => n + c.length, 0));
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

export interface RunResult {
  status: number | undefined;
  /** The sense of a CHECK CONDITION (NO SENSE otherwise). */
  sense: Sense;
  data: Uint8Array;
  completions: number;
  io: RecordingIo;
}

/** Execute one CDB (bytes given as numbers, zero-padded to `length`) and collect the outcome. */
export async function run(target: ScsiTarget, cdb: ArrayLike<number>, opts: { length?: number; hostData?: Uint8Array; io?: RecordingIo } = {}): Promise<RunResult> {
  const bytes = new Uint8Array(opts.length ?? Math.max(12, cdb.length));
  bytes.set(Array.from(cdb).slice(0, bytes.length));
  const io = opts.io ?? new RecordingIo();
  if (opts.hostData) io.hostData = opts.hostData;
  await target.execute(bytes, io);
  const r = io.completions[0];
  return {
    status: r?.status,
    sense: r && r.status === STATUS.CHECK_CONDITION ? parseSense(r.sense) : parseSense(undefined),
    data: io.data(),
    completions: io.completions.length,
    io,
  };
}

/** CDB builders for the commands tests send most. */
export const cdb = {
  tur: () => [0x00],
  requestSense: (alloc = 18) => [0x03, 0, 0, 0, alloc],
  inquiry: (alloc = 96, evpd = false, page = 0) => [0x12, evpd ? 1 : 0, page, alloc >> 8, alloc & 0xff],
  readCapacity: () => [0x25],
  read10: (lba: number, count: number) => [0x28, 0, lba >>> 24 & 0xff, lba >>> 16 & 0xff, lba >>> 8 & 0xff, lba & 0xff, 0, count >> 8 & 0xff, count & 0xff, 0],
  read12: (lba: number, count: number) => [0xa8, 0, lba >>> 24 & 0xff, lba >>> 16 & 0xff, lba >>> 8 & 0xff, lba & 0xff, count >>> 24 & 0xff, count >>> 16 & 0xff, count >>> 8 & 0xff, count & 0xff, 0, 0],
  readCd: (lba: number, count: number, flags = 0x10, type = 0, sub = 0) => [0xbe, type << 2, lba >>> 24 & 0xff, lba >>> 16 & 0xff, lba >>> 8 & 0xff, lba & 0xff, count >>> 16 & 0xff, count >>> 8 & 0xff, count & 0xff, flags, sub, 0],
  readToc: (format: number, msf: boolean, track = 0, alloc = 0xffff) => [0x43, msf ? 2 : 0, format, 0, 0, 0, track, alloc >> 8, alloc & 0xff, 0],
  getConfiguration: (rt = 0, start = 0, alloc = 0xffff) => [0x46, rt, start >> 8, start & 0xff, 0, 0, 0, alloc >> 8, alloc & 0xff, 0],
  gesn: (classes = 0x10, alloc = 8, polled = true) => [0x4a, polled ? 1 : 0, 0, 0, classes, 0, 0, alloc >> 8, alloc & 0xff, 0],
  modeSense10: (page: number, pc = 0, alloc = 0xffff) => [0x5a, 0x08, pc << 6 | page, 0, 0, 0, 0, alloc >> 8, alloc & 0xff, 0],
  startStop: (loej: boolean, start: boolean) => [0x1b, 0, 0, 0, (loej ? 2 : 0) | (start ? 1 : 0)],
  prevent: (on: boolean) => [0x1e, 0, 0, 0, on ? 1 : 0],
};
