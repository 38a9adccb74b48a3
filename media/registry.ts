/**
 * The media registry (the seed of VirtualBox's Virtual Media Manager): every image vstor opened or
 * created, known by UUID and location, persisted as VSTOR_HOME/media.json. A differencing image's
 * parent is found by UUID through it, and an image carrying a UUID already known at another
 * location is refused (two files claiming one identity would corrupt chains and snapshots).
 */
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { join, resolve } from "node:path";
import { MediumError } from "./block.js";
import { vstorHome, withFileLock, writeJsonAtomic } from "./io/node/persist.js";
import type { MediumType } from "./medium-types.js";

export type DeviceType = "hdd" | "dvd" | "floppy";

export interface MediumRecord {
  uuid: string;
  /** Absolute path, symlinks resolved. */
  location: string;
  format: string;
  deviceType: DeviceType;
  parentUuid?: string;
  /** Base media: how the medium behaves attached (absent: normal). Differencing images take their base's. */
  type?: MediumType;
  /**
   * Differencing images of an immutable medium: emptied each time vstor powers the VM on
   * (absent: true). Set on the base, it applies to all its differencing images.
   */
  autoReset?: boolean;
  description?: string;
  /** Free-form properties (mediumproperty set/get/delete). */
  properties?: Record<string, string>;
}

interface RegistryFile {
  version: 1;
  media: MediumRecord[];
}

/** Canonical form of a location: absolute, with symlinks resolved where the file exists. */
export function canonicalLocation(path: string): string {
  const abs = resolve(path);
  try {
    return realpathSync(abs);
  } catch {
    return abs;
  }
}

export class MediaRegistry {
  readonly path: string;

  constructor(home = vstorHome()) {
    this.path = join(home, "media.json");
  }

  private read(): RegistryFile {
    if (!existsSync(this.path)) return { version: 1, media: [] };
    try {
      const f = JSON.parse(readFileSync(this.path, "utf8")) as RegistryFile;
      if (!Array.isArray(f.media)) throw new Error("no media list");
      return f;
    } catch (e) {
      throw new MediumError("corrupt", `the media registry is unreadable: ${(e as Error).message}`, { path: this.path });
    }
  }

  private update<T>(fn: (f: RegistryFile) => T): T {
    return withFileLock(this.path, () => {
      const f = this.read();
      const result = fn(f);
      writeJsonAtomic(this.path, f);
      return result;
    });
  }

  list(deviceType?: DeviceType): MediumRecord[] {
    const all = this.read().media;
    return deviceType ? all.filter((m) => m.deviceType === deviceType) : all;
  }

  findByUuid(uuid: string): MediumRecord | undefined {
    const u = uuid.toLowerCase();
    return this.read().media.find((m) => m.uuid === u);
  }

  findByLocation(path: string): MediumRecord | undefined {
    const loc = canonicalLocation(path);
    return this.read().media.find((m) => m.location === loc);
  }

  /** A medium by UUID or by file name, as the CLI verbs accept either. */
  find(uuidOrPath: string): MediumRecord | undefined {
    return this.findByUuid(uuidOrPath) ?? this.findByLocation(uuidOrPath);
  }

  children(uuid: string): MediumRecord[] {
    const u = uuid.toLowerCase();
    return this.read().media.filter((m) => m.parentUuid === u);
  }

  /**
   * Check that `uuid` may be opened from `location`: refused with kind "duplicate-uuid" when the
   * registry knows that UUID for a different file. Call this before writing anything to the image.
   */
  checkIdentity(uuid: string, location: string): void {
    const known = this.findByUuid(uuid);
    const loc = canonicalLocation(location);
    if (known && known.location !== loc) {
      throw new MediumError(
        "duplicate-uuid",
        `cannot register ${loc}: its UUID {${uuid}} is already registered for ${known.location} ` +
          `(clone the image to give it a new UUID, or close the other medium first)`,
        { path: loc },
      );
    }
  }

  /** Remember a medium (idempotent for the same UUID and location). */
  register(record: MediumRecord): MediumRecord {
    const rec: MediumRecord = {
      ...record,
      uuid: record.uuid.toLowerCase(),
      parentUuid: record.parentUuid?.toLowerCase(),
      location: canonicalLocation(record.location),
    };
    return this.update((f) => {
      const sameUuid = f.media.find((m) => m.uuid === rec.uuid);
      if (sameUuid && sameUuid.location !== rec.location) this.checkIdentity(rec.uuid, rec.location);
      const sameLoc = f.media.findIndex((m) => m.location === rec.location);
      if (sameLoc >= 0) f.media.splice(sameLoc, 1); // the file now carries another identity
      const i = f.media.findIndex((m) => m.uuid === rec.uuid);
      if (i >= 0) {
        // Registering the same medium again keeps what the user set on it.
        const { type, autoReset, description, properties } = f.media[i]!;
        f.media[i] = { type, autoReset, description, properties, ...stripUndefined(rec) };
        return f.media[i]!;
      }
      f.media.push(rec);
      return rec;
    });
  }

  /** Forget a medium; refused while registered children depend on it. */
  unregister(uuid: string): void {
    const u = uuid.toLowerCase();
    this.update((f) => {
      const kids = f.media.filter((m) => m.parentUuid === u);
      if (kids.length) {
        throw new MediumError("in-use", `medium {${u}} has differencing children: ${kids.map((k) => k.location).join(", ")}`);
      }
      f.media = f.media.filter((m) => m.uuid !== u);
    });
  }

  /** Change what the registry records for a medium (after a move, a merge or setuuid). */
  updateRecord(uuid: string, change: Partial<MediumRecord>): void {
    const u = uuid.toLowerCase();
    this.update((f) => {
      const m = f.media.find((x) => x.uuid === u);
      if (!m) throw new MediumError("not-found", `medium {${u}} is not registered`);
      Object.assign(m, change, change.location ? { location: canonicalLocation(change.location) } : {});
    });
  }

  /**
   * Give a medium another UUID (modifymedium --setuuid): its registered children follow, so the
   * family stays linked. Refused ("duplicate-uuid") when another medium already has that UUID.
   */
  changeUuid(uuid: string, to: string): void {
    const [u, n] = [uuid.toLowerCase(), to.toLowerCase()];
    this.update((f) => {
      const m = f.media.find((x) => x.uuid === u);
      if (!m) throw new MediumError("not-found", `medium {${u}} is not registered`);
      const other = f.media.find((x) => x.uuid === n && x !== m);
      if (other) throw duplicateUuid(n, other.location, m.location);
      m.uuid = n;
      for (const c of f.media) if (c.parentUuid === u) c.parentUuid = n;
    });
  }

  /** Set (value a string) or delete (undefined) one free-form property of a medium. */
  setProperty(uuid: string, name: string, value: string | undefined): void {
    const u = uuid.toLowerCase();
    this.update((f) => {
      const m = f.media.find((x) => x.uuid === u);
      if (!m) throw new MediumError("not-found", `medium {${u}} is not registered`);
      const props = { ...(m.properties ?? {}) };
      if (value === undefined) delete props[name];
      else props[name] = value;
      if (Object.keys(props).length) m.properties = props;
      else delete m.properties;
    });
  }
}

/** The refusal for a UUID another registered medium already carries. */
export function duplicateUuid(uuid: string, owner: string, location: string): MediumError {
  return new MediumError("duplicate-uuid", `UUID {${uuid}} is already registered for ${owner}; ${location} cannot take it`, { path: location });
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
