/**
 * General Purpose Logging: READ LOG EXT (2Fh, PIO) and READ LOG DMA EXT (47h) (ACS-2 7.24/7.25).
 * Logs offered: 00h, the directory, and — when the transport queues — 10h, the NCQ command error
 * log. The directory lists exactly these, so a host that walks it (libata's ata_log_supported)
 * never asks for a page that then fails.
 *
 * Task file: LBA low = log address, LBA mid (+ HOB LBA mid) = first page, count (+ HOB) = pages.
 */
import type { Handler } from "./command-table.js";
import type { AtaDevice } from "./device.js";
import { hex, SECTOR } from "./medium-io.js";
import { count16, ERROR } from "./task-file.js";

export const LOG_DIRECTORY = 0x00;
export const LOG_NCQ_ERROR = 0x10;

/** Pages of each log this drive has (0: not supported). */
export function logPages(dev: AtaDevice, address: number): number {
  if (address === LOG_DIRECTORY) return 1;
  if (address === LOG_NCQ_ERROR && dev.config.ncq) return 1;
  return 0;
}

function directory(dev: AtaDevice): Uint8Array {
  const b = new Uint8Array(SECTOR);
  b[0] = 0x01; // General Purpose Logging version 1
  for (let address = 1; address < 256; address++) {
    const pages = logPages(dev, address);
    b[2 * address] = pages & 0xff;
    b[2 * address + 1] = pages >> 8;
  }
  return b;
}

/** The content of `pages` pages of log `address` from `page` on; undefined if out of range. */
export function readLog(dev: AtaDevice, address: number, page: number, pages: number): Uint8Array | undefined {
  const have = logPages(dev, address);
  if (pages === 0 || page + pages > have) return undefined;
  if (address === LOG_DIRECTORY) return directory(dev);
  return dev.ncqLog.readPage(); // reading it ends the NCQ error condition
}

export const readLogCommand: Handler = async (dev, cmd) => {
  const tf = dev.tf;
  const address = tf.lbaLow;
  const page = tf.lbaMid | tf.hobLbaMid << 8;
  const pages = count16(tf);
  const data = readLog(dev, address, page, pages);
  if (!data) {
    dev.trace(`${cmd.spec.name}: log ${hex(address)} page ${page} x${pages} not available`);
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  if (cmd.spec.protocol === "dma") {
    const out = await dev.dma(cmd, "in", data);
    if (!out) return;
    if (out.fault || out.bytes < data.length) {
      dev.finishError(cmd, ERROR.ABRT, { dmaFault: out.fault ? "fault" : "short" });
      return;
    }
    dev.finishOk(cmd);
    return;
  }
  let offset = 0;
  const step = (): void => {
    if (offset >= data.length) {
      dev.finishOk(cmd, { interrupt: false });
      return;
    }
    const block = data.subarray(offset, offset + SECTOR);
    offset += SECTOR;
    dev.pioIn(cmd, block, offset >= data.length, step);
  };
  step();
};
