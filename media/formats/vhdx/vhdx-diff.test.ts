/**
 * Differencing VHDX over a dynamic parent, hand built (test-support.ts): fully present,
 * partially present (sector bitmap), not present, zero and undefined blocks, read through
 * media/chain.ts byte for byte; found and linked by the medium manager through the
 * media/formats.ts hooks (relative_path, parent_linkage = the parent's DataWriteGuid).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { ImageChain } from "../../chain.js";
import { bindParent, parentFileOf } from "../../formats.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import { MediumManager } from "../../medium-manager.js";
import { MediaRegistry } from "../../registry.js";
import { firstDiff, pattern } from "../vdi/test-support.js";
import { PayloadState, encodeEntry, sectorBitmapIndex, sectorRuns } from "./bat.js";
import { MiB } from "./structures.js";
import { BAT_OFFSET, METADATA_OFFSET, buildVhdx, encodeParentLocator, vhdxLocator, type FixtureBlock } from "./test-support.js";
import { openVhdx } from "./vhdx-image.js";

const SIZE = 7 * MiB + MiB / 2; // the last block is half a block
const PARENT_DWG = "0d0d0d0d-1111-4222-8333-444444444444";
const CHILD_PAGE83 = "c41dc41d-0000-4000-8000-000000000001";
const homes: string[] = [];
afterAll(() => homes.forEach((h) => rmSync(h, { recursive: true, force: true })));

/** Sectors of a 1 MiB block (2048) by rule. */
const some = (s: number) => s < 8 || s === 100 || (s >= 1000 && s < 1024) || s === 2047;

/** The parent: pattern everywhere except block 5 (zero state) and block 6 (not present). */
function parentImage() {
  const blocks = new Map<number, FixtureBlock>();
  for (let i = 0; i < 8; i++) if (i !== 5 && i !== 6) blocks.set(i, pattern(i * MiB, MiB, 3));
  blocks.set(5, PayloadState.zero);
  const f = buildVhdx({ size: SIZE, blocks, header: { dataWriteGuid: PARENT_DWG } });
  const model = new Uint8Array(SIZE);
  for (let i = 0; i < 8; i++) if (i !== 5 && i !== 6) model.set(pattern(i * MiB, MiB, 3).subarray(0, Math.min(MiB, SIZE - i * MiB)), i * MiB);
  return { bytes: f.bytes, model, page83: f.params.page83 };
}

/**
 * The child: 0 fully present, 1 partially present (`some` sectors), 2 not present, 3 zero,
 * 4 undefined, 5 partially present with no sector, 6 partially present with every sector,
 * 7 (half a block) partially present.
 */
function childImage(locator: [string, string][] = vhdxLocator(PARENT_DWG, "..\\base.vhdx"), parentModel: Uint8Array) {
  const data = (i: number) => pattern(i * MiB, MiB, 11);
  const blocks = new Map<number, FixtureBlock>([
    [0, data(0)],
    [1, { data: data(1), present: some }],
    [3, PayloadState.zero],
    [4, PayloadState.undefined],
    [5, { data: data(5), present: () => false }],
    [6, { data: data(6), present: () => true }],
    [7, { data: data(7), present: some }],
  ]);
  const f = buildVhdx({ size: SIZE, blocks, parentLocator: locator, params: { page83: CHILD_PAGE83 }, header: { dataWriteGuid: "c41dc41d-0000-4000-8000-0000000000d0" } });
  const model = parentModel.slice();
  model.set(data(0), 0);
  for (const i of [1, 7]) for (let s = 0; s < 2048 && i * MiB + s * 512 < SIZE; s++) if (some(s)) model.set(data(i).subarray(s * 512, s * 512 + 512), i * MiB + s * 512);
  model.fill(0, 3 * MiB, 5 * MiB);
  model.set(data(6), 6 * MiB);
  return { bytes: f.bytes, model };
}

