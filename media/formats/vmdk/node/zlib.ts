/**
 * zlib for streamOptimized VMDKs through node:zlib, kept out of the pure codecs: pass
 * `nodeInflate` as openVmdk's `inflate` option, and `nodeDeflate` or `nodeDeflateAsync` as
 * writeStreamVmdk's `deflate` (zlib format, RFC 1950, as VMware and VirtualBox write grains).
 */
import { deflate, deflateSync, inflateSync } from "node:zlib";

export function nodeInflate(data: Uint8Array): Uint8Array {
  const out = inflateSync(data);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

export function nodeDeflate(data: Uint8Array): Uint8Array {
  const out = deflateSync(data);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** As nodeDeflate, on libuv's thread pool: grains read ahead are compressed in parallel. */
export function nodeDeflateAsync(data: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    deflate(data, (err, out) => (err ? reject(err) : resolve(new Uint8Array(out.buffer, out.byteOffset, out.length))));
  });
}
