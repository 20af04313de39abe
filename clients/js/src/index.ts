/**
 * `octet-client`: the official client of the octet message broker. `connect` gives a device
 * that logs in, reconnects, resumes its log, retries its sends with the same id, and hands the
 * app every event of its person's log once, in `seq` order.
 *
 * @example
 * ```ts
 * import { connect } from "octet-client";
 * const client = await connect({ url: "ws://127.0.0.1:8080/ws", token, appid: "com.example.app" });
 * client.on("message", async (m) => show(m.from, m.body));
 * const sent = await client.send("bob@example.com", { text: "hi" });
 * ```
 * @module
 */

export { connect, Client } from "./client.js";
export type {
  AppMessage,
  ClientEvents,
  ConnectOptions,
  ConnectionState,
  ResyncInfo,
} from "./types.js";
export { ClosedError, OctetError, backoffDelay, closeMeaning } from "./close.js";
export type { CloseAction, CloseMeaning, FinalReason } from "./close.js";
export type { Handler } from "./emitter.js";
export { Emitter } from "./emitter.js";
export * from "./frames.js";
export type { OwnMessage, SendOptions } from "./sender.js";
export type { CloseEventLike, WebSocketConstructor, WebSocketLike } from "./socket.js";
export { MemoryStore, DEFAULT_SEEN_LIMIT } from "./store.js";
export type { Cursor, PendingSend, Store, StoreSnapshot } from "./store.js";
export type { UploadOptions, UploadResult } from "./upload.js";
