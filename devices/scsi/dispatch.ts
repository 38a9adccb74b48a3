/**
 * The shared half of every SCSI target: a command table keyed by opcode with per-command flags
 * (as QEMU's atapi_cmd_table and scsi-disk's reqops), the sense state a logical unit keeps
 * (the last command's sense for REQUEST SENSE, queued unit attention conditions), and the
 * dispatcher that applies the flags in SAM order before running a handler:
 *
 *   1. unknown CDB shape (empty, too short)         → ILLEGAL REQUEST
 *   2. unit attention pending, command not allowed  → CHECK CONDITION, the UA (then it is gone)
 *   3. opcode not in the table                      → ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE
 *   4. needs a medium and the unit is not ready     → NOT READY (the unit says which)
 *   5. the handler: GOOD, CHECK CONDITION, or stopped (the transport ended the command)
 *
 * The MMC target (CD/DVD) uses it now; the SBC disk target for the SCSI HBAs will use the same
 * table type, sense state and dispatcher with its own handlers.
 */
import { hex8 } from "./bytes.js";
import { fixedSense, SENSE, senseName, STATUS, type Sense } from "./sense.js";
import type { ScsiIo } from "./target.js";

/** A handler's outcome: GOOD (undefined), CHECK CONDITION with this sense, or STOPPED. */
export type Outcome = Sense | undefined | typeof STOPPED;

/** The transport ended the command during the data phase; nothing more is reported. */
export const STOPPED: unique symbol = Symbol("stopped");

/** CDB length implied by the opcode's group code (SPC-4 4.2.5.1); 0 for reserved/vendor groups. */
export function cdbLengthOf(opcode: number): 0 | 6 | 10 | 12 | 16 {
  switch (opcode >> 5 & 7) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}

/** One command in flight, as a handler sees it. */
export class CommandContext {
  /** The CDB, copied and zero-padded to 16 bytes. */
  readonly cdb: Uint8Array;
  /** Bytes the target sent so far (dataIn). */
  sent = 0;

  constructor(
    cdb: Uint8Array,
    readonly io: ScsiIo,
  ) {
    this.cdb = new Uint8Array(16);
    this.cdb.set(cdb.subarray(0, 16));
  }

  get opcode(): number {
    return this.cdb[0]!;
  }

  /**
   * Send parameter data cut to the allocation length. Resolves GOOD, or STOPPED when the
   * transport gave up.
   */
  async reply(data: Uint8Array, allocationLength: number): Promise<Outcome> {
    const n = Math.max(0, Math.min(data.length, allocationLength));
    return (await this.send(data.subarray(0, n))) ? undefined : STOPPED;
  }

  /** Send data; false: the transport ended the command. */
  async send(data: Uint8Array): Promise<boolean> {
    if (data.length === 0) return true;
    let ok: boolean;
    try {
      ok = await this.io.dataIn(data);
    } catch {
      ok = false;
    }
    if (ok) this.sent += data.length;
    return ok;
  }

  /** Receive `length` bytes of parameter data; undefined when the transport ended the command. */
  async receive(length: number): Promise<Uint8Array | undefined> {
    const buf = new Uint8Array(Math.max(0, length));
    if (buf.length === 0) return buf;
    try {
      return (await this.io.dataOut(buf)) ? buf : undefined;
    } catch {
      return undefined;
    }
  }
}

export type Handler<U> = (unit: U, cmd: CommandContext) => Outcome | Promise<Outcome>;

export interface ScsiCommand<U> {
  readonly name: string;
  readonly opcode: number;
  /** Bytes of CDB the command uses (from its group code). */
  readonly cdbLength: number;
  /** Data phase direction ("none" for commands that never move data). */
  readonly data: "none" | "in" | "out";
  /** Fails with the unit's NOT READY sense while no medium is ready. */
  readonly needsMedium: boolean;
  /** Runs while a unit attention is pending, leaving it pending (INQUIRY, REQUEST SENSE, ...). */
  readonly allowUnitAttention: boolean;
  /** Leaves the last command's sense alone on GOOD (REQUEST SENSE manages it itself). */
  readonly keepsSense: boolean;
  readonly run: Handler<U>;
}

export type CommandFlags = Partial<Pick<ScsiCommand<unknown>, "data" | "needsMedium" | "allowUnitAttention" | "keepsSense">>;

/** A table of 256 entries, undefined where the opcode is not supported. */
export type CommandTable<U> = readonly (ScsiCommand<U> | undefined)[];

/** Build a table from definitions; a later definition of the same opcode replaces the earlier one. */
export function commandTable<U>(defs: readonly (readonly [opcode: number, name: string, flags: CommandFlags, run: Handler<U>])[]): CommandTable<U> {
  const table = new Array<ScsiCommand<U> | undefined>(256).fill(undefined);
  for (const [opcode, name, flags, run] of defs) {
    table[opcode & 0xff] = Object.freeze({
      name,
      opcode: opcode & 0xff,
      cdbLength: cdbLengthOf(opcode) || 12,
      data: flags.data ?? "none",
      needsMedium: flags.needsMedium ?? false,
      allowUnitAttention: flags.allowUnitAttention ?? false,
      keepsSense: flags.keepsSense ?? false,
      run,
    });
  }
  return Object.freeze(table);
}

