/**
 * AHCI SATA host bus adapter, ICH8-M compatible (VirtualBox's choice): one PCI function, class
 * 01:06:01 (SATA, AHCI 1.0 programming interface), vendor 8086h, device 2829h, INTA.
 *
 *   BAR5 (ABAR): 8 KiB of memory registers, the generic host control block and up to 30 ports.
 *   Memory BARs stay where the host put them (v86 cannot move them); SeaBIOS and Linux re-read
 *   the BAR and use it there. No MSI capability: v86 has no MSI delivery, so Linux uses INTx.
 *   No legacy IDE emulation (CAP.SAM = 0, GHC.AE reads 1).
 *
 * Construct it inside the host's setup (before the BIOS runs):
 *
 *   new AhciController(host, {
 *     portCount: 4,
 *     ports: { 0: { kind: "ata", medium, serial, nonRotational: true, discard: true },
 *              1: { kind: "atapi", packetHandler: createAtapiCdrom({ medium: iso }).handler },
 *              2: { hotpluggable: true } },
 *   });
 *
 * Disks advertise NCQ (IDENTIFY words 75/76, 32 deep) unless their config says `ncq: false`.
 * attach()/detach() plug drives into hot-pluggable ports while the machine runs.
 */
import type { AccessSize, DeviceState, GuestMemory, Host, PciFunction, RegionHandler } from "../../host-adapter/host.js";
import type { AtaDeviceConfig } from "../ata/config.js";
import { AtaDevice } from "../ata/device.js";
import { plugDrive, unplugDrive } from "./hotplug.js";
import { AhciPort, byteLanes, type PortEnv } from "./port.js";
import {
  ABAR_INDEX,
  ABAR_SIZE,
  AHCI_VERSION,
  CAP,
  GHC,
  HBA_REG,
  ISS_GEN2,
  MAX_PORTS,
  portOf,
  SLOTS,
} from "./registers.js";
import { idleTransport } from "./slot-transport.js";
import { restorePort, savePort, STATE_VERSION, type ControllerState } from "./state.js";

export const INTEL_VENDOR_ID = 0x8086;
/** 82801HBM (ICH8-M) SATA controller in AHCI mode. */
export const ICH8M_AHCI_DEVICE_ID = 0x2829;
/** Mass storage, SATA, AHCI 1.0. */
export const AHCI_CLASS_CODE = 0x01_06_01;
/** VirtualBox puts its AHCI controller at 00:0d.0. */
const DEFAULT_SLOT = 0x0d;

/** ICH8-M config registers at 90h: MAP (SATA mode select: AHCI) and PCS (port enables). */
const CFG_MAP = 0x90;
const MAP_AHCI = 0x40;

/** A drive on a port: the ATA core's config minus what the HBA decides. */
export type AhciDriveConfig = Omit<AtaDeviceConfig, "chipset" | "sata" | "deviceNumber" | "peerPresent" | "cable80" | "trace" | "clock">;

export interface AhciPortFlags {
  /** The drive may be attached and detached while the machine runs. Default false. */
  hotpluggable?: boolean;
}

/** A port with a drive (flat, like IdeDriveConfig) or an empty one. */
export type AhciPortOptions = (AhciDriveConfig & AhciPortFlags) | (AhciPortFlags & { kind?: undefined });

export interface AhciControllerOptions {
  /** Implemented ports, 1..30. Default: one past the highest port in `ports` (at least 1). */
  portCount?: number;
  /** Port configuration by port number; ports not listed are empty and not hot-pluggable. */
  ports?: Readonly<Record<number, AhciPortOptions>>;
  /**
   * How many ports, from port 0, the firmware sees (VirtualBox's "IDE compatibility" ports):
   * 0..4, default min(4, portCount). Drives on the other ports stay hidden (no link) until an
   * OS driver takes the HBA over, which SeaBIOS never does: its first GHC.HR, or GHC.IE set.
   */
  biosPorts?: number;
  /** PCI device number (default 0Dh). */
  slot?: number;
  /** Distinguishes controllers in traces and saved state (default "ahci"). */
  id?: string;
}

