/**
 * A machine's storage configuration (controllers and attachments, as VBoxManage storagectl and
 * storageattach set them up) and how it becomes devices on a host when the machine starts.
 */
import type { Host } from "../host-adapter/host.js";
import type { BlockBackend } from "../media/block.js";
import { MediumManager } from "../media/medium-manager.js";
import { serialFromUuid } from "../devices/ata/config.js";
import { IdeController, type IdeChipset, type IdeDriveConfig } from "../devices/ide/index.js";
import { AhciController, MAX_PORTS } from "../devices/ahci/index.js";
import { createAtapiCdrom, type AtapiCdrom } from "../devices/atapi/index.js";
import { NodeFileOpener } from "../media/io/node/node-file-io.js";
import { withoutHostCache } from "../media/io/file-io.js";
import { openIso } from "../media/formats/iso/iso.js";

export type StorageBus = "ide" | "sata";
export type IdeControllerType = "PIIX3" | "PIIX4" | "ICH6";
export type SataControllerType = "IntelAhci";
export type ControllerType = IdeControllerType | SataControllerType;

export interface AttachmentConfig {
  port: number;
  device: number;
  type: "hdd" | "dvddrive";
  /** Medium UUID (hard disks); absent for an empty DVD drive. */
  medium?: string;
  /** Path of the ISO image in a DVD drive. */
  image?: string;
  nonrotational?: boolean;
  discard?: boolean;
  hotpluggable?: boolean;
  tempeject?: boolean;
}

export interface StorageControllerConfig {
  name: string;
  bus: StorageBus;
  controller: ControllerType;
  /** SATA: ports 0..portCount-1 (1..30). */
  portCount?: number;
  hostIoCache: boolean;
  bootable: boolean;
  attachments: AttachmentConfig[];
}

const CHIPSET: Record<IdeControllerType, IdeChipset> = { PIIX3: "piix3", PIIX4: "piix4", ICH6: "ich6" };

/** VBoxManage's default port count for a new SATA controller. */
export const DEFAULT_SATA_PORTS = MAX_PORTS;

/**
 * Ports and devices per bus: IDE has two channels (ports) of two devices each; SATA has one
 * device per port.
 */
export function checkSlot(ctl: StorageControllerConfig, port: number, device: number): void {
  if (ctl.bus === "ide" && (port < 0 || port > 1 || device < 0 || device > 1)) {
    throw new RangeError(`IDE controller '${ctl.name}' has ports 0-1 and devices 0-1, not port ${port} device ${device}`);
  }
  const ports = ctl.portCount ?? DEFAULT_SATA_PORTS;
  if (ctl.bus === "sata" && (port < 0 || port >= ports || device !== 0)) {
    throw new RangeError(`SATA controller '${ctl.name}' has ports 0-${ports - 1} with device 0, not port ${port} device ${device}`);
  }
}

export interface MachineStorage {
  /** Registers the controllers on a host (runs before the BIOS, and again after a reset). */
  setup(host: Host): void;
  /**
   * Change the disc in a running machine's DVD drive (undefined: eject). Refused while the guest
   * has locked the tray, unless forced.
   */
  changeDisc(controller: string, port: number, device: number, image: string | undefined, options?: { force?: boolean }): Promise<void>;
  /**
   * Hot-plug a hard disk into a running machine's hot-pluggable SATA port (`disk` undefined:
   * unplug it). The guest sees the port change; an unplugged medium is flushed and closed.
   */
  hotplug(controller: string, port: number, disk: AttachmentConfig | undefined): Promise<void>;
  close(): Promise<void>;
}

export interface StorageEvents {
  /** The guest ejected the disc of a drive without --tempeject: the machine's configuration forgets it. */
  onGuestEject?(controller: string, port: number, device: number): void;
}

