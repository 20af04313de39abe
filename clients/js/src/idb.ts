/**
 * `octet-client/idb`: a {@link Store} in the browser's IndexedDB, so a reload or a crashed tab
 * resumes where it left off (its cursor, its unanswered sends with their client ids, the ids it
 * already showed).
 *
 * @example
 * ```ts
 * import { connect } from "octet-client";
 * import { IdbStore } from "octet-client/idb";
 * const store = await IdbStore.open(`octet-${deviceId}`);
 * const client = await connect({ url, token, appid, store });
 * ```
 * @module
 */

import type { Cursor, PendingSend, Store, StoreSnapshot } from "./store.js";
import { DEFAULT_SEEN_LIMIT } from "./store.js";

const VERSION = 1;
const META = "meta";
const PENDING = "pending";
const SEEN = "seen";

/** A stored pending send, with its place in the queue. */
interface PendingRow extends PendingSend {
  order: number;
}

/** A stored dedupe key, with when it was added (to forget the oldest first). */
interface SeenRow {
  key: string;
  order: number;
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

/**
 * The IndexedDB store. One database per device (per token): two tabs of one device would replace
 * each other's connection anyway (close 4003), so each tab of a multi-tab app is its own device
 * with its own database.
 */
export class IdbStore implements Store {
  private order = 0;

  private constructor(
    private readonly db: IDBDatabase,
    private readonly seenLimit: number,
  ) {}

  /**
   * Opens (or creates) the database `name`. `options.factory` is the IndexedDB to use (default
   * `globalThis.indexedDB`; tests pass a fake); `options.seenLimit` how many dedupe keys to keep.
   */
  static async open(
    name: string,
    options: { seenLimit?: number; factory?: IDBFactory } = {},
  ): Promise<IdbStore> {
    const factory = options.factory ?? globalThis.indexedDB;
    if (!factory) throw new Error("octet-client/idb: this environment has no IndexedDB");
    const open = factory.open(name, VERSION);
    open.onupgradeneeded = () => {
      const db = open.result;
      db.createObjectStore(META);
      db.createObjectStore(PENDING, { keyPath: "id" }).createIndex("order", "order");
      db.createObjectStore(SEEN, { keyPath: "key" }).createIndex("order", "order");
    };
    const db = await request(open);
    return new IdbStore(db, options.seenLimit ?? DEFAULT_SEEN_LIMIT);
  }

  /** Closes the database. */
  close(): void {
    this.db.close();
  }

  async load(): Promise<StoreSnapshot> {
    const tx = this.db.transaction([META, PENDING, SEEN], "readonly");
    const cursor = (await request(tx.objectStore(META).get("cursor"))) as Cursor | undefined;
    const pending = (await request(
      tx.objectStore(PENDING).index("order").getAll(),
    )) as PendingRow[];
    const seen = (await request(tx.objectStore(SEEN).index("order").getAll())) as SeenRow[];
    await done(tx);
    this.order = Math.max(0, ...pending.map((p) => p.order), ...seen.map((s) => s.order));
    return {
      cursor: cursor ?? { epoch: null, held: 0 },
      pending: pending.map(({ order: _order, ...p }) => p),
      seen: seen.map((s) => s.key),
    };
  }

  async saveCursor(cursor: Cursor): Promise<void> {
    const tx = this.db.transaction(META, "readwrite");
    tx.objectStore(META).put({ epoch: cursor.epoch, held: cursor.held }, "cursor");
    await done(tx);
  }

  async putPending(send: PendingSend): Promise<void> {
    const tx = this.db.transaction(PENDING, "readwrite");
    const row: PendingRow = { ...send, files: [...send.files], order: ++this.order };
    tx.objectStore(PENDING).put(row);
    await done(tx);
  }

  async deletePending(id: string): Promise<void> {
    const tx = this.db.transaction(PENDING, "readwrite");
    tx.objectStore(PENDING).delete(id);
    await done(tx);
  }

  async addSeen(keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    const tx = this.db.transaction(SEEN, "readwrite");
    const store = tx.objectStore(SEEN);
    for (const key of keys) {
      const row: SeenRow = { key, order: ++this.order };
      store.put(row);
    }
    const count = store.count();
    count.onsuccess = () => {
      let excess = count.result - this.seenLimit;
      if (excess <= 0) return;
      // Forget the oldest keys.
      const walk = store.index("order").openCursor();
      walk.onsuccess = () => {
        const c = walk.result;
        if (!c || excess <= 0) return;
        c.delete();
        excess -= 1;
        c.continue();
      };
    };
    await done(tx);
  }
}
