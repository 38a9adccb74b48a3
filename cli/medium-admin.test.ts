/**
 * Medium administration end to end, as a user runs it (`node dist/vstor.mjs`, built beforehand by
 * `node build.mjs`, with VSTOR_HOME in a temporary folder): modifymedium --type / --autoreset /
 * --description / --move / --setuuid / --setparentuuid / --release, mediumproperty, the media
 * trees of list hdds / list dvds, and closemedium's in-use refusal. qemu-img judges what it can
 * read (VMDK and qcow2 chains after a move, VDI and VMDK headers after a new UUID). A machine
 * "runs" for these tests when a control server answers in its folder, as a real VM's does.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cliPath, cliSandbox } from "./testing/cli-sandbox.js";
import { ControlServer } from "../machine/control-channel.js";
import { VmStore } from "../machine/vm-store.js";
import { uuidFromGuidBytes } from "../media/formats/uuid.js";

const sandbox = cliSandbox("medium-admin", 60_000);
const { work, home, env, file, vstor, ok, json } = sandbox;
const cli = cliPath;
const hasQemu = spawnSync("qemu-img", ["--version"]).status === 0 && spawnSync("qemu-io", ["--version"]).status === 0;
const itq = hasQemu ? it : it.skip;
const T = 120_000;
afterAll(() => sandbox.cleanup());

const refused = sandbox.refused;
function qemu(tool: "qemu-img" | "qemu-io", ...args: string[]) {
  const r = spawnSync(tool, args, { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}
function qemuOk(tool: "qemu-img" | "qemu-io", ...args: string[]): string {
  const r = qemu(tool, ...args);
  expect(r.status, r.out).toBe(0);
  return r.out;
}

interface View {
  uuid: string;
  parentUuid?: string;
  location: string;
  format: string;
  deviceType: string;
  state: string;
  type: string;
  autoReset: boolean;
  description: string;
  properties: Record<string, string>;
  children: string[];
  usedBy: { vm: string; vmUuid: string; snapshot?: { uuid: string; name: string } }[];
  size?: number;
  variant?: string;
}

const disk = (name: string, ...more: string[]) => json<View>("createmedium", "disk", "--filename", file(name), ...(more.length ? more : ["--size", "8"]));
const info = (target: string) => json<View>("showmediuminfo", target);

/** A machine with a SATA controller and these disks on ports 0, 1, ... */
function machine(name: string, ...disks: string[]): string {
  const uuid = /UUID: (\S+)/.exec(ok("createvm", "--name", name, "--register"))![1]!;
  ok("storagectl", name, "--name", "SATA", "--add", "sata", "--portcount", "4");
  disks.forEach((d, port) => ok("storageattach", name, "--storagectl", "SATA", "--port", String(port), "--type", "hdd", "--medium", d));
  return uuid;
}

/** A snapshot of the machine's current storage, written as the snapshot verbs would. */
function snapshot(name: string, snapName: string): string {
  const store = new VmStore(home);
  const vm = store.get(name);
  const uuid = "5a5a5a5a-0000-4000-8000-" + String(Date.now() % 1e12).padStart(12, "0");
  vm.snapshot = { uuid, name: snapName, takenAt: new Date().toISOString(), memoryMiB: vm.memoryMiB, storageControllers: structuredClone(vm.storageControllers), children: [] };
  vm.currentSnapshot = uuid;
  store.save(vm);
  return uuid;
}

/** Make a machine look running (its control socket answers) while `fn` runs. */
async function whileRunning(name: string, fn: () => void): Promise<void> {
  const store = new VmStore(home);
  const vm = store.get(name);
  const server = await ControlServer.listen(store.machineDir(name), vm.uuid, () => ({ ok: true }));
  try {
    fn();
  } finally {
    server.close();
  }
}

function makeIso(name: string, label: string): string {
  writeFileSync(file(`${name}.txt`), "hello\n");
  const g = spawnSync("genisoimage", ["-quiet", "-V", label, "-o", file(name), file(`${name}.txt`)]);
  expect(g.status, String(g.stderr)).toBe(0);
  return file(name);
}

