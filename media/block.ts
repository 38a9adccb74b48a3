/**
 * The block layer's contract: what every medium (raw, VDI, VMDK, ..., a differencing chain, an
 * iSCSI LUN) offers to controllers and tools. Asynchronous, many requests in flight, typed errors.
 * Pure: no Node or DOM types here, so devices and codecs can use it anywhere.
 */

/** Stable error kinds: callers branch on these, never on messages. */
export type MediumErrorKind =
  | "invalid-format" // not this format at all (bad signature, unknown version)
  | "corrupt" // this format, but inconsistent (map out of file, overlaps, truncated)
  | "unsupported" // valid, but uses a feature we do not implement
  | "out-of-bounds" // request outside the medium
  | "read-only" // write to a read-only medium or one opened read-only
  | "io" // the host refused (EIO, ENOSPC, a dying target)
  | "not-found" // a file, parent or medium that is not there
  | "locked" // in use by another VM or process
  | "duplicate-uuid" // an image whose UUID is already known at another location
  | "parent-modified" // a parent changed after its child was made
  | "in-use" // refused while attached / has children
  | "closed"; // used after close()

export interface MediumErrorContext {
  path?: string;
  offset?: number;
  cause?: unknown;
}

export class MediumError extends Error {
  readonly kind: MediumErrorKind;
  readonly path?: string;
  readonly offset?: number;

  constructor(kind: MediumErrorKind, message: string, context: MediumErrorContext = {}) {
    super(context.path ? `${context.path}: ${message}` : message, context.cause !== undefined ? { cause: context.cause } : undefined);
    this.name = "MediumError";
    this.kind = kind;
    this.path = context.path;
    this.offset = context.offset;
  }
}

/** A byte range of the virtual disk and what backs it. */
export interface Extent {
  offset: number;
  length: number;
  /** data: stored in this medium; zero: known to read as zeros; */
  state: "data" | "zero";
}

export interface BlockBackend {
  /** Virtual size in bytes (a multiple of sectorSize). */
  readonly size: number;
  /** 512 for disks, 2048 for CD/DVD images. */
  readonly sectorSize: number;
  readonly readOnly: boolean;
  /**
   * true: a discarded range reads back as zeros. false or absent: it reads back as zeros or as its
   * old data, sector by sector (a controller reports this as deterministic zeros after TRIM / LBPRZ).
   */
  readonly discardZeroes?: boolean;
  /** Fill `buf` from `offset`. Offset and length are multiples of sectorSize. */
  read(offset: number, buf: Uint8Array): Promise<void>;
  write(offset: number, buf: Uint8Array): Promise<void>;
  /** Everything written before flush() was called is durable when it resolves. */
  flush(): Promise<void>;
  /** The range may read back as zeros afterwards; space may be given back. */
  discard(offset: number, length: number): Promise<void>;
  /** The ranges this medium stores (for copy, compare, compact, map); zero-state where known. */
  allocatedExtents(): Promise<Extent[]>;
  close(): Promise<void>;
  /**
   * Optional synchronous fast path for front ends that may complete in the CPU loop (IDE): true
   * when `buf` was filled, false when it cannot be done synchronously now (use read()). Throws
   * a MediumError where read() would reject. Never blocks on more than a page-cached file access.
   */
  readSync?(offset: number, buf: Uint8Array): boolean;
  /** As readSync, for writes: true when written (as write() would have), false to use write(). */
  writeSync?(offset: number, buf: Uint8Array): boolean;
}

/** Reject requests that are misaligned or outside the medium, with a typed error. */
export function checkRequest(b: BlockBackend, offset: number, length: number, path?: string): void {
  const s = b.sectorSize;
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new MediumError("out-of-bounds", `invalid request offset ${offset} length ${length}`, { path, offset });
  }
  if (offset % s || length % s) {
    throw new MediumError("out-of-bounds", `request ${offset}+${length} is not aligned to ${s}-byte sectors`, { path, offset });
  }
  if (offset + length > b.size) {
    throw new MediumError("out-of-bounds", `request ${offset}+${length} is beyond the end (${b.size})`, { path, offset });
  }
}
