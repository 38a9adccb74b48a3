/**
 * Files for tests and fuzzing, pure (no Node types):
 *   - MemoryFileOpener / MemoryFileIo: files in memory, stored sparsely as 64 KiB chunks, so a
 *     2 TiB file with a few sectors written costs a few chunks;
 *   - HeldFileIo / HeldFileOpener: wrap any file to hold requests until the test releases them
 *     (in any order), fail the Nth request, let the file "die" (every request after a point fails
 *     with kind "io"), and count requests.
 */
import { MediumError } from "../block.js";
import { isZero } from "../bytes.js";
import type { FileIo, FileOpener, OpenOptions } from "./file-io.js";

// ---------------------------------------------------------------------------------------------
// Memory files

/** Chunk size of MemoryFile's sparse store. */
export const MEMORY_CHUNK = 64 * 1024;

/** One file's bytes: 64 KiB chunks in a map; a missing chunk reads as zeros. */
export class MemoryFile {
  readonly chunks = new Map<number, Uint8Array>();
  size = 0;
  /** flush() calls that reached this file. */
  flushes = 0;

  /** Bytes actually stored (allocated chunks times the chunk size). */
  get allocatedBytes(): number {
    return this.chunks.size * MEMORY_CHUNK;
  }

  read(pos: number, buf: Uint8Array): number {
    const n = Math.max(0, Math.min(buf.length, this.size - pos));
    let done = 0;
    while (done < n) {
      const p = pos + done;
      const index = Math.floor(p / MEMORY_CHUNK);
      const within = p - index * MEMORY_CHUNK;
      const len = Math.min(n - done, MEMORY_CHUNK - within);
      const chunk = this.chunks.get(index);
      if (chunk) buf.set(chunk.subarray(within, within + len), done);
      else buf.fill(0, done, done + len);
      done += len;
    }
    return n;
  }

  write(pos: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const p = pos + done;
      const index = Math.floor(p / MEMORY_CHUNK);
      const within = p - index * MEMORY_CHUNK;
      const len = Math.min(data.length - done, MEMORY_CHUNK - within);
      const piece = data.subarray(done, done + len);
      let chunk = this.chunks.get(index);
      // Zeros into a chunk that is not there change nothing: stay sparse.
      if (!chunk && !isZero(piece)) this.chunks.set(index, (chunk = new Uint8Array(MEMORY_CHUNK)));
      chunk?.set(piece, within);
      done += len;
    }
    this.size = Math.max(this.size, pos + data.length);
  }

  truncate(length: number): void {
    if (length < this.size) this.zero(length, this.size - length);
    this.size = length;
  }

  /** Zero a range, dropping whole chunks. */
  zero(pos: number, length: number): void {
    const end = Math.min(pos + length, this.size);
    for (let p = pos; p < end; ) {
      const index = Math.floor(p / MEMORY_CHUNK);
      const within = p - index * MEMORY_CHUNK;
      const len = Math.min(end - p, MEMORY_CHUNK - within);
      if (len === MEMORY_CHUNK) this.chunks.delete(index);
      else this.chunks.get(index)?.fill(0, within, within + len);
      p += len;
    }
    // Chunks wholly beyond the range's end are already covered; chunks past `size` never exist.
  }

  /** A copy of the whole file (tests on small files). */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.size);
    this.read(0, out);
    return out;
  }
}

/** A handle on a MemoryFile. Data changes when the call is made; the promise resolves later. */
export class MemoryFileIo implements FileIo {
  readonly path: string;
  readonly readOnly: boolean;
  readonly file: MemoryFile;
  #closed = false;

  constructor(file: MemoryFile, path = "memory", readOnly = false) {
    this.file = file;
    this.path = path;
    this.readOnly = readOnly;
  }

  async read(pos: number, buf: Uint8Array): Promise<number> {
    this.#check(pos);
    return this.file.read(pos, buf);
  }

  async write(pos: number, buf: Uint8Array): Promise<void> {
    this.#check(pos, true);
    this.file.write(pos, buf);
  }

  readSync(pos: number, buf: Uint8Array): number {
    this.#check(pos);
    return this.file.read(pos, buf);
  }

  writeSync(pos: number, buf: Uint8Array): boolean {
    this.#check(pos, true);
    this.file.write(pos, buf);
    return true;
  }

  async flush(): Promise<void> {
    this.#check(0);
    this.file.flushes++;
  }

  async size(): Promise<number> {
    this.#check(0);
    return this.file.size;
  }

  async truncate(length: number): Promise<void> {
    this.#check(length, true);
    this.file.truncate(length);
  }

  async punchHole(pos: number, length: number): Promise<void> {
    this.#check(pos, true);
    this.file.zero(pos, length);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  #check(pos: number, writing = false): void {
    if (this.#closed) throw new MediumError("closed", "file used after close", { path: this.path });
    if (writing && this.readOnly) throw new MediumError("read-only", "file is open read-only", { path: this.path });
    if (!Number.isSafeInteger(pos) || pos < 0) throw new MediumError("out-of-bounds", `invalid file position ${pos}`, { path: this.path });
  }
}

/** A folder of memory files. */
export class MemoryFileOpener implements FileOpener {
  readonly files = new Map<string, MemoryFile>();

