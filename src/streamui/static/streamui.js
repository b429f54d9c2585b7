// @ts-check
/**
 * streamui in the browser: one stream per browser, shared by all its tabs.
 *
 * `Connect()` renders a hidden element (#streamui-connect) whose Datastar effect mirrors
 * the tab's stream tokens and watched keys into its `data-streamui-state` attribute, and
 * loads this module. Every tab of the app (same origin and stream path) joins a
 * BroadcastChannel and asks for a Web Lock; the tab holding the lock (the leader) opens
 * one stream for the union of every tab's tokens and posts each event to the channel.
 * Every tab applies the events for the keys it watches to its own signals, through
 * Datastar's own `data-signals` attribute on an element of its own (so any Datastar
 * 1.0.x works, however it was loaded). A hidden tab keeps what arrives and applies it,
 * coalesced, once it is visible again.
 *
 * - The lock is released when the leader's tab closes, crashes or navigates away; the
 *   next tab in the lock's queue takes over at once and opens the stream again, caught
 *   up from the last event it saw (`since`), so nothing invalidated meanwhile is lost.
 * - A frozen leader keeps its lock: a visible tab that hears nothing from the leader
 *   (it posts a beat every second) pings it, and steals the lock if it stays silent.
 * - The stream closes a few seconds after every tab is hidden, and opens again when one
 *   is shown. A tab that joins, or adds scopes, makes the leader open a stream with the
 *   new union before it closes the old one, so no invalidation falls in between.
 * - Where the browser has no Web Locks or BroadcastChannel, or sharing is turned off,
 *   the tab holds a stream of its own (it leads a group of one). A tab whose scopes would
 *   take the shared stream over its scope limit opens its own stream with Datastar.
 * - A stream the server refuses (4xx) is not retried: the tabs it served get the reason
 *   in their `_streamError` signal and on the console, and with a 403 (a token that no
 *   longer verifies after a secret rotation or its expiry, or `authorize` said no) the
 *   page reloads once, for a fresh token; again only after 30 s, then longer.
 */

const PROTOCOL = 1;
const BEAT_MS = 1000;
/** A visible follower that heard nothing from the leader for this long pings it. */
const SILENT_MS = 3000;
/** ...and takes the lead if the leader still says nothing this long after the ping. */
const PING_MS = 1500;
/** The stream closes once every tab has been hidden for this long. */
const HIDDEN_CLOSE_MS = 5000;
/** The leader forgets tabs whose lock is gone (crashed) this often. */
const PRUNE_MS = 5000;
/** How long a replaced stream is still read (frames already on their way). */
const RETIRE_MS = 1000;
/** A stream serving tabs that left is replaced this long after the last of them left. */
const SHRINK_MS = 2000;
/** `since` for a stream that needs no catch-up (the latest time a Date can hold). */
const NO_CATCH_UP = "8640000000000000";
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;
/** A refused page reloads at once (within this jitter, so many tabs do not reload in
 * the same instant); if it is refused again, after RELOAD_BACKOFF_MS, then twice that... */
const RELOAD_JITTER_MS = 2000;
const RELOAD_BACKOFF_MS = 30000;
const RELOAD_MAX_MS = 600000;

/**
 * @typedef {{path: string, mergePath: string, maxTokens: number, maxScopes: number, mergeOver: number, share?: boolean, reload?: boolean}} Config
 * @typedef {{name: string, token: string, at: number, clock: string, scopes: string[]}} Token
 * @typedef {{tokens: Token[], visible: boolean}} TabInfo
 * @typedef {{_stream?: Record<string, unknown>, _streamData?: Record<string, unknown>, _streamError?: string, _streamTokens?: Record<string, string>}} Patch
 * @typedef {{status: number, reason: string, tokens: string[]}} Refusal
 * @typedef {{v: number, from: string, type: string, [field: string]: unknown}} Message
 */

/** A random id for this tab. */
function newId() {
  return Math.random().toString(36).slice(2, 10) + Date.now().toString(36);
}

/**
 * What a stream token says about itself: its scopes and when it was rendered (ms, and
 * as a point to catch up from: `<ms>-<instance>`, which names the rendering process).
 * Read without checking the signature, which only the server can; used to choose what
 * to ask for, never to grant anything.
 * @param {string} name
 * @param {string} token
 * @returns {Token}
 */
function readToken(name, token) {
  try {
    const base64 = token.split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(base64));
    // The render time, named after the process that rendered it (its clock).
    const at = Number(claims.t) || 0;
    const clock = typeof claims.i === "string" ? `${at}-${claims.i}` : String(at);
    return { name, token, at, clock, scopes: claims.s || [] };
  } catch {
    return { name, token, at: 0, clock: "0", scopes: [] };
  }
}

