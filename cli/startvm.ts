/**
 * startvm: boot a registered machine with the bundled Linux guest in this process, owning its
 * control channel until it stops. With --script the guest runs the file and vstor exits with the
 * script's status; without, the serial console is attached to this terminal (Ctrl-A x quits).
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { allowOnly, optNumber, optString, parseArgs, UsageError } from "./args.js";
import { ControlServer, type ControlRequest, type ControlReply } from "../machine/control-channel.js";
import { bootGuest, type GuestSession } from "../machine/guest-session.js";
import { VmStore } from "../machine/vm-store.js";
import { openMachineStorage, type AttachmentConfig } from "../machine/storage.js";
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
  const args = parseArgs(argv);
  allowOnly(args, ["type", "script", "timeout"]);
  const [name] = args.positional;
  if (!name) throw new UsageError("startvm needs a machine name or UUID");
  const type = optString(args, "type") ?? "headless";
  if (type !== "headless") throw new UsageError(`startvm --type ${type}: only 'headless' exists here (the console is the serial port)`);
  const scriptFile = optString(args, "script");
  const timeoutS = optNumber(args, "timeout") ?? 600;
  const store = new VmStore();
  const vm = store.get(name);
  const script = scriptFile !== undefined ? readFileSync(scriptFile, "utf8") : undefined;

  const bootFrom = ({ kernel: "kernel", disk: "disk", dvd: "cd" } as const)[vm.boot1 ?? "kernel"];

  const child = reexecWithFlags();
  if (child !== undefined) return child;
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
  };
  const storage = await openMachineStorage(vm.storageControllers, undefined, {
    // A guest-initiated eject persists in the machine's configuration (VBoxManage's semantics
    // unless the attachment has --tempeject on).
    onGuestEject: (ctlName, port, device) => recordDisc(ctlName, port, device, undefined),
  });

  let session: GuestSession | undefined;
  let finish!: (code: number) => void;
  const finished = new Promise<number>((r) => (finish = r));
  const control = await ControlServer.listen(store.machineDir(vm.name), vm.uuid, async (req: ControlRequest): Promise<ControlReply> => {
    if (!session) return { ok: false, error: "the machine is still starting" };
    switch (req.command) {
      case "poweroff":
        setImmediate(() => finish(script !== undefined ? 1 : 0));
        if (script !== undefined) err(`vstor: '${vm.name}' was powered off before the script finished\n`);
        return { ok: true };
      case "reset":
        await session.reset();
        return { ok: true };
      case "status":
        return { ok: true, data: { pid: process.pid } };
      case "hotplug": {
        const [ctlName = "", portArg, uuid, ...flags] = req.args ?? [];
        const port = Number(portArg);
        const disk = uuid
          ? { port, device: 0, type: "hdd" as const, medium: uuid, hotpluggable: true, nonrotational: flags.includes("nonrotational"), discard: flags.includes("discard") }
          : undefined;
        await storage.hotplug(ctlName, port, disk);
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

  const interactive = script === undefined;
  let inScript = false;
  try {
    session = await bootGuest({
      memoryMiB: vm.memoryMiB,
      setup: (host) => storage.setup(host),
      mode: interactive ? "shell" : "agent",
      bootFrom,
      // A kernel boot carries the script in its initramfs; a BIOS boot gets it through the agent.
      script: bootFrom === "kernel" ? script : undefined,
      bootTimeoutMs: timeoutS * 1000,
      onSerialByte: interactive ? (b) => process.stdout.write(Uint8Array.of(b)) : undefined,
      onLine: interactive
        ? undefined
        : (line) => {
            if (/^@@VSTOR START \S+$/.test(line)) inScript = true;
            else if (/^@@VSTOR EXIT \S+ /.test(line)) inScript = false;
            else if (inScript && !line.includes("@@VSTOR ")) out(line + "\n");
          },
    });
    if (interactive) attachTerminal(session, () => finish(0));
    else {
      const result = bootFrom === "kernel" ? session.console.result("0", timeoutS * 1000) : session.run(script!, timeoutS * 1000);
      result
        .then((r) => finish(r.status))
        .catch((e: Error) => {
          err(`vstor: ${e.message}\n`);
          finish(124);
        });
    }
    return await finished;
  } finally {
    control.close();
    await session?.stop().catch(() => undefined);
    await storage.close();
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
