/**
 * zlib for streamOptimized VMDKs through node:zlib, kept out of the pure codecs: pass
 * `nodeInflate` as openVmdk's `inflate` option (and `nodeDeflate` to the stream writer).
 */
import { deflateSync, inflateSync } from "node:zlib";

export function nodeInflate(data: Uint8Array): Uint8Array {
  const out = inflateSync(data);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

export function nodeDeflate(data: Uint8Array): Uint8Array {
  const out = deflateSync(data);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}
