/**
 * The control channel a running VM owns, as VBoxManage's controlvm talks to a running VirtualBox
 * session: one Unix socket per running machine, newline-delimited JSON requests and replies.
 * The VM process records the socket in its machine folder (session.json); the socket lives in the
 * temp dir because socket paths are limited to ~100 bytes and VSTOR_HOME may be deep.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeJsonAtomic } from "./vm-store.js";

export interface ControlRequest {
  command: string;
  args?: string[];
}
export interface ControlReply {
  ok: boolean;
  error?: string;
  data?: unknown;
}
export type ControlHandler = (req: ControlRequest) => Promise<ControlReply> | ControlReply;

interface SessionFile {
  pid: number;
  socket: string;
  startedAt: string;
}

const sessionPath = (machineDir: string) => join(machineDir, "session.json");

export class ControlServer {
  private constructor(
    private readonly server: Server,
    private readonly machineDir: string,
    readonly socketPath: string,
  ) {}

  static async listen(machineDir: string, uuid: string, handler: ControlHandler): Promise<ControlServer> {
    const socketPath = join(tmpdir(), `vstor-${uuid}.sock`);
    if (existsSync(socketPath)) {
      if (await isAlive(socketPath)) throw new Error(`vstor: the machine is already running (control socket ${socketPath} answers)`);
      rmSync(socketPath, { force: true }); // left behind by a crashed VM process
    }
    const server = createServer((sock) => {
      let buf = "";
      sock.setEncoding("utf8");
      sock.on("data", async (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          let reply: ControlReply;
          try {
            reply = await handler(JSON.parse(line) as ControlRequest);
          } catch (e) {
            reply = { ok: false, error: (e as Error).message };
          }
          if (!sock.destroyed) sock.write(JSON.stringify(reply) + "\n");
        }
      });
      sock.on("error", () => undefined);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => resolve());
    });
    server.unref();
    const session: SessionFile = { pid: process.pid, socket: socketPath, startedAt: new Date().toISOString() };
    writeJsonAtomic(sessionPath(machineDir), session);
    return new ControlServer(server, machineDir, socketPath);
  }

  close(): void {
    this.server.close();
    rmSync(this.socketPath, { force: true });
    rmSync(sessionPath(this.machineDir), { force: true });
  }
}

function isAlive(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(socketPath);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

/** The running session of a machine, if its process is alive and its socket answers. */
export async function runningSession(machineDir: string): Promise<SessionFile | undefined> {
  const p = sessionPath(machineDir);
  if (!existsSync(p)) return undefined;
  try {
    const s = JSON.parse(readFileSync(p, "utf8")) as SessionFile;
    return (await isAlive(s.socket)) ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Send one request to a running machine. */
export async function sendControl(machineDir: string, req: ControlRequest, timeoutMs = 30_000): Promise<ControlReply> {
  const session = await runningSession(machineDir);
  if (!session) return { ok: false, error: "the machine is not running" };
  return new Promise((resolve) => {
    const c = createConnection(session.socket);
    let buf = "";
    const timer = setTimeout(() => {
      c.destroy();
      resolve({ ok: false, error: `no answer from the machine within ${timeoutMs / 1000} s` });
    }, timeoutMs);
    c.setEncoding("utf8");
    c.on("connect", () => c.write(JSON.stringify(req) + "\n"));
    c.on("data", (d: string) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl >= 0) {
        clearTimeout(timer);
        c.destroy();
        resolve(JSON.parse(buf.slice(0, nl)) as ControlReply);
      }
    });
    c.on("error", (e) => {
      clearTimeout(timer);
      resolve({ ok: false, error: e.message });
    });
    c.on("close", () => {
      clearTimeout(timer);
      if (!buf.includes("\n")) resolve({ ok: false, error: "the machine closed the control channel" });
    });
  });
}
