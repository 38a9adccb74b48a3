/**
 * Cross-process medium locks, the rules VirtualBox applies to running machines: a normal disk is
 * written by one machine at a time, a shareable disk by several at once, and the parents of a
 * differencing chain are read by any number of machines while nobody writes them.
 *
 * Each medium has a small JSON table under `${home}/locks/` listing who holds it. Every change
 * to a table is a read-modify-write under withFileLock. Holders are recorded with their pid and
 * process start time; a holder whose process is gone (or whose pid now belongs to another
 * process) is dead and pruned, so a kill -9 never leaves a medium locked.
 */
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { MediumError } from "../media/block.js";
import { vstorHome, withFileLock, writeJsonAtomic } from "../media/io/node/persist.js";

export type LockMode = "write" | "read" | "shared";

export interface LockRequest {
  uuid: string;
  location: string;
  mode: LockMode;
}

export interface LockHolder {
  pid: number;
  owner: string;
  mode: LockMode;
  since: string;
}

/** A refused lock: which medium, what was wanted, and who is in the way. */
export class MediumLockedError extends MediumError {
  readonly uuid: string;
  readonly location: string;
  readonly wanted: LockMode;
  /** The conflicting holders, the one named in the message first. */
  readonly holders: LockHolder[];

  constructor(request: LockRequest, holders: LockHolder[]) {
    super("locked", lockMessage(request, holders));
    this.name = "MediumLockedError";
    this.uuid = request.uuid;
    this.location = request.location;
    this.wanted = request.mode;
    this.holders = holders;
  }
}

export interface MediumLease {
  readonly owner: string;
  /** Unique id of this lease; entries in the lock tables carry it. */
  readonly id: string;
  /** What the lease holds now, by (lower-case) medium UUID. */
  readonly held: ReadonlyMap<string, Readonly<LockRequest>>;
  /**
   * Replace the held set atomically: new locks are checked and taken before old ones go. Throws
   * like acquire, keeping the old set.
   */
  set(requests: LockRequest[]): void;
  /** Add locks (all or none). A medium already held keeps the stronger of its two modes. */
  add(requests: LockRequest[]): void;
  /** Drop locks of these medium UUIDs. */
  drop(uuids: string[]): void;
  release(): void;
  readonly released: boolean;
}

/** On-disk shape of one holder. `start` is null where the host has no /proc. */
interface TableEntry {
  pid: number;
  owner: string;
  mode: LockMode;
  since: string;
  lease: string;
  start: string | null;
}

interface LockTable {
  version: 1;
  uuid: string;
  location: string;
  holders: TableEntry[];
}

const MODES: readonly LockMode[] = ["write", "read", "shared"];

/** Same-lease merging: write covers everything; shared writes too, so it ranks above read. */
const RANK: Record<LockMode, number> = { read: 0, shared: 1, write: 2 };

/** Whether locks held in modes `a` and `b` by different leases can coexist. */
export function compatible(a: LockMode, b: LockMode): boolean {
  return a !== "write" && a === b;
}

// --- process identity -------------------------------------------------------------------------

let procChecked: boolean | undefined;
function haveProc(): boolean {
  procChecked ??= existsSync("/proc/self/stat");
  return procChecked;
}

