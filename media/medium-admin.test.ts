/**
 * The medium manager's administration without the CLI: moving across file systems (copy, holes
 * kept, then remove) and undoing a half-done move, identity repairs in the formats' bytes, and
 * the registry's UUID change and properties.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { MediumError } from "./block.js";
import type { FileOpener } from "./io/file-io.js";
import { NodeFileOpener } from "./io/node/node-file-io.js";
import { MediumManager } from "./medium-manager.js";
import { MediaRegistry } from "./registry.js";
import { openVhd } from "./formats/vhd/vhd-image.js";

const MiB = 1 << 20;
const work = mkdtempSync(join(tmpdir(), "vstor-medium-admin-"));
const file = (name: string) => join(work, name);
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** A NodeFileOpener whose renames fail as across file systems, or fail outright from the `failAt`-th. */
function opener(o: { crossDevice?: boolean; failAt?: number }): FileOpener & { renames: number } {
  const inner = new NodeFileOpener();
  const wrapped = {
    renames: 0,
    open: inner.open.bind(inner),
    exists: inner.exists.bind(inner),
    remove: inner.remove.bind(inner),
    async rename(from: string, to: string) {
      wrapped.renames++;
      if (o.failAt !== undefined && wrapped.renames === o.failAt) throw new MediumError("io", "rename failed (test)", { path: from });
      if (o.crossDevice) throw new MediumError("io", "rename failed: EXDEV", { path: from, cause: Object.assign(new Error("EXDEV"), { code: "EXDEV" }) });
      return inner.rename(from, to);
    },
  };
  return wrapped;
}

describe("MediumManager.move", () => {
  it("copies across file systems, keeping holes, then removes the source", async () => {
    const registry = new MediaRegistry(file("home1"));
    const mm = new MediumManager(registry, opener({ crossDevice: true }));
    const src = file("sparse.raw");
    const info = await new MediumManager(registry).create({ path: src, format: "RAW", size: 32 * MiB });
    const data = new Uint8Array(MiB).fill(0x5c);
    const img = await mm.open(info.uuid);
    await img.write(9 * MiB, data);
    await img.close();
    mkdirSync(file("other-fs"));
    const to = await mm.move(info.uuid, file("other-fs"));
    expect(to).toBe(file("other-fs/sparse.raw"));
    expect(existsSync(src)).toBe(false);
    expect(statSync(to).size).toBe(32 * MiB);
    expect(statSync(to).blocks * 512).toBeLessThan(8 * MiB); // the zeros were not written
    const bytes = readFileSync(to);
    expect(bytes.subarray(9 * MiB, 10 * MiB).every((b) => b === 0x5c)).toBe(true);
    expect(bytes.subarray(0, 9 * MiB).every((b) => b === 0)).toBe(true);
    expect(registry.findByUuid(info.uuid)?.location).toBe(to);
  });

  it("puts back what it moved when a later file fails, and changes nothing in the registry", async () => {
    const registry = new MediaRegistry(file("home2"));
    const made = await new MediumManager(registry).create({ path: file("split.vmdk"), format: "VMDK", size: 8 * MiB, variant: "Standard", split: true });
    const before = readFileSync(file("split.vmdk"));
    const mm = new MediumManager(registry, opener({ failAt: 2 })); // the extent moves, the descriptor does not
    mkdirSync(file("target"));
    await expect(mm.move(made.uuid, file("target"))).rejects.toThrow(/rename failed \(test\)/);
    expect(existsSync(file("split-s001.vmdk"))).toBe(true);
    expect(existsSync(file("target/split-s001.vmdk"))).toBe(false);
    expect(readFileSync(file("split.vmdk")).equals(before)).toBe(true);
    expect(registry.findByUuid(made.uuid)?.location).toBe(file("split.vmdk"));
  });
});

describe("MediumManager.setIdentity", () => {
  it("VHD: the footer (both copies) and the child's dynamic header take the new UUIDs, checksums right", async () => {
    const registry = new MediaRegistry(file("home3"));
    const mm = new MediumManager(registry);
    const base = await mm.create({ path: file("b.vhd"), format: "VHD", size: 4 * MiB });
    const kid = await mm.create({ path: file("k.vhd"), format: "VHD", parent: base.uuid });
    const NEW = "12345678-9abc-4def-8123-456789abcdef";
    await mm.setIdentity(base.uuid, { uuid: NEW });
    const b = await openVhd(new NodeFileOpener(), file("b.vhd"), { readOnly: true }); // open verifies both checksums
    expect(b.uuid).toBe(NEW);
    expect(b.footerCopy.uuid).toBe(NEW);
    await b.close();
    const k = await openVhd(new NodeFileOpener(), file("k.vhd"), { readOnly: true });
    expect(k.parentUuid).toBe(NEW);
    await k.close();
    expect(registry.findByUuid(kid.uuid)?.parentUuid).toBe(NEW);
    const open = await mm.open(kid.uuid, { readOnly: true }); // the chain still links
    await open.close();
  });

  it("refuses a UUID another medium has, before writing anything", async () => {
    const registry = new MediaRegistry(file("home4"));
    const mm = new MediumManager(registry);
    const a = await mm.create({ path: file("a.vdi"), size: 4 * MiB });
    const b = await mm.create({ path: file("b.vdi"), size: 4 * MiB });
    const bytes = readFileSync(file("a.vdi"));
    await expect(mm.setIdentity(a.uuid, { uuid: b.uuid })).rejects.toMatchObject({ kind: "duplicate-uuid" });
    expect(readFileSync(file("a.vdi")).equals(bytes)).toBe(true);
  });
});

describe("media registry administration", () => {
  it("changeUuid moves children along and refuses a taken UUID; setProperty sets and deletes", () => {
    writeFileSync(file("r1"), "");
    writeFileSync(file("r2"), "");
    const reg = new MediaRegistry(file("home5"));
    const U1 = "11111111-2222-4333-8444-555555555555";
    const U2 = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    const U3 = "99999999-8888-4777-8666-555555555555";
    reg.register({ uuid: U1, location: file("r1"), format: "VDI", deviceType: "hdd" });
    reg.register({ uuid: U2, location: file("r2"), format: "VDI", deviceType: "hdd", parentUuid: U1 });
    expect(() => reg.changeUuid(U1, U2)).toThrow(/already registered/);
    reg.changeUuid(U1, U3.toUpperCase());
    expect(reg.findByUuid(U3)?.location).toBe(file("r1"));
    expect(reg.children(U3).map((c) => c.uuid)).toEqual([U2]);
    reg.setProperty(U3, "k", "v");
    reg.setProperty(U3, "x", "");
    expect(reg.findByUuid(U3)?.properties).toEqual({ k: "v", x: "" });
    reg.setProperty(U3, "k", undefined);
    reg.setProperty(U3, "x", undefined);
    expect(reg.findByUuid(U3)?.properties).toBeUndefined();
  });
});
