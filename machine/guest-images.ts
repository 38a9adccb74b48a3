/**
 * Where the bundled guest lives: `make images` (images/build.mjs) writes the kernel, initramfs
 * and SeaBIOS into build/guest/ of the checkout, with a manifest of what went in.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export interface GuestImages {
  dir: string;
  kernel: string;
  initrd: string;
  bios: string;
  vgaBios?: string;
  kernelRelease?: string;
}

/** The checkout root, from source (machine/) or from the bundle (dist/). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(dir, "package.json"))) return dir;
    dir = dirname(dir);
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), "..");
}

export class GuestImagesMissing extends Error {
  constructor(dir: string, what: string) {
    super(`vstor: the guest images are not built (${what} missing in ${dir}); run 'make images'`);
    this.name = "GuestImagesMissing";
  }
}

export function guestImages(dir = process.env.VSTOR_GUEST_DIR ?? join(projectRoot(), "build", "guest")): GuestImages {
  const need = (name: string) => {
    const p = join(dir, name);
    if (!existsSync(p)) throw new GuestImagesMissing(dir, name);
    return p;
  };
  const vga = join(dir, "vgabios.bin");
  let kernelRelease: string | undefined;
  try {
    const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as { kernelRelease?: string; kernel?: { release?: string } };
    kernelRelease = manifest.kernelRelease ?? manifest.kernel?.release;
  } catch {
    // the manifest is informational
  }
  return {
    dir,
    kernel: need("vmlinuz"),
    initrd: need("initrd.img"),
    bios: need("bios.bin"),
    vgaBios: existsSync(vga) ? vga : undefined,
    kernelRelease,
  };
}