/**
 * The time or revision (ms) of a point: an event id (`<revision>-<broker>`) or a time.
 * @param {string} point
 */
function pointMs(point) {
  return parseInt(point, 10) || 0;
}

/**
 * The earliest of *points*.
 * @param {string[]} points
 */
function earliest(points) {
  return points.reduce((a, b) => (pointMs(b) < pointMs(a) ? b : a));
}

/**
 * The later of two points (*a* may be null).
 * @param {string | null} a
 * @param {string} b
 */
function later(a, b) {
  return a === null || pointMs(b) >= pointMs(a) ? b : a;
}

/**
 * Merge *patch* into *into* (later values win), both shaped like a signals patch.
 * @param {Patch} into
 * @param {Patch} patch
 */
function mergeInto(into, patch) {
  for (const space of /** @type {const} */ (["_stream", "_streamData"])) {
    const values = patch[space];
    if (values) into[space] = { ...into[space], ...values };
  }
  if (patch._streamError !== undefined) into._streamError = patch._streamError;
  if (patch._streamTokens) into._streamTokens = { ...into._streamTokens, ...patch._streamTokens };
}

/**
 * Only the keys in *keys*, or null if none is left.
 * @param {Patch} patch
 * @param {Set<string>} keys
 * @returns {Patch | null}
 */
function restrict(patch, keys) {
  /** @type {Patch} */
  const mine = {};
  let any = false;
  for (const space of /** @type {const} */ (["_stream", "_streamData"])) {
    const values = patch[space];
    if (!values) continue;
    for (const [key, value] of Object.entries(values)) {
      if (!keys.has(key)) continue;
      (mine[space] ??= {})[key] = value;
      any = true;
    }
  }
  return any ? mine : null;
}

/**
 * Parse a Server-Sent-Events body, calling *onEvent* for each event (or id-only frame).
 * @param {ReadableStream<Uint8Array>} body
 * @param {(event: {type: string, id: string | null, data: string, retry: number | null}) => void} onEvent
 */
async function readEvents(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  /** @type {{type: string, id: string | null, data: string[], retry: number | null}} */
  let event = { type: "", id: null, data: [], retry: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop() ?? "";
    for (const line of lines) {
      if (line === "") {
        onEvent({ ...event, data: event.data.join("\n") });
        event = { type: "", id: null, data: [], retry: null };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) text = text.slice(1);
      if (field === "event") event.type = text;
      else if (field === "data") event.data.push(text);
      else if (field === "id") event.id = text;
      else if (field === "retry" && /^\d+$/.test(text)) event.retry = Number(text);
    }
  }
}

/**
 * One browser tab of the app: follows the leader, or leads.
 */
class Tab {
  /**
   * @param {HTMLElement} connect
   * @param {Config} config
   */
  constructor(connect, config) {
    this.connect = connect;
    this.config = config;
    /** A group of one: sharing is off, or the browser lacks Web Locks or BroadcastChannel. */
    this.solo = config.share === false || !(navigator.locks && window.BroadcastChannel);
    this.id = newId();
    /** @type {Token[]} */
    this.tokens = [];
    /** @type {Set<string>} */
    this.keys = new Set();
    /** @type {Patch | null} what arrived while hidden */
    this.held = null;
    /** @type {HTMLElement | null} */
    this.inbox = null;
    /** @type {Patch | null} patches of this task, set together */
    this.outgoing = null;
    this.alone = false;
    /** Whether `_streamError` says something (cleared once a stream serves the tab). */
    this.failed = false;
    /** Whether a reload is on its way. */
    this.reloading = false;
    /** Whether it holds its tab lock (and has said hello). */
    this.present = false;
    /** Whether it waits in the leader lock's queue. */
    this.inQueue = false;
    /** Gives the leader's lock back. */
    this.releaseLead = () => {};
    this.closed = false;
    // What every tab keeps, so that any of them can take the lead at once:
    /** @type {Map<string, TabInfo>} */
    this.tabs = new Map();
    /** @type {Set<string>} the tabs the leader's stream serves */
    this.joined = new Set();
    /**
     * The last event id of the stream (`<revision>-<broker>`), or a time in ms: every
     * served tab has seen every invalidation up to it.
     * @type {string | null}
     */
    this.synced = null;
    /** @type {string | null} */
    this.leaderId = null;
    /** When the leader got the lock (Date.now(), the same clock in every tab). */
    this.leaderEpoch = 0;
    this.heardAt = performance.now();
    /** @type {number | null} */
    this.pingedAt = null;
    /** @type {Leader | null} */
    this.leader = null;
    this.queued = new AbortController();
    /** @type {(() => void)[]} */
    this.releases = [];
    this.channel = this.solo ? null : new BroadcastChannel(`streamui:${config.path}`);
    this.timer = 0;
  }

