/**
 * Starting v86 in Node with the bundled guest and our devices on a V86Host.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { V86 } from "v86";
import { buildCpio } from "../images/cpio.mjs";
import { V86Host } from "../host-adapter/v86/v86-host.js";
import type { V86Emulator } from "../host-adapter/v86/internals.js";
import { guestImages, type GuestImages } from "./guest-images.js";

export const BASE_CMDLINE = "console=ttyS0 tsc=reliable mitigations=off random.trust_cpu=on cryptomgr.notests noisapnp";

/**
 * CMOS boot order for SeaBIOS (registers 38h/3Dh, which v86 writes from its `boot_order` option):
 * one device class per nibble, lowest nibble first; 1 floppy, 2 hard disk, 3 CD-ROM. SeaBIOS
 * (boot_init, CONFIG_QEMU) turns it into the default priorities when there is no fw_cfg
 * "bootorder" file, which v86 never provides. v86's own default without hda/fda is 0x123 (CD
 * first); a disk boot wants the hard disk first so an empty or non-bootable CD in the IDE
 * drive costs no failed attempt: 0x312 (hard disk, floppy, CD), what v86 picks for an hda.
 */
export const BOOT_ORDER_DISK_FIRST = 0x312;
/** CD-ROM first (then floppy, then hard disk): 0x213, v86's order for a cdrom option. */
export const BOOT_ORDER_CD_FIRST = 0x213;

export interface EmulatorOptions {
  memoryMiB?: number;
  /**
   * "kernel" (default): v86 loads the bundled kernel and initramfs itself (through SeaBIOS's
   * option ROM path), with the command line built here.
   * "disk": no kernel, initramfs or command line is given to v86; SeaBIOS boots from the first
   * hard disk its drivers find (e.g. an IdeController's primary master holding
   * build/guest/boot.img), and the disk's own boot loader decides the kernel command line, so
   * `guestEnv` is not used and `script` is refused (there is no initramfs to append it to; use
   * the agent instead).
   * "cd": as "disk", but SeaBIOS tries the CD/DVD drive first (El Torito, e.g. build/guest/boot.iso).
   */
  bootFrom?: "kernel" | "disk" | "cd";
  /** KEY=VAL pairs for the guest's /init (VSTOR_MODE=agent, VSTOR_MODULES=..., ...); kernel boots only. */
  guestEnv?: Record<string, string>;
  /** A script the guest runs once it is ready (delivered as an extra initramfs archive); kernel boots only. */
  script?: string;
  /** Register devices here; it runs before the BIOS. */
  setup?: (host: V86Host) => void;
  /** Restore this saved machine instead of booting. */
  initialState?: ArrayBuffer;
  images?: GuestImages;
  onSerialByte?: (byte: number) => void;
  onTrace?: (device: string, message: string) => void;
  /** Machine reset requested (guest reboot or controlvm reset); see V86HostOptions.onReboot. */
  onReboot?: () => void;
}

export interface RunningEmulator {
  emulator: V86Instance;
  host: V86Host;
  sendSerial(text: string): void;
  saveState(): Promise<ArrayBuffer>;
  stop(): Promise<void>;
}

export interface V86Instance extends V86Emulator {
  serial0_send(data: string): void;
  save_state(): Promise<ArrayBuffer>;
  restore_state(state: ArrayBuffer): Promise<void>;
  stop(): Promise<void>;
  destroy(): Promise<void>;
  run(): Promise<void>;
  is_running(): boolean;
}

function v86BuildDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve("v86/package.json")), "build");
}

const toArrayBuffer = (b: Uint8Array): ArrayBuffer => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
const file = (path: string) => ({ buffer: toArrayBuffer(readFileSync(path)) });

