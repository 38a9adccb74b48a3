/**
 * Creating differencing images (`createmedium --diffparent`): which format a child may take over
 * which parent, and how each format records its parent.
 *
 * - VDI, VHD and VMDK children name their parent by UUID plus a modification stamp (VDI's
 *   uuidParentModify, VHD's parent timestamp, VMDK's parentCID), so the parent's own stamp must
 *   survive closing and reopening: true of VDI, VHD and VMDK parents. A VDI child may sit on any
 *   of them, as VirtualBox's snapshots put VDI children over VMDK and VHD bases.
 * - A VMDK or VHD child also names the parent's file (parentFileNameHint; parent name and W2ku /
 *   W2ru locators), so qemu and VMware find it; they take a parent of their own format only.
 * - A qcow2 child names a backing file and its format (what qemu reads), over any layered format.
 * - Parallels HDD and RAW images have no parent link at all.
 */
import { relative, dirname, isAbsolute } from "node:path";
import { MediumError, type BlockBackend } from "./block.js";
import type { LayeredImage } from "./chain.js";
import type { MediumFormat } from "./formats.js";
import type { FileOpener } from "./io/file-io.js";
import { createQcow2 } from "./formats/qcow2/qcow2-image.js";
import { createVdi } from "./formats/vdi/vdi-image.js";
import { createVhd } from "./formats/vhd/vhd-image.js";
import { VhdImage } from "./formats/vhd/vhd-image.js";
import { createVmdk, parentLinkOf, VmdkImage } from "./formats/vmdk/index.js";

/** qemu's driver names, for a qcow2 child's backing format field. */
const QEMU_DRIVER: Partial<Record<MediumFormat, string>> = { VDI: "vdi", VMDK: "vmdk", VHD: "vpc", VHDX: "vhdx", QCOW2: "qcow2" };

/** Formats whose modification stamp is kept in the file (a UUID-linked child can be checked against it). */
const STAMPED: readonly MediumFormat[] = ["VDI", "VMDK", "VHD"];

/** The parent as opened for making a child: its top layer (read-only) and what the registry knows. */
export interface ChildParent {
  image: LayeredImage;
  format: MediumFormat;
  /** The parent's file. */
  location: string;
}

type CreateChild = (opener: FileOpener, path: string, parent: ChildParent) => Promise<BlockBackend>;

/** The parent's file as the child records it: relative to the child's folder when it is near, as qemu writes. */
function nameFromChild(childPath: string, parentPath: string): string {
  const rel = relative(dirname(childPath), parentPath);
  return rel.startsWith("..") || isAbsolute(rel) ? parentPath : rel;
}

function refuse(child: string, parent: ChildParent, path: string, why: string): never {
  throw new MediumError("unsupported", `a ${child} differencing image cannot be made over a ${parent.format} parent: ${why}`, { path });
}

export const CHILD_CREATORS = {
  VDI: (opener, path, parent) => {
    if (!STAMPED.includes(parent.format)) refuse("VDI", parent, path, "the parent keeps no modification stamp to check the child against (use QCOW2)");
    const p = parent.image;
    return createVdi(opener, path, { size: p.size, parent: { uuid: p.uuid, modifyUuid: p.modifyUuid } });
  },
  VMDK: (opener, path, parent) => {
    if (!(parent.image instanceof VmdkImage)) refuse("VMDK", parent, path, "a VMDK child names a VMDK parent by its CID");
    return createVmdk(opener, path, { size: parent.image.size, variant: "monolithicSparse", parent: parentLinkOf(parent.image, nameFromChild(path, parent.location)) });
  },
  VHD: (opener, path, parent) => {
    if (!(parent.image instanceof VhdImage)) refuse("VHD", parent, path, "a VHD child names a VHD parent by its footer's UUID and time stamp");
    const p = parent.image;
    return createVhd(opener, path, { size: p.size, parent: { uuid: p.uuid, timestamp: p.timestamp, path: parent.location } });
  },
  QCOW2: (opener, path, parent) => {
    const driver = QEMU_DRIVER[parent.format];
    if (!driver) refuse("QCOW2", parent, path, "qemu cannot read it as a backing file");
    return createQcow2(opener, path, { size: parent.image.size, backing: { file: nameFromChild(path, parent.location), format: driver } });
  },
} satisfies Record<string, CreateChild>;

export type ChildFormat = keyof typeof CHILD_CREATORS;

/** The format a new child takes: the one asked for, else the parent's when it can have children, else VDI (as VirtualBox). */
export function childFormat(parent: MediumFormat, asked: MediumFormat | undefined, path: string): ChildFormat {
  const format = asked ?? (Object.prototype.hasOwnProperty.call(CHILD_CREATORS, parent) ? parent : "VDI");
  if (!Object.prototype.hasOwnProperty.call(CHILD_CREATORS, format)) {
    throw new MediumError("unsupported", `${format} images cannot be differencing images (VDI, VMDK, VHD and QCOW2 can)`, { path });
  }
  return format as ChildFormat;
}