  get lock() {
    return `streamui:${this.config.path}`;
  }

  /** @param {string} id */
  tabLock(id) {
    return `${this.lock}:tab:${id}`;
  }

  get visible() {
    return document.visibilityState === "visible";
  }

  start() {
    this.timer = setInterval(() => this.tick(), BEAT_MS);
    new MutationObserver(() => this.readState()).observe(this.connect, {
      attributeFilter: ["data-streamui-state"],
    });
    document.addEventListener("visibilitychange", () => {
      this.show();
      if (this.visible) this.heardAt = performance.now();
      this.announce(false);
    });
    if (this.solo) {
      this.present = true;
      this.lead();
    } else if (this.channel) {
      this.channel.onmessage = (message) => this.receive(message.data);
      this.connect.dataset.streamuiRole = "follower";
      // Held while the tab lives: the leader forgets tabs whose lock is gone. The tab
      // introduces itself once it holds it, so it is never forgotten for lack of it.
      this.hold(this.tabLock(this.id), {}, () => {
        this.present = true;
        this.announce(true);
        this.queueForLead();
      });
    }
    this.readState();
  }

  /**
   * Hold the Web Lock *name* until the tab closes (or *onGranted*'s argument is called);
   * *onGranted* runs once it is ours.
   * @param {string} name
   * @param {LockOptions} options
   * @param {(release: () => void) => void} [onGranted]
   */
  hold(name, options, onGranted) {
    return navigator.locks.request(name, options, () => {
      if (this.closed) return undefined;
      return new Promise((resolve) => {
        const release = () => resolve(undefined);
        this.releases.push(release);
        onGranted?.(release);
      });
    });
  }

  queueForLead() {
    if (this.inQueue || this.closed) return;
    this.queued = new AbortController();
    this.seekLead({ signal: this.queued.signal });
  }

  /**
   * Ask for the leader's lock: queued (*signal*) or taken from its holder (*steal*).
   * @param {LockOptions} options
   */
  seekLead(options) {
    const queued = !options.steal;
    let granted = false;
    if (queued) this.inQueue = true;
    this.hold(this.lock, options, (release) => {
      granted = true;
      if (queued) this.inQueue = false;
      this.releaseLead = release;
      this.lead();
    }).catch(() => {
      // Stolen from this tab (it was frozen or busy), or withdrawn to steal it.
      if (queued && !granted) this.inQueue = false;
      if (granted) this.resign();
      if (!this.closed && !this.leader && !this.inQueue) this.queueForLead();
    });
  }

  lead() {
    this.leaderId = this.id;
    this.leaderEpoch = Math.max(Date.now(), this.leaderEpoch + 1);
    this.leader = new Leader(this);
    this.leader.reconcile();
  }

  resign() {
    this.leader?.stop();
    this.leader = null;
    if (!this.alone) this.connect.dataset.streamuiRole = "follower";
  }

  /** Read the tokens and keys that Connect's effect mirrors into the element. */
  readState() {
    const state = this.connect.dataset.streamuiState;
    if (!state) return;
    const [tokens, keys] = /** @type {[Record<string, unknown>, string[]]} */ (JSON.parse(state));
    this.tokens = Object.entries(tokens || {}).flatMap(([name, token]) =>
      typeof token === "string" ? [readToken(name, token)] : [],
    );
    this.keys = new Set(keys);
    this.announce(false);
  }

  /** @returns {TabInfo} */
  info() {
    return { tokens: this.tokens, visible: this.visible };
  }

  /**
   * @param {string} type
   * @param {Record<string, unknown>} [fields]
   */
  post(type, fields = {}) {
    if (!this.closed) this.channel?.postMessage({ v: PROTOCOL, from: this.id, type, ...fields });
  }

  /** Tell every tab what this one watches. @param {boolean} ask that they say too */
  announce(ask) {
    this.update(this.id, this.info());
    if (this.present) this.post("hello", { info: this.info(), ask });
  }

  /**
   * @param {string} id
   * @param {TabInfo} info
   */
  update(id, info) {
    const names = (/** @type {TabInfo | undefined} */ entry) =>
      entry ? entry.tokens.map((t) => t.name).join() : "";
    if (names(this.tabs.get(id)) !== names(info)) this.joined.delete(id);
    this.tabs.set(id, info);
    this.leader?.reconcile();
  }

