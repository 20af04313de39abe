/**
 * Where the client keeps what must survive a reconnect (and, with a durable store, a reload):
 * the cursor into the person's log, the sends not yet answered with `sent`, and the ids it has
 * already shown the app.
 * @module
 */

/** The position in the person's log: every event up to `held` was handed to the app. */
export interface Cursor {
  /** The log's epoch from `welcome`; `null` before the first login. */
  epoch: string | null;
  /** The highest contiguous `seq` the app has handled (0: nothing yet). */
  held: number;
}

/** A `send` that has not been answered with `sent` (or refused) yet. */
export interface PendingSend {
  /** The client id; the broker answers a retry with the same id with the same `sent`. */
  id: string;
  /** The recipient's address. */
  to: string;
  /** The body as the exact JSON text sent: a retry must be byte-identical. */
  bodyText: string | null;
  /** Ids of attached files. */
  files: string[];
  /** When it was queued (ms), for the app's display. */
  createdAt: number;
}

/** Everything a store holds, as loaded at connect. */
export interface StoreSnapshot {
  /** The log's epoch and `held`. */
  cursor: Cursor;
  /** Unanswered sends, oldest first. */
  pending: PendingSend[];
  /** Dedupe keys (`m:<mid>`, `c:<client id>`), oldest first. */
  seen: string[];
}

/**
 * The pluggable store. Each method resolves once the change is durable (for a durable store):
 * the client waits for `putPending` before the frame leaves, and for `saveCursor` before it
 * acks, so a crash never acks an event the app did not get, nor loses a send the app was promised.
 */
export interface Store {
  /** Everything stored, once at connect. */
  load(): Promise<StoreSnapshot>;
  /** Records the cursor. */
  saveCursor(cursor: Cursor): Promise<void>;
  /** Adds a send (or replaces one with the same id). */
  putPending(send: PendingSend): Promise<void>;
  /** Removes an answered or refused send. */
  deletePending(id: string): Promise<void>;
  /** Remembers dedupe keys; a store may forget the oldest beyond `seenLimit`. */
  addSeen(keys: string[]): Promise<void>;
}

/** How many dedupe keys a store keeps by default. */
export const DEFAULT_SEEN_LIMIT = 10_000;

/** The default store: in memory, so it lasts as long as the process (or tab). */
export class MemoryStore implements Store {
  private cursor: Cursor = { epoch: null, held: 0 };
  private readonly pending = new Map<string, PendingSend>();
  private readonly seen = new Set<string>();

  /** @param seenLimit how many dedupe keys to keep (the oldest are forgotten first). */
  constructor(private readonly seenLimit: number = DEFAULT_SEEN_LIMIT) {}

  async load(): Promise<StoreSnapshot> {
    return {
      cursor: { ...this.cursor },
      pending: [...this.pending.values()].map((p) => ({ ...p, files: [...p.files] })),
      seen: [...this.seen],
    };
  }

  async saveCursor(cursor: Cursor): Promise<void> {
    this.cursor = { ...cursor };
  }

  async putPending(send: PendingSend): Promise<void> {
    this.pending.set(send.id, { ...send, files: [...send.files] });
  }

  async deletePending(id: string): Promise<void> {
    this.pending.delete(id);
  }

  async addSeen(keys: string[]): Promise<void> {
    for (const key of keys) {
      this.seen.delete(key); // re-inserting moves it to the newest end
      this.seen.add(key);
    }
    while (this.seen.size > this.seenLimit) {
      const oldest = this.seen.values().next().value;
      if (oldest === undefined) break;
      this.seen.delete(oldest);
    }
  }
}
