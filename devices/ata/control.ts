/**
 * Identification, power management, diagnostics and reset commands.
 */
import type { Handler } from "./command-table.js";
import type { PowerMode } from "./config.js";
import { identifyDevice, identifyPacketDevice } from "./identify.js";
import { attempt, describe } from "./medium-io.js";
import { ERROR } from "./task-file.js";

/** NOP (00h): every subcommand ends in ABRT (ACS: NOP exists to be aborted, e.g. for queue tests). */
export const nopCommand: Handler = (dev, cmd) => dev.finishError(cmd, ERROR.ABRT);

/** A command that has nothing to do (RECALIBRATE). */
export const okCommand: Handler = (dev, cmd) => dev.finishOk(cmd);

/** IDENTIFY DEVICE: 512 bytes by PIO. A packet device aborts it with its signature in the task file. */
export const identifyCommand: Handler = (dev, cmd) => {
  if (dev.kind === "atapi") {
    dev.setSignature();
    dev.finishError(cmd, ERROR.ABRT);
    return;
  }
  const data = identifyDevice(dev.config, dev.settings, dev.capacity);
  dev.pioIn(cmd, data, true, () => dev.finishOk(cmd, { interrupt: false }));
};

export const identifyPacketCommand: Handler = (dev, cmd) => {
  const data = identifyPacketDevice(dev.config, dev.settings);
  dev.pioIn(cmd, data, true, () => dev.finishOk(cmd, { interrupt: false }));
};

/**
 * STANDBY (IMMEDIATE), IDLE (IMMEDIATE), SLEEP. The write cache is flushed before spinning down,
 * as a drive does. STANDBY/IDLE's timer value (count) is accepted and ignored: the drive never
 * goes to standby on its own.
 */
export function powerCommand(mode: Exclude<PowerMode, "active">): Handler {
  return async (dev, cmd) => {
    if (mode !== "idle" && dev.medium && !dev.medium.readOnly) {
      const r = await attempt(() => dev.medium!.flush());
      if (!dev.live(cmd)) return;
      if (!r.ok) {
        dev.trace(`${cmd.spec.name}: flush failed: ${describe(r.error)}`);
        dev.finishError(cmd, ERROR.ABRT);
        return;
      }
    }
    dev.settings.power = mode;
    dev.finishOk(cmd);
  };
}

/** CHECK POWER MODE: count = 00h standby, 80h idle, FFh active. */
export const checkPowerMode: Handler = (dev, cmd) => {
  const p = dev.settings.power;
  dev.tf.count = p === "standby" ? 0x00 : p === "idle" ? 0x80 : 0xff;
  dev.finishOk(cmd);
};

/**
 * EXECUTE DEVICE DIAGNOSTIC: signature and diagnostic code 01h (passed) in the error register,
 * ERR clear. The IDE front end combines both drives' results (device 0 reports 81h when device 1
 * failed); this core only reports its own drive. A packet device leaves DRDY clear.
 */
export const diagnosticCommand: Handler = (dev, cmd) => {
  dev.setSignature();
  dev.tf.error = 0x01;
  dev.finishOk(cmd, { status: dev.kind === "atapi" ? 0 : dev.readyStatus() });
};

/** DEVICE RESET (packet devices): a software reset of this drive alone, without an interrupt. */
export const deviceResetCommand: Handler = (dev, cmd) => {
  if (dev.settings.power === "sleep") dev.settings.power = "standby";
  try {
    dev.packetHandler?.reset?.("device");
  } catch (e) {
    dev.trace(`packet handler reset failed: ${String(e)}`);
  }
  dev.setSignature();
  dev.tf.error = 0x01;
  dev.finishOk(cmd, { status: 0, interrupt: false });
};