export class AhciController {
  readonly pci: PciFunction;
  readonly id: string;
  readonly portCount: number;
  /** Ports 0..biosPorts-1 are the ones the firmware sees (see AhciControllerOptions.biosPorts). */
  readonly biosPorts: number;
  /** Drives kept off their ports while the firmware owns the HBA, by port. */
  private readonly hidden = new Map<number, AtaDevice>();
  /** An OS driver has taken the HBA over since power-on. */
  private osOwned = false;
  readonly ports: readonly AhciPort[];
  /** GHC.IE (AE always reads 1, HR self-clears). */
  private ghc = 0;
  /** IS: one latched bit per port with an enabled interrupt pending. */
  private is = 0;
  private readonly name: string;
  private readonly memory: GuestMemory;

  constructor(
    private readonly host: Host,
    options: AhciControllerOptions = {},
  ) {
    this.id = options.id ?? "ahci";
    this.name = `vstor-${this.id}`;
    const configured = Object.keys(options.ports ?? {}).map(Number);
    for (const p of configured) {
      if (!Number.isInteger(p) || p < 0 || p >= MAX_PORTS) throw new RangeError(`AHCI port ${p} does not exist (ports are 0..${MAX_PORTS - 1})`);
    }
    const portCount = options.portCount ?? Math.max(1, ...configured.map((p) => p + 1));
    if (!Number.isInteger(portCount) || portCount < 1 || portCount > MAX_PORTS) throw new RangeError(`AHCI portCount ${portCount} must be 1..${MAX_PORTS}`);
    const beyond = configured.find((p) => p >= portCount);
    if (beyond !== undefined) throw new RangeError(`AHCI port ${beyond} is configured but portCount is ${portCount}`);
    this.portCount = portCount;
    const biosPorts = options.biosPorts ?? Math.min(4, portCount);
    if (!Number.isInteger(biosPorts) || biosPorts < 0 || biosPorts > Math.min(4, portCount)) {
      throw new RangeError(`AHCI biosPorts ${biosPorts} must be 0..${Math.min(4, portCount)}`);
    }
    this.biosPorts = biosPorts;
    this.memory = busMastered(host.memory, () => this.pci.busMasterEnabled, () => this.trace("DMA refused: PCI bus mastering is off"));

    const env: PortEnv = {
      memory: this.memory,
      defer: (fn) => host.defer(fn),
      trace: (m) => this.trace(m),
      interruptChanged: (port) => this.portInterrupt(port),
    };
    this.ports = Array.from({ length: portCount }, (_, i) => {
      const o = options.ports?.[i];
      const port = new AhciPort(i, o?.hotpluggable === true, env);
      if (o?.kind) port.drive = this.makeDrive(i, o);
      return port;
    });
    this.hideFromFirmware();

    const abar: RegionHandler = {
      read: (offset, size) => this.mmioRead(offset, size),
      write: (offset, size, value) => this.mmioWrite(offset, size, value),
    };
    const pi = this.portsImplemented;
    this.pci = host.registerPciFunction({
      name: this.name,
      vendorId: INTEL_VENDOR_ID,
      deviceId: ICH8M_AHCI_DEVICE_ID,
      revision: 2,
      classCode: AHCI_CLASS_CODE,
      interruptPin: 1,
      bars: [undefined, undefined, undefined, undefined, undefined, { kind: "memory", size: ABAR_SIZE, handler: abar }],
      slot: options.slot ?? DEFAULT_SLOT,
      extraConfig: {
        offset: CFG_MAP,
        // PCS (92h) bits 7:0 enable ports; writable so drivers that set them (Linux's PCS quirk) may.
        initial: Uint8Array.of(MAP_AHCI, 0, pi & 0xff, 0),
        writeMask: Uint8Array.of(0, 0, 0xff, 0),
      },
    });

    host.onReset(() => this.powerOn());
    host.registerState(this.id, {
      save: (): DeviceState => ({ version: STATE_VERSION, data: this.save() }),
      restore: (s) => this.restore(s),
    });
    this.powerOn();
  }

  /** PI: ports 0..portCount-1. */
  get portsImplemented(): number {
    return this.portCount === 32 ? 0xffff_ffff : ((1 << this.portCount) - 1) >>> 0;
  }

  /** CAP as the guest reads it. */
  get capabilities(): number {
    return (
      CAP.SNCQ |
      CAP.SCLO |
      ISS_GEN2 << CAP.ISS_SHIFT |
      CAP.PMD |
      (SLOTS - 1) << CAP.NCS_SHIFT |
      (this.portCount - 1)
    ) >>> 0;
  }

