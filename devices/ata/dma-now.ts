/**
 * The synchronous DMA path, for front ends allowed to complete inside the CPU loop (IDE): when
 * the medium can read or write synchronously (a page-cached raw file; BlockBackend.readSync) and
 * the transport offers dmaTransferNow, READ/WRITE DMA runs inside the guest's register writes.
 * A read fetches its data when the command is written; the data moves and the command completes
 * (status, interrupt) inside the guest's write that starts the bus master. No promise, no
 * event-loop turn, no host thread, no idle halt of the guest per request: the way v86's own
 * in-memory IDE works, while our data persists to the file.
 *
 * Whenever the medium declines (a conflicting request in flight, host cache off, a format with
 * no synchronous path), the rest of the command goes on along the asynchronous path, so the
 * result is the same either way.
 */
import type { AtaDevice, Cmd } from "./device.js";
import { attempt, describe, failedSector, mediumErrorBits, SECTOR, writeSectors } from "./medium-io.js";
import { DMA_CHUNK, type Request } from "./rw.js";
import { ERROR } from "./task-file.js";
import type { DmaOutcome } from "./transport.js";

/**
 * Start `req` on the synchronous path. false: not possible (nothing was done; use the
 * asynchronous path). `rest(lba, count)` continues a partly done command asynchronously.
 */
export function dmaNow(
  dev: AtaDevice,
  cmd: Cmd,
  req: Request,
  write: boolean,
  flushAfter: boolean,
  rest: (lba: number, count: number) => void,
): boolean {
  const medium = dev.medium!;
  if (!dev.canDmaNow || !(write ? medium.writeSync : medium.readSync)) return false;
  let lba = req.lba;
  let left = req.count;

  const mediumFailed = (e: unknown, op: "read" | "write", n: number): void => {
    dev.trace(`DMA ${op} error at LBA ${lba}: ${describe(e)}`);
    dev.finishError(cmd, mediumErrorBits(e, op), { lba: failedSector(e, lba, n), addressing: req.addressing });
  };
  const moved = (out: DmaOutcome, bytes: number): boolean => {
    if (!out.fault && out.bytes >= bytes) return true;
    const kind = out.fault ? "fault" : "short";
    dev.trace(`DMA ${kind}: moved ${out.bytes} of ${bytes} bytes`);
    dev.finishError(cmd, ERROR.ABRT, { dmaFault: kind });
    return false;
  };
  const finish = (): void => {
    if (!flushAfter) {
      dev.finishOk(cmd);
      return;
    }
    // Write cache off: the data must be durable before the command completes.
    void attempt(() => medium.flush()).then((f) => {
      if (!dev.live(cmd)) return;
      if (f.ok) dev.finishOk(cmd);
      else {
        dev.trace(`flush after write failed: ${describe(f.error)}`);
        dev.finishError(cmd, ERROR.ABRT);
      }
    });
  };

  const readStep = (): void => {
    if (left === 0) return finish();
    const n = Math.min(left, DMA_CHUNK);
    const buf = dev.scratch(n * SECTOR);
    let done: boolean;
    try {
      done = medium.readSync!(lba * SECTOR, buf);
    } catch (e) {
      return mediumFailed(e, "read", n);
    }
    if (!done) return rest(lba, left);
    dev.dmaNow(cmd, "in", buf, (out) => {
      if (!moved(out, buf.length)) return;
      lba += n;
      left -= n;
      readStep();
    });
  };

  const writeStep = (): void => {
    if (left === 0) return finish();
    const n = Math.min(left, DMA_CHUNK);
    const buf = dev.scratch(n * SECTOR);
    dev.dmaNow(cmd, "out", buf, (out) => {
      if (!moved(out, buf.length)) return;
      let done: boolean;
      try {
        done = medium.writeSync!(lba * SECTOR, buf);
      } catch (e) {
        return mediumFailed(e, "write", n);
      }
      if (!done) {
        // This chunk goes the asynchronous way (with its own copy: the scratch buffer is reused).
        const at = lba;
        void writeSectors(medium, at, buf.slice()).then((r) => {
          if (!dev.live(cmd)) return;
          if (!r.ok) return mediumFailed(r.error, "write", n);
          rest(at + n, left - n);
        });
        return;
      }
      lba += n;
      left -= n;
      writeStep();
    });
  };

  if (write) writeStep();
  else readStep();
  return true;
}
