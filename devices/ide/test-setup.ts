/**
 * Shared setup for the IDE unit tests: a machine (any host with the test CPU accessors) with an
 * IDE controller, a RAM disk on the primary master, and drivers for both channels. The host is
 * passed in so this file stays free of testbench imports (see test-driver.ts).
 */
import type { Host } from "../../host-adapter/host.js";
import { MemoryDisk } from "../ata/test-support.js";
import type { IdeChipset } from "./chipset.js";
import { IdeController, type IdeChannelDrives } from "./controller.js";
import { NoMediumAtapi } from "./no-medium.js";
import { IdeTestDriver, type IdeTestMachine } from "./test-driver.js";

export const BM_BASE = 0xc000;

export interface IdeRig<H> {
  host: H;
  ide: IdeController;
  disk: MemoryDisk;
  /** Primary and secondary channel drivers. */
  p: IdeTestDriver;
  s: IdeTestDriver;
}

export interface RigOptions {
  chipset?: IdeChipset;
  /** Sectors of the primary master's RAM disk (default 8192 = 4 MiB). */
  sectors?: number;
  primary?: IdeChannelDrives;
  secondary?: IdeChannelDrives;
  /** Leave BAR4 unassigned and bus mastering off. */
  noPciSetup?: boolean;
  /** The RAM disk offers synchronous access (the IDE fast path for page-cached files). */
  syncDisk?: boolean;
}

/** Primary master: a patterned RAM disk; secondary master: an empty CD drive (VirtualBox's default). */
export function rig<H extends Host & IdeTestMachine>(host: H, o: RigOptions = {}): IdeRig<H> {
  const disk = new MemoryDisk(o.sectors ?? 8192, { sync: o.syncDisk ?? false }).fillPattern();
  const ide = new IdeController(host, {
    chipset: o.chipset ?? "piix4",
    primary: o.primary ?? { master: { kind: "ata", medium: disk, serial: "VB1234-5678", model: "VSTOR TEST DISK" } },
    secondary: o.secondary ?? { master: { kind: "atapi", packetHandler: new NoMediumAtapi() } },
  });
  if (!o.noPciSetup) IdeTestDriver.setupPci(host, ide.pci.devfn, BM_BASE);
  return { host, ide, disk, p: new IdeTestDriver(host, 0, BM_BASE), s: new IdeTestDriver(host, 1, BM_BASE + 8) };
}
