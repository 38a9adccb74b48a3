/**
 * The ATA command set as a table keyed by opcode (as QEMU's ide_cmd_table), each entry with the
 * flags the dispatcher checks before running it. An opcode without an entry is aborted (ERR, ABRT).
 *
 * Not here on purpose: READ/WRITE FPDMA QUEUED (60h/61h; AHCI calls AtaDevice.executeQueued),
 * the FUA writes, HPA (SET MAX), security, CFA, DOWNLOAD MICROCODE, READ/WRITE BUFFER.
 */
import { identifyCommand, identifyPacketCommand, nopCommand, powerCommand, checkPowerMode, diagnosticCommand, deviceResetCommand, okCommand } from "./control.js";
import type { AtaDevice, Cmd } from "./device.js";
import { dsmCommand } from "./dsm.js";
import { readLogCommand } from "./log.js";
import { packetCommand } from "./atapi.js";
import { flushCommand, nativeMaxCommand, rwCommand, seekCommand, verifyCommand } from "./rw.js";
import { initDeviceParamsCommand, setFeaturesCommand, setMultipleCommand } from "./settings.js";
import { smartCommand } from "./smart.js";

export type Handler = (dev: AtaDevice, cmd: Cmd) => void | Promise<void>;

export interface CommandSpec {
  name: string;
  /** Accepted by a disk. */
  ata: boolean;
  /** Accepted by a packet device. */
  atapi: boolean;
  /** Aborted without a medium; brings the drive out of standby/idle. */
  needsMedium: boolean;
  /** 48-bit command: address and count use the HOB registers. */
  lba48: boolean;
  /** Data phase direction. */
  data: "none" | "in" | "out";
  /** ATA protocol (what a front end must be ready for). */
  protocol: "non-data" | "pio" | "dma" | "packet" | "diagnostic" | "device-reset";
  /** Accepted while asleep (only DEVICE RESET: everything else needs a reset first). */
  inSleep: boolean;
  run: Handler;
}

type Flags = Partial<Omit<CommandSpec, "name" | "run">>;

const table: (CommandSpec | undefined)[] = new Array<CommandSpec | undefined>(256).fill(undefined);

function define(opcodes: number | number[], name: string, flags: Flags, run: Handler): void {
  const spec: CommandSpec = {
    name,
    ata: flags.ata ?? true,
    atapi: flags.atapi ?? false,
    needsMedium: flags.needsMedium ?? false,
    lba48: flags.lba48 ?? false,
    data: flags.data ?? "none",
    protocol: flags.protocol ?? "non-data",
    inSleep: flags.inSleep ?? false,
    run,
  };
  for (const op of Array.isArray(opcodes) ? opcodes : [opcodes]) table[op] = spec;
}

const both = { ata: true, atapi: true };
const disk = { ata: true, atapi: false, needsMedium: true };
const pioIn = { data: "in", protocol: "pio" } as const;
const pioOut = { data: "out", protocol: "pio" } as const;
const dmaIn = { data: "in", protocol: "dma" } as const;
const dmaOut = { data: "out", protocol: "dma" } as const;
const ext = { lba48: true };

define(0x00, "NOP", both, nopCommand);
define(0x06, "DATA SET MANAGEMENT", { ...disk, ...ext, ...dmaOut }, dsmCommand);
define(0x08, "DEVICE RESET", { ata: false, atapi: true, inSleep: true, protocol: "device-reset" }, deviceResetCommand);
define(range(0x10, 0x1f), "RECALIBRATE", {}, okCommand);