/** The V86 constructor options for the bundled guest (also used bare, as a benchmark peer). */
export function v86Options(opts: EmulatorOptions = {}): Record<string, unknown> {
  const images = opts.images ?? guestImages();
  const common = {
    wasm_path: join(v86BuildDir(), "v86.wasm"),
    bios: file(images.bios),
    vga_bios: images.vgaBios ? file(images.vgaBios) : undefined,
    memory_size: (opts.memoryMiB ?? 128) * 1024 * 1024,
    vga_memory_size: 2 * 1024 * 1024,
    initial_state: opts.initialState ? { buffer: opts.initialState } : undefined,
    autostart: true,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    net_device: { type: "none" },
  };
  const bootFrom = opts.bootFrom ?? "kernel";
  if (bootFrom === "disk" || bootFrom === "cd") {
    if (opts.script !== undefined) {
      throw new Error("a script needs a kernel boot (it travels as an extra initramfs archive); a disk-booted guest runs scripts through its agent");
    }
    // No hda/cdrom/fda either: our controllers provide the disks, SeaBIOS finds them by PCI class.
    return { ...common, boot_order: bootFrom === "cd" ? BOOT_ORDER_CD_FIRST : BOOT_ORDER_DISK_FIRST };
  }
  if (bootFrom !== "kernel") throw new Error(`bootFrom must be "kernel", "disk" or "cd", not ${String(bootFrom)}`);
  let initrd = readFileSync(images.initrd) as Uint8Array;
  if (opts.script !== undefined) {
    // Linux unpacks concatenated newc archives in order: the second one adds /vstor/script.
    const extra = buildCpio([
      { type: "dir", path: "vstor", mode: 0o755 },
      { type: "file", path: "vstor/script", mode: 0o755, data: new TextEncoder().encode(opts.script) },
    ]);
    const joined = new Uint8Array(initrd.length + extra.length);
    joined.set(initrd);
    joined.set(extra, initrd.length);
    initrd = joined;
  }
  const env = Object.entries(opts.guestEnv ?? {}).map(([k, v]) => `${k}=${v}`);
  return {
    ...common,
    bzimage: file(images.kernel),
    initrd: { buffer: toArrayBuffer(initrd) },
    cmdline: [BASE_CMDLINE, ...env].join(" "),
  };
}

/** Boot v86 with the bundled guest; resolves once our devices are registered (before the BIOS runs). */
export async function startEmulator(opts: EmulatorOptions = {}): Promise<RunningEmulator> {
  const emulator = new V86(v86Options(opts) as never) as unknown as V86Instance;

  const hostReady = V86Host.install(emulator, { replaceBuiltinIde: true, onTrace: opts.onTrace, onReboot: opts.onReboot }, (host) => opts.setup?.(host));
  if (opts.onSerialByte) emulator.add_listener("serial0-output-byte", opts.onSerialByte as (...a: unknown[]) => void);
  const host = await hostReady;
  let stopped: Promise<void> | undefined;
  return {
    emulator,
    host,
    sendSerial: serialSender(emulator),
    saveState: () => emulator.save_state(),
    stop: () =>
      (stopped ??= (async () => {
        await emulator.stop();
        await emulator.destroy();
      })()),
  };
}

/**
 * Console input, paced: a burst of more than ~64 KiB queued in v86's UART at once freezes serial
 * input for good (Linux stops reading mid-burst and the UART's interrupt is not raised again), so
 * text is fed in slices while the UART's receive queue is short.
 */
function serialSender(emulator: V86Instance): (text: string) => void {
  const uart = (emulator.v86?.cpu.devices as { uart0?: { input?: { length: number } } } | undefined)?.uart0;
  const queued = () => uart?.input?.length ?? 0;
  let pending = "";
  let pumping = false;
  const pump = () => {
    while (pending && queued() < 1024) {
      emulator.serial0_send(pending.slice(0, 512));
      pending = pending.slice(512);
    }
    pumping = pending.length > 0;
    if (pumping) setTimeout(pump, 2);
  };
  return (text) => {
    pending += text;
    if (!pumping) pump();
  };
}