/**
 * Start time of a process (field 22 of /proc/PID/stat, clock ticks since boot), or undefined
 * when it cannot be read (no /proc, or no such process).
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    // comm (field 2) may contain spaces and parentheses; the fields after it follow the last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return rest[19];
  } catch {
    return undefined;
  }
}

let ownStart: string | null | undefined;
function ownStartTime(): string | null {
  if (ownStart === undefined) ownStart = haveProc() ? (processStartTime(process.pid) ?? null) : null;
  return ownStart;
}

/** A holder is alive if its pid exists and (where /proc tells) still names the same process. */
function isAlive(e: TableEntry): boolean {
  // pid 0 or negative would address a process group and always "succeed".
  if (!Number.isInteger(e.pid) || e.pid <= 0) return false;
  try {
    process.kill(e.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  if (e.start === null || !haveProc()) return true;
  return processStartTime(e.pid) === e.start;
}

// --- tables -----------------------------------------------------------------------------------

function normUuid(uuid: string): string {
  return uuid.trim().toLowerCase();
}

/** A file name from a UUID: kept as is when it is a plain UUID, hex-encoded otherwise. */
function tableName(uuid: string): string {
  return /^[0-9a-z-]{1,64}$/.test(uuid) ? `${uuid}.json` : `x-${Buffer.from(uuid, "utf8").toString("hex")}.json`;
}

function isEntry(v: unknown): v is TableEntry {
  const e = v as TableEntry;
  return (
    typeof e === "object" &&
    e !== null &&
    typeof e.pid === "number" &&
    typeof e.owner === "string" &&
    MODES.includes(e.mode) &&
    typeof e.lease === "string" &&
    (e.start === null || typeof e.start === "string")
  );
}

function readTable(path: string, uuid: string): LockTable {
  let raw: string;
  try {
    raw = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, uuid, location: "", holders: [] };
    throw e;
  }
  // Tables are written atomically, so a bad one is not a half-write: skip what cannot be
  // understood rather than lock the medium forever.
  let parsed: Partial<LockTable>;
  try {
    parsed = JSON.parse(raw) as Partial<LockTable>;
  } catch {
    parsed = {};
  }
  return {
    version: 1,
    uuid,
    location: typeof parsed.location === "string" ? parsed.location : "",
    holders: Array.isArray(parsed.holders) ? parsed.holders.filter(isEntry) : [],
  };
}

function writeTable(path: string, table: LockTable): void {
  if (table.holders.length === 0) rmSync(path, { force: true });
  else writeJsonAtomic(path, table);
}

function publicHolder(e: TableEntry): LockHolder {
  return { pid: e.pid, owner: e.owner, mode: e.mode, since: e.since };
}

// --- messages ---------------------------------------------------------------------------------

function lockMessage(req: LockRequest, holders: LockHolder[]): string {
  const h = holders[0];
  if (!h) return `${req.location} is locked`;
  const others = holders.length - 1;
  const by = `machine '${h.owner}' (pid ${h.pid})${others > 0 ? ` and ${others} other${others > 1 ? "s" : ""}` : ""}`;
  const where = others > 0 ? "those machines" : "that machine";
  if (h.mode === "write") {
    const head = `${req.location} is locked for writing by ${by}`;
    if (req.mode === "write") return `${head}; a normal disk can be used by one running machine at a time`;
    if (req.mode === "read") return `${head}; it cannot be the parent of differencing images in use elsewhere while it changes`;
    return `${head}, which uses it as a normal disk; a disk can be shared only if every machine attaches it as shareable`;
  }
  if (h.mode === "read") {
    const head = `${req.location} is locked for reading by ${by}`;
    if (req.mode === "write") return `${head}; it is the parent of differencing images in use by ${where} and must not change while they are`;
    return `${head}; it is the parent of differencing images in use by ${where} and cannot be attached as a shareable disk`;
  }
  const head = `${req.location} is in use as a shareable disk by ${by}`;
  if (req.mode === "write") return `${head}; to use it in several running machines at once, attach it as shareable in each`;
  return `${head}; a disk that running machines write cannot be the parent of differencing images`;
}

/** Most telling first: a writer explains a refusal best, then the oldest holder. */
function orderConflicts(list: TableEntry[]): LockHolder[] {
  return [...list].sort((a, b) => RANK[b.mode] - RANK[a.mode] || a.since.localeCompare(b.since)).map(publicHolder);
}

// --- locks ------------------------------------------------------------------------------------

/** Dedupe by UUID, keeping the strongest mode asked for. */
function normalize(requests: readonly LockRequest[]): Map<string, LockRequest> {
  const out = new Map<string, LockRequest>();
  for (const r of requests) {
    if (!MODES.includes(r.mode)) throw new TypeError(`unknown lock mode ${String(r.mode)}`);
    const uuid = normUuid(r.uuid);
    if (!uuid) throw new TypeError("lock request without a medium UUID");
    const prev = out.get(uuid);
    if (!prev || RANK[r.mode] > RANK[prev.mode]) out.set(uuid, { uuid, location: r.location, mode: r.mode });
  }
  return out;
}

export class MediumLocks {
  readonly home: string;
  readonly dir: string;

  constructor(home: string = vstorHome()) {
    this.home = home;
    this.dir = join(home, "locks");
  }

  /** All-or-nothing: takes every lock or none; throws MediumLockedError (kind "locked"). */
  acquire(owner: string, requests: LockRequest[]): MediumLease {
    const lease = new Lease(this, owner);
    lease.set(requests);
    lease.arm();
    return lease;
  }

  /** Live holders of one medium (dead processes pruned). */
  holders(uuid: string): LockHolder[] {
    const id = normUuid(uuid);
    const path = this.tablePath(id);
    return withFileLock(path, () => {
      const table = readTable(path, id);
      if (this.prune(table)) writeTable(path, table);
      return table.holders.map(publicHolder);
    });
  }

  /** @internal */
  tablePath(uuid: string): string {
    return join(this.dir, tableName(uuid));
  }

  /** Drop dead holders; true if any were. */
  private prune(table: LockTable): boolean {
    const live = table.holders.filter(isAlive);
    const changed = live.length !== table.holders.length;
    table.holders = live;
    return changed;
  }

  /**
   * Make `lease`'s entries for `take` what they say, checking every one first against the other
   * (live) holders; nothing is written unless all pass. Tables are locked in UUID order so two
   * processes taking overlapping sets cannot deadlock.
   * @internal
   */
  take(lease: Lease, take: LockRequest[]): void {
    if (take.length === 0) return;
    const sorted = [...take].sort((a, b) => (a.uuid < b.uuid ? -1 : a.uuid > b.uuid ? 1 : 0));
    const tables = new Map<string, { path: string; before: LockTable; pruned: LockTable; table: LockTable }>();
    const locked = (i: number): void => {
      if (i < sorted.length) {
        const path = this.tablePath(sorted[i]!.uuid);
        withFileLock(path, () => locked(i + 1));
        return;
      }
      for (const req of sorted) {
        const path = this.tablePath(req.uuid);
        const before = readTable(path, req.uuid);
        const pruned: LockTable = { ...before, holders: [...before.holders] };
        this.prune(pruned);
        const conflicts = pruned.holders.filter((e) => e.lease !== lease.id && !compatible(e.mode, req.mode));
        if (conflicts.length > 0) {
          // Nothing of ours is written, but the pruning of dead holders is still worth keeping.
          const seen = [...tables.values(), { path, before, pruned }];
          for (const t of seen) if (t.pruned.holders.length !== t.before.holders.length) writeTable(t.path, t.pruned);
          throw new MediumLockedError(req, orderConflicts(conflicts));
        }
        const own = pruned.holders.find((e) => e.lease === lease.id);
        const since = own && own.mode === req.mode ? own.since : new Date().toISOString();
        const entry: TableEntry = { pid: process.pid, owner: lease.owner, mode: req.mode, since, lease: lease.id, start: ownStartTime() };
        const table: LockTable = { ...pruned, location: req.location, holders: [...pruned.holders.filter((e) => e.lease !== lease.id), entry] };
        tables.set(req.uuid, { path, before, pruned, table });
      }
      const written: { path: string; before: LockTable }[] = [];
      try {
        for (const t of tables.values()) {
          writeTable(t.path, t.table);
          written.push(t);
        }
      } catch (e) {
        // A failed write (ENOSPC, ...) must not leave part of the set taken.
        for (const w of written) {
          try {
            writeTable(w.path, w.before);
          } catch {
            // best effort; a stale entry of ours is still pruned once this process ends
          }
        }
        throw e;
      }
    };
    locked(0);
  }

  /** Remove `lease`'s entries for these UUIDs (and any dead holders met on the way). @internal */
  remove(lease: Lease, uuids: Iterable<string>): void {
    for (const uuid of uuids) {
      const path = this.tablePath(uuid);
      withFileLock(path, () => {
        const table = readTable(path, uuid);
        const n = table.holders.length;
        this.prune(table);
        table.holders = table.holders.filter((e) => e.lease !== lease.id);
        if (table.holders.length !== n) writeTable(path, table);
      });
    }
  }
}

class Lease implements MediumLease {
  readonly id = randomUUID();
  readonly owner: string;
  private readonly locks: MediumLocks;
  private current = new Map<string, LockRequest>();
  private onExit: (() => void) | undefined;
  private done = false;

  constructor(locks: MediumLocks, owner: string) {
    this.locks = locks;
    this.owner = owner;
  }

  get held(): ReadonlyMap<string, Readonly<LockRequest>> {
    return new Map(this.current);
  }

  get released(): boolean {
    return this.done;
  }

  /** Release on a normal process exit; a kill -9 is covered by liveness pruning instead. */
  arm(): void {
    if (this.onExit || this.done) return;
    this.onExit = () => {
      try {
        this.release();
      } catch {
        // exiting anyway; dead holders are pruned by the next process that looks
      }
    };
    process.on("exit", this.onExit);
  }

  set(requests: LockRequest[]): void {
    this.apply(normalize(requests));
  }

  add(requests: LockRequest[]): void {
    const next = new Map(this.current);
    for (const [uuid, r] of normalize(requests)) {
      const prev = next.get(uuid);
      if (!prev || RANK[r.mode] > RANK[prev.mode]) next.set(uuid, r);
    }
    this.apply(next);
  }

  drop(uuids: string[]): void {
    if (this.done) return;
    const next = new Map(this.current);
    for (const u of uuids) next.delete(normUuid(u));
    this.apply(next);
  }

  release(): void {
    if (this.done) return;
    this.done = true;
    if (this.onExit) process.off("exit", this.onExit);
    this.onExit = undefined;
    const uuids = [...this.current.keys()];
    this.current = new Map();
    this.locks.remove(this, uuids);
  }

  private apply(next: Map<string, LockRequest>): void {
    if (this.done) throw new Error(`medium lease of '${this.owner}' was released`);
    // Only new or changed modes need checking; an unchanged lock was compatible when taken.
    const changed = [...next.values()].filter((r) => this.current.get(r.uuid)?.mode !== r.mode);
    const gone = [...this.current.keys()].filter((u) => !next.has(u));
    this.locks.take(this, changed);
    // Bookkeeping before removal: if removal fails, the entries left behind are ours and die with us.
    this.current = next;
    this.locks.remove(this, gone);
  }
}
