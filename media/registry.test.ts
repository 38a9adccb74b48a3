import { mkdtempSync, writeFileSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MediumError } from "./block.js";
import { MediaRegistry } from "./registry.js";

const U1 = "11111111-2222-3333-4444-555555555555";
const U2 = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

function setup() {
  const dir = mkdtempSync(join(tmpdir(), "vstor-reg-"));
  const a = join(dir, "a.vdi");
  const b = join(dir, "b.vdi");
  writeFileSync(a, "");
  writeFileSync(b, "");
  return { dir, a, b, reg: new MediaRegistry(join(dir, "home")) };
}

describe("media registry", () => {
  it("finds media by UUID and by location, across instances (persisted)", () => {
    const { dir, a, reg } = setup();
    reg.register({ uuid: U1.toUpperCase(), location: a, format: "VDI", deviceType: "hdd" });
    const again = new MediaRegistry(join(dir, "home"));
    expect(again.findByUuid(U1)?.location).toBe(a);
    expect(again.findByLocation(a)?.uuid).toBe(U1);
    expect(again.find(U1)).toEqual(again.find(a));
  });

  it("refuses a second file carrying a known UUID, naming both files", () => {
    const { a, b, reg } = setup();
    reg.register({ uuid: U1, location: a, format: "VDI", deviceType: "hdd" });
    let err: unknown;
    try {
      reg.register({ uuid: U1, location: b, format: "VDI", deviceType: "hdd" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MediumError);
    expect((err as MediumError).kind).toBe("duplicate-uuid");
    expect((err as MediumError).message).toContain(a);
    expect((err as MediumError).message).toContain(b);
    expect(reg.findByUuid(U1)?.location).toBe(a);
  });

  it("treats a symlink to the same file as the same location", () => {
    const { dir, a, reg } = setup();
    const link = join(dir, "link.vdi");
    symlinkSync(a, link);
    reg.register({ uuid: U1, location: a, format: "VDI", deviceType: "hdd" });
    expect(() => reg.checkIdentity(U1, link)).not.toThrow();
  });

  it("finds children by parent UUID and refuses to forget a parent that has some", () => {
    const { a, b, reg } = setup();
    reg.register({ uuid: U1, location: a, format: "VDI", deviceType: "hdd" });
    reg.register({ uuid: U2, location: b, format: "VDI", deviceType: "hdd", parentUuid: U1 });
    expect(reg.children(U1).map((m) => m.uuid)).toEqual([U2]);
    expect(() => reg.unregister(U1)).toThrow(/differencing children/);
    reg.unregister(U2);
    reg.unregister(U1);
    expect(reg.list()).toEqual([]);
  });
});
