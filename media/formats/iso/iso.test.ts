import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MediumError } from "../../block.js";
import { NodeFileOpener } from "../../io/node/node-file-io.js";
import { openIso, parsePrimaryVolumeDescriptor } from "./iso.js";

const hasGenisoimage = spawnSync("genisoimage", ["-version"]).status === 0;

describe("ISO 9660 images", () => {
  it("reads the volume ID of a primary volume descriptor and refuses other sectors", () => {
    const pvd = new Uint8Array(2048);
    pvd[0] = 1;
    pvd.set(new TextEncoder().encode("CD001"), 1);
    pvd.set(new TextEncoder().encode("MY_VOLUME".padEnd(32, " ")), 40);
    expect(parsePrimaryVolumeDescriptor(pvd).volumeId).toBe("MY_VOLUME");
    pvd[3] = 0x58;
    expect(() => parsePrimaryVolumeDescriptor(pvd)).toThrow(MediumError);
    expect(() => parsePrimaryVolumeDescriptor(new Uint8Array(100))).toThrow(/CD001/);
  });

  it.runIf(hasGenisoimage)("opens a genisoimage image read-only with 2048-byte sectors; refuses damaged ones", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vstor-iso-"));
    mkdirSync(join(dir, "src"));
    writeFileSync(join(dir, "src", "a.txt"), "some file\n");
    const iso = join(dir, "a.iso");
    expect(spawnSync("genisoimage", ["-quiet", "-V", "TESTVOL", "-o", iso, join(dir, "src")]).status).toBe(0);
    const { medium, info } = await openIso(new NodeFileOpener(), iso);
    expect(info.volumeId).toBe("TESTVOL");
    expect(medium.sectorSize).toBe(2048);
    expect(medium.readOnly).toBe(true);
    expect(medium.size).toBe(info.sectors * 2048);
    const buf = new Uint8Array(2048);
    await medium.read(16 * 2048, buf);
    expect(String.fromCharCode(...buf.subarray(1, 6))).toBe("CD001");
    await expect(medium.write(0, buf)).rejects.toMatchObject({ kind: "read-only" });
    await medium.close();

    const ragged = join(dir, "ragged.iso");
    writeFileSync(ragged, readFileSync(iso));
    truncateSync(ragged, readFileSync(iso).length - 100);
    await expect(openIso(new NodeFileOpener(), ragged)).rejects.toMatchObject({ kind: "corrupt" });
    const blank = join(dir, "blank.iso");
    writeFileSync(blank, new Uint8Array(64 * 2048));
    await expect(openIso(new NodeFileOpener(), blank)).rejects.toMatchObject({ kind: "invalid-format" });
  });
});