define([0x20, 0x21], "READ SECTORS", { ...disk, ...pioIn }, rwCommand({ write: false, mode: "sectors" }));
define(0x24, "READ SECTORS EXT", { ...disk, ...ext, ...pioIn }, rwCommand({ write: false, mode: "sectors" }));
define(0x25, "READ DMA EXT", { ...disk, ...ext, ...dmaIn }, rwCommand({ write: false, mode: "dma" }));
define(0x27, "READ NATIVE MAX ADDRESS EXT", { ...disk, ...ext }, nativeMaxCommand);
define(0x29, "READ MULTIPLE EXT", { ...disk, ...ext, ...pioIn }, rwCommand({ write: false, mode: "multiple" }));
define(0x2f, "READ LOG EXT", { ...ext, ...pioIn }, readLogCommand);
define([0x30, 0x31], "WRITE SECTORS", { ...disk, ...pioOut }, rwCommand({ write: true, mode: "sectors" }));
define(0x34, "WRITE SECTORS EXT", { ...disk, ...ext, ...pioOut }, rwCommand({ write: true, mode: "sectors" }));
define(0x35, "WRITE DMA EXT", { ...disk, ...ext, ...dmaOut }, rwCommand({ write: true, mode: "dma" }));
define(0x39, "WRITE MULTIPLE EXT", { ...disk, ...ext, ...pioOut }, rwCommand({ write: true, mode: "multiple" }));
define([0x40, 0x41], "READ VERIFY SECTORS", disk, verifyCommand);
define(0x42, "READ VERIFY SECTORS EXT", { ...disk, ...ext }, verifyCommand);
define(0x47, "READ LOG DMA EXT", { ...ext, ...dmaIn }, readLogCommand);
define(0x70, "SEEK", disk, seekCommand);
define(0x90, "EXECUTE DEVICE DIAGNOSTIC", { ...both, protocol: "diagnostic" }, diagnosticCommand);
define(0x91, "INITIALIZE DEVICE PARAMETERS", {}, initDeviceParamsCommand);
define(0xa0, "PACKET", { ata: false, atapi: true, protocol: "packet" }, packetCommand);
define(0xa1, "IDENTIFY PACKET DEVICE", { ata: false, atapi: true, ...pioIn }, identifyPacketCommand);
define(0xb0, "SMART", { data: "in", protocol: "pio" }, smartCommand);
define(0xc4, "READ MULTIPLE", { ...disk, ...pioIn }, rwCommand({ write: false, mode: "multiple" }));
define(0xc5, "WRITE MULTIPLE", { ...disk, ...pioOut }, rwCommand({ write: true, mode: "multiple" }));
define(0xc6, "SET MULTIPLE MODE", {}, setMultipleCommand);
define([0xc8, 0xc9], "READ DMA", { ...disk, ...dmaIn }, rwCommand({ write: false, mode: "dma" }));
define([0xca, 0xcb], "WRITE DMA", { ...disk, ...dmaOut }, rwCommand({ write: true, mode: "dma" }));
define([0xe0, 0xe2], "STANDBY", both, powerCommand("standby"));
define([0xe1, 0xe3], "IDLE", both, powerCommand("idle"));
define(0xe5, "CHECK POWER MODE", both, checkPowerMode);
define(0xe6, "SLEEP", both, powerCommand("sleep"));
define(0xe7, "FLUSH CACHE", disk, flushCommand);
define(0xea, "FLUSH CACHE EXT", { ...disk, ...ext }, flushCommand);
define(0xec, "IDENTIFY DEVICE", { ...both, ...pioIn }, identifyCommand);
define(0xef, "SET FEATURES", both, setFeaturesCommand);
define(0xf8, "READ NATIVE MAX ADDRESS", disk, nativeMaxCommand);

function range(first: number, last: number): number[] {
  const r: number[] = [];
  for (let i = first; i <= last; i++) r.push(i);
  return r;
}

/** The command table: index by opcode; undefined = not supported (aborted). */
export const COMMANDS: readonly (CommandSpec | undefined)[] = table;

/** What a front end may want to know about an opcode before issuing it (e.g. AHCI's W bit check). */
export function commandInfo(opcode: number): Omit<CommandSpec, "run"> | undefined {
  const spec = COMMANDS[opcode & 0xff];
  if (!spec) return undefined;
  const { run: _run, ...info } = spec;
  return info;
}
