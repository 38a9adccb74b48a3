/**
 * Commands that change drive settings: SET FEATURES, SET MULTIPLE MODE, INITIALIZE DEVICE
 * PARAMETERS.
 */
import type { Handler } from "./command-table.js";
import { MWDMA_MAX, PIO_MAX } from "./config.js";
import { attempt, describe, hex } from "./medium-io.js";
import { ERROR } from "./task-file.js";

/** SET FEATURES subcommands (features register). */
export const SETFEATURES = {
  WRITE_CACHE_ON: 0x02,
  TRANSFER_MODE: 0x03,
  LOOK_AHEAD_OFF: 0x55,
  WRITE_CACHE_OFF: 0x82,
  LOOK_AHEAD_ON: 0xaa,
} as const;

/**
 * Transfer mode values (count register of SET FEATURES 03h): 00h/01h PIO default, 08h+n PIO
 * flow-control mode n, 20h+n multiword DMA n, 40h+n Ultra DMA n. Returns false when the drive
 * does not offer the mode (IDENTIFY words 63/64/88), so the command is aborted.
 */
export function applyTransferMode(settings: { pioMode: number; dmaMode: { kind: "mwdma" | "udma"; mode: number } | undefined }, udmaMax: number, value: number): boolean {
  const mode = value & 0x07;
  switch (value >> 3) {
    case 0x00: // PIO default (with or without IORDY)
      if (mode > 1) return false;
      settings.pioMode = 0;
      return true;
    case 0x01:
      if (mode > PIO_MAX) return false;
      settings.pioMode = mode;
      return true;
    case 0x04:
      if (mode > MWDMA_MAX) return false;
      settings.dmaMode = { kind: "mwdma", mode };
      return true;
    case 0x08:
      if (mode > udmaMax) return false;
      settings.dmaMode = { kind: "udma", mode };
      return true;
    default: // single-word DMA (02h) and reserved values
      return false;
  }
}

export const setFeaturesCommand: Handler = async (dev, cmd) => {
  const sub = dev.tf.features;
  const disk = dev.kind === "ata";
  switch (sub) {
    case SETFEATURES.TRANSFER_MODE:
      if (!applyTransferMode(dev.settings, dev.config.udmaMax, dev.tf.count)) {
        dev.trace(`SET FEATURES: transfer mode ${hex(dev.tf.count)} not offered`);
        dev.finishError(cmd, ERROR.ABRT);
        return;
      }
      dev.finishOk(cmd);
      return;
    case SETFEATURES.WRITE_CACHE_ON:
      if (!disk) break;
      dev.settings.writeCache = true;
      dev.finishOk(cmd);
      return;
    case SETFEATURES.WRITE_CACHE_OFF: {
      if (!disk) break;
      // what was cached must reach the medium before the drive reports write-through
      if (dev.medium && !dev.medium.readOnly && dev.settings.writeCache) {
        const r = await attempt(() => dev.medium!.flush());
        if (!dev.live(cmd)) return;
        if (!r.ok) {
          dev.trace(`SET FEATURES: flush failed: ${describe(r.error)}`);
          dev.finishError(cmd, ERROR.ABRT);
          return;
        }
      }
      dev.settings.writeCache = false;
      dev.finishOk(cmd);
      return;
    }
    case SETFEATURES.LOOK_AHEAD_ON:
    case SETFEATURES.LOOK_AHEAD_OFF:
      if (!disk) break;
      dev.settings.lookAhead = sub === SETFEATURES.LOOK_AHEAD_ON; // no effect on an emulated medium
      dev.finishOk(cmd);
      return;
  }
  dev.trace(`SET FEATURES ${hex(sub)} not supported`);
  dev.finishError(cmd, ERROR.ABRT);
};

/** SET MULTIPLE MODE: count = sectors per DRQ block, a power of two up to IDENTIFY word 47; 0 turns it off. */
export const setMultipleCommand: Handler = (dev, cmd) => {
  const n = dev.tf.count;
  if (n !== 0 && (n > dev.config.maxMultiple || (n & (n - 1)) !== 0)) {
    dev.trace(`SET MULTIPLE MODE ${n} not supported`);
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  dev.settings.multipleCount = n;
  dev.finishOk(cmd);
};

/**
 * INITIALIZE DEVICE PARAMETERS: count = sectors per track, device bits 3:0 = heads - 1. The
 * cylinders follow from the capacity (at most 65535). Used by CHS-addressed READ/WRITE commands.
 */
export const initDeviceParamsCommand: Handler = (dev, cmd) => {
  const sectors = dev.tf.count;
  const heads = (dev.tf.device & 0x0f) + 1;
  const cylinders = sectors === 0 ? 0 : Math.min(0xffff, Math.floor(dev.capacity / (heads * sectors)));
  if (cylinders === 0) {
    dev.trace(`INITIALIZE DEVICE PARAMETERS: ${heads} heads, ${sectors} sectors not possible`);
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  dev.settings.chs = { cylinders, heads, sectors };
  dev.finishOk(cmd);
};