  /** @param {Message} message */
  receive(message) {
    if (message?.v !== PROTOCOL || this.closed) return;
    const from = message.from;
    if (from === this.leaderId) {
      this.heardAt = performance.now();
      this.pingedAt = null;
    }
    switch (message.type) {
      case "hello":
        this.update(from, /** @type {TabInfo} */ (message.info));
        if (message.ask) this.announce(false);
        break;
      case "bye":
        this.tabs.delete(from);
        this.joined.delete(from);
        if (from === this.leaderId) this.leaderId = null;
        this.leader?.reconcile();
        break;
      case "lead":
      case "beat": {
        // Leaders are ordered by when they got the lock: a tab that led while it was
        // frozen, and woke up, is older than the one that took the lock from it.
        const epoch = Number(message.epoch);
        if (epoch < this.leaderEpoch) break;
        if (this.leader && from !== this.id) {
          // The lock was taken from this tab (its rejection follows; give it back to
          // be sure), so it follows now.
          this.resign();
          this.releaseLead();
          this.queueForLead();
        }
        if (epoch > this.leaderEpoch || from !== this.leaderId) {
          this.leaderId = from;
          this.leaderEpoch = epoch;
          this.announce(false);
        }
        this.heardAt = performance.now();
        this.pingedAt = null;
        this.synced = /** @type {string | null} */ (message.synced);
        this.joined = new Set(/** @type {string[]} */ (message.joined));
        if (this.joined.has(this.id)) this.served();
        break;
      }
      case "ping":
        this.leader?.beat();
        break;
      case "patch":
        if (from !== this.leaderId) return; // from a leader that lost the lock meanwhile
        this.synced = /** @type {string | null} */ (message.synced);
        this.apply(/** @type {Patch} */ (message.patch));
        break;
      case "overflow":
        if (message.tab === this.id) this.streamAlone();
        break;
      case "refused":
        if (message.tab === this.id) this.refused(/** @type {Refusal} */ (message.refusal));
        break;
      case "renew":
        if (from === this.leaderId) this.renew(/** @type {Record<string, string>} */ (message.tokens));
        break;
    }
  }

  /** Apply *patch* to this tab's signals now, or once it is visible. @param {Patch} patch */
  apply(patch) {
    const mine = restrict(patch, this.keys);
    if (!mine) return;
    if (this.visible) return this.write(mine);
    mergeInto((this.held ??= {}), mine);
  }

  /** Visible again: apply what arrived meanwhile, in one patch. */
  show() {
    if (!this.visible || !this.held) return;
    const held = this.held;
    this.held = null;
    this.write(held);
  }

  /**
   * Set *patch* on this tab's signals. Datastar applies a `data-signals` attribute when
   * it changes, reading its value after the current task: the patches of one task are
   * merged and set once.
   * @param {Patch} patch
   */
  write(patch) {
    if (this.outgoing) return mergeInto(this.outgoing, patch);
    this.outgoing = { ...patch };
    queueMicrotask(() => {
      const merged = /** @type {Patch} */ (this.outgoing);
      this.outgoing = null;
      if (!this.inbox) {
        this.inbox = document.createElement("div");
        this.inbox.hidden = true;
        this.connect.append(this.inbox);
      }
      // Datastar rewrites `$name` and `@name(` even inside string literals: escape both.
      const literal = JSON.stringify(merged).replace(/\$/g, "\\u0024").replace(/@/g, "\\u0040");
      this.inbox.setAttribute("data-signals", literal);
    });
  }

  tick() {
    if (this.leader) return this.leader.tick();
    if (!this.visible || this.alone) return;
    const now = performance.now();
    if (this.pingedAt === null) {
      if (now - this.heardAt > SILENT_MS) {
        this.pingedAt = now;
        this.post("ping");
      }
    } else if (now - this.pingedAt > PING_MS) {
      // The leader holds the lock but does not answer (a frozen tab): take over.
      console.info("streamui: the tab holding the stream does not answer; this one takes over");
      this.pingedAt = null;
      this.heardAt = now;
      this.queued.abort();
      this.seekLead({ steal: true });
    }
  }

  /**
   * The stream renewed tokens (same scopes, a later expiry), by name: this tab takes
   * those it has into its signals, where its next stream URL will read them.
   * @param {Record<string, string>} tokens
   */
  renew(tokens) {
    /** @type {Record<string, string>} */
    const mine = {};
    for (const t of this.tokens) {
      if (typeof tokens[t.name] === "string") mine[t.name] = tokens[t.name];
    }
    if (Object.keys(mine).length) this.write({ _streamTokens: mine });
  }

  /** A stream serves this tab: it no longer needs a reload, nor shows an error. */
  served() {
    if (!this.reloading) {
      try {
        sessionStorage.removeItem(this.reloadsKey);
      } catch {
        // No sessionStorage (e.g. a sandboxed frame): nothing was counted.
      }
    }
    if (this.failed) {
      this.failed = false;
      this.write({ _streamError: "" });
    }
  }

