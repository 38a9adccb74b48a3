/**
 * Golden images from independent, test-side generators (media/testing/golden/*.ts), for on-disk
 * layouts qemu-img cannot make. Each is written to a temp dir, identified by detectFormat, opened
 * read-only through the public format table (chains through ImageChain, as the other chain tests
 * do), and every byte of the virtual disk must equal what the generator says it holds. Where
 * qemu-img reads the layout, `qemu-img compare` must agree with the generator too, which checks
 * the generator against a peer that shares none of our code.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { BlockBackend } from "../../block.js";
import { ImageChain } from "../../chain.js";
import { asLayer, detectFormat, fileChecker, FORMATS, parentFileOf, type MediumFormat } from "../../formats.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { dataOutsideExtents, firstDifference, hasQemuImg, qemuCompare, readAll, writeFiles } from "./harness.js";
import { extScenario, legacyScenario, type ParallelsScenario } from "./parallels.js";
import { vdiDiffScenario } from "./vdi-diff.js";
import { vhdDiffScenario } from "./vhd-diff.js";
import { streamScenario } from "./vmdk-stream.js";

const opener = new NodeFileOpener();
let root = "";
let serial = 0;

beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "vstor-golden-"));
});
afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

function freshDir(): string {
  return fs.mkdtempSync(path.join(root, `${serial++}-`));
}

/** Detect, open read-only, and return the medium (the caller closes it). */
async function openAs(p: string, format: MediumFormat): Promise<BlockBackend> {
  expect(await detectFormat(opener, p)).toBe(format);
  const img = await FORMATS[format].open(opener, p, { readOnly: true });
  expect(img.readOnly).toBe(true);
  return img;
}

/** Every byte, in even and in ragged request sizes; plus the allocation map covers the data. */
async function expectContent(b: BlockBackend, expected: Uint8Array): Promise<void> {
  expect(b.size).toBe(expected.length);
  expect(firstDifference(await readAll(b), expected)).toBeNull();
  expect(firstDifference(await readAll(b, [1, 7, 129, 64, 3, 1000, 255]), expected)).toBeNull();
  expect(dataOutsideExtents(expected, await b.allocatedExtents())).toEqual([]);
}

function expectQemuAgrees(image: string, qemuFormat: string, expected: Uint8Array): void {
  const r = qemuCompare(image, qemuFormat, expected);
  expect(r.out).toMatch(/Images are identical/);
  expect(r.status).toBe(0);
}

/** Open a child over its parent as one read-only chain (both detected and opened by content). */
async function openChain(childPath: string, parentPath: string, format: MediumFormat): Promise<ImageChain> {
  const child = asLayer(await openAs(childPath, format));
  const parent = asLayer(await openAs(parentPath, format));
  expect(child && parent).toBeTruthy();
  expect(await FORMATS[format].variantOf(child!)).toBe("Diff");
  expect(await FORMATS[format].variantOf(parent!)).toBe("Standard");
  return new ImageChain([child!, parent!], { readOnly: true });
}

/**
 * The format's own read-only checker (where it has one) finds nothing wrong. `leakAllowed`: the
 * bytes it may call leaked although the format uses them (see the Parallels format extension).
 */
async function expectCleanCheck(p: string, format: MediumFormat, leakAllowed = 0): Promise<void> {
  const check = fileChecker(format);
  if (!check) return;
  const file = await opener.open(p, { readOnly: true });
  try {
    const r = await check(file);
    expect(r.errors).toEqual([]);
    expect(r.leakedBytes).toBe(leakAllowed);
    if (!leakAllowed) expect(r.warnings).toEqual([]);
  } finally {
    await file.close();
  }
}

describe("golden streamOptimized VMDK (grain directory at the end, markers, footer)", () => {
  const cases = [
    ["whole", "a whole last grain, as VMware writes it"],
    ["short", "a partial last grain that inflates to the bytes inside the disk (qemu reads it)"],
  ] as const;
  for (const [last, what] of cases) {
    it(`reads every byte: ${what}`, async () => {
      const g = streamScenario(`stream-${last}.vmdk`, last);
      // The layout is what the scenario promises: a GT boundary crossed, a table left out.
      expect(g.layout.gd.map((e) => e !== 0)).toEqual([true, true, false, true]);
      const [file] = writeFiles(freshDir(), g.files);
      const img = await openAs(file!, "VMDK");
      try {
        expect(await FORMATS.VMDK.variantOf(img)).toBe("Stream");
        await expectContent(img, g.expected);
      } finally {
        await img.close();
      }
    });
  }

  // VirtualBox rounds the header capacity up to a whole grain and keeps the exact size in the
  // descriptor: the descriptor's size is the disk's.
  it("reads every byte: a partial last grain padded to a whole one, as VirtualBox writes it", async () => {
    const g = streamScenario("stream-padded.vmdk", "padded");
    const [file] = writeFiles(freshDir(), g.files);
    const img = await openAs(file!, "VMDK");
    try {
      await expectContent(img, g.expected);
    } finally {
      await img.close();
    }
  });

  for (const last of ["whole", "padded", "short"] as const) {
    it.skipIf(!hasQemuImg)(`qemu-img reads the generator's image the same (${last} last grain)`, () => {
      const g = streamScenario(`stream-q-${last}.vmdk`, last);
      const [file] = writeFiles(freshDir(), g.files);
      expectQemuAgrees(file!, "vmdk", g.expected);
    });
  }
});

