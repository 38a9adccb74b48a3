/**
 * startvm: boot a registered machine with the bundled Linux guest in this process, owning its
 * control channel until it stops. With --script the guest runs the file and vstor exits with the
 * script's status; without, the serial console is attached to this terminal (Ctrl-A x quits).
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { allowOnly, optNumber, optString, parseArgs, UsageError } from "./args.js";
import { ControlServer, type ControlRequest, type ControlReply } from "../machine/control-channel.js";
import { bootGuest, type GuestSession } from "../machine/guest-session.js";
import { VmError, VmStore } from "../machine/vm-store.js";
import { openMachineStorage, type AttachmentConfig, type MachineStorage } from "../machine/storage.js";
import { runningSession } from "../machine/control-channel.js";
import { MediumManager } from "../media/medium-manager.js";
import { MediumLocks } from "../machine/medium-lock.js";
import { lockRequests, prepareDisksForPowerOn } from "../machine/power-on-media.js";
import { runningMachine, saveMachineState } from "../machine/running-machine.js";
import { discardSavedState, takeSnapshot } from "../machine/snapshots.js";
import { deleteSnapshot } from "../machine/snapshot-delete.js";
import type { Out } from "./vm-verbs.js";

/**
 * Node flags the emulator runs with, chosen by measurement (bench/boot.bench.ts): on two cores
 * V8's background compiler threads compete with the emulator's own thread.
 */
export const EMULATOR_NODE_FLAGS = ["--v8-pool-size=1"];

/** Re-run this command under the emulator's Node flags unless it already has them. */
function reexecWithFlags(): number | undefined {
  if (process.env.VSTOR_NO_REEXEC || EMULATOR_NODE_FLAGS.every((f) => process.execArgv.includes(f))) return undefined;
  const script = process.argv[1] ?? fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [...process.execArgv, ...EMULATOR_NODE_FLAGS, script, ...process.argv.slice(2)], {
    stdio: "inherit",
    env: { ...process.env, VSTOR_NO_REEXEC: "1" },
  });
  return r.status ?? 1;
}

