import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import * as zlib from "node:zlib";
import { afterAll, describe, expect, it } from "vitest";

// qemu has no fullDevice / partitionedDevice descriptors (VirtualBox-only types): the device file is the judge.
import { MediumError } from "../../block.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { createRawDiskVmdk } from "./raw-disk.js";
import { openVmdk } from "./vmdk-open.js";
import { uuidToGuidBytes } from "../uuid.js";

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

  it("refuses a protective MBR without a GPT, a missing partition, and a disk without an MBR, writing nothing", async () => {
    const disk = makeDisk("gpt.img");
    const gpt = Buffer.from(disk.data);
    gpt[446 + 4] = 0xee;
    fs.writeFileSync(disk.file, gpt);
    const o = new NodeFileOpener();
    await expect(createRawDiskVmdk(o, path.join(root, "gpt.vmdk"), { device: disk.file, deviceSize: gpt.length, partitions: [1] })).rejects.toMatchObject({ kind: "corrupt" });
    const plain = makeDisk("plain.img");
    await expect(createRawDiskVmdk(o, path.join(root, "p4.vmdk"), { device: plain.file, deviceSize: plain.data.length, partitions: [4] })).rejects.toMatchObject({ kind: "not-found" });
    const none = path.join(root, "none.img");
    fs.writeFileSync(none, Buffer.alloc(MiB));
    await expect(createRawDiskVmdk(o, path.join(root, "none.vmdk"), { device: none, deviceSize: MiB, partitions: [1] })).rejects.toMatchObject({ kind: "invalid-format" });
    for (const f of ["gpt.vmdk", "gpt-pt.vmdk", "p4.vmdk", "none.vmdk"]) expect(fs.existsSync(path.join(root, f))).toBe(false);
  });
});

// ---- logical partitions and GPT ----

/** zlib's CRC-32 (Node >= 20.15), else a bitwise one: independent of partition-table.ts's table. */
const crc32 = (b: Uint8Array): number => {
  if (typeof zlib.crc32 === "function") return zlib.crc32(b) >>> 0;
  let c = 0xffffffff;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
};

const TOTAL = 65536; // sectors of every 32 MiB test disk

function mbrEntry(sector: Buffer, at: number, slot: number, type: number, start: number, sectors: number): void {
  const e = at + 446 + 16 * slot;
  sector[e + 4] = type;
  sector.writeUInt32LE(start, e + 8);
  sector.writeUInt32LE(sectors, e + 12);
}

function tableSector(data: Buffer, lba: number): void {
  data.fill(0, lba * 512 + 446, lba * 512 + 510);
  data[lba * 512 + 510] = 0x55;
  data[lba * 512 + 511] = 0xaa;
}

/**
 * MBR: primaries 1 (2048+8192, A1h) and 2 (10240+8192, A2h), extended 3 (18432+45056) whose EBR
 * chain holds logical 5 (20480+8192, A5h; EBR at 18432) and 6 (30720+16384, A6h; EBR at 28672).
 */
function makeLogicalDisk(name: string): { file: string; data: Buffer } {
  const data = Buffer.alloc(TOTAL * 512, 0x11);
  tableSector(data, 0);
  mbrEntry(data, 0, 0, 0x83, 2048, 8192);
  mbrEntry(data, 0, 1, 0x83, 10240, 8192);
  mbrEntry(data, 0, 2, 0x05, 18432, 45056);
  tableSector(data, 18432);
  mbrEntry(data, 18432 * 512, 0, 0x83, 2048, 8192); // relative to this EBR
  mbrEntry(data, 18432 * 512, 1, 0x05, 10240, 18432); // next EBR, relative to the extended partition
  tableSector(data, 28672);
  mbrEntry(data, 28672 * 512, 0, 0x83, 2048, 16384);
  for (const [start, sectors, fill] of [[2048, 8192, 0xa1], [10240, 8192, 0xa2], [20480, 8192, 0xa5], [30720, 16384, 0xa6]] as const) {
    data.fill(fill, start * 512, (start + sectors) * 512);
  }
  const file = path.join(root, name);
  fs.writeFileSync(file, data);
  return { file, data };
}

const LINUX_FS = "0fc63daf-8483-4772-8e79-3d69d8477de4";
/** GPT entries (index: first, last LBA, fill); entry 3 is left unused so the next one is partition 5. */
const GPT_PARTS: [number, number, number, number][] = [
  [0, 2048, 10239, 0xb1],
  [1, 10240, 18431, 0xb2],
  [2, 18432, 34815, 0xb3],
  [4, 40960, 49151, 0xb5],
];