  async open(path: string, options: OpenOptions = {}): Promise<MemoryFileIo> {
    let file = this.files.get(path);
    if (options.create) {
      if (file) throw new MediumError("io", "file already exists", { path });
      this.files.set(path, (file = new MemoryFile()));
    }
    if (!file) throw new MediumError("not-found", "no such file", { path });
    return new MemoryFileIo(file, path, options.readOnly ?? false);
  }

  async exists(path: string): Promise<boolean> {
    return this.files.has(path);
  }

  async remove(path: string): Promise<void> {
    if (!this.files.delete(path)) throw new MediumError("not-found", "no such file", { path });
  }

  async rename(from: string, to: string): Promise<void> {
    const file = this.files.get(from);
    if (!file) throw new MediumError("not-found", "no such file", { path: from });
    this.files.delete(from);
    this.files.set(to, file);
  }

  /** The file at path (throws if absent). */
  file(path: string): MemoryFile {
    const f = this.files.get(path);
    if (!f) throw new Error(`no memory file ${path}`);
    return f;
  }
}

// ---------------------------------------------------------------------------------------------
// Holding and failing requests

export type FileOp = "read" | "write" | "flush" | "size" | "truncate" | "punchHole" | "close";

/** A request held by a FaultControl, waiting for the test. */
export interface HeldRequest {
  /** 1-based number among all requests this control has seen. */
  readonly n: number;
  readonly op: FileOp;
  readonly path: string;
  /** File position and length (0 for flush, size, close; the new length for truncate). */
  readonly pos: number;
  readonly length: number;
  /** Let it go: in "before" mode it now reaches the inner file; in "after" mode it completes. */
  release(): void;
  /** Complete it with this error instead (it never reaches the file in "before" mode). */
  fail(error: unknown): void;
}

export interface FaultControlOptions {
  /**
   * "before" (default): a held request reaches the inner file only when released, so release
   * order is execution order and a request that overtakes another is visible in the data.
   * "after": the request runs at once and only its completion is held.
   */
  mode?: "before" | "after";
}

type Matcher = (r: { n: number; op: FileOp; path: string; pos: number; length: number }) => boolean;

/** Shared state of one or more HeldFileIo: counts, the held list, the fault rules. */
export class FaultControl {
  readonly mode: "before" | "after";
  readonly counts: Record<FileOp | "total", number> = { read: 0, write: 0, flush: 0, size: 0, truncate: 0, punchHole: 0, close: 0, total: 0 };
  readonly held: HeldRequest[] = [];
  #holding: Matcher | null = null;
  #failures: { match: Matcher; error: () => unknown; times: number }[] = [];
  #dieAfter = Infinity;
  #heldWaiters: { n: number; resolve: () => void }[] = [];

  constructor(options: FaultControlOptions = {}) {
    this.mode = options.mode ?? "before";
  }

  /** Hold the requests of these kinds (default reads and writes), or those a predicate picks. */
  hold(what: readonly FileOp[] | Matcher = ["read", "write"]): void {
    this.#holding = typeof what === "function" ? what : (r) => what.includes(r.op);
  }

  /** Hold no new requests; already held ones stay held until released. */
  stopHolding(): void {
    this.#holding = null;
  }

  /** Release the held request at this index of `held` (default the oldest). */
  release(index = 0): void {
    const r = this.held[index];
    if (!r) throw new Error(`no held request at ${index} (${this.held.length} held)`);
    r.release();
  }

  /** Release every held request, oldest first or newest first; returns how many. */
  releaseAll(order: "fifo" | "reverse" = "fifo"): number {
    const list = order === "fifo" ? [...this.held] : [...this.held].reverse();
    for (const r of list) r.release();
    return list.length;
  }

