import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";

// qemu has no fullDevice / partitionedDevice descriptors (VirtualBox-only types): the device file is the judge.
import { MediumError } from "../../block.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { createRawDiskVmdk } from "./raw-disk.js";
import { openVmdk } from "./vmdk-open.js";

const MiB = 1 << 20;
const root = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-rawdisk-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** A 32 MiB file standing in for a host disk: an MBR with three primary partitions, each filled with its own byte. */
function makeDisk(name: string): { file: string; data: Buffer; parts: { start: number; sectors: number }[] } {
  const data = Buffer.alloc(32 * MiB, 0x11);
  data.fill(0, 446, 510); // an empty partition table, then three entries
  const parts = [
    { start: 2048, sectors: 16384 },
    { start: 18432, sectors: 16384 },
    { start: 34816, sectors: 65536 - 34816 - 2048 },
  ];
  parts.forEach((p, i) => {
    const e = 446 + 16 * i;
    data[e + 4] = 0x83;
    data.writeUInt32LE(p.start, e + 8);
    data.writeUInt32LE(p.sectors, e + 12);
    data.fill(0xa1 + i, p.start * 512, (p.start + p.sectors) * 512);
  });
  data[510] = 0x55;
  data[511] = 0xaa;
  const file = path.join(root, name);
  fs.writeFileSync(file, data);
  return { file, data, parts };
}

const read = async (img: Awaited<ReturnType<typeof openVmdk>>, sector: number, count = 1) => {
  const b = new Uint8Array(count * 512);
  await img.read(sector * 512, b);
  return Buffer.from(b);
};

describe("raw host-disk VMDKs (a file stands in for the host disk)", () => {
  it("a whole disk: one FLAT extent, reads and writes go to the device", async () => {
    const disk = makeDisk("whole.img");
    const desc = path.join(root, "whole.vmdk");
    await createRawDiskVmdk(new NodeFileOpener(), desc, { device: disk.file, deviceSize: disk.data.length });
    const text = fs.readFileSync(desc, "utf8");
    expect(text).toContain('createType="fullDevice"');
    expect(text).toContain(`RW 65536 FLAT "${disk.file}" 0`);
    const img = await openVmdk(new NodeFileOpener(), desc);
    expect(img.size).toBe(32 * MiB);
    expect((await read(img, 0)).equals(disk.data.subarray(0, 512))).toBe(true);
    await img.write(20000 * 512, new Uint8Array(512).fill(0x5a));
    await img.close();
    expect(fs.readFileSync(disk.file)[20000 * 512]).toBe(0x5a);
  });

  it("partitions 1 and 3: the MBR from the side file, partition 2 and the gaps read zeros and refuse writes", async () => {
    const disk = makeDisk("parts.img");
    const desc = path.join(root, "parts.vmdk");
    await createRawDiskVmdk(new NodeFileOpener(), desc, { device: disk.file, deviceSize: disk.data.length, partitions: [1, 3] });
    const text = fs.readFileSync(desc, "utf8");
    expect(text).toContain('createType="partitionedDevice"');
    expect(text).toContain('RW 2048 FLAT "parts-pt.vmdk" 0');
    expect(text).toContain(`RW 16384 FLAT "${disk.file}" 2048`);
    expect(text).toContain("RW 16384 ZERO");
    expect(fs.readFileSync(path.join(root, "parts-pt.vmdk")).equals(disk.data.subarray(0, 2048 * 512))).toBe(true);
    const img = await openVmdk(new NodeFileOpener(), desc);
    expect((await read(img, 0)).equals(disk.data.subarray(0, 512))).toBe(true); // the partition table
    expect((await read(img, 2048)).every((b) => b === 0xa1)).toBe(true);
    expect((await read(img, 18432)).every((b) => b === 0)).toBe(true); // partition 2 hidden
    expect((await read(img, 34816)).every((b) => b === 0xa3)).toBe(true);
    expect((await read(img, 65535)).every((b) => b === 0)).toBe(true); // past the last partition
    await expect(img.write(18432 * 512, new Uint8Array(512).fill(1))).rejects.toBeInstanceOf(MediumError);
    await img.write(2048 * 512, new Uint8Array(512).fill(0x77)); // partition 1: the device
    await img.write(0, new Uint8Array(512).fill(0x66)); // the MBR: the side file, never the device
    await img.close();
    const after = fs.readFileSync(disk.file);
    expect(after[2048 * 512]).toBe(0x77);
    expect(after.subarray(0, 512).equals(disk.data.subarray(0, 512))).toBe(true);
    expect(after.subarray(18432 * 512, 34816 * 512).every((b) => b === 0xa2)).toBe(true);
    expect(fs.readFileSync(path.join(root, "parts-pt.vmdk"))[0]).toBe(0x66);
  });

  it("refuses a GPT disk, a missing partition, and a disk without an MBR, writing nothing", async () => {
    const disk = makeDisk("gpt.img");
    const gpt = Buffer.from(disk.data);
    gpt[446 + 4] = 0xee;
    fs.writeFileSync(disk.file, gpt);
    const o = new NodeFileOpener();
    await expect(createRawDiskVmdk(o, path.join(root, "gpt.vmdk"), { device: disk.file, deviceSize: gpt.length, partitions: [1] })).rejects.toMatchObject({ kind: "unsupported" });
    const plain = makeDisk("plain.img");
    await expect(createRawDiskVmdk(o, path.join(root, "p4.vmdk"), { device: plain.file, deviceSize: plain.data.length, partitions: [4] })).rejects.toMatchObject({ kind: "not-found" });
    const none = path.join(root, "none.img");
    fs.writeFileSync(none, Buffer.alloc(MiB));
    await expect(createRawDiskVmdk(o, path.join(root, "none.vmdk"), { device: none, deviceSize: MiB, partitions: [1] })).rejects.toMatchObject({ kind: "invalid-format" });
    for (const f of ["gpt.vmdk", "gpt-pt.vmdk", "p4.vmdk", "none.vmdk"]) expect(fs.existsSync(path.join(root, f))).toBe(false);
  });
});