describe("modifymedium --type, --autoreset, --description and mediumproperty", () => {
  itq("types follow VirtualBox's rules; differencing images show their base's type and auto-reset", () => {
    const base = disk("t-base.vdi");
    const kid = json<View>("createmedium", "disk", "--filename", file("t-kid.vdi"), "--diffparent", base.uuid);
    expect(info(base.uuid)).toMatchObject({ type: "normal", children: [kid.uuid] });
    expect(ok("showmediuminfo", base.uuid)).toContain("Type:           normal (base)");

    expect(ok("modifymedium", base.uuid, "--type", "immutable")).toBe("Type set to immutable.\n");
    expect(info(kid.uuid)).toMatchObject({ type: "immutable", autoReset: true });
    const text = ok("showmediuminfo", kid.uuid);
    expect(text).toContain("Type:           immutable (differencing)");
    expect(text).toContain("Auto-Reset:     on");

    expect(refused("modifymedium", kid.uuid, "--type", "normal")).toContain("it is a differencing image");
    expect(refused("modifymedium", base.uuid, "--type", "writethrough")).toContain("1 differencing child");
    expect(refused("modifymedium", base.uuid, "--type", "readonly")).toMatch(/differencing child|readonly is for DVD/);
    const dyn = disk("t-dyn.vdi");
    expect(refused("modifymedium", dyn.uuid, "--type", "shareable")).toContain("only fixed-size images can be shareable");
    const fixed = disk("t-fixed.vdi", "--size", "4", "--variant", "Fixed");
    ok("modifymedium", fixed.uuid, "--type", "shareable");
    expect(info(fixed.uuid).type).toBe("shareable");
    ok("modifymedium", file("t-fixed.vdi"), "--type", "normal");
    expect(vstor("modifymedium", dyn.uuid, "--type", "bogus").status).toBe(2);

    // Attached to a machine: indirect types are refused, writethrough is fine.
    machine("typevm", file("t-dyn.vdi"));
    expect(refused("modifymedium", dyn.uuid, "--type", "immutable")).toContain("attached to 1 virtual machine");
    ok("modifymedium", dyn.uuid, "--type", "writethrough");
    expect(json<View[]>("list", "hdds").find((m) => m.uuid === dyn.uuid)?.type).toBe("writethrough");
  }, T);

  itq("--autoreset: on an immutable base or a differencing image, refused on a normal base; --description", () => {
    const base = disk("a-base.vdi");
    const kid = json<View>("createmedium", "disk", "--filename", file("a-kid.vdi"), "--diffparent", base.uuid);
    expect(refused("modifymedium", base.uuid, "--autoreset", "off")).toContain("--autoreset applies to immutable media");
    ok("modifymedium", base.uuid, "--type", "immutable", "--autoreset", "off");
    expect(info(kid.uuid).autoReset).toBe(false);
    expect(ok("showmediuminfo", kid.uuid)).toContain("Auto-Reset:     off");
    ok("modifymedium", kid.uuid, "--autoreset", "on"); // the image's own setting wins
    expect(info(kid.uuid).autoReset).toBe(true);
    expect(vstor("modifymedium", kid.uuid, "--autoreset", "maybe").status).toBe(2);

    const r = json<{ description: string }>("modifymedium", base.uuid, "--description", "golden image");
    expect(r.description).toBe("golden image");
    expect(info(base.uuid).description).toBe("golden image");
    expect(ok("showmediuminfo", base.uuid)).toContain("Description:    golden image");
    ok("modifymedium", base.uuid, "--description", "");
    expect(info(base.uuid).description).toBe("");
  }, T);

  it("mediumproperty set, get and delete", () => {
    const d = disk("p.raw", "--size", "1", "--format", "RAW");
    expect(ok("mediumproperty", "disk", "set", d.uuid, "Owner", "ops team")).toBe("Property 'Owner' set.\n");
    ok("mediumproperty", "set", file("p.raw"), "tier", "gold");
    expect(ok("mediumproperty", "get", d.uuid, "Owner")).toBe("Value: ops team\n");
    expect(info(d.uuid).properties).toEqual({ Owner: "ops team", tier: "gold" });
    expect(ok("showmediuminfo", d.uuid)).toContain("Property:       Owner=ops team");
    ok("mediumproperty", "delete", d.uuid, "Owner");
    expect(refused("mediumproperty", "get", d.uuid, "Owner")).toContain("property 'Owner' is not set");
    expect(vstor("mediumproperty", "get", d.uuid).status).toBe(2);
    // Registering again keeps what the user set.
    ok("showmediuminfo", file("p.raw"));
    expect(info(d.uuid).properties).toEqual({ tier: "gold" });
  });
});

