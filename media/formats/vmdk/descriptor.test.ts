/** The descriptor codec: round trips that keep what we do not know, typed accessors, refusals. */
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { VmdkDescriptor, looksLikeDescriptor } from "./descriptor.js";

/** As VirtualBox writes one (no spaces around "="), plus keys and comments of other tools. */
const vbox = [
  "# Disk DescriptorFile",
  "version=1",
  "CID=3f1c2a9b",
  "parentCID=ffffffff",
  "encoding=\"UTF-8\"",
  "createType=\"monolithicSparse\"",
  "",
  "# Extent description",
  "RW 2097152 SPARSE \"disk.vmdk\"",
  "",
  "# The disk Data Base",
  "#DDB",
  "",
  "ddb.virtualHWVersion=\"4\"",
  "ddb.adapterType=\"ide\"",
  "ddb.uuid.image=\"0B8F64A7-1C2D-4E5F-8A9B-0C1D2E3F4A5B\"",
  "ddb.uuid.parent=\"00000000-0000-0000-0000-000000000000\"",
  "ddb.uuid.modification=\"7e1b3c5d-2a4f-4b6c-9d8e-1f2a3b4c5d6e\"",
  "ddb.uuid.parentmodification=\"00000000-0000-0000-0000-000000000000\"",
  "ddb.geometry.cylinders=\"2080\"",
  "ddb.geometry.heads=\"16\"",
  "ddb.geometry.sectors=\"63\"",
  "# a comment someone left",
  "ddb.toolsInstallType = \"4\"",
  "ddb.longContentID = \"9c4f1e2b8a7d6c5b4a3928176e5d4c3b\"",
  "",
].join("\n");

describe("VMDK descriptor", () => {
  it("writes back exactly what it read, unknown keys and comments included", () => {
    const d = VmdkDescriptor.parse(vbox);
    expect(d.toString()).toBe(vbox);
    expect(d.cid).toBe(0x3f1c2a9b);
    expect(d.parentCid).toBeNull();
    expect(d.createType).toBe("monolithicSparse");
    expect(d.geometry).toEqual({ cylinders: 2080, heads: 16, sectors: 63 });
    expect(d.adapterType).toBe("ide");
    expect(d.uuid("image")).toBe("0b8f64a7-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
    expect(d.extents).toEqual([{ access: "RW", sectors: 2097152, type: "SPARSE", file: "disk.vmdk", offset: 0 }]);
    expect(d.get("ddb.toolsInstallType")).toBe("4");
  });

  it("changes only the lines whose values change, and adds new keys to their section", () => {
    const d = VmdkDescriptor.parse(vbox);
    d.cid = 0x1234;
    d.parentCid = 0xabcdef01;
    d.set("parentFileNameHint", "base.vmdk");
    d.set("ddb.comment", "x");
    const lines = d.toString().split("\n");
    const before = vbox.split("\n");
    expect(lines.filter((l) => !before.includes(l))).toEqual(["CID=00001234", "parentCID=abcdef01", 'parentFileNameHint="base.vmdk"', 'ddb.comment = "x"']);
    expect(lines.indexOf('parentFileNameHint="base.vmdk"')).toBeLessThan(lines.indexOf("# Extent description"));
    expect(lines.indexOf('ddb.comment = "x"')).toBeGreaterThan(lines.indexOf('ddb.longContentID = "9c4f1e2b8a7d6c5b4a3928176e5d4c3b"'));
    const again = VmdkDescriptor.parse(d.toString());
    expect(again.parentCid).toBe(0xabcdef01);
    expect(again.parentFileNameHint).toBe("base.vmdk");
    expect(again.get("ddb.toolsInstallType")).toBe("4");
  });

  it("parses every extent kind, with and without offsets, and CRLF line ends", () => {
    const text = [
      "# Disk DescriptorFile",
      "version=1",
      "CID=fffffffe",
      "parentCID=ffffffff",
      'createType="vmfs"',
      'RW 4192256 SPARSE "d-s001.vmdk"',
      'RDONLY 2048 FLAT "d-flat.vmdk" 4096',
      "NOACCESS 100 ZERO",
      'RW 8192 VMFS "d-flat.vmdk"',
      'RW 8192 VMFSSPARSE "d-delta.vmdk"',
      "",
    ].join("\r\n");
    const d = VmdkDescriptor.parse(text);
    expect(d.extents.map((e) => [e.access, e.sectors, e.type, e.file, e.offset])).toEqual([
      ["RW", 4192256, "SPARSE", "d-s001.vmdk", 0],
      ["RDONLY", 2048, "FLAT", "d-flat.vmdk", 4096],
      ["NOACCESS", 100, "ZERO", undefined, 0],
      ["RW", 8192, "VMFS", "d-flat.vmdk", 0],
      ["RW", 8192, "VMFSSPARSE", "d-delta.vmdk", 0],
    ]);
    expect(d.totalSectors).toBe(4192256 + 2048 + 100 + 8192 + 8192);
    expect(VmdkDescriptor.parse(d.toString()).extents).toEqual(d.extents);
  });

  it("replaces the extent lines in place", () => {
    const d = VmdkDescriptor.parse(vbox);
    d.extents = [
      { access: "RW", sectors: 10, type: "FLAT", file: "a.vmdk", offset: 0 },
      { access: "RW", sectors: 20, type: "FLAT", file: "b.vmdk", offset: 0 },
    ];
    const lines = d.toString().split("\n");
    expect(lines.slice(lines.indexOf("# Extent description") + 1, lines.indexOf("# Extent description") + 3)).toEqual(['RW 10 FLAT "a.vmdk" 0', 'RW 20 FLAT "b.vmdk" 0']);
  });

  it("refuses broken descriptors with typed errors", () => {
    const kind = (text: string): string => {
      try {
        VmdkDescriptor.parse(text);
        return "accepted";
      } catch (e) {
        return e instanceof MediumError ? e.kind : "other";
      }
    };
    const ok = '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 8 FLAT "f" 0\n';
    expect(kind(ok)).toBe("accepted");
    expect(kind(ok.replace("version=1\n", ""))).toBe("corrupt");
    expect(kind(ok.replace("version=1", "version=9"))).toBe("unsupported");
    expect(kind(ok.replace("CID=1", "CID=xyz"))).toBe("corrupt");
    expect(kind(ok.replace('RW 8 FLAT "f" 0\n', ""))).toBe("corrupt");
    expect(kind(ok.replace("FLAT", "WEIRD"))).toBe("unsupported");
    expect(kind(ok + "this is not a key\n")).toBe("corrupt");
    expect(kind(ok.replace("RW 8", "RW 99999999999999999999"))).toBe("corrupt");
  });

  it("is recognised by its first line", () => {
    expect(looksLikeDescriptor(new TextEncoder().encode(vbox))).toBe(true);
    expect(looksLikeDescriptor(new TextEncoder().encode("version=1\n"))).toBe(false);
  });
});
