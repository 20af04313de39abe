/**
 * The WebSocket the client uses: the browser's own, or `ws` in Node 20 (which has no global
 * WebSocket). Only the small common subset of the two is used.
 * @module
 */

/** The event a socket's `onclose` receives. */
export interface CloseEventLike {
  /** The close code (1006: no close frame). */
  code: number;
  /** The close reason. */
  reason: string;
}

/** The subset of the WHATWG WebSocket the client needs; both browsers and `ws` provide it. */
export interface WebSocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  /** Called once the connection is open. */
  onopen: ((event: unknown) => void) | null;
  /** Called with each message. */
  onmessage: ((event: { data: unknown }) => void) | null;
  /** Called once the connection closed. */
  onclose: ((event: CloseEventLike) => void) | null;
  /** Called on an error (a close follows). */
  onerror: ((event: unknown) => void) | null;
  /** Sends a text frame. */
  send(data: string): void;
  /** Closes the connection. */
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor (`globalThis.WebSocket`, or `ws`'s default export). */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

let cached: WebSocketConstructor | undefined;

/**
 * The browser's WebSocket when there is one, else `ws`, imported only then: the module name is
 * not a literal, so a browser bundler does not pull `ws` in.
 */
export async function defaultWebSocket(): Promise<WebSocketConstructor> {
  if (cached) return cached;
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (global) {
    cached = global;
    return global;
  }
  const name = "ws";
  try {
    const mod = (await import(name)) as { default?: unknown; WebSocket?: unknown };
    const ctor = (mod.WebSocket ?? mod.default) as WebSocketConstructor | undefined;
    if (!ctor) throw new Error("the `ws` module has no WebSocket export");
    cached = ctor;
    return ctor;
  } catch (err) {
    throw new Error(
      `octet-client: no global WebSocket and the \`ws\` package could not be loaded (${String(err)}); ` +
        "install `ws` or pass `WebSocket` in the connect options",
    );
  }
}

/** The text of a message event: `ws` may hand over a Buffer, browsers a string. */
export function messageText(data: unknown): string | null {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) {
    return new TextDecoder().decode(data as Uint8Array);
  }
  return null;
}

/** The WebSocket `readyState` of an open socket. */
export const OPEN = 1;

/**
 * A random UUID (v4) for client and call ids. `crypto.randomUUID` exists only in secure
 * contexts in browsers (https, localhost); `getRandomValues` everywhere.
 */
export function newId(): string {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
