import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MediumError, type BlockBackend } from "./block.js";
import { ImageChain } from "./chain.js";
import { CLONE_CHUNK, CLONE_IN_FLIGHT, chunkSizeFor, cloneToNew, copyMedium } from "./clone.js";
import { createRaw, openRaw } from "./formats/raw/raw.js";
import { pattern } from "./formats/vdi/test-support.js";
import { createVdi, openVdi } from "./formats/vdi/vdi-image.js";
import { openVhd } from "./formats/vhd/vhd-image.js";
import { createVmdk } from "./formats/vmdk/index.js";
import { FaultControl, HeldFileOpener, MemoryFileOpener } from "./io/fault-io.js";
import { MediumManager } from "./medium-manager.js";
import { MediaRegistry } from "./registry.js";
import { loggedOpener, type LoggedWrite } from "./testing/write-log.js";

const MiB = 1 << 20;
const SIZE = 16 * MiB;

async function contents(b: BlockBackend): Promise<Uint8Array> {
  const out = new Uint8Array(b.size);
  await b.read(0, out);
  return out;
}

async function expectKind(p: Promise<unknown>, kind: string): Promise<MediumError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(MediumError);
  expect((e as MediumError).kind).toBe(kind);
  return e as MediumError;
}

/** A dynamic VDI with data in blocks 1, 2 (half), 9 and a stored block of zeros (5). */
async function sparseVdi(opener: MemoryFileOpener | HeldFileOpener, path = "/src.vdi") {
  const img = await createVdi(opener, path, { size: SIZE });
  await img.write(1 * MiB, pattern(1 * MiB, MiB, 1));
  await img.write(2 * MiB, pattern(2 * MiB, MiB / 2, 2));
  await img.write(9 * MiB + 4096, pattern(9 * MiB + 4096, 8192, 3));
  await img.write(5 * MiB, pattern(5 * MiB, 4096, 4)); // allocates block 5 ...
  await img.write(5 * MiB, new Uint8Array(MiB)); // ... which now stores zeros
  return img;
}