/** Most unit attention conditions queued at once (SAM lets a unit drop the oldest). */
const MAX_UNIT_ATTENTIONS = 4;

/** A logical unit's sense bookkeeping for one initiator (ATAPI and our HBAs have one). */
export class SenseState {
  /** Sense of the last command, reported by REQUEST SENSE. */
  last: Sense = SENSE.NO_SENSE;
  private readonly ua: Sense[] = [];

  /** Queue a unit attention condition; an identical pending one is not queued twice. */
  postUnitAttention(s: Sense): void {
    if (this.ua.some((u) => u.key === s.key && u.asc === s.asc && u.ascq === s.ascq)) return;
    this.ua.push(s);
    if (this.ua.length > MAX_UNIT_ATTENTIONS) this.ua.shift();
  }

  get unitAttentionPending(): boolean {
    return this.ua.length > 0;
  }

  /** Report (and so clear) the oldest pending unit attention. */
  takeUnitAttention(): Sense | undefined {
    return this.ua.shift();
  }

  /** For REQUEST SENSE: the oldest unit attention if any, else the last sense; both are consumed. */
  takeForRequestSense(): Sense {
    const ua = this.ua.shift();
    if (ua) return ua;
    const s = this.last;
    this.last = SENSE.NO_SENSE;
    return s;
  }

  clear(): void {
    this.last = SENSE.NO_SENSE;
    this.ua.length = 0;
  }

  save(): { last: Sense; unitAttention: Sense[] } {
    return { last: { ...this.last }, unitAttention: this.ua.map((s) => ({ ...s })) };
  }

  restore(s: { last: Sense; unitAttention: Sense[] }): void {
    this.last = { ...s.last };
    this.ua.length = 0;
    for (const u of s.unitAttention.slice(-MAX_UNIT_ATTENTIONS)) this.ua.push({ ...u });
  }
}

/** What the dispatcher needs from a logical unit. */
export interface DispatchUnit {
  readonly sense: SenseState;
  /** undefined when commands that need a medium may run; else the NOT READY condition. */
  notReady(): Sense | undefined;
  trace(message: string): void;
}

/** Counters a unit can expose (commands seen, CHECK CONDITIONs, internal failures). */
export interface DispatchStats {
  commands: number;
  checkConditions: number;
  internalErrors: number;
}

/**
 * Run one CDB against a table. Never throws or rejects; completes the io exactly once unless the
 * transport stopped the command during the data phase.
 */
export async function dispatch<U extends DispatchUnit>(table: CommandTable<U>, unit: U, cdb: Uint8Array, io: ScsiIo, stats?: DispatchStats): Promise<void> {
  let completed = false;
  const finish = (outcome: Outcome, keepsSense: boolean): void => {
    if (completed || outcome === STOPPED) return;
    completed = true;
    if (outcome === undefined) {
      if (!keepsSense) unit.sense.last = SENSE.NO_SENSE;
      safeComplete(io, { status: STATUS.GOOD }, unit);
      return;
    }
    unit.sense.last = outcome;
    if (stats) stats.checkConditions++;
    safeComplete(io, { status: STATUS.CHECK_CONDITION, sense: fixedSense(outcome) }, unit);
  };

  if (stats) stats.commands++;
  if (!(cdb instanceof Uint8Array) || cdb.length === 0) {
    unit.trace("empty CDB");
    finish(SENSE.INVALID_COMMAND_OPERATION_CODE, false);
    return;
  }
  const ctx = new CommandContext(cdb, io);
  const spec = table[ctx.opcode];

  if (!spec?.allowUnitAttention && unit.sense.unitAttentionPending) {
    const ua = unit.sense.takeUnitAttention()!;
    unit.trace(`${spec?.name ?? hex8(ctx.opcode)}: unit attention ${senseName(ua)}`);
    finish(ua, false);
    return;
  }
  if (!spec) {
    unit.trace(`unsupported opcode ${hex8(ctx.opcode)}`);
    finish(SENSE.INVALID_COMMAND_OPERATION_CODE, false);
    return;
  }
  if (cdb.length < spec.cdbLength) {
    unit.trace(`${spec.name}: CDB of ${cdb.length} bytes, needs ${spec.cdbLength}`);
    finish(SENSE.INVALID_FIELD_IN_CDB, false);
    return;
  }
  if (spec.needsMedium) {
    const nr = unit.notReady();
    if (nr) {
      finish(nr, false);
      return;
    }
  }
  let outcome: Outcome;
  try {
    outcome = await spec.run(unit, ctx);
  } catch (e) {
    if (stats) stats.internalErrors++;
    unit.trace(`${spec.name}: internal error: ${e instanceof Error ? e.message : String(e)}`);
    outcome = SENSE.INTERNAL_TARGET_FAILURE;
  }
  if (outcome !== undefined && outcome !== STOPPED) unit.trace(`${spec.name}: CHECK CONDITION ${senseName(outcome)}`);
  finish(outcome, spec.keepsSense);
}

function safeComplete(io: ScsiIo, result: { status: number; sense?: Uint8Array }, unit: DispatchUnit): void {
  try {
    io.complete(result);
  } catch (e) {
    unit.trace(`transport complete() threw: ${e instanceof Error ? e.message : String(e)}`);
  }
}
