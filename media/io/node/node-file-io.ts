/**
 * FileIo on Node: positioned fs.read / fs.write on raw descriptors, which run on libuv's thread
 * pool, so many requests are in flight at once (ordering between them is the request queue's job,
 * not this file's).
 *
 * Host I/O cache off (`direct: true`): a second descriptor opened with O_DIRECT where the
 * platform has it (Linux). O_DIRECT needs the file position, the length and the buffer's address
 * aligned to the device's logical block, so every request is split into
 *   - an aligned middle, moved through page-aligned bounce buffers (1 MiB pieces) on the direct
 *     descriptor, and
 *   - unaligned head and tail pieces (a 4-byte map entry, a 512-byte sector on a 4 KiB device),
 *     moved through the page cache on the ordinary descriptor; flush() syncs both, and pieces of
 *     the two kinds on the same pages never run at once (see PageLocks).
 * The alignment starts at 512 and rises to 4096 when the kernel answers EINVAL; if 4096 fails too,
 * or the file system refuses O_DIRECT at open, the file quietly falls back to the page cache
 * (`direct` then reads false).
 *
 * flush() is fdatasync. punchHole is not provided: Node has no fallocate(PUNCH_HOLE), and writing
 * zeros would neither be cheap nor give space back.
 */
import * as fs from "node:fs";
import { MediumError, type MediumErrorKind } from "../../block.js";
import type { FileIo, FileOpener, OpenOptions } from "../file-io.js";
import { BOUNCE_SIZE, BouncePool, PageLocks } from "./aligned.js";

/** O_DIRECT, where this platform has it. */
const O_DIRECT: number | undefined = (fs.constants as Record<string, number | undefined>).O_DIRECT;

const bounce = new BouncePool();

/** Map a Node error to a MediumError with a stable kind and the path. */
export function mediumErrorFromNode(err: unknown, path: string, what: string, offset?: number): MediumError {
  if (err instanceof MediumError) return err;
  const code = (err as NodeJS.ErrnoException | null)?.code ?? "";
  const kind: MediumErrorKind = (
    {
      ENOENT: "not-found",
      ENOTDIR: "not-found",
      EACCES: "read-only",
      EPERM: "read-only",
      EROFS: "read-only",
      EAGAIN: "locked",
      EWOULDBLOCK: "locked",
      EBUSY: "locked",
      ETXTBSY: "locked",
      EDEADLK: "locked",
    } as Record<string, MediumErrorKind>
  )[code] ?? "io";
  const message = err instanceof Error ? err.message : String(err);
  return new MediumError(kind, `${what} failed: ${message}`, { path, offset, cause: err });
}