/** A GPT disk built from the UEFI layout: protective MBR, header at LBA 1, 128 entries of 128 bytes at LBA 2, backup at the end. */
function makeGptDisk(name: string): { file: string; data: Buffer } {
  const data = Buffer.alloc(TOTAL * 512, 0x11);
  tableSector(data, 0);
  mbrEntry(data, 0, 0, 0xee, 1, TOTAL - 1);
  const entries = Buffer.alloc(128 * 128);
  for (const [i, first, last, fill] of GPT_PARTS) {
    uuidToGuidBytes(LINUX_FS, entries, i * 128);
    uuidToGuidBytes(`5e1f0000-0000-4000-8000-00000000000${i}`, entries, i * 128 + 16);
    entries.writeBigUInt64LE(BigInt(first), i * 128 + 32);
    entries.writeBigUInt64LE(BigInt(last), i * 128 + 40);
    entries.write(`part${i + 1}`, i * 128 + 56, "utf16le");
    data.fill(fill, first * 512, (last + 1) * 512);
  }
  const header = (my: number, alternate: number, entryLba: number): Buffer => {
    const h = Buffer.alloc(512);
    h.write("EFI PART", 0, "latin1");
    h.writeUInt32LE(0x00010000, 8);
    h.writeUInt32LE(92, 12);
    h.writeBigUInt64LE(BigInt(my), 24);
    h.writeBigUInt64LE(BigInt(alternate), 32);
    h.writeBigUInt64LE(34n, 40);
    h.writeBigUInt64LE(BigInt(TOTAL - 34), 48);
    uuidToGuidBytes("d15c0000-0000-4000-8000-000000000001", h, 56);
    h.writeBigUInt64LE(BigInt(entryLba), 72);
    h.writeUInt32LE(128, 80);
    h.writeUInt32LE(128, 84);
    h.writeUInt32LE(crc32(entries), 88);
    h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
    return h;
  };
  entries.copy(data, 2 * 512);
  header(1, TOTAL - 1, 2).copy(data, 512);
  entries.copy(data, (TOTAL - 33) * 512);
  header(TOTAL - 1, 1, TOTAL - 33).copy(data, (TOTAL - 1) * 512);
  const file = path.join(root, name);
  fs.writeFileSync(file, data);
  return { file, data };
}

/** util-linux's partx (libblkid) reading a disk image: the independent judge of our tables. */
function partx(file: string): { scheme: string; parts: string[] } | null {
  const r = spawnSync("partx", ["--show", "--bytes", "--noheadings", "--output", "NR,START,SECTORS,SCHEME", file], { encoding: "utf8" });
  if (r.error) return null; // not installed
  expect(r.status, r.stderr).toBe(0);
  const rows = r.stdout.trim().split("\n").map((l) => l.trim().split(/\s+/));
  return { scheme: rows[0]![3]!, parts: rows.map((c) => `${c[0]}:${c[1]}+${c[2]}`) };
}
const hasPartx = !spawnSync("partx", ["--version"]).error;

/** The disk the guest sees, as one raw file. */
async function guestImage(desc: string): Promise<string> {
  const img = await openVmdk(new NodeFileOpener(), desc, { readOnly: true });
  const out = desc.replace(/\.vmdk$/, "-guest.raw");
  const buf = new Uint8Array(img.size);
  await img.read(0, buf);
  await img.close();
  fs.writeFileSync(out, buf);
  return out;
}

const extentLines = (desc: string): string[] => fs.readFileSync(desc, "utf8").split("\n").filter((l) => /^RW /.test(l));