describe("modifymedium --move", () => {
  itq("moves a VMDK parent; the child's parentFileNameHint follows and qemu still reads the chain", () => {
    const base = disk("m-base.vmdk", "--size", "8", "--format", "VMDK");
    qemuOk("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 3M", file("m-base.vmdk"));
    const kid = json<View>("createmedium", "disk", "--filename", file("m-kid.vmdk"), "--diffparent", base.uuid);
    qemuOk("qemu-io", "-f", "vmdk", "-c", "write -P 0x22 1M 1M", file("m-kid.vmdk"));
    qemuOk("qemu-img", "convert", "-f", "vmdk", "-O", "raw", file("m-kid.vmdk"), file("m-expected.raw"));

    mkdirSync(file("vault"));
    expect(ok("modifymedium", base.uuid, "--move", file("vault"))).toBe(`Moved ${file("m-base.vmdk")} to ${file("vault/m-base.vmdk")}.\n`);
    expect(existsSync(file("m-base.vmdk"))).toBe(false);
    expect(info(base.uuid).location).toBe(file("vault/m-base.vmdk"));
    expect(readFileSync(file("m-kid.vmdk")).toString("latin1")).toContain(`parentFileNameHint="${file("vault/m-base.vmdk")}"`);
    const chain = JSON.parse(qemuOk("qemu-img", "info", "--backing-chain", "--output=json", file("m-kid.vmdk"))) as { filename: string }[];
    expect(chain.map((c) => c.filename)).toEqual([file("m-kid.vmdk"), file("vault/m-base.vmdk")]);
    expect(qemuOk("qemu-img", "compare", "-f", "raw", "-F", "vmdk", file("m-expected.raw"), file("m-kid.vmdk"))).toContain("Images are identical");
    expect(ok("checkmedium", kid.uuid)).toContain("No errors were found");
    qemuOk("qemu-img", "check", "-f", "vmdk", file("vault/m-base.vmdk"));
  }, T);

  itq("moves a VDI parent of a qcow2 child (backing file rewritten), then the child itself", () => {
    const base = disk("q-base.vdi");
    qemuOk("qemu-io", "-f", "vdi", "-c", "write -P 0x33 2M 2M", file("q-base.vdi"));
    const kid = json<View>("createmedium", "disk", "--filename", file("q-kid.qcow2"), "--diffparent", base.uuid, "--format", "QCOW2");
    qemuOk("qemu-io", "-f", "qcow2", "-c", "write -P 0x44 3M 64k", file("q-kid.qcow2"));
    qemuOk("qemu-img", "convert", "-f", "qcow2", "-O", "raw", file("q-kid.qcow2"), file("q-expected.raw"));

    mkdirSync(file("shelf"));
    ok("modifymedium", "disk", file("q-base.vdi"), "--move", file("shelf/renamed.vdi"));
    let chain = JSON.parse(qemuOk("qemu-img", "info", "--backing-chain", "--output=json", file("q-kid.qcow2"))) as { filename: string; format: string }[];
    expect(chain.map((c) => [c.filename, c.format])).toEqual([[file("q-kid.qcow2"), "qcow2"], [file("shelf/renamed.vdi"), "vdi"]]);
    expect(qemuOk("qemu-img", "compare", "-f", "raw", "-F", "qcow2", file("q-expected.raw"), file("q-kid.qcow2"))).toContain("Images are identical");

    // The child moves next to its parent: the backing name becomes the bare file name.
    const j = json<{ location: string; movedFrom: string }>("modifymedium", kid.uuid, "--move", file("shelf"));
    expect(j).toEqual({ uuid: kid.uuid, location: file("shelf/q-kid.qcow2"), movedFrom: file("q-kid.qcow2") });
    chain = JSON.parse(qemuOk("qemu-img", "info", "--backing-chain", "--output=json", file("shelf/q-kid.qcow2"))) as { filename: string; format: string }[];
    expect(chain[1]!.filename).toBe(file("shelf/renamed.vdi"));
    expect(JSON.parse(qemuOk("qemu-img", "info", "--output=json", file("shelf/q-kid.qcow2")))["backing-filename"]).toBe("renamed.vdi");
    expect(qemuOk("qemu-img", "compare", "-f", "raw", "-F", "qcow2", file("q-expected.raw"), file("shelf/q-kid.qcow2"))).toContain("Images are identical");
    qemuOk("qemu-img", "check", "-f", "qcow2", file("shelf/q-kid.qcow2"));
    expect(ok("checkmedium", kid.uuid)).toContain("No errors were found");
  }, T);

  itq("a split VMDK moves with its extent files; a VHD child's parent name and locators follow its parent", () => {
    const split = disk("s.vmdk", "--size", "8", "--format", "VMDK", "--variant", "Split2G");
    expect(existsSync(file("s-s001.vmdk"))).toBe(true);
    qemuOk("qemu-io", "-f", "vmdk", "-c", "write -P 0x55 1M 1M", file("s.vmdk"));
    qemuOk("qemu-img", "convert", "-f", "vmdk", "-O", "raw", file("s.vmdk"), file("s-expected.raw"));
    mkdirSync(file("split-dir"));
    ok("modifymedium", split.uuid, "--move", file("split-dir/s-renamed.vmdk"));
    expect(existsSync(file("s.vmdk")) || existsSync(file("s-s001.vmdk"))).toBe(false);
    expect(existsSync(file("split-dir/s-s001.vmdk"))).toBe(true); // the extent keeps its name
    expect(qemuOk("qemu-img", "compare", "-f", "raw", "-F", "vmdk", file("s-expected.raw"), file("split-dir/s-renamed.vmdk"))).toContain("Images are identical");
    qemuOk("qemu-img", "check", "-f", "vmdk", file("split-dir/s-renamed.vmdk"));

    const vbase = disk("v-base.vhd", "--size", "8", "--format", "VHD");
    const vkid = json<View>("createmedium", "disk", "--filename", file("v-kid.vhd"), "--diffparent", vbase.uuid);
    mkdirSync(file("vhd-dir"));
    ok("modifymedium", vbase.uuid, "--move", file("vhd-dir/v-parent.vhd"));
    const bytes = readFileSync(file("v-kid.vhd"));
    expect(bytes.includes(Buffer.from(file("vhd-dir/v-parent.vhd"), "utf16le"))).toBe(true); // the W2ku locator
    expect(bytes.includes(Buffer.from("v-parent.vhd", "utf16le").swap16())).toBe(true); // the header's parent name (UTF-16BE)
    const check = json<{ corrupt: boolean; chain: { location: string }[] }>("checkmedium", vkid.uuid);
    expect(check).toMatchObject({ corrupt: false, chain: [{ location: file("vhd-dir/v-parent.vhd") }] });
  }, T);

  itq("refused while a machine using it (or a child of it) runs; an existing target is refused", async () => {
    const base = disk("r-base.vdi");
    const kid = json<View>("createmedium", "disk", "--filename", file("r-kid.vdi"), "--diffparent", base.uuid);
    machine("mover", file("r-kid.vdi"));
    await whileRunning("mover", () => {
      expect(refused("modifymedium", base.uuid, "--move", file("r-elsewhere.vdi"))).toContain("machine 'mover' is running");
      expect(refused("modifymedium", kid.uuid, "--setuuid")).toContain("machine 'mover' is running");
    });
    expect(existsSync(file("r-base.vdi"))).toBe(true);
    writeFileSync(file("in-the-way.vdi"), "x");
    expect(refused("modifymedium", base.uuid, "--move", file("in-the-way.vdi"))).toContain("the file exists");
    ok("modifymedium", base.uuid, "--move", file("r-elsewhere.vdi")); // powered off: fine
    expect(ok("checkmedium", kid.uuid)).toContain("No errors were found"); // VDI children link by UUID
  }, T);
});

