/**
 * The host side of the guest agent protocol (guest-tests/agent-protocol.md) over the serial
 * console: marker lines starting with "@@VSTOR " frame boot progress, script runs and files.
 */

export interface GuestRunResult {
  status: number;
  output: string;
  files: Map<string, Uint8Array>;
}

export class GuestFailure extends Error {
  constructor(
    message: string,
    readonly transcript: string,
  ) {
    super(`${message}\n--- guest console (last 6000 characters) ---\n${transcript.slice(-6000)}`);
    this.name = "GuestFailure";
  }
}

interface Waiter {
  test(line: string): boolean;
  resolve(line: string): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
}

const MARKER = "@@VSTOR ";
const PANIC = /Kernel panic|end Kernel panic|BUG: unable to handle/;
const MAX_TRANSCRIPT = 4 << 20;

export class GuestConsole {
  private text = "";
  private partial = "";
  private readonly waiters = new Set<Waiter>();
  private readonly decoder = new TextDecoder("utf-8");
  private captures = new Map<string, { lines: string[]; files: Map<string, Uint8Array> }>();
  private fileInProgress?: { id: string; name: string; size: number; b64: string[] };
  private current?: string;
  private panicked?: string;
  /** Every line the guest prints, for an interactive terminal or a log. */
  onLine?: (line: string) => void;

  constructor(private readonly send: (text: string) => void) {}

  get transcript(): string {
    return this.text;
  }

  /** Feed one byte from the serial port. */
  onByte(byte: number): void {
    const ch = this.decoder.decode(new Uint8Array([byte]), { stream: true });
    if (!ch) return;
    this.text += ch;
    if (this.text.length > MAX_TRANSCRIPT) this.text = this.text.slice(-MAX_TRANSCRIPT / 2);
    if (ch !== "\n") {
      this.partial += ch;
      return;
    }
    const line = this.partial.replace(/\r$/, "");
    this.partial = "";
    this.onLine?.(line);
    this.handleLine(line);
  }

  private handleLine(line: string): void {
    if (PANIC.test(line) && !this.panicked) {
      this.panicked = line;
      // Give the kernel a moment to print the rest of the oops before failing everyone.
      setTimeout(() => {
        for (const w of [...this.waiters]) this.finish(w, new GuestFailure(`guest kernel failed: ${line}`, this.text));
      }, 500);
    }
    const at = line.indexOf(MARKER);
    if (at >= 0) this.handleMarker(line.slice(at + MARKER.length).trim().split(/\s+/));
    else if (this.fileInProgress) this.fileInProgress.b64.push(line.trim());
    else if (this.current) this.captures.get(this.current)?.lines.push(line);
    for (const w of [...this.waiters]) if (w.test(line)) this.finish(w, line);
  }

  private handleMarker(words: string[]): void {
    const [kind, a, b] = words;
    if (kind === "START") {
      this.current = a;
      if (!this.captures.has(a)) this.captures.set(a, { lines: [], files: new Map() });
    } else if (kind === "EXIT" && a === this.current) {
      this.current = undefined;
    } else if (kind === "FILE" && this.current) {
      this.fileInProgress = { id: this.current, name: a, size: Number(b), b64: [] };
    } else if (kind === "FILE-END" && this.fileInProgress) {
      const f = this.fileInProgress;
      this.fileInProgress = undefined;
      const data = new Uint8Array(Buffer.from(f.b64.join(""), "base64"));
      this.captures.get(f.id)?.files.set(f.name, data.length === f.size ? data : data.subarray(0, f.size));
    }
  }

  private finish(w: Waiter, result: string | Error): void {
    if (!this.waiters.delete(w)) return;
    if (w.timer) clearTimeout(w.timer);
    if (typeof result === "string") w.resolve(result);
    else w.reject(result);
  }

  /** Wait for a line matching `pattern` (a marker like "@@VSTOR READY", or a RegExp). */
  waitFor(pattern: string | RegExp, timeoutMs: number, what = String(pattern)): Promise<string> {
    const test = typeof pattern === "string" ? (l: string) => l.includes(pattern) : (l: string) => pattern.test(l);
    return new Promise((resolve, reject) => {
      if (this.panicked) return reject(new GuestFailure(`guest kernel failed: ${this.panicked}`, this.text));
      const w: Waiter = { test, resolve, reject };
      w.timer = setTimeout(() => this.finish(w, new GuestFailure(`timed out after ${timeoutMs / 1000} s waiting for ${what}`, this.text)), timeoutMs);
      this.waiters.add(w);
    });
  }

  /** Collect the boot script's result (`id` 0), which the guest runs without being asked. */
  async result(id: string, timeoutMs: number): Promise<GuestRunResult> {
    if (!this.captures.has(id)) this.captures.set(id, { lines: [], files: new Map() });
    const exit = await this.waitFor(new RegExp(`@@VSTOR EXIT ${id} (-?\\d+)`), timeoutMs, `script ${id} to finish`);
    const status = Number(/EXIT \S+ (-?\d+)/.exec(exit)![1]);
    const cap = this.captures.get(id)!;
    this.captures.delete(id);
    return { status, output: cap.lines.join("\n") + (cap.lines.length ? "\n" : ""), files: cap.files };
  }

  private nextId = 1;

  /** Leave the agent for an interactive shell on the console (agent protocol, @@SHELL). */
  shell(): void {
    this.send("@@SHELL\n");
  }

  /** Run a script through the agent (the guest must have printed "@@VSTOR AGENT"). */
  async run(script: string, timeoutMs = 120_000): Promise<GuestRunResult> {
    const id = String(this.nextId++);
    this.captures.set(id, { lines: [], files: new Map() });
    const b64 = Buffer.from(script, "utf8").toString("base64").match(/.{1,76}/g) ?? [];
    const done = this.result(id, timeoutMs);
    this.send(`@@RUN ${id}\n${b64.join("\n")}\n@@END ${id}\n`);
    return done;
  }
}
