/**
 * Allocation of a block (grain, cluster) happens once, whoever writes to it first: writers that
 * arrive while it is under way wait for it and then look at the block again (it is stored now,
 * or the allocation failed and they try themselves). Shared by every allocating format.
 */
export class Allocations {
  private readonly running = new Map<number, Promise<void>>();

  /**
   * Run `allocate` for block `index` unless an allocation of it is under way; then wait for that
   * one instead. Resolves true when `allocate` ran here (its error rejects), false when the
   * caller should look at the block again.
   */
  async once(index: number, allocate: () => Promise<void>): Promise<boolean> {
    const pending = this.running.get(index);
    if (pending) {
      await pending.catch(() => undefined);
      return false;
    }
    const job = allocate();
    this.running.set(index, job);
    try {
      await job;
    } finally {
      this.running.delete(index);
    }
    return true;
  }

  /**
   * Run `allocate` for blocks [first, first + count) together; none may be under way (the caller
   * checked busy() in the same tick). Writers to any of them wait for it as for once().
   */
  async runAll(first: number, count: number, allocate: () => Promise<void>): Promise<void> {
    for (let i = first; i < first + count; i++) if (this.running.has(i)) throw new Error(`internal: block ${i} is already being allocated`);
    const job = allocate();
    for (let i = first; i < first + count; i++) this.running.set(i, job);
    try {
      await job;
    } finally {
      for (let i = first; i < first + count; i++) this.running.delete(i);
    }
  }

  /** An allocation of block `index` is under way. */
  busy(index: number): boolean {
    return this.running.has(index);
  }

  /** Wait until no allocation of block `index` is under way. */
  async settled(index: number): Promise<void> {
    while (this.running.has(index)) await this.running.get(index)!.catch(() => undefined);
  }

  /** Wait for every allocation under way (before close). */
  async all(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
  }
}
