/**
 * Small promise-based locks for format backends: a mutex that keeps metadata writes in order,
 * and a gate that lets ordinary I/O run side by side while maintenance (compact, resize, block
 * relocation, close) waits for it to drain and then runs alone. Pure: no timers, no platform.
 */

/** One holder at a time, first come first served. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  /** Run `fn` once every earlier holder has finished (even if one of them failed). */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

/**
 * Shared/exclusive gate. Shared holders run concurrently; an exclusive holder waits for them to
 * finish and keeps new shared holders out until it is done (writer preference, so maintenance is
 * not starved by a busy guest).
 */
export class Gate {
  private shared = 0;
  private exclusive = false;
  private queue: { exclusive: boolean; wake: () => void }[] = [];

  async runShared<T>(fn: () => Promise<T>): Promise<T> {
    if (this.exclusive || this.queue.length > 0) {
      await new Promise<void>((wake) => this.queue.push({ exclusive: false, wake }));
    } else {
      this.shared++;
    }
    try {
      return await fn();
    } finally {
      this.shared--;
      this.pump();
    }
  }

  async runExclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.exclusive || this.shared > 0 || this.queue.length > 0) {
      await new Promise<void>((wake) => this.queue.push({ exclusive: true, wake }));
    } else {
      this.exclusive = true;
    }
    try {
      return await fn();
    } finally {
      this.exclusive = false;
      this.pump();
    }
  }

  /** Admit waiters in order: one exclusive holder, or every shared holder up to the next exclusive one. */
  private pump(): void {
    if (this.exclusive || this.shared > 0) return;
    const first = this.queue[0];
    if (!first) return;
    if (first.exclusive) {
      this.queue.shift();
      this.exclusive = true;
      first.wake();
      return;
    }
    while (this.queue.length > 0 && !this.queue[0]!.exclusive) {
      this.shared++;
      this.queue.shift()!.wake();
    }
  }
}
