/**
 * The ordering layer every backend's file I/O goes through: many requests in flight, with the
 * ordering a disk owes its user and nothing more.
 *
 *   - A read never overtakes an earlier write (or punch, truncate) that overlaps it: it waits for
 *     it, or, when the most recent such write covers the whole read, it is served from that
 *     write's buffer at once.
 *   - A write never overtakes an earlier overlapping read or write, so overlapping writes reach
 *     the file, and complete, in submission order, and a read sees exactly the writes submitted
 *     before it.
 *   - flush() waits for every write submitted before it, then flushes the inner file. That covers
 *     what FLUSH CACHE / SYNCHRONIZE CACHE must cover (writes completed before it was issued) and
 *     also writes still in flight when it was issued. It is not a barrier for what comes after:
 *     later reads and writes do not wait for it (a disk makes no promise about writes issued
 *     after a flush, and ATA hosts drain their queue before a non-queued FLUSH anyway).
 *   - truncate() and size() cover the whole file: truncate waits for everything before it and
 *     everything after waits for it; size() waits for earlier writes, later writes wait for it.
 *   - close() waits for every earlier request; requests after close() reject with "closed".
 *   - At most maxInFlight requests run on the inner file at once; ready requests start in
 *     submission order.
 *
 * A read served from a pending write returns that write's data even if the write later fails,
 * as a page cache does. A read's count (where the file ends) depends on writes outside its range
 * that happened to run before it, earlier or later ones; the bytes in question read as zeros
 * either way, which is what callers fill a short read with. Pure: no Node types.
 */
import { MediumError } from "../block.js";
import type { FileIo } from "./file-io.js";

/**
 * Measured on the 2-core machine (libuv's default 4 threads, page-cached 256 MiB file, 16 or 32
 * requests offered, medians of 7, two sessions; bench/io.bench.ts repeats the 4/8/16 sweep):
 * 4 KiB random reads reached 31-49 k IOPS with 4 in flight, 57-69 k with 8, 54-113 k with 16,
 * 56-110 k with 32; 1 MiB sequential reads 12.7-13.4 / 14.6-17.3 / 15.2-21.4 / 15.1-20.9 GB/s.
 * More requests than threads still pay: the pool never idles while the event loop queues the
 * next one. 16 was best or within noise of best everywhere; 32 bought nothing more.
 */
export const DEFAULT_MAX_IN_FLIGHT = 16;

export interface QueueOptions {
  /** Requests running on the inner file at once (default DEFAULT_MAX_IN_FLIGHT). */
  maxInFlight?: number;
}

/** Counters for tests and tuning; plain numbers, never reset. */
export interface QueueStats {
  submitted: number;
  completed: number;
  /** Running on the inner file now. */
  inFlight: number;
  /** The most ever running at once. */
  maxInFlight: number;
  /** Requests that had to wait for an earlier conflicting request. */
  waits: number;
  /** Requests that were free to run but waited for a slot (maxInFlight reached). */
  slotWaits: number;
  /** Reads answered from a pending write's buffer. */
  servedFromWrites: number;
  /** Requests done synchronously (readSync / writeSync), included in submitted and completed. */
  synchronous: number;
}

export interface QueuedFileIo extends FileIo {
  /** undefined when a conflicting request is in flight or the inner file has no synchronous path. */
  readSync(pos: number, buf: Uint8Array): number | undefined;
  /** false when a conflicting request is in flight or the inner file has no synchronous path. */
  writeSync(pos: number, buf: Uint8Array): boolean;
  readonly inner: FileIo;
  readonly maxInFlight: number;
  readonly stats: QueueStats;
}

type OpKind = "read" | "write" | "punch" | "truncate" | "size" | "flush" | "close";

interface Op {
  seq: number;
  kind: OpKind;
  /** Byte range [start, end); Infinity for the whole file. */
  start: number;
  end: number;
  /** The data of a write (for serving later reads). */
  data?: Uint8Array;
  /** Unfinished earlier requests this one waits for. */
  deps: number;
  /** Later requests waiting for this one. */
  dependents: Op[] | null;
  done: boolean;
  run: () => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

const mutates = (k: OpKind) => k === "write" || k === "punch" || k === "truncate";
const accesses = (k: OpKind) => k === "read" || k === "size";

type Request = Pick<Op, "kind" | "start" | "end">;

/** Must `later` wait for `earlier`? */
function conflicts(earlier: Request, later: Request): boolean {
  switch (later.kind) {
    case "read":
    case "size":
      return mutates(earlier.kind) && overlaps(earlier, later);
    case "write":
    case "punch":
    case "truncate":
      return (mutates(earlier.kind) || accesses(earlier.kind)) && overlaps(earlier, later);
    case "flush":
      return mutates(earlier.kind);
    case "close":
      return true;
  }
}

const overlaps = (a: Request, b: Request) => a.start < b.end && b.start < a.end;

class RequestQueue implements QueuedFileIo {
  readonly inner: FileIo;
  readonly maxInFlight: number;
  readonly stats: QueueStats = { submitted: 0, completed: 0, inFlight: 0, maxInFlight: 0, waits: 0, slotWaits: 0, servedFromWrites: 0, synchronous: 0 };
  readonly punchHole?: (pos: number, length: number) => Promise<void>;

  /** Submitted and not finished, in submission order. */
  #active: Op[] = [];
  /** Free to run, waiting for a slot, in submission order. */
  #ready: Op[] = [];
  #readyHead = 0;
  #seq = 0;
  #closing: Promise<void> | null = null;

