/**
 * A booted guest: the emulator, its console, and the agent to run scripts in it.
 */
import { startEmulator, type EmulatorOptions, type RunningEmulator } from "./emulator.js";
import { GuestConsole, type GuestRunResult } from "./guest-console.js";

export interface BootOptions extends Omit<EmulatorOptions, "onSerialByte"> {
  /** "agent": scripts over the console (tests); "shell": an interactive shell. */
  mode?: "agent" | "shell";
  bootTimeoutMs?: number;
  /** Also hand every console line to this (logs, interactive terminals). */
  onLine?: (line: string) => void;
  /** Raw console bytes, for an interactive terminal. */
  onSerialByte?: (byte: number) => void;
}

export interface GuestSession {
  vm: RunningEmulator;
  console: GuestConsole;
  /** Seconds from start to "@@VSTOR BOOTED" (init runs) and "@@VSTOR READY" (modules loaded). */
  timings: { booted: number; ready: number };
  run(script: string, timeoutMs?: number): Promise<GuestRunResult>;
  stop(): Promise<void>;
}

export async function bootGuest(opts: BootOptions = {}): Promise<GuestSession> {
  const t0 = performance.now();
  let guestConsole!: GuestConsole;
  const vm = await startEmulator({
    ...opts,
    guestEnv: { VSTOR_MODE: opts.mode ?? "agent", ...opts.guestEnv },
    onSerialByte: (b) => {
      guestConsole.onByte(b);
      opts.onSerialByte?.(b);
    },
  });
  guestConsole = new GuestConsole((text) => vm.sendSerial(text));
  guestConsole.onLine = opts.onLine;
  const timeout = opts.bootTimeoutMs ?? 180_000;
  const session: GuestSession = {
    vm,
    console: guestConsole,
    timings: { booted: NaN, ready: NaN },
    run: (script, timeoutMs) => guestConsole.run(script, timeoutMs),
    stop: () => vm.stop(),
  };
  if (opts.initialState) return session; // a restored guest is already past boot
  try {
    await guestConsole.waitFor("@@VSTOR BOOTED", timeout, "the guest's init");
    session.timings.booted = (performance.now() - t0) / 1000;
    await guestConsole.waitFor("@@VSTOR READY", timeout, "the guest's modules to load");
    session.timings.ready = (performance.now() - t0) / 1000;
    if ((opts.mode ?? "agent") === "agent" && opts.script === undefined) {
      await guestConsole.waitFor("@@VSTOR AGENT", timeout, "the guest agent");
    }
  } catch (e) {
    await vm.stop().catch(() => undefined);
    throw e;
  }
  return session;
}