/** Open every attached medium and prepare the controllers. Media are closed if anything fails. */
export async function openMachineStorage(
  controllers: readonly StorageControllerConfig[],
  mm = new MediumManager(),
  events: StorageEvents = {},
): Promise<MachineStorage> {
  const opened: BlockBackend[] = [];
  const drivesByKey = new Map<string, AtapiCdrom>();
  const plans: { ctl: StorageControllerConfig; drives: Map<string, IdeDriveConfig> }[] = [];
  const release = async (medium: BlockBackend): Promise<void> => {
    const i = opened.indexOf(medium);
    if (i >= 0) opened.splice(i, 1);
    await medium.flush().catch(() => undefined);
    await medium.close().catch(() => undefined);
  };
  /** The AHCI controllers of the emulator now running, by name (set up again after a reset). */
  const live = new Map<string, AhciController>();
  // Host I/O cache off (storagectl --hostiocache off, SATA's default): disks bypass the page cache.
  const uncached = new MediumManager(mm.registry, withoutHostCache(mm.opener));
  const openDisk = async (a: AttachmentConfig, hostIoCache: boolean): Promise<IdeDriveConfig> => {
    const medium = await (hostIoCache ? mm : uncached).open(a.medium!);
    opened.push(medium);
    return { kind: "ata", medium, serial: serialFromUuid(baseUuid(mm, a.medium!)), nonRotational: a.nonrotational, discard: a.discard };
  };
  try {
    for (const ctl of controllers) {
      const drives = new Map<string, IdeDriveConfig>();
      for (const a of ctl.attachments) {
        const key = `${a.port}:${a.device}`;
        if (a.type === "dvddrive") {
          let disc: BlockBackend | undefined;
          if (a.image) {
            disc = (await openIso(new NodeFileOpener(), a.image)).medium;
            opened.push(disc);
          }
          // One drive (tray, lock, disc) per attachment, kept across emulator rebuilds on reset.
          const cd: AtapiCdrom = createAtapiCdrom({ medium: disc });
          drives.set(key, { kind: "atapi", packetHandler: cd.handler, model: "VBOX CD-ROM" });
          drivesByKey.set(`${ctl.name}:${key}`, cd);
          cd.drive.on((e) => {
            if (e.type !== "ejected" || e.by !== "guest") return;
            void e.medium.close().catch(() => undefined);
            if (!a.tempeject) events.onGuestEject?.(ctl.name, a.port, a.device);
          });
          continue;
        }
        if (!a.medium) continue;
        drives.set(key, await openDisk(a, ctl.hostIoCache));
      }
      plans.push({ ctl, drives });
    }
  } catch (e) {
    await Promise.allSettled(opened.map((m) => m.close()));
    throw e;
  }
  return {
    setup(host) {
      for (const { ctl, drives } of plans) {
        const d = (p: number, v: number) => drives.get(`${p}:${v}`);
        if (ctl.bus === "sata") {
          const portCount = ctl.portCount ?? DEFAULT_SATA_PORTS;
          const ports: Record<number, IdeDriveConfig | { hotpluggable: boolean }> = {};
          for (let p = 0; p < portCount; p++) {
            // An empty port can always take a disk at run time; an attached one only if marked.
            const att = ctl.attachments.find((a) => a.port === p);
            const hotpluggable = att ? !!att.hotpluggable : true;
            ports[p] = { ...(d(p, 0) ?? {}), hotpluggable };
          }
          live.set(ctl.name, new AhciController(host, { portCount, ports, id: `sata-${ctl.name}` }));
          continue;
        }
        new IdeController(host, {
          chipset: CHIPSET[ctl.controller as IdeControllerType],
          id: `ide-${ctl.name}`,
          primary: { master: d(0, 0), slave: d(0, 1) },
          secondary: { master: d(1, 0), slave: d(1, 1) },
        });
      }
    },
    async changeDisc(controller, port, device, image, options = {}) {
      const cd = drivesByKey.get(`${controller}:${port}:${device}`);
      if (!cd) throw new RangeError(`no DVD drive at '${controller}' port ${port} device ${device}`);
      const next = image ? (await openIso(new NodeFileOpener(), image)).medium : undefined;
      const old = cd.drive.medium;
      if (old && !cd.drive.eject({ force: options.force })) {
        await next?.close();
        throw new Error(`the guest has locked the tray of '${controller}' port ${port} device ${device} (use --forceunmount)`);
      }
      await old?.close().catch(() => undefined);
      if (next) {
        opened.push(next);
        cd.drive.insert(next);
      }
    },
    async hotplug(controller, port, disk) {
      const plan = plans.find((p) => p.ctl.name === controller);
      const ahci = live.get(controller);
      if (!plan || !ahci || plan.ctl.bus !== "sata") throw new RangeError(`no SATA controller '${controller}' in this machine`);
      const key = `${port}:0`;
      if (!disk) {
        const old = plan.drives.get(key);
        ahci.detach(port); // refuses a port that is not hot-pluggable or is empty
        plan.drives.delete(key);
        if (old?.medium) await release(old.medium);
        return;
      }
      const drive = await openDisk(disk, plan.ctl.hostIoCache);
      try {
        ahci.attach(port, drive);
      } catch (e) {
        if (drive.medium) await release(drive.medium);
        throw e;
      }
      plan.drives.set(key, drive);
    },
    close: async () => {
      for (const m of opened) {
        await m.flush().catch(() => undefined);
        await m.close().catch(() => undefined);
      }
    },
  };
}

/** The disk serial follows the base image's UUID, so taking snapshots does not change it. */
function baseUuid(mm: MediumManager, uuid: string): string {
  let rec = mm.registry.find(uuid);
  for (let depth = 0; rec?.parentUuid && depth < 100; depth++) rec = mm.registry.findByUuid(rec.parentUuid) ?? rec;
  return rec?.uuid ?? uuid;
}