describe("clone: copyMedium and cloneToNew", () => {
  it("copies a dynamic VDI to a new VDI: same data, only the non-zero blocks stored", async () => {
    const opener = new MemoryFileOpener();
    const src = await sparseVdi(opener);
    expect((await src.allocatedExtents()).map((e) => e.offset / MiB)).toEqual([1, 5, 9]); // 1-2 coalesced, 5, 9
    const progress: [number, number][] = [];
    const r = await cloneToNew(src, { opener, path: "/dst.vdi", format: "VDI" }, { onProgress: (d, t) => progress.push([d, t]) });
    expect(r).toMatchObject({ total: 4 * MiB, written: 3 * MiB, skipped: MiB, zeroed: 0 });
    expect(progress[0]).toEqual([0, 4 * MiB]);
    expect(progress.at(-1)).toEqual([4 * MiB, 4 * MiB]);

    const dst = await openVdi(opener, "/dst.vdi", { readOnly: true });
    expect(dst.uuid).not.toBe(src.uuid);
    expect(dst.size).toBe(SIZE);
    expect(await dst.allocatedExtents()).toEqual([
      { offset: 1 * MiB, length: 2 * MiB, state: "data" },
      { offset: 9 * MiB, length: MiB, state: "data" },
    ]);
    expect(Buffer.compare(await contents(dst), await contents(src))).toBe(0);
    expect(opener.file("/dst.vdi").size).toBeLessThan(opener.file("/src.vdi").size);
  });

  it("a raw source (all data as far as it knows) becomes a sparse VDI; VDI to raw writes no zeros", async () => {
    const opener = new MemoryFileOpener();
    const raw = await createRaw(opener, "/src.raw", 4 * MiB);
    await raw.write(3 * MiB + 512, pattern(0, 1024, 7));
    await cloneToNew(raw, { opener, path: "/dst.vdi", format: "VDI", variant: "Standard" });
    const vdi = await openVdi(opener, "/dst.vdi", { readOnly: true });
    expect(await vdi.allocatedExtents()).toEqual([{ offset: 3 * MiB, length: MiB, state: "data" }]);
    expect(Buffer.compare(await contents(vdi), await contents(raw))).toBe(0);

    await cloneToNew(vdi, { opener, path: "/back.raw", format: "RAW" });
    const back = await openRaw(opener, "/back.raw", { readOnly: true });
    expect(back.size).toBe(4 * MiB);
    expect(opener.file("/back.raw").allocatedBytes).toBe(64 * 1024); // one memory chunk: a sparse file
    expect(Buffer.compare(await contents(back), await contents(raw))).toBe(0);
  });

  it("fixed targets hold the same data", async () => {
    const opener = new MemoryFileOpener();
    const src = await sparseVdi(opener);
    for (const [path, format] of [["/f.vdi", "VDI"], ["/f.raw", "RAW"]] as const) {
      await cloneToNew(src, { opener, path, format, variant: "Fixed" });
      const dst = format === "VDI" ? await openVdi(opener, path) : await openRaw(opener, path);
      expect(Buffer.compare(await contents(dst), await contents(src)), path).toBe(0);
      if (format === "VDI") expect((await dst.allocatedExtents()).reduce((n, e) => n + e.length, 0)).toBe(SIZE);
    }
  });

  it("flattens a differencing chain: what the guest sees, in an image with no parent", async () => {
    const opener = new MemoryFileOpener();
    const base = await sparseVdi(opener, "/base.vdi");
    await base.close();
    const parent = await openVdi(opener, "/base.vdi", { readOnly: true });
    const child = await createVdi(opener, "/child.vdi", { size: SIZE, parent: { uuid: parent.uuid, modifyUuid: parent.modifyUuid } });
    await child.write(1 * MiB + 512, pattern(0, 512, 9)); // over the parent's data
    await child.write(12 * MiB, pattern(12 * MiB, MiB, 10)); // where the parent has none
    await child.write(9 * MiB, new Uint8Array(MiB)); // hides the parent's block 9
    const chain = new ImageChain([child, parent]);
    await cloneToNew(chain, { opener, path: "/flat.vdi", format: "VDI" });
    const flat = await openVdi(opener, "/flat.vdi", { readOnly: true });
    expect(flat.parentUuid).toBeNull();
    expect(flat.isDifferencing).toBe(false);
    expect(Buffer.compare(await contents(flat), await contents(chain))).toBe(0);
    expect((await flat.allocatedExtents()).map((e) => [e.offset / MiB, e.length / MiB])).toEqual([
      [1, 2],
      [12, 1],
    ]);
  });

  it("keeps several chunks in flight", async () => {
    const control = new FaultControl();
    const opener = new HeldFileOpener(new MemoryFileOpener(), control);
    const raw = await createRaw(opener, "/src.raw", 16 * MiB);
    await raw.write(0, pattern(0, 16 * MiB, 3));
    control.hold((r) => r.op === "read" && r.path === "/src.raw");
    const done = cloneToNew(raw, { opener, path: "/dst.vdi", format: "VDI" }, { inFlight: 8 });
    await control.whenHeld(8);
    expect(control.held.length).toBe(8);
    control.stopHolding();
    control.releaseAll();
    await done;
    expect(Buffer.compare(await contents(await openVdi(opener, "/dst.vdi")), await contents(raw))).toBe(0);
  });

  it("keeps CLONE_IN_FLIGHT chunks in flight by default", async () => {
    const control = new FaultControl();
    const opener = new HeldFileOpener(new MemoryFileOpener(), control);
    const raw = await createRaw(opener, "/src.raw", 16 * MiB);
    await raw.write(0, pattern(0, 16 * MiB, 3));
    control.hold((r) => r.op === "read" && r.path === "/src.raw");
    const done = cloneToNew(raw, { opener, path: "/dst.raw", format: "RAW" });
    await control.whenHeld(CLONE_IN_FLIGHT);
    await new Promise((r) => setTimeout(r, 10));
    expect(control.held.length).toBe(CLONE_IN_FLIGHT);
    control.stopHolding();
    control.releaseAll();
    await done;
  });

  it("chunks are whole blocks of the target: a new VHD's 2 MiB blocks are each written in one request", async () => {
    const memory = new MemoryFileOpener();
    expect(chunkSizeFor(await createRaw(memory, "/r.raw", SIZE))).toBe(CLONE_CHUNK);
    expect(chunkSizeFor(await createVdi(memory, "/1.vdi", { size: SIZE }))).toBe(CLONE_CHUNK);
    expect(chunkSizeFor(await createVdi(memory, "/4.vdi", { size: SIZE, blockSize: 4 * MiB }))).toBe(4 * MiB);
    expect(chunkSizeFor(await createVdi(memory, "/64.vdi", { size: 128 * MiB, blockSize: 64 * MiB }))).toBe(CLONE_CHUNK); // too big to buffer
    expect(chunkSizeFor(await createVmdk(memory, "/g.vmdk", { size: SIZE }))).toBe(CLONE_CHUNK); // 64 KiB grains
    const log: LoggedWrite[] = [];
    const opener = loggedOpener(memory, log);
    const raw = await createRaw(opener, "/src.raw", SIZE);
    await raw.write(0, pattern(0, SIZE, 4));
    log.length = 0;
    await cloneToNew(raw, { opener, path: "/dst.vhd", format: "VHD" });
    const big = log.filter((w) => w.path === "/dst.vhd" && w.data.length >= MiB).map((w) => w.data.length);
    expect(big).toEqual(Array(SIZE / (2 * MiB)).fill(2 * MiB));
    const dst = await openVhd(memory, "/dst.vhd", { readOnly: true });
    expect(Buffer.compare(await contents(dst), await contents(raw))).toBe(0);
  });

  it("a write failing midway: the error comes back and the partial image is removed", async () => {
    const control = new FaultControl();
    const memory = new MemoryFileOpener();
    const opener = new HeldFileOpener(memory, control);
    const src = await sparseVdi(opener);
    control.failWhen((r) => r.op === "write" && r.path === "/dst.vdi" && r.pos > 2 * MiB, new MediumError("io", "disk full (injected)"));
    const e = await expectKind(cloneToNew(src, { opener, path: "/dst.vdi", format: "VDI" }), "io");
    expect(e.message).toContain("disk full");
    expect(memory.files.has("/dst.vdi")).toBe(false);
  });

  it("into an existing medium: zeros over its old data, its tail and identity kept; refusals", async () => {
    const opener = new MemoryFileOpener();
    const src = await sparseVdi(opener);
    const dst = await createVdi(opener, "/old.vdi", { size: SIZE + 2 * MiB });
    const uuid = dst.uuid;
    await dst.write(0, pattern(0, SIZE + 2 * MiB, 5));
    const r = await copyMedium(src, dst);
    expect(r.total).toBe(SIZE); // every chunk: the old image stores data everywhere
    const all = await contents(dst);
    expect(Buffer.compare(all.subarray(0, SIZE), await contents(src))).toBe(0);
    expect(Buffer.compare(all.subarray(SIZE), pattern(SIZE, 2 * MiB, 5))).toBe(0);
    expect(dst.uuid).toBe(uuid);

    const small = await createVdi(opener, "/small.vdi", { size: SIZE - MiB });
    await expectKind(copyMedium(src, small), "out-of-bounds");
    await expectKind(cloneToNew(src, { opener, path: "/old.vdi", format: "VDI" }), "in-use");
    expect(opener.files.has("/old.vdi")).toBe(true);
  });
});

