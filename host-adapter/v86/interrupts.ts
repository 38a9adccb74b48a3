/**
 * Interrupt lines on v86: wired-OR over v86's one-bit-per-line PIC, and no level change while
 * guest code is on the stack inside an MMIO handler.
 *
 * v86 keeps a single level bit per ISA line, so when two devices share IRQ 10 the first one to
 * lower it drops the line for both. We count our asserting sources per line, lower only when the
 * last one lets go, and wrap cpu.device_lower_irq so a v86 device lowering a shared line cannot
 * drop a level one of ours still holds.
 */
import type { V86Cpu } from "./internals.js";

export class InterruptLines {
  private readonly holders = new Map<number, Set<object>>();
  private readonly rawRaise: (irq: number) => void;
  private readonly rawLower: (irq: number) => void;

  constructor(private readonly cpu: V86Cpu) {
    this.rawRaise = cpu.device_raise_irq.bind(cpu);
    this.rawLower = cpu.device_lower_irq.bind(cpu);
    cpu.device_lower_irq = (irq: number) => {
      this.rawLower(irq);
      if (this.holders.get(irq)?.size) this.rawRaise(irq);
    };
  }

  /**
   * While true, drive() only updates our bookkeeping: after a state restore v86 has already put
   * the PIC back as it was, and touching it again would fake an edge.
   */
  adoptingRestoredState = false;

  /** Source `who` drives `irq` to `level`. */
  drive(who: object, irq: number, level: boolean): void {
    let set = this.holders.get(irq);
    if (!set) this.holders.set(irq, (set = new Set()));
    const before = set.size > 0;
    if (level) set.add(who);
    else set.delete(who);
    const after = set.size > 0;
    if (this.adoptingRestoredState) return;
    if (after && !before) this.rawRaise(irq);
    else if (!after && before) this.rawLower(irq);
  }

  isUp(irq: number): boolean {
    return (this.holders.get(irq)?.size ?? 0) > 0;
  }

  /** Forget every holder without touching the PIC (before adopting restored state). */
  forgetAll(): void {
    this.holders.clear();
  }

  /** Drop every level we hold (machine reset). */
  releaseAll(): void {
    for (const [irq, set] of this.holders) {
      if (set.size) {
        set.clear();
        this.rawLower(irq);
      }
    }
  }
}
