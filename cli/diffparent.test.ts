/**
 * `createmedium --diffparent` in every format that has a parent link: the child takes its
 * parent's format unless told otherwise, reads fall through to the parent, writes stay in the
 * child, and qemu-img (where it reads the chain: VMDK by parentFileNameHint, qcow2 by backing
 * file) sees the same disk. Pairs a format cannot link are refused clearly.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MediumManager } from "../media/medium-manager.js";
import { createmedium, showmediuminfo } from "./medium-verbs.js";

const MiB = 1 << 20;
const SIZE = 8 * MiB;
const work = mkdtempSync(join(tmpdir(), "vstor-diffparent-"));
const file = (name: string) => join(work, name);
const hasQemu = spawnSync("qemu-img", ["--version"]).status === 0;
const itq = hasQemu ? it : it.skip;

async function run(...argv: string[]): Promise<Record<string, unknown>> {
  let text = "";
  const verb = argv[0] === "showmediuminfo" ? showmediuminfo : createmedium;
  expect(await verb([...argv.slice(1), "--json"], (t) => void (text += t))).toBe(0);
  return JSON.parse(text) as Record<string, unknown>;
}

/** Write `fill` over [offset, offset+length) through vstor, and into the expected picture. */
async function write(path: string, expected: Uint8Array, offset: number, length: number, fill: number): Promise<void> {
  const data = new Uint8Array(length);
  for (let i = 0; i < length; i++) data[i] = (fill + i * 13 + (i >> 9)) & 0xff;
  const b = await new MediumManager().open(path);
  await b.write(offset, data);
  await b.close();
  expected.set(data, offset);
}

/** Whether the disk reads as `expected` (compared as buffers: toEqual on megabytes is slow). */
async function readsAs(path: string, expected: Uint8Array): Promise<boolean> {
  return Buffer.from(await readAll(path)).equals(Buffer.from(expected.buffer, expected.byteOffset, expected.length));
}

async function readAll(path: string): Promise<Uint8Array> {
  const b = await new MediumManager().open(path, { readOnly: true });
  const out = new Uint8Array(b.size);
  await b.read(0, out);
  await b.close();
  return out;
}

function qemuCompare(expected: Uint8Array, image: string, driver: string): { status: number | null; out: string } {
  const raw = `${image}.expected`;
  writeFileSync(raw, expected);
  const r = spawnSync("qemu-img", ["compare", "-f", "raw", "-F", driver, raw, image], { encoding: "utf8" });
  rmSync(raw);
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

let savedHome: string | undefined;
beforeAll(() => {
  savedHome = process.env.VSTOR_HOME;
  process.env.VSTOR_HOME = join(work, "home");
  process.env.VSTOR_PROGRESS = "0";
});
afterAll(() => {
  if (savedHome === undefined) delete process.env.VSTOR_HOME;
  else process.env.VSTOR_HOME = savedHome;
  rmSync(work, { recursive: true, force: true });
});

const CASES: { parent: string; child?: string; expect: string; qemu?: string; ext: string }[] = [
  { parent: "VDI", expect: "VDI", ext: "vdi" },
  { parent: "VMDK", expect: "VMDK", qemu: "vmdk", ext: "vmdk" },
  { parent: "VHD", expect: "VHD", ext: "vhd" },
  { parent: "QCOW2", expect: "QCOW2", qemu: "qcow2", ext: "qcow2" },
  { parent: "VMDK", child: "VDI", expect: "VDI", ext: "vdi" },
  { parent: "VHD", child: "VDI", expect: "VDI", ext: "vdi" },
  { parent: "VDI", child: "QCOW2", expect: "QCOW2", qemu: "qcow2", ext: "qcow2" },
  { parent: "VMDK", child: "QCOW2", expect: "QCOW2", qemu: "qcow2", ext: "qcow2" },
];

describe("createmedium --diffparent", () => {
  for (const c of CASES) {
    itq(`a ${c.expect} child of a ${c.parent} parent${c.child ? " (--format)" : " (the parent's format by default)"}: reads fall through, writes stay in the child`, async () => {
      const tag = `${c.parent}-${c.child ?? "default"}`;
      const base = file(`base-${tag}.${c.parent.toLowerCase()}`);
      const baseInfo = await run("createmedium", "disk", "--filename", base, "--size", "8", "--format", c.parent);
      const expected = new Uint8Array(SIZE);
      await write(base, expected, 0, 3 * MiB + 512, 0x21);
      await write(base, expected, 6 * MiB, 64 * 1024, 0x42);
      const baseBytes = readFileSync(base);

      const child = file(`child-${tag}.${c.ext}`);
      const info = await run("createmedium", "disk", "--filename", child, "--diffparent", base, ...(c.child ? ["--format", c.child] : []));
      expect(info).toMatchObject({ format: c.expect, size: SIZE, parentUuid: baseInfo.uuid });
      expect(await readsAs(child, expected)).toBe(true);

      // Sector-sized, block-crossing and partial writes into the child.
      await write(child, expected, 512, 1024, 0x90);
      await write(child, expected, 2 * MiB - 4096, 8192, 0x91);
      await write(child, expected, 5 * MiB, 1536, 0x92);
      expect(await readsAs(child, expected)).toBe(true);
      expect(readFileSync(base).equals(baseBytes), "the parent is not written").toBe(true);
      const shown = await run("showmediuminfo", child);
      expect(shown).toMatchObject({ format: c.expect, parentUuid: baseInfo.uuid });
      const parentShown = await run("showmediuminfo", base);
      expect(parentShown.children).toEqual([info.uuid]);
      if (c.qemu) {
        const r = qemuCompare(expected, child, c.qemu);
        expect(r.status, r.out).toBe(0);
      }
      expect(statSync(child).size).toBeLessThan(SIZE);
    });
  }

  itq("pairs with no parent link are refused clearly, and nothing is left behind", async () => {
    const vhd = file("refuse-base.vhd");
    const qcow = file("refuse-base.qcow2");
    const hdd = file("refuse-base.hdd");
    await run("createmedium", "disk", "--filename", vhd, "--size", "8", "--format", "VHD");
    await run("createmedium", "disk", "--filename", qcow, "--size", "8", "--format", "QCOW2");
    await run("createmedium", "disk", "--filename", hdd, "--size", "8", "--format", "HDD");
    const refused: [string, string, RegExp][] = [
      [vhd, "VMDK", /VMDK differencing image cannot be made over a VHD parent/],
      [vhd, "HDD", /HDD images cannot be differencing images/],
      [qcow, "VDI", /no modification stamp/],
      [hdd, "QCOW2", /cannot be the parent/],
    ];
    for (const [parent, format, message] of refused) {
      const child = file(`refused-${format}.img`);
      await expect(createmedium(["disk", "--filename", child, "--diffparent", parent, "--format", format], () => undefined)).rejects.toThrow(message);
      expect(() => statSync(child)).toThrow();
    }
  });
});
