// Talking to the gateway: the key (sessionStorage) goes in the Authorization header, and on
// WebSockets in the subprotocol "convoy.key.<base64url>" (gateway.wsauth) - never in a URL.

const KEY = "convoy.key";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
};

function headers(extra = {}) {
  const key = session.key;
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${(item.loc || []).join(".")}: ${item.msg}`).join("; ");
  }
  return JSON.stringify(detail);
}

/** fetch() with the key; JSON answers are parsed, errors raise ApiError with the gateway's detail. */
export async function request(method, path, { json, body, raw = false } = {}) {
  const init = { method, headers: headers(), credentials: "omit" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const answer = await response.json();
      if (answer && answer.detail !== undefined) message = describe(answer.detail);
    } catch { /* not JSON */ }
    throw new ApiError(response.status, message);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (path, options) => request("GET", path, options);
export const post = (path, json) => request("POST", path, { json });
export const del = (path) => request("DELETE", path);

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** A WebSocket to a gateway path (with its query), authenticated by subprotocol. */
export function openSocket(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}${path}`;
  const key = session.key;
  return new WebSocket(url, key ? ["convoy", `convoy.key.${base64url(key)}`] : ["convoy"]);
}

/** A path segment of a workspace path, each part quoted. */
export function quotePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}
