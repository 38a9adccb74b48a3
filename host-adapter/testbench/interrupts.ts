/**
 * Interrupt wiring of the test machine: sixteen ISA lines, each the wired-OR of its sources.
 *
 * A source is one device output: the INTx pin of a PCI function or an `isaIrq(n)` line. A PCI
 * function's contribution is masked while its INTx Disable command bit is set. Every edge of every
 * line is logged with the virtual time, so a test can check ordering as well as the final level.
 */

/** Number of ISA interrupt lines (two cascaded 8259s). */
export const ISA_IRQ_COUNT = 16;

/** ISA IRQ behind PIRQA..PIRQD, as SeaBIOS programs the PIIX routing registers. */
export const PIRQ_TO_ISA_IRQ: readonly number[] = [10, 10, 11, 11];

/**
 * The ISA IRQ a PCI INTx pin reaches on a PIIX board: pin INTA..INTD of `slot` is swizzled onto
 * PIRQ (pin - 1 + slot - 1) mod 4. Undefined for pin 0 (no interrupt).
 */
export function pciIntxIsaIrq(slot: number, pin: number): number | undefined {
  if (pin < 1 || pin > 4) return undefined;
  return PIRQ_TO_ISA_IRQ[(pin - 1 + slot - 1) & 3];
}

/** One edge of an ISA line. */
export interface IrqEdge {
  /** Virtual time of the edge, in ns. */
  time: number;
  irq: number;
  level: boolean;
}

/** One device output wired onto an ISA line. */
export class IrqSource {
  /** Level the device last asked for (may still wait in the host's queue). */
  requested = false;
  /** Level as the line sees it (before INTx masking). */
  applied = false;
  /** INTx Disable: the source still has a level, but the line ignores it. */
  masked = false;

  constructor(
    readonly irq: number,
    /** Called after the host applied a new level (PCI: mirror it in status bit 3). */
    readonly onApplied?: (level: boolean) => void,
  ) {}
}

export class InterruptRouter {
  /** Every edge of every line, oldest first. */
  readonly log: IrqEdge[] = [];
  private readonly sources: IrqSource[][] = Array.from({ length: ISA_IRQ_COUNT }, () => []);
  private readonly levels: boolean[] = new Array<boolean>(ISA_IRQ_COUNT).fill(false);

  constructor(private readonly now: () => number) {}

  /** Wire a new source onto `irq` (0..15). */
  addSource(irq: number, onApplied?: (level: boolean) => void): IrqSource {
    if (!Number.isInteger(irq) || irq < 0 || irq >= ISA_IRQ_COUNT) throw new RangeError(`ISA IRQ ${irq} out of range`);
    const source = new IrqSource(irq, onApplied);
    this.sources[irq].push(source);
    return source;
  }

  /** Drive a source to `level` and update its line. */
  apply(source: IrqSource, level: boolean): void {
    source.applied = level;
    source.onApplied?.(level);
    this.update(source.irq);
  }

  setMasked(source: IrqSource, masked: boolean): void {
    if (source.masked === masked) return;
    source.masked = masked;
    this.update(source.irq);
  }

  /** Current level of an ISA line: the OR of its unmasked sources. */
  level(irq: number): boolean {
    return this.levels[irq] ?? false;
  }

  private update(irq: number): void {
    const level = this.sources[irq].some((s) => s.applied && !s.masked);
    if (level === this.levels[irq]) return;
    this.levels[irq] = level;
    this.log.push({ time: this.now(), irq, level });
  }
}
