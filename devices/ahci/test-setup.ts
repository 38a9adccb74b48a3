/**
 * Shared setup for the AHCI unit tests: a machine (any host with the test CPU accessors) with an
 * AHCI controller, a patterned RAM disk on port 0 unless told otherwise, PCI decoding and bus
 * mastering on, and a driver. The host and the guest-memory allocator are passed in so this file
 * stays free of testbench imports (see test-driver.ts).
 */
import type { Host } from "../../host-adapter/host.js";
import { MemoryDisk } from "../ata/test-support.js";
import { AhciController, type AhciControllerOptions } from "./controller.js";
import { AhciTestDriver, type AhciTestMachine, type Allocator } from "./test-driver.js";

export interface AhciRig<H> {
  host: H;
  ahci: AhciController;
  drv: AhciTestDriver;
  /** The disk on port 0 (when the rig made it). */
  disk: MemoryDisk;
}

export interface RigOptions extends AhciControllerOptions {
  /** Sectors of the port-0 RAM disk (default 8192 = 4 MiB). */
  sectors?: number;
  /** Leave bus mastering off. */
  noBusMaster?: boolean;
  /** Do not enable PCI decoding at all (restore tests: the saved config space brings it). */
  noPciSetup?: boolean;
}

export function rig<H extends Host & AhciTestMachine>(host: H, alloc: Allocator, o: RigOptions = {}): AhciRig<H> {
  const disk = new MemoryDisk(o.sectors ?? 8192).fillPattern();
  const { sectors: _s, noBusMaster, noPciSetup, ...options } = o;
  const ahci = new AhciController(host, {
    portCount: 4,
    ...options,
    ports: options.ports ?? { 0: { kind: "ata", medium: disk, serial: "VB1234-5678", model: "VSTOR SATA DISK" } },
  });
  if (!noPciSetup) AhciTestDriver.setupPci(host, ahci.pci.devfn, { busMaster: !noBusMaster });
  return { host, ahci, drv: new AhciTestDriver(host, ahci.pci.devfn, alloc), disk };
}
