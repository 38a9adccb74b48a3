/**
 * Virtual time for the test machine. Time stands still until the test advances it; timers fire in
 * deadline order, and timers with the same deadline in the order they were set.
 */
import type { Clock, TimerHandle } from "../host.js";

interface Timer {
  deadline: number;
  seq: number;
  fn: () => void;
}

export class VirtualClock implements Clock {
  private now = 0;
  private seq = 0;
  /** Pending timers sorted by (deadline, seq). */
  private timers: Timer[] = [];

  /** Called whenever a device touches the clock (the host's activity counter for settle()). */
  constructor(private readonly onUse: () => void = () => {}) {}

  nowNs(): number {
    return this.now;
  }

  /** A negative, NaN or infinite delay counts as 0: the timer is due at once (on the next advance). */
  setTimer(delayNs: number, fn: () => void): TimerHandle {
    this.onUse();
    const delay = Number.isFinite(delayNs) && delayNs > 0 ? delayNs : 0;
    const timer: Timer = { deadline: this.now + delay, seq: this.seq++, fn };
    this.timers.splice(this.insertionPoint(timer), 0, timer);
    return {
      cancel: () => {
        this.onUse();
        const i = this.timers.indexOf(timer);
        if (i >= 0) this.timers.splice(i, 1);
      },
    };
  }

  get pendingTimers(): number {
    return this.timers.length;
  }

  /** Deadline of the earliest pending timer. */
  nextDeadline(): number | undefined {
    return this.timers[0]?.deadline;
  }

  /**
   * Take the earliest timer due at or before `limit`, moving the clock to its deadline (never
   * backwards). The caller runs the returned function.
   */
  takeDue(limit: number): (() => void) | undefined {
    const first = this.timers[0];
    if (!first || first.deadline > limit) return undefined;
    this.timers.shift();
    if (first.deadline > this.now) this.now = first.deadline;
    return first.fn;
  }

  /** Move the clock forward to `ns` without running anything (the host runs due timers first). */
  advanceTo(ns: number): void {
    if (ns > this.now) this.now = ns;
  }

  /** Restore: set the time and forget every pending timer (their closures belong to the old run). */
  resetTo(ns: number): void {
    this.now = ns;
    this.timers = [];
  }

  private insertionPoint(t: Timer): number {
    let lo = 0;
    let hi = this.timers.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = this.timers[mid];
      if (m.deadline < t.deadline || (m.deadline === t.deadline && m.seq < t.seq)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