  /** Resolves when at least n requests are held. */
  whenHeld(n = 1): Promise<void> {
    if (this.held.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.#heldWaiters.push({ n, resolve }));
  }

  /** Fail the request numbered n (1-based, among all requests this control sees). */
  failNth(n: number, error: unknown = new MediumError("io", `injected failure of request ${n}`)): void {
    this.failWhen((r) => r.n === n, error);
  }

  /** Fail the next `times` requests matching the predicate with this error. */
  failWhen(match: Matcher, error: unknown, times = 1): void {
    this.#failures.push({ match, error: () => error, times });
  }

  /** The file dies: every request numbered above n fails with kind "io". */
  dieAfter(n: number): void {
    this.#dieAfter = n;
  }

  /** The file dies now. */
  die(): void {
    this.#dieAfter = this.counts.total;
  }

  /** Undo die(), dieAfter() and pending failNth()/failWhen() rules: the file works again. */
  revive(): void {
    this.#dieAfter = Infinity;
    this.#failures = [];
  }

  /** @internal Run one request of a HeldFileIo through the rules. */
  run<T>(op: FileOp, path: string, pos: number, length: number, perform: () => Promise<T>): Promise<T> {
    this.counts.total++;
    this.counts[op]++;
    const info = { n: this.counts.total, op, path, pos, length };
    if (info.n > this.#dieAfter) return Promise.reject(new MediumError("io", `file died (injected), ${op} at ${pos}`, { path, offset: pos }));
    for (const f of this.#failures) {
      if (f.times > 0 && f.match(info)) {
        f.times--;
        return Promise.reject(f.error());
      }
    }
    if (!this.#holding?.(info)) return perform();
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const take = () => {
        if (done) throw new Error(`held request ${info.n} already released`);
        done = true;
        this.held.splice(this.held.indexOf(req), 1);
      };
      let outcome: Promise<T> | null = this.mode === "after" ? perform() : null;
      // A held "after" request that fails before release must not be an unhandled rejection.
      outcome?.catch(() => {});
      const req: HeldRequest = {
        ...info,
        release: () => {
          take();
          (outcome ?? (outcome = perform())).then(resolve, reject);
        },
        fail: (error) => {
          take();
          reject(error);
        },
      };
      this.held.push(req);
      const ready = this.#heldWaiters.filter((w) => this.held.length >= w.n);
      this.#heldWaiters = this.#heldWaiters.filter((w) => this.held.length < w.n);
      for (const w of ready) w.resolve();
    });
  }
}

/** A file whose requests a test can hold, fail and count (see FaultControl). */
export class HeldFileIo implements FileIo {
  readonly inner: FileIo;
  readonly control: FaultControl;
  readonly punchHole?: (pos: number, length: number) => Promise<void>;

  constructor(inner: FileIo, control: FaultControl | FaultControlOptions = {}) {
    this.inner = inner;
    this.control = control instanceof FaultControl ? control : new FaultControl(control);
    if (inner.punchHole) {
      const punch = inner.punchHole.bind(inner);
      this.punchHole = (pos, length) => this.control.run("punchHole", this.path, pos, length, () => punch(pos, length));
    }
  }

  get path(): string {
    return this.inner.path;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  read(pos: number, buf: Uint8Array): Promise<number> {
    return this.control.run("read", this.path, pos, buf.length, () => this.inner.read(pos, buf));
  }
  write(pos: number, buf: Uint8Array): Promise<void> {
    return this.control.run("write", this.path, pos, buf.length, () => this.inner.write(pos, buf));
  }
  flush(): Promise<void> {
    return this.control.run("flush", this.path, 0, 0, () => this.inner.flush());
  }
  size(): Promise<number> {
    return this.control.run("size", this.path, 0, 0, () => this.inner.size());
  }
  truncate(length: number): Promise<void> {
    return this.control.run("truncate", this.path, length, 0, () => this.inner.truncate(length));
  }
  close(): Promise<void> {
    return this.control.run("close", this.path, 0, 0, () => this.inner.close());
  }

  // Shortcuts to the control, for tests on one file.
  get counts() {
    return this.control.counts;
  }
  get held(): readonly HeldRequest[] {
    return this.control.held;
  }
  hold(what?: readonly FileOp[] | Matcher): void {
    this.control.hold(what);
  }
  stopHolding(): void {
    this.control.stopHolding();
  }
  release(index?: number): void {
    this.control.release(index);
  }
  releaseAll(order?: "fifo" | "reverse"): number {
    return this.control.releaseAll(order);
  }
  whenHeld(n?: number): Promise<void> {
    return this.control.whenHeld(n);
  }
  failNth(n: number, error?: unknown): void {
    this.control.failNth(n, error);
  }
  dieAfter(n: number): void {
    this.control.dieAfter(n);
  }
  die(): void {
    this.control.die();
  }
  revive(): void {
    this.control.revive();
  }
}

/** Opens files of an inner opener as HeldFileIo sharing one FaultControl. */
export class HeldFileOpener implements FileOpener {
  readonly inner: FileOpener;
  readonly control: FaultControl;
  /** Every file opened through this opener. */
  readonly files: HeldFileIo[] = [];

  constructor(inner: FileOpener, control: FaultControl | FaultControlOptions = {}) {
    this.inner = inner;
    this.control = control instanceof FaultControl ? control : new FaultControl(control);
  }

  async open(path: string, options?: OpenOptions): Promise<HeldFileIo> {
    const f = new HeldFileIo(await this.inner.open(path, options), this.control);
    this.files.push(f);
    return f;
  }
  exists(path: string): Promise<boolean> {
    return this.inner.exists(path);
  }
  remove(path: string): Promise<void> {
    return this.inner.remove(path);
  }
  rename(from: string, to: string): Promise<void> {
    return this.inner.rename(from, to);
  }
}
