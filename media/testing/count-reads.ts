import type { LayeredImage } from "../chain.js";

/** The layer, wrapped so that every read of it (whole or by block part) is counted. */
export function countReads(layer: LayeredImage): { layer: LayeredImage; reads: { n: number } } {
  const reads = { n: 0 };
  const counted = new Proxy(layer, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target);
      if (prop === "read" || prop === "readBlockPart") {
        return (...args: unknown[]) => {
          reads.n++;
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return typeof v === "function" ? v.bind(target) : v;
    },
  }) as LayeredImage;
  return { layer: counted, reads };
}