  get reloadsKey() {
    return `streamui:reloads:${this.config.path}`;
  }

  /**
   * The server refused the stream for this tab: say why, and with a 403 (its token no
   * longer verifies, or it may no longer watch these scopes) reload once for a fresh
   * page; a page refused again waits longer before each reload.
   * @param {Refusal} refusal
   */
  refused(refusal) {
    const { status, reason } = refusal;
    console.error(`streamui: the stream was refused (${status}): ${reason}`);
    this.failed = true;
    this.write({ _streamError: reason || `the stream was refused (${status})` });
    if (status !== 403 || this.config.reload === false || this.reloading) return;
    this.reloading = true;
    let count = 0;
    try {
      count = Number(sessionStorage.getItem(this.reloadsKey)) || 0;
      sessionStorage.setItem(this.reloadsKey, String(count + 1));
    } catch {
      // No sessionStorage: every refusal counts as the first, still spread by the jitter.
    }
    const delay =
      count === 0
        ? Math.random() * RELOAD_JITTER_MS
        : Math.min(RELOAD_BACKOFF_MS * 2 ** (count - 1), RELOAD_MAX_MS);
    console.info(`streamui: reloading the page in ${Math.round(delay / 1000)} s`);
    setTimeout(() => location.reload(), delay);
  }

  /** This tab's scopes do not fit in the shared stream: it opens its own. */
  streamAlone() {
    if (this.alone) return;
    this.alone = true;
    ownStream(this.connect);
  }

  close() {
    if (this.closed) return;
    this.post("bye");
    this.closed = true;
    clearInterval(this.timer);
    this.leader?.stop();
    this.queued.abort();
    for (const release of this.releases) release();
    this.channel?.close();
  }
}

/**
 * The tab that holds the lock: opens the shared stream and posts its events.
 */
class Leader {
  /** @param {Tab} tab */
  constructor(tab) {
    this.tab = tab;
    /** @type {Connection | null} the stream events come from */
    this.live = null;
    /** @type {Connection | null} a stream being opened to replace it */
    this.opening = null;
    /** @type {number | null} */
    this.hiddenSince = null;
    /** @type {number | null} when to drop the scopes of tabs that left */
    this.shrinkAt = null;
    this.retryMs = RETRY_MIN_MS;
    this.retryAt = 0;
    this.prunedAt = performance.now();
    /** @type {{parts: string[], token: string} | null} the last tokens the server merged */
    this.merged = null;
    /** @type {Set<Connection>} streams replaced a moment ago, still read */
    this.retiring = new Set();
    /** @type {Set<string>} tabs whose scopes do not fit in the shared stream */
    this.overflow = new Set();
    /** @type {Set<string>} tabs whose tokens the server refused (they reload) */
    this.refusedTabs = new Set();
    /** @type {string | null} the tokens of a stream the server refused: not tried again */
    this.stopped = null;
    tab.connect.dataset.streamuiRole = tab.solo ? "tab" : "leader";
    this.say("lead");
  }

  /** @param {string} type "lead" (once), or "beat" */
  say(type) {
    const tab = this.tab;
    tab.post(type, { epoch: tab.leaderEpoch, synced: tab.synced, joined: [...tab.joined] });
  }

  beat() {
    this.say("beat");
  }

  tick() {
    this.beat();
    if (performance.now() - this.prunedAt > PRUNE_MS) {
      this.prunedAt = performance.now();
      void this.prune();
    }
    this.reconcile();
  }

  /** Forget tabs that are gone without a word (their tab lock was released). */
  async prune() {
    if (this.tab.solo) return;
    const state = await navigator.locks.query();
    const held = new Set((state.held || []).map((lock) => lock.name));
    const tab = this.tab;
    let changed = false;
    for (const id of tab.tabs.keys()) {
      if (id !== tab.id && !held.has(tab.tabLock(id))) {
        tab.tabs.delete(id);
        tab.joined.delete(id);
        changed = true;
      }
    }
    if (changed) this.reconcile();
  }

  /** Open, replace or close the stream so that it serves what the open tabs need. */
  reconcile() {
    const tab = this.tab;
    if (tab.leader !== this) return;
    const now = performance.now();
    if (![...tab.tabs.values()].some((info) => info.visible)) {
      this.hiddenSince ??= now;
      if (now - this.hiddenSince >= HIDDEN_CLOSE_MS) this.stop();
      return;
    }
    this.hiddenSince = null;
    if (this.opening || now < this.retryAt) return;
    const waiting = [...tab.tabs.entries()].filter(
      ([id, info]) => info.tokens.length && !tab.joined.has(id) && !this.excluded(id),
    );
    // A refused stream is not asked for again until the tabs' tokens change.
    if (this.stopped !== null && this.stopped === this.tokenSet()) return;
    this.stopped = null;
    if (this.live && waiting.length === 0) {
      // Tabs left: a stream for the ones still here, once the comings and goings of a
      // navigation are over.
      if (this.live.served.every((id) => tab.tabs.has(id))) return;
      this.shrinkAt ??= now + SHRINK_MS;
      if (now < this.shrinkAt) return;
    }
    this.shrinkAt = null;
    void this.open();
  }

