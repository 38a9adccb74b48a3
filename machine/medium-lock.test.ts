import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildSync } from "esbuild";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { MediumError } from "../media/block.js";
import { MediumLocks, MediumLockedError, processStartTime, type LockMode, type MediumLease } from "./medium-lock.js";

const U1 = "11111111-1111-4111-8111-111111111111";
const U2 = "22222222-2222-4222-8222-222222222222";
const U3 = "33333333-3333-4333-8333-333333333333";
const disk = (uuid: string, mode: LockMode) => ({ uuid, location: `/disks/${uuid.slice(0, 1)}.vdi`, mode });

let home: string;
let locks: MediumLocks;
const leases: MediumLease[] = [];
function acquire(owner: string, ...reqs: ReturnType<typeof disk>[]): MediumLease {
  const l = locks.acquire(owner, reqs);
  leases.push(l);
  return l;
}
function caught(fn: () => unknown): MediumLockedError {
  try {
    fn();
  } catch (e) {
    return e as MediumLockedError;
  }
  throw new Error("expected a lock error");
}

beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), "vstor-locks-"));
  locks = new MediumLocks(home);
});
afterEach(() => {
  for (const l of leases.splice(0)) l.release();
  rmSync(home, { recursive: true, force: true });
});

describe("compatibility between leases", () => {
  const allowed: Record<LockMode, Record<LockMode, boolean>> = {
    write: { write: false, read: false, shared: false },
    read: { write: false, read: true, shared: false },
    shared: { write: false, read: false, shared: true },
  };
  for (const held of ["write", "read", "shared"] as const) {
    for (const wanted of ["write", "read", "shared"] as const) {
      it(`${held} held, ${wanted} wanted: ${allowed[held][wanted] ? "granted" : "refused"}`, () => {
        acquire("vm1", disk(U1, held));
        if (allowed[held][wanted]) {
          acquire("vm2", disk(U1, wanted));
          expect(locks.holders(U1).map((h) => h.owner).sort()).toEqual(["vm1", "vm2"]);
        } else {
          const e = caught(() => acquire("vm2", disk(U1, wanted)));
          expect(e).toBeInstanceOf(MediumError);
          expect(e.kind).toBe("locked");
          expect(e.message).toContain(`/disks/1.vdi`);
          expect(e.message).toContain(`machine 'vm1' (pid ${process.pid})`);
          expect(e.holders).toEqual([expect.objectContaining({ owner: "vm1", mode: held, pid: process.pid })]);
          expect(locks.holders(U1).map((h) => h.owner)).toEqual(["vm1"]);
        }
      });
    }
  }

  it("words the refusal by the modes involved", () => {
    const w = acquire("vm1", disk(U1, "write"));
    expect(caught(() => acquire("vm2", disk(U1, "write"))).message).toBe(
      `/disks/1.vdi is locked for writing by machine 'vm1' (pid ${process.pid}); a normal disk can be used by one running machine at a time`,
    );
    expect(caught(() => acquire("vm2", disk(U1, "read"))).message).toMatch(/locked for writing.*parent of differencing images/);
    w.release();
    acquire("vm1", disk(U1, "read"));
    acquire("vm3", disk(U1, "read"));
    const e = caught(() => acquire("vm2", disk(U1, "write")));
    expect(e.message).toMatch(/locked for reading by machine 'vm1' .* and 1 other; it is the parent of differencing images in use by those machines/);
    expect(e.holders.map((h) => h.owner)).toEqual(["vm1", "vm3"]);
    leases.splice(0).forEach((l) => l.release());
    acquire("vm1", disk(U1, "shared"));
    expect(caught(() => acquire("vm2", disk(U1, "write"))).message).toMatch(/in use as a shareable disk by machine 'vm1'/);
  });

  it("a lease never conflicts with itself and keeps the strongest mode of a medium", () => {
    const l = acquire("vm1", disk(U1, "read"), disk(U1, "write"), disk(U2, "read"));
    expect(locks.holders(U1)).toEqual([expect.objectContaining({ owner: "vm1", mode: "write" })]);
    l.add([disk(U2, "write")]);
    l.add([disk(U2, "read")]); // weaker: no change
    expect(locks.holders(U2)).toEqual([expect.objectContaining({ mode: "write" })]);
    l.set([disk(U1, "read"), disk(U2, "read")]);
    expect(locks.holders(U1)).toEqual([expect.objectContaining({ mode: "read" })]);
    acquire("vm2", disk(U1, "read"));
    expect(locks.holders(U1)).toHaveLength(2);
  });

  it("treats UUIDs case-insensitively", () => {
    acquire("vm1", disk(U1, "write"));
    expect(() => acquire("vm2", { ...disk(U1, "write"), uuid: U1.toUpperCase() })).toThrow(MediumLockedError);
    expect(locks.holders(U1.toUpperCase())).toHaveLength(1);
  });
});

