/**
 * The extents a VMDK descriptor lists, behind one interface: flat (FLAT, VMFS: a byte range of a
 * file), zero (ZERO: no file, reads zeros) and sparse (SPARSE: a hosted sparse file, in
 * sparse-extent.ts). Offsets are relative to the extent's start in the virtual disk.
 */
import { MediumError } from "../../block.js";
import type { BlockState } from "../../chain.js";
import type { FileIo } from "../../io/file-io.js";
import type { ExtentLine } from "./descriptor.js";
import { asMediumError, readFully } from "./util.js";

/** Completes a grain being allocated with what lies below it (the parent's data, or zeros). */
export type GrainFill = (grain: Uint8Array) => Promise<void>;

export interface VmdkExtent {
  readonly line: ExtentLine;
  /** Bytes of the virtual disk this extent covers. */
  readonly size: number;
  readonly path: string;
  /** False for RDONLY / NOACCESS / ZERO extents and compressed streams. */
  readonly writable: boolean;
  /** Allocation unit in bytes (the grain for sparse extents); 0 where everything is stored. */
  readonly grainBytes: number;
  /** State of the allocation unit holding `local` (flat: data, zero: zero). */
  state(local: number): BlockState;
  /** Read [local, local+buf.length); what is not stored reads as zeros. */
  read(local: number, buf: Uint8Array): Promise<void>;
  /**
   * Write [local, local+data.length), across allocation units as need be. `fill` completes a
   * grain this extent does not store yet and that the write covers only in part; `hidesParent`
   * says a grain of zeros must still be recorded (a differencing image).
   */
  write(local: number, data: Uint8Array, fill: GrainFill, hidesParent: boolean): Promise<void>;
  /** Stored ranges, relative to the extent. */
  stored(): { offset: number; length: number; state: "data" | "zero" }[];
  /** First change after open (sparse: mark the unclean-shutdown flag). */
  beginSession(): Promise<void>;
  /** Clean close of a session (sparse: clear the flag). */
  endSession(): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** FLAT and VMFS extents: a contiguous range of a file. */
export class FlatExtent implements VmdkExtent {
  readonly grainBytes = 0;
  readonly size: number;
  private readonly base: number;

  constructor(
    readonly line: ExtentLine,
    private readonly file: FileIo,
    readonly writable: boolean,
  ) {
    this.size = line.sectors * 512;
    this.base = line.offset * 512;
  }

  /** Refuse a file too short for the range the descriptor gives it. */
  static async open(line: ExtentLine, file: FileIo, writable: boolean): Promise<FlatExtent> {
    const have = await file.size();
    const need = line.offset * 512 + line.sectors * 512;
    if (have < need) {
      throw new MediumError("corrupt", `flat extent is ${have} bytes, the descriptor needs ${need}`, { path: file.path });
    }
    return new FlatExtent(line, file, writable);
  }

  get path(): string {
    return this.file.path;
  }
  state(): BlockState {
    return "data";
  }
  async read(local: number, buf: Uint8Array): Promise<void> {
    try {
      const n = await readFully(this.file, this.base + local, buf);
      if (n < buf.length) buf.fill(0, n);
    } catch (e) {
      throw asMediumError(e, this.path, "read");
    }
  }
  async write(local: number, data: Uint8Array): Promise<void> {
    try {
      await this.file.write(this.base + local, data);
    } catch (e) {
      throw asMediumError(e, this.path, "write");
    }
  }
  stored(): { offset: number; length: number; state: "data" | "zero" }[] {
    return [{ offset: 0, length: this.size, state: "data" }];
  }
  async beginSession(): Promise<void> {}
  async endSession(): Promise<void> {}
  async flush(): Promise<void> {
    if (!this.writable) return;
    try {
      await this.file.flush();
    } catch (e) {
      throw asMediumError(e, this.path, "flush");
    }
  }
  close(): Promise<void> {
    return this.file.close();
  }
}

/** ZERO extents (and NOACCESS ones, which we read as zeros too): no file behind them. */
export class ZeroExtent implements VmdkExtent {
  readonly grainBytes = 0;
  readonly writable = false;
  readonly size: number;

  constructor(
    readonly line: ExtentLine,
    readonly path: string,
  ) {
    this.size = line.sectors * 512;
  }
  state(): BlockState {
    return "zero";
  }
  async read(_local: number, buf: Uint8Array): Promise<void> {
    buf.fill(0);
  }
  async write(): Promise<void> {
    throw new MediumError("read-only", `a ${this.line.type} extent cannot be written`, { path: this.path });
  }
  stored(): { offset: number; length: number; state: "data" | "zero" }[] {
    return [{ offset: 0, length: this.size, state: "zero" }];
  }
  async beginSession(): Promise<void> {}
  async endSession(): Promise<void> {}
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}
