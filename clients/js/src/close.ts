/**
 * What each WebSocket close code of proto/close-codes.md means for the reconnect loop.
 * @module
 */

/** How the client reacts to a close. */
export type CloseAction =
  /** Reconnect with exponential backoff and full jitter. */
  | "backoff"
  /** Reconnect at once (the first time; backoff if it keeps happening). */
  | "now"
  /** Stop: reconnecting with the same token or the same code would fail again or loop. */
  | "final";

/** Why a close is final, in words an app can branch on. */
export type FinalReason =
  | "auth_failed"
  | "replaced"
  | "revoked"
  | "disabled"
  | "protocol_error"
  | "closed_by_app";

/** The client's reading of one close code and reason. */
export interface CloseMeaning {
  /** Stop, reconnect at once, or reconnect after a backoff. */
  action: CloseAction;
  /** Set when `action` is `"final"`. */
  reason?: FinalReason;
}

/**
 * Maps a close code (and, for 4004, its reason) to what the client does. Every code in
 * proto/close-codes.md has a case; an unknown code is treated like a network failure (1006),
 * which the protocol says to handle as 1001.
 */
export function closeMeaning(code: number, reason: string): CloseMeaning {
  switch (code) {
    case 1000: // The broker's answer to our own close, or an orderly end: come back later.
      return { action: "backoff" };
    case 1001: // Shutting down, or a store failure at login: the token still works.
      return { action: "backoff" };
    case 1002: // We broke the WebSocket protocol: the same client would break it again.
      return { action: "final", reason: "protocol_error" };
    case 1003: // A binary frame: this client sends text only, so a stray one is not repeated.
      return { action: "backoff" };
    case 1007: // Invalid UTF-8: a client bug, retrying sends it again.
      return { action: "final", reason: "protocol_error" };
    case 1009: // A frame over 64 KiB: send() refuses those before they leave, so reconnect.
      return { action: "backoff" };
    case 1013: // server_full: come back after a backoff.
      return { action: "backoff" };
    case 4001: // auth_failed, login_required, a malformed login: not with this token.
      return { action: "final", reason: "auth_failed" };
    case 4002: // Login deadline: log in again right away.
      return { action: "now" };
    case 4003: // Replaced by a newer login of this uid: two copies would replace each other.
      return { action: "final", reason: "replaced" };
    case 4004:
      // The old token still works after the person was relinked; every other reason is a
      // token or user that is gone.
      if (reason.startsWith("linked to another person")) return { action: "now" };
      return { action: "final", reason: "revoked" };
    case 4005: // Idle timeout: a dead network; reconnect.
      return { action: "backoff" };
    case 4008: // Slow consumer: reconnect at once and let the catch-up resend what was lost.
      return { action: "now" };
    case 4010: // The backend disabled the user: wait until the app says so.
      return { action: "final", reason: "disabled" };
    default: // 1006 (no close frame: the network or the broker died) and anything new.
      return { action: "backoff" };
  }
}

/** Exponential backoff with full jitter: a uniform delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** An error the broker sent (an `error` frame) or a send the client refused itself. */
export class OctetError extends Error {
  /** The stable code from proto/errors.md, or a client code (`frame_too_large`, `queue_full`). */
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = "OctetError";
    this.code = code;
  }
}

/** The client stopped for good (a final close, or `close()`): nothing more will be sent. */
export class ClosedError extends Error {
  /** Why the client stopped. */
  readonly reason: FinalReason;
  /** The close code, when the broker closed. */
  readonly code: number | undefined;
  constructor(reason: FinalReason, code: number | undefined, message: string) {
    super(message);
    this.name = "ClosedError";
    this.reason = reason;
    this.code = code;
  }
}