export async function startvm(argv: string[], out: Out, err: Out): Promise<number> {
  const args = parseArgs(argv, ["agent"]);
  allowOnly(args, ["type", "script", "timeout", "agent"]);
  const [name] = args.positional;
  if (!name) throw new UsageError("startvm needs a machine name or UUID");
  const type = optString(args, "type") ?? "headless";
  if (type !== "headless") throw new UsageError(`startvm --type ${type}: only 'headless' exists here (the console is the serial port)`);
  const scriptFile = optString(args, "script");
  const agent = args.options.has("agent");
  if (agent && scriptFile !== undefined) throw new UsageError("startvm: --agent and --script exclude each other (run scripts with controlvm NAME runscript FILE)");
  const timeoutS = optNumber(args, "timeout") ?? 600;
  const store = new VmStore();
  let vm = store.get(name);
  const script = scriptFile !== undefined ? readFileSync(scriptFile, "utf8") : undefined;
  if (vm.pendingDelete) {
    throw new VmError("invalid", `vstor: deleting a snapshot of '${vm.name}' was interrupted; run 'vstor snapshot ${vm.name} delete ${vm.pendingDelete.snapshot}' again to finish it first`);
  }
  if (await runningSession(store.machineDir(vm.name))) throw new VmError("running", `vstor: machine '${vm.name}' is already running`);

  const bootFrom = ({ kernel: "kernel", disk: "disk", dvd: "cd" } as const)[vm.boot1 ?? "kernel"];

  const child = reexecWithFlags();
  if (child !== undefined) return child;

  // Locks first (a normal disk belongs to one running machine), then what power-on does to disks.
  const mm = new MediumManager();
  const locks = new MediumLocks();
  const lease = locks.acquire(vm.name, lockRequests(mm, vm.storageControllers));
  const savedState = vm.state === "saved" && vm.savedStateFile && existsSync(vm.savedStateFile) ? readFileSync(vm.savedStateFile) : undefined;
  try {
    await prepareDisksForPowerOn(store, vm, mm, { resuming: !!savedState });
    vm = store.get(vm.uuid);
    lease.set(lockRequests(mm, vm.storageControllers));
  } catch (e) {
    lease.release();
    throw e;
  }
  // The running VM is the only writer of its discs' configuration, so a guest eject and a
  // storageattach from another process are recorded in the order they happened.
  const recordDisc = (ctlName: string, port: number, device: number, image: string | undefined) => {
    const now = store.get(vm.uuid);
    const att = now.storageControllers.find((c) => c.name === ctlName)?.attachments.find((a) => a.port === port && a.device === device);
    if (att) {
      att.image = image;
      store.save(now);
    }
  };
  // Hot-plugged disks: the configuration follows what the guest now has on the port.
  const recordDisk = (ctlName: string, port: number, disk: AttachmentConfig | undefined) => {
    const now = store.get(vm.uuid);
    const ctl = now.storageControllers.find((c) => c.name === ctlName);
    if (!ctl) return;
    ctl.attachments = ctl.attachments.filter((a) => a.port !== port);
    if (disk) ctl.attachments.push(disk);
    store.save(now);
    running.mediaChanged(now);
  };
  let storage: MachineStorage;
  try {
    storage = await openMachineStorage(vm.storageControllers, mm, {
      // A guest-initiated eject persists in the machine's configuration (VBoxManage's semantics
      // unless the attachment has --tempeject on).
      onGuestEject: (ctlName, port, device) => recordDisc(ctlName, port, device, undefined),
    });
  } catch (e) {
    lease.release();
    throw e;
  }

  let session: GuestSession | undefined;
  let finish!: (code: number) => void;
  const finished = new Promise<number>((r) => (finish = r));
  const running = runningMachine({ session: () => session!, storage, lease, mm });
  const context = () => ({ store, mm, vm: store.get(vm.uuid) });
  // Snapshot work and savestate run one at a time (each reads and writes the definition).
  let queue: Promise<unknown> = Promise.resolve();
  const oneAtATime = <T,>(work: () => Promise<T>): Promise<T> => {
    const next = queue.then(work, work);
    queue = next.catch(() => undefined);
    return next;
  };
  const control = await ControlServer.listen(store.machineDir(vm.name), vm.uuid, async (req: ControlRequest): Promise<ControlReply> => {
    if (!session) return { ok: false, error: "the machine is still starting" };
    switch (req.command) {
      case "poweroff":
        setImmediate(() => finish(script !== undefined ? 1 : 0));
        if (script !== undefined) err(`vstor: '${vm.name}' was powered off before the script finished\n`);
        return { ok: true };
      case "reset": {
        // An agent guest answers scripts again once it has booted: reply when it has.
        const ready = agent ? session.console.waitFor("@@VSTOR AGENT", timeoutS * 1000, "the guest agent after the reset") : undefined;
        await session.reset();
        await ready;
        return { ok: true };
      }
      case "status":
        return { ok: true, data: { pid: process.pid } };
      case "savestate": {
        const file = await oneAtATime(() => saveMachineState(store, vm.uuid, running));
        setImmediate(() => finish(0));
        return { ok: true, data: { stateFile: file } };
      }
      case "snapshot-take": {
        const [snapName = "", live, description] = req.args ?? [];
        const snap = await oneAtATime(() => takeSnapshot(context(), snapName, { live: live === "live", description: description || undefined }, running));
        return { ok: true, data: { uuid: snap.uuid, name: snap.name } };
      }
      case "snapshot-delete": {
        await oneAtATime(async () => {
          await deleteSnapshot(context(), req.args?.[0] ?? "", {}, running);
          running.mediaChanged(store.get(vm.uuid));
        });
        return { ok: true };
      }
      case "runscript": {
        const r = await session.run(req.args?.[0] ?? "", Number(req.args?.[1] ?? 600) * 1000);
        return { ok: true, data: { status: r.status, output: r.output } };
      }
      case "hotplug": {
        const [ctlName = "", portArg, uuid, ...flags] = req.args ?? [];
        const port = Number(portArg);
        const disk = uuid
          ? { port, device: 0, type: "hdd" as const, medium: uuid, hotpluggable: true, nonrotational: flags.includes("nonrotational"), discard: flags.includes("discard") }
          : undefined;
        const extra = disk ? lockRequests(mm, [{ name: ctlName, bus: "sata", controller: "IntelAhci", hostIoCache: false, bootable: false, attachments: [disk] }]) : [];
        lease.add(extra);
        try {
          await storage.hotplug(ctlName, port, disk);
        } catch (e) {
          running.mediaChanged(store.get(vm.uuid)); // back to what the machine holds
          throw e;
        }
        recordDisk(ctlName, port, disk);
        return { ok: true };
      }
      case "changedisc": {
        const [ctlName, port, device, image, force] = req.args ?? [];
        await storage.changeDisc(ctlName, Number(port), Number(device), image || undefined, { force: force === "force" });
        recordDisc(ctlName, Number(port), Number(device), image || undefined);
        return { ok: true };
      }
      default:
        return { ok: false, error: `unknown command '${req.command}'` };
    }
  });
  const interactive = script === undefined && !agent;
  let inScript = false;
  try {
    session = await bootGuest({
      memoryMiB: vm.memoryMiB,
      setup: (host) => storage.setup(host),
      mode: interactive ? "shell" : "agent",
      bootFrom,
      initialState: savedState ? (savedState.buffer.slice(savedState.byteOffset, savedState.byteOffset + savedState.byteLength) as ArrayBuffer) : undefined,
      // A kernel boot carries the script in its initramfs; a BIOS boot or a resumed guest gets it through the agent.
      script: bootFrom === "kernel" && !savedState ? script : undefined,
      bootTimeoutMs: timeoutS * 1000,
      onSerialByte: interactive ? (b) => process.stdout.write(Uint8Array.of(b)) : undefined,
      onLine: interactive
        ? undefined
        : (line) => {
            if (/^@@VSTOR START \S+$/.test(line)) inScript = true;
            else if (/^@@VSTOR EXIT \S+ /.test(line)) inScript = false;
            else if (inScript && !line.includes("@@VSTOR ") && script !== undefined) out(line + "\n");
          },
    });
    if (savedState) {
      // Resumed: the saved state is used up (a snapshot's own copy stays with the snapshot).
      const now = store.get(vm.uuid);
      discardSavedState(now);
      store.save(now);
    }
    if (interactive) attachTerminal(session, () => finish(0));
    else if (script !== undefined) {
      const result = bootFrom === "kernel" && !savedState ? session.console.result("0", timeoutS * 1000) : session.run(script, timeoutS * 1000);
      result
        .then((r) => finish(r.status))
        .catch((e: Error) => {
          err(`vstor: ${e.message}\n`);
          finish(124);
        });
    } else out(`Machine '${vm.name}' is running (pid ${process.pid}); stop it with 'vstor controlvm ${vm.name} poweroff'.\n`);
    return await finished;
  } finally {
    control.close();
    await session?.stop().catch(() => undefined);
    await storage.close();
    lease.release();
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
    process.stdin.pause();
  }
}

/** Raw terminal <-> serial port. Ctrl-A x leaves (as in QEMU); Ctrl-A Ctrl-A sends one Ctrl-A. */
function attachTerminal(session: GuestSession, quit: () => void): void {
  const stdin = process.stdin;
  if (stdin.isTTY) stdin.setRawMode(true);
  let escape = false;
  stdin.on("data", (chunk: Buffer) => {
    let send = "";
    for (const b of chunk) {
      if (escape) {
        escape = false;
        if (b === 0x78 /* x */) return quit();
        if (b === 0x01) send += "\x01";
        continue;
      }
      if (b === 0x01) escape = true;
      else send += String.fromCharCode(b);
    }
    if (send) session.vm.sendSerial(send);
  });
  stdin.resume();
}
