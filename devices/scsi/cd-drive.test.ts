/** The drive mechanism: CD/DVD by size, insert/eject/lock rules and the events the host sees. */
import { describe, expect, it } from "vitest";
import { MemoryDisk } from "../ata/test-support.js";
import { CD_MAX_SECTORS, CdDrive, type CdDriveEvent } from "./cd-drive.js";
import { cdImage, PatternMedium } from "./test-support.js";

function record(drive: CdDrive): string[] {
  const log: string[] = [];
  drive.on((e: CdDriveEvent) => {
    if (e.type === "ejected") log.push(`ejected:${e.by}${e.forced ? ":forced" : ""}`);
    else if (e.type === "inserted") log.push(`inserted:${e.kind}`);
    else if (e.type === "lock") log.push(`lock:${e.locked}`);
    else if (e.type === "tray") log.push(`tray:${e.open ? "open" : "closed"}`);
    else log.push(e.type);
  });
  return log;
}

describe("CdDrive", () => {
  it("takes up to an 80-minute CD as a CD and anything bigger as a DVD", () => {
    const drive = new CdDrive();
    drive.insert(new PatternMedium(CD_MAX_SECTORS * 2048));
    expect(drive.mediumKind).toBe("cd");
    drive.insert(new PatternMedium((CD_MAX_SECTORS + 1) * 2048));
    expect(drive.mediumKind).toBe("dvd");
    drive.insert(cdImage(10), { kind: "dvd" });
    expect(drive.mediumKind).toBe("dvd");
    expect(new CdDrive({ medium: cdImage(10), dvdThresholdSectors: 5 }).mediumKind).toBe("dvd");
    expect(drive.sectors).toBe(10);
  });

  it("refuses media without 2048-byte sectors", () => {
    expect(() => new CdDrive().insert(new MemoryDisk(8))).toThrow(RangeError);
    expect(() => new CdDrive({ medium: new MemoryDisk(8) })).toThrow(RangeError);
  });

  it("replaces a disc on insert and closes an open tray", () => {
    const drive = new CdDrive({ medium: cdImage(4) });
    const log = record(drive);
    drive.setPrevent(true, false);
    expect(drive.guestEject()).toBe(false);
    drive.setPrevent(false, false);
    expect(drive.guestEject()).toBe(true);
    expect(drive.trayOpen).toBe(true);
    drive.insert(cdImage(4));
    expect(drive.trayOpen).toBe(false);
    drive.insert(cdImage(4));
    expect(log).toEqual(["lock:true", "lock:false", "ejected:guest", "tray:open", "tray:closed", "inserted:cd", "ejected:host:forced", "inserted:cd"]);
  });

  it("refuses the host's eject while locked (telling the guest), unless forced", () => {
    const drive = new CdDrive({ medium: cdImage(4) });
    const log = record(drive);
    drive.setPrevent(false, true); // persistent prevent locks too
    expect(drive.isLocked).toBe(true);
    expect(drive.eject()).toBe(false);
    expect(drive.medium).toBeDefined();
    expect(drive.eject({ force: true })).toBe(true);
    expect(drive.medium).toBeUndefined();
    expect(drive.eject()).toBe(true); // already empty
    expect(log).toEqual(["lock:true", "eject-refused", "ejected:host:forced"]);
    expect(drive.isLocked).toBe(true); // the guest's lock outlives the disc
  });

  it("counts medium changes and survives a throwing listener", () => {
    const drive = new CdDrive();
    const off = drive.on(() => {
      throw new Error("listener bug");
    });
    const g = drive.generation;
    drive.insert(cdImage(2));
    drive.eject();
    expect(drive.generation).toBe(g + 2);
    off();
    expect(drive.ready).toBe(false);
  });
});
