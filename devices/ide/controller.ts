/**
 * PIIX3 / PIIX4 / ICH6 IDE controller: one PCI function (class 01:01, programming interface 80h:
 * both channels in compatibility mode, bus master capable), the legacy ports of both channels,
 * IRQ 14/15, and the bus master I/O BAR.
 *
 *   PCI 00:01.1 by default (beside v86's PIIX3 ISA bridge at 00:01.0, which is multi-function),
 *   vendor 8086h, device 7010h (PIIX3), 7111h (PIIX4) or 269Eh (ICH6).
 *   BAR0-3 are not implemented (read 0): in compatibility mode the channels live at the legacy
 *   addresses, which Linux and SeaBIOS take from the programming interface, not from BARs.
 *   BAR4: 16 I/O ports of bus master registers (primary +0, secondary +8).
 *   Interrupt pin 0: the channels use ISA IRQ 14 and 15, edge-triggered at the PIC.
 *   Primary:   1F0h-1F7h, 3F6h, IRQ 14.     Secondary: 170h-177h, 376h, IRQ 15.
 *
 * Construct it inside the host's setup (before the BIOS runs):
 *
 *   new IdeController(host, {
 *     chipset: "ich6",
 *     primary: { master: { kind: "ata", medium } },
 *     secondary: { master: { kind: "atapi", packetHandler: new NoMediumAtapi() } },
 *   });
 *
 * or with the VirtualBox-like layout helper: `new IdeController(host, { chipset, ...defaultIdeLayout({ disks: [medium] }) })`.
 * On v86 the host must have been created with `replaceBuiltinIde: true` (machine/emulator.ts
 * does), which frees the legacy ports, IRQ 14/15 and v86's own 00:1e.0 function.
 */
import type { AccessSize, DeviceState, Host, PciFunction, RegionHandler } from "../../host-adapter/host.js";
import type { AtaDeviceConfig } from "../ata/config.js";
import type { AtaDevice } from "../ata/device.js";
import { CFG, CHIPSETS, extraConfig, IDE_CLASS_CODE, IDETIM_DECODE_ENABLE, INTEL_VENDOR_ID, type IdeChipset } from "./chipset.js";
import { IdeChannel, type ChannelState, type IdeDriveConfig } from "./channel.js";

export interface IdeChannelDrives {
  /** Device 0. */
  master?: IdeDriveConfig;
  /** Device 1. */
  slave?: IdeDriveConfig;
}

export interface IdeControllerOptions {
  /** Default "piix4" (VirtualBox's default IDE chipset). */
  chipset?: IdeChipset;
  primary?: IdeChannelDrives;
  secondary?: IdeChannelDrives;
  /** PCI device number (default 1: the classic 00:01.1 next to the PIIX3 ISA bridge). */
  slot?: number;
  /** PCI function number (default 1 in slot 1, else 0). */
  fn?: number;
  /** Distinguishes controllers in traces and saved state (default "ide"). */
  id?: string;
  /**
   * ICH6: report 80-conductor cables in IDE_CONFIG (54h), which lets ata_piix pick UDMA modes
   * above 2. Default true. The drives' IDENTIFY word 93 follows the same setting.
   */
  cable80?: boolean;
}

const LEGACY = [
  { command: 0x1f0, control: 0x3f6, irq: 14 },
  { command: 0x170, control: 0x376, irq: 15 },
] as const;

/** Bus master BAR: 8 ports per channel. */
const BM_BAR = 4;
const BM_BAR_SIZE = 16;

const STATE_VERSION = 1;

interface SavedController {
  chipset: IdeChipset;
  channels: ChannelState[];
}

export class IdeController {
  readonly pci: PciFunction;
  readonly chipset: IdeChipset;
  readonly channels: readonly [IdeChannel, IdeChannel];
  readonly id: string;
  private readonly name: string;

