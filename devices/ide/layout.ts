/**
 * VirtualBox's default IDE layout: the CD/DVD drive on the secondary master, hard disks on the
 * primary master, primary slave and secondary slave, in that order.
 */
import type { BlockBackend } from "../../media/block.js";
import type { AtapiPacketHandler } from "../ata/transport.js";
import type { IdeDriveConfig } from "./channel.js";
import type { IdeChannelDrives } from "./controller.js";
import { NoMediumAtapi } from "./no-medium.js";

export interface IdeLayoutOptions {
  /** Hard disks, each a medium or a full drive config. */
  disks?: readonly (BlockBackend | IdeDriveConfig)[];
  /**
   * The CD/DVD drive on the secondary master: a packet layer or a drive config. Default: a drive
   * with no disc (NoMediumAtapi). `false`: no CD drive; the secondary master takes a disk then.
   */
  cdrom?: AtapiPacketHandler | IdeDriveConfig | false;
}

export interface IdeLayout {
  primary: IdeChannelDrives;
  secondary: IdeChannelDrives;
}

type Position = [channel: "primary" | "secondary", drive: "master" | "slave"];

export function defaultIdeLayout(options: IdeLayoutOptions = {}): IdeLayout {
  const layout: IdeLayout = { primary: {}, secondary: {} };
  const cd = options.cdrom;
  const diskSlots: Position[] = [["primary", "master"], ["primary", "slave"]];
  if (cd === false) diskSlots.push(["secondary", "master"]);
  else layout.secondary.master = isDriveConfig(cd) ? cd : { kind: "atapi", packetHandler: cd ?? new NoMediumAtapi() };
  diskSlots.push(["secondary", "slave"]);
  const disks = options.disks ?? [];
  if (disks.length > diskSlots.length) {
    throw new RangeError(`an IDE controller holds ${diskSlots.length} disks beside ${cd === false ? "no" : "its"} CD drive, not ${disks.length}`);
  }
  disks.forEach((d, i) => {
    const [channel, drive] = diskSlots[i]!;
    layout[channel][drive] = isDriveConfig(d) ? d : { kind: "ata", medium: d };
  });
  return layout;
}

function isDriveConfig(x: unknown): x is IdeDriveConfig {
  return typeof x === "object" && x !== null && "kind" in x && ((x as { kind: unknown }).kind === "ata" || (x as { kind: unknown }).kind === "atapi");
}