describe("raw host-disk VMDKs: logical partitions and GPT", () => {
  it("MBR logical partition 5 and primary 2: the MBR and every EBR from the side file, the rest zeros", async () => {
    const disk = makeLogicalDisk("logical.img");
    const desc = path.join(root, "logical.vmdk");
    await createRawDiskVmdk(new NodeFileOpener(), desc, { device: disk.file, deviceSize: disk.data.length, partitions: [5, 2] });
    expect(extentLines(desc)).toEqual([
      'RW 2048 FLAT "logical-pt.vmdk" 0',
      "RW 8192 ZERO",
      `RW 8192 FLAT "${disk.file}" 10240`,
      'RW 1 FLAT "logical-pt.vmdk" 2048', // EBR of partition 5
      "RW 2047 ZERO",
      `RW 8192 FLAT "${disk.file}" 20480`,
      'RW 1 FLAT "logical-pt.vmdk" 2049', // EBR of partition 6
      `RW ${TOTAL - 28673} ZERO`,
    ]);
    const side = fs.readFileSync(path.join(root, "logical-pt.vmdk"));
    expect(side.equals(Buffer.concat([disk.data.subarray(0, 2048 * 512), disk.data.subarray(18432 * 512, 18433 * 512), disk.data.subarray(28672 * 512, 28673 * 512)]))).toBe(true);

    const img = await openVmdk(new NodeFileOpener(), desc);
    for (const lba of [0, 18432, 28672]) expect((await read(img, lba)).equals(disk.data.subarray(lba * 512, (lba + 1) * 512))).toBe(true);
    expect((await read(img, 2048)).every((b) => b === 0)).toBe(true); // partition 1 hidden
    expect((await read(img, 10240)).every((b) => b === 0xa2)).toBe(true);
    expect((await read(img, 18433)).every((b) => b === 0)).toBe(true); // the gap after an EBR
    expect((await read(img, 20480, 8192)).every((b) => b === 0xa5)).toBe(true);
    expect((await read(img, 30720)).every((b) => b === 0)).toBe(true); // partition 6 hidden
    for (const lba of [2048, 30720, 18433, 63488]) await expect(img.write(lba * 512, new Uint8Array(512).fill(1))).rejects.toMatchObject({ kind: "read-only" });
    await img.write(28672 * 512, new Uint8Array(512).fill(0x66)); // an EBR: the copy, never the device
    await img.write(20480 * 512, new Uint8Array(512).fill(0x55)); // partition 5: the device
    await img.write(10240 * 512 + 512, new Uint8Array(512).fill(0x22)); // partition 2: the device
    await img.close();
    const after = fs.readFileSync(disk.file);
    expect(after[20480 * 512]).toBe(0x55);
    expect(after[10241 * 512]).toBe(0x22);
    after.fill(0xa5, 20480 * 512, 20481 * 512);
    after.fill(0xa2, 10241 * 512, 10242 * 512);
    expect(after.equals(disk.data)).toBe(true); // nothing else changed
    expect(fs.readFileSync(path.join(root, "logical-pt.vmdk"))[2049 * 512]).toBe(0x66);
  });

  it("GPT partitions 1 and 3: primary and backup GPT from the side file, the rest zeros", async () => {
    const disk = makeGptDisk("gpt13.img");
    const desc = path.join(root, "gpt13.vmdk");
    await createRawDiskVmdk(new NodeFileOpener(), desc, { device: disk.file, deviceSize: disk.data.length, partitions: [1, 3] });
    expect(extentLines(desc)).toEqual([
      'RW 2048 FLAT "gpt13-pt.vmdk" 0', // protective MBR, header, entries, the gap
      `RW 8192 FLAT "${disk.file}" 2048`,
      "RW 8192 ZERO",
      `RW 16384 FLAT "${disk.file}" 18432`,
      `RW ${TOTAL - 33 - 34816} ZERO`,
      'RW 33 FLAT "gpt13-pt.vmdk" 2048', // backup entries and header
    ]);
    const side = fs.readFileSync(path.join(root, "gpt13-pt.vmdk"));
    expect(side.equals(Buffer.concat([disk.data.subarray(0, 2048 * 512), disk.data.subarray((TOTAL - 33) * 512)]))).toBe(true);

    const img = await openVmdk(new NodeFileOpener(), desc);
    expect((await read(img, 0, 34)).equals(disk.data.subarray(0, 34 * 512))).toBe(true);
    expect((await read(img, TOTAL - 33, 33)).equals(disk.data.subarray((TOTAL - 33) * 512))).toBe(true);
    expect((await read(img, 2048, 8192)).every((b) => b === 0xb1)).toBe(true);
    expect((await read(img, 10240)).every((b) => b === 0)).toBe(true); // partition 2 hidden
    expect((await read(img, 18432, 16384)).every((b) => b === 0xb3)).toBe(true);
    expect((await read(img, 40960)).every((b) => b === 0)).toBe(true); // partition 5 hidden
    for (const lba of [10240, 40960, 36000]) await expect(img.write(lba * 512, new Uint8Array(512).fill(1))).rejects.toMatchObject({ kind: "read-only" });
    await img.write(1 * 512, new Uint8Array(512).fill(0x67)); // primary header: the copy
    await img.write((TOTAL - 1) * 512, new Uint8Array(512).fill(0x68)); // backup header: the copy
    await img.write(18432 * 512, new Uint8Array(512).fill(0x33)); // partition 3: the device
    await img.close();
    const after = fs.readFileSync(disk.file);
    expect(after[18432 * 512]).toBe(0x33);
    after.fill(0xb3, 18432 * 512, 18433 * 512);
    expect(after.equals(disk.data)).toBe(true);
    const sideAfter = fs.readFileSync(path.join(root, "gpt13-pt.vmdk"));
    expect([sideAfter[512], sideAfter[2080 * 512]]).toEqual([0x67, 0x68]);
  });

  it.skipIf(!hasPartx)("partx (util-linux) reads the same table from each test disk and from the image the guest sees", async () => {
    const mbr = makeLogicalDisk("judge-mbr.img");
    expect(partx(mbr.file)).toEqual({ scheme: "dos", parts: ["1:2048+8192", "2:10240+8192", "3:18432+45056", "5:20480+8192", "6:30720+16384"] });
    const gpt = makeGptDisk("judge-gpt.img");
    expect(partx(gpt.file)).toEqual({ scheme: "gpt", parts: ["1:2048+8192", "2:10240+8192", "3:18432+16384", "5:40960+8192"] });
    const o = new NodeFileOpener();
    for (const [disk, chosen] of [[mbr, [5, 2]], [gpt, [1, 3]]] as const) {
      const desc = disk.file.replace(/\.img$/, ".vmdk");
      await createRawDiskVmdk(o, desc, { device: disk.file, deviceSize: disk.data.length, partitions: chosen });
      expect(partx(await guestImage(desc))).toEqual(partx(disk.file));
    }
  });

  it("refuses corrupt GPTs: a wrong entry-array CRC, a wrong header CRC, a damaged backup", async () => {
    const o = new NodeFileOpener();
    const cases: [string, (d: Buffer) => void, RegExp][] = [
      ["gpt-entries.img", (d) => (d[2 * 512 + 56] ^= 1), /primary GPT entry array's CRC-32/], // a name byte of entry 1
      ["gpt-header.img", (d) => (d[512 + 40] ^= 1), /primary GPT header's CRC-32/],
      ["gpt-backup.img", (d) => (d[(TOTAL - 33) * 512 + 56] ^= 1), /backup GPT entry array's CRC-32/],
    ];
    for (const [name, damage, message] of cases) {
      const disk = makeGptDisk(name);
      damage(disk.data);
      fs.writeFileSync(disk.file, disk.data);
      const desc = path.join(root, name.replace(/\.img$/, ".vmdk"));
      await expect(createRawDiskVmdk(o, desc, { device: disk.file, deviceSize: disk.data.length, partitions: [1] })).rejects.toMatchObject({ kind: "corrupt", message });
      expect(fs.existsSync(desc)).toBe(false);
      expect(fs.existsSync(desc.replace(/\.vmdk$/, "-pt.vmdk"))).toBe(false);
    }
    const gpt = makeGptDisk("gpt-missing.img");
    await expect(createRawDiskVmdk(o, path.join(root, "gpt-missing.vmdk"), { device: gpt.file, deviceSize: gpt.data.length, partitions: [4] })).rejects.toMatchObject({ kind: "not-found" });
  });

  it("refuses corrupt EBR chains and overlaps, an extended partition, a missing logical partition", async () => {
    const o = new NodeFileOpener();
    const cases: [string, (d: Buffer) => void, string, RegExp][] = [
      ["ebr-loop.img", (d) => mbrEntry(d, 28672 * 512, 1, 0x05, 0, 2048), "corrupt", /loops back to sector 18432/],
      ["ebr-outside.img", (d) => mbrEntry(d, 18432 * 512, 1, 0x05, 50000, 2048), "corrupt", /outside extended partition 3/],
      ["logical-outside.img", (d) => mbrEntry(d, 28672 * 512, 0, 0x83, 2048, 40000), "corrupt", /logical partition 6 .* outside extended partition 3/],
      ["logical-overlap.img", (d) => mbrEntry(d, 18432 * 512, 0, 0x83, 2048, 9000), "corrupt", /the EBR at sector 28672 .* overlaps partition 5/],
      ["primary-overlap.img", (d) => mbrEntry(d, 0, 1, 0x83, 9000, 8192), "corrupt", /partition 2 .* overlaps partition 1/],
      ["ebr-missing.img", (d) => d.fill(0x11, 28672 * 512 + 510, 28672 * 512 + 512), "corrupt", /no EBR \(55AAh\) at sector 28672/],
    ];
    for (const [name, damage, kind, message] of cases) {
      const disk = makeLogicalDisk(name);
      damage(disk.data);
      fs.writeFileSync(disk.file, disk.data);
      await expect(createRawDiskVmdk(o, path.join(root, name + ".vmdk"), { device: disk.file, deviceSize: disk.data.length, partitions: [5] })).rejects.toMatchObject({ kind, message });
    }
    const disk = makeLogicalDisk("choose.img");
    await expect(createRawDiskVmdk(o, path.join(root, "ext.vmdk"), { device: disk.file, deviceSize: disk.data.length, partitions: [3] })).rejects.toMatchObject({ kind: "unsupported" });
    await expect(createRawDiskVmdk(o, path.join(root, "p7.vmdk"), { device: disk.file, deviceSize: disk.data.length, partitions: [7] })).rejects.toMatchObject({ kind: "not-found" });
    for (const f of ["ext.vmdk", "ext-pt.vmdk", "p7.vmdk", "p7-pt.vmdk"]) expect(fs.existsSync(path.join(root, f))).toBe(false);
  });
});
