/**
 * Plain v86 as a benchmark peer: the bundled guest with no vstor code in the emulator, talking
 * through the same console and agent protocol as our machines.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { V86 } from "v86";
import { v86Options } from "../machine/emulator.js";
import { GuestConsole } from "../machine/guest-console.js";

export interface PlainV86 {
  emulator: { get_instruction_counter(): number; stop(): Promise<void>; destroy(): Promise<void> };
  console: GuestConsole;
  stop(): Promise<void>;
}

/** The bundled guest on plain v86, running `script` at boot; `extra` adds V86 options (hda, ...). */
export function startPlainV86(script: string, extra: Record<string, unknown> = {}): PlainV86 {
  const emulator = new V86({ ...v86Options({ script, guestEnv: { VSTOR_MODE: "agent" } }), ...extra } as never) as unknown as PlainV86["emulator"] & {
    add_listener(e: string, f: (b: number) => void): void;
    serial0_send(s: string): void;
  };
  const c = new GuestConsole((t) => emulator.serial0_send(t));
  emulator.add_listener("serial0-output-byte", (b) => c.onByte(b));
  return {
    emulator,
    console: c,
    stop: async () => {
      await emulator.stop();
      await emulator.destroy();
    },
  };
}

/** A whole image file in an ArrayBuffer (v86's `hda: { buffer }`, its fastest disk). */
export function readImageBuffer(path: string): ArrayBuffer {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const buf = new ArrayBuffer(size);
    const view = new Uint8Array(buf);
    for (let pos = 0; pos < size; ) pos += readSync(fd, view, pos, Math.min(16 << 20, size - pos), pos);
    return buf;
  } finally {
    closeSync(fd);
  }
}
