/**
 * VBoxManage's `--variant Stream`: a streamOptimized VMDK is written front to back from a source
 * in one pass (vmdk/stream-writer.ts) and is read-only afterwards, so it is made only whole, as a
 * clone of a medium or as a new empty disk; it never goes through IMAGE_CREATORS + copyMedium.
 */
import { MediumError, type BlockBackend } from "./block.js";
import type { CloneProgress } from "./clone.js";
import type { FileOpener } from "./io/file-io.js";
import { writeStreamVmdk } from "./formats/vmdk/index.js";
import { nodeDeflateAsync } from "./formats/vmdk/node/zlib.js";

/** Write `source` as a new streamOptimized VMDK at `path` (refused if the file exists). */
export async function cloneToStreamVmdk(source: BlockBackend, opener: FileOpener, path: string, onProgress?: CloneProgress): Promise<void> {
  if (await opener.exists(path)) {
    throw new MediumError("in-use", "already exists (a clone makes a new image; write into an existing one with --existing)", { path });
  }
  await writeStreamVmdk(opener, path, source, { deflate: nodeDeflateAsync, onProgress });
}

/** A disk of `size` bytes that reads as zeros and stores nothing: the source of a new, empty stream image. */
export function emptyDisk(size: number): BlockBackend {
  const refuse = async (): Promise<never> => {
    throw new MediumError("read-only", "an empty source disk cannot be written");
  };
  return {
    size,
    sectorSize: 512,
    readOnly: true,
    read: async (_offset, buf) => void buf.fill(0),
    write: refuse,
    discard: refuse,
    flush: async () => undefined,
    allocatedExtents: async () => [],
    close: async () => undefined,
  };
}
