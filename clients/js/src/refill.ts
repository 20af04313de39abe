/**
 * The refill after `welcome.recovered: false`: page `history` back from the new head to the
 * old cursor, and say honestly whether it got there.
 * @module
 */

import type { HistoryFrame, LoggedEvent } from "./frames.js";
import type { Cursor } from "./store.js";
import type { ResyncInfo } from "./types.js";

/** Why and from where a refill starts. */
export interface ResyncStart {
  previous: Cursor;
  reason: ResyncInfo["reason"];
  /** `welcome.seq`: the newest event of the log. */
  seq: number;
}

/**
 * Pages history back from `start.seq` (at most `limit` events) and returns the events after
 * the old cursor (same log) or all of them (another epoch, a rewound log), oldest first, with
 * the `resync` report.
 */
export async function refill(
  start: ResyncStart,
  limit: number,
  page: (before: number, limit: number) => Promise<HistoryFrame>,
): Promise<{ events: LoggedEvent[]; info: ResyncInfo }> {
  const floor = start.reason === "pruned" ? start.previous.held : 0;
  const events: LoggedEvent[] = [];
  let before = start.seq + 1;
  let reachedStart = false;
  while (events.length < limit) {
    const answer = await page(before, Math.min(500, limit - events.length));
    events.unshift(...answer.events.filter((e) => e.seq > floor));
    const first = answer.events[0];
    if (!answer.more || first === undefined) {
      reachedStart = true;
      break;
    }
    if (first.seq <= floor + 1) break;
    before = first.seq;
  }
  const lowest = events[0]?.seq ?? start.seq + 1;
  const complete = lowest <= floor + 1;
  const info: ResyncInfo = { reason: start.reason, previous: start.previous, seq: start.seq, complete };
  // Below the oldest retained event nothing can be paged any more: that range is gone.
  if (!complete && reachedStart) info.lost = { from: floor + 1, to: lowest - 1 };
  return { events, info };
}
