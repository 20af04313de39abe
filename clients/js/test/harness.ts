/**
 * The real broker for the tests: `target/debug/octet serve` as a child process on a port the
 * kernel picks (read from the line it logs once bound), a temporary data dir, the backend API
 * for users and tokens, and a TCP proxy in front of it that a test can cut or point at a
 * restarted broker.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";
import { after, before } from "node:test";

import { connect, type AppMessage, type Client, type ConnectOptions } from "../src/index.js";
import type { LoggedEvent } from "../src/index.js";

export const APP_TOKEN = "test-app-token-0123456789";
export const APPID = "com.example.test";
/** The bound for every wait: generous, since the machine is shared with cargo builds. */
export const WAIT_MS = 30_000;
/** Each test's bound, so a client stuck in a reconnect loop fails the test instead of hanging. */
export const TEST_TIMEOUT_MS = 120_000;

const children = new Set<ChildProcess>();
// A broker never outlives the test process, whatever ends it.
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** The broker binary: `OCTET_BIN`, else the workspace's debug build. */
export function brokerBin(): string {
  const bin = process.env.OCTET_BIN ?? path.resolve(process.cwd(), "../../target/debug/octet");
  if (!existsSync(bin)) {
    throw new Error(`no broker binary at ${bin}: run \`cargo build\` first or set OCTET_BIN`);
  }
  return bin;
}

/** A real `octet serve` child. */
export class Broker {
  child!: ChildProcess;
  addr = "";
  readonly dataDir: string;

  private constructor(
    dataDir: string,
    private readonly extraArgs: string[],
  ) {
    this.dataDir = dataDir;
  }

  /** Starts a broker on a fresh temporary data dir; `args` replace the default limits. */
  static async start(args: string[] = []): Promise<Broker> {
    const broker = new Broker(mkdtempSync(path.join(tmpdir(), "octet-js-")), args);
    await broker.spawn();
    return broker;
  }

  /** (Re)starts the binary on this data dir and waits for `/readyz`. */
  async spawn(): Promise<void> {
    const child = spawn(
      brokerBin(),
      [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--app-token",
        APP_TOKEN,
        "--data-dir",
        this.dataDir,
        ...(this.extraArgs.length > 0
          ? this.extraArgs
          : ["--send-rate", "100000", "--send-burst", "100000"]),
      ],
      { env: { ...process.env, RUST_LOG: "info" }, stdio: ["ignore", "pipe", "ignore"] },
    );
    this.child = child;
    children.add(child);
    child.once("exit", () => children.delete(child));
    const addr = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the broker logged no address in 10 s")), 10_000);
      child.once("exit", (code) => reject(new Error(`the broker exited with ${code} at start`)));
      readline.createInterface({ input: child.stdout! }).on("line", (line) => {
        const m = /listening on http:\/\/([0-9.]+:[0-9]+)/.exec(line);
        if (m?.[1]) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
    });
    this.addr = addr;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const r = await fetch(`http://${addr}/readyz`);
        if (r.status === 200) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error("the broker never became ready");
      await sleep(50);
    }
  }

  /** SIGKILL, and wait for the exit. */
  async kill(): Promise<void> {
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGKILL");
    await exited;
  }

  /** Stops the broker and removes its data. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** One `POST /backend` request (the app token is added); the answer must be `result: true`. */
  async backend(request: Record<string, unknown>): Promise<Record<string, unknown>> {
    const r = await fetch(`http://${this.addr}/backend`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: APP_TOKEN, ...request }),
    });
    const answer = (await r.json()) as Record<string, unknown>;
    if (answer.result !== true) throw new Error(`backend ${JSON.stringify(request)}: ${JSON.stringify(answer)}`);
    return answer;
  }

  /** A token for `device` of the person at `address` (created if missing), and the user's uid. */
  async token(address: string, device: string): Promise<{ token: string; uid: number }> {
    const answer = await this.backend({
      op: "useradd",
      user: { address, token: { appid: APPID, device } },
    });
    const user = answer.user as { token: string; uid: number };
    return { token: user.token, uid: user.uid };
  }
}

/** A TCP proxy to the broker: `cut()` drops every connection, `target` can change. */
export class Proxy {
  target: string;
  /** While true, bytes from the broker to the clients are dropped (answers get lost). */
  holdDown = false;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly pairs = new Set<{ held: boolean }>();
  port = 0;

  constructor(target: string) {
    this.target = target;
    this.server = net.createServer((client) => {
      const [host, port] = this.target.split(":");
      const upstream = net.connect(Number(port), host);
      this.sockets.add(client);
      this.sockets.add(upstream);
      const pair = { held: false };
      this.pairs.add(pair);
      client.on("data", (d) => upstream.write(d));
      upstream.on("data", (d) => {
        if (!this.holdDown && !pair.held) client.write(d);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on("close", end);
      upstream.on("close", end);
      client.on("error", end);
      upstream.on("error", end);
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /**
   * From now on the broker's bytes on the open connections are dropped, and nothing closes
   * them: a connection gone silent, as after a laptop's sleep. New connections work.
   */
  silenceOpenConnections(): void {
    for (const pair of this.pairs) pair.held = true;
    this.pairs.clear();
  }

  /** Drops every connection at once, as a network failure does (no close frame). */
  cut(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

const clients = new Set<Client>();

/** Closes every client the tests made, so no reconnect loop keeps the test process alive. */
export function closeAllClients(): void {
  for (const client of clients) client.close();
  clients.clear();
}

/**
 * One real broker for the calling test file: started in `before`, stopped in `after` (every
 * client closed first). `broker()` is it, `ws()` its WebSocket URL.
 */
export function useBroker(): { broker: () => Broker; ws: () => string } {
  let started: Broker | undefined;
  before(async () => {
    started = await Broker.start();
  });
  after(async () => {
    closeAllClients();
    await started?.stop();
  });
  const broker = (): Broker => {
    if (started === undefined) throw new Error("the broker starts in before()");
    return started;
  };
  return { broker, ws: () => `ws://${broker().addr}/ws` };
}

/** Resolves with `promise`, or fails naming `what` after `WAIT_MS`. */
export async function within<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for: ${what}`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A device as the app sees it: every log event handed over, in the order handed over. */
export interface Device {
  client: Client;
  events: LoggedEvent[];
  messages: AppMessage[];
  welcomes: number;
}

/** Connects a device and records what its app is handed. */
export async function device(
  url: string | (() => string),
  token: string,
  extra: Partial<ConnectOptions> = {},
): Promise<Device> {
  const client = await connect({ url, token, appid: APPID, backoffBaseMs: 50, backoffMaxMs: 500, ...extra });
  clients.add(client);
  const d: Device = { client, events: [], messages: [], welcomes: 0 };
  client.on("event", (e) => {
    d.events.push(e);
  });
  client.on("message", (m) => {
    d.messages.push(m);
  });
  client.on("welcome", () => {
    d.welcomes += 1;
  });
  return d;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits (at most `WAIT_MS`) until `done()` holds; fails with `what` otherwise. */
export async function until(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await sleep(20);
  }
}

/** Whatever the app was handed: `seq` 1, 2, 3, … with no gap and no repeat, and no mid twice. */
export function assertInOrderOnce(name: string, d: Device, from = 1): void {
  d.events.forEach((e, i) => {
    if (e.seq !== from + i) {
      throw new Error(`${name}: event ${i} has seq ${e.seq}, expected ${from + i}`);
    }
  });
  const mids = d.messages.map((m) => m.mid);
  if (new Set(mids).size !== mids.length) throw new Error(`${name}: a message was handed over twice`);
}