describe("clone: MediumManager.clone and the registry", () => {
  function manager(opener: MemoryFileOpener | HeldFileOpener) {
    const home = mkdtempSync(join(tmpdir(), "vstor-clone-"));
    return new MediumManager(new MediaRegistry(home), opener);
  }

  it("registers the clone with a new UUID, and a source given by an unregistered path", async () => {
    const opener = new MemoryFileOpener();
    const mm = manager(opener);
    await (await sparseVdi(opener)).close();
    const info = await mm.clone("/src.vdi", "/dst.raw", { format: "RAW" });
    expect(info).toMatchObject({ format: "RAW", location: "/dst.raw", size: SIZE });
    const src = mm.registry.findByLocation("/src.vdi");
    expect(src?.format).toBe("VDI");
    expect(info.uuid).not.toBe(src?.uuid);
    expect(mm.registry.list().map((m) => m.location).sort()).toEqual(["/dst.raw", "/src.vdi"]);

    // Default format: the source's.
    expect((await mm.clone(info.uuid, "/again")).format).toBe("RAW");
    expect((await mm.clone(src!.uuid, "/vdi-again")).format).toBe("VDI");
    await expectKind(mm.clone("/nothing-here", "/x.vdi"), "not-found");
    await expectKind(mm.clone(src!.uuid, "/src.vdi", { existing: true }), "in-use");
  });

  it("a failure midway leaves the registry as it was and no file behind", async () => {
    const control = new FaultControl();
    const memory = new MemoryFileOpener();
    const opener = new HeldFileOpener(memory, control);
    const mm = manager(opener);
    await (await sparseVdi(opener)).close();
    const before = mm.registry.list();
    control.failWhen((r) => r.op === "write" && r.path === "/dst.vdi" && r.pos > 2 * MiB, new MediumError("io", "disk full (injected)"));
    await expectKind(mm.clone("/src.vdi", "/dst.vdi"), "io");
    expect(memory.files.has("/dst.vdi")).toBe(false);
    expect(mm.registry.list()).toEqual(before);
    expect(before).toEqual([]); // not even the source, given by path, was registered
  });

  it("--existing writes into a registered medium, keeping its UUID", async () => {
    const opener = new MemoryFileOpener();
    const mm = manager(opener);
    await (await sparseVdi(opener)).close();
    const old = await mm.create({ path: "/old.vdi", size: SIZE });
    const info = await mm.clone("/src.vdi", old.uuid, { existing: true });
    expect(info.uuid).toBe(old.uuid);
    const a = await mm.open("/src.vdi", { readOnly: true });
    const b = await mm.open(old.uuid, { readOnly: true });
    expect(Buffer.compare(await contents(a), await contents(b))).toBe(0);
    await expectKind(mm.clone("/src.vdi", old.uuid, { existing: true, format: "RAW" }), "unsupported");
  });
});
