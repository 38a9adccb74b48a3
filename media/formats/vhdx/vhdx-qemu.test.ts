/**
 * Interop with qemu-img / qemu-io: VHDX images qemu makes (dynamic and fixed, 1 MiB and 32 MiB
 * blocks), written across block boundaries and with zero writes, read byte for byte as
 * `qemu-img convert -O raw` sees them. The files are not changed by opening them. qemu writes
 * its metadata updates through the log: an entry it left behind, made active again, is replayed
 * by us in memory exactly as qemu replays it into the file.
 */
import * as fs from "node:fs";
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { hasQemu, qemu, qemuIo as qemuIoAs, tempFiles } from "../../testing/qemu.js";
import { firstDiff } from "../vdi/test-support.js";
import { readLogEntry } from "./log.js";
import { setHeader } from "./log-test-support.js";
import { HEADER1_OFFSET, HEADER2_OFFSET, HEADER_SIZE, isVhdx, pickHeader } from "./structures.js";
import { uuidFromGuidBytes } from "../uuid.js";
import { openVhdx } from "./vhdx-image.js";

const MiB = 1 << 20;
const opener = new NodeFileOpener();
const file = tempFiles("vstor-vhdx-");
const qemuIo = (p: string, ...cmds: string[]) => qemuIoAs(p, "vhdx", ...cmds);

async function expectReadsAsQemu(p: string): Promise<void> {
  const raw = `${p}.raw`;
  qemu("qemu-img", "convert", "-f", "vhdx", "-O", "raw", p, raw);
  const want = fs.readFileSync(raw);
  fs.rmSync(raw);
  const before = fs.readFileSync(p);
  const img = await openVhdx(opener, p);
  try {
    expect(img.size).toBe(want.length);
    const got = new Uint8Array(img.size);
    await img.read(0, got);
    expect(firstDiff(got, want)).toBe(-1);
    // Odd-sized reads straddling block boundaries.
    const bs = img.blockSize;
    for (const at of [bs - 512, 2 * bs - 4096, img.size - 1536]) {
      if (at < 0 || at + 3072 > img.size) continue;
      const part = new Uint8Array(3072);
      await img.read(at, part);
      expect(firstDiff(part, want.subarray(at, at + 3072))).toBe(-1);
    }
    // What allocatedExtents calls data covers every non-zero byte.
    const mask = new Uint8Array(img.size);
    for (const e of await img.allocatedExtents()) if (e.state === "data") mask.fill(1, e.offset, e.offset + e.length);
    for (let i = 0; i < want.length; i += 4096) {
      if (!mask[i] && want.subarray(i, i + 4096).some((b) => b !== 0)) throw new Error(`data at ${i} outside the allocated extents`);
    }
  } finally {
    await img.close();
  }
  expect(Buffer.compare(fs.readFileSync(p), before)).toBe(0);
}