  /** @param {string} id */
  excluded(id) {
    return this.overflow.has(id) || this.refusedTabs.has(id);
  }

  /** The tokens of the tabs a stream would serve, as one string. */
  tokenSet() {
    const tab = this.tab;
    return [...tab.tabs.entries()]
      .filter(([id]) => !this.excluded(id))
      .flatMap(([, info]) => info.tokens.map((t) => t.token))
      .sort()
      .join(" ");
  }

  /** Open a stream for every tab (that fits), then let it replace the live one. */
  async open() {
    const tab = this.tab;
    const { maxScopes } = tab.config;
    const live = this.live;
    // Tabs already served first, so a tab that does not fit is a new one.
    const ids = [...tab.tabs.keys()].sort(
      (a, b) => Number(!tab.joined.has(a)) - Number(!tab.joined.has(b)),
    );
    /** @type {Map<string, Token>} the newest token of each name (a name is a scope set) */
    const chosen = new Map();
    /** @type {Set<string>} */
    const scopes = new Set();
    /** @type {string[]} */
    const served = [];
    /** @type {string[]} points to catch up from: event ids, or render times in ms */
    const since = [];
    for (const id of ids) {
      const info = /** @type {TabInfo} */ (tab.tabs.get(id));
      if (this.excluded(id) || !info.tokens.length) continue;
      const own = new Set(info.tokens.flatMap((t) => t.scopes));
      if (own.size > maxScopes) {
        // No stream may watch that many: the server would refuse it (fragments joined
        // the page until it watched too much). Say so instead of asking.
        this.overflow.add(id);
        const reason = `too many scopes: ${own.size}, the limit is ${maxScopes}`;
        this.refuse(id, { status: 400, reason, tokens: [] });
        continue;
      }
      const more = new Set([...own].filter((s) => !scopes.has(s)));
      if (scopes.size + more.size > maxScopes) {
        // More scopes than one stream may watch: that tab streams on its own.
        this.overflow.add(id);
        tab.post("overflow", { tab: id });
        if (id === tab.id) tab.streamAlone();
        continue;
      }
      for (const s of more) scopes.add(s);
      for (const t of info.tokens) {
        const known = chosen.get(t.name);
        if (!known || known.at < t.at) chosen.set(t.name, t);
      }
      served.push(id);
      // Catch up from the oldest point a served tab may have missed something: its
      // render, for a tab not served yet; for the others, nothing while the live stream
      // serves them until this one opens, else the last point the tabs reached.
      if (!tab.joined.has(id)) since.push(...info.tokens.map((t) => t.clock));
      else if (!live) since.push(tab.synced ?? String(Math.min(...info.tokens.map((t) => t.at))));
    }
    if (!served.length) return;
    // Nothing to catch up on: the live stream serves every tab until this one opens.
    const from = since.length ? earliest(since) : live ? NO_CATCH_UP : null;
    const connection = new Connection(this, served, from);
    this.opening = connection;
    /** @type {string[]} */
    let tokens;
    try {
      tokens = await this.compact([...chosen.values()].map((t) => t.token), connection.abort.signal);
    } catch (error) {
      if (connection.abort.signal.aborted) return;
      if (error instanceof Refused) return this.refused(connection, error.refusal);
      console.error(`streamui: ${error instanceof Error ? error.message : error}`);
      this.ended(connection, null);
      return;
    }
    void connection.run(tokens);
  }

  /**
   * *tokens*, or fewer that grant the same scopes: over a few tokens, the URL gets one
   * that the server merged (it merges a previous merge and the tokens added since).
   * @param {string[]} tokens
   * @param {AbortSignal} signal
   * @returns {Promise<string[]>}
   */
  async compact(tokens, signal) {
    const { maxTokens, mergeOver } = this.tab.config;
    const last = this.merged;
    let list = tokens;
    if (last && last.parts.every((token) => tokens.includes(token))) {
      list = [last.token, ...tokens.filter((token) => !last.parts.includes(token))];
    }
    if (list.length <= mergeOver) return list;
    while (list.length > 1) {
      const merged = await merge(this.tab.config, list.slice(0, maxTokens), signal);
      list = [merged, ...list.slice(maxTokens)];
    }
    this.merged = { parts: tokens, token: list[0] };
    return list;
  }

