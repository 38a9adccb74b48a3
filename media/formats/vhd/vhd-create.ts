/**
 * Laying out a new VHD: the options, their checks, and the structures written for a fixed,
 * dynamic or differencing image (see README.md "What we write"). Pure (a FileIo in).
 */
import { MediumError } from "../../block.js";
import type { FileIo } from "../../io/file-io.js";
import { NULL_UUID, isNullUuid, isUuid, randomUuid } from "../uuid.js";
import { BLOCK_UNUSED } from "./bat.js";
import {
  DEFAULT_BLOCK_SIZE,
  HEADER_SIZE,
  HEADER_VERSION,
  MAX_BLOCK_SIZE,
  bitmapSize,
  noLocators,
  parentLocators,
  serializeDynamicHeader,
  type VhdDynamicHeader,
} from "./dynamic-header.js";
import { baseName } from "../paths.js";
import {
  CREATOR_APP,
  CREATOR_OS_WINDOWS,
  CREATOR_VERSION,
  FEATURES_RESERVED,
  FOOTER_SIZE,
  MAX_VHD_SIZE,
  SECTOR_SIZE,
  VHD_VERSION,
  VhdDiskType,
  chsGeometry,
  serializeFooter,
  tokenTimestamp,
  vhdTimestamp,
  type VhdFooter,
} from "./footer.js";
import { asMediumError } from "./vhd-metadata.js";

/** The parent of a new differencing image. */
export interface VhdParentRef {
  /** The parent footer's unique id. */
  uuid: string;
  /** The parent's footer timestamp (VhdImage.timestamp); else taken from `modifyUuid`. */
  timestamp?: number;
  /** A parent's chain modification UUID (a VHD's is its timestamp token). */
  modifyUuid?: string;
  /** The parent's file path: its name goes into the header, the path into the W2ku/W2ru locators. */
  path?: string;
}

export interface VhdCreateOptions {
  /** Virtual size in bytes, a multiple of 512. */
  size: number;
  /** "dynamic" (the default) or "fixed" (the file is extended with truncate: sparse where it can be). */
  variant?: "dynamic" | "fixed";
  /** Make a differencing image of this parent. */
  parent?: VhdParentRef;
  /** 2 MiB by default (a power of two from 512 bytes to 256 MiB). */
  blockSize?: number;
  uuid?: string;
  newUuid?: () => string;
  now?: () => number;
  maxInFlight?: number;
}

/** An image's metadata as kept in memory. */
export interface VhdImageState {
  footer: VhdFooter;
  header: VhdDynamicHeader | null;
  bat: Uint32Array | null;
  /** Bitmaps of stored blocks not fully marked stored. */
  partial: Map<number, Uint8Array>;
  bitmapSize: number;
  /** Where the footer is (the end of the data). */
  eod: number;
}

const unsupported = (message: string, path: string): MediumError => new MediumError("unsupported", message, { path });

/**
 * Write the structures of a new, empty image into `file` (flushed) and return them as the image
 * keeps them in memory. Refuses options VHD cannot express with "unsupported".
 */
export async function writeNewImage(file: FileIo, options: VhdCreateOptions): Promise<VhdImageState> {
  const path = file.path;
  const gen = options.newUuid ?? randomUuid;
  const now = options.now ?? Date.now;
  const { size } = options;
  const fixed = options.variant === "fixed";
  if (file.readOnly) throw new MediumError("read-only", "cannot create an image in a read-only file", { path });
  if (options.parent && fixed) throw unsupported("a differencing image cannot be fixed-size", path);
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_SIZE) throw unsupported(`size ${size} is not a positive multiple of 512`, path);
  if (size > MAX_VHD_SIZE - 2 * 1024 * 1024 * 1024) throw unsupported(`size ${size} is larger than VHD allows (2040 GiB)`, path);
  const bs = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (!(bs >= SECTOR_SIZE && bs <= MAX_BLOCK_SIZE && (bs & (bs - 1)) === 0)) throw unsupported(`block size ${bs} is not a power of two from 512 bytes to 256 MiB`, path);
  const uuid = options.uuid ?? gen();
  if (!isUuid(uuid) || isNullUuid(uuid)) throw unsupported(`${JSON.stringify(uuid)} is not a usable UUID`, path);
  const parent = options.parent;
  if (parent && (!isUuid(parent.uuid) || isNullUuid(parent.uuid))) throw unsupported(`parent UUID ${JSON.stringify(parent.uuid)} is not usable`, path);
  const footer: VhdFooter = {
    features: FEATURES_RESERVED,
    version: VHD_VERSION,
    dataOffset: fixed ? null : FOOTER_SIZE,
    timestamp: vhdTimestamp(now()),
    creatorApp: CREATOR_APP,
    creatorVersion: CREATOR_VERSION,
    creatorOs: CREATOR_OS_WINDOWS,
    originalSize: size,
    currentSize: size,
    geometry: chsGeometry(size),
    diskType: fixed ? VhdDiskType.fixed : parent ? VhdDiskType.differencing : VhdDiskType.dynamic,
    checksum: 0,
    uuid,
    savedState: 0,
  };
  try {
    if (fixed) {
      await file.truncate(size);
      await file.write(size, serializeFooter(footer));
      await file.flush();
      return { footer, header: null, bat: null, partial: new Map(), bitmapSize: 0, eod: size };
    }
    // [footer copy][dynamic header][BAT, padded to a sector][parent locator data][blocks...][footer]
    const tableOffset = FOOTER_SIZE + HEADER_SIZE;
    const entries = Math.ceil(size / bs);
    const batSpace = Math.ceil((4 * entries) / SECTOR_SIZE) * SECTOR_SIZE;
    let eod = tableOffset + batSpace;
    const header: VhdDynamicHeader = {
      tableOffset,
      headerVersion: HEADER_VERSION,
      maxTableEntries: entries,
      blockSize: bs,
      checksum: 0,
      parentUuid: parent?.uuid ?? NULL_UUID,
      parentTimestamp: parent ? (parent.timestamp ?? tokenTimestamp(parent.modifyUuid ?? "") ?? 0) : 0,
      parentName: parent?.path ? baseName(parent.path) : "",
      locators: noLocators(),
    };
    const batBytes = new Uint8Array(batSpace).fill(0xff);
    await file.write(tableOffset, batBytes);
    if (parent?.path) {
      const { entries: locs, data } = parentLocators(path, parent.path, eod, { path });
      header.locators = locs;
      await file.write(eod, data);
      eod += data.length;
    }
    await file.write(FOOTER_SIZE, serializeDynamicHeader(header, { path }));
    const fbytes = serializeFooter(footer);
    await file.write(eod, fbytes);
    await file.write(0, fbytes);
    await file.flush();
    const bat = new Uint32Array(entries).fill(BLOCK_UNUSED);
    return { footer, header, bat, partial: new Map(), bitmapSize: bitmapSize(bs), eod };
  } catch (e) {
    throw asMediumError(e, path, "create");
  }
}
