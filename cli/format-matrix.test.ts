/**
 * clonemedium between every pair of formats, judged by qemu-img: the sources are made by qemu-img
 * from one raw file with data across block, grain and cluster boundaries (so no writer of ours
 * makes them), each is cloned into every format and variant vstor creates, and qemu-img compare
 * says every clone equals the raw file; a clone to RAW is byte for byte what
 * `qemu-img convert -O raw` makes. Also: the Stream and ESX variants, and resize per format.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MediumManager } from "../media/medium-manager.js";
import { clonemedium, createmedium, modifymedium, showmediuminfo } from "./medium-verbs.js";

const MiB = 1 << 20;
const SIZE = 9 * MiB;
const work = mkdtempSync(join(tmpdir(), "vstor-matrix-"));
const file = (name: string) => join(work, name);
const hasQemu = spawnSync("qemu-img", ["--version"]).status === 0;
const itq = hasQemu ? it : it.skip;

function qemu(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync("qemu-img", args, { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** qemu's view of an image: VHDs by their footer's current size (as VirtualBox sizes them). */
function qemuImage(path: string, driver: string): string[] {
  return driver === "vpc" ? ["--image-opts", `driver=vpc,force_size_calc=current_size,file.filename=${path}`] : ["-f", driver, path];
}

function compareWithRaw(raw: string, image: string, driver: string): { status: number | null; out: string } {
  if (driver === "vpc") return qemu("compare", "--image-opts", `driver=raw,file.filename=${raw}`, `driver=vpc,force_size_calc=current_size,file.filename=${image}`);
  return qemu("compare", "-f", "raw", "-F", driver, raw, image);
}

type Verb = (argv: string[], out: (t: string) => void) => Promise<number>;
async function run(verb: Verb, ...argv: string[]): Promise<Record<string, unknown>> {
  let text = "";
  expect(await verb([...argv, "--json"], (t) => void (text += t))).toBe(0);
  return JSON.parse(text) as Record<string, unknown>;
}

/** Sources, made by qemu-img from the raw file. */
const SOURCES: { name: string; driver: string; options: string[] }[] = [
  { name: "vdi", driver: "vdi", options: [] },
  { name: "vmdk-sparse", driver: "vmdk", options: [] },
  { name: "vmdk-stream", driver: "vmdk", options: ["-o", "subformat=streamOptimized"] },
  { name: "vmdk-split", driver: "vmdk", options: ["-o", "subformat=twoGbMaxExtentSparse"] },
  { name: "vhd-dynamic", driver: "vpc", options: ["-o", "subformat=dynamic,force_size=on"] },
  { name: "vhd-fixed", driver: "vpc", options: ["-o", "subformat=fixed,force_size=on"] },
  { name: "parallels", driver: "parallels", options: [] },
  { name: "qcow2", driver: "qcow2", options: [] },
  { name: "qcow2-compressed", driver: "qcow2", options: ["-c"] },
  { name: "vhdx", driver: "vhdx", options: ["-o", "block_size=1M"] },
  { name: "raw", driver: "raw", options: [] },
];

/** Targets: what vstor creates, as --format/--variant, and how qemu reads it. */
const TARGETS: { format: string; variant: string; driver: string }[] = [
  { format: "VDI", variant: "Standard", driver: "vdi" },
  { format: "VDI", variant: "Fixed", driver: "vdi" },
  { format: "VMDK", variant: "Standard", driver: "vmdk" },
  { format: "VMDK", variant: "Split2G", driver: "vmdk" },
  { format: "VMDK", variant: "Stream", driver: "vmdk" },
  { format: "VMDK", variant: "ESX", driver: "vmdk" },
  { format: "VHD", variant: "Standard", driver: "vpc" },
  { format: "VHD", variant: "Fixed", driver: "vpc" },
  { format: "HDD", variant: "Standard", driver: "parallels" },
  { format: "QCOW2", variant: "Standard", driver: "qcow2" },
  { format: "RAW", variant: "Standard", driver: "raw" },
];

let savedHome: string | undefined;
const raw = file("pattern.raw");
beforeAll(() => {
  savedHome = process.env.VSTOR_HOME;
  process.env.VSTOR_HOME = join(work, "home");
  process.env.VSTOR_PROGRESS = "0";
  // Data across 64 KiB (grain, cluster), 1 MiB (VDI, VHDX) and 2 MiB (VHD) boundaries, a zero
  // region in between, and a last partial megabyte.
  const data = new Uint8Array(SIZE);
  const fill = (from: number, length: number, seed: number) => {
    for (let i = 0; i < length; i++) data[from + i] = (seed + i * 31 + (i >> 10)) & 0xff || 1;
  };
  fill(0, 4096, 3);
  fill(64 * 1024 - 512, 1024, 5);
  fill(MiB - 8192, 16384, 7);
  fill(2 * MiB - 512, 3 * MiB, 11);
  fill(8 * MiB + 4096, 512, 13);
  fill(SIZE - 512, 512, 17);
  writeFileSync(raw, data);
});
afterAll(() => {
  if (savedHome === undefined) delete process.env.VSTOR_HOME;
  else process.env.VSTOR_HOME = savedHome;
  rmSync(work, { recursive: true, force: true });
});

