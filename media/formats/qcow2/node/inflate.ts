/**
 * qcow2's compressed clusters on Node: a raw deflate stream (no zlib header), as qemu writes with
 * zlib window bits -12. Kept apart because the codecs compile without Node types; pass it as
 * `inflate` to openQcow2.
 */
import { constants, inflateRawSync } from "node:zlib";
import type { Inflate } from "../qcow2-image.js";

/**
 * The compressed bytes are read by whole sectors, so garbage may follow the end of the stream;
 * a sync flush lets a stream that stops short still give what it has (the caller checks the length).
 */
export const nodeInflate: Inflate = (compressed, clusterSize) =>
  new Uint8Array(inflateRawSync(compressed, { finishFlush: constants.Z_SYNC_FLUSH, maxOutputLength: Math.max(clusterSize, 1 << 16) }));
