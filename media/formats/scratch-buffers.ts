/**
 * Block-sized scratch buffers, reused: where a write into a new block must build the whole block
 * (the rest zeros or the parent's data), a fresh 1 MiB buffer per block costs page faults each
 * time, which on a small VM cost more than clearing a buffer already mapped. Pure.
 */
export class ScratchBuffers {
  private readonly free: Uint8Array[] = [];
  /** Buffers kept between uses: a few, and never more than 8 MiB (blocks can be 128 MiB). */
  private readonly keep: number;

  constructor(readonly size: number) {
    this.keep = Math.min(4, Math.floor((8 << 20) / Math.max(1, size)));
  }

  /** A zeroed buffer of `size` bytes, owned by the caller until it gives it back. */
  take(): Uint8Array {
    const b = this.free.pop();
    return b ? b.fill(0) : new Uint8Array(this.size);
  }

  /** Give a buffer back once nothing uses it any more (its writes have completed). */
  give(b: Uint8Array): void {
    if (b.length === this.size && this.free.length < this.keep) this.free.push(b);
  }
}