describe("clonemedium between every pair of formats", () => {
  for (const source of SOURCES) {
    itq(`from ${source.name} (made by qemu-img) to every format and variant vstor creates`, async () => {
      const src = file(`src-${source.name}.img`);
      const made = qemu("convert", "-f", "raw", "-O", source.driver, ...source.options, raw, src);
      expect(made.status, made.out).toBe(0);
      for (const t of TARGETS) {
        const tag = `${source.name} -> ${t.format} ${t.variant}`;
        const out = file(`clone-${source.name}-${t.format}-${t.variant}.img`);
        const info = await run(clonemedium, src, out, "--format", t.format, "--variant", t.variant);
        expect(info.format, tag).toBe(t.format);
        expect(info.size, tag).toBe(SIZE);
        const c = compareWithRaw(raw, out, t.driver);
        expect(c.status, `${tag}: ${c.out}`).toBe(0);
        if (t.driver !== "raw" && t.driver !== "vpc") {
          const k = qemu("check", ...qemuImage(out, t.driver));
          expect(k.status, `${tag}: ${k.out}`).toBe(0);
        }
        if (t.format === "RAW") {
          const theirs = file(`qemu-${source.name}.raw`);
          expect(qemu("convert", ...(source.driver === "vpc" ? ["--image-opts", `driver=vpc,force_size_calc=current_size,file.filename=${src}`] : ["-f", source.driver, src]), "-O", "raw", theirs).status).toBe(0);
          expect(readFileSync(out).equals(readFileSync(theirs)), `${tag}: byte for byte what qemu-img convert -O raw makes`).toBe(true);
          rmSync(theirs);
        }
      }
    }, 120_000);
  }
});

describe("Stream and ESX variants", () => {
  itq("createmedium --variant Stream makes an empty streamOptimized VMDK; --variant ESX a vmfs one; both are VMDK only", async () => {
    const stream = file("new-stream.vmdk");
    const s = await run(createmedium, "disk", "--filename", stream, "--size", "16", "--format", "VMDK", "--variant", "Stream");
    expect(s).toMatchObject({ format: "VMDK", variant: "Stream", size: 16 * MiB });
    const esx = file("new-esx.vmdk");
    const e = await run(createmedium, "disk", "--filename", esx, "--size", "16", "--format", "VMDK", "--variant", "ESX");
    expect(e).toMatchObject({ format: "VMDK", size: 16 * MiB });
    for (const [p, type] of [[stream, "streamOptimized"], [esx, "vmfs"]] as const) {
      const r = qemu("info", "--output=json", "-f", "vmdk", p);
      expect(r.status, r.out).toBe(0);
      expect(JSON.parse(r.out)).toMatchObject({ "virtual-size": 16 * MiB, "format-specific": { data: { "create-type": type } } });
    }
    await expect(createmedium(["disk", "--filename", file("x.vdi"), "--size", "8", "--variant", "Stream"], () => undefined)).rejects.toThrow(/Stream is a VMDK variant/);
    await expect(createmedium(["disk", "--filename", file("x.vhd"), "--size", "8", "--format", "VHD", "--variant", "ESX"], () => undefined)).rejects.toThrow(/VMDK only/);
    await expect(createmedium(["disk", "--filename", file("x.vmdk"), "--size", "8", "--format", "VMDK", "--variant", "Stream,Fixed"], () => undefined)).rejects.toThrow(/choose one/);
  });
});

