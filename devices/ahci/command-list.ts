/**
 * Reading a command slot from guest memory (AHCI 4.2.2/4.2.3): the 32-byte command header at
 * PxCLB + slot * 32 and the command FIS / ATAPI command in the command table it points at. Every
 * access goes through GuestMemory, so a pointer outside RAM comes back as undefined (the port
 * turns it into a host bus fatal error), never as an exception.
 *
 * CAP.S64A is 0: the upper halves (CTBAU, DBAU) are ignored, as the specification says.
 */
import type { GuestMemory } from "../../host-adapter/host.js";
import { CMD_HEADER, CMD_HEADER_SIZE, CMD_TABLE, PRD_I } from "./registers.js";

export interface CommandHeader {
  slot: number;
  /** DW0 as read (flags, PMP, PRDTL). */
  flags: number;
  /** Command FIS length in dwords. */
  cfl: number;
  /** ATAPI: the device gets the command at ACMD. */
  atapi: boolean;
  /** Host → device data (informational; the ATA core knows each command's direction). */
  write: boolean;
  /** Reset: part of a software reset sequence. */
  reset: boolean;
  /** Clear busy upon R_OK (control FISes of a software reset). */
  clearBusy: boolean;
  /** PRDT entries (0..65535). */
  prdtl: number;
  /** Command table base (128-byte aligned). */
  ctba: number;
}

/** Address of a slot's header in the command list. */
export function headerAddress(clb: number, slot: number): number {
  return clb + slot * CMD_HEADER_SIZE;
}

export function readHeader(memory: GuestMemory, clb: number, slot: number): CommandHeader | undefined {
  const b = new Uint8Array(16);
  if (!memory.read(headerAddress(clb, slot), b)) return undefined;
  const v = new DataView(b.buffer);
  const flags = v.getUint32(0, true);
  return {
    slot,
    flags,
    cfl: flags & CMD_HEADER.CFL_MASK,
    atapi: (flags & CMD_HEADER.A) !== 0,
    write: (flags & CMD_HEADER.W) !== 0,
    reset: (flags & CMD_HEADER.R) !== 0,
    clearBusy: (flags & CMD_HEADER.C) !== 0,
    prdtl: flags >>> CMD_HEADER.PRDTL_SHIFT,
    ctba: (v.getUint32(8, true) & ~CMD_TABLE.ALIGN_MASK) >>> 0,
  };
}

/** The command FIS area of a command table (64 bytes). */
export function readCommandFis(memory: GuestMemory, ctba: number): Uint8Array | undefined {
  const b = new Uint8Array(CMD_TABLE.CFIS_SIZE);
  return memory.read(ctba + CMD_TABLE.CFIS, b) ? b : undefined;
}

/** The ATAPI command (16 bytes at ACMD). */
export function readAtapiCommand(memory: GuestMemory, ctba: number): Uint8Array | undefined {
  const b = new Uint8Array(CMD_TABLE.ACMD_SIZE);
  return memory.read(ctba + CMD_TABLE.ACMD, b) ? b : undefined;
}

/** Write the header's PRD byte count (DW1) back. */
export function writePrdbc(memory: GuestMemory, clb: number, slot: number, bytes: number): boolean {
  return memory.write32(headerAddress(clb, slot) + 4, bytes >>> 0);
}

// ---- test-side builders (also used by the test driver) -----------------------------------------

export interface PrdSpec {
  addr: number;
  /** Bytes, even, 2..4 MiB. */
  len: number;
  /** Interrupt when this entry is done (PxIS.DPS). */
  interrupt?: boolean;
}

/** DW0 of a command header. */
export function headerFlags(o: { cfl?: number; atapi?: boolean; write?: boolean; prdtl: number; reset?: boolean; clearBusy?: boolean; prefetch?: boolean }): number {
  return ((o.cfl ?? 5) & CMD_HEADER.CFL_MASK |
    (o.atapi ? CMD_HEADER.A : 0) |
    (o.write ? CMD_HEADER.W : 0) |
    (o.prefetch ? CMD_HEADER.P : 0) |
    (o.reset ? CMD_HEADER.R : 0) |
    (o.clearBusy ? CMD_HEADER.C : 0) |
    (o.prdtl & 0xffff) << CMD_HEADER.PRDTL_SHIFT) >>> 0;
}

/** DW3 of a PRDT entry for `len` bytes. */
export function prdFlags(len: number, interrupt = false): number {
  return ((len - 1) & 0x3f_ffff | (interrupt ? PRD_I : 0)) >>> 0;
}