  /** Base of the ABAR (undefined while memory decoding is off). */
  get abarBase(): number | undefined {
    return this.pci.barBase(ABAR_INDEX);
  }

  /** The drive on a port, if any. */
  device(port: number): AtaDevice | undefined {
    return this.ports[port]?.drive;
  }

  /**
   * Plug a drive into a hot-pluggable, empty port while the machine runs. The guest sees the
   * presence change (PxSERR.DIAG.X/N → PxIS.PCS/PRCS, an interrupt if enabled) and the drive's
   * signature. Returns the new drive's ATA device.
   */
  attach(port: number, drive: AhciDriveConfig): AtaDevice {
    const p = this.hotPort(port, "attach to");
    if (p.drive) throw new Error(`AHCI port ${port} already has a drive; detach it first`);
    const dev = this.makeDrive(port, drive);
    plugDrive(p, dev);
    return dev;
  }

  /** Unplug the drive of a hot-pluggable port; what it had in flight is dropped. Returns it. */
  detach(port: number): AtaDevice {
    const p = this.hotPort(port, "detach from");
    if (!p.drive) throw new Error(`AHCI port ${port} has no drive to detach`);
    return unplugDrive(p)!;
  }

  // ---- registers ----

  private mmioRead(offset: number, size: AccessSize): number {
    try {
      if ((offset & 3) + size > 4) {
        let v = 0;
        for (let i = 0; i < size; i++) v |= this.mmioRead(offset + i, 1) << 8 * i;
        return v >>> 0;
      }
      const dword = this.readDword(offset & ~3);
      const shifted = dword >>> (offset & 3) * 8;
      return size === 4 ? shifted >>> 0 : shifted & (1 << 8 * size) - 1;
    } catch (e) {
      this.trace(`internal error reading ${offset.toString(16)}h: ${String(e)}`);
      return 0;
    }
  }

  private mmioWrite(offset: number, size: AccessSize, value: number): void {
    try {
      if ((offset & 3) + size > 4) {
        for (let i = 0; i < size; i++) this.mmioWrite(offset + i, 1, value >>> 8 * i & 0xff);
        return;
      }
      const lanes = byteLanes(offset, size, value);
      this.writeDword(offset & ~3, lanes.value, lanes.mask);
    } catch (e) {
      this.trace(`internal error writing ${offset.toString(16)}h: ${String(e)}`);
    }
  }

  private readDword(offset: number): number {
    const at = portOf(offset);
    if (at) return at.port < this.portCount ? this.ports[at.port]!.read(at.reg) : 0;
    switch (offset) {
      case HBA_REG.CAP: return this.capabilities;
      case HBA_REG.GHC: return (GHC.AE | this.ghc) >>> 0;
      case HBA_REG.IS: return this.is;
      case HBA_REG.PI: return this.portsImplemented;
      case HBA_REG.VS: return AHCI_VERSION;
      default: return 0; // no command completion coalescing, no enclosure management
    }
  }

  private writeDword(offset: number, value: number, mask: number): void {
    const at = portOf(offset);
    if (at) {
      if (at.port < this.portCount) this.ports[at.port]!.write(at.reg, value, mask);
      return;
    }
    if (offset === HBA_REG.GHC) {
      if (value & GHC.HR) {
        this.trace("HBA reset (GHC.HR)");
        this.osTakesOver(true);
        this.resetAll("hba");
        return;
      }
      this.ghc = ((this.ghc & ~mask) | value & GHC.IE) & GHC.IE;
      if (this.ghc & GHC.IE) this.osTakesOver(false);
      this.updateLine();
    } else if (offset === HBA_REG.IS) {
      this.is = (this.is & ~value) >>> 0;
      // A port whose enabled interrupt is still pending sets its bit again (level semantics).
      for (const p of this.ports) if (p.interruptPending) this.is = (this.is | 1 << p.index) >>> 0;
      this.updateLine();
    }
    // CAP, PI, VS are read-only (Linux writes its saved CAP/PI back after HR: ignored).
  }

  // ---- interrupts ----

  private portInterrupt(port: AhciPort): void {
    if (port.interruptPending) this.is = (this.is | 1 << port.index) >>> 0;
    this.updateLine();
  }

  private updateLine(): void {
    const level = (this.ghc & GHC.IE) !== 0 && this.is !== 0;
    if (level !== this.pci.irq.level) this.pci.irq.set(level);
  }

