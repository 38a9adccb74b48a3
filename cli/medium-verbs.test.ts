/**
 * The medium verbs end to end, as a user runs them: `node dist/vstor.mjs` (bundled in beforeAll)
 * with VSTOR_HOME in a temporary folder, checked against qemu-img where it can judge (info,
 * check, compare) and against the files themselves.
 */
import { spawnSync } from "node:child_process";
import { appendFileSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openVdi } from "../media/formats/vdi/vdi-image.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { MediumManager } from "../media/medium-manager.js";
import { MediaRegistry } from "../media/registry.js";

const MiB = 1 << 20;
const work = mkdtempSync(join(tmpdir(), "vstor-media-cli-"));
const home = join(work, "home");
const env = { ...process.env, VSTOR_HOME: home, VSTOR_PROGRESS: "0" };
const cli = join(process.cwd(), "dist", "vstor.mjs");
const hasQemu = spawnSync("qemu-img", ["--version"]).status === 0 && spawnSync("qemu-io", ["--version"]).status === 0;
const itq = hasQemu ? it : it.skip;

const file = (name: string) => join(work, name);

function vstor(args: string[], extraEnv: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [cli, ...args], { env: { ...env, ...extraEnv }, encoding: "utf8", timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Run a verb that must succeed; its stdout parsed as JSON. */
function vstorJson<T = Record<string, unknown>>(...args: string[]): T {
  const r = vstor([...args, "--json"]);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as T;
}

function qemu(tool: "qemu-img" | "qemu-io", ...args: string[]) {
  const r = spawnSync(tool, args, { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

function qemuInfo(p: string): { format: string; "virtual-size": number } {
  const r = qemu("qemu-img", "info", "--output=json", p);
  expect(r.status, r.out).toBe(0);
  return JSON.parse(r.out);
}

function expectQemuCheckPasses(p: string): void {
  const r = qemu("qemu-img", "check", "-f", "vdi", p);
  expect(r.out).toContain("No errors were found on the image");
  expect(r.status).toBe(0);
}

function poke32(p: string, at: number, value: number): void {
  const bytes = readFileSync(p);
  bytes.writeUInt32LE(value >>> 0, at);
  writeFileSync(p, bytes);
}

interface Info {
  uuid: string;
  location: string;
  format: string;
  variant: string;
  size: number;
  fileSize: number;
  parentUuid?: string;
  children: string[];
}

interface Check {
  location: string;
  corrupt: boolean;
  leakedBytes: number;
  chain: { uuid: string; location: string }[];
  issues: { severity: string; code: string; location: string; message: string; bytes?: number }[];
}

beforeAll(() => {
  const b = spawnSync(process.execPath, ["build.mjs"], { encoding: "utf8" });
  expect(b.status, b.stderr).toBe(0);
}, 60_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("vstor medium verbs", () => {
  let base: Info;
  let child: Info;

  itq("createmedium makes dynamic and fixed VDIs that qemu-img accepts", () => {
    base = vstorJson<Info>("createmedium", "disk", "--filename", file("base.vdi"), "--size", "64");
    expect(base).toMatchObject({ format: "VDI", variant: "Standard", size: 64 * MiB, location: file("base.vdi"), children: [] });
    expect(base.uuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(statSync(file("base.vdi")).size).toBe(2 * MiB); // header, 1 MiB-aligned map, no data blocks
    expect(qemuInfo(file("base.vdi"))).toMatchObject({ format: "vdi", "virtual-size": 64 * MiB });
    expectQemuCheckPasses(file("base.vdi"));

    const r = vstor(["createmedium", "disk", "--filename", file("fixed.vdi"), "--size", "16", "--variant", "Fixed"]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^Medium created\. UUID: [0-9a-f-]{36}\n$/);
    expect(statSync(file("fixed.vdi")).size).toBeGreaterThanOrEqual(16 * MiB);
    expect(qemuInfo(file("fixed.vdi"))).toMatchObject({ format: "vdi", "virtual-size": 16 * MiB });
    expectQemuCheckPasses(file("fixed.vdi"));
    expect(vstorJson<Info>("showmediuminfo", file("fixed.vdi")).variant).toBe("Fixed");
  });

  it("createmedium makes a raw image of the exact size", () => {
    const raw = vstorJson<Info>("createmedium", "disk", "--filename", file("disk.raw"), "--size", "8", "--format", "RAW");
    expect(raw).toMatchObject({ format: "RAW", size: 8 * MiB, fileSize: 8 * MiB });
    expect(statSync(file("disk.raw")).size).toBe(8 * MiB);
  });

  itq("createmedium --diffparent makes a child; list hdds --json shows the link both ways", () => {
    child = vstorJson<Info>("createmedium", "disk", "--filename", file("child.vdi"), "--diffparent", base.uuid);
    expect(child).toMatchObject({ variant: "Diff", parentUuid: base.uuid, size: 64 * MiB });
    const grandchild = vstorJson<Info>("createmedium", "disk", "--filename", file("grandchild.vdi"), "--diffparent", file("child.vdi"));
    expect(grandchild.parentUuid).toBe(child.uuid);

    const all = vstorJson<Info[]>("list", "hdds");
    const byUuid = new Map(all.map((m) => [m.uuid, m]));
    expect(byUuid.get(base.uuid)).toMatchObject({ children: [child.uuid] });
    expect(byUuid.get(child.uuid)).toMatchObject({ parentUuid: base.uuid, children: [grandchild.uuid], location: file("child.vdi") });
    expect(byUuid.get(grandchild.uuid)).toMatchObject({ parentUuid: child.uuid, children: [] });
    const text = vstor(["list", "hdds"]).stdout;
    expect(text).toContain(`  UUID:           ${child.uuid}\n  Parent UUID:    ${base.uuid}`); // indented under its parent
  });

  itq("showmediuminfo registers an image qemu-img made", () => {
    const p = file("from-qemu.vdi");
    expect(qemu("qemu-img", "create", "-f", "vdi", p, "32M").status).toBe(0);
    expect(vstorJson<Info[]>("list", "hdds").some((m) => m.location === p)).toBe(false);
    const info = vstorJson<Info>("showmediuminfo", "disk", p);
    expect(info).toMatchObject({ format: "VDI", variant: "Standard", size: 32 * MiB, location: p });
    expect(vstorJson<Info[]>("list", "hdds").find((m) => m.location === p)?.uuid).toBe(info.uuid);
    expect(vstorJson<Info>("showmediuminfo", info.uuid).location).toBe(p); // now known by UUID too
    const text = vstor(["showmediuminfo", p]).stdout;
    expect(text).toContain(`UUID:           ${info.uuid}`);
    expect(text).toContain("Storage format: VDI");
  });

  itq("refuses a copy of a registered VDI (same UUID, other file), naming both, and leaves the copy alone", () => {
    const copy = file("copy-of-base.vdi");
    copyFileSync(file("base.vdi"), copy);
    const before = readFileSync(copy);
    for (const args of [["showmediuminfo", copy], ["modifymedium", copy, "--compact"], ["modifymedium", copy, "--resize", "128"]]) {
      const r = vstor(args);
      expect(r.status, args.join(" ")).toBe(1);
      expect(r.stderr).toContain(copy);
      expect(r.stderr).toContain(file("base.vdi"));
      expect(r.stderr).toContain(base.uuid);
    }
    expect(Buffer.compare(readFileSync(copy), before)).toBe(0);
    expect(vstorJson<Info[]>("list", "hdds").some((m) => m.location === copy)).toBe(false);
    // checkmedium reads it and says why vstor will not use it.
    const c = vstor(["checkmedium", copy]);
    expect(c.status).toBe(0);
    expect(c.stdout).toMatch(/warning: .*is registered for .*base\.vdi/);
    expect(Buffer.compare(readFileSync(copy), before)).toBe(0);
  });

  itq("closemedium, resize and compact refuse a parent with children; --delete removes the file", () => {
    const before = readFileSync(file("base.vdi"));
    for (const args of [["modifymedium", base.uuid, "--resize", "128"], ["modifymedium", base.uuid, "--compact"]]) {
      const r = vstor(args);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain("has differencing children");
    }
    expect(Buffer.compare(readFileSync(file("base.vdi")), before)).toBe(0);
    const refused = vstor(["closemedium", "disk", base.uuid]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("has differencing children");
    expect(refused.stderr).toContain(file("child.vdi"));
    expect(existsSync(file("base.vdi"))).toBe(true);

    const gone = vstorJson<{ uuid: string; deleted: boolean }>("closemedium", file("grandchild.vdi"), "--delete");
    expect(gone.deleted).toBe(true);
    expect(existsSync(file("grandchild.vdi"))).toBe(false);
    const r = vstor(["closemedium", file("child.vdi")]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`{${child.uuid}} closed.`);
    expect(existsSync(file("child.vdi"))).toBe(true); // closed, not deleted
    expect(vstorJson<Info[]>("list", "hdds").map((m) => m.uuid)).not.toContain(child.uuid);
    expect(vstor(["closemedium", base.uuid]).status).toBe(0);
    expect(vstorJson<Info[]>("list", "hdds").map((m) => m.uuid)).not.toContain(base.uuid);
  });

  itq("modifymedium --resize grows images (ours, and qemu's whose map must move); qemu-img agrees", () => {
    const ours = file("grow.vdi");
    vstorJson("createmedium", "disk", "--filename", ours, "--size", "32");
    expect(qemu("qemu-io", "-f", "vdi", "-c", "write -P 0x61 0 3M", ours).status).toBe(0);
    const r = vstorJson<{ sizeBefore: number; size: number; resized: boolean }>("modifymedium", ours, "--resize", "100");
    expect(r).toMatchObject({ sizeBefore: 32 * MiB, size: 100 * MiB, resized: true });
    expect(qemuInfo(ours)["virtual-size"]).toBe(100 * MiB);
    expectQemuCheckPasses(ours);
    expect(qemu("qemu-io", "-f", "vdi", "-c", "read -P 0x61 0 3M", "-c", "read -P 0 3M 97M", ours).out).not.toMatch(/fail|mismatch/i);

    const theirs = file("grow-qemu.vdi");
    expect(qemu("qemu-img", "create", "-f", "vdi", theirs, "16M").status).toBe(0);
    expect(qemu("qemu-io", "-f", "vdi", "-c", "write -P 0x62 0 2M", "-c", "write -P 0x63 10M 1M", theirs).status).toBe(0);
    const t = vstor(["modifymedium", "disk", theirs, "--resize", "2048"]);
    expect(t.status, t.stderr).toBe(0);
    expect(t.stdout).toBe(`Resized to ${2048 * MiB} bytes.\n`);
    expect(qemuInfo(theirs)["virtual-size"]).toBe(2048 * MiB);
    expectQemuCheckPasses(theirs);
    const back = qemu("qemu-io", "-f", "vdi", "-c", "read -P 0x62 0 2M", "-c", "read -P 0x63 10M 1M", "-c", "read -P 0 11M 100M", theirs);
    expect(back.out).not.toMatch(/fail|mismatch/i);
  });

  itq("modifymedium --compact after writing zeros shrinks the file and keeps the data", () => {
    const p = file("compact.vdi");
    vstorJson("createmedium", "disk", "--filename", p, "--size", "64");
    expect(qemu("qemu-io", "-f", "vdi", "-c", "write -P 0x71 0 16M", p).status).toBe(0);
    expect(qemu("qemu-io", "-f", "vdi", "-c", "write -P 0 2M 10M", p).status).toBe(0); // 10 blocks of zeros, still stored
    const before = statSync(p).size;
    const r = vstor(["modifymedium", p, "--compact", "--json"], { VSTOR_PROGRESS: "1" });
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { fileSizeBefore: number; fileSize: number; compacted: boolean };
    expect(j).toMatchObject({ fileSizeBefore: before, compacted: true });
    expect(statSync(p).size).toBe(before - 10 * MiB);
    expect(j.fileSize).toBe(statSync(p).size);
    // Progress went to stderr, one line per 10% (not a terminal), and never to stdout.
    expect(r.stderr).toContain("Compacting: reading blocks 100% (16/16)");
    expect(r.stderr).toContain("Compacting: moving blocks 100%");
    expectQemuCheckPasses(p);
    const back = qemu("qemu-io", "-f", "vdi", "-c", "read -P 0x71 0 2M", "-c", "read -P 0 2M 10M", "-c", "read -P 0x71 12M 4M", "-c", "read -P 0 16M 48M", p);
    expect(back.out).not.toMatch(/fail|mismatch/i);
    expect(vstor(["modifymedium", p, "--compact"]).stdout).toBe(`Compacted: ${j.fileSize} -> ${j.fileSize} bytes on disk.\n`);
  });

  itq("checkmedium: exit 0 for clean and leaky images, 2 for corrupt ones; never writes", () => {
    const clean = file("check-clean.vdi");
    vstorJson("createmedium", "disk", "--filename", clean, "--size", "16");
    expect(qemu("qemu-io", "-f", "vdi", "-c", "write -P 0x33 0 3M", clean).status).toBe(0);
    let r = vstor(["checkmedium", "disk", clean]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("No errors were found on the medium.");
    expect(r.stdout).not.toContain("warning");

    const leaky = file("check-leaky.vdi");
    copyFileSync(clean, leaky);
    appendFileSync(leaky, Buffer.alloc(5000, 0x5a)); // junk past the last slot
    poke32(leaky, 0x188, 0x12345678); // another UUID, so it is not a duplicate of clean
    const leakyBytes = readFileSync(leaky);
    const mtime = statSync(leaky).mtimeMs;
    r = vstor(["checkmedium", leaky]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/warning: .*5000 bytes past the last data slot/);
    expect(r.stdout).toContain("5000 bytes are leaked");
    expect(r.stdout).toContain("No errors were found");
    const j = vstorJson<Check>("checkmedium", leaky);
    expect(j).toMatchObject({ corrupt: false, leakedBytes: 5000, issues: [{ severity: "warning", code: "bytes-past-end", bytes: 5000 }] });
    expect(Buffer.compare(readFileSync(leaky), leakyBytes)).toBe(0);
    expect(statSync(leaky).mtimeMs).toBe(mtime);
    expect(vstorJson<Info[]>("list", "hdds").some((m) => m.location === leaky)).toBe(false); // checking registers nothing

    const corrupt = file("check-corrupt.vdi");
    copyFileSync(leaky, corrupt);
    poke32(corrupt, 0x40, 0xbeda10ff);
    r = vstor(["checkmedium", corrupt]);
    expect(r.status).toBe(2);
    expect(r.stdout).toContain(`error: ${corrupt}: not a VDI image: signature 0xbeda10ff is not 0xbeda107f [invalid-format]`);
    const cj = vstor(["checkmedium", corrupt, "--json"]);
    expect(cj.status).toBe(2);
    expect(JSON.parse(cj.stdout)).toMatchObject({ corrupt: true, issues: [{ severity: "error", code: "invalid-format" }] });

    const pastEnd = file("check-past-end.vdi");
    copyFileSync(clean, pastEnd);
    poke32(pastEnd, 0x188, 0x87654321);
    poke32(pastEnd, 0x184, 4); // blocks allocated 4; block 5 -> slot 3, which the file does not hold
    poke32(pastEnd, 0x100000 + 4 * 5, 3);
    r = vstor(["checkmedium", pastEnd, "--json"]);
    expect(r.status).toBe(2);
    expect((JSON.parse(r.stdout) as Check).issues[0]).toMatchObject({ severity: "error", code: "corrupt" });
    expect((JSON.parse(r.stdout) as Check).issues[0]!.message).toMatch(/entry 5 is 3, .*past the end of the file/);

    const missing = vstor(["checkmedium", file("nothing-here.vdi")]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain("nothing-here.vdi");
  });

  itq("checkmedium follows a differencing image's chain: modified parent warns, missing parent fails", async () => {
    const parent = vstorJson<Info>("createmedium", "disk", "--filename", file("chain-base.vdi"), "--size", "16");
    const kid = vstorJson<Info>("createmedium", "disk", "--filename", file("chain-child.vdi"), "--diffparent", parent.uuid);
    let j = vstorJson<Check>("checkmedium", kid.uuid);
    expect(j).toMatchObject({ corrupt: false, issues: [], chain: [{ uuid: parent.uuid, location: file("chain-base.vdi") }] });

    // A write session on the parent (behind the registry's back: vstor refuses to change a parent)
    // gives it a new modification UUID.
    const img = await openVdi(new NodeFileOpener(), file("chain-base.vdi"));
    await img.write(0, new Uint8Array(512).fill(7));
    await img.close();
    const r = vstor(["checkmedium", file("chain-child.vdi")]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/warning: .*chain-child\.vdi: its parent .*chain-base\.vdi was modified after the child was made/);
    j = vstorJson<Check>("checkmedium", kid.uuid);
    expect(j.issues.map((i) => i.code)).toEqual(["parent-modified"]);

    // Another home knows nothing of the parent: the chain is broken.
    const elsewhere = vstor(["checkmedium", file("chain-child.vdi")], { VSTOR_HOME: join(work, "other-home") });
    expect(elsewhere.status).toBe(2);
    expect(elsewhere.stdout).toContain(`its parent {${parent.uuid}} is not registered`);
  });

  it("checkmedium on raw images: whole sectors are fine, a ragged tail is a warning", () => {
    const r = vstor(["checkmedium", file("disk.raw")]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("No errors were found");
    const odd = file("odd.img");
    writeFileSync(odd, Buffer.alloc(3 * 512 + 100, 1));
    const o = vstor(["checkmedium", odd, "--json"]);
    expect(o.status).toBe(0);
    expect(JSON.parse(o.stdout)).toMatchObject({ format: "RAW", corrupt: false, issues: [{ severity: "warning", code: "odd-size" }] });
  });

  it("refuses unknown options and missing targets with usage errors", () => {
    expect(vstor(["checkmedium"]).status).toBe(2);
    const r = vstor(["checkmedium", file("disk.raw"), "--repair", "yes"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown option --repair");
  });
});

describe("vstor clonemedium", () => {
  const MARKS = ["write -P 0x5a 1M 3M", "write -P 0xa5 20M 512K", "write -P 0x3c 63M 4K"];

  /** A 64 MB dynamic VDI with data in 5 of its 64 blocks, made by qemu-io. */
  function source(name: string): Info {
    const info = vstorJson<Info>("createmedium", "disk", "--filename", file(name), "--size", "64");
    for (const m of MARKS) expect(qemu("qemu-io", "-f", "vdi", "-c", m, file(name)).status).toBe(0);
    return info;
  }

  function expectSame(a: string, b: string, fa = "vdi", fb = "vdi"): void {
    const r = qemu("qemu-img", "compare", "-f", fa, "-F", fb, a, b);
    expect(r.out).toContain("Images are identical");
    expect(r.status).toBe(0);
  }

  itq("VDI to VDI: a new registered image, new UUID, same content, as sparse as the source", () => {
    const src = source("clone-src.vdi");
    const r = vstor(["clonemedium", "disk", file("clone-src.vdi"), file("clone-dst.vdi")], { VSTOR_PROGRESS: "1" });
    expect(r.status, r.stderr).toBe(0);
    const m = r.stdout.match(/^Clone medium created in format 'VDI'\. UUID: ([0-9a-f-]{36})\n$/);
    expect(m).not.toBeNull();
    const uuid = m![1]!;
    expect(uuid).not.toBe(src.uuid);
    expect(r.stderr).toContain("Cloning: MBytes copied 100% (5/5)");
    expectSame(file("clone-src.vdi"), file("clone-dst.vdi"));
    expectQemuCheckPasses(file("clone-dst.vdi"));
    expect(statSync(file("clone-dst.vdi")).size).toBe(2 * MiB + 5 * MiB); // header and map, 5 blocks
    const info = vstorJson<Info>("showmediuminfo", uuid);
    expect(info).toMatchObject({ location: file("clone-dst.vdi"), format: "VDI", variant: "Standard", size: 64 * MiB, children: [] });
    expect(info.parentUuid).toBeUndefined();
    // --json prints what showmediuminfo --json prints; clonehd is the old name.
    const j = vstorJson<Info>("clonehd", src.uuid, file("clone-json.vdi"));
    expect(j).toEqual(vstorJson<Info>("showmediuminfo", file("clone-json.vdi")));
  });

  itq("VDI to RAW is byte for byte what qemu-img convert makes; a sparse file", () => {
    source("clone-raw-src.vdi");
    const j = vstorJson<Info>("clonemedium", file("clone-raw-src.vdi"), file("clone.raw"), "--format", "RAW");
    expect(j).toMatchObject({ format: "RAW", size: 64 * MiB, location: file("clone.raw") });
    expect(qemu("qemu-img", "convert", "-f", "vdi", "-O", "raw", file("clone-raw-src.vdi"), file("qemu.raw")).status).toBe(0);
    expect(Buffer.compare(readFileSync(file("clone.raw")), readFileSync(file("qemu.raw")))).toBe(0);
    expect(statSync(file("clone.raw")).blocks * 512).toBeLessThan(16 * MiB);
  });

  itq("RAW to VDI, Fixed and Standard; an unregistered raw source is registered", () => {
    const raw = file("clone-src.raw");
    writeFileSync(raw, Buffer.alloc(32 * MiB));
    expect(qemu("qemu-io", "-f", "raw", "-c", "write -P 0x77 5M 2M", "-c", "write -P 0x78 30M 64K", raw).status).toBe(0);
    const fixed = vstorJson<Info>("clonemedium", raw, file("from-raw-fixed.vdi"), "--format", "VDI", "--variant", "Fixed");
    expect(fixed).toMatchObject({ format: "VDI", variant: "Fixed", size: 32 * MiB });
    const dyn = vstorJson<Info>("clonemedium", raw, file("from-raw.vdi"), "--format", "VDI", "--variant", "Standard");
    expect(dyn).toMatchObject({ format: "VDI", variant: "Standard", size: 32 * MiB, fileSize: 2 * MiB + 3 * MiB });
    for (const p of [file("from-raw-fixed.vdi"), file("from-raw.vdi")]) {
      expectSame(raw, p, "raw", "vdi");
      expectQemuCheckPasses(p);
    }
    expect(vstorJson<Info[]>("list", "hdds").find((m) => m.location === raw)?.format).toBe("RAW");
    // Without --format a clone keeps the source's format (as VBoxManage does).
    expect(vstorJson<Info>("clonemedium", raw, file("raw-again.img")).format).toBe("RAW");
  });

  itq("a differencing chain is cloned flattened: a base image with what the guest sees", async () => {
    const base = source("clone-base.vdi");
    const kid = vstorJson<Info>("createmedium", "disk", "--filename", file("clone-kid.vdi"), "--diffparent", base.uuid);
    const mm = new MediumManager(new MediaRegistry(home));
    const chain = await mm.open(kid.uuid);
    await chain.write(2 * MiB, new Uint8Array(MiB).fill(0x42)); // over the parent's data
    await chain.write(40 * MiB + 512, new Uint8Array(4096).fill(0x43)); // where the parent has none
    await chain.write(20 * MiB, new Uint8Array(MiB)); // zeros hiding the parent's block
    const seen = new Uint8Array(chain.size);
    await chain.read(0, seen);
    await chain.close();

    const flat = vstorJson<Info>("clonemedium", kid.uuid, file("clone-flat.vdi"));
    expect(flat).toMatchObject({ format: "VDI", variant: "Standard", size: 64 * MiB });
    expect(flat.parentUuid).toBeUndefined();
    expectQemuCheckPasses(file("clone-flat.vdi")); // qemu cannot open differencing VDIs: the clone is a base
    expect(qemu("qemu-img", "convert", "-f", "vdi", "-O", "raw", file("clone-flat.vdi"), file("flat.raw")).status).toBe(0);
    expect(Buffer.compare(readFileSync(file("flat.raw")), Buffer.from(seen))).toBe(0);
    // blocks 1-3 (parent, one of them the child's), 40 (child), 63 (parent); 20 is zeros now
    expect(statSync(file("clone-flat.vdi")).size).toBe(2 * MiB + 5 * MiB);
  });

  itq("--existing writes into an existing medium, keeping its UUID; refused when smaller", () => {
    const src = source("clone-ex-src.vdi");
    const target = vstorJson<Info>("createmedium", "disk", "--filename", file("clone-ex.vdi"), "--size", "64");
    expect(qemu("qemu-io", "-f", "vdi", "-c", "write -P 0x11 0 64M", file("clone-ex.vdi")).status).toBe(0);
    const j = vstorJson<Info>("clonemedium", src.uuid, file("clone-ex.vdi"), "--existing");
    expect(j.uuid).toBe(target.uuid);
    expectSame(file("clone-ex-src.vdi"), file("clone-ex.vdi"));
    expectQemuCheckPasses(file("clone-ex.vdi"));

    vstorJson("createmedium", "disk", "--filename", file("clone-small.vdi"), "--size", "32");
    const before = readFileSync(file("clone-small.vdi"));
    const r = vstor(["clonemedium", src.uuid, file("clone-small.vdi"), "--existing"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("smaller than the source");
    expect(Buffer.compare(readFileSync(file("clone-small.vdi")), before)).toBe(0);
    const u = vstor(["clonemedium", src.uuid, file("clone-ex.vdi"), "--existing", "--format", "RAW"]);
    expect(u.status).toBe(2);
    expect(u.stderr).toContain("cannot be used with --existing");
  });

  it("refuses an existing target and an unknown source, leaving files and registry alone", () => {
    const raw = file("clone-refuse.raw");
    writeFileSync(raw, Buffer.alloc(MiB, 1));
    writeFileSync(file("in-the-way.img"), "keep me");
    const registry = () => vstorJson<Info[]>("list", "hdds").map((m) => m.uuid).sort();
    const before = registry();
    let r = vstor(["clonemedium", raw, file("in-the-way.img")]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("already exists");
    expect(readFileSync(file("in-the-way.img"), "utf8")).toBe("keep me");
    r = vstor(["clonemedium", "01234567-89ab-cdef-0123-456789abcdef", file("never.vdi")]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("no medium '01234567-89ab-cdef-0123-456789abcdef' is registered");
    expect(existsSync(file("never.vdi"))).toBe(false);
    expect(registry()).toEqual(before);
    expect(vstor(["clonemedium", raw]).status).toBe(2);
    expect(vstor(["clonemedium", "dvd", raw, file("x.iso")]).status).toBe(2);
  });
});

describe("vstor showmediuminfo for CD/DVD images", () => {
  it("shows an ISO's volume ID (with dvd, or found by content), and refuses a non-ISO as dvd", () => {
    writeFileSync(file("iso-src.txt"), "hello\n");
    const iso = file("media.iso");
    const g = spawnSync("genisoimage", ["-quiet", "-V", "VSTOR_MEDIA_TEST", "-o", iso, file("iso-src.txt")]);
    expect(g.status, String(g.stderr)).toBe(0);
    const shown = vstorJson<{ format: string; volumeId: string; readOnly: boolean; size: number }>("showmediuminfo", "dvd", iso);
    expect(shown).toMatchObject({ format: "ISO", volumeId: "VSTOR_MEDIA_TEST", readOnly: true });
    expect(shown.size).toBe(statSync(iso).size);
    expect(vstor(["showmediuminfo", iso]).stdout).toMatch(/Volume ID:\s+VSTOR_MEDIA_TEST/);
    const notIso = file("not-an-iso.raw");
    writeFileSync(notIso, new Uint8Array(64 * 1024));
    const r = vstor(["showmediuminfo", "dvd", notIso]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("no ISO 9660 volume descriptor");
  });
});
