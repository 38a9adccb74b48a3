/**
 * A booted guest: the emulator, its console, and the agent to run scripts in it.
 *
 * Reset (guest reboot or controlvm reset) rebuilds the emulator in this process with the same
 * devices, like pressing a hardware reset button: v86's own in-place reset crashes a booted
 * Linux guest on the pinned build (see host-adapter/v86/v86-host.ts, onReboot).
 */
import { appendFileSync } from "node:fs";
import { startEmulator, type EmulatorOptions, type RunningEmulator } from "./emulator.js";
import { GuestConsole, type GuestRunResult } from "./guest-console.js";

export interface BootOptions extends Omit<EmulatorOptions, "onSerialByte" | "onReboot"> {
  /**
   * "agent": scripts over the console (tests); "shell": an interactive shell. With `bootFrom:
   * "disk"` or `"cd"` the boot loader's command line starts the agent (build/guest/boot.img,
   * boot.iso), and "shell" then asks the agent for a shell.
   */
  mode?: "agent" | "shell";
  bootTimeoutMs?: number;
  /** Also hand every console line to this (logs, interactive terminals). */
  onLine?: (line: string) => void;
  /** Raw console bytes, for an interactive terminal. */
  onSerialByte?: (byte: number) => void;
  /** Told after each reset, once the new emulator runs. */
  onReset?: () => void;
}

export interface GuestSession {
  /** The current emulator (a reset replaces it). */
  readonly vm: RunningEmulator;
  console: GuestConsole;
  /** Seconds from start to "@@VSTOR BOOTED" (init runs) and "@@VSTOR READY" (modules loaded). */
  timings: { booted: number; ready: number };
  run(script: string, timeoutMs?: number): Promise<GuestRunResult>;
  /** Hardware reset: the guest boots again from power-on, with the same devices. */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

export async function bootGuest(opts: BootOptions = {}): Promise<GuestSession> {
  const t0 = performance.now();
  const guestConsole = new GuestConsole((text) => vm.sendSerial(text));
  // VSTOR_CONSOLE_LOG=FILE: every console line also goes to FILE (debugging guest tests).
  const logFile = process.env.VSTOR_CONSOLE_LOG;
  guestConsole.onLine = logFile
    ? (line) => {
        appendFileSync(logFile, line + "\n");
        opts.onLine?.(line);
      }
    : opts.onLine;
  let stopped = false;
  const viaBios = (opts.bootFrom ?? "kernel") !== "kernel";
  let resetting: Promise<void> | undefined;

  const emulatorOptions = (restore: boolean): EmulatorOptions => ({
    ...opts,
    initialState: restore ? opts.initialState : undefined,
    guestEnv: { VSTOR_MODE: opts.mode ?? "agent", ...opts.guestEnv },
    onSerialByte: (b) => {
      guestConsole.onByte(b);
      opts.onSerialByte?.(b);
    },
    onReboot: () => void setImmediate(() => void session.reset()),
  });

  let vm = await startEmulator(emulatorOptions(true));
  const session: GuestSession = {
    get vm() {
      return vm;
    },
    console: guestConsole,
    timings: { booted: NaN, ready: NaN },
    run: (script, timeoutMs) => guestConsole.run(script, timeoutMs),
    reset: () =>
      (resetting ??= (async () => {
        await vm.stop();
        if (!stopped) {
          vm = await startEmulator(emulatorOptions(false));
          opts.onReset?.();
          // A BIOS boot comes up in the agent again: hand the console back to the shell.
          if (viaBios && opts.mode === "shell") {
            guestConsole.waitFor("@@VSTOR AGENT", opts.bootTimeoutMs ?? 180_000).then(() => guestConsole.shell(), () => undefined);
          }
        }
      })().finally(() => (resetting = undefined))),
    stop: async () => {
      stopped = true;
      await resetting;
      await vm.stop();
    },
  };
  if (opts.initialState) return session; // a restored guest is already past boot
  const timeout = opts.bootTimeoutMs ?? 180_000;
  try {
    await guestConsole.waitFor("@@VSTOR BOOTED", timeout, "the guest's init");
    session.timings.booted = (performance.now() - t0) / 1000;
    await guestConsole.waitFor("@@VSTOR READY", timeout, "the guest's modules to load");
    session.timings.ready = (performance.now() - t0) / 1000;
    // A bootloader boot always starts the agent (its command line says so); a shell is asked for.
    if (viaBios || ((opts.mode ?? "agent") === "agent" && opts.script === undefined)) {
      await guestConsole.waitFor("@@VSTOR AGENT", timeout, "the guest agent");
    }
    if (viaBios && opts.mode === "shell") guestConsole.shell();
  } catch (e) {
    await session.stop().catch(() => undefined);
    throw e;
  }
  return session;
}