describe("golden differencing VHD over a golden dynamic VHD", () => {
  const make = (dir: string) =>
    vhdDiffScenario({ parentName: "base.vhd", parentPath: path.join(dir, "base.vhd"), relativeParentPath: "./base.vhd", childName: "child.vhd" });

  it("reads the parent alone, and the chain sector by sector through the child's bitmaps", async () => {
    const dir = freshDir();
    const g = make(dir);
    const [parentPath] = writeFiles(dir, g.parent.files);
    const [childPath] = writeFiles(dir, g.child.files);
    const parent = await openAs(parentPath!, "VHD");
    try {
      await expectContent(parent, g.parent.expected);
    } finally {
      await parent.close();
    }
    const chain = await openChain(childPath!, parentPath!, "VHD");
    try {
      // Linked by the parent's unique id and footer timestamp; found by the UTF-16BE name.
      expect(chain.parentModified).toEqual([]);
      expect(parentFileOf(chain.top)).toBe(parentPath);
      await expectContent(chain, g.child.expected);
    } finally {
      await chain.close();
    }
    await expectCleanCheck(parentPath!, "VHD");
    await expectCleanCheck(childPath!, "VHD");
  });

  // qemu reads VHD but not differencing ones: it takes a child for a dynamic image and ignores
  // the bitmaps. So it checks the parent, and the child's footer/header/BAT/block placement.
  it.skipIf(!hasQemuImg)("qemu-img reads the generator's parent, and the child as a dynamic image, the same", () => {
    const dir = freshDir();
    const g = make(dir);
    const [parentPath] = writeFiles(dir, g.parent.files);
    const [childPath] = writeFiles(dir, g.child.files);
    expectQemuAgrees(parentPath!, "vpc", g.parent.expected);
    expectQemuAgrees(childPath!, "vpc", g.childAsDynamic);
  });
});

describe("golden differencing VDI over a golden dynamic VDI", () => {
  it("reads the parent alone, and the chain: blocks from the child, from the parent, and zero-marked", async () => {
    const dir = freshDir();
    const g = vdiDiffScenario({ parentName: "base.vdi", childName: "child.vdi" });
    const [parentPath] = writeFiles(dir, g.parent.files);
    const [childPath] = writeFiles(dir, g.child.files);
    const parent = await openAs(parentPath!, "VDI");
    try {
      await expectContent(parent, g.parent.expected);
    } finally {
      await parent.close();
    }
    const chain = await openChain(childPath!, parentPath!, "VDI");
    try {
      // uuidLinkage = the parent's uuidCreate, uuidParentModify = its uuidModify.
      expect(chain.parentModified).toEqual([]);
      expect(chain.top.parentUuid).toBe(chain.layers[1]!.uuid);
      await expectContent(chain, g.child.expected);
      // Block 2: zero in the child although the parent has data there.
      const block2 = new Uint8Array(1 << 20);
      await chain.read(2 << 20, block2);
      expect(block2.every((b) => b === 0)).toBe(true);
      expect(g.parent.expected.subarray(2 << 20, 3 << 20).some((b) => b !== 0)).toBe(true);
    } finally {
      await chain.close();
    }
  });

  // qemu refuses VDI differencing images (non-null link UUID), so only the parent is compared.
  it.skipIf(!hasQemuImg)("qemu-img reads the generator's parent the same", () => {
    const dir = freshDir();
    const g = vdiDiffScenario({ parentName: "base.vdi", childName: "child.vdi" });
    const [parentPath] = writeFiles(dir, g.parent.files);
    expectQemuAgrees(parentPath!, "vdi", g.parent.expected);
  });
});

describe("golden Parallels HDD v2 (dynamic)", () => {
  // The format extension cluster is in use (docs/interop/parallels.txt: clusters "allocated by
  // ext_off"), but our checker, like qemu-img 7.2's, counts it as leaked: tolerated here, and
  // reported as a checker bug.
  const cases: [string, () => ParallelsScenario, number][] = [
    ['"WithoutFreeSpace", 63-sector clusters, BAT in sectors, data_off 0 (VirtualBox)', () => legacyScenario("legacy.hdd"), 0],
    ['"WithouFreSpacExt", 256 KiB clusters, BAT in clusters, no format extension', () => extScenario("ext.hdd", false), 0],
    ['"WithouFreSpacExt", 256 KiB clusters, BAT in clusters, with a format extension cluster', () => extScenario("ext-fe.hdd", true), 256 * 1024],
  ];
  for (const [what, make, leakAllowed] of cases) {
    it(`reads every byte: ${what}`, async () => {
      const g = make();
      const [file] = writeFiles(freshDir(), g.files);
      const img = await openAs(file!, "HDD");
      try {
        expect(await FORMATS.HDD.variantOf(img)).toBe("Standard");
        await expectContent(img, g.expected);
      } finally {
        await img.close();
      }
      await expectCleanCheck(file!, "HDD", leakAllowed);
    });

    it.skipIf(!hasQemuImg)(`qemu-img reads the generator's image the same: ${what}`, () => {
      const g = make();
      const [file] = writeFiles(freshDir(), g.files);
      expectQemuAgrees(file!, "parallels", g.expected);
    });
  }
});