describe("all or nothing", () => {
  it("acquire: a conflict on a later request leaves the earlier ones untaken", () => {
    acquire("vm1", disk(U2, "write"));
    expect(() => acquire("vm2", disk(U1, "write"), disk(U2, "read"))).toThrow(/locked for writing by machine 'vm1'/);
    expect(locks.holders(U1)).toEqual([]);
    expect(existsSync(join(home, "locks", `${U1}.json`))).toBe(false);
    acquire("vm3", disk(U1, "write"));
  });

  it("set: keeps the old set when a new lock conflicts", () => {
    acquire("vm1", disk(U2, "write"));
    const l = acquire("vm2", disk(U1, "write"));
    expect(() => l.set([disk(U3, "write"), disk(U2, "read")])).toThrow(MediumLockedError);
    expect([...l.held.keys()]).toEqual([U1]);
    expect(locks.holders(U1)).toEqual([expect.objectContaining({ owner: "vm2", mode: "write" })]);
    expect(locks.holders(U3)).toEqual([]);
  });

  it("set: a snapshot freezes the written image and writes a new differencing image", () => {
    const l = acquire("vm1", disk(U1, "write"));
    l.set([disk(U1, "read"), disk(U2, "write")]);
    expect(locks.holders(U1)).toEqual([expect.objectContaining({ mode: "read" })]);
    expect(locks.holders(U2)).toEqual([expect.objectContaining({ mode: "write" })]);
    acquire("vm2", disk(U1, "read"));
    expect(() => acquire("vm3", disk(U1, "write"))).toThrow(/parent of differencing images/);
  });

  it("add and drop", () => {
    acquire("vm1", disk(U2, "write"));
    const l = acquire("vm2", disk(U1, "write"));
    expect(() => l.add([disk(U3, "write"), disk(U2, "write")])).toThrow(MediumLockedError);
    expect(locks.holders(U3)).toEqual([]);
    l.add([disk(U3, "shared")]);
    expect([...l.held.keys()].sort()).toEqual([U1, U3]);
    l.drop([U1]);
    expect(locks.holders(U1)).toEqual([]);
    expect(locks.holders(U3)).toHaveLength(1);
    l.release();
    expect(locks.holders(U3)).toEqual([]);
    expect(() => l.add([disk(U1, "read")])).toThrow(/released/);
  });
});

describe("liveness", () => {
  const table = (uuid: string) => join(home, "locks", `${uuid}.json`);
  const entry = (pid: number, start: string | null) => ({
    version: 1,
    uuid: U1,
    location: "/disks/1.vdi",
    holders: [{ pid, owner: "ghost", mode: "write", since: new Date().toISOString(), lease: "x", start }],
  });

  it("a holder whose process is gone is pruned", () => {
    const dead = spawnSync(process.execPath, ["-e", ""]).pid!;
    mkdirSync(join(home, "locks"), { recursive: true });
    writeFileSync(table(U1), JSON.stringify(entry(dead, null)));
    expect(locks.holders(U1)).toEqual([]);
    expect(existsSync(table(U1))).toBe(false);
    writeFileSync(table(U1), JSON.stringify(entry(dead, null)));
    acquire("vm1", disk(U1, "write"));
    expect(locks.holders(U1).map((h) => h.owner)).toEqual(["vm1"]);
  });

  it("pid 0 and garbage entries never hold a medium", () => {
    mkdirSync(join(home, "locks"), { recursive: true });
    writeFileSync(table(U1), JSON.stringify({ holders: [entry(0, null).holders[0], { pid: "x" }, null] }));
    expect(locks.holders(U1)).toEqual([]);
    writeFileSync(table(U1), "{ not json");
    acquire("vm1", disk(U1, "write"));
  });

  it.skipIf(!existsSync("/proc/self/stat"))("a live pid with another start time is a reused pid, hence dead", () => {
    const pid = process.ppid;
    mkdirSync(join(home, "locks"), { recursive: true });
    writeFileSync(table(U1), JSON.stringify(entry(pid, "-1")));
    expect(locks.holders(U1)).toEqual([]);
    expect(existsSync(table(U1))).toBe(false);
    writeFileSync(table(U1), JSON.stringify(entry(pid, processStartTime(pid)!)));
    expect(locks.holders(U1)).toEqual([expect.objectContaining({ pid, owner: "ghost" })]);
    expect(() => acquire("vm1", disk(U1, "read"))).toThrow(/by machine 'ghost'/);
  });

  it("holders() lists live holders only", () => {
    acquire("vm1", disk(U1, "read"));
    acquire("vm2", disk(U1, "read"));
    expect(locks.holders(U1).map((h) => [h.owner, h.pid, h.mode])).toEqual([
      ["vm1", process.pid, "read"],
      ["vm2", process.pid, "read"],
    ]);
    expect(locks.holders(U2)).toEqual([]);
  });

  it("registers one exit handler per lease and removes it on release", () => {
    const before = process.listenerCount("exit");
    const l = acquire("vm1", disk(U1, "write"));
    l.add([disk(U2, "write")]);
    l.set([disk(U2, "write")]);
    expect(process.listenerCount("exit")).toBe(before + 1);
    l.release();
    expect(process.listenerCount("exit")).toBe(before);
    // A refused acquire registers nothing.
    acquire("vm2", disk(U1, "write"));
    const n = process.listenerCount("exit");
    expect(() => locks.acquire("vm3", [disk(U1, "write")])).toThrow(MediumLockedError);
    expect(process.listenerCount("exit")).toBe(n);
  });
});

