/**
 * What every format image class does the same way around its own logic: refuse use after close
 * and writes when read-only, flush with host errors as MediumError "io", discard as a hint, and
 * begin a write session once (the first change's metadata update, retried after a failure).
 * A base class rather than a helper object: these are the images' own BlockBackend methods and
 * guards, so subclasses keep calling this.checkOpen() and the like, and only say what differs.
 */
import { MediumError, checkRequest, type BlockBackend, type Extent } from "../block.js";
import { asMediumError } from "./file-helpers.js";

export abstract class ImageBase implements BlockBackend {
  abstract readonly sectorSize: number;
  abstract readonly readOnly: boolean;
  abstract get path(): string;
  abstract get size(): number;
  abstract read(offset: number, buf: Uint8Array): Promise<void>;
  abstract write(offset: number, buf: Uint8Array): Promise<void>;
  abstract allocatedExtents(): Promise<Extent[]>;
  abstract close(): Promise<void>;

  protected closed = false;
  private session: Promise<void> | null = null;

  protected checkOpen(): void {
    if (this.closed) throw new MediumError("closed", "image is closed", { path: this.path });
  }

  protected checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) throw new MediumError("read-only", "image is opened read-only", { path: this.path });
  }

  /**
   * The session's first change: what the format updates on disk before any data (a new
   * modification UUID, a timestamp, an in-use mark), undoing its in-memory change if that fails.
   */
  protected abstract startSession(): Promise<void>;

  /** Make everything written so far durable (a read-write image only). */
  protected abstract writeBack(): Promise<void>;

  /**
   * Start the session once; every change awaits it. A failure is not remembered, so the next
   * change tries again. Host errors become "header write" ones unless the format named its own.
   */
  protected beginSession(): Promise<void> {
    if (!this.session) {
      this.session = this.startSession().catch((e) => {
        this.session = null;
        throw asMediumError(e, this.path, "header write");
      });
    }
    return this.session;
  }

  /** Whether a session began (it may still be under way): close then has changes to flush. */
  protected get sessionStarted(): boolean {
    return this.session !== null;
  }

  async flush(): Promise<void> {
    this.checkOpen();
    if (this.readOnly) return;
    try {
      await this.writeBack();
    } catch (e) {
      throw asMediumError(e, this.path, "flush");
    }
  }

  /** A hint by default: the request is checked and the data stays (formats that can drop blocks override). */
  async discard(offset: number, length: number): Promise<void> {
    this.checkWritable();
    checkRequest(this, offset, length, this.path);
  }
}
