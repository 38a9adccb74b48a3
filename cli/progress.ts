/**
 * Progress of long medium work on stderr, so stdout (and --json) stays clean.
 *
 * - Nothing at all until the work has run for `delayMs` (1 s): quick jobs print nothing.
 * - On a terminal: one line redrawn in place with \r, at most every 100 ms, cleared at the end.
 * - Elsewhere (pipes, CI logs): one line per 10% step, nothing more at the end.
 * VSTOR_PROGRESS=0 turns it off; VSTOR_PROGRESS=1 shows it from the start (no delay).
 */

export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  stream?: ProgressStream;
  /** Show nothing before the work has run this long (ms). */
  delayMs?: number;
  /** Clock in ms (tests pass their own). */
  now?: () => number;
  /** Overrides VSTOR_PROGRESS. */
  enabled?: boolean;
}

export interface Progress {
  /** `done` of `total` steps of `phase` (a new phase starts over at 0%). */
  update(done: number, total: number, phase?: string): void;
  /** The work is over (or failed): a terminal line is cleared. */
  finish(): void;
}

const BAR = 30;
const REDRAW_MS = 100;

export function progress(label: string, options: ProgressOptions = {}): Progress {
  const env = process.env.VSTOR_PROGRESS;
  const stream = options.stream ?? process.stderr;
  const enabled = options.enabled ?? env !== "0";
  const now = options.now ?? (() => Date.now());
  const delay = options.delayMs ?? (env === "1" ? 0 : 1000);
  const tty = !!stream.isTTY;
  const start = now();
  let phase: string | undefined;
  let lastDraw = -Infinity;
  let lastWidth = 0;
  /** Non-TTY: the last 10% step printed for this phase (-1: none). */
  let lastStep = -1;
  let drawn = false;

  const text = (done: number, total: number): string => {
    const f = total > 0 ? Math.min(1, done / total) : 1;
    const pct = `${Math.floor(f * 100)}%`.padStart(4);
    const head = phase ? `${label}: ${phase}` : label;
    if (!tty) return `${head} ${pct} (${done}/${total})`;
    const fill = Math.round(f * BAR);
    return `${head} [${"#".repeat(fill)}${"-".repeat(BAR - fill)}] ${pct} (${done}/${total})`;
  };

  const drawTty = (line: string): void => {
    const max = Math.max(20, (stream.columns ?? 80) - 1);
    const shown = line.length > max ? line.slice(0, max) : line;
    stream.write(`\r${shown}${" ".repeat(Math.max(0, lastWidth - shown.length))}`);
    lastWidth = shown.length;
    drawn = true;
  };

  return {
    update(done, total, ph) {
      if (!enabled) return;
      if (ph !== phase) {
        phase = ph;
        lastStep = -1;
        lastDraw = -Infinity;
      }
      const t = now();
      if (t - start < delay) return;
      if (tty) {
        if (t - lastDraw < REDRAW_MS && done < total) return;
        lastDraw = t;
        drawTty(text(done, total));
        return;
      }
      const step = total > 0 ? Math.floor((Math.min(done, total) / total) * 10) : 10;
      if (step <= lastStep) return;
      lastStep = step;
      stream.write(text(done, total) + "\n");
      drawn = true;
    },
    finish() {
      if (!enabled || !drawn) return;
      if (tty) {
        stream.write(`\r${" ".repeat(lastWidth)}\r`);
        lastWidth = 0;
      }
      drawn = false;
    },
  };
}
