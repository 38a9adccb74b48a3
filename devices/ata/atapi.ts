/**
 * The ATA side of PACKET (A0h) for ATAPI drives (ATA/ATAPI-7 9.9 / 7.18): receive the 12-byte
 * command packet, hand it to the AtapiPacketHandler, and carry its data phase — PIO in DRQ blocks
 * of at most the host's byte count limit, with the byte count in LBA mid/high and the interrupt
 * reason (CoD, IO) in the count register, or DMA — and its status phase.
 */
import type { Handler } from "./command-table.js";
import type { AtaDevice, Cmd } from "./device.js";
import { ERROR } from "./task-file.js";
import type { AtapiIo, AtapiResult, DataDirection } from "./transport.js";

/** Interrupt reason bits (count register) during PACKET. */
export const INT_REASON = { COD: 0x01, IO: 0x02, REL: 0x04 } as const;

/** Sense key ABORTED COMMAND, used when the data phase breaks or the handler fails. */
const SENSE_ABORTED_COMMAND = 0x0b;

/** The PIO byte count limit a host wrote: 0 (and FFFFh) mean FFFEh; odd values are rounded down. */
export function byteCountLimit(raw: number): number {
  if (raw === 0 || raw === 0xffff) return 0xfffe;
  return Math.max(2, raw & ~1);
}

export const packetCommand: Handler = (dev, cmd) => {
  const handler = dev.packetHandler;
  if (!handler) {
    dev.trace("PACKET: no packet layer attached");
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  const tf = dev.tf;
  const dma = (tf.features & 0x01) !== 0;
  const limit = byteCountLimit(tf.lbaMid | tf.lbaHigh << 8);
  const cdb = new Uint8Array(12);
  setReason(dev, INT_REASON.COD);
  const started = (): void => {
    const io = new PacketIo(dev, cmd, dma, limit);
    try {
      const r = handler.packet(cdb, io);
      if (r) r.then(undefined, (e: unknown) => io.fail(e));
    } catch (e) {
      io.fail(e);
    }
  };
  dev.pioOut(cmd, cdb, true, started, { interrupt: false, packet: true });
};

function setReason(dev: AtaDevice, reason: number): void {
  dev.tf.count = dev.tf.count & 0xf8 | reason;
}

class PacketIo implements AtapiIo {
  constructor(
    private readonly dev: AtaDevice,
    private readonly cmd: Cmd,
    readonly dma: boolean,
    readonly byteCountLimit: number,
  ) {}

  dataIn(data: Uint8Array): Promise<boolean> {
    return this.move("in", data);
  }

  dataOut(buf: Uint8Array): Promise<boolean> {
    return this.move("out", buf);
  }

  complete(result: AtapiResult): void {
    const { dev, cmd } = this;
    if (!dev.live(cmd)) return;
    setReason(dev, INT_REASON.IO | INT_REASON.COD);
    if (result.ok) dev.finishOk(cmd);
    else dev.finishError(cmd, (result.senseKey & 0x0f) << 4 | (result.error ?? 0) & 0x0f);
  }

  fail(e: unknown): void {
    this.dev.trace(`PACKET: packet layer failed: ${e instanceof Error ? e.message : String(e)}`);
    this.complete({ ok: false, senseKey: SENSE_ABORTED_COMMAND, error: ERROR.ABRT });
  }

  private move(direction: DataDirection, buf: Uint8Array): Promise<boolean> {
    const { dev, cmd } = this;
    if (!dev.live(cmd)) return Promise.resolve(false);
    if (buf.length === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      cmd.cancel = () => resolve(false);
      const done = (ok: boolean): void => {
        cmd.cancel = undefined;
        resolve(ok);
      };
      if (this.dma) {
        void this.moveDma(direction, buf).then(done);
        return;
      }
      let offset = 0;
      const step = (): void => {
        if (offset >= buf.length) {
          done(true);
          return;
        }
        const n = Math.min(this.byteCountLimit, buf.length - offset);
        const block = buf.subarray(offset, offset + n);
        offset += n;
        dev.tf.lbaMid = n & 0xff;
        dev.tf.lbaHigh = n >> 8 & 0xff;
        setReason(dev, direction === "in" ? INT_REASON.IO : 0);
        if (direction === "in") dev.pioIn(cmd, block, false, step);
        else dev.pioOut(cmd, block, false, step, { interrupt: true });
      };
      step();
    });
  }

  private async moveDma(direction: DataDirection, buf: Uint8Array): Promise<boolean> {
    const { dev, cmd } = this;
    const out = await dev.dma(cmd, direction, buf);
    if (!out) return false;
    if (out.fault || out.bytes < buf.length) {
      dev.trace(`PACKET: DMA ${out.fault ? "fault" : "short"} after ${out.bytes} of ${buf.length} bytes`);
      setReason(dev, INT_REASON.IO | INT_REASON.COD);
      dev.finishError(cmd, SENSE_ABORTED_COMMAND << 4 | ERROR.ABRT, { dmaFault: out.fault ? "fault" : "short" });
      return false;
    }
    return true;
  }
}