  constructor(
    private readonly host: Host,
    options: IdeControllerOptions = {},
  ) {
    this.chipset = options.chipset ?? "piix4";
    const info = CHIPSETS[this.chipset];
    if (!info) throw new RangeError(`unknown IDE chipset ${String(options.chipset)}`);
    this.id = options.id ?? "ide";
    this.name = `vstor-${this.id}-${this.chipset}`;
    const cable80 = options.cable80 ?? true;
    const trace = (m: string): void => host.trace(this.name, m);

    const channelDrives = [options.primary, options.secondary];
    this.channels = [0, 1].map((c) => {
      const drives = channelDrives[c];
      const pair = [drives?.master, drives?.slave];
      const configs = pair.map((d, position) =>
        d ? this.driveConfig({ ...d, peerPresent: !!pair[1 - position] }, position as 0 | 1, cable80, (m) => trace(`${c === 0 ? "primary" : "secondary"} ${position === 0 ? "master" : "slave"}: ${m}`)) : undefined,
      );
      return new IdeChannel(c as 0 | 1, {
        memory: host.memory,
        busMasterEnabled: () => this.pci.busMasterEnabled,
        defer: (fn) => host.defer(fn),
        trace,
        line: host.isaIrq(LEGACY[c]!.irq),
      }, configs);
    }) as unknown as [IdeChannel, IdeChannel];

    const bmHandler: RegionHandler = {
      read: (offset, size) => this.channels[offset >> 3]!.readBusMaster(offset & 7, size),
      write: (offset, size, value) => this.channels[offset >> 3]!.writeBusMaster(offset & 7, size, value),
    };
    const slot = options.slot ?? 1;
    const fn = options.fn ?? (slot === 1 ? 1 : 0);
    const extra = extraConfig(this.chipset, cable80);
    this.pci = host.registerPciFunction({
      name: this.name,
      vendorId: INTEL_VENDOR_ID,
      deviceId: info.deviceId,
      revision: info.revision,
      classCode: IDE_CLASS_CODE,
      subsystemVendorId: 0,
      subsystemId: 0,
      interruptPin: 0,
      bars: [undefined, undefined, undefined, undefined, { kind: "io", size: BM_BAR_SIZE, handler: bmHandler }],
      slot,
      fn,
      extraConfig: { offset: extra.offset, initial: extra.initial, writeMask: extra.writeMask },
      onConfigWrite: (offset, size) => {
        if (offset < CFG.IDETIM_SECONDARY + 2 && offset + size > CFG.IDETIM_PRIMARY) this.refreshDecode();
      },
    });

    this.channels.forEach((ch, c) => {
      const ports = LEGACY[c]!;
      host.registerIoPorts(ports.command, 8, {
        read: (offset, size) => ch.readCommandBlock(offset, size),
        write: (offset, size, value) => ch.writeCommandBlock(offset, size, value),
      });
      host.registerIoPorts(ports.control, 1, {
        read: (_offset, size) => ch.readControl(size),
        write: (_offset, size, value) => ch.writeControl(size, value),
      });
    });

    host.onReset(() => this.powerOn());
    host.registerState(this.id, {
      save: (): DeviceState => ({ version: STATE_VERSION, data: { chipset: this.chipset, channels: this.channels.map((c) => c.save()) } satisfies SavedController }),
      restore: (s) => this.restore(s),
    });
    this.powerOn();
  }

  /** The drive at a channel (0 primary, 1 secondary) and position (0 master, 1 slave). */
  device(channel: 0 | 1, position: 0 | 1): AtaDevice | undefined {
    return this.channels[channel].device(position);
  }

  /** Current bus master BAR base (undefined until the BIOS assigns it). */
  get busMasterBase(): number | undefined {
    return this.pci.barBase(BM_BAR);
  }

  private driveConfig(d: IdeDriveConfig, position: 0 | 1, cable80: boolean, trace: (m: string) => void): AtaDeviceConfig {
    return {
      ...d,
      chipset: this.chipset, // the ATA core's UDMA offer follows the chipset
      deviceNumber: position,
      cable80: d.cable80 ?? (this.chipset === "ich6" ? cable80 : false),
      clock: this.host.clock,
      trace,
    };
  }

  private powerOn(): void {
    for (const ch of this.channels) ch.powerOn();
    this.refreshDecode();
  }

  private refreshDecode(): void {
    this.channels.forEach((ch, c) => {
      const idetim = this.pci.configRead(c === 0 ? CFG.IDETIM_PRIMARY : CFG.IDETIM_SECONDARY, 2 as AccessSize);
      ch.decode = (idetim & IDETIM_DECODE_ENABLE) !== 0;
    });
  }

  private restore(s: DeviceState): void {
    const data = s.data as Partial<SavedController> | undefined;
    if (s.version !== STATE_VERSION || !data || !Array.isArray(data.channels) || data.channels.length !== 2) {
      this.host.trace(this.name, `saved state version ${s.version} not understood; powering on instead`);
      this.powerOn();
      return;
    }
    if (data.chipset !== this.chipset) this.host.trace(this.name, `saved state is from a ${String(data.chipset)} controller`);
    this.channels.forEach((ch, c) => ch.restore(data.channels![c]!));
    this.refreshDecode();
  }
}