  constructor(inner: FileIo, options: QueueOptions = {}) {
    const max = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`maxInFlight must be a positive integer, got ${max}`);
    this.inner = inner;
    this.maxInFlight = max;
    if (inner.punchHole) {
      const punch = inner.punchHole.bind(inner);
      this.punchHole = (pos, length) => this.#submit("punch", pos, pos + length, () => punch(pos, length)) as Promise<void>;
    }
  }

  get path(): string {
    return this.inner.path;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  read(pos: number, buf: Uint8Array): Promise<number> {
    if (this.#closing) return this.#closed();
    const end = pos + buf.length;
    // Served from the most recent earlier write to this range, when it covers the whole read.
    for (let i = this.#active.length - 1; i >= 0; i--) {
      const e = this.#active[i];
      if (!mutates(e.kind) || e.start >= end || pos >= e.end) continue;
      if (e.kind === "write" && e.start <= pos && end <= e.end && buf.length > 0) {
        buf.set(e.data!.subarray(pos - e.start, end - e.start));
        this.stats.submitted++;
        this.stats.completed++;
        this.stats.servedFromWrites++;
        return Promise.resolve(buf.length);
      }
      break;
    }
    return this.#submit("read", pos, end, () => this.inner.read(pos, buf)) as Promise<number>;
  }

  /**
   * A synchronous request may run only when it would not have had to wait: nothing conflicting is
   * active. Then running it at once is the order the asynchronous path would have produced.
   */
  readSync(pos: number, buf: Uint8Array): number | undefined {
    if (this.#closing || !this.inner.readSync) return undefined;
    const op: Request = { kind: "read", start: pos, end: pos + buf.length };
    if (this.#active.some((e) => conflicts(e, op))) return undefined;
    const n = this.inner.readSync(pos, buf);
    if (n !== undefined) this.#countSync();
    return n;
  }

  writeSync(pos: number, buf: Uint8Array): boolean {
    if (this.#closing || !this.inner.writeSync) return false;
    const op: Request = { kind: "write", start: pos, end: pos + buf.length };
    if (this.#active.some((e) => conflicts(e, op))) return false;
    const done = this.inner.writeSync(pos, buf);
    if (done) this.#countSync();
    return done;
  }

  #countSync(): void {
    this.stats.submitted++;
    this.stats.completed++;
    this.stats.synchronous++;
  }

  write(pos: number, buf: Uint8Array): Promise<void> {
    if (this.#closing) return this.#closed();
    return this.#submit("write", pos, pos + buf.length, () => this.inner.write(pos, buf), buf) as Promise<void>;
  }

  flush(): Promise<void> {
    if (this.#closing) return this.#closed();
    return this.#submit("flush", 0, 0, () => this.inner.flush()) as Promise<void>;
  }

  size(): Promise<number> {
    if (this.#closing) return this.#closed();
    return this.#submit("size", 0, Infinity, () => this.inner.size()) as Promise<number>;
  }

  truncate(length: number): Promise<void> {
    if (this.#closing) return this.#closed();
    return this.#submit("truncate", 0, Infinity, () => this.inner.truncate(length)) as Promise<void>;
  }

  close(): Promise<void> {
    if (!this.#closing) this.#closing = this.#submit("close", 0, Infinity, () => this.inner.close()) as Promise<void>;
    return this.#closing;
  }

  #closed(): Promise<never> {
    return Promise.reject(new MediumError("closed", "file used after close", { path: this.inner.path }));
  }

  #submit(kind: OpKind, start: number, end: number, run: () => Promise<unknown>, data?: Uint8Array): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const op: Op = { seq: this.#seq++, kind, start, end, data, deps: 0, dependents: null, done: false, run, resolve, reject };
      this.stats.submitted++;
      for (const e of this.#active) {
        if (!conflicts(e, op)) continue;
        (e.dependents ??= []).push(op);
        op.deps++;
      }
      if (op.deps > 0) this.stats.waits++;
      this.#active.push(op);
      if (op.deps === 0) this.#makeReady(op);
    });
  }

  #makeReady(op: Op): void {
    if (this.stats.inFlight < this.maxInFlight && this.#readyHead === this.#ready.length) {
      this.#start(op);
      return;
    }
    this.stats.slotWaits++;
    this.#ready.push(op);
    this.#pump();
  }

  #pump(): void {
    while (this.stats.inFlight < this.maxInFlight && this.#readyHead < this.#ready.length) {
      const op = this.#ready[this.#readyHead++];
      if (this.#readyHead > 64 && this.#readyHead * 2 > this.#ready.length) {
        this.#ready = this.#ready.slice(this.#readyHead);
        this.#readyHead = 0;
      }
      this.#start(op);
    }
  }

  #start(op: Op): void {
    const s = this.stats;
    s.inFlight++;
    if (s.inFlight > s.maxInFlight) s.maxInFlight = s.inFlight;
    let p: Promise<unknown>;
    try {
      p = op.run();
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (v) => this.#finish(op, () => op.resolve(v)),
      (e) => this.#finish(op, () => op.reject(e)),
    );
  }

  #finish(op: Op, settle: () => void): void {
    this.stats.inFlight--;
    this.stats.completed++;
    op.done = true;
    const i = this.#active.indexOf(op);
    if (i >= 0) this.#active.splice(i, 1);
    op.data = undefined;
    // Settle first, so a request that waited for this one completes after it.
    settle();
    if (op.dependents) {
      for (const d of op.dependents) if (--d.deps === 0) this.#makeReady(d);
      op.dependents = null;
    }
    this.#pump();
  }
}

/** Wrap a file in the ordering queue: `queued(file, { maxInFlight: 8 })`. */
export function queued(inner: FileIo, options?: QueueOptions): QueuedFileIo {
  return new RequestQueue(inner, options);
}