describe("modifymedium --setuuid and --setparentuuid", () => {
  const vdiUuid = (p: string, at = 0x188) => uuidFromGuidBytes(readFileSync(p), at);

  itq("VDI: the header's UUIDs change, children and machines follow, qemu-img check stays clean", () => {
    const base = disk("u-base.vdi");
    const kid = json<View>("createmedium", "disk", "--filename", file("u-kid.vdi"), "--diffparent", base.uuid);
    const vmUuid = machine("uuidvm", file("u-kid.vdi"));
    const other = disk("u-other.vdi");
    const NEW = "01234567-89ab-4def-8123-456789abcdef";

    expect(refused("modifymedium", base.uuid, "--setuuid", other.uuid)).toContain(`UUID {${other.uuid}} is already registered for ${file("u-other.vdi")}`);
    expect(ok("modifymedium", base.uuid, "--setuuid", NEW.toUpperCase())).toBe(`UUID changed to: ${NEW}\n`);
    expect(vdiUuid(file("u-base.vdi"))).toBe(NEW);
    expect(vdiUuid(file("u-kid.vdi"), 0x1a8)).toBe(NEW); // the child's parent UUID
    qemuOk("qemu-img", "check", "-f", "vdi", file("u-base.vdi"));
    expect(info(NEW)).toMatchObject({ location: file("u-base.vdi"), children: [kid.uuid] });
    expect(info(kid.uuid).parentUuid).toBe(NEW);
    expect(ok("checkmedium", kid.uuid)).toContain("No errors were found");

    const r = json<{ uuid: string }>("modifymedium", kid.uuid, "--setuuid");
    expect(r.uuid).toMatch(/^[0-9a-f-]{36}$/);
    expect(r.uuid).not.toBe(kid.uuid);
    expect(vdiUuid(file("u-kid.vdi"))).toBe(r.uuid);
    const vm = new VmStore(home).get(vmUuid);
    expect(vm.storageControllers[0]!.attachments[0]!.medium).toBe(r.uuid); // the machine follows

    // --setparentuuid: the repair of a child pointing at the wrong parent.
    const p2 = disk("u-p2.vdi");
    ok("modifymedium", r.uuid, "--setparentuuid", p2.uuid);
    expect(vdiUuid(file("u-kid.vdi"), 0x1a8)).toBe(p2.uuid);
    expect(info(r.uuid).parentUuid).toBe(p2.uuid);
    expect(refused("modifymedium", NEW, "--setparentuuid", p2.uuid)).toContain("not a differencing image");
  }, T);

  itq("an unregistered copy refused as a duplicate is repaired with a random UUID and registered", () => {
    const orig = disk("c-orig.vdi");
    copyFileSync(file("c-orig.vdi"), file("c-copy.vdi"));
    expect(refused("showmediuminfo", file("c-copy.vdi"))).toContain("already registered");
    const r = json<{ uuid: string; location: string }>("modifymedium", file("c-copy.vdi"), "--setuuid", "");
    expect(r.uuid).not.toBe(orig.uuid);
    expect(r.location).toBe(file("c-copy.vdi"));
    expect(vdiUuid(file("c-copy.vdi"))).toBe(r.uuid);
    expect(info(file("c-copy.vdi")).uuid).toBe(r.uuid);
    qemuOk("qemu-img", "check", "-f", "vdi", file("c-copy.vdi"));
  }, T);

  itq("VMDK and VHD store the new UUIDs in the image (checksums right); qcow2 only in the registry", () => {
    const NEW = "feedface-0000-4000-8000-00000000beef";
    const vbase = disk("i-base.vmdk", "--size", "8", "--format", "VMDK");
    const vkid = json<View>("createmedium", "disk", "--filename", file("i-kid.vmdk"), "--diffparent", vbase.uuid);
    ok("modifymedium", vbase.uuid, "--setuuid", NEW);
    const text = (p: string) => readFileSync(p).toString("latin1");
    const ddb = (key: string, uuid: string) => new RegExp(`ddb\\.uuid\\.${key} ?= ?"${uuid}"`);
    expect(text(file("i-base.vmdk"))).toMatch(ddb("image", NEW));
    expect(text(file("i-kid.vmdk"))).toMatch(ddb("parent", NEW));
    qemuOk("qemu-img", "check", "-f", "vmdk", file("i-base.vmdk"));
    qemuOk("qemu-img", "check", "-f", "vmdk", file("i-kid.vmdk"));
    expect(ok("checkmedium", vkid.uuid)).toContain("No errors were found");
    const P = "0badc0de-0000-4000-8000-000000000001";
    ok("modifymedium", vkid.uuid, "--setparentuuid", P);
    expect(text(file("i-kid.vmdk"))).toMatch(ddb("parent", P));
    expect(info(vkid.uuid).parentUuid).toBe(P);

    const hbase = disk("h-base.vhd", "--size", "8", "--format", "VHD");
    const hkid = json<View>("createmedium", "disk", "--filename", file("h-kid.vhd"), "--diffparent", hbase.uuid);
    const H = "c0ffee00-1111-4222-8333-444455556666";
    ok("modifymedium", hbase.uuid, "--setuuid", H);
    const b = readFileSync(file("h-base.vhd"));
    expect(uuidFromGuidBytes(b, b.length - 512 + 68)).toBe(H); // the footer
    expect(uuidFromGuidBytes(b, 68)).toBe(H); // its copy at offset 0
    expect(json<{ corrupt: boolean }>("checkmedium", H).corrupt).toBe(false); // checksums verified
    expect(json<{ corrupt: boolean }>("checkmedium", hkid.uuid).corrupt).toBe(false); // the child follows
    expect(JSON.parse(qemuOk("qemu-img", "info", "--output=json", file("h-base.vhd"))).format).toBe("vpc"); // qemu accepts the footer

    const q = disk("n.qcow2", "--size", "8", "--format", "QCOW2");
    const before = readFileSync(file("n.qcow2"));
    const r = json<{ uuid: string }>("modifymedium", q.uuid, "--setuuid");
    expect(readFileSync(file("n.qcow2")).equals(before)).toBe(true);
    expect(info(file("n.qcow2")).uuid).toBe(r.uuid);
  }, T);
});

