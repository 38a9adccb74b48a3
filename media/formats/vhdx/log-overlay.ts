/**
 * A log replay kept in memory: the file as it would be after replay, without writing it.
 *
 * `LogOverlay` holds the replayed 4 KiB sectors and zeroed runs (later writes win, as a replay
 * writes them in order). `ReplayedFile` is a read-only FileIo over the real file that consults
 * the overlay on every read, and reads zeros where replay would have grown the file
 * (LastFileOffset). Everything that reads the image after the headers goes through it: region
 * table, metadata, BAT, sector bitmaps and payload.
 */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { LOG_SECTOR, type LogReplay } from "./log.js";

export class LogOverlay {
  /** Replayed sectors by file offset / 4 KiB. */
  private readonly sectors = new Map<number, Uint8Array>();
  /** Zeroed runs [start, end), sorted, disjoint, not touching. */
  private zeros: [number, number][] = [];

  constructor(replay: LogReplay) {
    for (const w of replay.writes) {
      if ("data" in w) this.sectors.set(w.fileOffset / LOG_SECTOR, w.data);
      else if (w.zeroLength > 0) this.zero(w.fileOffset, w.fileOffset + w.zeroLength);
    }
  }

  get sectorCount(): number {
    return this.sectors.size;
  }

  private zero(start: number, end: number): void {
    // Zeros replace earlier data sectors in the run.
    const first = start / LOG_SECTOR;
    const last = end / LOG_SECTOR;
    if (last - first > this.sectors.size) {
      for (const k of [...this.sectors.keys()]) if (k >= first && k < last) this.sectors.delete(k);
    } else {
      for (let k = first; k < last; k++) this.sectors.delete(k);
    }
    const kept: [number, number][] = [];
    for (const [s, e] of this.zeros) {
      if (e < start || s > end) kept.push([s, e]);
      else {
        start = Math.min(start, s);
        end = Math.max(end, e);
      }
    }
    kept.push([start, end]);
    this.zeros = kept.sort((a, b) => a[0] - b[0]);
  }

  /** Change `buf` (the file's bytes at `pos`) into what they are after replay. */
  patch(pos: number, buf: Uint8Array): void {
    const end = pos + buf.length;
    for (const [s, e] of this.zeros) {
      if (s >= end) break;
      if (e > pos) buf.fill(0, Math.max(s, pos) - pos, Math.min(e, end) - pos);
    }
    const first = Math.floor(pos / LOG_SECTOR);
    const last = Math.ceil(end / LOG_SECTOR);
    const visit = (k: number, data: Uint8Array): void => {
      const at = k * LOG_SECTOR;
      const from = Math.max(at, pos);
      const to = Math.min(at + LOG_SECTOR, end);
      buf.set(data.subarray(from - at, to - at), from - pos);
    };
    if (last - first > this.sectors.size) {
      for (const [k, data] of this.sectors) if (k >= first && k < last) visit(k, data);
    } else {
      for (let k = first; k < last; k++) {
        const data = this.sectors.get(k);
        if (data) visit(k, data);
      }
    }
  }
}

/** The file as replay would leave it, read-only: writes, flush and truncate are refused. */
export class ReplayedFile implements FileIo {
  readonly readOnly = true;

  constructor(
    private readonly inner: FileIo,
    private readonly overlay: LogOverlay,
    /** The size after replay (at least the real file's). */
    private readonly replayedSize: number,
  ) {}

  get path(): string {
    return this.inner.path;
  }

  /** The count of bytes after `pos` the replayed file has, up to `want`. */
  private available(pos: number, want: number): number {
    return Math.max(0, Math.min(want, this.replayedSize - pos));
  }

  async read(pos: number, buf: Uint8Array): Promise<number> {
    let done = 0;
    while (done < buf.length) {
      const n = await this.inner.read(pos + done, buf.subarray(done));
      if (n <= 0) break;
      done += n;
    }
    return this.finish(pos, buf, done);
  }

  readSync(pos: number, buf: Uint8Array): number | undefined {
    if (!this.inner.readSync) return undefined;
    let done = 0;
    while (done < buf.length) {
      const n = this.inner.readSync(pos + done, buf.subarray(done));
      if (n === undefined) return undefined;
      if (n <= 0) break;
      done += n;
    }
    return this.finish(pos, buf, done);
  }

  /** Past the real end of the file, up to the replayed size: zeros (the file grown by replay). */
  private finish(pos: number, buf: Uint8Array, done: number): number {
    const count = Math.max(done, this.available(pos, buf.length));
    buf.fill(0, done, count);
    this.overlay.patch(pos, buf.subarray(0, count));
    return count;
  }

  async size(): Promise<number> {
    return this.replayedSize;
  }

  private refuse(what: string): Promise<never> {
    return Promise.reject(new MediumError("read-only", `${what}: the log is replayed in memory only; the file is not written`, { path: this.path }));
  }
  write(): Promise<void> {
    return this.refuse("write");
  }
  flush(): Promise<void> {
    return this.refuse("flush");
  }
  truncate(): Promise<void> {
    return this.refuse("truncate");
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
