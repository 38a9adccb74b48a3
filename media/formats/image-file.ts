/**
 * How every format's open/create functions get their file: one place that closes the file again
 * when an image is refused, and removes a partly created one.
 */
import type { FileIo, FileOpener } from "../io/file-io.js";

/** Open `path` and build the image on it; the file is closed again if the image is refused. */
export async function openImageFile<T>(opener: FileOpener, path: string, options: { readOnly?: boolean; direct?: boolean }, build: (file: FileIo) => Promise<T>): Promise<T> {
  const file = await opener.open(path, { readOnly: options.readOnly, direct: options.direct });
  try {
    return await build(file);
  } catch (e) {
    await file.close().catch(() => undefined);
    throw e;
  }
}

/** Create `path` (it must not exist) and build the image in it; on failure the partial file is removed. */
export async function createImageFile<T>(opener: FileOpener, path: string, options: { direct?: boolean }, build: (file: FileIo) => Promise<T>): Promise<T> {
  const file = await opener.open(path, { create: true, direct: options.direct });
  try {
    return await build(file);
  } catch (e) {
    await file.close().catch(() => undefined);
    await opener.remove(path).catch(() => undefined);
    throw e;
  }
}