  /**
   * *connection* opened: it replaces the live stream. Its opening frame's id says up to
   * where the server owes nothing more to the tabs it serves.
   * @param {Connection} connection
   * @param {string | null} id
   */
  opened(connection, id) {
    if (this.opening !== connection) return;
    this.opening = null;
    // The old stream keeps going a moment: a frame it was sent just before this one
    // subscribed may still be on its way (events are revisions: applying one twice is
    // harmless).
    const old = this.live;
    if (old) {
      this.retiring.add(old);
      setTimeout(() => {
        this.retiring.delete(old);
        old.close();
      }, RETIRE_MS);
    }
    this.live = connection;
    this.retryMs = RETRY_MIN_MS;
    const tab = this.tab;
    tab.joined = new Set(connection.served);
    if (id !== null) tab.synced = id;
    if (tab.joined.has(tab.id)) tab.served();
    this.beat();
    this.reconcile(); // tabs that came meanwhile
  }

  /**
   * The server refused *connection* (a 4xx): the tabs it would serve are told why and it
   * is not retried. When tokens were refused, only the tabs holding them are (they
   * reload), and a stream opens at once for the others.
   * @param {Connection} connection
   * @param {Refusal} refusal
   */
  refused(connection, refusal) {
    if (this.opening === connection) this.opening = null;
    if (this.live === connection) this.live = null;
    const tab = this.tab;
    const bad = new Set(refusal.tokens);
    if (bad.size) {
      const holders = [...tab.tabs.entries()]
        .filter(([, info]) => info.tokens.some((t) => bad.has(t.token)))
        .map(([id]) => id);
      if (holders.length) {
        for (const id of holders) this.refuse(id, refusal);
        this.reconcile();
        return;
      }
      if (this.merged && bad.has(this.merged.token)) {
        // A merge of the tabs' tokens: merge again from them, which names the culprits.
        this.merged = null;
        this.reconcile();
        return;
      }
      // The tabs that held them left (or renewed them) while the server answered: the
      // others are not refused, and a stream without those tokens opens at once.
      this.reconcile();
      return;
    }
    this.stopped = this.tokenSet();
    for (const id of connection.served) this.refuse(id, refusal);
  }

  /**
   * @param {string} id
   * @param {Refusal} refusal
   */
  refuse(id, refusal) {
    const tab = this.tab;
    if (refusal.tokens.length) this.refusedTabs.add(id);
    tab.joined.delete(id); // not served: its beats must not clear the error
    if (id === tab.id) tab.refused(refusal);
    else tab.post("refused", { tab: id, refusal });
  }

  /**
   * *connection* failed to open, or ended.
   * @param {Connection} connection
   * @param {number | null} retry the delay the server asked for, if any
   */
  ended(connection, retry) {
    if (this.opening === connection) this.opening = null;
    if (this.live === connection) this.live = null;
    const delay = retry ?? this.retryMs;
    this.retryMs = retry === null ? Math.min(this.retryMs * 2, RETRY_MAX_MS) : RETRY_MIN_MS;
    this.retryAt = performance.now() + delay;
    setTimeout(() => this.reconcile(), delay);
  }

  /**
   * An event from *connection*: post it to the other tabs and apply it here.
   * @param {Connection} connection
   * @param {string} data
   * @param {string | null} id
   */
  event(connection, data, id) {
    if (connection !== this.live && !this.retiring.has(connection)) return;
    if (!data.startsWith("signals ")) return;
    const tab = this.tab;
    /** @type {Patch} */
    const signals = JSON.parse(data.slice("signals ".length));
    const renewed = signals._streamTokens;
    delete signals._streamTokens;
    if (renewed) {
      // Tokens signed again before they expire: every tab takes its own (the leader's
      // next stream URL is built from the tabs' tokens, merged again if need be).
      /** @type {Record<string, string>} */
      const tokens = {};
      for (const [name, token] of Object.entries(renewed)) {
        if (typeof token === "string") tokens[name] = token;
      }
      this.merged = null;
      tab.post("renew", { tokens });
      tab.renew(tokens);
    }
    if (connection === this.live && id !== null) tab.synced = later(tab.synced, id);
    if (!signals._stream && !signals._streamData) return;
    tab.post("patch", { patch: signals, synced: tab.synced });
    tab.apply(signals);
  }

  stop() {
    for (const connection of [this.live, this.opening, ...this.retiring]) connection?.close();
    this.retiring.clear();
    this.live = this.opening = null;
  }
}

