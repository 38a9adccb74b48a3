/**
 * What O_DIRECT needs from memory and ordering, for NodeFileIo:
 *   - BouncePool: page-aligned 1 MiB buffers. Node cannot align a Buffer, and O_DIRECT needs
 *     the buffer's address aligned (EINVAL otherwise), so the buffers come from WebAssembly
 *     memories, which V8 maps page-aligned. Shared by every file, allocated lazily, reused (a
 *     fresh allocation costs page faults on every request), bounded.
 *   - PageLocks: keeps page-cache (buffered) pieces and direct pieces that touch the same pages
 *     from running at the same time, because Linux does not keep the page cache coherent with a
 *     concurrent O_DIRECT write to the same page (a dirty page written back later would undo it).
 */

/** Bounce buffer size, and so the largest piece one direct read or write syscall moves. */
export const BOUNCE_SIZE = 1 << 20;
const SLOTS_PER_ARENA = 8;
const WASM_PAGE = 64 * 1024;

interface WasmMemoryCtor {
  new (descriptor: { initial: number; maximum?: number }): { readonly buffer: ArrayBuffer };
}
const WasmMemory = (globalThis as unknown as { WebAssembly: { Memory: WasmMemoryCtor } }).WebAssembly.Memory;

export class BouncePool {
  readonly maxSlots: number;
  #free: Uint8Array[] = [];
  #slots = 0;
  #waiters: ((slot: Uint8Array) => void)[] = [];

  constructor(maxSlots = 64) {
    this.maxSlots = Math.max(SLOTS_PER_ARENA, maxSlots);
  }

  /** Slots allocated so far. */
  get allocated(): number {
    return this.#slots;
  }

  acquire(): Promise<Uint8Array> {
    const slot = this.#free.pop();
    if (slot) return Promise.resolve(slot);
    if (this.#slots < this.maxSlots) {
      const pages = (SLOTS_PER_ARENA * BOUNCE_SIZE) / WASM_PAGE;
      const arena = new WasmMemory({ initial: pages, maximum: pages }).buffer;
      for (let i = 1; i < SLOTS_PER_ARENA; i++) this.#free.push(new Uint8Array(arena, i * BOUNCE_SIZE, BOUNCE_SIZE));
      this.#slots += SLOTS_PER_ARENA;
      return Promise.resolve(new Uint8Array(arena, 0, BOUNCE_SIZE));
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  release(slot: Uint8Array): void {
    const next = this.#waiters.shift();
    if (next) next(slot);
    else this.#free.push(slot);
  }
}

/** Lock granularity: the largest page size Linux uses (64 KiB on some arm64 kernels). */
const LOCK_PAGE = 64 * 1024;

export type PieceClass = "buffered" | "direct";

interface Entry {
  start: number;
  end: number;
  cls: PieceClass;
  /** Made only when another piece has to wait for this one. */
  done?: Promise<void>;
  finish?: () => void;
}

function doneOf(e: Entry): Promise<void> {
  return (e.done ??= new Promise<void>((r) => (e.finish = r)));
}

/**
 * Pieces of one class never wait for each other; a piece waits for every earlier piece of the
 * other class on the same pages (first come, first served, so neither class starves).
 */
export class PageLocks {
  #entries: Entry[] = [];
  /** Pieces that had to wait (for tests). */
  waits = 0;

  async run<T>(cls: PieceClass, pos: number, length: number, fn: () => Promise<T>): Promise<T> {
    const start = Math.floor(pos / LOCK_PAGE) * LOCK_PAGE;
    const end = Math.ceil((pos + length) / LOCK_PAGE) * LOCK_PAGE;
    let blockers: Promise<void>[] | null = null;
    for (const e of this.#entries) if (e.cls !== cls && e.start < end && start < e.end) (blockers ??= []).push(doneOf(e));
    const entry: Entry = { start, end, cls };
    this.#entries.push(entry);
    try {
      if (blockers) {
        this.waits++;
        await Promise.all(blockers);
      }
      return await fn();
    } finally {
      this.#entries.splice(this.#entries.indexOf(entry), 1);
      entry.finish?.();
    }
  }
}
