/**
 * A medium whose backing can change under a running guest: what an online snapshot (the disk
 * moves to a new differencing image) and an online merge (the chain loses an image) need.
 *
 * Controllers hold this object for the whole run. `exclusive(fn)` holds new requests back, waits
 * for those in flight, and runs `fn` alone, so a swap or one step of a merge never interleaves
 * with a guest request; the guest only sees a short delay.
 */
import type { BlockBackend, Extent } from "./block.js";

export class SwappableMedium implements BlockBackend {
  private inFlight = 0;
  private drained: (() => void) | undefined;
  /** Resolves when the current exclusive section ends; undefined while requests may run. */
  private gate: Promise<void> | undefined;
  /** Called after each guest write, inside the request (an online merge mirrors writes with it). */
  afterWrite: ((offset: number, data: Uint8Array) => Promise<void>) | undefined;

  constructor(private current: BlockBackend) {}

  get inner(): BlockBackend {
    return this.current;
  }
  get size(): number {
    return this.current.size;
  }
  get sectorSize(): number {
    return this.current.sectorSize;
  }
  get readOnly(): boolean {
    return this.current.readOnly;
  }
  get discardZeroes(): boolean | undefined {
    return this.current.discardZeroes;
  }

  /** Run `fn` with no guest request in flight and none starting until it ends. */
  async exclusive<T>(fn: (inner: BlockBackend) => Promise<T>): Promise<T> {
    while (this.gate) await this.gate;
    let open!: () => void;
    this.gate = new Promise<void>((r) => (open = r));
    try {
      if (this.inFlight) await new Promise<void>((r) => (this.drained = r));
      return await fn(this.current);
    } finally {
      this.gate = undefined;
      open();
    }
  }

  /** Put `next` in place (call inside exclusive); the caller closes the old backing. */
  replace(next: BlockBackend): BlockBackend {
    const old = this.current;
    this.current = next;
    return old;
  }

  private async request<T>(fn: (b: BlockBackend) => Promise<T>): Promise<T> {
    while (this.gate) await this.gate;
    this.inFlight++;
    try {
      return await fn(this.current);
    } finally {
      if (--this.inFlight === 0 && this.drained) {
        const d = this.drained;
        this.drained = undefined;
        d();
      }
    }
  }

  read(offset: number, buf: Uint8Array): Promise<void> {
    return this.request((b) => b.read(offset, buf));
  }
  write(offset: number, buf: Uint8Array): Promise<void> {
    return this.request(async (b) => {
      await b.write(offset, buf);
      if (this.afterWrite) await this.afterWrite(offset, buf);
    });
  }
  flush(): Promise<void> {
    return this.request((b) => b.flush());
  }
  discard(offset: number, length: number): Promise<void> {
    // While writes are mirrored, a discard would leave the mirror with the old data: skip it
    // (discard is a hint; reading the old data back is allowed).
    return this.request((b) => (this.afterWrite ? Promise.resolve() : b.discard(offset, length)));
  }
  allocatedExtents(): Promise<Extent[]> {
    return this.request((b) => b.allocatedExtents());
  }
  close(): Promise<void> {
    return this.current.close();
  }

  readonly readSync = (offset: number, buf: Uint8Array): boolean =>
    !this.gate && !!this.current.readSync && this.current.readSync(offset, buf);
  readonly writeSync = (offset: number, buf: Uint8Array): boolean =>
    !this.gate && !this.afterWrite && !!this.current.writeSync && this.current.writeSync(offset, buf);
}