describe.skipIf(!hasQemu)("VHDX interop with qemu-img", () => {
  const shapes: [string, number, string[]][] = [
    ["dynamic-1M", 40 * MiB, ["subformat=dynamic", "block_size=1M"]],
    ["dynamic-32M", 68 * MiB, ["subformat=dynamic", "block_size=32M"]],
    ["dynamic-default", 72 * MiB + 512, ["subformat=dynamic"]],
    ["fixed-1M", 12 * MiB, ["subformat=fixed", "block_size=1M"]],
    ["fixed-32M", 70 * MiB, ["subformat=fixed", "block_size=32M"]],
  ];
  for (const [name, size, opts] of shapes) {
    it(`reads a ${name} image qemu wrote across block boundaries`, async () => {
      const p = file(`${name}.vhdx`);
      qemu("qemu-img", "create", "-q", "-f", "vhdx", "-o", opts.join(","), p, String(size));
      const head = fs.readFileSync(p).subarray(0, 8);
      expect(isVhdx(head)).toBe(true);
      await expectReadsAsQemu(p); // empty
      const img = await openVhdx(opener, p);
      const bs = img.blockSize;
      expect(img.variant).toBe(opts[0] === "subformat=fixed" ? "fixed" : "dynamic");
      expect(img.uuid).toMatch(/^[0-9a-f-]{36}$/);
      await img.close();
      qemuIo(
        p,
        "write -P 0x11 0 64k",
        `write -P 0x22 ${bs - 4096} 8192`,
        `write -P 0x33 ${2 * bs - 512} ${Math.min(bs + 1024, size - 2 * bs - 512)}`,
        `write -P 0x44 ${size - 512} 512`,
        `write -P 0x55 ${5 * MiB + 512} 3072`,
      );
      await expectReadsAsQemu(p);
      qemuIo(p, `write -z ${bs - 2048} 4096`, `write -z ${2 * bs} ${Math.min(bs, size - 2 * bs - 512)}`);
      await expectReadsAsQemu(p);
    });
  }

  it("is refused writable, and opens read-only without changing the file", async () => {
    const p = file("ro.vhdx");
    qemu("qemu-img", "create", "-q", "-f", "vhdx", p, "8M");
    const before = fs.readFileSync(p);
    await expect(openVhdx(opener, p, { readOnly: false })).rejects.toMatchObject({ kind: "read-only" });
    const img = await openVhdx(opener, p);
    expect(img.readOnly).toBe(true);
    for (const op of [img.write(0, new Uint8Array(512)), img.flush(), img.discard(0, 512)]) {
      await expect(op).rejects.toBeInstanceOf(MediumError);
      await expect(op).rejects.toMatchObject({ kind: "read-only" });
    }
    await img.close();
    expect(Buffer.compare(fs.readFileSync(p), before)).toBe(0);
  });

  it("replays a log entry qemu wrote as qemu does, in memory, leaving the file as it was", async () => {
    const p = file("logged.vhdx");
    qemu("qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", p, "8M");
    qemuIo(p, "write -P 0x5c 1048064 4096", "write -P 0x3a 6291456 65536", "write -z 1048576 4096");
    const clean = fs.readFileSync(p);
    const { header } = pickHeader(clean.subarray(HEADER1_OFFSET, HEADER1_OFFSET + HEADER_SIZE), clean.subarray(HEADER2_OFFSET, HEADER2_OFFSET + HEADER_SIZE));
    const log = clean.subarray(header.logOffset, header.logOffset + header.logLength);
    // Each of qemu's entries carries its own log GUID.
    const guids: string[] = [];
    for (let at = 0; at < log.length; at += 4096) {
      if (log.readUInt32LE(at) !== 0x65676f6c) continue;
      const guid = uuidFromGuidBytes(log, at + 32);
      if (readLogEntry(log, at, guid)) guids.push(guid);
    }
    expect(guids.length).toBeGreaterThanOrEqual(2);
    const now = new Uint8Array(8 * MiB);
    const cleanImg = await openVhdx(opener, p);
    await cleanImg.read(0, now);
    await cleanImg.close();
    let rolledBack = 0; // older entries hold older BAT sectors: replaying one shows less data
    for (const [i, logGuid] of guids.entries()) {
      const dirty = Buffer.from(clean);
      setHeader(dirty, { ...header, logGuid, sequenceNumber: header.sequenceNumber + 2 });
      const ours = file(`dirty-${i}.vhdx`);
      fs.writeFileSync(ours, dirty);
      const theirs = file(`replayed-${i}.vhdx`);
      fs.writeFileSync(theirs, dirty);
      qemu("qemu-img", "check", "-q", "-r", "all", "-f", "vhdx", theirs); // qemu replays into the file
      qemu("qemu-img", "convert", "-f", "vhdx", "-O", "raw", theirs, `${theirs}.raw`);
      const want = fs.readFileSync(`${theirs}.raw`);
      const img = await openVhdx(opener, ours);
      expect(img.logReplay?.entries).toBe(1);
      const got = new Uint8Array(img.size);
      await img.read(0, got);
      await img.close();
      expect(firstDiff(got, want), `entry ${i}`).toBe(-1);
      expect(Buffer.compare(fs.readFileSync(ours), dirty)).toBe(0);
      if (firstDiff(got, now) !== -1) rolledBack++;
    }
    expect(rolledBack).toBeGreaterThan(0);
  });
});
