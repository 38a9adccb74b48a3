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
import { SwappableMedium } from "../media/swappable-medium.js";
import { ImageChain, writeToLayer, type LayeredImage, type MergeOptions, type MergeResult } from "../media/chain.js";
import { MediumError } from "../media/block.js";
import type { SnapshotMerge } from "./vm-store.js";
import { chainRecords } from "./machine-media.js";
import { lineage } from "../media/medium-types.js";

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
  /** Run `fn` with guest I/O held on every hard disk (for a consistent saved state and disk switch). */
  quiesced<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Inside quiesced(): flush and close the disk's medium and open the one `next` names instead
   * (given the medium attached now; it may create it, e.g. a snapshot's differencing image).
   */
  reopenDisk(controller: string, port: number, device: number, next: (current: string) => Promise<string>): Promise<void>;
  /**
   * Run a snapshot merge on the running disk whose chain holds `merge.child` (false if none does):
   * the chain is reopened with the images the merge writes read-write, each block's copy runs
   * between guest requests, and guest writes into a top image merged away are mirrored into its
   * parent, so the guest never stops and never sees the chain change under it.
   */
  mergeLive(merge: SnapshotMerge, run: (layers: readonly LayeredImage[], step: MergeOptions["step"]) => Promise<MergeResult>): Promise<boolean>;
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
  /** Hard disks by controller:port:device, with the medium (top of the chain) open now. */
  const disks = new Map<string, { medium: SwappableMedium; uuid: string; manager: MediumManager }>();
  const openDisk = async (a: AttachmentConfig, hostIoCache: boolean, controller: string): Promise<IdeDriveConfig> => {
    const manager = hostIoCache ? mm : uncached;
    const medium = new SwappableMedium(await manager.open(a.medium!));
    opened.push(medium);
    disks.set(`${controller}:${a.port}:${a.device}`, { medium, uuid: a.medium!, manager });
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
        drives.set(key, await openDisk(a, ctl.hostIoCache, ctl.name));
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
        disks.delete(`${controller}:${port}:0`);
        if (old?.medium) await release(old.medium);
        return;
      }
      const drive = await openDisk(disk, plan.ctl.hostIoCache, controller);
      try {
        ahci.attach(port, drive);
      } catch (e) {
        disks.delete(`${controller}:${port}:0`);
        if (drive.medium) await release(drive.medium);
        throw e;
      }
      plan.drives.set(key, drive);
    },
    quiesced(fn) {
      const list = [...disks.values()];
      const enter = <T,>(i: number, f: () => Promise<T>): Promise<T> => (i === list.length ? f() : list[i]!.medium.exclusive(() => enter(i + 1, f)));
      return enter(0, fn);
    },
    async reopenDisk(controller, port, device, next) {
      const d = disks.get(`${controller}:${port}:${device}`);
      if (!d) throw new RangeError(`no hard disk at '${controller}' port ${port} device ${device}`);
      const old = d.medium.inner;
      await old.flush();
      await old.close();
      let uuid = d.uuid;
      try {
        uuid = await next(d.uuid);
        d.medium.replace(await d.manager.open(uuid));
        d.uuid = uuid;
      } catch (e) {
        d.medium.replace(await d.manager.open(d.uuid)); // keep the guest's disk working
        throw e;
      }
    },
    async mergeLive(merge, run) {
      const d = [...disks.values()].find((x) => chainOf(mm, x.uuid).includes(merge.child));
      if (!d) return false;
      let chain!: ImageChain;
      await d.medium.exclusive(async (inner) => {
        await inner.flush();
        await inner.close();
        let reopened;
        try {
          reopened = await d.manager.open(d.uuid, { writableParents: chainOf(mm, d.uuid), allowParentModified: true });
        } catch (e) {
          d.medium.replace(await d.manager.open(d.uuid)); // keep the guest's disk working
          throw e;
        }
        d.medium.replace(reopened);
        if (!(reopened instanceof ImageChain)) throw new MediumError("corrupt", `${d.uuid} has no parent to merge with`);
        chain = reopened;
      });
      const at = chain.layers.findIndex((l) => l.uuid === merge.child);
      // A top image merged into its parent goes away: what the guest writes meanwhile goes to both.
      if (merge.into === "parent" && at === 0) d.medium.afterWrite = (offset, data) => writeToLayer(chain.layers, 1, offset, data);
      try {
        const result = await run(chain.layers, (copy) => d.medium.exclusive(() => copy()));
        await d.medium.exclusive(async () => {
          d.medium.afterWrite = undefined;
          d.medium.replace(new ImageChain(result.layers, { allowParentModified: true }));
          await result.removed.close();
          if (d.uuid === result.removed.uuid) d.uuid = result.layers[0]!.uuid;
        });
      } finally {
        d.medium.afterWrite = undefined;
      }
      return true;
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
  const rec = mm.registry.find(uuid);
  return rec ? lineage(mm.registry, rec).at(-1)!.uuid : uuid;
}

/** UUIDs of a medium's chain, top first. */
const chainOf = (mm: MediumManager, uuid: string): string[] => chainRecords(mm, uuid).map((r) => r.uuid);