  // ---- resets and state ----

  private powerOn(): void {
    this.hideFromFirmware();
    this.resetAll("power-on");
  }

  /**
   * Power-on: the drives on ports from biosPorts up leave their ports (kept aside) so the
   * firmware finds only the IDE-compatibility ports.
   */
  private hideFromFirmware(): void {
    this.osOwned = false;
    for (const p of this.ports) {
      if (p.index < this.biosPorts || !p.drive) continue;
      this.hidden.set(p.index, p.drive);
      p.drive = undefined;
    }
  }

  /**
   * An OS driver takes the HBA over: the hidden drives come back. With an HBA reset they are
   * simply present when the ports come out of it; otherwise they arrive as hot-plug events.
   */
  private osTakesOver(hbaReset: boolean): void {
    if (this.osOwned) return;
    this.osOwned = true;
    for (const [i, dev] of this.hidden) {
      const port = this.ports[i]!;
      if (port.drive) continue; // something was hot-plugged there meanwhile
      if (hbaReset) port.drive = dev;
      else plugDrive(port, dev);
    }
    this.hidden.clear();
  }

  private resetAll(kind: "power-on" | "hba"): void {
    this.ghc = 0;
    this.is = 0;
    for (const p of this.ports) p.reset(kind);
    this.updateLine();
  }

  private save(): ControllerState {
    return { portCount: this.portCount, ghc: this.ghc, is: this.is, osOwned: this.osOwned, ports: this.ports.map(savePort) };
  }

  private restore(s: DeviceState): void {
    const data = s.data as Partial<ControllerState> | undefined;
    if (s.version !== STATE_VERSION || !data || data.portCount !== this.portCount || !Array.isArray(data.ports) || data.ports.length !== this.portCount) {
      this.trace(`saved state (version ${s.version}) does not fit this controller; powering on instead`);
      this.powerOn();
      return;
    }
    this.ghc = (Number(data.ghc) >>> 0) & GHC.IE;
    this.is = (Number(data.is) >>> 0) & this.portsImplemented;
    // The same drives are attached here; put them where the saved machine had them.
    for (const [i, dev] of this.hidden) if (!this.ports[i]!.drive) this.ports[i]!.drive = dev;
    this.hidden.clear();
    if (data.osOwned === false) this.hideFromFirmware();
    else this.osOwned = true;
    this.ports.forEach((p, i) => {
      if (!restorePort(p, data.ports![i])) p.reset("power-on");
    });
    this.updateLine();
  }

  // ---- helpers ----

  private makeDrive(port: number, d: AhciDriveConfig & AhciPortFlags): AtaDevice {
    const { hotpluggable: _h, ...drive } = d;
    const trace = (m: string): void => this.trace(`port ${port}: ${m}`);
    const config: AtaDeviceConfig = {
      ...drive,
      chipset: "ahci",
      sata: true,
      ncq: drive.kind === "ata" ? drive.ncq ?? true : false,
      clock: this.host.clock,
      trace,
    };
    return new AtaDevice(config, idleTransport(trace));
  }

  private hotPort(port: number, what: string): AhciPort {
    const p = Number.isInteger(port) ? this.ports[port] : undefined;
    if (!p) throw new RangeError(`AHCI port ${port} does not exist (this controller has ${this.portCount})`);
    if (!p.hotpluggable) throw new Error(`cannot ${what} AHCI port ${port}: it is not hot-pluggable`);
    return p;
  }

  private trace(message: string): void {
    this.host.trace(this.name, message);
  }
}

/** Guest memory as the HBA masters it: nothing moves while PCI bus mastering is off. */
function busMastered(memory: GuestMemory, enabled: () => boolean, refused: () => void): GuestMemory {
  const no = (): false => {
    refused();
    return false;
  };
  return {
    get size() {
      return memory.size;
    },
    read: (addr, dst) => (enabled() ? memory.read(addr, dst) : no()),
    write: (addr, src) => (enabled() ? memory.write(addr, src) : no()),
    readSg: (sg, dst) => (enabled() ? memory.readSg(sg, dst) : no()),
    writeSg: (sg, src) => (enabled() ? memory.writeSg(sg, src) : no()),
    read32: (addr) => (enabled() ? memory.read32(addr) : (refused(), undefined)),
    write32: (addr, value) => (enabled() ? memory.write32(addr, value) : no()),
  };
}
