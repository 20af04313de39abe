/**
 * A small typed event emitter whose `emit` can wait for async handlers: the client hands the
 * app each event of the log and acks it only after every handler finished.
 * @module
 */

/** A handler of one event; it may return a promise, which the client awaits for log events. */
export type Handler<T> = (value: T) => void | Promise<void>;

/** A typed emitter over an event map `{name: payload}`. */
export class Emitter<Events extends object> {
  private readonly handlers = new Map<keyof Events, Set<Handler<never>>>();

  /** Adds a handler; the returned function removes it again. */
  on<K extends keyof Events>(name: K, handler: Handler<Events[K]>): () => void {
    let set = this.handlers.get(name);
    if (!set) {
      set = new Set();
      this.handlers.set(name, set);
    }
    set.add(handler as Handler<never>);
    return () => this.off(name, handler);
  }

  /** Removes a handler added with `on`. */
  off<K extends keyof Events>(name: K, handler: Handler<Events[K]>): void {
    this.handlers.get(name)?.delete(handler as Handler<never>);
  }

  /** Resolves with the next value of an event. */
  once<K extends keyof Events>(name: K): Promise<Events[K]> {
    return new Promise((resolve) => {
      const off = this.on(name, (value) => {
        off();
        resolve(value);
      });
    });
  }

  /** Calls every handler in turn, awaiting each; a handler's error is reported, not thrown. */
  protected async emitAwait<K extends keyof Events>(name: K, value: Events[K]): Promise<void> {
    const set = this.handlers.get(name);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        await (handler as Handler<Events[K]>)(value);
      } catch (err) {
        this.handlerFailed(name, err);
      }
    }
  }

  /** Calls every handler without waiting for promises (for live, unlogged frames). */
  protected emit<K extends keyof Events>(name: K, value: Events[K]): void {
    void this.emitAwait(name, value);
  }

  /** What to do with a handler that threw; the client logs to the console. */
  protected handlerFailed(name: keyof Events, err: unknown): void {
    console.error(`octet-client: a "${String(name)}" handler threw`, err);
  }
}