function openFd(path: string, flags: number, mode = 0o644): Promise<number> {
  return new Promise((resolve, reject) => fs.open(path, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))));
}
function closeFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}
function pread(fd: number, buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));
}
function pwrite(fd: number, buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

/** Read until len bytes or end of file. */
async function readFully(fd: number, buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
  let done = 0;
  while (done < len) {
    const n = await pread(fd, buf, off + done, len - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

async function writeFully(fd: number, buf: Uint8Array, off: number, len: number, pos: number): Promise<void> {
  let done = 0;
  while (done < len) done += await pwrite(fd, buf, off + done, len - done, pos + done);
}

const isEinval = (e: unknown) => (e as NodeJS.ErrnoException | null)?.code === "EINVAL";

export interface NodeFileOpenerOptions {
  /**
   * The O_DIRECT alignment to try first (512 or 4096, default 512); it rises to 4096 on EINVAL.
   * Tests set 4096 to exercise the unaligned-piece path on a 512-byte device.
   */
  directAlignment?: number;
}

export class NodeFileIo implements FileIo {
  readonly path: string;
  readonly readOnly: boolean;
  #fd: number;
  #dfd: number;
  /** Direct descriptors given up on, closed with the file. */
  #retired: number[] = [];
  #align: number;
  #locks = new PageLocks();
  #closed = false;
  #closing: Promise<void> | null = null;
  #inFlight = 0;
  #drained: (() => void) | null = null;

  /** Use NodeFileOpener.open. */
  constructor(path: string, fd: number, directFd: number, readOnly: boolean, alignment: number) {
    this.path = path;
    this.#fd = fd;
    this.#dfd = directFd;
    this.readOnly = readOnly;
    this.#align = alignment;
  }

  /** The host page cache is bypassed (O_DIRECT in use). */
  get direct(): boolean {
    return this.#dfd >= 0;
  }
  /** The O_DIRECT alignment in use (bytes). */
  get directAlignment(): number {
    return this.#align;
  }
  /** Direct and page-cache pieces that had to wait for each other (tests). */
  get lockWaits(): number {
    return this.#locks.waits;
  }

  read(pos: number, buf: Uint8Array): Promise<number> {
    return this.#op("read", pos, false, () => (this.#dfd >= 0 ? this.#direct(false, pos, buf) : readFully(this.#fd, buf, 0, buf.length, pos)));
  }

  write(pos: number, buf: Uint8Array): Promise<void> {
    return this.#op("write", pos, true, async () => void (this.#dfd >= 0 ? await this.#direct(true, pos, buf) : await writeFully(this.#fd, buf, 0, buf.length, pos)));
  }

  /** Page-cache descriptor only: with O_DIRECT a synchronous access would wait for the disk. */
  readSync(pos: number, buf: Uint8Array): number | undefined {
    if (this.#dfd >= 0 || this.#closed) return undefined;
    this.#checkPos("read", pos, false);
    try {
      let done = 0;
      while (done < buf.length) {
        const n = fs.readSync(this.#fd, buf, done, buf.length - done, pos + done);
        if (n === 0) break;
        done += n;
      }
      return done;
    } catch (e) {
      throw mediumErrorFromNode(e, this.path, "read", pos);
    }
  }

  writeSync(pos: number, buf: Uint8Array): boolean {
    if (this.#dfd >= 0 || this.#closed) return false;
    this.#checkPos("write", pos, true);
    try {
      let done = 0;
      while (done < buf.length) done += fs.writeSync(this.#fd, buf, done, buf.length - done, pos + done);
      return true;
    } catch (e) {
      throw mediumErrorFromNode(e, this.path, "write", pos);
    }
  }

  flush(): Promise<void> {
    return this.#op("flush", undefined, false, () => new Promise<void>((resolve, reject) => fs.fdatasync(this.#fd, (err) => (err ? reject(err) : resolve()))));
  }

  size(): Promise<number> {
    return this.#op("stat", undefined, false, () => new Promise<number>((resolve, reject) => fs.fstat(this.#fd, (err, st) => (err ? reject(err) : resolve(st.size)))));
  }

  truncate(length: number): Promise<void> {
    return this.#op("truncate", length, true, () => new Promise<void>((resolve, reject) => fs.ftruncate(this.#fd, length, (err) => (err ? reject(err) : resolve()))));
  }

  close(): Promise<void> {
    if (!this.#closing) {
      this.#closed = true;
      this.#closing = this.#close();
    }
    return this.#closing;
  }

  async #close(): Promise<void> {
    // Never close a descriptor under a request still running on the thread pool.
    if (this.#inFlight > 0) await new Promise<void>((r) => (this.#drained = r));
    try {
      for (const fd of [...this.#retired, this.#dfd]) if (fd >= 0) await closeFd(fd);
      await closeFd(this.#fd);
    } catch (e) {
      throw mediumErrorFromNode(e, this.path, "close");
    }
  }

  #checkPos(what: string, pos: number | undefined, writing: boolean): void {
    if (this.#closed) throw new MediumError("closed", `${what} after close`, { path: this.path });
    if (writing && this.readOnly) throw new MediumError("read-only", `${what} on a file opened read-only`, { path: this.path, offset: pos });
    if (pos !== undefined && (!Number.isSafeInteger(pos) || pos < 0)) throw new MediumError("out-of-bounds", `invalid file position ${pos}`, { path: this.path });
  }

  async #op<T>(what: string, pos: number | undefined, writing: boolean, run: () => Promise<T>): Promise<T> {
    this.#checkPos(what, pos, writing);
    this.#inFlight++;
    try {
      return await run();
    } catch (e) {
      throw mediumErrorFromNode(e, this.path, what, pos);
    } finally {
      if (--this.#inFlight === 0 && this.#drained) this.#drained();
    }
  }

  // ---- direct mode ----

  /** EINVAL on the direct descriptor: raise the alignment, or give up on O_DIRECT. */
  #onEinval(usedAlignment: number): void {
    if (usedAlignment !== this.#align || this.#dfd < 0) return; // another request already adapted
    if (this.#align < 4096) {
      this.#align = 4096;
      return;
    }
    // Pieces may still be running on it: it is closed with the file, never under them.
    this.#retired.push(this.#dfd);
    this.#dfd = -1;
  }

  /**
   * One request with O_DIRECT: the page-cache head and tail start at once, beside the direct
   * middle (which goes piece by piece), so every piece takes its page lock in request order.
   * Every piece has settled before this returns, so nothing of a failed request runs on.
   * Resolves with the count (reads: short at the end of the file).
   */
  async #direct(write: boolean, pos: number, buf: Uint8Array): Promise<number> {
    const align = this.#align;
    const dfd = this.#dfd;
    const end = pos + buf.length;
    let a0 = Math.ceil(pos / align) * align;
    let a1 = Math.floor(end / align) * align;
    if (a1 <= a0) a0 = a1 = end; // no aligned block inside: all of it is "head"
    const head = a0 - pos;
    const tail = end - a1;
    const edge = (at: number, len: number): Promise<number> =>
      len === 0
        ? Promise.resolve(0)
        : this.#locks.run("buffered", at, len, () => (write ? writeFully(this.#fd, buf, at - pos, len, at).then(() => len) : readFully(this.#fd, buf, at - pos, len, at)));
    const parts = await Promise.allSettled([edge(pos, head), edge(a1, tail), this.#middle(write, dfd, align, pos, buf, a0, a1)]);
    const errors = parts.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    if (errors.length) {
      const hard = errors.find((e) => !isEinval(e));
      if (hard !== undefined) throw hard;
      // Nothing of a piece is moved when O_DIRECT refuses it; doing the request again is safe.
      this.#onEinval(align);
      if (this.#dfd >= 0) return this.#direct(write, pos, buf);
      return write ? writeFully(this.#fd, buf, 0, buf.length, pos).then(() => buf.length) : readFully(this.#fd, buf, 0, buf.length, pos);
    }
    const [h, t, m] = parts.map((r) => (r as PromiseFulfilledResult<number>).value);
    if (h < head) return h;
    if (m < a1 - a0) return head + m;
    return head + m + t;
  }

  /** The aligned middle [a0, a1) of a direct request, in bounce-buffer pieces; the count moved. */
  async #middle(write: boolean, dfd: number, align: number, pos: number, buf: Uint8Array, a0: number, a1: number): Promise<number> {
    for (let p = a0; p < a1; p += BOUNCE_SIZE) {
      const len = Math.min(BOUNCE_SIZE, a1 - p);
      if (write) {
        await this.#locks.run("direct", p, len, () => this.#directWrite(dfd, align, p, buf, p - pos, len));
      } else {
        const n = await this.#locks.run("direct", p, len, () => this.#directRead(dfd, align, p, buf, p - pos, len));
        if (n < len) return p - a0 + n;
      }
    }
    return a1 - a0;
  }

  async #directRead(dfd: number, align: number, pos: number, buf: Uint8Array, off: number, len: number): Promise<number> {
    const slot = await bounce.acquire();
    try {
      let done = 0;
      while (done < len) {
        const n = await pread(dfd, slot, done, len - done, pos + done);
        if (n === 0) break;
        done += n;
        // Short, and not aligned enough to go on directly (the end of the file, as a rule):
        // finish through the page cache, which also finds the end of the file.
        if (done < len && done % align !== 0) {
          done += await readFully(this.#fd, slot, done, len - done, pos + done);
          break;
        }
      }
      buf.set(slot.subarray(0, done), off);
      return done;
    } finally {
      bounce.release(slot);
    }
  }

  async #directWrite(dfd: number, align: number, pos: number, buf: Uint8Array, off: number, len: number): Promise<void> {
    const slot = await bounce.acquire();
    try {
      slot.set(buf.subarray(off, off + len));
      let done = 0;
      while (done < len) {
        done += await pwrite(dfd, slot, done, len - done, pos + done);
        if (done < len && done % align !== 0) {
          // A short, unaligned count cannot go on directly; finish through the page cache.
          await writeFully(this.#fd, slot, done, len - done, pos + done);
          break;
        }
      }
    } finally {
      bounce.release(slot);
    }
  }
}

export class NodeFileOpener implements FileOpener {
  readonly #alignment: number;

  constructor(options: NodeFileOpenerOptions = {}) {
    const a = options.directAlignment ?? 512;
    if (a !== 512 && a !== 4096) throw new RangeError(`directAlignment must be 512 or 4096, got ${a}`);
    this.#alignment = a;
  }

  async open(path: string, options: OpenOptions = {}): Promise<NodeFileIo> {
    const readOnly = options.readOnly ?? false;
    const access = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
    let fd: number;
    try {
      fd = await openFd(path, access | (options.create ? fs.constants.O_CREAT | fs.constants.O_EXCL : 0));
    } catch (e) {
      throw mediumErrorFromNode(e, path, options.create ? "create" : "open");
    }
    let dfd = -1;
    if (options.direct && O_DIRECT !== undefined) {
      try {
        dfd = await openFd(path, access | O_DIRECT);
      } catch (e) {
        // EINVAL: this file system has no O_DIRECT; keep the page cache.
        if (!isEinval(e)) {
          await closeFd(fd).catch(() => {});
          throw mediumErrorFromNode(e, path, "open (O_DIRECT)");
        }
      }
    }
    return new NodeFileIo(path, fd, dfd, readOnly, this.#alignment);
  }

  exists(path: string): Promise<boolean> {
    return new Promise((resolve) => fs.access(path, (err) => resolve(!err)));
  }

  remove(path: string): Promise<void> {
    return new Promise((resolve, reject) => fs.unlink(path, (err) => (err ? reject(mediumErrorFromNode(err, path, "remove")) : resolve())));
  }

  rename(from: string, to: string): Promise<void> {
    return new Promise((resolve, reject) => fs.rename(from, to, (err) => (err ? reject(mediumErrorFromNode(err, from, `rename to ${to}`)) : resolve())));
  }
}