describe("machines and media: list hdds / dvds, closemedium, --release", () => {
  itq("list hdds shows trees with types and the machines and snapshots using them", () => {
    const base = disk("l-base.vdi");
    const kid = json<View>("createmedium", "disk", "--filename", file("l-kid.vdi"), "--diffparent", base.uuid);
    const grand = json<View>("createmedium", "disk", "--filename", file("l-grand.vdi"), "--diffparent", kid.uuid);
    const vmUuid = machine("lister", file("l-grand.vdi"));
    const snapUuid = snapshot("lister", "Before update");

    const all = json<View[]>("list", "hdds");
    const at = (u: string) => all.findIndex((m) => m.uuid === u);
    expect(at(base.uuid)).toBeLessThan(at(kid.uuid));
    expect(at(kid.uuid) + 1).toBe(at(grand.uuid));
    expect(all[at(grand.uuid)]).toMatchObject({
      parentUuid: kid.uuid,
      type: "normal",
      deviceType: "hdd",
      state: "created",
      format: "VDI",
      variant: "Diff",
      children: [],
      description: "",
      properties: {},
      usedBy: [
        { vm: "lister", vmUuid },
        { vm: "lister", vmUuid, snapshot: { uuid: snapUuid, name: "Before update" } },
      ],
    });
    const text = ok("list", "hdds");
    expect(text).toContain(`UUID:           ${base.uuid}\nParent UUID:    base\nState:          created\nType:           normal (base)\n`);
    expect(text).toContain(`\n    UUID:           ${grand.uuid}\n    Parent UUID:    ${kid.uuid}\n`);
    expect(text).toContain(`    In use by VMs:  lister (UUID: ${vmUuid}) [Before update (UUID: ${snapUuid})]\n`);
    expect(ok("showmediuminfo", grand.uuid)).toContain(`In use by VMs:  lister (UUID: ${vmUuid}) [Before update (UUID: ${snapUuid})]`);

    // A file that went away is listed as inaccessible, not an error.
    const gone = disk("l-gone.raw", "--size", "1", "--format", "RAW");
    rmSync(file("l-gone.raw"));
    expect(json<View[]>("list", "hdds").find((m) => m.uuid === gone.uuid)?.state).toBe("inaccessible");
    ok("closemedium", gone.uuid);
  }, T);

  itq("closemedium refuses a medium in use (naming machines and snapshots); --release detaches it", async () => {
    const d = disk("x-disk.vdi");
    const vmUuid = machine("holder", file("x-disk.vdi"));
    let err = refused("closemedium", "disk", d.uuid);
    expect(err).toContain(`holder (UUID: ${vmUuid})`);
    expect(err).toContain("in use by VMs");

    await whileRunning("holder", () => expect(refused("modifymedium", d.uuid, "--release")).toContain("machine 'holder' is running"));
    const snapUuid = snapshot("holder", "Snap 1");
    err = refused("modifymedium", d.uuid, "--release");
    expect(err).toContain(`snapshots use it (holder (UUID: ${vmUuid}) [Snap 1 (UUID: ${snapUuid})])`);
    expect(refused("closemedium", d.uuid)).toContain("[Snap 1 (UUID:");

    // Without the snapshot the release goes through.
    const store = new VmStore(home);
    const vm = store.get("holder");
    delete vm.snapshot;
    delete vm.currentSnapshot;
    store.save(vm);
    expect(ok("modifymedium", d.uuid, "--release")).toBe("Released from: holder.\n");
    expect(store.get("holder").storageControllers[0]!.attachments).toEqual([]);
    expect(ok("modifymedium", d.uuid, "--release")).toBe("The medium is not attached to any machine.\n");
    ok("closemedium", d.uuid, "--delete");
    expect(existsSync(file("x-disk.vdi"))).toBe(false);
  }, T);

  it("DVD images: listed from the drives that hold them, readonly, moved and released with the machines following", () => {
    const iso = makeIso("disc.iso", "VSTOR_DVD");
    ok("createvm", "--name", "dvdvm", "--register");
    ok("storagectl", "dvdvm", "--name", "IDE", "--add", "ide");
    ok("storageattach", "dvdvm", "--storagectl", "IDE", "--port", "1", "--device", "0", "--type", "dvddrive", "--medium", iso);
    const dvds = json<View[]>("list", "dvds");
    expect(dvds).toHaveLength(1);
    expect(dvds[0]).toMatchObject({ location: iso, format: "ISO", deviceType: "dvd", type: "readonly", usedBy: [{ vm: "dvdvm" }], size: statSync(iso).size });
    expect(ok("list", "dvds")).toContain("Type:           readonly (base)");
    const uuid = dvds[0]!.uuid;
    expect(json<View[]>("list", "hdds").some((m) => m.uuid === uuid)).toBe(false);

    expect(refused("modifymedium", "dvd", uuid, "--type", "normal")).toContain("DVD media are always readonly");
    ok("mediumproperty", "dvd", "set", iso, "Label", "install disc");
    expect(ok("showmediuminfo", "dvd", uuid)).toContain("Property:       Label=install disc");
    expect(json<View>("showmediuminfo", iso).usedBy).toEqual([expect.objectContaining({ vm: "dvdvm" })]);
    expect(refused("closemedium", "dvd", uuid)).toContain("dvdvm");

    mkdirSync(file("discs"));
    ok("modifymedium", "dvd", uuid, "--move", file("discs"));
    const drive = () => new VmStore(home).get("dvdvm").storageControllers[0]!.attachments[0]!;
    expect(drive()).toMatchObject({ type: "dvddrive", image: file("discs/disc.iso") });
    expect(json<View[]>("list", "dvds")[0]).toMatchObject({ location: file("discs/disc.iso"), usedBy: [{ vm: "dvdvm" }] });

    // A DVD image's UUID is the registry's: the drives name the file, so nothing else changes.
    const D = "d0d0d0d0-1111-4222-8333-444444444444";
    expect(json<{ uuid: string }>("modifymedium", "dvd", uuid, "--setuuid", D).uuid).toBe(D);
    expect(refused("modifymedium", "dvd", D, "--setparentuuid", uuid)).toContain("a DVD image has no parent");
    expect(ok("modifymedium", "dvd", D, "--release")).toBe("Released from: dvdvm.\n");
    expect(drive().type).toBe("dvddrive"); // the drive stays, empty
    expect(drive().image).toBeUndefined();
    ok("closemedium", "dvd", D);
    expect(json<View[]>("list", "dvds")).toEqual([]);
  }, T);
});