describe("across processes", () => {
  const here = dirname(fileURLToPath(import.meta.url));
  let build: string;
  let script: string;
  const children: ChildProcess[] = [];

  beforeAll(() => {
    // No TypeScript runner is installed, so the child runs a bundle of the module under test.
    build = mkdtempSync(join(tmpdir(), "vstor-locks-build-"));
    buildSync({
      entryPoints: [join(here, "medium-lock.ts")],
      bundle: true,
      platform: "node",
      format: "esm",
      outfile: join(build, "medium-lock.mjs"),
      logLevel: "error",
    });
    script = join(build, "child.mjs");
    writeFileSync(
      script,
      `import { MediumLocks } from "./medium-lock.mjs";
const [home, uuid, mode, stay] = process.argv.slice(2);
try {
  new MediumLocks(home).acquire("child-vm", [{ uuid, location: "/disks/child.vdi", mode }]);
} catch (e) {
  process.stdout.write(e.kind === "locked" ? "refused\\n" : String(e));
  process.exit(e.kind === "locked" ? 3 : 1);
}
process.stdout.write("ready\\n");
if (stay === "stay") setInterval(() => {}, 1000);
`,
    );
  });
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    rmSync(build, { recursive: true, force: true });
  });

  /** Resolves once the child holds its lock; "refused" when it could not take it. */
  async function startChild(uuid: string, mode: LockMode, stay: boolean): Promise<ChildProcess & { outcome?: string }> {
    const child = spawn(process.execPath, [script, home, uuid, mode, stay ? "stay" : ""], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let out = "";
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    const outcome = await new Promise<string>((resolve, reject) => {
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("ready")) resolve("ready");
      });
      child.once("exit", (code) =>
        out.includes("ready") ? resolve("ready") : code === 3 ? resolve("refused") : reject(new Error(`child exited ${code}: ${out}${err}`)),
      );
    });
    return Object.assign(child, { outcome });
  }

  it("a lock held by a live child is refused, and free once the child is killed", async () => {
    const child = await startChild(U1, "write", true);
    const e = caught(() => acquire("parent-vm", disk(U1, "read")));
    expect(e.kind).toBe("locked");
    expect(e.message).toContain(`machine 'child-vm' (pid ${child.pid})`);
    expect(locks.holders(U1)).toEqual([expect.objectContaining({ owner: "child-vm", pid: child.pid, mode: "write" })]);

    child.kill("SIGKILL");
    await once(child, "exit");
    // kill -9 runs no exit handler: the entry is still on disk, but dead.
    expect(readFileSync(join(home, "locks", `${U1}.json`), "utf8")).toContain("child-vm");
    acquire("parent-vm", disk(U1, "write"));
    expect(locks.holders(U1)).toEqual([expect.objectContaining({ owner: "parent-vm", pid: process.pid })]);
  });

  it("shared locks coexist across processes", async () => {
    await startChild(U2, "shared", true);
    acquire("parent-vm", disk(U2, "shared"));
    expect(locks.holders(U2).map((h) => h.owner).sort()).toEqual(["child-vm", "parent-vm"]);
  });

  it("of processes racing for one write lock, exactly one wins", async () => {
    const racers = await Promise.all([1, 2, 3, 4, 5].map(() => startChild(U1, "write", true)));
    expect(racers.filter((c) => c.outcome === "ready")).toHaveLength(1);
    expect(racers.filter((c) => c.outcome === "refused")).toHaveLength(4);
    const winner = racers.find((c) => c.outcome === "ready")!;
    expect(locks.holders(U1)).toEqual([expect.objectContaining({ pid: winner.pid })]);
  });

  it("a normal exit releases the child's locks", async () => {
    const child = await startChild(U3, "write", false);
    if (child.exitCode === null) await once(child, "exit");
    expect(child.exitCode).toBe(0);
    expect(existsSync(join(home, "locks", `${U3}.json`))).toBe(false);
  });
});
