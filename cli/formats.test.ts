/**
 * Every image format through the medium verbs (called in-process, VSTOR_HOME in a temporary
 * folder), judged by qemu-img: createmedium in each format, clones of a VDI with known data to
 * each format and back, qemu's own images detected by content, damaged images refused.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MediumManager } from "../media/medium-manager.js";
import { clonemedium, createmedium, showmediuminfo } from "./medium-verbs.js";

const MiB = 1 << 20;
const work = mkdtempSync(join(tmpdir(), "vstor-formats-"));
const home = join(work, "home");
const hasQemu = spawnSync("qemu-img", ["--version"]).status === 0 && spawnSync("qemu-io", ["--version"]).status === 0;
const itq = hasQemu ? it : it.skip;
const file = (name: string) => join(work, name);
const VHD_OPTS = (p: string) => `driver=vpc,force_size_calc=current_size,file.filename=${p}`;

/** qemu-img driver names and image options per format. */
const QEMU: Record<string, string> = { VDI: "vdi", VMDK: "vmdk", VHD: "vpc", HDD: "parallels", QCOW2: "qcow2", RAW: "raw" };

function qemu(tool: "qemu-img" | "qemu-io", ...args: string[]) {
  const r = spawnSync(tool, args, { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

async function run(verb: (argv: string[], out: (t: string) => void) => Promise<number>, ...argv: string[]): Promise<Record<string, unknown>> {
  let text = "";
  const code = await verb([...argv, "--json"], (t) => void (text += t));
  expect(code).toBe(0);
  return JSON.parse(text) as Record<string, unknown>;
}

/** qemu-img compare of a VDI with an image of `format` (VHD read with its current size). */
function compare(vdi: string, other: string, format: string): { status: number | null; out: string } {
  if (format === "VHD") return qemu("qemu-img", "compare", "--image-opts", `driver=vdi,file.filename=${vdi}`, VHD_OPTS(other));
  return qemu("qemu-img", "compare", "-f", "vdi", "-F", QEMU[format]!, vdi, other);
}

let savedHome: string | undefined;
beforeAll(() => {
  savedHome = process.env.VSTOR_HOME;
  process.env.VSTOR_HOME = home;
  process.env.VSTOR_PROGRESS = "0";
});
afterAll(() => {
  if (savedHome === undefined) delete process.env.VSTOR_HOME;
  else process.env.VSTOR_HOME = savedHome;
  rmSync(work, { recursive: true, force: true });
});

const CREATE: [format: string, variant: string, qemuFormat: string, ext: string][] = [
  ["VMDK", "Standard", "vmdk", "vmdk"],
  ["VMDK", "Fixed", "vmdk", "vmdk"],
  ["VMDK", "Split2G", "vmdk", "vmdk"],
  ["VMDK", "Split2G,Fixed", "vmdk", "vmdk"],
  ["VHD", "Standard", "vpc", "vhd"],
  ["VHD", "Fixed", "vpc", "vhd"],
  ["HDD", "Standard", "parallels", "hdd"],
  ["HDD", "Fixed", "parallels", "hdd"],
  ["QCOW2", "Standard", "qcow2", "qcow2"],
  ["VDI", "Standard", "vdi", "vdi"],
  ["RAW", "Fixed", "raw", "img"],
];

describe("image formats through the medium verbs", () => {
  for (const [format, variant, qf, ext] of CREATE) {
    itq(`createmedium --format ${format} --variant ${variant}: qemu-img agrees`, async () => {
      const p = file(`new-${format}-${variant.replace(",", "-")}.${ext}`);
      const info = await run(createmedium, "disk", "--filename", p, "--size", "8", "--format", format, "--variant", variant);
      expect(info).toMatchObject({ format, size: 8 * MiB });
      if (format !== "RAW") expect(info.variant).toBe(variant);
      const args = format === "VHD" ? ["info", "--output=json", "--image-opts", VHD_OPTS(p)] : ["info", "--output=json", "-f", qf, p];
      const r = qemu("qemu-img", ...args);
      expect(r.status, r.out).toBe(0);
      expect(JSON.parse(r.out)).toMatchObject({ format: qf, "virtual-size": 8 * MiB });
      if (format !== "VHD" && format !== "RAW") {
        const c = qemu("qemu-img", "check", "-f", qf, p);
        expect(c.status, c.out).toBe(0);
      }
      const shown = await run(showmediuminfo, p);
      expect(shown).toMatchObject({ format, uuid: info.uuid });
      // checkmedium: the format's own checker (VHD, qcow2, Parallels) finds nothing wrong.
      const report = await new MediumManager().check(p);
      expect(report.issues, JSON.stringify(report.issues)).toEqual([]);
      expect(report.corrupt).toBe(false);
    });
  }

  itq("QCOW2 Fixed and Split2G for non-VMDK are refused", async () => {
    await expect(createmedium(["disk", "--filename", file("x.qcow2"), "--size", "8", "--format", "QCOW2", "--variant", "Fixed"], () => undefined)).rejects.toThrow(/Standard/);
    await expect(createmedium(["disk", "--filename", file("x.vhd"), "--size", "8", "--format", "VHD", "--variant", "Split2G"], () => undefined)).rejects.toThrow(/VMDK only/);
  });

  itq("a VDI with known data clones to every format and back, equal to the source", async () => {
    const src = file("source.vdi");
    await run(createmedium, "disk", "--filename", src, "--size", "8", "--format", "VDI");
    const mm = new MediumManager();
    const b = await mm.open(src);
    const data = new Uint8Array(3 * MiB + 4096);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 12)) & 0xff;
    await b.write(MiB / 2, data);
    await b.write(7 * MiB, data.subarray(0, 8192));
    await b.close();

    for (const [format, variant] of [
      ["VMDK", "Standard"],
      ["VMDK", "Fixed"],
      ["VMDK", "Split2G"],
      ["VMDK", "Split2G,Fixed"],
      ["VHD", "Standard"],
      ["VHD", "Fixed"],
      ["HDD", "Standard"],
      ["HDD", "Fixed"],
      ["QCOW2", "Standard"],
      ["RAW", "Standard"],
    ] as const) {
      const tag = `${format}-${variant.replace(",", "-")}`;
      const out = file(`clone-${tag}.img`);
      const info = await run(clonemedium, src, out, "--format", format, "--variant", variant);
      expect(info.format).toBe(format);
      const c = compare(src, out, format);
      expect(c.status, `${tag}: ${c.out}`).toBe(0);
      const back = file(`back-${tag}.vdi`);
      await run(clonemedium, out, back, "--format", "VDI");
      const c2 = qemu("qemu-img", "compare", "-f", "vdi", "-F", "vdi", src, back);
      expect(c2.status, `${tag} back: ${c2.out}`).toBe(0);
    }
  }, 120_000);

  itq("images qemu made are detected by content, whatever their name", async () => {
    const made: [string, string, string[]][] = [
      ["vmdk", "VMDK", []],
      ["vmdk", "VMDK", ["-o", "subformat=streamOptimized"]],
      ["vpc", "VHD", []],
      ["vpc", "VHD", ["-o", "subformat=fixed"]],
      ["parallels", "HDD", []],
      ["qcow2", "QCOW2", []],
      ["vdi", "VDI", []],
    ];
    for (const [qf, format, opts] of made) {
      const p = file(`qemu-${qf}-${opts.length}.tmp`);
      const r = qemu("qemu-img", "create", "-f", qf, ...opts, p, "4M");
      expect(r.status, r.out).toBe(0);
      if (!opts.includes("subformat=streamOptimized")) {
        const w = qemu("qemu-io", "-f", qf, "-c", "write -P 0x5a 64k 128k", p);
        expect(w.status, w.out).toBe(0);
      }
      const misleading = p.replace(/\.tmp$/, ".iso");
      renameSync(p, misleading);
      const info = await run(showmediuminfo, misleading);
      expect(info.format, `${qf} ${opts.join(" ")}`).toBe(format);
      if (!opts.includes("subformat=streamOptimized")) {
        const mm = new MediumManager();
        const b = await mm.open(misleading, { readOnly: true });
        const buf = new Uint8Array(128 * 1024);
        await b.read(64 * 1024, buf);
        await b.close();
        expect(buf.every((x) => x === 0x5a)).toBe(true);
      }
    }
  }, 60_000);

  itq("a qcow2 backing chain opens through its backing file", async () => {
    const base = file("chain-base.qcow2");
    const top = file("chain-top.qcow2");
    expect(qemu("qemu-img", "create", "-f", "qcow2", base, "4M").status).toBe(0);
    expect(qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", base).status).toBe(0);
    expect(qemu("qemu-img", "create", "-f", "qcow2", "-b", "chain-base.qcow2", "-F", "qcow2", top).status).toBe(0);
    expect(qemu("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 512k 64k", top).status).toBe(0);
    const flat = file("chain-flat.vdi");
    await run(clonemedium, top, flat, "--format", "VDI");
    const c = qemu("qemu-img", "compare", "-f", "qcow2", "-F", "vdi", top, flat);
    expect(c.status, c.out).toBe(0);
  });

  itq("truncated or garbled VMDK, qcow2 and VHD images are refused, never opened as raw", async () => {
    const cases: [string, string, (p: string) => void][] = [
      ["vmdk", "truncated", (p) => truncateSync(p, 1024)],
      ["vmdk", "garbled", (p) => garble(p, 0, "XXXX")],
      ["qcow2", "truncated", (p) => truncateSync(p, 100)],
      ["qcow2", "garbled", (p) => garble(p, 3, "X")],
      ["vpc", "truncated", (p) => truncateSync(p, 2048)],
      ["vpc", "garbled", (p) => garble(p, 0, "XXXXXXXX")],
    ];
    for (const [qf, how, damage] of cases) {
      const p = file(`bad-${qf}-${how}.img`);
      expect(qemu("qemu-img", "create", "-f", qf, p, "4M").status).toBe(0);
      if (qf === "vpc" && how === "garbled") {
        // both footers: the copy at 0 and the one at the end
        const size = readFileSync(p).length;
        garble(p, size - 512, "XXXXXXXX");
      }
      damage(p);
      const mm = new MediumManager();
      await expect(mm.open(p, { readOnly: true }), `${qf} ${how}`).rejects.toThrow();
      await expect(showmediuminfo([p], () => undefined), `${qf} ${how}`).rejects.toThrow();
      const report = await mm.check(p);
      expect(report.format, `${qf} ${how}`).not.toBe("RAW");
      expect(report.corrupt, `${qf} ${how}`).toBe(true);
    }
  });
});

function garble(p: string, at: number, text: string): void {
  const b = readFileSync(p);
  b.write(text, at, "latin1");
  writeFileSync(p, b);
}

describe("VHDX (read-only)", () => {
  itq("a qemu-made VHDX is found by content, shown, and cloned to VDI equal to it; creating one is refused", async () => {
    const p = file("hyperv.disk");
    expect(qemu("qemu-img", "create", "-f", "vhdx", "-o", "block_size=1M", p, "8M").status).toBe(0);
    const w = qemu("qemu-io", "-f", "vhdx", "-c", "write -P 0x5c 1048064 4096", "-c", "write -P 0x3a 6291456 65536", p);
    expect(w.status, w.out).toBe(0);
    const shown = await run(showmediuminfo, p);
    expect(shown).toMatchObject({ format: "VHDX", size: 8 * 1024 * 1024 });
    const out = file("from-vhdx.vdi");
    const cloned = await run(clonemedium, p, out);
    expect(cloned).toMatchObject({ format: "VDI" }); // the source's format cannot be created: VDI, as VBoxManage
    const c = qemu("qemu-img", "compare", "-f", "vhdx", "-F", "vdi", p, out);
    expect(c.status, c.out).toBe(0);
    await expect(createmedium(["disk", "--filename", file("new.vhdx"), "--size", "8", "--format", "VHDX"], () => undefined)).rejects.toThrow(/cannot create/);
  });
});

describe("createmedium --variant RawDisk", () => {
  it("writes a VMDK over a host disk's partition (a file stands in for the disk), registered and readable", async () => {
    const disk = file("hostdisk.img");
    const data = Buffer.alloc(8 * 1024 * 1024, 0x11);
    data.fill(0, 446, 510);
    data[446 + 4] = 0x83;
    data.writeUInt32LE(2048, 446 + 8);
    data.writeUInt32LE(4096, 446 + 12);
    data[462 + 4] = 0x83;
    data.writeUInt32LE(8192, 462 + 8);
    data.writeUInt32LE(4096, 462 + 12);
    data.fill(0xaa, 2048 * 512, 6144 * 512);
    data.fill(0xbb, 8192 * 512, 12288 * 512);
    data[510] = 0x55;
    data[511] = 0xaa;
    writeFileSync(disk, data);
    const desc = file("raw-part2.vmdk");
    const info = await run(createmedium, "disk", "--filename", desc, "--variant", "RawDisk", "--property", `RawDrive=${disk}`, "--property", "Partitions=2");
    expect(info).toMatchObject({ format: "VMDK", size: data.length });
    const b = await new MediumManager().open(desc, { readOnly: true });
    const at = async (sector: number) => {
      const s = new Uint8Array(512);
      await b.read(sector * 512, s);
      return s[0];
    };
    expect([await at(2048), await at(8192), await at(0)]).toEqual([0, 0xbb, 0x11]); // partition 1 hidden, 2 shown, sector 0 from the MBR copy
    await b.close();
    expect(readFileSync(file("raw-part2-pt.vmdk")).length).toBe(2048 * 512);
    await expect(createmedium(["disk", "--filename", file("x.vmdk"), "--variant", "RawDisk"], () => undefined)).rejects.toThrow(/RawDrive/);
  });
});