/**
 * Have the server merge *tokens* into one (for a union over the endpoint's token limit).
 * @param {Config} config
 * @param {string[]} tokens
 * @param {AbortSignal} signal
 * @returns {Promise<string>}
 */
async function merge(config, tokens, signal) {
  const query = tokens.map((token) => `t=${encodeURIComponent(token)}`).join("&");
  const response = await fetch(`${config.mergePath}?${query}`, { cache: "no-store", signal });
  if (response.status >= 400 && response.status < 500) {
    throw new Refused(await refusal(response, tokens));
  }
  if (!response.ok) {
    throw new Error(`merging stream tokens failed (${response.status}): ${await response.text()}`);
  }
  return (await response.json()).token;
}

/** A 4xx answer: the request is not to be retried as it is. */
class Refused extends Error {
  /** @param {Refusal} refusal */
  constructor(refusal) {
    super(`refused (${refusal.status}): ${refusal.reason}`);
    this.refusal = refusal;
  }
}

/**
 * What a 4xx *response* to a request with *tokens* says: its status, its reason (the
 * body) and which of the tokens no longer verify (the `streamui-refused-tokens` header
 * lists their indexes).
 * @param {Response} response
 * @param {string[]} tokens
 * @returns {Promise<Refusal>}
 */
async function refusal(response, tokens) {
  const text = await response.text();
  let reason = text;
  try {
    // Litestar's error body: {"status_code": ..., "detail": "<the reason>"}.
    const detail = JSON.parse(text).detail;
    if (typeof detail === "string") reason = detail;
  } catch {
    // Not JSON: the body is the reason.
  }
  reason = reason.slice(0, 300);
  const indexes = (response.headers.get("streamui-refused-tokens") || "").split(",");
  const refused = indexes.flatMap((index) => (/^\d+$/.test(index) && tokens[+index]) || []);
  return { status: response.status, reason, tokens: refused };
}

/**
 * One request to the stream endpoint.
 */
class Connection {
  /**
   * @param {Leader} leader
   * @param {string[]} served the tabs it serves
   * @param {string | null} since catch up on what was invalidated after this point
   */
  constructor(leader, served, since) {
    this.leader = leader;
    this.served = served;
    this.since = since;
    this.abort = new AbortController();
  }

  close() {
    this.abort.abort();
  }

  /** @param {string[]} tokens */
  async run(tokens) {
    const { path } = this.leader.tab.config;
    const query = tokens.map((token) => `t=${encodeURIComponent(token)}`);
    if (this.since !== null) query.push(`since=${encodeURIComponent(this.since)}`);
    /** @type {number | null} */
    let retry = null;
    /** @type {Refusal | null} */
    let refused = null;
    try {
      const response = await fetch(`${path}?${query.join("&")}`, {
        headers: { Accept: "text/event-stream" },
        cache: "no-store",
        signal: this.abort.signal,
      });
      if (response.status >= 400 && response.status < 500) {
        refused = await refusal(response, tokens);
        return;
      }
      if (!response.ok || !response.body) {
        const reason = (await response.text()).slice(0, 300);
        console.error(`streamui: the stream failed (${response.status}): ${reason}`);
        return;
      }
      let first = true;
      await readEvents(response.body, (event) => {
        if (event.retry !== null) retry = event.retry;
        if (first) {
          first = false;
          this.leader.opened(this, event.id);
        }
        if (event.data) this.leader.event(this, event.data, event.id);
      });
    } catch {
      // A network error or an abort: handled below.
    } finally {
      if (this.abort.signal.aborted) {
        // Closed on purpose: nothing to do.
      } else if (refused) this.leader.refused(this, refused);
      else this.leader.ended(this, retry);
    }
  }
}

/**
 * The tab opens a stream of its own with Datastar, as without sharing: Connect renders
 * that effect in `data-streamui-fallback`.
 * @param {HTMLElement} connect
 */
function ownStream(connect) {
  connect.dataset.streamuiRole = "tab";
  const expression = connect.dataset.streamuiFallback;
  if (!expression) return;
  const element = document.createElement("div");
  element.hidden = true;
  element.setAttribute("data-effect", expression);
  connect.append(element);
}

/** Start streamui for this page, if it has a Connect element. */
function main() {
  const connect = document.getElementById("streamui-connect");
  if (!connect || connect.dataset.streamuiRole) return;
  const tab = new Tab(connect, JSON.parse(connect.dataset.streamui || "{}"));
  tab.start();
  addEventListener("pagehide", () => tab.close(), { once: true });
}

addEventListener("pageshow", (event) => {
  // Back from the back/forward cache: the tab left on pagehide; it joins again.
  if (event.persisted) {
    delete document.getElementById("streamui-connect")?.dataset.streamuiRole;
    main();
  }
});
main();