describe("modifymedium --resize per format", () => {
  itq("grows VDI, VHD (dynamic and fixed), qcow2 and RAW images, data kept, qemu-img agrees; refuses shrinking and the formats it cannot grow", async () => {
    const src = file("resize-src.vdi");
    expect(qemu("convert", "-f", "raw", "-O", "vdi", raw, src).status).toBe(0);
    for (const [format, variant, driver] of [["VDI", "Standard", "vdi"], ["VHD", "Standard", "vpc"], ["VHD", "Fixed", "vpc"], ["QCOW2", "Standard", "qcow2"], ["RAW", "Standard", "raw"]] as const) {
      const p = file(`resize-${format}-${variant}.img`);
      await run(clonemedium, src, p, "--format", format, "--variant", variant);
      const r = await run(modifymedium, p, "--resize", "24");
      expect(r, `${format} ${variant}`).toMatchObject({ sizeBefore: SIZE, size: 24 * MiB, resized: true });
      const info = qemu("info", "--output=json", ...qemuImage(p, driver));
      expect(JSON.parse(info.out)["virtual-size"], `${format} ${variant}`).toBe(24 * MiB);
      const grown = file(`resize-${format}-${variant}.expected`);
      writeFileSync(grown, Buffer.concat([readFileSync(raw), Buffer.alloc(24 * MiB - SIZE)]));
      const c = compareWithRaw(grown, p, driver);
      expect(c.status, `${format} ${variant}: ${c.out}`).toBe(0);
      await expect(modifymedium([p, "--resize", "8"], () => undefined), `${format} shrink`).rejects.toThrow(/shrinking/);
    }
    for (const [format, variant] of [["VMDK", "Standard"], ["HDD", "Standard"]] as const) {
      const p = file(`noresize-${format}.img`);
      await run(clonemedium, src, p, "--format", format, "--variant", variant);
      const before = readFileSync(p);
      await expect(modifymedium([p, "--resize", "24"], () => undefined), format).rejects.toThrow(/cannot be resized here \(VDI, VHD, QCOW2, RAW can/);
      await expect(modifymedium([p, "--compact"], () => undefined), format).rejects.toThrow(/cannot be compacted here \(VDI can\)/);
      expect(readFileSync(p).equals(before), `${format} untouched`).toBe(true);
      expect((await run(showmediuminfo, p)).size).toBe(SIZE);
    }
  }, 60_000);
});

describe("chains qemu made, through the medium registry", () => {
  itq("a 3-level VMDK chain and a qcow2 chain: registered with their parents, read, written at the top, and cloned flat as qemu sees them", async () => {
    for (const [driver, ext] of [["vmdk", "vmdk"], ["qcow2", "qcow2"]] as const) {
      const base = file(`q3-base.${ext}`);
      const mid = file(`q3-mid.${ext}`);
      const top = file(`q3-top.${ext}`);
      expect(qemu("convert", "-f", "raw", "-O", driver, raw, base).status).toBe(0);
      expect(qemu("create", "-f", driver, "-b", `q3-base.${ext}`, "-F", driver, mid).status).toBe(0);
      const io = (path: string, cmd: string) => {
        const r = spawnSync("qemu-io", ["-f", driver, "-c", cmd, path], { encoding: "utf8" });
        expect(r.status, `${path} ${cmd}: ${r.stdout}${r.stderr}`).toBe(0);
      };
      io(mid, "write -P 0x6d 1032192 131072"); // across the 1 MiB and 64 KiB boundaries
      // After the write: a VMDK's first write changes its CID, which its children record.
      expect(qemu("create", "-f", driver, "-b", `q3-mid.${ext}`, "-F", driver, top).status).toBe(0);
      io(top, "write -P 0x74 4608 1024");
      const baseInfo = await run(showmediuminfo, base);
      const midInfo = await run(showmediuminfo, mid);
      const topInfo = await run(showmediuminfo, top);
      expect(midInfo.parentUuid, driver).toBe(baseInfo.uuid);
      expect(topInfo.parentUuid, driver).toBe(midInfo.uuid);

      // Cloned flat, then a child of our own over the top, written through vstor.
      const flat = file(`q3-flat-${driver}.raw`);
      await run(clonemedium, top, flat, "--format", "RAW");
      const theirs = file(`q3-theirs-${driver}.raw`);
      expect(qemu("convert", "-f", driver, "-O", "raw", top, theirs).status).toBe(0);
      expect(readFileSync(flat).equals(readFileSync(theirs)), `${driver}: the chain reads as qemu reads it`).toBe(true);
      const ours = file(`q3-ours.${ext}`);
      await run(createmedium, "disk", "--filename", ours, "--diffparent", top);
      const b = await new MediumManager().open(ours);
      await b.write(3 * MiB, new Uint8Array(65536).fill(0x55));
      await b.close();
      const w = spawnSync("qemu-io", ["-f", "raw", "-c", "write -P 0x55 3145728 65536", theirs], { encoding: "utf8" });
      expect(w.status, w.stderr).toBe(0);
      const c = qemu("compare", "-f", "raw", "-F", driver, theirs, ours);
      expect(c.status, `${driver}: ${c.out}`).toBe(0);
    }
  }, 60_000);
});