async function family(locator?: [string, string][]) {
  const opener = new MemoryFileOpener();
  const parent = parentImage();
  const child = childImage(locator, parent.model);
  for (const [path, bytes] of [["/vm/base.vhdx", parent.bytes], ["/vm/snap/child.vhdx", child.bytes]] as const) {
    const f = await opener.open(path, { create: true });
    await f.write(0, bytes);
    await f.close();
  }
  return { opener, parent, child };
}

function manager(opener: MemoryFileOpener): MediumManager {
  const home = mkdtempSync(join(tmpdir(), "vstor-vhdx-diff-"));
  homes.push(home);
  return new MediumManager(new MediaRegistry(home), opener);
}

async function readAll(b: { size: number; read(o: number, buf: Uint8Array): Promise<void> }): Promise<Uint8Array> {
  const out = new Uint8Array(b.size);
  await b.read(0, out);
  return out;
}

describe("differencing VHDX", () => {
  it("exposes its parent link: locator, relative path, linkage as parent modification UUID", async () => {
    const { opener, parent } = await family();
    const child = await openVhdx(opener, "/vm/snap/child.vhdx");
    expect(child.variant).toBe("differencing");
    expect(child.uuid).toBe(CHILD_PAGE83);
    expect(child.parentLocator?.linkage).toBe(PARENT_DWG);
    expect(child.parentFileName).toBe("../base.vhdx");
    expect(parentFileOf(child)).toBe("/vm/base.vhdx");
    expect(child.parentUuid).toBe(PARENT_DWG); // unbound: the linkage
    expect(child.parentModifyUuid).toBe(PARENT_DWG);
    const base = await openVhdx(opener, "/vm/base.vhdx");
    expect(base.parentUuid).toBeNull();
    expect(base.modifyUuid).toBe(PARENT_DWG);
    bindParent(child, base);
    expect(child.parentUuid).toBe(parent.page83);
    expect(child.parentModifyUuid).toBe(base.modifyUuid);
    await child.close();
    await base.close();
  });

  it("reads every byte through the chain: own sectors, the parent's, zeros", async () => {
    const { opener, child: model } = await family();
    const child = await openVhdx(opener, "/vm/snap/child.vhdx");
    const base = await openVhdx(opener, "/vm/base.vhdx");
    expect(child.bindParent(base)).toBe(true);
    const chain = new ImageChain([child, base], { readOnly: true });
    expect(chain.parentModified).toEqual([]);
    expect(firstDiff(await readAll(chain), model.model)).toBe(-1);
    // Odd pieces across block and run boundaries.
    for (const [at, n] of [[MiB - 1024, 4096], [MiB + 7 * 512, 2048], [MiB + 99 * 512, 1536], [5 * MiB - 512, 2 * MiB + 1024], [SIZE - 1024, 1024]] as const) {
      const part = new Uint8Array(n);
      await chain.read(at, part);
      expect(firstDiff(part, model.model.subarray(at, at + n)), `${at}+${n}`).toBe(-1);
    }
    // What the child stores: block 0, the sectors of 1, 6 and 7; zeros for 3 and 4.
    const ext = await child.allocatedExtents();
    expect(ext[0]).toEqual({ offset: 0, length: MiB + 8 * 512, state: "data" });
    expect(ext).toContainEqual({ offset: 3 * MiB, length: 2 * MiB, state: "zero" });
    expect(ext).toContainEqual({ offset: 6 * MiB, length: MiB + 8 * 512, state: "data" });
    // Alone, what the child leaves to its parent reads as zeros.
    const alone = await readAll(child);
    for (let i = 0; i < SIZE; i += 512) {
      const b = Math.floor(i / MiB);
      const s = (i % MiB) / 512;
      const own = b === 0 || b === 6 || ((b === 1 || b === 7) && some(s));
      const want = own ? model.model.subarray(i, i + 512) : new Uint8Array(512);
      if (firstDiff(alone.subarray(i, i + 512), want) !== -1) throw new Error(`sector at ${i} read alone`);
    }
    await chain.close();
    await expect(child.write(0, new Uint8Array(512))).rejects.toMatchObject({ kind: "closed" });
  });

  it("is opened with its parent by the medium manager, found by relative_path and checked by linkage", async () => {
    const { opener, child: model } = await family();
    const mm = manager(opener);
    const base = await mm.register("/vm/base.vhdx");
    const info = await mm.register("/vm/snap/child.vhdx");
    expect(info).toMatchObject({ format: "VHDX", variant: "Diff", uuid: CHILD_PAGE83, parentUuid: base.uuid, modifyUuid: "c41dc41d-0000-4000-8000-0000000000d0" });
    const chain = await mm.open("/vm/snap/child.vhdx", { readOnly: true });
    expect(chain).toBeInstanceOf(ImageChain);
    expect((chain as ImageChain).layers.map((l) => l.path)).toEqual(["/vm/snap/child.vhdx", "/vm/base.vhdx"]);
    expect(firstDiff(await readAll(chain), model.model)).toBe(-1);
    await chain.close();
    // Not read-only: still read-only (VHDX is never written), and opens the same.
    const rw = await mm.open("/vm/snap/child.vhdx");
    expect(rw.readOnly).toBe(true);
    await rw.close();
  });

  it("accepts a parent matching parent_linkage2; refuses one matching neither, and a missing parent", async () => {
    const other = "99999999-0000-4000-8000-000000000000";
    let { opener } = await family(vhdxLocator(other, "..\\base.vhdx", [["parent_linkage2", `{${PARENT_DWG}}`]]));
    let chain = await manager(opener).open("/vm/snap/child.vhdx", { readOnly: true });
    expect((chain as ImageChain).top.parentModifyUuid).toBe(PARENT_DWG);
    await chain.close();

    ({ opener } = await family(vhdxLocator(other, "..\\base.vhdx")));
    const err = await manager(opener).open("/vm/snap/child.vhdx", { readOnly: true }).catch((e: unknown) => e);
    expect(err).toMatchObject({ kind: "not-found" });
    expect((err as MediumError).message).toMatch(/has parent \{99999999-0000-4000-8000-000000000000\}, not \/vm\/base\.vhdx/);

    ({ opener } = await family());
    await opener.remove("/vm/base.vhdx");
    const missing = await manager(opener).open("/vm/snap/child.vhdx", { readOnly: true }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(MediumError);
    expect(missing).toMatchObject({ kind: "not-found" });
    expect((missing as MediumError).message).toMatch(/parent \{0d0d0d0d-1111-4222-8333-444444444444\} of \/vm\/snap\/child\.vhdx .*nor is \/vm\/base\.vhdx/);

    // Only an absolute Windows path: the parent is looked for next to the child by its name.
    ({ opener } = await family([["parent_linkage", `{${PARENT_DWG}}`], ["absolute_win32_path", "\\\\?\\D:\\vms\\base.vhdx"]]));
    const f = await opener.open("/vm/snap/base.vhdx", { create: true });
    await f.write(0, parentImage().bytes);
    await f.close();
    chain = await manager(opener).open("/vm/snap/child.vhdx", { readOnly: true });
    expect((chain as ImageChain).layers[1]!.path).toBe("/vm/snap/base.vhdx");
    await chain.close();
  });

  it("finds sector bitmaps per chunk (4 GiB of sectors each)", async () => {
    const size = 4 * 1024 * MiB + 4 * MiB;
    const a = pattern(0, MiB, 21);
    const b = pattern(0, MiB, 23);
    const f = buildVhdx({
      size,
      blocks: new Map<number, FixtureBlock>([
        [0, { data: a, present: (s) => s % 2 === 0 }],
        [4097, { data: b, present: (s) => s >= 1024 }],
      ]),
      parentLocator: vhdxLocator(PARENT_DWG, "base.vhdx"),
    });
    const opener = new MemoryFileOpener();
    const io = await opener.open("/big.vhdx", { create: true });
    await io.write(0, f.bytes);
    await io.close();
    const img = await openVhdx(opener, "/big.vhdx");
    expect(img.storedRuns(0, 0, 2048)).toEqual([{ length: 512, stored: true }, { length: 512, stored: false }, { length: 512, stored: true }, { length: 512, stored: false }]);
    expect(img.storedRuns(4097, MiB / 2 - 512, 1024)).toEqual([{ length: 512, stored: false }, { length: 512, stored: true }]);
    const got = new Uint8Array(MiB);
    await img.read(4097 * MiB, got);
    expect(firstDiff(got.subarray(MiB / 2), b.subarray(MiB / 2))).toBe(-1);
    expect(got.subarray(0, MiB / 2).every((x) => x === 0)).toBe(true);
    expect(img.blockState(4096)).toBe("unallocated");
    await img.close();
  });

  it("refuses a damaged or unknown parent locator, and partial blocks without a sector bitmap", async () => {
    const cases: [Uint8Array, string, RegExp][] = [
      [buildVhdx({ size: 4 * MiB, parentLocator: [["relative_path", "p.vhdx"]] }).bytes, "corrupt", /no parent_linkage/],
      [buildVhdx({ size: 4 * MiB, parentLocator: [["parent_linkage", "{not-a-guid}"], ["relative_path", "p.vhdx"]] }).bytes, "corrupt", /not a GUID/],
      [buildVhdx({ size: 4 * MiB, parentLocator: [["parent_linkage", `{${PARENT_DWG}}`]] }).bytes, "corrupt", /no path/],
    ];
    // Another locator type.
    const other = buildVhdx({ size: 4 * MiB, parentLocator: vhdxLocator(PARENT_DWG, "p.vhdx") });
    const item = encodeParentLocator(vhdxLocator(PARENT_DWG, "p.vhdx"), "12345678-1234-4234-8234-123456789abc");
    other.bytes.set(item, METADATA_OFFSET + 64 * 1024 + 8 + 8 + 16 + 4 + 4);
    cases.push([other.bytes, "unsupported", /locator type 12345678/]);
    // A partially present block whose chunk has no sector bitmap.
    const nobm = buildVhdx({ size: 4 * MiB, blocks: new Map([[1, { data: new Uint8Array(MiB), present: () => true }]]), parentLocator: vhdxLocator(PARENT_DWG, "p.vhdx") });
    encodeEntry(new DataView(nobm.bytes.buffer, BAT_OFFSET), sectorBitmapIndex(0, 4096), 0, 0);
    cases.push([nobm.bytes, "corrupt", /no sector bitmap/]);
    // A sector bitmap outside the file.
    const far = buildVhdx({ size: 4 * MiB, blocks: new Map([[1, { data: new Uint8Array(MiB), present: () => true }]]), parentLocator: vhdxLocator(PARENT_DWG, "p.vhdx") });
    encodeEntry(new DataView(far.bytes.buffer, BAT_OFFSET), sectorBitmapIndex(0, 4096), 6, 64 * MiB);
    cases.push([far.bytes, "corrupt", /sector bitmap of chunk 0 .*beyond the end/]);
    for (const [bytes, kind, message] of cases) {
      const opener = new MemoryFileOpener();
      const io = await opener.open("/c.vhdx", { create: true });
      await io.write(0, bytes);
      await io.close();
      const err = await openVhdx(opener, "/c.vhdx").catch((e: unknown) => e);
      expect(err, String(message)).toMatchObject({ kind });
      expect((err as MediumError).message).toMatch(message);
    }
    expect(sectorRuns(Uint8Array.of(0b00000110), 0, 2048)).toEqual([{ length: 512, stored: false }, { length: 1024, stored: true }, { length: 512, stored: false }]);
  });
});
