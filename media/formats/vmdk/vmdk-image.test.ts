/** VMDK specifics beyond the shared suite: split sizes, zeroed grains in chains, CID linkage. */
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { MemoryFileOpener } from "../../io/fault-io.js";
import { createVmdk, parentLinkOf, SPLIT_SIZE } from "./vmdk-create.js";
import { openVmdk, openVmdkChain } from "./vmdk-open.js";

const MiB = 1 << 20;

describe("VMDK images", () => {
  it("splits twoGbMaxExtent* images at VirtualBox's 2047 MiB and names the pieces -s001, -f001, ...", async () => {
    for (const variant of ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] as const) {
      const o = new MemoryFileOpener();
      const size = 5 * 1024 * MiB;
      const img = await createVmdk(o, "big.vmdk", { size, variant });
      const k = variant === "twoGbMaxExtentSparse" ? "s" : "f";
      expect(img.descriptor.extents.map((e) => [e.sectors, e.file])).toEqual([
        [SPLIT_SIZE / 512, `big-${k}001.vmdk`],
        [SPLIT_SIZE / 512, `big-${k}002.vmdk`],
        [(size - 2 * SPLIT_SIZE) / 512, `big-${k}003.vmdk`],
      ]);
      // A write across the first piece boundary lands in both pieces.
      const data = new Uint8Array(4096).fill(0x5c);
      await img.write(SPLIT_SIZE - 2048, data);
      const back = new Uint8Array(4096);
      await img.read(SPLIT_SIZE - 2048, back);
      expect(Buffer.compare(back, data)).toBe(0);
      await img.close();
    }
  });

  it("records a zeroed grain (GTE 1) in a differencing image so the parent's data stays hidden", async () => {
    const o = new MemoryFileOpener();
    const base = await createVmdk(o, "b.vmdk", { size: 2 * MiB });
    await base.write(0, new Uint8Array(256 * 1024).fill(9));
    await base.close();
    const parent = await openVmdk(o, "b.vmdk", { readOnly: true });
    const child = await createVmdk(o, "c.vmdk", { size: 2 * MiB, parent: parentLinkOf(parent, "b.vmdk"), zeroedGrains: true });
    await parent.close();
    await child.close();
    const chain = await openVmdkChain(o, "c.vmdk");
    await chain.write(64 * 1024, new Uint8Array(64 * 1024));
    const childSize = o.file("c.vmdk").size;
    const back = new Uint8Array(192 * 1024);
    await chain.read(0, back);
    expect(back.subarray(0, 64 * 1024).every((b) => b === 9)).toBe(true);
    expect(back.subarray(64 * 1024, 128 * 1024).every((b) => b === 0)).toBe(true);
    expect(back.subarray(128 * 1024).every((b) => b === 9)).toBe(true);
    expect(chain.top.blockState(1)).toBe("zero");
    expect(o.file("c.vmdk").size).toBe(childSize); // no grain stored for zeros
    await chain.close();
  });

  it("links children by CID: a parent written after its child was made is parent-modified", async () => {
    const o = new MemoryFileOpener();
    const base = await createVmdk(o, "b.vmdk", { size: MiB });
    const child = await createVmdk(o, "c.vmdk", { size: MiB, parent: parentLinkOf(base, "b.vmdk") });
    await child.close();
    expect(child.parentModifyUuid).toBe(base.modifyUuid);
    expect(child.parentUuid).toBe(base.uuid);
    await base.write(0, new Uint8Array(512).fill(1)); // new CID
    await base.close();
    await expect(openVmdkChain(o, "c.vmdk")).rejects.toMatchObject({ kind: "parent-modified" });
    const ro = await openVmdkChain(o, "c.vmdk", { readOnly: true });
    expect(ro.parentModified.length).toBe(1);
    await ro.close();
  });

  it("creates VBoxManage's ESX variant: createType vmfs, one preallocated VMFS extent, opened read-write again", async () => {
    const o = new MemoryFileOpener();
    const size = 4 * MiB;
    const img = await createVmdk(o, "esx.vmdk", { size, variant: "vmfs" });
    const text = new TextDecoder().decode(o.file("esx.vmdk").bytes());
    expect(text).toContain('createType="vmfs"');
    expect(text).toMatch(/^RW 8192 VMFS "esx-flat\.vmdk"$/m); // no offset: qemu refuses one on VMFS lines
    expect(text).toContain('ddb.adapterType = "lsilogic"');
    expect(o.file("esx-flat.vmdk").size).toBe(size);
    const data = new Uint8Array(3 * 64 * 1024).map((_, i) => (i * 7 + 1) & 0xff);
    await img.write(MiB - 512, data);
    await img.close();

    const again = await openVmdk(o, "esx.vmdk");
    expect(again.readOnly).toBe(false);
    expect(again.createType).toBe("vmfs");
    const back = new Uint8Array(data.length);
    await again.read(MiB - 512, back);
    expect(Buffer.compare(back, data)).toBe(0);
    await again.write(size - 512, new Uint8Array(512).fill(0xee));
    await again.close();
    expect(o.file("esx-flat.vmdk").size).toBe(size);
  });

  it("refuses a chain whose parent file is missing (not-found)", async () => {
    const o = new MemoryFileOpener();
    const child = await createVmdk(o, "c.vmdk", { size: MiB, parent: { uuid: "11111111-2222-4333-8444-555555555555", modifyUuid: "abcdef01-0000-0000-0000-000000000000", fileNameHint: "gone.vmdk" } });
    await child.close();
    const err = await openVmdkChain(o, "c.vmdk").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MediumError);
    expect((err as MediumError).kind).toBe("not-found");
  });
});
